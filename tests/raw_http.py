"""Raw HTTP servers on loopback for the upstream clients' tests: each answers with exactly the bytes a test writes.

``raw_server`` is a fixture (import it with ``# noqa: F401``); ``upstreams`` builds
either client (native or aiohttp) with the limits a test needs and closes them afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest_asyncio

from offload.transports import AiohttpUpstream, NativeTransport, Transport

TIMEOUT_S = 5.0
# A raw server's per-connection handler: (reader, writer, connection number, counted from 0).
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
CLIENTS = ("native", "aiohttp")


@dataclass
class RawServer:
    """A started raw server: its base URL and what it has seen."""

    url: str
    connections: int = 0
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)


@pytest_asyncio.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Factory: ``base_url = await raw_server(handler)``; connections are numbered from 0.

    Handlers still running when the test ends are cancelled, so none outlives it.
    """
    servers: list[tuple[asyncio.Server, RawServer]] = []

    async def start(handler: Handler) -> str:
        state = RawServer("")

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            number, state.connections = state.connections, state.connections + 1
            task = asyncio.current_task()
            assert task is not None
            state.handlers.add(task)
            try:
                await handler(reader, writer, number)
            except ConnectionError:
                pass  # the client went away mid-write: what the test asserts is on the client's side
            finally:
                state.handlers.discard(task)
                writer.close()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        servers.append((server, state))
        return state.url

    yield start
    for server, state in servers:
        server.close()
        for task in list(state.handlers):
            task.cancel()
        await asyncio.gather(*state.handlers, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request; the body by Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


async def next_request(reader: asyncio.StreamReader) -> bytes | None:
    """The next request's head, or None once the client has closed the connection."""
    try:
        head, _ = await read_request(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return head


def request_line(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


UpstreamFactory = Callable[..., Awaitable[Transport]]


@pytest_asyncio.fixture
async def upstreams() -> AsyncIterator[UpstreamFactory]:
    """Factory: ``client = await upstreams("native" | "aiohttp", limit=8, max_body=..., max_header_bytes=...)``."""
    async with AsyncExitStack() as stack:

        async def make(which: str, *, limit: int = 8, **limits: int) -> Transport:
            # The session as the engine makes it, with the connector's limit the native client's limit.
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=limit),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                )
            )
            client: Transport = AiohttpUpstream(session, **limits)
            if which == "native":
                client = NativeTransport(limit=limit, **limits)
            stack.push_async_callback(client.close)
            return client

        yield make
