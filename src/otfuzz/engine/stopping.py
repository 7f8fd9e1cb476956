"""Ctrl-C for long runs: the first signal asks the job to stop cleanly (everything recorded so far
is kept and resumable), a second one cancels at once. Shared by campaigns, stress runs and plans."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Stoppable(Protocol):
    stop_requested: bool

    def request_stop(self, reason: str = ...) -> None: ...


def run_until_stopped(job: Stoppable, main: Callable[[], Awaitable[T]]) -> T:
    """`asyncio.run(main())` with SIGINT and SIGTERM routed to `job` (main thread only)."""

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

    return asyncio.run(wrapper())
