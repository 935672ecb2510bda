"""The stall watch's decisions, with a probe the test answers (real hung servers: test_upstream_faults.py)."""

from __future__ import annotations

import asyncio

from offload.health import ProbeResult
from offload.pool_config import PoolConfig
from offload.registry import Pool, Registry, Server
from offload.settings import ServerSpec
from offload.stalls import StallWatch


class AnsweredProbe:
    """A probe whose verdict the test sets; it records whom it probed and with what timeout."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, pool: Pool, server: Server, timeout_s: float) -> ProbeResult:
        self.calls.append((server.name, timeout_s))
        return ProbeResult(ok=self.ok, error=None if self.ok else "probe failed: timed out")


def registry_of(*names: str, stall_after_s: float = 0.5) -> Registry:
    registry = Registry()
    specs = tuple(ServerSpec(name, f"http://127.0.0.1:{6000 + index}") for index, name in enumerate(names))
    registry.add_pool(PoolConfig(name="p", servers=specs, stall_after_s=stall_after_s))
    return registry


async def waiting_attempt(server: Server) -> asyncio.Task[None]:
    """A task standing for an attempt in flight on ``server``."""
    attempt = asyncio.create_task(asyncio.Event().wait())
    server.attempts.running.add(attempt)
    server.inflight += 1
    await asyncio.sleep(0)  # let it start waiting
    return attempt


async def settle(watch: StallWatch) -> None:
    await asyncio.gather(*watch._checks)


async def test_a_quiet_server_whose_check_fails_loses_its_attempts() -> None:
    registry = registry_of("hung", "other")
    hung = registry.pool("p").find("hung")
    attempt = await waiting_attempt(hung)
    probe = AnsweredProbe(ok=False)
    watch = StallWatch(registry, probe, probe_timeout_s=1.0)
    watch.look(now=hung.last_progress + 0.4)  # not quiet long enough yet
    assert probe.calls == []
    watch.look(now=hung.last_progress + 0.6)
    await settle(watch)
    assert probe.calls == [("hung", 1.0)]
    assert attempt.cancelling() == 1 and hung.attempts.was_abandoned(attempt)
    assert "answered nothing for 0.6 s" in hung.attempts.reason and watch.moved == {"p": 1}


async def test_a_slow_server_that_answers_its_check_keeps_its_attempts() -> None:
    registry = registry_of("slow", "other")
    slow = registry.pool("p").find("slow")
    slow.latency_ewma_s = 2.0  # it usually takes 2 s: quiet for 3 s is normal
    attempt = await waiting_attempt(slow)
    probe = AnsweredProbe(ok=True)
    watch = StallWatch(registry, probe, probe_timeout_s=1.0)
    watch.look(now=slow.last_progress + 3.0)
    assert probe.calls == []
    watch.look(now=slow.last_progress + 4.5)
    await settle(watch)
    assert probe.calls == [("slow", 4.0)]  # twice its usual latency to answer the check
    assert attempt.cancelling() == 0 and slow.last_progress > 0
    attempt.cancel()


async def test_attempts_stay_when_no_other_server_could_take_them() -> None:
    registry = registry_of("only")
    only = registry.pool("p").find("only")
    attempt = await waiting_attempt(only)
    watch = StallWatch(registry, AnsweredProbe(ok=False), probe_timeout_s=1.0)
    watch.look(now=only.last_progress + 1.0)
    await settle(watch)
    assert attempt.cancelling() == 0 and watch.moved == {}
    attempt.cancel()


async def test_a_server_its_probes_found_down_loses_its_attempts_at_once_and_off_means_off() -> None:
    registry = registry_of("down", "other")
    down = registry.pool("p").find("down")
    down.record_probe(False, None, "probe failed: refused", None)
    attempt = await waiting_attempt(down)
    probe = AnsweredProbe(ok=True)
    StallWatch(registry, probe, probe_timeout_s=1.0).look(now=down.last_progress)
    assert probe.calls == [] and attempt.cancelling() == 1
    assert "probe failed: refused" in down.attempts.reason
    off = registry_of("down", "other", stall_after_s=0)
    muted = off.pool("p").find("down")
    muted.record_probe(False, None, "probe failed: refused", None)
    kept = await waiting_attempt(muted)
    StallWatch(off, probe, probe_timeout_s=1.0).look(now=muted.last_progress + 100)
    assert kept.cancelling() == 0
    for task in (attempt, kept):
        task.cancel()
