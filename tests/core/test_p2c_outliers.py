"""p2c_ewma against lone outliers and real slowdowns, on a simulated clock (no sleeps, no sockets).

Requests arrive at a steady rate; each is answered after the latency the scenario gives the chosen
server at that moment, and the answer is recorded as the engine records it (in-flight count, the
concurrency it was measured at) when the clock reaches it.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable

from offload.peak_ewma import PeakEwma
from offload.policies import BURST_HEADROOM, P2CEwmaPolicy
from offload.registry import Server

from clocks import FakeClock

Latency = Callable[[Server, float, int], float]  # (server, time sent, how many it got before) -> seconds


def simulate(
    servers: list[Server],
    clock: FakeClock,
    latency: Latency,
    rate: float,
    until: float,
    probe: Callable[[Server, float], float] | None = None,
) -> list[tuple]:
    """Send requests ``rate`` a second until ``until`` through p2c_ewma; returns (time sent, server) per request.

    With ``probe`` (server, time -> round trip), every server is health-probed once a second.
    """
    policy = P2CEwmaPolicy(random.Random(5))
    next_probe = clock.now
    answers: list[tuple[float, int, Server, float, int]] = []
    order = itertools.count()
    sent_to = {server.name: 0 for server in servers}
    picks = []
    now = clock.now
    while now < until:
        while answers and answers[0][0] <= now:
            clock.now, _, server, rtt, concurrency = heapq.heappop(answers)
            server.inflight -= 1
            server.record_success(rtt, concurrency)
        clock.now = now
        if probe is not None and now >= next_probe:
            for server in servers:
                server.record_probe(True, probe(server, now), None, None)
            next_probe += 1.0
        server = policy.choose(servers)
        server.inflight += 1
        rtt = latency(server, now, sent_to[server.name])
        sent_to[server.name] += 1
        heapq.heappush(answers, (now + rtt, next(order), server, rtt, server.inflight))
        picks.append((now, server.name))
        now += 1 / rate
    return picks


def pool(clock: FakeClock) -> list[Server]:
    return [Server(name, f"http://127.0.0.1:{7000 + i}", cost=PeakEwma(clock=clock)) for i, name in enumerate("ab")]


def test_a_lone_spike_does_not_hand_the_traffic_to_a_server_twice_as_slow() -> None:
    clock = FakeClock(0.0)
    spikes = []

    def latency(server: Server, sent: float, count: int) -> float:
        if server.name == "b":
            return 0.012
        if sent >= 2.0 and not spikes:  # one answer of the fast server, 2 s in, is 100 ms late
            spikes.append(sent)
            return 0.106
        return 0.006

    picks = simulate(pool(clock), clock, latency, rate=200, until=5.0)
    after = [name for sent, name in picks if sent > spikes[0]]
    before = [name for sent, name in picks if 1.0 <= sent < spikes[0]]
    assert before.count("a") / len(before) > 0.99  # settled on the fast one
    assert after.count("a") / len(after) > 0.99  # and stays there: the spike cost it nothing


def test_spikes_one_in_200_do_not_move_the_traffic() -> None:
    clock = FakeClock(0.0)

    def latency(server: Server, sent: float, count: int) -> float:
        if server.name == "b":
            return 0.012
        return 0.106 if count % 200 == 199 else 0.006

    picks = simulate(pool(clock), clock, latency, rate=300, until=10.0)
    settled = [name for sent, name in picks if sent >= 1.0]
    assert settled.count("a") / len(settled) > 0.99


def test_a_server_that_really_turns_slow_is_abandoned_within_2_s() -> None:
    clock = FakeClock(0.0)
    slowed_at = 2.0

    def latency(server: Server, sent: float, count: int) -> float:
        if server.name == "b":
            return 0.012
        return 0.046 if sent >= slowed_at else 0.006  # from 2 s on, every answer of a takes 46 ms

    picks = simulate(pool(clock), clock, latency, rate=100, until=6.0)
    to_a = [sent for sent, name in picks if name == "a" and sent >= slowed_at]
    assert max(to_a) - slowed_at < 2.0  # abandoned well within 2 s of its slowdown ...
    assert len(to_a) <= 10  # ... after a handful of requests
    later = [name for sent, name in picks if sent >= slowed_at + 2.0]
    assert set(later) == {"b"}


def measured(name: str, clock: FakeClock, cost_s: float, concurrency: float, inflight: int) -> Server:
    """A server whose requests have measured ``cost_s``, usually serving ``concurrency`` at once."""
    server = Server(name, f"http://127.0.0.1:{7100 + len(name)}", cost=PeakEwma(clock=clock))
    for _ in range(2):  # the first two answers replace the probe's seed
        server.record_success(cost_s)
    server.cost.concurrency = concurrency
    server.inflight = inflight
    return server


def test_a_burst_at_the_best_server_does_not_send_requests_to_a_barely_cheaper_figure() -> None:
    # Taken from an offload bench run: after a stall of the machine, the requests queued in the
    # client reached the best edge at once (11 in flight, where it usually serves 4). Its load came
    # to 17.0 ms against 15.4 ms, the figure of an edge unmeasured for seconds; that edge then took
    # 21.7 ms, while the best one answered the same burst in 11-18 ms.
    clock = FakeClock()
    best = measured("e5", clock, 0.0056, concurrency=3.96, inflight=11)
    stale = measured("e1", clock, 0.0154, concurrency=2.0, inflight=0)
    assert best.load() > stale.load(), "judged without headroom, the burst would send the request away"
    assert best.load(BURST_HEADROOM) < stale.load()
    policy = P2CEwmaPolicy(random.Random(5))
    policy.remembered = best
    assert {policy.choose([best, stale]).name for _ in range(20)} == {"e5"}


def test_a_server_clearly_beaten_loses_the_request_at_once() -> None:
    clock = FakeClock()
    slowed = measured("f1", clock, 0.041, concurrency=1.0, inflight=0)  # +40 ms, confirmed
    other = measured("f5", clock, 0.006, concurrency=1.0, inflight=0)
    policy = P2CEwmaPolicy(random.Random(5))
    policy.remembered = slowed
    assert policy.choose([slowed, other]).name == "f5"
    # Without a remembered winner the plain comparison decides, as before.
    close = measured("g", clock, 0.0060, concurrency=1.0, inflight=0)
    closer = measured("h", clock, 0.0055, concurrency=1.0, inflight=0)
    assert P2CEwmaPolicy(random.Random(5)).choose([close, closer]).name == "h"


def test_a_server_that_turns_a_little_slower_than_another_loses_the_traffic_once_the_other_is_retried() -> None:
    # From 2 s on, a takes 10 ms and b 8 ms. The headroom gives the winner no edge when nothing
    # queues: b is tried as soon as its figure from the start (12 ms) has faded below a's
    # (100 s x ln 1.2 = 18 s), and keeps the traffic from then on.
    clock = FakeClock(0.0)

    def latency(server: Server, sent: float, count: int) -> float:
        if server.name == "b":
            return 0.012 if sent < 2.0 else 0.008
        return 0.006 if sent < 2.0 else 0.010

    servers = pool(clock)
    for server in servers:
        server.record_latency(0.001, from_request=False)  # probed, as the engine does before any request
    picks = simulate(servers, clock, latency, rate=50, until=60.0)
    assert [name for sent, name in picks if 1.0 <= sent < 2.0].count("a") == 50  # settled on a
    moved_at = min(sent for sent, name in picks if name == "b" and sent >= 2.0)
    assert 15.0 < moved_at - 2.0 < 21.0
    later = [name for sent, name in picks if sent >= moved_at + 1.0]
    assert later.count("b") / len(later) > 0.99


def test_after_a_stall_of_this_machine_a_probe_as_fast_as_usual_brings_the_traffic_back() -> None:
    # For 100 ms from 2 s every answer takes 4x as long (the machine, not a server). Only the fast
    # server, which had the traffic, shows it: its slowdown is confirmed and the traffic moves to b,
    # whose figure is from before. Its peak alone would keep it unchosen for seconds; its next
    # probe, as fast as ever, forgives the peak.
    clock = FakeClock(0.0)

    def stalled(sent: float) -> bool:
        return 2.0 <= sent < 2.1

    def latency(server: Server, sent: float, count: int) -> float:
        return (0.006 if server.name == "a" else 0.013) * (4 if stalled(sent) else 1)

    def probe(server: Server, at: float) -> float:
        return 0.001 * (4 if stalled(at) else 1)

    picks = simulate(pool(clock), clock, latency, rate=200, until=6.0, probe=probe)
    assert [name for sent, name in picks if 2.1 <= sent < 2.5].count("b") > 0, "the stall moved the traffic"
    back = [name for sent, name in picks if 3.1 <= sent < 6.0]  # after the first probe since the stall
    assert back.count("a") / len(back) > 0.99


def test_a_probe_does_not_bring_traffic_back_to_a_server_that_really_turned_slow() -> None:
    clock = FakeClock(0.0)

    def latency(server: Server, sent: float, count: int) -> float:
        if server.name == "b":
            return 0.012
        return 0.046 if sent >= 2.0 else 0.006  # a's link slowed by 40 ms: its probes too

    def probe(server: Server, at: float) -> float:
        return 0.041 if server.name == "a" and at >= 2.0 else 0.001

    picks = simulate(pool(clock), clock, latency, rate=100, until=6.0, probe=probe)
    later = [name for sent, name in picks if sent >= 3.0]
    assert set(later) == {"b"}
