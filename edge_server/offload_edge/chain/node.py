"""An embedded EVM dev chain (eth-tester on py-evm) answering JSON-RPC methods.

No Sanic here: :class:`EmbeddedChain` maps a method and its wire-format params
to a wire-format result, or raises :class:`RpcError`. It is not thread-safe;
the HTTP layer serialises calls.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import rlp
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed, ValidationError
from eth_utils import ValidationError as EvmValidationError
from eth_utils import decode_hex, keccak, to_checksum_address

from .artifacts import DEMO_CONTRACTS, load_artifact
from .wire import InvalidParams, block_id, call_object, quantity, to_wire

# eth-tester's first dev account: private key 1. Public knowledge; for dev chains only.
DEV_PRIVATE_KEY = "0x" + "00" * 31 + "01"
DEV_ACCOUNT = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
DEPLOY_GAS = 3_000_000
# What eth_gasPrice and eth_maxPriorityFeePerGas suggest on top of the base fee.
SUGGESTED_TIP_WEI = 1_000_000_000
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string), what require(..., "reason") reverts with

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
EXECUTION_REVERTED = 3  # geth's code for a revert in eth_call / eth_estimateGas
TRANSACTION_REJECTED = -32003


class RpcError(Exception):
    """A JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def create_address(sender: str, nonce: int) -> str:
    """The address a contract deployed by ``sender`` with ``nonce`` gets (CREATE)."""
    return to_checksum_address(keccak(rlp.encode([decode_hex(sender), nonce]))[12:])


def demo_contract_addresses() -> dict[str, str]:
    """Where the demo contracts live on every embedded chain: fixed by deployer and nonce."""
    return {name: create_address(DEV_ACCOUNT, nonce) for nonce, name in enumerate(DEMO_CONTRACTS)}


def revert_error(failure: TransactionFailed) -> RpcError:
    """geth's shape for a revert: code 3, "execution reverted: reason", ABI-encoded data."""
    detail = failure.args[0] if failure.args else ""
    raw = getattr(detail, "args", [None])[0] if not isinstance(detail, str | bytes) else detail
    if isinstance(raw, bytes):
        data = raw
        reason = decode_reason(raw)
    else:
        reason = str(raw or "")
        data = ERROR_SELECTOR + abi_encode(["string"], [reason]) if reason else b""
    message = f"execution reverted: {reason}" if reason else "execution reverted"
    return RpcError(EXECUTION_REVERTED, message, "0x" + data.hex())


def decode_reason(data: bytes) -> str:
    if data.startswith(ERROR_SELECTOR):
        from eth_abi import decode as abi_decode

        try:
            return str(abi_decode(["string"], data[4:])[0])
        except DecodingError:
            return ""
    return ""


