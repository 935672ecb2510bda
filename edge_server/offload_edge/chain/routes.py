"""Sanic wiring for the chain: ``POST /rpc``, ``GET /chain/contracts`` and the backend's lifetime."""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

# Only the protocol here: importing the embedded backend would pull in eth-tester and
# py-evm, which a relay-only edge (or one installed without the chain extra) never needs.
from .backend import ChainBackend, Reply

__all__ = ["install_chain_routes"]


def _response(reply: Reply) -> HTTPResponse:
    return raw(reply.body, status=reply.status, content_type=reply.content_type)


def install_chain_routes(app: Sanic, backend: ChainBackend) -> None:
    """Add the chain routes to ``app``; the backend starts before the server listens and stops after it."""

    async def start(app: Sanic) -> None:
        await backend.start()

    async def stop(app: Sanic) -> None:
        await backend.stop()

    async def rpc(request: Request) -> HTTPResponse:
        return _response(await backend.rpc(request.body))

    async def contracts(request: Request) -> HTTPResponse:
        return _response(await backend.contracts())

    app.register_listener(start, "before_server_start")
    app.register_listener(stop, "after_server_stop")
    app.add_route(rpc, "/rpc", methods=["POST"], name="chain_rpc")
    app.add_route(contracts, "/chain/contracts", methods=["GET"], name="chain_contracts")
    app.ctx.chain = backend
