"""The read cache in front of the nodes: kept answers, and identical reads in flight sent once.

Both ways reads reach a node go through :class:`CachedReads`: ``POST /rpc``
(:mod:`.rpc_proxy`) and the web3.py provider behind the REST views
(:class:`.rpc.EngineProvider`). A read is keyed by its method, its params as
canonical JSON and the caller's ``?server=`` pin: the same key is the same
question. :mod:`.finality` decides what an answer depends on and how long it
may be kept; the pool's :class:`offload.ReadCache` keeps it (in memory, and in
the gateway's shared store when there is one) and runs identical concurrent
misses once. A kept answer is the bytes of its ``"result"`` member, without the
node's id, so that a hit splices the caller's id in without decoding anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from offload import Fresh, ReadCache

from .finality import SHARED, Kind, Rule, answered, classify, keep_for, result_block
from .rpc import READ_METHODS, RpcSender, pinned_server, servers_used

# Mainnet-like safety by default: dev chains have no finality of their own, and 64 blocks
# (two epochs) is what an Ethereum block needs to be finalized; a dev setup lowers it.
DEFAULT_CONFIRMATIONS = 64
_ENVELOPE_START = b'{"jsonrpc":"2.0","id":'


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """``[plugins.contracts]``'s cache settings (see the plugin's README, "Read cache")."""

    cache: bool = True
    confirmations: int = DEFAULT_CONFIRMATIONS
    latest_ttl_s: float = 0.0  # 0: reads at "latest" are never kept
    coalesce: bool = True


@dataclass(frozen=True, slots=True)
class Lookup:
    """One read as the cache sees it: its key, what its answer depends on, and the request itself."""

    key: str
    rule: Rule
    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class Answer:
    """A node's JSON-RPC response (its id is not the caller's), and who answered ("" when kept)."""

    response: Any
    server: str

    def for_id(self, request_id: Any) -> Any:
        """The response under the caller's id."""
        if isinstance(self.response, dict):
            return {**self.response, "id": request_id}
        return self.response


def request_key(method: str, params: Any, pin: str | None) -> str:
    """The cache key of a read: method, pinned server, and params as canonical JSON."""
    return f"rpc:{method}:{pin or ''}:{json.dumps(params, sort_keys=True, separators=(',', ':'))}"


def encode_kept(response: dict[str, Any]) -> bytes:
    """What is kept of a result: its ``"result":...`` member, ready to be spliced into any caller's answer."""
    return b'"result":' + json.dumps(response["result"], separators=(",", ":")).encode()


def decode_kept(kept: bytes) -> Answer:
    """A kept answer as a response object (without an id)."""
    return Answer({"jsonrpc": "2.0", **json.loads(b"{" + kept + b"}")}, "")


def splice(kept: bytes, request_id: Any) -> bytes:
    """The JSON-RPC answer to the caller with ``request_id`` from a kept result, without decoding it."""
    # An integer as it is; a string or null (the proxy checked which ids it echoes) JSON-escaped.
    encoded_id = str(request_id).encode() if isinstance(request_id, int) else json.dumps(request_id).encode()
    return b"".join((_ENVELOPE_START, encoded_id, b",", kept, b"}"))


def summary(outcomes: Sequence[str]) -> str | None:
    """One header value for several reads: their outcome if they share one, else "partial"; None if no reads."""
    if not outcomes:
        return None
    first = outcomes[0]
    return first if all(outcome == first for outcome in outcomes) else "partial"


