"""An asyncua 2.1 OPC UA server on 127.0.0.1 with SecurityPolicy None and known nodes, for
integration tests.

Third-party code is the point: the OPC UA module is proven against an implementation we did not
write. Endpoint opc.tcp://127.0.0.1:PORT/otfuzz, anonymous access, and in namespace 2:

    ns=2;i=1000  object Plant
    ns=2;i=1001  Setpoint     Double 21.5, writable
    ns=2;i=1002  Temperature  Double 20.0, read-only
    ns=2;i=1003  Counter      Int32 7, writable
    ns=2;i=1004  Marker       Double 0.0, writable (policy tests write it)
    ns=2;i=1010  method Double(UInt32) -> UInt32 on Plant

Its address space is limited (--memory-mb, 1 GiB by default) because a Variant array of Null
elements with a length near 2**31 makes asyncua 2.1 build a list of that many elements.
Prints READY once listening and serves until killed.

    python tests/targets/opcua_server.py --port 4840
"""

import argparse
import asyncio
import logging
import resource
import signal

from asyncua import Server, ua
from asyncua.common.methods import uamethod

PATH = "/otfuzz"
NAMESPACE_URI = "urn:otfuzz:test"
PLANT, SETPOINT, TEMPERATURE, COUNTER, MARKER, DOUBLE = 1000, 1001, 1002, 1003, 1004, 1010


@uamethod
def double(parent: ua.NodeId, value: int) -> int:
    return (value * 2) & 0xFFFFFFFF


async def serve(port: int) -> None:
    logging.basicConfig(level=getattr(logging, __import__("os").environ.get("OTFUZZ_OPCUA_LOG", "CRITICAL")))
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}{PATH}")
    server.set_server_name("otfuzz test server")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NAMESPACE_URI)
    assert ns == 2
    plant = await server.nodes.objects.add_object(ua.NodeId(PLANT, ns), ua.QualifiedName("Plant", ns))
    for ident, name, value, variant, writable in (
        (SETPOINT, "Setpoint", 21.5, ua.VariantType.Double, True),
        (TEMPERATURE, "Temperature", 20.0, ua.VariantType.Double, False),
        (COUNTER, "Counter", 7, ua.VariantType.Int32, True),
        (MARKER, "Marker", 0.0, ua.VariantType.Double, True),
    ):
        var = await plant.add_variable(ua.NodeId(ident, ns), ua.QualifiedName(name, ns), ua.Variant(value, variant))
        if writable:
            await var.set_writable()
    await plant.add_method(ua.NodeId(DOUBLE, ns), ua.QualifiedName("Double", ns), double,
                           [ua.VariantType.UInt32], [ua.VariantType.UInt32])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        print("READY", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, default=1024,
                        help="address-space limit: asyncua 2.1 can be made to allocate without bound (see tests)")
    args = parser.parse_args()
    limit = args.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
