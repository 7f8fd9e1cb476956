"""Supervision of a local target process started by otfuzz (`--target-cmd`).

When otfuzz owns the target it can do what a lab technician would: restart it after a crash,
and record how it died (exit code or signal) with the tail of what it printed, so a crash
record says more than "stopped answering".
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otfuzz.errors import OtfuzzError


@dataclass(frozen=True)
class ExitInfo:
    returncode: int | None
    signal: str | None
    stderr: str  # what this life of the process printed (bounded)

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self.stderr.splitlines()[-20:])

    def as_record(self) -> dict[str, object]:
        return {"returncode": self.returncode, "signal": self.signal, "stderr_tail": self.stderr_tail}


class TargetProcess:
    """A target started from a command line, with its stderr kept in a log file of the run."""

    def __init__(self, command: str, log_path: Path) -> None:
        self.command = command
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise OtfuzzError(f"bad --target-cmd: {exc}") from None
        if not self.argv:
            raise OtfuzzError("bad --target-cmd: empty command")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {self.command}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                             start_new_session=True)
            except OSError as exc:
                raise OtfuzzError(f"cannot start --target-cmd '{self.command}': {exc.strerror}") from None
        self.starts += 1

    def poll(self) -> ExitInfo | None:
        """How the process ended, or None while it runs."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            return None
        sig = signal.Signals(-code).name if code < 0 else None
        return ExitInfo(None if code < 0 else code, sig, self.stderr_of_this_start())

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            with self.log_path.open("rb") as log:
                tail = deque(log, maxlen=lines)
        except OSError:
            return ""
        return b"".join(tail).decode("utf-8", "replace")

    def stderr_of_this_start(self, limit: int = 256 * 1024) -> str:
        """What the current (or last) start printed: a crash report belongs to one life of the
        process, never to an earlier one."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - limit))
                data = log.read()
        except OSError:
            return ""
        marker = data.rfind(b"--- start ")
        if marker >= 0:
            data = data[data.find(b"\n", marker) + 1:]
        return data.decode("utf-8", "replace")

    def stacks(self, timeout: float = 5.0) -> list[dict[str, Any]] | None:
        """The target's threads and their Python stacks (py-spy), for a target that hangs.

        Only for Python targets and only when py-spy can attach (it needs ptrace rights over
        the process, which the process's parent has when run as root or with ptrace_scope 0);
        None otherwise, and a hang is then bucketed by its reproducer.
        """
        if self.proc is None or self.proc.poll() is not None:
            return None
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            return None
        threads: list[dict[str, Any]] = []
        for pid in self._pids():
            try:
                done = subprocess.run([exe, "dump", "--json", "--pid", str(pid)], capture_output=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                try:
                    threads += [t for t in json.loads(done.stdout) if isinstance(t, dict)]
                except ValueError:
                    continue
        return threads or None

    def _pids(self) -> list[int]:
        """The process and its children (a --target-cmd may be a wrapper that starts the server)."""
        assert self.proc is not None
        try:
            import psutil

            parent = psutil.Process(self.proc.pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))][:8]
        except Exception:  # noqa: BLE001 - the process may be gone by now
            return [self.proc.pid]

    def stop(self, timeout: float = 3.0) -> ExitInfo | None:
        """Stop the process group; return how it had ended if it was already dead."""
        if self.proc is None:
            return None
        ended = self.poll()
        if ended is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except (ProcessLookupError, PermissionError):
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout)
        self.proc = None
        return ended
