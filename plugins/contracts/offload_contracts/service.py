"""Contract calls and transactions on the pool's nodes, with web3.py's async API.

Views run as ``eth_call``. Transactions are estimated first (a revert is a 422
before anything is sent), signed locally with a nonce from the allocator, sent
once with ``eth_sendRawTransaction``, and only sent again after looking the
transaction up by its hash on every other node. Once a transaction has been
handed to a node, every answer carries its hash: its receipt, or "outcome
unknown" while :mod:`.outcomes` keeps looking for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak
from web3 import AsyncWeb3
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
    Web3ValidationError,
)
from web3.logs import DISCARD

from offload import NonceLease, OffloadError, StateUnavailable

from .catalog import ContractSpec
from .jsonify import to_json
from .outcomes import (
    DEFAULT_LOOKUP_S,
    DEFAULT_MAX_TRACKED,
    OutcomeTracker,
    OutcomeUnknown,
    TxState,
    WriteContext,
)
from .rpc import RAW_TRANSACTION_METHOD, RETRYABLE_STATUSES, EngineProvider, RpcSender, pinned_server, rpc_payload
from .rpc_cache import CachedReads
from .signer import Signer

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
# JSON-RPC's implementation-defined server errors, where nodes put "already known" and "nonce too
# low" (geth, hardhat, besu and the embedded chain use -32000, nethermind and parity -32010). Only
# these may mean the node already has the transaction, and whether it has is then decided by
# looking its hash up: a message is never read for it ("Unknown transaction type" contains
# "known transaction").
SERVER_ERROR_CODES = range(-32099, -31999)
log = logging.getLogger("offload.contracts")

# How nodes word "another transaction of this account holds that nonce": the node refused ours, so
# (once no node is found to have it) it can be signed again with the node's pending count.
NONCE_CONFLICTS = (
    "nonce too low",
    "nonce has already been used",
    "replacement transaction underpriced",
    "already known",
)
# How long one holder may keep an account's nonce sequence before another may take it over.
DEFAULT_NONCE_LEASE_S = 30.0
# A transaction goes to at most this many nodes: the first, and one more if the first failed
# without anyone having it (never more: the same bytes cannot be mined twice, but each try costs time).
SEND_ATTEMPTS = 2
# Receipt polling: fast at first (the embedded chain mines at once), then every half second.
RECEIPT_POLL_S = 0.05
RECEIPT_POLL_MAX_S = 0.5


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


class TransactionRefused(OffloadError):
    """A node refused the transaction and no node of the pool has it: it was not applied.

    ``rpc_error`` is the node's JSON-RPC error object, passed on as it came.
    """

    def __init__(self, status: int, message: str, *, rpc_error: Any, tx_hash: str, server: str | None) -> None:
        super().__init__(status, message, server=server, details={"rpc_error": rpc_error, "tx_hash": tx_hash})
        self.rpc_error = rpc_error
        self.tx_hash = tx_hash


@dataclass(frozen=True)
class Handed:
    """A transaction that left the gateway: its hash, and whether a node is known to have it."""

    tx_hash: str
    confirmed: bool  # a node answered its hash, or a lookup found it on a node
    server: str | None  # the node that has it (confirmed), or the one that failed after taking it
    failure: str = ""  # why the outcome is unknown

    def unknown(self, status: int, status_url: str, failure: str | None = None) -> OutcomeUnknown:
        """The answer while nobody knows whether it will be mined (``failure`` says why, if not :attr:`failure`)."""
        why = failure or self.failure or "no node has shown it yet"
        return OutcomeUnknown(
            status,
            f"transaction {self.tx_hash} was handed to a node, but its outcome is unknown ({why}); "
            f"the gateway keeps looking for it: GET {status_url}",
            tx_hash=self.tx_hash,
            state=TxState.PENDING if self.confirmed else TxState.UNKNOWN,
            status_url=status_url,
            server=self.server,
        )


def _nonce_conflict(refusal: TransactionRefused) -> bool:
    """Whether a node refused the transaction because its nonce is taken (not for anything about the call)."""
    message = str(refusal.rpc_error.get("message", "")) if isinstance(refusal.rpc_error, dict) else ""
    return any(phrase in message.lower() for phrase in NONCE_CONFLICTS)


def _may_be_known(error: Any) -> bool:
    """Whether a node's error may mean it already has the transaction (decided then by a lookup)."""
    code = error.get("code") if isinstance(error, dict) else None
    return isinstance(code, int) and not isinstance(code, bool) and code in SERVER_ERROR_CODES


