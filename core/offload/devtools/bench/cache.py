"""``offload bench cache``: what the contracts read cache buys, in one run (issue 14).

One embedded EVM node (``offload-edge --chain``) and, in front of it, three gateways:
with ``cache = false`` and ``coalesce = false`` (the gateway as it was before the
cache), with the cache (its math pool also in front of a constant upstream, for a
floor), and one more whose node is reached through a counting proxy, for the
coalescing check. Every process runs on 127.0.0.1 and is stopped
at the end.

The load (see :mod:`.cache_load`): wrk POSTs ``eth_call`` of ``Hello.greet(name)``
at one explicit block far below the head; 0, 50, 95 or 100 % of the requests
repeat one of a few names, the rest use names never sent before. Contenders, each
at 1 and 16 connections, interleaved over rounds, medians: the node directly,
the gateway without cache, the gateway with cache at each mix, two floors (the
same gateway's ``GET /`` relayed to a constant upstream, as ``bench perf``
measures it, and its ``GET /health``, no upstream at all: a hit is judged against
the lower) and, with nginx, the load generator's own ceiling (the same script
against nginx answering a constant). Then 100 identical requests at once,
counting the ``eth_call`` s that reached the node.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from ..demo_contracts import DEMO_PRIVATE_KEY, KEY_ENV, contracts_available, contracts_config, deployed_contracts
from ..processes import ProcessGroup, StartupError
from ..progress import status, status_done
from .cache_burst import CountingProxy, burst, node_requests
from .cache_load import MixedLoad, MixedResult, Workload, call_body
from .cache_report import BARE_FLOOR, CEILING, DIRECT, FLOOR, NO_CACHE, mix_name, render, summarize
from .closed_loop import measure, wrk_available
from .options import TimedRunOptions
from .perf import median_run, single_upstream_config
from .scale import json_get, start_chain, start_constant, start_gateway

CONNECTIONS = (1, 16)
MIXES = (0, 50, 95, 100)
BURST = 100
# Blocks mined before the load: the load's block then sits 70 below the head, final for the
# contracts cache's default cache_confirmations (64) without setting it.
MINED_BLOCKS = 72
LOAD_BLOCK, BURST_BLOCK = 3, 4
# No gateway probes the node during the run (each does at startup): its request counter then
# counts the burst's calls alone, a cross-check of the proxy's count.
QUIET_PROBE_INTERVAL_S = 600.0


@dataclass(frozen=True)
class CacheOptions(TimedRunOptions):
    """``--duration``, ``--rounds``, ``--json``; ``--quick`` makes it 1 s runs, one round."""


@dataclass(frozen=True)
class Contender:
    """One thing to load: ``hot_pct`` of its requests repeat (None: plain GETs, the floor)."""

    name: str
    url: str
    hot_pct: int | None


@dataclass
class Run:
    """What one run started and measured."""

    duration_s: float
    rounds: int
    block: int = LOAD_BLOCK
    head: int = 0
    contract: str = ""
    gateway_url: str = ""
    notes: list[str] = field(default_factory=list)
    results: dict[str, list[MixedResult]] = field(default_factory=dict)
    hot_pct: dict[str, int | None] = field(default_factory=dict)
    gateway_cache: dict[str, Any] | None = None
    burst: dict[str, Any] = field(default_factory=dict)


def cache_table(enabled: bool) -> str:
    """The cache keys of ``[plugins.contracts]``; off means the gateway as it was before the cache:
    nothing kept, nothing coalesced."""
    value = "true" if enabled else "false"
    return f"cache = {value}\ncoalesce = {value}\n"


async def mine(session: aiohttp.ClientSession, node: str, blocks: int) -> int:
    """``blocks`` transactions from the node's first dev account (one block each); the head after."""

    async def rpc(method: str, params: list[Any]) -> Any:
        payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with session.post(node + "/rpc", json=payload) as reply:
            reply.raise_for_status()
            answer = await reply.json()
        if "error" in answer:
            raise StartupError(f"{method} failed on the node: {answer['error']}")
        return answer["result"]

    account = (await rpc("eth_accounts", []))[0]
    for _ in range(blocks):
        await rpc("eth_sendTransaction", [{"from": account, "to": account, "value": "0x1"}])
    return int(await rpc("eth_blockNumber", []), 16)


@dataclass(frozen=True)
class Started:
    """The URLs the measurements need."""

    node: str
    burst_gateway: str
    contenders: list[Contender]


