"""The contracts plugin against a real Ethereum dev node (hardhat), as users run it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3

from offload_edge.chain.artifacts import load_artifact

from chain_helpers import deploy, transact
from conftest import OPERATOR_HEADERS, Gateway, GatewayFactory
from devnode import HARDHAT_ACCOUNTS, DevNode, dev_node  # noqa: F401  (dev_node is a fixture)

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"


def deploy_sync(w3: Web3, name: str, private_key: str) -> str:
    artifact = load_artifact(name)
    account = Account.from_key(private_key)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    transaction = factory.constructor().build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(transaction).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
    assert receipt["status"] == 1
    return str(receipt["contractAddress"])


@pytest.fixture(scope="module")
def deployed(dev_node: DevNode) -> Iterator[dict[str, str]]:  # noqa: F811
    """Hello and Counter deployed on the dev node from its account #2."""
    w3 = Web3(HTTPProvider(dev_node.url))
    yield {name: deploy_sync(w3, name, dev_node.private_keys[2]) for name in ("Hello", "Counter")}


@pytest_asyncio.fixture
async def operator_web3(devnode_gateway: Gateway) -> AsyncIterator[AsyncWeb3]:
    """An unmodified web3.py async client on the gateway's /rpc that sends the operator's token."""
    headers = {"Content-Type": "application/json", **OPERATOR_HEADERS}
    provider = AsyncHTTPProvider(devnode_gateway.server.make_url("/contracts/rpc"), request_kwargs={"headers": headers})
    client = AsyncWeb3(provider)
    yield client
    await client.provider.disconnect()


@pytest.fixture
def signing_devnode_gateway(
    dev_node: DevNode,  # noqa: F811
    deployed: dict[str, str],
    gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Awaitable[Gateway]]:
    """Factory: ``await signing_devnode_gateway(**contracts_options)``, a gateway in front of hardhat."""

    async def start(**options: Any) -> Gateway:
        # The gateway signs as account #1, so its nonces never race the test's own transactions.
        monkeypatch.setenv(KEY_ENV, dev_node.private_keys[1])
        return await gateway(devnode_document(dev_node, deployed, **options))

    return start


@pytest.fixture
async def devnode_gateway(signing_devnode_gateway: Callable[..., Awaitable[Gateway]]) -> Gateway:
    return await signing_devnode_gateway()


def devnode_document(dev_node: DevNode, deployed: dict[str, str], **options: Any) -> dict[str, Any]:  # noqa: F811
    """Settings for a gateway in front of the dev node, with the deployed contracts."""
    contracts = [
        {"name": name, "address": address, "abi": load_artifact(name)["abi"]} for name, address in deployed.items()
    ]
    table: dict[str, Any] = {"rpc_path": "/", "servers": [{"name": "hardhat", "url": dev_node.base_url}]}
    return {"plugins": {"contracts": {**table, "contracts": contracts, **options}}}


def test_dev_node_is_a_real_hardhat_node(dev_node: DevNode) -> None:  # noqa: F811
    assert dev_node.chain_id == 31337
    assert dev_node.accounts == HARDHAT_ACCOUNTS
    assert tuple(Account.from_key(key).address for key in dev_node.private_keys) == HARDHAT_ACCOUNTS
    assert "HardhatNetwork" in Web3(HTTPProvider(dev_node.url)).client_version


async def test_views_and_ping_through_the_gateway(devnode_gateway: Gateway) -> None:
    status, body, _ = await devnode_gateway.get_json(
        "/contracts/execcontract", params={"contractID": "Hello", "operation": "hello"}
    )
    assert (status, body["data"], body["server"]) == (200, "Hello, world!", "hardhat")
    status, body, _ = await devnode_gateway.get_json("/contracts/ping")
    assert status == 200 and body["data"]["chain_id"] == 31337
    assert "HardhatNetwork" in body["data"]["client_version"]


async def test_hundred_concurrent_increments_on_hardhat(devnode_gateway: Gateway) -> None:
    _, before, _ = await devnode_gateway.get_json("/contracts/Counter/get")

    async def increment() -> tuple[int, Any]:
        async with devnode_gateway.operator.post("/contracts/Counter/increment", json={}) as reply:
            return reply.status, await reply.json()

    replies = await asyncio.gather(*(increment() for _ in range(100)))
    assert [status for status, _ in replies] == [200] * 100
    assert all(body["data"]["events"][0]["event"] == "Incremented" for _, body in replies)
    _, after, _ = await devnode_gateway.get_json("/contracts/Counter/get")
    assert after["data"] - before["data"] == 100


async def test_revert_reason_from_hardhat(devnode_gateway: Gateway) -> None:
    async with devnode_gateway.operator.post("/contracts/Counter/incrementBy", json={"amount": 0}) as reply:
        body = await reply.json()
        assert reply.status == 422, body
    assert body["reason"] == "Counter: amount must be positive"


async def test_unmodified_web3_client_through_the_gateway_to_hardhat(
    dev_node: DevNode,  # noqa: F811
    devnode_gateway: Gateway,
    operator_web3: AsyncWeb3,
) -> None:
    w3 = operator_web3
    assert await w3.eth.chain_id == 31337
    key = dev_node.private_keys[2]
    address = await deploy(w3, "Counter", key)
    counter = w3.eth.contract(address=address, abi=load_artifact("Counter")["abi"])
    receipt = await transact(w3, counter, "incrementBy", key, 7)
    assert receipt["status"] == 1
    assert await counter.functions.get().call() == 7


# Init code that returns the gas it was given: eth_call without "to" answers the gas the node ran it with.
GAS_PROBE = "0x5a60005260206000f3"


async def test_call_gas_is_capped_on_hardhat(
    dev_node: DevNode,  # noqa: F811
    deployed: dict[str, str],
    gateway: GatewayFactory,
    devnode_gateway: Gateway,
) -> None:
    async def gas_seen(gw: Gateway, gas: dict[str, str]) -> int:
        call = {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"data": GAS_PROBE, **gas}, "latest"]}
        async with gw.client.post("/contracts/rpc", json=call) as reply:
            answer = await reply.json()
            assert reply.status == 200 and "result" in answer, answer
        return int(answer["result"], 16)

    capped = await gateway(devnode_document(dev_node, deployed, call_gas_cap=1_000_000))
    assert 900_000 < await gas_seen(capped, {"gas": hex(10**12)}) <= 1_000_000
    # Without a gas the default cap (50 million) is filled in within one transaction's limit,
    # which hardhat enforces on calls too (it refuses more than 2**24).
    assert 16_000_000 < await gas_seen(devnode_gateway, {}) <= 2**24


async def test_a_transaction_over_the_gas_cap_is_refused_on_hardhat(
    signing_devnode_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    gw = await signing_devnode_gateway(call_gas_cap=1_000_000)
    async with gw.operator.post("/contracts/Hello/setGreeting", json={"newGreeting": "x" * 2000}) as reply:
        body = await reply.json()
        assert reply.status == 422, body
    assert "needs more gas than the node allows" in body["error"]
    status, answer, _ = await gw.get_json("/contracts/hello")
    assert (status, answer["data"]) == (200, "Hello, world!")
