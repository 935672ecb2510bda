"""Peak-EWMA cost and the load p2c_ewma compares."""

from __future__ import annotations

import math

import pytest

from offload.peak_ewma import LEVEL_DECAY_FACTOR, SAMPLE_WEIGHT, SPIKE_CAP, PeakEwma
from offload.registry import Server

from clocks import FakeClock


def test_a_slow_answer_confirmed_by_a_later_request_is_believed_at_once() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, penalty_s=1.0, clock=clock)
    assert cost.estimate_s == 1.0  # unmeasured: the pessimistic penalty
    cost.observe(0.010)
    clock.now += 0.050
    cost.observe(0.050)  # alone, it might be a hiccup: it counts as one sample, at most 2x the cost
    assert cost.estimate_s == pytest.approx(0.010 + SAMPLE_WEIGHT * (SPIKE_CAP * 0.010 - 0.010), rel=1e-3)
    clock.now += 0.060
    cost.observe(0.050)  # sent 10 ms after the first slow answer arrived, and slow too: a real slowdown
    assert cost.estimate_s == pytest.approx(0.050)


def test_answers_in_flight_together_do_not_confirm_each_other() -> None:
    clock = FakeClock()
    cost = PeakEwma(clock=clock)
    cost.observe(0.010)
    clock.now += 1
    cost.observe(0.080)  # a stall of the machine: the requests in flight with it are late too ...
    clock.now += 0.001
    cost.observe(0.080)  # ... sent 79 ms before the first late answer arrived: the same moment
    assert cost.estimate_s < 0.016
    clock.now += 0.012
    cost.observe(0.010)  # sent after the stall, fast: the suspicion is cleared
    clock.now += 0.080
    cost.observe(0.080)  # so this later lone slow answer is a new suspect, not a confirmation
    assert cost.estimate_s < 0.020


def test_fast_answers_pull_the_cost_down_however_quickly_they_come() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, clock=clock)
    cost.observe(0.006)
    for _ in range(2):  # a confirmed rise to 33 ms
        clock.now += 0.040
        cost.observe(0.033)
    assert cost.estimate_s == pytest.approx(0.033)
    for _ in range(20):  # 20 answers of 6 ms, 3 ms apart: time alone would forgive 0.6% of the peak
        clock.now += 0.003
        cost.observe(0.006)
    assert cost.estimate_s < 0.006 + 0.027 * (1 - SAMPLE_WEIGHT) ** 20 * 1.01


def test_without_samples_a_peak_is_forgiven_over_decay_s_and_the_level_ten_times_slower() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, clock=clock)
    cost.observe(0.010)
    for _ in range(2):
        clock.now += 0.060
        cost.observe(0.050)
    clock.now += 10  # nobody chose it since: the peak fades, the level it rose from stays
    peak_faded = 0.010 * math.exp(-1 / LEVEL_DECAY_FACTOR) + 0.040 * math.exp(-1)
    assert cost.estimate_s == pytest.approx(peak_faded, rel=1e-2)
    clock.now += 0.060
    cost.observe(0.050)  # tried again and still slow: compared with what it showed, so no spike
    assert cost.estimate_s > 0.030


def test_a_server_tried_again_after_a_pause_shows_its_latency_at_once() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, clock=clock)
    cost.observe(0.016)
    clock.now += 90  # its level faded (towards zero, ten times slower than a peak)
    assert cost.estimate_s < 0.007
    cost.observe(0.016)  # no higher than it has shown, so no spike; after a long pause it weighs fully
    assert cost.estimate_s == pytest.approx(0.016, rel=1e-3)
    clock.now += 10
    assert cost.estimate_s > 0.014  # its level is back too: it fades ten times slower than a peak


