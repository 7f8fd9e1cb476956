"""BACnet/IP (ASHRAE 135: BVLC of Annex J, NPDU of clause 6, APDU of clauses 5, 20 and 21), sans-IO.

Layers, as declared here with the message model:
- BVLC: type 0x81, function, 2-octet length of the whole BVLL. Functions sent: Original-Unicast-
  NPDU for every request template, Register-Foreign-Device, Read-Broadcast-Distribution-Table and
  Read-Foreign-Device-Table; Original-Broadcast-NPDU, Distribute-Broadcast-To-Network and
  Forwarded-NPDU only as structural faults, which `loopback_only` keeps on loopback targets (a
  BBMD relays them to every device of its broadcast distribution table).
- NPDU: version 1, control (network-message, DNET, SNET, expecting-reply, priority bits), DNET/
  DLEN/DADR, SNET/SLEN/SADR, hop count, network-layer message type. Routed requests and network-
  layer messages are structural faults, loopback-only too (routers forward them onwards).
- APDU: confirmed requests (ReadProperty, ReadPropertyMultiple, WriteProperty,
  WritePropertyMultiple, SubscribeCOV, AtomicReadFile, DeviceCommunicationControl and
  ReinitializeDevice, the last two disruptive), unconfirmed requests (Who-Is, Who-Has, I-Am),
  segmentation (a segmented request in three segments with proposed window 2, a request whose
  answer comes back segmented, and the faults: out-of-order, missing and repeated segments,
  window sizes 0 and above 127, invoke ids and service choices that change mid-transaction).
- Service parameters are declared octet by octet: every tag octet (context or application
  number, class, length/value/type), every extended length octet, every opening and closing tag
  is a field of its own, so boundary and mutation strategies reach tag numbers, lengths and
  nesting with field awareness, and `check_request` walks the tag stream against each
  service's grammar.

Invoke ids are relative in generated frames. Templates carry invoke id 0; `BACnetSession.prepare`
assigns the connection's next invoke id N and sends N + the frame's own value, so a fault that
gives one segment of a transaction another invoke id ("+1") survives, while any single request is
valid whatever its value. The session takes as the reply only an answer carrying the invoke id
it assigned (a late answer to an earlier request is dropped), answers the device's confirmed COV
or event notifications with Simple-ACK, acknowledges each window of a segmented Complex-ACK with a
Segment-ACK and hands the segments over together, and sends the segments of a segmented request
window by window as the device's Segment-ACKs arrive. A frame made of several BVLLs that are all
segments of one confirmed request is such a segmented request; anything else is one datagram.

A confirmed request must be answered, also when it is wrong (ACK, Error, Reject or Abort):
silence is then a spec violation (`silence_violation`), judged only where the BVLC and NPDU are
valid and nothing (segmentation, routing, a reserved header field) could explain it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from otfuzz.errors import OtfuzzError
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import REST, Bytes, Field, Length, MessageType, UInt

# -- numbers of the standard ------------------------------------------------------------------

BVLC_TYPE = 0x81
BVLC_RESULT, WRITE_BDT, READ_BDT, READ_BDT_ACK, FORWARDED_NPDU, REGISTER_FD = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
READ_FDT, READ_FDT_ACK, DELETE_FDT_ENTRY, DISTRIBUTE_BROADCAST = 0x06, 0x07, 0x08, 0x09
ORIGINAL_UNICAST, ORIGINAL_BROADCAST, SECURE_BVLL = 0x0A, 0x0B, 0x0C
BVLC_FUNCTIONS: Mapping[int, str] = MappingProxyType({
    0x00: "BVLC-Result", 0x01: "Write-Broadcast-Distribution-Table", 0x02: "Read-Broadcast-Distribution-Table",
    0x03: "Read-Broadcast-Distribution-Table-Ack", 0x04: "Forwarded-NPDU", 0x05: "Register-Foreign-Device",
    0x06: "Read-Foreign-Device-Table", 0x07: "Read-Foreign-Device-Table-Ack", 0x08: "Delete-Foreign-Device-Table-Entry",
    0x09: "Distribute-Broadcast-To-Network", 0x0A: "Original-Unicast-NPDU", 0x0B: "Original-Broadcast-NPDU",
    0x0C: "Secure-BVLL",
})  # fmt: skip
BVLC_RESULTS: Mapping[int, str] = MappingProxyType({
    0x0000: "Successful-Completion", 0x0010: "Write-Broadcast-Distribution-Table-NAK",
    0x0020: "Read-Broadcast-Distribution-Table-NAK", 0x0030: "Register-Foreign-Device-NAK",
    0x0040: "Read-Foreign-Device-Table-NAK", 0x0050: "Delete-Foreign-Device-Table-Entry-NAK",
    0x0060: "Distribute-Broadcast-To-Network-NAK",
})  # fmt: skip
NPDU_CARRIERS = frozenset({FORWARDED_NPDU, DISTRIBUTE_BROADCAST, ORIGINAL_UNICAST, ORIGINAL_BROADCAST})
RESULT_FUNCTIONS = frozenset({WRITE_BDT, READ_BDT, REGISTER_FD, READ_FDT, DELETE_FDT_ENTRY, DISTRIBUTE_BROADCAST})
RELAYED_FUNCTIONS = frozenset({WRITE_BDT, FORWARDED_NPDU, DISTRIBUTE_BROADCAST, ORIGINAL_BROADCAST})
BVLC_WRITES = frozenset({WRITE_BDT, REGISTER_FD, DELETE_FDT_ENTRY, SECURE_BVLL})
# Functions only a BBMD or the device itself sends: a client sending them is out of place.
DEVICE_FUNCTIONS = frozenset({BVLC_RESULT, READ_BDT_ACK, READ_FDT_ACK})
BVLC_SIZES: Mapping[int, int] = MappingProxyType({READ_BDT: 4, REGISTER_FD: 6, READ_FDT: 4, DELETE_FDT_ENTRY: 10})

NPDU_VERSION = 1
NETWORK_MESSAGE, DNET_PRESENT, SNET_PRESENT, EXPECTING_REPLY = 0x80, 0x20, 0x08, 0x04
NETWORK_MESSAGES: Mapping[int, str] = MappingProxyType({
    0x00: "Who-Is-Router-To-Network", 0x01: "I-Am-Router-To-Network", 0x02: "I-Could-Be-Router-To-Network",
    0x03: "Reject-Message-To-Network", 0x04: "Router-Busy-To-Network", 0x05: "Router-Available-To-Network",
    0x06: "Initialize-Routing-Table", 0x07: "Initialize-Routing-Table-Ack", 0x08: "Establish-Connection-To-Network",
    0x09: "Disconnect-Connection-To-Network", 0x0A: "Challenge-Request", 0x0B: "Security-Payload",
    0x0C: "Security-Response", 0x0D: "Request-Key-Update", 0x0E: "Update-Key-Set", 0x0F: "Update-Distribution-Key",
    0x10: "Request-Master-Key", 0x11: "Set-Master-Key", 0x12: "What-Is-Network-Number", 0x13: "Network-Number-Is",
})  # fmt: skip
NETWORK_REJECT_REASONS: Mapping[int, str] = MappingProxyType({
    0: "other", 1: "not-directly-connected", 2: "router-busy", 3: "unknown-network-message", 4: "message-too-long",
    5: "security-error", 6: "addressing-error",
})  # fmt: skip
GLOBAL_BROADCAST_NET = 0xFFFF

CONFIRMED, UNCONFIRMED, SIMPLE_ACK, COMPLEX_ACK, SEGMENT_ACK, ERROR, REJECT, ABORT = range(8)
PDU_TYPES: Mapping[int, str] = MappingProxyType({
    0: "Confirmed-Request", 1: "Unconfirmed-Request", 2: "Simple-ACK", 3: "Complex-ACK", 4: "Segment-ACK",
    5: "Error", 6: "Reject", 7: "Abort",
})  # fmt: skip
SEGMENTED, MORE_FOLLOWS, SEGMENTED_ACCEPTED = 0x08, 0x04, 0x02
NAK, SERVER = 0x02, 0x01  # Segment-ACK flags; Abort uses SERVER too

CONFIRMED_SERVICES: Mapping[int, str] = MappingProxyType({
    0: "AcknowledgeAlarm", 1: "ConfirmedCOVNotification", 2: "ConfirmedEventNotification", 3: "GetAlarmSummary",
    4: "GetEnrollmentSummary", 5: "SubscribeCOV", 6: "AtomicReadFile", 7: "AtomicWriteFile", 8: "AddListElement",
    9: "RemoveListElement", 10: "CreateObject", 11: "DeleteObject", 12: "ReadProperty", 13: "ReadPropertyConditional",
    14: "ReadPropertyMultiple", 15: "WriteProperty", 16: "WritePropertyMultiple", 17: "DeviceCommunicationControl",
    18: "ConfirmedPrivateTransfer", 19: "ConfirmedTextMessage", 20: "ReinitializeDevice", 21: "VT-Open",
    22: "VT-Close", 23: "VT-Data", 24: "Authenticate", 25: "RequestKey", 26: "ReadRange", 27: "LifeSafetyOperation",
    28: "SubscribeCOVProperty", 29: "GetEventInformation", 30: "SubscribeCOVPropertyMultiple",
    31: "ConfirmedCOVNotificationMultiple", 32: "ConfirmedAuditNotification", 33: "AuditLogQuery",
})  # fmt: skip
UNCONFIRMED_SERVICES: Mapping[int, str] = MappingProxyType({
    0: "I-Am", 1: "I-Have", 2: "UnconfirmedCOVNotification", 3: "UnconfirmedEventNotification",
    4: "UnconfirmedPrivateTransfer", 5: "UnconfirmedTextMessage", 6: "TimeSynchronization", 7: "Who-Has", 8: "Who-Is",
    9: "UTCTimeSynchronization", 10: "WriteGroup", 11: "UnconfirmedCOVNotificationMultiple",
    12: "UnconfirmedAuditNotification", 13: "Who-Am-I", 14: "You-Are",
})  # fmt: skip
SUBSCRIBE_COV, ATOMIC_READ_FILE, READ_PROPERTY, READ_PROPERTY_MULTIPLE = 5, 6, 12, 14
WRITE_PROPERTY, WRITE_PROPERTY_MULTIPLE, DEVICE_COMMUNICATION_CONTROL, REINITIALIZE_DEVICE = 15, 16, 17, 20
I_AM, I_HAVE, WHO_HAS, WHO_IS = 0, 1, 7, 8
READ_SERVICES = frozenset({3, 4, 6, 12, 13, 14, 26, 29})  # cannot change the device's state
UNCONFIRMED_READS = frozenset({WHO_HAS, WHO_IS})
SIMPLE_ACK_SERVICES = frozenset({0, 1, 2, 5, 7, 8, 9, 11, 15, 16, 17, 19, 20, 22, 24, 25, 27, 28, 30, 31, 32})
NOTIFICATIONS = frozenset({1, 2})  # confirmed requests a device sends its subscribers: acknowledged at once

REJECT_REASONS: Mapping[int, str] = MappingProxyType({
    0: "other", 1: "buffer-overflow", 2: "inconsistent-parameters", 3: "invalid-parameter-data-type", 4: "invalid-tag",
    5: "missing-required-parameter", 6: "parameter-out-of-range", 7: "too-many-arguments", 8: "undefined-enumeration",
    9: "unrecognized-service", 10: "invalid-data-encoding",
})  # fmt: skip
ABORT_REASONS: Mapping[int, str] = MappingProxyType({
    0: "other", 1: "buffer-overflow", 2: "invalid-apdu-in-this-state", 3: "preempted-by-higher-priority-task",
    4: "segmentation-not-supported", 5: "security-error", 6: "insufficient-security", 7: "window-size-out-of-range",
    8: "application-exceeded-reply-time", 9: "out-of-resources", 10: "tsm-timeout", 11: "apdu-too-long",
})  # fmt: skip
ERROR_CLASSES: Mapping[int, str] = MappingProxyType({
    0: "device", 1: "object", 2: "property", 3: "resources", 4: "security", 5: "services", 6: "vt", 7: "communication",
})  # fmt: skip
ERROR_CODES: Mapping[int, str] = MappingProxyType({
    0: "other", 2: "configuration-in-progress", 3: "device-busy", 4: "dynamic-creation-not-supported",
    5: "file-access-denied", 7: "inconsistent-parameters", 8: "inconsistent-selection-criterion", 9: "invalid-data-type",
    10: "invalid-file-access-method", 11: "invalid-file-start-position", 13: "invalid-parameter-data-type",
    14: "invalid-time-stamp", 16: "missing-required-parameter", 17: "no-objects-of-specified-type",
    18: "no-space-for-object", 19: "no-space-to-add-list-element", 20: "no-space-to-write-property",
    21: "no-vt-sessions-available", 22: "property-is-not-a-list", 23: "object-deletion-not-permitted",
    24: "object-identifier-already-exists", 25: "operational-problem", 26: "password-failure",
    27: "read-access-denied", 29: "service-request-denied", 30: "timeout", 31: "unknown-object",
    32: "unknown-property", 34: "unknown-vt-class", 35: "unknown-vt-session", 36: "unsupported-object-type",
    37: "value-out-of-range", 38: "vt-session-already-closed", 39: "vt-session-termination-failure",
    40: "write-access-denied", 41: "character-set-not-supported", 42: "invalid-array-index",
    43: "cov-subscription-failed", 44: "not-cov-property", 45: "optional-functionality-not-supported",
    46: "invalid-configuration-data", 47: "datatype-not-supported", 48: "duplicate-name", 49: "duplicate-object-id",
    50: "property-is-not-an-array", 51: "abort-buffer-overflow", 52: "abort-invalid-apdu-in-this-state",
    53: "abort-preempted-by-higher-priority-task", 54: "abort-segmentation-not-supported", 55: "abort-proprietary",
    56: "abort-other", 57: "invalid-tag", 58: "network-down", 59: "reject-buffer-overflow",
    60: "reject-inconsistent-parameters", 61: "reject-invalid-parameter-data-type", 62: "reject-invalid-tag",
    63: "reject-missing-required-parameter", 64: "reject-parameter-out-of-range", 65: "reject-too-many-arguments",
    66: "reject-undefined-enumeration", 67: "reject-unrecognized-service", 68: "reject-proprietary",
    69: "reject-other", 70: "unknown-device", 71: "unknown-route", 72: "value-not-initialized",
    73: "invalid-event-state", 74: "no-alarm-configured", 75: "log-buffer-full", 76: "logged-value-purged",
    77: "no-property-specified", 78: "not-configured-for-triggered-logging", 79: "unknown-subscription",
    80: "parameter-out-of-range", 81: "list-element-not-found", 82: "busy", 83: "communication-disabled",
    84: "success", 85: "access-denied", 110: "not-router-to-dnet", 111: "router-busy",
    112: "unknown-network-message", 113: "message-too-long", 114: "security-error", 115: "addressing-error",
    116: "write-bdt-failed", 117: "read-bdt-failed", 118: "register-foreign-device-failed", 119: "read-fdt-failed",
    120: "delete-fdt-entry-failed", 121: "distribute-broadcast-failed", 122: "unknown-file-size",
    123: "abort-apdu-too-long", 124: "abort-application-exceeded-reply-time", 125: "abort-out-of-resources",
    126: "abort-tsm-timeout", 127: "abort-window-size-out-of-range", 128: "file-full",
    129: "inconsistent-configuration", 130: "inconsistent-object-type", 131: "internal-error", 132: "not-configured",
    133: "out-of-memory", 134: "value-too-long", 135: "abort-insufficient-security", 136: "abort-security-error",
    137: "duplicate-entry", 138: "invalid-value-in-this-state",
})  # fmt: skip
OBJECT_TYPES: Mapping[int, str] = MappingProxyType({
    0: "analog-input", 1: "analog-output", 2: "analog-value", 3: "binary-input", 4: "binary-output",
    5: "binary-value", 6: "calendar", 7: "command", 8: "device", 9: "event-enrollment", 10: "file", 11: "group",
    12: "loop", 13: "multi-state-input", 14: "multi-state-output", 15: "notification-class", 16: "program",
    17: "schedule", 18: "averaging", 19: "multi-state-value", 20: "trend-log", 21: "life-safety-point",
    22: "life-safety-zone", 23: "accumulator", 24: "pulse-converter", 25: "event-log", 26: "global-group",
    27: "trend-log-multiple", 28: "load-control", 29: "structured-view", 30: "access-door", 31: "timer",
    32: "access-credential", 33: "access-point", 34: "access-rights", 35: "access-user", 36: "access-zone",
    37: "credential-data-input", 39: "bitstring-value", 40: "characterstring-value", 41: "date-pattern-value",
    42: "date-value", 43: "datetime-pattern-value", 44: "datetime-value", 45: "integer-value",
    46: "large-analog-value", 47: "octetstring-value", 48: "positive-integer-value", 49: "time-pattern-value",
    50: "time-value", 51: "notification-forwarder", 52: "alert-enrollment", 53: "channel", 54: "lighting-output",
    55: "binary-lighting-output", 56: "network-port", 57: "elevator-group", 58: "escalator", 59: "lift",
    60: "staging", 61: "audit-log", 62: "audit-reporter",
})  # fmt: skip
OBJECT_TYPE_NUMBERS: Mapping[str, int] = MappingProxyType({name: number for number, name in OBJECT_TYPES.items()})
DEVICE, FILE = 8, 10
PROPERTIES: Mapping[int, str] = MappingProxyType({
    8: "all", 11: "apdu-timeout", 12: "application-software-version", 28: "description", 44: "firmware-revision",
    62: "max-apdu-length-accepted", 70: "model-name", 73: "number-of-apdu-retries", 75: "object-identifier",
    76: "object-list", 77: "object-name", 79: "object-type", 80: "required", 85: "present-value",
    87: "priority-array", 96: "protocol-object-types-supported", 97: "protocol-services-supported",
    98: "protocol-version", 104: "relinquish-default", 105: "optional", 107: "segmentation-supported",
    111: "status-flags", 112: "system-status", 117: "units", 120: "vendor-identifier", 121: "vendor-name",
    139: "protocol-revision", 155: "database-revision",
})  # fmt: skip
ALL, DESCRIPTION, FIRMWARE_REVISION, MODEL_NAME, OBJECT_LIST = 8, 28, 44, 70, 76
OBJECT_NAME, PRESENT_VALUE, SYSTEM_STATUS, VENDOR_NAME = 77, 85, 112, 121
MAX_INSTANCE = 0x3FFFFF  # 4194303: in a device object identifier, "the device that receives this"
MAX_APDU_CODES: Mapping[int, int] = MappingProxyType({0: 50, 1: 128, 2: 206, 3: 480, 4: 1024, 5: 1476})
REINITIALIZED_STATES: Mapping[int, str] = MappingProxyType({
    0: "coldstart", 1: "warmstart", 2: "start-backup", 3: "end-backup", 4: "start-restore", 5: "end-restore",
    6: "abort-restore", 7: "activate-changes",
})  # fmt: skip
ENABLE_DISABLE: Mapping[int, str] = MappingProxyType({0: "enable", 1: "disable", 2: "disable-initiation"})
CHARACTER_SETS: Mapping[int, str] = MappingProxyType({0: "ISO 10646 (UTF-8)", 1: "IBM/Microsoft DBCS", 2: "JIS X 0208",
                                                      3: "ISO 10646 (UCS-4)", 4: "ISO 10646 (UCS-2)", 5: "ISO 8859-1"})
PASSWORD_MAX = 20  # characters (DeviceCommunicationControl, ReinitializeDevice)
TEMPLATE_PASSWORD = b"otfuzz"
LOOPBACK_SOURCE = bytes([127, 0, 0, 1]) + (47808).to_bytes(2, "big")  # original source of Forwarded-NPDU faults

# Application tag numbers (clause 20.2.1.4) and the fixed sizes of their contents
APP_NULL, APP_BOOLEAN, APP_UNSIGNED, APP_SIGNED, APP_REAL, APP_DOUBLE, APP_OCTETS, APP_STRING = range(8)
APP_BITS, APP_ENUMERATED, APP_DATE, APP_TIME, APP_OBJECT_ID = 8, 9, 10, 11, 12
APPLICATION_TAGS: Mapping[int, str] = MappingProxyType({
    0: "Null", 1: "Boolean", 2: "Unsigned", 3: "Signed", 4: "Real", 5: "Double", 6: "OctetString",
    7: "CharacterString", 8: "BitString", 9: "Enumerated", 10: "Date", 11: "Time", 12: "BACnetObjectIdentifier",
})  # fmt: skip
APPLICATION_SIZES: Mapping[int, int] = MappingProxyType({APP_NULL: 0, APP_REAL: 4, APP_DOUBLE: 8, APP_DATE: 4, APP_TIME: 4,
                                                         APP_OBJECT_ID: 4})

# Operation numbers for conduit policies: the three numberings overlap, so unconfirmed services
# and BVLC functions are moved out of the confirmed service range.
UNCONFIRMED_CODE_BASE, BVLC_CODE_BASE = 0x100, 0x200


def object_identifier(object_type: int, instance: int) -> int:
    """BACnetObjectIdentifier: 10-bit object type, 22-bit instance."""
    return (object_type << 22) | instance


def object_name(value: int) -> str:
    kind, instance = value >> 22, value & MAX_INSTANCE
    return f"{OBJECT_TYPES.get(kind, f'type-{kind}')},{instance}"


# -- declarations: one field per octet of meaning ------------------------------------------------


def _tag_octet(number: int, context: bool, lvt: int) -> int:
    return (number << 4) | (0x08 if context else 0) | lvt


def _bvlc(function: int = ORIGINAL_UNICAST, prefix: str = "", covers: Sequence[str] | str = REST) -> list[Field]:
    return [
        UInt(f"{prefix}bvlc_type", 8, default=BVLC_TYPE, enum={BVLC_TYPE: "BACnet/IP"}),
        UInt(f"{prefix}bvlc_function", 8, default=function, enum=BVLC_FUNCTIONS),
        Length(f"{prefix}bvlc_length", 16, covers=covers, adjust=4),  # the whole BVLL, header included
    ]


def _npdu(control: int, prefix: str = "") -> list[Field]:
    return [UInt(f"{prefix}npdu_version", 8, default=NPDU_VERSION, enum={NPDU_VERSION: "ASHRAE 135"}),
            UInt(f"{prefix}npdu_control", 8, default=control)]


def _confirmed(service: int, prefix: str = "", segmented: bool = False, pdu_type: int = SEGMENTED_ACCEPTED) -> list[Field]:
    fields: list[Field] = [
        UInt(f"{prefix}pdu_type", 8, default=pdu_type),  # type 0 in the high nibble, SEG/MOR/SA flags below
        UInt(f"{prefix}max_response", 8, default=0x45),  # max-segments 16 (bits 6-4), max-APDU 1476 (bits 3-0)
        UInt(f"{prefix}invoke_id", 8),
    ]
    if segmented:
        fields += [UInt(f"{prefix}sequence_number", 8),
                   UInt(f"{prefix}proposed_window_size", 8, default=2, minimum=1, maximum=127)]
    return fields + [UInt(f"{prefix}service_choice", 8, default=service, enum=CONFIRMED_SERVICES)]


def _unconfirmed(service: int) -> list[Field]:
    return [UInt("pdu_type", 8, default=UNCONFIRMED << 4),
            UInt("service_choice", 8, default=service, enum=UNCONFIRMED_SERVICES)]


def _context(name: str, number: int, bits: int, default: int = 0, **limits: Any) -> list[Field]:
    """A context-tagged value: its tag octet, then the value."""
    return [UInt(f"{name}_tag", 8, default=_tag_octet(number, True, bits // 8)), UInt(name, bits, default=default, **limits)]


def _application(name: str, tag: int, bits: int, default: int = 0, **limits: Any) -> list[Field]:
    return [UInt(f"{name}_tag", 8, default=_tag_octet(tag, False, bits // 8)), UInt(name, bits, default=default, **limits)]


def _string(name: str, number: int) -> list[Field]:
    """A context-tagged CharacterString with an extended length octet: tag (LVT 5), length, then
    the character set octet and the characters together as `name`."""
    return [UInt(f"{name}_tag", 8, default=_tag_octet(number, True, 5)),
            Length(f"{name}_length", 8, covers=[name]),
            Bytes(name, size_from=f"{name}_length")]


def _opening(name: str, number: int) -> Field:
    return UInt(f"{name}_open", 8, default=_tag_octet(number, True, 6))


def _closing(name: str, number: int) -> Field:
    return UInt(f"{name}_close", 8, default=_tag_octet(number, True, 7))


def _object(name: str = "object_id", number: int = 0) -> list[Field]:
    return _context(name, number, 32)


def _request(name: str, service: int, parameters: Sequence[Field], doc: str = "", max_response: int = 0x45) -> MessageType:
    header = _confirmed(service)
    header[1] = UInt("max_response", 8, default=max_response)
    return MessageType(name, [*_bvlc(), *_npdu(EXPECTING_REPLY), *header, *parameters], doc=doc)


READ_PROPERTY_TYPE = _request("ReadProperty-Request", READ_PROPERTY, [
    *_object(), *_context("property_id", 1, 8),
], doc="[0] object identifier, [1] property identifier")
READ_PROPERTY_INDEX_TYPE = _request("ReadProperty-Request (array index)", READ_PROPERTY, [
    *_object(), *_context("property_id", 1, 8), *_context("array_index", 2, 8),
], doc="[0] object identifier, [1] property identifier, [2] property array index")
RPM_TYPE = _request("ReadPropertyMultiple-Request", READ_PROPERTY_MULTIPLE, [
    *_object(), _opening("references", 1),
    *_context("property_1", 0, 8), *_context("property_2", 0, 8), *_context("property_3", 0, 8),
    *_context("property_4", 0, 8), _closing("references", 1),
], doc="one read access specification: [0] object, [1] { four property references }")
RPM_ONE_TYPE = _request("ReadPropertyMultiple-Request (one reference)", READ_PROPERTY_MULTIPLE, [
    *_object(), _opening("references", 1), *_context("property_id", 0, 8), _closing("references", 1),
], doc="one read access specification with one property reference")
WRITE_PROPERTY_TYPE = _request("WriteProperty-Request", WRITE_PROPERTY, [
    *_object(), *_context("property_id", 1, 8), _opening("value", 3),
    *_application("real", APP_REAL, 32), _closing("value", 3), *_context("priority", 4, 8, default=8, minimum=1, maximum=16),
], doc="[0] object, [1] property, [3] { REAL }, [4] priority 1..16")
WRITE_STRING_TYPE = _request("WriteProperty-Request (CharacterString)", WRITE_PROPERTY, [
    *_object(), *_context("property_id", 1, 8), _opening("value", 3),
    UInt("string_tag", 8, default=_tag_octet(APP_STRING, False, 5)), Length("string_length", 8, covers=["string"]),
    Bytes("string", size_from="string_length"), _closing("value", 3),
], doc="[0] object, [1] property, [3] { CharacterString with an extended length octet }")
WPM_TYPE = _request("WritePropertyMultiple-Request", WRITE_PROPERTY_MULTIPLE, [
    *_object(), _opening("specifications", 1), *_context("property_id", 0, 8), _opening("value", 2),
    *_application("real", APP_REAL, 32), _closing("value", 2), *_context("priority", 3, 8, default=8, minimum=1, maximum=16),
    _closing("specifications", 1),
], doc="[0] object, [1] { [0] property, [2] { REAL }, [3] priority }")
SUBSCRIBE_COV_TYPE = _request("SubscribeCOV-Request", SUBSCRIBE_COV, [
    *_context("subscriber_process_id", 0, 8, default=1), *_object("monitored_object_id", 1),
    *_context("issue_confirmed_notifications", 2, 8, maximum=1), *_context("lifetime", 3, 8, default=60),
], doc="[0] process id, [1] object, [2] confirmed notifications (Boolean), [3] lifetime in seconds")
ATOMIC_READ_FILE_TYPE = _request("AtomicReadFile-Request", ATOMIC_READ_FILE, [
    *_application("file_id", APP_OBJECT_ID, 32), _opening("stream_access", 0),
    *_application("file_start_position", APP_SIGNED, 8), *_application("requested_octet_count", APP_UNSIGNED, 8),
    _closing("stream_access", 0),
], doc="file identifier, [0] { start position (Signed), octet count (Unsigned) } (stream access)")
DCC_TYPE = _request("DeviceCommunicationControl-Request", DEVICE_COMMUNICATION_CONTROL, [
    *_context("enable_disable", 1, 8, enum=ENABLE_DISABLE), *_string("password", 2),
], doc="[1] enable/disable, [2] password (CharacterString, up to 20 characters)")
REINITIALIZE_TYPE = _request("ReinitializeDevice-Request", REINITIALIZE_DEVICE, [
    *_context("reinitialized_state", 0, 8, default=1, enum=REINITIALIZED_STATES), *_string("password", 1),
], doc="[0] reinitialized state of device, [1] password")
WHO_IS_TYPE = MessageType("Who-Is-Request", [
    *_bvlc(), *_npdu(0), *_unconfirmed(WHO_IS),
    *_context("low_limit", 0, 24, maximum=MAX_INSTANCE), *_context("high_limit", 1, 24, maximum=MAX_INSTANCE),
], doc="[0] device instance range low limit, [1] high limit")
WHO_HAS_TYPE = MessageType("Who-Has-Request", [*_bvlc(), *_npdu(0), *_unconfirmed(WHO_HAS), *_object("object_id", 2)],
                           doc="[2] object identifier searched for")
I_AM_TYPE = MessageType("I-Am-Request", [
    *_bvlc(), *_npdu(0), *_unconfirmed(I_AM), *_application("device_id", APP_OBJECT_ID, 32),
    *_application("max_apdu_length_accepted", APP_UNSIGNED, 16, default=1476, minimum=50),
    *_application("segmentation_supported", APP_ENUMERATED, 8, default=3, maximum=3),
    *_application("vendor_id", APP_UNSIGNED, 16),
], doc="device identifier, max APDU length accepted, segmentation supported, vendor identifier")
REGISTER_FD_TYPE = MessageType("Register-Foreign-Device", [*_bvlc(REGISTER_FD), UInt("time_to_live", 16, default=60)],
                               doc="BVLC: register as a foreign device for time_to_live seconds")
READ_BDT_TYPE = MessageType("Read-Broadcast-Distribution-Table", _bvlc(READ_BDT))
READ_FDT_TYPE = MessageType("Read-Foreign-Device-Table", _bvlc(READ_FDT))
NETWORK_MESSAGE_TYPE = MessageType("Network-Layer-Message", [
    *_bvlc(), *_npdu(NETWORK_MESSAGE), UInt("message_type", 8, enum=NETWORK_MESSAGES), Bytes("message_data"),
], doc="NPDU with the network-layer message bit: message type, then its data")
SEGMENT_ACK_TYPE = MessageType("Segment-ACK", [
    *_bvlc(), *_npdu(0), UInt("pdu_type", 8, default=SEGMENT_ACK << 4), UInt("invoke_id", 8),
    UInt("sequence_number", 8), UInt("actual_window_size", 8, default=1, minimum=1, maximum=127),
], doc="acknowledges the segments of a segmented message up to sequence_number")
SIMPLE_ACK_TYPE = MessageType("Simple-ACK", [
    *_bvlc(), *_npdu(0), UInt("pdu_type", 8, default=SIMPLE_ACK << 4), UInt("invoke_id", 8),
    UInt("service_choice", 8, enum=CONFIRMED_SERVICES),
])
ABORT_TYPE = MessageType("Abort", [
    *_bvlc(), *_npdu(0), UInt("pdu_type", 8, default=ABORT << 4), UInt("invoke_id", 8),
    UInt("abort_reason", 8, enum=ABORT_REASONS),
])

SEGMENTS = 3


def _segment_fields(index: int, last: bool) -> list[Field]:
    prefix = f"s{index}_"
    names = [f"{prefix}{n}" for n in ("npdu_version", "npdu_control", "pdu_type", "max_response", "invoke_id",
                                       "sequence_number", "proposed_window_size", "service_choice", "data")]
    flags = SEGMENTED | SEGMENTED_ACCEPTED | (0 if last else MORE_FOLLOWS)
    return [*_bvlc(prefix=prefix, covers=names), *_npdu(EXPECTING_REPLY, prefix),
            *_confirmed(READ_PROPERTY_MULTIPLE, prefix, segmented=True, pdu_type=flags), Bytes(f"{prefix}data", size=5)]


SEGMENTED_RPM_TYPE = MessageType(
    "ReadPropertyMultiple-Request (segmented)",
    [f for i in range(SEGMENTS) for f in _segment_fields(i, i == SEGMENTS - 1)],
    doc="one ReadPropertyMultiple request in three segments of five octets, proposed window 2",
)
REQUEST_TYPES = (READ_PROPERTY_TYPE, READ_PROPERTY_INDEX_TYPE, RPM_TYPE, RPM_ONE_TYPE, WRITE_PROPERTY_TYPE, WRITE_STRING_TYPE,
                 WPM_TYPE, SUBSCRIBE_COV_TYPE, ATOMIC_READ_FILE_TYPE, DCC_TYPE, REINITIALIZE_TYPE, WHO_IS_TYPE, WHO_HAS_TYPE,
                 I_AM_TYPE, REGISTER_FD_TYPE, READ_BDT_TYPE, READ_FDT_TYPE, SEGMENTED_RPM_TYPE)


# -- parsing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bvll:
    """One BVLL: `payload` is what follows the header (after the original source address of a
    Forwarded-NPDU); `problem` says why it is not a well-formed BVLL."""

    raw: bytes
    type: int
    function: int
    length: int
    payload: bytes
    original_source: bytes | None = None
    problem: str | None = None


def parse_bvll(data: bytes) -> Bvll:
    """Read the BVLC header of one datagram (leniently: the payload is the rest of the datagram)."""
    if len(data) < 4:
        return Bvll(data, data[0] if data else 0, data[1] if len(data) > 1 else 0, 0, b"",
                    problem=f"bvlc_length: datagram of {len(data)} octets is shorter than the 4-octet BVLC header")
    kind, function, length = data[0], data[1], int.from_bytes(data[2:4], "big")
    payload, source, problem = data[4:], None, None
    if function == FORWARDED_NPDU:
        source, payload = data[4:10], data[10:]
        if len(source) < 6:
            problem = f"original_source has {len(source)} octets, not 6"
    if kind != BVLC_TYPE:
        problem = f"bvlc_type=0x{kind:02x} is not BACnet/IP 0x81"
    elif length != len(data):
        problem = f"bvlc_length={length} but the datagram has {len(data)} octets"
    return Bvll(bytes(data), kind, function, length, payload, source, problem)


def split_bvlls(data: bytes) -> list[bytes]:
    """The BVLLs of a frame made of several, each by its own length; one part when they do not
    follow each other exactly (a single datagram, whatever its length field says)."""
    parts: list[bytes] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4 or data[pos] != BVLC_TYPE:
            return [data]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 4 or pos + length > len(data):
            return [data]
        parts.append(data[pos : pos + length])
        pos += length
    return parts or [data]


def _network_address(data: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """NET (2 octets), LEN and ADR at `pos`: (net, adr, the position after), None when cut short."""
    if len(data) < pos + 3:
        return None
    length = data[pos + 2]
    adr = bytes(data[pos + 3 : pos + 3 + length])
    if len(adr) < length:
        return None
    return int.from_bytes(data[pos : pos + 2], "big"), adr, pos + 3 + length


@dataclass(frozen=True)
class Npdu:
    version: int
    control: int
    dnet: int | None
    dadr: bytes
    snet: int | None
    sadr: bytes
    hop_count: int | None
    message_type: int | None
    apdu: bytes  # the APDU, or the network message's data
    problem: str | None = None

    @property
    def routed(self) -> bool:
        """Addressed to another network (not the local one or a global broadcast)."""
        return self.dnet is not None and self.dnet != GLOBAL_BROADCAST_NET


def parse_npdu(data: bytes) -> Npdu:
    if len(data) < 2:
        return Npdu(data[0] if data else 0, 0, None, b"", None, b"", None, None, b"",
                    f"npdu_control: NPDU of {len(data)} octets has no control octet")
    version, control = data[0], data[1]
    pos = 2
    dnet = snet = hop = message = None
    dadr = sadr = b""

    def cut(what: str) -> Npdu:
        return Npdu(version, control, dnet, dadr, snet, sadr, hop, message, b"", f"{what}: NPDU ends at octet {len(data)}")

    if control & DNET_PRESENT:
        address = _network_address(data, pos)
        if address is None:
            return cut("dnet" if len(data) < pos + 3 else "dadr")
        dnet, dadr, pos = address
    if control & SNET_PRESENT:
        address = _network_address(data, pos)
        if address is None:
            return cut("snet" if len(data) < pos + 3 else "sadr")
        snet, sadr, pos = address
    if control & DNET_PRESENT:
        if len(data) <= pos:
            return cut("hop_count")
        hop = data[pos]
        pos += 1
    if control & NETWORK_MESSAGE:
        if len(data) <= pos:
            return cut("message_type")
        message = data[pos]
        pos += 3 if message >= 0x80 else 1  # vendor id after proprietary message types
        if pos > len(data):
            return cut("vendor_id")
    return Npdu(version, control, dnet, dadr, snet, sadr, hop, message, bytes(data[pos:]))


@dataclass(frozen=True)
class Apdu:
    """The fixed part of an APDU; `body` is what follows it (service parameters or a reason)."""

    pdu_type: int
    flags: int
    invoke_id: int | None = None
    service: int | None = None
    max_response: int = 0
    sequence: int | None = None
    window: int | None = None
    reason: int | None = None
    body: bytes = b""
    problem: str | None = None

    @property
    def segmented(self) -> bool:
        return self.pdu_type in (CONFIRMED, COMPLEX_ACK) and bool(self.flags & SEGMENTED)

    @property
    def more_follows(self) -> bool:
        return self.pdu_type in (CONFIRMED, COMPLEX_ACK) and bool(self.flags & MORE_FOLLOWS)

    @property
    def name(self) -> str:
        return PDU_TYPES.get(self.pdu_type, f"APDU type {self.pdu_type}")


def parse_apdu(data: bytes) -> Apdu:
    """The header of an APDU of any type; a header cut short keeps what it had."""
    if not data:
        return Apdu(-1, 0, problem="pdu_type: APDU missing, the NPDU ends after its header")
    kind, flags = data[0] >> 4, data[0] & 0x0F

    def short(need: int) -> str:
        return f"{PDU_TYPES.get(kind, 'APDU')} header cut short: {len(data)} of {need} octets"

    if kind == CONFIRMED:
        seg = bool(flags & SEGMENTED)
        need = 6 if seg else 4
        if len(data) < 3:
            return Apdu(kind, flags, problem=short(need))
        head = Apdu(kind, flags, data[2], None, data[1])
        if len(data) < need:
            return Apdu(kind, flags, data[2], None, data[1], problem=short(need))
        if seg:
            return Apdu(kind, flags, data[2], data[5], data[1], data[3], data[4], body=bytes(data[6:]))
        return Apdu(kind, flags, head.invoke_id, data[3], data[1], body=bytes(data[4:]))
    if kind == UNCONFIRMED:
        if len(data) < 2:
            return Apdu(kind, flags, problem=short(2))
        return Apdu(kind, flags, service=data[1], body=bytes(data[2:]))
    if kind in (SIMPLE_ACK, ERROR):
        if len(data) < 3:
            return Apdu(kind, flags, data[1] if len(data) > 1 else None, problem=short(3))
        return Apdu(kind, flags, data[1], data[2], body=bytes(data[3:]))
    if kind == COMPLEX_ACK:
        seg = bool(flags & SEGMENTED)
        need = 5 if seg else 3
        if len(data) < need:
            return Apdu(kind, flags, data[1] if len(data) > 1 else None, problem=short(need))
        if seg:
            return Apdu(kind, flags, data[1], data[4], sequence=data[2], window=data[3], body=bytes(data[5:]))
        return Apdu(kind, flags, data[1], data[2], body=bytes(data[3:]))
    if kind == SEGMENT_ACK:
        if len(data) < 4:
            return Apdu(kind, flags, data[1] if len(data) > 1 else None, problem=short(4))
        return Apdu(kind, flags, data[1], sequence=data[2], window=data[3], body=bytes(data[4:]))
    if kind in (REJECT, ABORT):
        if len(data) < 3:
            return Apdu(kind, flags, data[1] if len(data) > 1 else None, problem=short(3))
        return Apdu(kind, flags, data[1], reason=data[2], body=bytes(data[3:]))
    return Apdu(kind, flags, problem=f"pdu_type={kind} is not a defined APDU type")


@dataclass(frozen=True)
class Tag:
    """One tag of the ASN.1-like encoding: `kind` is "value", "open" or "close"."""

    number: int
    context: bool
    kind: str
    data: bytes
    offset: int


def parse_tags(data: bytes) -> tuple[list[Tag], str | None]:
    """Every tag of `data` in order, and the first encoding problem (which ends the walk)."""
    tags: list[Tag] = []
    pos = 0
    while pos < len(data):
        start = pos
        octet = data[pos]
        number, context, lvt = octet >> 4, bool(octet & 0x08), octet & 0x07
        pos += 1
        if number == 15:
            if pos >= len(data):
                return tags, f"tag at octet {start}: extended tag number octet missing"
            number = data[pos]
            pos += 1
            if number == 255:
                return tags, f"tag at octet {start}: tag number 255 is reserved"
        if context and lvt in (6, 7):
            tags.append(Tag(number, True, "open" if lvt == 6 else "close", b"", start))
            continue
        if not context and number == APP_BOOLEAN:
            if lvt > 1:
                return tags, f"tag at octet {start}: Boolean value {lvt} is neither 0 nor 1"
            tags.append(Tag(number, False, "value", bytes([lvt]), start))
            continue
        if not context and lvt in (6, 7):
            return tags, f"tag at octet {start}: application tag {number} with length/value/type {lvt} (opening and closing tags are context tags)"
        if not context and number > APP_OBJECT_ID:
            return tags, f"tag at octet {start}: application tag {number} is reserved"
        length = lvt
        if lvt == 5:
            if pos >= len(data):
                return tags, f"tag at octet {start}: extended length octet missing"
            length = data[pos]
            pos += 1
            width = {254: 2, 255: 4}.get(length)
            if width is not None:
                if pos + width > len(data):
                    return tags, f"tag at octet {start}: {width}-octet extended length cut short"
                length = int.from_bytes(data[pos : pos + width], "big")
                pos += width
        if pos + length > len(data):
            return tags, f"tag at octet {start}: length {length} runs past the end ({len(data) - pos} octets left)"
        if not context:
            size = APPLICATION_SIZES.get(number)
            if size is not None and length != size or length == 0 and number in (APP_UNSIGNED, APP_SIGNED, APP_ENUMERATED):
                shown = f"{size}" if size is not None else "at least 1"
                return tags, f"tag at octet {start}: application {APPLICATION_TAGS[number]} of {length} octets (it takes {shown})"
        tags.append(Tag(number, context, "value", bytes(data[pos : pos + length]), start))
        pos += length
    return tags, None


class _Grammar:
    """Walks a tag list against one service's parameters; the first departure is kept."""

    def __init__(self, tags: list[Tag]) -> None:
        self.tags = tags
        self.pos = 0
        self.problem: str | None = None

    def _fail(self, text: str) -> None:
        if self.problem is None:
            self.problem = text

    def _peek(self) -> Tag | None:
        return self.tags[self.pos] if self.pos < len(self.tags) else None

    def _found(self, tag: Tag | None) -> str:
        if tag is None:
            return "the request ends"
        what = "context tag" if tag.context else "application tag"
        return f"{what} {tag.number}" + ("" if tag.kind == "value" else f" ({tag.kind}ing)")

    def has(self, number: int, kind: str = "value") -> bool:
        tag = self._peek()
        return self.problem is None and tag is not None and tag.context and tag.number == number and tag.kind == kind

    def context(self, number: int, name: str, optional: bool = False) -> bytes | None:
        if self.problem is not None:
            return None
        if not self.has(number):
            if not optional:
                self._fail(f"{name} missing: {self._found(self._peek())} where context tag {number} is required")
            return None
        tag = self.tags[self.pos]
        self.pos += 1
        return tag.data

    def application(self, number: int, name: str) -> bytes | None:
        if self.problem is not None:
            return None
        tag = self._peek()
        if tag is None or tag.context or tag.kind != "value" or tag.number != number:
            self._fail(f"{name} missing: {self._found(tag)} where application tag {number} is required")
            return None
        self.pos += 1
        return tag.data

    def opening(self, number: int, name: str) -> bool:
        if self.problem is None and self.has(number, "open"):
            self.pos += 1
            return True
        self._fail(f"{name} missing: {self._found(self._peek())} where opening tag {number} is required")
        return False

    def closing(self, number: int, name: str) -> None:
        if self.problem is None and self.has(number, "close"):
            self.pos += 1
            return
        self._fail(f"{name} not closed: {self._found(self._peek())} where closing tag {number} is required")

    def any_value(self, number: int, name: str) -> None:
        """Application data up to the matching closing tag, nested constructs balanced."""
        if not self.opening(number, name):
            return
        depth = 0
        start = self.pos
        while self.pos < len(self.tags):
            tag = self.tags[self.pos]
            if tag.kind == "open":
                depth += 1
            elif tag.kind == "close":
                if depth == 0:
                    break
                depth -= 1
            self.pos += 1
        if self.pos == start and self.problem is None:
            self._fail(f"{name} is empty: opening tag {number} is followed by its closing tag")
        self.closing(number, name)

    def done(self) -> None:
        tag = self._peek()
        if self.problem is None and tag is not None:
            self._fail(f"too many arguments: {self._found(tag)} after the last parameter")

    def unsigned(self, data: bytes | None, name: str, maximum: int | None = None, minimum: int = 0) -> int | None:
        if data is None or self.problem is not None:
            return None
        if not 1 <= len(data) <= 4:
            self._fail(f"{name} has {len(data)} octets: an Unsigned of this parameter takes 1 to 4")
            return None
        value = int.from_bytes(data, "big")
        if maximum is not None and value > maximum:
            self._fail(f"{name}={value} above maximum {maximum}")
        elif value < minimum:
            self._fail(f"{name}={value} below minimum {minimum}")
        return value

    def enumerated(self, data: bytes | None, name: str, defined: Mapping[int, str]) -> None:
        value = self.unsigned(data, name)
        if value is not None and value not in defined:
            self._fail(f"{name}={value} is not a defined value")

    def object_id(self, data: bytes | None, name: str, object_type: int | None = None) -> None:
        if data is None or self.problem is not None:
            return
        if len(data) != 4:
            self._fail(f"{name} has {len(data)} octets, not 4")
        elif object_type is not None and int.from_bytes(data, "big") >> 22 != object_type:
            kind = int.from_bytes(data, "big") >> 22
            self._fail(f"{name} type={kind} is not a {OBJECT_TYPES[object_type]}")

    def boolean(self, data: bytes | None, name: str) -> None:
        if data is None or self.problem is not None:
            return
        if len(data) != 1 or data[0] > 1:
            self._fail(f"{name} has {len(data)} octets of value {data.hex()}: a context Boolean is one octet 0 or 1")

    def string(self, data: bytes | None, name: str, max_chars: int | None = None) -> None:
        if data is None or self.problem is not None:
            return
        if not data:
            self._fail(f"{name} has no character set octet")
            return
        if data[0] not in CHARACTER_SETS:
            self._fail(f"{name} character_set={data[0]} is not a defined value")
        elif max_chars is not None and data[0] == 0:
            try:
                count = len(data[1:].decode("utf-8"))
            except UnicodeDecodeError:
                self._fail(f"{name} is not valid UTF-8")
                return
            if count > max_chars:
                self._fail(f"{name} has {count} characters, above maximum {max_chars}")


