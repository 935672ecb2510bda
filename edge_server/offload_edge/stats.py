"""Request counters reported by ``/health``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RequestStats:
    """In-flight and total request counts plus uptime, for one edge app.

    Only touched from the event loop thread, so no locking is needed.
    """

    inflight: int = 0
    requests: int = 0
    started: float = field(default_factory=time.monotonic)

    def begin(self) -> None:
        """Record that a request has started."""
        self.inflight += 1
        self.requests += 1

    def end(self) -> None:
        """Record that a request has finished (successfully or not)."""
        # Never go negative, even if a caller ends a request twice by mistake.
        self.inflight = max(0, self.inflight - 1)

    @property
    def uptime_s(self) -> float:
        """Seconds since these stats were created (i.e. since the app was built)."""
        return time.monotonic() - self.started
