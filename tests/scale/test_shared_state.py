"""Issue 12 end to end: workers and replicas that share state, with nothing lost or doubled.

Every gateway here is a real ``offload serve`` process; edges and the chain
run in this process (or as processes, where a test kills one); Redis is a real
redis-server on a loopback port of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from offload.devtools.processes import ManagedProcess, ProcessGroup
from offload_edge.chain.node import DEV_PRIVATE_KEY, demo_contract_addresses

from conftest import OPERATOR_HEADERS, EdgeFactory
from replicas import Replicas, free_port, get_json, post_json, server_view

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"


def contracts_table(chain_url: str) -> str:
    contracts = ", ".join(
        f'{{ name = "{name}", address = "{address}", artifact = "offload_edge:chain/artifacts/{name}.json" }}'
        for name, address in demo_contract_addresses().items()
    )
    return (
        "[plugins.contracts]\n"
        'rpc_path = "/rpc"\n'
        f'servers = [{{ name = "chain", url = "{chain_url}" }}]\n'
        f"contracts = [{contracts}]\n"
    )


def math_table(local_url: str, remote_url: str, *, expected: int = 25, window_s: float = 1.0) -> str:
    return (
        "[plugins.math]\n"
        f"consider_throughput = true\nexpected_throughput = {expected}\nwindow_s = {window_s}\n"
        f'servers = [{{ name = "local", url = "{local_url}", local = true }}, '
        f'{{ name = "remote", url = "{remote_url}" }}]\n'
    )


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[ProcessGroup]:
    processes = ProcessGroup(tmp_path)
    try:
        yield processes
    finally:
        await asyncio.to_thread(processes.stop_all)  # in-process edges keep serving meanwhile


def write_config(tmp_path: Path, *tables: str, gateway: str = "probe_interval_s = 60\n") -> Path:
    config = tmp_path / "plugins.toml"
    config.write_text("[gateway]\n" + gateway + "".join(tables))
    return config


async def counter_value(session: aiohttp.ClientSession, url: str) -> int:
    status, body = await get_json(session, url + "/contracts/Counter/get")
    assert status == 200, body
    return int(body["data"])


async def hundred_increments(urls: list[str]) -> tuple[list[tuple[int, Any]], int, int]:
    """100 concurrent increments spread over ``urls`` (fresh connections): the answers, the counter before and after."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, headers=OPERATOR_HEADERS, timeout=timeout) as session:
        before = await counter_value(session, urls[0])
        replies = await asyncio.gather(
            *(post_json(session, urls[index % len(urls)] + "/contracts/Counter/increment", {}) for index in range(100))
        )
        after = await counter_value(session, urls[-1])
    return replies, before, after


async def chain_replicas(edge: EdgeFactory, group: ProcessGroup, tmp_path: Path, redis_url: str) -> tuple[str, str]:
    """A chain edge and two replicas, "a" and "b", sharing ``redis_url``, with the contracts plugin signing."""
    chain = await edge("chain", chain=True)
    replicas = Replicas(group, write_config(tmp_path, contracts_table(chain.url)), env={KEY_ENV: DEV_PRIVATE_KEY})
    first = await replicas.start("a", "--state", redis_url, "--replica", "a")
    return first, await replicas.start("b", "--state", redis_url, "--replica", "b")


def assert_all_ok(replies: list[tuple[int, Any]]) -> None:
    failures = [(status, body.get("error")) for status, body in replies if status != 200]
    assert not failures, f"{len(failures)} of {len(replies)} failed, e.g. {failures[:3]}"


async def test_two_workers_hundred_increments_raise_the_counter_by_exactly_100(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path
) -> None:
    chain = await edge("chain", chain=True)
    config = write_config(tmp_path, contracts_table(chain.url))
    replicas = Replicas(group, config, env={KEY_ENV: DEV_PRIVATE_KEY})
    url = await replicas.start("gateway", workers=2)  # no state setting: shared memory between the workers
    replies, before, after = await hundred_increments([url])
    assert_all_ok(replies)
    assert after - before == 100
    async with aiohttp.ClientSession() as session:
        _, health = await get_json(session, url + "/health")
    assert health["state"]["backend"] == "shared-memory"


