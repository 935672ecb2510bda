"""``offload demo``: edges and a gateway on loopback, and the original experiment through them.

Three edge servers (the device itself and two remote edges with different
simulated link delays) and a gateway with the math plugin run as separate
processes on 127.0.0.1, exactly as ``offload-edge`` and ``offload serve`` would.
The experiment is the original one: 1000 requests with 1-5 ms gaps, the
throughput rule on, 25 requests per second allowed locally.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..security import TOKEN_ENV
from ..stats import mean, percentile
from .bench.load import Progress, Sample, open_loop
from .demo_contracts import (
    DEMO_PRIVATE_KEY,
    KEY_ENV,
    chain_args,
    contracts_available,
    contracts_config,
    deployed_contracts,
    run_contract_calls,
)
from .ports import LOOPBACK, free_port, port_is_free
from .processes import ProcessGroup, StartupError
from .tables import add_rows, as_text, table

DEMO_HOST = LOOPBACK


@dataclass(frozen=True)
class EdgePlan:
    """One edge server of the demo."""

    name: str
    delay_ms: float
    local: bool = False


DEMO_EDGES = (
    EdgePlan("local", 0.0, local=True),
    EdgePlan("edge-near", 2.0),
    EdgePlan("edge-far", 10.0),
)


@dataclass(frozen=True)
class DemoOptions:
    """What ``offload demo`` was asked to do."""

    port: int = 8899
    requests: int = 1000
    min_gap_ms: float = 1.0
    max_gap_ms: float = 5.0
    expected_throughput: int = 25
    serve: bool = False
    seed: int = 1


def gateway_config(edges: dict[str, str], expected_throughput: int, contract_addresses: dict[str, str]) -> str:
    """plugins.toml text for the demo's gateway."""
    lines = [
        "[gateway]",
        f'host = "{DEMO_HOST}"',
        "probe_interval_s = 1.0",
        "",
        "[plugins.math]",
        'policy = "p2c_ewma"',
        "consider_throughput = true",
        f"expected_throughput = {expected_throughput}",
        "window_s = 1.0",
        "timeout_s = 10.0",
        "servers = [",
    ]
    for plan in DEMO_EDGES:
        local = "true" if plan.local else "false"
        lines.append(f'  {{ name = "{plan.name}", url = "{edges[plan.name]}", local = {local} }},')
    lines.append("]")
    text = "\n".join(lines) + "\n"
    if contract_addresses:
        text += contracts_config(edges, contract_addresses)
    return text


def demo_token() -> tuple[str, bool]:
    """The operator's token for this run: ``$OFFLOAD_API_TOKEN``, else a new one; and whether it is new."""
    given = os.environ.get(TOKEN_ENV, "").strip()
    return (given, False) if given else (secrets.token_urlsafe(24), True)


async def start_everything(group: ProcessGroup, options: DemoOptions, workdir: Path, token: str) -> str:
    """Start the edges and the gateway, all with the operator's ``token``; return the gateway's base URL."""
    token_env = {TOKEN_ENV: token}
    ports = {plan.name: free_port() for plan in DEMO_EDGES}
    addresses = [f"{DEMO_HOST}:{port}" for port in ports.values()]
    edges = {plan.name: f"http://{DEMO_HOST}:{ports[plan.name]}" for plan in DEMO_EDGES}
    with_contracts = contracts_available()
    # The device's edge hosts the demo chain; the others relay to it.
    chain_url = edges[DEMO_EDGES[0].name] + "/rpc"
    started = []
    for index, plan in enumerate(DEMO_EDGES):
        argv = [
            sys.executable, "-m", "offload_edge",
            "--host", DEMO_HOST, "--port", str(ports[plan.name]), "--name", plan.name,
            "--delay-ms", str(plan.delay_ms), "--peers", ",".join(addresses), "--processes", "1",
        ]  # fmt: skip
        if with_contracts:
            argv += chain_args(index == 0, chain_url)
        started.append(group.start(plan.name, argv, edges[plan.name] + "/health", env=token_env))
    await asyncio.gather(*(group.wait_healthy(process, name=process.name) for process in started))
    contract_addresses = await deployed_contracts(edges[DEMO_EDGES[0].name]) if with_contracts else {}

    config_path = workdir / "plugins.toml"
    config_path.write_text(gateway_config(edges, options.expected_throughput, contract_addresses))
    gateway_url = f"http://{DEMO_HOST}:{options.port}"
    argv = [
        sys.executable, "-m", "offload", "serve",
        "--config", str(config_path), "--host", DEMO_HOST, "--port", str(options.port),
    ]  # fmt: skip
    env = {**token_env, KEY_ENV: DEMO_PRIVATE_KEY} if with_contracts else token_env
    await group.wait_healthy(group.start("gateway", argv, gateway_url + "/health", env=env))
    return gateway_url


async def replay_experiment(gateway_url: str, options: DemoOptions) -> list[Sample]:
    """Open-loop load: request i is sent at its scheduled time whatever earlier ones are doing."""
    progress = Progress(options.requests)
    samples = await open_loop(
        lambda index: f"{gateway_url}/square/{index}",
        options.requests,
        (options.min_gap_ms, options.max_gap_ms),
        random.Random(options.seed),
        progress,
        "sent",
        timeout_s=30.0,
    )
    progress.finish()
    return samples


