"""EtherNet/IP module: declarations, faults, session and classification, proven by hand-built
packets, by cpppo's own request parsers (an implementation we did not write) and against a real
cpppo 5.2.5 server on loopback (tests/targets/enip_server.py)."""

from __future__ import annotations

import contextlib
import struct

import cpppo
import pytest
from cpppo.server import enip as cpppo_enip
from cpppo.server.enip import device, logix
from hypothesis import given, settings
from targets.enip_server import TAGS

from module_robustness import exercise, near
from otfuzz.errors import OtfuzzError
from otfuzz.protocols import protocol_class
from otfuzz.protocols.base import ReplyKind, Template
from otfuzz.protocols.enip import (
    NEVER_OPENED, NEVER_REGISTERED, PRE_SESSION, SYNC_CONTEXT, EnipSession, EtherNetIP, parse_epath, split_packets,
)
from otfuzz.protocols.model import Length

PROTOCOL = EtherNetIP()
ROUTED = EtherNetIP({"route": "1/0"})
SCADA = TAGS["SCADA"][1]


def template(name: str, protocol: EtherNetIP = PROTOCOL) -> Template:
    return next(t for t in protocol.templates() if t.name == name)


def header(command: int, data: bytes = b"", handle: int = 0, status: int = 0, context: bytes = bytes(8), options: int = 0) -> bytes:
    """An encapsulation packet built by hand (test input, deliberately independent of the module)."""
    return struct.pack("<HHII8sI", command, len(data), handle, status, context, options) + data


def rr_reply(cip: bytes, context: bytes = bytes(8), handle: int = 7, status: int = 0) -> bytes:
    items = struct.pack("<IHH", 0, 0, 2) + struct.pack("<HH", 0, 0) + struct.pack("<HH", 0xB2, len(cip)) + cip
    return header(0x6F, items, handle, status, context)


def cip_reply(service: int, status: int = 0, extended: tuple[int, ...] = (), data: bytes = b"") -> bytes:
    return bytes([service | 0x80, 0, status, len(extended)]) + b"".join(e.to_bytes(2, "little") for e in extended) + data


def forward_open_reply(ot: int, to: int) -> bytes:
    return cip_reply(0x54, data=struct.pack("<IIHHIIIBB", ot, to, 1, 0x1337, 1, 2_000_000, 2_000_000, 0, 0))


def cpppo_parse(frame: bytes) -> cpppo.dotdict:
    """cpppo's own parsers: the encapsulation and CPF, then the message router request with the
    Logix or Connection Manager parser."""
    data = cpppo.dotdict()
    with cpppo_enip.enip_machine(context="enip") as machine:
        with contextlib.closing(machine.run(source=cpppo.chainable(frame), data=data)) as engine:
            for _ in engine:
                pass
    if data.enip.command in (0x6F, 0x70):
        with cpppo_enip.CIP(context="CIP") as machine:
            for _ in machine.run(source=cpppo.peekable(data.enip.input), data=data.enip):
                pass
        item = data.enip.CIP.send_data.CPF.item[1]
        request = item.connection_data.request if "connection_data" in item else item.unconnected_send.get("request")
        if request is None:  # cpppo took the request for an Unconnected Send (see the pinned bug)
            return data
        parser = device.Connection_Manager.parser if request.input[0] == 0x54 else logix.Logix.parser
        with parser as machine:
            for _ in machine.run(source=cpppo.peekable(request.input), data=request):
                pass
        data.request = request
    return data


# -- declarations -------------------------------------------------------------------------------