class EmbeddedChain:
    """One dev chain with the demo contracts deployed at fixed addresses."""

    def __init__(self) -> None:
        self.tester = EthereumTester(PyEVMBackend())
        self.contracts: dict[str, str] = {}
        for name in DEMO_CONTRACTS:
            tx_hash = self.tester.send_transaction(
                {"from": DEV_ACCOUNT, "data": load_artifact(name)["bytecode"], "gas": DEPLOY_GAS}
            )
            self.contracts[name] = to_checksum_address(self.tester.get_transaction_receipt(tx_hash)["contract_address"])
        self.chain_id = int(self.tester.backend.chain.chain_id)
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            "web3_clientVersion": lambda p: f"offload-edge/EthereumTester/python{platform.python_version()}",
            "net_version": lambda p: str(self.chain_id),
            "net_listening": lambda p: True,
            "eth_chainId": lambda p: hex(self.chain_id),
            "eth_syncing": lambda p: False,
            "eth_blockNumber": lambda p: hex(self.block_number()),
            "eth_accounts": lambda p: list(self.tester.get_accounts()),
            "eth_getBalance": lambda p: hex(self.tester.get_balance(param(p, 0), block_id(param(p, 1, None)))),
            "eth_getTransactionCount": lambda p: hex(self.tester.get_nonce(param(p, 0), block_id(param(p, 1, None)))),
            "eth_getCode": lambda p: self.tester.get_code(param(p, 0), block_id(param(p, 1, None))),
            "eth_getStorageAt": lambda p: self.storage_at(p),
            "eth_call": lambda p: self.call(p),
            "eth_estimateGas": lambda p: self.estimate_gas(p),
            "eth_gasPrice": lambda p: hex(self.base_fee() + SUGGESTED_TIP_WEI),
            "eth_maxPriorityFeePerGas": lambda p: hex(SUGGESTED_TIP_WEI),
            "eth_feeHistory": lambda p: self.fee_history(p),
            "eth_getBlockByNumber": lambda p: self.block(p, by_hash=False),
            "eth_getBlockByHash": lambda p: self.block(p, by_hash=True),
            "eth_sendRawTransaction": lambda p: self.send_raw(p),
            "eth_sendTransaction": lambda p: self.send(p),
            "eth_getTransactionByHash": lambda p: self.lookup(self.tester.get_transaction_by_hash, param(p, 0)),
            "eth_getTransactionReceipt": lambda p: self.lookup(self.tester.get_transaction_receipt, param(p, 0)),
            "eth_getLogs": lambda p: self.logs(p),
        }

    def dispatch(self, method: str, params: Any) -> Any:
        """Run one JSON-RPC method; raises :class:`RpcError`."""
        handler = self.methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise RpcError(INVALID_PARAMS, "params must be an array")
        try:
            return handler(params)
        except RpcError:
            raise
        except TransactionFailed as failure:
            raise revert_error(failure) from None
        except EvmValidationError as exc:
            raise RpcError(TRANSACTION_REJECTED, f"{method} rejected: {exc}") from None
        except (InvalidParams, ValidationError, ValueError, TypeError, KeyError) as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params for {method}: {exc}") from None

    def block_number(self) -> int:
        return int(self.tester.get_block_by_number("latest")["number"])

    def base_fee(self) -> int:
        return int(self.tester.get_block_by_number("latest").get("base_fee_per_gas") or 0)

    def storage_at(self, params: list[Any]) -> str:
        value = self.tester.get_storage_at(
            param(params, 0), quantity(param(params, 1), "slot"), block_id(param(params, 2, None))
        )
        return value if isinstance(value, str) else "0x" + bytes(value).rjust(32, b"\0").hex()

    def call(self, params: list[Any]) -> str:
        return self.tester.call(read_only_call(param(params, 0)), block_id(param(params, 1, None)))

    def estimate_gas(self, params: list[Any]) -> str:
        return hex(self.tester.estimate_gas(read_only_call(param(params, 0)), block_id(param(params, 1, None))))

    def fee_history(self, params: list[Any]) -> dict[str, Any]:
        count = param(params, 0)
        count = quantity(count, "blockCount") if isinstance(count, str) else int(count)
        percentiles = param(params, 2, None) or []
        history = self.tester.get_fee_history(max(1, min(count, 1024)), block_id(param(params, 1, None)), percentiles)
        return to_wire(history)

    def block(self, params: list[Any], *, by_hash: bool) -> Any:
        full = bool(param(params, 1, False))
        key = param(params, 0)
        getter = self.tester.get_block_by_hash if by_hash else self.tester.get_block_by_number
        return self.lookup(getter, key if by_hash else block_id(key), full)

    def send_raw(self, params: list[Any]) -> str:
        raw = param(params, 0)
        if not isinstance(raw, str) or not raw.startswith("0x"):
            raise InvalidParams("the raw transaction must be 0x-prefixed hex")
        try:
            return self.tester.send_raw_transaction(raw)
        except ValidationError as exc:
            # Nonce, balance or signature problems: the node refuses, nothing is mined.
            raise RpcError(TRANSACTION_REJECTED, f"transaction rejected: {exc}") from None

    def send(self, params: list[Any]) -> str:
        transaction = call_object(param(params, 0))
        if "gas" not in transaction:
            transaction["gas"] = int(self.tester.estimate_gas(dict(transaction), "pending") * 1.2)
        return self.tester.send_transaction(transaction)

    def logs(self, params: list[Any]) -> list[Any]:
        query = param(params, 0, {}) or {}
        if not isinstance(query, dict):
            raise InvalidParams("the filter must be an object")
        if "blockHash" in query:
            number = self.tester.get_block_by_hash(query["blockHash"])["number"]
            start, end = number, number
        else:
            start = resolve_number(self, query.get("fromBlock"))
            end = resolve_number(self, query.get("toBlock"))
        logs = self.tester.get_logs(
            from_block=start, to_block=end, address=query.get("address"), topics=query.get("topics")
        )
        return to_wire(list(logs))

    @staticmethod
    def lookup(getter: Callable[..., Any], *args: Any) -> Any:
        """Found: the wire form; not found: null, as real nodes answer."""
        from eth_tester.exceptions import BlockNotFound, TransactionNotFound

        try:
            return to_wire(getter(*args))
        except (BlockNotFound, TransactionNotFound):
            return None


def read_only_call(value: Any) -> dict[str, Any]:
    """A call object; calls without ``from`` run as the funded dev account (eth-tester charges gas)."""
    transaction = call_object(value)
    transaction.setdefault("from", DEV_ACCOUNT)
    return transaction


def resolve_number(chain: EmbeddedChain, value: Any) -> int:
    identifier = block_id(value)
    if identifier == "earliest":
        return 0
    if isinstance(identifier, str):
        return chain.block_number()
    return identifier


def param(params: list[Any], index: int, default: Any = ...) -> Any:
    """The index-th param, or ``default``; missing a required one is an invalid-params error."""
    if index < len(params):
        return params[index]
    if default is ...:
        raise InvalidParams(f"missing parameter #{index}")
    return default
