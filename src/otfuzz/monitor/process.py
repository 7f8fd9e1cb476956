"""Supervision of a local target process started by otfuzz (`--target-cmd`).

When otfuzz owns the target it can do what a lab technician would: restart it after a crash,
and record how it died (exit code or signal) with the tail of what it printed, so a crash
record says more than "stopped answering".
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from otfuzz.errors import OtfuzzError


@dataclass(frozen=True)
class ExitInfo:
    returncode: int | None
    signal: str | None
    stderr_tail: str

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
        return ExitInfo(None if code < 0 else code, sig, self.stderr_tail())

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            with self.log_path.open("rb") as log:
                tail = deque(log, maxlen=lines)
        except OSError:
            return ""
        return b"".join(tail).decode("utf-8", "replace")

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
