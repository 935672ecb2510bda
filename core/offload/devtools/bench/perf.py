"""``offload bench perf``: what the gateway costs, next to a direct call and nginx, in one run.

Three edges (no simulated delay) serve a near-zero-cost endpoint (``/hello``).
Each contender is loaded at 1, 16 and 64 connections with the same tool:
the edge directly, ``offload serve`` (default policy; then the original
throughput rule; then with aiohttp sending the tasks instead of the native
client; then two workers), and nginx (least_conn + keepalive over the
same edges) when it is installed. Runs are interleaved over rounds and each
figure is the median; each contender's own CPU time per request is read from
/proc. With nginx installed, a scaling check then compares one and two gateway
workers in front of nginx answering a constant.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..ports import free_port
from ..processes import ManagedProcess, ProcessGroup, StartupError
from ..progress import status, status_done
from ..tables import add_rows, as_text, goals_table, table
from .closed_loop import LoadResult, measure, wrk_available
from .cpu import group_cpu_seconds, rss_kb
from .nginx import constant_config, nginx_config
from .topology import HOST, EdgeSpec, GatewayOptions, Topology

CONNECTIONS = (1, 16, 64)
EDGES = [EdgeSpec("local", 0.0, local=True), EdgeSpec("edge1", 0.0), EdgeSpec("edge2", 0.0)]
SOAK_REQUESTS = 1_000_000
# The scaling check: worker counts compared, at one connection count, in front of a constant upstream.
SCALING_WORKERS = (1, 2)
SCALING_CONNECTIONS = 64
# What a second worker must add on this project's 2-core machine, where wrk and nginx take their share.
SCALING_GOAL = 1.3


@dataclass(frozen=True)
class PerfOptions:
    duration_s: float = 2.0
    rounds: int = 3
    soak: bool = False
    json: bool = False


def single_upstream_config(upstream_url: str) -> str:
    """A gateway whose math pool is one server (the near-zero-cost upstream of the scaling check)."""
    return (
        f'[gateway]\nhost = "{HOST}"\n\n[plugins.math]\nconsider_throughput = false\n'
        f'servers = [{{ name = "constant", url = "{upstream_url}" }}]\n'
    )


async def start_nginx(topology: Topology, nginx: str, name: str, config: Path, url: str) -> ManagedProcess:
    """nginx in the foreground with ``config`` (its prefix is the config's folder), once ``url`` answers."""
    argv = [nginx, "-p", str(config.parent), "-c", str(config), "-g", "daemon off;"]
    process = topology.group.start(name, argv, url)
    await topology.group.wait_healthy(process)
    return process


@dataclass(frozen=True)
class Contender:
    """One thing to load: its URL and the process group whose CPU time it costs (None: not counted)."""

    name: str
    url: str
    pgid: int | None = None


def process_group(process: ManagedProcess) -> int:
    """The group a started process leads (ProcessGroup starts each in a session of its own)."""
    assert process.pid is not None
    return process.pid


async def start_contenders(topology: Topology, workdir: Path, nginx: str | None) -> list[Contender]:
    """The edges, then every gateway variant and nginx in front of them."""
    await topology.start_edges(EDGES)
    contenders = [Contender("direct", topology.urls["edge1"] + "/hello")]
    variants = {
        "ours": GatewayOptions(policy="p2c_ewma"),
        "ours (throughput rule)": GatewayOptions(policy="p2c_ewma", consider_throughput=True, expected_throughput=25),
        "ours (aiohttp client)": GatewayOptions(policy="p2c_ewma", upstream_client="aiohttp"),
    }
    for index, (name, options) in enumerate(variants.items()):
        process, url = await topology.start_gateway(f"gateway{index}", options)
        contenders.append(Contender(name, url + "/", process_group(process)))
    two_workers = topology.gateway_config(GatewayOptions(policy="p2c_ewma"))
    process, url = await topology.start_gateway_with("workers2", two_workers, workers=2)
    contenders.append(Contender("ours --workers 2", url + "/", process_group(process)))
    if nginx:
        port = free_port()
        config = nginx_config(workdir / "nginx", port, list(topology.urls.values()))
        process = await start_nginx(topology, nginx, "nginx", config, f"http://{HOST}:{port}/")
        contenders.append(Contender("nginx", f"http://{HOST}:{port}/", process_group(process)))
    return contenders


async def start_scaling_contenders(topology: Topology, workdir: Path, nginx: str) -> list[Contender]:
    """One gateway and a two-worker gateway in front of nginx answering a constant.

    With the edges' share of the CPU gone, the gateway itself is what limits the
    rate, so a second worker shows what a second core buys.
    """
    port = free_port()
    upstream = f"http://{HOST}:{port}"
    await start_nginx(topology, nginx, "nginx-constant", constant_config(workdir / "nginx-constant", port), upstream)
    contenders = []
    for workers in SCALING_WORKERS:
        config = single_upstream_config(upstream)
        process, url = await topology.start_gateway_with(f"scaling{workers}", config, workers=workers)
        label = f"ours, {workers} worker{'s' if workers > 1 else ''}"
        contenders.append(Contender(label, url + "/", process_group(process)))
    return contenders


async def measure_one(contender: Contender, connections: int, duration_s: float) -> LoadResult:
    """One load run, with the contender's CPU time per request when its processes are known."""
    before = group_cpu_seconds(contender.pgid) if contender.pgid else 0.0
    result = await measure(contender.url, connections, duration_s)
    if contender.pgid is None or not result.requests:
        return result
    spent = group_cpu_seconds(contender.pgid) - before
    return replace(result, cpu_us=round(spent / result.requests * 1e6, 1))


async def measure_rounds(
    contenders: list[Contender], rounds: int, duration_s: float, connection_counts: tuple[int, ...] = CONNECTIONS
) -> dict[str, list[LoadResult]]:
    """Every contender at every connection count, interleaved over ``rounds``; the median run of each.

    Interleaving (and rotating who goes first) spreads the machine's slow moments
    over all contenders instead of handing them to whoever ran at the time.
    """
    runs: dict[tuple[str, int], list[LoadResult]] = {}
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for connections in connection_counts:
            for contender in order:
                status(f"round {round_index + 1}/{rounds}: {contender.name:<24} {connections:>2} connections ...")
                result = await measure_one(contender, connections, duration_s)
                runs.setdefault((contender.name, connections), []).append(result)
    return {
        contender.name: [median_run(runs[(contender.name, connections)]) for connections in connection_counts]
        for contender in contenders
    }


def median_run(results: list[LoadResult]) -> LoadResult:
    """The per-figure median of repeated runs; requests and errors are summed."""
    cpu = [r.cpu_us for r in results if r.cpu_us is not None]
    return replace(
        results[0],
        requests=sum(r.requests for r in results),
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
        cpu_us=statistics.median(cpu) if cpu else None,
    )


async def run_perf(options: PerfOptions) -> int:
    tool = "wrk" if wrk_available() else "built-in asyncio generator (install wrk for sharper figures)"
    nginx = shutil.which("nginx")
    print(f"offload bench perf: load by {tool}; nginx: {nginx or 'not installed (apt-get install nginx-light)'}",
          file=sys.stderr)  # fmt: skip
    soak: dict[str, Any] = {}
    scaling: dict[str, list[LoadResult]] = {}
    with tempfile.TemporaryDirectory(prefix="offload-perf-") as workdir:
        group = ProcessGroup(Path(workdir))
        topology = Topology(group, Path(workdir))
        try:
            contenders = await start_contenders(topology, Path(workdir), nginx)
            results = await measure_rounds(contenders, options.rounds, options.duration_s)
            if nginx:
                scaling_contenders = await start_scaling_contenders(topology, Path(workdir), nginx)
                scaling = await measure_rounds(
                    scaling_contenders, options.rounds, options.duration_s, (SCALING_CONNECTIONS,)
                )
            if options.soak:
                ours = next(contender for contender in contenders if contender.name == "ours")
                soak = await run_soak(ours)
        except StartupError as exc:
            print(f"\noffload bench perf: {exc}", file=sys.stderr)
            return 2
        finally:
            group.stop_all()
    status_done()
    figures = summarize(results, soak, tool, scaling)
    figures["rounds"], figures["duration_s"] = options.rounds, options.duration_s
    if options.json:
        import json

        print(json.dumps(figures, indent=2))
    else:
        print(render(figures))
    return 0 if all(goal["met"] for goal in figures["goals"]) else 1


async def run_soak(gateway: Contender) -> dict[str, Any]:
    """RSS of the gateway before and after a million requests."""
    assert gateway.pgid is not None
    await measure(gateway.url, 16, 2.0)  # warm up: caches, pools, lazily built routes
    before = rss_kb(gateway.pgid)
    sent = 0
    started = time.perf_counter()
    while sent < SOAK_REQUESTS:
        status(f"soak: {sent:>9,} / {SOAK_REQUESTS:,} requests ...")
        sent += (await measure(gateway.url, 64, 10.0)).requests
    after = rss_kb(gateway.pgid)
    return {
        "requests": sent,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_before_mb": round(before / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "growth_mb": round((after - before) / 1024, 1),
    }


def not_measured(goal: str) -> dict[str, Any]:
    """A goal this run could not judge: it counts as not met, and says what to install."""
    return {"goal": goal, "figure": "not measured: nginx is not installed (apt-get install nginx-light)",
            "met": False, "measured": False}  # fmt: skip


def summarize(
    results: dict[str, list[LoadResult]],
    soak: dict[str, Any],
    tool: str,
    scaling: dict[str, list[LoadResult]] | None = None,
) -> dict[str, Any]:
    """The figures and the verdict on each of the issue's goals that this run measured."""

    def at(name: str, connections: int) -> LoadResult | None:
        return next((r for r in results.get(name, []) if r.connections == connections), None)

    direct1, ours1 = at("direct", 1), at("ours", 1)
    ours16, nginx16 = at("ours", 16), at("nginx", 16)
    goals = []
    if direct1 and ours1:
        added50, added99 = ours1.p50_ms - direct1.p50_ms, ours1.p99_ms - direct1.p99_ms
        goals.append(
            {
                "goal": "added latency at 1 connection <= 0.3 ms p50",
                "figure": f"{added50:.3f} ms",
                "met": added50 <= 0.3,
            }
        )
        goals.append(
            {"goal": "added latency at 1 connection <= 1 ms p99", "figure": f"{added99:.3f} ms", "met": added99 <= 1.0}
        )
    ratio_goal = "at 16 connections >= 60 % of nginx's req/s"
    if ours16 and nginx16:
        ratio = ours16.rps / nginx16.rps
        goals.append({"goal": ratio_goal, "figure": f"{100 * ratio:.0f} % "
                      f"({ours16.rps:,.0f} vs {nginx16.rps:,.0f})", "met": ratio >= 0.6})  # fmt: skip
    elif ours16:
        goals.append(not_measured(ratio_goal))
    if soak:
        goals.append({"goal": "RSS growth <= 10 MB over 1,000,000 requests", "figure": f"{soak['growth_mb']} MB",
                      "met": soak["growth_mb"] <= 10})  # fmt: skip
    scaling_goal = f"--workers 2 scales: >= {SCALING_GOAL}x one worker's req/s, constant upstream"
    rates = [runs[0].rps for runs in (scaling or {}).values()]
    if len(rates) == 2 and rates[0] > 0:
        factor = rates[1] / rates[0]
        goals.append({"goal": scaling_goal, "figure": f"{factor:.2f}x ({rates[1]:,.0f} vs {rates[0]:,.0f})",
                      "met": factor >= SCALING_GOAL})  # fmt: skip
    elif ours16:
        goals.append(not_measured(scaling_goal))
    return {
        "tool": tool,
        "results": {name: [asdict(result) for result in runs] for name, runs in results.items()},
        "scaling": {name: [asdict(result) for result in runs] for name, runs in (scaling or {}).items()},
        "soak": soak,
        "goals": goals,
    }


def figures_cells(name: str, run: dict[str, Any]) -> list[str]:
    """A table row's own figures: name, connections, req/s, p50, p99, errors, cpu µs."""
    cpu = f"{run['cpu_us']:.0f}" if run.get("cpu_us") is not None else "-"
    return [
        name,
        str(run["connections"]),
        f"{run['rps']:,.0f}",
        f"{run['p50_ms']:.3f}",
        f"{run['p99_ms']:.3f}",
        str(run["errors"]),
        cpu,
    ]


FIGURES_HEADERS = ("contender", "conns", "req/s", "p50 ms", "p99 ms", "errors", "cpu µs")


def render(figures: dict[str, Any]) -> str:
    parts: list[Any] = [f"Gateway cost, near-zero-cost upstream (GET /hello on the edges); load by {figures['tool']}"]
    if "rounds" in figures:
        parts.append(
            f"median of {figures['rounds']} interleaved runs of {figures['duration_s']:g} s each; "
            "cpu = the contender's own CPU time per request"
        )
    contenders = table(*FIGURES_HEADERS, "vs direct", "vs nginx")
    by_name = figures["results"]
    for name, runs in by_name.items():
        for run in runs:
            direct = next(r for r in by_name["direct"] if r["connections"] == run["connections"])
            nginx = next((r for r in by_name.get("nginx", []) if r["connections"] == run["connections"]), None)
            versus_nginx = f"{run['rps'] / nginx['rps']:.2f}x" if nginx else "-"
            add_rows(contenders, [(*figures_cells(name, run), f"{run['rps'] / direct['rps']:.2f}x", versus_nginx)])
    parts += ["", contenders]
    if figures.get("scaling"):
        scaling = table(
            *FIGURES_HEADERS,
            title=f"Scaling: in front of nginx answering a constant, {SCALING_CONNECTIONS} connections",
        )
        add_rows(scaling, (figures_cells(name, runs[0]) for name, runs in figures["scaling"].items()))
        parts += ["", scaling]
    if figures["soak"]:
        soak = figures["soak"]
        parts += [
            "",
            f"soak: {soak['requests']:,} requests in {soak['seconds']} s, gateway RSS "
            f"{soak['rss_before_mb']} -> {soak['rss_after_mb']} MB ({soak['growth_mb']:+} MB)",
        ]
    parts += ["", goals_table(figures["goals"])]
    return as_text(*parts)