def _check_read_property(g: _Grammar) -> None:
    g.object_id(g.context(0, "object-identifier"), "object-identifier")
    g.unsigned(g.context(1, "property-identifier"), "property-identifier")
    g.unsigned(g.context(2, "property-array-index", optional=True), "property-array-index")
    g.done()


def _access_specifications(g: _Grammar, list_name: str, element: Callable[[_Grammar], None]) -> None:
    """One or more of: [0] object identifier, [1] { one or more elements } (ReadPropertyMultiple's
    read access and WritePropertyMultiple's write access specifications)."""
    count = 0
    while g.problem is None and (count == 0 or g.has(0)):
        g.object_id(g.context(0, "object-identifier"), "object-identifier")
        if not g.opening(1, list_name):
            return
        elements = 0
        while g.problem is None and (elements == 0 or g.has(0)):
            element(g)
            elements += 1
        g.closing(1, list_name)
        count += 1
    g.done()


def _property_reference(g: _Grammar) -> None:
    g.unsigned(g.context(0, "property-identifier"), "property-identifier")
    g.unsigned(g.context(1, "property-array-index", optional=True), "property-array-index")


def _property_value(g: _Grammar) -> None:
    _property_reference(g)
    g.any_value(2, "property-value")
    g.unsigned(g.context(3, "priority", optional=True), "priority", maximum=16, minimum=1)


