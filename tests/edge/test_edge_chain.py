"""The edge's embedded EVM chain and relays, driven by an unmodified web3.py client."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from web3.exceptions import ContractLogicError

from offload_edge.chain.artifacts import load_artifact
from offload_edge.chain.node import DEV_ACCOUNT, DEV_PRIVATE_KEY, demo_contract_addresses

from chain_helpers import deploy, transact
from conftest import EdgeFactory, Web3Factory


async def rpc(url: str, payload: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=payload) as response:
        return response.status, await response.json(content_type=None)


async def test_demo_contracts_live_at_fixed_addresses(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    node = await edge("chain", chain=True)
    async with aiohttp.ClientSession() as session, session.get(node.make_url("/chain/contracts")) as response:
        listing = await response.json()
    assert listing["data"] == demo_contract_addresses()
    w3 = web3_client(node.make_url("/rpc"))
    assert await w3.eth.chain_id == listing["chain_id"]
    assert Account.from_key(DEV_PRIVATE_KEY).address == DEV_ACCOUNT
    hello = w3.eth.contract(address=listing["data"]["Hello"], abi=load_artifact("Hello")["abi"])
    assert await hello.functions.hello().call() == "Hello, world!"
    assert await hello.functions.greet("edge").call() == "Hello, edge!"


async def test_real_client_deploys_transacts_and_decodes_events(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    node = await edge("chain", chain=True)
    w3 = web3_client(node.make_url("/rpc"))
    address = await deploy(w3, "Counter", DEV_PRIVATE_KEY)
    counter = w3.eth.contract(address=address, abi=load_artifact("Counter")["abi"])
    assert await counter.functions.get().call() == 0
    receipt = await transact(w3, counter, "increment", DEV_PRIVATE_KEY)
    assert receipt["status"] == 1
    (event,) = counter.events.Incremented().process_receipt(receipt)
    assert event["args"]["by"] == DEV_ACCOUNT and event["args"]["value"] == 1
    assert await counter.functions.get().call() == 1
    logs = await w3.eth.get_logs({"address": address, "fromBlock": 0, "toBlock": "latest"})
    assert len(logs) == 1 and logs[0]["transactionHash"] == receipt["transactionHash"]


async def test_reverts_carry_the_reason_like_geth(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    node = await edge("chain", chain=True)
    counter_address = demo_contract_addresses()["Counter"]
    w3 = web3_client(node.make_url("/rpc"))
    counter = w3.eth.contract(address=counter_address, abi=load_artifact("Counter")["abi"])
    with pytest.raises(ContractLogicError, match="Counter: cannot go below zero"):
        await counter.functions.decrement().call()
    data = counter.encode_abi("decrement", args=[])
    status, answer = await rpc(
        node.make_url("/rpc"),
        {"jsonrpc": "2.0", "id": 7, "method": "eth_call", "params": [{"to": counter_address, "data": data}, "latest"]},
    )
    assert status == 200 and answer["id"] == 7
    assert answer["error"]["code"] == 3
    assert answer["error"]["message"] == "execution reverted: Counter: cannot go below zero"
    assert answer["error"]["data"].startswith("0x08c379a0")


async def test_batches_unknown_methods_and_malformed_bodies(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    node = await edge("chain", chain=True)
    url = node.make_url("/rpc")
    status, answers = await rpc(
        url,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "debug_nothing", "params": []},
            {"jsonrpc": "2.0", "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 3, "method": "eth_getTransactionReceipt", "params": ["0x" + "00" * 32]},
        ],
    )
    assert status == 200
    assert [answer["id"] for answer in answers] == [1, 2, 3]
    assert int(answers[0]["result"], 16) == 2  # two demo deployments, one block each
    assert answers[1]["error"]["code"] == -32601
    assert answers[2]["result"] is None
    # As geth over HTTP: a parse error is still status 200, with code -32700 and id null.
    async with aiohttp.ClientSession() as session, session.post(url, data=b"{nope") as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["id"] is None and answer["error"]["code"] == -32700


async def test_relays_share_one_chain_state(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    origin = await edge("chain", chain=True)
    near = await edge("near", delay_ms=2, chain_upstream=origin.make_url("/rpc"))
    far = await edge("far", delay_ms=8, chain_upstream=origin.make_url("/rpc"))
    abi = load_artifact("Counter")["abi"]
    address = demo_contract_addresses()["Counter"]
    via_near = web3_client(near.make_url("/rpc"))
    via_far = web3_client(far.make_url("/rpc"))
    receipt = await transact(
        via_near, via_near.eth.contract(address=address, abi=abi), "incrementBy", DEV_PRIVATE_KEY, 5
    )
    assert receipt["status"] == 1
    assert await via_far.eth.contract(address=address, abi=abi).functions.get().call() == 5
    async with aiohttp.ClientSession() as session, session.get(far.make_url("/chain/contracts")) as response:
        assert (await response.json())["data"] == demo_contract_addresses()
    async with aiohttp.ClientSession() as session, session.get(near.make_url("/health")) as response:
        health = await response.json()
    assert health["chain"] == "relay" and health["upstream"] == origin.make_url("/rpc")


async def test_concurrent_signed_increments_all_land(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    node = await edge("chain", chain=True)
    w3 = web3_client(node.make_url("/rpc"))
    account = Account.from_key(DEV_PRIVATE_KEY)
    counter = w3.eth.contract(address=demo_contract_addresses()["Counter"], abi=load_artifact("Counter")["abi"])
    first_nonce = await w3.eth.get_transaction_count(account.address, "pending")
    template = await counter.functions.increment().build_transaction({"from": account.address, "nonce": first_nonce})
    signed = [account.sign_transaction({**template, "nonce": first_nonce + i}).raw_transaction for i in range(20)]
    hashes = []
    for raw in signed:  # nonces must arrive in order; the node mines each at once
        hashes.append(await w3.eth.send_raw_transaction(raw))
    receipts = await asyncio.gather(
        *(w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.05) for h in hashes)
    )
    assert all(receipt["status"] == 1 for receipt in receipts)
    assert await counter.functions.get().call() == 20


async def test_health_reports_the_chain(edge: EdgeFactory, web3_client: Web3Factory) -> None:
    node = await edge("chain", chain=True)
    async with aiohttp.ClientSession() as session, session.get(node.make_url("/health")) as response:
        health = await response.json()
    assert health["chain"] == "embedded" and health["block_number"] == 2
    plain = await edge("plain")
    async with aiohttp.ClientSession() as session, session.get(plain.make_url("/health")) as response:
        assert (await response.json())["chain"] is None
