"""X-Request-ID: accepted when sane or made, returned (errors too), sent to the edge with every attempt, logged."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, text

from offload import READ, PluginContext, Task, envelope_response, hookimpl
from offload.log_format import JSON_NAMES
from offload.pytest_plugin import ServerFactory
from offload.request_ids import RequestIdFilter, current_request_id, with_request_id
from offload.testing import RunningServer
from offload_edge.app import EdgeConfig, create_edge_app

from conftest import Gateway, GatewayFactory

HEADER = "X-Request-ID"
GENERATED = re.compile(r"[0-9a-f]{32}")


class SeenByEdge:
    """A plugin whose route answers with the X-Request-ID the edge received."""

    @hookimpl
    def offload_routes(self, plugin: PluginContext) -> Blueprint:
        blueprint = Blueprint(f"seen_{id(plugin)}")

        @blueprint.get("/seen", ctx_access=READ)
        async def seen(request: Request) -> HTTPResponse:
            return envelope_response(await plugin.offload(Task("/request-id")))

        return blueprint


def traced_edge() -> Sanic:
    """The real edge app, plus a route that tells what X-Request-ID it was sent ("" for none)."""
    app = create_edge_app(EdgeConfig(name="edge1", processes=1))

    async def request_id(request: Request) -> HTTPResponse:
        return text(request.headers.get(HEADER, ""))

    app.add_route(request_id, "/request-id", methods=["GET"])
    return app


async def start(offload_server: ServerFactory, gateway: GatewayFactory) -> tuple[RunningServer, Gateway]:
    edge = await offload_server(traced_edge())
    document = {"plugins": {"seen": {"servers": [{"name": "edge1", "url": edge.url}]}}}
    return edge, await gateway(document, extra_plugins={"seen": SeenByEdge()})


async def raw_get(server: RunningServer, path: str, header_value: bytes | None) -> tuple[int, dict[str, str], Any]:
    """GET with an X-Request-ID of exactly these bytes (clients refuse to send some of them)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        request = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if header_value is not None:
            request += b"X-Request-ID: " + header_value + b"\r\n"
        writer.write(request + b"\r\n")
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


async def test_a_callers_id_is_returned_and_reaches_the_edge(offload_server: ServerFactory, gateway: GatewayFactory):
    _, gw = await start(offload_server, gateway)
    async with gw.client.get("/seen", headers={HEADER: "trace-42.a:b/c"}) as response:
        assert response.status == 200
        assert response.headers[HEADER] == "trace-42.a:b/c"
        body = await response.json()
    assert body["data"] == "trace-42.a:b/c"  # what the edge received


async def test_without_an_id_one_is_made_and_the_edge_gets_that_one(
    offload_server: ServerFactory, gateway: GatewayFactory
):
    _, gw = await start(offload_server, gateway)
    seen = []
    for _ in range(2):
        async with gw.client.get("/seen") as response:
            made = response.headers[HEADER]
            assert GENERATED.fullmatch(made)
            assert (await response.json())["data"] == made
            seen.append(made)
    assert seen[0] != seen[1]


@pytest.mark.parametrize(
    "sent",
    [b"a" * 129, b"has space", b"ctl\x01char", b"tab\there", b'quote"d', b"semi;colon", b"caf\xc3\xa9", b""],
    ids=["too-long", "space", "control", "tab", "quote", "semicolon", "non-ascii", "empty"],
)
async def test_an_insane_id_is_replaced(offload_server: ServerFactory, gateway: GatewayFactory, sent: bytes):
    _, gw = await start(offload_server, gateway)
    status, headers, body = await raw_get(gw.server, "/seen", sent)
    assert status == 200
    made = headers["x-request-id"]
    assert GENERATED.fullmatch(made)
    assert body["data"] == made


async def test_an_id_of_128_characters_is_kept(offload_server: ServerFactory, gateway: GatewayFactory):
    _, gw = await start(offload_server, gateway)
    longest = "x" * 128
    status, headers, body = await raw_get(gw.server, "/seen", longest.encode())
    assert (status, headers["x-request-id"], body["data"]) == (200, longest, longest)


