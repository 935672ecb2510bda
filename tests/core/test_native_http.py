"""The native upstream client against real servers on loopback: a Sanic app and raw asyncio servers
that answer in the odd ways real servers do (chunked, close-delimited, dropping kept-alive connections)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import raw_http
from raw_http import TIMEOUT_S, Handler, read_request
from sanic import Request, Sanic
from sanic.response import HTTPResponse, text
from sanic.response import json as json_response

from offload.devtools.bench.client import render, run_rounds, summarize
from offload.pytest_plugin import ServerFactory
from offload.tasks import Task
from offload.testing import RunningServer
from offload.transports import AiohttpUpstream, InvalidRequest, NativeTransport, TransportRouter, UpstreamUnreachable
from offload.transports.native import PLAIN_MESSAGES_KEPT

# The fixture: servers that answer with exactly the bytes a test writes.
raw_server = raw_http.raw_server


@pytest_asyncio.fixture
async def client() -> AsyncIterator[NativeTransport]:
    native = NativeTransport(limit=8)
    yield native
    await native.close()


def echo_app() -> Sanic:
    app = Sanic(f"echo_{id(object())}")

    @app.route("/echo", methods=["GET", "POST", "PUT", "DELETE"])
    async def echo(request: Request) -> HTTPResponse:
        return json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "body": request.body.decode(),
                "content_type": request.headers.get("content-type"),
                "custom": request.headers.get("x-custom"),
                "peer_port": request.conn_info.client_port if request.conn_info else None,
            }
        )

    @app.get("/stream")
    async def stream(request: Request) -> None:
        response = await request.respond(content_type="text/plain")
        for part in ("one ", "two ", "three"):
            await response.send(part)
        await response.eof()

    @app.route("/bye", methods=["GET", "HEAD"])
    async def bye(request: Request) -> HTTPResponse:
        return text("bye", headers={"Connection": "close"})

    @app.get("/fail")
    async def fail(request: Request) -> HTTPResponse:
        return text("broken", status=503)

    return app


@pytest_asyncio.fixture
async def echo(offload_server: ServerFactory) -> RunningServer:
    return await offload_server(echo_app())


async def get_json(client: NativeTransport, base: str, task: Task) -> dict[str, Any]:
    reply = await client.request(base, task, TIMEOUT_S)
    assert reply.status == 200 and reply.content_type == "application/json"
    return json.loads(reply.body)


async def test_get_and_post_round_trip_with_params_json_and_headers(
    client: NativeTransport, echo: RunningServer
) -> None:
    got = await get_json(client, echo.url, Task("/echo", params={"a": "1 2", "b": "x&y"}, headers={"X-Custom": "yes"}))
    assert got["method"] == "GET" and got["path"] == "/echo" and got["custom"] == "yes"
    assert got["query"] == "a=1+2&b=x%26y"
    posted = await client.request(echo.url, Task("/echo", method="POST", json={"n": [1, 2]}), TIMEOUT_S)
    answer = json.loads(posted.body)
    assert answer["method"] == "POST" and json.loads(answer["body"]) == {"n": [1, 2]}
    assert answer["content_type"] == "application/json"
    put = Task("/echo", method="PUT", body=b"\x00raw", headers={"Content-Type": "application/x-thing"})
    raw = await client.request(echo.url, put, TIMEOUT_S)
    assert json.loads(raw.body)["content_type"] == "application/x-thing"


async def test_connections_are_kept_alive_and_reused(client: NativeTransport, echo: RunningServer) -> None:
    ports = {(await get_json(client, echo.url, Task("/echo")))["peer_port"] for _ in range(5)}
    assert len(ports) == 1


async def test_connection_close_is_honoured(client: NativeTransport, echo: RunningServer) -> None:
    first = await client.request(echo.url, Task("/bye"), TIMEOUT_S)
    assert first.body == b"bye"
    # The next request may not ride on the connection the server said it would close.
    ports = {(await get_json(client, echo.url, Task("/echo")))["peer_port"] for _ in range(2)}
    assert len(ports) == 1
    assert all(not exchange.closed for idle in client._idle.values() for exchange in idle)


async def test_chunked_bodies_and_error_statuses_are_read_whole(client: NativeTransport, echo: RunningServer) -> None:
    streamed = await client.request(echo.url, Task("/stream"), TIMEOUT_S)
    assert (streamed.status, streamed.content_type, streamed.body) == (200, "text/plain", b"one two three")
    failed = await client.request(echo.url, Task("/fail"), TIMEOUT_S)
    assert (failed.status, failed.body) == (503, b"broken")


async def test_a_body_delimited_by_the_connection_end_is_complete(client: NativeTransport, raw_server) -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    base = await raw_server(http10)
    reply = await client.request(base, Task("/"), TIMEOUT_S)
    assert reply.body == b"until the end"


async def test_interim_answers_are_skipped(client: NativeTransport, raw_server) -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nfinal")
        await writer.drain()

    reply = await client.request(await raw_server(early_hints), Task("/"), TIMEOUT_S)
    assert (reply.status, reply.body) == (200, b"final")


def kept_alive_then_dropped(seen: list[bytes]) -> Handler:
    """Answers the first request on connection 0 with keep-alive, then drops the next one unanswered."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            try:
                head, _ = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            seen.append(head.split(b"\r\n", 1)[0])
            if number == 0 and len(seen) > 1:
                return  # the kept-alive connection dies just as the request arrives
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
            await writer.drain()

    return handler


