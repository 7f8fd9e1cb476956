"""Drive Debian's headless Chromium over the DevTools protocol on a pipe, with no extra package.

`--remote-debugging-pipe` makes Chromium read protocol messages from fd 3 and write replies to
fd 4, each JSON message ended by a NUL byte; no port is opened. `open_page` loads a URL and
returns what the page did: console messages and exceptions, log entries (CSP violations and
failed loads land there), every network request, and the values of expressions evaluated in
the loaded page.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
         "--remote-debugging-pipe"]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


@dataclass
class PageRun:
    console: list[dict[str, Any]] = field(default_factory=list)  # Runtime.consoleAPICalled params
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # Runtime.exceptionThrown params
    log: list[dict[str, Any]] = field(default_factory=list)  # Log.entryAdded entries
    requests: list[str] = field(default_factory=list)  # URLs the page asked for
    values: dict[str, Any] = field(default_factory=dict)  # expression -> value

    def errors(self) -> list[str]:
        out = [f"console.{c.get('type')}: {c.get('args')}" for c in self.console if c.get("type") in ("error", "assert")]
        out += [f"exception: {e.get('exceptionDetails', {}).get('text')}" for e in self.exceptions]
        out += [f"log {e.get('source')}: {e.get('text')}" for e in self.log if e.get("level") == "error"]
        return out


class _Pipe:
    def __init__(self, binary: str, profile: Path) -> None:
        to_child_r, self.to_child_w = os.pipe()
        self.from_child_r, from_child_w = os.pipe()
        # Move the child's ends above 9 so that placing them on fds 3 and 4 cannot clobber one another.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w)]
        os.close(to_child_r)
        os.close(from_child_w)

        def place() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=place, close_fds=False)
        for fd in high:
            os.close(fd)
        self.buffer = b""
        self.next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_child_w, json.dumps(message).encode() + b"\0")
        return self.next_id

    def receive(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_child_r], [], [], left)[0]:
                return None
            chunk = os.read(self.from_child_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        os.close(self.to_child_w)
        os.close(self.from_child_r)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def open_page(binary: str, profile: Path, url: str, expressions: list[str], timeout: float = 30.0) -> PageRun:
    """Load `url` in a fresh headless Chromium and report what happened."""
    run = PageRun()
    pipe = _Pipe(binary, profile)
    deadline = time.monotonic() + timeout
    try:
        def call(method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
            wanted = pipe.send(method, params, session)
            while True:
                message = pipe.receive(deadline)
                if message is None:
                    raise TimeoutError(f"no answer to {method}")
                if message.get("id") == wanted:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})
                record(message)

        def record(message: dict[str, Any]) -> None:
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.consoleAPICalled":
                run.console.append(params)
            elif method == "Runtime.exceptionThrown":
                run.exceptions.append(params)
            elif method == "Log.entryAdded":
                run.log.append(params.get("entry", {}))
            elif method == "Network.requestWillBeSent":
                run.requests.append(params.get("request", {}).get("url", ""))
            elif method == "Page.loadEventFired":
                run.values.setdefault("__loaded__", True)

        targets = call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t.get("type") == "page")
        session = call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            call(f"{domain}.enable", session=session)
        call("Page.navigate", {"url": url}, session=session)
        while "__loaded__" not in run.values:
            message = pipe.receive(deadline)
            if message is None:
                raise TimeoutError(f"{url} did not finish loading")
            record(message)
        settle = time.monotonic() + 0.5  # late console messages and violation reports
        while (message := pipe.receive(min(settle, deadline))) is not None:
            record(message)
        for expression in expressions:
            result = call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
            run.values[expression] = result.get("result", {}).get("value")
    finally:
        pipe.close()
    return run
