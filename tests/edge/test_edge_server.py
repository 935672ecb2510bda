"""Integration tests: the real edge app served on loopback, spoken to over HTTP.

Run with ``PYTHONPATH=core:edge_server`` so ``offload.testing`` and ``offload_edge`` import.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sanic import Request, Sanic

from offload.testing import RunningServer, serve_app
from offload_edge.app import EdgeConfig, create_edge_app

EDGE_SERVER_DIR = Path(__file__).resolve().parents[2] / "edge_server"

# Generous bound for anything that polls a condition (server start-up, counters settling).
POLL_DEADLINE_S = 10.0
POLL_INTERVAL_S = 0.05


@asynccontextmanager
async def running_edge(
    app: Sanic | None = None, **config: Any
) -> AsyncIterator[tuple[RunningServer, aiohttp.ClientSession]]:
    """Serve an edge app (built from ``config`` unless given) and open a client session to it."""
    if app is None:
        app = create_edge_app(EdgeConfig(**config))
    async with serve_app(app) as server, aiohttp.ClientSession() as session:
        yield server, session


async def get_text(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


async def get_json(session: aiohttp.ClientSession, url: str, method: str = "GET") -> tuple[int, Any]:
    async with session.request(method, url) as resp:
        # resp.json() insists on an application/json content type, which is part of what we check.
        return resp.status, await resp.json()


async def wait_for_health(session: aiohttp.ClientSession, server: RunningServer, until: Any) -> Any:
    """Poll /health until ``until(body)`` holds, failing after POLL_DEADLINE_S."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        status, body = await get_json(session, server.make_url("/health"))
        assert status == 200
        if until(body):
            return body
        assert time.monotonic() < deadline, f"/health never satisfied the condition; last: {body}"
        await asyncio.sleep(POLL_INTERVAL_S)


# --------------------------------------------------------------------------- routes


@pytest.mark.asyncio
async def test_hello_and_const() -> None:
    async with running_edge() as (server, session):
        assert await get_text(session, server.make_url("/hello")) == (200, "world")
        assert await get_text(session, server.make_url("/const")) == (200, "ok")


@pytest.mark.asyncio
@pytest.mark.parametrize(("num", "expected"), [("20", "400.0"), ("1.5", "2.25"), ("-4", "16.0")])
async def test_offloading_squares(num: str, expected: str) -> None:
    async with running_edge() as (server, session):
        assert await get_text(session, server.make_url(f"/offloading/{num}")) == (200, expected)


@pytest.mark.asyncio
async def test_path_parameters_are_percent_decoded() -> None:
    async with running_edge() as (server, session):
        # float(" 20") is 20.0, as in the original Flask edge, which decoded paths too.
        assert await get_text(session, server.make_url("/offloading/%2020")) == (200, "400.0")
        status, body = await get_json(session, server.make_url("/offloading/a%20b"))
    assert (status, body) == (400, {"error": "num must be a finite number such as 20 or 1.5, got 'a b'"})


@pytest.mark.asyncio
@pytest.mark.parametrize("num", ["abc", "nan", "inf", "1e200"])
async def test_offloading_bad_input_is_400_json(num: str) -> None:
    async with running_edge() as (server, session):
        status, body = await get_json(session, server.make_url(f"/offloading/{num}"))
    assert status == 400
    assert set(body) == {"error"}
    assert "finite number" in body["error"]
    assert repr(num) in body["error"]


@pytest.mark.asyncio
async def test_getserverlists_returns_peers() -> None:
    peers = ["127.0.0.1:5001", "127.0.0.2:5002"]
    async with running_edge(peers=peers) as (server, session):
        assert await get_json(session, server.make_url("/getserverlists")) == (200, {"data": peers})


@pytest.mark.asyncio
async def test_getserverlists_defaults_to_empty() -> None:
    async with running_edge() as (server, session):
        assert await get_json(session, server.make_url("/getserverlists")) == (200, {"data": []})


