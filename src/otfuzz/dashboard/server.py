"""Serving the dashboard with uvicorn: in the foreground (`otfuzz dashboard`) or on a thread
beside a campaign (`otfuzz run --dashboard`).

The listening socket is bound here, before uvicorn starts, so a port in use or an address
that is not ours is one clear error rather than a log line from a background thread; port 0
picks a free port, and `url` names the one bound.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from pathlib import Path

from otfuzz.dashboard.app import DashboardSettings, create_app
from otfuzz.errors import OtfuzzError

DEFAULT_PORT = 8626


def is_loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def bind_socket(address: str, port: int) -> socket.socket:
    """A listening TCP socket on (address, port), or an OtfuzzError naming what to change."""
    if not 0 <= port <= 65535:
        raise OtfuzzError(f"--port must be from 0 to 65535, got {port}")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        raise OtfuzzError(f"--bind needs an IP address, got '{address}'") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise OtfuzzError(f"cannot listen on {address}:{port}: {exc.strerror or exc} (choose another --port or --bind)") from None
    sock.set_inheritable(True)
    return sock


class DashboardServer:
    """One dashboard over one runs folder, listening on a socket of its own."""

    def __init__(self, root: Path, address: str = "127.0.0.1", port: int = DEFAULT_PORT, allow_control: bool = False) -> None:
        import uvicorn

        if not root.is_dir():
            raise OtfuzzError(f"runs folder {root} does not exist")
        loopback = is_loopback_address(address)
        self.settings = DashboardSettings(root=root, token=None if loopback else secrets.token_urlsafe(18), loopback=loopback,
                                          allow_control=allow_control)
        self.socket = bind_socket(address, port)
        host, bound = self.socket.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/" + (
            f"?token={self.settings.token}" if self.settings.token else "")
        config = uvicorn.Config(create_app(self.settings), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=3, lifespan="off")
        self.server = uvicorn.Server(config)
        self.settings.stopping = lambda: bool(self.server.should_exit)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve in the foreground until Ctrl-C."""
        self.server.run(sockets=[self.socket])

    def start(self) -> None:
        """Serve on a daemon thread (beside a campaign in the main thread)."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, name="otfuzz-dashboard",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        self.socket.close()
