#!/usr/bin/env python3
"""Run every attack of issue 9 ("Safe to expose to callers") against a running demo and tabulate it.

Standalone on purpose: it needs only the standard library and aiohttp and never imports
``offload``, so the same script measures old code (BEFORE) and new code (AFTER).

Start a demo first (everything on 127.0.0.1), note the PIDs and URLs it prints::

    OFFLOAD_API_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))') \\
        .venv/bin/offload demo --serve --port 8899
      local      pid 1234    http://127.0.0.1:41001      <- the edge that hosts the EVM chain
      edge-near  pid 1235    http://127.0.0.1:41002
      edge-far   pid 1236    http://127.0.0.1:41003
      gateway    pid 1237    http://127.0.0.1:8899

then, in another shell::

    .venv/bin/python scripts/security_probe.py \\
        --gateway http://127.0.0.1:8899 --gateway-pid 1237 \\
        --edge http://127.0.0.1:41001 --edge-pid 1234 \\
        --token "$OFFLOAD_API_TOKEN" --label after  [--json] [--only csrf-text,rebind]

Or let the script start the demo itself (a fresh token, a free port), probe it and stop it
(SIGINT to the demo, then it checks that every process the demo printed is gone)::

    .venv/bin/python scripts/security_probe.py --demo .venv/bin/offload --label after \\
        --save-json /tmp/probe_after.json > /tmp/probe_after.txt

    # old code, from a worktree (the demo's children inherit PYTHONPATH):
    git worktree add /tmp/before 9fd4726
    PYTHONPATH=/tmp/before/core:/tmp/before/edge_server:/tmp/before/plugins/math:/tmp/before/plugins/contracts \\
        .venv/bin/python scripts/security_probe.py --demo '.venv/bin/python -m offload' --label before \\
        --save-json /tmp/probe_before.json > /tmp/probe_before.txt
    git worktree remove --force /tmp/before

    # the old gateway's descriptor limit matters for half-open: run it again as on a desktop (ulimit -n 1024);
    # the rows are named half-open@nofile=1024
    ... --demo ... --demo-nofile 1024 --only half-open --save-json /tmp/probe_before_nofile1024.json

    # a variant row from another commit: names get '@9846a17' appended
    ... --demo ... --only deep --suffix 9846a17 --save-json /tmp/probe_deep_9846a17.json

Other ways to print results::

    security_probe.py --from-json run1.json [run2.json ...]       # re-render (several runs merged)
    security_probe.py --compare before.json after.json [--markdown] # one BEFORE/AFTER table
    security_probe.py --compare b1.json,b2.json a1.json,a2.json     # several runs per side, merged
    security_probe.py --list                                        # the attacks, in running order

Each attack records the HTTP status(es), the Counter contract's value before/after
(``GET /contracts/Counter/get`` -> envelope "data"), the gateway's RSS before/after/peak
(``/proc/PID/status`` VmRSS), the worst latency of ``GET /health`` polled on a fresh
connection every 50 ms during the attack ("stall"), and whether the gateway and the
edge are still alive afterwards. Every request goes to a loopback address, every
request and every attack has a time limit, and every loop is bounded.

Attacks run in this order, the destructive ones last (the old gateway dies of
deep-utf16; half-open and edge-admin-delay may wedge a process). Once a process is
dead, the attacks that need it are reported as skipped.

Exit status: 0 when every attack ran, 1 if an attack was skipped or failed to run,
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import re
import resource
import secrets
import shlex
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

# --- limits --------------------------------------------------------------------------------------------

ATTACK_HARD_LIMIT_S = 75.0  # a whole attack, whatever happens (single requests are limited to 30 s)
REQUEST_TIMEOUT_S = 30.0
HEALTH_POLL_EVERY_S = 0.05
HEALTH_POLL_TIMEOUT_S = 10.0
HEALTH_POLL_MAX_OUTSTANDING = 200
COUNTER_TIMEOUT_S = 15.0
SETTLE_MAX_S = 45.0  # waiting for the gateway/chain to answer quickly again before an attack
EXCERPT = 160

# --- small helpers ----------------------------------------------------------------------------------


def require_loopback(url: str, what: str) -> str:
    """``url`` without a trailing slash if it is http://<loopback IP literal>:port; else exit 2."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback or parts.port is None:
        raise SystemExit(f"security_probe: {what} must be http://127.0.0.1:PORT (a loopback address), got {url!r}")
    return url.rstrip("/")


