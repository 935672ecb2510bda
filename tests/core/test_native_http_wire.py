"""Both upstream clients against crafted bytes on the wire: framing, bytes after an answer, interim
answers, limits, refused requests, retries and a busy pool.

Each raw server answers with exactly the bytes a test writes and counts the
connections it is given; where aiohttp handles a case the same way, the case
runs against both clients, to show the engine's behaviour does not depend on
which one it uses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

import pytest
import raw_http
from raw_http import CLIENTS, TIMEOUT_S, Handler, UpstreamFactory, next_request, read_request, request_line

from offload.tasks import Task
from offload.transports import InvalidRequest, UpstreamAnswerRefused, UpstreamReply, UpstreamUnreachable
from offload.transports.native import NativeTransport, Origin, _Exchange

# The fixtures: servers that answer with exactly the bytes a test writes, and either client.
raw_server = raw_http.raw_server
upstreams = raw_http.upstreams
RawServerFactory = Callable[[Handler], Awaitable[str]]

OK_HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
FRESH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfresh"


class Seen:
    """What a raw server was asked: request lines per connection."""

    def __init__(self) -> None:
        self.requests: dict[int, list[bytes]] = {}

    def add(self, number: int, head: bytes) -> None:
        self.requests.setdefault(number, []).append(request_line(head))

    @property
    def connections(self) -> int:
        return len(self.requests)

    def total(self) -> int:
        return sum(map(len, self.requests.values()))


def answering(seen: Seen, first: bytes, then: bytes = FRESH) -> Handler:
    """Connection 0 answers its first request with ``first``; every other request gets ``then``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while (head := await next_request(reader)) is not None:
            seen.add(number, head)
            writer.write(first if number == 0 and len(seen.requests[0]) == 1 else then)
            await writer.drain()

    return handler


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition`` holds: for effects of bytes the loop has yet to deliver."""
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.001)
    assert condition(), what


# -- framing ---------------------------------------------------------------------------------

FRAMINGS = {
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", True),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", True),
    "chunked with trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\nX-Checksum: 1\r\n\r\n",
        True,
    ),
    "close-delimited": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world", False),
    "HTTP/1.0 close-delimited": (b"HTTP/1.0 200 OK\r\n\r\nhello world", False),
    "HTTP/1.0 keep-alive": (
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 11\r\n\r\nhello world",
        True,
    ),
}


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("which", CLIENTS)
async def test_each_framing_is_read_whole_and_kept_alive_only_when_it_may_be(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, framing: str, which: str
) -> None:
    answer, keeps_alive = FRAMINGS[framing]
    seen = Seen()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while (head := await next_request(reader)) is not None:
            seen.add(number, head)
            writer.write(answer)
            await writer.drain()
            if not keeps_alive:
                return  # the end of the connection ends the body

    base = await raw_server(handler)
    client = await upstreams(which)
    for _ in range(3):
        reply = await client.request(base, Task("/"), TIMEOUT_S)
        assert (reply.status, reply.body) == (200, b"hello world")
    assert seen.total() == 3
    assert seen.connections == (1 if keeps_alive else 3)


@pytest.mark.parametrize("which", CLIENTS)
async def test_a_body_cut_short_by_a_reset_is_not_an_answer(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    client = await upstreams(which)
    with pytest.raises(UpstreamUnreachable, match=r"(?i)closed|disconnect|payload"):
        await client.request(await raw_server(handler), Task("/"), TIMEOUT_S)


# -- bytes after an answer --------------------------------------------------------------------

EXTRA = {
    "content-length then a 503": OK_HELLO + b"HTTP/1.1 503 Service Unavailable\r\nContent-Le",
    "content-length then a whole answer": OK_HELLO + b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy",
    "content-length then CRLF": OK_HELLO + b"\r\n",
    "content-length then one byte": OK_HELLO + b"H",
    "chunked then a 503": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    b"HTTP/1.1 503 Service Unavailable\r\n",
    "chunked then CRLF": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\r\n",
    "204 then a 503": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n",
    "304 with a body": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello",
    "100 Continue, 200, then a 503": b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HELLO + b"HTTP/1.1 503 Busy\r\n",
}


@pytest.mark.parametrize("case", EXTRA)
async def test_bytes_after_an_answer_close_its_connection(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, case: str
) -> None:
    seen = Seen()
    base = await raw_server(answering(seen, EXTRA[case]))
    client = await upstreams("native")
    first = await client.request(base, Task("/first"), TIMEOUT_S)
    # The answer itself reaches its caller whole...
    expected = (204, b"") if case.startswith("204") else (304, b"") if case.startswith("304") else (200, b"hello")
    assert (first.status, first.body) == expected
    # ...but what came behind it is never taken for the next request's answer.
    second = await client.request(base, Task("/second"), TIMEOUT_S)
    assert (second.status, second.body) == (200, b"fresh")
    assert seen.requests == {0: [b"GET /first HTTP/1.1"], 1: [b"GET /second HTTP/1.1"]}


async def test_bytes_arriving_while_idle_close_the_connection(
    raw_server: RawServerFactory, upstreams: UpstreamFactory
) -> None:
    # Native only: aiohttp keeps such bytes and hands them to the next request as its answer.
    seen = Seen()
    junk_ready, hung_up = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while (head := await next_request(reader)) is not None:
            seen.add(number, head)
            writer.write(OK_HELLO if number == 0 else FRESH)
            await writer.drain()
            if number == 0:
                await junk_ready.wait()
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                if await reader.read(1) == b"":
                    hung_up.set()  # the client closed the connection on its own
                return

    base = await raw_server(handler)
    client = await upstreams("native")
    assert isinstance(client, NativeTransport)
    assert (await client.request(base, Task("/first"), TIMEOUT_S)).body == b"hello"
    idle = [exchange for pool in client._idle.values() for exchange in pool]
    assert len(idle) == 1 and not idle[0].closed
    junk_ready.set()  # only now, with the answer delivered and the connection idle
    await asyncio.wait_for(hung_up.wait(), TIMEOUT_S)
    assert idle[0].closed
    second = await client.request(base, Task("/second"), TIMEOUT_S)
    assert (second.status, second.body) == (200, b"fresh")
    assert seen.requests == {0: [b"GET /first HTTP/1.1"], 1: [b"GET /second HTTP/1.1"]}


# -- interim and bodiless answers -------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["one segment", "segment per answer"])
@pytest.mark.parametrize("which", CLIENTS)
async def test_interim_answers_are_skipped_before_the_real_one(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str, split: bool
) -> None:
    seen = Seen()
    parts = [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", OK_HELLO]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while (head := await next_request(reader)) is not None:
            seen.add(number, head)
            for part in parts if split else [b"".join(parts)]:
                writer.write(part)
                await writer.drain()

    base = await raw_server(handler)
    client = await upstreams(which)
    for _ in range(2):
        reply = await client.request(base, Task("/"), TIMEOUT_S)
        assert (reply.status, reply.content_type, reply.body) == (200, "text/plain", b"hello")
    assert seen.connections == 1


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("which", CLIENTS)
async def test_204_and_304_have_no_body_whatever_their_content_length(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str, status: int
) -> None:
    seen = Seen()
    answer = b"HTTP/1.1 %d Nothing\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n" % status
    base = await raw_server(answering(seen, answer, then=answer))
    client = await upstreams(which)
    for _ in range(3):
        reply = await client.request(base, Task("/"), TIMEOUT_S)
        assert (reply.status, reply.body) == (status, b"")
    assert seen.connections == 1 and seen.total() == 3


# -- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", CLIENTS)
async def test_an_endless_header_line_fails_fast_at_the_header_limit(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str
) -> None:
    sent = 0
    gone = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        try:
            while sent < 64 << 20:  # a bound for the test; a working limit stops it long before
                writer.write(b"a" * 16384)
                sent += 16384
                await writer.drain()
        except ConnectionError:
            pass
        gone.set()

    base = await raw_server(endless)
    client = await upstreams(which, max_header_bytes=65536)
    started = time.perf_counter()
    with pytest.raises(UpstreamAnswerRefused, match=re.escape("65536 bytes ([gateway] max_response_header_bytes)")):
        await client.request(base, Task("/"), 30.0)
    elapsed = time.perf_counter() - started
    await asyncio.wait_for(gone.wait(), TIMEOUT_S)  # the client hung up: the server could write no more
    assert sent < 4 << 20, f"{sent} bytes of header were taken before refusing"
    assert elapsed < 10.0


@pytest.mark.parametrize("which", CLIENTS)
async def test_one_header_larger_than_the_limit_in_one_segment_is_refused(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str
) -> None:
    seen = Seen()
    answer = b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 5000 + b"\r\nContent-Length: 2\r\n\r\nok"
    base = await raw_server(answering(seen, answer))
    client = await upstreams(which, max_header_bytes=4096)
    with pytest.raises(UpstreamAnswerRefused, match=re.escape("4096 bytes ([gateway] max_response_header_bytes)")):
        await client.request(base, Task("/"), TIMEOUT_S)
    # The refused answer's connection is not reused.
    assert (await client.request(base, Task("/"), TIMEOUT_S)).body == b"fresh"
    assert seen.connections == 2


async def test_many_headers_are_capped_by_their_total(raw_server: RawServerFactory, upstreams: UpstreamFactory) -> None:
    fields = b"".join(b"X-Field-%03d: %s\r\n" % (index, b"v" * 100) for index in range(100))
    seen = Seen()
    base = await raw_server(answering(seen, b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"))
    client = await upstreams("native", max_header_bytes=8192)
    with pytest.raises(UpstreamAnswerRefused, match="max_response_header_bytes"):
        await client.request(base, Task("/"), TIMEOUT_S)
    # Within the limit, the same answer is fine.
    roomy = await upstreams("native", max_header_bytes=len(fields) + 100)
    assert (await roomy.request(base, Task("/"), TIMEOUT_S)).body == b"fresh"


@pytest.mark.parametrize("which", CLIENTS)
async def test_a_body_announced_larger_than_the_limit_is_refused_on_its_headers(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str
) -> None:
    hung_up = asyncio.Event()

    async def announcing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        # Headers only: a client that waited for the body would time out instead of refusing.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        await writer.drain()
        if await reader.read(1) == b"":
            hung_up.set()

    client = await upstreams(which, max_body=10_000)
    with pytest.raises(UpstreamAnswerRefused, match=re.escape("10000 bytes ([gateway] max_response_bytes)")):
        await client.request(await raw_server(announcing), Task("/"), TIMEOUT_S)
    await asyncio.wait_for(hung_up.wait(), TIMEOUT_S)


@pytest.mark.parametrize("framing", ["chunked", "close-delimited"])
@pytest.mark.parametrize("which", CLIENTS)
async def test_an_unannounced_body_is_refused_once_it_passes_the_limit(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str, framing: str
) -> None:
    written = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        nonlocal written
        await read_request(reader)
        chunked = framing == "chunked"
        writer.write(b"HTTP/1.1 200 OK\r\n" + (b"Transfer-Encoding: chunked\r\n" if chunked else b"") + b"\r\n")
        while written < 64 << 20:  # endless, but for the test's bound
            writer.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n" if chunked else b"x" * 0x4000)
            written += 0x4000
            await writer.drain()

    client = await upstreams(which, max_body=100_000)
    with pytest.raises(UpstreamAnswerRefused, match=re.escape("100000 bytes ([gateway] max_response_bytes)")):
        await client.request(await raw_server(flood), Task("/"), TIMEOUT_S)
    assert written < 8 << 20


# -- what comes back that is not an answer ----------------------------------------------------


@pytest.mark.parametrize("which", CLIENTS)
async def test_an_unsolicited_protocol_switch_is_refused_cleanly(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str, caplog: pytest.LogCaptureFixture
) -> None:
    hung_up = asyncio.Event()

    async def switching(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"
        )
        await writer.drain()
        if await reader.read(1) == b"":
            hung_up.set()

    client = await upstreams(which)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(UpstreamAnswerRefused, match="101 Switching Protocols"):
            await client.request(await raw_server(switching), Task("/"), TIMEOUT_S)
        await asyncio.wait_for(hung_up.wait(), TIMEOUT_S)  # the connection was closed
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "answer", [b"HTTP/1.1 abc OK\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"]
)
@pytest.mark.parametrize("which", CLIENTS)
async def test_a_malformed_answer_is_refused(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str, answer: bytes
) -> None:
    seen = Seen()
    client = await upstreams(which)
    with pytest.raises(UpstreamAnswerRefused):
        await client.request(await raw_server(answering(seen, answer)), Task("/"), TIMEOUT_S)


# -- requests that are refused before anything is sent ----------------------------------------

REFUSED = {
    "method with a request inside": Task("/x", method="GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET"),
    "method with a space": Task("/x", method="GET /admin"),
    "empty method": Task("/x", method=""),
    "header name with a trailing space": Task(
        "/x", method="POST", body=b"1", headers={"Transfer-Encoding ": "chunked"}
    ),
    "header name with a colon": Task("/x", headers={"X-A: b\r\nX-C": "d"}),
    "header value with CRLF": Task("/x", headers={"X-Evil": "a\r\nHost: elsewhere"}),
    "header value with a control character": Task("/x", headers={"X-Bell": "a\x07b"}),
    "header value with NUL": Task("/x", headers={"X-Nul": "a\x00b"}),
    "header value beyond ASCII": Task("/x", headers={"X-Latin": "café"}),
}


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("which", CLIENTS)
async def test_malformed_requests_are_refused_before_anything_is_sent(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str, case: str
) -> None:
    seen = Seen()
    base = await raw_server(answering(seen, FRESH))
    client = await upstreams(which)
    with pytest.raises(InvalidRequest) as caught:
        await client.request(base, REFUSED[case], TIMEOUT_S)
    assert isinstance(caught.value, ValueError)  # what the engine's callers have always been given
    # Nothing was sent: the next (valid) request is the first the server sees.
    assert (await client.request(base, Task("/ok"), TIMEOUT_S)).body == b"fresh"
    assert seen.requests == {0: [b"GET /ok HTTP/1.1"]}


@pytest.mark.parametrize("which", CLIENTS)
async def test_what_is_valid_goes_out_as_given(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str
) -> None:
    heads: list[bytes] = []

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while (head := await next_request(reader)) is not None:
            heads.append(head)
            writer.write(FRESH)
            await writer.drain()

    base = await raw_server(recording)
    client = await upstreams(which)
    await client.request(base, Task(""), TIMEOUT_S)
    await client.request(base, Task("/t", method="m-search", headers={"X-Tab": "a\tb", "X-Sign": "~!"}), TIMEOUT_S)
    assert request_line(heads[0]) == b"GET / HTTP/1.1"
    assert request_line(heads[1]) == b"M-SEARCH /t HTTP/1.1"
    assert b"\r\nX-Tab: a\tb\r\n" in heads[1] and b"\r\nX-Sign: ~!\r\n" in heads[1]


# -- retries on a dropped kept-alive connection -----------------------------------------------


def second_request_on_connection_0(seen: Seen, reply: bytes) -> Handler:
    """Connection 0: answers its first request, then answers its second with ``reply`` and hangs up.

    Every other connection answers ``fresh``.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while (head := await next_request(reader)) is not None:
            seen.add(number, head)
            if number == 0 and len(seen.requests[0]) == 2:
                writer.write(reply)
                await writer.drain()
                return
            writer.write(OK_HELLO if number == 0 else FRESH)
            await writer.drain()

    return handler


