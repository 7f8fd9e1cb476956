"""A boofuzz 0.4.2 Modbus/TCP definition, run by bench/peers.py inside its throwaway virtual
environment (boofuzz is GPL-2: a benchmark-only peer, never imported by otfuzz).

The definition is the plain one a boofuzz user writes: an MBAP header whose length is a `Size`
of the PDU, then a PDU per public function code with its fields as `Word`s and `Byte`s. The
session keeps boofuzz's defaults (a new connection per case, its text and SQLite loggers,
`receive_data_after_fuzz=False`); only the web interface is off, since a benchmark listens on
nothing. `--read-replies` turns on `receive_data_after_fuzz`, so boofuzz waits for an answer to
every case (its default receive timeout: 5 s). When the definition is exhausted before the time
is up, fuzzing starts over. After `--seconds` a timer writes the count and ends the process.

    boofuzz-venv/bin/python bench/peers_boofuzz.py --port 15020 --seconds 30 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from boofuzz import Block, Byte, Request, Session, Size, Target, TCPSocketConnection, Word


def mbap(name: str, pdu: tuple[object, ...]) -> Request:
    """An MBAP header (transaction, protocol, length of what follows, unit) before `pdu`."""
    return Request(name, children=(
        Word("transaction", 1, endian=">"),
        Word("protocol", 0, endian=">"),
        Size("length", block_name="body", length=2, endian=">"),
        Block("body", children=(Byte("unit", 1), *pdu)),
    ))


def requests() -> list[Request]:
    read = [(1, "read_coils"), (2, "read_discrete_inputs"), (3, "read_holding_registers"), (4, "read_input_registers")]
    out = [mbap(name, (Byte("function", code), Word("address", 0, endian=">"), Word("quantity", 1, endian=">")))
           for code, name in read]
    out.append(mbap("write_single_coil", (Byte("function", 5), Word("address", 0, endian=">"), Word("value", 0xFF00, endian=">"))))
    out.append(mbap("write_single_register", (Byte("function", 6), Word("address", 0, endian=">"), Word("value", 1, endian=">"))))
    out.append(mbap("write_multiple_registers", (
        Byte("function", 16), Word("address", 0, endian=">"), Word("quantity", 1, endian=">"), Byte("byte_count", 2),
        Word("value", 1, endian=">"))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True, help="JSON file for the result")
    parser.add_argument("--read-replies", action="store_true", help="wait for an answer after every fuzzed frame")
    args = parser.parse_args()
    session = Session(target=Target(connection=TCPSocketConnection("127.0.0.1", args.port)), web_port=None,
                      receive_data_after_fuzz=args.read_replies)
    for request in requests():
        session.connect(request)
    start = time.perf_counter()
    done = [0]

    def finish() -> None:
        elapsed = time.perf_counter() - start
        cases = done[0] + session.num_cases_actually_fuzzed
        with open(args.out, "w") as out:
            json.dump({"cases": cases, "seconds": elapsed, "per_s": cases / elapsed, "read_replies": args.read_replies}, out)
        os._exit(0)  # boofuzz has no way to stop a running fuzz() from outside

    threading.Timer(args.seconds, finish).start()
    for _ in range(1000):  # bounded: the timer ends the process long before
        session.fuzz()
        done[0] += session.num_cases_actually_fuzzed
        session.num_cases_actually_fuzzed = 0
    finish()


if __name__ == "__main__":
    main()
