"""State kept in this process only: today's behaviour for one worker, with no dependency.

Also the local fallback of a shared backend whose store is down (see
:mod:`offload.state.resilient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from ..throughput import SlidingWindowCounter
from .base import HealthListener, HealthRecord, NonceLease, WindowAdmission

# Entries the in-process cache keeps at most (the oldest used go first).
DEFAULT_CACHE_ENTRIES = 10_000


class MemoryNonceLease:
    """A lease on an account's sequence held in this process (it cannot be lost)."""

    def __init__(self, sequences: dict[str, int], account: str) -> None:
        self._sequences = sequences
        self._account = account

    async def current(self) -> int | None:
        return self._sequences.get(self._account)

    async def advance(self, next_nonce: int) -> None:
        self._sequences[self._account] = next_nonce

    async def forget(self) -> None:
        self._sequences.pop(self._account, None)


class MemoryState:
    """Every kind of state in plain Python objects; nothing is shared with other processes."""

    kind = "memory"
    shared = False
    shares_cache = False

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._windows: dict[str, SlidingWindowCounter] = {}
        self._sequences: dict[str, int] = {}
        self._nonce_locks: dict[str, asyncio.Lock] = {}
        self._health: dict[tuple[str, str], tuple[HealthRecord, float]] = {}
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._cache_entries = cache_entries

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    # -- windowed counters ----------------------------------------------------------------

    def window(self, key: str, window_s: float) -> SlidingWindowCounter:
        """The counter behind ``key`` (created on first use with ``window_s``)."""
        counter = self._windows.get(key)
        if counter is None or counter.window_s != window_s:
            counter = self._windows[key] = SlidingWindowCounter(window_s, clock=self._clock)
        return counter

    def admit_now(self, key: str, limit: int, window_s: float) -> WindowAdmission:
        return self.window(key, window_s).admit(limit)

    async def admit(self, key: str, limit: int, window_s: float) -> WindowAdmission:
        return self.admit_now(key, limit, window_s)

    async def record(self, key: str, window_s: float) -> int:
        counter = self.window(key, window_s)
        counter.record()
        return counter.count()

    def count_now(self, key: str, window_s: float) -> int:
        return self.window(key, window_s).count()

    async def count(self, key: str, window_s: float) -> int:
        return self.count_now(key, window_s)

    # -- nonce sequences ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def nonce_lease(self, account: str, hold_s: float) -> AsyncIterator[NonceLease]:
        lock = self._nonce_locks.setdefault(account, asyncio.Lock())
        async with lock:
            yield MemoryNonceLease(self._sequences, account)

    # -- health verdicts ------------------------------------------------------------------

    async def publish_health(self, record: HealthRecord) -> None:
        # No other process to tell; kept so that health_records answers like a shared store.
        self._health[(record.pool, record.server)] = (record, self._clock() + record.ttl_s)

    async def health_records(self, pool: str) -> list[HealthRecord]:
        now = self._clock()
        return [record for (name, _), (record, until) in self._health.items() if name == pool and until > now]

    def on_health(self, listener: HealthListener) -> None:
        return None  # nobody else publishes

    # -- cache ----------------------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        value, until = entry
        if until <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return value

    async def cache_add(self, key: str, value: bytes, ttl_s: float) -> bool:
        if ttl_s <= 0 or await self.cache_get(key) is not None:
            return False
        await self.cache_set(key, value, ttl_s)
        return True

    async def cache_delete(self, key: str) -> None:
        self._cache.pop(key, None)

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        self._cache[key] = (value, self._clock() + ttl_s)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
