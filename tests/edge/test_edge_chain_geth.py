"""The embedded chain answers as geth does: JSON-RPC envelopes, the txpool, fees, logs.

Every test talks real HTTP to a real edge on a loopback ephemeral port.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import rlp
from eth_account import Account
from sanic import Request, Sanic
from sanic.response import HTTPResponse, redirect
from web3 import Web3
from web3.exceptions import TransactionNotFound

from offload.pytest_plugin import ServerFactory
from offload_edge.chain.artifacts import load_artifact
from offload_edge.chain.jsonrpc import MAX_BATCH
from offload_edge.chain.node import DEV_ACCOUNT, DEV_PRIVATE_KEY, demo_contract_addresses
from offload_edge.chain.txpool import MAX_PER_SENDER

from conftest import EdgeFactory, Web3Factory

COUNTER = demo_contract_addresses()["Counter"]
COUNTER_ABI = load_artifact("Counter")["abi"]
# An offline contract object: encodes calls and decodes receipts, never connects.
OFFLINE_COUNTER = Web3().eth.contract(address=COUNTER, abi=COUNTER_ABI)
GWEI = 10**9


async def post(url: str, payload: Any) -> tuple[int, bytes]:
    """POST ``payload`` (bytes as they are, anything else as JSON); returns (status, raw body)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, await response.read()


async def call(url: str, method: str, *params: Any) -> dict[str, Any]:
    """One JSON-RPC call with id 1; returns the whole answer (``result`` or ``error``)."""
    status, body = await post(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    assert status == 200, body
    return json.loads(body)


def request(request_id: Any, method: str, *params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}


def sign_counter_calls(chain_id: int, first_nonce: int, amounts: list[int], **overrides: Any) -> list[str]:
    """Signed ``incrementBy(amount)`` transactions from the dev account, consecutive nonces from ``first_nonce``."""
    account = Account.from_key(DEV_PRIVATE_KEY)
    base = {
        "to": COUNTER,
        "value": 0,
        "gas": 100_000,
        "maxFeePerGas": 100 * GWEI,
        "maxPriorityFeePerGas": GWEI,
        "chainId": chain_id,
    }
    signed = []
    for offset, amount in enumerate(amounts):
        transaction = {**base, "data": OFFLINE_COUNTER.encode_abi("incrementBy", args=[amount])}
        transaction.update(nonce=first_nonce + offset, **overrides)
        signed.append(account.sign_transaction(transaction).raw_transaction.to_0x_hex())
    return signed


async def chain_edge(edge: EdgeFactory) -> tuple[str, int, int]:
    """A fresh chain edge: (rpc URL, chain id, the dev account's next nonce)."""
    node = await edge("chain", chain=True)
    url = node.make_url("/rpc")
    chain_id = int((await call(url, "eth_chainId"))["result"], 16)
    nonce = int((await call(url, "eth_getTransactionCount", DEV_ACCOUNT, "latest"))["result"], 16)
    return url, chain_id, nonce


# --------------------------------------------------------------------------- the JSON-RPC envelope


async def test_batch_limit_is_geths(edge: EdgeFactory) -> None:
    url, _, _ = await chain_edge(edge)
    status, body = await post(url, [request(i, "eth_chainId") for i in range(MAX_BATCH)])
    answers = json.loads(body)
    assert status == 200 and len(answers) == MAX_BATCH
    assert {answer["id"] for answer in answers} == set(range(MAX_BATCH))

    # One request more and nothing runs: a one-element batch carrying the first call's id.
    send = {"from": DEV_ACCOUNT, "to": DEV_ACCOUNT, "value": "0x1"}
    notification = {"jsonrpc": "2.0", "method": "eth_sendTransaction", "params": [send]}
    oversized = [notification] + [request(f"call-{i}", "eth_sendTransaction", send) for i in range(MAX_BATCH)]
    before = await call(url, "eth_blockNumber")
    status, body = await post(url, oversized)
    assert status == 200
    (answer,) = json.loads(body)
    assert answer["id"] == "call-0" and "result" not in answer
    assert answer["error"]["code"] == -32600 and "batch too large" in answer["error"]["message"]
    assert (await call(url, "eth_blockNumber"))["result"] == before["result"]


async def test_ids_must_be_strings_numbers_or_null(edge: EdgeFactory) -> None:
    url, _, _ = await chain_edge(edge)
    batch = [request(request_id, "eth_chainId") for request_id in ({"a": 1}, [1], True, "x", 7, 2.5, None)]
    status, body = await post(url, batch)
    answers = json.loads(body)
    assert status == 200 and len(answers) == len(batch)
    for answer in answers[:3]:
        assert answer["id"] is None and answer["error"]["code"] == -32600
    assert [answer["id"] for answer in answers[3:]] == ["x", 7, 2.5, None]
    assert all(answer["result"].startswith("0x") for answer in answers[3:])

    # A number too large for a float would be echoed as Infinity, which is not JSON.
    status, body = await post(url, b'{"jsonrpc":"2.0","id":1e400,"method":"eth_chainId"}')
    assert status == 200 and json.loads(body) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "invalid request"},
    }
    for not_json in (b'{"jsonrpc":"2.0","id":NaN,"method":"eth_chainId"}', b"[" * 100_000):
        status, body = await post(url, not_json)
        assert status == 200 and json.loads(body)["error"]["code"] == -32700


