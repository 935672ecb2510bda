"""Breakers, retries, retry budgets, hedging and failing open.

Most engine cases run in-process on a :class:`~offload.transports.FakeTransport`
(a function answers for every server: no sockets); a few run end to end on real
servers, where what the sockets do matters (a refused connection, a cancelled
request on the wire, a server brought back on its port).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from sanic import Sanic, response

from offload import OffloadError, Task
from offload.breaker import CLOSED, HALF_OPEN, OPEN, BreakerSettings, CircuitBreaker
from offload.policies import EstimatedCompletionPolicy, LeastInflightPolicy, P2CEwmaPolicy, RoundRobinPolicy
from offload.registry import Server
from offload.retry_budget import RetryBudget
from offload.tasks import Task as TaskType
from offload.testing import serve_app
from offload.transports import FakeTransport, UpstreamReply, UpstreamUnreachable, text_reply

from clocks import FakeClock
from conftest import EdgeFactory
from engines import engine_for


def test_breaker_opens_half_opens_and_recovers() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerSettings(failures_to_open=3, base_s=10, max_s=25), clock=clock)
    for _ in range(2):
        assert not breaker.on_failure("HTTP 500", may_open=True)
    assert breaker.refresh() == CLOSED and breaker.allows()
    assert breaker.on_failure("HTTP 500", may_open=True)
    assert breaker.refresh() == OPEN and not breaker.allows()
    assert breaker.describe() == "circuit open for 10.0 s more after HTTP 500"
    clock.now += 10
    assert breaker.refresh() == HALF_OPEN and breaker.allows()
    breaker.on_dispatch()  # the one trial request
    assert not breaker.allows() and "trial request is in flight" in breaker.describe()
    assert breaker.on_failure("HTTP 500", may_open=True)  # trial failed: open again, for longer
    assert breaker.open_until == clock.now + 20
    clock.now += 20
    breaker.on_dispatch()
    breaker.on_success()
    assert breaker.refresh() == CLOSED and breaker.consecutive_failures == 0
    for _ in range(3):
        breaker.on_failure("x", may_open=True)
    assert breaker.open_until == clock.now + 25  # 3 x 10 s, capped at 25 s


def test_breaker_reopens_early_on_a_good_probe_and_respects_the_cap() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerSettings(failures_to_open=5), clock=clock)
    assert breaker.on_failure("refused", may_open=True, immediate=True)
    breaker.on_probe_success()
    assert breaker.refresh() == HALF_OPEN
    capped = CircuitBreaker(BreakerSettings(failures_to_open=1), clock=clock)
    assert not capped.on_failure("refused", may_open=False, immediate=True)
    assert capped.refresh() == CLOSED and capped.consecutive_failures == 1


def test_retry_budget_earns_a_share_of_requests_plus_a_minimum_per_second() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=0.5, window_s=10, clock=clock)  # a reserve of 5 retries
    for _ in range(30):
        budget.deposit()  # 30 requests earn 6 retries
    assert sum(budget.allow_retry() for _ in range(20)) == 11
    assert budget.refused == 9
    clock.now += 5
    budget.deposit()
    assert not budget.allow_retry()  # half a window later everything is still spent
    clock.now += 5.5
    # The first 30 deposits and 11 withdrawals expired; the reserve and the last 0.2 remain.
    assert sum(budget.allow_retry() for _ in range(10)) == 5


def test_a_burst_of_failures_is_retried_while_a_sick_pool_is_capped() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=10, window_s=10, clock=clock)
    # 2,000 requests a second; one dead server's 16 in-flight requests fail at once: all retried.
    for _ in range(2000):
        budget.deposit()
    assert all(budget.allow_retry() for _ in range(16))
    # Then every request fails for 10 s: retries stay near 20 % of requests plus 10 a second.
    granted = 0
    for _ in range(100):
        clock.now += 0.1
        for _ in range(200):
            budget.deposit()
            granted += budget.allow_retry()
    assert 4000 <= granted <= 4000 + 100 + 400 + 16


def servers_with(costs_ms: Sequence[float], inflight: Sequence[int] = ()) -> list[Server]:
    servers = []
    for index, cost in enumerate(costs_ms):
        server = Server(f"s{index}", f"http://127.0.0.1:{6000 + index}")
        server.record_success(cost / 1000)
        server.inflight = inflight[index] if index < len(inflight) else 0
        servers.append(server)
    return servers


def test_p2c_ewma_settles_on_the_fastest_and_spreads_under_load() -> None:
    policy = P2CEwmaPolicy(random.Random(3))
    servers = servers_with([9, 5, 20])
    picks = [policy.choose(servers).name for _ in range(200)]
    settled = picks.index("s1")
    # Once the fastest has been drawn, memory keeps it: every later pick is s1.
    assert settled < 20 and set(picks[settled:]) == {"s1"}
    loaded = servers_with([9, 5, 20], inflight=[0, 3, 0])  # 5 ms x 4 > 9 ms x 1
    assert P2CEwmaPolicy(random.Random(3)).choose(loaded).name in {"s0", "s2"}
    again = [P2CEwmaPolicy(random.Random(7)).choose(servers_with([9, 5, 20])).name for _ in range(3)]
    assert len(set(again)) == 1  # same seed, same choice


def test_other_policies_choose_as_documented() -> None:
    servers = servers_with([9, 5, 20], inflight=[2, 1, 1])
    assert LeastInflightPolicy(random.Random(1)).choose(servers).name in {"s1", "s2"}
    assert EstimatedCompletionPolicy(random.Random(1)).choose(servers).name == "s1"  # 5 x 2 < 9 x 3 < 20 x 2
    rr = RoundRobinPolicy(random.Random(1))
    turns = [rr.choose(servers).name for _ in range(6)]
    assert sorted(turns[:3]) == ["s0", "s1", "s2"] and turns[:3] == turns[3:]


async def test_a_dead_server_costs_no_failed_request(edge: EdgeFactory) -> None:
    backup = await edge("backup")
    doomed = Sanic("doomed_edge")
    doomed.add_route(lambda request: response.text("world"), "/hello", name="hello")
    doomed.add_route(lambda request: response.json({"status": "ok"}), "/health", name="health")
    doomed_serving = serve_app(doomed)
    doomed_server = await doomed_serving.__aenter__()
    servers = [("doomed", doomed_server.url), ("backup", backup.url)]
    async with engine_for(servers, policy="always_first") as engine:
        assert (await engine.offload("p", Task("/hello"))).server == "doomed"
        await doomed_serving.__aexit__(None, None, None)  # the edge dies
        results = await asyncio.gather(*(engine.offload("p", Task("/hello")) for _ in range(20)))
        pool = engine.registry.pool("p")
        counters = engine.counters("p")
    assert {result.server for result in results} == {"backup"}
    assert all(result.data == "world" for result in results)
    doomed_state = pool.find("doomed")
    assert doomed_state is not None and doomed_state.breaker.state == OPEN
    # Only requests sent before the first refusal were retried; after it the edge is ejected.
    assert 1 <= counters["retries"] <= 20 and counters["retries_refused_by_budget"] == 0


async def test_hedge_wins_and_the_slow_request_is_cancelled(edge: EdgeFactory) -> None:
    slow, fast = await edge("slow", delay_ms=400), await edge("fast")
    servers = [("slow", slow.url), ("fast", fast.url)]
    async with engine_for(servers, policy="always_first", hedge=True, hedge_after_ms=30) as engine:
        result = await engine.offload("p", Task("/hello"))
        pool = engine.registry.pool("p")
        slow_state, fast_state = pool.find("slow"), pool.find("fast")
        assert result.server == "fast" and result.data == "world"
        assert result.time < 0.4
        assert engine.counters("p")["hedges"] == 1 and engine.counters("p")["hedges_won"] == 1
        # The loser was cancelled, not left running, and not blamed.
        assert slow_state.inflight == 0 and slow_state.failures == 0
        assert slow_state.breaker.state == CLOSED and fast_state.inflight == 0


async def test_an_ejected_server_is_readmitted_by_probe_and_trial(edge: EdgeFactory) -> None:
    from offload_edge.app import EdgeConfig, create_edge_app

    backup = await edge("backup", delay_ms=20)
    first_life = serve_app(create_edge_app(EdgeConfig(name="best")))
    best = await first_life.__aenter__()
    servers = [("best", best.url), ("backup", backup.url)]
    async with engine_for(servers, policy="p2c_ewma") as engine:
        assert (await engine.offload("p", Task("/hello"))).server == "best"
        await first_life.__aexit__(None, None, None)
        assert (await engine.offload("p", Task("/hello"))).server == "backup"  # retried, best ejected
        best_state = engine.registry.pool("p").find("best")
        assert best_state.breaker.state == OPEN
        async with serve_app(create_edge_app(EdgeConfig(name="best")), port=best.port):
            await engine.probe_now()  # one probe round: alive again -> half-open
            assert best_state.breaker.refresh() == HALF_OPEN
            trial = await engine.offload("p", Task("/hello"))  # the trial request goes to it
            assert trial.server == "best" and best_state.breaker.state == CLOSED
            later = [(await engine.offload("p", Task("/hello"))).server for _ in range(5)]
    assert later == ["best"] * 5  # its penalty was forgiven: it is the fastest again


# -- on the fake transport: every server is a URL a function answers for ---------------------------

# Base URLs as the registry writes them (with a port), so that they are what the transport is handed.
FIRST, SECOND = "http://first.test:8001", "http://second.test:8002"


def answers(replies: dict[str, UpstreamReply]) -> FakeTransport:
    """A fake transport answering each base URL always with the same reply."""
    return FakeTransport(lambda base_url, task: replies[base_url])


async def test_non_idempotent_tasks_are_never_retried() -> None:
    def handler(base_url: str, task: TaskType) -> UpstreamReply:
        if base_url == FIRST:
            raise UpstreamUnreachable("ClientConnectorError: connection refused", never_arrived=True)
        return text_reply("world")

    fake = FakeTransport(handler)
    async with engine_for([("dead", FIRST), ("backup", SECOND)], policy="always_first", transport=fake) as engine:
        with pytest.raises(OffloadError) as caught:
            await engine.offload("p", Task("/hello", idempotent=False))
        assert caught.value.status == 502 and caught.value.server == "dead"
        assert fake.sent_to(SECOND) == []
        assert (await engine.offload("p", Task("/hello"))).server == "backup"


async def test_repeated_5xx_opens_the_circuit() -> None:
    fake = answers({FIRST: text_reply("boom", status=500), SECOND: text_reply("world")})
    servers = [("flaky", FIRST), ("backup", SECOND)]
    async with engine_for(servers, policy="always_first", eject_after=2, transport=fake) as engine:
        results = [await engine.offload("p", Task("/hello")) for _ in range(6)]
        flaky_state = engine.registry.pool("p").find("flaky")
        assert flaky_state is not None
        assert [result.server for result in results] == ["backup"] * 6
        assert len(fake.sent_to(FIRST)) == 2  # two failures opened the circuit; no user saw either
        assert flaky_state.breaker.state == OPEN and "HTTP 500" in flaky_state.exclusion()


async def test_a_hedge_wins_against_a_server_that_never_answers() -> None:
    async def handler(base_url: str, task: TaskType) -> UpstreamReply:
        if base_url == FIRST:
            await asyncio.Event().wait()  # hung: only a cancellation ends this
        return text_reply("world")

    fake = FakeTransport(handler)
    servers = [("hung", FIRST), ("fast", SECOND)]
    async with engine_for(servers, policy="always_first", hedge=True, hedge_after_ms=20, transport=fake) as engine:
        result = await engine.offload("p", Task("/hello"))
        pool = engine.registry.pool("p")
        hung_state = pool.find("hung")
        assert (result.server, result.data) == ("fast", "world")
        assert engine.counters("p")["hedges"] == 1 and engine.counters("p")["hedges_won"] == 1
        # The loser was cancelled, not left running, and not blamed.
        assert [sent.base_url for sent in fake.cancelled] == [FIRST]
        assert hung_state.inflight == 0 and hung_state.failures == 0 and hung_state.breaker.state == CLOSED


async def test_no_hedge_when_the_first_answer_is_quick() -> None:
    fake = answers({FIRST: text_reply("world"), SECOND: text_reply("world")})
    servers = [("first", FIRST), ("second", SECOND)]
    async with engine_for(servers, policy="always_first", hedge=True, hedge_after_ms=500, transport=fake) as engine:
        result = await engine.offload("p", Task("/hello"))
        assert result.server == "first" and engine.counters("p")["hedges"] == 0
        assert fake.sent_to(SECOND) == []


async def test_fails_open_when_every_server_looks_unhealthy() -> None:
    fake = answers({FIRST: text_reply("world")})
    async with engine_for([("only", FIRST)], transport=fake) as engine:
        engine.registry.pool("p").find("only").record_probe(False, None, "probe failed: timed out", None)
        result = await engine.offload("p", Task("/hello"))
        assert (result.server, result.data) == ("only", "world")
        assert engine.counters("p")["fail_open"] == 1


async def test_a_silent_server_costs_the_deadline_and_a_failure() -> None:
    async def handler(base_url: str, task: TaskType) -> UpstreamReply:
        await asyncio.Event().wait()  # never answers: the task's deadline ends it
        raise AssertionError("unreachable")

    fake = FakeTransport(handler)
    async with engine_for([("silent", FIRST)], transport=fake) as engine:
        with pytest.raises(OffloadError) as caught:
            await engine.offload("p", Task("/hello", timeout_s=0.05))
        silent = engine.registry.pool("p").find("silent")
        assert caught.value.status == 504 and "did not answer within" in caught.value.message
        assert silent.failures == 1 and silent.inflight == 0 and "timed out" in (silent.last_error or "")


async def test_the_retry_budget_caps_a_retry_storm() -> None:
    arrived: list[str] = []
    all_in = asyncio.Event()

    async def handler(base_url: str, task: TaskType) -> UpstreamReply:
        if base_url == SECOND:
            return text_reply("world")
        arrived.append(base_url)
        if len(arrived) == 30:
            all_in.set()
        await all_in.wait()  # all 30 are in flight before any fails, as in a storm
        return text_reply("boom", status=500)

    fake = FakeTransport(handler)
    servers = [("failing", FIRST), ("backup", SECOND)]
    config = {"policy": "always_first", "eject_after": 1000, "retry_min_per_s": 0.0}
    async with engine_for(servers, transport=fake, **config) as engine:
        outcomes = await asyncio.gather(
            *(engine.offload("p", Task("/hello")) for _ in range(30)), return_exceptions=True
        )
        counters = engine.counters("p")
    answered = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, OffloadError)]
    # 20 % of 30 active requests: six retries at once, and no more.
    assert counters["retries"] == 6 and len(answered) == 6 and len(fake.sent_to(SECOND)) == 6
    assert counters["retries_refused_by_budget"] == 24 and len(refused) == 24
    assert all(error.status == 502 and error.server == "failing" for error in refused)
