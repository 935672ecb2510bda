"""``offload bench scale``: what more gateway processes buy, and what sharing state through Redis costs.

In one run on loopback, every process started here and stopped at the end:

1. **Scaling**: 1, 2 and 3 gateway processes, as ``offload serve --workers N``
   (shared memory) and as N replicas sharing one Redis behind nginx with the
   shipped ``deploy/nginx/offload.conf`` (rendered with their ports), in front of
   nginx answering a constant (an edge's ``/hello`` without nginx). wrk at 16
   and 64 connections, interleaved over rounds, medians.
2. **The throughput rule through Redis**: one gateway whose pool considers
   the local throughput (every request admitted locally), with ``--state
   memory`` and with ``--state redis://``, at one connection: the added p50.
3. **Contract writes**: N concurrent ``POST /contracts/Counter/increment``
   through one and through two replicas sharing Redis, against an embedded
   chain (``offload-edge --chain``): tx/s, non-200 answers, and the counter's
   exact rise, which must be N.

Without redis-server (or redis-py) the Redis parts are skipped, without nginx
the replicas; the output says which and why.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ...security import TOKEN_ENV
from ..demo_contracts import DEMO_PRIVATE_KEY, KEY_ENV, contracts_available, contracts_config, deployed_contracts
from ..ports import free_port
from ..processes import ProcessGroup, StartupError
from ..progress import status, status_done
from ..tables import add_rows, as_text, goals_table, table
from .closed_loop import LoadResult, wrk_available
from .nginx import constant_config
from .options import TimedRunOptions
from .perf import Contender, measure_rounds, single_upstream_config
from .topology import HOST

# The repository's deploy/ folder (present in a source checkout, not in an installed wheel).
DEPLOY_NGINX = Path(__file__).resolve().parents[4] / "deploy" / "nginx" / "offload.conf"
BEGIN_REPLICAS = "# BEGIN replicas"
END_REPLICAS = "# END replicas"

PROCESS_COUNTS = (1, 2, 3)
CONNECTIONS = (16, 64)
WRITES, QUICK_WRITES = 200, 20
# The budget for asking Redis on every request (the throughput rule), at one connection.
RULE_GOAL_MS = 0.2
# Window checks per contender and round in the client comparison.
WINDOW_CLIENT_CALLS = 2000
# High enough that every request of the rule check runs locally: only the window's cost shows.
RULE_EXPECTED_THROUGHPUT = 1_000_000
# A burst of writes queues on one nonce lease and one chain: generous, but bounded.
WRITE_TIMEOUT_S = 180.0
# A gateway with the contracts plugin, several starting at once on two cores, takes seconds.
STARTUP_TIMEOUT_S = 60.0
REDIS_STARTUP_S = 10.0


@dataclass(frozen=True)
class ScaleOptions(TimedRunOptions):
    """``--duration``, ``--rounds``, ``--json``; ``--quick`` overrides the first two and the write count."""

    @property
    def effective(self) -> tuple[float, int, int]:
        """Seconds per run, rounds and writes per burst, as this run uses them."""
        return (*self.timing, QUICK_WRITES if self.quick else WRITES)


# -- the shipped nginx config -------------------------------------------------------------

_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}")
_LISTEN = re.compile(r"^(\s*listen\s+)(\S+?)(\s*;)", re.MULTILINE)


def render_nginx_config(template: str, replicas: Sequence[str], listen: str) -> str:
    """``template`` (deploy/nginx/offload.conf) with its replica list and listen address replaced.

    ``replicas`` and ``listen`` are ``host:port`` (an ``http://`` prefix is dropped).
    Each replica gets a ``server`` line with the parameters of the template's first
    one (max_fails, fail_timeout); everything else stays as shipped.
    """
    addresses = [address.removeprefix("http://").rstrip("/") for address in replicas]
    listen = listen.removeprefix("http://").rstrip("/")
    for address in [*addresses, listen]:
        if not _ADDRESS.fullmatch(address):
            raise ValueError(f"not a host:port: {address!r}")
    if not addresses:
        raise ValueError("at least one replica is needed")
    lines = template.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN_REPLICAS)]
    ends = [i for i, line in enumerate(lines) if line.strip().startswith(END_REPLICAS)]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ValueError(f"the template needs one {BEGIN_REPLICAS!r} line, then one {END_REPLICAS!r} line")
    block = lines[begins[0] + 1 : ends[0]]
    servers = [line for line in block if line.strip().startswith("server ")]
    if not servers:
        raise ValueError("the template's replica block has no server line to follow")
    indent = servers[0][: len(servers[0]) - len(servers[0].lstrip())]
    parameters = "".join(f" {word}" for word in servers[0].strip().removesuffix(";").split()[2:])
    kept = [line for line in block if not line.strip().startswith("server ")]  # the comments
    rendered = kept + [f"{indent}server {address}{parameters};\n" for address in addresses]
    text = "".join(lines[: begins[0] + 1] + rendered + lines[ends[0] :])
    text, count = _LISTEN.subn(lambda match: f"{match[1]}{listen}{match[3]}", text)
    if count != 1:
        raise ValueError(f"the template needs exactly one listen line, found {count}")
    return text


def nginx_argv(nginx: str, config: Path) -> list[str]:
    """nginx in the foreground, its prefix (pid, logs, temp files) the config's folder, startup errors to stderr."""
    return [nginx, "-p", str(config.parent), "-c", str(config), "-e", "stderr", "-g", "daemon off;"]


def write_nginx_config(prefix: Path, text: str) -> Path:
    """Write ``text`` as ``<prefix>/nginx.conf`` (creating ``prefix``, nginx's ``-p`` folder); its path."""
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


# -- starting things ----------------------------------------------------------------------


@dataclass
class Tools:
    """What this machine has, and what the run skips without it."""

    nginx: str | None = None
    redis_server: str | None = None
    redis_py: bool = False
    contracts: bool = False
    template: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def redis(self) -> bool:
        """Whether a Redis can be started here and spoken to."""
        return self.redis_server is not None and self.redis_py

    @property
    def replicas_behind_nginx(self) -> bool:
        """Whether replicas can be measured behind the shipped nginx config."""
        return self.redis and self.nginx is not None and self.template is not None


def find_tools() -> Tools:
    """Look for nginx, redis-server, redis-py, the contracts plugin and the shipped config; note what is missing."""
    tools = Tools(nginx=shutil.which("nginx"), redis_server=shutil.which("redis-server"))
    tools.redis_py = _importable("redis")
    tools.contracts = contracts_available() and _importable("offload_edge.chain")
    tools.template = DEPLOY_NGINX if DEPLOY_NGINX.is_file() else None
    if tools.nginx is None:
        tools.notes.append("nginx is not installed (apt-get install nginx-light): no replicas behind nginx, "
                           "and the constant upstream is an edge's /hello")  # fmt: skip
    if tools.redis_server is None:
        tools.notes.append("redis-server is not installed (apt-get install redis-server): Redis parts skipped")
    elif not tools.redis_py:
        tools.notes.append("redis-py is not installed (pip install 'task-offloading[redis]'): Redis parts skipped")
    if tools.template is None:
        tools.notes.append(f"{DEPLOY_NGINX} not found (run from a source checkout): no replicas behind nginx")
    if not tools.contracts:
        tools.notes.append("the contracts plugin or offload-edge's chain is not installed: contract writes skipped")
    return tools


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


async def start_redis(group: ProcessGroup, executable: str, workdir: Path) -> str:
    """redis-server on a free loopback port, keeping nothing on disk; its URL once it answers PING."""
    port = free_port()
    folder = workdir / "redis"
    folder.mkdir()
    argv = [
        executable, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(folder), "--daemonize", "no",
    ]  # fmt: skip
    url = f"redis://{HOST}:{port}/0"
    process = group.start("redis", argv, url)
    deadline = time.monotonic() + REDIS_STARTUP_S
    while not await redis_answers(port):
        if process.popen is not None and process.popen.poll() is not None:
            raise StartupError(f"redis-server exited with code {process.popen.returncode}:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise StartupError(f"redis-server did not answer PING on {HOST}:{port}")
        await asyncio.sleep(0.02)
    return url


async def redis_answers(port: int) -> bool:
    """Whether a Redis answers PING on loopback ``port`` now (one short attempt)."""
    try:
        async with asyncio.timeout(0.5):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(b"*1\r\n$4\r\nPING\r\n")
                return (await reader.readline()).startswith(b"+PONG")
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False


async def start_constant(group: ProcessGroup, workdir: Path, nginx: str | None, name: str) -> str:
    """A near-zero-cost upstream: nginx answering a constant, else an edge (its /hello); its base URL."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    if nginx:
        config = constant_config(workdir / name, port)
        process = group.start(name, nginx_argv(nginx, config), url + "/")
    else:
        argv = [sys.executable, "-m", "offload_edge", "--host", HOST, "--port", str(port), "--name", name,
                "--processes", "1"]  # fmt: skip
        process = group.start(name, argv, url + "/health")
    await group.wait_healthy(process)
    return url


async def start_chain(group: ProcessGroup) -> str:
    """``offload-edge --chain`` (the demo contracts deployed); its base URL once healthy."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    argv = [sys.executable, "-m", "offload_edge", "--chain", "--host", HOST, "--port", str(port), "--name", "chain",
            "--processes", "1"]  # fmt: skip
    await group.wait_healthy(group.start("chain", argv, url + "/health"), timeout_s=STARTUP_TIMEOUT_S)
    return url


async def start_gateway(
    group: ProcessGroup, workdir: Path, label: str, config_text: str, env: dict[str, str], *extra: str, workers: int = 1
) -> str:
    """``offload serve`` (``extra``: more options) on a free port; its URL once every worker answers."""
    config = workdir / f"{label}.toml"
    config.write_text(config_text)
    port = free_port()
    url = f"http://{HOST}:{port}"
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", str(port),
            "--workers", str(workers), *extra]  # fmt: skip
    await group.wait_healthy(group.start(label, argv, url + "/health", env=env), timeout_s=STARTUP_TIMEOUT_S)
    await wait_for_workers(url, workers)
    return url