def latency_cells(latencies_ms: list[float]) -> list[str]:
    """Mean, p50 and p99 as table cells, or dashes when there are no samples."""
    if not latencies_ms:
        return ["-", "-", "-"]
    figures = (mean(latencies_ms), percentile(latencies_ms, 0.5), percentile(latencies_ms, 0.99))
    return [f"{value:.2f}" for value in figures]


def report(samples: list[Sample], options: DemoOptions) -> str:
    """The per-server table and the local-throughput summary."""
    by_server: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        by_server[sample.server].append(sample.latency_s * 1000)
    order = [plan.name for plan in DEMO_EDGES] + sorted(set(by_server) - {plan.name for plan in DEMO_EDGES})
    servers = table("server", "requests", "share", "mean ms", "p50 ms", "p99 ms")
    for name in order:
        latencies = by_server.get(name, [])
        share = 100 * len(latencies) / len(samples) if samples else 0
        add_rows(servers, [(name, len(latencies), f"{share:.1f}%", *latency_cells(latencies))])
    every = [sample.latency_s * 1000 for sample in samples]
    servers.add_section()
    add_rows(servers, [("all", len(every), "100.0%", *latency_cells(every))])
    lines = [as_text(servers)]
    failed = sum(1 for sample in samples if sample.status != 200)
    local_name = next(plan.name for plan in DEMO_EDGES if plan.local)
    per_second: dict[int, int] = defaultdict(int)
    for sample in samples:
        if sample.server == local_name:
            per_second[int(sample.sent_at)] += 1
    peak = max((s.throughput for s in samples if s.server == local_name and s.throughput is not None), default=0)
    seconds = ", ".join(str(per_second[second]) for second in range(max(per_second, default=-1) + 1))
    duration = max((sample.sent_at for sample in samples), default=0.0)
    lines += [
        "",
        f"requests: {len(samples)} in {duration:.1f} s ({len(samples) / max(duration, 1e-9):.0f}/s offered), "
        f"failed: {failed}",
        f"local throughput: peak {peak} per 1 s window (expected_throughput {options.expected_throughput}); "
        f"local requests per second: {seconds or 'none'}",
    ]
    return "\n".join(lines)


def operator_help(gateway_url: str, token: str, made: bool) -> list[str]:
    """How to send a write (it needs the operator's token) to the demo gateway."""
    if made:
        where = [
            f"\noperator token, made for this run (set {TOKEN_ENV} to choose your own):",
            f"  export {TOKEN_ENV}={token}",
        ]
    else:
        where = [f"\noperator token: the one in ${TOKEN_ENV}"]
    write = f"{gateway_url}/contracts/Counter/increment" if contracts_available() else f"{gateway_url}/updateservers"
    return [
        *where,
        "writes need it; reads do not:",
        f"  curl -X POST -H \"Authorization: Bearer ${TOKEN_ENV}\" -H 'Content-Type: application/json' "
        f"-d '{{}}' {write}",
    ]


async def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def run_demo(options: DemoOptions) -> int:
    """Start everything, run the experiment (or serve), and always stop what was started."""
    if not port_is_free(DEMO_HOST, options.port):
        print(f"offload demo: port {options.port} on {DEMO_HOST} is in use; pass --port N", file=sys.stderr)
        return 2
    # SIGTERM (a service manager, `kill`) stops the demo as Ctrl-C does: through the cleanup below,
    # so no edge is left running and no temporary folder left behind.
    main = asyncio.current_task()
    if main is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    with tempfile.TemporaryDirectory(prefix="offload-demo-") as workdir:
        group = ProcessGroup(Path(workdir))
        try:
            print("starting 3 edge servers and the gateway on loopback ...", file=sys.stderr)
            token, made = demo_token()
            gateway_url = await start_everything(group, options, Path(workdir), token)
            for process in group.processes:
                print(f"  {process.name:<10} pid {process.pid:<7} {process.health_url.rsplit('/', 1)[0]}")
            if options.serve:
                print(f"\ngateway ready: curl {gateway_url}/square/20   (Ctrl-C to stop)")
                if contracts_available():
                    print(
                        f"               curl '{gateway_url}/contracts/execcontract?contractID=Hello&operation=hello'"
                    )
                print("\n".join(operator_help(gateway_url, token, made)))
                await wait_for_signal()
                return 0
            print(
                f"\nreplaying the original experiment: {options.requests} requests, "
                f"{options.min_gap_ms:g}-{options.max_gap_ms:g} ms apart, throughput rule on "
                f"(expected {options.expected_throughput}/s)",
                file=sys.stderr,
            )
            samples = await replay_experiment(gateway_url, options)
            print()
            print(report(samples, options))
            healthy = all(sample.status == 200 for sample in samples)
            if contracts_available():
                lines, contracts_ok = await run_contract_calls(gateway_url, token)
                print("\n".join(lines))
                healthy = healthy and contracts_ok
            return 0 if healthy else 1
        except StartupError as exc:
            print(f"offload demo: {exc}", file=sys.stderr)
            return 1
        except asyncio.CancelledError:
            print("offload demo: stopped by SIGTERM", file=sys.stderr)
            return 128 + signal.SIGTERM
        finally:
            group.stop_all()
            print("stopped all demo processes", file=sys.stderr)