@pytest.mark.parametrize("tpl", ROUTED.templates(), ids=lambda t: t.name)
def test_every_template_round_trips_and_cpppo_parses_it_the_same(tpl: Template) -> None:
    frame = tpl.encode()
    values = tpl.message.decode(frame)
    plain = {k: v for k, v in values.items() if not isinstance(tpl.message.field_named(k), Length)}
    assert tpl.message.encode(plain) == frame and tpl.message.check(frame) == []
    assert ROUTED.check_request(frame) == [] and ROUTED.request_type(frame) == tpl.name
    assert ROUTED.is_write(frame) == tpl.writes
    parsed = cpppo_parse(frame)
    assert parsed.enip.command == values["command"] and parsed.enip.length == len(frame) - 24
    if "item_count" not in values:
        return
    cpf = parsed.enip.CIP.send_data.CPF
    if tpl.name == "read_tag_fragmented":
        assert "request" not in parsed  # cpppo's bug, pinned below
        return
    assert cpf.count == 2 and [cpf.item[0].type_id, cpf.item[1].type_id] == [values["address_item_type"], values["data_item_type"]]
    assert cpf.item[1].length == values["data_item_length"]
    request = parsed.request
    p = "embedded_" if "embedded_service" in values else ""
    assert request.service == values[f"{p}service"] and request.path.size == values[f"{p}path_size"]
    if p:
        route = cpf.item[1].unconnected_send.route_path
        assert (route.segment[0].port, route.segment[0].link) == (1, 0) and cpf.item[1].unconnected_send.length == values["message_size"]
    if f"{p}symbol" in values:
        assert request.path.segment[0].symbolic == values[f"{p}symbol"].decode()
    if f"{p}elements" in values:
        kind = {0x4C: "read_tag", 0x4D: "write_tag", 0x52: "read_frag"}[request.service]
        assert request[kind].elements == values[f"{p}elements"]
    if "attribute_id" in values:
        assert [s for s in request.path.segment if "attribute" in s][0].attribute == values["attribute_id"]
    if "transport_trigger" in values:
        fo = request.forward_open
        assert (fo.O_T.NCP, fo.transport_class_triggers, fo.connection_timeout_multiplier) == (0x43F4, 0xA3, 3)
        assert (fo.connection_path.segment[0].port, fo.connection_path.segment[1]["class"]) == (1, 2)


def test_templates_cover_the_issue_with_the_right_flags_and_codes() -> None:
    names = {t.name for t in PROTOCOL.templates()}
    assert {"register_session", "unregister_session", "list_identity", "list_services", "list_interfaces", "forward_open",
            "read_tag", "write_tag", "read_tag_fragmented", "get_attribute_all_identity", "get_attribute_single_identity",
            "unconnected_send_read_tag", "connected_read_tag"} <= names
    assert {t.name for t in PROTOCOL.templates() if t.writes} == {"write_tag", "unconnected_send_write_tag"}
    assert not any(t.disruptive for t in PROTOCOL.templates())
    codes = {t.name: t.code for t in PROTOCOL.templates()}
    assert codes["register_session"] == 0x65 and codes["read_tag"] == 0x4C and codes["unconnected_send_write_tag"] == 0x4D
    sixteen = template("get_attribute_single_identity_16bit").encode()
    assert [s.code for s in parse_epath(sixteen[42:])[0]] == [0x21, 0x25, 0x31]
    assert protocol_class("enip") is EtherNetIP


@pytest.mark.parametrize("options, words", [({"route": "x"}, "port/link"), ({"route": "0/1"}, "port 1..14"),
                                            ({"route": "1/256"}, "link 0..255"), ({"tag": "9lives"}, "tag name"),
                                            ({"tag": "a" * 41}, "tag name"), ({"slot": "1"}, "unknown option")])
def test_bad_options_raise_one_clear_error(options: dict[str, str], words: str) -> None:
    with pytest.raises(OtfuzzError, match=words):
        EtherNetIP(options)


def test_route_and_tag_options_reach_the_templates() -> None:
    routed = EtherNetIP({"route": "1/0,2/3", "tag": "Motor_Speed"})
    values = template("unconnected_send_read_tag", routed).message.decode(template("unconnected_send_read_tag", routed).encode())
    assert values["route_path_size"] == 2 and (values["route_port_2"], values["route_link_2"]) == (2, 3)
    assert values["embedded_symbol"] == b"Motor_Speed" and values["embedded_symbol_pad"] == b"\x00"
    fo = template("forward_open", routed).message.decode(template("forward_open", routed).encode())
    assert fo["connection_path_size"] == 4 and fo["connection_port_1"] == 1


