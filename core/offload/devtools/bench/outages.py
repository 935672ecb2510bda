"""``offload bench outages``: what callers see when an edge dies or hangs under load.

Two scenarios, each over three offload-edge processes (1, 2 and 5 ms links) on
loopback and a fresh gateway per run, loaded by closed-loop clients (each sends
its next ``GET /square/<i>`` when the previous one is answered):

* kill: at 2 s the edge that has taken the most traffic gets SIGKILL, like a
  crashed host; the load goes on to 6 s.
* hang: at 2 s the edge busiest over the last half second gets SIGSTOP for 11 s,
  like a frozen host whose connections stay open and silent, then SIGCONT;
  once per gateway variant (min_latency, p2c_ewma, p2c_ewma with hedging).

Every non-200 answer counts as a failure: every request here is an idempotent
GET, which the gateway may retry or hedge elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from ...errors import ConfigError
from ...pool_config import POLICY_DEFAULT
from ...stats import percentile
from ..processes import StartupError
from ..progress import status, status_done
from ..tables import add_rows, as_text, goals_table, table
from .load import SERVER_HEADER
from .scenarios import Scenario, gateway_counters
from .topology import EdgeSpec, GatewayOptions

EDGES = [EdgeSpec("e1", 1.0), EdgeSpec("e2", 2.0), EdgeSpec("e5", 5.0)]
PROBE_INTERVAL_S = 0.5
OUTAGE_AT_S = 2.0

KILL_CLIENTS = (16, 64)
KILL_DURATION_S = 6.0
HANG_CLIENTS = 200
# A little longer than the pool's 10 s timeout: a request stuck on the stopped edge then meets that
# timeout, instead of a SIGCONT racing it to within milliseconds (which made its fate a coin toss).
HANG_FOR_S = 11.0
# Load goes on this long after SIGCONT, so requests queued at the resumed edge are seen through.
HANG_TAIL_S = 0.5
# The pool's own default, kept so the hang shows what a caller waits today.
HANG_TIMEOUT_S = 10.0
# The clients wait longer than any gateway timeout: a 504 then comes from the gateway, not from us.
CLIENT_TIMEOUT_S = 15.0
# What an outcome keeps of a failure's text (the gateway's "error" field, or the client's exception).
ERROR_EXCERPT = 120
# How long a read of GET /servers may take while the gateway is loaded, and how often the stopped
# edge's counter is read while it is stopped.
COUNTERS_TIMEOUT_S = 5.0
POLL_S = 0.1
# The hang stops the edge that took the most attempts over this last stretch before the stop.
RECENT_S = 0.5

RUNS = 3
MOVE_GOAL_S = 2.0
NO_FAILURES_GOAL = "0 failed idempotent requests in every run"
MOVE_GOAL = f"requests move within about {MOVE_GOAL_S:g} s (time to move, every run)"


def hang_variants(extra: tuple[tuple[str, Any], ...] = ()) -> dict[str, GatewayOptions]:
    """The gateways the hang scenario compares, each with ``extra`` pool options on top."""
    base = GatewayOptions(
        policy=POLICY_DEFAULT, probe_interval_s=PROBE_INTERVAL_S, timeout_s=HANG_TIMEOUT_S, extra=extra
    )
    return {
        "min_latency": replace(base, policy="min_latency"),
        "p2c_ewma": replace(base, policy="p2c_ewma"),
        "p2c_ewma + hedge": replace(base, policy="p2c_ewma", hedge=True),
    }


@dataclass(frozen=True)
class OutagesOptions:
    """What ``offload bench outages`` runs."""

    scenario: str = "all"  # kill, hang or all
    runs: int = RUNS
    kill_clients: tuple[int, ...] = KILL_CLIENTS
    # [plugins.math] options added to every gateway (e.g. settings being tried out).
    extra: tuple[tuple[str, Any], ...] = ()
    json: bool = False


@dataclass(frozen=True)
class Outcome:
    """One request as its client saw it."""

    sent_at: float  # seconds since the run started
    latency_s: float
    status: int  # 0: no HTTP answer at all
    server: str  # the gateway's X-Offload-Server header, "?" without one
    error: str = ""  # the first ERROR_EXCERPT characters of why, when status != 200

    @property
    def failed(self) -> bool:
        return self.status != 200


def parse_pool_option(text: str) -> tuple[str, bool | int | float | str]:
    """``KEY=VALUE`` from the command line: true/false, an integer, a number, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--pool wants KEY=VALUE, got {text!r}")
    raw = raw.strip()
    value: bool | int | float | str
    if raw in ("true", "false"):
        value = raw == "true"
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
    return key.strip(), value


