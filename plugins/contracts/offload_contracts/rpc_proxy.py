"""``POST {prefix}/rpc``: JSON-RPC 2.0 pass-through with a method allowlist.

An unmodified web3.py or ethers.js client can point at the gateway. Methods
outside the allowlist (admin, personal, debug, eth_sendTransaction, filters
that live on one node, ...) get a JSON-RPC error instead of reaching a node.
Anything that is not a read (eth_sendRawTransaction, and whatever ``rpc_allow``
adds beyond the reads) needs the operator's token before anything is forwarded.
Every caller input gets a JSON-RPC answer: never a traceback, never invalid JSON.

A raw transaction's answer is its hash (a node took it, or a lookup found it on
one), the node's own error (it refused it: passed on as it came, code, message
and data), or, when the node failed after the transaction was sent and no node
shows it, an error whose ``data`` holds the hash and says the outcome is unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from offload import CACHE_HEADER, OffloadError, load_json

from .idempotency import HEADER, IdempotencyStore, KeyRefused, fingerprint, parse_key
from .rpc import CALL_METHODS, RAW_TRANSACTION_METHOD, READ_METHODS, InvalidCallParams, RpcSender
from .rpc_cache import Answer, CachedReads, Lookup, splice, summary
from .service import ContractService, Handed, TransactionRefused

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_ALLOWED = -32601  # "method not found" as far as the client can tell
INVALID_PARAMS = -32602
UPSTREAM_ERROR = -32603
# EIP-1474's "transaction rejected": the request needs the operator's token.
OPERATOR_REQUIRED = -32003
DEFAULT_ALLOWED = READ_METHODS | {RAW_TRANSACTION_METHOD}
DEFAULT_MAX_BATCH = 100
# A string id longer than this is not an id a client would send, only a way to make answers large.
MAX_ID_CHARS = 256
# How much of a refused method name a message repeats.
SHOWN_METHOD_CHARS = 100
_RAW_TRANSACTION = re.compile(r"0x(?:[0-9a-fA-F]{2})+")


def rpc_error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC 2.0 error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def valid_id(value: Any) -> bool:
    """JSON-RPC ids this gateway echoes: a string of at most 256 characters, an integer, or null.

    Floats are refused: NaN, Infinity and 1e400 (infinity once parsed) would be echoed as invalid JSON.
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return True
    return isinstance(value, str) and len(value) <= MAX_ID_CHARS


def is_notification(request: Any) -> bool:
    """A JSON-RPC request without an id: the caller wants no answer."""
    return isinstance(request, dict) and "id" not in request


@dataclass
class RpcReply:
    """What ``/rpc`` answers: an HTTP status, a JSON-RPC payload (None: no body) and extra headers.

    ``raw`` is the body already encoded (a cache hit), sent instead of ``payload``.
    """

    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


@dataclass(frozen=True)
class Checked:
    """One request that may be forwarded: its method, params as forwarded, and the caller's id."""

    request: dict[str, Any]
    method: str
    params: Any

    @property
    def id(self) -> Any:
        return self.request.get("id")

    @property
    def notification(self) -> bool:
        return "id" not in self.request

    def outgoing(self, request_id: Any) -> dict[str, Any]:
        """The request as sent to a node, under ``request_id``."""
        outgoing = {"jsonrpc": "2.0", "id": request_id, "method": self.method}
        if self.params is not None:
            outgoing["params"] = self.params
        return outgoing


def _encode(payload: Any) -> bytes:
    # allow_nan=False: a non-finite number must never reach a node as invalid JSON.
    return json.dumps(payload, allow_nan=False).encode()