def test_repair_makes_the_encapsulation_and_last_item_length_agree() -> None:
    frame = bytearray(template("read_tag").encode())
    frame[44:44] = b"XY"  # two bytes inside the symbol
    frame[2:4] = b"\x00\x00"
    repaired = PROTOCOL.repair(bytes(frame))
    packets, rest = split_packets(repaired)
    assert len(packets) == 1 and not rest and repaired[24:] == bytes(frame[24:])[:14] + repaired[38:40] + bytes(frame[40:])
    assert int.from_bytes(repaired[38:40], "little") == len(repaired) - 40


# -- structural faults and request checks --------------------------------------------------------

# Faults a conforming target answers with a CIP error (the module cannot know which objects and
# tags exist) or may accept (reserved fields nothing requires a target to refuse).
SEMANTIC = ("unknown class", "instance 0", "instance 0xFF", "attribute 0xFF", "does not exist", "symbol length one larger",
            "0x60+length", "NUL and non-ASCII", "(past the end of any tag)", "fragmented read", "non-zero option flags", "twice on one",
            "RegisterSession with a non-zero session handle", "NOP carrying", "then RegisterSession again",
            "sequence count repeated", "connection size 0", "same connection serial")
# (a Forward Open path cut to the class alone addresses the class: refused by a target, not by the syntax)
# or a class segment that says 16-bit swallows the instance segment of a 2-word path (matched at
# the start: the same faults of an embedded request are violations)
CLASS_PATH = ("path size one word smaller", "class segment says 16-bit")
SEMANTIC_FOR = {"forward_open": CLASS_PATH, "unconnected_send_write_tag": CLASS_PATH}


@pytest.mark.parametrize("name", ["register_session", "list_identity", "get_attribute_single_identity", "read_tag",
                                  "unconnected_send_write_tag", "forward_open", "connected_read_tag"])
def test_structural_faults_are_distinct_and_check_request_names_each_violation(name: str) -> None:
    faults = dict(ROUTED.structural_faults(template(name, ROUTED)))
    assert len(faults) >= 10 and len(set(faults.values())) == len(faults)
    for description, frame in faults.items():
        problems = ROUTED.check_request(frame)
        semantic = any(words in description for words in SEMANTIC) or description.startswith(SEMANTIC_FOR.get(name, ()))
        assert bool(problems) != semantic, (description, problems)


def test_check_request_says_which_field_breaks_which_rule() -> None:
    read = template("read_tag")
    cases = {
        read.encode(session_handle=NEVER_REGISTERED): f"session_handle={NEVER_REGISTERED} was never registered",
        read.encode(sender_context=PRE_SESSION): "sent before RegisterSession",
        template("unregister_session").encode() + read.encode(): "after UnRegisterSession",
        template("connected_read_tag").encode(connection_id=NEVER_OPENED): f"connection_id={NEVER_OPENED} was never opened",
        read.encode(item_count=3): "item_count=3 but 2 items follow",
        read.encode(path_size=9): "path_size=9 words but",
        read.encode(symbol_length=40): "needs 42 bytes but 8 remain",
        read.encode(elements=0): "elements=0 below minimum 1",
        read.encode(options=2): "options=2 must be 0",
        read.encode(status=5): "status=5 must be 0 in a request",
        read.encode(interface_handle=9): "interface_handle=9 is not 0",
        read.encode(length=99): "length=99 but 28 bytes follow",
        template("write_tag").encode(elements=3): "elements=3 of INT need 6",
        template("register_session").encode(protocol_version=2): "protocol_version=2 above maximum 1",
        template("unconnected_send_read_tag").encode(message_size=99): "message_size=99 but",
        template("forward_open").encode(timeout_multiplier=9): "timeout_multiplier=9 above maximum 7",
        template("get_attribute_single_identity").encode(class_segment=0x22): "32-bit format is for instance",
        template("get_attribute_single_identity").encode(service=0x30): "service=48 is not a defined CIP service",
    }
    for frame, words in cases.items():
        problems = PROTOCOL.check_request(frame)
        assert any(words in p for p in problems), (words, problems)


