"""The edge against hostile callers: bodies, browsers, the operator's token, limits and slow EVM calls.

Every test talks real HTTP to a real edge on a loopback ephemeral port (raw sockets where a
client library would not send the bytes an attacker sends); one starts ``offload-edge --chain``
as its own process to show a hostile body no longer kills it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest

from offload.pytest_plugin import ServerFactory
from offload.testing import RunningServer
from offload_edge import app as edge_app
from offload_edge.app import (
    DEFAULT_MAX_BODY_BYTES,
    KEEP_ALIVE_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    EdgeConfig,
    create_edge_app,
)
from offload_edge.chain.jsonrpc import MAX_DEPTH, answer_body
from offload_edge.chain.node import DEV_ACCOUNT, demo_contract_addresses
from offload_edge.cli import TOKEN_ENV, admin_token, main
from offload_edge.guard import host_allowed, same_origin

from conftest import EdgeFactory

EDGE_SERVER_DIR = Path(__file__).resolve().parents[2] / "edge_server"
TOKEN = secrets.token_urlsafe(24)
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
# An init code that loops until out of gas: JUMPDEST PUSH1 0 JUMP. An eth_call without "to" runs it.
LOOP = "0x5b600056"
# Bounded polls (never a fixed sleep to wait for something).
POLL_DEADLINE_S = 20.0
POLL_INTERVAL_S = 0.01


async def start_edge(offload_server: ServerFactory, **config: Any) -> RunningServer:
    """A real edge with ``config`` (one CPU worker), served on loopback."""
    return await offload_server(create_edge_app(EdgeConfig(processes=1, **config)))


async def request(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request; returns (status, JSON body, response)."""
    async with aiohttp.ClientSession() as session, session.request(method, url, data=body, headers=headers) as reply:
        return reply.status, await reply.json(content_type=None), reply


