"""Helpers for contract tests: signing with web3.py against any JSON-RPC URL."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from web3 import AsyncWeb3

from offload_edge.chain.artifacts import load_artifact


async def deploy(w3: AsyncWeb3, name: str, private_key: str) -> str:
    """Deploy an artifact with a locally signed transaction; returns the contract address."""
    artifact = load_artifact(name)
    account = Account.from_key(private_key)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    transaction = await factory.constructor().build_transaction(
        {"from": account.address, "nonce": await w3.eth.get_transaction_count(account.address, "pending")}
    )
    signed = account.sign_transaction(transaction)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
    assert receipt["status"] == 1
    return str(receipt["contractAddress"])


async def transact(w3: AsyncWeb3, contract: Any, function: str, private_key: str, *args: Any) -> Any:
    """Sign and send one contract transaction; returns its receipt."""
    account = Account.from_key(private_key)
    transaction = await contract.functions[function](*args).build_transaction(
        {"from": account.address, "nonce": await w3.eth.get_transaction_count(account.address, "pending")}
    )
    tx_hash = await w3.eth.send_raw_transaction(account.sign_transaction(transaction).raw_transaction)
    return await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
