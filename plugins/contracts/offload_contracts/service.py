"""Contract calls and transactions on the pool's nodes, with web3.py's async API.

Views run as ``eth_call``. Transactions are estimated first (a revert is a 422
before anything is sent), signed locally with a nonce from the allocator, sent
once with ``eth_sendRawTransaction``, and only sent again after looking the
transaction up by its hash on another node.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception, Web3RPCError, Web3ValidationError
from web3.logs import DISCARD

from offload import OffloadError

from .catalog import ContractSpec
from .jsonify import to_json
from .rpc import RAW_TRANSACTION_METHOD, RETRYABLE_STATUSES, EngineProvider, RpcSender, rpc_payload
from .signer import NonceAllocator, Signer

T = TypeVar("T")
# How long a fetched gas price is reused: one eth_gasPrice per burst, not per transaction.
GAS_PRICE_TTL_S = 2.0


ERROR_SELECTOR = "0x08c379a0"  # Error(string), what require(cond, "reason") reverts with
PANIC_SELECTOR = "0x4e487b71"  # Panic(uint256): overflow, division by zero, ...
# How nodes word "this needs more gas than a call or transaction may use" (geth, py-evm, hardhat).
GAS_REFUSALS = (
    "out of gas",
    "gas required exceeds allowance",
    "exceeds block gas limit",
    "greater than the cap",
    "intrinsic gas too low",
)
# How nodes word "this call ran past the node's time limit" (geth's --rpc.evmtimeout).
TIME_REFUSALS = ("execution aborted (timeout",)


def revert_reason(exc: ContractLogicError) -> str:
    """The reason a contract gave, from the revert data when there is any (nodes word messages differently)."""
    data = exc.data.get("data") if isinstance(exc.data, dict) else exc.data  # hardhat nests it
    data = data if isinstance(data, str) else ""
    try:
        if data.startswith(ERROR_SELECTOR):
            return str(abi_decode(["string"], bytes.fromhex(data[10:]))[0])
        if data.startswith(PANIC_SELECTOR):
            return f"panic code {hex(abi_decode(['uint256'], bytes.fromhex(data[10:]))[0])}"
    except (ValueError, DecodingError):
        pass
    message = exc.message or str(exc)
    return message.removeprefix("execution reverted: ").removeprefix("execution reverted")


def _gas_refusal(message: str) -> bool:
    lowered = message.lower()
    return any(phrase in lowered for phrase in GAS_REFUSALS)


def _needs_more_gas(what: str, reason: str) -> OffloadError:
    """The request needs more gas than one call or transaction may have: the caller's to change (422)."""
    return OffloadError(
        422,
        f"{what} needs more gas than the node allows for one call or transaction: {reason}",
        details={"reason": reason},
    )


