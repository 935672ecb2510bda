"""Policies and the local-or-offload decision, deterministic with a seeded RNG."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from offload.engine import Engine
from offload.errors import OffloadError
from offload.policies import MinLatencyPolicy, RandomPolicy
from offload.pool_config import PoolConfig
from offload.registry import Pool, Registry, Server
from offload.settings import GatewaySettings, ServerSpec


def servers(*latencies_ms: float | None) -> list[Server]:
    result = []
    for index, latency in enumerate(latencies_ms):
        server = Server(f"s{index}", f"http://127.0.0.1:{5000 + index}")
        if latency is not None:
            server.record_latency(latency / 1000)
        result.append(server)
    return result


def test_min_latency_picks_the_lowest_and_puts_unmeasured_last() -> None:
    policy = MinLatencyPolicy(random.Random(1))
    candidates = servers(None, 12, 3, 7)
    assert policy.choose(candidates).name == "s2"
    assert policy.choose(servers(None, None)).name == "s0"


def test_random_is_uniform_and_reproducible() -> None:
    candidates = servers(1, 1, 1)
    first = [RandomPolicy(random.Random(42)).choose(candidates).name for _ in range(1)]
    again = [RandomPolicy(random.Random(42)).choose(candidates).name for _ in range(1)]
    assert first == again
    policy = RandomPolicy(random.Random(3))
    counts = Counter(policy.choose(candidates).name for _ in range(3000))
    assert set(counts) == {"s0", "s1", "s2"}
    assert all(900 < count < 1100 for count in counts.values())


def make_engine(**config: object) -> tuple[Engine, Pool]:
    specs = (
        ServerSpec("local", "http://127.0.0.1:5000", local=True),
        ServerSpec("near", "http://127.0.0.1:5001"),
        ServerSpec("far", "http://127.0.0.1:5002"),
    )
    registry = Registry()
    pool = registry.add_pool(PoolConfig(name="p", servers=specs, **config))  # type: ignore[arg-type]
    pool.servers[1].record_latency(0.002)
    pool.servers[2].record_latency(0.010)
    pool.servers[0].record_latency(0.050)
    return Engine(registry, GatewaySettings(), rng=random.Random(5)), pool


def test_throughput_rule_local_until_over_expected() -> None:
    engine, pool = make_engine(consider_throughput=True, expected_throughput=3, window_s=60)
    chosen = []
    for _ in range(6):
        server = engine.choose(pool)
        if server.local:
            engine.state.admit_now(engine.window_key("p"), 3, 60)
        chosen.append(server.name)
    assert chosen == ["local", "local", "local", "local", "near", "near"]


def test_throughput_rule_skips_a_down_local_and_falls_back_to_it_when_alone() -> None:
    engine, pool = make_engine(consider_throughput=True, expected_throughput=0, window_s=60)
    local, near, far = pool.servers
    local.record_probe(False, None, "refused", None)
    assert engine.choose(pool) is near
    local.record_probe(True, 0.05, None, None)
    engine.state.admit_now(engine.window_key("p"), 0, 60)
    near.record_probe(False, None, "refused", None)
    far.record_probe(False, None, "refused", None)
    # Over the limit and no remote left: run locally rather than fail.
    assert engine.choose(pool) is local


def test_without_the_rule_the_policy_sees_every_available_server() -> None:
    engine, pool = make_engine(consider_throughput=False)
    assert engine.choose(pool).name == "near"
    pool.servers[1].record_probe(False, None, "refused", None)
    assert engine.choose(pool).name == "far"


def test_all_unhealthy_fails_open_to_the_least_bad_then_503_lists_why() -> None:
    from offload.selection import choose

    engine, pool = make_engine(consider_throughput=False)
    for server in pool.servers:
        server.record_probe(False, None, f"probe failed: {server.name} timed out", None)
    runtime = engine.runtime["p"]
    first = choose(pool, runtime.policy)
    assert (first.server.name, first.fail_open) == ("near", True)  # fastest known of the unhealthy
    assert choose(pool, runtime.policy, exclude={"near"}).server.name == "far"
    with pytest.raises(OffloadError) as caught:
        choose(pool, runtime.policy, exclude={"local", "near", "far"})
    error = caught.value
    assert error.status == 503
    assert error.details["excluded"] == {
        "local": "failed this request already",
        "near": "failed this request already",
        "far": "failed this request already",
    }
    assert first.excluded == {
        "local": "probe failed: local timed out",
        "near": "probe failed: near timed out",
        "far": "probe failed: far timed out",
    }


def test_requested_server_must_be_in_the_pool() -> None:
    engine, pool = make_engine()
    assert engine.choose(pool, "far").name == "far"
    assert engine.choose(pool, "127.0.0.1:5001").name == "near"
    with pytest.raises(OffloadError) as caught:
        engine.choose(pool, "127.0.0.1:6000")
    assert caught.value.status == 400 and "not in pool 'p'" in caught.value.message


def test_unknown_policy_names_the_known_ones() -> None:
    registry = Registry()
    registry.add_pool(PoolConfig(name="p", policy="fastest"))
    with pytest.raises(
        ValueError, match="unknown policy 'fastest'; choose one of: estimated_completion, least_inflight"
    ):
        Engine(registry, GatewaySettings())