class CachedReads:
    """Answers reads from the pool's cache, or from one node call shared by identical concurrent reads."""

    def __init__(
        self,
        sender: RpcSender,
        settings: CacheSettings,
        *,
        finalized: Callable[[], int | None],
        height_of: Callable[[str], int | None],
        cache: Callable[[], ReadCache] | None = None,
    ) -> None:
        self.sender = sender
        self.settings = settings
        self.finalized = finalized  # the highest block no reorg is expected to change (see .reorgs)
        self.height_of = height_of  # a server's latest probed height
        self._cache_of = cache or sender.plugin.read_cache
        self._cache: ReadCache | None = None

    @property
    def enabled(self) -> bool:
        """Whether reads go through here at all (``cache`` or ``coalesce`` is on)."""
        return self.settings.cache or self.settings.coalesce

    @property
    def cache(self) -> ReadCache:
        """The pool's cache (looked up once the gateway has attached it, then remembered)."""
        if self._cache is None:
            self._cache = self._cache_of()
        return self._cache

    def lookup(self, method: str, params: Any) -> Lookup | None:
        """The read as the cache sees it; None if it must go to a node alone (writes, pending state)."""
        if method not in READ_METHODS or not self.enabled:
            return None
        rule = classify(method, params)
        if rule.kind is Kind.ALONE:
            return None
        if not self.settings.cache or (rule.kind is Kind.LATEST and self.settings.latest_ttl_s <= 0):
            rule = SHARED  # nothing of it is kept: no lookup in memory or the shared store either
        return Lookup(request_key(method, params, pinned_server.get()), rule, method, params)

    def hit(self, lookup: Lookup) -> bytes | None:
        """The kept result of ``lookup`` in this process's memory, counted as a hit; None otherwise (not counted)."""
        if lookup.rule.kind is Kind.SHARED:
            return None
        kept = self.cache.get_now(lookup.key)
        if kept is not None:
            self.cache.count("hit")
        return kept

    async def read(self, lookup: Lookup, *, timeout_s: float | None = None) -> tuple[Answer, str]:
        """The answer to ``lookup`` and how it was obtained: "hit", "coalesced" or "miss" (counted)."""
        cache = self.cache
        if lookup.rule.kind is not Kind.SHARED:
            answer, outcome = await cache.load(
                lookup.key, lambda: self._fresh(lookup, timeout_s), decode_kept, coalesce=self.settings.coalesce
            )
        elif self.settings.coalesce:
            answer, outcome = await cache.coalesce(lookup.key, lambda: self._send(lookup, timeout_s))
        else:
            answer, outcome = await self._send(lookup, timeout_s), "miss"
            cache.count(outcome)
        if outcome == "coalesced" and answer.server:
            # The call was made in the first caller's request: this one used that server too.
            used = servers_used.get()
            if used is not None:
                used.append(answer.server)
        return answer, outcome

    async def keep(self, lookup: Lookup, answer: Answer, generation: str) -> None:
        """Keep an answer obtained outside :meth:`read` (an element of a forwarded batch), if it may be kept.

        ``generation`` is the cache's generation when the request left: an answer from before
        an invalidation may be from the old chain and is kept nowhere.
        """
        if lookup.rule.kind is Kind.SHARED:
            return
        ttl_s = await self._ttl(lookup.rule, answer)
        if ttl_s > 0 and self.cache.generation == generation:
            await self.cache.put(lookup.key, encode_kept(answer.response), ttl_s)

    async def _send(self, lookup: Lookup, timeout_s: float | None) -> Answer:
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": lookup.method}
        if lookup.params is not None:
            request["params"] = lookup.params
        # allow_nan=False: a non-finite number must never reach a node as invalid JSON.
        body = json.dumps(request, allow_nan=False).encode()
        response, server = await self.sender.send(body, idempotent=True, timeout_s=timeout_s)
        return Answer(response, server)

    async def _fresh(self, lookup: Lookup, timeout_s: float | None) -> Fresh[Answer]:
        answer = await self._send(lookup, timeout_s)
        ttl_s = await self._ttl(lookup.rule, answer)
        if ttl_s <= 0:
            return Fresh(answer)
        return Fresh(answer, encode_kept(answer.response), ttl_s)

    async def _ttl(self, rule: Rule, answer: Answer) -> float:
        """How long ``answer`` may be kept (0: not at all)."""
        if not answered(answer.response):
            return 0.0
        if rule.kind is Kind.AT_HASH:
            number = await self.block_number(rule.block_hash or "")
            if number is None:
                return 0.0
            rule = rule.at(number)
        ttl_s = keep_for(rule, answer.response, self.finalized(), self.settings.latest_ttl_s)
        if ttl_s > 0 and rule.kind is Kind.AT_BLOCK and answer.server:
            # A node that has not reached the block may answer as if it were empty (eth_getLogs): not kept.
            height = self.height_of(answer.server)
            if height is None or height < (rule.block or 0):
                return 0.0
        return ttl_s

    async def block_number(self, block_hash: str) -> int | None:
        """The number of the block with ``block_hash`` (from the cache once it is final); None if unknown."""
        lookup = self.lookup("eth_getBlockByHash", [block_hash, False])
        if lookup is None:
            return None
        answer, _ = await self.read(lookup)
        return result_block(answer.response.get("result")) if answered(answer.response) else None