def test_is_write_is_conservative_about_mutated_services() -> None:
    assert PROTOCOL.is_write(template("get_attribute_single_identity").encode(service=0x10))  # Set_Attribute_Single
    assert PROTOCOL.is_write(template("unconnected_send_read_tag").encode(embedded_service=0x4D))
    assert PROTOCOL.is_write(template("connected_read_tag").encode(service=0x05))  # Reset
    # CPF that does not parse: the service is judged where the standard layout puts it
    assert PROTOCOL.is_write(template("write_tag").encode(item_count=7))
    assert not PROTOCOL.is_write(template("read_tag").encode(item_count=7))
    assert not PROTOCOL.is_write(template("forward_open").encode())
    assert not PROTOCOL.is_write(template("list_identity").encode(command=0x6F))


def test_needs_opening_and_expects_reply_follow_the_packets() -> None:
    assert not PROTOCOL.needs_opening(template("read_tag").encode(sender_context=PRE_SESSION))
    assert PROTOCOL.needs_opening(template("read_tag").encode())
    assert PROTOCOL.expects_reply(header(0))  # NOP: never answered, but the target may close after it
    assert PROTOCOL.expects_reply(template("unregister_session").encode())  # answered by closing
    assert PROTOCOL.classify(header(0), header(0)).kind is ReplyKind.MALFORMED
    assert PROTOCOL.frame_length(template("read_tag").encode()) == len(template("read_tag").encode())


@settings(max_examples=150, deadline=None)
@given(request=near([t.encode() for t in ROUTED.templates()]), reply=near([rr_reply(cip_reply(0x4C, data=b"\xc3\x00\x2a\x00")),
                                                                             rr_reply(forward_open_reply(1, 2))]))
def test_any_request_and_reply_are_data_never_a_crash(request: bytes, reply: bytes) -> None:
    exercise(ROUTED, request, reply)
    ROUTED.request_type(request)


# -- session ------------------------------------------------------------------------------------


def registered(handle: int = 0x1234) -> EnipSession:
    session = PROTOCOL.session()
    assert isinstance(session, EnipSession)
    (opening,) = session.opening()
    sent = session.prepare(opening)
    session.feed(header(0x65, b"\x01\x00\x00\x00", handle, context=sent[12:20]))
    assert session.next_reply() is not None and session.session_handle == handle
    return session


def test_prepare_patches_the_session_handle_and_a_unique_sender_context() -> None:
    session = registered(0xCAFE)
    first, second = (session.prepare(template("read_tag").encode()) for _ in range(2))
    assert first[4:8] == second[4:8] == (0xCAFE).to_bytes(4, "little")
    assert first[12:16] == b"otfz" and first[12:20] != second[12:20]
    assert session.prepare(template("list_identity").encode())[4:8] == bytes(4)  # no session needed
    kept = session.prepare(template("read_tag").encode(session_handle=NEVER_REGISTERED))
    assert int.from_bytes(kept[4:8], "little") == NEVER_REGISTERED
    before = session.prepare(template("read_tag").encode(sender_context=PRE_SESSION))
    assert before[4:8] == bytes(4) and before[12:20] == PRE_SESSION


def test_replies_are_matched_by_sender_context() -> None:
    session = registered()
    late = session.prepare(template("read_tag").encode())
    current = session.prepare(template("read_tag").encode())
    session.feed(rr_reply(cip_reply(0x4C), context=late[12:20]))  # answered after the next was sent
    assert session.next_reply() is not None  # still in flight: pipelined replies are all kept
    session.feed(rr_reply(cip_reply(0x4C), context=current[12:20]))
    session.feed(rr_reply(cip_reply(0x4C), context=late[12:20]))  # a second, late copy
    assert session.next_reply() is not None and session.next_reply() is None
    two = session.prepare(template("read_tag").encode() + template("get_attribute_all_identity").encode())
    packets, _ = split_packets(two)
    session.feed(rr_reply(cip_reply(0x4C), context=packets[0].context))  # the earlier packet's answer
    assert session.next_reply() is None
    session.feed(rr_reply(cip_reply(0x01), context=packets[1].context))
    assert session.next_reply() is not None
    session.feed(rr_reply(cip_reply(0x01), context=b"strange!"))  # not ours: the classifier reports it
    reply = session.next_reply()
    assert reply is not None and PROTOCOL.classify(template("read_tag").encode(sender_context=b"expected"), reply).kind is ReplyKind.MALFORMED