def excerpt(data: bytes | str | None, limit: int = EXCERPT) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit})"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}"[:120] if text else name


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_alive(pid: int | None) -> bool | None:
    """True/False from /proc (a zombie, e.g. a crashed child nobody reaped yet, counts as dead); None: no PID."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except OSError:
        return False
    return True


def how_it_ended(pid: int | None) -> str:
    """ "killed by SIGSEGV" / "exited with 1" for a zombie (/proc/PID/stat field 52), else "gone"."""
    if pid is None:
        return "(no PID)"
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        code = int(fields[49])  # field 52, exit_code, counted from field 3 (state)
    except (OSError, IndexError, ValueError):
        return "(exited and reaped)"
    if code & 0x7F:
        try:
            name = signal.Signals(code & 0x7F).name
        except ValueError:
            name = f"signal {code & 0x7F}"
        return f"(killed by {name}{', core dumped' if code & 0x80 else ''})"
    return f"(exited with {code >> 8})"


def open_files_limit(pid: int | None) -> str:
    if pid is None:
        return "n/a"
    try:
        with open(f"/proc/{pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return f"{soft} (hard {hard})"
    except OSError:
        pass
    return "unknown"


def open_fd_count(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def strict_json(body: bytes) -> tuple[bool, str]:
    """Whether ``body`` is strict JSON: no NaN/Infinity literals and no number that overflows to inf."""

    def bad_constant(name: str) -> Any:
        raise ValueError(f"non-standard constant {name}")

    def checked_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text} overflows a double")
        return value

    try:
        json.loads(body, parse_constant=bad_constant, parse_float=checked_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return False, str(exc)[:80]
    return True, ""


def nested(levels: int) -> str:
    """``levels`` nested arrays behind a string that fools a depth check reading UTF-16 bytes.

    U+2200 is the bytes 00 22 in UTF-16-LE: a scanner of raw bytes sees a quote
    there, thinks the rest is inside a string, and counts no brackets at all.
    """
    return '["\u2200", ' + "[" * levels + "]" * levels + ', "x"]'


# --- records -------------------------------------------------------------------------------------------


@dataclass
class Record:
    name: str
    title: str
    target: str  # gateway | edge
    ran: bool = False
    skipped: str = ""
    statuses: list[str] = field(default_factory=list)
    counter_before: int | None = None
    counter_after: int | None = None
    counter_delta: int | None = None
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    rss_peak_mb: float | None = None
    stall_ms: float | None = None
    stall_open: bool = False  # a poll was still waiting when the attack ended (stall_ms is a lower bound)
    health_polls: int = 0
    health_bad: int = 0
    edge_stall_ms: float | None = None
    gateway_alive: bool | None = None
    edge_alive: bool | None = None
    duration_s: float = 0.0
    verdict: str = ""  # blocked | SUCCEEDS | DEGRADED | CRASH | info | skipped
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):
    """The attack cannot run (a process it needs is dead)."""


# --- the health monitor ----------------------------------------------------------------------------------


class Monitor:
    """Polls ``url`` on a fresh connection every 50 ms (and samples RSS) until stopped."""

    def __init__(self, url: str | None, pid: int | None) -> None:
        self.url = url
        self.pid = pid
        self.latencies: list[float] = []
        self.slow: list[tuple[float, float]] = []  # (seconds after start the poll began, latency) of polls > 0.5 s
        self.origin = time.perf_counter()
        self.bad = 0
        self.polls = 0
        self.peak_rss: float | None = None
        self.open_waits: list[float] = []
        self._pending: dict[asyncio.Task[None], float] = {}
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    async def _poll(self, session: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        ok = False
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=HEALTH_POLL_TIMEOUT_S)) as reply:
                await reply.read()
                ok = reply.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            ok = False
        latency = time.perf_counter() - started
        self.latencies.append(latency)
        if latency > 0.5:
            self.slow.append((round(started - self.origin, 2), round(latency, 3)))
        if not ok:
            self.bad += 1

    def _sample_rss(self) -> None:
        value = rss_mb(self.pid)
        if value is not None and (self.peak_rss is None or value > self.peak_rss):
            self.peak_rss = value

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            deadline = time.monotonic() + ATTACK_HARD_LIMIT_S + 10
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._sample_rss()
                if self.url is not None and len(self._pending) < HEALTH_POLL_MAX_OUTSTANDING:
                    task = asyncio.create_task(self._poll(session))
                    self._pending[task] = time.perf_counter()
                    task.add_done_callback(self._pending.pop)
                    self.polls += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), HEALTH_POLL_EVERY_S)
            # Let polls in flight finish briefly; the rest count as stalled for as long as they waited.
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=1.0)
            now = time.perf_counter()
            self.open_waits = [now - started for started in self._pending.values()]
            for task in list(self._pending):
                task.cancel()
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=1.0)

    def start(self) -> None:
        self.open_waits: list[float] = []
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._runner is not None:
            await asyncio.wait_for(self._runner, 15)

    def stall_ms(self) -> tuple[float | None, bool]:
        if self.url is None:
            return None, False
        worst = max(self.latencies, default=0.0)
        worst_open = max(self.open_waits, default=0.0)
        if not self.latencies and not self.open_waits:
            return None, False
        return 1000 * max(worst, worst_open), worst_open > worst

    def result(self) -> dict[str, Any]:
        return {
            "latencies": self.latencies,
            "open_waits": self.open_waits,
            "bad": self.bad,
            "peak_rss": self.peak_rss,
            "slow": self.slow,
        }

    def load(self, result: dict[str, Any]) -> None:
        self.latencies = result["latencies"]
        self.slow = [tuple(item) for item in result["slow"]]
        self.open_waits = result["open_waits"]
        self.bad = result["bad"]
        self.peak_rss = result["peak_rss"]


async def monitor_child(url: str | None, pid: int | None) -> int:
    """``--monitor-child``: poll until SIGTERM (or the time limit), then print the figures as JSON."""
    if url is not None:
        require_loopback(url, "the monitored URL")
    monitor = Monitor(url, pid)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, monitor._stop.set)
    monitor.start()
    print("ready", flush=True)
    assert monitor._runner is not None
    await asyncio.wait_for(monitor._runner, ATTACK_HARD_LIMIT_S + 40)
    print(json.dumps(monitor.result()), flush=True)
    return 0


class MonitorProcess:
    """A :class:`Monitor` in a process of its own, so the attack's own CPU use cannot inflate the stall figures."""

    def __init__(self, url: str | None, pid: int | None) -> None:
        self.monitor = Monitor(url, pid)
        self.url = url
        self.pid = pid
        self.proc: asyncio.subprocess.Process | None = None
        self.error = ""

    async def start(self) -> None:
        self.monitor.open_waits = []
        if self.url is None and self.pid is None:
            return
        argv = [sys.executable, os.path.abspath(__file__), "--monitor-child"]
        argv += ["--monitor-url", self.url or "-", "--monitor-pid", str(self.pid or 0)]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        try:
            await asyncio.wait_for(self.proc.stdout.readline(), 15)
        except TimeoutError:
            self.error = "monitor did not start"

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        assert proc.stdout is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out = await asyncio.wait_for(proc.stdout.read(), 20)
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            self.error = "monitor did not stop; killed"
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            return
        try:
            self.monitor.load(json.loads(out.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError, KeyError) as exc:
            self.error = f"monitor output unreadable: {exc}"

    def stall_ms(self) -> tuple[float | None, bool]:
        return self.monitor.stall_ms()


# --- the probe ------------------------------------------------------------------------------------------


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.gateway: str = args.gateway
        self.edge: str | None = args.edge
        self.gateway_pid: int | None = args.gateway_pid
        self.edge_pid: int | None = args.edge_pid
        self.token: str | None = args.token
        parts = urllib.parse.urlsplit(self.gateway)
        self.gw_host = parts.hostname or "127.0.0.1"
        self.gw_port = parts.port or 80
        self.session: aiohttp.ClientSession | None = None
        self.gateway_dead = False
        self.edge_dead = False

    # -- plumbing --

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None
        return self.session

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        read_limit: int = 256 * 1024 * 1024,
        fresh: bool = False,
    ) -> tuple[int | None, bytes, int, float, str]:
        """(status or None, body (first 64 KiB), body size, seconds, error text)."""
        require_loopback(url, "every request")
        started = time.perf_counter()
        session = self.http
        own: aiohttp.ClientSession | None = None
        if fresh:
            own = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
            session = own
        try:
            async with session.request(
                method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as reply:
                head = bytearray()
                size = 0
                async for chunk in reply.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if len(head) < 65536:
                        head += chunk[: 65536 - len(head)]
                    if size > read_limit:
                        break
                return reply.status, bytes(head), size, time.perf_counter() - started, ""
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return None, b"", 0, time.perf_counter() - started, describe_error(exc)
        finally:
            if own is not None:
                await own.close()

    @staticmethod
    def show(status: int | None, error: str) -> str:
        return str(status) if status is not None else f"no answer ({error})"

    def json_headers(self, **extra: str) -> dict[str, str]:
        return {"Content-Type": "application/json", **extra}

    async def read_counter(self) -> int | None:
        if self.gateway_dead:
            return None
        status, body, _, _, _ = await self.request(
            "GET", f"{self.gateway}/contracts/Counter/get", timeout_s=COUNTER_TIMEOUT_S
        )
        if status != 200:
            return None
        try:
            return int(json.loads(body)["data"])
        except (ValueError, KeyError, TypeError):
            return None

    async def health_answers(self, url: str, timeout_s: float) -> tuple[int | None, float, str]:
        status, _, _, seconds, error = await self.request("GET", url, timeout_s=timeout_s, fresh=True)
        return status, seconds, error

    async def settle(self) -> None:
        """Before an attack: wait (bounded) until the gateway answers /health and a view quickly."""
        if self.gateway_dead:
            return
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline:
            if process_alive(self.gateway_pid) is False:
                return
            status, _, _, seconds, _ = await self.request("GET", f"{self.gateway}/health", timeout_s=5)
            if status == 200 and seconds < 1.0:
                vstatus, _, _, vseconds, _ = await self.request(
                    "GET", f"{self.gateway}/contracts/Counter/get", timeout_s=5
                )
                if vstatus == 200 and vseconds < 1.0:
                    return
            await asyncio.sleep(0.5)

    def refresh_alive(self) -> None:
        if process_alive(self.gateway_pid) is False:
            self.gateway_dead = True
        if process_alive(self.edge_pid) is False:
            self.edge_dead = True

    # -- running one attack --

    async def run(self, spec: AttackSpec) -> Record:
        record = Record(spec.name, spec.title, spec.target)
        self.refresh_alive()
        needs = spec.needs
        if "edge" in needs and self.edge is None:
            record.skipped = "no --edge given"
        elif "token" in needs and not self.token:
            record.skipped = "no --token given"
        elif "gateway" in needs and self.gateway_dead:
            record.skipped = "gateway is dead"
        elif "edge" in needs and self.edge_dead:
            record.skipped = "edge is dead"
        if record.skipped:
            record.verdict = "skipped"
            record.gateway_alive = process_alive(self.gateway_pid)
            record.edge_alive = process_alive(self.edge_pid)
            return record
        await self.settle()
        self.refresh_alive()
        gateway_dead_before, edge_dead_before = self.gateway_dead, self.edge_dead
        record.counter_before = await self.read_counter()
        record.rss_before_mb = rss_mb(self.gateway_pid)
        monitor = MonitorProcess(None if self.gateway_dead else f"{self.gateway}/health", self.gateway_pid)
        edge_monitor = MonitorProcess(f"{self.edge}/health" if spec.target == "edge" and self.edge else None, None)
        await monitor.start()
        await edge_monitor.start()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(spec.func(self, record), ATTACK_HARD_LIMIT_S)
            record.ran = True
        except TimeoutError:
            record.ran = True
            record.notes.append(f"attack cut off after {ATTACK_HARD_LIMIT_S:g} s")
        except Skip as exc:
            record.skipped = str(exc)
        except Exception as exc:  # the probe's own bug must not hide the other attacks
            record.notes.append(f"probe error: {describe_error(exc)}")
        record.duration_s = round(time.perf_counter() - started, 2)
        await monitor.stop()
        await edge_monitor.stop()
        stall, open_ = monitor.stall_ms()
        record.stall_ms = None if stall is None else round(stall, 1)
        record.stall_open = open_
        record.health_polls = len(monitor.monitor.latencies) + len(monitor.monitor.open_waits)
        record.health_bad = monitor.monitor.bad + len(monitor.monitor.open_waits)
        slow_polls = monitor.monitor.slow
        if slow_polls:
            worst_at, worst = max(slow_polls, key=lambda item: item[1])
            record.details["slow_health_polls"] = slow_polls[:50]
            record.notes.append(
                f"/health polls over 0.5 s: {len(slow_polls)} of {record.health_polls}, "
                f"worst {worst:.2f} s starting {worst_at:.1f} s into the attack"
            )
        for problem in (monitor.error, edge_monitor.error):
            if problem:
                record.notes.append(problem)
        edge_stall, _ = edge_monitor.stall_ms()
        record.edge_stall_ms = None if edge_stall is None else round(edge_stall, 1)
        record.rss_peak_mb = monitor.monitor.peak_rss
        await asyncio.sleep(0.3)
        self.refresh_alive()
        record.gateway_alive = process_alive(self.gateway_pid)
        record.edge_alive = process_alive(self.edge_pid)
        if record.gateway_alive is None:  # no PID given: alive means it answers
            status, _, _ = await self.health_answers(f"{self.gateway}/health", 3)
            record.gateway_alive = status is not None
            self.gateway_dead = not record.gateway_alive
        if record.edge_alive is None and self.edge:
            status, _, _ = await self.health_answers(f"{self.edge}/health", 3)
            record.edge_alive = status is not None
        record.rss_after_mb = rss_mb(self.gateway_pid)
        record.counter_after = await self.read_counter()
        if record.counter_before is not None and record.counter_after is not None:
            record.counter_delta = record.counter_after - record.counter_before
        if not record.verdict:
            record.verdict = spec.judge(record) if record.ran else "skipped"
        died = [
            f"{name} {how_it_ended(pid)}"
            for name, was_dead, alive, pid in (
                ("gateway", gateway_dead_before, record.gateway_alive, self.gateway_pid),
                ("edge", edge_dead_before, record.edge_alive, self.edge_pid),
            )
            if not was_dead and alive is False
        ]
        if record.ran and died:
            record.verdict = "CRASH"
            record.notes.append(f"died during this attack: {', '.join(died)}")
        for key in ("rss_before_mb", "rss_after_mb", "rss_peak_mb"):
            value = getattr(record, key)
            if value is not None:
                setattr(record, key, round(value, 1))
        return record


# --- the attacks -----------------------------------------------------------------------------------------

AttackFunc = Callable[["Probe", Record], Awaitable[None]]


@dataclass
class AttackSpec:
    name: str
    title: str
    target: str
    needs: tuple[str, ...]
    func: AttackFunc
    judge: Callable[[Record], str]


def wrote(record: Record) -> bool:
    return bool(record.counter_delta)


def judge_write_refused(record: Record) -> str:
    """A write a stranger must not be able to make: SUCCEEDS if the counter moved or a 2xx came back."""
    if wrote(record) or any(s.startswith("2") for s in record.statuses):
        return "SUCCEEDS"
    return "blocked"


def slow(record: Record, limit_ms: float = 1000.0) -> bool:
    return record.stall_ms is not None and record.stall_ms > limit_ms


# 1. deep-utf16 ------------------------------------------------------------------------------------------


async def attack_deep_utf16(probe: Probe, record: Record) -> None:
    body = nested(80_000).encode("utf-16")
    record.details["body_bytes"] = len(body)
    for label, path in (("rpc", "/contracts/rpc"), ("increment", "/contracts/Counter/increment")):
        probe.refresh_alive()
        if probe.gateway_dead:
            record.statuses.append(f"{label}: not sent (gateway dead)")
            continue
        status, answer, _, seconds, error = await probe.request(
            "POST", probe.gateway + path, data=body, headers=probe.json_headers()
        )
        record.statuses.append(f"{label}: {probe.show(status, error)}")
        record.details[f"{label}_s"] = round(seconds, 2)
        record.details[f"{label}_answer"] = excerpt(answer)
        await asyncio.sleep(0.5)  # a crash shows up in /proc a moment later


def judge_deep(record: Record) -> str:
    if any(" 5" in s[s.find(":") :] for s in record.statuses) or any("no answer" in s for s in record.statuses):
        return "SUCCEEDS"
    if slow(record):
        return "DEGRADED"
    return "blocked"


async def attack_deep_utf16_edge(probe: Probe, record: Record) -> None:
    body = nested(100_000).encode("utf-16")
    record.details["body_bytes"] = len(body)
    status, answer, _, seconds, error = await probe.request(
        "POST", f"{probe.edge}/rpc", data=body, headers=probe.json_headers()
    )
    record.statuses.append(f"edge /rpc: {probe.show(status, error)}")
    record.details["seconds"] = round(seconds, 2)
    record.details["answer"] = excerpt(answer)
    await asyncio.sleep(0.5)


def judge_deep_edge(record: Record) -> str:
    if any(" 5" in s[s.find(":") :] or "no answer" in s for s in record.statuses):
        return "SUCCEEDS"
    if record.edge_stall_ms is not None and record.edge_stall_ms > 1000:
        return "DEGRADED"
    return "blocked"


# 2-5. cross-site writes, rebinding, write over GET --------------------------------------------------------


async def attack_csrf_text(probe: Probe, record: Record) -> None:
    status, answer, _, _, error = await probe.request(
        "POST",
        f"{probe.gateway}/contracts/Counter/increment",
        data=b"{}",
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    record.statuses.append(probe.show(status, error))
    record.details["answer"] = excerpt(answer)


async def attack_csrf_form(probe: Probe, record: Record) -> None:
    status, answer, _, _, error = await probe.request(
        "POST",
        f"{probe.gateway}/contracts/Counter/increment",
        data=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    record.statuses.append(probe.show(status, error))
    record.details["answer"] = excerpt(answer)


async def attack_rebind(probe: Probe, record: Record) -> None:
    status, answer, _, _, error = await probe.request(
        "POST",
        f"{probe.gateway}/contracts/Counter/increment",
        data=b"{}",
        headers=probe.json_headers(Host="evil.example:8899"),
    )
    record.statuses.append(probe.show(status, error))
    record.details["answer"] = excerpt(answer)


async def attack_get_write(probe: Probe, record: Record) -> None:
    status, answer, _, _, error = await probe.request(
        "GET", f"{probe.gateway}/contracts/execcontract?contractID=Counter&operation=increment"
    )
    record.statuses.append(probe.show(status, error))
    record.details["answer"] = excerpt(answer)


# 6. huge batch ----------------------------------------------------------------------------------------------


async def attack_huge_batch(probe: Probe, record: Record) -> None:
    count = 3_000_000  # "1," * 3e6 = 6 MB
    body = ("[" + ",".join(["1"] * count) + "]").encode()
    record.details["body_bytes"] = len(body)
    status, answer, size, seconds, error = await probe.request(
        "POST", f"{probe.gateway}/contracts/rpc", data=body, headers=probe.json_headers()
    )
    record.statuses.append(probe.show(status, error))
    record.details["answer_bytes"] = size
    record.details["seconds"] = round(seconds, 2)
    record.details["answer"] = excerpt(answer)
    record.notes.append(f"answer {size:,} bytes in {seconds:.1f} s")


def judge_huge_batch(record: Record) -> str:
    grown = (record.rss_peak_mb or 0) - (record.rss_before_mb or 0)
    if any(s.startswith("2") for s in record.statuses) and record.details.get("answer_bytes", 0) > 1_000_000:
        return "SUCCEEDS"
    if grown > 100 or slow(record) or any(s.startswith("5") or s.startswith("no answer") for s in record.statuses):
        return "DEGRADED"
    return "blocked"


# 7. looping eth_call ---------------------------------------------------------------------------------------

LOOP_CALL = {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"data": "0x5b600056"}, "latest"]}


async def attack_loop_call(probe: Probe, record: Record) -> None:
    views: list[tuple[int | None, float]] = []
    stop = asyncio.Event()

    async def poll_views() -> None:
        pending: set[asyncio.Task[Any]] = set()

        async def one() -> None:
            status, _, _, seconds, _ = await probe.request(
                "GET", f"{probe.gateway}/contracts/Counter/get", timeout_s=REQUEST_TIMEOUT_S
            )
            views.append((status, seconds))

        deadline = time.monotonic() + ATTACK_HARD_LIMIT_S
        while not stop.is_set() and time.monotonic() < deadline:
            if len(pending) < 50:
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
        if pending:
            await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_S)
        for task in pending:
            task.cancel()

    poller = asyncio.create_task(poll_views())
    try:
        single = json.dumps(LOOP_CALL).encode()
        status, answer, _, seconds, error = await probe.request(
            "POST", f"{probe.gateway}/contracts/rpc", data=single, headers=probe.json_headers(), timeout_s=25
        )
        record.statuses.append(f"single: {probe.show(status, error)} in {seconds:.1f} s")
        record.details["single_s"] = round(seconds, 2)
        record.details["single_answer"] = excerpt(answer)
        batch = json.dumps([{**LOOP_CALL, "id": index} for index in range(1, 5)]).encode()
        status, answer, _, seconds, error = await probe.request(
            "POST", f"{probe.gateway}/contracts/rpc", data=batch, headers=probe.json_headers(), timeout_s=25
        )
        record.statuses.append(f"batch of 4: {probe.show(status, error)} in {seconds:.1f} s")
        record.details["batch_s"] = round(seconds, 2)
        record.details["batch_answer"] = excerpt(answer)
        record.notes.append(f"single answer: {record.details['single_answer'][:110]!r}")
    finally:
        stop.set()
        await asyncio.wait_for(poller, REQUEST_TIMEOUT_S + 5)
    worst = max((seconds for _, seconds in views), default=0.0)
    bad = [status for status, _ in views if status != 200]
    record.details["views"] = len(views)
    record.details["view_max_wait_s"] = round(worst, 2)
    record.details["view_non_200"] = len(bad)
    record.notes.append(
        f"Counter.get polled {len(views)}x meanwhile: max wait {worst:.2f} s, non-200: {len(bad)}"
        + (f" ({', '.join(sorted({str(s) for s in bad}))})" if bad else "")
    )