async def wait_for_workers(url: str, workers: int, timeout_s: float = 30.0) -> None:
    """Until ``workers`` worker PIDs answered ``/health`` over fresh connections, so no run starts short of one."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise StartupError(f"only {len(seen)} of {workers} workers answered {url}/health in {timeout_s:g} s")
            async with session.get(url + "/health") as reply:
                seen.add((await reply.json())["worker_pid"])
            if len(seen) < workers:
                await asyncio.sleep(0.02)


async def start_balancer(
    group: ProcessGroup, workdir: Path, nginx: str, template: Path, name: str, replicas: Sequence[str]
) -> str:
    """nginx with the shipped config over ``replicas``, on a free port; its URL once a replica answers through it."""
    port = free_port()
    text = render_nginx_config(template.read_text(), replicas, f"{HOST}:{port}")
    config = write_nginx_config(workdir / name, text)
    url = f"http://{HOST}:{port}"
    await group.wait_healthy(group.start(name, nginx_argv(nginx, config), url + "/health"))
    return url


async def json_get(session: aiohttp.ClientSession, url: str) -> Any:
    """GET ``url``'s JSON body, raising for an error status."""
    async with session.get(url) as reply:
        reply.raise_for_status()
        return await reply.json()


# -- the three measurements ---------------------------------------------------------------


