"""JSON-RPC through the gateway's engine, and a web3.py provider built on it.

Every node call is an engine task, so node choice, health, latency accounting
and the 502/503/504 errors are the gateway's, not web3's. Reads are idempotent
tasks, which the engine retries on another node; writes never are retried
blindly (see ``service``).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Collection
from typing import Any

from web3.providers.async_base import AsyncJSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from offload import OffloadError, Task
from offload.context import PluginContext

# Methods that only read: safe to retry on another node and to send to any node.
READ_METHODS = frozenset(
    {
        "web3_clientVersion",
        "web3_sha3",
        "net_version",
        "net_listening",
        "net_peerCount",
        "eth_chainId",
        "eth_syncing",
        "eth_blockNumber",
        "eth_accounts",
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getTransactionCount",
        "eth_call",
        "eth_estimateGas",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_blobBaseFee",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getBlockTransactionCountByHash",
        "eth_getBlockTransactionCountByNumber",
        "eth_getTransactionByHash",
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getTransactionByBlockNumberAndIndex",
        "eth_getTransactionReceipt",
        "eth_getBlockReceipts",
        "eth_getLogs",
        "eth_getProof",
    }
)
RAW_TRANSACTION_METHOD = "eth_sendRawTransaction"
JSON_HEADERS = {"Content-Type": "application/json"}
RETRYABLE_STATUSES = (502, 504)

# Servers that answered during the current request, newest last (one list per request).
servers_used: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("servers_used", default=None)
# A server every node call of the current request must use (?server=...).
pinned_server: contextvars.ContextVar[str | None] = contextvars.ContextVar("pinned_server", default=None)


def rpc_payload(method: str, params: list[Any], request_id: int | str = 1) -> bytes:
    """A JSON-RPC 2.0 request body."""
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()


class RpcSender:
    """Sends JSON-RPC bodies to the plugin's pool through the engine."""

    def __init__(self, plugin: PluginContext, rpc_path: str) -> None:
        self.plugin = plugin
        self.rpc_path = rpc_path

    async def send(self, body: bytes, *, idempotent: bool, exclude: Collection[str] = ()) -> tuple[Any, str]:
        """POST ``body``; returns (decoded JSON-RPC response, server name)."""
        task = Task(self.rpc_path, method="POST", body=body, headers=JSON_HEADERS, idempotent=idempotent)
        # Reads are idempotent tasks: the engine retries them on another node by itself.
        result = await self.plugin.require_engine().offload(
            self.plugin.default_pool, task, server=pinned_server.get(), exclude=exclude
        )
        used = servers_used.get()
        if used is not None:
            used.append(result.server)
        if not isinstance(result.data, dict | list):
            raise OffloadError(
                502,
                f"node {result.server!r} answered HTTP {result.status_code} without JSON-RPC: {str(result.data)[:200]}",
                server=result.server,
            )
        return result.data, result.server

    async def call(self, method: str, params: list[Any], *, exclude: Collection[str] = ()) -> Any:
        """One JSON-RPC call; returns its decoded response object."""
        response, _ = await self.send(rpc_payload(method, params), idempotent=method in READ_METHODS, exclude=exclude)
        return response


class EngineProvider(AsyncJSONBaseProvider):
    """A web3.py async provider whose every request goes through the gateway's engine."""

    def __init__(self, sender: RpcSender) -> None:
        super().__init__()
        self.sender = sender

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        body = self.encode_rpc_request(method, params)
        response, _ = await self.sender.send(body, idempotent=method in READ_METHODS)
        return response

    async def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        body = self.encode_batch_rpc_request(requests)
        idempotent = all(method in READ_METHODS for method, _ in requests)
        response, _ = await self.sender.send(body, idempotent=idempotent)
        return response

    async def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            response, _ = await self.sender.send(rpc_payload("web3_clientVersion", []), idempotent=True)
        except OffloadError:
            if show_traceback:
                raise
            return False
        return isinstance(response, dict) and "result" in response