def test_a_connected_request_waits_for_the_session_forward_open() -> None:
    session = registered()
    sent = session.prepare(template("connected_read_tag").encode())
    assert sent[40] == 0x54 and session.take_output() == b""  # the Forward Open goes first
    session.feed(rr_reply(forward_open_reply(0xAABBCCDD, 0x01020304), context=sent[12:20]))
    assert session.next_reply() is None and session.connection == (0xAABBCCDD, 0x01020304)
    held = session.take_output()
    assert int.from_bytes(held[36:40], "little") == 0xAABBCCDD and int.from_bytes(held[44:46], "little") == 1
    assert int.from_bytes(session.prepare(template("connected_read_tag").encode())[44:46], "little") == 2
    assert int.from_bytes(session.prepare(template("connected_read_tag").encode(sequence_count=0xFFFF))[44:46], "little") == 2
    foreign = session.prepare(template("connected_read_tag").encode(connection_id=NEVER_OPENED))
    assert int.from_bytes(foreign[36:40], "little") == NEVER_OPENED


def test_a_refused_forward_open_is_the_answer_to_the_connected_request() -> None:
    session = registered()
    request = template("connected_get_attribute_single").encode()
    sent = session.prepare(request)
    session.feed(rr_reply(cip_reply(0x54, 0x01, (0x0113,)), context=sent[12:20]))
    verdict = PROTOCOL.classify(request, session.next_reply())
    assert verdict.kind is ReplyKind.EXCEPTION and "out of connections" in verdict.detail and session.connection is None


def test_forward_open_templates_get_a_fresh_serial_and_teach_the_connection() -> None:
    session = registered()
    first, second = (session.prepare(template("forward_open").encode()) for _ in range(2))
    assert first[56:58] == b"\x01\x00" and second[56:58] == b"\x02\x00" and first[52:56] != bytes(4)
    session.feed(rr_reply(forward_open_reply(77, 78), context=second[12:20]))
    assert session.next_reply() is not None and session.connection == (77, 78)


def test_a_reply_with_an_absurd_length_is_handed_over_whole() -> None:
    session = registered()
    session.prepare(template("read_tag").encode())
    session.feed(b"\x6f\x00\xff\xff" + bytes(30))
    reply = session.next_reply()
    assert reply is not None and len(reply) == 34 and PROTOCOL.classify(template("read_tag").encode(), reply).kind is ReplyKind.MALFORMED


# -- classification -----------------------------------------------------------------------------


def test_classify_names_encapsulation_and_cip_status() -> None:
    read = template("read_tag").encode()
    cases = {
        rr_reply(b"", status=0x64): (ReplyKind.EXCEPTION, "invalid session handle 0x0064"),
        rr_reply(cip_reply(0x4C, 0x05)): (ReplyKind.EXCEPTION, "path destination unknown 0x05"),
        rr_reply(cip_reply(0x4C, 0x04, (0x0000,))): (ReplyKind.EXCEPTION, "path segment error 0x04 (extended 0x0000)"),
        rr_reply(cip_reply(0x4C, 0xFF, (0x2105,))): (ReplyKind.EXCEPTION, "extended 0x2105 access beyond the end"),
        rr_reply(cip_reply(0x4C, 0x08)): (ReplyKind.EXCEPTION, "service not supported 0x08"),
        rr_reply(cip_reply(0x4C, data=b"\xc3\x00\x2a\x00")): (ReplyKind.NORMAL, "Read Tag: success"),
        rr_reply(cip_reply(0x4C, data=b"\xc3\x00\x2a")): (ReplyKind.MALFORMED, "not whole elements"),
        rr_reply(cip_reply(0x4C, data=b"\xc3\x00\x2a\x00\x2b\x00")): (ReplyKind.MALFORMED, "elements=1 need 2"),
        rr_reply(cip_reply(0x4D)): (ReplyKind.MALFORMED, "answers a request with service 0x4c"),
        header(0x65, b"\x01\x00\x00\x00", 5): (ReplyKind.MALFORMED, "RegisterSession reply to a SendRRData request"),
        rr_reply(cip_reply(0x4C))[:-1]: (ReplyKind.MALFORMED, "reply length="),
        b"\x6f\x00": (ReplyKind.MALFORMED, "shorter than the 24-byte"),
    }
    for reply, (kind, words) in cases.items():
        verdict = PROTOCOL.classify(read, reply)
        assert verdict.kind is kind and words in verdict.detail, (words, verdict)
    fragmented = template("unconnected_send_read_tag_fragmented").encode()
    assert PROTOCOL.classify(fragmented, rr_reply(cip_reply(0x52, 0x06, data=b"\xc3\x00" + bytes(8)))).kind is ReplyKind.NORMAL
    routing = PROTOCOL.classify(fragmented, rr_reply(cip_reply(0x52, 0x01, (0x0204,))))
    assert routing.kind is ReplyKind.EXCEPTION and "unconnected request timed out" in routing.detail