async def test_an_idempotency_key_holds_across_workers(edge: EdgeFactory, group: ProcessGroup, tmp_path: Path) -> None:
    chain = await edge("chain", chain=True)
    config = write_config(tmp_path, contracts_table(chain.url))
    replicas = Replicas(group, config, env={KEY_ENV: DEV_PRIVATE_KEY})
    url = await replicas.start("gateway", workers=2)
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request: either worker may answer
    async with aiohttp.ClientSession(connector=connector, headers=OPERATOR_HEADERS) as session:
        before = await counter_value(session, url)

        async def write(key: str) -> tuple[int, Any, str | None]:
            headers = {"Idempotency-Key": key}
            async with session.post(url + "/contracts/Counter/increment", json={}, headers=headers) as reply:
                return reply.status, await reply.json(), reply.headers.get("Idempotent-Replayed")

        answers = await asyncio.gather(*(write("same-key") for _ in range(8)))
        # Eight at once over fresh connections land on both workers: one write, one answer for all.
        assert {status for status, _, _ in answers} == {200}
        assert len({body["data"]["tx_hash"] for _, body, _ in answers}) == 1
        assert [replayed for _, _, replayed in answers].count("true") == 7
        assert await counter_value(session, url) == before + 1


async def test_two_replicas_sharing_redis_hundred_increments_raise_the_counter_by_exactly_100(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path, redis_server: Any
) -> None:
    first, second = await chain_replicas(edge, group, tmp_path, redis_server.url)
    replies, before, after = await hundred_increments([first, second])  # alternating: both replicas write
    assert_all_ok(replies)
    assert after - before == 100
    # 100 different transactions, each mined once.
    assert len({body["data"]["tx_hash"] for _, body in replies}) == 100
    assert {body["server"] for _, body in replies} == {"chain"}


async def test_local_throughput_rule_holds_across_two_replicas(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path, redis_server: Any
) -> None:
    local, remote = await edge("local"), await edge("remote")
    config = write_config(tmp_path, math_table(local.url, remote.url, expected=25, window_s=1.0))
    replicas = Replicas(group, config)
    urls = [await replicas.start(name, "--state", redis_server.url, "--replica", name) for name in ("a", "b")]
    rate, seconds = 300, 3
    sent: list[tuple[float, str]] = []
    failures: list[int] = []

    async def one(session: aiohttp.ClientSession, index: int, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))  # pacing, not synchronisation
        started = time.perf_counter()
        status, body = await get_json(session, f"{urls[index % 2]}/square/{index}")
        if status != 200:
            failures.append(status)
        else:
            sent.append((started, body["server"]))

    start = time.perf_counter() + 0.2
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        await asyncio.gather(*(one(session, index, start + index / rate) for index in range(rate * seconds)))
    assert not failures
    local_times = sorted(at for at, server in sent if server == "local")
    busiest = max(sum(1 for other in local_times if at <= other < at + 1.0) for at in local_times)
    assert busiest <= 26, f"{busiest} local requests in one 1-s window across two replicas (limit 25)"
    # The rule is not just refusing: the device ran its share, and the rest went remote.
    assert len(local_times) >= 25 * seconds
    assert len(sent) - len(local_times) > rate * seconds / 2


async def doomed_and_steady(edge: EdgeFactory, group: ProcessGroup) -> tuple[ManagedProcess, str]:
    """An edge process the test may kill ("doomed") and one that stays ("steady"), and a math table with both."""
    steady = await edge("steady")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "offload_edge", "--port", str(port), "--name", "doomed", "--processes", "1"]
    doomed = group.start("doomed", argv, url + "/health")
    await group.wait_healthy(doomed, timeout_s=60)
    table = (
        '[plugins.math]\npolicy = "round_robin"\n'
        f'servers = [{{ name = "doomed", url = "{url}" }}, {{ name = "steady", url = "{steady.url}" }}]\n'
    )
    return doomed, table