def judge_loop_call(record: Record) -> str:
    longest = max(record.details.get("single_s", 0), record.details.get("batch_s", 0))
    if longest > 5 or record.details.get("view_max_wait_s", 0) > 2 or record.details.get("view_non_200", 0):
        return "SUCCEEDS"
    if slow(record) or record.details.get("view_max_wait_s", 0) > 0.5:
        return "DEGRADED"
    return "blocked"


# 8. updateservers over GET ---------------------------------------------------------------------------------


async def membership(probe: Probe) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    status, body, _, _, error = await probe.request("GET", f"{probe.gateway}/servers", timeout_s=10)
    if status == 200:
        try:
            pools = json.loads(body)["pools"]
            seen["servers"] = {
                name: sorted((s.get("name"), s.get("url"), bool(s.get("local"))) for s in pool.get("servers", []))
                for name, pool in pools.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            seen["servers"] = f"unreadable: {excerpt(body, 60)}"
    else:
        seen["servers"] = f"/servers: {probe.show(status, error)}"
    for path in ("/listservers", "/contracts/listservers"):
        status, body, _, _, error = await probe.request("GET", probe.gateway + path, timeout_s=10)
        try:
            seen[path] = sorted(json.loads(body)["data"]) if status == 200 else probe.show(status, error)
        except (ValueError, KeyError, TypeError):
            seen[path] = f"unreadable: {excerpt(body, 60)}"
    return seen


async def attack_updateservers_get(probe: Probe, record: Record) -> None:
    before = await membership(probe)
    status, answer, _, _, error = await probe.request("GET", f"{probe.gateway}/updateservers", timeout_s=20)
    record.statuses.append(probe.show(status, error))
    record.details["answer"] = excerpt(answer)
    after = await membership(probe)
    changed = before != after
    record.details["membership_changed"] = changed
    record.details["before"] = before
    record.details["after"] = after
    if changed:
        for key in before:
            if before[key] != after.get(key):
                record.notes.append(
                    f"{key} changed: {excerpt(json.dumps(before[key]), 200)} -> "
                    f"{excerpt(json.dumps(after.get(key)), 200)}"
                )
    else:
        record.notes.append("membership unchanged (names, urls, local flag)")


def judge_updateservers(record: Record) -> str:
    if record.details.get("membership_changed") or any(s.startswith("2") for s in record.statuses):
        return "SUCCEEDS"
    return "blocked"


# 9. edge admin delay ---------------------------------------------------------------------------------------


async def attack_edge_admin_delay(probe: Probe, record: Record) -> None:
    status, answer, _, _, error = await probe.request(
        "PUT", f"{probe.edge}/admin/delay", data=b'{"delay_ms": 1e308}', headers=probe.json_headers(), timeout_s=10
    )
    record.statuses.append(f"PUT: {probe.show(status, error)}")
    record.details["answer"] = excerpt(answer)
    accepted = status is not None and 200 <= status < 300
    record.details["accepted"] = accepted
    hstatus, hseconds, herror = await probe.health_answers(f"{probe.edge}/health", 2.0)
    record.statuses.append(f"edge /health: {probe.show(hstatus, herror)}")
    record.details["edge_health_within_2s"] = hstatus is not None
    after = f"answered {hstatus} in {hseconds:.2f} s" if hstatus else "no answer within 2 s"
    record.notes.append(f"edge /health afterwards: {after}")
    if not accepted and status is not None:
        return
    # Always undo (also when the PUT timed out: it may have landed). Anonymous first, then with the token.
    restored = False
    attempts = [("anonymous", {})]
    if probe.token:
        attempts.append(("with token", {"Authorization": f"Bearer {probe.token}"}))
    for label, extra in attempts:
        rstatus, _ranswer, _, _, rerror = await probe.request(
            "PUT",
            f"{probe.edge}/admin/delay",
            data=b'{"delay_ms": 0}',
            headers=probe.json_headers(**extra),
            timeout_s=5,
        )
        record.details[f"restore_{label}"] = probe.show(rstatus, rerror)
        if rstatus is not None and 200 <= rstatus < 300:
            restored = True
            break
    hstatus, hseconds, herror = await probe.health_answers(f"{probe.edge}/health", 2.0)
    record.details["restored"] = restored
    if restored and hstatus is not None:
        record.notes.append(f"restored delay 0; edge /health {hstatus} in {hseconds:.2f} s")
    else:
        record.notes.append(
            "EDGE WEDGED: restore PUT "
            + ", ".join(f"{k[8:]}: {v}" for k, v in record.details.items() if k.startswith("restore_"))
            + f"; /health {probe.show(hstatus, herror)}"
        )


def judge_edge_delay(record: Record) -> str:
    if record.details.get("accepted") or not record.details.get("edge_health_within_2s", True):
        return "SUCCEEDS"
    return "blocked"


# 10. half-open connections -----------------------------------------------------------------------------------


async def attack_half_open(probe: Probe, record: Record) -> None:
    want = 1100
    hold_s = 15.0
    partial = f"GET / HTTP/1.1\r\nHost: {probe.gw_host}\r\n".encode()
    record.details["gateway_nofile"] = open_files_limit(probe.gateway_pid)
    record.details["gateway_fds_before"] = open_fd_count(probe.gateway_pid)
    record.notes.append(f"gateway 'ulimit -n': {record.details['gateway_nofile']}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want + 500), hard))
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(300)

    async def open_one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(probe.gw_host, probe.gw_port), 3.0)
                writer.write(partial)
                await asyncio.wait_for(writer.drain(), 1.0)
                conns.append((reader, writer))
            except (TimeoutError, OSError) as exc:
                key = describe_error(exc)[:60]
                failures[key] = failures.get(key, 0) + 1

    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(want))), 6.0)
    except TimeoutError:
        failures["opening cut off at 6 s"] = 1
    opened_in = time.perf_counter() - started
    record.details["opened"] = len(conns)
    record.details["open_s"] = round(opened_in, 2)
    record.details["open_failures"] = failures
    hold_until = started + hold_s
    try:
        await asyncio.sleep(0.3)
        record.details["gateway_fds_held"] = open_fd_count(probe.gateway_pid)
        status, seconds, error = await probe.health_answers(f"{probe.gateway}/health", 10.0)
        record.statuses.append(f"fresh /health: {probe.show(status, error)} in {seconds:.2f} s")
        record.details["fresh_status"] = status
        record.details["fresh_s"] = round(seconds, 2)
        # A second fresh request near the end of the hold: does the gateway stay usable?
        await asyncio.sleep(max(0.0, min(hold_until - time.perf_counter() - 1.5, hold_s)))
        status2, seconds2, error2 = await probe.health_answers(f"{probe.gateway}/health", 1.5)
        record.statuses.append(f"later /health: {probe.show(status2, error2)} in {seconds2:.2f} s")
        record.details["fresh2_status"] = status2
        record.details["fresh2_s"] = round(seconds2, 2)
        # How many held connections did the gateway close or answer?
        closed = answered = still_open = 0
        answers: dict[str, int] = {}
        for reader, _ in conns:
            try:
                data = await asyncio.wait_for(reader.read(256), 0.002)
            except TimeoutError:
                still_open += 1
                continue
            except OSError:
                closed += 1
                continue
            if data:
                answered += 1
                line = data.split(b"\r\n", 1)[0].decode("latin-1")[:40]
                answers[line] = answers.get(line, 0) + 1
            else:
                closed += 1
        record.details["held_end"] = {"still_open": still_open, "closed_by_gateway": closed, "answered": answered}
        record.details["held_answers"] = answers
    finally:
        for _, writer in conns:
            writer.close()
        await asyncio.sleep(0.2)
        for _, writer in conns:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(writer.wait_closed(), 0.05)
    end = record.details.get("held_end", {})
    record.notes.append(
        f"opened {len(conns)}/{want} in {opened_in:.2f} s"
        + (f" (failures: {failures})" if failures else "")
        + f"; at {hold_s:g} s: {end.get('still_open')} still open, {end.get('closed_by_gateway')} closed by gateway"
        + (f", answered {record.details.get('held_answers')}" if end.get("answered") else "")
        + f"; gateway fds {record.details.get('gateway_fds_before')} -> {record.details.get('gateway_fds_held')}"
    )