def test_a_target_that_echoes_a_bad_request_is_judged_by_the_request_not_called_malformed() -> None:
    """cpppo echoes the options field and the item types it was sent: the engine then reports
    the normal answer to an invalid request as a spec violation."""
    bad = template("read_tag").encode(options=3)
    reply = header(0x6F, rr_reply(cip_reply(0x4C, data=b"\xc3\x00\x00\x00"))[24:], 7, options=3)
    assert PROTOCOL.classify(bad, reply).kind is ReplyKind.NORMAL and PROTOCOL.check_request(bad)
    assert PROTOCOL.classify(template("read_tag").encode(), reply).kind is ReplyKind.MALFORMED


# -- against cpppo 5.2.5 ------------------------------------------------------------------------


def values_of(reply: bytes) -> list[int]:
    """INT values of a Read Tag reply (SendRRData, unconnected)."""
    data = reply[44 + 2 :]
    return [int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data), 2)]


@pytest.mark.integration
def test_the_session_keeps_its_state_across_many_requests_to_cpppo(enip_server: int, connect) -> None:
    client = connect(enip_server, PROTOCOL.session())
    session = client.session
    handle = session.session_handle
    assert handle
    for n in range(40):
        name = ("read_tag", "connected_read_tag", "get_attribute_single_identity", "connected_get_attribute_single")[n % 4]
        request = template(name).encode(elements=4) if name == "read_tag" else template(name).encode()
        reply = client.exchange(request)
        assert reply is not None and PROTOCOL.classify(request, reply).kind is ReplyKind.NORMAL, (n, name)
        assert reply[4:8] == handle.to_bytes(4, "little")
    assert session.counter >= 40 and session.sequence == 20 and session.session_handle == handle
    assert values_of(client.exchange(template("read_tag").encode(elements=4))) == SCADA[:4]


@pytest.mark.integration
def test_every_template_is_answered_normally_or_with_a_named_error_by_cpppo(enip_server: int, connect) -> None:
    verdicts = {}
    for tpl in PROTOCOL.templates():
        client = connect(enip_server, PROTOCOL.session())
        request = tpl.encode(data=SCADA[0].to_bytes(2, "little")) if tpl.name == "write_tag" else tpl.encode()
        reply = client.exchange(request)
        verdicts[tpl.name] = (PROTOCOL.classify(request, reply) if reply is not None else None, client.closed)
    for name, (verdict, closed) in verdicts.items():
        if name == "unregister_session":
            assert verdict is None and closed  # never answered: the target closes the connection
        elif name == "list_services":
            assert verdict.kind is ReplyKind.MALFORMED  # cpppo's deviation, pinned below
        elif name == "read_tag_fragmented":
            assert verdict.kind is ReplyKind.EXCEPTION and "0x0008" in verdict.detail  # pinned below
        else:
            assert verdict is not None and verdict.kind is ReplyKind.NORMAL, (name, verdict)


