"""Sliding-window request counter: O(1) per request, fixed memory.

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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class SlidingWindowCounter:
    """Counts events within the last ``window_s`` seconds."""

    __slots__ = ("_buckets", "_clock", "_counts", "_epoch", "_total", "_width", "window_s")

    def __init__(
        self,
        window_s: float = 1.0,
        buckets: int = 50,
        clock: Callable[[], float] = time.monotonic,
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
        self._counts = [0] * self._buckets
        # Absolute index of the newest bucket that has been written or cleared.
        self._epoch = math.floor(clock() / self._width)
        self._total = 0
        self._clock = clock

    def _advance(self, now: float) -> int:
        """Clear buckets that left the window; return the absolute index for ``now``."""
        current = math.floor(now / self._width)
        stale = current - self._epoch
        if stale > 0:
            if stale >= self._buckets:
                self._counts = [0] * self._buckets
                self._total = 0
            else:
                for index in range(self._epoch + 1, current + 1):
                    slot = index % self._buckets
                    self._total -= self._counts[slot]
                    self._counts[slot] = 0
            self._epoch = current
        return current

    def record(self, now: float | None = None) -> None:
        """Count one event at ``now`` (defaults to the clock)."""
        current = self._advance(self._clock() if now is None else now)
        self._counts[current % self._buckets] += 1
        self._total += 1

    def count(self, now: float | None = None) -> int:
        """Events in the window ending at ``now`` (conservative, see module doc)."""
        self._advance(self._clock() if now is None else now)
        return self._total