async def test_an_edge_ejected_by_replica_a_is_excluded_on_replica_b_within_two_seconds(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path, redis_server: Any
) -> None:
    doomed, table = await doomed_and_steady(edge, group)
    # Probes every 60 s: only A's requests can find the edge dead, and B can only learn it from A.
    config = write_config(tmp_path, table)
    replicas = Replicas(group, config)
    a = await replicas.start("a", "--state", redis_server.url, "--replica", "a")
    b = await replicas.start("b", "--state", redis_server.url, "--replica", "b")
    async with aiohttp.ClientSession() as session:
        _, before = await get_json(session, b + "/servers")
        assert server_view(before, "math", "doomed")["available"] is True
        b_probed_at = server_view(before, "math", "doomed")["decided_at"]
        group.kill(doomed)
        killed_at = time.monotonic()
        for index in range(20):  # only A sends; one of them finds the edge gone
            status, _ = await get_json(session, f"{a}/square/{index}")
            assert status == 200
        seen_after = None
        while time.monotonic() - killed_at < 5:
            _, view = await get_json(session, b + "/servers")
            doomed_on_b = server_view(view, "math", "doomed")
            if not doomed_on_b["available"]:
                seen_after = time.monotonic() - killed_at
                break
            await asyncio.sleep(0.05)
    assert seen_after is not None and seen_after <= 2.0, f"B saw the ejection after {seen_after} s"
    assert doomed_on_b["decided_by"] == "a"
    assert "reported down by a" in doomed_on_b["excluded_because"]
    assert doomed_on_b["decided_at"] != b_probed_at
    assert view["health_sharing"]["adopted"] >= 1


async def test_an_edge_ejected_by_one_worker_is_excluded_by_every_worker(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path
) -> None:
    doomed, table = await doomed_and_steady(edge, group)
    config = write_config(tmp_path, table)  # probes every 60 s: only requests find the edge dead
    url = await Replicas(group, config).start("gateway", workers=2)
    group.kill(doomed)
    # One keep-alive connection: every request reaches the same worker, which alone finds the edge dead.
    async with aiohttp.ClientSession() as session:
        for index in range(10):
            status, _ = await get_json(session, f"{url}/square/{index}")
            assert status == 200
    excluded_on: dict[str, str] = {}
    deadline = time.monotonic() + 5
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        while len(excluded_on) < 2 and time.monotonic() < deadline:
            _, view = await get_json(fresh, url + "/servers")
            doomed_view = server_view(view, "math", "doomed")
            # The worker that found it dead excludes it at once and names itself once it has shared it.
            if not doomed_view["available"] and doomed_view["decided_by"] is not None:
                excluded_on[view["health_sharing"]["replica"]] = doomed_view["decided_by"]
            await asyncio.sleep(0.02)
    assert len(excluded_on) == 2, f"only {sorted(excluded_on)} excluded the dead edge within 5 s"
    # One worker decided, the other adopted its verdict.
    assert len(set(excluded_on.values())) == 1 and next(iter(excluded_on.values())) in excluded_on


async def test_redis_outage_mid_load_degrades_then_recovers(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path, redis_server: Any
) -> None:
    local, remote, chain = await edge("local"), await edge("remote"), await edge("chain", chain=True)
    config = write_config(
        tmp_path, math_table(local.url, remote.url, expected=25, window_s=1.0), contracts_table(chain.url)
    )
    replicas = Replicas(group, config, env={KEY_ENV: DEV_PRIVATE_KEY})
    urls = [await replicas.start(name, "--state", redis_server.url, "--replica", name) for name in ("a", "b")]
    statuses: list[int] = []
    stop = asyncio.Event()

    async def math_load(session: aiohttp.ClientSession, worker: int) -> None:
        index = 0
        while not stop.is_set():
            status, _ = await get_json(session, f"{urls[(worker + index) % 2]}/square/{index}")
            statuses.append(status)
            index += 1

    async with aiohttp.ClientSession(headers=OPERATOR_HEADERS) as session:
        load = [asyncio.create_task(math_load(session, worker)) for worker in range(8)]
        try:
            status, body = await post_json(session, urls[0] + "/contracts/Counter/increment", {})
            assert status == 200, body
            served_before = len(statuses)
            await asyncio.to_thread(redis_server.stop)
            refusals = [await post_json(session, url + "/contracts/Counter/increment", {}) for url in urls]
            for status, body in refusals:
                assert status == 503, body
                assert "shared state unavailable" in body["error"]
            _, health = await get_json(session, urls[0] + "/health")
            assert health["status"] == "degraded" and health["state"]["degraded_reason"]
            await asyncio.to_thread(redis_server.restart)
            recovered = None
            deadline = time.monotonic() + 15
            while recovered is None and time.monotonic() < deadline:
                status, body = await post_json(session, urls[1] + "/contracts/Counter/increment", {})
                if status == 200:
                    recovered = body
                else:
                    assert status == 503, body  # refused with a reason until Redis answers again
                    await asyncio.sleep(0.1)
            assert recovered is not None, "writes did not recover within 15 s of Redis restarting"
            health = await settled_health(session, urls[1])
            assert health["status"] == "ok", health
        finally:
            stop.set()
            await asyncio.gather(*load)
    assert len(statuses) > served_before > 0
    assert set(statuses) == {200}, f"{sum(1 for s in statuses if s != 200)} math requests failed"
    assert health["state"]["outages"] >= 1 and health["state"]["fallbacks"] >= 1