def judge_half_open(record: Record) -> str:
    fresh = record.details.get("fresh_status")
    fresh2 = record.details.get("fresh2_status")
    if fresh is None or fresh2 is None:
        return "SUCCEEDS"
    if record.details.get("fresh_s", 0) > 1:
        return "DEGRADED"
    # Polls slowed while the 1,100 connections were being opened meet a full listen backlog (a dropped SYN is
    # retried after 1 s): that is the connection burst, not the held connections. Judge the hold only.
    burst_end = record.details.get("open_s", 0) + 0.5
    held_slow = [lat for at, lat in record.details.get("slow_health_polls", []) if at > burst_end]
    if held_slow or record.stall_open:
        return "DEGRADED"
    if slow(record):
        record.notes.append("the slow /health polls all began during the connection burst (listen backlog)")
    return "blocked"


# 11-13. JSON-RPC odd inputs ------------------------------------------------------------------------------------


async def attack_raw_params(probe: Probe, record: Record) -> None:
    for label, params in (("[{}]", "[{}]"), ("[1]", "[1]"), ("[true]", "[true]")):
        body = f'{{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":{params}}}'.encode()
        status, answer, _, _, error = await probe.request(
            "POST", f"{probe.gateway}/contracts/rpc", data=body, headers=probe.json_headers()
        )
        record.statuses.append(f"{label}: {probe.show(status, error)}")
        record.details[label] = excerpt(answer, 120)
        record.notes.append(f"{label}: {excerpt(answer, 200)!r}")


