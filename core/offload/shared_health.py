"""Health verdicts shared between the gateway's processes: one ejects, all stop sending.

Each process still probes and ejects on its own; this adds what the others
found. Every ``tick_s`` the process looks for servers whose *own* verdict
changed (down: its probe fails or its circuit opened; up: its probe passes
and its circuit is closed) and publishes each change through the state
backend, which stores it with an expiry and tells every other process at once
(Redis pub/sub, or shared memory polled by each worker).

A verdict from another process is adopted when it is newer than this
process's own last probe of that server: "down" makes the server fail its
probe here too (until the next own probe says otherwise), "up" passes it and
lets an open circuit try again. The newest observation wins, whoever made
it, and ``GET /servers`` shows who (``decided_by``).
"""

from __future__ import annotations

import logging
import os
import socket
import time

from .breaker import CLOSED, OPEN
from .periodic import Periodic
from .registry import Registry, Server
from .state import HealthRecord, StateBackend, StateUnavailable

log = logging.getLogger("offload.health")

# How often own verdicts are compared with what was last published.
TICK_S = 0.2
# A published verdict stays in the store at least this long (a process starting later learns it).
MIN_RECORD_TTL_S = 10.0


def default_replica_name() -> str:
    """``hostname/pid``: unique among the processes of a deployment."""
    return f"{socket.gethostname()}/{os.getpid()}"


def own_verdict(server: Server) -> bool | None:
    """True (up), False (down) or None (undecided: not probed yet, or half-open) by this process's own view."""
    if server.probe_ok is False or server.breaker.refresh() == OPEN:
        return False
    if server.probe_ok is True and server.breaker.state == CLOSED:
        return True
    return None


def observed_at(server: Server, available: bool) -> float:
    """When this process saw what its verdict says: a failure just now (verdicts are compared
    every tick), a server "up" only as of its last passed probe or answered request. An "up"
    from an old probe must not override another process's newer "down"."""
    now = time.time()
    if not available:
        return now
    seen = [moment for moment in (server.last_probe_at, server.last_success_at) if moment is not None]
    return max(seen) if seen else now


class HealthSharing:
    """Publishes this process's health verdicts and adopts newer ones from the others."""

    def __init__(
        self, registry: Registry, state: StateBackend, replica: str = "", probe_interval_s: float = 5.0
    ) -> None:
        self.registry = registry
        self.state = state
        self.replica = replica or default_replica_name()
        self.ttl_s = max(MIN_RECORD_TTL_S, 3 * probe_interval_s)
        self.published = 0  # verdicts this process shared
        self.adopted = 0  # verdicts of other processes taken over
        self._last: dict[tuple[str, str], bool] = {}  # the verdict known to be shared, per (pool, URL)
        self._rounds = Periodic(
            "offload-health-sharing", TICK_S, self.publish_changes, log, "publishing health verdicts failed"
        )

    @property
    def active(self) -> bool:
        """Whether anyone else can see this process's verdicts (not with the in-process backend)."""
        return self.state.shared

    async def start(self) -> None:
        """Learn the verdicts already shared, then listen and publish (only for a shared backend)."""
        if not self.active:
            return
        self.state.on_health(self.adopt)
        for pool_name in self.registry.pools:
            try:
                records = await self.state.health_records(pool_name)
            except StateUnavailable:
                break  # nothing to learn now; the listener catches up when the store is back
            for record in records:
                self.adopt(record)
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def publish_changes(self) -> int:
        """Publish every server whose own verdict changed since it was last shared; returns how many."""
        changed = 0
        for pool in self.registry.pools.values():
            for server in pool.servers:
                verdict = own_verdict(server)
                key = (pool.name, server.url)
                if verdict is None or self._last.get(key) == verdict:
                    continue
                self._last[key] = verdict
                observed = observed_at(server, verdict)
                server.verdict_by, server.verdict_at = self.replica, observed
                record = HealthRecord(
                    pool=pool.name,
                    server=server.url,
                    available=verdict,
                    reason=None if verdict else server.exclusion(),
                    replica=self.replica,
                    at=observed,
                    ttl_s=self.ttl_s,
                )
                await self.state.publish_health(record)
                self.published += 1
                changed += 1
        return changed

    def adopt(self, record: HealthRecord) -> None:
        """Take over another process's verdict if it is newer than what this process saw itself."""
        if record.replica == self.replica:
            return
        pool = self.registry.pools.get(record.pool)
        server = next((s for s in pool.servers if s.url == record.server), None) if pool else None
        if server is None:
            return
        if server.last_probe_at is not None and server.last_probe_at >= record.at:
            return  # our own probe is newer
        if server.verdict_at is not None and server.verdict_at >= record.at:
            return  # an even newer verdict was already applied
        if record.available:
            server.probe_ok = True
            server.probe_error = None
            server.breaker.on_probe_success()  # an open circuit may try again at once
        else:
            server.probe_ok = False
            server.probe_error = f"reported down by {record.replica}: {record.reason or 'unavailable'}"
            server.last_error = server.probe_error
        server.verdict_by, server.verdict_at = record.replica, record.at
        # Adopted, not observed: never published back as this process's own.
        self._last[(record.pool, record.server)] = record.available
        self.adopted += 1

    def status(self) -> dict[str, object]:
        """For ``GET /servers``: this process's name and what it shared and adopted."""
        return {"replica": self.replica, "published": self.published, "adopted": self.adopted}