def _check_read_property_multiple(g: _Grammar) -> None:
    _access_specifications(g, "list-of-property-references", _property_reference)


def _check_write_property(g: _Grammar) -> None:
    g.object_id(g.context(0, "object-identifier"), "object-identifier")
    g.unsigned(g.context(1, "property-identifier"), "property-identifier")
    g.unsigned(g.context(2, "property-array-index", optional=True), "property-array-index")
    g.any_value(3, "property-value")
    g.unsigned(g.context(4, "priority", optional=True), "priority", maximum=16, minimum=1)
    g.done()


def _check_write_property_multiple(g: _Grammar) -> None:
    _access_specifications(g, "list-of-properties", _property_value)


def _check_subscribe_cov(g: _Grammar) -> None:
    g.unsigned(g.context(0, "subscriber-process-identifier"), "subscriber-process-identifier")
    g.object_id(g.context(1, "monitored-object-identifier"), "monitored-object-identifier")
    g.boolean(g.context(2, "issue-confirmed-notifications", optional=True), "issue-confirmed-notifications")
    g.unsigned(g.context(3, "lifetime", optional=True), "lifetime")
    g.done()


def _check_atomic_read_file(g: _Grammar) -> None:
    g.object_id(g.application(APP_OBJECT_ID, "file-identifier"), "file-identifier", FILE)
    choice = 0 if g.has(0, "open") else 1
    if not g.opening(choice, "access-method"):
        return
    start = g.application(APP_SIGNED, "file-start-position" if choice == 0 else "file-start-record")
    if start is not None and not 1 <= len(start) <= 4:
        g._fail(f"file-start-position has {len(start)} octets: a Signed takes 1 to 4")
    g.unsigned(g.application(APP_UNSIGNED, "requested-octet-count" if choice == 0 else "requested-record-count"),
               "requested-octet-count" if choice == 0 else "requested-record-count")
    g.closing(choice, "access-method")
    g.done()