@dataclass
class Run:
    """What one run started and measured."""

    tools: Tools
    duration_s: float
    rounds: int
    writes: int
    upstream: str = ""
    scaling: dict[str, list[LoadResult]] = field(default_factory=dict)
    layouts: dict[str, tuple[str, int]] = field(default_factory=dict)  # contender -> (layout, processes)
    rule: dict[str, Any] | None = None
    window_client: dict[str, Any] | None = None
    write_bursts: list[dict[str, Any]] = field(default_factory=list)


async def scaling_contenders(
    group: ProcessGroup, workdir: Path, run: Run, config: str, env: dict[str, str], redis_url: str | None
) -> tuple[list[Contender], list[str]]:
    """The --workers gateways and the replicas (with one nginx per replica count); the replicas' URLs."""
    tools = run.tools
    replica_count = 0
    if redis_url and tools.replicas_behind_nginx:
        replica_count = max(PROCESS_COUNTS)
    elif redis_url and tools.contracts:
        replica_count = 2  # for the writes only
    workers = [start_gateway(group, workdir, f"workers{n}", config, env, workers=n) for n in PROCESS_COUNTS]
    replicas = [
        start_gateway(group, workdir, f"replica{n}", config, env, "--state", redis_url or "", "--replica", f"r{n}")
        for n in range(1, replica_count + 1)
    ]
    # Started together: each takes a second or two of CPU to import and build its app.
    urls = await asyncio.gather(*workers, *replicas)
    worker_urls, replica_urls = urls[: len(workers)], list(urls[len(workers) :])
    contenders = []
    for n, url in zip(PROCESS_COUNTS, worker_urls, strict=True):
        contenders.append(Contender(f"--workers {n}", url + "/"))
        run.layouts[contenders[-1].name] = ("workers", n)
    if replica_urls and tools.replicas_behind_nginx:
        assert tools.nginx is not None and tools.template is not None
        for n in PROCESS_COUNTS:
            url = await start_balancer(group, workdir, tools.nginx, tools.template, f"balancer{n}", replica_urls[:n])
            contenders.append(Contender(f"{n} replica{'s' if n > 1 else ''} + nginx", url + "/"))
            run.layouts[contenders[-1].name] = ("replicas", n)
    return contenders, replica_urls


