"""The embedded chain as an async backend: one request at a time, in a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from .backend import Reply, json_reply
from .jsonrpc import answer_body
from .limits import DEFAULT_CALL_TIMEOUT_S, DEFAULT_GAS_CAP
from .node import EmbeddedChain

__all__ = ["EmbeddedBackend"]


class EmbeddedBackend:
    """Owns one :class:`EmbeddedChain` from server start to stop.

    py-evm is neither thread-safe nor fast, so every request (a whole batch at
    once) runs in a worker thread while holding the chain lock; the event loop
    keeps serving ``/health`` and the other routes meanwhile. The calls and
    estimates of one request share ``call_timeout_s``, so none holds the chain
    much longer than that (mined transactions are not time-limited); and once a
    request has waited ``call_timeout_s`` for the chain, the calls ahead of it
    give way, so it never waits behind several such budgets in a row.
    """

    mode = "embedded"

    def __init__(self, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S, gas_cap: int = DEFAULT_GAS_CAP) -> None:
        self.call_timeout_s = call_timeout_s
        self.gas_cap = gas_cap
        self.chain: EmbeddedChain | None = None
        # Queues requests without tying up one executor thread each while they wait.
        self._queue = asyncio.Lock()
        # The real guard: a cancelled request (client gone) releases the asyncio lock while
        # its thread still runs, and the next request must not touch the chain until it ends.
        self._chain_lock = threading.Lock()
        # Read by /health without waiting for the lock (and without touching py-evm).
        self.block_number: int | None = None
        # Since when each request waiting for the chain has waited, oldest first (event loop only).
        self._waiting: list[list[float]] = []

    async def start(self) -> None:
        """Create the chain and deploy the demo contracts (a few hundred ms, off the event loop)."""
        chain = await asyncio.to_thread(EmbeddedChain, call_timeout_s=self.call_timeout_s, gas_cap=self.gas_cap)
        self.block_number = chain.block_number()
        self.chain = chain

    async def stop(self) -> None:
        """Drop the chain; its state lives in memory only."""
        self.chain = None
        self.block_number = None

    def _require_chain(self) -> EmbeddedChain:
        if self.chain is None:
            raise RuntimeError("the chain is not started")
        return self.chain

    def _answer(self, chain: EmbeddedChain, body: bytes) -> Reply:
        with self._chain_lock, chain.time_limit():
            reply = json_reply(answer_body(body, chain.dispatch))
            self.block_number = chain.block_number()
        return reply

    async def rpc(self, body: bytes) -> Reply:
        """Answer a JSON-RPC body; HTTP status 200 as geth, errors inside the JSON."""
        chain = self._require_chain()
        waiter = [time.monotonic()]  # a list: its identity, not its value, marks this request
        self._waiting.append(waiter)
        self._update_yield_point()
        try:
            async with self._queue:
                self._stop_waiting(waiter)
                return await asyncio.to_thread(self._answer, chain, body)
        finally:
            self._stop_waiting(waiter)  # cancelled while waiting: no longer anyone to give way to

    def _stop_waiting(self, waiter: list[float]) -> None:
        if any(item is waiter for item in self._waiting):
            self._waiting = [item for item in self._waiting if item is not waiter]
            self._update_yield_point()

    def _update_yield_point(self) -> None:
        if self.chain is not None:
            self.chain.yield_point.at = self._waiting[0][0] + self.call_timeout_s if self._waiting else None

    async def contracts(self) -> Reply:
        """The demo contracts' addresses and the chain id."""
        chain = self._require_chain()
        return json_reply({"data": dict(chain.contracts), "chain_id": chain.chain_id})

    def health(self) -> dict[str, Any]:
        """``{"chain": "embedded", "block_number": N, "chain_id": N}``."""
        chain = self.chain
        return {"chain": self.mode, "block_number": self.block_number, "chain_id": chain.chain_id if chain else None}
