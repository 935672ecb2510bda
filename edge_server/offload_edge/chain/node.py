"""An embedded EVM dev chain (eth-tester on py-evm) answering JSON-RPC methods.

No Sanic and no threads here: :meth:`EmbeddedChain.dispatch` maps a method and
its wire-format params to a wire-format result, or raises :class:`RpcError`.
It is not thread-safe; :mod:`.embedded` serialises calls and keeps them off the
event loop.
"""

from __future__ import annotations

import ast
import logging
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eth.exceptions import OutOfGas, VMError
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import BlockNotFound, TransactionFailed, TransactionNotFound
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils import ValidationError as EvmValidationError
from eth_utils import decode_hex, to_checksum_address

from .addresses import DEV_ACCOUNT, DEV_PRIVATE_KEY, create_address, demo_contract_addresses
from .artifacts import DEMO_CONTRACTS, load_artifact
from .deadline import DeadlinePragueVM, ExecutionTimeout, YieldPoint, execution_deadline
from .fees import MAX_BLOCKS, fee_history, latest_number
from .jsonrpc import EXECUTION_REVERTED, INVALID_PARAMS, METHOD_NOT_FOUND, SERVER_ERROR, RpcError
from .limits import DEFAULT_CALL_TIMEOUT_S, DEFAULT_GAS_CAP, go_duration
from .txpool import QueueFull, Waiting, WaitingTransactions
from .wire import (
    InvalidParams,
    block_id,
    block_to_wire,
    call_object,
    log_to_wire,
    param,
    pending_transaction_to_wire,
    quantity,
    receipt_to_wire,
    transaction_to_wire,
)

__all__ = [
    "DEV_ACCOUNT",
    "DEV_PRIVATE_KEY",
    "EmbeddedChain",
    "RpcError",
    "create_address",
    "demo_contract_addresses",
    "revert_error",
]

logger = logging.getLogger(__name__)

DEPLOY_GAS = 3_000_000
# What eth_maxPriorityFeePerGas suggests, and eth_gasPrice on top of the base fee (geth's dev default).
SUGGESTED_TIP_WEI = 1_000_000_000
# eth_sendTransaction without gas: the estimate plus headroom, as wallets add.
GAS_HEADROOM = 1.2
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string), what require(cond, "reason") reverts with
# Everything eth-tester / py-evm raise for "this transaction is not acceptable".
_REFUSALS = (EvmValidationError, TesterValidationError)
# How py-evm's non-revert halts (its VMError messages) begin; anything else eth-tester
# reports for a failed call is a revert reason.
_VM_HALTS = (
    "Out of gas",
    "Invalid opcode",
    "Invalid Jump Destination",
    "Jump resulted in invalid instruction",
    "Stack limit reached",
    "Stack depth limit reached",
    "Insufficient stack items",
    "Wanted 1 stack item",
    "Cannot modify state",
)


def revert_error(failure: TransactionFailed) -> RpcError:
    """geth's answer for a failed eth_call / eth_estimateGas.

    A revert is code 3, ``execution reverted[: reason]`` and the revert data. eth-tester
    passes on py-evm's Revert (estimates), the decoded reason of ``Error(string)`` (calls)
    or, for any other revert data, ``str()`` of the Revert: the repr of its bytes. Other
    halts (out of gas, invalid opcode, ...) arrive as py-evm's message and are code -32000.
    """
    detail = failure.args[0] if failure.args else ""
    if isinstance(detail, Exception):
        detail = detail.args[0] if detail.args else b""
    if isinstance(detail, str) and detail.startswith(("b'", 'b"')):
        detail = _bytes_literal(detail)
    if isinstance(detail, bytes):
        data, reason = detail, decode_reason(detail)
    elif detail.startswith(_VM_HALTS):
        return RpcError(SERVER_ERROR, _halt_message(detail))
    else:
        data, reason = (ERROR_SELECTOR + abi_encode(["string"], [detail]), detail) if detail else (b"", "")
    message = f"execution reverted: {reason}" if reason else "execution reverted"
    return RpcError(EXECUTION_REVERTED, message, "0x" + data.hex())


def _halt_message(detail: str) -> str:
    """py-evm's message for a halt, worded as geth's: lower case first."""
    return detail[:1].lower() + detail[1:] or "execution halted"


