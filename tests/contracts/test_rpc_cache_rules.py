"""Which reads the contracts plugin's cache may keep, and for how long (pure rules, no servers)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from offload_contracts.finality import ALONE, LATEST, SHARED, Kind, Rule, classify, keep_for
from offload_contracts.rpc_cache import decode_kept, encode_kept, request_key, splice, summary

HASH = "0x" + "ab" * 32
CALL = {"to": "0x" + "11" * 20, "data": "0x6d4ce63c"}


@pytest.mark.parametrize(
    ("method", "params", "rule"),
    [
        ("eth_chainId", [], Rule(Kind.FOREVER)),
        ("net_version", None, Rule(Kind.FOREVER)),
        ("eth_getBlockByNumber", ["0x10", False], Rule(Kind.AT_BLOCK, block=16)),
        ("eth_getBlockByNumber", ["latest", False], LATEST),
        ("eth_getBlockByNumber", ["pending", False], ALONE),
        ("eth_getBlockByNumber", ["finalized", False], SHARED),
        ("eth_getBlockByNumber", ["earliest", False], SHARED),
        ("eth_getBlockTransactionCountByNumber", ["0x3"], Rule(Kind.AT_BLOCK, block=3)),
        ("eth_getTransactionByBlockNumberAndIndex", ["0x3", "0x0"], Rule(Kind.AT_BLOCK, block=3)),
        ("eth_getBlockReceipts", ["0x3"], Rule(Kind.AT_BLOCK, block=3)),
        ("eth_getBlockReceipts", [HASH], Rule(Kind.AT_HASH, block_hash=HASH)),
        ("eth_call", [CALL, "0x5"], Rule(Kind.AT_BLOCK, block=5)),
        ("eth_call", [CALL], LATEST),  # the block omitted is latest
        ("eth_call", [CALL, "latest"], LATEST),
        ("eth_call", [CALL, "pending"], ALONE),
        ("eth_call", [CALL, {"blockNumber": "0x5"}], Rule(Kind.AT_BLOCK, block=5)),
        ("eth_call", [CALL, {"blockHash": HASH.upper().replace("0X", "0x")}], Rule(Kind.AT_HASH, block_hash=HASH)),
        ("eth_call", [CALL, {"blockHash": HASH, "requireCanonical": True}], Rule(Kind.AT_HASH, block_hash=HASH)),
        ("eth_call", [CALL, {"blockHash": "0x12"}], SHARED),  # malformed: the node refuses it
        ("eth_call", [CALL, "0x" + "f" * 17], SHARED),  # not a block number
        ("eth_getBalance", ["0x" + "11" * 20, "0x1"], Rule(Kind.AT_BLOCK, block=1)),
        ("eth_getCode", ["0x" + "11" * 20, HASH], Rule(Kind.AT_HASH, block_hash=HASH)),
        ("eth_getStorageAt", ["0x" + "11" * 20, "0x0", "0x2"], Rule(Kind.AT_BLOCK, block=2)),
        ("eth_getTransactionCount", ["0x" + "11" * 20, "0x2"], Rule(Kind.AT_BLOCK, block=2)),
        ("eth_getTransactionCount", ["0x" + "11" * 20, "latest"], SHARED),  # a nonce: never from a TTL
        ("eth_getTransactionCount", ["0x" + "11" * 20, "pending"], ALONE),
        ("eth_getBlockByHash", [HASH, False], Rule(Kind.BY_RESULT)),
        ("eth_getTransactionByHash", [HASH], Rule(Kind.BY_RESULT)),
        ("eth_getTransactionReceipt", [HASH], Rule(Kind.BY_RESULT)),
        ("eth_getBlockTransactionCountByHash", [HASH], Rule(Kind.AT_HASH, block_hash=HASH)),
        ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x4"}], Rule(Kind.AT_BLOCK, block=4)),
        ("eth_getLogs", [{"fromBlock": "0x1"}], LATEST),
        ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "pending"}], ALONE),
        ("eth_getLogs", [{"fromBlock": "earliest", "toBlock": "0x4"}], SHARED),
        ("eth_getLogs", [{"blockHash": HASH}], Rule(Kind.AT_HASH, block_hash=HASH)),
        ("eth_getLogs", ["nonsense"], SHARED),
        ("eth_blockNumber", [], SHARED),
        ("eth_gasPrice", [], SHARED),
        ("eth_estimateGas", [CALL], SHARED),
        ("eth_estimateGas", [CALL, "pending"], ALONE),
        ("eth_feeHistory", ["0x4", "pending", []], ALONE),
    ],
)
def test_classify(method: str, params: Any, rule: Rule) -> None:
    assert classify(method, params) == rule


def result(value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "result": value}


@pytest.mark.parametrize(
    ("rule", "response", "finalized", "latest_ttl_s", "kept_s"),
    [
        (Rule(Kind.FOREVER), result("0x1"), None, 0.0, math.inf),
        (Rule(Kind.AT_BLOCK, block=10), result({"number": "0xa"}), 10, 0.0, math.inf),
        (Rule(Kind.AT_BLOCK, block=11), result({"number": "0xb"}), 10, 0.0, 0.0),  # above finalized
        (Rule(Kind.AT_BLOCK, block=1), result("0x0"), None, 0.0, 0.0),  # no finalized height known yet
        (Rule(Kind.AT_BLOCK, block=1), result(None), 10, 0.0, 0.0),  # null: the node does not know it yet
        (Rule(Kind.AT_BLOCK, block=1), {"jsonrpc": "2.0", "id": 1, "error": {"code": 3, "message": "x"}}, 10, 0.0, 0.0),
        (Rule(Kind.AT_BLOCK, block=1), result([]), 10, 0.0, math.inf),  # no logs in a final range: final too
        (Rule(Kind.BY_RESULT), result({"blockNumber": "0x9"}), 10, 0.0, math.inf),
        (Rule(Kind.BY_RESULT), result({"blockNumber": "0xb"}), 10, 0.0, 0.0),
        (Rule(Kind.BY_RESULT), result({"blockNumber": None}), 10, 0.0, 0.0),  # a pending transaction
        (Rule(Kind.AT_HASH, block_hash=HASH), result("0x1"), 10, 0.0, 0.0),  # unresolved: never
        (Rule(Kind.AT_HASH, block_hash=HASH).at(3), result("0x1"), 10, 0.0, math.inf),
        (LATEST, result("0x1"), 10, 0.0, 0.0),
        (LATEST, result("0x1"), 10, 2.5, 2.5),
        (SHARED, result("0x1"), 10, 2.5, 0.0),
    ],
)
def test_keep_for(rule: Rule, response: Any, finalized: int | None, latest_ttl_s: float, kept_s: float) -> None:
    assert keep_for(rule, response, finalized, latest_ttl_s) == kept_s


@pytest.mark.parametrize("request_id", [7, "seven", None, 'a"quote'])
def test_a_kept_answer_is_spliced_under_any_callers_id(request_id: Any) -> None:
    kept = encode_kept(result({"number": "0x1", "hash": HASH}))
    assert json.loads(splice(kept, request_id)) == {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {"number": "0x1", "hash": HASH},
    }
    assert decode_kept(kept).response == {"jsonrpc": "2.0", "result": {"number": "0x1", "hash": HASH}}


def test_keys_ignore_key_order_but_not_pins_or_params() -> None:
    assert request_key("eth_call", [{"a": 1, "b": 2}], None) == request_key("eth_call", [{"b": 2, "a": 1}], None)
    assert request_key("eth_call", [CALL], None) != request_key("eth_call", [CALL], "near")
    assert request_key("eth_call", [CALL, "0x1"], None) != request_key("eth_call", [CALL, "0x2"], None)


def test_summary_of_several_reads() -> None:
    assert summary([]) is None
    assert summary(["hit", "hit"]) == "hit"
    assert summary(["miss"]) == "miss"
    assert summary(["hit", "miss"]) == "partial"
