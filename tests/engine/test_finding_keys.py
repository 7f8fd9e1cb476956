"""Finding keys, target evidence and suppression: pure functions, worked by hand."""

from __future__ import annotations

from otfuzz.engine.findings import (
    Condition,
    FindingBook,
    FindingState,
    FrameValues,
    TargetEvidence,
    Trigger,
    behaviour,
    blank_values,
    crash_report,
    fault_trigger,
    finding_key,
    finding_title,
    leniency,
    request_types,
    stack_evidence,
    trigger_of,
)
from otfuzz.protocols.modbus import ModbusTCP

TRACEBACK = """Traceback (most recent call last):
  File "/opt/plc/server.py", line {a}, in handle
    check_defects(self.server, frame)
  File "/opt/plc/server.py", line {b}, in check_range
    raise OverflowError(f"register range {x}..{y} does not fit 16 bits")
OverflowError: register range {x}..{y} does not fit 16 bits
"""


def test_a_python_traceback_gives_the_exception_and_innermost_frames_without_lines_or_values() -> None:
    one = crash_report("noise\n" + TRACEBACK.format(a=10, b=20, x=65530, y=65545))
    two = crash_report(TRACEBACK.format(a=11, b=29, x=1, y=70000))
    assert one == two == "OverflowError < server.py:check_range < server.py:handle"


def test_native_crash_reports_are_normalised() -> None:
    assert crash_report("terminate called after throwing an instance of 'std::length_error'\n  what(): x") == \
        "C++ terminate: std::length_error"
    asan = "==123==ERROR: ...\nSUMMARY: AddressSanitizer: heap-buffer-overflow /src/plc/parse.c:88:7 in parse_pdu\n"
    assert crash_report(asan) == "AddressSanitizer: heap-buffer-overflow parse.c:# in parse_pdu"
    assert crash_report("started\nlistening on 502\n") is None


def test_stacks_of_a_hung_target_name_where_it_is_stuck_and_idle_threads_say_nothing() -> None:
    busy = [{"frames": [{"name": "wait_for_rest", "short_filename": "srv.py", "filename": "/x/srv.py"},
                        {"name": "handle", "short_filename": "srv.py"}]},
            {"frames": [{"name": "EpollSelector.select", "short_filename": "selectors.py", "filename": "/usr/lib/python3.11/selectors.py"}]}]
    assert stack_evidence(busy) == "stuck in srv.py:wait_for_rest < srv.py:handle"
    assert stack_evidence(busy[1:]) is None


def test_a_reply_level_leniency_is_one_key_whatever_request_type_shows_it() -> None:
    """Trailing bytes accepted by a shared framer: one finding for every request type; a valid
    request answered oddly stays per request type unless the same malformation shows on several;
    anything target-level stays per request type."""
    coil = Trigger("write_single_coil", ("# trailing bytes after the write_single_coil request",))
    register = Trigger("write_single_register", ("# trailing bytes after the write_single_register request",))
    for cls in ("spec-violation", "malformed-reply"):
        assert finding_key("modbus", cls, coil, None) == finding_key("modbus", cls, register, None)
        assert finding_key("modbus", cls, coil, None) == f"modbus|{cls}|any request|# trailing bytes after the request"
    assert finding_key("modbus", "spec-violation", coil, None) != finding_key("modbus", "malformed-reply", coil, None)
    valid = [Trigger(t, ()) for t in ("read_coils", "read_file_record")]
    assert finding_key("modbus", "malformed-reply", valid[0], None) != finding_key("modbus", "malformed-reply", valid[1], None)
    # ... unless both are answered with the same malformation: one defect of a shared layer
    # (dnp3py addresses every response to the master it learned, whatever the request)
    misaddressed = [finding_key("dnp3", "malformed-reply", Trigger(t, ()), None, detail) for t, detail in
                    (("read_class_1", "reply from 1 to 2; request went from 0 to 1"),
                     ("read_counters", "reply from 1 to 32769; request went from 2 to 1"))]
    assert misaddressed[0] == misaddressed[1] == "dnp3|malformed-reply|reply: reply from # to #; request went from # to #"
    assert finding_key("dnp3", "malformed-reply", Trigger("read_class_0", ("source address # is reserved",)), None,
                       "reply from 1 to 2; request went from 65520 to 1") == misaddressed[0]  # whatever the request broke
    assert finding_key("dnp3", "malformed-reply", Trigger("read_class_1", ()), None, "response fragment of # octets has no IIN") \
        != misaddressed[0]  # another malformation: another finding
    assert finding_key("modbus", "crash", valid[0], None, "reply from 1 to 2") == "modbus|crash|read_coils|valid request"
    # digits inside names in a malformation are the request's values too (snap7's item sizes)
    read = Trigger("read_var", ())
    assert finding_key("s7", "malformed-reply", read, None, "item 1: 4 octets for DB1.DBB0 DATE x4 (8 asked for)") == \
        finding_key("s7", "malformed-reply", read, None, "item 1: 64 octets for DB1.DBB64 DATE x64 (128 asked for)")
    assert finding_key("modbus", "crash", coil, None) != finding_key("modbus", "crash", register, None)
    assert behaviour("spec-violation", coil.request_type, coil.rules) == "spec-violation: # trailing bytes after the request"
    assert request_types([coil.text, register.text, "structural fault|a cut frame"]) == ["write_single_coil", "write_single_register"]


