"""Moving requests off a server that stopped answering (hung, not dead).

A dead server refuses or resets connections and its requests fail at once; a
hung one (stopped, swapping, wedged) accepts connections and answers nothing,
so every request already sent to it would wait for its whole timeout. The
watch notices a server that has requests in flight but has answered none of
them for ``stall_after_s`` (or twice its usual latency, if that is longer),
checks it with one health probe, and if that fails too, marks it down and
abandons its in-flight attempts that may move: they fail at once and the
engine retries them on another server. A server that is merely slow answers
its probe and keeps its requests; so does one with nowhere to move them to.

Attempts register themselves in the server's
:class:`~offload.inflight.InflightAttempts` (one set add and discard per
request): abandoning cancels the attempt's asyncio task, and the attempt turns
that cancellation back into an ordinary failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from .health import ProbeResult
from .periodic import Periodic
from .registry import Pool, Registry, Server

log = logging.getLogger("offload.stalls")

# How often the watch looks at the pools: the delay it adds to moving requests.
CHECK_EVERY_S = 0.25


Probe = Callable[[Pool, Server, float], Awaitable[ProbeResult]]


def usual_latency_s(server: Server) -> float:
    """How long the server usually takes to answer (0 before anything was measured)."""
    return server.latency_ewma_s or 0.0


class StallWatch:
    """Checks the pools every :data:`CHECK_EVERY_S` and moves requests off hung servers."""

    def __init__(
        self,
        registry: Registry,
        probe: Probe,
        probe_timeout_s: float,
        on_moved: Callable[[str, int], object] = lambda pool_name, moved: None,
    ) -> None:
        self.registry = registry
        self.on_moved = on_moved  # told how many attempts moved off a pool's hung server (metrics)
        self.probe = probe
        self.probe_timeout_s = probe_timeout_s
        self.checking: set[Server] = set()
        # Attempts moved off hung servers, per pool (shown by GET /servers).
        self.moved: dict[str, int] = {}
        self._rounds = Periodic(
            "offload-stall-watch", CHECK_EVERY_S, lambda: self.look(time.perf_counter()), log, "stall watch failed"
        )
        self._checks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start watching (inside a running event loop)."""
        self._rounds.start()

    async def stop(self) -> None:
        """Stop watching and any check still running."""
        await self._rounds.stop()
        checks = list(self._checks)
        for task in checks:
            task.cancel()
        for task in checks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def look(self, now: float) -> None:
        """One pass: abandon attempts on servers known down, probe servers that went quiet."""
        for pool in self.registry.pools.values():
            stall_after_s = pool.config.stall_after_s
            if stall_after_s <= 0:
                continue
            for server in pool.servers:
                if server.probe_ok is False:
                    # A probe round already found it down: what is still waiting there moves now.
                    if server.attempts.running:
                        self.abandon(pool, server, f"it stopped answering ({server.probe_error})")
                    continue
                quiet_s = now - server.last_progress
                quiet_too_long = quiet_s > max(stall_after_s, 2 * usual_latency_s(server))
                if server.inflight and quiet_too_long and server not in self.checking:
                    self.checking.add(server)
                    check = asyncio.create_task(self._check(pool, server, quiet_s))
                    self._checks.add(check)
                    check.add_done_callback(self._checks.discard)

    async def _check(self, pool: Pool, server: Server, quiet_s: float) -> None:
        # A far server gets as long as twice its usual round trip to answer its check.
        timeout_s = max(self.probe_timeout_s, 2 * usual_latency_s(server))
        try:
            result = await self.probe(pool, server, timeout_s)
        finally:
            self.checking.discard(server)
        if result.ok:
            server.last_progress = time.perf_counter()  # slow, not hung: its requests stay
            return
        reason = f"it answered nothing for {quiet_s:.1f} s and its health check failed ({result.error})"
        log.warning("server %r (%s): %s", server.name, server.url, reason)
        self.abandon(pool, server, reason)

    def abandon(self, pool: Pool, server: Server, reason: str) -> None:
        """Fail the server's movable in-flight attempts with ``reason``, if another server could take them."""
        if any(other.available for other in pool.servers if other is not server):
            moved = server.attempts.abandon_all(reason)
            self.moved[pool.name] = self.moved.get(pool.name, 0) + moved
            self.on_moved(pool.name, moved)
