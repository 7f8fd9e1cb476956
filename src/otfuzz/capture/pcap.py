"""Reading capture files: pcap and pcapng through dpkt, down to TCP segments and UDP datagrams.

dpkt parses the file formats and the headers; this module only picks the reader by the file's
magic number, unwraps the link layers plants' captures come with (Ethernet with VLAN tags,
Linux cooked, BSD loopback, raw IP) and turns every problem a user can cause (a truncated file,
a file that is no capture, a link type we cannot unwrap) into one CaptureError naming it.
Packets that are not TCP or UDP over IP are counted, never silently lost.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import dpkt

from otfuzz.errors import OtfuzzError

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

LINK_TYPES = {0: "null (BSD loopback)", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP", 108: "OpenBSD loopback",
              113: "Linux cooked (SLL)", 228: "raw IPv4", 229: "raw IPv6", 276: "Linux cooked v2 (SLL2)"}
"""Link types this reader unwraps, by their number in the pcap header."""


class CaptureError(OtfuzzError):
    """A capture file that cannot be read as asked: the message names the file and the problem."""


@dataclass(frozen=True)
class Packet:
    """One TCP segment or UDP datagram, in the order the capture holds it."""

    index: int  # position in the capture, from 1 (as Wireshark numbers frames)
    ts: float
    transport: str  # "tcp" or "udp"
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    seq: int = 0
    flags: int = 0  # TCP flags (dpkt.tcp.TH_*)


@dataclass
class ReadStats:
    """What the reader saw besides the packets it returned."""

    packets: int = 0
    link_type: int = -1
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> packets not returned


def _ip_of(link: int, buf: bytes) -> Any:
    """The IP or IPv6 packet inside one link-layer frame, or None."""
    if link == 1:
        return dpkt.ethernet.Ethernet(buf).data
    if link in (0, 108):
        return dpkt.loopback.Loopback(buf).data
    if link == 113:
        return dpkt.sll.SLL(buf).data
    if link == 276:
        return dpkt.sll2.SLL2(buf).data
    if not buf:
        return None
    version = buf[0] >> 4
    if version == 4:
        return dpkt.ip.IP(buf)
    if version == 6:
        return dpkt.ip6.IP6(buf)
    return None


def _address(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def _reader(path: Path, fh: BinaryIO) -> Any:
    magic = fh.read(4)
    fh.seek(0)
    try:
        if magic in PCAP_MAGICS:
            return dpkt.pcap.Reader(fh)
        if magic == PCAPNG_MAGIC:
            return dpkt.pcapng.Reader(fh)
    except (ValueError, dpkt.UnpackError, EOFError) as exc:
        raise CaptureError(f"capture {path}: truncated or damaged file header ({exc})") from None
    if len(magic) < 4:
        raise CaptureError(f"capture {path}: truncated: {len(magic)} bytes, too short for a pcap or pcapng header")
    raise CaptureError(f"capture {path}: not a pcap or pcapng file (magic number {magic.hex()}; "
                       "save it from Wireshark or tcpdump as pcap or pcapng)")


def read_packets(path: Path, stats: ReadStats | None = None) -> Iterator[Packet]:
    """Every TCP segment and UDP datagram of the capture at `path`, in file order.

    Raises CaptureError for a file that is no capture, is truncated or has a link type this
    reader cannot unwrap. `stats` (if given) counts packets and what was skipped, and why.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc.strerror}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        reader = _reader(path, fh)
        link = reader.datalink()
        stats.link_type = link
        if link not in LINK_TYPES:
            raise CaptureError(f"capture {path}: unsupported link type {link} (supported: "
                               + ", ".join(f"{n} {name}" for n, name in sorted(LINK_TYPES.items())) + ")")
        snaplen = int(getattr(reader, "snaplen", 0) or 0)
        last: tuple[int, Any] | None = None
        try:
            for ts, buf in reader:
                stats.packets += 1
                if last is not None:
                    yield from _packet(*last, stats)
                last = (stats.packets, (ts, buf, link, snaplen))
        except (dpkt.UnpackError, ValueError, EOFError) as exc:
            raise CaptureError(f"capture {path}: truncated or damaged after {stats.packets} packets ({exc})") from None
        if last is not None:
            index, (ts, buf, link, snaplen) = last
            if _cut_short(link, buf, snaplen):
                raise CaptureError(f"capture {path}: truncated: packet {index} ends before its IP length (file cut short?)")
            yield from _packet(*last, stats)
        if magic_is_pcapng(reader) and size % 4:
            raise CaptureError(f"capture {path}: truncated: {size} bytes is no whole number of pcapng blocks")
        if stats.packets == 0:
            raise CaptureError(f"capture {path}: holds no packets")


def magic_is_pcapng(reader: Any) -> bool:
    return isinstance(reader, dpkt.pcapng.Reader)


def _cut_short(link: int, buf: bytes, snaplen: int) -> bool:
    """True when the last record holds less than its IP header says and the snap length does
    not explain it: the file ends inside the record."""
    if snaplen and len(buf) >= snaplen:
        return False
    try:
        ip = _ip_of(link, buf)
    except (dpkt.UnpackError, ValueError):
        return True
    if isinstance(ip, dpkt.ip.IP):
        return ip.hl * 4 + len(bytes(ip.data)) < ip.len
    if isinstance(ip, dpkt.ip6.IP6):
        return len(bytes(ip.data)) < ip.plen
    return False


def _packet(index: int, record: tuple[float, bytes, int, int], stats: ReadStats) -> Iterator[Packet]:
    ts, buf, link, _ = record
    try:
        ip = _ip_of(link, buf)
    except (dpkt.UnpackError, ValueError):
        stats.skipped["undecodable link or IP header"] += 1
        return
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        stats.skipped["not IP"] += 1
        return
    if isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset):
        stats.skipped["IP fragment (not reassembled)"] += 1
        return
    segment = ip.data
    src, dst = _address(ip.src), _address(ip.dst)
    if isinstance(segment, dpkt.tcp.TCP):
        yield Packet(index, ts, "tcp", (src, segment.sport), (dst, segment.dport), bytes(segment.data), segment.seq, segment.flags)
    elif isinstance(segment, dpkt.udp.UDP):
        yield Packet(index, ts, "udp", (src, segment.sport), (dst, segment.dport), bytes(segment.data))
    else:
        stats.skipped["neither TCP nor UDP"] += 1