async def test_notifications_run_but_get_no_answer(edge: EdgeFactory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    (raw,) = sign_counter_calls(chain_id, nonce, [4])
    status, body = await post(url, {"jsonrpc": "2.0", "method": "eth_sendRawTransaction", "params": [raw]})
    assert (status, body) == (200, b"")
    # It was sent all the same.
    counter_value = await call(url, "eth_call", {"to": COUNTER, "data": OFFLINE_COUNTER.encode_abi("get", args=[])})
    assert int(counter_value["result"], 16) == 4

    status, body = await post(url, [{"jsonrpc": "2.0", "method": "eth_chainId"}] * 3)
    assert (status, body) == (200, b"")


# --------------------------------------------------------------------------- the txpool


async def test_nonce_gap_waits_then_mines_in_nonce_order(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    w3 = web3_client(url)
    first, second, third = sign_counter_calls(chain_id, nonce, [1, 2, 3])
    start_block = await w3.eth.block_number

    # The later two arrive first, in reverse: both wait, visible as pending, nothing mined.
    waiting = [await w3.eth.send_raw_transaction(raw) for raw in (third, second)]
    for tx_hash, expected_nonce in zip(waiting, (nonce + 2, nonce + 1), strict=True):
        pending = await w3.eth.get_transaction(tx_hash)
        assert pending["hash"] == tx_hash and pending["nonce"] == expected_nonce
        assert pending["blockNumber"] is None and pending["from"] == DEV_ACCOUNT
        try:
            await w3.eth.get_transaction_receipt(tx_hash)
            raise AssertionError("a waiting transaction has no receipt")
        except TransactionNotFound:
            pass
    assert await w3.eth.block_number == start_block
    assert await w3.eth.get_transaction_count(DEV_ACCOUNT, "pending") == nonce

    # Resending a waiting transaction is refused as geth refuses it.
    assert (await call(url, "eth_sendRawTransaction", second))["error"] == {"code": -32000, "message": "already known"}

    # Filling the gap mines all three before the answer comes back, in nonce order.
    filled = await w3.eth.send_raw_transaction(first)
    receipts = [await w3.eth.get_transaction_receipt(tx_hash) for tx_hash in (filled, *reversed(waiting))]
    assert [receipt["status"] for receipt in receipts] == [1, 1, 1]
    assert [receipt["blockNumber"] for receipt in receipts] == [start_block + 1, start_block + 2, start_block + 3]
    running_totals = [OFFLINE_COUNTER.events.Incremented().process_receipt(r)[0]["args"]["value"] for r in receipts]
    assert running_totals == [1, 3, 6]
    assert await w3.eth.get_transaction_count(DEV_ACCOUNT) == nonce + 3
    mined = await w3.eth.get_transaction(waiting[0])
    assert mined["blockNumber"] == start_block + 3


async def test_txpool_per_sender_limit_then_all_released(edge: EdgeFactory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    gap, *held = sign_counter_calls(chain_id, nonce, [1] * (MAX_PER_SENDER + 2))
    status, body = await post(url, [request(i, "eth_sendRawTransaction", raw) for i, raw in enumerate(held)])
    answers = json.loads(body)
    assert status == 200 and len(answers) == MAX_PER_SENDER + 1
    assert all("result" in answer for answer in answers[:MAX_PER_SENDER])
    refused = answers[MAX_PER_SENDER]["error"]
    assert refused["code"] == -32000 and refused["message"].startswith("txpool is full")
    # The refused one is not kept: nothing knows its hash.
    assert (await call(url, "eth_getTransactionByHash", Web3.keccak(hexstr=held[-1]).to_0x_hex()))["result"] is None

    assert "result" in await call(url, "eth_sendRawTransaction", gap)
    count = await call(url, "eth_getTransactionCount", DEV_ACCOUNT, "latest")
    assert int(count["result"], 16) == nonce + 1 + MAX_PER_SENDER
    counter_value = await call(url, "eth_call", {"to": COUNTER, "data": OFFLINE_COUNTER.encode_abi("get", args=[])})
    assert int(counter_value["result"], 16) == 1 + MAX_PER_SENDER


async def test_transactions_that_could_never_run_are_not_held(edge: EdgeFactory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    (too_little_gas,) = sign_counter_calls(chain_id, nonce + 1, [1], gas=20_000)
    answer = await call(url, "eth_sendRawTransaction", too_little_gas)
    assert answer["error"]["code"] == -32000 and answer["error"]["message"].startswith("intrinsic gas too low")

    pauper = Account.create()
    unaffordable = pauper.sign_transaction(
        {"to": DEV_ACCOUNT, "value": 1, "gas": 21_000, "gasPrice": GWEI, "nonce": 1, "chainId": chain_id}
    )
    answer = await call(url, "eth_sendRawTransaction", unaffordable.raw_transaction.to_0x_hex())
    assert answer["error"]["code"] == -32000
    assert answer["error"]["message"].startswith("insufficient funds for gas * price + value: balance 0")


async def test_raw_transactions_for_another_chain_are_refused(edge: EdgeFactory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    start_block = (await call(url, "eth_blockNumber"))["result"]
    (elsewhere,) = sign_counter_calls(chain_id + 1, nonce, [1])
    answer = await call(url, "eth_sendRawTransaction", elsewhere)
    assert answer["error"] == {
        "code": -32000,
        "message": f"invalid chain id for signer: have {chain_id + 1} want {chain_id}",
    }
    # Nor may a transaction without replay protection (no chain id at all) get in.
    unprotected = Account.from_key(DEV_PRIVATE_KEY).sign_transaction(
        {"to": DEV_ACCOUNT, "value": 1, "gas": 21_000, "gasPrice": 100 * GWEI, "nonce": nonce}
    )
    answer = await call(url, "eth_sendRawTransaction", unprotected.raw_transaction.to_0x_hex())
    assert answer["error"]["code"] == -32000 and "replay-protected" in answer["error"]["message"]
    assert (await call(url, "eth_blockNumber"))["result"] == start_block
    assert int((await call(url, "eth_getTransactionCount", DEV_ACCOUNT))["result"], 16) == nonce


async def test_malformed_transactions_and_unmined_blocks_are_clean_errors(edge: EdgeFactory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    legacy = Account.from_key(DEV_PRIVATE_KEY).sign_transaction(
        {"to": DEV_ACCOUNT, "value": 1, "gas": 21_000, "gasPrice": 100 * GWEI, "nonce": nonce, "chainId": chain_id}
    )
    fields = rlp.decode(bytes(legacy.raw_transaction))
    bad_signature = "0x" + rlp.encode([*fields[:8], b"\xff" * 32]).hex()  # s beyond the curve order
    for raw in ("0x1234", "0x02c0", bad_signature):
        answer = await call(url, "eth_sendRawTransaction", raw)
        assert answer["error"]["code"] == -32000 and answer["error"]["message"].startswith("invalid transaction")
    assert (await call(url, "eth_sendRawTransaction", "1234"))["error"]["code"] == -32602
    # State at a block that does not exist yet: geth's "header not found", not an internal error.
    for method, params in (("eth_getBalance", [DEV_ACCOUNT]), ("eth_call", [{"to": COUNTER}])):
        answer = await call(url, method, *params, "0x999")
        assert answer["error"] == {"code": -32000, "message": "header not found"}


# --------------------------------------------------------------------------- fees


async def test_gas_price_and_priority_fee(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    url, _, _ = await chain_edge(edge)
    w3 = web3_client(url)
    pending = await w3.eth.get_block("pending")
    assert await w3.eth.max_priority_fee == GWEI
    assert await w3.eth.gas_price == pending["baseFeePerGas"] + GWEI


async def test_fee_history_shape_and_rewards(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    w3 = web3_client(url)
    for raw in sign_counter_calls(chain_id, nonce, [1, 1]):  # one block each, 1 gwei tip
        await w3.eth.send_raw_transaction(raw)
    latest = await w3.eth.block_number

    history = await w3.eth.fee_history(3, "latest", [10, 50, 90])
    assert history["oldestBlock"] == latest - 2
    assert len(history["gasUsedRatio"]) == 3 and len(history["reward"]) == 3
    # One base fee more than blocks: the last is what the next block charges.
    assert len(history["baseFeePerGas"]) == 4
    assert history["baseFeePerGas"][-1] == (await w3.eth.get_block("pending"))["baseFeePerGas"]
    for offset, number in enumerate(range(latest - 2, latest + 1)):
        block = await w3.eth.get_block(number)
        assert history["baseFeePerGas"][offset] == block["baseFeePerGas"]
        assert history["gasUsedRatio"][offset] == block["gasUsed"] / block["gasLimit"]
    assert history["reward"][-2:] == [[GWEI] * 3, [GWEI] * 3]

    # More blocks than the chain has: it starts at genesis. No percentiles: no rewards.
    everything = await w3.eth.fee_history(1000, "latest")
    assert everything["oldestBlock"] == 0 and len(everything["gasUsedRatio"]) == latest + 1
    assert "reward" not in everything
    decreasing = await call(url, "eth_feeHistory", "0x2", "latest", [50, 10])
    assert decreasing["error"]["code"] == -32602 and "invalid reward percentile" in decreasing["error"]["message"]


# --------------------------------------------------------------------------- logs, blocks, storage


async def test_get_logs_returns_counter_events(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    w3 = web3_client(url)
    hashes = [await w3.eth.send_raw_transaction(raw) for raw in sign_counter_calls(chain_id, nonce, [2, 5])]
    receipts = [await w3.eth.get_transaction_receipt(tx_hash) for tx_hash in hashes]
    incremented = OFFLINE_COUNTER.events.Incremented()

    logs = await w3.eth.get_logs(
        {"address": COUNTER, "fromBlock": 0, "toBlock": "latest", "topics": [incremented.topic]}
    )
    decoded = [incremented.process_log(log) for log in logs]
    assert [event["args"]["value"] for event in decoded] == [2, 7]
    assert all(event["args"]["by"] == DEV_ACCOUNT for event in decoded)
    assert [log["transactionHash"] for log in logs] == hashes
    assert all(log["removed"] is False for log in logs)

    (one,) = await w3.eth.get_logs({"blockHash": receipts[1]["blockHash"]})
    assert incremented.process_log(one)["args"]["value"] == 7
    latest = await w3.eth.block_number
    assert await w3.eth.get_logs({"fromBlock": latest + 5, "toBlock": latest + 9}) == []
    backwards = await call(url, "eth_getLogs", {"fromBlock": hex(latest), "toBlock": "0x1"})
    assert backwards["error"]["code"] == -32602


async def test_block_by_hash_and_storage(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    url, chain_id, nonce = await chain_edge(edge)
    w3 = web3_client(url)
    tx_hash = await w3.eth.send_raw_transaction(sign_counter_calls(chain_id, nonce, [9])[0])
    receipt = await w3.eth.get_transaction_receipt(tx_hash)
    block = await w3.eth.get_block(receipt["blockHash"], full_transactions=True)
    assert block["number"] == receipt["blockNumber"] and block["hash"] == receipt["blockHash"]
    assert [transaction["hash"] for transaction in block["transactions"]] == [tx_hash]
    assert (await call(url, "eth_getBlockByHash", "0x" + "ab" * 32, False))["result"] is None
    # Counter keeps its value in slot 0.
    assert int.from_bytes(await w3.eth.get_storage_at(COUNTER, 0), "big") == 9
    assert int.from_bytes(await w3.eth.get_storage_at(COUNTER, 0, receipt["blockNumber"] - 1), "big") == 0


# --------------------------------------------------------------------------- relays


async def test_relay_does_not_follow_redirects(edge: EdgeFactory, offload_server: ServerFactory) -> None:
    origin = await edge("chain", chain=True)
    # A loopback node that answers every call with a redirect: a relay must pass it on, not follow it.
    redirecting = Sanic("redirecting_chain_node")

    @redirecting.post("/rpc")
    async def moved(request: Request) -> HTTPResponse:
        return redirect(origin.make_url("/rpc"), status=307)

    mover = await offload_server(redirecting)
    relay = await edge("relay", chain_upstream=mover.make_url("/rpc"))
    status, body = await post(relay.make_url("/rpc"), request(1, "eth_chainId"))
    assert status == 307 and b"result" not in body
    # Through the origin directly the same call works.
    assert "result" in await call(origin.make_url("/rpc"), "eth_chainId")
