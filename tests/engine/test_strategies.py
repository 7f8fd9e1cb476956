"""Strategies read the declared model: boundaries come from field limits, faults from framing."""

from __future__ import annotations

import random

from otfuzz.engine.strategies import Boundary, Mutation, Structural
from otfuzz.protocols.modbus import ModbusTCP


def _template(protocol: ModbusTCP, name: str):
    return next(t for t in protocol.templates() if t.name == name)


def test_boundary_strategy_sends_quantity_limits_and_beyond() -> None:
    protocol = ModbusTCP()
    strategy = Boundary(protocol, [_template(protocol, "read_holding_registers")])
    frames = [strategy.make(i, random.Random(0)).frames[0] for i in range(len(strategy.items))]
    quantities = {int.from_bytes(f[10:12], "big") for f in frames if len(f) == 12 and f[7] == 3}
    assert {0, 1, 124, 125, 126, 0xFFFF, 0x8000, 0x7FFF} <= quantities


def test_boundary_strategy_cycles_through_a_finite_list() -> None:
    protocol = ModbusTCP()
    strategy = Boundary(protocol, protocol.templates())
    n = len(strategy.items)
    assert strategy.make(3, random.Random(1)) == strategy.make(3 + n, random.Random(2))


def test_structural_strategy_includes_truncation_and_trailing_bytes_of_every_template() -> None:
    protocol = ModbusTCP()
    strategy = Structural(protocol, protocol.templates())
    descriptions = [d for _, d, _ in strategy.items]
    assert sum("truncated" in d for d in descriptions) >= len(protocol.templates())
    assert sum("trailing" in d for d in descriptions) >= len(protocol.templates())
    assert len({frame for _, _, frame in strategy.items}) > 100


def test_every_structural_fault_breaks_the_specification() -> None:
    protocol = ModbusTCP()
    strategy = Structural(protocol, protocol.templates())
    for template, description, frame in strategy.items:
        if "sent twice" in description or description in ("one trailing byte", "16 trailing bytes"):
            continue  # bytes after a complete frame test stream framing, not request validity
        if len(frame) > 7 and (65 <= frame[7] <= 72 or 100 <= frame[7] <= 110):
            continue  # user-defined function codes: a device may legitimately implement them
        if template.name == "diagnostics/return_query_data" and "length" in description:
            continue  # echo data of any length is valid: a re-framed cut or extension stays valid
        assert protocol.check_request(frame), f"{template.name}: {description} passes check_request"


def test_mutation_changes_the_valid_message_and_is_deterministic_per_rng() -> None:
    protocol = ModbusTCP()
    strategy = Mutation(protocol, protocol.templates())
    valid = {t.encode() for t in protocol.templates()}
    made = [strategy.make(i, random.Random(i)) for i in range(300)]
    assert sum(m.frames[0] not in valid for m in made) > 250
    assert made[17] == strategy.make(17, random.Random(17))


def test_most_mutations_keep_the_framing_consistent() -> None:
    protocol = ModbusTCP()
    strategy = Mutation(protocol, protocol.templates())
    frames = [strategy.make(i, random.Random(i)).frames[0] for i in range(400)]
    consistent = sum(len(f) >= 7 and int.from_bytes(f[4:6], "big") == len(f) - 6 for f in frames)
    assert consistent > 200


def test_sequence_prefixes_never_hold_a_request_that_sets_up_its_own_connection() -> None:
    from otfuzz.engine.strategies import Boundary, SequenceStrategy
    from otfuzz.protocols.opcua import OPCUA

    protocol = OPCUA()
    templates = list(protocol.templates())
    strategy = SequenceStrategy(protocol, templates, [Boundary(protocol, templates)])
    fresh = {t.encode() for t in templates if not protocol.needs_opening(t.encode())}
    assert fresh and set(strategy.prefixes) == {t.encode() for t in templates} - fresh
    for index in range(200):
        made = strategy.make(index, random.Random(index))
        assert not fresh & set(made.frames[:-1])


def test_a_sequence_prefix_never_holds_a_request_that_makes_its_own_connection() -> None:
    """S7's COTP CR templates carry their own handshake: after the opening they are only refused,
    and a state fault meant for a fresh connection means something else after a prefix."""
    from otfuzz.engine.strategies import SequenceStrategy
    from otfuzz.protocols.s7 import S7Comm

    protocol = S7Comm()
    templates = protocol.templates()
    inner = [Boundary(protocol, templates), Structural(protocol, templates), Mutation(protocol, templates)]
    strategy = SequenceStrategy(protocol, templates, inner)
    alone = 0
    for index in range(600):
        made = strategy.make(index, random.Random(index))
        if len(made.frames) == 1:
            alone += 1
            assert not protocol.needs_opening(made.frames[0]) and made.description.startswith("alone")
        else:
            assert all(protocol.needs_opening(f) for f in made.frames), made.description
    assert 0 < alone < 600


def test_a_sequence_is_the_same_whatever_was_made_before_it_and_whatever_the_target_reported() -> None:
    """Shared step values come from the dictionary's fixed part, and what a strategy remembers
    between cases (pools, tied steps, built steps) only saves work: a case regenerated by id in
    a fresh process, or after the target reported values, carries the same bytes."""
    from otfuzz.engine.strategies import SequenceStrategy
    from otfuzz.engine.values import Dictionary

    protocol = ModbusTCP()
    templates = protocol.templates()

    def strategy(dictionary: Dictionary) -> SequenceStrategy:
        return SequenceStrategy(protocol, templates, [Boundary(protocol, templates), Mutation(protocol, templates)],
                                dictionary)

    used = Dictionary(protocol.dictionary())
    warm = strategy(used)
    first = {i: warm.make(i, random.Random(i)) for i in range(600)}
    used.observe([7, 4242, 0xBEE5, 31337])  # the target's own values, reported later on
    again = {i: warm.make(i, random.Random(i)) for i in reversed(range(600))}
    fresh = strategy(Dictionary(protocol.dictionary()))
    assert sum(len(m.frames) > 1 for m in first.values()) > 300
    for i in range(600):
        assert first[i] == again[i] == fresh.make(i, random.Random(i)), i
        made = first[i]
        if len(made.frames) > 1:  # reads after the faulty step ("step 2 of 5: ...")
            at = int(made.description.split()[1])
            assert not any(protocol.is_write(f) for f in made.frames[at:]), made.description
