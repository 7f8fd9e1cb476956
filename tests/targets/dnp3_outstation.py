"""A dnp3py 0.6 DNP3 outstation on 127.0.0.1 with a known database, for integration tests.

Third-party code is the point: the DNP3 module is proven against an implementation we did not
write. Link address 1; the master address is learned from the first frame. Binary inputs 0..4
alternate starting with True, binary outputs 0..3, analog inputs i = 10 * i (0..4), analog
outputs 0..3, counters i = 100 + i (0..3). One binary input change is made after start-up so a
class 1 read has an event to return. Every control, freeze and restart is accepted (restarts
only answer with a delay: nothing restarts). Prints READY once listening and serves until killed.

    python tests/targets/dnp3_outstation.py --port 20000
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from dnp3.database import Database
from dnp3.outstation.handler import CommandResult, DefaultCommandHandler
from dnp3.outstation.config import OutstationConfig
from dnp3.outstation.outstation import Outstation
from dnp3.outstation.tcp_runner import OutstationTcpRunner


class AcceptEverything(DefaultCommandHandler):
    """Accepts every command so the tests judge the protocol exchange, not a plant's refusals."""

    def select_binary_output(self, *args: object, **kwargs: object) -> CommandResult:
        return CommandResult.success()

    def operate_binary_output(self, *args: object, **kwargs: object) -> CommandResult:
        return CommandResult.success()

    def direct_operate_binary_output(self, *args: object, **kwargs: object) -> CommandResult:
        return CommandResult.success()

    def select_analog_output(self, *args: object, **kwargs: object) -> CommandResult:
        return CommandResult.success()

    def operate_analog_output(self, *args: object, **kwargs: object) -> CommandResult:
        return CommandResult.success()

    def direct_operate_analog_output(self, *args: object, **kwargs: object) -> CommandResult:
        return CommandResult.success()

    def freeze_counters(self, *args: object, **kwargs: object) -> CommandResult:
        return CommandResult.success()

    def cold_restart(self) -> int | None:
        return 1000

    def warm_restart(self) -> int | None:
        return 500


def build_outstation(address: int) -> Outstation:
    """An outstation with a few points of every static type the templates read or command."""
    database = Database()
    for i in range(5):
        database.add_binary_input(i, value=i % 2 == 0)
        database.add_analog_input(i, value=10.0 * i)
    for i in range(4):
        database.add_binary_output(i)
        database.add_analog_output(i)
        database.add_counter(i, value=100 + i)
    outstation = Outstation(config=OutstationConfig(address=address), database=database, handler=AcceptEverything())
    database.update_binary_input(0, False)  # one class 1 event for the event reads
    return outstation


async def serve(port: int, address: int) -> None:
    runner = OutstationTcpRunner(build_outstation(address), host="127.0.0.1", port=port)
    task = asyncio.create_task(runner.run())
    for _ in range(200):  # bounded: the listener is up within a few event-loop turns
        if runner.is_running:
            break
        await asyncio.sleep(0.01)
    print("READY", flush=True)
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(serve(args.port, args.address))


if __name__ == "__main__":
    main()
