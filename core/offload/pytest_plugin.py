"""pytest fixtures for gateways, plugins and edge servers, prefixed ``offload_`` so they clash with no other plugin's.

Installed with task-offloading (entry point ``pytest11``), so a third-party
plugin's tests can start real servers on loopback without any setup:

    async def test_my_route(offload_client):
        client = await offload_client(create_app(settings))
        response = await client.get("/my/route")
        assert response.status == 200

``offload_server(app)`` serves an app on 127.0.0.1 and an ephemeral port;
``offload_client(app)`` does the same and returns an
``aiohttp.ClientSession`` whose relative URLs go to that server. Everything
started is stopped when the test ends. (pytest-sanic's names, ``test_server``
and ``test_client``, are not offered: pytest-aiohttp and pytest-sanic define
fixtures by those names too.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import aiohttp
from sanic import Sanic

from .testing import RunningServer, serve_app

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - fixtures need pytest-asyncio; without it, offer none
    pytest_asyncio = None

ServerFactory = Callable[..., Awaitable[RunningServer]]
ClientFactory = Callable[..., Awaitable[aiohttp.ClientSession]]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def offload_server() -> AsyncIterator[ServerFactory]:
        """Factory: ``server = await offload_server(app, host="127.0.0.1")``."""
        async with AsyncExitStack() as stack:

            async def start(app: Sanic, host: str = "127.0.0.1") -> RunningServer:
                return await stack.enter_async_context(serve_app(app, host))

            yield start

    @pytest_asyncio.fixture
    async def offload_client(offload_server: ServerFactory) -> AsyncIterator[ClientFactory]:
        """Factory: ``client = await offload_client(app)``, an aiohttp session bound to the app's URL."""
        async with AsyncExitStack() as stack:

            async def start(app: Sanic, host: str = "127.0.0.1") -> aiohttp.ClientSession:
                server = await offload_server(app, host)
                session = aiohttp.ClientSession(base_url=server.url)
                stack.push_async_callback(session.close)
                return session

            yield start