async def test_a_dropped_kept_alive_connection_is_retried_once_for_idempotent_methods(
    client: NativeTransport, raw_server
) -> None:
    seen: list[bytes] = []
    base = await raw_server(kept_alive_then_dropped(seen))
    assert (await client.request(base, Task("/a"), TIMEOUT_S)).body == b"ok"
    assert (await client.request(base, Task("/b"), TIMEOUT_S)).body == b"ok"
    assert seen == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"GET /b HTTP/1.1"]


async def test_a_dropped_kept_alive_connection_is_not_retried_for_a_post(client: NativeTransport, raw_server) -> None:
    seen: list[bytes] = []
    base = await raw_server(kept_alive_then_dropped(seen))
    await client.request(base, Task("/a", method="POST", body=b"1"), TIMEOUT_S)
    with pytest.raises(UpstreamUnreachable, match="closed the connection before answering") as caught:
        await client.request(base, Task("/b", method="POST", body=b"2"), TIMEOUT_S)
    assert caught.value.never_arrived is False
    assert seen == [b"POST /a HTTP/1.1", b"POST /b HTTP/1.1"]


async def test_a_refused_connection_never_arrived(client: NativeTransport) -> None:
    # A port nobody serves: bind a listener to get a free one, then close it.
    probe = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    free = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(UpstreamUnreachable, match="cannot connect") as caught:
        await client.request(f"http://127.0.0.1:{free}", Task("/"), TIMEOUT_S)
    assert caught.value.never_arrived is True


async def test_a_silent_server_times_out_and_its_connection_is_dropped(client: NativeTransport, raw_server) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        await release.wait()

    base = await raw_server(silent)
    try:
        with pytest.raises(TimeoutError):
            await client.request(base, Task("/"), 0.2)
        assert not any(client._idle.values())
        assert not client._busy
    finally:
        release.set()


async def test_busy_connections_are_capped_at_the_limit(raw_server) -> None:
    active = 0
    peak = 0
    gate = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        nonlocal active, peak
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            active += 1
            peak = max(peak, active)
            if active >= 2:
                gate.set()
            await gate.wait()
            active -= 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    base = await raw_server(slow)
    native = NativeTransport(limit=2)
    replies = await asyncio.gather(*(native.request(base, Task("/"), TIMEOUT_S) for _ in range(6)))
    await native.close()
    assert [reply.status for reply in replies] == [200] * 6
    assert peak == 2


async def test_header_injection_is_refused(client: NativeTransport, echo: RunningServer) -> None:
    with pytest.raises(InvalidRequest, match="control characters"):
        await client.request(echo.url, Task("/echo", headers={"X-Evil": "a\r\nHost: elsewhere"}), TIMEOUT_S)