def _check_device_communication_control(g: _Grammar) -> None:
    g.unsigned(g.context(0, "time-duration", optional=True), "time-duration", maximum=0xFFFF)
    g.enumerated(g.context(1, "enable-disable"), "enable-disable", ENABLE_DISABLE)
    g.string(g.context(2, "password", optional=True), "password", PASSWORD_MAX)
    g.done()


def _check_reinitialize_device(g: _Grammar) -> None:
    g.enumerated(g.context(0, "reinitialized-state-of-device"), "reinitialized-state-of-device", REINITIALIZED_STATES)
    g.string(g.context(1, "password", optional=True), "password", PASSWORD_MAX)
    g.done()


def _check_who_is(g: _Grammar) -> None:
    low = g.unsigned(g.context(0, "device-instance-range-low-limit", optional=True), "device-instance-range-low-limit",
                     MAX_INSTANCE)
    if g.problem is None and (low is not None) != g.has(1):
        g._fail("device-instance-range: the low and high limits come together or not at all")
    high = g.unsigned(g.context(1, "device-instance-range-high-limit", optional=True), "device-instance-range-high-limit",
                      MAX_INSTANCE)
    if low is not None and high is not None and low > high:
        g._fail(f"device-instance-range-low-limit={low} above the high limit {high}")
    g.done()


def _check_who_has(g: _Grammar) -> None:
    if g.has(0) or g.has(1):
        g.unsigned(g.context(0, "device-instance-range-low-limit"), "device-instance-range-low-limit", MAX_INSTANCE)
        g.unsigned(g.context(1, "device-instance-range-high-limit"), "device-instance-range-high-limit", MAX_INSTANCE)
    if g.has(2):
        g.object_id(g.context(2, "object-identifier"), "object-identifier")
    else:
        g.string(g.context(3, "object-name"), "object-name")
    g.done()


def _check_i_am(g: _Grammar) -> None:
    g.object_id(g.application(APP_OBJECT_ID, "i-am-device-identifier"), "i-am-device-identifier", DEVICE)
    g.unsigned(g.application(APP_UNSIGNED, "max-apdu-length-accepted"), "max-apdu-length-accepted", minimum=50)
    g.enumerated(g.application(APP_ENUMERATED, "segmentation-supported"), "segmentation-supported",
                 {0: "segmented-both", 1: "segmented-transmit", 2: "segmented-receive", 3: "no-segmentation"})
    g.unsigned(g.application(APP_UNSIGNED, "vendor-identifier"), "vendor-identifier", maximum=0xFFFF)
    g.done()


CONFIRMED_GRAMMARS: Mapping[int, Callable[[_Grammar], None]] = MappingProxyType({
    READ_PROPERTY: _check_read_property, READ_PROPERTY_MULTIPLE: _check_read_property_multiple,
    WRITE_PROPERTY: _check_write_property, WRITE_PROPERTY_MULTIPLE: _check_write_property_multiple,
    SUBSCRIBE_COV: _check_subscribe_cov, ATOMIC_READ_FILE: _check_atomic_read_file,
    DEVICE_COMMUNICATION_CONTROL: _check_device_communication_control, REINITIALIZE_DEVICE: _check_reinitialize_device,
})  # fmt: skip
UNCONFIRMED_GRAMMARS: Mapping[int, Callable[[_Grammar], None]] = MappingProxyType({
    WHO_IS: _check_who_is, WHO_HAS: _check_who_has, I_AM: _check_i_am,
})


def check_parameters(service: int, confirmed: bool, body: bytes) -> str | None:
    """The first way the service parameters depart from the service's grammar, or None."""
    tags, problem = parse_tags(body)
    if problem:
        return problem
    depth = 0
    for tag in tags:
        depth += {"open": 1, "close": -1}.get(tag.kind, 0)
        if depth < 0:
            return f"tag at octet {tag.offset}: closing tag {tag.number} without an opening tag"
    if depth:
        return f"{depth} opening tag(s) never closed"
    grammar = (CONFIRMED_GRAMMARS if confirmed else UNCONFIRMED_GRAMMARS).get(service)
    if grammar is None:
        return None
    walk = _Grammar(tags)
    grammar(walk)
    return walk.problem


@dataclass(frozen=True)
class Message:
    """A datagram read through all three layers (what is missing stays None)."""

    bvll: Bvll
    npdu: Npdu | None = None
    apdu: Apdu | None = None


def parse_message(data: bytes) -> Message:
    bvll = parse_bvll(data)
    if bvll.type != BVLC_TYPE or len(data) < 4 or bvll.function not in NPDU_CARRIERS:
        return Message(bvll)
    npdu = parse_npdu(bvll.payload)
    if npdu.problem or npdu.message_type is not None:
        return Message(bvll, npdu)
    return Message(bvll, npdu, parse_apdu(npdu.apdu))


def _segments(frame: bytes) -> list[Message] | None:
    """The messages of a frame that is a segmented confirmed request (several BVLLs, the first a
    segment of a confirmed request, every one a confirmed request), or None."""
    parts = split_bvlls(frame)
    if len(parts) < 2:
        return None
    messages = [parse_message(p) for p in parts]
    for m in messages:
        if m.apdu is None or m.apdu.pdu_type != CONFIRMED or m.apdu.problem:
            return None
    return messages if messages[0].apdu.segmented else None  # type: ignore[union-attr]


# -- session ---------------------------------------------------------------------------------------


@dataclass
class _Pending:
    """What the session waits for: `kind` is "confirmed", "who-is", "who-has", "bvlc", "network"
    or "any" (a frame too broken to say); `invoke_ids` are those this transaction's APDUs carry."""

    kind: str
    invoke_ids: frozenset[int] = frozenset()
    results: bool = False  # a BVLC-Result answers it too