@pytest.mark.asyncio
async def test_health_fields() -> None:
    async with running_edge(name="edge-a", delay_ms=1.5) as (server, session):
        await get_text(session, server.make_url("/hello"))
        status, body = await get_json(session, server.make_url("/health"))
    assert status == 200
    assert set(body) == {"status", "name", "delay_ms", "inflight", "requests", "uptime_s", "chain"}
    assert body["status"] == "ok"
    assert body["chain"] is None
    assert body["name"] == "edge-a"
    assert body["delay_ms"] == 1.5
    assert body["inflight"] == 0  # the probe itself is not counted
    assert body["requests"] == 2  # /hello and this /health
    assert body["uptime_s"] >= 0


def _matmul_reference(n: int) -> int:
    a = [[(i * n + j) % 97 for j in range(n)] for i in range(n)]
    b = [[(i + 2 * j) % 89 for j in range(n)] for i in range(n)]
    return sum(a[i][k] * b[k][j] for i in range(n) for j in range(n) for k in range(n))


def _hash_reference(rounds: int) -> str:
    digest = b"offload"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@pytest.mark.asyncio
async def test_cpu_tasks_over_http() -> None:
    expected = {
        "/tasks/nthprime/1": "2",
        "/tasks/nthprime/1000": "7919",
        "/tasks/nthprime/10000": "104729",
        "/tasks/matmul/2": "20",
        "/tasks/matmul/17": str(_matmul_reference(17)),
        "/tasks/hashchain/1": hashlib.sha256(b"offload").hexdigest(),
        "/tasks/hashchain/1000": _hash_reference(1000),
    }
    async with running_edge(processes=2) as (server, session):
        results = await asyncio.gather(*(get_text(session, server.make_url(path)) for path in expected))
    assert dict(zip(expected, results, strict=True)) == {path: (200, v) for path, v in expected.items()}


