"""Edges that die or hang under load: no idempotent request fails, and requests move within seconds.

The edges that fail are real ``offload-edge`` processes, killed (SIGKILL) or
stopped (SIGSTOP) while a real gateway serves concurrent clients; the others
are in-process edges. A raw server that accepts and never answers stands for a
hung edge where a process is not needed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from offload import OffloadError, Task
from offload.devtools.processes import ManagedProcess, ProcessGroup
from offload.testing import bind_loopback, serve_app
from offload_edge.app import EdgeConfig, create_edge_app

from conftest import EdgeFactory, Gateway, GatewayFactory, servers_table
from engines import engine_for

EdgeProcessFactory = Callable[[str], Awaitable[tuple[ManagedProcess, str]]]


@pytest_asyncio.fixture
async def edge_process(tmp_path: Path) -> AsyncIterator[tuple[ProcessGroup, EdgeProcessFactory]]:
    """(group, factory): ``process, url = await factory("name")`` starts an offload-edge process."""
    group = ProcessGroup(tmp_path)

    async def start(name: str) -> tuple[ManagedProcess, str]:
        sock = bind_loopback()
        port = sock.getsockname()[1]
        sock.close()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "offload_edge", "--port", str(port), "--name", name, "--processes", "1"]
        process = group.start(name, argv, url + "/health")
        await group.wait_healthy(process, timeout_s=30)
        return process, url

    try:
        yield group, start
    finally:
        for process in group.processes:
            group.resume(process)  # a stopped process cannot act on SIGTERM
        await asyncio.to_thread(group.stop_all)


@dataclass
class Load:
    """Closed-loop clients on ``/square/N``: each sends its next request when the last one answered."""

    gateway: Gateway
    clients: int
    outcomes: list[tuple[float, float, int, str]] = field(default_factory=list)  # start, end, status, server
    pending: dict[int, float] = field(default_factory=dict)  # client -> start of its request in flight
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.clients)
        async with aiohttp.ClientSession(base_url=self.gateway.server.url, connector=connector) as session:
            await asyncio.gather(*(self._client(session, index) for index in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession, index: int) -> None:
        number = index * 1_000_000
        while not self.stopping.is_set():
            number += 1
            started = self.pending[index] = time.perf_counter()
            async with session.get(f"/square/{number}", timeout=aiohttp.ClientTimeout(total=30)) as reply:
                body = await reply.json()
            server = body.get("server", "") if reply.status == 200 else str(body.get("error", ""))[:160]
            self.outcomes.append((started, time.perf_counter(), reply.status, server))
            del self.pending[index]

    def answered_by(self, server: str) -> int:
        return sum(1 for *_, status, name in self.outcomes if status == 200 and name == server)

    def failures(self) -> list[tuple[int, str]]:
        return [(status, what) for _, _, status, what in self.outcomes if status != 200]

    def after(self, moment: float) -> int:
        return sum(1 for start, *_ in self.outcomes if start > moment)

    def settled_since(self, moment: float, answered: int) -> bool:
        """Every request in flight at ``moment`` has ended, and ``answered`` more started after it did."""
        return all(start > moment for start in self.pending.values()) and self.after(moment) >= answered


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait (bounded) for ``condition``, checking every few milliseconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def server_state(gw: Gateway, name: str) -> dict[str, object]:
    _, body, _ = await gw.get_json("/servers")
    return next(server for server in body["pools"]["math"]["servers"] if server["name"] == name)


async def start_gateway_over(gateway: GatewayFactory, edge: EdgeFactory, victim_url: str, **options: object) -> Gateway:
    """Two in-process edges 3 ms away and the victim process (no delay: the best, so it gets traffic)."""
    near, far = await edge("near", delay_ms=3), await edge("far", delay_ms=3)
    servers = [*servers_table(("near", near), ("far", far)), {"name": "victim", "url": victim_url}]
    # Probes rarely run: what moves the requests is the stall watch, or the failure itself.
    document = {"gateway": {"probe_interval_s": 600}, "plugins": {"math": {"servers": servers, **options}}}
    return await gateway(document)


async def strike_under_load(
    gw: Gateway, clients: int, warm_up: int, strike: Callable[[], None], settle: int
) -> tuple[Load, float]:
    """Closed-loop load; once the victim answered ``warm_up`` requests and holds some, ``strike`` it.

    Returns the load and when the strike came, once the gateway has taken the victim out, every
    request in flight by then has ended, and ``settle`` more were sent (all bounded in time).
    """
    load = Load(gw, clients=clients)
    running = asyncio.create_task(load.run())
    try:
        await until(lambda: load.answered_by("victim") >= warm_up, 20, "the victim to take traffic")
        while not (await server_state(gw, "victim"))["inflight"]:
            await asyncio.sleep(0)
        strike()
        struck_at = time.perf_counter()
        deadline = time.monotonic() + 15
        while (await server_state(gw, "victim"))["available"]:
            assert time.monotonic() < deadline, "the gateway never took the victim out"
            await asyncio.sleep(0.01)
        out_at = time.perf_counter()
        await until(lambda: load.settled_since(out_at, settle), 15, "the requests caught by the strike to end")
    finally:
        load.stopping.set()
        await running
    return load, struck_at


def longest_wait_since(load: Load, moment: float) -> float:
    """The longest any request waited after ``moment`` (from ``moment`` for those already in flight)."""
    return max(end - max(start, moment) for start, end, *_ in load.outcomes if end > moment)


@pytest.mark.parametrize("policy", ["min_latency", "p2c_ewma"])
async def test_requests_on_a_hung_edge_move_to_others_within_seconds(
    policy: str, edge: EdgeFactory, gateway: GatewayFactory, edge_process: tuple[ProcessGroup, EdgeProcessFactory]
) -> None:
    group, start_edge_process = edge_process
    victim, victim_url = await start_edge_process("victim")
    gw = await start_gateway_over(gateway, edge, victim_url, policy=policy, timeout_s=10.0)
    load, stopped_at = await strike_under_load(gw, 40, 50, lambda: group.pause(victim), 400)
    assert load.failures() == []
    # Requests caught there were moved, not left to the 10 s timeout: the watch saw silence (0.5 s)
    # and a failed health check (1 s).
    assert longest_wait_since(load, stopped_at) < 4.0
    _, body, _ = await gw.get_json("/servers")
    counters = body["pools"]["math"]["counters"]
    assert counters["retries"] >= 1 and counters["moved_off_hung_servers"] >= 1


@pytest.mark.parametrize("clients", [16, 64])
async def test_a_killed_edge_fails_no_request(
    clients: int, edge: EdgeFactory, gateway: GatewayFactory, edge_process: tuple[ProcessGroup, EdgeProcessFactory]
) -> None:
    group, start_edge_process = edge_process
    victim, victim_url = await start_edge_process("victim")
    gw = await start_gateway_over(gateway, edge, victim_url)
    load, killed_at = await strike_under_load(gw, clients, 200, lambda: group.kill(victim), 300)
    assert load.failures() == []
    assert longest_wait_since(load, killed_at) < 4.0


async def hung_server(received: list[bytes]) -> asyncio.Server:
    """Accepts connections, reads what arrives, answers nothing (its /health neither)."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                received.append(chunk)
        finally:
            writer.close()

    return await asyncio.start_server(on_connection, "127.0.0.1", 0)


