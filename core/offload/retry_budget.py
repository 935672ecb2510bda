"""A retry budget: retries may add at most a fraction of the active requests (Envoy's rule).

Without one, a struggling pool receives every request twice; with one, a
retry storm is capped while a single failed server's requests still get
their second chance.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RetryBudget:
    """Counts active requests and retries for one pool."""

    ratio: float = 0.2
    min_concurrent: int = 3
    active_requests: int = 0
    active_retries: int = 0
    refused: int = 0

    def allow_retry(self) -> bool:
        """Whether one more retry fits now; call :meth:`retry_done` after it."""
        limit = max(self.min_concurrent, int(self.ratio * self.active_requests))
        if self.active_retries >= limit:
            self.refused += 1
            return False
        self.active_retries += 1
        return True

    def retry_done(self) -> None:
        self.active_retries = max(0, self.active_retries - 1)
