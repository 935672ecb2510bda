"""What became of a transaction once it left the gateway: lookups by hash on every node of the pool.

A node that takes a transaction and then fails (it dies, answers 502, hangs) leaves
the gateway not knowing whether the transaction is on its way to the chain. Its hash
is the handle on it: the gateway asks every node of the pool, not only the one that
failed, and keeps asking in the background for ``outcome_lookup_s`` so that
``GET {prefix}/tx/<hash>`` and a retry with the same ``Idempotency-Key`` can tell
the caller what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from offload import OffloadError

from .rpc import RpcSender

TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
DEFAULT_LOOKUP_S = 120.0
DEFAULT_MAX_TRACKED = 10_000
# One lookup of one node: a node that takes longer is asked again next round.
LOOKUP_TIMEOUT_S = 2.0
# Hashes asked about in one JSON-RPC batch (two requests each): well under geth's batch limit of 1000.
LOOKUP_BATCH = 50
# Background lookups start fast (a transaction usually shows up within a block) and back off.
FIRST_INTERVAL_S = 0.1
MAX_INTERVAL_S = 2.0

T = TypeVar("T")


class TxState(StrEnum):
    """Where a transaction stands, as far as the pool's nodes show."""

    PENDING = "pending"  # a node accepted it or holds it; not mined yet
    UNKNOWN = "unknown"  # handed to a node that failed; no node has shown it (yet)
    MINED = "mined"  # in a block: its receipt tells whether it succeeded


@dataclass(frozen=True)
class Sighting:
    """What one lookup round saw of one transaction: its state and the node that showed it."""

    state: TxState
    server: str | None = None

    @property
    def found(self) -> bool:
        return self.state is not TxState.UNKNOWN


@dataclass(frozen=True)
class WriteContext:
    """What the gateway signed, kept to describe the transaction's outcome later."""

    contract: str
    function: str
    call: dict[str, Any]


@dataclass
class Tracked:
    """A transaction the gateway handed to a node and is (or was) looking for."""

    tx_hash: str
    state: TxState
    since: float
    until: float  # the clock time background lookups stop
    server: str | None = None
    summary: dict[str, Any] | None = None  # the receipt's summary, once mined
    context: WriteContext | None = field(default=None, repr=False)

    def looking(self, now: float) -> bool:
        """Whether the gateway still looks for it in the background."""
        return self.state is not TxState.MINED and now < self.until

    def describe(self, now: float) -> dict[str, Any]:
        """The outcome route's answer for this transaction."""
        described: dict[str, Any] = {
            "tx_hash": self.tx_hash,
            "state": str(self.state),
            "looking": self.looking(now),
            "server": self.server,
        }
        if self.context is not None:
            described.update(contract=self.context.contract, function=self.context.function)
        if self.summary is not None:
            described["receipt"] = self.summary
        return described


class OutcomeUnknown(OffloadError):
    """A transaction was handed to a node, but whether it will be mined is not known (yet).

    202 when a node failed after taking it and no node shows it, 504 when the wait for
    its receipt ran out; either way the answer carries its hash and where to ask later.
    """

    def __init__(
        self, status: int, message: str, *, tx_hash: str, state: TxState, status_url: str, server: str | None
    ) -> None:
        super().__init__(
            status,
            message,
            server=server,
            details={"tx_hash": tx_hash, "outcome": "unknown", "state": str(state), "status_url": status_url},
            headers={"Location": status_url},
        )
        self.tx_hash = tx_hash


def is_tx_hash(value: str) -> bool:
    """A transaction hash as nodes take it: 0x and 64 hex digits."""
    return TX_HASH.fullmatch(value) is not None


