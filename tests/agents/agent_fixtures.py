"""Real parts for the zone-agent tests and bench/agents.py: a Debian redis-server and otfuzz
agents as real Celery worker processes, each on loopback, each stopped (or killed) by its PID."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from targets.servers import HOST, free_port, start_server, stop_server

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parents[2]


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of our own on a free loopback port, nothing persisted; (process, URL)."""
    port = free_port()
    wrapper = [sys.executable, "-c", "import os, sys; print('READY', flush=True); os.execv(sys.argv[1], sys.argv[1:])",
               REDIS, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    return start_server(wrapper, port), f"redis://{HOST}:{port}/0"


class Agents:
    """Starts `otfuzz agent` processes; each is a Celery worker consuming its zone's queue."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        self.keys = root / "keys"
        self.keys.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, zone: str, *scope: str, redeliver_after: str = "3s") -> Path:
        work = self.root / name
        log = (self.root / f"{name}.log").open("wb")
        argv = [sys.executable, "-m", "otfuzz.cli", "agent", "--broker", self.url, "--zone", zone, "--work", str(work),
                "--name", name, "--redeliver-after", redeliver_after]
        for item in scope:
            argv += ["--scope", item]
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (work / "agent.pub").exists():
            assert self.procs[name].poll() is None, self.log(name)
            time.sleep(0.05)
        shutil.copy(work / "agent.pub", self.keys / f"{name}.pub")
        self.wait_registered(name)
        return work

    def wait_registered(self, name: str) -> None:
        from otfuzz.agents.broker import connect, list_agents

        client = connect(self.url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(a["name"] == name for a in list_agents(client)):
                time.sleep(1.0)  # the Celery worker starts consuming right after registering
                return
            time.sleep(0.05)
        raise AssertionError(self.log(name))

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL: the agent dies mid-task without a word, as a machine losing power would."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_server(proc, timeout=10)  # type: ignore[arg-type]
        self.procs.clear()


def otfuzz(*args: Any, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otfuzz.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