def error_excerpt(body: bytes) -> str:
    """The gateway's ``error`` message if the body is its JSON error, else the body's text; cut short."""
    text = body.decode("utf-8", errors="replace")
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and "error" in decoded:
        text = str(decoded["error"])
    return text[:ERROR_EXCERPT]


async def ask(session: aiohttp.ClientSession, url: str, origin: float) -> Outcome:
    """One GET, timed from just before it is sent until its whole answer is read."""
    sent = time.perf_counter()
    try:
        async with session.get(url) as reply:
            body = await reply.read()
            status, server = reply.status, reply.headers.get(SERVER_HEADER, "?")
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:ERROR_EXCERPT]
        return Outcome(sent - origin, time.perf_counter() - sent, 0, "?", error)
    error = "" if status == 200 else error_excerpt(body)
    return Outcome(sent - origin, time.perf_counter() - sent, status, server, error)


async def closed_loop(url: str, clients: int, until_s: float, origin: float) -> list[Outcome]:
    """``clients`` loops of ``GET {url}/square/<i>`` that send no new request after ``origin + until_s``."""
    outcomes: list[Outcome] = []
    deadline = origin + until_s
    numbers = iter(range(1 << 62))
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            while time.perf_counter() < deadline:
                outcomes.append(await ask(session, f"{url}/square/{next(numbers)}", origin))

        await asyncio.gather(*(client() for _ in range(clients)))
    outcomes.sort(key=lambda outcome: outcome.sent_at)
    return outcomes


async def sleep_until(moment: float) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``moment``."""
    await asyncio.sleep(max(0.0, moment - time.perf_counter()))


async def server_requests(url: str) -> dict[str, int]:
    """Each server's ``requests`` counter (attempts the gateway sent it) from GET /servers."""
    async with asyncio.timeout(COUNTERS_TIMEOUT_S):
        pool = await gateway_counters(url)
    return {server["name"]: server["requests"] for server in pool["servers"]}


async def watch(url: str, victim: str, origin: float, until: float) -> list[tuple[float, int]]:
    """``victim``'s requests counter every POLL_S until ``until``: (seconds since ``origin``, count)."""
    polls: list[tuple[float, int]] = []
    while time.perf_counter() < until:
        try:
            count = (await server_requests(url))[victim]
        except (aiohttp.ClientError, TimeoutError):
            pass  # a poll lost under load: the next one counts all the same
        else:
            polls.append((time.perf_counter() - origin, count))
        await sleep_until(min(until, time.perf_counter() + POLL_S))
    return polls


def chosen_until(polls: list[tuple[float, int]], count_at_stop: int, stopped_at: float) -> float | None:
    """How long after ``stopped_at`` the gateway still sent the stopped edge attempts (to within a poll).

    The time of the first poll that had already seen the count the stop ended
    with; 0 if it never rose, None without polls.
    """
    if not polls:
        return None
    final = polls[-1][1]
    if final == count_at_stop:
        return 0.0
    reached = next(moment for moment, count in polls if count == final)
    return round(max(0.0, reached - stopped_at), 3)


def busiest(requests: dict[str, int], earlier: dict[str, int] | None = None) -> str:
    """The server that has taken the most attempts since ``earlier`` (an older read), or in all.

    The first listed wins a tie.
    """
    since = earlier or {}
    return max(requests, key=lambda name: requests[name] - since.get(name, 0))


async def stop_load(load: asyncio.Task[list[Outcome]]) -> None:
    """Cancel the load if it is still running (an error or Ctrl-C ended the run early)."""
    if not load.done():
        load.cancel()
    await asyncio.gather(load, return_exceptions=True)


# -- the scenarios ---------------------------------------------------------------------------