async def check_shared(replicas: Sequence[str]) -> None:
    """Every replica says its state is Redis, and not degraded: otherwise the figures would not be of sharing."""
    async with aiohttp.ClientSession() as session:
        for url in replicas:
            state = (await json_get(session, url + "/health"))["state"]
            if state["backend"] != "redis" or state["degraded_reason"]:
                raise StartupError(f"replica {url} is not sharing through Redis: {state}")


def rule_config(local: str, remote: str) -> str:
    """A pool that considers the local throughput, with a limit no run reaches: every request runs locally."""
    return (
        f'[gateway]\nhost = "{HOST}"\n\n[plugins.math]\nconsider_throughput = true\n'
        f"expected_throughput = {RULE_EXPECTED_THROUGHPUT}\nwindow_s = 1.0\n"
        f'servers = [{{ name = "local", url = "{local}", local = true }}, {{ name = "remote", url = "{remote}" }}]\n'
    )


async def start_rule_gateways(
    group: ProcessGroup, workdir: Path, local: str, remote: str, redis_url: str
) -> dict[str, str]:
    """The same throughput-rule gateway twice: ``--state memory`` and ``--state redis://``; name -> URL."""
    states = {"memory": "memory", "redis": redis_url}
    config = rule_config(local, remote)
    urls = await asyncio.gather(
        *(start_gateway(group, workdir, f"rule-{name}", config, {}, "--state", state) for name, state in states.items())
    )
    return dict(zip(states, urls, strict=True))


async def measure_rule(run: Run, gateways: dict[str, str]) -> dict[str, Any]:
    """Both rule gateways at one connection, interleaved rounds; where their requests ran."""
    contenders = [Contender(name, url + "/") for name, url in gateways.items()]
    results = await measure_rounds(contenders, run.rounds, run.duration_s, (1,))
    figures: dict[str, Any] = {name: asdict(runs[0]) for name, runs in results.items()}
    async with aiohttp.ClientSession() as session:
        for name, url in gateways.items():
            servers = (await json_get(session, url + "/servers"))["pools"]["math"]["servers"]
            by_name = {server["name"]: server["requests"] for server in servers}
            figures[name]["local_requests"], figures[name]["remote_requests"] = by_name["local"], by_name["remote"]
            figures[name]["backend"] = (await json_get(session, url + "/health"))["state"]["backend"]
    figures["added_p50_ms"] = round(figures["redis"]["p50_ms"] - figures["memory"]["p50_ms"], 3)
    figures["added_p99_ms"] = round(figures["redis"]["p99_ms"] - figures["memory"]["p99_ms"], 3)
    figures["goal_ms"] = RULE_GOAL_MS
    return figures


async def write_burst(urls: Sequence[str], count: int, token: str) -> dict[str, Any]:
    """``count`` concurrent increments spread over ``urls``: answers by status, time, and the counter's rise."""
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=WRITE_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:

        async def increment(url: str) -> int:
            try:
                async with session.post(url + "/contracts/Counter/increment", json={}) as reply:
                    await reply.read()
                    return reply.status
            except (aiohttp.ClientError, TimeoutError):
                return 0  # no answer at all

        async def counter() -> int:
            return int((await json_get(session, urls[0] + "/contracts/Counter/get"))["data"])

        # Not counted: the account's first write of a run asks the chain for its nonce.
        for url in urls:
            await increment(url)
        before = await counter()
        started = time.perf_counter()
        statuses = await asyncio.gather(*(increment(urls[index % len(urls)]) for index in range(count)))
        seconds = time.perf_counter() - started
        delta = await counter() - before
    by_status = Counter(str(status) for status in statuses)
    return {
        "replicas": len(urls),
        "writes": count,
        "ok": by_status.get("200", 0),
        "non_200": count - by_status.get("200", 0),
        "statuses": dict(sorted(by_status.items())),
        "counter_delta": delta,
        "seconds": round(seconds, 2),
        "tx_per_s": round(count / seconds, 1) if seconds > 0 else 0.0,
    }