async def detached(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` outside the current request's context.

    Lookups must go to the server they name, not the one a request pinned with
    ``?server=``, and must not count as the server that answered the request.
    """
    return await asyncio.create_task(coroutine, context=contextvars.Context())


# Receives a mined transaction's hash and the server that showed it; returns its receipt summary.
Summarize = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class OutcomeTracker:
    """Transactions whose outcome the gateway does not know yet, and a background task looking for them.

    Bounded: at most ``max_tracked`` transactions (the oldest is forgotten first),
    each looked for at most ``lookup_s`` seconds. One task does the looking, with one
    JSON-RPC batch per node per round however many transactions are open.
    """

    def __init__(
        self,
        sender: RpcSender,
        summarize: Summarize,
        *,
        status_prefix: str,
        lookup_s: float = DEFAULT_LOOKUP_S,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.summarize = summarize
        self.status_prefix = status_prefix
        self.lookup_s = lookup_s
        self.max_tracked = max_tracked
        self.clock = clock
        self._records: OrderedDict[str, Tracked] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def status_url(self, tx_hash: str) -> str:
        """Where a caller asks for the transaction's outcome."""
        return f"{self.status_prefix}/tx/{tx_hash}"

    def get(self, tx_hash: str) -> Tracked | None:
        return self._records.get(tx_hash.lower())

    def watch(
        self,
        tx_hash: str,
        state: TxState,
        *,
        server: str | None = None,
        context: WriteContext | None = None,
    ) -> Tracked:
        """Track ``tx_hash`` and look for it in the background until it is mined or ``lookup_s`` passes."""
        key = tx_hash.lower()
        now = self.clock()
        record = self._records.get(key)
        if record is None:
            while len(self._records) >= self.max_tracked:
                self._records.popitem(last=False)
            record = self._records[key] = Tracked(key, state, since=now, until=now + self.lookup_s)
        elif record.state is not TxState.MINED:
            record.until = now + self.lookup_s
            if state is TxState.PENDING:
                record.state = state
        record.server = server or record.server
        record.context = context or record.context
        if record.looking(now):
            self._wake.set()
            if self._task is None or self._task.done():
                # A fresh context: the looking must not inherit the request's pinned server.
                self._task = asyncio.get_running_loop().create_task(self._look(), context=contextvars.Context())
        return record

    async def close(self) -> None:
        """Stop looking (the gateway is stopping)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def server_names(self, exclude: Collection[str] = ()) -> list[str]:
        """The pool's servers to ask, all of them but ``exclude``."""
        return [server.name for server in self.sender.plugin.pool().servers if server.name not in exclude]

    async def lookup(self, tx_hash: str, exclude: Collection[str] = ()) -> Sighting:
        """One round: ask every node of the pool but ``exclude`` about ``tx_hash``, all at once."""
        return (await self.lookup_many([tx_hash], exclude))[tx_hash]

    async def lookup_many(self, hashes: list[str], exclude: Collection[str] = ()) -> dict[str, Sighting]:
        """One round for many hashes: a batch per node, every node at once; mined beats pending beats unseen."""
        names = self.server_names(exclude)
        answers = await asyncio.gather(*(detached(self._ask(name, hashes)) for name in names))
        seen = {tx_hash: Sighting(TxState.UNKNOWN) for tx_hash in hashes}
        rank = {TxState.UNKNOWN: 0, TxState.PENDING: 1, TxState.MINED: 2}
        for name, states in zip(names, answers, strict=True):
            for tx_hash, state in states.items():
                if rank[state] > rank[seen[tx_hash].state]:
                    seen[tx_hash] = Sighting(state, name)
        return seen

    async def _ask(self, server: str, hashes: list[str]) -> dict[str, TxState]:
        """What ``server`` knows of ``hashes`` (nothing, if it does not answer in time)."""
        states: dict[str, TxState] = {}
        for start in range(0, len(hashes), LOOKUP_BATCH):
            chunk = hashes[start : start + LOOKUP_BATCH]
            requests = []
            for index, tx_hash in enumerate(chunk):
                # Even ids ask for the receipt, odd ones for the transaction itself.
                for offset, method in enumerate(("eth_getTransactionReceipt", "eth_getTransactionByHash")):
                    requests.append({"jsonrpc": "2.0", "id": 2 * index + offset, "method": method, "params": [tx_hash]})
            try:
                response, _ = await self.sender.send(
                    json.dumps(requests).encode(), idempotent=True, server=server, timeout_s=LOOKUP_TIMEOUT_S
                )
            except OffloadError:
                return states  # a dead or hung node: the others, or the next round, may know
            results = _results_by_id(response)
            for index, tx_hash in enumerate(chunk):
                if isinstance(results.get(2 * index), dict):
                    states[tx_hash] = TxState.MINED
                elif isinstance(results.get(2 * index + 1), dict):
                    states[tx_hash] = TxState.PENDING
        return states

    async def _look(self) -> None:
        """The background task: a round over every open transaction, then a pause that grows."""
        interval = FIRST_INTERVAL_S
        while True:
            now = self.clock()
            open_records = [record for record in self._records.values() if record.looking(now)]
            if not open_records:
                return
            self._wake.clear()
            seen = await self.lookup_many([record.tx_hash for record in open_records])
            for record in open_records:
                await self.update(record, seen[record.tx_hash])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            # A new transaction to look for restarts the fast pace.
            interval = FIRST_INTERVAL_S if self._wake.is_set() else min(interval * 2, MAX_INTERVAL_S)

    async def update(self, record: Tracked, sighting: Sighting) -> None:
        """Record what a lookup saw; a mined transaction gets its receipt summary."""
        if record.state is TxState.MINED or not sighting.found:
            return
        record.server = sighting.server
        if sighting.state is TxState.PENDING:
            record.state = TxState.PENDING
            return
        assert sighting.server is not None
        summary = await self.summarize(record.tx_hash, sighting.server)
        if summary is not None:  # else the node lost it again: the next round asks again
            record.summary, record.state = summary, TxState.MINED

    def resolved(self, tx_hash: str, summary: dict[str, Any], server: str | None) -> None:
        """A request found the receipt itself: a tracked transaction needs no more looking."""
        record = self.get(tx_hash)
        if record is not None:
            record.summary, record.state, record.server = summary, TxState.MINED, server or record.server


def _results_by_id(response: Any) -> dict[int, Any]:
    """A batch answer's results by the ids we gave (malformed entries and errors left out)."""
    if not isinstance(response, list):
        return {}
    return {
        item["id"]: item.get("result")
        for item in response
        if isinstance(item, dict) and isinstance(item.get("id"), int) and not isinstance(item.get("id"), bool)
    }
