"""A c104 2.2 (lib60870) IEC 60870-5-104 server on 127.0.0.1 with known points, for integration tests.

Third-party code is the point: the IEC 104 module is proven against an implementation we did not
write. One station with the given common address and these information objects:

    IOA 1  M_SP_NA_1 single point (True)       IOA 11 C_SC_NA_1 single command
    IOA 2  M_DP_NA_1 double point              IOA 12 C_DC_NA_1 double command
    IOA 3  M_ME_NA_1 normalised value          IOA 13 C_SE_NA_1 set point, normalised
    IOA 4  M_ME_NB_1 scaled value (42)         IOA 14 C_SE_NB_1 set point, scaled
    IOA 5  M_ME_NC_1 short float (1.5)         IOA 15 C_SE_NC_1 set point, short float
    IOA 6  M_IT_NA_1 integrated totals         IOA 16 C_RC_NA_1 regulating step command
    IOA 7  M_ME_NB_1 reported every 100 ms     IOA 17 C_SC_TA_1 single command with time tag
                                               IOA 18 C_SC_NA_1 select-and-execute only

Every command is accepted. IOA 7 makes periodic traffic (cause 1) flow on every started
connection, so clients must acknowledge it and must not take it for a reply. Prints READY once listening and serves until killed.

    python tests/targets/iec104_server.py --port 2404 --ca 47
"""

import argparse
import signal
import threading

import c104

MONITOR = {
    1: (c104.Type.M_SP_NA_1, True),
    2: (c104.Type.M_DP_NA_1, c104.Double.ON),
    3: (c104.Type.M_ME_NA_1, c104.NormalizedFloat(0.5)),
    4: (c104.Type.M_ME_NB_1, c104.Int16(42)),
    5: (c104.Type.M_ME_NC_1, 1.5),
    6: (c104.Type.M_IT_NA_1, None),
}
PERIODIC = (7, c104.Type.M_ME_NB_1, 100)
DEFAULT_CA = 47
COMMANDS = {
    11: c104.Type.C_SC_NA_1,
    12: c104.Type.C_DC_NA_1,
    13: c104.Type.C_SE_NA_1,
    14: c104.Type.C_SE_NB_1,
    15: c104.Type.C_SE_NC_1,
    16: c104.Type.C_RC_NA_1,
    17: c104.Type.C_SC_TA_1,
}
SELECT_AND_EXECUTE = (18, c104.Type.C_SC_NA_1)


def accept(point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage) -> c104.ResponseState:
    """Every command succeeds: the tests judge the protocol exchange, not a plant.

    c104 checks callback signatures by name and evaluated annotation, hence no
    `from __future__ import annotations` in this file.
    """
    return c104.ResponseState.SUCCESS


def build_server(port: int, common_address: int) -> c104.Server:
    server = c104.Server(ip="127.0.0.1", port=port)
    station = server.add_station(common_address=common_address)
    assert station is not None
    for ioa, (kind, value) in MONITOR.items():
        point = station.add_point(io_address=ioa, type=kind)
        assert point is not None
        if value is not None:
            point.value = value
    ioa, kind, report_ms = PERIODIC
    assert station.add_point(io_address=ioa, type=kind, report_ms=report_ms) is not None
    for ioa, kind in COMMANDS.items():
        point = station.add_point(io_address=ioa, type=kind)
        assert point is not None
        point.on_receive(callable=accept)
    ioa, kind = SELECT_AND_EXECUTE
    point = station.add_point(io_address=ioa, type=kind, command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
    assert point is not None
    point.on_receive(callable=accept)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", type=int, default=DEFAULT_CA)
    args = parser.parse_args()
    server = build_server(args.port, args.ca)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    for _ in range(500):  # bounded: lib60870 listens within a few ticks
        if server.is_running:
            break
        stop.wait(0.01)
    print("READY", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
