"""DNP3 module: CRC, declarations, faults, session framing and classification, proven against
dnp3py's own frame builder and parser (an implementation we did not write) and against a real
dnp3py 0.6.0 outstation on loopback."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from dnp3.application.builder import build_response, build_unsolicited_response
from dnp3.application.parser import parse_request
from dnp3.core.crc import compute_crc
from dnp3.core.flags import IIN
from dnp3.datalink.builder import build_link_status, build_request_link_status, build_unconfirmed_user_data
from dnp3.datalink.parser import FrameParser

from module_robustness import exercise, near
from otfuzz.errors import OtfuzzError
from otfuzz.protocols import protocol_class
from otfuzz.protocols.base import ReplyKind, Template
from otfuzz.protocols.dnp3 import (
    DNP3,
    DNP3Session,
    _frame_type,
    crc_dnp,
    link_frame,
    reassemble,
    split_link_frames,
)
from otfuzz.protocols.model import Checksum, Length, UInt

PROTOCOL = DNP3()
OUTSTATION, MASTER = 1, 2


def template(name: str, protocol: DNP3 = PROTOCOL) -> Template:
    return next(t for t in protocol.templates() if t.name == name)


def fragment_of(frame: bytes) -> bytes:
    frames, rest = split_link_frames(frame)
    fragments, problems = reassemble(frames)
    assert not rest and not problems and len(fragments) == 1
    return fragments[0]


def outstation_frames(fragment: bytes, *, transport_seq: int = 0, size: int = 249, source: int = OUTSTATION,
                      destination: int = MASTER) -> bytes:
    """What an outstation sends for `fragment`, framed by dnp3py (independent of the module)."""
    chunks = [fragment[i : i + size] for i in range(0, len(fragment), size)]
    out = b""
    for n, chunk in enumerate(chunks):
        octet = (0x40 if n == 0 else 0) | (0x80 if n == len(chunks) - 1 else 0) | ((transport_seq + n) & 0x3F)
        out += build_unconfirmed_user_data(destination=destination, source=source, dir_from_master=False,
                                           user_data=bytes([octet]) + chunk).to_bytes()
    return out


def response(seq: int, iin: IIN = IIN(0), *, fir: bool = True, fin: bool = True, con: bool = False, body: bytes = b"") -> bytes:
    return build_response((), iin=iin, seq=seq, fir=fir, fin=fin, con=con).to_bytes() + body


def faults_of(tpl: Template) -> dict[str, bytes]:
    """Every structural fault of `tpl`, by description."""
    return dict(PROTOCOL.structural_faults(tpl))


def sent_fragments(data: bytes) -> list[bytes]:
    frames, rest = split_link_frames(data)
    assert not rest and all(not f.problems for f in frames)
    return reassemble(frames)[0]


# -- CRC and declarations ---------------------------------------------------------------------


def test_crc_dnp_matches_the_published_check_value_and_dnp3py() -> None:
    assert crc_dnp(b"123456789") == 0xEA82
    rng = random.Random(5)
    for size in (0, 1, 8, 16, 250):
        data = rng.randbytes(size)
        assert crc_dnp(data) == compute_crc(data)


def test_link_frames_are_byte_identical_to_dnp3py_frames() -> None:
    for size in (0, 1, 15, 16, 17, 32, 33, 250):
        user = bytes(range(size))
        ours = link_frame(user, destination=OUTSTATION, source=MASTER)
        assert ours == build_unconfirmed_user_data(destination=OUTSTATION, source=MASTER, dir_from_master=True, user_data=user).to_bytes()
    assert template("request_link_status").encode() == build_request_link_status(OUTSTATION, MASTER, True).to_bytes()


def test_templates_cover_the_required_requests() -> None:
    names = {t.name for t in PROTOCOL.templates()}
    assert {"read_class_0", "read_class_1", "read_class_2", "read_class_3", "read_binary_inputs", "read_analog_inputs",
            "read_counters", "write_time_and_date", "clear_restart_bit", "select_crob", "operate_crob", "direct_operate_crob",
            "select_analog_output", "operate_analog_output", "direct_operate_analog_output", "direct_operate_analog_output_16",
            "cold_restart", "warm_restart", "enable_unsolicited", "disable_unsolicited", "delay_measurement",
            "confirm"} <= names


@pytest.mark.parametrize("tpl", PROTOCOL.templates(), ids=lambda t: t.name)
def test_every_template_is_a_valid_frame_that_round_trips_and_dnp3py_accepts(tpl: Template) -> None:
    frame = tpl.encode()
    values = tpl.message.decode(frame)
    plain = {k: v for k, v in values.items() if not isinstance(tpl.message.field_named(k), (Length, Checksum))}
    assert tpl.message.encode(plain) == frame
    assert tpl.message.check(frame) == []
    assert PROTOCOL.check_request(frame) == []
    parsed = list(FrameParser().feed(frame))  # dnp3py checks every CRC and drops bad frames
    assert len(parsed) == 1 and parsed[0].header.destination == OUTSTATION and parsed[0].header.source == MASTER
    if tpl.name != "request_link_status":
        request = parse_request(fragment_of(frame))
        assert request.truncation is None
        assert int(request.header.function) == values["function"]


@pytest.mark.parametrize("tpl", PROTOCOL.templates(), ids=lambda t: t.name)
def test_boundary_values_of_application_fields_keep_every_outer_crc_valid(tpl: Template) -> None:
    """The point of declaring whole frames: fuzz the application layer, keep the link layer valid."""
    app = [f for f in tpl.message.fields if isinstance(f, UInt) and not isinstance(f, (Length, Checksum))][5:]
    for f in app:
        for value in f.boundary_values():
            frame = tpl.encode(**{f.name: value})
            frames, rest = split_link_frames(frame)
            assert not rest and len(frames) == 1 and frames[0].problems == (), (f.name, value)
            assert len(list(FrameParser().feed(frame))) == 1


def test_a_field_straddling_a_crc_block_is_refused_at_declaration() -> None:
    fields = [UInt("app_control"), UInt("function"), *[UInt(f"pad{i}") for i in range(12)], UInt("wide", 32)]
    with pytest.raises(ValueError, match="straddle"):
        _frame_type("bad", fields, outstation=OUTSTATION, master=MASTER)


def test_writes_and_disruptive_flags_follow_the_function_codes() -> None:
    reads = {t.name for t in PROTOCOL.templates() if not t.writes}
    assert reads == {"read_class_0", "read_class_1", "read_class_2", "read_class_3", "integrity_poll", "read_binary_inputs",
                     "read_binary_inputs_all", "read_analog_inputs", "read_counters", "delay_measurement", "confirm",
                     "request_link_status"}
    assert {t.name for t in PROTOCOL.templates() if t.disruptive} == {"cold_restart", "warm_restart"}
    for tpl in PROTOCOL.templates():
        assert PROTOCOL.is_write(tpl.encode()) == tpl.writes, tpl.name


def test_is_write_sees_a_write_behind_garbage_and_a_bad_crc() -> None:
    write = template("direct_operate_crob").encode()
    assert PROTOCOL.is_write(b"\x00\x05" + write)
    assert PROTOCOL.is_write(template("direct_operate_crob").encode(header_crc=0))
    assert not PROTOCOL.is_write(b"\x00" * 40)


def test_options_are_validated_and_addresses_reach_the_frames() -> None:
    with pytest.raises(OtfuzzError, match="outstation"):
        DNP3({"outstation": "70000"})
    with pytest.raises(OtfuzzError, match="max_fragment"):
        DNP3({"max_fragment": "100"})
    custom = DNP3({"outstation": "10", "master": "3"})
    frame = custom.probe().frame
    assert split_link_frames(frame)[0][0].destination == 10 and split_link_frames(frame)[0][0].source == 3
    assert protocol_class("dnp3") is DNP3 and DNP3.single_association and "second TCP connection" in DNP3.liveness_note


def test_expects_reply_is_false_only_for_confirms_no_ack_functions_and_broadcasts() -> None:
    assert not PROTOCOL.expects_reply(template("confirm").encode())
    assert not PROTOCOL.expects_reply(template("direct_operate_crob").encode(function=6))
    assert not PROTOCOL.expects_reply(template("read_class_0").encode(destination=0xFFFF))
    assert PROTOCOL.expects_reply(template("read_class_0").encode())
    assert PROTOCOL.expects_reply(template("request_link_status").encode())


def test_repair_reframes_a_mutated_frame_with_valid_crcs() -> None:
    frame = bytearray(template("direct_operate_crob").encode())
    frame.insert(14, 0x42)  # a byte inserted into the application layer shifts every CRC slot
    frame[2] = 0
    repaired = PROTOCOL.repair(bytes(frame))
    frames, rest = split_link_frames(repaired)
    assert not rest and len(frames) == 1 and frames[0].problems == ()
    assert frames[0].user_data[:3] == bytes(frame[10:13])  # content kept, framing made right


# -- structural faults and request checks ----------------------------------------------------

# Faults a conforming outstation may answer normally (valid, not required to be refused, or
# depending on the points the device has).
NOT_VIOLATIONS = {"fragment in two segments (valid)", "FCV set where the link function forbids it", "UNS bit set in a request",
                  "range 0..255 beyond the points present"}


@pytest.mark.parametrize("name", ["read_class_0", "read_binary_inputs", "direct_operate_crob", "write_time_and_date",
                                  "cold_restart", "request_link_status"])
def test_structural_faults_are_distinct_and_check_request_names_each_violation(name: str) -> None:
    tpl = template(name)
    faults = faults_of(tpl)
    assert len(faults) >= 12 and len(set(faults.values())) == len(faults) and tpl.encode() not in faults.values()
    for description, frame in faults.items():
        problems = PROTOCOL.check_request(frame)
        assert bool(problems) != (description in NOT_VIOLATIONS), (description, problems)


def test_application_faults_keep_the_outer_crcs_valid() -> None:
    outer = ("CRC", "length", "start octets", "header")
    for description, frame in faults_of(template("direct_operate_crob")).items():
        if any(word in description for word in outer) or "oversize" in description:
            continue
        frames, rest = split_link_frames(frame)
        assert frames and not rest and all(f.problems == () for f in frames), description


def test_multi_segment_faults_really_carry_the_transport_fault() -> None:
    faults = faults_of(template("read_class_0"))

    def octets(description: str) -> list[int]:
        return [f.user_data[0] for f in split_link_frames(faults[description])[0]]

    assert octets("two segments with the same transport sequence") == [0x40, 0x80]
    assert octets("three segments out of order (0, 2, 1)") == [0x40, 0x82, 0x01]
    oversize = next(d for d in faults if d.startswith("oversize"))
    assert len(sent_fragments(faults[oversize])[0]) > 2048


def test_check_request_reports_link_transport_and_application_faults() -> None:
    read = template("read_binary_inputs")
    assert "header CRC wrong" in PROTOCOL.check_request(read.encode(header_crc=0))
    assert any("not the outstation" in p for p in PROTOCOL.check_request(read.encode(destination=9)))
    assert any("stop 1 < start 5" in p for p in PROTOCOL.check_request(read.encode(start=5, stop=1)))
    assert any("undefined range code" in p for p in PROTOCOL.check_request(read.encode(qualifier=0x0A)))
    assert any("function code 112" in p for p in PROTOCOL.check_request(read.encode(function=0x70)))
    crob = template("direct_operate_crob")
    assert any("control code" in p for p in PROTOCOL.check_request(crob.encode(control_code=0x0F)))
    assert any("index-prefix qualifier" in p for p in PROTOCOL.check_request(crob.encode(qualifier=0x08)))
    assert PROTOCOL.check_request(b"\x05\x64") != []


# -- session ------------------------------------------------------------------------------------


def test_prepare_numbers_requests_consecutively_and_keeps_crcs_valid() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    frame = template("read_class_0").encode()
    for n in range(20):
        sent = session.prepare(frame)
        frames, _ = split_link_frames(sent)
        assert frames[0].problems == ()
        assert frames[0].user_data[0] == 0xC0 | (n % 64)  # transport FIR FIN + sequence
        assert frames[0].user_data[1] == 0xC0 | (n % 16)  # application FIR FIN + sequence


def test_prepare_keeps_a_deliberately_wrong_crc_wrong() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    session.prepare(template("read_class_0").encode())  # move the counters off zero
    tpl = template("read_class_0")
    bad_block = tpl.encode(**{"block_0_crc": 0})
    assert split_link_frames(session.prepare(bad_block))[0][0].problems == ("CRC of data block 0 wrong",)
    assert split_link_frames(session.prepare(tpl.encode(header_crc=0)))[0][0].problems[0] == "header CRC wrong"


def test_prepare_keeps_the_relative_order_of_multi_segment_faults() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    for _ in range(5):
        session.prepare(template("read_class_0").encode())
    repeated = faults_of(template("read_class_0"))["two segments with the same transport sequence"]
    octets = [f.user_data[0] for f in split_link_frames(session.prepare(repeated))[0]]
    assert octets == [0x40 | 5, 0x80 | 5]


def test_a_response_split_over_segments_and_fed_byte_by_byte_is_one_reply() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    request = template("read_class_0").encode()
    session.prepare(request)
    body = bytes(range(200)) * 2
    wire = outstation_frames(response(0, body=body), size=120)
    assert len(split_link_frames(wire)[0]) == 4
    for byte in wire[:-1]:
        session.feed(bytes([byte]))
        assert session.next_reply() is None
    session.feed(wire[-1:])
    reply = session.next_reply()
    assert reply == wire and session.next_reply() is None
    assert PROTOCOL.classify(request, reply).kind is ReplyKind.NORMAL


def test_a_multi_fragment_response_is_confirmed_and_returned_whole() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    request = template("integrity_poll").encode()
    session.prepare(request)
    first = outstation_frames(response(0, fir=True, fin=False, con=True, body=b"\x01" * 10))
    session.feed(first)
    assert session.next_reply() is None
    confirm = sent_fragments(session.take_output())
    assert confirm == [bytes([0xC0, 0x00])]  # FIR FIN, sequence 0, CONFIRM
    last = outstation_frames(response(1, fir=False, fin=True, body=b"\x02" * 10), transport_seq=1)
    session.feed(last)
    reply = session.next_reply()
    assert reply == first + last
    assert PROTOCOL.classify(request, reply).detail.startswith("response, 2 fragment(s)")


def test_unsolicited_responses_are_confirmed_with_uns_and_never_replies() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    request = template("read_class_0").encode()
    session.prepare(request)
    session.feed(outstation_frames(build_unsolicited_response((), seq=7, con=True).to_bytes()))
    assert session.next_reply() is None and session.unsolicited == 1
    assert sent_fragments(session.take_output()) == [bytes([0xC0 | 0x10 | 7, 0x00])]  # UNS confirm, same sequence
    solicited = outstation_frames(response(0))
    session.feed(solicited)
    assert session.next_reply() == solicited


def test_a_solicited_response_asking_for_confirmation_gets_one() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    session.prepare(template("read_class_1").encode())
    session.feed(outstation_frames(response(0, con=True, body=b"\x02\x01\x17\x01\x00\x81")))
    assert session.next_reply() is not None
    assert sent_fragments(session.take_output()) == [bytes([0xC0, 0x00])]


def test_link_status_requests_from_the_outstation_are_answered_not_returned() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    session.prepare(template("read_class_0").encode())
    session.feed(build_request_link_status(MASTER, OUTSTATION, False).to_bytes())
    assert session.next_reply() is None
    out = session.take_output()
    parsed = list(FrameParser().feed(out))
    assert len(parsed) == 1 and parsed[0].header.control.function_code == 11  # LINK_STATUS
    assert parsed[0].header.destination == OUTSTATION and parsed[0].header.control.dir_from_master


def test_a_response_with_another_sequence_is_not_the_reply_and_shows_in_leftover() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    session.prepare(template("read_class_0").encode())
    stale = outstation_frames(response(9))
    session.feed(stale)
    assert session.next_reply() is None and session.leftover() == stale


def test_a_second_answer_to_a_frame_sent_twice_is_never_taken_for_the_next_reply() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    request = template("read_class_0").encode()
    session.prepare(request + request)  # two fragments, both sequence 0
    answer = outstation_frames(response(0))
    session.feed(answer)
    assert session.next_reply() == answer
    session.prepare(request)  # sequence 1
    session.feed(answer)  # the late second answer to sequence 0
    assert session.next_reply() is None and session.leftover() == b""
    session.feed(outstation_frames(response(1)))
    assert session.next_reply() == outstation_frames(response(1))


def test_octets_after_whole_frames_are_not_a_violation_of_the_frame_answered() -> None:
    frame = template("read_class_0").encode()
    assert PROTOCOL.check_request(frame + b"\xff" * 16) == []
    assert PROTOCOL.check_request(frame + frame[:12]) != []  # a second frame cut short is


def test_a_link_status_request_gets_the_secondary_frame_as_its_reply() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    request = template("request_link_status").encode()
    session.prepare(request)
    status = build_link_status(MASTER, OUTSTATION, False).to_bytes()
    session.feed(status)
    assert session.next_reply() == status
    assert PROTOCOL.classify(request, status).kind is ReplyKind.NORMAL


def test_garbage_and_bad_crcs_are_handed_over_as_malformed_replies() -> None:
    request = template("read_class_0").encode()
    session = DNP3Session(OUTSTATION, MASTER)
    session.prepare(request)
    session.feed(b"\x00\x01\x02")
    garbage = session.next_reply()
    assert garbage == b"\x00\x01\x02" and PROTOCOL.classify(request, garbage).kind is ReplyKind.MALFORMED
    session.prepare(request)
    wire = bytearray(outstation_frames(response(1)))
    wire[12] ^= 0xFF  # inside the first data block
    session.feed(bytes(wire))
    reply = session.next_reply()
    assert reply == bytes(wire)
    verdict = PROTOCOL.classify(request, reply)
    assert verdict.kind is ReplyKind.MALFORMED and "CRC" in verdict.detail


# -- classification -----------------------------------------------------------------------------


def test_classify_names_iin2_rejection_bits() -> None:
    request = template("read_class_0").encode()
    verdict = PROTOCOL.classify(request, outstation_frames(response(0, IIN.OBJECT_UNKNOWN | IIN.PARAMETER_ERROR | IIN.NEED_TIME)))
    assert verdict.kind is ReplyKind.EXCEPTION
    assert "OBJECT_UNKNOWN" in verdict.detail and "PARAMETER_ERROR" in verdict.detail and "NEED_TIME" in verdict.detail
    assert PROTOCOL.classify(request, outstation_frames(response(0, IIN.NO_FUNC_CODE_SUPPORT))).kind is ReplyKind.EXCEPTION
    normal = PROTOCOL.classify(request, outstation_frames(response(0, IIN.DEVICE_RESTART | IIN.EVENT_BUFFER_OVERFLOW)))
    assert normal.kind is ReplyKind.NORMAL


def test_classify_reports_malformed_answers() -> None:
    request = template("read_class_0").encode()
    wrong_address = outstation_frames(response(0), source=7)
    assert "reply from 7" in PROTOCOL.classify(request, wrong_address).detail
    assert PROTOCOL.classify(request, outstation_frames(response(0, IIN.RESERVED_1))).kind is ReplyKind.MALFORMED
    not_a_response = outstation_frames(bytes([0xC0, 0x01, 0x00, 0x00]))
    assert PROTOCOL.classify(request, not_a_response).kind is ReplyKind.MALFORMED
    from_a_master = build_unconfirmed_user_data(MASTER, OUTSTATION, True, bytes([0xC0]) + response(0)).to_bytes()
    assert "DIR" in PROTOCOL.classify(request, from_a_master).detail
    assert PROTOCOL.classify(request, b"\x05\x64\x05").kind is ReplyKind.MALFORMED


def test_classify_reads_the_control_status_of_echoed_controls() -> None:
    request = template("operate_crob").encode()
    echo = bytearray(fragment_of(request)[2:])
    echo[-1] = 2  # NO_SELECT
    verdict = PROTOCOL.classify(request, outstation_frames(response(0, body=bytes(echo))))
    assert verdict.kind is ReplyKind.EXCEPTION and "NO_SELECT" in verdict.detail
    echo[-1] = 0
    assert PROTOCOL.classify(request, outstation_frames(response(0, body=bytes(echo)))).kind is ReplyKind.NORMAL


# -- against dnp3py 0.6.0 -------------------------------------------------------------------------


@pytest.mark.integration
def test_every_template_gets_a_normal_answer_from_the_real_outstation(dnp3_outstation: int, connect) -> None:
    """Template order matters: select precedes operate, and the session numbers them
    consecutively, which is what makes the outstation accept the operate."""
    client = connect(dnp3_outstation, PROTOCOL.session())
    for tpl in PROTOCOL.templates():
        frame = tpl.encode()
        if not PROTOCOL.expects_reply(frame):
            client.send(frame)
            assert client.receive(0.2) is None, tpl.name
            continue
        reply = client.exchange(frame, 2.0)
        assert reply is not None, tpl.name
        verdict = PROTOCOL.classify(frame, reply)
        assert verdict.kind is ReplyKind.NORMAL, (tpl.name, verdict)
    assert PROTOCOL.probe_ok(client.exchange(PROTOCOL.probe().frame, 2.0))


@pytest.mark.integration
def test_the_real_outstation_rejects_bad_requests_with_iin2_and_control_status(dnp3_outstation: int, connect) -> None:
    client = connect(dnp3_outstation, PROTOCOL.session())
    operate = template("operate_crob").encode()
    assert "NO_SELECT" in PROTOCOL.classify(operate, client.exchange(operate, 2.0)).detail
    cases = {
        template("read_class_0").encode(group=255): "OBJECT_UNKNOWN",
        template("read_class_0").encode(function=0x81): "NO_FUNC_CODE_SUPPORT",
        template("read_binary_inputs").encode(qualifier=0x0A): "PARAMETER_ERROR",
    }
    for frame, bit in cases.items():
        verdict = PROTOCOL.classify(frame, client.exchange(frame, 2.0))
        assert verdict.kind is ReplyKind.EXCEPTION and bit in verdict.detail
        assert PROTOCOL.check_request(frame)


@pytest.mark.integration
def test_link_layer_faults_are_dropped_silently_and_the_outstation_survives_every_fault(dnp3_outstation: int, connect) -> None:
    silent = ("header CRC wrong", "CRC of the first data block wrong", "addressed to another outstation")
    for name in ("read_class_0", "direct_operate_crob", "request_link_status"):
        for description, frame in faults_of(template(name)).items():
            client = connect(dnp3_outstation, PROTOCOL.session())  # a fresh association, as the engine after a fault
            client.send(frame)
            reply = client.receive(0.3 if description in silent else 0.05)
            if description in silent:
                assert reply is None and not client.closed, description
            client.close()
    client = connect(dnp3_outstation, PROTOCOL.session())
    assert PROTOCOL.probe_ok(client.exchange(PROTOCOL.probe().frame, 2.0))


_POOL = [t.encode() for t in PROTOCOL.templates()] + [f for t in PROTOCOL.templates() for f in faults_of(t).values()]
_POOL += [outstation_frames(response(0, body=bytes(300)), size=100), outstation_frames(response(0, fin=False, con=True)),
          outstation_frames(build_unsolicited_response((), seq=3, con=True).to_bytes())]


@settings(max_examples=400, deadline=None)
@given(near(_POOL), near(_POOL))
def test_no_input_makes_the_module_raise(request: bytes, reply: bytes) -> None:
    """Fuzzed requests and hostile replies are data, never a crash of otfuzz itself."""
    exercise(PROTOCOL, request, reply)


def test_a_sync_request_gets_its_own_sequence_and_the_two_answers_are_told_apart_in_either_case() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    request = template("read_class_0").encode()
    session.prepare(request)  # sequence 0
    assert session.prepare_sync(PROTOCOL.sync_request()) is not None  # sequence 8: far from a multi-fragment answer's
    session.feed(outstation_frames(response(0)))
    answer = session.next_reply()
    assert answer is not None and not session.is_sync_reply(answer)
    session.feed(outstation_frames(response(8), transport_seq=1))
    sync = session.next_reply()
    assert sync is not None and session.is_sync_reply(sync)
    assert session.application_seq == 1  # the next request follows the frame, not the sync

    session.prepare(request)  # sequence 1, dropped by the outstation
    session.prepare_sync(PROTOCOL.sync_request())  # sequence 9
    session.feed(outstation_frames(response(9), transport_seq=2))
    first = session.next_reply()
    assert first is not None and session.is_sync_reply(first)  # proves sequence 1 unanswered
    session.prepare(request)  # sequence 2, the next case
    session.feed(outstation_frames(response(1), transport_seq=3))  # out of order: after the sync's answer
    assert session.next_reply() is None  # never taken for the next case's answer


def test_no_sync_follows_a_frame_cut_short() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    session.prepare(b"\x05\x64garbage")  # the start of a header cut short
    assert session.prepare_sync(PROTOCOL.sync_request()) is None
    read = template("read_class_0").encode()
    session.prepare(read + read[:12])  # ends in a frame cut short: the outstation reads on into the sync
    assert session.prepare_sync(PROTOCOL.sync_request()) is None


def test_a_link_request_s_answer_is_told_from_the_sync_s_in_either_case() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    status = build_link_status(MASTER, OUTSTATION, False).to_bytes()
    session.prepare(template("request_link_status").encode())
    sync = session.prepare_sync(PROTOCOL.sync_request())
    assert sync is not None
    sync_seq = sent_fragments(sync)[0][0] & 0x0F
    session.feed(status + outstation_frames(response(sync_seq)))
    assert session.next_reply() == status  # the link layer's answer is the frame's
    answer = session.next_reply()
    assert answer is not None and session.is_sync_reply(answer)

    session.prepare(template("request_link_status").encode())  # dropped: the sync's answer comes alone
    sync = session.prepare_sync(PROTOCOL.sync_request())
    assert sync is not None
    session.feed(outstation_frames(response(sent_fragments(sync)[0][0] & 0x0F), transport_seq=1))
    first = session.next_reply()
    assert first is not None and session.is_sync_reply(first)
    session.feed(status)  # late: never taken for a later answer
    session.prepare(template("read_class_0").encode())
    assert session.next_reply() is None


def test_a_frame_the_real_outstation_drops_is_proven_unanswered_by_the_sync_answer_within_a_round_trip(
        dnp3_outstation: int) -> None:
    import asyncio
    import time

    from otfuzz.engine.cases import TestCase
    from otfuzz.engine.executor import CaseRunner

    read = template("read_class_0").encode()
    elsewhere = bytearray(read)  # the same read addressed to outstation 0: dnp3py drops it
    elsewhere[4:6] = b"\x00\x00"
    elsewhere = PROTOCOL.repair(bytes(elsewhere))
    assert PROTOCOL.check_request(elsewhere) == ["addressed to 0, not the outstation 1"]

    async def run(sync: bool) -> tuple:
        runner = CaseRunner(PROTOCOL, "127.0.0.1", dnp3_outstation, timeout=2.0, silence_timeout=0.5)
        runner.sync = PROTOCOL.sync_request() if sync else None
        try:
            await runner.run(TestCase(1, "boundary", (read,), "read_class_0", "first"))
            conn = runner.conn
            started = time.perf_counter()
            dropped = await runner.run(TestCase(2, "boundary", (elsewhere,), "read_class_0", "elsewhere"))
            waited = time.perf_counter() - started
            replaced = runner.conn is None and conn is not None  # as after any silence: a fresh association
            after = await runner.run(TestCase(3, "boundary", (read,), "read_class_0", "next"))
            return dropped, waited, replaced, after
        finally:
            runner.drop()

    dropped, waited, replaced, after = asyncio.run(run(True))
    assert dropped.kind is ReplyKind.NO_REPLY and dropped.synced and "right behind it was answered" in dropped.detail
    assert waited < 0.25 and replaced  # not the 0.5 s silence timeout
    assert after.kind is ReplyKind.NORMAL and after.reply is not None
    dropped, waited, replaced, _ = asyncio.run(run(False))
    assert dropped.kind is ReplyKind.NO_REPLY and not dropped.synced and waited >= 0.5 and replaced  # without it: the full wait


def test_a_sync_behind_a_frame_from_another_source_comes_from_that_source() -> None:
    """From the master it would teach the outstation what the case did not (dnp3py learns its
    master from a connection's first frame whose source is not 0)."""
    session = DNP3Session(OUTSTATION, MASTER)
    read = bytearray(template("read_class_0").encode())
    read[6:8] = (0x8000).to_bytes(2, "little")  # source 32768
    session.prepare(PROTOCOL.repair(bytes(read)))
    sync = session.prepare_sync(PROTOCOL.sync_request())
    assert sync is not None
    frames, rest = split_link_frames(sync)
    assert not rest and [(f.source, f.destination, f.problems) for f in frames] == [(0x8000, OUTSTATION, ())]
    session.prepare(template("read_class_0").encode())  # from the master: so is the sync
    sync = session.prepare_sync(PROTOCOL.sync_request())
    assert sync is not None and split_link_frames(sync)[0][0].source == MASTER


def test_a_sync_follows_bytes_with_no_request_fragment_and_any_other_answer_is_theirs() -> None:
    session = DNP3Session(OUTSTATION, MASTER)
    garbage = bytearray(24)
    garbage[11] = 8  # where a fragment's control octet would be: sequence 8, the sync's first choice
    session.prepare(bytes(garbage))
    sync = session.prepare_sync(PROTOCOL.sync_request())
    assert sync is not None
    sync_seq = sent_fragments(sync)[0][0] & 0x0F
    assert sync_seq == 9  # not 8: a lenient outstation would answer the garbage with sequence 8
    session.feed(outstation_frames(response(8)))  # the garbage's answer comes first
    answer = session.next_reply()
    assert answer is not None and not session.is_sync_reply(answer)
    session.feed(outstation_frames(response(sync_seq), transport_seq=1))
    sync_answer = session.next_reply()
    assert sync_answer is not None and session.is_sync_reply(sync_answer)
    assert session.application_seq == 0  # the garbage took no sequence number: the next request has it

    session.prepare(bytes(garbage))  # dropped: the sync's answer comes alone
    session.prepare_sync(PROTOCOL.sync_request())
    session.feed(outstation_frames(response(sync_seq), transport_seq=2))
    first = session.next_reply()
    assert first is not None and session.is_sync_reply(first)


@pytest.mark.integration
def test_an_answer_out_of_sequence_is_still_a_malformed_reply_when_the_sync_answer_comes_after_it(dnp3_outstation: int) -> None:
    """dnp3py answers function 0x20 with sequence 0 whatever the request's: without the sync the
    stray answer was a malformed "incomplete reply"; with it, the sync's answer had ended the
    wait as a silence and the stray answer was lost (a finding missed in every such campaign)."""
    import asyncio

    from otfuzz.engine.cases import TestCase
    from otfuzz.engine.executor import CaseRunner

    read = template("read_class_0").encode()
    odd = bytes.fromhex("05640bc401000200699ec0c020093f06b0b7")  # function 0x20, from the campaign that missed it

    async def run(sync: bool) -> tuple[ReplyKind, str, bool]:
        runner = CaseRunner(PROTOCOL, "127.0.0.1", dnp3_outstation, timeout=2.0, silence_timeout=0.3)
        runner.sync = PROTOCOL.sync_request() if sync else None
        try:
            await runner.run(TestCase(1, "boundary", (read,), "read_class_0", "first"))  # sequence 0 taken
            outcome = await runner.run(TestCase(2, "mutation", (odd,), "read_class_0", "function 0x20"))
            return outcome.kind, outcome.detail, runner.syncs_sent > 0
        finally:
            runner.drop()

    with_sync, without = asyncio.run(run(True)), asyncio.run(run(False))
    assert with_sync[2] and not without[2]
    assert with_sync[:2] == without[:2] and with_sync[0] is ReplyKind.MALFORMED and "incomplete reply" in with_sync[1], (with_sync, without)


@pytest.mark.integration
def test_a_sync_never_changes_the_master_a_real_outstation_answers_a_later_frame_from(dnp3_outstation: int) -> None:
    """dnp3py answered a read from source 1, sent after one from source 0, to the master when
    the sync between them came from the master; the replay of the two reads (no sync) got the
    answer addressed to source 1. The sync from the frame's own source changes nothing."""
    import asyncio

    from otfuzz.engine.cases import TestCase
    from otfuzz.engine.executor import CaseRunner

    def from_source(source: int) -> bytes:
        read = bytearray(template("read_class_0").encode())
        read[6:8] = source.to_bytes(2, "little")
        return PROTOCOL.repair(bytes(read))

    async def run(sync: bool) -> tuple[ReplyKind, str]:
        runner = CaseRunner(PROTOCOL, "127.0.0.1", dnp3_outstation, timeout=2.0, silence_timeout=0.5)
        runner.sync = PROTOCOL.sync_request() if sync else None
        try:
            await runner.run(TestCase(1, "boundary", (from_source(0),), "read_class_0", "source 0"))
            outcome = await runner.run(TestCase(2, "boundary", (from_source(1),), "read_class_0", "source 1"))
            return outcome.kind, outcome.detail
        finally:
            runner.drop()

    with_sync, without = asyncio.run(run(True)), asyncio.run(run(False))
    assert with_sync == without and "to 2" not in with_sync[1], (with_sync, without)