def test_a_spec_violation_is_keyed_by_one_rule_its_request_broke_wherever_in_the_frame() -> None:
    """A target acting on a request that breaks several rules enforces none of them: keyed by the
    whole set, snap7's parser gave a finding per combination (127 in 10 s)."""
    trailing = "# octets after the last whole item in the parameter part"
    both = Trigger("read_var", (trailing, "item_count=# but # items follow"))
    three = Trigger("read_var", ("item #: syntax_id=# is not S7ANY (#)", trailing, "item_count=# but # items follow"))
    alone = Trigger("write_var", (trailing,))
    keys = {finding_key("s7", "spec-violation", t, None) for t in (both, three, alone)}
    assert keys == {f"s7|spec-violation|any request|{trailing}"}
    # the first rule in sorted order, its position in the frame ("item #: ", "TPDU #: ") dropped
    assert leniency("read_var", ("item #: syntax_id=# is not S7ANY (#)", "item_count=# but # items follow")) == \
        "item_count=# but # items follow"
    assert leniency("read_var", ("TPDU #: item #: syntax_id=# is not S7ANY (#)",)) == \
        leniency("read_var", ("syntax_id=# is not S7ANY (#)",)) == "syntax_id=# is not S7ANY (#)"
    assert leniency("read_var", ("data_length=#: Read Var carries no data",)) == "data_length=#: Read Var carries no data"
    assert leniency("read_var", (blank_values("TPDU 2: 3 octets after the last whole item in the parameter part"),)) == trailing
    assert leniency("read", ("function code # is not a valid function",)) == "function code # is not a valid function"
    # the service whose decoder found it, too: one leniency of a shared decoder (bacpypes3, asyncua)
    assert leniency("read_property", ("ReadProperty tag at octet #: length # runs past the end (# octets left)",)) == \
        leniency("write_property", ("WriteProperty tag at octet #: length # runs past the end (# octets left)",)) == \
        leniency("who_is", ("Who-Is tag at octet #: length # runs past the end (# octets left)",)) == \
        "length # runs past the end (# octets left)"
    assert leniency("browse", ("message # (MSG): BrowseRequest body has # bytes after its last field",)) == \
        leniency("read", ("ReadRequest body has # bytes after its last field",)) == "body has # bytes after its last field"
    # DNP3's function: one outstation parser that acts on requests lacking their objects (dnp3py: 6 findings)
    assert leniency("direct_operate_crob", ("function DIRECT_OPERATE: no objects",)) == \
        leniency("write_time", ("function WRITE: no objects",)) == "no objects"
    assert leniency("request_link_status", ("link function REQUEST_LINK_STATUS: carries # octets of user data",)) == \
        "carries # octets of user data"
    for kept in ("S7 PDU of # octets is shorter than its #-octet header", "Read Var before Setup Communication",
                 "PLC Stop names P_PROGRAM", "max_age=# below #", "function code # is not a valid function"):
        assert leniency("read_var", (kept,)) == kept
    assert finding_key("s7", "spec-violation", Trigger("read_var", ("item_count=# but # items follow",)), None) not in keys
    assert behaviour("spec-violation", "read_var", three.rules) == f"spec-violation: {trailing}"
    # a malformed reply on such a request is still keyed by all of them (or by its malformation)
    assert finding_key("s7", "malformed-reply", both, None) != finding_key("s7", "malformed-reply", three, None)