async def put_delay(server: RunningServer, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, answer, _ = await request(
        "PUT",
        server.make_url("/admin/delay"),
        body=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    return status, answer


async def rpc(url: str, payload: Any) -> tuple[int, Any, float]:
    """POST a JSON-RPC body (bytes as they are); returns (status, answer, seconds taken)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    started = time.perf_counter()
    status, answer, _ = await request("POST", url, body=body, headers={"Content-Type": "application/json"})
    return status, answer, time.perf_counter() - started


def call(request_id: Any, method: str, *params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}


class Listening(Protocol):
    """Where a server listens: a :class:`RunningServer` or an :class:`Address`."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class Address:
    """A server this test process did not start in-process."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def raw_exchange(server: Listening, data: bytes, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is on a new connection and read one response: (status, headers, body)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)
        }
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout_s)
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


# --------------------------------------------------------------------------- JSON-RPC bodies


def utf16_deep_body(depth: int = 100_000) -> bytes:
    """The body that killed the edge: UTF-16, nested ``depth`` deep, a quote byte hidden before the brackets.

    U+2200 is the bytes 00 22 in UTF-16-LE: read as bytes, a string opens there and hides
    every bracket after it from a byte-level nesting check, while json.loads decodes the
    UTF-16 and recurses ``depth`` levels (py_ecc raised the recursion limit to 100000).
    """
    text = '["\u2200",' + "[" * depth + '"\u2200"' + "]" * depth + "]"
    return text.encode("utf-16-le")


def dispatch_nothing(method: str, params: object) -> object:
    raise AssertionError("nothing may run")


PARSE_ERROR = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(utf16_deep_body(), id="utf16-deep"),
        pytest.param(json.dumps(call(1, "eth_chainId")).encode("utf-16"), id="utf16-with-bom"),
        pytest.param(json.dumps(call(1, "eth_chainId")).encode("utf-16-le"), id="utf16-no-bom"),
        pytest.param(json.dumps(call(1, "eth_chainId")).encode("utf-32"), id="utf32"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(call(1, "eth_chainId")).encode(), id="utf8-bom"),
        pytest.param(b'{"jsonrpc":"2.0","id":"\xe9","method":"eth_chainId"}', id="latin1-byte"),
        pytest.param(b'{"jsonrpc":"2.0","id":NaN,"method":"eth_chainId"}', id="nan-id"),
        pytest.param(b'{"jsonrpc":"2.0","id":-Infinity,"method":"eth_chainId"}', id="minus-infinity-id"),
        pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":[Infinity]}', id="infinity-param"),
        pytest.param(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), id="too-deep"),
    ],
)
def test_bodies_that_are_not_utf8_json_are_parse_errors(body: bytes) -> None:
    assert answer_body(body, dispatch_nothing) == PARSE_ERROR


def test_nesting_check_is_linear_in_the_body() -> None:
    # Quotes escaped inside one unterminated string made the old pattern backtrack from every
    # quote: 40 KB took 5 s, this 100 KB about 30 s, all under the chain lock. The brackets
    # make the scan run (a body with few of them is settled by counting).
    body = b'["' + b'\\"' * 50_000 + b"[" * (MAX_DEPTH + 1)
    started = time.perf_counter()
    assert answer_body(body, dispatch_nothing) == PARSE_ERROR
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("request_id", ["x", 7, None, 10**30])
def test_string_integer_and_null_ids_are_echoed(request_id: Any) -> None:
    answer = answer_body(json.dumps(call(request_id, "m")).encode(), lambda method, params: "ok")
    assert answer == {"jsonrpc": "2.0", "id": request_id, "result": "ok"}


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"true", b"[1]", b'{"a":1}'])
def test_other_ids_are_invalid_requests_answered_with_null(literal: bytes) -> None:
    answer = answer_body(b'{"jsonrpc":"2.0","id":' + literal + b',"method":"m"}', dispatch_nothing)
    assert answer == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
    json.dumps(answer, allow_nan=False)  # what goes back is strict JSON


def _cli_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EDGE_SERVER_DIR), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def cli_chain_edge(
    tmp_path: Path, env: dict[str, str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Address, Path]]:
    """``offload-edge --chain`` as its own process, once healthy: (process, its address, its log)."""
    port = _free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "edge.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "offload_edge", "--host", "127.0.0.1", "--port", str(port), "--chain",
            "--processes", "1",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + POLL_DEADLINE_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                assert process.returncode is None, f"edge exited early:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"edge never became healthy:\n{log_path.read_text()}"
                try:
                    async with session.get(f"{base}/health") as reply:
                        if reply.status == 200 and (await reply.json())["chain"] == "embedded":
                            break
                except aiohttp.ClientConnectionError:
                    pass  # not listening yet
                await asyncio.sleep(POLL_INTERVAL_S)
        yield process, Address("127.0.0.1", port), log_path
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=POLL_DEADLINE_S)
        except TimeoutError:
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()


async def test_cli_chain_edge_survives_hostile_requests_and_guards_admin(tmp_path: Path) -> None:
    async with cli_chain_edge(tmp_path, _cli_env(**{TOKEN_ENV: TOKEN})) as (process, address, log_path):
        base = address.url
        status, answer, _ = await rpc(f"{base}/rpc", utf16_deep_body())
        assert (status, answer) == (200, PARSE_ERROR)
        status, answer, _ = await rpc(f"{base}/rpc", call(1, "eth_blockNumber"))
        assert process.returncode is None
        assert status == 200 and answer["result"] == "0x2"

        # The token came from $OFFLOAD_API_TOKEN; 1e308 ms no longer wedges the node.
        url = f"{base}/admin/delay"
        json_type = {"Content-Type": "application/json"}
        status, answer, reply = await request("PUT", url, body=b'{"delay_ms": 1e308}', headers=json_type)
        assert status == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
        status, answer, _ = await request("PUT", url, body=b'{"delay_ms": 1e308}', headers={**json_type, **OPERATOR})
        assert status == 400 and "from 0 to 60000" in answer["error"]
        status, health, _ = await request("GET", f"{base}/health")
        assert status == 200 and health["delay_ms"] == 0

        # Targets Sanic cannot parse are answered, not dropped with two tracebacks in the log.
        for line in (b"CONNECT example.com:443", b"GET /\x00x", b"GET http://[bad"):
            status, _, body = await raw_exchange(address, line + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert status == 400 and "error" in json.loads(body)
        status, health, _ = await request("GET", f"{base}/health")
        assert status == 200 and process.returncode is None
    assert "Traceback" not in log_path.read_text()


# --------------------------------------------------------------------------- the operator's token


async def test_admin_routes_are_off_without_a_token(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server)
    status, answer = await put_delay(server, {"delay_ms": 5}, OPERATOR)
    assert status == 403 and "OFFLOAD_API_TOKEN" in answer["error"] and "--admin-token-file" in answer["error"]
    status, health, _ = await request("GET", server.make_url("/health"))
    assert health["delay_ms"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="wrong"),
        pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, id="prefix"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="other-scheme"),
        pytest.param({"Authorization": TOKEN}, id="no-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="empty"),
    ],
)
async def test_admin_routes_need_the_token(offload_server: ServerFactory, headers: dict[str, str]) -> None:
    server = await start_edge(offload_server, admin_token=TOKEN)
    status, answer, reply = await request(
        "PUT",
        server.make_url("/admin/delay"),
        body=b'{"delay_ms": 5}',
        headers={"Content-Type": "application/json", **headers},
    )
    assert status == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in answer["error"]
    status, health, _ = await request("GET", server.make_url("/health"))
    assert health["delay_ms"] == 0


async def test_admin_token_is_checked_before_the_body_is_read(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server, admin_token=TOKEN)
    # A body announced but never sent: the refusal must not wait for it.
    head = b"PUT /admin/delay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    status, headers, body = await raw_exchange(server, head + b"Content-Length: 1000000\r\n\r\n")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert "error" in json.loads(body)


@pytest.mark.parametrize(
    "payload",
    [{"delay_ms": 1e308}, {"delay_ms": 60_001}, {"delay_ms": -1}, {"delay_ms": True}, {"delay_ms": "5"}, [5], {}],
)
async def test_delay_must_be_within_a_minute(offload_server: ServerFactory, payload: Any) -> None:
    server = await start_edge(offload_server, admin_token=TOKEN)
    status, answer = await put_delay(server, payload, OPERATOR)
    assert status == 400 and answer == {"error": 'send {"delay_ms": <number from 0 to 60000>}'}


@pytest.mark.parametrize("body", [b'{"delay_ms": NaN}', b'{"delay_ms": Infinity}', b"\xff", b'{"delay_ms": 5'])
async def test_delay_bodies_that_are_not_json_numbers_are_refused(offload_server: ServerFactory, body: bytes) -> None:
    server = await start_edge(offload_server, admin_token=TOKEN)
    assert (await put_delay(server, body, OPERATOR))[0] == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_admin_put_needs_a_json_content_type(offload_server: ServerFactory, content_type: str) -> None:
    server = await start_edge(offload_server, admin_token=TOKEN)
    status, answer, _ = await request(
        "PUT",
        server.make_url("/admin/delay"),
        body=b'{"delay_ms": 5}',
        headers={"Content-Type": content_type, **OPERATOR},
    )
    assert status == 415 and "application/json" in answer["error"]
    status, health, _ = await request("GET", server.make_url("/health"))
    assert health["delay_ms"] == 0


async def test_admin_body_is_small(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server, admin_token=TOKEN)
    status, answer = await put_delay(server, b'{"delay_ms": 5, "pad": "' + b"x" * 2000 + b'"}', OPERATOR)
    assert status == 413 and "1024" in answer["error"]


async def test_an_operator_can_always_undo_a_delay(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server, admin_token=TOKEN)
    status, answer = await put_delay(server, {"delay_ms": 60_000}, OPERATOR)
    assert (status, answer) == (200, {"delay_ms": 60_000})
    # /admin skips the simulated link: with a minute of delay in force this answers at once.
    started = time.perf_counter()
    status, answer = await put_delay(
        server, {"delay_ms": 0}, {**OPERATOR, "Content-Type": "application/json; charset=utf-8"}
    )
    assert (status, answer) == (200, {"delay_ms": 0})
    assert time.perf_counter() - started < 5.0
    status, health, _ = await request("GET", server.make_url("/health"))
    assert status == 200 and health["delay_ms"] == 0


def test_edge_config_bounds() -> None:
    for field in ("delay_ms", "compute_ms"):
        for value in (-1, 60_001, float("nan"), float("inf"), 1e308):
            with pytest.raises(ValueError, match=f"{field} must be a number from 0 to 60000"):
                EdgeConfig(**{field: value})
    for token in ("short", "has spaces in it 1234567890", "non-ascii-token-\u00e9\u00e9\u00e9\u00e9\u00e9", ""):
        with pytest.raises(ValueError, match="at least 16 printable ASCII") as excinfo:
            EdgeConfig(admin_token=token)
        assert token not in str(excinfo.value) or not token
    with pytest.raises(ValueError, match="call_timeout_s"):
        EdgeConfig(call_timeout_s=0)
    with pytest.raises(ValueError, match="rpc_gas_cap"):
        EdgeConfig(rpc_gas_cap=20_999)
    with pytest.raises(ValueError, match="max_body_bytes"):
        EdgeConfig(max_body_bytes=10)
    assert TOKEN not in repr(EdgeConfig(admin_token=TOKEN))


@pytest.mark.parametrize(
    "argv",
    [
        ["--delay-ms", "60001"],
        ["--delay-ms", "1e308"],
        ["--compute-ms", "1e308"],
        ["--call-timeout-s", "0"],
        ["--call-timeout-s", "61"],
        ["--rpc-gas-cap", "100"],
        ["--max-body-bytes", "10"],
    ],
)
def test_cli_bounds(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_cli_token_comes_from_the_file_else_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {TOKEN}  \n")
    assert admin_token(str(token_file), {TOKEN_ENV: "from-the-environment-123"}) == TOKEN
    assert admin_token(None, {TOKEN_ENV: f" {TOKEN}\n"}) == TOKEN
    assert admin_token(None, {TOKEN_ENV: "  "}) is None
    assert admin_token(None, {}) is None
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(ValueError, match="is empty"):
        admin_token(str(tmp_path / "empty"), {})
    with pytest.raises(ValueError, match="cannot read"):
        admin_token(str(tmp_path / "missing"), {})


@pytest.mark.parametrize("content", [" \n", "short", "two words here and more"])
def test_cli_refuses_unusable_token_files_in_one_line(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    assert main(["--port", "5999", "--admin-token-file", str(token_file)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("offload-edge: error:")
    assert content.strip() not in lines[0] or not content.strip()  # never echo the secret


# --------------------------------------------------------------------------- browser defences


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST:5000", "127.0.0.1", "127.0.0.1:8899", "127.9.8.7:1", "[::1]", "[::1]:5000", None],
)
def test_loopback_hosts_are_allowed(host: str | None) -> None:
    assert host_allowed(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:5000",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "localhost:5000@evil.example",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "[::2]",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
        "",
        "127.0.0.1:99999",
        "127.0.0.1:5000:1",
    ],
)
def test_other_hosts_are_refused(host: str) -> None:
    assert not host_allowed(host)


def test_same_origin_compares_scheme_host_and_port() -> None:
    assert same_origin("http://127.0.0.1:5000", "http", "127.0.0.1:5000")
    assert same_origin("http://LOCALHOST", "http", "localhost:80")
    assert not same_origin("http://127.0.0.1:5001", "http", "127.0.0.1:5000")
    assert not same_origin("https://127.0.0.1:5000", "http", "127.0.0.1:5000")
    assert not same_origin("http://localhost:5000", "http", "127.0.0.1:5000")
    assert not same_origin("null", "http", "127.0.0.1:5000")
    assert not same_origin("http://127.0.0.1:5000", "http", None)


ROUTES = [("GET", "/health"), ("GET", "/tasks/nthprime/5"), ("PUT", "/admin/delay"), ("POST", "/rpc")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    ("headers", "words"),
    [
        pytest.param({"Host": "evil.example"}, "host not allowed", id="rebound-host"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, "cross-site request refused", id="cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, "cross-site request refused", id="same-site"),
        pytest.param({"Origin": "http://evil.example"}, "is not this edge", id="foreign-origin"),
        pytest.param({"Origin": "null"}, "is not this edge", id="null-origin"),
    ],
)
async def test_browser_requests_from_elsewhere_are_refused_on_every_route(
    edge: EdgeFactory, method: str, path: str, headers: dict[str, str], words: str
) -> None:
    server = await edge("guarded", chain=path == "/rpc")
    body = json.dumps(call(1, "eth_sendTransaction", {"from": DEV_ACCOUNT, "to": DEV_ACCOUNT})).encode()
    status, answer, reply = await request(
        method, server.make_url(path), body=body, headers={"Content-Type": "application/json", **headers}
    )
    assert status == 403 and reply.content_type == "application/json"
    assert set(answer) == {"error"} and words in answer["error"]
    if path == "/rpc":  # nothing ran: no transaction was mined
        status, answer, _ = await rpc(server.make_url("/rpc"), call(1, "eth_blockNumber"))
        assert answer["result"] == "0x2"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="same-origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="typed-into-the-address-bar"),
        pytest.param({"Host": "localhost"}, id="localhost"),
        pytest.param({"Host": "[::1]:80"}, id="ipv6-loopback"),
    ],
)
async def test_local_and_same_origin_requests_pass(edge: EdgeFactory, headers: dict[str, str]) -> None:
    server = await edge("guarded", chain=True)
    status, answer, _ = await request(
        "POST",
        server.make_url("/rpc"),
        body=json.dumps(call(1, "eth_chainId")).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    assert status == 200 and answer["result"].startswith("0x")


async def test_own_origin_passes_and_other_ports_do_not(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server)
    own = f"http://127.0.0.1:{server.port}"
    status, _, _ = await request("GET", server.make_url("/health"), headers={"Origin": own})
    assert status == 200
    for origin in (
        f"http://127.0.0.1:{server.port + 1}",
        f"http://localhost:{server.port}",
        f"https://127.0.0.1:{server.port}",
    ):
        status, _, _ = await request("GET", server.make_url("/health"), headers={"Origin": origin})
        assert status == 403, origin


async def test_host_edge_cases_on_the_wire(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server)
    # No Host at all (HTTP/1.0): no browser sends that.
    status, _, body = await raw_exchange(server, b"GET /health HTTP/1.0\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
    # Two Host headers: which one would a proxy or the browser have meant?
    status, _, body = await raw_exchange(
        server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n"
    )
    assert status == 403 and "host not allowed" in json.loads(body)["error"]


async def test_refusals_come_before_the_body_and_the_delay(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server, delay_ms=1_500)
    started = time.perf_counter()
    head = b"GET /tasks/nthprime/5 HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n"
    status, _, body = await raw_exchange(server, head + b"Content-Length: 3000000\r\n\r\n")
    assert status == 403 and "host not allowed" in json.loads(body)["error"]
    assert time.perf_counter() - started < 1.0  # neither the 3 MB body nor the 1.5 s delay was waited for
    # Refused requests are not counted as served.
    status, health, _ = await request("GET", server.make_url("/health"))
    assert status == 200 and health["requests"] == 1


# --------------------------------------------------------------------------- size and time limits


def test_limits_are_configured() -> None:
    app = create_edge_app(EdgeConfig())
    assert app.config.REQUEST_MAX_SIZE == DEFAULT_MAX_BODY_BYTES == 4 * 1024 * 1024
    assert app.config.REQUEST_TIMEOUT == REQUEST_TIMEOUT_S == 10
    assert app.config.KEEP_ALIVE_TIMEOUT == KEEP_ALIVE_TIMEOUT_S
    assert 30 < KEEP_ALIVE_TIMEOUT_S <= 60  # above the gateway's pool idle limit, below Sanic's 120 s


async def test_bodies_over_the_limit_are_413_without_being_read(edge: EdgeFactory) -> None:
    server = await edge("chain", chain=True)
    head = b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    status, headers, body = await raw_exchange(server, head + f"Content-Length: {4 * 1024 * 1024 + 1}\r\n\r\n".encode())
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": f"request body larger than this edge accepts ({4 * 1024 * 1024} bytes)"}


async def test_body_limit_is_configurable(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server, chain=True, max_body_bytes=2048)
    status, answer, _ = await rpc(server.make_url("/rpc"), call("x" * 1800, "eth_chainId"))
    assert status == 200 and answer["result"].startswith("0x")
    head = b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2049\r\n\r\n"
    status, _, body = await raw_exchange(server, head)
    assert status == 413 and "2048" in json.loads(body)["error"]


async def test_a_body_that_stalls_is_cut_off(offload_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_app, "REQUEST_TIMEOUT_S", 0.5)
    server = await start_edge(offload_server, admin_token=TOKEN)
    head = (
        b"PUT /admin/delay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n".encode()
    )
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        started = time.perf_counter()
        writer.write(head + b'{"delay_ms"')  # and then nothing more
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # to EOF: the edge closes the connection
        elapsed = time.perf_counter() - started
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request body not received within 0.5 s" in answer
    assert 0.4 < elapsed < 5


# --------------------------------------------------------------------------- slow EVM calls


async def test_a_looping_call_is_aborted_and_others_are_served_meanwhile(edge: EdgeFactory) -> None:
    server = await edge("chain", chain=True)
    url = server.make_url("/rpc")
    looping = asyncio.create_task(rpc(url, call(1, "eth_call", {"data": LOOP}, "latest")))
    # Wait (bounded) until the looping call is being served, then read from another client.
    deadline = time.monotonic() + POLL_DEADLINE_S
    while (await request("GET", server.make_url("/health")))[1]["inflight"] < 1:
        assert time.monotonic() < deadline and not looping.done()
        await asyncio.sleep(POLL_INTERVAL_S)
    views = await asyncio.gather(
        rpc(url, call(2, "eth_blockNumber")),
        rpc(url, call(3, "eth_call", {"to": demo_contract_addresses()["Counter"], "data": "0x6d4ce63c"}, "latest")),
    )
    status, answer, elapsed = await looping
    assert status == 200 and answer["id"] == 1
    assert answer["error"] == {"code": -32000, "message": "execution aborted (timeout = 1s)"}
    assert 0.9 < elapsed < 2.5
    (_, block, block_s), (_, count, count_s) = views
    assert block["result"] == "0x2" and int(count["result"], 16) == 0
    assert block_s < 2.0 and count_s < 2.0


async def test_a_batch_of_looping_calls_shares_one_budget(edge: EdgeFactory) -> None:
    server = await edge("chain", chain=True)
    batch = [call(i, "eth_call", {"data": LOOP}, "latest") for i in range(3)]
    batch.append(call(3, "eth_estimateGas", {"data": LOOP}))
    batch.append(call(4, "eth_blockNumber"))
    status, answers, elapsed = await rpc(server.make_url("/rpc"), batch)
    assert status == 200 and elapsed < 2.5  # one budget for the batch, not one second per call
    assert [answer["id"] for answer in answers] == [0, 1, 2, 3, 4]
    for answer in answers[:4]:
        assert answer["error"] == {"code": -32000, "message": "execution aborted (timeout = 1s)"}
    assert answers[4]["result"] == "0x2"  # what is not EVM execution still runs


async def test_looping_calls_from_many_callers_do_not_add_up_for_a_view(edge: EdgeFactory) -> None:
    server = await edge("chain", chain=True)
    url = server.make_url("/rpc")
    # Four callers, each with its own looping call: without yielding, a view behind them waits 4 s.
    loops = [asyncio.create_task(rpc(url, call(i, "eth_call", {"data": LOOP}, "latest"))) for i in range(4)]
    deadline = time.monotonic() + POLL_DEADLINE_S
    while (await request("GET", server.make_url("/health")))[1]["inflight"] < 4:
        assert time.monotonic() < deadline
        await asyncio.sleep(POLL_INTERVAL_S)
    _, block, block_s = await rpc(url, call(9, "eth_blockNumber"))
    assert block["result"] == "0x2"
    assert block_s < 2.5
    for status, answer, _ in await asyncio.gather(*loops):
        assert status == 200 and answer["error"]["message"] == "execution aborted (timeout = 1s)"


async def test_a_precompile_grinding_is_aborted(edge: EdgeFactory) -> None:
    server = await edge("chain", chain=True)
    # BLAKE2 F (address 0x09) with 10 million rounds: 10 M gas, over a minute of pure Python.
    rounds = (10_000_000).to_bytes(4, "big") + bytes(64 + 128 + 16) + b"\x01"
    blake2f = {"to": "0x" + "00" * 19 + "09", "data": "0x" + rounds.hex()}
    status, answer, elapsed = await rpc(server.make_url("/rpc"), call(1, "eth_call", blake2f, "latest"))
    assert status == 200 and answer["error"]["message"] == "execution aborted (timeout = 1s)"
    assert elapsed < 2.5
    few = {**blake2f, "data": "0x" + ((12).to_bytes(4, "big") + rounds[4:]).hex()}
    status, answer, _ = await rpc(server.make_url("/rpc"), call(2, "eth_call", few, "latest"))
    assert status == 200 and len(answer["result"]) == 2 + 128  # a small one still runs


async def test_the_chain_is_intact_after_aborted_calls(edge: EdgeFactory) -> None:
    server = await edge("chain", chain=True)
    url = server.make_url("/rpc")
    counter = demo_contract_addresses()["Counter"]
    assert "error" in (await rpc(url, call(1, "eth_call", {"data": LOOP}, "latest")))[1]
    # increment() mined from the dev account, its gas estimated under the time limit.
    send = {"from": DEV_ACCOUNT, "to": counter, "data": "0xd09de08a"}
    status, answer, _ = await rpc(url, call(2, "eth_sendTransaction", send))
    assert status == 200 and answer["result"].startswith("0x")
    status, answer, _ = await rpc(url, call(3, "eth_call", {"to": counter, "data": "0x6d4ce63c"}, "latest"))
    assert int(answer["result"], 16) == 1
    assert (await rpc(url, call(4, "eth_blockNumber")))[1]["result"] == "0x3"


# Counts 2048 down to 0 (PUSH2 0x0800; JUMPDEST PUSH1 1 SWAP1 SUB DUP1 PUSH1 3 JUMPI; STOP):
# 53 000 gas to create, then 26 per round, about 106 000 in all.
COUNTDOWN = "0x6108005b600190038060035700"


async def test_gas_above_the_cap_is_lowered_to_it(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server, chain=True, rpc_gas_cap=60_000)
    url = server.make_url("/rpc")
    # 30 M gas asked for, 60 000 given (a creation takes 53 000 up front): the loop runs out
    # of gas in milliseconds instead of timing out.
    status, answer, elapsed = await rpc(url, call(1, "eth_call", {"data": LOOP, "gas": hex(30_000_000)}, "latest"))
    assert answer["error"]["code"] == -32000 and answer["error"]["message"].startswith("out of gas")
    assert elapsed < 0.9
    status, answer, _ = await rpc(url, call(2, "eth_call", {"data": LOOP}, "latest"))  # no gas: the cap
    assert answer["error"]["message"].startswith("out of gas")
    status, answer, _ = await rpc(url, call(3, "eth_estimateGas", {"data": COUNTDOWN}))
    assert status == 200 and answer["error"] == {"code": -32000, "message": "gas required exceeds allowance (60000)"}
    status, answer, _ = await rpc(url, call(4, "eth_estimateGas", {"from": DEV_ACCOUNT, "to": DEV_ACCOUNT}))
    assert status == 200 and answer["result"] == hex(21_000)


async def test_call_timeout_is_configurable(offload_server: ServerFactory) -> None:
    server = await start_edge(offload_server, chain=True, call_timeout_s=0.25)
    status, answer, elapsed = await rpc(server.make_url("/rpc"), call(1, "eth_call", {"data": LOOP}, "latest"))
    assert status == 200 and answer["error"] == {"code": -32000, "message": "execution aborted (timeout = 250ms)"}
    assert 0.2 < elapsed < 1.5


# --------------------------------------------------------------------------- quiet under abuse


async def test_abuse_is_logged_in_one_line_at_most_and_never_with_a_traceback(
    offload_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_edge(offload_server, chain=True, admin_token=TOKEN)
    url = server.make_url("/rpc")
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        abuse = [
            rpc(url, utf16_deep_body(20_000)),
            rpc(url, b"{nope"),
            rpc(url, call(1, "eth_call", {"data": LOOP}, "latest")),
            rpc(url, call(2, "eth_sendRawTransaction", "0xdeadbeef")),
            request("GET", server.make_url("/health"), headers={"Host": "evil.example"}),
            request("GET", server.make_url("/health"), headers={"Origin": "http://evil.example"}),
            put_delay(server, {"delay_ms": 5}),
            put_delay(server, {"delay_ms": 1e308}, OPERATOR),
            request("GET", server.make_url("/tasks/nthprime/0")),
            request("DELETE", server.make_url("/health")),
        ]
        for attempt in abuse:
            await attempt
        status, _, _ = await request("GET", server.make_url("/health"))
    assert status == 200
    records = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert all(record.exc_info is None and "Traceback" not in record.getMessage() for record in records), records
    assert len(records) <= len(abuse)
    refused = [record.getMessage() for record in records if record.getMessage().startswith("refused ")]
    assert len(refused) == 3  # the foreign Host, the foreign Origin, the missing token