async def run_kill(log_dir: Path, label: str, clients: int, extra: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """One kill run: ``clients`` closed loops for 6 s, the busiest edge SIGKILLed at 2 s."""
    options = GatewayOptions(policy=POLICY_DEFAULT, probe_interval_s=PROBE_INTERVAL_S, extra=extra)
    async with Scenario(log_dir) as topology:
        await topology.start_edges(EDGES)
        _, url = await topology.start_gateway(label, options)
        origin = time.perf_counter()
        load = asyncio.create_task(closed_loop(url, clients, KILL_DURATION_S, origin))
        try:
            await sleep_until(origin + OUTAGE_AT_S)
            victim = busiest(await server_requests(url))
            topology.kill(victim)
            killed_at = time.perf_counter() - origin
            outcomes = await load
            elapsed = time.perf_counter() - origin
        finally:
            await stop_load(load)
    return {**run_figures(outcomes, elapsed), "clients": clients, "victim": victim, "killed_at_s": round(killed_at, 3)}


async def run_hang(log_dir: Path, label: str, options: GatewayOptions) -> dict[str, Any]:
    """One hang run: 200 closed loops; the busiest edge SIGSTOPped at 2 s for 11 s, then SIGCONTed."""
    async with Scenario(log_dir) as topology:
        await topology.start_edges(EDGES)
        _, url = await topology.start_gateway(label, options)
        origin = time.perf_counter()
        load = asyncio.create_task(closed_loop(url, HANG_CLIENTS, OUTAGE_AT_S + HANG_FOR_S + HANG_TAIL_S, origin))
        paused: str | None = None
        try:
            # The edge busiest lately, not in all: min_latency may have moved its whole load elsewhere
            # since the start, and stopping an edge nobody uses would show nothing.
            await sleep_until(origin + OUTAGE_AT_S - RECENT_S)
            earlier = await server_requests(url)
            await sleep_until(origin + OUTAGE_AT_S)
            before = await server_requests(url)
            victim = busiest(before, earlier)
            topology.pause(victim)
            paused = victim
            stopped_at = time.perf_counter() - origin
            polls = await watch(url, victim, origin, origin + stopped_at + HANG_FOR_S)
            topology.resume(victim)
            paused = None
            resumed_at = time.perf_counter() - origin
            outcomes = await load
            elapsed = time.perf_counter() - origin
            counters = (await gateway_counters(url))["counters"]
        finally:
            # Never leave a stopped process behind, whatever ended the run.
            if paused is not None:
                topology.resume(paused)
            await stop_load(load)
    return {
        **run_figures(outcomes, elapsed),
        "clients": HANG_CLIENTS,
        "victim": victim,
        "stopped_at_s": round(stopped_at, 3),
        "resumed_at_s": round(resumed_at, 3),
        "time_to_move_s": round(time_to_move(outcomes, stopped_at, resumed_at), 3),
        "sent_to_stopped": polls[-1][1] - before[victim] if polls else None,
        "chosen_until_s": chosen_until(polls, before[victim], stopped_at),
        "counters": counters,
    }


# -- figures ---------------------------------------------------------------------------------


def run_figures(outcomes: list[Outcome], elapsed_s: float) -> dict[str, Any]:
    """Requests, rate, latency tail and failures of one run."""
    latencies = [outcome.latency_s * 1000 for outcome in outcomes]
    failures = [outcome for outcome in outcomes if outcome.failed]
    return {
        "requests": len(outcomes),
        "rps": round(len(outcomes) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "p99_ms": round(percentile(latencies, 0.99), 3) if latencies else None,
        "max_ms": round(max(latencies), 3) if latencies else None,
        "failed": len(failures),
        "failed_by_status": dict(Counter(str(outcome.status) for outcome in failures).most_common()),
        "errors": failure_kinds(failures),
    }


def failure_kinds(failures: Iterable[Outcome]) -> dict[str, int]:
    """How often each (status, error excerpt) occurred, most frequent first."""
    return dict(Counter(f"{outcome.status} {outcome.error}" for outcome in failures).most_common())


def time_to_move(outcomes: list[Outcome], stopped_at: float, resumed_at: float) -> float:
    """The longest any request waited after the edge stopped: how long traffic took to move off it.

    For a request in flight at the SIGSTOP, the time from the SIGSTOP to its
    answer; for one sent while the edge was stopped, its latency. Requests sent
    after the SIGCONT are not counted: the stop no longer holds them.
    """
    waits = [
        outcome.sent_at + outcome.latency_s - max(outcome.sent_at, stopped_at)
        for outcome in outcomes
        if outcome.sent_at < resumed_at and outcome.sent_at + outcome.latency_s > stopped_at
    ]
    return max(waits, default=0.0)


def across_runs(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``key`` of every run, its worst (largest) and its median; None where a run has no value."""
    values = [run[key] for run in runs]
    known = [value for value in values if value is not None]
    return {
        "per_run": values,
        "worst": max(known) if known else None,
        "median": statistics.median(known) if known else None,
    }


def summarize(kill: dict[str, list[dict[str, Any]]], hang: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per-run figures grouped by contender, with worst/median across runs and the goals' verdicts."""
    figures: dict[str, Any] = {"kill": {}, "hang": {}, "goals": []}
    for name, runs in kill.items():
        failed = across_runs(runs, "failed")
        figures["kill"][name] = {"runs": runs, "failed": failed}
        figures["goals"].append(no_failures_goal(f"kill, {name}", failed))
    for name, runs in hang.items():
        failed, moved = across_runs(runs, "failed"), across_runs(runs, "time_to_move_s")
        slowest = across_runs(runs, "max_ms")
        figures["hang"][name] = {"runs": runs, "failed": failed, "time_to_move_s": moved, "max_ms": slowest}
        figures["goals"].append(no_failures_goal(f"hang, {name}", failed))
        figures["goals"].append(
            {
                "goal": f"hang, {name}: {MOVE_GOAL}",
                "figure": f"worst {moved['worst']:.2f} s, median {moved['median']:.2f} s",
                "met": moved["worst"] <= MOVE_GOAL_S,
            }
        )
    return figures


def no_failures_goal(contender: str, failed: dict[str, Any]) -> dict[str, Any]:
    """The verdict on "no failed request in any run" from :func:`across_runs` of ``failed``."""
    per_run = ", ".join(str(count) for count in failed["per_run"])
    return {
        "goal": f"{contender}: {NO_FAILURES_GOAL}",
        "figure": f"failed per run {per_run}; worst {failed['worst']}, median {failed['median']:g}",
        "met": failed["worst"] == 0,
    }


# -- output ----------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def common_errors(errors: dict[str, int], most: int = 3) -> list[str]:
    """The ``most`` most frequent failure kinds as ``n x status message`` lines."""
    return [f"{count} x {kind}" for kind, count in list(errors.items())[:most]]


def runs_table(
    groups: dict[str, Any],
    headers: Sequence[str],
    cells: Callable[[str, int, dict[str, Any]], list[str]],
    summary: Callable[[str, dict[str, Any]], str],
) -> list[Any]:
    """Each contender's runs as rows of ``cells``; under the table each run's most frequent failures and
    each contender's ``summary``."""
    runs = table(*headers)
    notes: list[str] = []
    for name, group in groups.items():
        for index, run in enumerate(group["runs"], 1):
            add_rows(runs, [cells(name, index, run)])
            notes += [f"   {name} run {index}: {line}" for line in common_errors(run["errors"])]
        notes.append(summary(name, group))
    return [runs, *notes]


KILL_HEADERS = ("clients", "run", "victim", "requests", "req/s", "p99 ms", "max ms", "failed")


def kill_cells(name: str, index: int, run: dict[str, Any]) -> list[str]:
    return [
        name,
        str(index),
        str(run["victim"]),
        str(run["requests"]),
        f"{run['rps']:,.0f}",
        fmt_ms(run["p99_ms"]),
        fmt_ms(run["max_ms"]),
        str(run["failed"]),
    ]


def kill_summary(name: str, group: dict[str, Any]) -> str:
    failed = group["failed"]
    return f"{name}: failed worst {failed['worst']}, median {failed['median']:g}"


HANG_HEADERS = (
    "gateway",
    "run",
    "requests",
    "req/s",
    "failed",
    "by status",
    "max ms",
    "move s",
    "to stopped",
    "sent until s",
)


def hang_cells(name: str, index: int, run: dict[str, Any]) -> list[str]:
    statuses = " ".join(f"{status}:{count}" for status, count in run["failed_by_status"].items()) or "-"
    sent = "?" if run["sent_to_stopped"] is None else str(run["sent_to_stopped"])
    until = "?" if run["chosen_until_s"] is None else f"{run['chosen_until_s']:.1f}"
    return [
        name,
        str(index),
        str(run["requests"]),
        f"{run['rps']:,.0f}",
        str(run["failed"]),
        statuses,
        fmt_ms(run["max_ms"]),
        f"{run['time_to_move_s']:.2f}",
        sent,
        until,
    ]


def hang_summary(name: str, group: dict[str, Any]) -> str:
    failed, moved = group["failed"], group["time_to_move_s"]
    return (
        f"{name}: failed worst {failed['worst']}, median {failed['median']:g}; time to move: worst "
        f"{moved['worst']:.2f} s, median {moved['median']:.2f} s; slowest request: worst "
        f"{fmt_ms(group['max_ms']['worst'])} ms"
    )


def render(figures: dict[str, Any]) -> str:
    """The tables: one row per run, then worst and median across runs, then the goals."""
    parts: list[Any] = []
    if figures["kill"]:
        parts += [
            f"Kill: three edges (1, 2, 5 ms), {POLICY_DEFAULT}, closed-loop clients for {KILL_DURATION_S:g} s; "
            f"the edge with the most requests so far gets SIGKILL at ~{OUTAGE_AT_S:g} s",
            *runs_table(figures["kill"], KILL_HEADERS, kill_cells, kill_summary),
            "",
        ]
    if figures["hang"]:
        parts += [
            f"Hang: three edges, {HANG_CLIENTS} closed-loop clients; the edge busiest over the last {RECENT_S:g} s "
            f"gets SIGSTOP at ~{OUTAGE_AT_S:g} s for {HANG_FOR_S:g} s, then SIGCONT; gateway timeout_s "
            f"{HANG_TIMEOUT_S:g}",
            "   move s = time to move: the longest any request waited after the SIGSTOP (for one in flight then,",
            "   SIGSTOP to answer; for one sent while stopped, its latency); to stopped = attempts the gateway sent",
            "   the stopped edge while it was stopped (its GET /servers 'requests' counter, SIGSTOP to SIGCONT);",
            f"   sent until s = how long after the SIGSTOP that counter still rose (polled every {POLL_S:g} s)",
            *runs_table(figures["hang"], HANG_HEADERS, hang_cells, hang_summary),
            "",
        ]
    parts.append(goals_table(figures["goals"]))
    return as_text(*parts)


def plan(options: OutagesOptions) -> list[tuple[str, str, Any]]:
    """The runs in order: (scenario, contender, clients or gateway options), interleaved over rounds.

    Each round takes every contender once, in a rotating order, so a slow
    moment of this shared machine falls on all of them alike.
    """
    contenders: list[tuple[str, str, Any]] = []
    if options.scenario in ("kill", "all"):
        contenders += [("kill", f"{clients} clients", clients) for clients in options.kill_clients]
    if options.scenario in ("hang", "all"):
        contenders += [("hang", name, variant) for name, variant in hang_variants(options.extra).items()]
    order: list[tuple[str, str, Any]] = []
    for round_index in range(options.runs):
        shift = round_index % max(len(contenders), 1)
        order += contenders[shift:] + contenders[:shift]
    return order


async def run_outages(options: OutagesOptions) -> int:
    """Run the scenarios; 0 when every goal is met, 1 when one is missed, 2 when it could not run."""
    started = time.perf_counter()
    runs = plan(options)
    kill: dict[str, list[dict[str, Any]]] = {}
    hang: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="offload-outages-") as workdir:
        log_dir = Path(workdir)
        try:
            for index, (scenario, name, setting) in enumerate(runs):
                status(f"run {index + 1}/{len(runs)}: {scenario}, {name:<20}")
                label = f"{scenario}{index}"
                if scenario == "kill":
                    kill.setdefault(name, []).append(await run_kill(log_dir, label, setting, options.extra))
                else:
                    hang.setdefault(name, []).append(await run_hang(log_dir, label, setting))
        except StartupError as exc:
            print(f"\noffload bench outages: {exc}", file=sys.stderr)
            return 2
    status_done()
    figures = summarize(kill, hang)
    figures["elapsed_s"] = round(time.perf_counter() - started, 1)
    if options.json:
        print(json.dumps(figures, indent=2))
    else:
        print(render(figures))
        print(f"\nran in {figures['elapsed_s']} s")
    return 0 if all(goal["met"] for goal in figures["goals"]) else 1
