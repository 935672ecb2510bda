"""Shared fixtures: real edge servers and real gateways on loopback ephemeral ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from web3 import AsyncHTTPProvider, AsyncWeb3

from offload.app import create_app
from offload.pytest_plugin import ServerFactory
from offload.settings import parse_settings
from offload.testing import RunningServer
from offload_edge.app import EdgeConfig, create_edge_app

EdgeFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def edge(offload_server: ServerFactory) -> EdgeFactory:
    """Factory: ``server = await edge("edge1", delay_ms=5, peers=[...])`` — a real edge node."""

    async def start(
        name: str = "edge",
        *,
        delay_ms: float = 0.0,
        peers: list[str] | None = None,
        chain: bool = False,
        chain_upstream: str | None = None,
    ) -> RunningServer:
        config = EdgeConfig(
            name=name,
            delay_ms=delay_ms,
            peers=list(peers or []),
            processes=1,
            chain=chain,
            chain_upstream=chain_upstream,
        )
        return await offload_server(create_edge_app(config))

    return start


# The operator's token every test gateway is built with (tests of a missing token build their own).
TEST_TOKEN = "test-operator-token-0123456789"
OPERATOR_HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}"}


class Gateway:
    """A running gateway, a client session bound to it, and one that sends the operator's token."""

    def __init__(self, server: RunningServer, client: aiohttp.ClientSession, operator: aiohttp.ClientSession) -> None:
        self.server = server
        self.client = client  # a local caller without the token
        self.operator = operator  # the same, with 'Authorization: Bearer TEST_TOKEN'
        self.app = server.app

    async def get_json(self, path: str, **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        """GET ``path``; returns (status, parsed JSON body, response)."""
        async with self.client.get(path, **kwargs) as response:
            return response.status, await response.json(), response


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def gateway(offload_server: ServerFactory) -> AsyncIterator[GatewayFactory]:
    """Factory: ``gw = await gateway({"plugins": {"math": {...}}}, extra_plugins=...)``.

    The gateway's operator token is :data:`TEST_TOKEN` unless ``api_token=`` says otherwise.
    """
    async with AsyncExitStack() as stack:

        async def start(document: dict[str, Any], **create_kwargs: Any) -> Gateway:
            settings = parse_settings(document, source="test plugins.toml")
            create_kwargs.setdefault("api_token", TEST_TOKEN)
            server = await offload_server(create_app(settings, **create_kwargs))
            client = aiohttp.ClientSession(base_url=server.url)
            stack.push_async_callback(client.close)
            operator = aiohttp.ClientSession(base_url=server.url, headers=OPERATOR_HEADERS)
            stack.push_async_callback(operator.close)
            return Gateway(server, client, operator)

        yield start


def servers_table(*pairs: tuple[str, RunningServer], local: str | None = None) -> list[dict[str, Any]]:
    """plugins.toml ``servers`` entries for running edges; ``local`` names the device itself."""
    return [{"name": name, "url": server.url, "local": name == local} for name, server in pairs]


Web3Factory = Callable[[str], AsyncWeb3]


@pytest_asyncio.fixture
async def web3_client() -> AsyncIterator[Web3Factory]:
    """Factory: ``w3 = web3_client(rpc_url)``, an unmodified web3.py async client closed after the test."""
    clients: list[AsyncWeb3] = []

    def connect(rpc_url: str) -> AsyncWeb3:
        client = AsyncWeb3(AsyncHTTPProvider(rpc_url))
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.provider.disconnect()


@pytest.fixture
def redis_server() -> Any:
    """A real redis-server on 127.0.0.1 and a free port for one test: ``.url``, ``.port``, ``.stop()``, ``.restart()``.

    Skipped without redis-server, failed instead under ``OFFLOAD_REQUIRE_REDIS=1``
    (see tests/redis_server.py). Yields a ``redis_server.RedisServer``; imported
    here rather than at the top so that this fixture stays one appended block.
    """
    from redis_server import redis_server_fixture

    yield from redis_server_fixture()
