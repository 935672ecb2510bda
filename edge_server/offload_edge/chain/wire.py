"""Between eth-tester's Python values and the JSON-RPC wire format geth speaks.

eth-tester answers with snake_case keys, Python ints and a few markers of its
own (a log's ``type: "mined"``, a receipt's empty ``state_root``, ``""`` for
"no address"). Clients expect camelCase keys, hex quantities, ``input`` for a
transaction's data, ``removed`` on logs, ``logsBloom`` on receipts and null
where there is nothing. Requests go the other way: hex quantities to ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from eth_bloom import BloomFilter
from eth_utils import decode_hex, to_checksum_address

__all__ = [
    "BLOCK_TAGS",
    "InvalidParams",
    "block_id",
    "block_to_wire",
    "call_object",
    "encode",
    "log_to_wire",
    "param",
    "pending_transaction_to_wire",
    "quantity",
    "receipt_to_wire",
    "transaction_to_wire",
]

BLOCK_TAGS = frozenset({"latest", "earliest", "pending", "safe", "finalized"})
BLOOM_BYTES = 256
# Block fields whose wire name is not the camelCase of eth-tester's.
_BLOCK_NAMES = {"coinbase": "miner"}
# Call-object fields that are hex quantities, with eth-tester's name for each.
_CALL_QUANTITIES = {
    "gas": "gas",
    "gasPrice": "gas_price",
    "maxFeePerGas": "max_fee_per_gas",
    "maxPriorityFeePerGas": "max_priority_fee_per_gas",
    "value": "value",
    "nonce": "nonce",
}


class InvalidParams(ValueError):
    """A parameter is not in the wire format the method expects (JSON-RPC -32602)."""


# --------------------------------------------------------------------------- results


def camel(key: str) -> str:
    """``block_number`` -> ``blockNumber``."""
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def encode(value: Any, key: str = "") -> Any:
    """Generic conversion: ints to hex quantities, bytes to hex data, snake_case keys to camelCase."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        # eth-tester keeps a block's bloom as an int; on the wire it is 256 bytes of data.
        return "0x" + value.to_bytes(BLOOM_BYTES, "big").hex() if key == "logs_bloom" else hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {camel(name): encode(item, name) for name, item in value.items()}
    if isinstance(value, Iterable):
        return [encode(item) for item in value]
    raise TypeError(f"cannot put {type(value).__name__} on the wire")


