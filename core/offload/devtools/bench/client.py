"""``offload bench client``: what sending one upstream request costs each HTTP client, side by side.

The engine's default transport (a :class:`~offload.transports.TransportRouter`
sending with :class:`~offload.transports.NativeTransport`),
:class:`~offload.transports.AiohttpUpstream` over a session made like the
engine's, ``httpx.AsyncClient`` and, when it is installed, ``pyreqwest`` each
send the same fixed number of ``GET /hello`` requests from 16 concurrent tasks
to one loopback server. The server is a minimal asyncio protocol answering a
fixed 200 in a process of its own, so the CPU time this process spends (every
thread of it: pyreqwest works in a Rust thread) is the client's alone. Runs are
interleaved over rounds (who goes first rotates); each figure is reported as the
median and the worst round, with ratios against the native client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from ...tasks import Task
from ..ports import LOOPBACK
from ..progress import status, status_done
from ..tables import add_rows, as_text, table

HOST = LOOPBACK
REQUESTS = 20_000
CONCURRENCY = 16
ROUNDS = 3
WARMUP_REQUESTS = 500
# No single run may take longer than this, whatever the machine's load.
RUN_LIMIT_S = 120.0
REQUEST_TIMEOUT_S = 10.0
SERVER_START_S = 15.0
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

# One request; raises on anything but a 200 with the expected body.
Send = Callable[[], Awaitable[None]]
ClientFactory = Callable[[str], AbstractAsyncContextManager[Send]]


@dataclass(frozen=True)
class ClientRun:
    """One contender's figures in one round."""

    client: str
    requests: int
    seconds: float
    cpu_us: float  # this process's CPU time (user + system, all threads) per request
    rps: float


# -- the server (its own process) ------------------------------------------------------------


class _FixedAnswer(asyncio.Protocol):
    """Answers every request head (no request bodies here) with the same 200, pipelined or not."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data if self.pending else data
        heads = data.count(b"\r\n\r\n")
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if heads else data
        if heads:
            self.transport.write(ANSWER * heads)  # type: ignore[attr-defined]


async def serve() -> None:
    """Listen on a free loopback port, print it, and answer until terminated."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_FixedAnswer, HOST, 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


@asynccontextmanager
async def fixed_answer_server() -> Any:
    """The server in a child process; yields its base URL and stops it by its PID afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "offload.devtools.bench.client", "--serve", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), SERVER_START_S)
        if not line.strip().isdigit():
            raise RuntimeError(f"the benchmark server did not start (said {line!r})")
        yield f"http://{HOST}:{int(line)}"
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()


# -- the contenders --------------------------------------------------------------------------


def _check(status: int, body: bytes) -> None:
    if status != 200 or body != b"ok":
        raise RuntimeError(f"unexpected answer: {status} {body[:80]!r}")


def _engine_like_session(connections: int) -> Any:
    """An aiohttp session set up the way the engine sets up its own."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    )


@asynccontextmanager
async def native_client(base: str) -> Any:
    from ...transports import AiohttpUpstream, NativeTransport, TransportRouter

    async with _engine_like_session(CONCURRENCY) as session:
        # Built as the engine builds its default transport: the router's cost is counted too.
        client = TransportRouter(NativeTransport(limit=CONCURRENCY), AiohttpUpstream(session))
        task = Task("/hello")

        async def send() -> None:
            reply = await client.request(base, task, REQUEST_TIMEOUT_S)
            _check(reply.status, reply.body)

        try:
            yield send
        finally:
            await client.close()


@asynccontextmanager
async def aiohttp_client(base: str) -> Any:
    from ...transports import AiohttpUpstream

    async with _engine_like_session(CONCURRENCY) as session:
        client = AiohttpUpstream(session)
        task = Task("/hello")

        async def send() -> None:
            reply = await client.request(base, task, REQUEST_TIMEOUT_S)
            _check(reply.status, reply.body)

        yield send


@asynccontextmanager
async def httpx_client(base: str) -> Any:
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        url = base + "/hello"

        async def send() -> None:
            response = await client.get(url)
            _check(response.status_code, response.content)

        yield send


@asynccontextmanager
async def pyreqwest_client(base: str) -> Any:
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    builder = ClientBuilder().max_connections(CONCURRENCY).timeout(timedelta(seconds=REQUEST_TIMEOUT_S))
    async with builder.build() as client:
        url = base + "/hello"

        async def send() -> None:
            response = await client.get(url).build().send()
            _check(response.status, bytes(await response.bytes()))

        yield send


def contenders() -> dict[str, ClientFactory]:
    """Every client to compare that this environment has; the native client first."""
    found: dict[str, ClientFactory] = {"native": native_client, "aiohttp": aiohttp_client}
    if importable("httpx"):
        found["httpx"] = httpx_client
    if importable("pyreqwest"):
        found["pyreqwest"] = pyreqwest_client
    return found


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- measuring -------------------------------------------------------------------------------


async def drive(send: Send, requests: int, concurrency: int) -> None:
    """``requests`` sends from ``concurrency`` tasks sharing one counter; the first failure stops the run."""
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def measure_client(name: str, factory: ClientFactory, base: str, requests: int) -> ClientRun:
    """One contender, one round: a warm-up (connections opened, caches filled), then the timed run."""
    async with factory(base) as send:
        async with asyncio.timeout(RUN_LIMIT_S):
            await drive(send, WARMUP_REQUESTS, CONCURRENCY)
            cpu, wall = time.process_time(), time.perf_counter()
            await drive(send, requests, CONCURRENCY)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return ClientRun(name, requests, round(wall, 3), round(cpu / requests * 1e6, 2), round(requests / wall, 1))


