"""Passive ejection: a per-server circuit breaker with half-open recovery.

Closed: requests flow; consecutive failures are counted. Open: the server is
skipped until a cool-down ends (``base_s`` x times ejected, capped, as Envoy
does). Half-open: one trial request is let through; success closes the
circuit, failure opens it again for longer. A successful health probe during
the cool-down moves straight to half-open, so a restarted server comes back
within one probe interval instead of waiting out the whole cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class BreakerSettings:
    """When to eject and for how long."""

    failures_to_open: int = 5
    base_s: float = 30.0
    max_s: float = 300.0


@dataclass
class CircuitBreaker:
    """One server's circuit."""

    settings: BreakerSettings = field(default_factory=BreakerSettings)
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    consecutive_failures: int = 0
    times_opened: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False
    last_failure: str | None = None

    def refresh(self) -> str:
        """The state now (an open circuit whose cool-down ended is half-open)."""
        if self.state == OPEN and self.clock() >= self.open_until:
            self.state = HALF_OPEN
            self.trial_in_flight = False
        return self.state

    def allows(self) -> bool:
        """Whether a request may go to this server now (without claiming the half-open trial)."""
        state = self.refresh()
        return state == CLOSED or (state == HALF_OPEN and not self.trial_in_flight)

    def on_dispatch(self) -> None:
        """A request is being sent; in half-open it is the one trial."""
        if self.refresh() == HALF_OPEN:
            self.trial_in_flight = True

    def on_success(self) -> None:
        self.state = CLOSED
        self.consecutive_failures = 0
        self.trial_in_flight = False

    def on_failure(self, reason: str, *, may_open: bool, immediate: bool = False) -> bool:
        """Count a failure; returns True if the circuit opened because of it.

        ``immediate`` opens at once (a refused connection is proof enough);
        ``may_open`` is False when opening would eject too much of the pool.
        """
        self.last_failure = reason
        self.consecutive_failures += 1
        state = self.refresh()
        should_open = state == HALF_OPEN or immediate or self.consecutive_failures >= self.settings.failures_to_open
        if state == OPEN or not should_open or not may_open:
            if state == HALF_OPEN:
                self.trial_in_flight = False
            return False
        self.times_opened += 1
        cool_down = min(self.settings.base_s * self.times_opened, self.settings.max_s)
        self.state = OPEN
        self.open_until = self.clock() + cool_down
        self.trial_in_flight = False
        return True

    def on_probe_success(self) -> None:
        """A health probe answered: an open circuit may try again now."""
        if self.refresh() == OPEN:
            self.state = HALF_OPEN
            self.trial_in_flight = False

    def describe(self) -> str:
        """Why the circuit keeps the server out, or '' when it does not."""
        state = self.refresh()
        if state == OPEN:
            remaining = max(0.0, self.open_until - self.clock())
            return f"circuit open for {remaining:.1f} s more after {self.last_failure}"
        if state == HALF_OPEN and self.trial_in_flight:
            return "circuit half-open, its trial request is in flight"
        return ""