@pytest.mark.integration
def test_tag_reads_return_the_server_values(enip_server: int, connect) -> None:
    client = connect(enip_server, PROTOCOL.session())
    assert values_of(client.exchange(template("read_tag_element").encode(elements=2))) == SCADA[1:3]
    fragment = client.exchange(template("unconnected_send_read_tag_fragmented").encode(embedded_elements=10, embedded_byte_offset=6))
    assert values_of(fragment) == SCADA[3:10]
    past = template("unconnected_send_read_tag_fragmented").encode(embedded_elements=10, embedded_byte_offset=0x10000)
    verdict = PROTOCOL.classify(past, client.exchange(past))
    assert verdict.kind is ReplyKind.EXCEPTION and "0x2105" in verdict.detail  # fragmented read past the end
    too_many = template("read_tag").encode(elements=101)
    assert PROTOCOL.classify(too_many, client.exchange(too_many)).kind is ReplyKind.EXCEPTION


@pytest.mark.integration
def test_identity_sync_request_and_probe_against_cpppo(enip_server: int, connect) -> None:
    client = connect(enip_server, PROTOCOL.session())
    (identify,) = PROTOCOL.identify()
    identity = PROTOCOL.parse_identity(client.exchange(identify))
    assert identity["vendor"].startswith("1 ") and identity["product"] == "1756-L61/B LOGIX5561" and identity["revision"] == "20.11"
    sync = PROTOCOL.sync_request()
    reply = client.exchange(sync)
    assert PROTOCOL.is_sync_reply(reply) and reply[12:20] == SYNC_CONTEXT
    assert PROTOCOL.probe_ok(client.exchange(PROTOCOL.probe().frame))


@pytest.mark.integration
def test_cpppo_closes_the_session_on_unregister_and_an_error_ends_it(enip_server: int, connect) -> None:
    client = connect(enip_server, PROTOCOL.session())
    assert client.exchange(template("unregister_session").encode() + template("read_tag").encode()) is None and client.closed
    client = connect(enip_server, PROTOCOL.session())
    reply = client.exchange(template("read_tag").encode(symbol=b"NOTAG"))
    # an unknown tag: cpppo answers with encapsulation status 0x0008 and closes the connection,
    # so the engine must not reuse it (keeps_connection)
    assert reply is not None and reply[8:12] == b"\x08\x00\x00\x00"
    assert not PROTOCOL.keeps_connection(template("read_tag").encode(), reply)
    assert client.receive(1.0) is None and client.closed


# Real deviations of cpppo 5.2.5 from the EtherNet/IP specification: each pinned by a test that
# fails once cpppo conforms. In campaigns they are recorded as spec violations or malformed
# replies (reply-level), never as target-level anomalies.

@pytest.mark.integration
def test_cpppo_bug_wrong_session_state_is_not_rejected(enip_server: int, connect) -> None:
    """A conforming target answers SendRRData with an unregistered handle (also before any
    RegisterSession) with encapsulation status 0x0064; cpppo serves it. The module flags each."""
    for request, opening in ((template("read_tag").encode(session_handle=NEVER_REGISTERED), True),
                             (template("read_tag").encode(sender_context=PRE_SESSION), False)):
        assert PROTOCOL.check_request(request) and PROTOCOL.needs_opening(request) == opening
        client = connect(enip_server, PROTOCOL.session(), opening=opening)
        reply = client.exchange(request)
        assert PROTOCOL.classify(request, reply).kind is ReplyKind.NORMAL and values_of(reply) == SCADA[:1]


@pytest.mark.integration
def test_cpppo_bug_connected_requests_on_a_connection_never_opened_are_served(enip_server: int, connect) -> None:
    """SendUnitData with a connection id no Forward Open created is served as if unconnected;
    and cpppo answers connected requests with the O->T connection id, not the T->O one."""
    client = connect(enip_server, PROTOCOL.session())
    request = template("connected_read_tag").encode(connection_id=NEVER_OPENED)
    assert PROTOCOL.check_request(request)
    assert PROTOCOL.classify(request, client.exchange(request)).kind is ReplyKind.NORMAL
    assert client.session.connection is None  # and no Forward Open was sent for it
    reply = client.exchange(template("connected_read_tag").encode())
    ot, to = client.session.connection
    assert int.from_bytes(reply[36:40], "little") == ot != to