def test_keys_use_strong_evidence_alone_and_otherwise_what_the_request_breaks() -> None:
    trigger = Trigger("read_coils", ("quantity=# above maximum #",))
    strong = TargetEvidence(returncode=70, report="OverflowError < server.py:check_range")
    weak = TargetEvidence(signal="SIGSEGV")
    assert finding_key("modbus", "crash", trigger, strong) == "modbus|crash|evidence: OverflowError < server.py:check_range"
    assert finding_key("modbus", "crash", trigger, weak) == "modbus|crash|signal SIGSEGV|read_coils|quantity=# above maximum #"
    # A hang and a lasting hang are one family: replay cannot tell them apart.
    assert finding_key("modbus", "hang", trigger, None) == finding_key("modbus", "unresponsive-after", trigger, None)
    assert Trigger.parse(trigger.text) == trigger


def test_trigger_names_fields_and_rules_never_values() -> None:
    modbus = ModbusTCP()
    template = next(t for t in modbus.templates() if t.name == "read_holding_registers")
    a = trigger_of(modbus, template.encode(quantity=200))
    b = trigger_of(modbus, template.encode(quantity=4000))
    assert a == b and a.request_type == "read_holding_registers" and a.rules == ("quantity=# above maximum #",)
    assert trigger_of(modbus, template.encode()).text == "read_holding_registers|valid request"
    assert blank_values("byte_count=3 but quantity=10 needs 2 (0x0a)") == "byte_count=# but quantity=# needs # (#)"
    # an object named by its numbers is a value too: one leniency, whichever object it met
    assert blank_values("g1v3: variation 3 of group 1 is not defined") == blank_values("g60v146: variation 146 of group 60 is not defined")
    assert blank_values("g1v3: variation 3 of group 1 is not defined") == "g#v#: variation # of group # is not defined"
    # a float is a value however Python writes it; names that merely contain the letters stay
    below = {blank_values(f"max_age={value} below 0") for value in (-1.0, float("nan"), float("-inf"), -1e300, -0.5)}
    assert below == {"max_age=# below #"}
    assert blank_values("infinity of banana=3") == "infinity of banana=#"


def test_titles_say_what_happens_on_what_input() -> None:
    title = finding_title("crash", "read_holding_registers", ["quantity=0 below minimum 1"], TargetEvidence(signal="SIGABRT"))
    assert title == "Target process dies (signal SIGABRT) on a read holding registers request with quantity=0 below minimum 1"
    assert finding_title("spec-violation", "write_single_coil", ["value=1 is not a defined value"], None) == \
        "Target acts on a write single coil request with value=1 is not a defined value, which the specification says to reject"


def test_suppression_sends_one_in_n_matches_and_counts_the_rest() -> None:
    book = FindingBook(rate=5)
    state = FindingState(1, "k", "crash")
    book.add(state)
    trigger = Trigger("read_coils", ())
    assert book.match([trigger]) == (None, False)  # not confirmed yet: nothing is held back
    book.confirm(state, [trigger.text])
    held = [book.match([trigger])[1] for _ in range(10)]
    assert held == [True, True, True, True, False] * 2 and state.skipped == 8 and state.matched == 10


def test_costly_findings_hold_back_inputs_that_break_their_rules_and_more_reply_findings_only_their_own() -> None:
    book = FindingBook(rate=1000)
    crash, reply = FindingState(1, "a", "crash"), FindingState(2, "b", "malformed-reply")
    book.add(crash)
    book.add(reply)
    book.confirm(crash, ["read_coils|address+quantity=# runs past the last address #"])
    book.confirm(reply, ["write_single_coil|valid request", "write_single_coil|value=# is not a defined value"])
    wider = Trigger("read_coils", ("address+quantity=# runs past the last address #", "quantity=# above maximum #"))
    assert book.matching([wider]) is crash
    assert book.matching([Trigger("read_coils", ())]) is None
    # A reply-level finding never holds back every valid request of a type, and looks at the last frame only.
    assert book.matching([], [Trigger("write_single_coil", ())]) is None
    assert book.matching([], [Trigger("write_single_coil", ("value=# is not a defined value",))]) is reply
    assert book.matching([Trigger("write_single_coil", ("value=# is not a defined value",))]) is None


def test_a_structural_fault_becomes_a_trigger_once_it_reached_the_finding_on_two_request_types() -> None:
    book = FindingBook()
    state = FindingState(1, "k", "hang")
    book.add(state)
    book.confirm(state)
    assert not book.note_fault(state, "cut mid-PDU, length adjusted", "write_single_coil")
    assert book.note_fault(state, "cut mid-PDU, length adjusted", "write_single_register")
    assert book.matching([fault_trigger("cut mid-PDU, length adjusted")]) is state


