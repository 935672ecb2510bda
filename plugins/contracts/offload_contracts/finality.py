"""Which JSON-RPC reads have answers that cannot change, and for how long each answer may be kept.

Pure functions, no I/O: :func:`classify` reads a request (method and params) and
says what its answer depends on; :func:`keep_for` looks at the answer and the
finalized height and says how long it may be kept (0: not at all). What a reorg
can change above the finalized height is never kept, nor is an error, a null
(a node that has not seen a block or transaction yet answers null), or anything
about pending state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any


class Kind(Enum):
    """What a read's answer depends on."""

    FOREVER = "forever"  # the chain's identity: the same as long as the chain is
    AT_BLOCK = "at_block"  # one block named by number: fixed once that block is final
    AT_HASH = "at_hash"  # one block named by hash: fixed once its number is known to be final
    BY_RESULT = "by_result"  # the answer names its own block (result.number / result.blockNumber)
    LATEST = "latest"  # the head of the chain: kept only for the short latest TTL, if one is set
    SHARED = "shared"  # never kept; identical reads in flight may still share one answer
    ALONE = "alone"  # never kept nor shared: pending state, where a read must follow the caller's own writes


@dataclass(frozen=True, slots=True)
class Rule:
    """A read's :class:`Kind`, with the block number or hash it names, if any."""

    kind: Kind
    block: int | None = None
    block_hash: str | None = None

    def at(self, block: int) -> Rule:
        """This rule once the block its hash names is known to be ``block``."""
        return replace(self, kind=Kind.AT_BLOCK, block=block)


FOREVER = Rule(Kind.FOREVER)
LATEST = Rule(Kind.LATEST)
SHARED = Rule(Kind.SHARED)
ALONE = Rule(Kind.ALONE)

# The chain's identity: it does not change without the chain itself changing.
FOREVER_METHODS = frozenset({"eth_chainId", "net_version"})
# Where the block parameter sits, for methods that name a block by number, tag or (EIP-1898) hash.
BLOCK_PARAM = {
    "eth_getBlockByNumber": 0,
    "eth_getBlockTransactionCountByNumber": 0,
    "eth_getTransactionByBlockNumberAndIndex": 0,
    "eth_getBlockReceipts": 0,
    "eth_call": 1,
    "eth_getBalance": 1,
    "eth_getCode": 1,
    "eth_getTransactionCount": 1,
    "eth_getStorageAt": 2,
    "eth_getProof": 2,
}
# A nonce at "latest" is what wallets build their next transaction on: never from a TTL cache.
NO_LATEST_TTL = frozenset({"eth_getTransactionCount"})
# Methods whose answer names its own block: kept once that block is final.
BY_RESULT_METHODS = frozenset(
    {
        "eth_getBlockByHash",
        "eth_getTransactionByHash",
        "eth_getTransactionReceipt",
        "eth_getTransactionByBlockHashAndIndex",
    }
)
# Methods that name a block by hash only, whose answer does not say the block's number.
HASH_PARAM = {"eth_getBlockTransactionCountByHash": 0}
# Block numbers beyond 2**64 are not block numbers (and not worth parsing); a hash is 32 bytes.
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,16}")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
# "earliest" is the oldest block a node still has (it moves on pruned nodes); "safe" and
# "finalized" move with the chain: shared in flight, never kept.
MOVING_TAGS = frozenset({"earliest", "safe", "finalized"})


def block_rule(value: Any) -> Rule:
    """The rule of one block parameter: a number, a tag, a hash, EIP-1898's object, or absent (latest)."""
    if value is None or value == "latest":
        return LATEST
    if value == "pending":
        return ALONE
    if isinstance(value, str):
        if _QUANTITY.fullmatch(value):
            return Rule(Kind.AT_BLOCK, block=int(value, 16))
        if _HASH.fullmatch(value):
            return Rule(Kind.AT_HASH, block_hash=value.lower())
        return SHARED  # a moving tag, or a malformed block the node will refuse (errors are never kept)
    if isinstance(value, dict):
        if set(value) <= {"blockHash", "requireCanonical"} and "blockHash" in value:
            return hash_rule(value["blockHash"])
        if set(value) == {"blockNumber"}:
            return block_rule(value["blockNumber"])
    return SHARED


def hash_rule(value: Any) -> Rule:
    """The rule of a parameter that must be a block hash (anything else is refused by the node: not kept)."""
    if isinstance(value, str) and _HASH.fullmatch(value):
        return Rule(Kind.AT_HASH, block_hash=value.lower())
    return SHARED


def classify(method: str, params: Any) -> Rule:
    """What the answer to ``method`` with ``params`` depends on (the method is a read)."""
    if method in FOREVER_METHODS:
        return FOREVER
    args = params if isinstance(params, list) else []
    if method in BLOCK_PARAM:
        index = BLOCK_PARAM[method]
        rule = block_rule(args[index] if len(args) > index else None)
        if rule.kind is Kind.LATEST and method in NO_LATEST_TTL:
            return SHARED
        return rule
    if method in BY_RESULT_METHODS:
        return Rule(Kind.BY_RESULT)
    if method in HASH_PARAM:
        return hash_rule(args[0] if args else None)
    if method == "eth_getLogs":
        return logs_rule(args[0] if args else None)
    # Anything else about pending state follows the caller's own writes: not even shared in flight.
    return ALONE if "pending" in args else SHARED


def logs_rule(query: Any) -> Rule:
    """eth_getLogs: a block hash, or a range that is final once its last block is."""
    if not isinstance(query, dict):
        return SHARED
    if "blockHash" in query:
        return hash_rule(query["blockHash"])
    first, last = block_rule(query.get("fromBlock")), block_rule(query.get("toBlock"))
    kinds = {first.kind, last.kind}
    if Kind.ALONE in kinds:
        return ALONE
    if kinds == {Kind.AT_BLOCK}:
        return Rule(Kind.AT_BLOCK, block=max(first.block or 0, last.block or 0))
    if kinds <= {Kind.AT_BLOCK, Kind.LATEST}:
        return LATEST
    return SHARED  # a moving tag, or a hash where a number belongs


def answered(response: Any) -> bool:
    """Whether ``response`` is a JSON-RPC result worth keeping: no error, and not null."""
    return isinstance(response, dict) and "error" not in response and response.get("result") is not None


def result_block(result: Any) -> int | None:
    """The block an answer names itself: a block's ``number``, a transaction's or receipt's ``blockNumber``."""
    if not isinstance(result, dict):
        return None
    value = result.get("blockNumber", result.get("number"))
    if isinstance(value, str) and _QUANTITY.fullmatch(value):
        return int(value, 16)
    return None  # a pending transaction's blockNumber is null


def keep_for(rule: Rule, response: Any, finalized: int | None, latest_ttl_s: float) -> float:
    """How long ``response`` to a read of ``rule`` may be kept, in seconds (``math.inf``: until evicted; 0: not).

    ``finalized`` is the highest block no reorg is expected to change (None: none known yet).
    A :attr:`Kind.AT_HASH` rule must first be resolved to its block number (:meth:`Rule.at`).
    """
    if not answered(response):
        return 0.0
    kind = rule.kind
    if kind is Kind.FOREVER:
        return math.inf
    if kind is Kind.LATEST:
        return max(latest_ttl_s, 0.0)
    if kind is Kind.AT_BLOCK:
        block = rule.block
    elif kind is Kind.BY_RESULT:
        block = result_block(response["result"])
    else:
        return 0.0
    if block is None or finalized is None or block > finalized:
        return 0.0
    return math.inf