@pytest.mark.integration
def test_cpppo_bug_list_services_name_is_15_octets(enip_server: int, connect) -> None:
    """The ListServices item's name of service is 16 octets; cpppo sends "Communications\\0" (15)."""
    client = connect(enip_server, PROTOCOL.session())
    reply = client.exchange(template("list_services").encode())
    assert int.from_bytes(reply[26:28], "little") == 0x100 and int.from_bytes(reply[28:30], "little") == 19
    verdict = PROTOCOL.classify(template("list_services").encode(), reply)
    assert verdict.kind is ReplyKind.MALFORMED and "service_name: need 16 bytes" in verdict.detail


@pytest.mark.integration
def test_cpppo_bug_read_tag_fragmented_to_the_message_router_is_taken_for_unconnected_send(enip_server: int, connect) -> None:
    """Service 0x52 is Read Tag Fragmented for a tag and Unconnected Send only for the Connection
    Manager; cpppo parses every 0x52 as Unconnected Send and ends the session with status 0x0008."""
    assert cpppo_parse(template("read_tag_fragmented").encode()).enip.CIP.send_data.CPF.item[1].unconnected_send.service == 0x52
    client = connect(enip_server, PROTOCOL.session())
    reply = client.exchange(template("read_tag_fragmented").encode())
    assert reply is not None and reply[8:12] == b"\x08\x00\x00\x00"
    assert client.receive(1.0) is None and client.closed


@pytest.mark.integration
def test_cpppo_bug_a_nop_ends_the_session(enip_server: int, connect) -> None:
    """NOP is never answered and changes nothing; cpppo closes the connection after it, also
    after an empty one. (Hence expects_reply waits for NOP too.)"""
    client = connect(enip_server, PROTOCOL.session())
    assert client.exchange(header(0)) is None and client.closed


@pytest.mark.integration
def test_cpppo_bug_invalid_requests_are_answered_normally(enip_server: int, connect) -> None:
    """Requests the specification says to refuse, served by cpppo: non-zero options, an
    unsupported RegisterSession protocol version, a Write Tag whose data is short."""
    cases = [template("read_tag").encode(options=1), template("register_session").encode(protocol_version=2),
             template("write_tag").encode(elements=2, data=SCADA[0].to_bytes(2, "little"))]
    restore = template("write_tag").encode(elements=2, data=b"".join(v.to_bytes(2, "little") for v in SCADA[:2]))
    for request in cases:
        client = connect(enip_server, PROTOCOL.session())
        reply = client.exchange(request)
        assert PROTOCOL.check_request(request) and PROTOCOL.classify(request, reply).kind is ReplyKind.NORMAL, request.hex()
    client = connect(enip_server, PROTOCOL.session())
    assert PROTOCOL.classify(restore, client.exchange(restore)).kind is ReplyKind.NORMAL
    assert values_of(client.exchange(template("read_tag").encode(elements=2))) == SCADA[:2]


@pytest.mark.integration
def test_after_an_encapsulation_error_the_engine_opens_a_new_connection(enip_server: int) -> None:
    """cpppo closes the session after every encapsulation error: without keeps_connection the
    next valid case would meet that close and be blamed for it (a false connection reset)."""
    import asyncio

    from otfuzz.engine.executor import CaseRunner

    async def run() -> list[ReplyKind]:
        runner = CaseRunner(PROTOCOL, "127.0.0.1", enip_server, timeout=1.0)
        try:
            kinds = []
            for frame in (template("read_tag").encode(symbol=b"NOTAG"), template("read_tag").encode(), template("read_tag").encode()):
                kinds.append((await runner.run_frames((frame,))).kind)
            return kinds
        finally:
            runner.drop()

    assert asyncio.run(run()) == [ReplyKind.EXCEPTION, ReplyKind.NORMAL, ReplyKind.NORMAL]