async def test_a_write_on_a_hung_server_is_never_moved_or_sent_twice(edge: EdgeFactory) -> None:
    backup = await edge("backup", delay_ms=2)
    received: list[bytes] = []
    server = await hung_server(received)
    hung_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with engine_for([("hung", hung_url), ("backup", backup.url)], policy="always_first") as engine:
            hung = engine.registry.pool("p").find("hung")
            hung.probe_ok = True  # as if it hung after its last good probe
            read = engine.offload("p", Task("/hello"))
            write = engine.offload("p", Task("/hello", method="POST", idempotent=False, timeout_s=2.5))
            moved, not_moved = await asyncio.gather(read, write, return_exceptions=True)
    finally:
        server.close()
        await server.wait_closed()
    assert not isinstance(moved, BaseException) and moved.server == "backup"
    assert isinstance(not_moved, OffloadError) and not_moved.status == 504 and not_moved.server == "hung"
    requests = b"".join(received)
    assert requests.count(b"POST /hello") == 1 and requests.count(b"GET /hello") == 1


async def test_a_slow_server_that_answers_its_health_check_keeps_its_requests(edge: EdgeFactory) -> None:
    # Every task takes 1.2 s there (past stall_after_s), but /health answers at once.
    slow_app = create_edge_app(EdgeConfig(name="slow", compute_ms=1200, processes=1))
    async with (
        serve_app(slow_app) as slow,
        engine_for([("slow", slow.url)], policy="always_first") as engine,
    ):
        result = await engine.offload("p", Task("/offloading/3"))
        state = engine.registry.pool("p").find("slow")
    assert (result.server, result.data) == ("slow", "9.0") and result.time > 1.0
    assert state.available and engine.counters("p")["moved_off_hung_servers"] == 0


@pytest.mark.parametrize("upstream_client", ["native", "aiohttp"])
async def test_a_task_that_cannot_be_one_request_is_a_400_and_costs_no_server_anything(
    upstream_client: str, edge: EdgeFactory
) -> None:
    only = await edge("only")
    async with engine_for([("only", only.url)], policy="always_first", upstream_client=upstream_client) as engine:
        bad_tasks = [
            Task("/hello", method="GET /admin HTTP/1.1\r\nHost: x\r\n\r\nGET"),
            Task("/hello", headers={"Transfer-Encoding ": "chunked"}),
            Task("/hello", headers={"X-Note": "one\r\nX-Injected: two"}),
        ]
        for task in bad_tasks:
            with pytest.raises(OffloadError) as refused:
                await engine.offload("p", task)
            assert refused.value.status == 400 and "the task cannot be sent" in refused.value.message
        state = engine.registry.pool("p").find("only")
        assert (state.failures, state.breaker.consecutive_failures) == (0, 0)
        assert (await engine.offload("p", Task("/hello"))).data == "world"


async def test_an_answer_the_gateway_refuses_is_retried_on_another_server(edge: EdgeFactory) -> None:
    backup = await edge("backup")

    async def switching_protocols(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(switching_protocols, "127.0.0.1", 0)
    rogue_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with engine_for([("rogue", rogue_url), ("backup", backup.url)], policy="always_first") as engine:
            engine.registry.pool("p").find("rogue").probe_ok = True  # its /health is no better
            result = await engine.offload("p", Task("/hello"))
            rogue = engine.registry.pool("p").find("rogue")
    finally:
        server.close()
        await server.wait_closed()
    assert (result.server, result.data) == ("backup", "world")
    assert "answer refused" in (rogue.last_error or "") and "101" in (rogue.last_error or "")