HALF_AN_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal"
# (what connection 0 answers to its second request before hanging up, that request, resent?)
RETRIES = {
    "half an answer": (HALF_AN_ANSWER, Task("/b"), False),
    "nothing, for a task marked not idempotent": (b"", Task("/b", idempotent=False), False),
    "nothing, for a POST": (b"", Task("/b", method="POST", body=b"2"), False),
    "nothing, for an idempotent task": (b"", Task("/b"), True),
}


@pytest.mark.parametrize(
    ("case", "which"),
    # aiohttp resends any GET on its own after "nothing": it cannot know the task is not idempotent.
    [(case, which) for case in RETRIES for which in CLIENTS if (case, which) != (list(RETRIES)[1], "aiohttp")],
)
async def test_a_request_is_sent_again_only_when_nothing_came_back_and_the_task_allows_it(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, case: str, which: str
) -> None:
    reply, task, resent = RETRIES[case]
    seen = Seen()
    base = await raw_server(second_request_on_connection_0(seen, reply))
    client = await upstreams(which)
    assert (await client.request(base, Task("/a"), TIMEOUT_S)).body == b"hello"
    line = b"%s /b HTTP/1.1" % task.method.encode()
    if resent:
        # Once more, on a fresh connection.
        assert (await client.request(base, task, TIMEOUT_S)).body == b"fresh"
        assert seen.requests == {0: [b"GET /a HTTP/1.1", line], 1: [line]}
    else:
        with pytest.raises(UpstreamUnreachable):
            await client.request(base, task, TIMEOUT_S)
        assert seen.requests == {0: [b"GET /a HTTP/1.1", line]}