async def web3_errors_as_http(action: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``action`` turning web3 failures into the gateway's JSON errors."""
    try:
        return await action()
    except ContractLogicError as exc:
        reason = revert_reason(exc) or "no reason given"
        if _gas_refusal(reason):
            # Some nodes (hardhat) report running out of gas as a revert: say what it is.
            raise _needs_more_gas(what, reason) from None
        raise OffloadError(422, f"{what} reverted: {reason}", details={"reason": reason}) from None
    except Web3ValidationError as exc:
        raise OffloadError(400, f"{what}: {exc}") from None
    except TimeExhausted as exc:
        raise OffloadError(504, f"{what}: {exc}") from None
    except Web3RPCError as exc:
        message = str(exc.message or exc)
        if _gas_refusal(message):
            raise _needs_more_gas(what, message) from None
        if any(phrase in message.lower() for phrase in TIME_REFUSALS):
            raise OffloadError(504, f"{what}: the node stopped it at its time limit: {message}") from None
        raise OffloadError(502, f"{what}: the node answered an error: {message}") from None
    except Web3Exception as exc:
        raise OffloadError(502, f"{what}: {exc}") from None


class ContractService:
    """Everything the plugin's routes do on chain."""

    def __init__(
        self,
        sender: RpcSender,
        contracts: dict[str, ContractSpec],
        signer: Signer | None,
        *,
        gas_multiplier: float,
        receipt_timeout_s: float,
    ) -> None:
        self.sender = sender
        self.contracts = contracts
        self.signer = signer
        self.gas_multiplier = gas_multiplier
        self.receipt_timeout_s = receipt_timeout_s
        self.w3 = AsyncWeb3(EngineProvider(sender), middleware=[])
        self.bound = {
            name: self.w3.eth.contract(address=spec.address, abi=spec.abi) for name, spec in contracts.items()
        }
        self.nonces = NonceAllocator()
        self._chain_id: int | None = None
        self._gas_price: tuple[float, int] | None = None

    async def ping(self) -> dict[str, Any]:
        """The node's client version, chain id and latest block."""
        return {
            "client_version": await self.w3.client_version,
            "chain_id": await self.w3.eth.chain_id,
            "block_number": await self.w3.eth.block_number,
        }

    async def call_view(self, contract: str, function: str, args: list[Any]) -> Any:
        """Run a view with eth_call and return its decoded result."""
        bound = self.bound[contract].functions[function](*args)
        result = await web3_errors_as_http(bound.call, f"{contract}.{function}")
        return to_json(result)

    async def transact(self, contract: str, function: str, args: list[Any]) -> dict[str, Any]:
        """Send a state-changing call as a signed transaction and wait for its receipt."""
        what = f"{contract}.{function}"
        if self.signer is None:
            raise OffloadError(
                503,
                f"{what} needs a transaction, but no signing key is configured; set private_key_env's "
                "variable or a keystore in [plugins.contracts]",
            )
        signer = self.signer
        spec = self.contracts[contract]
        data = self.bound[contract].encode_abi(function, args=args)
        call = {"from": signer.address, "to": spec.address, "data": data}
        gas = await web3_errors_as_http(lambda: self.w3.eth.estimate_gas(call), what)
        allowance = self.sender.limits.default_gas
        if gas > allowance:
            # The estimate ran with at most this much gas; a node that ignores that (some dev
            # chains do) must not make the gateway sign a transaction the cap was meant to stop.
            raise _needs_more_gas(what, f"gas required exceeds allowance ({allowance})")
        chain_id = await self.chain_id()
        async with self.nonces.lock:
            nonce = await self.nonces.next(lambda: self.w3.eth.get_transaction_count(signer.address, "pending"))
            transaction = {
                **call,
                "nonce": nonce,
                "gas": int(gas * self.gas_multiplier),
                "gasPrice": await self.gas_price(),
                "chainId": chain_id,
            }
            raw = signer.sign(transaction)
            try:
                tx_hash = await self.send_raw_transaction(raw)
            except BaseException:
                self.nonces.forget()
                raise
            self.nonces.used()
        receipt = await web3_errors_as_http(
            lambda: self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout_s, poll_latency=0.05
            ),
            what,
        )
        return await self.describe_receipt(contract, function, call, receipt)

    async def describe_receipt(
        self, contract: str, function: str, call: dict[str, Any], receipt: Any
    ) -> dict[str, Any]:
        """Hash, status, gas, block and decoded events; a failed transaction is a 422 with its reason."""
        events = []
        for event in self.bound[contract].events:
            for decoded in event().process_receipt(receipt, errors=DISCARD):
                events.append(
                    {
                        "event": decoded["event"],
                        "args": to_json(dict(decoded["args"])),
                        "log_index": decoded["logIndex"],
                    }
                )
        summary = {
            "tx_hash": to_json(receipt["transactionHash"]),
            "status": receipt["status"],
            "gas_used": receipt["gasUsed"],
            "block_number": receipt["blockNumber"],
            "events": sorted(events, key=lambda item: item["log_index"]),
        }
        if receipt["status"] != 1:
            reason = await self.replay_reason(call, receipt["blockNumber"])
            raise OffloadError(
                422, f"{contract}.{function} reverted on chain: {reason}", details={"reason": reason, **summary}
            )
        return summary

    async def replay_reason(self, call: dict[str, Any], block: int) -> str:
        """Why a mined transaction failed, by replaying it as a call on its parent block."""
        try:
            await self.w3.eth.call(call, max(block - 1, 0))
        except ContractLogicError as exc:
            return revert_reason(exc) or "no reason given"
        except Web3Exception:
            pass
        return "unknown reason"

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await web3_errors_as_http(lambda: self.w3.eth.chain_id, "eth_chainId")
        return self._chain_id

    async def gas_price(self) -> int:
        now = time.monotonic()
        if self._gas_price is None or now - self._gas_price[0] > GAS_PRICE_TTL_S:
            self._gas_price = (now, await web3_errors_as_http(lambda: self.w3.eth.gas_price, "eth_gasPrice"))
        return self._gas_price[1]

    async def send_raw_transaction(self, raw: bytes) -> str:
        """Send once; if the node fails, look the hash up elsewhere before sending again."""
        tx_hash = "0x" + keccak(raw).hex()
        body = rpc_payload(RAW_TRANSACTION_METHOD, ["0x" + raw.hex()])
        try:
            response, _ = await self.sender.send(body, idempotent=False)
        except OffloadError as exc:
            if exc.status not in RETRYABLE_STATUSES or exc.server is None:
                raise
            # The node may have taken it before failing: never send twice blindly.
            found = await self.sender.call("eth_getTransactionByHash", [tx_hash], exclude={exc.server})
            if isinstance(found, dict) and found.get("result"):
                return tx_hash
            response, _ = await self.sender.send(body, idempotent=False, exclude={exc.server})
        error = response.get("error") if isinstance(response, dict) else None
        if error:
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            if "already known" in message.lower() or "known transaction" in message.lower():
                return tx_hash  # our earlier send did arrive: same bytes, same hash
            # A transaction over a gas limit is the caller's to change; anything else is the node's refusal.
            status = 422 if _gas_refusal(message) else 502
            raise OffloadError(status, f"the node refused the transaction: {message}", details={"rpc_error": error})
        return tx_hash
