"""Run folders: where a run's evidence lives, and what its end status means to a caller.

Shared by campaigns, stress runs, policy tests and plans, whoever starts them (the command line,
a run-plan, a zone agent). A run folder is created empty; if a run stops on a user error
before it recorded its start, what it wrote is removed so nothing half-made is left; once a
run is recorded, its folder is never removed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from otfuzz.errors import OtfuzzError
from otfuzz.store.evidence import STORE_NAME, EvidenceStore

T = TypeVar("T")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_TARGET_DOWN = 3
EXIT_INTERRUPTED = 130

_EXIT_BY_STATUS = {"completed": EXIT_OK, "failed": EXIT_TARGET_DOWN, "interrupted": EXIT_INTERRUPTED}


def exit_code(status: str) -> int:
    """Process exit status of a run that ended with `status` (completed, failed, interrupted)."""
    return _EXIT_BY_STATUS.get(status, EXIT_TARGET_DOWN)


def default_run_dir(prefix: str, parent: Path = Path("runs")) -> Path:
    """`runs/<prefix>-<local time>`: the folder a run gets when the user names none."""
    return parent / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(path: Path) -> bool:
    """Create the run folder, or accept an empty one; True if it was created here."""
    if path.exists():
        if not path.is_dir():
            raise OtfuzzError(f"--out {path} exists and is not a folder")
        if (path / STORE_NAME).exists():
            raise OtfuzzError(f"run folder {path} already holds a run; continue it with --resume {path} or choose another --out")
        if any(path.iterdir()):
            raise OtfuzzError(f"--out {path} is not empty; choose a new or empty folder")
        if not os.access(path, os.W_OK):
            raise OtfuzzError(f"cannot write to run folder {path}")
        return False
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise OtfuzzError(f"cannot create run folder {path}: {exc.strerror}") from None
    return True


def holds_a_run(run_dir: Path) -> bool:
    """True once a run recorded its start in the folder's evidence store."""
    try:
        EvidenceStore.open(run_dir).close()
    except OtfuzzError:
        return False
    return True


def run_in_new_folder(run_dir: Path, job: Callable[[], T]) -> T:
    """Create the run folder and run `job` in it; on a user error before the run recorded its
    start (bad target, failed baseline...), remove what it wrote and re-raise."""
    created = prepare_run_dir(run_dir)
    try:
        return job()
    except OtfuzzError:
        if holds_a_run(run_dir):
            raise
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for child in run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
