"""Which protocol a flow speaks: by the server's port first, then by parsing.

A candidate protocol must frame the client's bytes with its own framing (`split_messages`) and
recognise at least half of the requests it frames as declared request types or as its session's
own traffic (`from_capture`, `session_control`); on its own port, framing every byte is enough
(what it cannot read is listed as unparsed). The protocol registered for the server's port
is tried first, so a Modbus gateway on 502 is never taken for something else, and a service on a
non-standard port is still found by its content. What nothing recognises stays listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from otfuzz.capture.flows import Flow
from otfuzz.protocols import available, default_instance
from otfuzz.protocols.base import Protocol, Template


SAMPLE = 32
"""Requests of a flow a protocol tried by parsing must mostly recognise before the rest are read."""


@dataclass(frozen=True)
class Message:
    """One framed message of a flow: `request` from the client, else a reply from the server."""

    ts: float
    request: bool
    raw: bytes


@dataclass
class Recognised:
    """A flow's protocol and its messages, with what could not be read."""

    scheme: str
    protocol: Protocol
    requests: list[Message]
    replies: list[Message]
    templates: dict[bytes, Template | None] = field(default_factory=dict)  # raw request -> its template
    control: set[bytes] = field(default_factory=set)  # requests the session sends by itself
    unframed: dict[str, int] = field(default_factory=dict)  # direction -> bytes left that do not frame


@lru_cache(maxsize=None)
def protocols() -> dict[str, Protocol]:
    """One default instance of every available protocol, by scheme (read, never sent with)."""
    out: dict[str, Protocol] = {}
    for scheme in available():
        try:
            out[scheme] = default_instance(scheme)
        except Exception:  # noqa: BLE001 - a module that cannot build defaults cannot read captures
            continue
    return out


def known_ports() -> frozenset[int]:
    return frozenset(p.default_port for p in protocols().values())


def _frames(protocol: Protocol, flow: Flow, from_client: bool) -> tuple[list[Message], int]:
    """The messages of one direction and the bytes left over that do not frame."""
    if flow.transport == "udp":
        out, left = [], 0
        for ts, client, payload in flow.datagrams:
            if client != from_client:
                continue
            messages, rest = protocol.split_messages(payload)
            out += [Message(ts, from_client, m) for m in messages]
            left += len(rest)
        return out, left
    stream = flow.to_server if from_client else flow.to_client
    messages, rest = protocol.split_messages(stream.data)
    out, at = [], 0
    for m in messages:
        at += len(m)
        out.append(Message(stream.time_at(at), from_client, m))
    return out, len(rest)


def _try(scheme: str, protocol: Protocol, flow: Flow, by_port: bool = False) -> tuple[Recognised, int] | None:
    requests, left = _frames(protocol, flow, True)
    if not requests:
        return None
    templates: dict[bytes, Template | None] = {}
    control: set[bytes] = set()
    by_normal: dict[bytes, Template | None] = {}
    known = 0
    for n, m in enumerate(requests):
        if n == SAMPLE and not by_port and 2 * known < n:
            return None  # the first requests already say no: the rest need not be decoded
        if m.raw in control or templates.get(m.raw) is not None:
            known += 1
            continue
        if protocol.session_control(m.raw):
            control.add(m.raw)
            known += 1
            continue
        if m.raw not in templates:
            # requests that differ only in the counters the session sets are one request
            normal = protocol.normalise_request(m.raw)
            if normal not in by_normal:
                by_normal[normal] = protocol.from_capture(normal)
            templates[m.raw] = by_normal[normal]
        known += templates[m.raw] is not None
    # on its own port a protocol that frames every byte is the flow's, whatever it made of the
    # requests (those it cannot read are listed); elsewhere it must recognise half of them
    if 2 * known < len(requests) and not (by_port and not left):
        return None
    replies, reply_left = _frames(protocol, flow, False)
    found = Recognised(scheme, protocol, requests, replies, templates, control,
                       {k: v for k, v in (("requests", left), ("replies", reply_left)) if v})
    return found, known


def recognise(flow: Flow, candidates: Sequence[str] | None = None) -> Recognised | None:
    """The protocol of `flow` and its messages, or None when no supported protocol reads it."""
    every = protocols()
    names = list(candidates) if candidates is not None else list(every)
    by_port = [s for s in names if every[s].default_port == flow.server[1] and every[s].transport == flow.transport]
    for scheme in by_port:
        hit = _try(scheme, every[scheme], flow, by_port=True)
        if hit is not None:
            return hit[0]
    best: tuple[Recognised, int] | None = None
    for scheme in names:
        if scheme in by_port or every[scheme].transport != flow.transport:
            continue
        hit = _try(scheme, every[scheme], flow)
        if hit is not None and (best is None or hit[1] > best[1]):
            best = hit
    return best[0] if best else None