def test_failures_count_at_once_and_reset_forgets() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, penalty_s=1.0, clock=clock)
    cost.observe(0.010)
    clock.now += 0.001
    cost.penalize()  # no confirmation asked: a server that fails fast must not look fast
    assert cost.estimate_s == 1.0
    clock.now += 10  # a failure is a peak: forgiven over decay_s like one
    assert cost.estimate_s == pytest.approx(0.010 * math.exp(-1 / LEVEL_DECAY_FACTOR) + 0.990 * math.exp(-1))
    cost.reset()
    assert cost.estimate_s == 1.0  # unmeasured again
    cost.observe(0.004)
    assert cost.estimate_s == pytest.approx(0.004)
    fresh = PeakEwma(penalty_s=2.0, clock=clock)
    fresh.penalize()
    assert fresh.estimate_s == 2.0


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
    server.record_success(0.015, concurrency=1)  # a second answer: now it is measured
    server.record_probe(True, 0.001, None, None)  # a probe no longer lowers a measured cost
    server.inflight = 1
    assert server.load() == pytest.approx(0.030, rel=1e-3)


def test_the_first_two_requests_replace_the_probes_seed() -> None:
    clock = FakeClock()
    server = Server("near-but-slow", "http://127.0.0.1:7000", cost=PeakEwma(clock=clock))
    server.record_probe(True, 0.001, None, None)  # probes see the link, not the task
    clock.now += 0.5
    server.record_success(0.013)  # the task takes 13 ms: no spike against the probe's 1 ms
    assert server.cost.estimate_s == pytest.approx(0.001, rel=0.1)  # one answer is not yet believed
    server.record_success(0.013)
    assert server.cost.estimate_s == pytest.approx(0.013)


def test_a_first_answer_that_was_an_outlier_does_not_become_the_cost() -> None:
    clock = FakeClock()
    server = Server("fast", "http://127.0.0.1:7000", cost=PeakEwma(clock=clock))
    server.record_probe(True, 0.001, None, None)
    server.record_success(0.105)  # its first answer was the one in 200 that came 100 ms late
    server.inflight = 0
    assert server.load() < 0.005  # still in the comparison: the next request comes here
    server.record_success(0.005)
    assert server.cost.estimate_s == pytest.approx(0.005)
    clock.now += 5.0
    assert server.cost.estimate_s > 0.004  # a measured 5 ms, not a 105 ms outlier fading for minutes


def test_without_a_probe_seed_the_first_answer_stands_until_the_second() -> None:
    server = Server("unprobed", "http://127.0.0.1:7000", cost=PeakEwma(clock=FakeClock()))
    server.record_success(0.020)
    assert server.cost.estimate_s == pytest.approx(0.020)
    server.record_success(0.008)
    assert server.cost.estimate_s == pytest.approx(0.008)  # the faster of the two


def test_a_forgiven_peak_leaves_the_level_ordinary_samples_set() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, penalty_s=1.0, clock=clock)
    assert cost.forgive_peak() is False  # nothing measured, nothing to forgive
    cost.observe(0.010)
    assert cost.forgive_peak() is False  # no peak
    clock.now += 0.050
    cost.observe(0.050)
    clock.now += 0.060
    cost.observe(0.050)  # sent after the first slow answer arrived: confirmed, the cost is the peak
    assert cost.estimate_s == pytest.approx(0.050)
    assert cost.forgive_peak() is True
    assert cost.estimate_s == pytest.approx(0.010, rel=0.01)
    clock.now += 0.010
    cost.observe(0.050)  # a lone slow answer after that is only a suspect again
    assert cost.estimate_s < 0.016


def test_a_failure_penalty_is_not_forgiven_within_decay_s() -> None:
    clock = FakeClock()
    cost = PeakEwma(decay_s=10, penalty_s=1.0, clock=clock)
    cost.observe(0.006)
    cost.penalize()
    clock.now += 5
    assert cost.forgive_peak() is False and cost.estimate_s > 0.5
    clock.now += 6
    assert cost.forgive_peak() is True and cost.estimate_s < 0.01