def judge_raw_params(record: Record) -> str:
    if any(": 5" in s or "no answer" in s for s in record.statuses):
        return "SUCCEEDS"
    return "blocked"


async def attack_bad_ids(probe: Probe, record: Record) -> None:
    valid_all = True
    for label in ("NaN", "Infinity", "1e400"):
        body = f'{{"jsonrpc":"2.0","id":{label},"method":"eth_chainId","params":[]}}'.encode()
        status, answer, _, _, error = await probe.request(
            "POST", f"{probe.gateway}/contracts/rpc", data=body, headers=probe.json_headers()
        )
        ok, why = strict_json(answer) if status is not None else (False, error)
        valid_all = valid_all and ok
        record.statuses.append(f"{label}: {probe.show(status, error)} {'json ok' if ok else 'BAD JSON'}")
        record.details[label] = {"strict_json": ok, "why": why, "answer": excerpt(answer, 120)}
        record.notes.append(f"{label}: {excerpt(answer, 90)!r}" + ("" if ok else f" NOT strict JSON: {why}"))
    record.details["all_strict_json"] = valid_all


def judge_bad_ids(record: Record) -> str:
    if not record.details.get("all_strict_json") or any(": 5" in s for s in record.statuses):
        return "SUCCEEDS"
    return "blocked"


async def attack_notification(probe: Probe, record: Record) -> None:
    body = b'{"jsonrpc":"2.0","method":"eth_chainId","params":[]}'
    status, answer, size, _, error = await probe.request(
        "POST", f"{probe.gateway}/contracts/rpc", data=body, headers=probe.json_headers()
    )
    record.statuses.append(probe.show(status, error))
    record.details["answer_bytes"] = size
    record.details["answer"] = excerpt(answer)
    record.notes.append(f"answer {size} bytes: {excerpt(answer, 80)!r}")


