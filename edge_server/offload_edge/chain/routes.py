"""Serving the chain over HTTP: ``POST /rpc`` and ``GET /chain/contracts``.

``embedded`` runs the chain in this process; ``relay`` forwards to another
edge's chain, so several edges (each with its own simulated link delay) serve
one shared chain state.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from .jsonrpc import answer_body, error_answer
from .node import INTERNAL_ERROR, EmbeddedChain, RpcError

RELAY_TIMEOUT_S = 30.0


class EmbeddedBackend:
    """The chain itself; py-evm calls run one at a time in a worker thread."""

    mode = "embedded"

    def __init__(self) -> None:
        self.chain: EmbeddedChain | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        self.chain = await asyncio.to_thread(EmbeddedChain)

    async def stop(self) -> None:
        self.chain = None

    def require_chain(self) -> EmbeddedChain:
        if self.chain is None:
            raise RuntimeError("the chain is not started")
        return self.chain

    async def rpc(self, body: bytes) -> tuple[int, Any]:
        chain = self.require_chain()
        # The EVM state is not thread-safe: one request (single or batch) at a time.
        async with self.lock:
            return await asyncio.to_thread(answer_body, body, chain.dispatch)

    async def contracts(self) -> tuple[int, Any]:
        chain = self.require_chain()
        return 200, {"data": chain.contracts, "chain_id": chain.chain_id}

    def health(self) -> dict[str, Any]:
        chain = self.chain
        return {"chain": self.mode, "block_number": chain.block_number() if chain else None}


class RelayBackend:
    """Forwards JSON-RPC bodies verbatim to another node."""

    mode = "relay"

    def __init__(self, upstream_rpc_url: str) -> None:
        self.upstream = upstream_rpc_url
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RELAY_TIMEOUT_S))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def forward(self, method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
        if self.session is None:
            raise RuntimeError("the relay is not started")
        try:
            async with self.session.request(
                method, url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = RpcError(INTERNAL_ERROR, f"upstream chain {self.upstream} failed: {type(exc).__name__}: {exc}")
            return 502, error_answer(None, error)

    async def rpc(self, body: bytes) -> tuple[int, Any]:
        return await self.forward("POST", self.upstream, body)

    async def contracts(self) -> tuple[int, Any]:
        if not self.upstream.endswith("/rpc"):
            return 404, {"error": f"upstream {self.upstream} is not an offload-edge chain; it has no contract list"}
        return await self.forward("GET", self.upstream.removesuffix("/rpc") + "/chain/contracts")

    def health(self) -> dict[str, Any]:
        return {"chain": self.mode, "upstream": self.upstream}


ChainBackend = EmbeddedBackend | RelayBackend


def install_chain_routes(app: Sanic, backend: ChainBackend) -> None:
    """Add the chain's routes and tie the backend's lifetime to the server's."""

    async def start(app: Sanic) -> None:
        await backend.start()

    async def stop(app: Sanic) -> None:
        await backend.stop()

    async def rpc(request: Request) -> HTTPResponse:
        status, payload = await backend.rpc(request.body)
        return json(payload, status=status)

    async def contracts(request: Request) -> HTTPResponse:
        status, payload = await backend.contracts()
        return json(payload, status=status)

    app.register_listener(start, "before_server_start")
    app.register_listener(stop, "after_server_stop")
    app.add_route(rpc, "/rpc", methods=["POST"], name="chain_rpc")
    app.add_route(contracts, "/chain/contracts", methods=["GET"], name="chain_contracts")
    app.ctx.chain = backend
