"""Small summary statistics for latency samples."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) by the nearest-rank method; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def mean(samples: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no samples."""
    return sum(samples) / len(samples) if samples else math.nan


class LatencyWindow:
    """The last ``size`` latencies of a pool, for percentiles such as the hedging delay."""

    def __init__(self, size: int = 512, refresh_every: int = 32) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.refresh_every = refresh_every
        self._since_refresh = 0
        self._cached: dict[float, float] = {}

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self._since_refresh += 1
        if self._since_refresh >= self.refresh_every:
            # Percentiles are recomputed every few samples, not on every request.
            self._cached.clear()
            self._since_refresh = 0

    def quantile(self, fraction: float) -> float:
        """The ``fraction`` quantile of the window; NaN while it is empty."""
        if fraction not in self._cached:
            self._cached[fraction] = percentile(list(self.samples), fraction)
        return self._cached[fraction]
