"""A shared store that may go away: fall back to local state, say so, and resume sharing by itself.

When Redis is down or slow, reads and tasks must keep working on what this
process knows alone, and writes must be refused with a reason rather than
guess a nonce. :class:`ResilientState` wraps the shared backend with an
in-process :class:`~offload.state.memory.MemoryState`:

* windows, health verdicts and the cache use the local state while the store
  is unreachable (each use is counted in ``fallbacks``);
* nonce leases raise :class:`StateUnavailable` (a 503 naming the reason);
* after one failure the store is not asked again on the request path until a
  background ping every ``recheck_s`` finds it back, so a dead store costs
  one timeout, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ..throughput import WindowAdmission
from .base import HealthListener, HealthRecord, NonceLease, StateBackend, StateUnavailable
from .memory import MemoryState

log = logging.getLogger("offload.state")

T = TypeVar("T")

# How often a store found down is pinged to find out whether it is back.
RECHECK_S = 0.5


class ResilientState:
    """``primary`` (a shared store) with ``local`` as the fallback while it is unreachable."""

    shared = True

    def __init__(self, primary: StateBackend, local: MemoryState | None = None, *, recheck_s: float = RECHECK_S):
        self.primary = primary
        self.local = local or MemoryState()
        self.kind = primary.kind
        self.recheck_s = recheck_s
        # Why the store is not used now (None while it is), and since when (wall clock).
        self.degraded_reason: str | None = None
        self.degraded_since: float | None = None
        self.fallbacks = 0  # operations answered from local state because the store was unreachable
        self.outages = 0  # times the store was found unreachable
        self._recheck: asyncio.Task[None] | None = None

    # -- availability ---------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    def status(self) -> dict[str, Any]:
        """For ``/health`` and ``/servers``: which store, whether it is used now, and why not."""
        return {
            "backend": self.kind,
            "shared": not self.degraded,
            "degraded_reason": self.degraded_reason,
            "degraded_since": self.degraded_since,
            "fallbacks": self.fallbacks,
            "outages": self.outages,
        }

    def _mark_down(self, error: StateUnavailable) -> None:
        if not error.outage:
            return
        if self.degraded_reason is None:
            self.outages += 1
            self.degraded_since = time.time()
            log.warning("shared state unavailable, using this process's own state: %s", error.reason)
            if self._recheck is None or self._recheck.done():
                with contextlib.suppress(RuntimeError):  # no running loop: the next call rechecks
                    self._recheck = asyncio.get_running_loop().create_task(self._wait_for_store())
        self.degraded_reason = error.reason

    async def _wait_for_store(self) -> None:
        while self.degraded_reason is not None:
            await asyncio.sleep(self.recheck_s)
            try:
                await self.primary.ping()
            except StateUnavailable as error:
                self.degraded_reason = error.reason
                continue
            log.warning("shared state is back after %.1f s", time.time() - (self.degraded_since or time.time()))
            self.degraded_reason = None
            self.degraded_since = None

    async def _either(self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        """``shared()`` while the store is up; ``local()`` when it is down or fails now."""
        if self.degraded_reason is None:
            try:
                return await shared()
            except StateUnavailable as error:
                self._mark_down(error)
        self.fallbacks += 1
        return await local()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.primary.start()

    async def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recheck
        await self.primary.close()

    async def ping(self) -> None:
        await self.primary.ping()

    # -- windowed counters ----------------------------------------------------------------

    def admit_now(self, key: str, limit: int, window_s: float) -> WindowAdmission | None:
        if self.degraded_reason is None:
            return None
        self.fallbacks += 1
        return self.local.admit_now(key, limit, window_s)

    async def admit(self, key: str, limit: int, window_s: float) -> WindowAdmission:
        return await self._either(
            lambda: self.primary.admit(key, limit, window_s), lambda: self.local.admit(key, limit, window_s)
        )

    async def record(self, key: str, window_s: float) -> int:
        return await self._either(lambda: self.primary.record(key, window_s), lambda: self.local.record(key, window_s))

    def count_now(self, key: str, window_s: float) -> int | None:
        return self.local.count_now(key, window_s) if self.degraded_reason is not None else None

    async def count(self, key: str, window_s: float) -> int:
        return await self._either(lambda: self.primary.count(key, window_s), lambda: self.local.count(key, window_s))

    # -- nonce sequences ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def nonce_lease(self, account: str, hold_s: float) -> AsyncIterator[NonceLease]:
        # A write must never guess: with the store down there is no lease, only a 503 saying why.
        if self.degraded_reason is not None:
            raise StateUnavailable(self.degraded_reason)
        lease_context = self.primary.nonce_lease(account, hold_s)
        try:
            lease = await lease_context.__aenter__()
        except StateUnavailable as error:
            if error.outage:  # a lease busy for too long is a 503 of its own, not a store gone
                self._mark_down(error)
            raise
        # Errors inside the lease (a lost lease, a failed send) are the holder's to report, not an outage.
        try:
            yield lease
        except BaseException as error:
            if not await lease_context.__aexit__(type(error), error, error.__traceback__):
                raise
        else:
            await lease_context.__aexit__(None, None, None)

    # -- health verdicts ------------------------------------------------------------------

    async def publish_health(self, record: HealthRecord) -> None:
        await self._either(lambda: self.primary.publish_health(record), lambda: self.local.publish_health(record))

    async def health_records(self, pool: str) -> list[HealthRecord]:
        return await self._either(lambda: self.primary.health_records(pool), lambda: self.local.health_records(pool))

    def on_health(self, listener: HealthListener) -> None:
        self.primary.on_health(listener)

    # -- cache ----------------------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        return await self._either(lambda: self.primary.cache_get(key), lambda: self.local.cache_get(key))

    @property
    def shares_cache(self) -> bool:
        return self.primary.shares_cache

    async def cache_add(self, key: str, value: bytes, ttl_s: float) -> bool:
        # A claim taken in local state would let another replica claim the same key: refuse instead.
        return await self._shared_only(lambda: self.primary.cache_add(key, value, ttl_s))

    async def cache_delete(self, key: str) -> None:
        await self._shared_only(lambda: self.primary.cache_delete(key))

    async def _shared_only(self, shared: Callable[[], Awaitable[T]]) -> T:
        """``shared()``, or :class:`StateUnavailable` while the store is down (no local stand-in)."""
        if self.degraded_reason is not None:
            raise StateUnavailable(self.degraded_reason)
        try:
            return await shared()
        except StateUnavailable as error:
            self._mark_down(error)
            raise

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._either(
            lambda: self.primary.cache_set(key, value, ttl_s), lambda: self.local.cache_set(key, value, ttl_s)
        )
