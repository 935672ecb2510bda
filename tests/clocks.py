"""A clock that tests move by hand."""

from __future__ import annotations


class FakeClock:
    """Callable like ``time.monotonic``; advance it with ``clock.now += seconds``."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
