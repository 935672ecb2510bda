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
from offload.policies import P2CEwmaPolicy
from offload.registry import Server

from clocks import FakeClock

Latency = Callable[[Server, float, int], float]  # (server, time sent, how many it got before) -> seconds


def simulate(servers: list[Server], clock: FakeClock, latency: Latency, rate: float, until: float) -> list[tuple]:
    """Send requests ``rate`` a second until ``until`` through p2c_ewma; returns (time sent, server) per request."""
    policy = P2CEwmaPolicy(random.Random(5))
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
