"""Load generators for the performance benchmark: wrk when installed, else a bounded asyncio one.

Both keep ``connections`` keep-alive connections busy for ``duration_s`` and
report requests per second, latency percentiles and errors in one shape.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import aiohttp

from ...stats import percentile


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    tool: str
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time the contender's processes spent per request (µs), when known.
    cpu_us: float | None = None


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot read a wrk latency from {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def wrk_argv(url: str, connections: int, duration_s: float) -> list[str]:
    """wrk's command line; wrk counts whole seconds, so a fraction is rounded up."""
    threads = 1 if connections == 1 else 2
    seconds = max(1, math.ceil(duration_s))
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]


def run_wrk(url: str, connections: int, duration_s: float) -> LoadResult:
    """One wrk run (bounded by -d)."""
    argv = wrk_argv(url, connections, duration_s)
    # wrk stops itself after -d (at most a second more than asked); the timeout only guards a hang.
    output = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 31, check=True).stdout
    return parse_wrk(output, connections)


def parse_wrk(output: str, connections: int) -> LoadResult:
    """Requests, req/s, p50/p99 and errors from wrk's --latency report."""
    latencies = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx[1]) if non_2xx else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    return LoadResult("wrk", connections, requests, rps, _ms(latencies["50"]), _ms(latencies["99"]), errors)


async def run_builtin(url: str, connections: int, duration_s: float) -> LoadResult:
    """``connections`` closed loops over keep-alive connections for ``duration_s`` seconds."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.get(url) as reply:
                        await reply.read()
                        if reply.status >= 400:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return LoadResult(
        "builtin",
        connections,
        len(latencies),
        len(latencies) / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        errors,
    )


async def measure(url: str, connections: int, duration_s: float) -> LoadResult:
    """wrk if present (in a thread, so our own loop stays free), else the built-in generator."""
    if wrk_available():
        return await asyncio.to_thread(run_wrk, url, connections, duration_s)
    return await run_builtin(url, connections, duration_s)
