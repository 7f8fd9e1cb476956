"""Debian's mosquitto 2.0.x broker on 127.0.0.1 for the MQTT tests.

Each broker gets a generated configuration file (one listener on loopback on a free port,
anonymous clients, no persistence, log to stderr), is started as a subprocess and stopped by
PID. The tests never rely on a system broker: the Debian package does not start one on these
machines, and every broker here has its own port. `user root` keeps mosquitto from dropping
privileges when the tests run as root, so it can still read files under the test's tmp folder.

    python tests/targets/mosquitto_broker.py --port 1883     # prints the configuration it would use
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def broker_config(port: int, extra: Sequence[str] = ()) -> str:
    lines = [f"listener {port} {HOST}", "allow_anonymous true", "persistence false", "log_dest stderr",
             "log_type error", "log_type warning", "user root", *extra]
    return "\n".join(lines) + "\n"


def write_config(path: Path, port: int, extra: Sequence[str] = ()) -> Path:
    path.write_text(broker_config(port, extra))
    return path


def command(config: Path) -> list[str]:
    """argv that starts the broker with `config` (what --target-cmd runs)."""
    return [MOSQUITTO, "-c", str(config)]


def start_broker(port: int, extra: Sequence[str] = (), ready_timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start mosquitto on `port` and wait until it accepts connections; stop it with
    targets.servers.stop_server, which also deletes its configuration and log files."""
    fd, config = tempfile.mkstemp(prefix="otfuzz-mosquitto-", suffix=".conf")
    os.close(fd)
    write_config(Path(config), port, extra)
    err_fd, err_path = tempfile.mkstemp(prefix="otfuzz-mosquitto-", suffix=".err")
    try:
        proc = subprocess.Popen(command(Path(config)), stdin=subprocess.DEVNULL, stdout=err_fd, stderr=err_fd)
    finally:
        os.close(err_fd)
    # stop_server deletes these; the second is read by server_stderr
    proc.otfuzz_files = (config, err_path)  # type: ignore[attr-defined]
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(err_path).read_text(errors="replace")[-2000:]
            _remove(proc)
            raise RuntimeError(f"mosquitto exited with {proc.returncode} before listening on {port}:\n{tail}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    proc.wait(5)
    _remove(proc)
    raise RuntimeError(f"mosquitto not listening on {port} within {ready_timeout} s")


@contextmanager
def running_broker(extra: Sequence[str] = ()) -> Iterator[int]:
    """A broker on a free port for the length of a `with` block; yields the port."""
    from targets.servers import free_port, stop_server

    port = free_port()
    proc = start_broker(port, extra)
    try:
        yield port
    finally:
        stop_server(proc)


def _remove(proc: subprocess.Popen[bytes]) -> None:
    for path in getattr(proc, "otfuzz_files", ()):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def version() -> str:
    """The installed mosquitto's version ("2.0.11")."""
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=10).stdout
    first = out.splitlines()[0] if out else ""
    return first.rsplit(" ", 1)[-1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    print(broker_config(parser.parse_args().port), end="")
