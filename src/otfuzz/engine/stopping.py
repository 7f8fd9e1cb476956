"""Ctrl-C for long runs: the first signal asks the job to stop cleanly (everything recorded so far
is kept and resumable), a second one cancels at once. Shared by campaigns, stress runs and plans.

These runs go on uvloop's event loop where it is installed (every platform but Windows): at a
target's pace most of otfuzz's own time between an answer and the next request is the event
loop's (waking the task the answer is for, the write, opening the next connection), and
uvloop's costs a fraction of the standard loop's. `OTFUZZ_EVENT_LOOP=asyncio` picks the standard
loop (to rule the loop out when something looks wrong).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Stoppable(Protocol):
    stop_requested: bool

    def request_stop(self, reason: str = ...) -> None: ...


def run_until_stopped(job: Stoppable, main: Callable[[], Awaitable[T]]) -> T:
    """`main()` run to its end with SIGINT and SIGTERM routed to `job` (main thread only)."""

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if job.stop_requested and task is not None:
                task.cancel()  # second signal: stop at once
            job.request_stop("stopped by operator (signal)")

        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                handled.append(sig)
            except (RuntimeError, ValueError):  # not the main thread: no signal handling
                pass
        try:
            return await main()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(wrapper())


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where installed, unless OTFUZZ_EVENT_LOOP=asyncio (None: the standard loop)."""
    if os.environ.get("OTFUZZ_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
