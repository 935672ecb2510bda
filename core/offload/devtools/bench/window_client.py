"""Why the Redis window check has a lane of its own: the same script through redis-py and through the lane.

Both run in this process, one call at a time, against the same Redis, in
interleaved rounds; each figure is the median round's median latency and its
CPU time per call (this process only: the client's cost, not Redis's).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis_asyncio

from ...state.redis_lane import Lane
from ...state.redis_state import WINDOW_BUCKETS, WINDOW_LUA, RedisState

# A limit no run reaches: every call takes the same (admitting) path through the script.
NEVER_FULL = 1 << 60


async def _timed(call: Callable[[], Awaitable[Any]], calls: int) -> tuple[float, float]:
    """Median latency (µs) and CPU per call (µs) over ``calls`` sequential calls."""
    latencies = []
    cpu_started = time.process_time()
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies) * 1e6, (time.process_time() - cpu_started) / calls * 1e6


async def compare_window_clients(url: str, calls: int, rounds: int) -> dict[str, Any]:
    """p50 and CPU per window check: redis-py's Script, the lane alone, and RedisState.admit (lane + bookkeeping)."""
    client = redis_asyncio.Redis.from_url(url)
    script = client.register_script(WINDOW_LUA)
    state = RedisState(url, op_timeout_s=1.0)
    lane = Lane(client.connection_pool.connection_kwargs, 1.0, 1.0)
    key = "offload:bench:window-client"
    args = ["admit", NEVER_FULL, repr(1_000_000 / WINDOW_BUCKETS), WINDOW_BUCKETS + 1, 1020]
    contenders: dict[str, Callable[[], Awaitable[Any]]] = {
        "redis-py (Script)": lambda: script(keys=[key], args=args),
        "lane (hiredis, pipelined)": lambda: lane.evalsha(script.sha, WINDOW_LUA, [key], args),
        "RedisState.admit": lambda: state.admit("bench-window-client", NEVER_FULL, 1.0),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    try:
        for call in contenders.values():
            await _timed(call, min(calls, 200))  # connect and warm up
        for index in range(rounds):
            order = list(contenders.items())
            for name, call in order[index % len(order) :] + order[: index % len(order)]:
                samples[name].append(await _timed(call, calls))
    finally:
        await lane.close()
        await state.close()
        await client.aclose()
    figures = {}
    for name, runs in samples.items():
        p50s, cpus = [run[0] for run in runs], [run[1] for run in runs]
        figures[name] = {"p50_us": round(statistics.median(p50s), 1), "cpu_us": round(statistics.median(cpus), 1)}
    return figures