class BACnetSession(Session):
    """One peer (a local UDP port): invoke ids, reply matching, segmentation, notifications."""

    UNANSWERED_KEPT = 64  # invoke ids left unanswered are not reused until this many others were
    RECENT_KEPT = 16

    def __init__(self) -> None:
        super().__init__()
        self.next_invoke = 0
        self._pending: _Pending | None = None
        self._queue: list[bytes] = []  # segments of the current request not sent yet
        self._final_sent = True  # the last segment sent had more-follows clear
        self._received: list[bytes] = []  # segments of a segmented Complex-ACK, in order
        self._acked = 0  # the last of them acknowledged
        self._replies: list[bytes] = []
        self._datagrams: deque[bytes] = deque()
        self._unanswered: deque[int] = deque(maxlen=self.UNANSWERED_KEPT)
        self._recent: deque[int] = deque(maxlen=self.RECENT_KEPT)

    # -- requests ---------------------------------------------------------------------------

    def _take_invoke_id(self) -> int:
        for _ in range(256):
            candidate = self.next_invoke
            self.next_invoke = (self.next_invoke + 1) % 256
            if candidate not in self._unanswered:
                return candidate
        return self.next_invoke

    def prepare(self, frame: bytes) -> bytes:
        if self._pending is not None and self._pending.kind == "confirmed":
            # never answered: the device may still hold a transaction with these ids
            self._unanswered.extend(self._pending.invoke_ids)
        self._queue, self._received, self._final_sent, self._acked = [], [], True, 0
        segments = _segments(frame)
        if segments is not None:
            base = self._take_invoke_id()
            out = [self._with_invoke_id(m.bvll.raw, m, base) for m in segments]
            self._queue = out[1:]
            self._final_sent = not segments[0].apdu.more_follows  # type: ignore[union-attr]
            self._pending = _Pending("confirmed", frozenset(parse_message(p).apdu.invoke_id for p in out))  # type: ignore[misc, union-attr]
            self._recent.extend(self._pending.invoke_ids)
            self._skip_past(base, [m.apdu.invoke_id for m in segments])  # type: ignore[union-attr]
            return out[0]
        message = parse_message(frame)
        self._pending = self._expect(message)
        apdu = message.apdu
        if apdu is not None and apdu.pdu_type == CONFIRMED and apdu.invoke_id is not None:
            base = self._take_invoke_id()
            patched = self._with_invoke_id(frame, message, base)
            invoke = (base + apdu.invoke_id) % 256
            # a BVLC-Result answers it only when its BVLC function has one (a late one to an
            # earlier Register-Foreign-Device must not be taken for it)
            self._pending = _Pending("confirmed", frozenset({invoke}), results=message.bvll.function in RESULT_FUNCTIONS)
            self._final_sent = not apdu.more_follows
            self._recent.append(invoke)
            self._skip_past(base, [apdu.invoke_id])
            return patched
        return frame

    def _skip_past(self, base: int, offsets: Sequence[int | None]) -> None:
        """The next request starts after every invoke id this one used (a segment's "+1"
        belongs to this transaction as far as the device can tell)."""
        ahead = max((o for o in offsets if o is not None and o < 128), default=0)
        if ahead:
            self.next_invoke = (base + ahead + 1) % 256

    @staticmethod
    def _with_invoke_id(raw: bytes, message: Message, base: int) -> bytes:
        """`raw` with its confirmed request's invoke id moved by `base` (the frame's own value is an offset)."""
        assert message.npdu is not None and message.apdu is not None and message.apdu.invoke_id is not None
        at = len(raw) - len(message.npdu.apdu) + 2
        out = bytearray(raw)
        out[at] = (base + message.apdu.invoke_id) % 256
        return bytes(out)

    @staticmethod
    def _expect(message: Message) -> _Pending | None:
        bvll = message.bvll
        if bvll.type != BVLC_TYPE or len(bvll.raw) < 4:
            return _Pending("any", results=True)
        if bvll.function not in NPDU_CARRIERS:
            return _Pending("bvlc", results=True) if bvll.function in RESULT_FUNCTIONS else None
        npdu = message.npdu
        results = bvll.function in RESULT_FUNCTIONS
        if npdu is None or npdu.problem:
            return _Pending("any", results=True)
        if npdu.message_type is not None:
            return _Pending("network", results=results)
        apdu = message.apdu
        if apdu is None or apdu.problem:
            return _Pending("any", results=True)
        if apdu.pdu_type == UNCONFIRMED and apdu.service == WHO_IS:
            return _Pending("who-is", results=results)
        if apdu.pdu_type == UNCONFIRMED and apdu.service == WHO_HAS:
            return _Pending("who-has", results=results)
        return _Pending("bvlc", results=True) if results else None

    # -- replies ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """One datagram from the device."""
        message = parse_message(data)
        pending = self._pending
        bvll = message.bvll
        if bvll.problem or bvll.type != BVLC_TYPE:
            if pending is not None:
                self._take(data)  # garbage while waiting: the classifier says what it is
            return
        if bvll.function in (BVLC_RESULT, READ_BDT_ACK, READ_FDT_ACK):
            if pending is not None and (pending.results or pending.kind == "bvlc"):
                self._take(data)
            return
        npdu, apdu = message.npdu, message.apdu
        if npdu is None:
            return
        if npdu.message_type is not None or npdu.problem:
            if pending is not None and pending.kind in ("network", "any"):
                self._take(data)
            return
        if apdu is None or apdu.problem:
            if pending is not None and pending.kind in ("confirmed", "any"):
                self._take(data)
            return
        if apdu.pdu_type == CONFIRMED:
            self._notification(message)
            return
        if apdu.pdu_type == UNCONFIRMED:
            wanted = {I_AM: "who-is", I_HAVE: "who-has"}.get(apdu.service)  # type: ignore[arg-type]
            if pending is not None and wanted is not None and pending.kind in (wanted, "any"):
                self._take(data)
            return
        if pending is None or apdu.invoke_id is None:
            return
        if pending.kind == "any":
            if apdu.invoke_id not in self._recent:
                self._take(data)
            return
        if pending.kind != "confirmed" or apdu.invoke_id not in pending.invoke_ids:
            return  # a late answer to an earlier request
        if apdu.pdu_type == SEGMENT_ACK:
            self._segment_acknowledged(data, apdu)
        elif apdu.pdu_type == COMPLEX_ACK and apdu.segmented:
            self._segment_received(data, apdu)
        elif apdu.pdu_type == ABORT and not apdu.flags & SERVER:
            return  # the device aborting a transaction of its own
        else:
            self._take(data)

    def _segment_acknowledged(self, data: bytes, apdu: Apdu) -> None:
        if not apdu.flags & SERVER:
            return
        if apdu.flags & NAK or (not self._queue and not self._final_sent):
            self._take(data)  # a refusal, or the device acknowledging a request that never completes
            return
        window = min(max(apdu.window or 1, 1), 127)
        for _ in range(window):
            if not self._queue:
                break
            segment = self._queue.pop(0)
            seg = parse_message(segment).apdu
            self._final_sent = seg is not None and not seg.more_follows
            self._datagrams.append(segment)

    def _segment_received(self, data: bytes, apdu: Apdu) -> None:
        expected = len(self._received)
        if apdu.sequence != expected % 256:
            if self._received:
                self._acknowledge(apdu, expected - 1, nak=True)
            return
        self._received.append(data)
        window = min(max(apdu.window or 1, 1), 127)
        if not apdu.more_follows:
            self._acknowledge(apdu, expected)
            reply = b"".join(self._received)
            self._received = []
            self._take(reply)
        elif expected == 0 or expected - self._acked >= window:
            # the first segment is acknowledged alone (the answer sets the window), then each window
            self._acknowledge(apdu, expected)
            self._acked = expected

    def _acknowledge(self, apdu: Apdu, sequence: int, nak: bool = False) -> None:
        self._datagrams.append(SEGMENT_ACK_TYPE.encode(
            pdu_type=(SEGMENT_ACK << 4) | (NAK if nak else 0), invoke_id=apdu.invoke_id, sequence_number=sequence % 256,
            actual_window_size=min(max(apdu.window or 1, 1), 127)))

    def _notification(self, message: Message) -> None:
        """A confirmed request from the device: COV and event notifications are acknowledged at
        once (a subscriber that never answers would be sent them again and again)."""
        apdu = message.apdu
        assert apdu is not None and message.npdu is not None
        if apdu.service in NOTIFICATIONS and message.npdu.snet is None and not apdu.segmented:
            self._datagrams.append(SIMPLE_ACK_TYPE.encode(invoke_id=apdu.invoke_id, service_choice=apdu.service))

    def _take(self, reply: bytes) -> None:
        self._pending = None
        self._queue = []
        self._replies.append(reply)

    def next_reply(self) -> bytes | None:
        return self._replies.pop(0) if self._replies else None

    def take_output(self) -> bytes:
        """One datagram per call (the datagram transport calls until nothing is left)."""
        return self._datagrams.popleft() if self._datagrams else b""

    def leftover(self) -> bytes:
        return b""  # datagrams arrive whole


# -- the protocol ----------------------------------------------------------------------------------


def _parse_object_option(name: str, raw: str, default_type: int | None = None) -> int:
    """`analog-value:2` (or `2:2`, or a bare instance for the default type) as an object identifier."""
    kind_text, sep, instance_text = raw.rpartition(":")
    if not sep:
        kind_text = ""
    try:
        if kind_text:
            kind = OBJECT_TYPE_NUMBERS[kind_text] if kind_text in OBJECT_TYPE_NUMBERS else int(kind_text)
        elif default_type is not None:
            kind = default_type
        else:
            raise ValueError
        instance = int(instance_text)
    except (KeyError, ValueError):
        raise OtfuzzError(f"bacnet: option {name}={raw!r} is not an object such as analog-value:1") from None
    if not 0 <= kind <= 1023 or not 0 <= instance <= MAX_INSTANCE:
        raise OtfuzzError(f"bacnet: option {name}={raw!r} is outside object types 0..1023, instances 0..{MAX_INSTANCE}")
    return object_identifier(kind, instance)


@dataclass(frozen=True)
class _Kind:
    name: str
    message: MessageType
    values: Mapping[str, Any] = field(default_factory=dict)
    code: int | None = None
    writes: bool = False
    disruptive: bool = False


