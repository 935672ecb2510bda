"""The read cache's parts: the bounded memory, coalescing, and the two levels with invalidation."""

from __future__ import annotations

import asyncio
import math

import pytest

from offload import Fresh, ReadCache
from offload.cache import BoundedCache, Coalescer
from offload.state.shared_memory import SharedMemoryState

from clocks import FakeClock


def test_bounded_cache_drops_the_least_recently_used_past_its_entry_count() -> None:
    cache = BoundedCache(max_entries=2, max_bytes=1 << 20)
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.get("a") == b"1"  # "a" is now the most recently used
    cache.set("c", b"3")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", None, b"3")
    assert len(cache) == 2 and cache.evicted == 1


def test_bounded_cache_keeps_its_byte_bound_and_refuses_one_huge_value() -> None:
    cache = BoundedCache(max_entries=100, max_bytes=800)
    for index in range(10):
        cache.set(f"k{index}", b"x" * 98)  # 100 bytes with its key
    assert cache.bytes <= 800 and len(cache) == 8
    assert cache.get("k0") is None and cache.get("k9") == b"x" * 98
    assert cache.set("huge", b"y" * 200) is False  # more than an eighth of the bytes
    assert cache.get("huge") is None and cache.bytes <= 800


def test_bounded_cache_entries_expire_by_their_own_ttl() -> None:
    clock = FakeClock()
    cache = BoundedCache(max_entries=10, max_bytes=1 << 20, clock=clock)
    cache.set("short", b"s", ttl_s=1.0)
    cache.set("forever", b"f", ttl_s=math.inf)
    assert cache.set("never", b"n", ttl_s=0) is False
    clock.now += 1.5
    assert cache.get("short") is None and cache.get("forever") == b"f" and cache.get("never") is None
    assert cache.bytes == len(b"f") + len("forever")


async def test_coalescer_runs_identical_concurrent_work_once() -> None:
    coalescer: Coalescer[int] = Coalescer()
    calls = 0
    release = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiters = [asyncio.ensure_future(coalescer.run("k", work)) for _ in range(100)]
    await asyncio.sleep(0)  # let every waiter reach the coalescer before the work ends
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert [value for value, _ in results] == [42] * 100
    assert sum(shared for _, shared in results) == 99
    assert len(coalescer) == 0


async def test_coalescer_shares_a_failure_and_survives_its_first_caller_hanging_up() -> None:
    coalescer: Coalescer[int] = Coalescer()
    release = asyncio.Event()

    async def failing() -> int:
        await release.wait()
        raise ValueError("node said no")

    first = asyncio.ensure_future(coalescer.run("k", failing))
    second = asyncio.ensure_future(coalescer.run("k", failing))
    await asyncio.sleep(0)
    first.cancel()  # the caller that started the work goes away
    release.set()
    with pytest.raises(ValueError, match="node said no"):
        await second
    with pytest.raises(asyncio.CancelledError):
        await first
    # The next caller starts afresh: a failure is never kept.
    assert (await coalescer.run("k", _forty_two)) == (42, False)


async def _forty_two() -> int:
    return 42


def _cache(**kwargs: object) -> tuple[ReadCache, list[str]]:
    outcomes: list[str] = []
    cache = ReadCache("p", max_entries=100, max_bytes=1 << 20, on_outcome=outcomes.append, **kwargs)  # type: ignore[arg-type]
    return cache, outcomes


class Producer:
    """Produces one fixed :class:`Fresh` and counts its runs."""

    def __init__(self, fresh: Fresh[str]) -> None:
        self.fresh = fresh
        self.runs = 0

    async def __call__(self) -> Fresh[str]:
        self.runs += 1
        return self.fresh


async def test_load_keeps_what_the_producer_says_and_counts_each_outcome() -> None:
    cache, outcomes = _cache()
    produce = Producer(Fresh("answer", b"answer", 60.0))
    assert await cache.load("k", produce, bytes.decode) == ("answer", "miss")
    assert await cache.load("k", produce, bytes.decode) == ("answer", "hit")
    assert produce.runs == 1
    assert outcomes == ["miss", "hit"]
    status = cache.status()
    assert (status["hit"], status["miss"], status["stored"], status["entries"]) == (1, 1, 1, 1)


async def test_load_keeps_nothing_the_producer_does_not_mark() -> None:
    cache, _ = _cache()
    error_answer = Producer(Fresh("error"))  # no bytes, no ttl: handed over, kept nowhere
    for _ in range(3):
        assert await cache.load("k", error_answer, bytes.decode) == ("error", "miss")
    assert error_answer.runs == 3 and cache.status()["entries"] == 0


async def test_concurrent_misses_are_coalesced_into_one_producer_run() -> None:
    cache, outcomes = _cache()
    release = asyncio.Event()
    produced = 0

    async def produce() -> Fresh[str]:
        nonlocal produced
        produced += 1
        await release.wait()
        return Fresh("v", b"v", 60.0)

    waiters = [asyncio.ensure_future(cache.load("k", produce, bytes.decode)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert produced == 1
    assert sorted(outcome for _, outcome in results) == ["coalesced"] * 19 + ["miss"]
    assert outcomes.count("coalesced") == 19


async def test_an_answer_fetched_across_an_invalidation_is_handed_over_but_not_kept() -> None:
    cache, _ = _cache()
    asked, release = asyncio.Event(), asyncio.Event()

    async def produce() -> Fresh[str]:
        asked.set()  # the question is on its way to the node
        await release.wait()
        return Fresh("old chain", b"old chain", math.inf)

    waiter = asyncio.ensure_future(cache.load("k", produce, bytes.decode))
    await asked.wait()
    await cache.invalidate("reorg at block 7")
    release.set()
    assert await waiter == ("old chain", "miss")
    assert cache.get_now("k") is None and cache.status()["invalidations"] == 1


async def test_shared_store_hands_entries_and_invalidations_to_another_process() -> None:
    state = SharedMemoryState.create(windows=4, nonce_slots=4, health_slots=4)
    first, _ = _cache(state=state)
    second, _ = _cache(state=state)

    async def produce() -> Fresh[str]:
        return Fresh("v", b"v", math.inf)

    async def must_not_run() -> Fresh[str]:
        raise AssertionError("the shared entry should have answered")

    await first.load("k", produce, bytes.decode)
    assert await second.load("k", must_not_run, bytes.decode) == ("v", "hit")
    await first.invalidate("reorg")
    assert await second.sync_generation() is True
    assert second.get_now("k") is None
    assert await second.get("k") is None  # the shared entry is out of reach under the new generation
    assert await second.sync_generation() is False  # adopted once