class _NoSubmitPool:
    """Stands in for the process pool to prove invalid input never reaches it."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("invalid input was submitted to the process pool")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/tasks/nthprime/abc", "n must be an integer from 1 to 200000, got 'abc'"),
        ("/tasks/nthprime/0", "n must be an integer from 1 to 200000, got '0'"),
        ("/tasks/matmul/301", "n must be an integer from 1 to 300, got '301'"),
        ("/tasks/matmul/2.5", "n must be an integer from 1 to 300, got '2.5'"),
        ("/tasks/hashchain/5000001", "rounds must be an integer from 1 to 5000000, got '5000001'"),
    ],
)
async def test_task_bad_input_is_400_before_the_pool(path: str, message: str) -> None:
    app = create_edge_app(EdgeConfig(processes=1))
    async with running_edge(app) as (server, session):
        real_pool = app.ctx.pool
        app.ctx.pool = _NoSubmitPool()
        try:
            status, body = await get_json(session, server.make_url(path))
        finally:
            app.ctx.pool = real_pool  # so after_server_stop shuts the real one down
    assert (status, body) == (400, {"error": message})


# --------------------------------------------------------------------------- errors


@pytest.mark.asyncio
async def test_unknown_route_is_404_json() -> None:
    async with running_edge() as (server, session):
        status, body = await get_json(session, server.make_url("/no/such/route"))
        task_status, _ = await get_json(session, server.make_url("/tasks/fibonacci/10"))
    assert status == 404
    assert set(body) == {"error"} and body["error"]
    assert task_status == 404


@pytest.mark.asyncio
async def test_wrong_method_is_405_json() -> None:
    async with running_edge() as (server, session), session.post(server.make_url("/hello")) as resp:
        status, body, allow = resp.status, await resp.json(), resp.headers.get("Allow", "")
    assert status == 405
    assert set(body) == {"error"}
    assert "GET" in allow


@pytest.mark.asyncio
async def test_unexpected_exception_is_500_json_without_details() -> None:
    app = create_edge_app(EdgeConfig())

    async def boom(request: Request) -> None:
        raise RuntimeError("secret internal detail")

    app.add_route(boom, "/boom")
    async with running_edge(app) as (server, session), session.get(server.make_url("/boom")) as resp:
        status, raw = resp.status, await resp.text()
        content_type = resp.content_type
    assert status == 500
    assert content_type == "application/json"
    assert "secret" not in raw and "Traceback" not in raw
    assert raw and '"error"' in raw


@pytest.mark.asyncio
async def test_inflight_does_not_leak_on_errors() -> None:
    app = create_edge_app(EdgeConfig(processes=1))

    async def boom(request: Request) -> None:
        raise RuntimeError("boom")

    app.add_route(boom, "/boom")
    async with running_edge(app) as (server, session):
        for path in ["/missing", "/offloading/abc", "/tasks/matmul/0", "/boom", "/tasks/nthprime/5"]:
            await get_text(session, server.make_url(path))
        async with session.post(server.make_url("/hello")) as resp:
            assert resp.status == 405
        body = await wait_for_health(session, server, lambda b: True)
    assert body["inflight"] == 0
    assert body["requests"] == 7


@pytest.mark.asyncio
async def test_inflight_released_when_client_disconnects_mid_request() -> None:
    async with running_edge(delay_ms=300) as (server, session):
        # The client gives up long before the 300 ms delay ends, so Sanic cancels the handler.
        with pytest.raises(TimeoutError):
            async with session.get(server.make_url("/hello"), timeout=aiohttp.ClientTimeout(total=0.05)):
                pass
        body = await wait_for_health(session, server, lambda b: b["inflight"] == 0)
    assert body["requests"] >= 2


@pytest.mark.asyncio
async def test_inflight_released_when_client_disconnects_during_task() -> None:
    async with running_edge(processes=1) as (server, session):
        # matmul(250) takes far longer than the client is willing to wait.
        impatient = aiohttp.ClientTimeout(total=0.1)
        with pytest.raises(TimeoutError):
            async with session.get(server.make_url("/tasks/matmul/250"), timeout=impatient):
                pass
        await wait_for_health(session, server, lambda b: b["inflight"] == 0)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.asyncio
async def test_delay_applies_to_every_request() -> None:
    async with running_edge(delay_ms=30) as (server, session):
        for path in ["/hello", "/health", "/missing"]:
            started = time.perf_counter()
            await get_text(session, server.make_url(path))
            assert time.perf_counter() - started >= 0.030, path


@pytest.mark.asyncio
async def test_event_loop_stays_responsive_during_heavy_task() -> None:
    finished: dict[str, float] = {}

    async with running_edge(processes=1) as (server, session):

        async def heavy() -> tuple[int, str]:
            result = await get_text(session, server.make_url("/tasks/matmul/250"))
            finished["matmul"] = time.perf_counter()
            return result

        async def light() -> tuple[int, str]:
            # Only ask once the heavy request is really being handled.
            await wait_for_health(session, server, lambda b: b["inflight"] >= 1)
            result = await get_text(session, server.make_url("/hello"))
            finished["hello"] = time.perf_counter()
            return result

        heavy_result, light_result = await asyncio.gather(heavy(), light())

    assert heavy_result == (200, str(_checksum_fast(250)))
    assert light_result == (200, "world")
    assert finished["hello"] < finished["matmul"]


def _checksum_fast(n: int) -> int:
    """sum(A @ B) via column/row sums, so the test itself stays cheap for n=250."""
    a = [[(i * n + j) % 97 for j in range(n)] for i in range(n)]
    b = [[(i + 2 * j) % 89 for j in range(n)] for i in range(n)]
    return sum(sum(a[i][k] for i in range(n)) * sum(b[k]) for k in range(n))


@pytest.mark.asyncio
async def test_two_edges_with_the_same_name_coexist() -> None:
    async with (
        running_edge(name="twin", peers=["a"]) as (one, session),
        running_edge(name="twin", peers=["b"]) as (two, _),
    ):
        assert one.app.name != two.app.name
        assert await get_json(session, one.make_url("/getserverlists")) == (200, {"data": ["a"]})
        assert await get_json(session, two.make_url("/getserverlists")) == (200, {"data": ["b"]})


def test_edge_config_validation() -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        EdgeConfig(delay_ms=-1)
    with pytest.raises(ValueError, match="processes"):
        EdgeConfig(processes=0)


def test_app_name_is_sanitised() -> None:
    app = create_edge_app(EdgeConfig(name="9 weird/name!"))
    assert app.name.startswith("edge_9_weird_name_")


# --------------------------------------------------------------------------- CLI


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EDGE_SERVER_DIR), env.get("PYTHONPATH")]))
    return env


@pytest.mark.asyncio
async def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    port = _free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "edge.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "offload_edge",
            "--host", "127.0.0.1", "--port", str(port), "--name", "cli-edge", "--processes", "1",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_cli_env(),
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            deadline = time.monotonic() + POLL_DEADLINE_S
            health: Any = None
            while health is None:
                assert proc.returncode is None, f"edge exited early:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"edge never became healthy:\n{log_path.read_text()}"
                try:
                    health = (await get_json(session, f"{base}/health"))[1]
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(POLL_INTERVAL_S)
            assert health["name"] == "cli-edge"
            assert await get_text(session, f"{base}/hello") == (200, "world")
            assert await get_text(session, f"{base}/tasks/nthprime/10") == (200, "29")
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            returncode = await asyncio.wait_for(proc.wait(), timeout=POLL_DEADLINE_S)
        except TimeoutError:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
    assert returncode == 0, log_path.read_text()


def test_cli_refuses_non_loopback_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "offload_edge", "--host", "0.0.0.0", "--port", "5999"],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "0.0.0.0" in lines[0] and "127.0.0.0/8" in lines[0]


@pytest.mark.parametrize("host", ["localhost", "::1", "10.0.0.1", "128.0.0.1"])
def test_cli_main_refuses_other_hosts_in_process(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    from offload_edge.cli import main

    assert main(["--host", host]) == 2
    assert "refusing to bind" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--port", "0"], ["--port", "70000"], ["--delay-ms", "-1"], ["--delay-ms", "nan"], ["--processes", "0"]],
)
def test_cli_rejects_bad_flags(argv: list[str]) -> None:
    from offload_edge.cli import main

    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2


def test_cli_parses_peers() -> None:
    from offload_edge.cli import build_parser

    args = build_parser().parse_args(["--peers", " 127.0.0.1:5001, ,127.0.0.2:5002 "])
    assert args.peers == ["127.0.0.1:5001", "127.0.0.2:5002"]


async def test_compute_delay_and_run_time_link_delay() -> None:
    import time

    from offload.testing import serve_app
    from offload_edge.app import EdgeConfig, create_edge_app

    token = secrets.token_urlsafe(24)
    app = create_edge_app(EdgeConfig(name="slowcpu", compute_ms=40, processes=1, admin_token=token))
    operator = {"Authorization": f"Bearer {token}"}
    async with serve_app(app) as server, aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(server.make_url("/health")) as reply:
            assert reply.status == 200
        probe_s = time.perf_counter() - started
        started = time.perf_counter()
        async with session.get(server.make_url("/offloading/3")) as reply:
            assert await reply.text() == "9.0"
        assert time.perf_counter() - started >= 0.04 > probe_s  # probes cannot see compute time
        async with session.put(server.make_url("/admin/delay"), json={"delay_ms": 30}, headers=operator) as reply:
            assert reply.status == 200
        started = time.perf_counter()
        async with session.get(server.make_url("/health")) as reply:
            assert (await reply.json())["delay_ms"] == 30
        assert time.perf_counter() - started >= 0.03
        async with session.put(server.make_url("/admin/delay"), json={"delay_ms": -1}, headers=operator) as reply:
            assert reply.status == 400
