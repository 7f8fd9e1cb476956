"""Captures made by the tests themselves: a recording relay on loopback and a pcap writer.

`Recorder` stands between a real client and a real server on 127.0.0.1 and keeps every chunk
each side sent, with its time, per connection: the exchange is the servers' own. `write_capture`
turns those chunks into a pcap or pcapng file with dpkt (Ethernet, IPv4, TCP with a handshake,
sequence and acknowledgement numbers, FIN at the end), optionally with the segment faults real
captures hold: a retransmitted segment, a message split into two segments that arrive in reverse
order, and two segments whose bytes overlap.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt

HOST = "127.0.0.1"
MSS = 1460


@dataclass
class Connection:
    chunks: list[tuple[float, bool, bytes]] = field(default_factory=list)  # (time, from client, data)


class Recorder:
    """A TCP relay on 127.0.0.1 to `upstream`, recording what each side sends (bounded in time)."""

    def __init__(self, upstream_port: int, timeout: float = 10.0) -> None:
        self.upstream = (HOST, upstream_port)
        self.timeout = timeout
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            server = socket.create_connection(self.upstream, timeout=self.timeout)
            connection = Connection()
            with self._lock:
                self.connections.append(connection)
            for src, dst, from_client in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, from_client, connection), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool, connection: Connection) -> None:
        src.settimeout(0.2)
        deadline = time.monotonic() + self.timeout
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                with self._lock:
                    connection.chunks.append((time.time(), from_client, data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> list[Connection]:
        time.sleep(0.1)  # the last reply is relayed before the pumps stop
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self._listener.close()
        return [c for c in self.connections if c.chunks]


def _ip(a: str) -> bytes:
    return socket.inet_aton(a)


def _packet(src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags, win=65535, data=payload)
    ip = dpkt.ip.IP(src=_ip(src[0]), dst=_ip(dst[0]), p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02",
                                 type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    return bytes(eth)


@dataclass
class Faults:
    """Segment faults to write, by the index of the chunk (in the connection) they apply to."""

    retransmit: set[int] = field(default_factory=set)  # the chunk's segment sent twice
    reorder: set[int] = field(default_factory=set)  # the chunk split in two, second half first
    overlap: set[int] = field(default_factory=set)  # the chunk split in two segments sharing 2 bytes


def connection_packets(connection: Connection, client: tuple[str, int], server: tuple[str, int], isn: int = 1000,
                       faults: Faults | None = None) -> list[tuple[float, bytes]]:
    """(time, Ethernet frame) of one TCP connection: handshake, the chunks, FIN both ways."""
    faults = faults or Faults()
    t0 = connection.chunks[0][0] - 0.001
    seq = {True: isn, False: isn * 7 + 12345}
    out: list[tuple[float, bytes]] = [
        (t0, _packet(client, server, seq[True], 0, dpkt.tcp.TH_SYN)),
        (t0 + 0.0001, _packet(server, client, seq[False], seq[True] + 1, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)),
        (t0 + 0.0002, _packet(client, server, seq[True] + 1, seq[False] + 1, dpkt.tcp.TH_ACK)),
    ]
    seq = {True: seq[True] + 1, False: seq[False] + 1}
    ts = t0 + 0.0002
    for i, (when, from_client, data) in enumerate(connection.chunks):
        src, dst = (client, server) if from_client else (server, client)
        ts = max(ts + 0.00001, when)
        flags = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH
        for at in range(0, len(data), MSS):
            part = data[at : at + MSS]
            s, a = seq[from_client], seq[not from_client]
            if i in faults.reorder and len(part) >= 2:
                half = len(part) // 2
                out.append((ts, _packet(src, dst, s + half, a, flags, part[half:])))
                out.append((ts + 0.00001, _packet(src, dst, s, a, flags, part[:half])))
            elif i in faults.overlap and len(part) >= 4:
                half = len(part) // 2
                out.append((ts, _packet(src, dst, s, a, flags, part[: half + 2])))
                out.append((ts + 0.00001, _packet(src, dst, s + half, a, flags, part[half:])))
            else:
                out.append((ts, _packet(src, dst, s, a, flags, part)))
                if i in faults.retransmit:
                    out.append((ts + 0.00002, _packet(src, dst, s, a, flags, part)))
            ts += 0.00003
            seq[from_client] += len(part)
    end = ts + 0.001
    out.append((end, _packet(client, server, seq[True], seq[False], dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)))
    out.append((end + 0.0001, _packet(server, client, seq[False], seq[True] + 1, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)))
    out.append((end + 0.0002, _packet(client, server, seq[True] + 1, seq[False] + 1, dpkt.tcp.TH_ACK)))
    return out


def write_capture(path: Path, packets: list[tuple[float, bytes]], pcapng: bool = False) -> Path:
    """Write Ethernet frames as pcap (or pcapng) in time order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        writer = dpkt.pcapng.Writer(fh) if pcapng else dpkt.pcap.Writer(fh)
        for ts, frame in sorted(packets, key=lambda p: p[0]):
            writer.writepkt(frame, ts=ts)
    return path


def record_capture(path: Path, connections: list[Connection], server: tuple[str, int], faults: dict[int, Faults] | None = None,
                   client_host: str = "10.0.0.5", pcapng: bool = False) -> Path:
    """The recorded connections as one capture: client `client_host`, server `server`."""
    packets: list[tuple[float, bytes]] = []
    for n, connection in enumerate(connections):
        packets += connection_packets(connection, (client_host, 40000 + n), server, 1000 + 100_000 * n,
                                      (faults or {}).get(n))
    return write_capture(path, packets, pcapng)


def drive(port: int, session: Any, frames: list[bytes], timeout: float = 2.0) -> list[bytes | None]:
    """A client on one TCP connection moving `frames` through a protocol session (its opening
    first), the way the engine's transport does; the reply to each frame, every wait bounded."""
    replies: list[bytes | None] = []
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for frame in [*session.opening(), *frames]:
            while session.next_reply() is not None:
                pass
            sock.sendall(session.prepare(frame))
            reply = None
            deadline = time.monotonic() + timeout
            for _ in range(1000):
                reply = session.next_reply()
                if reply is not None or time.monotonic() > deadline:
                    break
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = sock.recv(65536)
                except (socket.timeout, TimeoutError):
                    break
                if not data:
                    break
                session.feed(data)
                out = session.take_output()
                if out:
                    sock.sendall(out)
            replies.append(reply)
    return replies


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """One Ethernet/IPv4/UDP frame."""
    udp = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=_ip(src[0]), dst=_ip(dst[0]), p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02",
                                        type=dpkt.ethernet.ETH_TYPE_IP, data=ip))
