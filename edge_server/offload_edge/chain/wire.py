"""Between eth-tester's Python values and the JSON-RPC wire format geth and hardhat speak.

eth-tester answers with snake_case keys and Python ints; clients expect
camelCase keys, hex quantities and ``input`` for transaction data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keys whose wire name is not simply the camelCase of eth-tester's.
_RENAMED = {"coinbase": "miner"}
# Receipt fields eth-tester keeps for itself.
_DROPPED = {"state_root"}
_QUANTITY_KEYS_IN_CALLS = {"gas", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "value", "nonce", "chainId"}
BLOCK_TAGS = {"latest", "earliest", "pending", "safe", "finalized"}


class InvalidParams(ValueError):
    """A parameter is not in the wire format the method expects (JSON-RPC -32602)."""


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def to_wire(value: Any, key: str = "") -> Any:
    """Recursively convert a result: ints to hex quantities, snake_case keys to camelCase."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if key == "logs_bloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        # A transaction's "data" is "input" on the wire; a log's "data" stays "data".
        is_transaction = "gas" in value and "nonce" in value
        return {
            ("input" if name == "data" and is_transaction else _RENAMED.get(name, camel(name))): to_wire(item, name)
            for name, item in value.items()
            if name not in _DROPPED
        }
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    if key in ("to", "contract_address") and value == "":
        return None  # eth-tester's "" for "no such address"
    return value


def quantity(value: Any, name: str = "quantity") -> int:
    """A hex quantity ("0x1a") as an int."""
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise InvalidParams(f"{name} must be a 0x-prefixed hex quantity, got {value!r}")


def block_id(value: Any) -> str | int:
    """A block tag or number, as eth-tester takes it."""
    if value is None:
        return "latest"
    if isinstance(value, str) and value in BLOCK_TAGS:
        return "latest" if value in ("safe", "finalized") else value
    return quantity(value, "block number")


def call_object(value: Any) -> dict[str, Any]:
    """An eth_call / eth_estimateGas / eth_sendTransaction object in eth-tester's form."""
    if not isinstance(value, Mapping):
        raise InvalidParams("the transaction must be an object")
    converted: dict[str, Any] = {}
    for name, item in value.items():
        if item is None:
            continue
        if name == "input":
            name = "data"
        if name in _QUANTITY_KEYS_IN_CALLS:
            converted[snake(name)] = quantity(item, name)
        elif name in ("from", "to", "data"):
            converted[name] = item
        # Other fields (type, accessList, ...) do not change what eth-tester runs.
    return converted


def snake(key: str) -> str:
    return "".join("_" + char.lower() if char.isupper() else char for char in key)