def test_merging_moves_aliases_triggers_and_counters() -> None:
    book = FindingBook(rate=2)
    a, b = FindingState(1, "ka", "crash"), FindingState(2, "kb", "crash")
    book.add(a)
    book.add(b)
    book.confirm(a, ["x|valid request"])
    book.match(["x|valid request"])
    book.merge(a, b)
    assert book.lookup("ka") is b and book.resolve(1) is b and b.matched == 1 and "x|valid request" in b.triggers


def _template(name: str):  # type: ignore[no-untyped-def]
    return next(t for t in ModbusTCP().templates() if t.name == name)


def test_a_condition_names_the_values_a_valid_trigger_needs_and_ties_shared_ones_to_the_earlier_step() -> None:
    values = FrameValues(ModbusTCP())
    read, write = _template("read_holding_registers"), _template("write_single_register")
    broadcast = read.encode(unit_id=0, quantity=125)
    assert values.condition([broadcast]) == Condition("read_holding_registers", (), (("quantity", "125"), ("unit_id", "0")))
    # write register 256, then read it: "256" ties the two steps, it is no constant the defect needs
    state = [write.encode(address=256, value=7), read.encode(address=256)]
    assert values.condition(state) == Condition("read_holding_registers", ("a write",), ())
    assert values.condition([read.encode()]) == Condition("read_holding_registers")
    assert not Condition("read_holding_registers")
    multiple = _template("write_multiple_registers").encode()
    assert values.meets([multiple, read.encode(address=9)], values.condition(state))  # any write, then a valid read
    assert not values.meets([read.encode()], values.condition(state))
    assert not values.meets([read.encode(quantity=125)], values.condition([broadcast]))


def test_a_finding_with_a_condition_holds_back_only_the_cases_that_meet_it() -> None:
    protocol, values = ModbusTCP(), FrameValues(ModbusTCP())
    read = _template("read_holding_registers")
    broadcast = read.encode(unit_id=0, quantity=125)
    book = FindingBook(rate=1000)
    condition = values.condition([broadcast])
    state = FindingState(1, "k|needs quantity=125, unit_id=0", "crash", aliases={"k"}, condition=condition)
    book.add(state)
    book.confirm(state, [trigger_of(protocol, broadcast).text])

    def held(frames: list[bytes]) -> bool:
        triggers = [trigger_of(protocol, f) for f in frames]
        return book.match(triggers, triggers[-1:], meets=lambda c: values.meets(frames, c))[1]

    assert held([read.encode(address=3, unit_id=0, quantity=125)])  # the address was shown not to matter
    assert not held([read.encode()]) and not held([read.encode(unit_id=0)])  # any other valid read still goes out
    # the provisional key leads to it only through its condition
    assert book.lookup("k") is None and book.conditioned("k") == [state]


def test_a_finding_confirmed_before_its_condition_could_be_read_takes_it_from_a_later_one(tmp_path) -> None:
    """The faulty server's state crash was filed twice: first confirmed from a minimisation that
    did not settle (keyed "valid request"), then again with the condition its next occurrence's
    minimised reproducer showed ("needs after a write"). The first takes the condition instead,
    so the second merges into it."""
    from otfuzz.engine.campaign import Campaign, CampaignConfig
    from otfuzz.engine.findings import CONDITION_SEPARATOR
    from otfuzz.store.evidence import EvidenceStore

    modbus = ModbusTCP()
    by_name = {t.name: t for t in modbus.templates()}
    write, read = by_name["write_single_register"].encode(value=7), by_name["read_holding_registers"].encode()
    key = "modbus|crash|signal SIGSEGV|read_holding_registers|valid request"

    def after(reproducer: list[bytes], folder: str) -> tuple[FindingState, dict, Condition]:
        """A finding confirmed with `reproducer` and no condition, after a later one under the
        same key was minimised to a write, then the read."""
        (tmp_path / folder).mkdir()
        store = EvidenceStore.create(tmp_path / folder)
        try:
            campaign = Campaign(CampaignConfig(target="modbus://127.0.0.1:1502", seed=3, max_cases=1), tmp_path / folder, store)
            record = {"key": key, "class": "crash", "title": "Target process dies on a valid read holding registers request",
                      "reproducer": {"frames_hex": [f.hex() for f in reproducer]}, "confirmation": {"status": "confirmed"}}
            first = FindingState(store.add_finding(key, "crash", record), key, "crash", {key}, confirmed=True)
            campaign.book.add(first)
            condition = campaign._values.condition([write, read])
            campaign._condition_earlier(key, condition, FindingState(first.id + 1, key, "crash"))
            assert campaign.book.lookup(f"{key}{CONDITION_SEPARATOR}{condition.text}") in (first, None)
            return first, store.finding(first.id) or {}, condition
        finally:
            store.close()

    first, stored, condition = after([write, read], "met")
    assert condition.prefix == ("a write",) and first.condition == condition and first.key.endswith("|needs after a write")
    assert stored["condition"] == condition.as_record() and "after a write" in stored["title"]
    first, stored, _ = after([read], "not met")  # its reproducer does not meet the condition: another defect
    assert first.condition is None and first.key == key and "condition" not in stored