class BACnetIP(Protocol):
    """BACnet/IP client side: a device on a B/IP port, addressed by its device instance."""

    name = "bacnet"
    schemes = ("bacnet",)
    default_port = 47808
    transport = "udp"
    options_spec = {
        "device": OptionSpec(str(MAX_INSTANCE), f"device object instance (0..{MAX_INSTANCE}; {MAX_INSTANCE} asks "
                             "whichever device receives the request)", int, 0, MAX_INSTANCE),
        "object": OptionSpec("analog-value:1", "object the reads, Who-Has and SubscribeCOV address (type:instance)"),
        "write": OptionSpec("analog-value:2", "object whose present-value the write templates command (type:instance)"),
        "file": OptionSpec("1", f"file object instance AtomicReadFile reads (0..{MAX_INSTANCE})", int, 0, MAX_INSTANCE),
        "source_port": OptionSpec("fixed", "fixed: each worker keeps one UDP source port (per-peer state carries "
                                  "over); fresh: every case from a new port"),
    }
    liveness_note = "ReadProperty of the device object's system-status on its own UDP port answered by a Complex-ACK within the deadline"
    probe_hint = "check ?device= (the device object's instance; bacpypes3 and others do not answer the wildcard 4194303)"

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        if self.options["source_port"] not in ("fixed", "fresh"):
            raise OtfuzzError(f"bacnet: option source_port={self.options['source_port']!r} is not fixed or fresh")
        self.device_id = object_identifier(DEVICE, self.options["device"])
        self.object_id = _parse_object_option("object", self.options["object"])
        self.write_id = _parse_object_option("write", self.options["write"])
        self.file_id = object_identifier(FILE, self.options["file"])
        self._templates = tuple(
            Template(k.name, k.message, k.values, writes=k.writes, disruptive=k.disruptive, code=k.code) for k in self._kinds()
        )
        self._by_name = {t.name: t for t in self._templates}
        self._probe = Probe(READ_PROPERTY_TYPE.encode(object_id=self.device_id, property_id=SYSTEM_STATUS),
                            f"ReadProperty {object_name(self.device_id)} system-status")

    def _kinds(self) -> list[_Kind]:
        device, obj, write, instance = self.device_id, self.object_id, self.write_id, self.options["device"]
        identity = {"property_1": OBJECT_NAME, "property_2": VENDOR_NAME, "property_3": MODEL_NAME, "property_4": FIRMWARE_REVISION}
        body = RPM_TYPE.encode(object_id=device, **identity)[10:]  # the service parameters, split into segments
        segments = {f"s{i}_data": body[5 * i : 5 * i + 5] for i in range(SEGMENTS)}
        segments.update({f"s{i}_sequence_number": i for i in range(SEGMENTS)})
        low, high = (0, MAX_INSTANCE) if instance == MAX_INSTANCE else (instance, instance)
        password = b"\x00" + TEMPLATE_PASSWORD
        return [
            _Kind("read_property", READ_PROPERTY_TYPE, {"object_id": obj, "property_id": PRESENT_VALUE}, READ_PROPERTY),
            _Kind("read_property_array_index", READ_PROPERTY_INDEX_TYPE,
                  {"object_id": device, "property_id": OBJECT_LIST, "array_index": 0}, READ_PROPERTY),
            _Kind("read_property_multiple", RPM_TYPE, {"object_id": device, **identity}, READ_PROPERTY_MULTIPLE),
            _Kind("read_property_multiple_segmented_response", RPM_ONE_TYPE,
                  {"object_id": device, "property_id": ALL, "max_response": 0x40}, READ_PROPERTY_MULTIPLE),
            _Kind("read_property_multiple_segmented", SEGMENTED_RPM_TYPE, segments, READ_PROPERTY_MULTIPLE),
            _Kind("write_property", WRITE_PROPERTY_TYPE,
                  {"object_id": write, "property_id": PRESENT_VALUE, "real": 0x41AC0000}, WRITE_PROPERTY, writes=True),
            _Kind("write_property_string", WRITE_STRING_TYPE,
                  {"object_id": write, "property_id": DESCRIPTION, "string": b"\x00written by otfuzz"}, WRITE_PROPERTY, writes=True),
            _Kind("write_property_multiple", WPM_TYPE,
                  {"object_id": write, "property_id": PRESENT_VALUE, "real": 0x41B40000, "priority": 9},
                  WRITE_PROPERTY_MULTIPLE, writes=True),
            _Kind("subscribe_cov", SUBSCRIBE_COV_TYPE, {"monitored_object_id": obj}, SUBSCRIBE_COV, writes=True),
            _Kind("atomic_read_file", ATOMIC_READ_FILE_TYPE, {"file_id": self.file_id, "requested_octet_count": 16},
                  ATOMIC_READ_FILE),
            _Kind("device_communication_control", DCC_TYPE, {"password": password}, DEVICE_COMMUNICATION_CONTROL,
                  writes=True, disruptive=True),
            _Kind("reinitialize_device", REINITIALIZE_TYPE, {"password": password}, REINITIALIZE_DEVICE,
                  writes=True, disruptive=True),
            _Kind("who_is", WHO_IS_TYPE, {"low_limit": low, "high_limit": high}, UNCONFIRMED_CODE_BASE + WHO_IS),
            _Kind("who_has", WHO_HAS_TYPE, {"object_id": obj}, UNCONFIRMED_CODE_BASE + WHO_HAS),
            _Kind("i_am", I_AM_TYPE, {"device_id": object_identifier(DEVICE, MAX_INSTANCE - 1)}, UNCONFIRMED_CODE_BASE + I_AM,
                  writes=True),
            _Kind("register_foreign_device", REGISTER_FD_TYPE, {}, BVLC_CODE_BASE + REGISTER_FD, writes=True),
            _Kind("read_broadcast_distribution_table", READ_BDT_TYPE, {}, BVLC_CODE_BASE + READ_BDT),
            _Kind("read_foreign_device_table", READ_FDT_TYPE, {}, BVLC_CODE_BASE + READ_FDT),
        ]

    # -- what to send -------------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def message_types(self) -> Sequence[MessageType]:
        return REQUEST_TYPES

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def session(self) -> Session:
        return BACnetSession()

    def stress_flood(self) -> tuple[bytes, str] | None:
        """Who-Is for the device's own instance: every device answers with I-Am (unicast here;
        I-Am itself is never flooded)."""
        return self._by_name["who_is"].encode(), "Who-Is for the device instance"

    def identify(self) -> list[bytes]:
        return [READ_PROPERTY_TYPE.encode(object_id=self.device_id, property_id=p) for p in (VENDOR_NAME, MODEL_NAME, FIRMWARE_REVISION)]

    def parse_identity(self, reply: bytes) -> dict[str, str]:
        """Vendor name, model name and firmware revision from ReadProperty-ACKs of the device object."""
        message = parse_message(reply)
        apdu = message.apdu
        if apdu is None or apdu.pdu_type != COMPLEX_ACK or apdu.segmented or apdu.service != READ_PROPERTY:
            return {}
        tags, problem = parse_tags(apdu.body)
        if problem or len(tags) < 5 or tags[1].kind != "value":
            return {}
        names = {VENDOR_NAME: "vendor", MODEL_NAME: "model", FIRMWARE_REVISION: "firmware_revision"}
        key = names.get(int.from_bytes(tags[1].data, "big"))
        value = next((t for t in tags if not t.context and t.number == APP_STRING), None)
        if key is None or value is None or not value.data:
            return {}
        return {key: value.data[1:].decode("utf-8", "replace")}

    # -- framing --------------------------------------------------------------------------------

    def frame_length(self, frame: bytes) -> int | None:
        if len(frame) < 4 or frame[0] != BVLC_TYPE:
            return None
        return int.from_bytes(frame[2:4], "big")

    def repair(self, frame: bytes) -> bytes:
        """BVLC type and length made to agree with the datagram (a segmented request's BVLLs,
        which frame one after another, are left as they are)."""
        if len(frame) < 4 or len(frame) > 0xFFFF or len(split_bvlls(frame)) > 1:
            return frame
        return bytes([BVLC_TYPE, frame[1]]) + len(frame).to_bytes(2, "big") + frame[4:]

    # -- faults ---------------------------------------------------------------------------------

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        """Faults on every layer: BVLC, NPDU, APDU header, tags and nesting, segmentation, state."""
        frame = template.encode()
        if template.message is SEGMENTED_RPM_TYPE:
            return distinct_faults(frame, self._segmentation_faults(template))
        if frame[1] not in NPDU_CARRIERS:
            return distinct_faults(frame, _bvlc_faults(template, frame))
        # The engine keeps 64 faults per template: the layers below the APDU are faulted on a
        # few templates each (a confirmed and an unconfirmed request), not on all of them.
        faults = _tag_faults(template, frame) + _apdu_faults(template, frame)
        if template.name in ("read_property", "who_has"):
            faults += _npdu_faults(template, frame)
        if template.name == "who_is":
            faults += _bvlc_faults(template, frame)
        if template.name == "who_has":
            faults += self._session_faults()
        return distinct_faults(frame, faults)

    def _segmentation_faults(self, template: Template) -> list[tuple[str, bytes]]:
        values = dict(template.values)
        frame = template.encode()
        parts = split_bvlls(frame)

        def enc(**overrides: Any) -> bytes:
            return template.encode(**overrides)

        last = SEGMENTS - 1
        flags = SEGMENTED | SEGMENTED_ACCEPTED
        return [
            ("segments out of order (0, 2, 1)", parts[0] + parts[2] + parts[1]),
            ("segment 1 sent twice", parts[0] + parts[1] + parts[1] + parts[2]),
            ("segment 1 missing", parts[0] + parts[2]),
            ("only the first segment: the request never completes", parts[0]),
            ("segment 1 with sequence number 5", enc(s1_sequence_number=5)),
            ("first segment with sequence number 1", enc(s0_sequence_number=1)),
            ("last segment with more-follows set: the request never completes", enc(**{f"s{last}_pdu_type": flags | MORE_FOLLOWS})),
            ("middle segment with more-follows cleared: the request ends early", enc(s1_pdu_type=flags)),
            ("segment 1 with the segmented bit cleared", enc(s1_pdu_type=SEGMENTED_ACCEPTED)),
            ("segment 1 with another invoke id (+1)", enc(s1_invoke_id=1)),
            ("segment 1 with another service choice (ReadProperty)", enc(s1_service_choice=READ_PROPERTY)),
            ("proposed window size 0", enc(s0_proposed_window_size=0)),
            ("proposed window size 128, above 127", enc(s0_proposed_window_size=128)),
            ("proposed window size 255", enc(s0_proposed_window_size=255)),
            ("proposed window size 1 (one Segment-ACK per segment)", enc(**{f"s{i}_proposed_window_size": 1 for i in range(SEGMENTS)})),
            ("segment 2 empty", enc(**{f"s{last}_data": b""})),
            ("segment 1 of 255 octets", enc(s1_data=values["s1_data"] + bytes(250))),
            ("max-APDU code 0 (50 octets) on every segment", enc(**{f"s{i}_max_response": 0x40 for i in range(SEGMENTS)})),
            ("first segment's BVLC length one short", enc(s0_bvlc_length=len(parts[0]) - 1)),
            ("segments on the NPDU of a global broadcast (DNET 0xFFFF)",
             b"".join(_with_dnet(p, GLOBAL_BROADCAST_NET, b"") for p in parts)),
        ]

    def _session_faults(self) -> list[tuple[str, bytes]]:
        """Messages that only make sense inside a transaction, sent outside of any, and
        network-layer messages (sent with the first template only)."""
        return [
            ("Segment-ACK for a transaction the device never started", SEGMENT_ACK_TYPE.encode(invoke_id=0x7F)),
            ("Segment-ACK NAK for a transaction the device never started",
             SEGMENT_ACK_TYPE.encode(pdu_type=(SEGMENT_ACK << 4) | NAK, invoke_id=0x7F)),
            ("Abort of a transaction that does not exist", ABORT_TYPE.encode(invoke_id=0x7F)),
            ("Simple-ACK sent to the device (it awaits none)", SIMPLE_ACK_TYPE.encode(invoke_id=0x7F, service_choice=WRITE_PROPERTY)),
            ("network layer: Who-Is-Router-To-Network", NETWORK_MESSAGE_TYPE.encode(message_type=0x00)),
            ("network layer: What-Is-Network-Number", NETWORK_MESSAGE_TYPE.encode(message_type=0x12)),
            ("network layer: Who-Is-Router-To-Network for DNET 0xFFFF",
             NETWORK_MESSAGE_TYPE.encode(message_type=0x00, message_data=b"\xff\xff")),
            ("network layer: Initialize-Routing-Table with no ports", NETWORK_MESSAGE_TYPE.encode(message_type=0x06, message_data=b"\x00")),
            ("network layer: message type 0x14 (not defined)", NETWORK_MESSAGE_TYPE.encode(message_type=0x14)),
            ("network layer: proprietary message type 0x80 without vendor id", NETWORK_MESSAGE_TYPE.encode(message_type=0x80)),
            ("BVLC: Delete-Foreign-Device-Table-Entry for 127.0.0.1:47808",
             MessageType("Delete-FDT-Entry", [*_bvlc(DELETE_FDT_ENTRY), Bytes("address", size=6)]).encode(address=LOOPBACK_SOURCE)),
            ("BVLC: Write-Broadcast-Distribution-Table with a loopback entry",
             MessageType("Write-BDT", [*_bvlc(WRITE_BDT), Bytes("entries")]).encode(entries=LOOPBACK_SOURCE + b"\xff" * 4)),
            ("BVLC: Secure-BVLL with no content", MessageType("Secure-BVLL", _bvlc(SECURE_BVLL)).encode()),
            ("BVLC: BVLC-Result sent to the device", MessageType("BVLC-Result", [*_bvlc(BVLC_RESULT), UInt("code", 16)]).encode()),
        ]

    # -- what came back -------------------------------------------------------------------------

    def check_request(self, frame: bytes) -> list[str]:
        segments = _segments(frame)
        if segments is not None:
            return _check_segmented(segments)
        return _check_datagram(frame)

    def silence_violation(self, frame: bytes) -> str | None:
        """A confirmed request addressed to the device itself, in a valid BVLL and NPDU and not
        segmented, must be answered: a valid one with an ACK or an Error, a wrong one with a
        Reject (bad encoding, unknown service, missing or surplus parameters), an Abort or an
        Error. (A device whose communication DeviceCommunicationControl disabled answers only
        DCC and ReinitializeDevice; the templates cannot disable it without its password.)"""
        if _segments(frame) is not None:
            return None
        message = parse_message(frame)
        bvll, npdu, apdu = message.bvll, message.npdu, message.apdu
        if bvll.problem or bvll.function != ORIGINAL_UNICAST or npdu is None or npdu.problem:
            return None
        if npdu.version != NPDU_VERSION or npdu.dnet is not None or npdu.message_type is not None or npdu.control & 0x50:
            return None
        if apdu is None or apdu.pdu_type != CONFIRMED or apdu.problem or apdu.segmented:
            return None
        if apdu.max_response & 0x0F not in MAX_APDU_CODES or apdu.flags & 0x01:
            return None  # a reserved field the device may fail on before it can answer
        if _check_npdu(message):
            return None  # no valid way back (SNET 0xFFFF, SLEN 0, expecting-reply clear)
        problems = _check_apdu(message)
        what = problems[0] if problems else CONFIRMED_SERVICES.get(apdu.service or 0, "request")
        return f"a confirmed request must be answered (ACK, Error, Reject or Abort): {what}"

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        parts = split_bvlls(reply)
        if len(parts) > 1:
            return self._classify_segmented(request, parts)
        message = parse_message(reply)
        bvll = message.bvll
        if bvll.problem:
            return ReplyVerdict(ReplyKind.MALFORMED, bvll.problem)
        asked = _request_message(request)
        if bvll.function == BVLC_RESULT:
            return _classify_result(bvll, asked)
        if bvll.function in (READ_BDT_ACK, READ_FDT_ACK):
            wanted = READ_BDT if bvll.function == READ_BDT_ACK else READ_FDT
            if asked.bvll.function != wanted:
                return ReplyVerdict(ReplyKind.MALFORMED, f"{BVLC_FUNCTIONS[bvll.function]} answers {_bvlc_name(asked.bvll.function)}")
            size = 10  # B/IP address and mask (BDT), or address, time-to-live and time remaining (FDT)
            if len(bvll.payload) % size:
                return ReplyVerdict(ReplyKind.MALFORMED, f"{BVLC_FUNCTIONS[bvll.function]} of {len(bvll.payload)} octets is no list of entries")
            return ReplyVerdict(ReplyKind.NORMAL, f"{BVLC_FUNCTIONS[bvll.function]} with {len(bvll.payload) // size} entries")
        if bvll.function not in (ORIGINAL_UNICAST, FORWARDED_NPDU, ORIGINAL_BROADCAST):
            return ReplyVerdict(ReplyKind.MALFORMED, f"{_bvlc_name(bvll.function)} is no answer")
        npdu = message.npdu
        assert npdu is not None
        if npdu.problem:
            return ReplyVerdict(ReplyKind.MALFORMED, npdu.problem)
        if npdu.version != NPDU_VERSION:
            return ReplyVerdict(ReplyKind.MALFORMED, f"npdu_version={npdu.version} in the answer")
        if npdu.message_type is not None:
            return _classify_network(npdu, asked)
        apdu = message.apdu
        assert apdu is not None
        if apdu.problem:
            return ReplyVerdict(ReplyKind.MALFORMED, apdu.problem)
        return _classify_apdu(apdu, asked)

    def _classify_segmented(self, request: bytes, parts: list[bytes]) -> ReplyVerdict:
        """The segments of a Complex-ACK the session collected: consistent and complete, then
        judged as one."""
        body = b""
        first: Apdu | None = None
        for index, part in enumerate(parts):
            message = parse_message(part)
            apdu = message.apdu
            if message.bvll.problem or apdu is None or apdu.problem or apdu.pdu_type != COMPLEX_ACK or not apdu.segmented:
                return ReplyVerdict(ReplyKind.MALFORMED, f"segment {index} of the answer is no Complex-ACK segment")
            if first is None:
                first = apdu
            elif (apdu.invoke_id, apdu.service) != (first.invoke_id, first.service):
                return ReplyVerdict(ReplyKind.MALFORMED, f"segment {index} changes invoke id or service choice")
            if apdu.sequence != index % 256:
                return ReplyVerdict(ReplyKind.MALFORMED, f"segment {index} carries sequence number {apdu.sequence}")
            if apdu.more_follows != (index < len(parts) - 1):
                return ReplyVerdict(ReplyKind.MALFORMED, f"segment {index} has more-follows {'set' if apdu.more_follows else 'clear'}")
            body += apdu.body
        assert first is not None
        whole = Apdu(COMPLEX_ACK, 0, first.invoke_id, first.service, body=body)
        verdict = _classify_apdu(whole, _request_message(request))
        return ReplyVerdict(verdict.kind, f"{verdict.detail} in {len(parts)} segments")

    def is_write(self, frame: bytes) -> bool:
        """Conservative: any BVLL of the frame, read as a lenient stack would read it, whose
        service is not a known read counts as a write."""
        return any(_lenient_write(part) for part in _readings(frame))

    def loopback_only(self, frame: bytes) -> str | None:
        """Broadcast and forwarding BVLC functions, routed NPDUs and network-layer messages: a BBMD or
        router relays them beyond the device."""
        for part in _readings(frame):
            if len(part) < 2:
                continue
            function = part[1]
            if function in RELAYED_FUNCTIONS:
                return f"BVLC {_bvlc_name(function)} is relayed by a BBMD to every device of its networks"
            if function == ORIGINAL_UNICAST and len(part) > 5:
                control = part[5]
                if control & DNET_PRESENT:
                    return "an NPDU with DNET is forwarded by routers to the networks it names"
                if control & NETWORK_MESSAGE:
                    return "a network-layer message is acted on and relayed by routers"
        return None

    def expects_reply(self, frame: bytes) -> bool:
        """Confirmed requests, Who-Is and Who-Has the device is meant to answer, and the BVLC
        functions that have a BVLC-Result. Network-layer messages are answered by routers only,
        routed NPDUs by the device behind the router, a Forwarded-NPDU's answer goes to its
        original source: none of them is waited for."""
        if _segments(frame) is not None:
            return True
        message = parse_message(frame)
        bvll, npdu, apdu = message.bvll, message.npdu, message.apdu
        if bvll.type != BVLC_TYPE or len(frame) < 4:
            return True
        if bvll.function not in NPDU_CARRIERS:
            return bvll.function in RESULT_FUNCTIONS or bvll.function not in BVLC_FUNCTIONS
        if bvll.function == FORWARDED_NPDU:
            return False
        if npdu is None or npdu.problem:
            return True  # a lenient stack may still answer
        if npdu.message_type is not None or npdu.routed:
            return False
        if bvll.function == DISTRIBUTE_BROADCAST:
            return True  # a BVLC-Result NAK from anything that is not a BBMD
        if apdu is None or apdu.problem:
            return True
        if apdu.pdu_type == CONFIRMED:
            return True
        if apdu.pdu_type == UNCONFIRMED:
            return self._answers_unconfirmed(apdu)
        return False

    def _answers_unconfirmed(self, apdu: Apdu) -> bool:
        """Who-Is whose range holds the device, Who-Has for the configured object."""
        tags, problem = parse_tags(apdu.body)
        if problem:
            return False
        values = {t.number: t.data for t in tags if t.context and t.kind == "value"}
        instance = self.options["device"]
        if apdu.service == WHO_IS:
            if not values:
                return True
            low, high = (int.from_bytes(values.get(n, b""), "big") for n in (0, 1))
            return instance == MAX_INSTANCE or low <= instance <= high
        if apdu.service == WHO_HAS:
            return values.get(2) == self.object_id.to_bytes(4, "big")
        return False

    def describe(self, frame: bytes) -> str:
        segments = _segments(frame)
        if segments is not None:
            apdu = segments[0].apdu
            assert apdu is not None
            return f"segmented {CONFIRMED_SERVICES.get(apdu.service or 0, 'request')} in {len(segments)} segments"
        message = parse_message(frame)
        bvll, npdu, apdu = message.bvll, message.npdu, message.apdu
        text = _bvlc_name(bvll.function) if bvll.type == BVLC_TYPE else f"not BVLC ({len(frame)} octets)"
        if npdu is not None and npdu.message_type is not None:
            return f"{text}: {NETWORK_MESSAGES.get(npdu.message_type, f'network message 0x{npdu.message_type:02x}')}"
        if npdu is not None and npdu.dnet is not None:
            text += f" to DNET {npdu.dnet}"
        broken = (apdu.problem if apdu is not None else npdu.problem if npdu is not None else bvll.problem)
        if apdu is None or apdu.problem:
            return f"{text}: {broken}" if broken else text
        if apdu.pdu_type == CONFIRMED:
            what = CONFIRMED_SERVICES.get(apdu.service or 0, f"confirmed service {apdu.service}")
        elif apdu.pdu_type == UNCONFIRMED:
            what = UNCONFIRMED_SERVICES.get(apdu.service or 0, f"unconfirmed service {apdu.service}")
        else:
            what = apdu.name
        tags, _ = parse_tags(apdu.body)
        ids = [object_name(int.from_bytes(t.data, "big")) for t in tags if t.kind == "value" and len(t.data) == 4
               and (t.context and t.number in (0, 1, 2) or not t.context and t.number == APP_OBJECT_ID)][:1]
        return f"{what} {' '.join(ids)}".strip()

    def request_type(self, frame: bytes) -> str | None:
        """The template whose BVLC function, APDU type, service choice and segmentation the
        frame shares; among several, the one sharing the longest prefix."""
        segments = _segments(frame)
        if segments is not None:
            return "read_property_multiple_segmented"
        key = _dispatch(frame)
        candidates = [t for t in self._templates if _dispatch(t.encode()) == key]
        if not candidates:
            return super().request_type(frame)
        if len(candidates) == 1:
            return candidates[0].name
        best, best_len = candidates[0].name, -1
        for template in candidates:
            valid = template.encode()
            n = next((i for i, (a, b) in enumerate(zip(valid, frame)) if a != b), min(len(valid), len(frame)))
            if n > best_len:
                best, best_len = template.name, n
        return best

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        return {
            "bvlc_function": sorted(BVLC_FUNCTIONS),
            "npdu_control": [0x00, 0x04, 0x08, 0x20, 0x24, 0x80, 0x03],
            "service_choice": sorted(CONFIRMED_SERVICES),
            "property_id": sorted(PROPERTIES),
            "object_id": [self.device_id, object_identifier(DEVICE, MAX_INSTANCE), object_identifier(1023, MAX_INSTANCE),
                          self.object_id, self.write_id, self.file_id],
            "priority": [0, 1, 16, 17],
            "enable_disable": sorted(ENABLE_DISABLE),
            "reinitialized_state": sorted(REINITIALIZED_STATES),
            "max_response": [0x00, 0x05, 0x06, 0x0F, 0x40, 0x70, 0x75],
            "proposed_window_size": [0, 1, 127, 128],
        }