def _bytes_literal(text: str) -> bytes | str:
    """The bytes eth-tester wrote as ``repr(bytes)``; ``text`` itself when it is a reason that only looks so."""
    try:
        value = ast.literal_eval(text)  # literals only, never code
    except (ValueError, SyntaxError):  # e.g. require(false, "b'ad")
        return text
    return value if isinstance(value, bytes) else text


def decode_reason(data: bytes) -> str:
    """The reason string of ``Error(string)`` revert data, or "" for any other data."""
    if not data.startswith(ERROR_SELECTOR):
        return ""
    try:
        return str(abi_decode(["string"], data[4:])[0])
    except Exception:  # malformed revert data has no reason to show
        return ""


class EmbeddedChain:
    """One dev chain with the demo contracts deployed at fixed addresses, answering JSON-RPC.

    ``eth_call`` and ``eth_estimateGas`` are limited as geth limits them: at most ``gas_cap``
    gas (geth's ``--rpc.gascap``) and ``call_timeout_s`` of wall-clock time (``--rpc.evmtimeout``),
    after which execution is aborted. Within :meth:`time_limit` (one HTTP request, batch or
    not) all of them share a single such budget.
    """

    def __init__(self, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S, gas_cap: int = DEFAULT_GAS_CAP) -> None:
        self.call_timeout_s = call_timeout_s
        self.gas_cap = gas_cap
        # Where calls give way to a request that has waited for the chain (set by the backend).
        self.yield_point = YieldPoint()
        # When the current request's calls must be done (time.monotonic); None outside time_limit.
        self._calls_end: float | None = None
        # eth-tester's own VM (Prague), made stoppable: see .deadline.
        self.tester = EthereumTester(PyEVMBackend(vm_configuration=((0, DeadlinePragueVM),)))
        self.chain_id = int(self.tester.backend.chain.chain_id)
        # eth-tester keeps every block's gas limit the genesis one.
        self.block_gas_limit = int(self.tester.get_block_by_number("latest")["gas_limit"])
        self.waiting = WaitingTransactions()
        self.contracts = self._deploy_demo_contracts()
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            "web3_clientVersion": lambda p: f"offload-edge/EthereumTester/py-evm/python{platform.python_version()}",
            "net_version": lambda p: str(self.chain_id),
            "net_listening": lambda p: True,
            "eth_chainId": lambda p: hex(self.chain_id),
            "eth_syncing": lambda p: False,
            "eth_mining": lambda p: False,
            "eth_blockNumber": lambda p: hex(self.block_number()),
            "eth_accounts": lambda p: list(self.tester.get_accounts()),
            "eth_getBalance": lambda p: hex(self.tester.get_balance(param(p, 0), block_id(param(p, 1, None)))),
            "eth_getTransactionCount": lambda p: hex(self.tester.get_nonce(param(p, 0), block_id(param(p, 1, None)))),
            "eth_getCode": lambda p: self.tester.get_code(param(p, 0), block_id(param(p, 1, None))),
            "eth_getStorageAt": self.storage_at,
            "eth_call": self.call,
            "eth_estimateGas": self.estimate_gas,
            "eth_gasPrice": lambda p: hex(self.base_fee("pending") + SUGGESTED_TIP_WEI),
            "eth_maxPriorityFeePerGas": lambda p: hex(SUGGESTED_TIP_WEI),
            "eth_feeHistory": self.fee_history,
            "eth_getBlockByNumber": self.block_by_number,
            "eth_getBlockByHash": self.block_by_hash,
            "eth_sendRawTransaction": self.send_raw,
            "eth_sendTransaction": self.send,
            "eth_getTransactionByHash": self.transaction,
            "eth_getTransactionReceipt": self.receipt,
            "eth_getLogs": self.logs,
        }

    def _deploy_demo_contracts(self) -> dict[str, str]:
        deployed = {}
        for name in DEMO_CONTRACTS:
            tx_hash = self.tester.send_transaction(
                {"from": DEV_ACCOUNT, "data": load_artifact(name)["bytecode"], "gas": DEPLOY_GAS}
            )
            receipt = self.tester.get_transaction_receipt(tx_hash)
            if receipt["status"] != 1:
                raise RuntimeError(f"deploying the demo contract {name} failed")
            deployed[name] = to_checksum_address(receipt["contract_address"])
        if deployed != demo_contract_addresses():  # the addresses are promised to clients
            raise RuntimeError(f"demo contracts landed at unexpected addresses: {deployed}")
        return deployed

    def dispatch(self, method: str, params: Any) -> Any:
        """Run one JSON-RPC method on wire-format ``params``; raises :class:`RpcError`."""
        handler = self.methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise RpcError(INVALID_PARAMS, "non-array args")
        try:
            return handler(params)
        except RpcError:
            raise
        except ExecutionTimeout:
            raise RpcError(SERVER_ERROR, f"execution aborted (timeout = {go_duration(self.call_timeout_s)})") from None
        except TransactionFailed as failure:
            raise revert_error(failure) from None
        except BlockNotFound:
            # A state query (balance, call, ...) at a block not mined yet; geth's words for it.
            raise RpcError(SERVER_ERROR, "header not found") from None
        except (InvalidParams, *_REFUSALS, ValueError, TypeError, KeyError) as exc:
            raise RpcError(INVALID_PARAMS, f"invalid argument for {method}: {exc}") from None

    # ------------------------------------------------------------------ state

    def block_number(self) -> int:
        """The newest mined block's number."""
        return latest_number(self.tester)

    def base_fee(self, block: str | int = "latest") -> int:
        """The base fee per gas of ``block`` (``pending``: what the next transaction pays)."""
        return int(self.tester.get_block_by_number(block).get("base_fee_per_gas") or 0)

    def storage_at(self, params: list[Any]) -> str:
        slot = quantity(param(params, 1), "slot")
        value = self.tester.get_storage_at(param(params, 0), hex(slot), block_id(param(params, 2, None)))
        return value if isinstance(value, str) else "0x" + bytes(value).rjust(32, b"\0").hex()

    # ------------------------------------------------------------------ calls and estimates

    @contextmanager
    def time_limit(self) -> Iterator[None]:
        """Every call and estimate made within the block shares one deadline, ``call_timeout_s`` from now.

        The chain answers one request at a time, so a batch of slow calls must not hold it
        for the sum of their limits: once the budget is spent the rest are aborted at once.
        """
        self._calls_end = time.monotonic() + self.call_timeout_s
        try:
            yield
        finally:
            self._calls_end = None

    @contextmanager
    def _limited(self) -> Iterator[None]:
        """Run EVM code for a call or estimate under the request's deadline (or a fresh one)."""
        end = self._calls_end if self._calls_end is not None else time.monotonic() + self.call_timeout_s
        if time.monotonic() >= end:
            raise ExecutionTimeout  # the request's budget is spent: do not even start
        with execution_deadline(end, self.yield_point):
            yield

    @property
    def gas_allowance(self) -> int:
        """The most gas a call or estimate may use: the gas cap or the block gas limit, the lower."""
        return min(self.gas_cap, self.block_gas_limit)

    def call(self, params: list[Any]) -> str:
        transaction = read_only_call(param(params, 0))
        # As geth: more gas than the cap is lowered to it, and no gas at all means the allowance.
        transaction["gas"] = min(transaction["gas"], self.gas_cap) if "gas" in transaction else self.gas_allowance
        block = state_block(param(params, 1, None))
        with self._limited():
            return self.tester.call(transaction, block)

    def estimate_gas(self, params: list[Any]) -> str:
        return hex(self._estimate(read_only_call(param(params, 0)), state_block(param(params, 1, None))))

    def _estimate(self, transaction: dict[str, Any], block: str | int) -> int:
        """The gas ``transaction`` needs; RpcError as geth's when it needs more than the allowance."""
        allowance = self.gas_allowance
        exceeds = RpcError(SERVER_ERROR, f"gas required exceeds allowance ({allowance})")
        try:
            with self._limited():
                estimate = self.tester.estimate_gas(transaction, block)
        except OutOfGas:
            # py-evm searches up to the block gas limit and fails with its last attempt's halt.
            raise exceeds from None
        except VMError as halt:  # invalid opcode, stack underflow, ...: eth-tester passes these on raw
            raise RpcError(SERVER_ERROR, _halt_message(str(halt))) from None
        if estimate > allowance:  # only when the cap is below the block gas limit
            raise exceeds
        return int(estimate)

    def fee_history(self, params: list[Any]) -> dict[str, Any]:
        count = param(params, 0)
        # geth takes the block count as a hex quantity or a plain number.
        count = quantity(count, "blockCount") if isinstance(count, str) else count
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidParams(f"blockCount must be a quantity from 0 to {MAX_BLOCKS}")
        newest = self.block_number_of(param(params, 1, "latest"))
        return fee_history(self.tester, count, newest, param(params, 2, None))

    def block_number_of(self, value: Any, *, clamp: bool = False) -> int:
        """The number of a mined block named by a tag or number (``pending`` is the newest mined).

        A number past the newest block is an error, or with ``clamp`` the newest block.
        """
        identifier = block_id(value)
        if identifier == "earliest":
            return 0
        latest = self.block_number()
        if isinstance(identifier, str) or (clamp and identifier > latest):
            return latest
        if identifier > latest:
            raise InvalidParams(f"block {identifier} is not mined yet (newest: {latest})")
        return identifier

    # ------------------------------------------------------------------ blocks, transactions, logs

    def block_by_number(self, params: list[Any]) -> dict[str, Any] | None:
        identifier = block_id(param(params, 0))
        full = bool(param(params, 1, False))
        try:
            block = self.tester.get_block_by_number(identifier, full)
        except BlockNotFound:
            return None
        return block_to_wire(block, pending=identifier == "pending")

    def block_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        try:
            return block_to_wire(self.tester.get_block_by_hash(param(params, 0), bool(param(params, 1, False))))
        except BlockNotFound:
            return None

    def transaction(self, params: list[Any]) -> dict[str, Any] | None:
        tx_hash = param(params, 0)
        try:
            return transaction_to_wire(self.tester.get_transaction_by_hash(tx_hash))
        except TransactionNotFound:
            waiting = self.waiting.find(str(tx_hash).lower())
            return pending_transaction_to_wire(waiting.decoded) if waiting else None

    def receipt(self, params: list[Any]) -> dict[str, Any] | None:
        try:
            return receipt_to_wire(self.tester.get_transaction_receipt(param(params, 0)))
        except TransactionNotFound:
            return None  # unknown or not mined yet: null, as every node answers

    def logs(self, params: list[Any]) -> list[dict[str, Any]]:
        query = param(params, 0, {}) or {}
        if not isinstance(query, dict):
            raise InvalidParams("the filter must be an object")
        if "blockHash" in query:
            if "fromBlock" in query or "toBlock" in query:
                raise InvalidParams("cannot specify both BlockHash and FromBlock/ToBlock, choose one or the other")
            try:
                start = end = int(self.tester.get_block_by_hash(query["blockHash"])["number"])
            except BlockNotFound:
                raise RpcError(SERVER_ERROR, "unknown block") from None
        else:
            first = block_id(query.get("fromBlock"))
            if isinstance(first, int) and first > self.block_number():
                return []  # nothing has been logged there yet
            # Like geth, a range reaching past the newest block ends at it.
            start = self.block_number_of(first, clamp=True)
            end = self.block_number_of(query.get("toBlock"), clamp=True)
            if start > end:
                raise InvalidParams("invalid block range params")
        address, topics = query.get("address"), query.get("topics")
        return [log_to_wire(log) for log in self.tester.get_logs(start, end, address=address, topics=topics)]

    # ------------------------------------------------------------------ sending

    def send_raw(self, params: list[Any]) -> str:
        """eth_sendRawTransaction: mine now, or hold until the sender's earlier nonces are mined."""
        raw = param(params, 0)
        if not isinstance(raw, str) or not raw.startswith("0x"):
            raise InvalidParams("the raw transaction must be 0x-prefixed hex")
        try:
            decoded = self.tester.backend.chain.get_vm().get_transaction_builder().decode(decode_hex(raw))
            sender = to_checksum_address(decoded.sender)
        except Exception as exc:  # untrusted bytes: rlp, py-evm and eth-keys each raise their own errors
            raise RpcError(SERVER_ERROR, f"invalid transaction: {type(exc).__name__}: {exc}") from None
        self._check_chain_id(decoded)
        tx_hash = "0x" + decoded.hash.hex()
        expected = self.tester.get_nonce(sender)
        if decoded.nonce < expected:
            raise RpcError(SERVER_ERROR, f"nonce too low: address {sender}, tx: {decoded.nonce} state: {expected}")
        if decoded.nonce > expected:
            if self.waiting.find(tx_hash):
                raise RpcError(SERVER_ERROR, "already known")
            self._check_can_run(decoded, sender)
            try:
                self.waiting.hold(sender, decoded.nonce, Waiting(tx_hash, raw, decoded))
            except QueueFull as exc:
                raise RpcError(SERVER_ERROR, str(exc)) from None
            return tx_hash
        try:
            # A transaction that reverts is still mined (receipt status 0x0), as on any node.
            mined = self.tester.send_raw_transaction(raw)
        except _REFUSALS as exc:
            raise RpcError(SERVER_ERROR, f"transaction refused: {exc}") from None
        self._release_waiting(sender)
        return mined

    def send(self, params: list[Any]) -> str:
        """eth_sendTransaction from one of the chain's own (unlocked) dev accounts."""
        transaction = call_object(param(params, 0))
        sender = transaction.get("from")
        accounts = {account.lower() for account in self.tester.get_accounts()}
        if not isinstance(sender, str) or sender.lower() not in accounts:
            raise RpcError(SERVER_ERROR, "unknown account")
        if "gas" not in transaction:
            # Reverts here surface as code 3 before anything is sent, as geth's estimate does;
            # the estimate runs under the time limit, the transaction itself is mined in full.
            transaction["gas"] = int(self._estimate(dict(transaction), "latest") * GAS_HEADROOM)
        try:
            mined = self.tester.send_transaction(transaction)
        except _REFUSALS as exc:
            raise RpcError(SERVER_ERROR, f"transaction refused: {exc}") from None
        self._release_waiting(to_checksum_address(sender))
        return mined

    def _check_chain_id(self, decoded: Any) -> None:
        # eth-tester would mine a transaction signed for another chain; geth refuses, and so do we.
        if getattr(decoded, "type_id", None) is None:
            if decoded.v in (27, 28):
                raise RpcError(SERVER_ERROR, "only replay-protected (EIP-155) transactions allowed over RPC")
            chain_id = (decoded.v - 35) // 2
        else:
            chain_id = decoded.chain_id
        if chain_id != self.chain_id:
            raise RpcError(SERVER_ERROR, f"invalid chain id for signer: have {chain_id} want {self.chain_id}")

    def _check_can_run(self, decoded: Any, sender: str) -> None:
        """Refuse a transaction to hold that could never be mined, with geth's messages.

        A held transaction is only run later; without these checks its sender would be
        given a hash and wait for a receipt that never comes.
        """
        gas_limit = int(self.tester.get_block_by_number("pending")["gas_limit"])
        if decoded.gas > gas_limit:
            raise RpcError(SERVER_ERROR, "exceeds block gas limit")
        if decoded.gas < decoded.intrinsic_gas:
            raise RpcError(
                SERVER_ERROR, f"intrinsic gas too low: gas {decoded.gas}, minimum needed {decoded.intrinsic_gas}"
            )
        # geth's pool checks the worst case against today's balance: every fee cap paid in full.
        balance = self.tester.get_balance(sender)
        cost = decoded.gas * decoded.max_fee_per_gas + decoded.value
        if balance < cost:
            raise RpcError(
                SERVER_ERROR,
                f"insufficient funds for gas * price + value: balance {balance}, tx cost {cost}, "
                f"overshot {cost - balance}",
            )

    def _release_waiting(self, sender: str) -> None:
        """Mine ``sender``'s held transactions whose turn has come, in nonce order."""
        while (waiting := self.waiting.take(sender, self.tester.get_nonce(sender))) is not None:
            try:
                self.tester.send_raw_transaction(waiting.raw)
            except _REFUSALS as exc:
                # Its nonce stays unused, so later ones keep waiting for a replacement, as in geth.
                logger.info("dropped waiting transaction %s: %s", waiting.tx_hash, exc)


def read_only_call(value: Any) -> dict[str, Any]:
    """A call object for eth_call / eth_estimateGas.

    Without ``from`` it runs as the funded dev account: eth-tester charges gas even
    for calls, so geth's zero-address default would fail for lack of funds.
    """
    transaction = call_object(value, keep_nonce=False)
    transaction.setdefault("from", DEV_ACCOUNT)
    return transaction


def state_block(value: Any) -> str | int:
    """The block whose state a call runs on; eth-tester cannot estimate on ``pending``.

    Every transaction is mined at once, so the pending state is the latest one.
    """
    identifier = block_id(value)
    return "latest" if identifier == "pending" else identifier
