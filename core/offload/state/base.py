"""What gateway processes share, as one small interface with interchangeable backends.

Four kinds of state must agree across every worker and replica of one
gateway, or the gateway cannot grow past one process:

* **windowed counters**: the local-throughput rule ("run locally while the
  device took at most ``expected_throughput`` requests in the window"), whose
  check-and-count must be one atomic step or two processes both take the
  last slot;
* **nonce sequences**: one per signing account, held exclusively from the
  moment a nonce is read until the transaction carrying it was handed over,
  so two processes never sign two transactions with one nonce;
* **health verdicts**: "server X of pool P is down (or back)", decided by one
  process and seen by the others long before their own next probe;
* **a cache**: bytes by key with a time to live.

:class:`StateBackend` is that interface. ``memory`` keeps everything in the
process (one worker, no dependency), ``shared-memory`` shares it between the
workers of one machine, ``redis://`` between machines. Backends raise
:class:`StateUnavailable` when their store cannot be reached; what to do then
(fall back to local state, or refuse a write) is the caller's decision.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import OffloadError
from ..throughput import WindowAdmission

__all__ = [
    "HealthListener",
    "HealthRecord",
    "LeaseUnavailable",
    "NonceLease",
    "StateBackend",
    "StateUnavailable",
    "WindowAdmission",
]


class StateUnavailable(OffloadError):
    """The shared store cannot be reached (or answered too slowly): a 503 that names why."""

    #: Whether the store itself is unreachable (so local state should stand in for it), as
    #: opposed to one lease being busy or lost while the store answers fine.
    outage = True

    def __init__(self, reason: str) -> None:
        super().__init__(503, f"shared state unavailable: {reason}")
        self.reason = reason


class LeaseUnavailable(StateUnavailable):
    """A nonce lease is still held by another process after waiting, or was lost: the store is fine."""

    outage = False


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """One process's verdict on one server, shared with the others.

    ``server`` is the server's URL (names may differ between configurations, a
    URL does not); ``at`` is wall-clock time (``time.time()``) when it was
    decided, so a newer verdict wins over an older one whoever made it;
    ``ttl_s`` is how long the record stays valid in the store.
    """

    pool: str
    server: str
    available: bool
    reason: str | None
    replica: str
    at: float
    ttl_s: float


class HealthListener(Protocol):
    def __call__(self, record: HealthRecord) -> None: ...


class NonceLease(Protocol):
    """Exclusive hold of one account's nonce sequence, from ``nonce_lease`` until its ``async with`` ends."""

    async def current(self) -> int | None:
        """The next nonce to use, or None when nobody knows it (ask the chain)."""
        ...

    async def advance(self, next_nonce: int) -> None:
        """Store ``next_nonce`` as the next one to use.

        Raises :class:`StateUnavailable` if the lease was lost meanwhile (it
        outlived ``hold_s``, or the store went away): the caller must then
        treat the sequence as unknown.
        """
        ...

    async def forget(self) -> None:
        """The chain's view is unknown now: the next holder asks the chain again."""
        ...


@runtime_checkable
class StateBackend(Protocol):
    """Shared state for every process of one gateway (see the module doc)."""

    #: ``memory``, ``shared-memory`` or ``redis``.
    kind: str
    #: Whether other processes see what this one writes.
    shared: bool
    #: Whether the cache (and so a claim made with :meth:`cache_add`) is seen by other processes too.
    shares_cache: bool

    async def start(self) -> None:
        """Connect and start listening for other processes' health verdicts (inside the event loop)."""
        ...

    async def close(self) -> None:
        """Stop listening and disconnect; the backend is not used afterwards."""
        ...

    async def ping(self) -> None:
        """Return if the store answers now; raise :class:`StateUnavailable` saying why not."""
        ...

    # -- windowed counters ----------------------------------------------------------------

    def admit_now(self, key: str, limit: int, window_s: float) -> WindowAdmission | None:
        """:meth:`admit` without waiting, when this backend can answer at once; None when it cannot."""
        ...

    async def admit(self, key: str, limit: int, window_s: float) -> WindowAdmission:
        """Atomically: if at most ``limit`` events are in ``key``'s window, count one more and admit it.

        The window is the last ``window_s`` seconds. Counting is conservative
        (an event may be remembered up to one fiftieth of a window too long,
        never forgotten early), so at most ``limit + 1`` events are admitted in
        any window, whatever the number of processes.
        """
        ...

    async def record(self, key: str, window_s: float) -> int:
        """Count one event in ``key``'s window unconditionally; return the count after it."""
        ...

    async def count(self, key: str, window_s: float) -> int:
        """Events in ``key``'s window now."""
        ...

    def count_now(self, key: str, window_s: float) -> int | None:
        """:meth:`count` without waiting, when this backend can answer at once; None when it cannot."""
        ...

    # -- nonce sequences ------------------------------------------------------------------

    def nonce_lease(self, account: str, hold_s: float) -> AbstractAsyncContextManager[NonceLease]:
        """Wait for and hold ``account``'s nonce sequence exclusively.

        ``hold_s`` bounds how long a holder that died may keep others waiting:
        after it, the lease may be taken over (and the old holder's
        :meth:`NonceLease.advance` fails). Raises :class:`StateUnavailable`
        when the store cannot be reached.
        """
        ...

    # -- health verdicts ------------------------------------------------------------------

    async def publish_health(self, record: HealthRecord) -> None:
        """Store ``record`` (for ``record.ttl_s``) and tell every other process now."""
        ...

    async def health_records(self, pool: str) -> list[HealthRecord]:
        """The unexpired verdicts on ``pool``'s servers, newest per server."""
        ...

    def on_health(self, listener: HealthListener) -> None:
        """Call ``listener`` with every verdict another process publishes from now on."""
        ...

    # -- cache ----------------------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        """The cached value, or None if absent or expired."""
        ...

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Cache ``value`` under ``key`` for ``ttl_s`` seconds."""
        ...

    async def cache_add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Atomically cache ``value`` only if ``key`` holds nothing; True if it was stored (a claim)."""
        ...

    async def cache_delete(self, key: str) -> None:
        """Remove ``key`` from the cache (nothing if absent)."""
        ...
