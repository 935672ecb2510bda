"""State shared by the worker processes of one machine, in fixed tables of shared memory.

``offload serve --workers N`` runs each worker as a process of its own (Sanic
starts them with the "spawn" method). The main process creates the tables
(:meth:`SharedMemoryState.create`, in a ``main_process_start`` listener) and
hands :meth:`SharedMemoryState.handles` to the workers through
``app.shared_ctx``; each worker then calls :meth:`SharedMemoryState.attach`.

Four tables, each behind one ``multiprocessing.Lock`` that is held for a few
microseconds and never across an ``await``:

* **windows**: slots claimed lazily by a 64-bit hash of the key, each holding
  the window length and a :class:`~offload.throughput.SlidingWindowCounter`
  bucket ring, so check-and-count is one atomic step across processes;
* **nonces**: a slot per account holding the next nonce (or "unknown"), the
  holder's token and the holder's deadline (``time.monotonic``, which on Linux
  is one clock for every process of the machine); a lease whose holder outlived
  its deadline may be taken over, and the old holder's writes are then refused;
* **health**: a slot per (pool, server URL) holding the JSON-encoded verdict,
  its expiry and a global sequence number, which each process polls to tell
  its listeners what is new;
* **cache**: slots found by a 64-bit hash of the key, each holding the key in
  full (so a hash collision never answers with another key's value), the
  value, its expiry (``time.monotonic`` ms) and its last use. A key is looked
  up and, if absent, inserted under the lock, so :meth:`~SharedMemoryState.cache_add`
  is an atomic claim across processes (the contracts plugin's Idempotency-Key
  handling relies on it).

Memory is bounded and fixed at creation. When the cache is full, a new key
takes an expired slot, else the least recently used *ordinary* entry; an
unexpired claim (an entry :meth:`~SharedMemoryState.cache_add` made and no
:meth:`~SharedMemoryState.cache_set` replaced yet) is never evicted, since
freeing it would let another process claim the same key while its first
request still runs. A table holding nothing but claims refuses new keys with
:class:`~offload.state.base.StateUnavailable` (a 503), as the in-process
idempotency store refuses when full of running requests.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from ..periodic import Periodic
from ..throughput import CounterStorage, SlidingWindowCounter, WindowAdmission
from .base import HealthListener, HealthRecord, LeaseUnavailable, StateUnavailable

__all__ = [
    "CACHE_KEY_BYTES",
    "HEALTH_RECORD_BYTES",
    "CacheEntryTooLarge",
    "SharedMemoryHandles",
    "SharedMemoryNonceLease",
    "SharedMemoryState",
]

log = logging.getLogger("offload.state")

T = TypeVar("T")

#: What :meth:`SharedMemoryState.handles` returns: one flat tuple of multiprocessing objects
#: (flat, because Sanic's ``shared_ctx`` checks each item of a tuple, not nested ones).
SharedMemoryHandles = tuple[Any, ...]

# Buckets per window, as SlidingWindowCounter's default: counts may be one fiftieth of a window late.
BUCKETS = 50
# A window slot: [key hash, window length in µs (0: free), epoch, total, counts of BUCKETS + 1 buckets].
W_HASH, W_LENGTH, W_META = 0, 1, 2
W_COUNTS = 4
WINDOW_ROW = W_COUNTS + BUCKETS + 1

# A nonce slot: [account hash (0: free), known, next nonce, holder token (0: none), holder deadline, last used].
N_HASH, N_KNOWN, N_NEXT, N_TOKEN, N_DEADLINE, N_USED = range(6)
NONCE_ROW = 6

# A health slot: [sequence number (0: free), (pool, server) hash, pool hash, expiry, length, verdict time in µs].
H_SEQ, H_KEY, H_POOL, H_EXPIRES, H_LENGTH, H_AT = range(6)
HEALTH_ROW = 6
#: Bytes of one JSON-encoded health record at most (a longer reason is truncated).
HEALTH_RECORD_BYTES = 1024

# A cache slot: [key hash (0: free), expiry in ms, last use in ns (PINNED: a claim), key length, value length].
C_HASH, C_EXPIRES, C_USED, C_KEY_LENGTH, C_VALUE_LENGTH = range(5)
CACHE_ROW = 5
# The "last use" of a claim: never the least recently used, so never evicted while unexpired.
PINNED = 2**63 - 1
#: Bytes of one cache key at most (UTF-8), stored in full in its slot next to the value.
CACHE_KEY_BYTES = 256

INT64 = ctypes.sizeof(ctypes.c_int64)
MAX_INT64 = 2**63 - 1

# A lock is held for microseconds; one not released for this long belongs to a
# worker that died inside it (SIGKILL), and waiting longer would only hang the event loop.
LOCK_TIMEOUT_S = 0.2
# How often each process looks for health verdicts published since its last look.
HEALTH_POLL_S = 0.1
# Waiting for a nonce lease another process holds: first retry after 1 ms, backing off to 10 ms.
LEASE_RETRY_FIRST_S = 0.001
LEASE_RETRY_MAX_S = 0.010


def _hash64(text: str) -> int:
    """A stable 64-bit hash (the built-in ``hash`` differs between processes), never 0 (0 marks "free")."""
    return _hash64_bytes(text.encode())


def _hash64_bytes(data: bytes) -> int:
    """:func:`_hash64` of bytes."""
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)
    return value or 1


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _ms_after(now_ms: int, seconds: float) -> int:
    """``now_ms`` plus ``seconds``, kept inside an int64 (an infinite TTL is "until the machine reboots")."""
    if math.isnan(seconds) or seconds <= 0:
        return now_ms
    return min(now_ms + math.ceil(seconds * 1000), MAX_INT64)


def _window_length_us(window_s: float) -> int:
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
    return max(1, round(window_s * 1_000_000))


def _int64_view(raw: Any, start: int, length: int) -> Any:
    """``length`` int64 items of ``raw`` from index ``start`` on, as a ctypes array sharing its memory."""
    return (ctypes.c_int64 * length).from_buffer(raw, start * INT64)


def _snapshot(raw: Any) -> array.array[int]:
    """A private copy of an int64 table, made in one memcpy (cheap to take under the lock)."""
    copy = array.array("q")
    copy.frombytes(ctypes.string_at(ctypes.addressof(raw), ctypes.sizeof(raw)))
    return copy


class CacheEntryTooLarge(StateUnavailable, ValueError):
    """A cache key or value longer than its fixed slot: nothing was stored, and the old value stays.

    A :class:`ValueError` (the caller's data does not fit) that is also a
    :class:`StateUnavailable` without ``outage``, so that code storing an
    answer for other processes (the contracts plugin's ``SharedClaims.finish``)
    treats it as "answer not shared" instead of failing a request whose work
    is already done.
    """

    outage = False


@contextlib.contextmanager
def _locked(lock: Any, table: str) -> Iterator[None]:
    if not lock.acquire(timeout=LOCK_TIMEOUT_S):
        raise StateUnavailable(
            f"the shared-memory {table} lock was not released within {LOCK_TIMEOUT_S} s (did a worker die holding it?)"
        )
    try:
        yield
    finally:
        lock.release()


def _encode_health(record: HealthRecord) -> bytes:
    """``record`` as JSON of at most :data:`HEALTH_RECORD_BYTES`, cutting its reason short if it must."""

    def dump(value: HealthRecord) -> bytes:
        return json.dumps(dataclasses.asdict(value), ensure_ascii=False, separators=(",", ":")).encode()

    data = dump(record)
    reason = record.reason or ""
    keep = len(reason)
    while len(data) > HEALTH_RECORD_BYTES and keep > 0:
        # Every character dropped shortens the JSON by at least one byte.
        keep = max(0, keep - (len(data) - HEALTH_RECORD_BYTES) - 1)
        data = dump(dataclasses.replace(record, reason=reason[:keep] + "…"))
    if len(data) > HEALTH_RECORD_BYTES:
        raise ValueError(
            f"health record of {record.server!r} in pool {record.pool!r} does not fit in "
            f"{HEALTH_RECORD_BYTES} bytes even without its reason"
        )
    return data


def _decode_health(data: bytes) -> HealthRecord | None:
    try:
        return HealthRecord(**json.loads(data))
    except (ValueError, TypeError):  # cannot happen with records written under the lock; skip rather than fail
        log.warning("skipping an unreadable shared health record")
        return None


class SharedMemoryNonceLease:
    """A lease on an account's nonce slot, fenced by a token: lost once another process took it over."""

    def __init__(self, state: SharedMemoryState, account_hash: int, slot: int, token: int) -> None:
        self._state = state
        self._hash = account_hash
        self._base = slot * NONCE_ROW
        self._token = token

    def _holds(self) -> bool:
        table, base = self._state._nonces, self._base
        return table[base + N_HASH] == self._hash and table[base + N_TOKEN] == self._token

    async def current(self) -> int | None:
        """The next nonce to use, or None when unknown; raises :class:`StateUnavailable` if the lease was lost."""
        state = self._state
        with _locked(state._nonce_lock, "nonce"):
            if not self._holds():
                raise LeaseUnavailable("nonce lease lost: it outlived hold_s and another process took it over")
            table, base = state._nonces, self._base
            return table[base + N_NEXT] if table[base + N_KNOWN] else None

    async def advance(self, next_nonce: int) -> None:
        """Store ``next_nonce`` if this lease still holds the slot, else raise :class:`StateUnavailable`."""
        if not 0 <= next_nonce <= MAX_INT64:
            raise ValueError(f"a nonce must be between 0 and {MAX_INT64}, got {next_nonce!r}")
        state = self._state
        with _locked(state._nonce_lock, "nonce"):
            if not self._holds():
                raise LeaseUnavailable("nonce lease lost: it outlived hold_s and another process took it over")
            table, base = state._nonces, self._base
            table[base + N_NEXT] = next_nonce
            table[base + N_KNOWN] = 1

    async def forget(self) -> None:
        """Mark the sequence unknown, if this lease still holds it.

        A lost lease changes nothing: whoever took it over already treats the
        sequence as unknown (a takeover forgets it), and may have learnt it
        from the chain since.
        """
        state = self._state
        with _locked(state._nonce_lock, "nonce"):
            if self._holds():
                state._nonces[self._base + N_KNOWN] = 0

    def _release(self) -> None:
        state = self._state
        with _locked(state._nonce_lock, "nonce"):
            if self._holds():
                table, base = state._nonces, self._base
                table[base + N_TOKEN] = 0
                table[base + N_DEADLINE] = 0
                table[base + N_USED] = _now_ms()


class SharedMemoryState:
    """Windows, nonce leases, health verdicts and a cache shared by the processes of one machine.

    See the module doc. Build it with :meth:`create` in the main process and
    :meth:`attach` in each worker, never with the constructor.
    """

    kind = "shared-memory"
    shared = True
    shares_cache = True

    def __init__(self, handles: SharedMemoryHandles) -> None:
        if len(handles) != 11:
            raise ValueError(f"expected the 11 handles of SharedMemoryState.handles(), got {len(handles)}")
        self._handles = tuple(handles)
        (
            self._windows,
            self._window_lock,
            self._nonces,
            self._nonce_lock,
            self._health,
            self._health_bytes,
            self._health_seq,
            self._health_lock,
            self._cache,
            self._cache_bytes,
            self._cache_lock,
        ) = handles
        self.window_slots = len(self._windows) // WINDOW_ROW
        self.nonce_slots = len(self._nonces) // NONCE_ROW
        self.health_slots = len(self._health) // HEALTH_ROW
        if len(self._health_bytes) != self.health_slots * HEALTH_RECORD_BYTES:
            raise ValueError("the health tables of these handles do not match")
        self.cache_slots = len(self._cache) // CACHE_ROW
        # Each cache slot's bytes: its key (CACHE_KEY_BYTES at most), then its value.
        self._cache_stride = len(self._cache_bytes) // max(1, self.cache_slots)
        self.cache_value_bytes = self._cache_stride - CACHE_KEY_BYTES
        if (
            self.cache_slots < 1
            or self.cache_value_bytes < 1
            or len(self._cache) != self.cache_slots * CACHE_ROW
            or len(self._cache_bytes) != self.cache_slots * self._cache_stride
        ):
            raise ValueError("the cache tables of these handles do not match")
        # Each window slot seen through CounterStorage views (no lock: the table's lock is taken around them).
        self._window_storage = [
            CounterStorage(
                counts=_int64_view(self._windows, slot * WINDOW_ROW + W_COUNTS, BUCKETS + 1),
                meta=_int64_view(self._windows, slot * WINDOW_ROW + W_META, 2),
            )
            for slot in range(self.window_slots)
        ]
        # key -> (hash, length in µs, slot, counter): where this process last found the key's window.
        self._window_slots: dict[str, tuple[int, int, int, SlidingWindowCounter]] = {}
        self._nonce_locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[HealthListener] = []
        self._health_seen = 0
        self._poller = Periodic(
            "offload-shared-health", HEALTH_POLL_S, self._poll_health, log, "reading shared health verdicts failed"
        )

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        windows: int = 64,
        nonce_slots: int = 64,
        health_slots: int = 256,
        cache_slots: int = 512,
        cache_value_bytes: int = 16384,
        context: BaseContext | None = None,
    ) -> SharedMemoryState:
        """Allocate the shared tables (in the main process, before the workers start) and attach to them.

        The cache takes ``cache_slots * (CACHE_KEY_BYTES + cache_value_bytes)``
        bytes (8.1 MiB by default), whether used or not.

        ``context`` defaults to multiprocessing's default context, which is the
        one Sanic sets ("spawn") before ``main_process_start``. A lock made in
        a "fork" context cannot be handed to a spawned process.
        """
        for name, value in (
            ("windows", windows),
            ("nonce_slots", nonce_slots),
            ("health_slots", health_slots),
            ("cache_slots", cache_slots),
            ("cache_value_bytes", cache_value_bytes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        ctx: Any = context or multiprocessing.get_context()
        handles = (
            ctx.RawArray("q", windows * WINDOW_ROW),
            ctx.Lock(),
            ctx.RawArray("q", nonce_slots * NONCE_ROW),
            ctx.Lock(),
            ctx.RawArray("q", health_slots * HEALTH_ROW),
            ctx.RawArray("c", health_slots * HEALTH_RECORD_BYTES),
            ctx.RawValue("q", 0),
            ctx.Lock(),
            ctx.RawArray("q", cache_slots * CACHE_ROW),
            ctx.RawArray("c", cache_slots * (CACHE_KEY_BYTES + cache_value_bytes)),
            ctx.Lock(),
        )
        return cls(handles)

    def handles(self) -> SharedMemoryHandles:
        """The shared objects, as one flat picklable tuple to hand to worker processes (e.g. via ``app.shared_ctx``).

        Like any multiprocessing object they can be pickled only while a
        process is being started, i.e. as (part of) its arguments.
        """
        return self._handles

    @classmethod
    def attach(cls, handles: SharedMemoryHandles) -> SharedMemoryState:
        """This process's view of the tables :meth:`create` allocated in the main process."""
        return cls(handles)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start polling for health verdicts (those published from now on reach the listeners)."""
        if self._poller.running:
            return
        with _locked(self._health_lock, "health"):
            self._health_seen = self._health_seq.value
        self._poller.start()

    async def close(self) -> None:
        """Stop polling; the shared tables stay for the other processes."""
        await self._poller.stop()

    async def ping(self) -> None:
        """Shared memory is always there; a lock held by a dead worker is what can go wrong."""
        for lock, table in (
            (self._window_lock, "window"),
            (self._nonce_lock, "nonce"),
            (self._health_lock, "health"),
            (self._cache_lock, "cache"),
        ):
            with _locked(lock, table):
                pass

    # -- windowed counters ----------------------------------------------------------------

    def _claim_window(self, key: str, key_hash: int, length_us: int) -> int:
        """The slot of ``key``'s window (claimed if new, reset if its length changed); call under the lock."""
        table, free = self._windows, None
        for slot in range(self.window_slots):
            base = slot * WINDOW_ROW
            if table[base + W_LENGTH] == 0:
                if free is None:
                    free = slot
            elif table[base + W_HASH] == key_hash:
                if table[base + W_LENGTH] != length_us:
                    self._reset_window(slot, key_hash, length_us)  # the key's window length changed: start over
                return slot
        if free is None:
            raise RuntimeError(
                f"shared-memory state: all {self.window_slots} window slots are in use, none left for {key!r}; "
                "create SharedMemoryState with more windows"
            )
        self._reset_window(free, key_hash, length_us)
        return free

    def _reset_window(self, slot: int, key_hash: int, length_us: int) -> None:
        base, table = slot * WINDOW_ROW, self._windows
        # Epoch 0 with empty buckets: the first use clears the whole ring and starts at "now",
        # which is what SlidingWindowCounter's constructor does for private storage.
        ctypes.memset(ctypes.addressof(table) + (base + W_META) * INT64, 0, (WINDOW_ROW - W_META) * INT64)
        table[base + W_HASH] = key_hash
        table[base + W_LENGTH] = length_us

    def _in_window(self, key: str, window_s: float, operation: Callable[[SlidingWindowCounter], T]) -> T:
        """Run ``operation`` on ``key``'s window with the table locked, so it is atomic across processes."""
        length_us = _window_length_us(window_s)
        known = self._window_slots.get(key)
        with _locked(self._window_lock, "window"):
            if known is not None and known[1] == length_us:
                key_hash, _, slot, counter = known
                base = slot * WINDOW_ROW
                # Another process may have restarted the slot with another length meanwhile.
                if self._windows[base + W_HASH] == key_hash and self._windows[base + W_LENGTH] == length_us:
                    return operation(counter)
            key_hash = known[0] if known is not None else _hash64(key)
            slot = self._claim_window(key, key_hash, length_us)
            counter = SlidingWindowCounter(window_s, buckets=BUCKETS, storage=self._window_storage[slot])
            self._window_slots[key] = (key_hash, length_us, slot, counter)
            return operation(counter)

    def admit_now(self, key: str, limit: int, window_s: float) -> WindowAdmission:
        """Atomically admit and count one event if at most ``limit`` are in ``key``'s window (always answers)."""
        return self._in_window(key, window_s, lambda counter: counter.admit(limit))

    async def admit(self, key: str, limit: int, window_s: float) -> WindowAdmission:
        """See :meth:`admit_now`; at most ``limit + 1`` events are admitted per window across all processes."""
        return self.admit_now(key, limit, window_s)

    async def record(self, key: str, window_s: float) -> int:
        """Count one event in ``key``'s window unconditionally; return the count after it."""

        def record_and_count(counter: SlidingWindowCounter) -> int:
            counter.record()
            return counter.count()

        return self._in_window(key, window_s, record_and_count)

    def count_now(self, key: str, window_s: float) -> int:
        """Events in ``key``'s window now, counted by every process (always answers)."""
        return self._in_window(key, window_s, lambda counter: counter.count())

    async def count(self, key: str, window_s: float) -> int:
        """See :meth:`count_now`."""
        return self.count_now(key, window_s)

    # -- nonce sequences ------------------------------------------------------------------

    def _try_lease(self, account_hash: int, hold_s: float, token: int) -> int | None:
        """Take the account's slot for ``token`` and return it, or None while a live holder has it."""
        table = self._nonces
        with _locked(self._nonce_lock, "nonce"):
            now = _now_ms()
            slot, free, idle, idle_used = None, None, None, 0
            for index in range(self.nonce_slots):
                base = index * NONCE_ROW
                if table[base + N_HASH] == account_hash:
                    slot = index
                    break
                if table[base + N_HASH] == 0:
                    if free is None:
                        free = index
                elif (table[base + N_TOKEN] == 0 or table[base + N_DEADLINE] <= now) and (
                    idle is None or table[base + N_USED] < idle_used
                ):
                    idle, idle_used = index, table[base + N_USED]
            if slot is None:
                # A new account takes a free slot, else the one least recently used by nobody
                # (its account then starts from "unknown": the chain knows its next nonce).
                slot = free if free is not None else idle
                if slot is None:
                    return None  # every slot is held right now: wait like for a held account
                base = slot * NONCE_ROW
                for field in range(NONCE_ROW):
                    table[base + field] = 0
                table[base + N_HASH] = account_hash
            base = slot * NONCE_ROW
            if table[base + N_TOKEN] != 0:
                if table[base + N_DEADLINE] > now:
                    return None
                # The holder outlived hold_s (it died, or hangs): it may have sent a transaction with
                # the nonce it read without advancing, so only the chain can say what comes next.
                table[base + N_KNOWN] = 0
            table[base + N_TOKEN] = token
            table[base + N_DEADLINE] = _ms_after(now, hold_s)
            table[base + N_USED] = now
            return slot

    @contextlib.asynccontextmanager
    async def nonce_lease(self, account: str, hold_s: float) -> AsyncIterator[SharedMemoryNonceLease]:
        """Wait for and hold ``account``'s nonce sequence against every process of the machine.

        Tasks of this process queue on an asyncio lock; then the shared slot is
        tried, with 1 to 10 ms pauses while another process holds it. A holder
        older than ``hold_s`` is taken over, and the sequence becomes unknown.
        """
        if not hold_s > 0:
            raise ValueError(f"hold_s must be a positive number of seconds, got {hold_s!r}")
        lock = self._nonce_locks.setdefault(account, asyncio.Lock())
        async with lock:
            account_hash = _hash64(account)
            token = secrets.randbits(63) or 1
            delay = LEASE_RETRY_FIRST_S
            while (slot := self._try_lease(account_hash, hold_s, token)) is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, LEASE_RETRY_MAX_S)
            lease = SharedMemoryNonceLease(self, account_hash, slot, token)
            try:
                yield lease
            finally:
                try:
                    lease._release()
                except StateUnavailable as error:
                    # The holder's work is done (a transaction may have left): its answer must not
                    # be lost for this; the slot is taken over once its deadline passes.
                    log.warning("nonce lease on %s not released: %s", account, error.reason)

    # -- health verdicts ------------------------------------------------------------------

    async def publish_health(self, record: HealthRecord) -> None:
        """Store ``record`` for ``record.ttl_s`` in place of the previous one on its server; polled by all.

        A record older (by ``record.at``) than the unexpired one already stored
        for its server is dropped: the newer verdict wins, whoever made it.
        """
        data = _encode_health(record)
        key_hash = _hash64(f"{record.pool}\0{record.server}")
        pool_hash = _hash64(record.pool)
        at_us = round(record.at * 1_000_000) if math.isfinite(record.at) else 0
        table = self._health
        with _locked(self._health_lock, "health"):
            now = _now_ms()
            slot, spare, oldest, oldest_seq = None, None, 0, MAX_INT64
            for index in range(self.health_slots):
                base = index * HEALTH_ROW
                seq = table[base + H_SEQ]
                if seq != 0 and table[base + H_KEY] == key_hash:
                    slot = index
                    break
                if spare is None and (seq == 0 or table[base + H_EXPIRES] <= now):
                    spare = index
                if seq < oldest_seq:
                    oldest, oldest_seq = index, seq
            if slot is None:
                slot = spare if spare is not None else oldest
            base = slot * HEALTH_ROW
            if (
                table[base + H_SEQ] != 0
                and table[base + H_KEY] == key_hash
                and table[base + H_EXPIRES] > now
                and table[base + H_AT] > at_us
            ):
                return
            self._health_seq.value += 1
            start = slot * HEALTH_RECORD_BYTES
            self._health_bytes[start : start + len(data)] = data
            table[base + H_KEY] = key_hash
            table[base + H_POOL] = pool_hash
            table[base + H_EXPIRES] = _ms_after(now, record.ttl_s)
            table[base + H_LENGTH] = len(data)
            table[base + H_AT] = at_us
            table[base + H_SEQ] = self._health_seq.value

    def _read_health(self, wanted: Callable[[array.array[int], int, int], bool]) -> tuple[int, list[bytes]]:
        """The global sequence number and the records of the slots ``wanted(row, base, now)`` picks, oldest first.

        The table is copied under the lock in one memcpy and scanned outside
        it; the chosen slots are then copied under the lock again if they did
        not change meanwhile (one that did has a newer sequence number, seen
        by the next poll).
        """
        with _locked(self._health_lock, "health"):
            seen = self._health_seq.value
            rows = _snapshot(self._health)
        now = _now_ms()
        chosen = sorted(
            (rows[base + H_SEQ], base)
            for base in range(0, len(rows), HEALTH_ROW)
            if rows[base + H_SEQ] != 0 and rows[base + H_EXPIRES] > now and wanted(rows, base, now)
        )
        if not chosen:
            return seen, []
        records = []
        table, raw = self._health, self._health_bytes
        with _locked(self._health_lock, "health"):
            for seq, base in chosen:
                if table[base + H_SEQ] == seq:
                    start = base // HEALTH_ROW * HEALTH_RECORD_BYTES
                    records.append(raw[start : start + table[base + H_LENGTH]])
        return seen, records

    async def health_records(self, pool: str) -> list[HealthRecord]:
        """The unexpired verdicts on ``pool``'s servers, one per server (the last one stored)."""
        pool_hash = _hash64(pool)
        _, found = self._read_health(lambda rows, base, now: rows[base + H_POOL] == pool_hash)
        records = (_decode_health(data) for data in found)
        return [record for record in records if record is not None and record.pool == pool]

    def on_health(self, listener: HealthListener) -> None:
        """Call ``listener`` with every verdict published from now on, by any process, this one included.

        Listeners are called by the poller :meth:`start` starts (within about
        :data:`HEALTH_POLL_S` of publication); filter out this process's own
        records by ``record.replica``.
        """
        self._listeners.append(listener)

    def _deliver_health(self) -> None:
        """Tell the listeners about the records stored since the last look."""
        with _locked(self._health_lock, "health"):
            if self._health_seq.value == self._health_seen:
                return  # the usual case: nothing new, and only one integer read
        after = self._health_seen
        seen, found = self._read_health(lambda rows, base, now: rows[base + H_SEQ] > after)
        self._health_seen = seen
        for data in found:
            record = _decode_health(data)
            if record is None:
                continue
            for listener in list(self._listeners):
                try:
                    listener(record)
                except Exception:
                    log.exception("a health listener failed on %s/%s", record.pool, record.server)

    def _poll_health(self) -> None:
        try:
            self._deliver_health()
        except StateUnavailable as error:  # a lock held by a dead worker: say so, without a traceback
            log.warning("cannot read shared health verdicts: %s", error.reason)

    # -- cache ----------------------------------------------------------------------------

    def _cache_key(self, key: str) -> bytes | None:
        """``key`` as stored in a slot, or None when it is too long to be stored."""
        data = key.encode("utf-8", "surrogatepass")
        return data if len(data) <= CACHE_KEY_BYTES else None

    def _fits(self, key: str, value: bytes) -> bytes:
        """``key`` as stored, after checking that it and ``value`` fit in a slot (else :class:`CacheEntryTooLarge`)."""
        data = self._cache_key(key)
        if data is None:
            raise CacheEntryTooLarge(
                f"cache key of {len(key.encode('utf-8', 'surrogatepass'))} bytes is longer than the "
                f"shared-memory cache's limit of {CACHE_KEY_BYTES} bytes per key"
            )
        if len(value) > self.cache_value_bytes:
            raise CacheEntryTooLarge(
                f"cache value of {len(value)} bytes is longer than the shared-memory cache's limit of "
                f"{self.cache_value_bytes} bytes per value (SharedMemoryState.create(cache_value_bytes=...))"
            )
        return data

    def _cache_find(self, rows: array.array[int], key_hash: int, key: bytes) -> int | None:
        """The slot holding ``key`` (expired or not), or None; call under the lock with a fresh snapshot.

        Every slot with ``key``'s hash is checked against the key stored in
        full, so two keys whose hashes collide live in two slots and never
        answer for each other.
        """
        hashes = rows[C_HASH::CACHE_ROW]
        slot = -1
        while True:
            try:
                slot = hashes.index(key_hash, slot + 1)
            except ValueError:
                return None
            if rows[slot * CACHE_ROW + C_KEY_LENGTH] == len(key) and self._cache_read(slot, 0, len(key)) == key:
                return slot

    def _cache_room(self, rows: array.array[int], now: int) -> int:
        """A slot for a new key: a free one, else an expired one, else the least recently used ordinary entry.

        Raises :class:`StateUnavailable` when every slot holds an unexpired
        claim: evicting one would let another process claim its key while the
        first request still runs, and answering "not stored" would look like
        exactly that claim being held elsewhere.
        """
        hashes = rows[C_HASH::CACHE_ROW]
        with contextlib.suppress(ValueError):
            return hashes.index(0)
        expires = rows[C_EXPIRES::CACHE_ROW]
        soonest = min(expires)
        if soonest <= now:
            return expires.index(soonest)
        used = rows[C_USED::CACHE_ROW]
        oldest = min(used)
        if oldest == PINNED:
            raise StateUnavailable(
                f"shared-memory cache full: all {self.cache_slots} slots hold unexpired claims "
                "(create SharedMemoryState with more cache_slots)"
            )
        return used.index(oldest)

    def _cache_read(self, slot: int, offset: int, length: int) -> bytes:
        return ctypes.string_at(ctypes.addressof(self._cache_bytes) + slot * self._cache_stride + offset, length)

    def _cache_write(self, slot: int, key_hash: int, key: bytes, value: bytes, expires: int, used: int) -> None:
        """Fill ``slot``; call under the lock (memmove: ctypes' slice assignment copies byte by byte)."""
        start = ctypes.addressof(self._cache_bytes) + slot * self._cache_stride
        ctypes.memmove(start, key, len(key))
        ctypes.memmove(start + CACHE_KEY_BYTES, value, len(value))
        table, base = self._cache, slot * CACHE_ROW
        table[base + C_KEY_LENGTH] = len(key)
        table[base + C_VALUE_LENGTH] = len(value)
        table[base + C_EXPIRES] = expires
        table[base + C_USED] = used
        table[base + C_HASH] = key_hash

    async def cache_get(self, key: str) -> bytes | None:
        """The value any process cached under ``key``, or None if absent or expired (never a part of one)."""
        data = self._cache_key(key)
        if data is None:
            return None  # too long to have been stored
        key_hash = _hash64_bytes(data)
        table = self._cache
        with _locked(self._cache_lock, "cache"):
            slot = self._cache_find(_snapshot(table), key_hash, data)
            if slot is None:
                return None
            base = slot * CACHE_ROW
            if table[base + C_EXPIRES] <= _now_ms():
                table[base + C_HASH] = 0
                return None
            if table[base + C_USED] != PINNED:
                table[base + C_USED] = time.monotonic_ns()
            return self._cache_read(slot, CACHE_KEY_BYTES, table[base + C_VALUE_LENGTH])

    async def cache_add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Atomically cache ``value`` if no process holds ``key``; True if this call stored it (a claim).

        The claim is never evicted until it expires or :meth:`cache_set`
        replaces it (an ordinary entry then) or :meth:`cache_delete` frees it.
        A ``ttl_s`` of zero or less stores nothing and returns False. Raises
        :class:`CacheEntryTooLarge` (a ValueError) for a key or value that does
        not fit a slot, and :class:`StateUnavailable` when every slot holds a
        claim (see the module doc).
        """
        data = self._fits(key, value)
        if not ttl_s > 0:
            return False
        key_hash = _hash64_bytes(data)
        with _locked(self._cache_lock, "cache"):
            now, rows = _now_ms(), _snapshot(self._cache)
            slot = self._cache_find(rows, key_hash, data)
            if slot is not None and rows[slot * CACHE_ROW + C_EXPIRES] > now:
                return False
            if slot is None:
                slot = self._cache_room(rows, now)
            self._cache_write(slot, key_hash, data, value, _ms_after(now, ttl_s), PINNED)
            return True

    async def cache_delete(self, key: str) -> None:
        """Remove ``key`` for every process (nothing if absent); a claim so freed may be made again."""
        data = self._cache_key(key)
        if data is None:
            return
        key_hash = _hash64_bytes(data)
        with _locked(self._cache_lock, "cache"):
            slot = self._cache_find(_snapshot(self._cache), key_hash, data)
            if slot is not None:
                self._cache[slot * CACHE_ROW + C_HASH] = 0

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Cache ``value`` under ``key`` for ``ttl_s`` seconds, for every process, replacing any value or claim.

        A ``ttl_s`` of zero or less stores nothing (and leaves the old value).
        The entry is an ordinary one, evicted least recently used first when a
        new key needs room. Raises :class:`CacheEntryTooLarge` (a ValueError,
        the old value staying) for a key or value that does not fit a slot, and
        :class:`StateUnavailable` when a new key finds every slot holding a claim.
        """
        data = self._fits(key, value)
        if not ttl_s > 0:
            return
        key_hash = _hash64_bytes(data)
        with _locked(self._cache_lock, "cache"):
            now, rows = _now_ms(), _snapshot(self._cache)
            slot = self._cache_find(rows, key_hash, data)
            if slot is None:
                slot = self._cache_room(rows, now)
            self._cache_write(slot, key_hash, data, value, _ms_after(now, ttl_s), time.monotonic_ns())