async def nothing() -> None:
    """What a part this run skips starts."""


async def measure(group: ProcessGroup, workdir: Path, run: Run) -> None:
    """Start everything (in parallel where it can), then measure one thing at a time: never two loads at once."""
    tools = run.tools
    with_redis = tools.redis and tools.redis_server is not None
    with_writes = with_redis and tools.contracts
    redis_url, upstream, remote, chain = await asyncio.gather(
        start_redis(group, tools.redis_server, workdir) if with_redis and tools.redis_server else nothing(),
        start_constant(group, workdir, tools.nginx, "constant"),
        # The rule check's pool needs a remote server to not send anything to.
        start_constant(group, workdir, tools.nginx, "remote") if with_redis else nothing(),
        start_chain(group) if with_writes else nothing(),
    )
    run.upstream = "nginx answering a constant" if tools.nginx else "an edge's /hello"
    token = secrets.token_urlsafe(32)
    env = {TOKEN_ENV: token}
    config = single_upstream_config(upstream)
    if chain:
        config += contracts_config({"chain": chain}, await deployed_contracts(chain))
        env[KEY_ENV] = DEMO_PRIVATE_KEY  # offload-edge's DEV_PRIVATE_KEY: the chain's funded dev account
    (contenders, replicas), rule_gateways = await asyncio.gather(
        scaling_contenders(group, workdir, run, config, env, redis_url),
        start_rule_gateways(group, workdir, upstream, remote, redis_url) if redis_url and remote else nothing(),
    )
    if replicas:
        await check_shared(replicas)
    run.scaling = await measure_rounds(contenders, run.rounds, run.duration_s, CONNECTIONS)
    if rule_gateways:
        run.rule = await measure_rule(run, rule_gateways)
    if redis_url:
        from .window_client import compare_window_clients

        status("window check: redis-py vs the lane ...")
        run.window_client = await compare_window_clients(redis_url, WINDOW_CLIENT_CALLS, run.rounds)
    if chain:
        for count in (1, 2):
            status(f"writes: {run.writes} through {count} replica(s) ...")
            run.write_bursts.append(await write_burst(replicas[:count], run.writes, token))


# -- figures ------------------------------------------------------------------------------


def summarize(run: Run) -> dict[str, Any]:
    """The figures as one JSON-ready document, with the verdict on each goal this run could judge."""

    def rps(name: str, connections: int) -> float:
        return next(r.rps for r in run.scaling[name] if r.connections == connections)

    first = {layout: name for name, (layout, n) in run.layouts.items() if n == 1}
    rows = []
    for name, results in run.scaling.items():
        layout, processes = run.layouts[name]
        for result in results:
            base, one_worker = rps(first[layout], result.connections), rps("--workers 1", result.connections)
            rows.append({
                "name": name, "layout": layout, "processes": processes, **asdict(result),
                "ratio": round(result.rps / base, 2) if base else None,
                "vs_one_worker": round(result.rps / one_worker, 2) if one_worker else None,
            })  # fmt: skip
    goals = [
        {"goal": "every contender answered every request (wrk: no errors, no non-2xx)",
         "figure": f"{sum(row['errors'] for row in rows)} errors in {sum(row['requests'] for row in rows):,} requests",
         "met": all(row["requests"] > 0 and row["errors"] == 0 for row in rows)},
    ]  # fmt: skip
    if run.rule is not None:
        rule = run.rule
        goals.append({"goal": f"the Redis-backed throughput rule adds <= {RULE_GOAL_MS} ms p50 at 1 connection",
                      "figure": f"{rule['added_p50_ms']:.3f} ms ({rule['redis']['p50_ms']:.3f} vs "
                      f"{rule['memory']['p50_ms']:.3f} ms)", "met": rule["added_p50_ms"] <= RULE_GOAL_MS})  # fmt: skip
    for burst in run.write_bursts:
        where = f"{burst['replicas']} replica{'s' if burst['replicas'] > 1 else ''}"
        goals.append({"goal": f"{burst['writes']} concurrent writes through {where}: counter rises by exactly "
                      f"{burst['writes']}, every write 200", "figure": f"rose by {burst['counter_delta']}, "
                      f"{burst['non_200']} not 200",
                      "met": burst["counter_delta"] == burst["writes"] and burst["non_200"] == 0})  # fmt: skip
    return {
        "tool": "wrk" if wrk_available() else "builtin",
        "upstream": run.upstream,
        "duration_s": run.duration_s,
        "rounds": run.rounds,
        "notes": run.tools.notes,
        "scaling": rows,
        "throughput_rule": run.rule,
        "window_client": run.window_client,
        "writes": run.write_bursts,
        "goals": goals,
    }