async def test_a_fresh_connection_dropped_unanswered_is_not_retried(
    raw_server: RawServerFactory, upstreams: UpstreamFactory
) -> None:
    seen = Seen()

    async def dropping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        head = await next_request(reader)
        assert head is not None
        seen.add(number, head)

    client = await upstreams("native")
    with pytest.raises(UpstreamUnreachable, match="before answering"):
        await client.request(await raw_server(dropping), Task("/a"), TIMEOUT_S)
    assert seen.requests == {0: [b"GET /a HTTP/1.1"]}


# -- a busy pool ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", CLIENTS)
async def test_concurrent_requests_each_get_their_own_answer(
    raw_server: RawServerFactory, upstreams: UpstreamFactory, which: str
) -> None:
    open_now = peak = 0

    async def echo_id(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while (head := await next_request(reader)) is not None:
                ident = request_line(head).split(b" ")[1].rsplit(b"/", 1)[1]
                body = json.dumps({"id": int(ident)}).encode()
                if int(ident) % 2:
                    # Odd ones chunked, in two writes: framing differs from one answer to the next.
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    await writer.drain()
                    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body)
                    )
                await writer.drain()
        finally:
            open_now -= 1

    base = await raw_server(echo_id)
    client = await upstreams(which, limit=4)
    replies = await asyncio.gather(*(client.request(base, Task(f"/id/{n}"), TIMEOUT_S) for n in range(200)))
    assert [json.loads(reply.body)["id"] for reply in replies] == list(range(200))
    assert all(reply.content_type == "application/json" for reply in replies)
    assert peak <= 4


