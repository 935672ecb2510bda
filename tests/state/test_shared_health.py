"""Health verdicts between processes: published on change, adopted when newer, never echoed.

Two registries stand for two gateway processes; ``Bus`` is a fake state backend
that delivers every published record to every listener (the real backends are
tested in test_redis_state.py, test_shared_memory_state.py and, end to end, in
tests/scale/test_shared_state.py).
"""

from __future__ import annotations

import time
from typing import Any

from offload.pool_config import PoolConfig
from offload.registry import Registry
from offload.settings import ServerSpec
from offload.shared_health import HealthSharing
from offload.state import HealthListener, HealthRecord, MemoryState

URL = "http://127.0.0.1:5001"


class Bus(MemoryState):
    """A shared backend in one process: records reach every listener (a fake for the interface)."""

    shared = True  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[HealthListener] = []
        self.published: list[HealthRecord] = []

    def on_health(self, listener: HealthListener) -> None:
        self.listeners.append(listener)

    async def publish_health(self, record: HealthRecord) -> None:
        await super().publish_health(record)
        self.published.append(record)
        for listener in self.listeners:
            listener(record)


def process(bus: Bus, name: str) -> tuple[HealthSharing, Any]:
    registry = Registry()
    pool = registry.add_pool(
        PoolConfig(name="p", servers=[ServerSpec("e1", URL), ServerSpec("e2", "http://127.0.0.1:5002")])
    )
    for server in pool.servers:
        server.record_probe(True, 0.001, None, None)
    return HealthSharing(registry, bus, replica=name), pool


async def test_a_probe_failure_on_a_is_adopted_by_b_and_not_echoed() -> None:
    bus = Bus()
    a, pool_a = process(bus, "a")
    b, pool_b = process(bus, "b")
    await a.start()
    await b.start()
    try:
        assert await a.publish_changes() == 2  # a's first verdicts: both servers up
        # b probed after a did: a's "up" (as of a's probe) is older than b's own view, so b has its own.
        assert b.adopted == 0 and await b.publish_changes() == 2
        bus.published.clear()
        pool_a.servers[0].record_probe(False, None, "connection refused", None)
        assert await a.publish_changes() == 1
        e1_on_b = pool_b.servers[0]
        assert e1_on_b.available is False
        assert e1_on_b.exclusion() == "reported down by a: connection refused"
        assert e1_on_b.verdict_by == "a" and b.adopted >= 1
        assert await b.publish_changes() == 0  # adopted, so never published back as b's own
        assert [record.replica for record in bus.published] == ["a"]
        # A readmits it (its probe passes again): b follows.
        pool_a.servers[0].record_probe(True, 0.001, None, None)
        assert await a.publish_changes() == 1
        assert e1_on_b.available is True and e1_on_b.verdict_by == "a"
    finally:
        await a.stop()
        await b.stop()


async def test_an_older_verdict_loses_to_a_newer_own_probe() -> None:
    bus = Bus()
    b, pool_b = process(bus, "b")
    await b.start()
    server = pool_b.servers[0]
    stale = HealthRecord("p", URL, False, "refused", "a", at=time.time() - 60, ttl_s=30)
    b.adopt(stale)
    assert server.available is True and server.verdict_by is None
    fresh = HealthRecord("p", URL, False, "refused", "a", at=time.time() + 1, ttl_s=30)
    b.adopt(fresh)
    assert server.available is False
    older_than_applied = HealthRecord("p", URL, True, None, "c", at=fresh.at - 0.5, ttl_s=30)
    b.adopt(older_than_applied)
    assert server.available is False and server.verdict_by == "a"
    await b.stop()


async def test_verdicts_on_servers_this_process_does_not_have_are_ignored() -> None:
    bus = Bus()
    b, pool_b = process(bus, "b")
    b.adopt(HealthRecord("p", "http://127.0.0.1:9", False, "x", "a", at=time.time() + 1, ttl_s=30))
    b.adopt(HealthRecord("other", URL, False, "x", "a", at=time.time() + 1, ttl_s=30))
    assert all(server.available for server in pool_b.servers) and b.adopted == 0


async def test_a_process_starting_later_learns_the_verdicts_still_stored() -> None:
    bus = Bus()
    a, pool_a = process(bus, "a")
    await a.start()
    pool_a.servers[1].record_probe(False, None, "timed out", None)
    await a.publish_changes()
    await a.stop()
    late, pool_late = process(bus, "late")
    for server in pool_late.servers:
        server.last_probe_at = 0.0  # its first probe ran before the verdict
    await late.start()
    assert pool_late.servers[1].exclusion() == "reported down by a: timed out"
    assert pool_late.servers[0].available
    await late.stop()


async def test_nothing_is_shared_with_the_in_process_backend() -> None:
    registry = Registry()
    registry.add_pool(PoolConfig(name="p", servers=[ServerSpec("e1", URL)]))
    sharing = HealthSharing(registry, MemoryState(), replica="solo")
    await sharing.start()
    assert sharing.active is False and not sharing._rounds.running


async def test_an_up_published_late_is_dated_by_its_probe_and_loses_to_a_newer_down() -> None:
    bus = Bus()
    slow, _ = process(bus, "slow")  # probed first; its first tick comes after quick's news (not listening yet)
    quick, pool_quick = process(bus, "quick")
    await quick.start()
    pool_quick.servers[0].record_failure("refused", may_open=True, immediate=True)
    assert await quick.publish_changes() == 2  # e1 down (its circuit opened), e2 up
    assert await slow.publish_changes() == 2  # e1 and e2 up, as of its probes
    late_up = bus.published[-2]
    assert (late_up.replica, late_up.server, late_up.available) == ("slow", URL, True)
    assert late_up.at < bus.published[0].at  # dated by the probe, not by when it was sent
    assert pool_quick.servers[0].available is False and pool_quick.servers[0].verdict_by == "quick"
    await quick.stop()