async def start_all(group: ProcessGroup, workdir: Path, run: Run, proxy: CountingProxy) -> Started:
    """The node, the constant upstream, the proxy and the three gateways; what to load."""
    nginx = shutil.which("nginx")
    node, constant = await asyncio.gather(start_chain(group), start_constant(group, workdir, nginx, "constant"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        run.head = await mine(session, node, MINED_BLOCKS)
    addresses = await deployed_contracts(node)
    run.contract = addresses["Hello"]
    env = {KEY_ENV: DEMO_PRIVATE_KEY}  # the node's funded dev account; only reads are sent

    def config(node_url: str, cache: bool) -> str:
        # The math pool in front of the constant upstream gives a floor; contracts go to the node.
        quiet = f"[gateway]\nprobe_interval_s = {QUIET_PROBE_INTERVAL_S}\n"
        text = single_upstream_config(constant).replace("[gateway]\n", quiet, 1)
        return text + contracts_config({"node": node_url}, addresses) + cache_table(cache)

    await proxy.start(node)
    # Started together: each takes a second or two of CPU to import and build its app.
    uncached, cached, burst_gateway = await asyncio.gather(
        start_gateway(group, workdir, "gateway-nocache", config(node, False), env),
        start_gateway(group, workdir, "gateway-cache", config(node, True), env),
        start_gateway(group, workdir, "gateway-burst", config(proxy.url, True), env),
    )
    contenders = [
        Contender(DIRECT, node + "/rpc", 0),
        Contender(NO_CACHE, uncached + "/contracts/rpc", 0),
        *(Contender(mix_name(pct), cached + "/contracts/rpc", pct) for pct in MIXES),
        Contender(FLOOR, cached + "/", None),
        Contender(BARE_FLOOR, cached + "/health", None),
    ]
    if nginx:
        contenders.append(Contender(CEILING, constant + "/", 0))
    else:
        run.notes.append("nginx is not installed: no load-generator ceiling, and the floor's upstream is an edge")
    run.gateway_url = cached
    return Started(node, burst_gateway, contenders)


async def measure_one(load: MixedLoad, contender: Contender, connections: int, duration_s: float) -> MixedResult:
    """One run: the eth_call script, or plain GETs for the floor."""
    if contender.hot_pct is None:
        return MixedResult(await measure(contender.url, connections, duration_s), 0)
    return await load.run(contender.url, connections, duration_s, contender.hot_pct)


async def measure_rounds(load: MixedLoad, contenders: list[Contender], run: Run) -> None:
    """Every contender at every connection count, interleaved over rounds (first one rotating); medians.

    Interleaving spreads the machine's slow moments over every contender
    instead of handing them to whoever ran at the time.
    """
    runs: dict[tuple[str, int], list[MixedResult]] = {}
    for round_index in range(run.rounds):
        shift = round_index % len(contenders)
        for connections in CONNECTIONS:
            for contender in contenders[shift:] + contenders[:shift]:
                status(f"round {round_index + 1}/{run.rounds}: {contender.name:<34} {connections:>2} connections")
                result = await measure_one(load, contender, connections, run.duration_s)
                runs.setdefault((contender.name, connections), []).append(result)
    for contender in contenders:
        run.hot_pct[contender.name] = contender.hot_pct
        run.results[contender.name] = [median_of(runs[(contender.name, c)]) for c in CONNECTIONS]


def median_of(results: list[MixedResult]) -> MixedResult:
    """The per-figure median of repeated runs; answers by outcome are summed."""
    outcomes: dict[str, int] = {}
    for result in results:
        for key, value in result.outcomes.items():
            outcomes[key] = outcomes.get(key, 0) + value
    return replace(results[0], load=median_run([r.load for r in results]), outcomes=outcomes)


async def measure_burst(started: Started, proxy: CountingProxy, run: Run, count: int = BURST) -> dict[str, Any]:
    """``count`` identical eth_calls at once through the burst gateway, at a block no request asked before.

    The node's own counter (every request it served, less our two reads of it)
    and the proxy's ``eth_call`` count, both before and after.
    """
    url = started.burst_gateway + "/contracts/rpc"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        # One call of another key first, so the burst's miss does not also pay for opening connections.
        async with session.post(url, data=call_body(run.contract, "warm-up", BURST_BLOCK)) as reply:
            await reply.read()
        before_node, before_calls = await node_requests(session, started.node), proxy.methods.copy()
        result = await burst(url, count, call_body(run.contract, "burst", BURST_BLOCK))
        after_node = await node_requests(session, started.node)
    forwarded = proxy.methods - before_calls
    return {
        "sent": result.sent,
        "block": BURST_BLOCK,
        "statuses": result.statuses,
        "outcomes": result.outcomes,
        "distinct_answers": result.bodies,
        "eth_calls_at_node": forwarded.get("eth_call", 0),
        "other_calls_at_node": {method: n for method, n in forwarded.items() if method != "eth_call"},
        # The second counter read counts itself.
        "node_requests": after_node - before_node - 1,
    }


async def gateway_cache_counts(url: str) -> dict[str, Any] | None:
    """The contracts pool's cache counts from the cached gateway's ``GET /servers`` (None: it shows none)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        pools = (await json_get(session, url + "/servers")).get("pools", {})
    counts = pools.get("contracts", {}).get("cache") if isinstance(pools, dict) else None
    return counts if isinstance(counts, dict) else None


async def run_cache(options: CacheOptions) -> int:
    """Run everything; 0 when every goal is met, 1 when one is missed, 2 when something would not start."""
    if not wrk_available():
        print("offload bench cache: needs wrk (apt-get install wrk): it sends the varying POST bodies", file=sys.stderr)
        return 2
    if not contracts_available():
        print("offload bench cache: needs the contracts plugin (pip install -e plugins/contracts)", file=sys.stderr)
        return 2
    duration_s, rounds = options.timing
    run = Run(duration_s, rounds)
    print(f"offload bench cache: load by wrk (a Lua script builds each eth_call), {rounds} round(s) of "
          f"{duration_s:g} s", file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="offload-cache-") as workdir:
        group = ProcessGroup(Path(workdir))
        proxy = CountingProxy()
        try:
            started = await start_all(group, Path(workdir), run, proxy)
            load = MixedLoad(Workload(run.contract, run.block), Path(workdir))
            await measure_rounds(load, started.contenders, run)
            status("100 identical requests at once ...")
            run.burst = await measure_burst(started, proxy, run)
            run.gateway_cache = await gateway_cache_counts(run.gateway_url)
        except StartupError as exc:
            print(f"\noffload bench cache: {exc}", file=sys.stderr)
            return 2
        finally:
            await proxy.stop()
            group.stop_all()
    status_done()
    figures = summarize(run)
    figures["quick"] = options.quick
    if options.json:
        import json

        print(json.dumps(figures, indent=2))
    else:
        print(render(figures))
    return 0 if all(goal["met"] for goal in figures["goals"]) else 1
