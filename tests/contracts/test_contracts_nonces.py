"""Nonces from one lease per account: a sequence that went stale is re-synced from the node, once."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from offload_edge.chain.node import DEV_PRIVATE_KEY, demo_contract_addresses

from conftest import EdgeFactory, GatewayFactory, Web3Factory

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"


def document(chain_url: str) -> dict[str, Any]:
    contracts = [
        {"name": name, "address": address, "artifact": f"offload_edge:chain/artifacts/{name}.json"}
        for name, address in demo_contract_addresses().items()
    ]
    table = {"rpc_path": "/rpc", "servers": [{"name": "chain", "url": chain_url}], "contracts": contracts}
    return {"gateway": {"probe_interval_s": 60}, "plugins": {"contracts": table}}


async def test_a_nonce_taken_outside_the_gateway_is_resynced_and_the_write_signed_once_more(
    edge: EdgeFactory, gateway: GatewayFactory, web3_client: Web3Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
    chain = await edge("chain", chain=True)
    gw = await gateway(document(chain.url))
    w3 = web3_client(chain.make_url("/rpc"))

    async def increment() -> dict[str, Any]:
        async with gw.operator.post("/contracts/Counter/increment", json={}) as reply:
            body = await reply.json()
            assert reply.status == 200, body
            return dict(body["data"])

    async def counter() -> int:
        status, body, _ = await gw.get_json("/contracts/Counter/get")
        assert status == 200, body
        return int(body["data"])

    before = await counter()
    first = await increment()  # the gateway now holds the account's next nonce itself
    account = Account.from_key(DEV_PRIVATE_KEY)
    nonce = await w3.eth.get_transaction_count(account.address, "pending")
    outside = {
        "to": demo_contract_addresses()["Counter"],
        "data": "0x" + keccak(text="increment()")[:4].hex(),
        "nonce": nonce,  # the very nonce the gateway would use next
        "gas": 100_000,
        "gasPrice": await w3.eth.gas_price,
        "chainId": await w3.eth.chain_id,
    }
    await w3.eth.send_raw_transaction(account.sign_transaction(outside).raw_transaction)
    second = await increment()  # refused as "nonce too low", then signed again with the node's count
    assert await counter() == before + 3
    transaction = await w3.eth.get_transaction(second["tx_hash"])
    assert transaction["nonce"] == nonce + 1
    assert first["block_number"] < second["block_number"]