def render(figures: dict[str, Any]) -> str:
    """The tables, as the other benches print them."""
    parts: list[Any] = [
        f"Scaling in front of {figures['upstream']} (GET /); load by {figures['tool']}, median of "
        f"{figures['rounds']} interleaved run(s) of {figures['duration_s']:g} s each",
    ]
    scaling = table("contender", "procs", "conns", "req/s", "p50 ms", "p99 ms", "errors", "x 1 proc", "x workers 1")
    for row in sorted(figures["scaling"], key=lambda r: (r["layout"] != "workers", r["connections"], r["processes"])):
        add_rows(
            scaling,
            [
                (
                    row["name"],
                    row["processes"],
                    row["connections"],
                    f"{row['rps']:,.0f}",
                    f"{row['p50_ms']:.3f}",
                    f"{row['p99_ms']:.3f}",
                    row["errors"],
                    f"{row['ratio']:.2f}x",
                    f"{row['vs_one_worker']:.2f}x",
                )
            ],
        )
    parts += [
        scaling,
        "(--workers N: the workers share memory; N replicas: one Redis, behind deploy/nginx/offload.conf)",
    ]
    rule = figures["throughput_rule"]
    if rule:
        rule_table = table(
            "state",
            "req/s",
            "p50 ms",
            "p99 ms",
            "local",
            "remote",
            title="Throughput rule at 1 connection (consider_throughput, every request admitted locally)",
        )
        for name in ("memory", "redis"):
            r = rule[name]
            add_rows(
                rule_table,
                [
                    (
                        name,
                        f"{r['rps']:,.0f}",
                        f"{r['p50_ms']:.3f}",
                        f"{r['p99_ms']:.3f}",
                        r["local_requests"],
                        r["remote_requests"],
                    )
                ],
            )
        parts += [
            "",
            rule_table,
            f"added by Redis: {rule['added_p50_ms']:.3f} ms p50, {rule['added_p99_ms']:.3f} ms "
            f"p99 (goal <= {rule['goal_ms']} ms p50)",
        ]
    if figures["window_client"]:
        lane = table(
            "client",
            "p50 us",
            "CPU us/call",
            title="The window check alone, one call at a time from this process (why it has a lane of its own)",
        )
        for name, figure in figures["window_client"].items():
            add_rows(lane, [(name, f"{figure['p50_us']:.1f}", f"{figure['cpu_us']:.1f}")])
        parts += ["", lane]
    if figures["writes"]:
        writes = table(
            "replicas",
            "writes",
            "non-200",
            "counter +",
            "seconds",
            "tx/s",
            left=0,
            title="Contract writes: concurrent POST /contracts/Counter/increment, replicas sharing Redis",
        )
        for burst in figures["writes"]:
            add_rows(
                writes,
                [
                    (
                        burst["replicas"],
                        burst["writes"],
                        burst["non_200"],
                        burst["counter_delta"],
                        f"{burst['seconds']:.2f}",
                        f"{burst['tx_per_s']:.1f}",
                    )
                ],
            )
        parts += ["", writes]
    if figures["notes"]:
        parts += ["", "Skipped", *(f"   {note}" for note in figures["notes"])]
    parts += ["", goals_table(figures["goals"])]
    return as_text(*parts)


async def run_scale(options: ScaleOptions) -> int:
    """Run everything; 0 when every goal is met, 1 when one is missed, 2 when something would not start."""
    duration_s, rounds, writes = options.effective
    run = Run(find_tools(), duration_s, rounds, writes)
    tool = "wrk" if wrk_available() else "built-in asyncio generator (install wrk for sharper figures)"
    print(f"offload bench scale: load by {tool}", file=sys.stderr)
    for note in run.tools.notes:
        print(f"  skipped: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="offload-scale-") as workdir:
        group = ProcessGroup(Path(workdir))
        try:
            await measure(group, Path(workdir), run)
        except StartupError as exc:
            print(f"\noffload bench scale: {exc}", file=sys.stderr)
            return 2
        finally:
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
