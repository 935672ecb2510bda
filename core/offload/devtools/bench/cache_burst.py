"""The coalescing check of ``offload bench cache``: identical requests at once, and what reached the node.

:class:`CountingProxy` sits between one gateway and the node and counts the
JSON-RPC methods it forwards, so ``eth_call`` is told apart from the gateway's
own probes (``eth_blockNumber``, ``/health``). :func:`burst` opens every
connection first and only then writes every request in one go, so the requests
really are concurrent: sent one after another over fresh connections, the first
could be answered before the last left, and they would test the cache, not
coalescing.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from ...responses import CACHE_HEADER
from ..ports import free_port
from .topology import HOST

# Bounds the whole burst (connections, writes, answers): a hang fails the check instead of the bench.
BURST_TIMEOUT_S = 30.0
MAX_ANSWER_HEADER_BYTES = 64 * 1024


class CountingProxy:
    """A loopback HTTP proxy counting the JSON-RPC methods of what it forwards."""

    def __init__(self) -> None:
        self.target = ""
        self.methods: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self, target: str) -> str:
        """Serve on a free loopback port, forwarding to ``target``; returns the proxy's base URL."""
        self.target = target.rstrip("/")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BURST_TIMEOUT_S))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, HOST, port).start()
        self.url = f"http://{HOST}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def count(self, body: bytes) -> None:
        """Count the methods of a JSON-RPC body (a batch counts each, a body not JSON-RPC ``-``, no body nothing)."""
        if not body:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        calls = payload if isinstance(payload, list) else [payload]
        for call in calls:
            method = call.get("method") if isinstance(call, dict) else None
            self.methods[method if isinstance(method, str) else "-"] += 1

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        self.paths[request.path] += 1
        self.count(body)
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with self._session.request(
            request.method, self.target + request.path_qs, data=body or None, headers=headers
        ) as reply:
            answer = await reply.read()
            return web.Response(body=answer, status=reply.status, content_type=reply.content_type)


@dataclass(frozen=True)
class BurstResult:
    """What the identical requests got back: statuses and ``X-Offload-Cache`` outcomes, by count."""

    sent: int
    statuses: dict[str, int]
    outcomes: dict[str, int]
    bodies: int  # distinct answer bodies (identical requests must get one)


async def burst(url: str, count: int, body: bytes | None = None) -> BurstResult:
    """``count`` identical requests (POST ``body``, or GET without) to ``url``, one connection each, sent at once."""
    host_port = url.removeprefix("http://").split("/", 1)
    path = "/" + (host_port[1] if len(host_port) > 1 else "")
    host, port = host_port[0].rsplit(":", 1)
    head = f"GET {path} HTTP/1.1\r\nHost: {host_port[0]}\r\n"
    if body is not None:
        head = f"POST {path} HTTP/1.1\r\nHost: {host_port[0]}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n"
    request = (head + "Connection: close\r\n\r\n").encode() + (body or b"")
    async with asyncio.timeout(BURST_TIMEOUT_S):
        connections = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in range(count)))
        try:
            for _, writer in connections:  # no await in between: all leave within a few hundred µs
                writer.write(request)
            answers = await asyncio.gather(*(read_answer(reader) for reader, _ in connections))
        finally:
            for _, writer in connections:
                writer.close()
    statuses = Counter(str(status) for status, _, _ in answers)
    outcomes = Counter(outcome or "none" for _, outcome, _ in answers)
    return BurstResult(count, dict(statuses), dict(outcomes), len({answer for _, _, answer in answers}))


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, str | None, bytes]:
    """Status, ``X-Offload-Cache`` and body of one HTTP/1.1 answer sent with Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_ANSWER_HEADER_BYTES:
        raise ValueError("answer header too large")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    return status, headers.get(CACHE_HEADER.lower()), await reader.readexactly(length)


async def node_requests(session: aiohttp.ClientSession, node_url: str) -> int:
    """The node's request counter (``offload-edge``'s ``/health``), this call itself included."""
    async with session.get(node_url + "/health") as reply:
        reply.raise_for_status()
        return int((await reply.json())["requests"])
