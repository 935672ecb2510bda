"""The attacks of single requests: cross-site writes, rebinding, writes over GET, odd JSON-RPC and HTTP input,
the edge's admin delay; and the operator's own writes, which must still work."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from common import REQUEST_TIMEOUT_S, describe_error, excerpt
from records import Record

if TYPE_CHECKING:
    from probe import Probe


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


INCREMENT = "/contracts/Counter/increment"

# 2-5. cross-site writes, rebinding, write over GET --------------------------------------------------------


async def send_write(probe: Probe, record: Record, method: str, path: str, **kwargs: Any) -> None:
    """One attempt at a write as a stranger would make it; its status and answer go on ``record``."""
    status, answer, _, _, error = await probe.request(method, probe.gateway + path, **kwargs)
    record.statuses.append(probe.show(status, error))
    record.details["answer"] = excerpt(answer)


async def attack_csrf_text(probe: Probe, record: Record) -> None:
    headers = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    await send_write(probe, record, "POST", INCREMENT, data=b"{}", headers=headers)


async def attack_csrf_form(probe: Probe, record: Record) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    await send_write(probe, record, "POST", INCREMENT, data=b"", headers=headers)


async def attack_rebind(probe: Probe, record: Record) -> None:
    headers = probe.json_headers(Host="evil.example:8899")
    await send_write(probe, record, "POST", INCREMENT, data=b"{}", headers=headers)


async def attack_get_write(probe: Probe, record: Record) -> None:
    await send_write(probe, record, "GET", "/contracts/execcontract?contractID=Counter&operation=increment")


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