def rotations(names: list[str], rounds: int) -> Iterator[list[str]]:
    """Each round's order: who goes first rotates, so the machine's slow moments are shared out."""
    for index in range(rounds):
        shift = index % len(names)
        yield names[shift:] + names[:shift]


async def run_rounds(requests: int, rounds: int, only: list[str] | None = None) -> dict[str, list[ClientRun]]:
    """Every contender once per round against one server; runs grouped by contender."""
    available = contenders()
    names = [name for name in available if not only or name in only]
    runs: dict[str, list[ClientRun]] = {name: [] for name in names}
    async with fixed_answer_server() as base:
        for round_index, order in enumerate(rotations(names, rounds)):
            for name in order:
                if name not in runs:
                    continue
                status(f"round {round_index + 1}/{rounds}: {name:<10} ...")
                try:
                    runs[name].append(await measure_client(name, available[name], base, requests))
                except TimeoutError:
                    # One contender too slow for the bound must not cost the others their figures.
                    status_done()
                    print(f"  {name}: over {RUN_LIMIT_S:g} s for one run; left out", file=sys.stderr)
                    del runs[name]
    status_done()
    return runs


def summarize(runs: dict[str, list[ClientRun]]) -> dict[str, Any]:
    """Median and worst round of each contender, and the ratios against the native client."""
    rows: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        cpu = [run.cpu_us for run in results]
        rps = [run.rps for run in results]
        rows[name] = {
            "cpu_us_median": round(statistics.median(cpu), 2),
            "cpu_us_worst": max(cpu),
            "rps_median": round(statistics.median(rps), 1),
            "rps_worst": min(rps),
            "runs": [asdict(run) for run in results],
        }
    native = rows.get("native")
    for row in rows.values():
        row["cpu_vs_native"] = round(row["cpu_us_median"] / native["cpu_us_median"], 2) if native else None
        row["rps_vs_native"] = round(row["rps_median"] / native["rps_median"], 2) if native else None
    return rows


def render(figures: dict[str, Any]) -> str:
    """The figures as a plain-text table."""
    clients = table("client", "cpu µs med", "worst", "req/s med", "worst", "cpu vs native", "req/s vs native")
    for name, row in figures["clients"].items():
        add_rows(
            clients,
            [
                (
                    name,
                    f"{row['cpu_us_median']:.1f}",
                    f"{row['cpu_us_worst']:.1f}",
                    f"{row['rps_median']:,.0f}",
                    f"{row['rps_worst']:,.0f}",
                    f"{row['cpu_vs_native'] or 0:.2f}x",
                    f"{row['rps_vs_native'] or 0:.2f}x",
                )
            ],
        )
    lines = [
        f"Upstream clients: {figures['requests']:,} x GET /hello from {figures['concurrency']} tasks, loopback server "
        f"in its own process; {figures['rounds']} interleaved rounds (median / worst); loop: {figures['loop']}",
        "cpu = this process's CPU time per request (all threads)",
        "",
        as_text(clients),
    ]
    missing = [name for name in contenders() if name not in figures["clients"]]
    if missing:
        lines += ["", f"not measured (left out, or over {RUN_LIMIT_S:g} s for one run): {', '.join(missing)}"]
    absent = [name for name in ("httpx", "pyreqwest") if not importable(name)]
    if absent:
        lines += [f"not installed: {', '.join(absent)}"]
    if figures.get("note"):
        lines += ["", figures["note"]]
    return "\n".join(lines)


@dataclass(frozen=True)
class ClientBenchOptions:
    requests: int = REQUESTS
    rounds: int = ROUNDS
    json: bool = False
    only: tuple[str, ...] = ()


def _loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    # The gateway runs on uvloop when it is installed (Sanic picks it), so the clients are measured on it too.
    if importable("uvloop"):
        import uvloop

        return uvloop.new_event_loop, "uvloop"
    return None, "asyncio"


def run_client_bench(options: ClientBenchOptions) -> int:
    """Measure, then print the table (or JSON). Returns the exit status."""
    factory, loop_name = _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runs = runner.run(run_rounds(options.requests, options.rounds, list(options.only) or None))
    figures = {
        "requests": options.requests,
        "concurrency": CONCURRENCY,
        "rounds": options.rounds,
        "loop": loop_name,
        "clients": summarize(runs),
    }
    if "httpx" in runs and not importable("sniffio"):
        # httpcore then tries to import it on every request: a cost of this environment, not of httpx.
        figures["note"] = "httpx: sniffio is not installed, so httpcore looks for it on every request (slower)"
    print(json.dumps(figures, indent=2) if options.json else render(figures))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m offload.devtools.bench.client``: the benchmark, or (``--serve``) its server."""
    parser = argparse.ArgumentParser(prog="python -m offload.devtools.bench.client", description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=REQUESTS, help="requests per run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--only", nargs="*", default=(), help="measure only these clients")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if args.serve:
        factory, _ = _loop_factory()
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve())
        return 0
    if args.requests <= 0 or args.rounds <= 0:
        parser.error("--requests and --rounds must be above zero")
    return run_client_bench(ClientBenchOptions(args.requests, args.rounds, args.json, tuple(args.only)))


if __name__ == "__main__":
    sys.exit(main())