def transaction_to_wire(transaction: Mapping[str, Any]) -> dict[str, Any]:
    """A mined transaction as geth returns it."""
    wire = {("input" if name == "data" else camel(name)): encode(item, name) for name, item in transaction.items()}
    wire["to"] = transaction.get("to") or None  # "" is eth-tester's "contract creation"
    v = transaction.get("v")
    if wire.get("type") == "0x0" and "chainId" not in wire and isinstance(v, int) and v >= 35:
        wire["chainId"] = hex((v - 35) // 2)  # EIP-155: geth reports a protected legacy tx's chain id
    return wire


def log_to_wire(log: Mapping[str, Any]) -> dict[str, Any]:
    """A log as geth returns it: no eth-tester ``type`` marker, ``removed`` false (no reorgs here)."""
    wire = {camel(name): encode(item, name) for name, item in log.items() if name != "type"}
    wire["removed"] = False
    return wire


def logs_bloom(logs: Iterable[Mapping[str, Any]]) -> str:
    """The 2048-bit bloom of ``logs`` (addresses and topics), as a receipt's ``logsBloom``."""
    bloom = BloomFilter()
    for log in logs:
        bloom.add(decode_hex(log["address"]))
        for topic in log["topics"]:
            bloom.add(topic if isinstance(topic, bytes) else decode_hex(topic))
    return "0x" + int(bloom).to_bytes(BLOOM_BYTES, "big").hex()


def receipt_to_wire(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """A receipt as geth returns it, including ``logsBloom`` (eth-tester leaves it out)."""
    # state_root is the pre-Byzantium "root"; eth-tester fills it with b"" and geth omits it.
    wire = {camel(name): encode(item, name) for name, item in receipt.items() if name not in ("state_root", "logs")}
    wire["logs"] = [log_to_wire(log) for log in receipt.get("logs", ())]
    wire["logsBloom"] = logs_bloom(receipt.get("logs", ()))
    wire["contractAddress"] = receipt.get("contract_address") or None
    wire["to"] = receipt.get("to") or None
    return wire


def block_to_wire(block: Mapping[str, Any], *, pending: bool = False) -> dict[str, Any]:
    """A block as geth returns it: transactions as hashes or as full objects."""
    wire = {
        _BLOCK_NAMES.get(name) or camel(name): encode(item, name)
        for name, item in block.items()
        if name != "transactions"
    }
    wire["transactions"] = [
        transaction_to_wire(item) if isinstance(item, Mapping) else encode(item) for item in block["transactions"]
    ]
    if pending:
        # Not sealed yet: geth answers null for what sealing decides.
        wire.update(hash=None, nonce=None, miner=None)
    return wire


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def pending_transaction_to_wire(transaction: Any) -> dict[str, Any]:
    """A signed py-evm transaction that is waiting (not mined) as geth shows a pending one."""
    type_id = getattr(transaction, "type_id", None)  # None for legacy transactions
    wire: dict[str, Any] = {
        "blockHash": None,
        "blockNumber": None,
        "transactionIndex": None,
        "hash": "0x" + transaction.hash.hex(),
        "type": hex(type_id or 0),
        "from": to_checksum_address(transaction.sender),
        "to": to_checksum_address(transaction.to) if transaction.to else None,
        "nonce": hex(transaction.nonce),
        "gas": hex(transaction.gas),
        "value": hex(transaction.value),
        "input": "0x" + bytes(transaction.data).hex(),
        "r": hex(transaction.r),
        "s": hex(transaction.s),
    }
    if type_id is None:
        wire.update(gasPrice=hex(transaction.gas_price), v=hex(transaction.v))
        if transaction.v >= 35:
            wire["chainId"] = hex((transaction.v - 35) // 2)
        return wire
    wire.update(
        chainId=hex(transaction.chain_id),
        yParity=hex(transaction.y_parity),
        v=hex(transaction.y_parity),
        accessList=[
            {
                "address": to_checksum_address(account),
                "storageKeys": ["0x" + key.to_bytes(32, "big").hex() for key in keys],
            }
            for account, keys in transaction.access_list
        ],
    )
    if type_id == 1:
        wire["gasPrice"] = hex(transaction.gas_price)
    else:
        wire.update(
            gasPrice=hex(transaction.max_fee_per_gas),
            maxFeePerGas=hex(transaction.max_fee_per_gas),
            maxPriorityFeePerGas=hex(transaction.max_priority_fee_per_gas),
        )
    return wire


# --------------------------------------------------------------------------- params


def param(params: list[Any], index: int, default: Any = ...) -> Any:
    """The ``index``-th param, or ``default``; a missing required one is an invalid-params error."""
    if index < len(params):
        return params[index]
    if default is ...:
        raise InvalidParams(f"missing value for required argument {index}")
    return default


def quantity(value: Any, name: str = "quantity") -> int:
    """A hex quantity (``"0x1a"``) as an int."""
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise InvalidParams(f"{name} must be a 0x-prefixed hex quantity, got {value!r}")


def block_id(value: Any) -> str | int:
    """A block tag or number in eth-tester's form; absent means ``latest``."""
    if value is None:
        return "latest"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value  # already converted (or a client that sends plain numbers)
    if isinstance(value, str) and value in BLOCK_TAGS:
        # A dev chain that mines every transaction at once has nothing unsafe or unfinalized.
        return "latest" if value in ("safe", "finalized") else value
    return quantity(value, "block number")


def call_object(value: Any, *, keep_nonce: bool = True) -> dict[str, Any]:
    """An eth_call / eth_estimateGas / eth_sendTransaction object in eth-tester's form.

    ``keep_nonce=False`` drops the nonce: geth does not check it for calls and estimates,
    eth-tester would.
    """
    if not isinstance(value, Mapping):
        raise InvalidParams("the transaction must be an object")
    converted: dict[str, Any] = {}
    for name, item in value.items():
        if item is None or (name == "nonce" and not keep_nonce):
            continue
        if name in _CALL_QUANTITIES:
            converted[_CALL_QUANTITIES[name]] = quantity(item, name)
        elif name in ("from", "to"):
            converted[name] = item
        elif name in ("data", "input"):
            converted["data"] = item  # "input" is the newer name of the same field
        # Anything else (type, chainId, accessList, ...) does not change what eth-tester runs.
    return converted
