"""A retry budget over a time window (Finagle's rule), per pool.

Every request deposits ``ratio`` of a retry; every retry withdraws one; on top
of that the pool may always retry ``min_per_s`` times a second. Deposits and
withdrawals expire after ``window_s``. So a sick pool, where every request
fails, sees at most ``ratio`` more traffic (plus the small minimum), while one
dead server's burst of failed in-flight requests (which a budget counted in
concurrent retries, Envoy's rule, cut to three) is retried elsewhere at once:
the burst spends deposits made over the last ``window_s`` seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Deposits and withdrawals are kept in this many buckets per window: expiry is this coarse.
BUCKETS = 10
# Float sums of ratio x deposits (0.2 x 30 = 6.000000000000001) must not turn into a lost retry.
EPSILON = 1e-9


@dataclass
class RetryBudget:
    """Deposits per request, a minimum per second, both over a sliding window."""

    ratio: float = 0.2
    min_per_s: float = 10.0
    window_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    refused: int = 0
    _deposits: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    _withdrawals: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    _bucket: int = -1  # absolute index of the newest bucket

    def _roll(self) -> int:
        """Clear the buckets that expired since last time; returns the current bucket's slot."""
        now = math.floor(self.clock() * BUCKETS / self.window_s)
        if now != self._bucket:
            expired = min(BUCKETS, now - self._bucket) if self._bucket >= 0 else BUCKETS
            for step in range(1, expired + 1):
                slot = (self._bucket + step) % BUCKETS
                self._deposits[slot] = 0
                self._withdrawals[slot] = 0
            self._bucket = now
        return now % BUCKETS

    def deposit(self) -> None:
        """A request arrived: it earns ``ratio`` of a retry."""
        self._deposits[self._roll()] += 1

    def balance(self) -> float:
        """Retries that may be made now."""
        self._roll()
        earned = self.min_per_s * self.window_s + self.ratio * sum(self._deposits)
        return earned - sum(self._withdrawals)

    def allow_retry(self) -> bool:
        """Whether one more retry fits now; if so it is withdrawn."""
        if self.balance() < 1 - EPSILON:
            self.refused += 1
            return False
        self._withdrawals[self._roll()] += 1
        return True
