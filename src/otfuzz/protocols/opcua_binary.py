"""OPC UA binary encoding (IEC 62541-6 / OPC 10000-6 clause 5.2): the built-in types, the
structures of the services otfuzz speaks, the status codes, and a strict decoder.

This is the half of the OPC UA module that knows the data encoding; `opcua.py` knows the
connection, the secure conversation and the services. The decoder walks any message by its
type's schema and reports every way the bytes depart from the encoding rules as a problem text
("<field> length=<n> but <m> bytes remain"), which is what `check_request` and `classify`
need; it never raises on hostile input except `DecodeError` for bytes it cannot walk past.
Structures are data (`STRUCTURES`), field names in the specification's own words in
snake_case. Pure code: no sockets, no clocks.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from otfuzz.errors import DecodeError

MAX_NESTING = 100
"""Decoders must support at least 100 nesting levels (OPC 10000-6 5.2.1); deeper is walked up
to this depth and reported, never recursed into without bound."""
MAX_ARRAY = 1 << 20
"""Arrays longer than this are not walked element by element (they cannot fit a message)."""

# -- status codes (OPC 10000-4 7.38 and 10000-6 annex A): the common ones, by value ----------------

STATUS_CODES: Mapping[int, str] = MappingProxyType({
    0x00000000: "Good", 0x002D0000: "Good_SubscriptionTransferred", 0x002E0000: "Good_CompletesAsynchronously",
    0x002F0000: "Good_Overload", 0x00300000: "Good_Clamped", 0x00A50000: "Good_NoData", 0x00A60000: "Good_MoreData",
    0x00BA0000: "Good_ResultsMayBeIncomplete",
    0x40000000: "Uncertain", 0x408F0000: "Uncertain_NoCommunicationLastUsableValue",
    0x40900000: "Uncertain_LastUsableValue", 0x40910000: "Uncertain_SubstituteValue", 0x40920000: "Uncertain_InitialValue",
    0x40930000: "Uncertain_SensorNotAccurate", 0x40940000: "Uncertain_EngineeringUnitsExceeded",
    0x40950000: "Uncertain_SubNormal",
    0x80000000: "Bad", 0x80010000: "Bad_UnexpectedError", 0x80020000: "Bad_InternalError", 0x80030000: "Bad_OutOfMemory",
    0x80040000: "Bad_ResourceUnavailable", 0x80050000: "Bad_CommunicationError", 0x80060000: "Bad_EncodingError",
    0x80070000: "Bad_DecodingError", 0x80080000: "Bad_EncodingLimitsExceeded", 0x80B80000: "Bad_RequestTooLarge",
    0x80B90000: "Bad_ResponseTooLarge", 0x80090000: "Bad_UnknownResponse", 0x800A0000: "Bad_Timeout",
    0x800B0000: "Bad_ServiceUnsupported", 0x800C0000: "Bad_Shutdown", 0x800D0000: "Bad_ServerNotConnected",
    0x800E0000: "Bad_ServerHalted", 0x800F0000: "Bad_NothingToDo", 0x80100000: "Bad_TooManyOperations",
    0x80DB0000: "Bad_TooManyMonitoredItems", 0x80110000: "Bad_DataTypeIdUnknown", 0x80120000: "Bad_CertificateInvalid",
    0x80130000: "Bad_SecurityChecksFailed", 0x801A0000: "Bad_CertificateUntrusted", 0x801F0000: "Bad_UserAccessDenied",
    0x80200000: "Bad_IdentityTokenInvalid", 0x80210000: "Bad_IdentityTokenRejected",
    0x80220000: "Bad_SecureChannelIdInvalid", 0x80230000: "Bad_InvalidTimestamp", 0x80240000: "Bad_NonceInvalid",
    0x80250000: "Bad_SessionIdInvalid", 0x80260000: "Bad_SessionClosed", 0x80270000: "Bad_SessionNotActivated",
    0x80280000: "Bad_SubscriptionIdInvalid", 0x802A0000: "Bad_RequestHeaderInvalid",
    0x802B0000: "Bad_TimestampsToReturnInvalid", 0x802C0000: "Bad_RequestCancelledByClient",
    0x80E50000: "Bad_TooManyArguments", 0x80310000: "Bad_NoCommunication", 0x80320000: "Bad_WaitingForInitialData",
    0x80330000: "Bad_NodeIdInvalid", 0x80340000: "Bad_NodeIdUnknown", 0x80350000: "Bad_AttributeIdInvalid",
    0x80360000: "Bad_IndexRangeInvalid", 0x80370000: "Bad_IndexRangeNoData", 0x80380000: "Bad_DataEncodingInvalid",
    0x80390000: "Bad_DataEncodingUnsupported", 0x803A0000: "Bad_NotReadable", 0x803B0000: "Bad_NotWritable",
    0x803C0000: "Bad_OutOfRange", 0x803D0000: "Bad_NotSupported", 0x803E0000: "Bad_NotFound",
    0x803F0000: "Bad_ObjectDeleted", 0x80400000: "Bad_NotImplemented", 0x80410000: "Bad_MonitoringModeInvalid",
    0x80420000: "Bad_MonitoredItemIdInvalid", 0x80430000: "Bad_MonitoredItemFilterInvalid",
    0x80440000: "Bad_MonitoredItemFilterUnsupported", 0x80450000: "Bad_FilterNotAllowed",
    0x80460000: "Bad_StructureMissing", 0x80470000: "Bad_EventFilterInvalid", 0x80480000: "Bad_ContentFilterInvalid",
    0x804A0000: "Bad_ContinuationPointInvalid", 0x804B0000: "Bad_NoContinuationPoints",
    0x804C0000: "Bad_ReferenceTypeIdInvalid", 0x804D0000: "Bad_BrowseDirectionInvalid", 0x804E0000: "Bad_NodeNotInView",
    0x804F0000: "Bad_ServerUriInvalid", 0x80500000: "Bad_ServerNameMissing", 0x80510000: "Bad_DiscoveryUrlMissing",
    0x80530000: "Bad_RequestTypeInvalid", 0x80540000: "Bad_SecurityModeRejected",
    0x80550000: "Bad_SecurityPolicyRejected", 0x80560000: "Bad_TooManySessions", 0x80570000: "Bad_UserSignatureInvalid",
    0x80580000: "Bad_ApplicationSignatureInvalid", 0x80590000: "Bad_NoValidCertificates",
    0x805A0000: "Bad_RequestCancelledByRequest", 0x805B0000: "Bad_ParentNodeIdInvalid",
    0x805F0000: "Bad_NodeClassInvalid", 0x80600000: "Bad_BrowseNameInvalid", 0x80610000: "Bad_BrowseNameDuplicated",
    0x80630000: "Bad_TypeDefinitionInvalid", 0x806B0000: "Bad_ViewIdUnknown", 0x806F0000: "Bad_NoMatch",
    0x80730000: "Bad_WriteNotSupported", 0x80740000: "Bad_TypeMismatch", 0x80750000: "Bad_MethodInvalid",
    0x80760000: "Bad_ArgumentsMissing", 0x80770000: "Bad_TooManySubscriptions", 0x80780000: "Bad_TooManyPublishRequests",
    0x80790000: "Bad_NoSubscription", 0x807A0000: "Bad_SequenceNumberUnknown", 0x807B0000: "Bad_MessageNotAvailable",
    0x807C0000: "Bad_InsufficientClientProfile", 0x807D0000: "Bad_TcpServerTooBusy",
    0x807E0000: "Bad_TcpMessageTypeInvalid", 0x807F0000: "Bad_TcpSecureChannelUnknown",
    0x80800000: "Bad_TcpMessageTooLarge", 0x80810000: "Bad_TcpNotEnoughResources", 0x80820000: "Bad_TcpInternalError",
    0x80830000: "Bad_TcpEndpointUrlInvalid", 0x80840000: "Bad_RequestInterrupted", 0x80850000: "Bad_RequestTimeout",
    0x80860000: "Bad_SecureChannelClosed", 0x80870000: "Bad_SecureChannelTokenUnknown",
    0x80880000: "Bad_SequenceNumberInvalid", 0x80890000: "Bad_ConfigurationError", 0x808A0000: "Bad_NotConnected",
    0x808B0000: "Bad_DeviceFailure", 0x808C0000: "Bad_SensorFailure", 0x808D0000: "Bad_OutOfService",
    0x808E0000: "Bad_DeadbandFilterInvalid", 0x809D0000: "Bad_DataLost", 0x80AB0000: "Bad_InvalidArgument",
    0x80AC0000: "Bad_ConnectionRejected", 0x80AD0000: "Bad_Disconnect", 0x80AE0000: "Bad_ConnectionClosed",
    0x80AF0000: "Bad_InvalidState", 0x80B00000: "Bad_EndOfStream", 0x80B10000: "Bad_NoDataAvailable",
    0x80B70000: "Bad_MaxConnectionsReached", 0x80BE0000: "Bad_ProtocolVersionUnsupported",
    0x80C60000: "Bad_IdentityChangeNotSupported", 0x80D50000: "Bad_AggregateNotSupported",
    0x810E0000: "Bad_LicenseExpired",
})  # fmt: skip


def status_name(code: int) -> str:
    """'Bad_NodeIdUnknown 0x80340000': the name (or severity) and the value, as reports show it.

    The low 16 bits are info bits (overflow, limits): the name is looked up without them.
    """
    code &= 0xFFFFFFFF
    name = STATUS_CODES.get(code) or STATUS_CODES.get(code & 0xFFFF0000)
    if name is None:
        name = ("Good", "Uncertain", "Bad", "Bad")[code >> 30] + "_Unknown"
    return f"{name} 0x{code:08X}"


def is_bad(code: int) -> bool:
    return code >> 31 == 1


# -- well-known numeric identifiers of namespace 0 -----------------------------------------------

# Binary encoding ids (the type id of a message body) of the services otfuzz speaks.
SERVICES: Mapping[int, str] = MappingProxyType({
    446: "OpenSecureChannelRequest", 449: "OpenSecureChannelResponse",
    452: "CloseSecureChannelRequest", 455: "CloseSecureChannelResponse",
    397: "ServiceFault",
    422: "FindServersRequest", 425: "FindServersResponse",
    428: "GetEndpointsRequest", 431: "GetEndpointsResponse",
    461: "CreateSessionRequest", 464: "CreateSessionResponse",
    467: "ActivateSessionRequest", 470: "ActivateSessionResponse",
    473: "CloseSessionRequest", 476: "CloseSessionResponse",
    631: "ReadRequest", 634: "ReadResponse",
    673: "WriteRequest", 676: "WriteResponse",
    527: "BrowseRequest", 530: "BrowseResponse",
    533: "BrowseNextRequest", 536: "BrowseNextResponse",
    554: "TranslateBrowsePathsToNodeIdsRequest", 557: "TranslateBrowsePathsToNodeIdsResponse",
    712: "CallRequest", 715: "CallResponse",
    787: "CreateSubscriptionRequest", 790: "CreateSubscriptionResponse",
    751: "CreateMonitoredItemsRequest", 754: "CreateMonitoredItemsResponse",
    826: "PublishRequest", 829: "PublishResponse",
    847: "DeleteSubscriptionsRequest", 850: "DeleteSubscriptionsResponse",
})  # fmt: skip
RESPONSE_OF: Mapping[int, int] = MappingProxyType({k: k + 3 for k, v in SERVICES.items() if v.endswith("Request")})
SERVICE_FAULT = 397
# Services a client may call without a session (OPC 10000-4 5.4, 5.5, 5.6.2).
SESSIONLESS = frozenset({446, 452, 422, 428, 461})

# Encoding ids of structures that travel in ExtensionObjects.
EXTENSION_TYPES: Mapping[int, str] = MappingProxyType({
    321: "AnonymousIdentityToken", 324: "UserNameIdentityToken", 327: "X509IdentityToken", 940: "IssuedIdentityToken",
    724: "DataChangeFilter", 727: "EventFilter", 730: "AggregateFilter",
    811: "DataChangeNotification", 916: "EventNotificationList", 820: "StatusChangeNotification",
})  # fmt: skip
IDENTITY_TOKENS = frozenset({321, 324, 327, 940})
MONITORING_FILTERS = frozenset({724, 727, 730})

ATTRIBUTES: Mapping[int, str] = MappingProxyType({
    1: "NodeId", 2: "NodeClass", 3: "BrowseName", 4: "DisplayName", 5: "Description", 6: "WriteMask",
    7: "UserWriteMask", 8: "IsAbstract", 9: "Symmetric", 10: "InverseName", 11: "ContainsNoLoops",
    12: "EventNotifier", 13: "Value", 14: "DataType", 15: "ValueRank", 16: "ArrayDimensions", 17: "AccessLevel",
    18: "UserAccessLevel", 19: "MinimumSamplingInterval", 20: "Historizing", 21: "Executable",
    22: "UserExecutable", 23: "DataTypeDefinition", 24: "RolePermissions", 25: "UserRolePermissions",
    26: "AccessRestrictions", 27: "AccessLevelEx",
})  # fmt: skip
VALUE_ATTRIBUTE = 13

# Node ids every server has (OPC 10000-5): what fuzzing draws node ids from.
WELL_KNOWN_NODES: Mapping[int, str] = MappingProxyType({
    84: "RootFolder", 85: "ObjectsFolder", 86: "TypesFolder", 87: "ViewsFolder", 2253: "Server",
    2254: "Server_ServerArray", 2255: "Server_NamespaceArray", 2256: "Server_ServerStatus",
    2257: "Server_ServerStatus_StartTime", 2258: "Server_ServerStatus_CurrentTime", 2259: "Server_ServerStatus_State",
    2260: "Server_ServerStatus_BuildInfo", 2261: "Server_ServerStatus_BuildInfo_ProductName",
    2262: "Server_ServerStatus_BuildInfo_ProductUri", 2263: "Server_ServerStatus_BuildInfo_ManufacturerName",
    2264: "Server_ServerStatus_BuildInfo_SoftwareVersion", 2265: "Server_ServerStatus_BuildInfo_BuildNumber",
    2268: "Server_ServerCapabilities", 11492: "Server_GetMonitoredItems",
    31: "References", 33: "HierarchicalReferences", 35: "Organizes", 40: "HasTypeDefinition", 45: "HasSubtype",
    46: "HasProperty", 47: "HasComponent", 1: "Boolean", 6: "Int32", 11: "Double", 12: "String",
})  # fmt: skip

# Built-in type ids of a Variant's encoding mask (OPC 10000-6 5.1.2).
BUILTIN_TYPES: Mapping[int, str] = MappingProxyType({
    1: "Boolean", 2: "SByte", 3: "Byte", 4: "Int16", 5: "UInt16", 6: "Int32", 7: "UInt32", 8: "Int64", 9: "UInt64",
    10: "Float", 11: "Double", 12: "String", 13: "DateTime", 14: "Guid", 15: "ByteString", 16: "XmlElement",
    17: "NodeId", 18: "ExpandedNodeId", 19: "StatusCode", 20: "QualifiedName", 21: "LocalizedText",
    22: "ExtensionObject", 23: "DataValue", 24: "Variant", 25: "DiagnosticInfo",
})  # fmt: skip

# Enumerations carried as Int32, with their defined values.
ENUMS: Mapping[str, Mapping[int, str]] = MappingProxyType({
    "SecurityTokenRequestType": {0: "Issue", 1: "Renew"},
    "MessageSecurityMode": {0: "Invalid", 1: "None", 2: "Sign", 3: "SignAndEncrypt"},
    "ApplicationType": {0: "Server", 1: "Client", 2: "ClientAndServer", 3: "DiscoveryServer"},
    "UserTokenType": {0: "Anonymous", 1: "UserName", 2: "Certificate", 3: "IssuedToken"},
    "TimestampsToReturn": {0: "Source", 1: "Server", 2: "Both", 3: "Neither"},
    "BrowseDirection": {0: "Forward", 1: "Inverse", 2: "Both"},
    "MonitoringMode": {0: "Disabled", 1: "Sampling", 2: "Reporting"},
    "NodeClass": {0: "Unspecified", 1: "Object", 2: "Variable", 4: "Method", 8: "ObjectType", 16: "VariableType",
                  32: "ReferenceType", 64: "DataType", 128: "View"},
})  # fmt: skip

# -- structures: (field, type) in encoding order; "T[]" is an array of T ----------------------------

STRUCTURES: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType({
    "RequestHeader": (("authentication_token", "NodeId"), ("timestamp", "DateTime"), ("request_handle", "UInt32"),
                      ("return_diagnostics", "UInt32"), ("audit_entry_id", "String"), ("timeout_hint", "UInt32"),
                      ("additional_header", "ExtensionObject")),
    "ResponseHeader": (("timestamp", "DateTime"), ("request_handle", "UInt32"), ("service_result", "StatusCode"),
                       ("service_diagnostics", "DiagnosticInfo"), ("string_table", "String[]"),
                       ("additional_header", "ExtensionObject")),
    "ChannelSecurityToken": (("channel_id", "UInt32"), ("token_id", "UInt32"), ("created_at", "DateTime"),
                             ("revised_lifetime", "UInt32")),
    "ApplicationDescription": (("application_uri", "String"), ("product_uri", "String"),
                               ("application_name", "LocalizedText"), ("application_type", "ApplicationType"),
                               ("gateway_server_uri", "String"), ("discovery_profile_uri", "String"),
                               ("discovery_urls", "String[]")),
    "UserTokenPolicy": (("policy_id", "String"), ("token_type", "UserTokenType"), ("issued_token_type", "String"),
                        ("issuer_endpoint_url", "String"), ("security_policy_uri", "String")),
    "EndpointDescription": (("endpoint_url", "String"), ("server", "ApplicationDescription"),
                            ("server_certificate", "ByteString"), ("security_mode", "MessageSecurityMode"),
                            ("security_policy_uri", "String"), ("user_identity_tokens", "UserTokenPolicy[]"),
                            ("transport_profile_uri", "String"), ("security_level", "Byte")),
    "SignatureData": (("algorithm", "String"), ("signature", "ByteString")),
    "SignedSoftwareCertificate": (("certificate_data", "ByteString"), ("signature", "ByteString")),
    "AnonymousIdentityToken": (("policy_id", "String"),),
    "UserNameIdentityToken": (("policy_id", "String"), ("user_name", "String"), ("password", "ByteString"),
                              ("encryption_algorithm", "String")),
    "X509IdentityToken": (("policy_id", "String"), ("certificate_data", "ByteString")),
    "IssuedIdentityToken": (("policy_id", "String"), ("token_data", "ByteString"), ("encryption_algorithm", "String")),
    "DataChangeFilter": (("trigger", "UInt32"), ("deadband_type", "UInt32"), ("deadband_value", "Double")),
    "ReadValueId": (("node_id", "NodeId"), ("attribute_id", "UInt32"), ("index_range", "String"),
                    ("data_encoding", "QualifiedName")),
    "WriteValue": (("node_id", "NodeId"), ("attribute_id", "UInt32"), ("index_range", "String"), ("value", "DataValue")),
    "ViewDescription": (("view_id", "NodeId"), ("timestamp", "DateTime"), ("view_version", "UInt32")),
    "BrowseDescription": (("node_id", "NodeId"), ("browse_direction", "BrowseDirection"),
                          ("reference_type_id", "NodeId"), ("include_subtypes", "Boolean"),
                          ("node_class_mask", "UInt32"), ("result_mask", "UInt32")),
    "ReferenceDescription": (("reference_type_id", "NodeId"), ("is_forward", "Boolean"), ("node_id", "ExpandedNodeId"),
                             ("browse_name", "QualifiedName"), ("display_name", "LocalizedText"),
                             ("node_class", "NodeClass"), ("type_definition", "ExpandedNodeId")),
    "BrowseResult": (("status_code", "StatusCode"), ("continuation_point", "ByteString"),
                     ("references", "ReferenceDescription[]")),
    "RelativePathElement": (("reference_type_id", "NodeId"), ("is_inverse", "Boolean"), ("include_subtypes", "Boolean"),
                            ("target_name", "QualifiedName")),
    "RelativePath": (("elements", "RelativePathElement[]"),),
    "BrowsePath": (("starting_node", "NodeId"), ("relative_path", "RelativePath")),
    "BrowsePathTarget": (("target_id", "ExpandedNodeId"), ("remaining_path_index", "UInt32")),
    "BrowsePathResult": (("status_code", "StatusCode"), ("targets", "BrowsePathTarget[]")),
    "CallMethodRequest": (("object_id", "NodeId"), ("method_id", "NodeId"), ("input_arguments", "Variant[]")),
    "CallMethodResult": (("status_code", "StatusCode"), ("input_argument_results", "StatusCode[]"),
                         ("input_argument_diagnostic_infos", "DiagnosticInfo[]"), ("output_arguments", "Variant[]")),
    "MonitoringParameters": (("client_handle", "UInt32"), ("sampling_interval", "Double"), ("filter", "ExtensionObject"),
                             ("queue_size", "UInt32"), ("discard_oldest", "Boolean")),
    "MonitoredItemCreateRequest": (("item_to_monitor", "ReadValueId"), ("monitoring_mode", "MonitoringMode"),
                                   ("requested_parameters", "MonitoringParameters")),
    "MonitoredItemCreateResult": (("status_code", "StatusCode"), ("monitored_item_id", "UInt32"),
                                  ("revised_sampling_interval", "Double"), ("revised_queue_size", "UInt32"),
                                  ("filter_result", "ExtensionObject")),
    "SubscriptionAcknowledgement": (("subscription_id", "UInt32"), ("sequence_number", "UInt32")),
    "NotificationMessage": (("sequence_number", "UInt32"), ("publish_time", "DateTime"),
                            ("notification_data", "ExtensionObject[]")),
    # service bodies (after the type id)
    "OpenSecureChannelRequest": (("request_header", "RequestHeader"), ("client_protocol_version", "UInt32"),
                                 ("request_type", "SecurityTokenRequestType"), ("security_mode", "MessageSecurityMode"),
                                 ("client_nonce", "ByteString"), ("requested_lifetime", "UInt32")),
    "OpenSecureChannelResponse": (("response_header", "ResponseHeader"), ("server_protocol_version", "UInt32"),
                                  ("security_token", "ChannelSecurityToken"), ("server_nonce", "ByteString")),
    "CloseSecureChannelRequest": (("request_header", "RequestHeader"),),
    "CloseSecureChannelResponse": (("response_header", "ResponseHeader"),),
    "ServiceFault": (("response_header", "ResponseHeader"),),
    "FindServersRequest": (("request_header", "RequestHeader"), ("endpoint_url", "String"), ("locale_ids", "String[]"),
                           ("server_uris", "String[]")),
    "FindServersResponse": (("response_header", "ResponseHeader"), ("servers", "ApplicationDescription[]")),
    "GetEndpointsRequest": (("request_header", "RequestHeader"), ("endpoint_url", "String"), ("locale_ids", "String[]"),
                            ("profile_uris", "String[]")),
    "GetEndpointsResponse": (("response_header", "ResponseHeader"), ("endpoints", "EndpointDescription[]")),
    "CreateSessionRequest": (("request_header", "RequestHeader"), ("client_description", "ApplicationDescription"),
                             ("server_uri", "String"), ("endpoint_url", "String"), ("session_name", "String"),
                             ("client_nonce", "ByteString"), ("client_certificate", "ByteString"),
                             ("requested_session_timeout", "Double"), ("max_response_message_size", "UInt32")),
    "CreateSessionResponse": (("response_header", "ResponseHeader"), ("session_id", "NodeId"),
                              ("authentication_token", "NodeId"), ("revised_session_timeout", "Double"),
                              ("server_nonce", "ByteString"), ("server_certificate", "ByteString"),
                              ("server_endpoints", "EndpointDescription[]"),
                              ("server_software_certificates", "SignedSoftwareCertificate[]"),
                              ("server_signature", "SignatureData"), ("max_request_message_size", "UInt32")),
    "ActivateSessionRequest": (("request_header", "RequestHeader"), ("client_signature", "SignatureData"),
                               ("client_software_certificates", "SignedSoftwareCertificate[]"),
                               ("locale_ids", "String[]"), ("user_identity_token", "ExtensionObject"),
                               ("user_token_signature", "SignatureData")),
    "ActivateSessionResponse": (("response_header", "ResponseHeader"), ("server_nonce", "ByteString"),
                                ("results", "StatusCode[]"), ("diagnostic_infos", "DiagnosticInfo[]")),
    "CloseSessionRequest": (("request_header", "RequestHeader"), ("delete_subscriptions", "Boolean")),
    "CloseSessionResponse": (("response_header", "ResponseHeader"),),
    "ReadRequest": (("request_header", "RequestHeader"), ("max_age", "Double"),
                    ("timestamps_to_return", "TimestampsToReturn"), ("nodes_to_read", "ReadValueId[]")),
    "ReadResponse": (("response_header", "ResponseHeader"), ("results", "DataValue[]"),
                     ("diagnostic_infos", "DiagnosticInfo[]")),
    "WriteRequest": (("request_header", "RequestHeader"), ("nodes_to_write", "WriteValue[]")),
    "WriteResponse": (("response_header", "ResponseHeader"), ("results", "StatusCode[]"),
                      ("diagnostic_infos", "DiagnosticInfo[]")),
    "BrowseRequest": (("request_header", "RequestHeader"), ("view", "ViewDescription"),
                      ("requested_max_references_per_node", "UInt32"), ("nodes_to_browse", "BrowseDescription[]")),
    "BrowseResponse": (("response_header", "ResponseHeader"), ("results", "BrowseResult[]"),
                       ("diagnostic_infos", "DiagnosticInfo[]")),
    "BrowseNextRequest": (("request_header", "RequestHeader"), ("release_continuation_points", "Boolean"),
                          ("continuation_points", "ByteString[]")),
    "BrowseNextResponse": (("response_header", "ResponseHeader"), ("results", "BrowseResult[]"),
                           ("diagnostic_infos", "DiagnosticInfo[]")),
    "TranslateBrowsePathsToNodeIdsRequest": (("request_header", "RequestHeader"), ("browse_paths", "BrowsePath[]")),
    "TranslateBrowsePathsToNodeIdsResponse": (("response_header", "ResponseHeader"), ("results", "BrowsePathResult[]"),
                                              ("diagnostic_infos", "DiagnosticInfo[]")),
    "CallRequest": (("request_header", "RequestHeader"), ("methods_to_call", "CallMethodRequest[]")),
    "CallResponse": (("response_header", "ResponseHeader"), ("results", "CallMethodResult[]"),
                     ("diagnostic_infos", "DiagnosticInfo[]")),
    "CreateSubscriptionRequest": (("request_header", "RequestHeader"), ("requested_publishing_interval", "Double"),
                                  ("requested_lifetime_count", "UInt32"), ("requested_max_keep_alive_count", "UInt32"),
                                  ("max_notifications_per_publish", "UInt32"), ("publishing_enabled", "Boolean"),
                                  ("priority", "Byte")),
    "CreateSubscriptionResponse": (("response_header", "ResponseHeader"), ("subscription_id", "UInt32"),
                                   ("revised_publishing_interval", "Double"), ("revised_lifetime_count", "UInt32"),
                                   ("revised_max_keep_alive_count", "UInt32")),
    "CreateMonitoredItemsRequest": (("request_header", "RequestHeader"), ("subscription_id", "UInt32"),
                                    ("timestamps_to_return", "TimestampsToReturn"),
                                    ("items_to_create", "MonitoredItemCreateRequest[]")),
    "CreateMonitoredItemsResponse": (("response_header", "ResponseHeader"), ("results", "MonitoredItemCreateResult[]"),
                                     ("diagnostic_infos", "DiagnosticInfo[]")),
    "PublishRequest": (("request_header", "RequestHeader"),
                       ("subscription_acknowledgements", "SubscriptionAcknowledgement[]")),
    "PublishResponse": (("response_header", "ResponseHeader"), ("subscription_id", "UInt32"),
                        ("available_sequence_numbers", "UInt32[]"), ("more_notifications", "Boolean"),
                        ("notification_message", "NotificationMessage"), ("results", "StatusCode[]"),
                        ("diagnostic_infos", "DiagnosticInfo[]")),
    "DeleteSubscriptionsRequest": (("request_header", "RequestHeader"), ("subscription_ids", "UInt32[]")),
    "DeleteSubscriptionsResponse": (("response_header", "ResponseHeader"), ("results", "StatusCode[]"),
                                    ("diagnostic_infos", "DiagnosticInfo[]")),
})  # fmt: skip

# Which ExtensionObject fields must hold which encodings (others may hold anything, e.g. headers).
EXTENSION_FIELDS: Mapping[str, frozenset[int]] = MappingProxyType({
    "user_identity_token": IDENTITY_TOKENS,
    "filter": MONITORING_FILTERS,
})

_FIXED: Mapping[str, struct.Struct] = MappingProxyType({
    "Boolean": struct.Struct("<B"), "SByte": struct.Struct("<b"), "Byte": struct.Struct("<B"),
    "Int16": struct.Struct("<h"), "UInt16": struct.Struct("<H"), "Int32": struct.Struct("<i"),
    "UInt32": struct.Struct("<I"), "Int64": struct.Struct("<q"), "UInt64": struct.Struct("<Q"),
    "Float": struct.Struct("<f"), "Double": struct.Struct("<d"), "DateTime": struct.Struct("<q"),
    "StatusCode": struct.Struct("<I"),
})  # fmt: skip


@dataclass(frozen=True)
class NodeId:
    """A decoded NodeId: `kind` is "numeric", "string", "guid" or "opaque"; `encoding` the byte."""

    namespace: int
    identifier: int | bytes
    kind: str = "numeric"
    encoding: int = 2

    @property
    def is_null(self) -> bool:
        return self.namespace == 0 and self.identifier in (0, b"")

    def __str__(self) -> str:
        prefix = f"ns={self.namespace};" if self.namespace else ""
        if self.kind == "numeric":
            return f"{prefix}i={self.identifier}"
        if self.kind == "string":
            return f"{prefix}s={bytes(self.identifier).decode('utf-8', 'replace')[:40]}"  # type: ignore[arg-type]
        return f"{prefix}{'g' if self.kind == 'guid' else 'b'}={bytes(self.identifier).hex()[:32]}"  # type: ignore[arg-type]


def encode_node_id(node: NodeId) -> bytes:
    """The most compact encoding of a NodeId (what a conforming client sends)."""
    ns, ident = node.namespace, node.identifier
    if node.kind == "numeric":
        assert isinstance(ident, int)
        if ns == 0 and ident <= 0xFF:
            return bytes([0, ident])
        if ns <= 0xFF and ident <= 0xFFFF:
            return bytes([1, ns]) + ident.to_bytes(2, "little")
        return b"\x02" + ns.to_bytes(2, "little") + ident.to_bytes(4, "little")
    assert isinstance(ident, bytes)
    if node.kind == "guid":
        return b"\x04" + ns.to_bytes(2, "little") + ident
    code = 3 if node.kind == "string" else 5
    return bytes([code]) + ns.to_bytes(2, "little") + len(ident).to_bytes(4, "little") + ident


def parse_node_id_text(text: str) -> NodeId:
    """'i=2259', 'ns=2;i=1001', 'ns=2;s=Setpoint', 'ns=1;g=<32 hex>', 'ns=1;b=<hex>' (OPC 10000-6 5.3.1.10).
    Raises ValueError with what is wrong."""
    ns = 0
    rest = text.strip()
    if rest.startswith("ns="):
        head, sep, rest = rest.partition(";")
        if not sep or not head[3:].isdigit() or int(head[3:]) > 0xFFFF:
            raise ValueError(f"'{text}': namespace must be ns=<0..65535>; followed by the identifier")
        ns = int(head[3:])
    kind, sep, ident = rest.partition("=")
    if not sep:
        raise ValueError(f"'{text}': expected i=, s=, g= or b= (e.g. ns=2;i=1001)")
    if kind == "i":
        if not ident.isdigit() or int(ident) > 0xFFFFFFFF:
            raise ValueError(f"'{text}': numeric identifier must be 0..4294967295")
        return NodeId(ns, int(ident), "numeric")
    if kind == "s":
        return NodeId(ns, ident.encode(), "string", 3)
    try:
        raw = bytes.fromhex(ident.replace("-", ""))
    except ValueError:
        raise ValueError(f"'{text}': {kind}= takes hexadecimal digits") from None
    if kind == "g":
        if len(raw) != 16:
            raise ValueError(f"'{text}': a GUID has 16 bytes")
        return NodeId(ns, raw, "guid", 4)
    if kind == "b":
        return NodeId(ns, raw, "opaque", 5)
    raise ValueError(f"'{text}': unknown identifier type '{kind}=' (use i=, s=, g= or b=)")


class Reader:
    """A cursor over OPC UA binary data that collects problems instead of trusting lengths.

    Fatal problems (data runs out, a length that cannot be walked past) raise DecodeError; the
    rest (enum values, reserved bits, extension objects of the wrong type) go to `problems`.
    """

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = offset
        self.end = len(data) if end is None else end
        self.problems: list[str] = []
        self.depth = 0
        self.deepest = 0

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining:
            raise DecodeError(f"{what} cut short: needs {size} bytes, {self.remaining} remain")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def fixed(self, kind: str, what: str) -> Any:
        packer = _FIXED[kind]
        if packer.size > self.remaining:
            raise DecodeError(f"{what} cut short: needs {packer.size} bytes, {self.remaining} remain")
        (value,) = packer.unpack_from(self.data, self.pos)
        self.pos += packer.size
        return value

    def length(self, what: str) -> int:
        """An Int32 length prefix: -1 is null, below that is an error."""
        n = self.fixed("Int32", what)
        if n < -1:
            raise DecodeError(f"{what} length={n} below -1")
        return n

    def string(self, what: str) -> bytes | None:
        n = self.length(what)
        if n == -1:
            return None
        if n > self.remaining:
            raise DecodeError(f"{what} length={n} but {self.remaining} bytes remain")
        return self.take(n, what)

    def node_id(self, what: str, expanded: bool = False) -> NodeId:
        encoding = self.fixed("Byte", what)
        flags, code = encoding & 0xC0, encoding & 0x3F
        if flags and not expanded:
            self.problems.append(f"{what} encoding=0x{encoding:02x} has ExpandedNodeId flags in a NodeId")
        if code == 0:
            node = NodeId(0, self.fixed("Byte", what), "numeric", 0)
        elif code == 1:
            node = NodeId(self.fixed("Byte", what), self.fixed("UInt16", what), "numeric", 1)
        elif code == 2:
            node = NodeId(self.fixed("UInt16", what), self.fixed("UInt32", what), "numeric", 2)
        elif code in (3, 5):
            ns = self.fixed("UInt16", what)
            raw = self.string(what)
            node = NodeId(ns, raw or b"", "string" if code == 3 else "opaque", code)
        elif code == 4:
            node = NodeId(self.fixed("UInt16", what), self.take(16, what), "guid", 4)
        else:
            raise DecodeError(f"{what} encoding=0x{encoding:02x} is not a NodeId encoding")
        if expanded:
            if flags & 0x80:
                self.string(f"{what} namespace uri")
            if flags & 0x40:
                self.fixed("UInt32", f"{what} server index")
        return node

    def value(self, kind: str, what: str) -> Any:
        """Decode one value of built-in, enum, structure or array type `kind`."""
        if kind.endswith("[]"):
            return self.array(kind[:-2], what)
        if kind in _FIXED:
            value = self.fixed(kind, what)
            if kind == "Boolean" and value > 1:
                self.problems.append(f"{what}={value} is not a Boolean (0 or 1)")
            return value
        if kind in ENUMS:
            value = self.fixed("Int32", what)
            if value not in ENUMS[kind]:
                self.problems.append(f"{what}={value} is not a defined {kind}")
            return value
        if kind in ("String", "ByteString", "XmlElement"):
            return self.string(what)
        if kind == "Guid":
            return self.take(16, what)
        if kind == "NodeId":
            return self.node_id(what)
        if kind == "ExpandedNodeId":
            return self.node_id(what, expanded=True)
        if kind == "QualifiedName":
            return (self.fixed("UInt16", what), self.string(what))
        if kind == "LocalizedText":
            mask = self.fixed("Byte", what)
            if mask & 0xFC:
                self.problems.append(f"{what} mask=0x{mask:02x} sets reserved bits")
            locale = self.string(f"{what} locale") if mask & 1 else None
            text = self.string(f"{what} text") if mask & 2 else None
            return (locale, text)
        return self._nested(kind, what)

    def _nested(self, kind: str, what: str) -> Any:
        self.depth += 1
        self.deepest = max(self.deepest, self.depth)
        try:
            if self.depth > MAX_NESTING:
                raise DecodeError(f"{what} nesting depth={self.depth} above the decoder limit {MAX_NESTING}")
            if kind == "Variant":
                return self.variant(what)
            if kind == "DataValue":
                return self.data_value(what)
            if kind == "DiagnosticInfo":
                return self.diagnostic_info(what)
            if kind == "ExtensionObject":
                return self.extension_object(what)
            fields = STRUCTURES.get(kind)
            if fields is None:
                raise DecodeError(f"{what}: no schema for {kind}")
            return {name: self.value(sub, name) for name, sub in fields}
        finally:
            self.depth -= 1

    def array(self, kind: str, what: str) -> list[Any] | None:
        n = self.length(what)
        if n == -1:
            return None
        # Every element takes at least one byte: a count above the bytes left cannot be true.
        if n > self.remaining or n > MAX_ARRAY:
            raise DecodeError(f"{what} length={n} but {self.remaining} bytes remain")
        return [self.value(kind, f"{what}[{i}]" if i < 3 else what) for i in range(n)]

    def variant(self, what: str) -> Any:
        mask = self.fixed("Byte", what)
        type_id = mask & 0x3F
        if type_id == 0:
            if mask & 0xC0:
                self.problems.append(f"{what} mask=0x{mask:02x}: array bits on a null Variant")
            return None
        kind = BUILTIN_TYPES.get(type_id)
        if kind is None:
            raise DecodeError(f"{what} type={type_id} is not a built-in type")
        if not mask & 0x80:
            if mask & 0x40:
                self.problems.append(f"{what} mask=0x{mask:02x}: array dimensions on a scalar")
            if kind == "Variant":
                self.problems.append(f"{what} type=24: a Variant may not hold a scalar Variant")
            return (type_id, self.value(kind, what))
        values = self.array(kind, what)
        if mask & 0x40:
            dims = self.array("Int32", f"{what} dimensions")
            count = 1
            for d in dims or []:
                if d < 0:
                    self.problems.append(f"{what} dimension={d} below 0")
                count *= max(d, 0)
            if dims is not None and count != len(values or []):
                self.problems.append(f"{what} dimensions={count} elements but {len(values or [])} follow")
        return (type_id, values)

    def data_value(self, what: str) -> dict[str, Any]:
        mask = self.fixed("Byte", what)
        if mask & 0xC0:
            self.problems.append(f"{what} mask=0x{mask:02x} sets reserved bits")
        out: dict[str, Any] = {}
        if mask & 0x01:
            out["value"] = self.value("Variant", f"{what} value")
        if mask & 0x02:
            out["status"] = self.fixed("StatusCode", f"{what} status")
        if mask & 0x04:
            out["source_timestamp"] = self.fixed("DateTime", what)
        if mask & 0x10:
            out["source_picoseconds"] = self.fixed("UInt16", what)
        if mask & 0x08:
            out["server_timestamp"] = self.fixed("DateTime", what)
        if mask & 0x20:
            out["server_picoseconds"] = self.fixed("UInt16", what)
        return out

    def diagnostic_info(self, what: str) -> dict[str, Any]:
        mask = self.fixed("Byte", what)
        if mask & 0x80:
            self.problems.append(f"{what} mask=0x{mask:02x} sets the reserved bit")
        out: dict[str, Any] = {}
        for bit, name in ((0x01, "symbolic_id"), (0x02, "namespace_uri"), (0x08, "locale"), (0x04, "localized_text")):
            if mask & bit:
                out[name] = self.fixed("Int32", what)
        if mask & 0x10:
            out["additional_info"] = self.string(what)
        if mask & 0x20:
            out["inner_status_code"] = self.fixed("StatusCode", what)
        if mask & 0x40:
            out["inner"] = self.value("DiagnosticInfo", what)
        return out

    def extension_object(self, what: str) -> dict[str, Any]:
        type_id = self.node_id(f"{what} type_id")
        encoding = self.fixed("Byte", f"{what} encoding")
        out: dict[str, Any] = {"type_id": type_id, "encoding": encoding}
        if encoding == 0:
            return out
        if encoding not in (1, 2):
            raise DecodeError(f"{what} encoding={encoding} is not 0, 1 or 2")
        n = self.length(f"{what} body")
        if n > self.remaining:
            raise DecodeError(f"{what} body length={n} but {self.remaining} bytes remain")
        start = self.pos
        body_end = start + max(n, 0)
        name = EXTENSION_TYPES.get(type_id.identifier) if type_id.namespace == 0 and type_id.kind == "numeric" else None
        if encoding == 1 and name in STRUCTURES:
            inner = Reader(self.data, start, body_end)
            inner.depth = self.depth
            try:
                out["body"] = inner.value(name, f"{what} {name}")
                if inner.remaining:
                    self.problems.append(f"{what} {name} body length={n} but {inner.remaining} bytes are left over")
            except DecodeError as exc:
                self.problems.append(str(exc))
            self.problems += inner.problems
            self.deepest = max(self.deepest, inner.deepest)
        out["name"] = name
        self.pos = body_end
        return out


def decode_body(kind: str, data: bytes, offset: int = 0, end: int | None = None) -> tuple[dict[str, Any], list[str], int]:
    """Decode structure `kind` from `data`: (values, problems, end offset). Raises DecodeError
    when the bytes cannot be walked to the end of the structure."""
    reader = Reader(data, offset, end)
    values = reader.value(kind, kind)
    return values, reader.problems, reader.pos


def operation_statuses(name: str, body: Mapping[str, Any]) -> list[int]:
    """The per-operation status codes of a decoded response (results of Read, Write, Browse...)."""
    out: list[int] = []
    results = body.get("results")
    if not isinstance(results, list):
        return out
    for item in results:
        if isinstance(item, int):
            out.append(item)
        elif isinstance(item, dict):
            if "status_code" in item:
                out.append(item["status_code"])
            elif name == "ReadResponse" and "status" in item:
                out.append(item["status"])
    return out