class RpcProxy:
    """Forwards allowed JSON-RPC requests to the pool's nodes."""

    def __init__(
        self,
        sender: RpcSender,
        service: ContractService,
        extra_allowed: Collection[str],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        store: IdempotencyStore[Any] | None = None,
        reads: CachedReads | None = None,
    ) -> None:
        self.sender = sender
        self.service = service
        self.reads = reads  # the read cache and coalescing (None: every read goes to a node)
        self.allowed = frozenset(DEFAULT_ALLOWED | set(extra_allowed))
        self.max_batch = max_batch
        self.store: IdempotencyStore[Any] = store if store is not None else IdempotencyStore()

    def needs_operator(self, method: str) -> bool:
        """Whether forwarding ``method`` needs the operator's token: anything but a read."""
        return method not in READ_METHODS

    def check(self, request: Any) -> Checked | dict[str, Any]:
        """The request ready to forward, or the JSON-RPC error that answers it instead."""
        if not isinstance(request, dict):
            return rpc_error(None, INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object")
        if not valid_id(request.get("id")):
            return rpc_error(
                None,
                INVALID_REQUEST,
                f"invalid request: the id must be a string of at most {MAX_ID_CHARS} characters, an integer, or null",
            )
        request_id = request.get("id")
        if request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
            return rpc_error(request_id, INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object")
        method = request["method"]
        if method not in self.allowed:
            return rpc_error(
                request_id,
                METHOD_NOT_ALLOWED,
                f"method {method[:SHOWN_METHOD_CHARS]} is not allowed through this gateway "
                "(reads and eth_sendRawTransaction are); enable more with rpc_allow in [plugins.contracts]",
            )
        params = request.get("params")
        try:
            if method == RAW_TRANSACTION_METHOD:
                if not (
                    isinstance(params, list)
                    and len(params) == 1
                    and isinstance(params[0], str)
                    and _RAW_TRANSACTION.fullmatch(params[0])
                ):
                    raise InvalidCallParams("expected [raw transaction as 0x-hex]")
            elif method in CALL_METHODS:
                params = self.sender.limits.cap(params)
            _encode(params)
        except InvalidCallParams as exc:
            return rpc_error(request_id, INVALID_PARAMS, f"invalid params for {method}: {exc}")
        except ValueError:
            return rpc_error(request_id, INVALID_PARAMS, f"invalid params for {method}: numbers must be finite")
        return Checked(request, method, params)

    async def handle(
        self,
        body: bytes,
        authorize: Callable[[], None],
        *,
        key_values: Sequence[str] = (),
        scope: str = "",
    ) -> RpcReply:
        """The answer to a request body; ``authorize`` raises :class:`OffloadError` unless the operator sent it.

        ``authorize`` is called, before anything is forwarded, when the body holds a request
        that is not a read. ``key_values`` are the request's ``Idempotency-Key`` headers,
        which apply to a body of one eth_sendRawTransaction (``scope``: whose keys they are).
        """
        try:
            parsed = load_json(body)
        except ValueError:
            return RpcReply(400, rpc_error(None, PARSE_ERROR, "parse error: the body is not JSON"))
        if isinstance(parsed, list):
            if not parsed:
                return RpcReply(400, rpc_error(None, INVALID_REQUEST, "invalid request: empty batch"))
            if len(parsed) > self.max_batch:
                # One error for the whole batch: answering each element is what made huge answers.
                return RpcReply(
                    400,
                    rpc_error(
                        None,
                        INVALID_REQUEST,
                        f"invalid request: batch of {len(parsed)} requests, more than max_batch ({self.max_batch})",
                    ),
                )
            return await self.batch(parsed, authorize, bool(key_values))
        checked = self.check(parsed)
        if not isinstance(checked, Checked):
            if checked["error"]["code"] == INVALID_REQUEST:
                return RpcReply(400, checked)
            # A notification gets no answer, not even an error (JSON-RPC 2.0).
            return RpcReply(204, None) if is_notification(parsed) else RpcReply(200, checked)
        refused = self.authorize([checked], authorize, checked.id)
        if refused is not None:
            return refused
        if checked.method == RAW_TRANSACTION_METHOD:
            return await self.keyed_raw_transaction(checked, key_values, scope)
        return await self.single(checked)

    def authorize(self, checked: list[Checked], authorize: Callable[[], None], request_id: Any) -> RpcReply | None:
        """None if ``checked`` may be forwarded; else the refusal, under ``request_id`` (null for a batch)."""
        if not any(self.needs_operator(item.method) for item in checked):
            return None
        try:
            authorize()
        except OffloadError as exc:
            # One error for the whole body: nothing of it is forwarded.
            return RpcReply(exc.status, rpc_error(request_id, OPERATOR_REQUIRED, exc.message), dict(exc.headers))
        return None

    def timeout_for(self, checked: list[Checked]) -> float | None:
        """The deadline of a request holding calls (which run contract code on the node), else the pool's."""
        return self.sender.limits.timeout_for(item.method for item in checked)

    def lookup(self, checked: Checked) -> Lookup | None:
        """``checked`` as the read cache sees it; None if it goes to a node as it is (writes, notifications)."""
        if self.reads is None or checked.notification:
            return None
        return self.reads.lookup(checked.method, checked.params)

    async def single(self, checked: Checked) -> RpcReply:
        """Forward one checked request (not a raw transaction); a notification is answered 204.

        A read is answered from the cache, or by one node call shared with identical reads in flight.
        """
        lookup = self.lookup(checked)
        if lookup is not None:
            return await self.cached(checked, lookup)
        # A notification goes out with an id all the same, so the node's answer is JSON-RPC to check.
        body = _encode(checked.outgoing(checked.id if not checked.notification else 0))
        try:
            response, _ = await self.sender.send(
                body, idempotent=checked.method in READ_METHODS, timeout_s=self.timeout_for([checked])
            )
        except OffloadError as exc:
            return RpcReply(exc.status, rpc_error(checked.id, UPSTREAM_ERROR, exc.message, {"server": exc.server}))
        if checked.notification:
            return RpcReply(204, None)
        if isinstance(response, dict):
            response = {**response, "id": checked.id}
        return RpcReply(200, response)

    async def cached(self, checked: Checked, lookup: Lookup) -> RpcReply:
        """One read through the cache, saying how it was answered in ``X-Offload-Cache``."""
        reads: CachedReads = self.reads  # type: ignore[assignment]
        kept = reads.hit(lookup)
        if kept is not None:
            # The fast path: the kept bytes with the caller's id spliced in, nothing decoded or encoded.
            return RpcReply(200, None, {CACHE_HEADER: "hit"}, raw=splice(kept, checked.id))
        try:
            answer, outcome = await reads.read(lookup, timeout_s=self.timeout_for([checked]))
        except OffloadError as exc:
            return RpcReply(
                exc.status,
                rpc_error(checked.id, UPSTREAM_ERROR, exc.message, {"server": exc.server}),
                {CACHE_HEADER: "miss"},
            )
        return RpcReply(200, answer.for_id(checked.id), {CACHE_HEADER: outcome})

    async def keyed_raw_transaction(self, checked: Checked, key_values: Sequence[str], scope: str) -> RpcReply:
        """One eth_sendRawTransaction, given its first answer again for a retry with the same key."""
        try:
            key = parse_key(list(key_values))
        except KeyRefused as exc:
            return RpcReply(exc.status, rpc_error(checked.id, INVALID_REQUEST, exc.message))
        if key is None:
            return await self.raw_transaction(checked)
        raw_hex = checked.params[0].lower()
        try:
            handed, replayed = await self.store.run(
                scope, key, fingerprint(RAW_TRANSACTION_METHOD, raw_hex), lambda: self._handed(raw_hex)
            )
        except KeyRefused as exc:  # 422 another request's key, 409 its first still runs, 503 no room
            return RpcReply(exc.status, rpc_error(checked.id, INVALID_REQUEST, exc.message), dict(exc.headers))
        except TransactionRefused as exc:
            return self.refused(checked, exc)
        except OffloadError as exc:
            # Provably sent to no node (none reachable): a plain error, there is no hash to give.
            return RpcReply(exc.status, rpc_error(checked.id, UPSTREAM_ERROR, exc.message, {"server": exc.server}))
        if replayed and not handed.confirmed:
            # Answered "unknown" the first time: what do the nodes show of it now?
            state = (await self.service.outcome(handed.tx_hash))["state"]
            if state != "unknown":
                handed = Handed(handed.tx_hash, True, handed.server)
        reply = self.handed_reply(checked, handed)
        if replayed:
            reply.headers["Idempotent-Replayed"] = "true"
        return reply

    async def _handed(self, raw_hex: str) -> tuple[Handed, bool]:
        """Send a raw transaction for the idempotency store: kept once a node may have it."""
        return await self.service.send_raw_transaction(bytes.fromhex(raw_hex[2:])), True

    async def raw_transaction(self, checked: Checked) -> RpcReply:
        """Hand a raw transaction to a node; answer its hash, the node's refusal, or "outcome unknown"."""
        try:
            handed = await self.service.send_raw_transaction(bytes.fromhex(checked.params[0][2:]))
        except TransactionRefused as exc:
            return self.refused(checked, exc)
        except OffloadError as exc:
            # Provably sent to no node (none reachable): a plain error, there is no hash to give.
            return RpcReply(exc.status, rpc_error(checked.id, UPSTREAM_ERROR, exc.message, {"server": exc.server}))
        return self.handed_reply(checked, handed)

    def refused(self, checked: Checked, exc: TransactionRefused) -> RpcReply:
        """The node's own error object, as it came: a JSON-RPC client reads its code and message.

        HTTP 200, as geth answers its JSON-RPC errors and as this gateway answers its own
        -32602 for a malformed raw transaction: web3.py and ethers.js raise an HTTP error
        for any other status and the node's message would be lost to the caller.
        """
        if checked.notification:
            return RpcReply(204, None)
        return RpcReply(200, {"jsonrpc": "2.0", "id": checked.id, "error": exc.rpc_error})

    def handed_reply(self, checked: Checked, handed: Handed) -> RpcReply:
        """The hash as the result, or (202) an error whose ``data`` holds the hash and says the outcome is unknown."""
        if checked.notification:
            return RpcReply(204, None)
        if handed.confirmed:
            return RpcReply(200, {"jsonrpc": "2.0", "id": checked.id, "result": handed.tx_hash})
        url = self.service.outcomes.status_url(handed.tx_hash)
        message = (
            f"outcome unknown: the transaction was sent, but {handed.failure or 'no node shows it'}; "
            f"it may still be mined: ask eth_getTransactionReceipt or GET {url}"
        )
        data = {"tx_hash": handed.tx_hash, "outcome": "unknown", "status_url": url, "server": handed.server}
        return RpcReply(202, rpc_error(checked.id, UPSTREAM_ERROR, message, data), {"Location": url})

    async def batch(self, requests: list[Any], authorize: Callable[[], None], keyed: bool = False) -> RpcReply:
        """Check every element, forward the allowed ones, answer in the caller's order.

        Raw transactions are sent one by one, in the batch's order, each answered as a
        single one would be (hash, the node's refusal, or outcome unknown with the hash);
        the rest go to a node as one batch.
        """
        answers: dict[int, dict[str, Any]] = {}
        forward: list[tuple[int, Checked]] = []
        writes: list[tuple[int, Checked]] = []
        for index, request in enumerate(requests):
            checked = self.check(request)
            if not isinstance(checked, Checked):
                answers[index] = checked
            elif checked.method == RAW_TRANSACTION_METHOD:
                writes.append((index, checked))
            else:
                forward.append((index, checked))
        refused = self.authorize([checked for _, checked in forward + writes], authorize, None)
        if refused is not None:
            return refused
        if keyed and writes:
            return RpcReply(
                400,
                rpc_error(
                    None,
                    INVALID_REQUEST,
                    f"{HEADER} applies to a body of one eth_sendRawTransaction, not a batch; "
                    "send the batch without it (a raw transaction is sent at most once per hash anyway)",
                ),
            )
        status = 200
        for index, checked in writes:
            reply = await self.raw_transaction(checked)
            if reply.payload is not None:
                answers[index] = reply.payload
            if reply.status != 200:
                status = max(status, reply.status)
        failure: OffloadError | None = None
        outcomes: list[str] = []
        if forward:
            failure = await self.forward_batch(forward, answers, outcomes)
        # "hit" when the cache answered every read, "miss" when none, "partial" in between.
        headers = {CACHE_HEADER: value} if (value := summary(outcomes)) else {}
        # Notifications (no "id") get no answer, as JSON-RPC 2.0 says; nothing at all if that is every one.
        ordered = [answers[index] for index in range(len(requests)) if not is_notification(requests[index])]
        if failure is not None:
            # The node failed: the HTTP status says so even when only notifications were sent.
            payload = ordered or rpc_error(None, UPSTREAM_ERROR, failure.message, {"server": failure.server})
            return RpcReply(failure.status, payload, headers)
        return RpcReply(status, ordered, headers) if ordered else RpcReply(204, None, headers)

    async def forward_batch(
        self, forward: list[tuple[int, Checked]], answers: dict[int, Any], outcomes: list[str] | None = None
    ) -> OffloadError | None:
        """Answer reads of ``forward`` from the cache, send the rest to a node as one batch, fill ``answers``.

        Returns the failure, if the node failed. ``outcomes`` gets one entry per read the cache
        saw ("hit" or "miss"): a batch is not coalesced, its reads that were not kept go as they did.
        """
        outcomes = [] if outcomes is None else outcomes
        lookups: dict[int, Lookup] = {}
        send: list[tuple[int, Checked]] = []
        for index, checked in forward:
            lookup = self.lookup(checked)
            kept = self.reads.hit(lookup) if self.reads is not None and lookup is not None else None
            if kept is not None:
                answers[index] = load_json(splice(kept, checked.id))
                outcomes.append("hit")
                continue
            if lookup is not None:
                lookups[index] = lookup
            send.append((index, checked))
        failure = await self._send_batch(send, answers, lookups) if send else None
        if self.reads is not None:
            for _ in lookups:
                self.reads.cache.count("miss")
            outcomes.extend("miss" for _ in lookups)
        return failure

    async def _send_batch(
        self, forward: list[tuple[int, Checked]], answers: dict[int, Any], lookups: dict[int, Lookup]
    ) -> OffloadError | None:
        """Send ``forward`` to a node as one batch, fill ``answers`` and keep the reads that may be kept."""
        # Each forwarded request gets a unique id on the way, so answers map back whatever ids clients used.
        body = _encode([checked.outgoing(index) for index, checked in forward])
        idempotent = all(checked.method in READ_METHODS for _, checked in forward)
        timeout_s = self.timeout_for([checked for _, checked in forward])
        generation = self.reads.cache.generation if self.reads is not None and lookups else ""
        try:
            response, server = await self.sender.send(body, idempotent=idempotent, timeout_s=timeout_s)
        except OffloadError as exc:
            for index, checked in forward:
                answers[index] = rpc_error(checked.id, UPSTREAM_ERROR, exc.message, {"server": exc.server})
            return exc
        by_id = _answers_by_id(response)
        for index, checked in forward:
            item = by_id.get(index)
            if item is None and isinstance(response, dict) and "error" in response:
                # The node refused the whole batch with one error: it answers each request.
                item = response
            if item is None:
                answers[index] = rpc_error(checked.id, UPSTREAM_ERROR, "the node gave no answer for this request")
                continue
            answers[index] = {**item, "id": checked.id}
            if index in lookups and self.reads is not None:
                await self.reads.keep(lookups[index], Answer(item, server), generation)
        return None


def _answers_by_id(response: Any) -> dict[Any, dict[str, Any]]:
    """A node's batch answer by id (only well-formed entries with integer ids, which we assigned)."""
    if not isinstance(response, list):
        return {}
    return {
        item["id"]: item
        for item in response
        if isinstance(item, dict) and isinstance(item.get("id"), int) and not isinstance(item.get("id"), bool)
    }
