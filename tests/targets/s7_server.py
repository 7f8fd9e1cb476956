"""A python-snap7 3.3 S7 server (its pure-Python `snap7.server.Server`) on 127.0.0.1 with known
memory, for integration tests.

Third-party code is the point: the S7comm module is proven against an implementation we did not
write. Areas and their contents (`AREAS` below, importable by tests):

    DB1  256 bytes, byte i = i                  (the DB the templates and the probe address)
    DB2  1024 bytes, byte i = (7 * i) mod 256   (larger than the 480-byte PDU)
    MK0  64 bytes 0x5A, PE0 / PA0 16 bytes, CT0 / TM0 32 bytes (counters and timers)

No other DB exists. The server binds 127.0.0.1 itself (its CLI binds 0.0.0.0). python-snap7 sets
SO_REUSEPORT, so a second server on a port already in use would start silently and share the
connections: this script checks that it is the only listener on its port and exits with status 3
otherwise (`start` then retries on another port). Prints READY once listening and serves until
killed.

    python tests/targets/s7_server.py --port 10102
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

DB1 = bytes(range(256))
DB2 = bytes((7 * i) & 0xFF for i in range(1024))
AREAS: dict[tuple[str, int], bytes] = {
    ("DB", 1): DB1,
    ("DB", 2): DB2,
    ("MK", 0): b"\x5a" * 64,
    ("PE", 0): bytes(range(0xA0, 0xB0)),
    ("PA", 0): bytes(16),
    ("CT", 0): bytes(32),
    ("TM", 0): bytes(32),
}
PORT_SHARED = 3


def other_listeners(port: int) -> list[int]:
    """PIDs other than this one listening on `port` (SO_REUSEPORT lets them coexist silently)."""
    import psutil

    mine = os.getpid()
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid != mine:
            out.append(conn.pid or -1)
    return out


def serve(port: int) -> int:
    from snap7.server import Server
    from snap7.type import SrvArea

    server = Server(log=False)
    buffers = []
    for (area, number), data in AREAS.items():
        buffer = bytearray(data)
        buffers.append(buffer)  # the server keeps a reference; so do we
        server.register_area(getattr(SrvArea, area), number, buffer)
    server.start_to("127.0.0.1", port)
    shared = other_listeners(port)
    if shared:
        print(f"port {port} is also listened on by pid {shared} (SO_REUSEPORT): not serving", file=sys.stderr, flush=True)
        server.stop()
        return PORT_SHARED
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("READY", flush=True)
    stop.wait()
    server.stop()
    return 0


def start(attempts: int = 3) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server on a free port that is really its own; returns (process, port)."""
    from targets.servers import free_port, start_server

    error: Exception | None = None
    for _ in range(attempts):
        port = free_port()
        try:
            return start_server([sys.executable, str(Path(__file__).resolve()), "--port", str(port)], port), port
        except RuntimeError as exc:  # the port was taken between free_port() and the bind
            error = exc
    raise RuntimeError(f"no S7 server started in {attempts} attempts: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    sys.exit(serve(args.port))


if __name__ == "__main__":
    main()
