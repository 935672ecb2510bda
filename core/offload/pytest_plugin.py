"""pytest fixtures for gateways, plugins and edge servers, named as pytest-sanic's were.

Installed with task-offloading (entry point ``pytest11``), so a third-party
plugin's tests can start real servers on loopback without any setup:

    async def test_my_route(sanic_client):
        client = await sanic_client(create_app(settings))
        response = await client.get("/my/route")
        assert response.status == 200

``test_server(app)`` serves an app on 127.0.0.1 and an ephemeral port;
``sanic_client(app)`` (alias ``test_client``) does the same and returns an
``aiohttp.ClientSession`` whose relative URLs go to that server. Everything
started is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import aiohttp
import pytest
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
    async def test_server() -> AsyncIterator[ServerFactory]:
        """Factory: ``server = await test_server(app, host="127.0.0.1")``."""
        async with AsyncExitStack() as stack:

            async def start(app: Sanic, host: str = "127.0.0.1") -> RunningServer:
                return await stack.enter_async_context(serve_app(app, host))

            yield start

    @pytest_asyncio.fixture
    async def sanic_client(test_server: ServerFactory) -> AsyncIterator[ClientFactory]:
        """Factory: ``client = await sanic_client(app)``, an aiohttp session bound to the app's URL."""
        async with AsyncExitStack() as stack:

            async def start(app: Sanic, host: str = "127.0.0.1") -> aiohttp.ClientSession:
                server = await test_server(app, host)
                session = aiohttp.ClientSession(base_url=server.url)
                stack.push_async_callback(session.close)
                return session

            yield start

    @pytest.fixture
    def test_client(sanic_client: ClientFactory) -> ClientFactory:
        """pytest-sanic's other name for :func:`sanic_client`."""
        return sanic_client
