"""A Modbus-aware filtering relay on 127.0.0.1: the conduit between two zones, for policy tests.

It stands where a firewall with deep packet inspection or a Modbus gateway would: clients in
the outer zone connect to it, and it forwards each Modbus/TCP request (framed by the MBAP
length) to the upstream server only if its function code is on the allow-list. A refused
request is dropped silently (`--mode drop`) or answered with exception 01 "illegal function"
(`--mode exception`), as filtering gateways do. With `--leak` it forwards everything: the
misconfigured conduit the policy test must catch. Replies travel back unchanged. A request
with an impossible MBAP length closes the client connection. Prints READY once listening.

    python tests/targets/policy_relay.py --listen 15030 --upstream 127.0.0.1:15020 --allow-fc 1,2,3,4
"""

from __future__ import annotations

import argparse
import asyncio
import signal


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF (server to client direction)."""
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


class Relay:
    def __init__(self, upstream: tuple[str, int], allow: frozenset[int], mode: str, leak: bool) -> None:
        self.upstream = upstream
        self.allow = allow
        self.mode = mode
        self.leak = leak

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        back = asyncio.create_task(pipe(server_r, client_w))
        try:
            while True:
                header = await client_r.readexactly(7)
                length = int.from_bytes(header[4:6], "big")
                if length < 2 or length > 254:
                    break
                body = await client_r.readexactly(length - 1)
                code = body[0]
                if self.leak or code in self.allow:
                    server_w.write(header + body)
                    await server_w.drain()
                elif self.mode == "exception":
                    client_w.write(header[:4] + (3).to_bytes(2, "big") + header[6:7] + bytes([(code | 0x80) & 0xFF, 0x01]))
                    await client_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            server_w.close()
            client_w.close()
            back.cancel()


async def serve(port: int, relay: Relay) -> None:
    server = await asyncio.start_server(relay.handle, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the Modbus server behind the conduit")
    parser.add_argument("--allow-fc", default="1,2,3,4", help="function codes let through (comma separated)")
    parser.add_argument("--mode", choices=("drop", "exception"), default="drop", help="what happens to a refused request")
    parser.add_argument("--leak", action="store_true", help="forward everything (a conduit that ignores its policy)")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error("the test relay only forwards to loopback")
    allow = frozenset(int(c) for c in args.allow_fc.split(",") if c.strip())
    asyncio.run(serve(args.listen, Relay((host, int(port)), allow, args.mode, args.leak)))


if __name__ == "__main__":
    main()