def judge_notification(record: Record) -> str:
    if any(s.startswith("5") or s.startswith("no answer") for s in record.statuses):
        return "SUCCEEDS"
    return "info"


# 14. CONNECT and NUL ----------------------------------------------------------------------------------------------


async def raw_exchange(host: str, port: int, payload: bytes, timeout_s: float = 5.0) -> tuple[bytes, str]:
    received = bytearray()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError) as exc:
        return b"", describe_error(exc)
    note = ""
    try:
        writer.write(payload)
        await writer.drain()
        deadline = time.monotonic() + timeout_s
        while len(received) < 65536 and time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                note = "connection left open"
                break
            if not chunk:
                note = "closed by server"
                break
            received += chunk
            if b"\r\n\r\n" in received and len(received) > 0:
                # one answer is enough; give a moment for the rest of the body
                try:
                    more = await asyncio.wait_for(reader.read(65536), 0.3)
                    received += more
                except TimeoutError:
                    pass
                break
    except OSError as exc:
        note = describe_error(exc)
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return bytes(received), note


async def attack_connect_nul(probe: Probe, record: Record) -> None:
    cases = (
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        ("NUL path", b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    )
    for label, payload in cases:
        data, note = await raw_exchange(probe.gw_host, probe.gw_port, payload)
        line = data.split(b"\r\n", 1)[0].decode("latin-1") if data else ""
        status = line.split(" ")[1] if line.startswith("HTTP/") and len(line.split(" ")) > 1 else "no status line"
        record.statuses.append(f"{label}: {status}")
        record.details[label] = {
            "status_line": line[:60],
            "bytes": len(data),
            "note": note,
            "answer": excerpt(data, 200),
        }
        record.notes.append(f"{label}: {len(data)} bytes, {line[:40]!r}" + (f" ({note})" if note else ""))


def judge_connect_nul(record: Record) -> str:
    if any(s.endswith(": 200") or ": 5" in s for s in record.statuses):
        return "SUCCEEDS"
    if any("no status line" in s for s in record.statuses):
        return "info"
    return "blocked"


# 15. 1 MB string argument -------------------------------------------------------------------------------------------


async def attack_big_arg(probe: Probe, record: Record) -> None:
    big = "x" * 1_000_000
    url = f"{probe.gateway}/contracts/execcontract?contractID=Hello&operation=greet&arg={big}"
    status, answer, size, seconds, error = await probe.request("GET", url)
    record.statuses.append(f"GET execcontract: {probe.show(status, error)}")
    record.details["get"] = {"status": status, "bytes": size, "s": round(seconds, 2), "answer": excerpt(answer)}
    body = json.dumps({"args": [big]}).encode()
    status, answer, size, seconds, error = await probe.request(
        "POST", f"{probe.gateway}/contracts/Hello/greet", data=body, headers=probe.json_headers()
    )
    record.statuses.append(f"POST greet: {probe.show(status, error)}")
    record.details["post"] = {"status": status, "bytes": size, "s": round(seconds, 2), "answer": excerpt(answer)}
    record.notes.append(f"POST greet answered {size:,} bytes in {seconds:.2f} s: {excerpt(answer, 100)!r}")


def judge_big_arg(record: Record) -> str:
    if any(": 5" in s or "no answer" in s for s in record.statuses):
        return "SUCCEEDS"
    if any(s.endswith(": 200") for s in record.statuses) or slow(record):
        return "DEGRADED"
    return "blocked"


# 16. the operator's writes still work --------------------------------------------------------------------------------


async def attack_with_token(probe: Probe, record: Record) -> None:
    headers = probe.json_headers(Authorization=f"Bearer {probe.token}")
    connector = aiohttp.TCPConnector(limit=100)
    statuses: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            try:
                async with session.post(
                    f"{probe.gateway}/contracts/Counter/increment",
                    data=b"{}",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                ) as reply:
                    await reply.read()
                    key = str(reply.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                key = f"error ({describe_error(exc)[:40]})"
            statuses[key] = statuses.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(100)))
        seconds = time.perf_counter() - started
    record.statuses.extend(f"{count}x {key}" for key, count in sorted(statuses.items()))
    record.details["ok"] = statuses.get("200", 0)
    record.notes.append(f"100 concurrent writes in {seconds:.1f} s")


def judge_with_token(record: Record) -> str:
    if record.details.get("ok") == 100 and record.counter_delta == 100:
        return "works"
    return "BROKEN"


# --- the list, in running order (destructive last) -------------------------------------------------------------

ATTACKS: list[AttackSpec] = [
    AttackSpec(
        "csrf-text",
        "POST increment, text/plain {} + Origin evil",
        "gateway",
        ("gateway",),
        attack_csrf_text,
        judge_write_refused,
    ),
    AttackSpec(
        "csrf-form", "POST increment, empty form body", "gateway", ("gateway",), attack_csrf_form, judge_write_refused
    ),
    AttackSpec(
        "rebind", "POST increment, Host: evil.example:8899", "gateway", ("gateway",), attack_rebind, judge_write_refused
    ),
    AttackSpec(
        "get-write",
        "GET execcontract Counter.increment",
        "gateway",
        ("gateway",),
        attack_get_write,
        judge_write_refused,
    ),
    AttackSpec(
        "raw-params",
        "eth_sendRawTransaction params [{}] [1] [true]",
        "gateway",
        ("gateway",),
        attack_raw_params,
        judge_raw_params,
    ),
    AttackSpec("bad-ids", "JSON-RPC id NaN / Infinity / 1e400", "gateway", ("gateway",), attack_bad_ids, judge_bad_ids),
    AttackSpec(
        "notification",
        "JSON-RPC notification (no id)",
        "gateway",
        ("gateway",),
        attack_notification,
        judge_notification,
    ),
    AttackSpec(
        "connect-nul", "raw CONNECT and GET /\\x00", "gateway", ("gateway",), attack_connect_nul, judge_connect_nul
    ),
    AttackSpec("big-arg", "Hello.greet with a 1 MB string", "gateway", ("gateway",), attack_big_arg, judge_big_arg),
    AttackSpec(
        "with-token",
        "100 concurrent increments with the token",
        "gateway",
        ("gateway", "token"),
        attack_with_token,
        judge_with_token,
    ),
    AttackSpec("huge-batch", "6 MB /rpc batch [1,1,...]", "gateway", ("gateway",), attack_huge_batch, judge_huge_batch),
    AttackSpec(
        "updateservers-get",
        "anonymous GET /updateservers",
        "gateway",
        ("gateway",),
        attack_updateservers_get,
        judge_updateservers,
    ),
    AttackSpec(
        "loop-call",
        "eth_call of looping init code (x1, batch x4)",
        "gateway",
        ("gateway",),
        attack_loop_call,
        judge_loop_call,
    ),
    AttackSpec(
        "half-open", "1,100 half-open connections held 15 s", "gateway", ("gateway",), attack_half_open, judge_half_open
    ),
    AttackSpec(
        "deep-utf16",
        "80,000-deep JSON as UTF-16 to /rpc and increment",
        "gateway",
        ("gateway",),
        attack_deep_utf16,
        judge_deep,
    ),
    AttackSpec(
        "deep-utf16-edge",
        "100,000-deep JSON as UTF-16 to edge /rpc",
        "edge",
        ("edge",),
        attack_deep_utf16_edge,
        judge_deep_edge,
    ),
    AttackSpec(
        "edge-admin-delay",
        "anonymous PUT edge /admin/delay 1e308",
        "edge",
        ("edge",),
        attack_edge_admin_delay,
        judge_edge_delay,
    ),
]
BY_NAME = {spec.name: spec for spec in ATTACKS}
ALIASES = {"deep": ["deep-utf16", "deep-utf16-edge"]}

