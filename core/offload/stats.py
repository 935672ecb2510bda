"""Small summary statistics for latency samples."""

from __future__ import annotations

import math
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
