"""``offload bench cache``: its pieces against real servers, then ``--quick --json`` run for real.

The burst and its counting proxy are checked against a cache that exists
whatever the contracts plugin does (the math plugin's ``cache_ttl_s``): 100
identical requests reach the edge once with it, 100 times without. The wrk
script is checked to build bodies the node accepts, and to count an error
answered inside a 200 as an error. Timing figures are the machine's to judge.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak

from offload.devtools.bench.cache import BURST, CONNECTIONS, MIXES
from offload.devtools.bench.cache_burst import CountingProxy, burst
from offload.devtools.bench.cache_load import MixedLoad, Workload, call_body, greet_calldata
from offload.devtools.bench.cache_report import BARE_FLOOR, CEILING, DIRECT, FLOOR, NO_CACHE, mix_name

from conftest import EdgeFactory, GatewayFactory

# The quick run takes about 25 s here; the bound only stops a hang.
TIMEOUT_S = 150
HELLO = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"  # where offload-edge --chain deploys Hello


def needs_wrk() -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")


def test_calldata_is_greet_abi_encoded() -> None:
    selector = keccak(text="greet(string)")[:4].hex()
    assert greet_calldata("hot-1") == "0x" + selector + encode(["string"], ["hot-1"]).hex()
    assert greet_calldata("x" * 32) == "0x" + selector + encode(["string"], ["x" * 32]).hex()
    with pytest.raises(ValueError):
        greet_calldata("x" * 33)
    assert json.loads(call_body(HELLO, "a", 3))["params"][1] == "0x3"


@pytest.mark.parametrize(("cache_ttl_s", "expected"), [(60, 1), (0, BURST)])
async def test_burst_counts_what_reaches_the_upstream(
    edge: EdgeFactory, gateway: GatewayFactory, cache_ttl_s: int, expected: int
) -> None:
    upstream = await edge("edge")
    proxy = CountingProxy()
    await proxy.start(upstream.url)
    try:
        math = {"consider_throughput": False, "cache_ttl_s": cache_ttl_s, "servers": [{"name": "e", "url": proxy.url}]}
        gw = await gateway({"plugins": {"math": math}})
        before = proxy.paths.copy()
        result = await burst(gw.server.url + "/square/7", BURST)
        reached = sum(n for path, n in (proxy.paths - before).items() if path.startswith("/offloading/"))
    finally:
        await proxy.stop()
    assert result.statuses == {"200": BURST} and result.bodies <= BURST
    assert reached == expected
    if cache_ttl_s:
        assert result.outcomes.get("miss") == 1 and sum(result.outcomes.values()) == BURST
    else:
        assert result.outcomes == {"none": BURST}


async def test_wrk_script_sends_bodies_the_node_answers_and_counts_errors(edge: EdgeFactory, tmp_path: Path) -> None:
    needs_wrk()
    node = await edge("chain", chain=True)
    good = await MixedLoad(Workload(HELLO, 1), tmp_path).run(node.url + "/rpc", 1, 1, 50)
    assert good.load.requests > 0 and good.load.errors == 0
    assert good.outcomes["rpc_errors"] == 0 and good.outcomes["unmarked"] >= good.load.requests
    assert good.hit_share is None  # no cache on the way, no outcome header
    # A block the chain does not have: every answer is a JSON-RPC error inside a 200.
    bad = await MixedLoad(Workload(HELLO, 10**6), tmp_path).run(node.url + "/rpc", 1, 1, 50)
    assert bad.load.errors >= bad.load.requests > 0


def test_quick_cache_bench_measures_every_contender() -> None:
    needs_wrk()
    done = subprocess.run(
        [sys.executable, "-m", "offload", "bench", "cache", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    # 1: a goal missed (timing on a busy machine, or the cache not there yet); 2: could not start.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["quick"] is True
    names = {DIRECT, NO_CACHE, FLOOR, BARE_FLOOR, *(mix_name(pct) for pct in MIXES)}
    if shutil.which("nginx"):
        names.add(CEILING)
    rows = {(row["name"], row["connections"]): row for row in figures["results"]}
    assert set(rows) == {(name, c) for name in names for c in CONNECTIONS}
    for key, row in rows.items():
        assert row["requests"] > 0 and row["errors"] == 0, (key, row)
        assert 0 < row["p50_ms"] <= row["p99_ms"], (key, row)
    assert rows[(DIRECT, 1)]["hit_share"] is None and rows[(NO_CACHE, 16)]["hit_share"] is None
    burst_figures = figures["burst"]
    assert burst_figures["sent"] == BURST and burst_figures["statuses"] == {"200": BURST}
    assert burst_figures["distinct_answers"] == 1
    assert len(figures["goals"]) == 4
    # With the cache: the 95 % mix hits, and the burst reaches the node once.
    assert rows[(mix_name(95), 16)]["hit_share"] >= 0.9
    assert rows[(mix_name(0), 16)]["hit_share"] < 0.05
    assert burst_figures["eth_calls_at_node"] == 1