# --- output ------------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def alive_text(record: dict[str, Any]) -> str:
    def one(value: Any) -> str:
        return "-" if value is None else ("up" if value else "DEAD")

    return f"{one(record.get('gateway_alive'))}/{one(record.get('edge_alive'))}"


def row_cells(record: dict[str, Any]) -> list[str]:
    delta = record.get("counter_delta")
    delta_text = "-" if delta is None else f"{delta:+d}"
    rss = f"{fmt(record.get('rss_before_mb'), 0)}->{fmt(record.get('rss_after_mb'), 0)}"
    if record.get("rss_peak_mb") is not None:
        rss += f" (pk {fmt(record.get('rss_peak_mb'), 0)})"
    stall = fmt(record.get("stall_ms"), 0)
    if record.get("stall_open"):
        stall = ">" + stall
    if record.get("health_bad"):
        stall += f" ({record['health_bad']} bad)"
    statuses = "; ".join(record.get("statuses") or []) or (
        f"skipped: {record.get('skipped')}" if record.get("skipped") else "-"
    )
    return [record["name"], record.get("verdict", ""), statuses, delta_text, rss, stall, alive_text(record)]


HEADERS = ["attack", "verdict", "status(es)", "Δcounter", "gw RSS MB", "stall ms", "gw/edge"]


def text_table(records: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    rows = [row_cells(r) for r in records]
    status_width = 70
    widths = [
        max(len(HEADERS[i]), *(len(row[i]) if i != 2 else min(len(row[i]), status_width) for row in rows))
        for i in range(len(HEADERS))
    ]
    lines = []
    if meta:
        lines.append(
            f"security probe{(' [' + meta['label'] + ']') if meta.get('label') else ''}: gateway {meta.get('gateway')}"
            f" (pid {meta.get('gateway_pid')}, nofile {meta.get('gateway_nofile')}), edge {meta.get('edge')}"
            f" (pid {meta.get('edge_pid')}), {meta.get('started')}"
        )
    lines.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(HEADERS)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        status = row[2]
        chunks = [status[i : i + status_width] for i in range(0, len(status), status_width)] or [""]
        first = [*row[:2], chunks[0], *row[3:]]
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(first)).rstrip())
        for chunk in chunks[1:]:
            lines.append((" " * (widths[0] + widths[1] + 4) + chunk).rstrip())
    lines.append("")
    lines.append("notes:")
    for record in records:
        for note in record.get("notes") or []:
            lines.append(f"  {record['name']}: {note}")
        answer = record.get("details", {}).get("answer")
        if answer:
            lines.append(f"  {record['name']}: answer {answer!r}")
    lines.append("")
    lines.append(
        "verdict: blocked = the attack failed safely; SUCCEEDS = it still works; DEGRADED = it was refused "
        "but slowed/bloated the gateway; CRASH = a process died; info = no rule to judge by."
    )
    lines.append(
        "stall = worst GET /health latency (fresh connection every 50 ms) during the attack; "
        "'>' = a poll was still waiting at the end; gw/edge = processes alive afterwards."
    )
    return "\n".join(lines)


def md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for record in records:
        lines.append("| " + " | ".join(md_escape(c) for c in row_cells(record)) + " |")
    return "\n".join(lines)


def compact(record: dict[str, Any] | None) -> str:
    if record is None:
        return "not run"
    cells = row_cells(record)
    if record.get("skipped"):
        return f"skipped ({record['skipped']})"
    stall = cells[5].replace(" (", " ms (", 1) if " (" in cells[5] else f"{cells[5]} ms"
    stall = stall.replace(" bad)", " bad polls)")
    return f"**{cells[1]}**: {cells[2]}; Δcounter {cells[3]}; RSS MB {cells[4]}; stall {stall}; gw/edge {cells[6]}"


def compare_table(before: list[dict[str, Any]], after: list[dict[str, Any]], markdown: bool) -> str:
    by_b = {r["name"]: r for r in before}
    by_a = {r["name"]: r for r in after}
    names = sorted(set(by_b) | set(by_a), key=attack_order)
    if markdown:
        lines = ["| attack | BEFORE | AFTER |", "|---|---|---|"]
        for name in names:
            lines.append(f"| {name} | {md_escape(compact(by_b.get(name)))} | {md_escape(compact(by_a.get(name)))} |")
        return "\n".join(lines)
    lines = []
    for name in names:
        lines.append(f"{name}:")
        lines.append(f"  BEFORE {compact(by_b.get(name)).replace('**', '')}")
        lines.append(f"  AFTER  {compact(by_a.get(name)).replace('**', '')}")
    return "\n".join(lines)


def load_runs(paths: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records of several saved runs, later runs replacing earlier ones attack by attack, in attack order."""
    merged: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    for path in paths:
        with open(path) as handle:
            run = json.load(handle)
        meta = meta or run.get("meta", {})
        for record in run["records"]:
            if record.get("skipped") and record["name"] in merged:
                continue  # an earlier run has real figures for it
            merged[record["name"]] = record
    return sorted(merged.values(), key=lambda r: attack_order(r["name"])), meta


def attack_order(name: str) -> tuple[int, str]:
    """Running order; a variant (``half-open@nofile=1024``) right after its attack."""
    base, _, variant = name.partition("@")
    order = [spec.name for spec in ATTACKS]
    return (order.index(base) if base in order else len(order), variant)


# --- main ------------------------------------------------------------------------------------------------------


def selected(only: str | None) -> list[AttackSpec]:
    if not only:
        return list(ATTACKS)
    names: list[str] = []
    for item in only.split(","):
        item = item.strip()
        if not item:
            continue
        expanded = ALIASES.get(item, [item])
        for name in expanded:
            if name not in BY_NAME:
                raise SystemExit(f"security_probe: unknown attack {name!r}; known: {', '.join(BY_NAME)}")
            names.append(name)
    return [spec for spec in ATTACKS if spec.name in names]  # always in the safe running order


async def run_probe(args: argparse.Namespace) -> tuple[list[Record], dict[str, Any]]:
    probe = Probe(args)
    meta = {
        "label": args.label,
        "gateway": args.gateway,
        "gateway_pid": args.gateway_pid,
        "edge": args.edge,
        "edge_pid": args.edge_pid,
        "gateway_nofile": open_files_limit(args.gateway_pid),
        "token_given": bool(args.token),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    records: list[Record] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        probe.session = session
        status, _, _, _, error = await probe.request("GET", f"{args.gateway}/health", timeout_s=5)
        if status is None and process_alive(args.gateway_pid) is not True:
            print(f"security_probe: the gateway does not answer ({error})", file=sys.stderr)
            probe.gateway_dead = True
        for spec in selected(args.only):
            print(f"[{time.strftime('%H:%M:%S')}] {spec.name} ...", file=sys.stderr, flush=True)
            record = await probe.run(spec)
            records.append(record)
            print(
                f"[{time.strftime('%H:%M:%S')}]   {record.verdict}: {'; '.join(record.statuses) or record.skipped}",
                file=sys.stderr,
                flush=True,
            )
    return records, meta


# --- --demo: start `offload demo --serve` ourselves, probe it, stop it ------------------------------------------

DEMO_LINE = re.compile(r"^\s+(?P<name>\S+)\s+pid\s+(?P<pid>\d+)\s+(?P<url>http://\S+)\s*$")
DEMO_START_LIMIT_S = 120.0


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


class Demo:
    """``<command> demo --serve --port P`` started by us, in a session of its own; its children found by PID."""

    def __init__(self, command: str, token: str, nofile: tuple[int, int] | None = None) -> None:
        self.argv = [*shlex.split(command), "demo", "--serve", "--port", str(free_loopback_port())]
        self.nofile = nofile
        self.token = token
        self.proc: asyncio.subprocess.Process | None = None
        self.children: dict[str, tuple[int, str]] = {}
        self.lines: list[str] = []
        handle, self.log_path = tempfile.mkstemp(prefix="security-probe-demo-", suffix=".log")
        os.close(handle)
        self.drainer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {**os.environ, "OFFLOAD_API_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        print(f"security_probe: starting {' '.join(self.argv)} (stderr: {self.log_path})", file=sys.stderr)
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=self._limit_files if self.nofile else None,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + DEMO_START_LIMIT_S
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            match = DEMO_LINE.match(line)
            if match:
                self.children[match["name"]] = (int(match["pid"]), match["url"].rstrip("/"))
            if line.startswith("gateway ready"):
                # Keep draining its stdout so the demo never blocks on a full pipe.
                self.drainer = asyncio.create_task(self._drain())
                return
        raise SystemExit(
            "security_probe: the demo did not become ready; its output:\n"
            + "\n".join(self.lines)
            + f"\n(stderr in {self.log_path})"
        )

    def _limit_files(self) -> None:
        """In the demo's process (before exec): its open-files limit, inherited by the edges and the gateway."""
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(Exception):
            while await self.proc.stdout.readline():
                pass

    def gateway(self) -> tuple[int, str]:
        return self.children["gateway"]

    def chain_edge(self) -> tuple[int, str]:
        """The edge started with --chain (it hosts the EVM chain); else the first edge listed."""
        edges = [(name, pid, url) for name, (pid, url) in self.children.items() if name != "gateway"]
        for _, pid, url in edges:
            if "--chain" in cmdline(pid):
                return pid, url
        return edges[0][1], edges[0][2]

    async def stop(self) -> list[str]:
        """SIGINT to the demo (it stops its children), then make sure each child PID it printed is gone."""
        report: list[str] = []
        proc = self.proc
        if proc is None:
            return report
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 40)
            except TimeoutError:
                report.append("demo did not stop on SIGINT within 40 s: SIGTERM")
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    report.append("demo did not stop on SIGTERM: SIGKILL")
                    proc.kill()
                    await proc.wait()
        report.append(f"demo pid {proc.pid} exited with {proc.returncode}")
        if proc.returncode == 0:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)  # its stderr is only kept when something went wrong
        else:
            report.append(f"the demo's stderr is in {self.log_path}")
        for name, (pid, _) in self.children.items():
            deadline = time.monotonic() + 10
            while process_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if process_alive(pid) and any("offload" in part for part in cmdline(pid)):
                report.append(f"{name} pid {pid} still running after the demo stopped: SIGKILL")
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            elif process_alive(pid):
                report.append(f"{name} pid {pid} is alive but no longer an offload process (PID reused?): left alone")
            else:
                report.append(f"{name} pid {pid} gone")
        return report


