"""Pools: adding, removing, replacing, finding by name or address."""

from __future__ import annotations

from dataclasses import fields

import pytest

from offload.addresses import normalize_url
from offload.breaker import HALF_OPEN, OPEN
from offload.pool_config import PLUGIN_CORE_DEFAULTS, PoolConfig, pool_config_from_options
from offload.registry import Pool, Registry
from offload.settings import ServerSpec

from clocks import FakeClock


def make_pool(*specs: ServerSpec) -> Pool:
    return Pool(PoolConfig(name="p", servers=specs))


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.2", "http://127.0.0.2:5000"),
        ("127.0.0.2:7000", "http://127.0.0.2:7000"),
        ("http://localhost:80/", "http://localhost:80"),
        ("https://127.0.0.1", "https://127.0.0.1:443"),
        ("[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_normalize_url(address: str, url: str) -> None:
    assert normalize_url(address) == url


@pytest.mark.parametrize("address", ["", "ftp://x", "http://127.0.0.1:5000/path", "http://:80", "127.0.0.1:99999"])
def test_normalize_url_rejects(address: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(address)


def test_add_deduplicates_by_address_and_keeps_names_unique() -> None:
    pool = make_pool(ServerSpec("a", "127.0.0.1:5001"))
    again = pool.add(ServerSpec("other-name", "http://127.0.0.1:5001"))
    assert again is pool.servers[0] and len(pool) == 1
    renamed = pool.add(ServerSpec("a", "127.0.0.1:5002"))
    assert renamed.name == "127.0.0.1:5002"
    assert pool.addresses() == ["127.0.0.1:5001", "127.0.0.1:5002"]


def test_find_by_name_url_or_host_port() -> None:
    pool = make_pool(ServerSpec("a", "127.0.0.1:5001"), ServerSpec("b", "127.0.0.2"))
    assert pool.find("a") is pool.servers[0]
    assert pool.find("127.0.0.1:5001") is pool.servers[0]
    assert pool.find("http://127.0.0.2:5000") is pool.servers[1]
    assert pool.find("127.0.0.2") is pool.servers[1]  # default port
    assert pool.find("127.0.0.3") is None
    assert pool.find("not an address at all://") is None


def test_remove_and_replace_keep_live_state_of_servers_that_stay() -> None:
    pool = make_pool(ServerSpec("a", "127.0.0.1:5001"), ServerSpec("b", "127.0.0.1:5002", local=True))
    pool.servers[0].record_latency(0.004)
    pool.replace([ServerSpec("x", "127.0.0.1:5001"), ServerSpec("c", "127.0.0.1:5003")])
    assert [s.name for s in pool.servers] == ["a", "c"]
    assert pool.servers[0].latency_ewma_s == pytest.approx(0.004)
    assert pool.local_server() is None
    assert pool.remove("c") is not None and pool.remove("c") is None
    assert pool.addresses() == ["127.0.0.1:5001"]


def test_latency_averages_probes_and_failures() -> None:
    server = make_pool(ServerSpec("a", "127.0.0.1:5001")).servers[0]
    assert server.available and server.probe_ok is None
    assert server.cost.estimate_s == 10.0  # unmeasured: pessimistic (the pool's timeout)
    server.record_latency(0.010)
    server.record_latency(0.020)
    assert server.latency_ewma_s == pytest.approx(0.013)
    assert server.cost.estimate_s == pytest.approx(0.010, rel=1e-3)  # the faster of its first two answers
    server.record_latency(0.020)
    # Peak-sensitive once a later request confirms it (see test_peak_ewma); a lone slower sample moves it a little.
    assert 0.010 < server.cost.estimate_s < 0.012
    server.record_probe(False, None, "probe failed: refused", None)
    assert not server.available and server.exclusion() == "probe failed: refused"
    server.record_probe(True, 0.001, None, 7)
    assert server.available and server.height == 7
    opened = server.record_failure("unreachable: refused", may_open=True, immediate=True)
    assert opened and not server.available and "circuit open" in server.exclusion()
    # A failure costs the penalty at once, however fast it came (then fades with time, as a peak).
    assert server.cost.estimate_s == pytest.approx(10.0, rel=1e-3)
    described = server.describe()
    assert described["circuit"] == "open" and described["failures"] == 1 and described["times_ejected"] == 1


def test_ejection_never_takes_more_than_half_the_pool() -> None:
    pool = make_pool(*(ServerSpec(name, f"127.0.0.1:{5000 + i}") for i, name in enumerate("abcd")))
    opened = [
        server.record_failure("refused", may_open=pool.may_eject(server), immediate=True) for server in pool.servers
    ]
    assert opened == [True, True, False, False]
    assert pool.ejected() == 2


def test_a_half_open_server_whose_trial_fails_is_ejected_again() -> None:
    # Two servers, at most one out: the one already out must still be re-opened by its failed trial.
    pool = make_pool(ServerSpec("a", "127.0.0.1:5000"), ServerSpec("b", "127.0.0.1:5001"))
    clock = FakeClock()
    server = pool.servers[0]
    server.breaker.clock = clock
    assert server.record_failure("HTTP 500", may_open=pool.may_eject(server), immediate=True)
    clock.now += server.breaker.settings.base_s
    assert server.breaker.refresh() == HALF_OPEN
    server.breaker.on_dispatch()  # the trial
    assert server.record_failure("HTTP 500", may_open=pool.may_eject(server))
    assert server.breaker.refresh() == OPEN and server.breaker.times_opened == 2
    assert not pool.may_eject(pool.servers[1])  # while the other may still not join it


def test_registry_refuses_a_pool_defined_twice() -> None:
    registry = Registry()
    registry.add_pool(PoolConfig(name="p"))
    with pytest.raises(ValueError, match="defined twice"):
        registry.add_pool(PoolConfig(name="p"))


def test_the_core_plugin_options_are_poolconfigs_fields_with_its_defaults() -> None:
    assert set(PLUGIN_CORE_DEFAULTS) == {"enabled", "prefix"} | {f.name for f in fields(PoolConfig)} - {"name"}
    # Read back through the option reader, the defaults make exactly the default PoolConfig.
    assert pool_config_from_options("p", "[plugins.p]", PLUGIN_CORE_DEFAULTS) == PoolConfig(name="p")


def test_a_failure_costs_the_failure_penalty_or_else_the_timeout() -> None:
    spec = ServerSpec("a", "127.0.0.1:5000")
    own = Pool(PoolConfig(name="p", servers=(spec,), timeout_s=10.0, failure_penalty_s=2.5)).servers[0]
    default = Pool(PoolConfig(name="p", servers=(spec,), timeout_s=4.0)).servers[0]
    for server in (own, default):
        server.record_failure("HTTP 500", may_open=False)
    assert (own.cost.estimate_s, default.cost.estimate_s) == pytest.approx((2.5, 4.0), rel=1e-3)


def test_a_probe_as_fast_as_usual_forgives_a_measured_servers_peak_and_a_slow_one_does_not() -> None:
    from offload.peak_ewma import PeakEwma
    from offload.registry import PROBE_USUAL_RISE, Server

    clock = FakeClock()
    server = Server("a", "http://127.0.0.1:7301", cost=PeakEwma(clock=clock))
    server.record_probe(True, 0.002, None, None)
    for _ in range(20):
        clock.now += 0.01
        server.record_success(0.006)
    clock.now += 0.01
    server.record_success(0.040)
    clock.now += 0.05
    server.record_success(0.040)
    assert server.cost.estimate_s > 0.035
    server.record_probe(True, 0.009, None, None)  # 4.5x the usual probe: the slowdown goes on
    assert server.cost.estimate_s > 0.035
    assert server.probe_usual_s == pytest.approx(0.002 + PROBE_USUAL_RISE * 0.007)
    server.record_probe(True, 0.0025, None, None)  # as usual: the peak is forgiven
    assert server.cost.estimate_s == pytest.approx(0.006, rel=0.1)
    usual = 0.002 + PROBE_USUAL_RISE * 0.007
    assert server.probe_usual_s == pytest.approx(usual + PROBE_USUAL_RISE * (0.0025 - usual))
