"""Start and stop test servers as subprocesses on loopback, and find free ports for them.

Servers print READY once listening; `start_server` waits for that line and a successful TCP
connect (for a UDP server, which has nothing to connect to, the line alone: it prints it once its
socket is bound), and raises with the tail of the server's stderr if it dies first, so a broken target
fails the test with its own error message rather than a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TARGETS = Path(__file__).resolve().parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A TCP (or, with SOCK_DGRAM, UDP) port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def script(name: str) -> list[str]:
    """argv prefix that runs a script in tests/targets with the test interpreter."""
    return [sys.executable, str(TARGETS / name)]


def start_server(argv: Sequence[str], port: int, ready_timeout: float = 15, tcp: bool = True) -> subprocess.Popen[bytes]:
    """Start `argv` and wait until it printed READY and (unless `tcp` is False) accepts on `port`.

    stdout and stderr go to temporary files (a full pipe would block the server); read the
    stderr with `server_stderr` and always end with `stop_server`, which deletes them.
    """
    out_fd, out_path = tempfile.mkstemp(prefix="otfuzz-server-", suffix=".out")
    err_fd, err_path = tempfile.mkstemp(prefix="otfuzz-server-", suffix=".err")
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd)
    finally:
        os.close(out_fd)
        os.close(err_fd)
    proc.otfuzz_files = (out_path, err_path)  # type: ignore[attr-defined]
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server_stderr(proc)[-2000:]
            stop_server(proc)
            raise RuntimeError(f"server {' '.join(argv)} exited with {proc.returncode} before READY:\n{tail}")
        if b"READY" in Path(out_path).read_bytes() and (not tcp or _accepts(port)):
            return proc
        time.sleep(0.02)
    tail = server_stderr(proc)[-2000:]
    stop_server(proc)
    raise RuntimeError(f"server {' '.join(argv)} not ready on port {port} within {ready_timeout} s:\n{tail}")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def server_stderr(proc: subprocess.Popen[bytes]) -> str:
    """Everything the server wrote to stderr so far."""
    files = getattr(proc, "otfuzz_files", None)
    if not files or not os.path.exists(files[1]):
        return ""
    return Path(files[1]).read_text(errors="replace")


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """Terminate the server (kill if it ignores SIGTERM), reap it and delete its output files."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for path in getattr(proc, "otfuzz_files", ()):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


OTFUZZ = [sys.executable, "-c", "import sys; from otfuzz.cli import main; sys.exit(main())"]


def interrupt_when(argv: Sequence[str], run: Path, ready: Callable[[Any], bool], timeout: float = 60) -> None:
    """Run `otfuzz ARGV` in a child and Ctrl-C it once `ready(store)` holds for the run's evidence
    store (or after `timeout`); asserts it stops as an interrupted run (exit 130)."""
    from otfuzz.errors import OtfuzzError
    from otfuzz.store.evidence import EvidenceStore

    child = subprocess.Popen([*OTFUZZ, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if (run / "evidence.sqlite").exists():
                try:
                    store = EvidenceStore.open(run)
                except OtfuzzError:  # created, metadata not yet written
                    continue
                try:
                    if ready(store):
                        break
                finally:
                    store.close()
        child.send_signal(signal.SIGINT)
        assert child.wait(30) == 130
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
