"""``Idempotency-Key``: a retried write answers what the first one did instead of sending again.

A client that lost an answer (a timeout, a dropped connection) cannot know whether
its write was applied; retrying it blindly may apply it twice. With the same key
(and the same operator) a retry gets the first request's outcome back. A different
request under a key already used is refused (422), as Stripe and the IETF draft
``draft-ietf-httpapi-idempotency-key-header`` do.

The store is in memory, per gateway process. With a state backend whose cache
is shared (Redis), :class:`SharedClaims` adds a claim on each key there, so a
retry that a balancer sends to another replica finds the first request too:
it waits for it, or gets its stored answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from offload import OffloadError, StateBackend, StateUnavailable

HEADER = "Idempotency-Key"
# Stripe's limit; longer keys are not keys a client generates, only a way to fill memory.
MAX_KEY_CHARS = 255
DEFAULT_MAX_KEYS = 10_000
DEFAULT_TTL_S = 24 * 3600.0  # Stripe keeps keys for 24 hours
# What a retry that finds its key's first request still running is told to wait before asking again.
RETRY_AFTER_S = 1

# A claim outlives its first request's longest wait by this much, so it never lapses while that runs.
CLAIM_SLACK_S = 30.0
# How often a retry on another replica looks whether the first request finished.
SHARED_POLL_S = 0.05

V = TypeVar("V")
log = logging.getLogger("offload.contracts")


class KeyRefused(OffloadError):
    """The request's ``Idempotency-Key`` cannot be used: malformed (400), another request's (422),
    its first request still running (409), or no room left for it (503)."""


def parse_key(values: list[str]) -> str | None:
    """The key from the request's ``Idempotency-Key`` header values; None without one.

    Raises a 400 :class:`KeyRefused` for a key that is empty, too long, not printable
    ASCII, or sent twice. A key quoted as a structured-field string (``"abc"``, the
    IETF draft's form) counts without its quotes.
    """
    if not values:
        return None
    if len(values) > 1:
        raise KeyRefused(400, f"send one {HEADER} header, not {len(values)}")
    key = values[0].strip()
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        key = key[1:-1]
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= char <= "~" for char in key):
        raise KeyRefused(
            400,
            f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters "
            f"(got {len(key)} characters{'' if key.isascii() else ', not all ASCII'})",
        )
    return key


def fingerprint(*parts: Any) -> str:
    """A digest of what a request asks for: a retry must ask for exactly the same."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def operator_scope(authorization: str | None) -> str:
    """Whose keys these are: a digest of the credential, so one caller's keys never answer another's.

    Only the digest is kept: the token itself never enters the store.
    """
    return hashlib.sha256((authorization or "").encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class _Entry(Generic[V]):
    """One key: what it was used for, and the first request's outcome once there is one."""

    fingerprint: str
    created: float
    # Set when the first request is running; done once its outcome is stored or released.
    running: asyncio.Task[tuple[V, bool]] | None = None
    outcome: V | None = None
    stored: bool = False


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a first request's failure as seen: its own caller may have gone away, and waiters only retry."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class SharedRecord:
    """What the shared store holds for a key: the request it was used for, and its answer once stored."""

    fingerprint: str
    done: bool
    value: Any = None


class SharedClaims:
    """Claims on keys in the gateway's shared state (``PluginContext.state``), seen by every replica.

    ``state`` is asked anew on each use (workers attach their state only once
    they start); claims are made only when its cache is shared across
    processes. ``encode``/``decode`` turn an answer into JSON-ready data and back.
    """

    def __init__(
        self,
        state: Callable[[], StateBackend],
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
        *,
        compact: Callable[[Any], Any] | None = None,
        poll_s: float = SHARED_POLL_S,
    ) -> None:
        self.state = state
        self.encode = encode
        self.decode = decode
        # A smaller stand-in for an answer the store has no room for (e.g. only its transaction,
        # whose outcome a replay looks up again); None: such an answer is not shared.
        self.compact = compact
        self.poll_s = poll_s

    def active(self) -> bool:
        """Whether other processes see the claims (a Redis-backed state), so they are worth making."""
        return bool(getattr(self.state(), "shares_cache", False))

    @staticmethod
    def key_for(scope: str, key: str) -> str:
        """The store's key: a digest, so neither the key nor the token's digest is stored as given."""
        return "idempotency:" + hashlib.sha256(f"{scope}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()

    async def claim(self, shared_key: str, request_fingerprint: str, ttl_s: float) -> bool:
        """Take the key for this process's first request; False if another request has it."""
        record = json.dumps({"fingerprint": request_fingerprint, "done": False}).encode()
        return await self.state().cache_add(shared_key, record, ttl_s)

    async def read(self, shared_key: str) -> SharedRecord | None:
        """The key's record, or None if it is free (released, expired, or never used)."""
        raw = await self.state().cache_get(shared_key)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            value = self.decode(record["value"]) if record["done"] else None
            return SharedRecord(str(record["fingerprint"]), bool(record["done"]), value)
        except (ValueError, KeyError, TypeError):
            return None  # unreadable (written by another version): treated as free

    async def finish(self, shared_key: str, request_fingerprint: str, value: Any, ttl_s: float) -> None:
        """Store the first request's answer for every later retry (its compact form if it does not fit)."""
        record = {"fingerprint": request_fingerprint, "done": True, "value": self.encode(value)}
        try:
            await self.state().cache_set(shared_key, json.dumps(record, default=str).encode(), ttl_s)
        except StateUnavailable as error:
            if error.outage or self.compact is None:
                raise
            # The store is there but the answer does not fit its slot: keep what a replay needs.
            record["value"] = self.encode(self.compact(value))
            await self.state().cache_set(shared_key, json.dumps(record, default=str).encode(), ttl_s)

    async def release(self, shared_key: str) -> None:
        """Free the key: nothing was applied, so a retry may run again."""
        await self.state().cache_delete(shared_key)


class IdempotencyStore(Generic[V]):
    """Keys of writes and their first outcomes, bounded in count and age, safe under concurrency.

    A second request with a key whose first request still runs **waits** for it (at
    most ``wait_s``) and then answers the same; past that it is refused with 409 and
    ``Retry-After``. The first request's action runs as its own task, so a caller that
    goes away does not cancel a write half-way: its outcome is still stored for the retry.
    """

    def __init__(
        self,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        ttl_s: float = DEFAULT_TTL_S,
        wait_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedClaims | None = None,
    ) -> None:
        self.max_keys = max_keys
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.clock = clock
        # Claims other replicas see; None (or an unshared state): this process alone.
        self.shared = shared
        # By (scope, key), oldest first: expiry and eviction look at the front only.
        self._entries: OrderedDict[tuple[str, str], _Entry[V]] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    async def run(
        self,
        scope: str,
        key: str,
        request_fingerprint: str,
        action: Callable[[], Awaitable[tuple[V, bool]]],
    ) -> tuple[V, bool]:
        """The outcome for ``key``: the stored one (``replayed`` True), or ``action``'s.

        ``action`` returns ``(outcome, keep)``; with ``keep`` False (nothing was applied,
        so a retry may safely run again) the key is released instead of stored, as it is
        when ``action`` raises. Returns ``(outcome, replayed)``.

        Raises :class:`KeyRefused` 422 when ``key`` was used for a different request,
        409 when its first request still runs after ``wait_s``, 503 when the store is
        full of running requests, and :class:`~offload.StateUnavailable` (503) when
        the shared store cannot be reached.
        """
        self._expire()
        shared = self.shared if self.shared is not None and self.shared.active() else None
        if shared is None or (scope, key) in self._entries:
            return await self._run_here(scope, key, request_fingerprint, action)
        return await self._run_shared(shared, scope, key, request_fingerprint, action)

    async def _run_shared(
        self,
        shared: SharedClaims,
        scope: str,
        key: str,
        request_fingerprint: str,
        action: Callable[[], Awaitable[tuple[V, bool]]],
    ) -> tuple[V, bool]:
        """:meth:`run` across replicas: claim the key in the shared store, or wait for whoever has it."""
        deadline = self.clock() + self.wait_s
        shared_key = shared.key_for(scope, key)
        while True:
            if await shared.claim(shared_key, request_fingerprint, 2 * self.wait_s + CLAIM_SLACK_S):

                async def first() -> tuple[V, bool]:
                    try:
                        outcome, keep = await action()
                    except BaseException:
                        with contextlib.suppress(StateUnavailable):
                            await shared.release(shared_key)
                        raise
                    try:
                        if keep:
                            await shared.finish(shared_key, request_fingerprint, outcome, self.ttl_s)
                        else:
                            await shared.release(shared_key)
                    except StateUnavailable as error:
                        # The answer is still kept here; only other replicas cannot see it.
                        log.warning("idempotency key's answer not shared: %s", error.reason)
                    return outcome, keep

                return await self._run_here(scope, key, request_fingerprint, first)
            record = await shared.read(shared_key)
            if record is not None:
                if record.fingerprint != request_fingerprint:
                    raise _mismatch(key)
                if record.done:
                    return record.value, True
            if self.clock() >= deadline:
                raise _still_running(key)
            # Claimed elsewhere and running (or just released): look again shortly.
            await asyncio.sleep(shared.poll_s)

    async def _run_here(
        self,
        scope: str,
        key: str,
        request_fingerprint: str,
        action: Callable[[], Awaitable[tuple[V, bool]]],
    ) -> tuple[V, bool]:
        """:meth:`run` within this process."""
        deadline = self.clock() + self.wait_s
        while True:
            self._expire()
            entry = self._entries.get((scope, key))
            if entry is None:
                return await self._first(scope, key, request_fingerprint, action)
            if entry.fingerprint != request_fingerprint:
                raise _mismatch(key)
            if entry.stored:
                return entry.outcome, True  # type: ignore[return-value]
            assert entry.running is not None
            # The first request still runs: wait for it, then look again (it may have released the key).
            remaining = deadline - self.clock()
            if remaining <= 0 or not await self._wait(entry, remaining):
                raise _still_running(key)

    async def _first(
        self, scope: str, key: str, request_fingerprint: str, action: Callable[[], Awaitable[tuple[V, bool]]]
    ) -> tuple[V, bool]:
        """Run ``action`` as the key's first request and store or release its outcome."""
        self._make_room()
        entry: _Entry[V] = _Entry(request_fingerprint, self.clock())
        self._entries[(scope, key)] = entry

        async def first() -> tuple[V, bool]:
            try:
                outcome, keep = await action()
            except BaseException:
                self._release(scope, key, entry)
                raise
            if keep:
                entry.outcome, entry.stored = outcome, True
            else:
                self._release(scope, key, entry)
            return outcome, keep

        entry.running = asyncio.ensure_future(first())
        entry.running.add_done_callback(_retrieved)
        # Shielded: if this caller goes away, the write still finishes and its outcome is kept.
        outcome, _ = await asyncio.shield(entry.running)
        return outcome, False

    async def _wait(self, entry: _Entry[V], timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``entry``'s first request; False if it still runs."""
        assert entry.running is not None
        done, _ = await asyncio.wait({entry.running}, timeout=timeout_s)
        return bool(done)

    def _release(self, scope: str, key: str, entry: _Entry[V]) -> None:
        if self._entries.get((scope, key)) is entry:
            del self._entries[(scope, key)]

    def _expire(self) -> None:
        """Forget keys older than ``ttl_s`` (oldest first; a running first request is never forgotten)."""
        oldest_kept = self.clock() - self.ttl_s
        while self._entries:
            first_key, entry = next(iter(self._entries.items()))
            if entry.created > oldest_kept or not entry.stored:
                return
            del self._entries[first_key]

    def _make_room(self) -> None:
        """Below ``max_keys`` before a new key: the oldest stored outcome goes first."""
        if len(self._entries) < self.max_keys:
            return
        for entry_key, entry in self._entries.items():
            if entry.stored:
                del self._entries[entry_key]
                return
        raise KeyRefused(
            503,
            f"{len(self._entries)} writes with {HEADER} are in progress, the most this gateway tracks "
            "(idempotency_max_keys in [plugins.contracts]); retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


def _mismatch(key: str) -> KeyRefused:
    return KeyRefused(
        422, f"{HEADER} {key[:40]!r} was already used for a different request; use a new key for a new request"
    )


def _still_running(key: str) -> KeyRefused:
    return KeyRefused(
        409,
        f"a request with {HEADER} {key[:40]!r} is still in progress; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
