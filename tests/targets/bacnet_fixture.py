"""Starting the bacpypes3 test device (bacnet_device.py) on a free UDP port, for fixtures and tests
that need a device of their own (imports nothing of bacpypes3 itself)."""

from __future__ import annotations

import socket
import subprocess

from targets.servers import free_port, script, start_server

BACNET_INSTANCE = 999  # the device instance the BACnet tests address (?device=999)


def start_bacnet_device(instance: int = BACNET_INSTANCE) -> tuple[subprocess.Popen[bytes], int]:
    """A bacpypes3 0.0.110 device on a free UDP port of 127.0.0.1; stop it with stop_server."""
    port = free_port(socket.SOCK_DGRAM)
    return start_server([*script("bacnet_device.py"), "--port", str(port), "--instance", str(instance)], port, tcp=False), port
