"""Flows: TCP streams reassembled from their segments, UDP datagrams grouped by endpoint pair.

TCP reassembly places every segment by its sequence number relative to the stream's first byte
(the SYN's sequence number plus one, or the lowest seen when the capture starts mid-connection),
so retransmissions collapse onto the bytes already placed and out-of-order segments land where
they belong. Where segments overlap, the bytes that arrived first win (what most stacks deliver)
and a disagreement is counted. A stream stops at its first hole: bytes after a lost segment
cannot be framed reliably, so they are counted as unread rather than guessed at.

Each placed piece keeps its capture time, so a message's time is the time its last byte arrived:
requests and replies of one connection are then paired in the order they were really exchanged.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from otfuzz.capture.pcap import Packet

SEQ_MOD = 1 << 32
SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10


@dataclass
class StreamStats:
    retransmitted: int = 0  # segments whose bytes were all placed already
    out_of_order: int = 0  # segments that arrived before a segment that precedes them
    overlapping: int = 0  # segments that overlapped bytes already placed, in part
    conflicting: int = 0  # overlapping segments whose bytes disagreed with those placed
    unread: int = 0  # bytes after the first hole


class Stream:
    """One direction of a TCP connection, reassembled."""

    def __init__(self) -> None:
        self.isn: int | None = None
        self._segments: list[tuple[int, float, bytes]] = []  # (sequence number, time, payload), arrival order
        self.stats = StreamStats()
        self.data = b""
        self._pieces: list[tuple[int, int, float]] = []  # (start, end, time) of placed bytes, by start
        self._starts: list[int] = []

    def add(self, packet: Packet) -> None:
        if packet.flags & SYN:
            self.isn = packet.seq
        if packet.payload:
            seq = (packet.seq + 1) & (SEQ_MOD - 1) if packet.flags & SYN else packet.seq
            self._segments.append((seq, packet.ts, packet.payload))

    def assemble(self) -> None:
        """Place every segment; `data` is then the stream up to its first hole."""
        if not self._segments:
            return
        base = (self.isn + 1) % SEQ_MOD if self.isn is not None else self._segments[0][0]

        def rel(seq: int) -> int:
            offset = (seq - base) % SEQ_MOD
            return offset - SEQ_MOD if offset >= SEQ_MOD // 2 else offset

        if self.isn is None:  # mid-connection: the lowest sequence number seen starts the stream
            low = min(rel(s) for s, _, _ in self._segments)
            base = (base + low) % SEQ_MOD
        buf = bytearray()
        filled: list[list[int]] = []  # merged [start, end) intervals of placed bytes
        pieces: list[tuple[int, int, float]] = []
        highest = 0
        stats = self.stats
        for seq, ts, payload in self._segments:
            start = rel(seq)
            end = start + len(payload)
            if start < 0:
                continue  # before the stream's first byte (data before a SYN seen later)
            if start < highest and end <= highest and _covered(filled, start, end):
                stats.retransmitted += 1
                if bytes(buf[start:end]) != payload:
                    stats.conflicting += 1
                continue
            if start < highest:
                stats.out_of_order += int(not _overlaps(filled, start, end))
            if end > len(buf):
                buf.extend(b"\0" * (end - len(buf)))
            gaps = _gaps(filled, start, end)
            if gaps != [(start, end)]:
                stats.overlapping += 1
                for a, b in _complement(gaps, start, end):
                    if buf[a:b] != payload[a - start : b - start]:
                        stats.conflicting += 1
                        break
            for a, b in gaps:
                buf[a:b] = payload[a - start : b - start]
                pieces.append((a, b, ts))
            _merge(filled, start, end)
            highest = max(highest, end)
        contiguous = filled[0][1] if filled and filled[0][0] == 0 else 0
        stats.unread = sum(b - a for a, b in filled) - contiguous
        self.data = bytes(buf[:contiguous])
        pieces.sort()
        self._pieces = pieces
        self._starts = [p[0] for p in pieces]

    def time_at(self, end: int) -> float:
        """When the byte before offset `end` (a message's last byte) arrived."""
        at = bisect.bisect_right(self._starts, end - 1) - 1
        return self._pieces[max(at, 0)][2] if self._pieces else 0.0


def _overlaps(filled: list[list[int]], start: int, end: int) -> bool:
    return any(a < end and start < b for a, b in filled)


def _covered(filled: list[list[int]], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in filled)


def _gaps(filled: list[list[int]], start: int, end: int) -> list[tuple[int, int]]:
    """Parts of [start, end) no interval covers yet."""
    out: list[tuple[int, int]] = []
    at = start
    for a, b in filled:
        if b <= at:
            continue
        if a >= end:
            break
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < end:
        out.append((at, end))
    return out


def _complement(gaps: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out, at = [], start
    for a, b in gaps:
        if a > at:
            out.append((at, a))
        at = b
    if at < end:
        out.append((at, end))
    return out


def _merge(filled: list[list[int]], start: int, end: int) -> None:
    if filled and filled[-1][0] <= start <= filled[-1][1]:  # the common case: appended in order
        filled[-1][1] = max(filled[-1][1], end)
        if len(filled) == 1 or filled[-2][1] < filled[-1][0]:
            return
    filled.append([start, end])
    filled.sort()
    merged: list[list[int]] = []
    for a, b in filled:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    filled[:] = merged


@dataclass
class Flow:
    """One TCP connection or one UDP client-server pair."""

    transport: str
    client: tuple[str, int]
    server: tuple[str, int]
    first_packet: int
    first_ts: float
    last_ts: float = 0.0
    packets: int = 0
    handshake: bool = False  # the SYN was captured, so client and server are known for sure
    to_server: Stream = field(default_factory=Stream)
    to_client: Stream = field(default_factory=Stream)
    datagrams: list[tuple[float, bool, bytes]] = field(default_factory=list)  # (time, from client, payload)

    def bytes_seen(self) -> int:
        if self.transport == "udp":
            return sum(len(p) for _, _, p in self.datagrams)
        return len(self.to_server.data) + len(self.to_client.data)


def _endpoint(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def endpoint_text(address: tuple[str, int]) -> str:
    """HOST:PORT, IPv6 hosts in brackets."""
    return _endpoint(address)


def _server_side(a: tuple[str, int], b: tuple[str, int], known_ports: frozenset[int]) -> tuple[tuple[str, int], tuple[str, int]]:
    """(client, server) of a pair whose handshake was not captured: a known protocol port is
    the server's; else the lower port (servers listen on fixed, low ports; clients get high ones)."""
    if (b[1] in known_ports) != (a[1] in known_ports):
        return (a, b) if b[1] in known_ports else (b, a)
    return (a, b) if b[1] <= a[1] else (b, a)


def build_flows(packets: Iterable[Packet], known_ports: frozenset[int] = frozenset()) -> list[Flow]:
    """Group packets into flows and reassemble every TCP stream; flows in order of first packet."""
    flows: list[Flow] = []
    open_tcp: dict[tuple[tuple[str, int], tuple[str, int]], Flow] = {}
    udp: dict[tuple[tuple[str, int], tuple[str, int]], Flow] = {}
    for packet in packets:
        key = (packet.src, packet.dst) if packet.src <= packet.dst else (packet.dst, packet.src)
        if packet.transport == "udp":
            flow = udp.get(key)
            if flow is None:
                client, server = _server_side(packet.src, packet.dst, known_ports)
                flow = udp[key] = Flow("udp", client, server, packet.index, packet.ts)
                flows.append(flow)
            flow.datagrams.append((packet.ts, packet.src == flow.client, packet.payload))
        else:
            flow = open_tcp.get(key)
            opening = packet.flags & SYN and not packet.flags & ACK
            if opening and flow is not None and (flow.to_server.isn not in (None, packet.seq) or flow.packets > 3):
                flow = None  # the same ports again: a new connection
            if flow is None:
                if opening:
                    client, server = packet.src, packet.dst
                else:
                    client, server = _server_side(packet.src, packet.dst, known_ports)
                flow = open_tcp[key] = Flow("tcp", client, server, packet.index, packet.ts, handshake=bool(opening))
                flows.append(flow)
            (flow.to_server if packet.src == flow.client else flow.to_client).add(packet)
        flow.packets += 1
        flow.last_ts = packet.ts
    for flow in flows:
        if flow.transport == "tcp":
            flow.to_server.assemble()
            flow.to_client.assemble()
    return flows
