"""The sliding-window meter: exact enough, conservative, bounded."""

from __future__ import annotations

import random

import pytest

from offload.throughput import SlidingWindowCounter

from clocks import FakeClock


def test_counts_events_inside_the_window_only() -> None:
    clock = FakeClock()
    meter = SlidingWindowCounter(window_s=1.0, buckets=10, clock=clock)
    for _ in range(5):
        meter.record()
    assert meter.count() == 5
    clock.now += 0.5
    meter.record()
    assert meter.count() == 6
    clock.now += 1.2  # the first five are now 1.7 s old, the sixth 1.2 s
    assert meter.count() == 0


def test_never_undercounts_and_overcounts_by_at_most_one_bucket() -> None:
    rng = random.Random(7)
    clock = FakeClock()
    window, buckets = 1.0, 20
    meter = SlidingWindowCounter(window_s=window, buckets=buckets, clock=clock)
    times: list[float] = []
    for _ in range(5000):
        clock.now += rng.expovariate(300)
        meter.record()
        times.append(clock.now)
        exact = sum(1 for t in times if clock.now - t <= window)
        slack = sum(1 for t in times if window < clock.now - t <= window + window / buckets)
        counted = meter.count()
        assert exact <= counted <= exact + slack


def test_idle_gap_longer_than_the_window_resets() -> None:
    clock = FakeClock()
    meter = SlidingWindowCounter(window_s=2.0, buckets=4, clock=clock)
    for _ in range(100):
        meter.record()
    clock.now += 3600
    assert meter.count() == 0
    meter.record()
    assert meter.count() == 1


def test_memory_is_fixed_whatever_the_rate() -> None:
    clock = FakeClock()
    meter = SlidingWindowCounter(window_s=1.0, buckets=50, clock=clock)
    for _ in range(100_000):
        clock.now += 0.00001
        meter.record()
    assert len(meter._storage.counts) == 51
    assert meter.count() == 100_000


@pytest.mark.parametrize("window", [0, -1, float("inf")])
def test_rejects_nonsense_windows(window: float) -> None:
    with pytest.raises(ValueError, match="window_s"):
        SlidingWindowCounter(window_s=window)