def _failed(failure: OffloadError) -> str:
    """Why an outcome is unknown: the node that failed after taking the transaction, and how."""
    return f"node {failure.server!r} failed: {failure.message}"


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
        status_prefix: str = "",
        lookup_s: float = DEFAULT_LOOKUP_S,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        nonce_leases: Callable[[str, float], AbstractAsyncContextManager[NonceLease]],
        nonce_lease_s: float = DEFAULT_NONCE_LEASE_S,
        count_event: Callable[[str, str], None] = lambda event, outcome: None,
        reads: CachedReads | None = None,
    ) -> None:
        self.sender = sender
        self.contracts = contracts
        self.signer = signer
        self.gas_multiplier = gas_multiplier
        self.receipt_timeout_s = receipt_timeout_s
        # Reads (views, receipts, the chain id) go through the same cache and coalescing as /rpc.
        self.w3 = AsyncWeb3(EngineProvider(sender, reads), middleware=[])
        self.bound = {
            name: self.w3.eth.contract(address=spec.address, abi=spec.abi) for name, spec in contracts.items()
        }
        # A receipt's "to" names the contract whose events it holds.
        self.by_address = {spec.address.lower(): name for name, spec in contracts.items()}
        # One nonce sequence per account for every process of the gateway (the state backend's leases).
        self.nonce_leases = nonce_leases
        self.nonce_lease_s = nonce_lease_s
        # Transactions' outcomes in GET /metrics (PluginContext.count_event): fixed names only.
        self.count_event = count_event
        self.outcomes = OutcomeTracker(
            sender, self.summary_from, status_prefix=status_prefix, lookup_s=lookup_s, max_tracked=max_tracked
        )
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
        """Send a state-changing call as a signed transaction and wait for its receipt.

        Raises :class:`OutcomeUnknown` (202, or 504 once ``receipt_timeout_s`` passed) when
        the transaction was handed to a node but its receipt is not known; every error
        raised after the hand-over carries the transaction's hash.
        """
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
        context = WriteContext(contract, function, call)
        transaction = {**call, "gas": int(gas * self.gas_multiplier), "chainId": chain_id}
        handed = await self.sign_and_send(signer, transaction, context)
        if not handed.confirmed:
            raise handed.unknown(202, self.outcomes.status_url(handed.tx_hash))
        return await self.outcome_of(handed, context)

    async def sign_and_send(self, signer: Signer, transaction: dict[str, Any], context: WriteContext) -> Handed:
        """Sign ``transaction`` with the account's next nonce and hand it to a node, holding the account's lease.

        The lease (shared by every worker and replica) is held from reading the
        nonce until a node took the transaction, so no two processes sign one
        nonce and nonces reach the nodes in order. A node that refuses the
        nonce as taken (someone else used the account, or the stored sequence
        went stale) gets the transaction once more, signed with its pending
        count: the first one was refused and no node has it, so at most one of
        the two is ever mined. Raises :class:`StateUnavailable` (503) when the
        shared state cannot be reached: a nonce is never guessed.
        """
        key = f"{transaction['chainId']}:{signer.address.lower()}"
        async with self.nonce_leases(key, self.nonce_lease_s) as lease:
            nonce = await lease.current()
            if nonce is None:
                nonce = await self.pending_nonce(signer)
            gas_price = await self.gas_price()
            try:
                try:
                    handed = await self.send_raw_transaction(
                        signer.sign({**transaction, "nonce": nonce, "gasPrice": gas_price}), context
                    )
                except TransactionRefused as refusal:
                    if not _nonce_conflict(refusal):
                        raise
                    resynced = await self.pending_nonce(signer)
                    log.warning("nonce %d was taken (%s); signing again with %d", nonce, refusal.message, resynced)
                    nonce = resynced
                    handed = await self.send_raw_transaction(
                        signer.sign({**transaction, "nonce": nonce, "gasPrice": gas_price}), context
                    )
            except BaseException:
                # Whether the chain took this nonce is unknown: the next holder asks the chain.
                with contextlib.suppress(StateUnavailable):
                    await lease.forget()
                raise
            try:
                if handed.confirmed:
                    await lease.advance(nonce + 1)
                else:
                    # Unknown whether it was taken: ask the chain next time. Were it lost, the next
                    # write reuses its nonce, so at most one of them is mined.
                    await lease.forget()
            except StateUnavailable as error:
                # The transaction left already: its answer must not be lost for the bookkeeping. The
                # next holder finds the stored nonce stale (the node says so) and signs again.
                log.warning("nonce after %s not stored: %s", handed.tx_hash, error.reason)
        return handed

    async def pending_nonce(self, signer: Signer) -> int:
        """The account's next nonce as the pool's node counts it (pending transactions included)."""
        return await web3_errors_as_http(
            lambda: self.w3.eth.get_transaction_count(signer.address, "pending"), "eth_getTransactionCount"
        )

    async def outcome_of(self, handed: Handed, context: WriteContext) -> dict[str, Any]:
        """The receipt summary of a transaction a node took; whatever goes wrong, the answer has its hash."""
        summary: dict[str, Any] | None = None
        try:
            receipt = await self.wait_for_receipt(handed.tx_hash, self.receipt_timeout_s)
            if receipt is not None:
                summary = self.summarize(receipt)
        except (OffloadError, Web3Exception, ValueError, TypeError, KeyError) as exc:
            # A node's answer the gateway cannot read is not a reason to lose the transaction's hash.
            url = self.outcomes.status_url(handed.tx_hash)
            self.count_event("receipt", "unreadable")
            raise handed.unknown(202, url, f"its receipt could not be read: {exc}") from None
        finally:
            if summary is None:
                # Past the deadline, unreadable, or the caller went away: keep looking for it in the background.
                self.outcomes.watch(handed.tx_hash, TxState.PENDING, server=handed.server, context=context)
        if summary is None:
            url = self.outcomes.status_url(handed.tx_hash)
            self.count_event("receipt", "timeout")
            raise handed.unknown(504, url, f"no receipt within {self.receipt_timeout_s:g} s")
        self.count_event("receipt", "succeeded" if summary["status"] == 1 else "reverted")
        self.outcomes.resolved(handed.tx_hash, summary, None)
        return await self.checked(summary, context)

    async def checked(self, summary: dict[str, Any], context: WriteContext | None) -> dict[str, Any]:
        """``summary`` of a mined transaction; a failed one is a 422 with its reason (and its hash)."""
        if summary["status"] == 1:
            return summary
        what = f"{context.contract}.{context.function}" if context else f"transaction {summary['tx_hash']}"
        reason = await self.replay_reason(context.call, summary["block_number"]) if context else "unknown reason"
        raise OffloadError(422, f"{what} reverted on chain: {reason}", details={"reason": reason, **summary})

    def summarize(self, receipt: Any) -> dict[str, Any]:
        """Hash, status, gas, block and the events of the contract it called (when one of ours)."""
        events = []
        contract = self.by_address.get(str(receipt.get("to") or "").lower())
        if contract is not None:
            for event in self.bound[contract].events:
                for decoded in event().process_receipt(receipt, errors=DISCARD):
                    events.append(
                        {
                            "event": decoded["event"],
                            "args": to_json(dict(decoded["args"])),
                            "log_index": decoded["logIndex"],
                        }
                    )
        return {
            "tx_hash": to_json(receipt["transactionHash"]),
            "status": receipt["status"],
            "gas_used": receipt["gasUsed"],
            "block_number": receipt["blockNumber"],
            "events": sorted(events, key=lambda item: item["log_index"]),
        }

    async def wait_for_receipt(self, tx_hash: str, timeout_s: float) -> Any | None:
        """The transaction's receipt from any node of the pool, or None once ``timeout_s`` passed.

        Not from the pinned node only: that may be the very node that failed after taking
        the transaction. Nodes failing meanwhile are asked again until the deadline.
        """
        deadline = time.monotonic() + timeout_s
        delay = RECEIPT_POLL_S
        token = pinned_server.set(None)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        return await self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                except TimeoutError:
                    return None
                except TransactionNotFound:
                    pass  # not mined yet
                except OffloadError as exc:
                    if exc.status < 500:
                        raise
                    # Every node failing now: one may answer by the deadline.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, RECEIPT_POLL_MAX_S)
        finally:
            pinned_server.reset(token)

    async def summary_from(self, tx_hash: str, server: str) -> dict[str, Any] | None:
        """The receipt summary of ``tx_hash`` as ``server`` has it; None if it has none (or fails)."""
        token = pinned_server.set(server)
        try:
            receipt = await self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            return self.summarize(receipt)
        except (OffloadError, Web3Exception, ValueError, TypeError, KeyError):
            return None
        finally:
            pinned_server.reset(token)

    async def outcome(self, tx_hash: str) -> dict[str, Any]:
        """What the pool's nodes show of ``tx_hash`` now: mined (with its receipt), pending, or unknown."""
        tx_hash = tx_hash.lower()
        record = self.outcomes.get(tx_hash)
        now = self.outcomes.clock()
        if record is not None and (record.state is TxState.MINED or record.looking(now)):
            return record.describe(now)  # the background lookups keep it current
        sighting = await self.outcomes.lookup(tx_hash)
        if record is not None:
            await self.outcomes.update(record, sighting)
            return record.describe(now)
        described: dict[str, Any] = {"tx_hash": tx_hash, "state": str(sighting.state), "looking": False}
        described["server"] = sighting.server
        if sighting.state is TxState.MINED and sighting.server is not None:
            summary = await self.summary_from(tx_hash, sighting.server)
            if summary is None:
                described["state"] = str(TxState.PENDING)
            else:
                described["receipt"] = summary
        return described

    async def replay_reason(self, call: dict[str, Any], block: int) -> str:
        """Why a mined transaction failed, by replaying it as a call on its parent block."""
        try:
            await self.w3.eth.call(call, max(block - 1, 0))
        except ContractLogicError as exc:
            return revert_reason(exc) or "no reason given"
        except (Web3Exception, OffloadError):
            pass  # the answer carries the receipt and its hash all the same
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

    async def send_raw_transaction(self, raw: bytes, context: WriteContext | None = None) -> Handed:
        """Hand ``raw`` to a node: its hash, and whether a node is known to have it.

        Raises :class:`TransactionRefused` when a node refused it and no node has it, and a
        plain :class:`OffloadError` only when the bytes provably reached no node. A
        transaction whose outcome is unknown is looked for in the background.
        """
        tx_hash = "0x" + keccak(raw).hex()
        try:
            handed = await self._hand_over(raw, tx_hash)
        except asyncio.CancelledError:
            # The caller went away mid-send: a node may have it all the same.
            self.outcomes.watch(tx_hash, TxState.UNKNOWN, context=context)
            self.count_event("transaction", "unknown")
            raise
        except TransactionRefused:
            self.count_event("transaction", "refused")
            raise
        except OffloadError:
            self.count_event("transaction", "not_sent")  # provably reached no node
            raise
        self.count_event("transaction", "accepted" if handed.confirmed else "unknown")
        if not handed.confirmed:
            self.outcomes.watch(tx_hash, TxState.UNKNOWN, server=handed.server, context=context)
        return handed

    async def _hand_over(self, raw: bytes, tx_hash: str) -> Handed:
        """Send once; if the node fails, look the hash up on every other node before sending again."""
        body = rpc_payload(RAW_TRANSACTION_METHOD, ["0x" + raw.hex()])
        tried: set[str] = set()
        # The last failure after which a node may have the transaction (None: provably none has).
        maybe_taken: OffloadError | None = None
        last: OffloadError | None = None
        for _ in range(SEND_ATTEMPTS):
            try:
                response, server = await self.sender.send(body, idempotent=False, exclude=tried)
            except OffloadError as exc:
                if exc.server is None or exc.status not in RETRYABLE_STATUSES:
                    last = last if maybe_taken is not None else exc
                    break  # no node to try (none left, or the pin names one not in the pool)
                tried.add(exc.server)
                last = exc
                if not exc.never_arrived:
                    maybe_taken = exc
                    # The node may have passed it on before failing: never send twice blindly.
                    sighting = await self.outcomes.lookup(tx_hash, exclude=tried)
                    if sighting.found:
                        return Handed(tx_hash, True, sighting.server)
                if pinned_server.get() is not None:
                    break  # the caller named the node that failed: no other may take it
                continue
            return await self._answered(tx_hash, response, server, maybe_taken)
        if maybe_taken is None:
            assert last is not None
            raise last
        return Handed(tx_hash, False, maybe_taken.server, _failed(maybe_taken))

    async def _answered(self, tx_hash: str, response: Any, server: str, maybe_taken: OffloadError | None) -> Handed:
        """What a node's answer to eth_sendRawTransaction means for ``tx_hash``."""
        error = response.get("error") if isinstance(response, dict) else None
        if isinstance(response, dict) and error is None and "result" in response:
            return Handed(tx_hash, True, server)
        if not isinstance(error, dict) or _may_be_known(error):
            # "already known", "nonce too low" (it was mined), or an answer that is no JSON-RPC at
            # all: only a lookup of the hash tells whether a node has it.
            sighting = await self.outcomes.lookup(tx_hash)
            if sighting.found:
                return Handed(tx_hash, True, sighting.server)
        if maybe_taken is not None:
            # An earlier node may still pass it on: this refusal says nothing about that one.
            return Handed(tx_hash, False, maybe_taken.server, _failed(maybe_taken))
        if not isinstance(error, dict):
            return Handed(tx_hash, False, server, f"node {server!r} answered without a result: {str(response)[:200]}")
        message = str(error.get("message", error))
        # A transaction over a gas limit is the caller's to change; anything else is the node's refusal.
        status = 422 if _gas_refusal(message) else 502
        raise TransactionRefused(
            status, f"the node refused the transaction: {message}", rpc_error=error, tx_hash=tx_hash, server=server
        )