def test_a_crash_filed_under_more_rules_than_it_needs_is_an_occurrence_of_the_wider_finding(tmp_path) -> None:
    """The faulty server's state crash was filed twice again under load: once keyed by a read
    whose minimisation ran out of budget with `quantity=# above maximum #` still in it, once as a
    valid read. With a bare signal as evidence, the book already counts the first's inputs as the
    second's; so the narrower finding merges into the wider one, whichever is confirmed first,
    and nothing merges across classes, evidence or request types."""
    from otfuzz.engine.campaign import Campaign, CampaignConfig
    from otfuzz.store.evidence import EvidenceStore

    modbus = ModbusTCP()
    by_name = {t.name: t for t in modbus.templates()}
    read = by_name["read_holding_registers"]
    wide_read = read.message.encode({**read.message.defaults(), **dict(read.values), "quantity": 1793})
    segv, abort = TargetEvidence("SIGSEGV"), TargetEvidence("SIGABRT")
    narrow = trigger_of(modbus, wide_read)
    valid = Trigger("read_holding_registers", ())
    assert narrow.rules == ("quantity=# above maximum #",)

    def campaign_with(folder: str, findings: list[tuple[str, Trigger, TargetEvidence, bytes]]):
        (tmp_path / folder).mkdir()
        store = EvidenceStore.create(tmp_path / folder)
        campaign = Campaign(CampaignConfig(target="modbus://127.0.0.1:1502", seed=3, max_cases=1), tmp_path / folder, store)
        states = []
        for anomaly_class, trigger, evidence, frame in findings:
            key = finding_key("modbus", anomaly_class, trigger, evidence)
            record = {"key": key, "class": anomaly_class, "confirmation": {"status": "confirmed"},
                      "reproducer": {"frames_hex": [frame.hex()]}}
            state = FindingState(store.add_finding(key, anomaly_class, record), key, anomaly_class, {key}, {trigger.text})
            store.add_anomaly(state.id, "mutation", anomaly_class, {"key": key}, state.id)
            campaign.book.add(state)
            campaign.book.confirm(state)
            states.append(state)
        return campaign, store, states

    # the wider finding confirmed first: the narrower reproducer's key leads to it
    campaign, store, [wider] = campaign_with("wider-first", [("crash", valid, segv, read.encode())])
    assert campaign._wider_finding("crash", narrow, segv, [wide_read]) is wider
    assert campaign._wider_finding("crash", narrow, abort, [wide_read]) is None  # another exit: another bucket
    assert campaign._wider_finding("hang", narrow, segv, [wide_read]) is None
    assert campaign._wider_finding("crash", Trigger("read_input_registers", narrow.rules), segv, [wide_read]) is None
    assert campaign._wider_finding("crash", valid, segv, [read.encode()]) is None  # the same rules are its own key
    store.close()

    # the narrower confirmed first: the wider one, confirmed later, takes it in with its occurrence
    campaign, store, [first, other_exit, second] = campaign_with("narrower-first", [
        ("crash", narrow, segv, wide_read), ("crash", narrow, abort, wide_read), ("crash", valid, segv, read.encode())])
    campaign._absorb_narrower(second, valid, segv)
    assert set(campaign.book.findings) == {other_exit.id, second.id}
    assert campaign.book.resolve(first.id) is second and narrow.text in second.triggers
    stored = {f["id"]: f for f in store.findings()}
    assert set(stored) == {other_exit.id, second.id}
    assert stored[second.id]["merged"][0]["id"] == first.id and stored[second.id]["occurrences"] == 2
    store.close()