def parse_nofile(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    soft, _, hard = text.partition(":")
    try:
        limits = int(soft), int(hard or soft)
    except ValueError:
        raise SystemExit(f"security_probe: --demo-nofile takes SOFT[:HARD], got {text!r}") from None
    if not 64 <= limits[0] <= limits[1]:
        raise SystemExit(f"security_probe: --demo-nofile needs 64 <= SOFT <= HARD, got {text!r}")
    return limits


async def main_async(args: argparse.Namespace) -> int:
    demo: Demo | None = None
    stop_report: list[str] = []
    if args.demo:
        if not args.token:
            args.token = secrets.token_urlsafe(24)
        demo = Demo(args.demo, args.token, parse_nofile(args.demo_nofile))
        try:
            await demo.start()
            args.gateway_pid, gateway = demo.gateway()
            args.gateway = require_loopback(gateway, "the demo's gateway")
            args.edge_pid, edge = demo.chain_edge()
            args.edge = require_loopback(edge, "the demo's chain edge")
            print("\n".join(demo.lines), file=sys.stderr)
            records, meta = await run_probe(args)
        finally:
            stop_report = await demo.stop()
            for line in stop_report:
                print(f"security_probe: {line}", file=sys.stderr)
        meta["demo"] = {"argv": demo.argv, "processes": demo.children, "stop": stop_report, "nofile": demo.nofile}
    else:
        records, meta = await run_probe(args)
    suffixes = [f"nofile={args.demo_nofile}"] if args.demo and args.demo_nofile else []
    suffixes += [args.suffix] if args.suffix else []
    for record in records:
        for suffix in suffixes:
            record.name += f"@{suffix}"
    rows = [asdict(record) for record in records]
    if args.json:
        print(json.dumps({"meta": meta, "records": rows}, indent=2, default=str))
    elif args.markdown:
        print(markdown_table(rows))
    else:
        print(text_table(rows, meta))
    if args.save_json:
        with open(args.save_json, "w") as handle:
            json.dump({"meta": meta, "records": rows}, handle, indent=2, default=str)
    return 1 if any(record.skipped or not record.ran for record in records) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="security_probe.py",
        description="Run the attacks of issue 9 against a running `offload demo --serve` (loopback only).",
    )
    parser.add_argument("--gateway", help="gateway base URL, e.g. http://127.0.0.1:8899 (loopback only)")
    parser.add_argument(
        "--demo",
        metavar="COMMAND",
        help="start 'COMMAND demo --serve --port <free>' (e.g. '.venv/bin/offload'), probe it, stop it "
        "(takes the place of --gateway/--edge and the PIDs)",
    )
    parser.add_argument(
        "--demo-nofile",
        metavar="SOFT[:HARD]",
        help="with --demo: the demo's open-files limit (e.g. 1024, a common desktop default); "
        "attack names get '@nofile=...' appended",
    )
    parser.add_argument("--gateway-pid", type=int, help="gateway PID (RSS from /proc, alive check, fd limit)")
    parser.add_argument("--edge", help="base URL of the edge that hosts the chain (loopback only)")
    parser.add_argument("--edge-pid", type=int, help="that edge's PID (alive check)")
    parser.add_argument("--token", help="the operator's token (for the with-token row and the delay restore)")
    parser.add_argument("--only", help=f"comma-separated attacks to run: {', '.join(BY_NAME)} (or 'deep')")
    parser.add_argument("--label", default="", help="a name for this run, printed with the table (before/after)")
    parser.add_argument("--suffix", help="append '@SUFFIX' to every attack name (a variant row, e.g. another commit)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--save-json", metavar="FILE", help="also write the JSON results to FILE")
    parser.add_argument("--from-json", nargs="+", metavar="FILE", help="render saved run(s) instead of attacking")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="one BEFORE/AFTER table from saved runs (several files per side: comma-separated)",
    )
    parser.add_argument("--list", action="store_true", help="list the attacks and exit")
    parser.add_argument("--monitor-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--monitor-url", help=argparse.SUPPRESS)
    parser.add_argument("--monitor-pid", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.monitor_child:
        url = None if args.monitor_url in (None, "-") else args.monitor_url
        return asyncio.run(monitor_child(url, args.monitor_pid or None))
    if args.list:
        for spec in ATTACKS:
            print(f"{spec.name:<18} {spec.target:<8} {spec.title}")
        return 0
    if args.compare:
        before, _ = load_runs(args.compare[0].split(","))
        after, _ = load_runs(args.compare[1].split(","))
        print(compare_table(before, after, args.markdown))
        return 0
    if args.from_json:
        records, meta = load_runs(args.from_json)
        print(
            json.dumps({"meta": meta, "records": records}, indent=2)
            if args.json
            else markdown_table(records)
            if args.markdown
            else text_table(records, meta)
        )
        return 0
    if args.demo:
        return asyncio.run(main_async(args))
    if not args.gateway:
        raise SystemExit("security_probe: --gateway http://127.0.0.1:PORT (or --demo COMMAND) is required")
    args.gateway = require_loopback(args.gateway, "--gateway")
    if args.edge:
        args.edge = require_loopback(args.edge, "--edge")
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