# -- faults, layer by layer -------------------------------------------------------------------------


def _with_length(frame: bytes) -> bytes:
    return frame[:2] + len(frame).to_bytes(2, "big") + frame[4:] if len(frame) >= 4 else frame


def _with_dnet(frame: bytes, dnet: int, dadr: bytes, hop_count: int = 255) -> bytes:
    """`frame` routed to DNET (DLEN/DADR, hop count) by inserting the NPDU fields."""
    control = frame[5] | DNET_PRESENT
    fields = dnet.to_bytes(2, "big") + bytes([len(dadr)]) + dadr
    rest = frame[6:]
    if control & SNET_PRESENT:
        slen = rest[2]
        fields, rest = fields + rest[: 3 + slen], rest[3 + slen :]
    return _with_length(frame[:5] + bytes([control]) + fields + bytes([hop_count]) + rest)


def _with_snet(frame: bytes, snet: int, sadr: bytes) -> bytes:
    return _with_length(frame[:5] + bytes([frame[5] | SNET_PRESENT]) + snet.to_bytes(2, "big") + bytes([len(sadr)]) + sadr + frame[6:])


def _bvlc_faults(template: Template, frame: bytes) -> list[tuple[str, bytes]]:
    length = len(frame)

    def enc(**overrides: Any) -> bytes:
        return template.encode(**overrides)

    faults = [
        ("BVLC type 0x82", enc(bvlc_type=0x82)),
        ("BVLC type 0x00", enc(bvlc_type=0x00)),
        ("BVLC length one short of the datagram", enc(bvlc_length=length - 1)),
        ("BVLC length one longer than the datagram", enc(bvlc_length=length + 1)),
        ("BVLC length 3, shorter than its own header", enc(bvlc_length=3)),
        ("BVLC length 0", enc(bvlc_length=0)),
        ("BVLC length 0xFFFF", enc(bvlc_length=0xFFFF)),
        ("BVLC function 0x0D (not defined)", enc(bvlc_function=0x0D)),
        ("BVLC function 0xFF (not defined)", enc(bvlc_function=0xFF)),
        ("BVLC function BVLC-Result from the client", enc(bvlc_function=BVLC_RESULT)),
        ("BVLC function Read-Broadcast-Distribution-Table-Ack from the client", enc(bvlc_function=READ_BDT_ACK)),
    ]
    if frame[1] in NPDU_CARRIERS:
        faults += [
            ("as Original-Broadcast-NPDU", enc(bvlc_function=ORIGINAL_BROADCAST)),
            ("as Distribute-Broadcast-To-Network", enc(bvlc_function=DISTRIBUTE_BROADCAST)),
            ("as Forwarded-NPDU from 127.0.0.1:47808",
             _with_length(bytes([BVLC_TYPE, FORWARDED_NPDU, 0, 0]) + LOOPBACK_SOURCE + frame[4:])),
            ("as Forwarded-NPDU with a 4-octet original source",
             _with_length(bytes([BVLC_TYPE, FORWARDED_NPDU, 0, 0]) + LOOPBACK_SOURCE[:4] + frame[4:])),
            ("as Register-Foreign-Device (the NPDU read as time-to-live)", enc(bvlc_function=REGISTER_FD)),
        ]
    else:
        faults += [
            ("BVLC payload one octet longer", _with_length(frame + b"\x00")),
            ("BVLC payload 64 octets longer", _with_length(frame + b"\xff" * 64)),
            ("as Original-Unicast-NPDU with no NPDU", enc(bvlc_function=ORIGINAL_UNICAST)),
        ]
        if len(frame) > 4:
            faults.append(("BVLC payload one octet short", _with_length(frame[:-1])))
    return faults


def _npdu_faults(template: Template, frame: bytes) -> list[tuple[str, bytes]]:
    control = frame[5]

    def enc(**overrides: Any) -> bytes:
        return template.encode(**overrides)

    confirmed = frame[6] >> 4 == CONFIRMED
    return [
        ("NPDU version 0", enc(npdu_version=0)),
        ("NPDU version 2", enc(npdu_version=2)),
        ("NPDU reserved control bits 6 and 4 set", enc(npdu_control=control | 0x50)),
        ("NPDU network-layer-message bit set: the APDU read as a message type", enc(npdu_control=control | NETWORK_MESSAGE)),
        ("NPDU expecting-reply bit " + ("cleared on a confirmed request" if confirmed else "set on an unconfirmed request"),
         enc(npdu_control=control ^ EXPECTING_REPLY)),
        ("NPDU DNET bit set without DNET, DLEN or hop count", enc(npdu_control=control | DNET_PRESENT)),
        ("NPDU SNET bit set without SNET or SLEN", enc(npdu_control=control | SNET_PRESENT)),
        ("NPDU routed to DNET 0xFFFF (global broadcast), hop count 255", _with_dnet(frame, GLOBAL_BROADCAST_NET, b"")),
        ("NPDU routed to DNET 5, DADR 0x01 (a station behind a router)", _with_dnet(frame, 5, b"\x01")),
        ("NPDU routed to DNET 5, DLEN 0 (broadcast on a remote network)", _with_dnet(frame, 5, b"")),
        ("NPDU to DNET 0xFFFF with hop count 0", _with_dnet(frame, GLOBAL_BROADCAST_NET, b"", 0)),
        ("NPDU from SNET 7, SADR 0x22 (the answer is routed back)", _with_snet(frame, 7, b"\x22")),
        ("NPDU SNET 0xFFFF (no valid source network)", _with_snet(frame, GLOBAL_BROADCAST_NET, b"\x22")),
        ("NPDU SLEN 0 (no valid source address)", _with_snet(frame, 7, b"")),
        ("NPDU cut after its version octet", _with_length(frame[:5])),
        ("NPDU with no APDU after it", _with_length(frame[:6])),
    ]


def _apdu_faults(template: Template, frame: bytes) -> list[tuple[str, bytes]]:
    names = {f.name for f in template.message.fields}

    def enc(**overrides: Any) -> bytes:
        return template.encode(**overrides)

    pdu_type = frame[6]
    faults: list[tuple[str, bytes]] = [
        ("APDU type 8 (not defined)", enc(pdu_type=0x80 | (pdu_type & 0x0F))),
        ("APDU type Simple-ACK instead of a request", enc(pdu_type=SIMPLE_ACK << 4)),
        ("service choice 0xFF (not defined)", enc(service_choice=0xFF)),
        ("APDU cut after its first octet", _with_length(frame[:7])),
    ]
    if "max_response" in names:  # confirmed requests
        max_response = frame[7]
        faults += [
            ("confirmed request as Unconfirmed-Request", _with_length(frame[:6] + bytes([UNCONFIRMED << 4]) + frame[9:])),
            ("reserved bit 0 of the confirmed request header set", enc(pdu_type=pdu_type | 0x01)),
            ("segmented bit set on an unsegmented request (sequence and window read from the service)", enc(pdu_type=pdu_type | SEGMENTED)),
            ("segmented, more-follows, sequence 0, window 0", _with_segment_header(frame, MORE_FOLLOWS, 0, 0)),
            ("segmented, one segment only, window 128", _with_segment_header(frame, 0, 0, 128)),
            ("segmented, first segment with sequence number 7", _with_segment_header(frame, MORE_FOLLOWS, 7, 1)),
            ("max-APDU code 6 (reserved)", enc(max_response=(max_response & 0x70) | 0x06)),
            ("max-APDU code 15 (reserved)", enc(max_response=(max_response & 0x70) | 0x0F)),
            ("max-APDU code 0 (50 octets) without segmented-response-accepted", enc(max_response=0x00, pdu_type=pdu_type & ~SEGMENTED_ACCEPTED)),
            ("service choice 34 (first undefined confirmed service)", enc(service_choice=34)),
            ("service choice of another service: CreateObject", enc(service_choice=10)),
            ("APDU cut after the invoke id", _with_length(frame[:9])),
            ("APDU cut after the service choice", _with_length(frame[:10])),
        ]
    else:
        faults += [
            ("unconfirmed service 0xFF (not defined)", enc(service_choice=0xFF)),
            ("unconfirmed service 15 (first undefined)", enc(service_choice=15)),
            ("unconfirmed request as Confirmed-Request", _with_length(frame[:6] + bytes([SEGMENTED_ACCEPTED, 0x45, 0x00]) + frame[7:])),
        ]
    return faults


def _with_segment_header(frame: bytes, flags: int, sequence: int, window: int) -> bytes:
    """A confirmed request turned into one segment: flags, sequence number and window inserted."""
    return _with_length(frame[:6] + bytes([frame[6] | SEGMENTED | flags, frame[7], frame[8], sequence, window]) + frame[9:])


def _tag_faults(template: Template, frame: bytes) -> list[tuple[str, bytes]]:
    """Tag numbers, classes, lengths, extended lengths and nesting of the service parameters:
    the first three value tags and the first construct of the template."""
    spans = {s.field.name: s for s in template.message.spans(dict(template.values))}
    fields = [f.name for f in template.message.fields]

    def splice(at: int, old: int, octets: bytes) -> bytes:
        return _with_length(frame[:at] + octets + frame[at + old :])

    out: list[tuple[str, bytes]] = []
    for name in [n for n in fields if n.endswith("_tag") and n[:-4] in spans][:3]:
        value = spans[name[:-4]]
        tag_at, tag = spans[name].offset, frame[spans[name].offset]
        number, lvt, size = tag >> 4, tag & 0x07, value.size
        end = value.offset + size
        label = name[:-4].replace("_", "-")
        out += [
            (f"{label}: context tag number one higher", splice(tag_at, 1, bytes([(tag + 0x10) & 0xFF]))),
            (f"{label}: tag class flipped (context/application)", splice(tag_at, 1, bytes([tag ^ 0x08]))),
            (f"{label}: tag number 15 (extended) with number {number} in the next octet",
             splice(tag_at, 1, bytes([0xF0 | (tag & 0x0F), number]))),
        ]
        if lvt != 5:
            longer = bytes([tag + 1]) if lvt < 4 else bytes([(tag & 0xF8) | 5, size + 1])
            out += [
                (f"{label}: tag length one short", splice(tag_at, 1, bytes([tag - 1]))),
                (f"{label}: tag length one long", splice(tag_at, 1, longer)),
                (f"{label}: two-octet extended length (254) for {size} octets", splice(tag_at, 1, bytes([(tag & 0xF8) | 5, 254, 0, size]))),
                (f"{label}: four-octet extended length (255) of 0xFFFFFFFF", splice(tag_at, 1, bytes([(tag & 0xF8) | 5, 255]) + b"\xff" * 4)),
                (f"{label}: opening tag in place of the value tag", splice(tag_at, 1, bytes([(tag & 0xF0) | 0x0E]))),
            ]
        else:
            length_at = spans[f"{name[:-4]}_length"].offset
            out += [
                (f"{label}: extended length one short", splice(length_at, 1, bytes([frame[length_at] - 1]))),
                (f"{label}: extended length one long", splice(length_at, 1, bytes([frame[length_at] + 1]))),
                (f"{label}: extended length 253 over a short value", splice(length_at, 1, b"\xfd")),
                (f"{label}: extended length 254 with its two octets missing", splice(length_at, 1, b"\xfe")),
                (f"{label}: character set 9 (not defined)", splice(value.offset, 1, b"\x09")),
                (f"{label}: invalid UTF-8 (0xC3 0x28)", splice(length_at, 1 + size, b"\x03\x00\xc3\x28")),
                (f"{label}: 21 characters, one above the 20 a password may have",
                 splice(length_at, 1 + size, bytes([22, 0]) + b"A" * 21)),
            ]
        out += [
            (f"{label}: value octets missing", splice(value.offset, size, b"")),
            (f"{label}: parameter missing", splice(tag_at, end - tag_at, b"")),
            (f"{label}: parameter twice", splice(end, 0, frame[tag_at:end])),
        ]
    for name in [n for n in fields if n.endswith("_open")][:1]:
        open_at, close_at = spans[name].offset, spans[name[:-5] + "_close"].offset
        opening, closing = frame[open_at : open_at + 1], frame[close_at : close_at + 1]
        label = name[:-5].replace("_", "-")
        out += [
            (f"{label}: closing tag missing", splice(close_at, 1, b"")),
            (f"{label}: opening tag missing", splice(open_at, 1, b"")),
            (f"{label}: opening tag twice", splice(open_at, 0, opening)),
            (f"{label}: closing tag twice", splice(close_at, 0, closing)),
            (f"{label}: closing tag numbered one higher", splice(close_at, 1, bytes([(closing[0] + 0x10) & 0xFF]))),
            (f"{label}: nothing between opening and closing tag", splice(open_at + 1, close_at - open_at - 1, b"")),
            (f"{label}: constructs nested 32 deep", _with_length(frame[:open_at] + opening * 32 + frame[open_at + 1 : close_at]
                                                             + closing * 32 + frame[close_at + 1 :])),
        ]
    service_at = 10 if frame[6] >> 4 == CONFIRMED else 8
    out += [
        ("an application Null after the last parameter (too many arguments)", _with_length(frame + b"\x00")),
        ("context tag 9 after the last parameter", _with_length(frame + b"\x99\x01")),
        ("a closing tag after the last parameter", _with_length(frame + b"\x7f")),
        ("an opening tag never closed after the last parameter", _with_length(frame + b"\x7e")),
        ("application tag 13 (reserved) after the last parameter", _with_length(frame + b"\xd1\x00")),
        ("a Boolean application tag with value 2", _with_length(frame + b"\x12")),
        ("service parameters missing", _with_length(frame[:service_at])),
    ]
    return out


# -- request checks ---------------------------------------------------------------------------------


def _bvlc_name(function: int) -> str:
    return BVLC_FUNCTIONS.get(function, f"BVLC function 0x{function:02x}")


def _check_datagram(frame: bytes) -> list[str]:
    bvll = parse_bvll(frame)
    if len(frame) < 4:
        return [bvll.problem or "datagram too short"]
    problems: list[str] = []
    if bvll.type != BVLC_TYPE:
        return [f"bvlc_type=0x{bvll.type:02x} is not BACnet/IP 0x81"]
    if bvll.length != len(frame):
        problems.append(f"bvlc_length={bvll.length} but the datagram has {len(frame)} octets")
    function = bvll.function
    if function not in BVLC_FUNCTIONS:
        return problems + [f"bvlc_function=0x{function:02x} is not a defined value"]
    if function in DEVICE_FUNCTIONS:
        problems.append(f"bvlc_function=0x{function:02x} ({BVLC_FUNCTIONS[function]}) is sent by devices, not to them")
    if function == SECURE_BVLL:
        problems.append(f"bvlc_function=0x{function:02x} (Secure-BVLL) carries no secured content")
    if function in BVLC_SIZES and len(frame) != BVLC_SIZES[function]:
        problems.append(f"bvlc_length={len(frame)}: {BVLC_FUNCTIONS[function]} is {BVLC_SIZES[function]} octets")
    if function == WRITE_BDT and (len(frame) - 4) % 10:
        problems.append(f"bvlc_length={len(frame)}: Write-Broadcast-Distribution-Table entries are 10 octets each")
    if function not in NPDU_CARRIERS:
        return problems
    if bvll.problem and bvll.problem.startswith("original_source"):
        return problems + [bvll.problem]
    message = parse_message(frame)
    return problems + _check_npdu(message) + _check_apdu(message)


