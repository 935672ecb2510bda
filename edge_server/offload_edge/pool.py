"""The process pool that runs CPU-bound tasks off the event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import TypeVar

from sanic import Sanic

from .worker import init_worker

T = TypeVar("T")


def make_pool(processes: int | None) -> ProcessPoolExecutor:
    """Create a process pool with ``processes`` workers (None -> ``os.cpu_count()``).

    Uses the ``forkserver`` start method where available (else ``spawn``): forking a
    process that already runs an event loop and possibly threads can deadlock the
    child on locks held at fork time, and Python 3.12+ warns about exactly that.
    """
    workers = processes if processes is not None else (os.cpu_count() or 1)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=init_worker
    )


def attach_pool(app: Sanic, processes: int | None) -> None:
    """Create ``app.ctx.pool`` when the server starts and shut it down when it stops.

    The pool belongs to the server's lifetime, not to app construction, so that
    building an app (e.g. in tests or for route inspection) never starts processes.
    """

    async def start_pool(app: Sanic) -> None:
        app.ctx.pool = make_pool(processes)

    async def stop_pool(app: Sanic) -> None:
        pool: ProcessPoolExecutor | None = getattr(app.ctx, "pool", None)
        if pool is None:
            return
        app.ctx.pool = None
        # shutdown(wait=True) blocks until running tasks end; do it in a thread so the
        # loop can keep finishing other shutdown work meanwhile.
        await asyncio.to_thread(partial(pool.shutdown, wait=True, cancel_futures=True))

    app.register_listener(start_pool, "before_server_start")
    app.register_listener(stop_pool, "after_server_stop")


async def run_in_pool(app: Sanic, func: Callable[[int], T], arg: int) -> T:
    """Run ``func(arg)`` in the app's process pool without blocking the event loop."""
    pool: ProcessPoolExecutor | None = getattr(app.ctx, "pool", None)
    if pool is None:
        raise RuntimeError("process pool is not running (server not started?)")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, func, arg)
