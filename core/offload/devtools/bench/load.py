"""An open-loop load generator: request i leaves at its scheduled time, whatever earlier ones are doing.

Closed-loop clients slow down when the server does and so hide its tail; an
open loop keeps offering the same load, as real users would.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp

from ...responses import SERVER_HEADER
from ..progress import ProgressBar


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it."""

    sent_at: float  # seconds since the run started
    latency_s: float
    status: int  # 0: no HTTP answer at all
    server: str
    throughput: int | None


# The bar the demo and the decision bench share (rich; silent when stderr is not a terminal).
Progress = ProgressBar

_paused_loops = 0  # open loops running with the collector paused (two run side by side in the bench)
_enable_after = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Keep Python's garbage collector from pausing this process while load is being sent.

    The bench's own process holds everything it imported and every sample so
    far; one full collection there took 23-28 ms. Requests due meanwhile
    then left together, as a burst, and every one of them counted the pause
    as latency: a stall of the load generator, charged to whatever it
    measured (in one run, p2c_ewma's p99 1.5x the oracle's beside it). The
    collector is paused while any open loop runs and catches up at once
    when the last one ends, between measurements.
    """
    global _paused_loops, _enable_after
    if _paused_loops == 0:
        _enable_after = gc.isenabled()
        gc.disable()
    _paused_loops += 1
    try:
        yield
    finally:
        _paused_loops -= 1
        if _paused_loops == 0 and _enable_after:
            gc.enable()
            gc.collect()


async def open_loop(
    url_for: Callable[[int], str],
    count: int,
    gap_ms: tuple[float, float],
    rng: random.Random,
    progress: Progress,
    label: str,
    timeout_s: float = 10.0,
    origin: float | None = None,
) -> list[Sample]:
    """Send ``count`` GETs with uniformly random gaps; returns one sample per request.

    ``origin`` (a ``time.perf_counter()`` value) lets other tasks share the run's clock.
    """
    samples: list[Sample] = []
    origin = time.perf_counter() if origin is None else origin

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        sent = time.perf_counter()
        try:
            async with session.get(url_for(index)) as reply:
                body = await reply.json(content_type=None)
                status = reply.status
                server = reply.headers.get(SERVER_HEADER, "?")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            samples.append(Sample(sent - origin, time.perf_counter() - sent, 0, f"error: {type(exc).__name__}", None))
            return
        throughput = body.get("throughput") if isinstance(body, dict) else None
        samples.append(Sample(sent - origin, time.perf_counter() - sent, status, server, throughput))

    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    with collector_paused():
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            scheduled = time.perf_counter()
            for index in range(count):
                scheduled += rng.uniform(*gap_ms) / 1000
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(session, index)))
                progress.step(label)
            await asyncio.gather(*tasks)
    samples.sort(key=lambda sample: sample.sent_at)
    return samples
