"""Who may call the gateway: Host allowlist, cross-site refusal, the operator's token, limits (issue 9).

Every attack here runs against a real gateway and real edges on loopback, and
must fail safely while ``/health`` stays 200.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from offload.errors import ConfigError
from offload.security import TOKEN_ENV, is_loopback_host, load_api_token
from offload.testing import bind_loopback

from conftest import OPERATOR_HEADERS, TEST_TOKEN, EdgeFactory, Gateway, GatewayFactory, servers_table


def math_config(servers: list[dict[str, Any]], **gateway: Any) -> dict[str, Any]:
    return {"gateway": gateway, "plugins": {"math": {"servers": servers, "consider_throughput": False}}}


async def status_of(client: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with client.request(method, path, **kwargs) as reply:
        return reply.status, await reply.json()


async def assert_healthy(gw: Gateway) -> None:
    status, body, _ = await gw.get_json("/health")
    assert (status, body["status"]) == (200, "ok")


@pytest.fixture
async def math_gateway(edge: EdgeFactory, gateway: GatewayFactory) -> Gateway:
    local, remote = await edge("local"), await edge("remote")
    return await gateway(math_config(servers_table(("local", local), ("remote", remote), local="local")))


# --- browser defences: DNS rebinding and cross-site requests -----------------------------------------------


@pytest.mark.parametrize("host", ["evil.example:8899", "evil.example", "127.0.0.1.evil.example", "192.168.1.20:8899"])
async def test_a_rebound_host_is_refused_on_every_route(math_gateway: Gateway, host: str) -> None:
    for path in ("/square/3", "/health", "/servers"):
        status, body = await status_of(math_gateway.client, "GET", path, headers={"Host": host})
        assert status == 403, (path, body)
        assert "host not allowed" in body["error"]
    status, _ = await status_of(math_gateway.operator, "POST", "/updateservers", headers={"Host": host})
    assert status == 403


@pytest.mark.parametrize("host", ["127.0.0.1:8899", "localhost:8899", "LOCALHOST", "[::1]:8899", "127.5.6.7"])
async def test_loopback_names_are_answered(math_gateway: Gateway, host: str) -> None:
    status, body = await status_of(math_gateway.client, "GET", "/square/3", headers={"Host": host})
    assert (status, body["data"]) == (200, "9.0")


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:3000"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_cross_site_requests_are_refused(math_gateway: Gateway, headers: dict[str, str]) -> None:
    status, body = await status_of(math_gateway.client, "GET", "/square/3", headers=headers)
    assert status == 403
    assert "allowed_origins" in body["error"]
    status, _ = await status_of(math_gateway.operator, "POST", "/updateservers", headers=headers)
    assert status == 403
    await assert_healthy(math_gateway)


async def test_same_origin_and_listed_origins_are_answered(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local = await edge("local")
    gw = await gateway(math_config(servers_table(("local", local)), allowed_origins=["http://localhost:3000"]))
    own = f"http://127.0.0.1:{gw.server.port}"
    for headers in ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {"Origin": "http://localhost:3000"}):
        status, body = await status_of(gw.client, "GET", "/square/3", headers=headers)
        assert (status, body["data"]) == (200, "9.0"), headers
    status, _ = await status_of(gw.client, "GET", "/square/3", headers={"Origin": "http://localhost:3001"})
    assert status == 403


# --- the operator's token where state changes ----------------------------------------------------------------


async def test_pool_changes_need_the_operators_token(math_gateway: Gateway) -> None:
    before = (await math_gateway.get_json("/servers"))[1]
    attempts = [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-0123456789"}, 401),
        ({"Authorization": f"Basic {TEST_TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TEST_TOKEN}x"}, 401),
        ({**OPERATOR_HEADERS, "Content-Type": "text/plain"}, 415),
        ({**OPERATOR_HEADERS, "Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({**OPERATOR_HEADERS, "Content-Type": "multipart/form-data; boundary=x"}, 415),
    ]
    for headers, expected in attempts:
        async with math_gateway.client.post("/updateservers", headers=headers) as reply:
            assert reply.status == expected, headers
            if expected == 401:
                assert reply.headers["WWW-Authenticate"] == "Bearer"
                assert "Authorization: Bearer" in (await reply.json())["error"]
    # The original's GET form changes nothing and says how to do it.
    status, body = await status_of(math_gateway.operator, "GET", "/updateservers")
    assert status == 405
    assert "POST" in body["error"]
    # Live counters move; membership, names and the local flag must not.
    after = (await math_gateway.get_json("/servers"))[1]["pools"]["math"]["servers"]
    assert [(s["name"], s["url"], s["local"]) for s in after] == [
        (s["name"], s["url"], s["local"]) for s in before["pools"]["math"]["servers"]
    ]
    await assert_healthy(math_gateway)


async def test_without_a_configured_token_writes_are_refused_saying_how_to_configure_one(
    edge: EdgeFactory, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    local = await edge("local")
    gw = await gateway(math_config(servers_table(("local", local))), api_token=None)
    status, body = await status_of(gw.operator, "POST", "/updateservers")
    assert status == 403
    assert TOKEN_ENV in body["error"]
    # Reads need no token.
    assert (await status_of(gw.client, "GET", "/square/4"))[0] == 200


async def test_configured_servers_are_never_removed_or_renamed_by_an_update(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    sock = bind_loopback()
    dead_port = sock.getsockname()[1]
    sock.close()
    extra = await edge("extra")
    advertiser = await edge("advertiser", peers=[f"127.0.0.1:{extra.port}", f"127.0.0.1:{dead_port}"])
    local = await edge("local", peers=[f"127.0.0.1:{extra.port}"])
    servers = [
        *servers_table(("local", local), ("advertiser", advertiser), local="local"),
        {"name": "sleeping", "url": f"http://127.0.0.1:{dead_port}"},
    ]
    config = math_config(servers)
    config["plugins"]["math"]["consider_throughput"] = True  # the original rule, which needs "local"
    gw = await gateway(config)
    status, body = await status_of(gw.operator, "POST", "/updateservers?server=advertiser")
    assert status == 200, body
    described = {s["name"]: s for s in (await gw.get_json("/servers"))[1]["pools"]["math"]["servers"]}
    # The operator's three stay as configured, the dead one included; the live advertised one joins.
    assert described["local"]["local"] is True and described["local"]["configured"] is True
    assert described["sleeping"]["configured"] is True
    assert described["advertiser"]["configured"] is True
    assert described[f"127.0.0.1:{extra.port}"]["configured"] is False
    assert len(described) == 4
    # The throughput rule still finds its local server.
    assert (await gw.get_json("/square/2"))[1]["server"] == "local"


def test_the_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file-0123456789\n")
    assert load_api_token("", tmp_path, {TOKEN_ENV: "from-the-env-0123456789"}) == "from-the-env-0123456789"
    assert load_api_token("token", tmp_path, {}) == "from-the-file-0123456789"
    assert load_api_token(str(token_file), Path("/"), {TOKEN_ENV: ""}) == "from-the-file-0123456789"
    assert load_api_token("", tmp_path, {}) is None
    with pytest.raises(ConfigError, match="at least 16"):
        load_api_token("", tmp_path, {TOKEN_ENV: "short"})
    with pytest.raises(ConfigError, match="cannot read") as refused:
        load_api_token("missing", tmp_path, {})
    assert "from-the" not in str(refused.value)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("[::1]", True),
                                                ("localhost", True), ("0.0.0.0", False), ("10.0.0.1", False),
                                                ("example.com", False)])  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_serve_refuses_a_non_loopback_address_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text("[gateway]\n")
    env = {key: value for key, value in __import__("os").environ.items() if key != TOKEN_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "offload", "serve", "--config", str(config), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert TOKEN_ENV in result.stderr


# --- limits -----------------------------------------------------------------------------------------------


async def raw_exchange(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 20), timeout_s)
    finally:
        writer.close()


def operator_post_head(framing: bytes) -> bytes:
    """The head of an operator's JSON ``POST /updateservers`` whose body is framed by ``framing``."""
    return (
        b"POST /updateservers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TEST_TOKEN.encode() + b"\r\n" + framing + b"\r\n\r\n"
    )