def _check_npdu(message: Message) -> list[str]:
    npdu = message.npdu
    assert npdu is not None
    if npdu.problem:
        return [npdu.problem]
    problems: list[str] = []
    if npdu.version != NPDU_VERSION:
        problems.append(f"npdu_version={npdu.version} is not 1")
    if npdu.snet == GLOBAL_BROADCAST_NET:
        problems.append(f"snet={npdu.snet} is not a valid source network")
    if npdu.snet is not None and not npdu.sadr:
        problems.append("slen=0: a source address has at least one octet")
    if npdu.message_type is not None:
        if npdu.message_type not in NETWORK_MESSAGES and npdu.message_type < 0x80:
            problems.append(f"message_type=0x{npdu.message_type:02x} is not a defined network message")
        return problems
    apdu = message.apdu
    if apdu is not None and apdu.pdu_type == CONFIRMED and not npdu.control & EXPECTING_REPLY:
        problems.append(f"npdu_control=0x{npdu.control:02x}: expecting-reply bit clear on a confirmed request")
    return problems


def _check_apdu(message: Message) -> list[str]:
    """APDU-level departures: the ones a device has to answer with Reject or Abort."""
    apdu = message.apdu
    if apdu is None:
        return []
    if apdu.problem:
        return [apdu.problem]
    kind = apdu.pdu_type
    if kind in (SIMPLE_ACK, COMPLEX_ACK, ERROR, REJECT, SEGMENT_ACK, ABORT):
        return [f"pdu_type={kind} ({apdu.name}) answers a transaction the device never started"]
    problems: list[str] = []
    if kind == CONFIRMED:
        code = apdu.max_response & 0x0F
        if code not in MAX_APDU_CODES:
            problems.append(f"max_apdu_length_accepted code={code} is reserved")
        if apdu.segmented:
            if not 1 <= (apdu.window or 0) <= 127:
                problems.append(f"proposed_window_size={apdu.window} outside 1..127")
            if apdu.sequence != 0:
                problems.append(f"sequence_number={apdu.sequence} but a segmented request starts at 0")
        if apdu.service not in CONFIRMED_SERVICES:
            return problems + [f"service_choice={apdu.service} is not a defined confirmed service"]
        if apdu.segmented and apdu.more_follows:
            return problems  # the rest of the parameters never came
        problem = check_parameters(apdu.service or 0, True, apdu.body)
        return problems + ([f"{CONFIRMED_SERVICES[apdu.service or 0]} {problem}"] if problem else [])
    if apdu.service not in UNCONFIRMED_SERVICES:
        return [f"service_choice={apdu.service} is not a defined unconfirmed service"]
    problem = check_parameters(apdu.service or 0, False, apdu.body)
    return [f"{UNCONFIRMED_SERVICES[apdu.service or 0]} {problem}"] if problem else []


def _check_segmented(segments: list[Message]) -> list[str]:
    """A segmented request as a whole: every segment's layers, the sequence, then the
    reassembled parameters (when the request completes)."""
    problems: list[str] = []
    first = segments[0].apdu
    assert first is not None
    body = b""
    for index, message in enumerate(segments):
        where = f"segment {index}: "
        apdu = message.apdu
        assert apdu is not None
        if message.bvll.function != ORIGINAL_UNICAST:
            problems.append(where + f"bvlc_function=0x{message.bvll.function:02x}: segments go as Original-Unicast-NPDU")
        problems += [where + p for p in _check_npdu(message)]
        if apdu.sequence != index:
            problems.append(where + f"sequence_number={apdu.sequence} but {index} expected")
        if apdu.invoke_id != first.invoke_id:
            problems.append(where + f"invoke_id offset {apdu.invoke_id} differs from the first segment's {first.invoke_id}")
        if apdu.service != first.service:
            problems.append(where + f"service_choice={apdu.service} differs from the first segment's {first.service}")
        if not apdu.segmented:
            problems.append(where + "segmented bit clear inside a segmented request")
            continue
        if not 1 <= (apdu.window or 0) <= 127:
            problems.append(where + f"proposed_window_size={apdu.window} outside 1..127")
        if apdu.max_response & 0x0F not in MAX_APDU_CODES:
            problems.append(where + f"max_apdu_length_accepted code={apdu.max_response & 0x0F} is reserved")
        last = index == len(segments) - 1
        if apdu.more_follows == last and not (last and apdu.more_follows):
            problems.append(where + "more_follows clear before the last segment")
        body += apdu.body
    last_apdu = segments[-1].apdu
    assert last_apdu is not None
    if problems or last_apdu.more_follows:
        return problems  # incomplete: the device waits for more, which is no fault of its
    if first.service not in CONFIRMED_SERVICES:
        return [f"service_choice={first.service} is not a defined confirmed service"]
    problem = check_parameters(first.service or 0, True, body)
    return [f"{CONFIRMED_SERVICES[first.service or 0]} {problem}"] if problem else []


# -- reply classification ---------------------------------------------------------------------------


def _request_message(request: bytes) -> Message:
    """The request an answer is judged against: a segmented request's first segment names the
    transaction's service (the device keeps it whatever later segments say)."""
    segments = _segments(request)
    return segments[0] if segments is not None else parse_message(request)


def _classify_result(bvll: Bvll, asked: Message) -> ReplyVerdict:
    if len(bvll.payload) != 2:
        return ReplyVerdict(ReplyKind.MALFORMED, f"BVLC-Result with {len(bvll.payload)} octets of result code, not 2")
    code = int.from_bytes(bvll.payload, "big")
    name = BVLC_RESULTS.get(code)
    if name is None:
        return ReplyVerdict(ReplyKind.MALFORMED, f"BVLC-Result code 0x{code:04x} is not defined")
    if code == 0:
        if asked.bvll.function in RESULT_FUNCTIONS and asked.bvll.function != DISTRIBUTE_BROADCAST:
            return ReplyVerdict(ReplyKind.NORMAL, f"BVLC-Result {name} (0x0000)")
        return ReplyVerdict(ReplyKind.MALFORMED, f"BVLC-Result {name} answers {_bvlc_name(asked.bvll.function)}")
    return ReplyVerdict(ReplyKind.EXCEPTION, f"BVLC-Result {name} (0x{code:04x})")


def _classify_network(npdu: Npdu, asked: Message) -> ReplyVerdict:
    name = NETWORK_MESSAGES.get(npdu.message_type or 0, f"network message 0x{npdu.message_type:02x}")
    if asked.npdu is None or asked.npdu.message_type is None:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{name} answers an application request")
    if npdu.message_type == 0x03:
        reason = npdu.apdu[0] if npdu.apdu else None
        return ReplyVerdict(ReplyKind.EXCEPTION, f"{name} {NETWORK_REJECT_REASONS.get(reason or 0, 'reason')} ({reason})")
    return ReplyVerdict(ReplyKind.NORMAL, name)


def _error_class_code(body: bytes) -> tuple[int, int] | None:
    """Error class and code: the first two application Enumerated values, inside [0] for the
    services whose error is a construct (WritePropertyMultiple, CreateObject...)."""
    tags, problem = parse_tags(body)
    if problem:
        return None
    values = [t for t in tags if not t.context and t.kind == "value" and t.number == APP_ENUMERATED]
    if len(values) < 2 or not all(1 <= len(v.data) <= 4 for v in values[:2]):
        return None
    return int.from_bytes(values[0].data, "big"), int.from_bytes(values[1].data, "big")


def _classify_apdu(apdu: Apdu, asked: Message) -> ReplyVerdict:
    want = asked.apdu
    service = want.service if want is not None and want.pdu_type == CONFIRMED else None
    service_name = CONFIRMED_SERVICES.get(service or 0, "request") if service is not None else "request"
    kind = apdu.pdu_type
    if kind == UNCONFIRMED:
        name = UNCONFIRMED_SERVICES.get(apdu.service or 0, f"unconfirmed service {apdu.service}")
        answers = {I_AM: WHO_IS, I_HAVE: WHO_HAS}.get(apdu.service)  # type: ignore[arg-type]
        if answers is None or want is None or want.pdu_type != UNCONFIRMED or want.service != answers:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{name} is no answer to this request")
        problem = check_parameters(I_AM, False, apdu.body) if apdu.service == I_AM else _check_i_have(apdu.body)
        if problem:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{name} {problem}")
        return ReplyVerdict(ReplyKind.NORMAL, name)
    if kind == CONFIRMED:
        return ReplyVerdict(ReplyKind.MALFORMED, "a confirmed request is no answer")
    if service is None and kind != SEGMENT_ACK:
        # an answer to something that was no confirmed request (the session took it for want of
        # a better one): rejections are still rejections
        if kind in (REJECT, ABORT, ERROR):
            return _rejection(apdu, "request")
        return ReplyVerdict(ReplyKind.MALFORMED, f"{apdu.name} answers no confirmed request")
    if kind in (REJECT, ABORT, ERROR):
        if kind == ERROR and apdu.service != service:
            return ReplyVerdict(ReplyKind.MALFORMED, f"Error for {CONFIRMED_SERVICES.get(apdu.service or 0, apdu.service)} answers {service_name}")
        return _rejection(apdu, service_name)
    if kind == SEGMENT_ACK:
        if apdu.flags & NAK:
            return ReplyVerdict(ReplyKind.EXCEPTION, f"Segment-ACK NAK: segments after {apdu.sequence} expected again (window {apdu.window})")
        return ReplyVerdict(ReplyKind.NORMAL, f"Segment-ACK of segment {apdu.sequence}, window {apdu.window}")
    if apdu.service != service:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{apdu.name} for {CONFIRMED_SERVICES.get(apdu.service or 0, apdu.service)} answers {service_name}")
    if kind == SIMPLE_ACK:
        if service not in SIMPLE_ACK_SERVICES:
            return ReplyVerdict(ReplyKind.MALFORMED, f"Simple-ACK for {service_name}, which answers with data")
        return ReplyVerdict(ReplyKind.NORMAL, f"Simple-ACK {service_name}")
    # Complex-ACK
    if service in SIMPLE_ACK_SERVICES:
        return ReplyVerdict(ReplyKind.MALFORMED, f"Complex-ACK for {service_name}, which answers with Simple-ACK")
    tags, problem = parse_tags(apdu.body)
    if problem:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{service_name}-ACK {problem}")
    if service == READ_PROPERTY and want is not None:
        asked_tags, _ = parse_tags(want.body)
        echo = [(t.number, t.data) for t in tags[:2]]
        expected = [(t.number, t.data) for t in asked_tags[:2]]
        if echo != expected:
            return ReplyVerdict(ReplyKind.MALFORMED, "ReadProperty-ACK names another object or property than the request")
        if not any(t.kind == "open" and t.number == 3 for t in tags):
            return ReplyVerdict(ReplyKind.MALFORMED, "ReadProperty-ACK without a property value [3]")
        what = object_name(int.from_bytes(tags[0].data, "big")) if len(tags[0].data) == 4 else "object"
        prop = int.from_bytes(tags[1].data, "big")
        return ReplyVerdict(ReplyKind.NORMAL, f"ReadProperty-ACK {what} {PROPERTIES.get(prop, f'property {prop}')}")
    return ReplyVerdict(ReplyKind.NORMAL, f"{service_name}-ACK of {len(apdu.body)} octets")


def _rejection(apdu: Apdu, service_name: str) -> ReplyVerdict:
    if apdu.pdu_type == REJECT:
        reason = apdu.reason or 0
        name = REJECT_REASONS.get(reason, "proprietary" if reason >= 64 else "undefined")
        return ReplyVerdict(ReplyKind.EXCEPTION, f"Reject {name} ({reason}) of {service_name}")
    if apdu.pdu_type == ABORT:
        reason = apdu.reason or 0
        name = ABORT_REASONS.get(reason, "proprietary" if reason >= 64 else "undefined")
        return ReplyVerdict(ReplyKind.EXCEPTION, f"Abort {name} ({reason}) of {service_name}")
    pair = _error_class_code(apdu.body)
    if pair is None:
        return ReplyVerdict(ReplyKind.MALFORMED, f"Error for {service_name} without error class and code")
    error_class, code = pair
    return ReplyVerdict(ReplyKind.EXCEPTION, f"Error {ERROR_CLASSES.get(error_class, 'proprietary')}/"
                                             f"{ERROR_CODES.get(code, 'proprietary')} (class {error_class}, code {code}) of {service_name}")


def _check_i_have(body: bytes) -> str | None:
    tags, problem = parse_tags(body)
    if problem:
        return problem
    walk = _Grammar(tags)
    walk.object_id(walk.application(APP_OBJECT_ID, "device-identifier"), "device-identifier", DEVICE)
    walk.object_id(walk.application(APP_OBJECT_ID, "object-identifier"), "object-identifier")
    walk.string(walk.application(APP_STRING, "object-name"), "object-name")
    walk.done()
    return walk.problem


# -- lenient reading (writes and relayed frames, even after mutation) ---------------------------------


def _readings(frame: bytes) -> list[bytes]:
    """The BVLLs a lenient stack might find in a frame: each by its length, and the whole
    datagram as one."""
    parts = split_bvlls(frame)
    return parts if frame in parts else [*parts, frame]


def _lenient_write(part: bytes) -> bool:
    if len(part) < 2:
        return False
    function = part[1]
    if function in BVLC_WRITES:
        return True
    if function in (BVLC_RESULT, READ_BDT, READ_BDT_ACK, READ_FDT, READ_FDT_ACK):
        return False
    npdu = part[10:] if function == FORWARDED_NPDU else part[4:]
    if len(npdu) < 2:
        return False
    control, pos = npdu[1], 2
    for present in (DNET_PRESENT, SNET_PRESENT):
        if control & present:
            if len(npdu) < pos + 3:
                return True
            pos += 3 + npdu[pos + 2]
    if control & DNET_PRESENT:
        pos += 1
    if pos >= len(npdu):
        return False
    if control & NETWORK_MESSAGE:
        return npdu[pos] not in (0x00, 0x12)  # only Who-Is-Router and What-Is-Network-Number read
    apdu = npdu[pos:]
    kind = apdu[0] >> 4
    if kind == CONFIRMED:
        at = 5 if apdu[0] & SEGMENTED else 3
        return len(apdu) > at and apdu[at] not in READ_SERVICES
    if kind == UNCONFIRMED:
        return len(apdu) > 1 and apdu[1] not in UNCONFIRMED_READS
    return False


def _dispatch(frame: bytes) -> tuple[int | None, ...]:
    message = parse_message(frame)
    apdu = message.apdu
    function = message.bvll.function if message.bvll.type == BVLC_TYPE else None
    if apdu is None or apdu.problem:
        return (function,)
    return (function, apdu.pdu_type, apdu.service, int(apdu.segmented), int(apdu.max_response & 0x0F == 0))