# -- every way an answer can be cut into segments ---------------------------------------------


class FakeTransport:
    """Just enough of a transport for one connection's protocol, fed by the test instead of a socket."""

    def __init__(self) -> None:
        self.closing = False
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> None:
        return None


def sent_exchange(**limits: int) -> tuple[_Exchange, asyncio.Future[UpstreamReply]]:
    """A connection's protocol on a fake transport, a request sent: the test feeds the answer's bytes."""
    exchange = _Exchange(Origin("127.0.0.1", 9, b"127.0.0.1:9"), **limits)
    exchange.connection_made(FakeTransport())  # type: ignore[arg-type]
    return exchange, exchange.send(b"GET / HTTP/1.1\r\n\r\n", asyncio.get_running_loop())


SEGMENTED = {
    "content-length": OK_HELLO,
    "chunked": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    "chunked with a trailer": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
    "interim first": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK_HELLO,
    "204": b"HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n\r\n",
}
AFTER = {
    "nothing": b"",
    "an answer": b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
    "CRLF": b"\r\n",
    "a byte": b"X",
}


@pytest.mark.parametrize("after", AFTER)
@pytest.mark.parametrize("answer", SEGMENTED)
async def test_every_segmentation_of_an_answer_is_read_the_same(answer: str, after: str) -> None:
    # Whatever the network does to an answer's bytes, the answer is the same, and the connection
    # is kept exactly when nothing follows it.
    wire = SEGMENTED[answer] + AFTER[after]
    expected = (204, b"") if answer == "204" else (200, b"hello")
    cuts = [(i,) for i in range(1, len(wire))] + [(i, i + 1) for i in range(1, len(wire) - 1)]
    for cut in cuts:
        exchange, waiter = sent_exchange()
        bounds = [0, *cut, len(wire)]
        for start, end in itertools.pairwise(bounds):
            exchange.data_received(wire[start:end])
        assert waiter.done(), cut
        reply = waiter.result()
        assert (reply.status, reply.content_type, reply.body) == (*expected[:1], "text/plain", expected[1]), cut
        assert exchange.closed == bool(AFTER[after]), cut


