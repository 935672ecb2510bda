"""How the REST routes answer writes: the transaction's hash whatever happens, and ``Idempotency-Key`` retries.

A write's answer is built as data (:class:`Reply`) before it becomes an HTTP
response, so that it can be stored under the caller's key and given again to a
retry. An answer given while the outcome was unknown (202, 504) is not given
again as it was: a retry gets what the nodes show of that transaction now.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sanic import Request, response
from sanic.response import HTTPResponse

from offload import SERVER_HEADER, OffloadError, PluginContext

from .idempotency import HEADER, IdempotencyStore, operator_scope, parse_key
from .outcomes import OutcomeUnknown, TxState
from .rpc import pinned_server, servers_used
from .service import ContractService, TransactionRefused

# Stripe's name for "this answer is the stored one, nothing was sent again".
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class Reply:
    """An answer as data: status, JSON body and headers, with the transaction it is about."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    tx_hash: str | None = None
    # False: the outcome was unknown when this was answered, so a replay asks the nodes again.
    final: bool = True

    def response(self, extra: dict[str, Any] | None = None, *, replayed: bool = False) -> HTTPResponse:
        """The HTTP response; ``extra`` (e.g. the caller's requestID) joins a successful envelope."""
        payload = {**self.payload, **extra} if extra and self.status < 300 else self.payload
        headers = {**self.headers, REPLAYED_HEADER: "true"} if replayed else self.headers
        return response.json(payload, status=self.status, headers=headers or None)


def begin(request: Request) -> list[str]:
    """Start answering ``request``: the servers it uses are recorded, ``?server=`` pins them."""
    used: list[str] = []
    servers_used.set(used)
    pinned_server.set(request.args.get("server") or None)
    return used


def error_reply(exc: OffloadError, tx_hash: str | None, *, final: bool = True) -> Reply:
    """An error as the gateway renders it (see ``offload.responses``), kept as data."""
    headers = dict(exc.headers)
    if exc.server:
        headers[SERVER_HEADER] = exc.server
    return Reply(exc.status, exc.to_json(), headers, tx_hash, final)


class WriteAnswers:
    """Runs writes for the REST routes and answers them, once per ``Idempotency-Key``."""

    def __init__(self, plugin: PluginContext, service: ContractService, store: IdempotencyStore[Any]) -> None:
        self.plugin = plugin
        self.service = service
        self.store = store

    def envelope(self, data: Any, server: str, started: float, status: int = 200) -> dict[str, Any]:
        """The gateway's envelope ``{"data", "server", "status_code", "throughput", "time"}``."""
        return {
            "data": data,
            "server": server,
            "status_code": status,
            "throughput": self.plugin.throughput(),
            "time": time.perf_counter() - started,
        }

    def success(self, data: Any, server: str, started: float) -> Reply:
        tx_hash = data.get("tx_hash") if isinstance(data, dict) else None
        return Reply(200, self.envelope(data, server, started), {SERVER_HEADER: server}, tx_hash)

    def pending(self, exc: OutcomeUnknown, started: float) -> Reply:
        """202: handed to a node, outcome unknown; the body says where to ask."""
        data = {key: exc.details[key] for key in ("tx_hash", "outcome", "state", "status_url")}
        data["message"] = exc.message
        headers = {**exc.headers, SERVER_HEADER: exc.server or ""}
        return Reply(202, self.envelope(data, exc.server or "", started, 202), headers, exc.tx_hash, final=False)

    async def answer(
        self,
        request: Request,
        produce: Callable[[], Awaitable[Any]],
        *,
        key: str | None,
        request_fingerprint: str,
        extra: dict[str, Any] | None = None,
    ) -> HTTPResponse:
        """Run the write ``produce`` (or give the stored answer of the first request with ``key``)."""
        if key is None:
            reply, _ = await self.capture(request, produce)
            return reply.response(extra)
        scope = operator_scope(request.headers.get("authorization"))
        reply, replayed = await self.store.run(scope, key, request_fingerprint, lambda: self.capture(request, produce))
        if replayed:
            reply = await self.refreshed(reply)
        return reply.response(extra, replayed=replayed)

    def key(self, request: Request) -> str | None:
        """The request's ``Idempotency-Key`` (400 for a malformed one)."""
        return parse_key(request.headers.getall(HEADER, []))

    async def capture(self, request: Request, produce: Callable[[], Awaitable[Any]]) -> tuple[Reply, bool]:
        """The write's answer, and whether to keep it for a retry: only once a node may have the transaction.

        Errors before anything was handed to a node (bad arguments, a revert in the
        estimate, no node reachable) and a node's refusal are raised, not kept: a retry
        with the same key may run again, since nothing was applied.
        """
        started = time.perf_counter()
        used = begin(request)
        try:
            data = await produce()
        except OutcomeUnknown as exc:
            if exc.status == 202:
                return self.pending(exc, started), True
            return error_reply(exc, exc.tx_hash, final=False), True
        except TransactionRefused:
            raise
        except OffloadError as exc:
            tx_hash = exc.details.get("tx_hash")
            if tx_hash is None:
                raise
            return error_reply(exc, tx_hash), True  # mined, and failed on chain: final
        return self.success(data, used[-1] if used else "", started), True

    async def refreshed(self, reply: Reply) -> Reply:
        """A stored answer for a retry: as it was if final, else what the nodes show of its transaction now."""
        if reply.final or reply.tx_hash is None:
            return reply
        started = time.perf_counter()
        outcome = await self.service.outcome(reply.tx_hash)
        summary = outcome.get("receipt")
        server = outcome.get("server") or ""
        if outcome["state"] != TxState.MINED or summary is None:
            data = {
                "tx_hash": reply.tx_hash,
                "outcome": "unknown",
                "state": outcome["state"],
                "status_url": self.service.outcomes.status_url(reply.tx_hash),
                "message": f"transaction {reply.tx_hash} is not mined yet as far as the pool's nodes show",
            }
            envelope = self.envelope(data, server, started, 202)
            headers = {"Location": data["status_url"], SERVER_HEADER: server}
            return replace(reply, status=202, payload=envelope, headers=headers)
        record = self.service.outcomes.get(reply.tx_hash)
        try:
            data = await self.service.checked(summary, record.context if record else None)
        except OffloadError as exc:
            return error_reply(exc, reply.tx_hash)
        return self.success(data, server, started)
