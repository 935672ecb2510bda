"""Gateway and edge processes for scale-out tests: real ``offload serve`` replicas and workers on loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from offload.devtools.processes import ManagedProcess, ProcessGroup
from offload.testing import bind_loopback

from conftest import TEST_TOKEN


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    sock = bind_loopback()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class Replicas:
    """Gateway processes started from one plugins.toml (``offload serve``), each on its own port."""

    def __init__(self, group: ProcessGroup, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.group = group
        self.config = config
        self.env = {"OFFLOAD_API_TOKEN": TEST_TOKEN, **(env or {})}
        self.urls: list[str] = []
        self.processes: list[ManagedProcess] = []

    def argv(self, port: int, extra: Sequence[str] = ()) -> list[str]:
        return [sys.executable, "-m", "offload", "serve", "--config", str(self.config), "--port", str(port), *extra]

    async def start(self, name: str, *extra: str, workers: int = 1) -> str:
        """Start one gateway (``extra``: more ``offload serve`` options); returns its URL once healthy."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = self.argv(port, [*extra, "--workers", str(workers)])
        process = self.group.start(name, argv, url + "/health", env=self.env)
        await self.group.wait_healthy(process, timeout_s=60)
        if workers > 1:
            await wait_for_workers(url, workers)
        self.urls.append(url)
        self.processes.append(process)
        return url


async def wait_for_workers(url: str, workers: int, timeout_s: float = 30.0) -> None:
    """Until ``workers`` different worker PIDs answered ``/health`` (bounded), over fresh connections."""
    seen: set[int] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        while len(seen) < workers and loop.time() < deadline:
            async with session.get(url + "/health") as reply:
                seen.add((await reply.json())["worker_pid"])
            await asyncio.sleep(0.01)
    if len(seen) < workers:
        raise AssertionError(f"only {len(seen)} of {workers} workers answered {url}/health within {timeout_s:g} s")


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as reply:
        return reply.status, await reply.json(content_type=None)


async def post_json(session: aiohttp.ClientSession, url: str, payload: Any, **kwargs: Any) -> tuple[int, Any]:
    async with session.post(url, json=payload, **kwargs) as reply:
        return reply.status, await reply.json(content_type=None)


def server_view(servers_body: Mapping[str, Any], pool: str, name: str) -> dict[str, Any]:
    """One server's entry in a ``GET /servers`` answer."""
    return next(server for server in servers_body["pools"][pool]["servers"] if server["name"] == name)