async def test_a_request_that_gives_up_waiting_for_a_connection_leaves_the_slots_whole(
    raw_server: RawServerFactory, upstreams: UpstreamFactory
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while (head := await next_request(reader)) is not None:
            if request_line(head) == b"GET /slow HTTP/1.1":
                arrived.set()
                await release.wait()
            writer.write(FRESH)
            await writer.drain()

    base = await raw_server(slow_first)
    client = await upstreams("native", limit=1)
    assert isinstance(client, NativeTransport)
    slow = asyncio.create_task(client.request(base, Task("/slow"), TIMEOUT_S))
    await asyncio.wait_for(arrived.wait(), TIMEOUT_S)
    with pytest.raises(TimeoutError):
        await client.request(base, Task("/waits"), 0.1)  # the one connection is busy until its deadline
    release.set()
    assert (await slow).body == b"fresh"
    assert (await client.request(base, Task("/after"), TIMEOUT_S)).body == b"fresh"
    assert client._free_slots == 1

    # A waiter handed a slot just as it is cancelled passes the slot on instead of losing it.
    client._free_slots = 0
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(client._wait_for_slot(loop, loop.time() + TIMEOUT_S))
    await eventually(lambda: len(client._slot_waiters) == 1, "the task waits for a slot")
    client._release_slot()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert client._free_slots == 1 and not client._slot_waiters


ENDLESS = {
    "a header line": b"HTTP/1.1 200 OK\r\nX-Endless: ",
    "a status line": b"HTTP/1.1 200 ",
    "a trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: ",
    "a chunk extension": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=",
}


@pytest.mark.parametrize("where", ENDLESS)
async def test_endless_framing_is_refused_within_a_segment_of_the_header_limit(where: str) -> None:
    exchange, waiter = sent_exchange(max_header_bytes=65536)
    exchange.data_received(ENDLESS[where])
    segments = 0
    while not waiter.done() and segments < 1000:
        exchange.data_received(b"a" * 16384)
        segments += 1
    with pytest.raises(UpstreamAnswerRefused, match=re.escape("65536 bytes ([gateway] max_response_header_bytes)")):
        waiter.result()
    assert segments <= 65536 // 16384 + 1
    assert exchange.closed
