"""``POST {prefix}/rpc``: JSON-RPC 2.0 pass-through with a method allowlist.

An unmodified web3.py or ethers.js client can point at the gateway. Methods
outside the allowlist (admin, personal, debug, eth_sendTransaction, filters
that live on one node, ...) get a JSON-RPC error instead of reaching a node.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from offload import OffloadError, safe_json

from .rpc import RAW_TRANSACTION_METHOD, READ_METHODS, RpcSender
from .service import ContractService

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_ALLOWED = -32601  # "method not found" as far as the client can tell
UPSTREAM_ERROR = -32603
DEFAULT_ALLOWED = READ_METHODS | {RAW_TRANSACTION_METHOD}


def rpc_error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


class RpcProxy:
    """Forwards allowed JSON-RPC requests to the pool's nodes."""

    def __init__(self, sender: RpcSender, service: ContractService, extra_allowed: Collection[str]) -> None:
        self.sender = sender
        self.service = service
        self.allowed = frozenset(DEFAULT_ALLOWED | set(extra_allowed))

    def check(self, request: Any) -> dict[str, Any] | None:
        """A JSON-RPC error for a malformed or refused request, else None."""
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
        ):
            request_id = request.get("id") if isinstance(request, dict) else None
            return rpc_error(request_id, INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object")
        method = request["method"]
        if method not in self.allowed:
            return rpc_error(
                request.get("id"),
                METHOD_NOT_ALLOWED,
                f"method {method} is not allowed through this gateway (reads and eth_sendRawTransaction are); "
                "enable more with rpc_allow in [plugins.contracts]",
            )
        return None

    async def handle(self, body: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON-RPC response) for a request body."""
        try:
            parsed = safe_json.loads(body)
        except ValueError:
            return 400, rpc_error(None, PARSE_ERROR, "parse error: the body is not JSON")
        if isinstance(parsed, list):
            if not parsed:
                return 400, rpc_error(None, INVALID_REQUEST, "invalid request: empty batch")
            return await self.batch(parsed)
        refused = self.check(parsed)
        if refused is not None:
            return (400 if refused["error"]["code"] == INVALID_REQUEST else 200), refused
        return await self.single(parsed)

    async def single(self, request: dict[str, Any]) -> tuple[int, Any]:
        method = request["method"]
        try:
            if method == RAW_TRANSACTION_METHOD:
                params = request.get("params") or []
                raw = bytes.fromhex(str(params[0]).removeprefix("0x")) if params else b""
                tx_hash = await self.service.send_raw_transaction(raw)
                return 200, {"jsonrpc": "2.0", "id": request.get("id"), "result": tx_hash}
            response, _ = await self.sender.send(json.dumps(request).encode(), idempotent=method in READ_METHODS)
            return 200, response
        except ValueError:
            return 200, rpc_error(request.get("id"), -32602, "invalid params: expected a 0x-hex raw transaction")
        except OffloadError as exc:
            rpc_error_data = exc.details.get("rpc_error")
            if rpc_error_data:  # the node itself refused the transaction: relay its error
                return 200, {"jsonrpc": "2.0", "id": request.get("id"), "error": rpc_error_data}
            return exc.status, rpc_error(request.get("id"), UPSTREAM_ERROR, exc.message, {"server": exc.server})

    async def batch(self, requests: list[Any]) -> tuple[int, Any]:
        answers: dict[int, dict[str, Any]] = {}
        forward: list[tuple[int, dict[str, Any]]] = []
        for index, request in enumerate(requests):
            refused = self.check(request)
            if refused is not None:
                answers[index] = refused
            else:
                forward.append((index, request))
        status = 200
        if forward:
            # Each forwarded request gets a unique id on the way, so answers map back whatever ids clients used.
            outgoing = [{**request, "id": index} for index, request in forward]
            idempotent = all(request["method"] in READ_METHODS for _, request in forward)
            try:
                response, _ = await self.sender.send(json.dumps(outgoing).encode(), idempotent=idempotent)
                by_id = {item.get("id"): item for item in response} if isinstance(response, list) else {}
                for index, request in forward:
                    item = by_id.get(index)
                    if item is None:
                        answers[index] = rpc_error(
                            request.get("id"), UPSTREAM_ERROR, "the node gave no answer for this request"
                        )
                    else:
                        answers[index] = {**item, "id": request.get("id")}
            except OffloadError as exc:
                status = exc.status
                for index, request in forward:
                    answers[index] = rpc_error(request.get("id"), UPSTREAM_ERROR, exc.message, {"server": exc.server})
        # Notifications (no "id") get no answer, as JSON-RPC 2.0 says.
        ordered = [answers[index] for index in range(len(requests)) if not _is_notification(requests[index])]
        return status, ordered


def _is_notification(request: Any) -> bool:
    return isinstance(request, dict) and "id" not in request