async def test_an_oversized_body_is_refused_before_it_is_sent(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local = await edge("local")
    gw = await gateway(math_config(servers_table(("local", local)), max_body_bytes=1000))
    # Only the headers are sent: the answer must come without the gateway waiting for 100 MB.
    head = operator_post_head(b"Content-Length: 100000000")
    answer = await raw_exchange(gw.server.port, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # A chunked body that grows past the limit is cut off too.
    chunk = b"x" * 800
    chunked = (
        operator_post_head(b"Transfer-Encoding: chunked") + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 3 + b"0\r\n\r\n"
    )
    answer = await raw_exchange(gw.server.port, chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    await assert_healthy(gw)


@pytest.mark.parametrize(
    "request_line",
    [b"CONNECT example.com:443 HTTP/1.1", b"GET /\x00 HTTP/1.1", b"GET http://[::1 HTTP/1.1"],
)
async def test_unparsable_request_lines_get_a_400_and_no_traceback(
    math_gateway: Gateway, request_line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = await raw_exchange(math_gateway.server.port, request_line + b"\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"status_code":400' in answer.replace(b" ", b"")
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert errors == []
    await assert_healthy(math_gateway)


async def test_half_sent_requests_cannot_lock_callers_out(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local = await edge("local")
    gw = await gateway(math_config(servers_table(("local", local)), max_client_connections=40))
    stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # Three times the cap in half-sent requests, as a slowloris would hold them.
        for _ in range(120):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
            writer.write(b"GET /square/2 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled.append((reader, writer))
        await asyncio.gather(*(writer.drain() for _, writer in stalled))
        # A caller arriving now is answered at once.
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as fresh, fresh.get(gw.server.make_url("/square/5")) as reply:
            assert reply.status == 200
            assert (await reply.json())["data"] == "25.0"
        # The oldest stalled connections were closed to make room: the first one reads EOF.
        first_reader = stalled[0][0]
        assert await asyncio.wait_for(first_reader.read(), 5) == b""
    finally:
        for _, writer in stalled:
            writer.close()


async def test_bodies_sent_slowly_cannot_lock_callers_out(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local = await edge("local")
    gw = await gateway(math_config(servers_table(("local", local)), max_client_connections=20))
    head = operator_post_head(b"Content-Length: 1000") + b"{"
    stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(60):  # bodies promised and never finished, three times the cap
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
            writer.write(head)
            await writer.drain()
            stalled.append((reader, writer))
        status, body = await status_of(gw.client, "GET", "/square/6")
        assert (status, body["data"]) == (200, "36.0")
        assert await asyncio.wait_for(stalled[0][0].read(), 5) == b""
    finally:
        for _, writer in stalled:
            writer.close()


async def test_at_the_cap_with_every_connection_answering_a_new_one_gets_503(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    slow = await edge("slow", delay_ms=1500)
    gw = await gateway(math_config(servers_table(("slow", slow)), max_client_connections=3))
    busy = [asyncio.create_task(status_of(gw.client, "GET", f"/square/{n}")) for n in range(3)]

    def inflight() -> int:
        return sum(server["inflight"] for server in gw.app.ctx.registry.describe()["math"]["servers"])

    for _ in range(200):  # bounded poll until the three requests are being answered
        if inflight() >= 3:
            break
        await asyncio.sleep(0.01)
    assert inflight() == 3
    answer = await raw_exchange(gw.server.port, b"GET /square/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert b"too many connections" in answer
    assert [status for status, _ in await asyncio.gather(*busy)] == [200, 200, 200]


async def test_a_request_that_is_never_finished_is_timed_out(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local = await edge("local")
    gw = await gateway(math_config(servers_table(("local", local)), request_timeout_s=0.5))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        writer.write(b"GET /square/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never finished
        await writer.drain()
        started = asyncio.get_running_loop().time()
        answer = await asyncio.wait_for(reader.read(), 5)
        waited = asyncio.get_running_loop().time() - started
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited < 3


# --- edges do not decide where traffic goes ------------------------------------------------------------------


@pytest.mark.parametrize("upstream_client", ["native", "aiohttp"])
async def test_redirects_from_an_edge_are_never_followed(
    offload_server: Any, gateway: GatewayFactory, upstream_client: str
) -> None:
    from sanic import Request, Sanic, response

    hits: list[str] = []
    target = Sanic(f"redirect_target_{upstream_client}")

    @target.route("/<path:path>")
    async def anything(request: Request, path: str) -> Any:
        hits.append(path)
        return response.text("followed")

    target_server = await offload_server(target)
    rogue = Sanic(f"rogue_edge_{upstream_client}")

    @rogue.route("/<path:path>")
    async def redirect(request: Request, path: str) -> Any:
        return response.redirect(target_server.make_url("/" + path), status=302)

    rogue_server = await offload_server(rogue)
    gw = await gateway(
        {
            "gateway": {"upstream_client": upstream_client},
            "plugins": {"math": {"servers": [{"name": "rogue", "url": rogue_server.url}]}},
        }
    )
    await gw.app.ctx.engine.probe_now()
    status, body, _ = await gw.get_json("/square/3")
    assert (status, body["status_code"]) == (302, 302), body
    assert body["data"] != "followed"
    assert hits == []


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /square/2 HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n", b"403"),
        (b"GET http://evil.example/square/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"403"),
        (b"GET http://127.0.0.1/square/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"200"),
        (b"GET /square/2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nbody", b"400"),
        (b"POST /updateservers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\r\n\r\n", b"401"),
        (
            b"POST /updateservers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TEST_TOKEN.encode()[:-1]
            + b"\xa4\r\n\r\n",
            b"401",
        ),
    ],
)
async def test_requests_judged_by_one_name_and_meant_for_another_are_refused(
    math_gateway: Gateway, head: bytes, expected: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await raw_exchange(
        math_gateway.server.port, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    )
    assert answer.startswith(b"HTTP/1.1 " + expected), answer[:300]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# --- third-party routes -----------------------------------------------------------------------------------


class ThirdPartyPlugin:
    """A plugin registered directly, with one POST route declared as ``access`` (None: not declared)."""

    def __init__(self, access: str | None) -> None:
        from sanic import Blueprint, response

        from offload import hookimpl

        extra = {} if access is None else {"ctx_access": access}

        @hookimpl
        def offload_routes(plugin: Any) -> Any:
            blueprint = Blueprint(f"third_party_{id(plugin)}")

            async def change(request: Any) -> Any:
                return response.json({"changed": True})

            blueprint.add_route(change, "/change", methods=["POST"], **extra)
            return blueprint

        self.offload_routes = offload_routes


async def test_a_plugins_post_route_that_says_nothing_needs_the_token(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    local = await edge("local")
    document = {"plugins": {"third": {"servers": servers_table(("local", local))}}}
    gw = await gateway(document, extra_plugins={"third": ThirdPartyPlugin(None)})
    assert (await status_of(gw.client, "POST", "/change"))[0] == 401
    assert await status_of(gw.operator, "POST", "/change") == (200, {"changed": True})
    open_gw = await gateway(document, extra_plugins={"third": ThirdPartyPlugin("read")})
    assert await status_of(open_gw.client, "POST", "/change") == (200, {"changed": True})


def test_a_route_declaring_an_unknown_access_level_stops_startup() -> None:
    from offload.app import create_app
    from offload.settings import parse_settings

    settings = parse_settings({"plugins": {"third": {}}})
    with pytest.raises(ConfigError, match="ctx_access='admin'; use READ or OPERATOR"):
        create_app(settings, extra_plugins={"third": ThirdPartyPlugin("admin")}, api_token=TEST_TOKEN)