async def settled_health(session: aiohttp.ClientSession, url: str, within_s: float = 10.0) -> Any:
    """``/health`` once it says "ok" (a busy machine may time one Redis call out right after a restart)."""
    deadline = time.monotonic() + within_s
    while True:
        _, health = await get_json(session, url + "/health")
        if health["status"] == "ok" or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.1)


def test_an_unreachable_state_url_at_startup_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[plugins.math]\nservers = []\n")
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", "0", "--state", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0] and "--start-degraded" in lines[0]
    assert "secret" not in done.stderr


async def test_start_degraded_serves_on_local_state_and_says_so(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path
) -> None:
    local, remote = await edge("local"), await edge("remote")
    config = write_config(tmp_path, math_table(local.url, remote.url))
    replicas = Replicas(group, config)
    url = await replicas.start("a", "--state", f"redis://127.0.0.1:{free_port()}/0", "--start-degraded")
    async with aiohttp.ClientSession() as session:
        status, body = await get_json(session, url + "/square/7")
        assert status == 200 and float(body["data"]) == 49
        _, health = await get_json(session, url + "/health")
    assert health["status"] == "degraded"
    assert "127.0.0.1" in health["warnings"][0]


async def test_an_idempotency_key_holds_across_replicas_sharing_redis(
    edge: EdgeFactory, group: ProcessGroup, tmp_path: Path, redis_server: Any
) -> None:
    a, b = await chain_replicas(edge, group, tmp_path, redis_server.url)
    increment = "/contracts/Counter/increment"
    async with aiohttp.ClientSession(headers=OPERATOR_HEADERS) as session:
        before = await counter_value(session, a)

        async def write(url: str, key: str, payload: Any = None) -> tuple[int, Any, str | None]:
            async with session.post(url + increment, json=payload or {}, headers={"Idempotency-Key": key}) as reply:
                return reply.status, await reply.json(), reply.headers.get("Idempotent-Replayed")

        # A retry that the balancer sends to the other replica gets the first answer back.
        first = await write(a, "key-1")
        retry = await write(b, "key-1")
        assert first[0] == 200 and first[2] is None
        assert retry[0] == 200 and retry[2] == "true"
        assert retry[1]["data"]["tx_hash"] == first[1]["data"]["tx_hash"]
        # The same key sent to both at once: one write, one answer for both.
        racing = await asyncio.gather(write(a, "key-2"), write(b, "key-2"))
        assert [status for status, _, _ in racing] == [200, 200]
        assert racing[0][1]["data"]["tx_hash"] == racing[1][1]["data"]["tx_hash"]
        assert sorted(replayed or "" for _, _, replayed in racing) == ["", "true"]
        # The same key for a different request, on either replica: refused.
        async with session.post(
            b + "/contracts/Counter/incrementBy", json={"amount": 5}, headers={"Idempotency-Key": "key-1"}
        ) as reply:
            assert reply.status == 422
        assert await counter_value(session, b) == before + 2
