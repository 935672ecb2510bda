"""Keeping the registry's health facts fresh: probe rounds on a timer, and one server on demand.

Every ``probe_interval_s`` each server of each pool gets one bounded probe
(a plugin's own, or ``GET probe_path``); the result is recorded on the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from .health import Prober, ProbeResult, probe_all
from .periodic import Periodic
from .registry import Pool, Registry, Server
from .settings import GatewaySettings

log = logging.getLogger("offload.monitor")


class HealthMonitor:
    """Probes the registry's servers over an aiohttp session, once or on a timer."""

    def __init__(
        self,
        registry: Registry,
        gateway: GatewaySettings,
        session: Callable[[], aiohttp.ClientSession],
        after_round: Callable[[], object] = lambda: None,
        on_probe: Callable[[Pool, Server, bool], object] = lambda pool, server, ok: None,
    ) -> None:
        self.registry = registry
        self.on_probe = on_probe  # told every probe's verdict (metrics)
        self.gateway = gateway
        self.session = session
        self.after_round = after_round
        # Custom health probes by pool name (from plugins); other pools get the HTTP probe.
        self.probers: dict[str, Prober] = {}
        self._rounds = Periodic(
            "offload-health-probes", gateway.probe_interval_s, self._round, log, "health probe round failed"
        )

    async def probe(self, pool: Pool, servers: list[Server], timeout_s: float | None = None) -> list[ProbeResult]:
        """Probe ``servers`` of ``pool`` at once with the pool's probe; record and return the results."""
        gateway = self.gateway
        timeout = gateway.probe_timeout_s if timeout_s is None else timeout_s
        results = await probe_all(self.session(), servers, gateway.probe_path, timeout, self.probers.get(pool.name))
        for server, result in zip(servers, results, strict=True):
            self.on_probe(pool, server, result.ok)
        return results

    async def probe_now(self) -> None:
        """Probe every server of every pool once, all pools at the same time."""
        await asyncio.gather(*(self.probe(pool, pool.servers) for pool in self.registry.pools.values() if pool.servers))

    async def probe_one(self, pool: Pool, server: Server, timeout_s: float) -> ProbeResult:
        """Probe one server of ``pool`` now and record it."""
        return (await self.probe(pool, [server], timeout_s))[0]

    def use_settings(self, gateway: GatewaySettings) -> None:
        """Probe with ``gateway``'s path, timeout and interval from the next round on (a reload)."""
        self.gateway = gateway
        self._rounds.interval_s = gateway.probe_interval_s

    def start(self) -> None:
        """Probe every ``probe_interval_s`` from now on (inside a running event loop)."""
        self._rounds.start()

    async def stop(self) -> None:
        """Stop the timer (a round in progress is cancelled)."""
        await self._rounds.stop()

    async def _round(self) -> None:
        try:
            await self.probe_now()
        finally:
            self.after_round()  # idle connections are pruned even after a failed round
