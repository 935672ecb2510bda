"""Peak-EWMA cost and the load p2c_ewma compares."""

from __future__ import annotations

import math

import pytest

from offload.peak_ewma import PeakEwma
from offload.registry import Server

from clocks import FakeClock


def test_rises_at_once_and_decays_with_time() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, penalty_s=1.0, clock=clock)
    assert cost.estimate_s == 1.0  # unmeasured: the pessimistic penalty
    cost.observe(0.010)
    cost.observe(0.050)  # a slow answer is believed immediately
    assert cost.estimate_s == pytest.approx(0.050)
    clock.now += 10  # one decay time later a fast answer pulls it most of the way back
    cost.observe(0.010)
    assert cost.estimate_s == pytest.approx(0.050 * math.exp(-1) + 0.010 * (1 - math.exp(-1)))
    cost.penalize()
    assert cost.estimate_s == 1.0
    cost.reset()
    cost.observe(0.004)
    assert cost.estimate_s == pytest.approx(0.004)


def test_load_is_relative_to_the_usual_concurrency_and_never_below_the_cost() -> None:
    cost = PeakEwma(clock=FakeClock())
    cost.observe(0.010, concurrency=1)
    assert cost.load(0) == pytest.approx(0.010)
    assert cost.load(3) == pytest.approx(0.040)  # idle server: exactly Finagle's cost x (pending + 1)
    for _ in range(100):
        cost.observe(0.010, concurrency=4)  # it usually serves 4 at once at this latency
    assert cost.concurrency == pytest.approx(4, rel=0.01)
    assert cost.load(3) == pytest.approx(0.010, rel=0.01)  # its normal load costs nothing extra
    assert cost.load(7) == pytest.approx(0.020, rel=0.01)  # twice its usual queue: twice the wait
    assert cost.load(0) == pytest.approx(0.010)  # fewer than usual is not faster than measured


def test_an_unproven_server_takes_one_request_at_a_time() -> None:
    server = Server("new", "http://127.0.0.1:7000")
    server.record_probe(True, 0.001, None, None)  # probes seed the cost ...
    assert server.load() == pytest.approx(0.001)
    server.inflight = 1
    assert server.load() == math.inf  # ... but until a request answers, one at a time
    server.inflight = 0
    server.record_success(0.015, concurrency=1)
    server.record_probe(True, 0.001, None, None)  # a probe no longer lowers a measured cost
    server.inflight = 1
    assert server.load() == pytest.approx(0.030)
