"""JSON-RPC through the gateway's engine, and a web3.py provider built on it.

Every node call is an engine task, so node choice, health, latency accounting
and the 502/503/504 errors are the gateway's, not web3's. Reads are idempotent
tasks, which the engine retries on another node; writes never are retried
blindly (see ``service``).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from web3.providers.async_base import AsyncJSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from offload import OffloadError, PluginContext, Task

if TYPE_CHECKING:
    from .rpc_cache import CachedReads

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
# Methods that run contract code without mining it: their gas and time are capped (see CallLimits).
CALL_METHODS = frozenset({"eth_call", "eth_estimateGas"})
# geth's --rpc.gascap default: the most gas one eth_call or eth_estimateGas may use.
DEFAULT_CALL_GAS_CAP = 50_000_000
# geth's --rpc.evmtimeout default.
# The whole wait of a request holding calls, queueing at the node included (the pool default
# timeout_s): what stops a runaway call is the node's own limit (geth --rpc.evmtimeout 5 s,
# offload-edge --call-timeout-s 1 s); under 100 concurrent writes a node's queue alone takes seconds.
DEFAULT_CALL_TIMEOUT_S = 10.0
# EIP-7825's limit on one transaction's gas (Osaka): nodes on those rules (hardhat among them)
# refuse a call that asks for more, so a call without gas is given at most this much.
MAX_TRANSACTION_GAS = 2**24
JSON_HEADERS = {"Content-Type": "application/json"}
RETRYABLE_STATUSES = (502, 504)

# Servers that answered during the current request, newest last (one list per request).
servers_used: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("servers_used", default=None)
# A server every node call of the current request must use (?server=...).
pinned_server: contextvars.ContextVar[str | None] = contextvars.ContextVar("pinned_server", default=None)
# How each read of the current request was answered ("hit", "coalesced", "miss"), for its X-Offload-Cache.
cache_outcomes: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("cache_outcomes", default=None)


def rpc_payload(method: str, params: list[Any], request_id: int | str = 1) -> bytes:
    """A JSON-RPC 2.0 request body."""
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()


class InvalidCallParams(ValueError):
    """The params of an eth_call / eth_estimateGas cannot be capped: not a call object, or a bad gas."""


@dataclass(frozen=True)
class CallLimits:
    """What one eth_call or eth_estimateGas sent through the gateway may cost the nodes.

    A node runs such a call to its end on its own time: one that loops until it runs
    out of gas holds a dev chain for seconds, so the gateway caps both gas and time
    as geth does with ``--rpc.gascap`` and ``--rpc.evmtimeout``.
    """

    gas_cap: int = DEFAULT_CALL_GAS_CAP
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S

    def timeout_for(self, methods: Iterable[str]) -> float | None:
        """:attr:`timeout_s` for a request holding a call among ``methods``; None (the pool's timeout) otherwise."""
        return self.timeout_s if any(method in CALL_METHODS for method in methods) else None

    @property
    def default_gas(self) -> int:
        """The gas given to a call that names none: the cap, within one transaction's limit."""
        return min(self.gas_cap, MAX_TRANSACTION_GAS)

    def cap(self, params: Any) -> list[Any]:
        """``params`` of an eth_call / eth_estimateGas with the call object's gas capped.

        A gas above the cap is lowered to it, a missing gas is set to :attr:`default_gas`;
        raises :class:`InvalidCallParams` when the params hold no call object or a bad gas.
        """
        if not isinstance(params, Sequence) or isinstance(params, str) or not params:
            raise InvalidCallParams("expected [call object, block]")
        call = params[0]
        if not isinstance(call, dict):
            raise InvalidCallParams("the first param must be a call object")
        gas = call.get("gas")
        limited = self.default_gas if gas is None else min(_quantity(gas, "gas"), self.gas_cap)
        return [{**call, "gas": hex(limited)}, *params[1:]]


def _quantity(value: Any, name: str) -> int:
    """A JSON-RPC quantity (``0x``-hex string, or a plain non-negative integer as some clients send)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    # 64 hex digits is a uint256: anything longer is not a quantity (and not worth parsing).
    if isinstance(value, str) and value[:2] in ("0x", "0X") and 2 < len(value) <= 66:
        try:
            return int(value[2:], 16)
        except ValueError:
            pass
    raise InvalidCallParams(f"{name} must be a 0x-hex quantity")


class RpcSender:
    """Sends JSON-RPC bodies to the plugin's pool through the engine."""

    def __init__(self, plugin: PluginContext, rpc_path: str, limits: CallLimits | None = None) -> None:
        self.plugin = plugin
        self.rpc_path = rpc_path
        self.limits = limits or CallLimits()

    async def send(
        self,
        body: bytes,
        *,
        idempotent: bool,
        exclude: Collection[str] = (),
        timeout_s: float | None = None,
        server: str | None = None,
        use_pin: bool = True,
    ) -> tuple[Any, str]:
        """POST ``body``; returns (decoded JSON-RPC response, server name).

        ``timeout_s`` replaces the pool's ``timeout_s`` as the whole request's deadline.
        The body goes to ``server`` when named, else to the request's pinned server
        (``?server=``) unless ``use_pin`` is False, else wherever the engine picks.
        """
        task = Task(
            self.rpc_path,
            method="POST",
            body=body,
            headers=JSON_HEADERS,
            idempotent=idempotent,
            timeout_s=timeout_s,
        )
        # Reads are idempotent tasks: the engine retries them on another node by itself.
        result = await self.plugin.offload(
            task, server=server or (pinned_server.get() if use_pin else None), exclude=exclude
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

    def __init__(self, sender: RpcSender, reads: CachedReads | None = None) -> None:
        super().__init__()
        self.sender = sender
        self.reads = reads  # the read cache and coalescing, shared with /rpc (None: every read goes to a node)

    def limited(self, method: str, params: Any) -> Any:
        """``params`` as sent: a call's gas capped exactly as callers' calls through ``/rpc`` are."""
        if method not in CALL_METHODS:
            return params
        try:
            return self.sender.limits.cap(params)
        except InvalidCallParams as exc:
            raise OffloadError(400, f"{method}: {exc}") from None

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        body = self.encode_rpc_request(method, self.limited(method, params))
        timeout_s = self.sender.limits.timeout_for([method])
        if self.reads is not None and method in READ_METHODS:
            # The params as plain JSON (web3 hands over HexBytes and the like): what the key and the rules read.
            request = json.loads(body)
            lookup = self.reads.lookup(method, request.get("params"))
            if lookup is not None:
                answer, outcome = await self.reads.read(lookup, timeout_s=timeout_s)
                outcomes = cache_outcomes.get()
                if outcomes is not None:
                    outcomes.append(outcome)
                return answer.for_id(request["id"])  # type: ignore[no-any-return]
        response, _ = await self.sender.send(body, idempotent=method in READ_METHODS, timeout_s=timeout_s)
        return response

    async def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        body = self.encode_batch_rpc_request([(method, self.limited(method, params)) for method, params in requests])
        idempotent = all(method in READ_METHODS for method, _ in requests)
        timeout_s = self.sender.limits.timeout_for(method for method, _ in requests)
        response, _ = await self.sender.send(body, idempotent=idempotent, timeout_s=timeout_s)
        return response

    async def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            response, _ = await self.sender.send(rpc_payload("web3_clientVersion", []), idempotent=True)
        except OffloadError:
            if show_traceback:
                raise
            return False
        return isinstance(response, dict) and "result" in response
