"""A read cache with request coalescing: memory first, then the gateway's shared store.

Each pool that caches has one :class:`ReadCache` (``PluginContext.read_cache()``).
A lookup tries, in order: this process's :class:`~offload.cache.bounded.BoundedCache`
(no await), the shared store when the gateway has one that other processes see
(``--workers N``: shared memory; replicas: Redis), and then the work itself,
coalesced so that identical concurrent misses run it once. What to keep, and
for how long, is the caller's decision, made from each fresh answer: errors and
answers that may still change are handed to the waiting callers and kept nowhere.

:meth:`ReadCache.invalidate` forgets everything at once (e.g. after a chain
reorganisation): memory is cleared, and the shared entries become unreachable
because every shared key carries a *generation* that invalidation replaces and
publishes; other processes adopt it on their next :meth:`ReadCache.sync_generation`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from .bounded import BoundedCache
from .coalesce import Coalescer

if TYPE_CHECKING:
    from ..state import StateBackend

T = TypeVar("T")

#: How an answer was obtained: from a cache, by waiting for an identical request's work, or by doing it.
CacheOutcome = Literal["hit", "coalesced", "miss"]
OUTCOMES: tuple[CacheOutcome, ...] = ("hit", "coalesced", "miss")
# Entries kept "forever" stay this long in the shared store, which has no LRU of ours to bound it.
SHARED_MAX_TTL_S = 86_400.0

log = logging.getLogger("offload.cache")


@dataclass(frozen=True, slots=True)
class Fresh(Generic[T]):
    """What the work produced: ``value`` for every waiting caller, and what to keep of it.

    ``encoded`` is ``value`` as bytes (what a later hit decodes); None, or a
    ``ttl_s`` of zero, keeps nothing (errors, answers that may still change).
    ``math.inf`` keeps it until it is evicted (in memory) or for a day (shared).
    """

    value: T
    encoded: bytes | None = None
    ttl_s: float = 0.0


class ReadCache:
    """One pool's cache: bounded memory, the shared store behind it, and coalescing in front of the work."""

    def __init__(
        self,
        name: str,
        *,
        max_entries: int,
        max_bytes: int,
        state: StateBackend | None = None,
        on_outcome: Callable[[CacheOutcome], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.memory = BoundedCache(max_entries, max_bytes, clock=clock or time.monotonic)
        self.state = state
        self._on_outcome = on_outcome
        self._coalescer: Coalescer[Fresh[object]] = Coalescer()
        self.generation = "0"
        self.counts: dict[str, int] = dict.fromkeys(
            ("hit", "coalesced", "miss", "stored", "invalidations", "shared_errors"), 0
        )

    # -- looking up -------------------------------------------------------------------------

    def get_now(self, key: str) -> bytes | None:
        """The value this process keeps under ``key``, without waiting (and without counting it)."""
        return self.memory.get(key)

    async def get(self, key: str) -> bytes | None:
        """The value under ``key`` from memory or the shared store (copied into memory); None if neither has it."""
        value = self.memory.get(key)
        if value is not None or not self._shared:
            return value
        try:
            value = await self.state.cache_get(self._shared_key(key))  # type: ignore[union-attr]
        except Exception as exc:  # a cache that cannot be read is a miss, never a failed request
            self._shared_failed("read", exc)
            return None
        if value is not None:
            self.memory.set(key, value)
        return value

    async def load(
        self,
        key: str,
        produce: Callable[[], Awaitable[Fresh[T]]],
        decode: Callable[[bytes], T],
        *,
        coalesce: bool = True,
    ) -> tuple[T, CacheOutcome]:
        """The answer for ``key``: kept (decoded), another caller's identical work, or ``produce()``'s.

        ``produce`` runs once for all callers of ``key`` at the same time (unless
        ``coalesce`` is False); its exception reaches each of them and is kept nowhere.
        """
        kept = await self.get(key)
        if kept is not None:
            self.count("hit")
            return decode(kept), "hit"
        if not coalesce:
            fresh = await self._produce_and_keep(key, produce)
            self.count("miss")
            return fresh.value, "miss"
        fresh_any, shared = await self._coalescer.run(key, lambda: self._produce_and_keep(key, produce))
        outcome: CacheOutcome = "coalesced" if shared else "miss"
        self.count(outcome)
        return fresh_any.value, outcome  # type: ignore[return-value]

    async def coalesce(self, key: str, produce: Callable[[], Awaitable[T]]) -> tuple[T, CacheOutcome]:
        """``produce()``'s answer shared with identical concurrent callers, kept nowhere: "coalesced" or "miss"."""

        async def fresh() -> Fresh[T]:
            return Fresh(await produce())

        fresh_any, shared = await self._coalescer.run(key, fresh)
        outcome: CacheOutcome = "coalesced" if shared else "miss"
        self.count(outcome)
        return fresh_any.value, outcome  # type: ignore[return-value]

    def count(self, outcome: CacheOutcome) -> None:
        """Count one answer obtained as ``outcome`` (for callers that serve a hit themselves)."""
        self.counts[outcome] += 1
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    # -- keeping ----------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, ttl_s: float = math.inf) -> None:
        """Keep ``value`` under ``key`` for ``ttl_s`` seconds, here and in the shared store."""
        if ttl_s <= 0:
            return
        if self.memory.set(key, value, ttl_s):
            self.counts["stored"] += 1
        if self._shared:
            try:
                await self.state.cache_set(  # type: ignore[union-attr]
                    self._shared_key(key), value, min(ttl_s, SHARED_MAX_TTL_S)
                )
            except Exception as exc:  # too large for a slot, or the store is away: memory still has it
                self._shared_failed("write", exc)

    async def _produce_and_keep(self, key: str, produce: Callable[[], Awaitable[Fresh[T]]]) -> Fresh[T]:
        generation = self.generation
        fresh = await produce()
        # An answer fetched before an invalidation may be from the old chain: hand it over, keep nothing.
        if fresh.encoded is not None and fresh.ttl_s > 0 and generation == self.generation:
            await self.put(key, fresh.encoded, fresh.ttl_s)
        return fresh

    # -- forgetting -------------------------------------------------------------------------

    async def invalidate(self, reason: str) -> None:
        """Forget every entry, in this process and (by a new generation) for every process sharing the store."""
        self._forget_all(secrets.token_hex(8), reason)
        if self._shared:
            try:
                await self.state.cache_set(  # type: ignore[union-attr]
                    self._generation_key, self.generation.encode(), SHARED_MAX_TTL_S
                )
            except Exception as exc:
                self._shared_failed("publish the generation", exc)

    async def sync_generation(self) -> bool:
        """Adopt the generation another process published (forgetting this process's entries); True if it did."""
        if not self._shared:
            return False
        try:
            published = await self.state.cache_get(self._generation_key)  # type: ignore[union-attr]
        except Exception as exc:
            self._shared_failed("read the generation", exc)
            return False
        if published is None or published.decode(errors="replace") == self.generation:
            return False
        self._forget_all(published.decode(errors="replace"), "another process invalidated the cache")
        return True

    def _forget_all(self, generation: str, reason: str) -> None:
        dropped = self.memory.clear()
        self.generation = generation
        self.counts["invalidations"] += 1
        log.warning("cache %s: invalidated (%s): %d entries dropped", self.name, reason, dropped)

    # -- reporting --------------------------------------------------------------------------

    def status(self) -> dict[str, int | bool]:
        """Counts and size, as ``GET /servers`` shows them."""
        return {
            **self.counts,
            "entries": len(self.memory),
            "bytes": self.memory.bytes,
            "evicted": self.memory.evicted,
            "in_flight": len(self._coalescer),
            "shared": self._shared,
        }

    # -- the shared store -------------------------------------------------------------------

    @property
    def _shared(self) -> bool:
        return self.state is not None and self.state.shares_cache

    @property
    def _generation_key(self) -> str:
        return f"cache:{self.name}:generation"

    def _shared_key(self, key: str) -> str:
        # Hashed: a call's key can be kilobytes, and a shared-memory slot holds a short key only.
        digest = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
        return f"cache:{self.name}:{self.generation}:{digest}"

    def _shared_failed(self, what: str, exc: Exception) -> None:
        self.counts["shared_errors"] += 1
        log.debug("cache %s: could not %s in the shared store: %s", self.name, what, exc)
