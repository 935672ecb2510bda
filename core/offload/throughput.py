"""Sliding-window request counter: O(1) per request, fixed memory, optionally shared by processes.

The original gateway appended every timestamp to a list forever and sorted the
list on every call. Here the window is cut into a fixed ring of buckets; a
request increments the bucket for "now" and a query sums the buckets still
inside the window, with a running total so neither costs more than the number
of buckets that expired since the last call (amortised O(1)).

The count is conservative: the oldest bucket is kept until it has *entirely*
left the window, so the reported figure may include requests up to one bucket
width (``window_s / buckets``) older than the window, never fewer than the
true count. A rule "run locally while count <= limit" therefore never lets
more than ``limit + 1`` requests into any window.

The counter's state may live elsewhere (:class:`CounterStorage`): the
shared-memory state backend keeps it in arrays every worker of
``offload serve --workers N`` sees (see :mod:`offload.state.shared_memory`),
so the rule counts the device's requests across all workers, not per worker.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from typing import Any, NamedTuple

EPOCH, TOTAL = 0, 1  # slots of the metadata array


class WindowAdmission(NamedTuple):
    """The answer of an atomic check-and-count: whether the event was admitted, and the count after it."""

    admitted: bool
    count: int


@dataclass
class CounterStorage:
    """Where a counter keeps its state: plain lists, or arrays in shared memory with a lock."""

    counts: MutableSequence[int]
    meta: MutableSequence[int]  # [newest bucket index written or cleared, running total]
    lock: Any = None  # a multiprocessing lock when shared

    @classmethod
    def private(cls, buckets: int) -> CounterStorage:
        return cls(counts=[0] * buckets, meta=[0, 0])


class SlidingWindowCounter:
    """Counts events within the last ``window_s`` seconds."""

    def __init__(
        self,
        window_s: float = 1.0,
        buckets: int = 50,
        clock: Callable[[], float] = time.monotonic,
        storage: CounterStorage | None = None,
    ) -> None:
        if window_s <= 0 or not math.isfinite(window_s):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets!r}")
        self.window_s = float(window_s)
        self._width = self.window_s / buckets
        # One bucket more than the window holds: the oldest one straddles the
        # window's start, which is what makes the count conservative.
        self._buckets = buckets + 1
        self._clock = clock
        self._storage = storage or CounterStorage.private(self._buckets)
        if len(self._storage.counts) != self._buckets:
            raise ValueError(f"storage holds {len(self._storage.counts)} buckets, this window needs {self._buckets}")
        self._lock = self._storage.lock or contextlib.nullcontext()
        if storage is None:
            self._storage.meta[EPOCH] = math.floor(clock() / self._width)

    def _advance(self, now: float) -> int:
        """Clear buckets that left the window; return the absolute index for ``now``."""
        counts, meta = self._storage.counts, self._storage.meta
        current = math.floor(now / self._width)
        stale = current - meta[EPOCH]
        if stale > 0:
            if stale >= self._buckets:
                for slot in range(self._buckets):
                    counts[slot] = 0
                meta[TOTAL] = 0
            else:
                for index in range(meta[EPOCH] + 1, current + 1):
                    slot = index % self._buckets
                    meta[TOTAL] -= counts[slot]
                    counts[slot] = 0
            meta[EPOCH] = current
        return current

    def record(self, now: float | None = None) -> None:
        """Count one event at ``now`` (defaults to the clock; must not go backwards)."""
        with self._lock:
            current = self._advance(self._clock() if now is None else now)
            self._storage.counts[current % self._buckets] += 1
            self._storage.meta[TOTAL] += 1

    def admit(self, limit: int, now: float | None = None) -> WindowAdmission:
        """Atomically: count one event and admit it if at most ``limit`` were in the window before it."""
        with self._lock:
            current = self._advance(self._clock() if now is None else now)
            total = self._storage.meta[TOTAL]
            if total > limit:
                return WindowAdmission(False, total)
            self._storage.counts[current % self._buckets] += 1
            self._storage.meta[TOTAL] = total + 1
            return WindowAdmission(True, total + 1)

    def count(self, now: float | None = None) -> int:
        """Events in the window ending at ``now`` (conservative, see module doc)."""
        with self._lock:
            self._advance(self._clock() if now is None else now)
            return self._storage.meta[TOTAL]