async def test_unsafe_path_characters_are_percent_encoded(client: NativeTransport, raw_server) -> None:
    seen: list[bytes] = []
    base = await raw_server(kept_alive_then_dropped(seen))
    await client.request(base, Task("/a b/ü?x=1"), TIMEOUT_S)
    assert seen == [b"GET /a%20b/%C3%BC?x=1 HTTP/1.1"]


async def test_head_requests_go_to_the_aiohttp_transport(client: NativeTransport, echo: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        router = TransportRouter(client, AiohttpUpstream(session))
        reply = await router.request(echo.url, Task("/bye", method="HEAD"), TIMEOUT_S)
    assert (reply.status, reply.body) == (200, b"")
    assert not client._idle  # the native transport never opened a connection for it


async def test_idle_connections_are_pruned_after_their_keepalive(echo: RunningServer) -> None:
    lasting = NativeTransport(keepalive_s=30.0)
    expiring = NativeTransport(keepalive_s=0.0)
    for native in (lasting, expiring):
        await native.request(echo.url, Task("/echo"), TIMEOUT_S)
    assert lasting.prune_idle() == 0 and sum(map(len, lasting._idle.values())) == 1
    assert expiring.prune_idle() == 1 and not expiring._idle
    # An expired connection is never reused: the next request opens a new one.
    first = await get_json(expiring, echo.url, Task("/echo"))
    second = await get_json(expiring, echo.url, Task("/echo"))
    assert first["peer_port"] != second["peer_port"]
    for native in (lasting, expiring):
        await native.close()


async def test_plain_request_bytes_are_built_once_and_kept_bounded(client: NativeTransport) -> None:
    origin = client._origin("http://127.0.0.1:9")
    assert origin is not None
    first = client._message(origin, Task("/square/2"))
    assert first == b"GET /square/2 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
    assert client._message(origin, Task("/square/2")) is first
    with_header = Task("/square/2", headers={"X-Trace": "1"})
    assert b"X-Trace: 1" in client._message(origin, with_header)
    for number in range(PLAIN_MESSAGES_KEPT + 10):
        client._message(origin, Task(f"/square/{number}"))
    assert len(client._plain_messages) <= PLAIN_MESSAGES_KEPT


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close-delimited"])
@pytest.mark.parametrize("which", ["native", "aiohttp"])
async def test_an_answer_larger_than_the_limit_is_refused(raw_server, framing: str, which: str) -> None:
    body = b"x" * 50_000

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        if framing == "content-length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif framing == "chunked":
            chunks = b"".join(b"%x\r\n%s\r\n" % (1000, body[i : i + 1000]) for i in range(0, len(body), 1000))
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + body)
        await writer.drain()

    base = await raw_server(big)
    async with aiohttp.ClientSession() as session:
        upstream = NativeTransport(max_body=10_000) if which == "native" else AiohttpUpstream(session, max_body=10_000)
        with pytest.raises(UpstreamUnreachable, match="larger than 10000 bytes"):
            await upstream.request(base, Task("/"), TIMEOUT_S)
        await upstream.close()
        # Within the limit, the same answer is read whole.
        roomy = AiohttpUpstream(session, max_body=len(body))
        upstream = NativeTransport(max_body=len(body)) if which == "native" else roomy
        assert (await upstream.request(base, Task("/"), TIMEOUT_S)).body == body
        await upstream.close()


async def test_the_client_benchmark_measures_each_client_against_its_own_server() -> None:
    runs = await run_rounds(requests=300, rounds=2, only=["native", "aiohttp"])
    assert {name: len(results) for name, results in runs.items()} == {"native": 2, "aiohttp": 2}
    assert all(run.requests == 300 and run.cpu_us > 0 and run.rps > 0 for results in runs.values() for run in results)
    rows = summarize(runs)
    assert rows["native"]["cpu_vs_native"] == 1.0
    assert rows["aiohttp"]["cpu_us_worst"] >= rows["aiohttp"]["cpu_us_median"]
    table = render({"requests": 300, "concurrency": 16, "rounds": 2, "loop": "asyncio", "clients": rows})
    assert "native" in table and "aiohttp" in table
