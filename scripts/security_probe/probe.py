"""The probe: requests to the demo, and running each attack with the monitor, the counter and the verdict."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import aiohttp
from attacks import selected
from common import (
    ATTACK_HARD_LIMIT_S,
    COUNTER_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    SETTLE_MAX_S,
    describe_error,
    require_loopback,
)
from monitor import MonitorProcess
from procfs import how_it_ended, open_files_limit, process_alive, rss_mb
from records import Record, Skip

if TYPE_CHECKING:
    from attacks import AttackSpec


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