async def test_errors_carry_the_id(offload_server: ServerFactory, gateway: GatewayFactory, edge: Any):
    _, gw = await start(offload_server, gateway)
    # A request that matches no route.
    async with gw.client.get("/no/such/route", headers={HEADER: "lost-1"}) as response:
        assert response.status == 404
        assert response.headers[HEADER] == "lost-1"
    async with gw.client.get("/no/such/route") as response:
        assert GENERATED.fullmatch(response.headers[HEADER])
    # Refused by the access guard (a state-changing route without the token).
    async with gw.client.post("/seen", headers={HEADER: "refused-1"}) as response:
        assert response.status in (401, 403, 405)
        assert response.headers[HEADER] == "refused-1"
    # The upstream fails: the error answer comes from the engine.
    down = await gateway(
        {"plugins": {"seen": {"servers": [{"name": "gone", "url": "http://127.0.0.1:9"}], "retries": 0}}},
        extra_plugins={"seen": SeenByEdge()},
    )
    async with down.client.get("/seen", headers={HEADER: "upstream-down-1"}) as response:
        assert response.status >= 500
        assert response.headers[HEADER] == "upstream-down-1"


async def test_the_edge_echoes_the_id(offload_server: ServerFactory):
    edge = await offload_server(traced_edge())
    async with aiohttp.ClientSession(base_url=edge.url) as session:
        async with session.get("/hello", headers={HEADER: "edge-echo-1"}) as response:
            assert response.headers[HEADER] == "edge-echo-1"
        async with session.get("/nothing-here", headers={HEADER: "edge-echo-2"}) as response:
            assert response.status == 404
            assert response.headers[HEADER] == "edge-echo-2"
        async with session.get("/hello", headers={HEADER: "bad id"}) as response:
            assert HEADER not in response.headers


@pytest.fixture
def traced_caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog whose handler adds request_id, as the gateway's log handlers do."""
    request_filter = RequestIdFilter()
    caplog.handler.addFilter(request_filter)
    caplog.set_level(logging.INFO, logger="offload")
    yield caplog
    caplog.handler.removeFilter(request_filter)


async def test_log_records_carry_the_id(
    offload_server: ServerFactory, gateway: GatewayFactory, traced_caplog: pytest.LogCaptureFixture
):
    _, gw = await start(offload_server, gateway)
    async with gw.client.get("/no/such/route", headers={HEADER: "logged-1"}) as response:
        assert response.status == 404
    logging.getLogger("offload.test").info("outside any request")
    refused = [record for record in traced_caplog.records if record.name == "offload.errors"]
    assert [record.request_id for record in refused] == ["logged-1"]  # type: ignore[attr-defined]
    outside = [record for record in traced_caplog.records if record.name == "offload.test"]
    assert outside[0].request_id == "-"  # type: ignore[attr-defined]


async def test_serve_log_format_json_writes_only_json_with_the_id(tmp_path: Path):
    config = tmp_path / "plugins.toml"
    config.write_text("[gateway]\nprobe_interval_s = 60\n")
    stderr_path = tmp_path / "stderr.log"
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", "0"]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*argv, "--log-format", "json", "--access-log"], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=30)
        match = re.search(r"serving on (http://\S+)", line)
        assert match, line
        url = match.group(1)
        async with aiohttp.ClientSession(base_url=url) as session:
            deadline = time.monotonic() + 30
            while True:  # listening is announced before the socket is bound
                try:
                    async with session.get("/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "the gateway did not answer /health"
                await asyncio.sleep(0.05)
            async with session.get("/no/such/route", headers={HEADER: "json-trace-1"}) as response:
                assert response.status == 404
                assert response.headers[HEADER] == "json-trace-1"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
        if process.stdout is not None:
            process.stdout.close()
    lines = [line for line in stderr_path.read_text().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {line!r}")
    for record in records:
        assert set(JSON_NAMES.values()) | {"message", "request_id"} <= set(record), record
        assert record["pid"] == process.pid
    ours = [record for record in records if record["request_id"] == "json-trace-1"]
    assert {record["logger"] for record in ours} >= {"offload.errors", "sanic.access"}, records
    assert any(record["logger"] == "sanic.access" and record["status"] == 404 for record in ours)
    assert any(record["request_id"] == "-" for record in records)  # startup, outside any request


def test_tasks_carry_the_current_id_unless_they_name_their_own() -> None:
    plain = Task("/hello")
    assert with_request_id(plain) is plain  # outside a request: nothing to add
    token = current_request_id.set("ctx-1")
    try:
        tagged = with_request_id(Task("/rpc", method="POST", body=b"{}", headers={"Content-Type": "application/json"}))
        assert tagged.headers == {"Content-Type": "application/json", HEADER: "ctx-1"}
        assert (tagged.path, tagged.method, tagged.body) == ("/rpc", "POST", b"{}")
        own = Task("/hello", headers={"x-request-id": "chosen"})
        assert with_request_id(own) is own
    finally:
        current_request_id.reset(token)
