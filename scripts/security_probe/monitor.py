"""The /health stall monitor, run in a process of its own during each attack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

import aiohttp
from common import (
    ATTACK_HARD_LIMIT_S,
    HEALTH_POLL_EVERY_S,
    HEALTH_POLL_MAX_OUTSTANDING,
    HEALTH_POLL_TIMEOUT_S,
    require_loopback,
)
from procfs import rss_mb

# --- the health monitor ----------------------------------------------------------------------------------


class Monitor:
    """Polls ``url`` on a fresh connection every 50 ms (and samples RSS) until stopped."""

    def __init__(self, url: str | None, pid: int | None) -> None:
        self.url = url
        self.pid = pid
        self.latencies: list[float] = []
        self.slow: list[tuple[float, float]] = []  # (seconds after start the poll began, latency) of polls > 0.5 s
        self.origin = time.perf_counter()
        self.bad = 0
        self.polls = 0
        self.peak_rss: float | None = None
        self.open_waits: list[float] = []
        self._pending: dict[asyncio.Task[None], float] = {}
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    async def _poll(self, session: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        ok = False
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=HEALTH_POLL_TIMEOUT_S)) as reply:
                await reply.read()
                ok = reply.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            ok = False
        latency = time.perf_counter() - started
        self.latencies.append(latency)
        if latency > 0.5:
            self.slow.append((round(started - self.origin, 2), round(latency, 3)))
        if not ok:
            self.bad += 1

    def _sample_rss(self) -> None:
        value = rss_mb(self.pid)
        if value is not None and (self.peak_rss is None or value > self.peak_rss):
            self.peak_rss = value

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            deadline = time.monotonic() + ATTACK_HARD_LIMIT_S + 10
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._sample_rss()
                if self.url is not None and len(self._pending) < HEALTH_POLL_MAX_OUTSTANDING:
                    task = asyncio.create_task(self._poll(session))
                    self._pending[task] = time.perf_counter()
                    task.add_done_callback(self._pending.pop)
                    self.polls += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), HEALTH_POLL_EVERY_S)
            # Let polls in flight finish briefly; the rest count as stalled for as long as they waited.
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=1.0)
            now = time.perf_counter()
            self.open_waits = [now - started for started in self._pending.values()]
            for task in list(self._pending):
                task.cancel()
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=1.0)

    def start(self) -> None:
        self.open_waits: list[float] = []
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._runner is not None:
            await asyncio.wait_for(self._runner, 15)

    def stall_ms(self) -> tuple[float | None, bool]:
        if self.url is None:
            return None, False
        worst = max(self.latencies, default=0.0)
        worst_open = max(self.open_waits, default=0.0)
        if not self.latencies and not self.open_waits:
            return None, False
        return 1000 * max(worst, worst_open), worst_open > worst

    def result(self) -> dict[str, Any]:
        return {
            "latencies": self.latencies,
            "open_waits": self.open_waits,
            "bad": self.bad,
            "peak_rss": self.peak_rss,
            "slow": self.slow,
        }

    def load(self, result: dict[str, Any]) -> None:
        self.latencies = result["latencies"]
        self.slow = [tuple(item) for item in result["slow"]]
        self.open_waits = result["open_waits"]
        self.bad = result["bad"]
        self.peak_rss = result["peak_rss"]


async def monitor_child(url: str | None, pid: int | None) -> int:
    """``--monitor-child``: poll until SIGTERM (or the time limit), then print the figures as JSON."""
    if url is not None:
        require_loopback(url, "the monitored URL")
    monitor = Monitor(url, pid)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, monitor._stop.set)
    monitor.start()
    print("ready", flush=True)
    assert monitor._runner is not None
    await asyncio.wait_for(monitor._runner, ATTACK_HARD_LIMIT_S + 40)
    print(json.dumps(monitor.result()), flush=True)
    return 0


class MonitorProcess:
    """A :class:`Monitor` in a process of its own, so the attack's own CPU use cannot inflate the stall figures."""

    def __init__(self, url: str | None, pid: int | None) -> None:
        self.monitor = Monitor(url, pid)
        self.url = url
        self.pid = pid
        self.proc: asyncio.subprocess.Process | None = None
        self.error = ""

    async def start(self) -> None:
        self.monitor.open_waits = []
        if self.url is None and self.pid is None:
            return
        # This package's directory: ``python scripts/security_probe --monitor-child`` runs its __main__.py.
        argv = [sys.executable, os.path.dirname(os.path.abspath(__file__)), "--monitor-child"]
        argv += ["--monitor-url", self.url or "-", "--monitor-pid", str(self.pid or 0)]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        try:
            await asyncio.wait_for(self.proc.stdout.readline(), 15)
        except TimeoutError:
            self.error = "monitor did not start"

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        assert proc.stdout is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out = await asyncio.wait_for(proc.stdout.read(), 20)
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            self.error = "monitor did not stop; killed"
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            return
        try:
            self.monitor.load(json.loads(out.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError, KeyError) as exc:
            self.error = f"monitor output unreadable: {exc}"

    def stall_ms(self) -> tuple[float | None, bool]:
        return self.monitor.stall_ms()
