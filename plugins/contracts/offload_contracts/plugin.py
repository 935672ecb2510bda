"""Hooks and routes of the contracts plugin."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from offload import (
    CACHE_HEADER,
    READ,
    SERVER_HEADER,
    ConfigError,
    OffloadError,
    OffloadResult,
    PluginContext,
    ProbeResult,
    Server,
    describe_exception,
    envelope_response,
    hookimpl,
    load_json,
    require_operator,
)

from .abi_args import DEFAULT_MAX_ARG_BYTES, bind_arguments
from .catalog import ContractSpec, is_view, load_contracts
from .idempotency import (
    DEFAULT_MAX_KEYS,
    DEFAULT_TTL_S,
    HEADER,
    IdempotencyStore,
    SharedClaims,
    fingerprint,
    operator_scope,
)
from .jsonify import to_json
from .outcomes import DEFAULT_LOOKUP_S, DEFAULT_MAX_TRACKED, is_tx_hash
from .reorgs import ReorgWatcher, poke, server_height, watch
from .rpc import (
    DEFAULT_CALL_GAS_CAP,
    DEFAULT_CALL_TIMEOUT_S,
    JSON_HEADERS,
    CallLimits,
    RpcSender,
    cache_outcomes,
    pinned_server,
    rpc_payload,
)
from .rpc_cache import DEFAULT_CONFIRMATIONS, CachedReads, CacheSettings, summary
from .rpc_proxy import DEFAULT_MAX_BATCH, RpcProxy, RpcReply
from .service import ContractService
from .shared_answers import compact_answer, decode_answer, encode_answer
from .signer import load_signer
from .writes import WriteAnswers, begin

SHORTHAND_CONTRACT = "Hello"  # the original interface had /hello for its Hello contract
# The outcome route's first segment: a contract of this name would be shadowed by it.
OUTCOME_SEGMENT = "tx"
MIB = 1024 * 1024
# Below this not even a plain transfer can run, so no call could.
MIN_CALL_GAS_CAP = 21_000
# Body limits above this are a typo, not a setting (the gateway's own max_body_bytes stops there too).
MAX_BODY_LIMIT = 1 << 30


# How the routes are described in the gateway's /openapi.json (plain dicts: see offload.openapi.spec).
# A string answer is the standard shape for its status: the envelope below 400, the JSON error from 400 up.
SERVER_QUERY = {
    "in": "query",
    "name": "server",
    "required": False,
    "schema": {"type": "string"},
    "description": "Send to this node of the pool (its name or address) instead of the one the policy picks.",
}
ARG_QUERY = {
    "in": "query",
    "name": "arg",
    "required": False,
    "schema": {"type": "array", "items": {"type": "string"}},
    "style": "form",
    "explode": True,
    "description": "One positional argument per arg=, in the method's order (or one JSON array holding them all).",
}
IDEMPOTENCY_HEADER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string"},
    "description": "Writes only: a retry with the same key gets the first request's answer, not a second transaction.",
}
# A route that decides per request whether it writes: a write needs the operator's token.
WRITE_SECURITY = [{}, {"operatorToken": []}]
WRITE_ERRORS = {
    "401": "a write without the operator's token ('Authorization: Bearer <token>')",
    "403": "a write while no operator token is configured, host not allowed, or a cross-site request",
    "415": "a write sent with a form or text content type: send application/json",
    "409": "the Idempotency-Key's first request is still running",
    "422": "the Idempotency-Key was used for another request, or the node refused the transaction",
}
PENDING = "a write handed to a node whose outcome is not known yet: data.status_url says where to ask"
UNKNOWN_CONTRACT = "unknown contract or method"
_JSON_RPC_RESPONSE = {
    "type": "object",
    "required": ["jsonrpc", "id"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "integer", "null"]},
        "result": {},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
        },
    },
}
_JSON_RPC_ANSWER = {"oneOf": [_JSON_RPC_RESPONSE, {"type": "array", "items": _JSON_RPC_RESPONSE}]}
# /rpc answers its own refusals as JSON-RPC errors; the gateway's guard (host, size) answers its JSON error.
_RPC_ERROR = {"oneOf": [_JSON_RPC_RESPONSE, {"$ref": "#/components/schemas/Error"}]}


def rpc_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An answer of ``POST /rpc`` (JSON-RPC 2.0 objects)."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def listing(description: str, **properties: dict[str, Any]) -> dict[str, Any]:
    """A ``{"data": ..., "status_code": 200}`` answer with more ``properties``."""
    schema = {
        "type": "object",
        "required": sorted({"data", "status_code", *properties}),
        "properties": {"status_code": {"type": "integer"}, **properties},
    }
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@hookimpl
def offload_default_settings() -> dict[str, Any]:
    return {
        "prefix": "/contracts",
        "policy": "min_latency",
        "default_port": 8545,
        "max_lag": 8,  # blocks; proxyd's default
        "rpc_path": "/",
        "contracts": [],
        "rpc_allow": [],
        "private_key_env": "OFFLOAD_CONTRACTS_PRIVATE_KEY",
        "keystore": "",
        "keystore_password_env": "OFFLOAD_CONTRACTS_KEYSTORE_PASSWORD",
        "gas_multiplier": 1.2,
        "receipt_timeout_s": 30.0,
        # Compatibility switch: let `GET execcontract` send transactions again (still only with the token).
        "allow_get_transactions": False,
        # Limits on callers (see README "Limits").
        "max_batch": DEFAULT_MAX_BATCH,  # JSON-RPC requests in one /rpc batch
        "rpc_max_body_bytes": MIB,  # the /rpc body
        "rest_max_body_bytes": 64 * 1024,  # the body of POST /{contract}/{method}
        "max_arg_bytes": DEFAULT_MAX_ARG_BYTES,  # one contract-call argument
        "call_gas_cap": DEFAULT_CALL_GAS_CAP,  # gas of one eth_call / eth_estimateGas (geth's RPCGasCap)
        "call_timeout_s": DEFAULT_CALL_TIMEOUT_S,  # time of a request holding eth_call / eth_estimateGas
        # Writes' outcomes (see README "Writes").
        "idempotency_max_keys": DEFAULT_MAX_KEYS,  # Idempotency-Key answers kept
        "idempotency_ttl_s": DEFAULT_TTL_S,  # how long one is kept
        "outcome_lookup_s": DEFAULT_LOOKUP_S,  # how long a transaction of unknown outcome is looked for
        "outcome_max_tracked": DEFAULT_MAX_TRACKED,  # transactions looked for (and remembered) at once
        # The read cache (see README "Read cache").
        "cache": True,  # keep answers that cannot change (chain id; final blocks, calls at final blocks, ...)
        # Blocks below the best node's head before one counts as final: dev chains have no finality
        # of their own, and 64 (two epochs, when an Ethereum block is finalized) is mainnet-like safety.
        "cache_confirmations": DEFAULT_CONFIRMATIONS,
        "cache_latest_ttl_s": 0.0,  # seconds a read at "latest" may be kept; 0: never (it changes every block)
        "coalesce": True,  # identical reads in flight at the same time are sent to a node once
    }


@dataclass(frozen=True)
class CallerLimits:
    """The plugin's limits on what one caller may ask, read and checked at startup."""

    allow_get_transactions: bool
    max_batch: int
    rpc_max_body_bytes: int
    rest_max_body_bytes: int
    max_arg_bytes: int
    calls: CallLimits
    gas_multiplier: float
    receipt_timeout_s: float
    idempotency_max_keys: int
    idempotency_ttl_s: float
    outcome_lookup_s: float
    outcome_max_tracked: int


def _integer(plugin: PluginContext, key: str, minimum: int, maximum: int) -> int:
    value = plugin.options[key]
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(f"{plugin.where} {key} must be an integer from {minimum} to {maximum}, got {value!r}")
    return value


def _number(plugin: PluginContext, key: str, minimum: float, *, inclusive: bool = False) -> float:
    value = plugin.options[key]
    # TOML gives int or float; bool is an int to Python but never a number here.
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and math.isfinite(value))
    if not ok or value < minimum or (value == minimum and not inclusive):
        bound = f"at least {minimum:g}" if inclusive else f"more than {minimum:g}"
        raise ConfigError(f"{plugin.where} {key} must be a number {bound}, got {value!r}")
    return float(value)


def read_limits(plugin: PluginContext) -> CallerLimits:
    """The plugin's limits from its options; one clear :class:`ConfigError` line for a bad one."""
    allow_get = plugin.options["allow_get_transactions"]
    if not isinstance(allow_get, bool):
        raise ConfigError(f"{plugin.where} allow_get_transactions must be true or false, got {allow_get!r}")
    return CallerLimits(
        allow_get_transactions=allow_get,
        max_batch=_integer(plugin, "max_batch", 1, 100_000),
        rpc_max_body_bytes=_integer(plugin, "rpc_max_body_bytes", 1, MAX_BODY_LIMIT),
        rest_max_body_bytes=_integer(plugin, "rest_max_body_bytes", 1, MAX_BODY_LIMIT),
        max_arg_bytes=_integer(plugin, "max_arg_bytes", 1, MAX_BODY_LIMIT),
        calls=CallLimits(
            gas_cap=_integer(plugin, "call_gas_cap", MIN_CALL_GAS_CAP, 2**63 - 1),
            timeout_s=_number(plugin, "call_timeout_s", 0),
        ),
        gas_multiplier=_number(plugin, "gas_multiplier", 1, inclusive=True),
        receipt_timeout_s=_number(plugin, "receipt_timeout_s", 0),
        idempotency_max_keys=_integer(plugin, "idempotency_max_keys", 1, 10_000_000),
        idempotency_ttl_s=_number(plugin, "idempotency_ttl_s", 0),
        outcome_lookup_s=_number(plugin, "outcome_lookup_s", 0),
        outcome_max_tracked=_integer(plugin, "outcome_max_tracked", 1, 10_000_000),
    )


def _boolean(plugin: PluginContext, key: str) -> bool:
    value = plugin.options[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{plugin.where} {key} must be true or false, got {value!r}")
    return value


def read_cache_settings(plugin: PluginContext) -> CacheSettings:
    """The plugin's read cache settings; one clear :class:`ConfigError` line for a bad one."""
    return CacheSettings(
        cache=_boolean(plugin, "cache"),
        confirmations=_integer(plugin, "cache_confirmations", 0, 1_000_000),
        latest_ttl_s=_number(plugin, "cache_latest_ttl_s", 0, inclusive=True),
        coalesce=_boolean(plugin, "coalesce"),
    )


def rpc_path(plugin: PluginContext) -> str:
    path = plugin.options["rpc_path"]
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{plugin.where} rpc_path must be a path starting with /, got {path!r}")
    return path


@hookimpl
def offload_probe(plugin: PluginContext, server: Server) -> Awaitable[ProbeResult]:
    """eth_blockNumber: alive, how fast, and how far along the chain."""

    async def probe() -> ProbeResult:
        session = plugin.http_session
        started = time.perf_counter()
        try:
            async with session.post(
                server.url + rpc_path(plugin),
                data=rpc_payload("eth_blockNumber", []),
                headers=JSON_HEADERS,
                allow_redirects=False,  # a node does not get to send our probes elsewhere
            ) as reply:
                payload = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return ProbeResult(ok=False, error=f"probe failed: {describe_exception(exc)}")
        latency = time.perf_counter() - started
        try:
            height = int(payload["result"], 16)
        except (KeyError, TypeError, ValueError):
            return ProbeResult(
                ok=False, latency_s=latency, error=f"probe failed: eth_blockNumber answered {payload!r:.120}"
            )
        # A new height may have moved the finalized one, or shown a reorg: the watcher checks.
        poke(plugin)
        return ProbeResult(ok=True, latency_s=latency, height=height)

    return probe()


class ContractRoutes:
    """The plugin's routes, bound to one gateway's engine and configuration."""

    def __init__(self, plugin: PluginContext, base_dir: Path) -> None:
        options = plugin.options
        self.plugin = plugin
        self.limits = read_limits(plugin)
        self.contracts = load_contracts(options["contracts"], plugin.where, base_dir)
        if OUTCOME_SEGMENT in self.contracts:
            raise ConfigError(
                f"{plugin.where} a contract may not be named {OUTCOME_SEGMENT!r}: "
                f"{plugin.prefix}/{OUTCOME_SEGMENT}/<hash> is the outcome route"
            )
        allowed = options["rpc_allow"]
        if not isinstance(allowed, list) or not all(isinstance(item, str) for item in allowed):
            raise ConfigError(f"{plugin.where} rpc_allow must be a list of JSON-RPC method names")
        sender = RpcSender(plugin, rpc_path(plugin), self.limits.calls)
        cache_settings = read_cache_settings(plugin)
        self.watcher = ReorgWatcher(plugin, sender, cache_settings.confirmations)
        reads = CachedReads(
            sender,
            cache_settings,
            finalized=self.watcher.finalized,
            height_of=lambda name: server_height(plugin, name),
        )
        self.reads = reads if reads.enabled else None
        self.service = ContractService(
            sender,
            self.contracts,
            load_signer(options, plugin.where, base_dir),
            gas_multiplier=self.limits.gas_multiplier,
            receipt_timeout_s=self.limits.receipt_timeout_s,
            status_prefix=plugin.prefix,
            lookup_s=self.limits.outcome_lookup_s,
            max_tracked=self.limits.outcome_max_tracked,
            # Looked up per write: with several workers the shared state is attached only once they start.
            nonce_leases=lambda account, hold_s: plugin.state.nonce_lease(account, hold_s),
            count_event=plugin.count_event,
            reads=self.reads,
        )
        # One store for every write route: a key used on one route and then another is a mismatch (422).
        store: IdempotencyStore[Any] = IdempotencyStore(
            max_keys=self.limits.idempotency_max_keys,
            ttl_s=self.limits.idempotency_ttl_s,
            # A retry waits for its first request as long as that one may wait for a receipt.
            wait_s=self.limits.receipt_timeout_s,
            # Replicas sharing Redis share the keys too: a retry sent to another replica is not a second write.
            shared=SharedClaims(lambda: plugin.state, encode_answer, decode_answer, compact=compact_answer),
        )
        self.writes = WriteAnswers(plugin, self.service, store)
        self.proxy = RpcProxy(
            sender, self.service, allowed, max_batch=self.limits.max_batch, store=store, reads=self.reads
        )

    async def answer(self, request: Request, produce: Callable[[], Awaitable[Any]], **extra: Any) -> HTTPResponse:
        """Run ``produce`` on the node(s) the engine picks and wrap its value in the envelope."""
        started = time.perf_counter()
        used = begin(request)
        outcomes: list[str] = []
        cache_outcomes.set(outcomes)
        data = await produce()
        result = OffloadResult(
            data=data,
            server=used[-1] if used else "",
            status_code=200,
            throughput=self.plugin.throughput(),
            time=time.perf_counter() - started,
        )
        reply = envelope_response(result)
        if extra:
            reply = response.json({**result.envelope(), **extra}, headers={SERVER_HEADER: result.server})
        # How the reads were answered: "hit", "coalesced", "miss", or "partial" for a mix.
        cached = summary(outcomes)
        if cached is not None:
            reply.headers[CACHE_HEADER] = cached
        return reply

    async def write(
        self,
        request: Request,
        spec: ContractSpec,
        function_abi: dict[str, Any],
        args: list[Any],
        key: str | None,
        **extra: Any,
    ) -> HTTPResponse:
        """Send a transaction (the caller holds the token) and answer it, once per ``Idempotency-Key``."""
        name = function_abi["name"]
        return await self.writes.answer(
            request,
            lambda: self.service.transact(spec.name, name, args),
            key=key,
            # The call itself, not how it was spelled: the same write by position or by name is the same.
            request_fingerprint=fingerprint("transaction", spec.name, name, to_json(args)),
            extra=extra,
        )

    def contract(self, name: str) -> ContractSpec:
        spec = self.contracts.get(name)
        if spec is None:
            known = ", ".join(self.contracts) or "none configured"
            raise OffloadError(404, f"unknown contract {name!r}; known contracts: {known}")
        return spec

    def function(self, spec: ContractSpec, name: str) -> dict[str, Any]:
        function_abi = spec.function(name)
        if function_abi is None:
            methods = ", ".join(item["name"] for item in spec.functions())
            raise OffloadError(404, f"contract {spec.name!r} has no method {name!r}; its methods: {methods}")
        return function_abi

    def bind(self, spec: ContractSpec, function_abi: dict[str, Any], positional: Any, named: Any = None) -> list[Any]:
        """The call's arguments, checked against the ABI and the size limit."""
        return bind_arguments(spec.name, function_abi, positional, named, max_arg_bytes=self.limits.max_arg_bytes)

    def post_form(self, spec: ContractSpec, function_abi: dict[str, Any]) -> str:
        """How to send a transaction: the route, its body and the credential."""
        return (
            f"POST {self.plugin.prefix}/{spec.name}/{function_abi['name']} with a JSON body of arguments "
            "and 'Authorization: Bearer <operator token>'"
        )

    def authorize_get(self, request: Request, spec: ContractSpec, function_abi: dict[str, Any]) -> None:
        """A transaction asked for over GET: 405 naming the POST form, unless allow_get_transactions (and the token)."""
        if is_view(function_abi):
            return
        if not self.limits.allow_get_transactions:
            raise OffloadError(
                405,
                f"{spec.name}.{function_abi['name']} changes state, which a GET request may not do: "
                f"send {self.post_form(spec, function_abi)}",
            )
        # The compatibility switch only brings back the old URL, never a write without the token.
        require_operator(request, allow_get=True)

    async def view(self, spec: ContractSpec, function_abi: dict[str, Any], args: list[Any]) -> Any:
        """Run a view (eth_call) and return its decoded result."""
        return await self.service.call_view(spec.name, function_abi["name"], args)

    def blueprint(self) -> Blueprint:
        """The plugin's routes.

        All are READ: the ones that may change state (POST /rpc, POST /{contract}/{method},
        and GET execcontract with allow_get_transactions) learn per request whether they do and
        then call require_operator before anything is sent.
        """
        limits = self.limits
        blueprint = Blueprint(f"offload_contracts_{id(self)}")
        blueprint.add_route(self.ping, "/ping", methods=["GET"], ctx_access=READ)
        blueprint.add_route(self.list_contracts, "/listcontractprocess", methods=["GET"], ctx_access=READ)
        blueprint.add_route(self.exec_contract, "/execcontract", methods=["GET"], ctx_access=READ)
        blueprint.add_route(self.hello, "/hello", methods=["GET"], ctx_access=READ)
        blueprint.add_route(self.list_servers, "/listservers", methods=["GET"], ctx_access=READ)
        # Anyone may ask what became of a transaction: its hash is public, and so is the chain.
        blueprint.add_route(self.tx_outcome, f"/{OUTCOME_SEGMENT}/<tx_hash>", methods=["GET"], ctx_access=READ)
        blueprint.add_route(self.rpc, "/rpc", methods=["POST"], ctx_access=READ, ctx_max_body=limits.rpc_max_body_bytes)
        blueprint.add_route(self.rest_view, "/<contract>/<method>", methods=["GET"], ctx_access=READ)
        blueprint.add_route(
            self.rest_call,
            "/<contract>/<method>",
            methods=["POST"],
            ctx_access=READ,
            ctx_max_body=limits.rest_max_body_bytes,
        )
        outcomes = self.service.outcomes

        async def stop_looking(app: Any) -> None:
            """The gateway is stopping: stop looking for transactions' outcomes."""
            await outcomes.close()

        # A plain function: Sanic silently ignores a bound method given as a listener.
        blueprint.before_server_stop(stop_looking)
        if self.reads is not None and self.reads.settings.cache:
            # The cache keeps block-bound answers only below the watcher's checked checkpoint.
            start_watching, stop_watching = watch(self.watcher)
            blueprint.after_server_start(start_watching)
            blueprint.before_server_stop(stop_watching)
        return blueprint

    async def ping(self, request: Request) -> HTTPResponse:
        """The chosen node's client version, chain id and latest block (all from that one node)."""

        async def produce() -> Any:
            if pinned_server.get() is None:
                pinned_server.set(self.plugin.choose())
            return await self.service.ping()

        return await self.answer(request, produce)

    async def list_contracts(self, request: Request) -> HTTPResponse:
        """Names, addresses, methods with argument types, and events (``listcontractprocess``)."""
        return response.json({"data": [spec.describe() for spec in self.contracts.values()], "status_code": 200})

    async def list_servers(self, request: Request) -> HTTPResponse:
        """The pool's nodes: their addresses, and each one's live facts (latency, height, health)."""
        pool = self.plugin.pool()
        return response.json({"data": pool.addresses(), "servers": pool.describe()["servers"], "status_code": 200})

    async def exec_contract(self, request: Request) -> HTTPResponse:
        """The original interface: ``execcontract?contractID=&operation=&arg=&requestID=``."""
        contract_id = request.args.get("contractID")
        operation = request.args.get("operation")
        if not contract_id or not operation:
            raise OffloadError(400, "execcontract needs contractID and operation (and arg=... per argument)")
        spec = self.contract(contract_id)
        function_abi = self.function(spec, operation)
        self.authorize_get(request, spec, function_abi)
        key = None if is_view(function_abi) else self.writes.key(request)
        raw_args: list[Any] = request.args.getlist("arg") or []
        inputs = function_abi.get("inputs", [])
        if len(raw_args) == 1 and len(inputs) > 1:
            # One arg holding a JSON array stands for all of them, as a single string did in the original.
            try:
                unpacked = load_json(raw_args[0])
            except ValueError:
                unpacked = None
            if isinstance(unpacked, list):
                raw_args = unpacked
        args = self.bind(spec, function_abi, raw_args)
        extra = {"requestID": request.args.get("requestID")} if request.args.get("requestID") else {}
        if is_view(function_abi):
            return await self.answer(request, lambda: self.view(spec, function_abi, args), **extra)
        return await self.write(request, spec, function_abi, args, key, **extra)

    async def hello(self, request: Request) -> HTTPResponse:
        """Shorthand for ``Hello.hello()``."""
        spec = self.contract(SHORTHAND_CONTRACT)
        function_abi = self.function(spec, "hello")
        self.authorize_get(request, spec, function_abi)
        return await self.answer(request, lambda: self.view(spec, function_abi, []))

    async def rest_view(self, request: Request, contract: str, method: str) -> HTTPResponse:
        """``GET {prefix}/{contract}/{method}?param=value``: views only."""
        spec = self.contract(contract)
        function_abi = self.function(spec, method)
        if not is_view(function_abi):
            form = self.post_form(spec, function_abi)
            raise OffloadError(405, f"{spec.name}.{method} changes state: send it as {form}")
        named = {key: request.args.get(key) for key in request.args if key not in ("arg", "server")}
        args = self.bind(spec, function_abi, request.args.getlist("arg") or [], named)
        return await self.answer(request, lambda: self.view(spec, function_abi, args))

    async def rest_call(self, request: Request, contract: str, method: str) -> HTTPResponse:
        """``POST {prefix}/{contract}/{method}`` with ``{"args": [...]}`` or ``{"name": value}``."""
        spec = self.contract(contract)
        function_abi = self.function(spec, method)
        key = None
        if not is_view(function_abi):
            # Before the body is even parsed: a caller without the token learns nothing more.
            require_operator(request)
            key = self.writes.key(request)
        try:
            body = load_json(request.body or b"{}")
        except ValueError:
            raise OffloadError(400, 'the body must be JSON: {"args": [...]} or {"param": value}') from None
        if isinstance(body, list):
            positional, named = body, {}
        elif isinstance(body, dict):
            positional = body.pop("args", [])
            named = body
            if not isinstance(positional, list):
                raise OffloadError(400, '"args" must be a JSON array of positional arguments')
        else:
            raise OffloadError(400, "the body must be a JSON object or array of arguments")
        args = self.bind(spec, function_abi, positional, named)
        if is_view(function_abi):
            return await self.answer(request, lambda: self.view(spec, function_abi, args))
        return await self.write(request, spec, function_abi, args, key)

    async def tx_outcome(self, request: Request, tx_hash: str) -> HTTPResponse:
        """``GET {prefix}/tx/<hash>``: what the pool's nodes show of a transaction.

        ``state`` is ``mined`` (with the receipt's summary), ``pending`` (a node holds it)
        or ``unknown`` (no node shows it); ``looking`` says whether the gateway is still
        looking for it in the background.
        """
        if not is_tx_hash(tx_hash):
            raise OffloadError(400, f"{tx_hash[:80]!r} is not a transaction hash (0x and 64 hex digits)")
        started = time.perf_counter()
        data = await self.service.outcome(tx_hash)
        server = data.get("server") or ""
        return response.json(self.writes.envelope(data, server, started), headers={SERVER_HEADER: server})

    async def rpc(self, request: Request) -> HTTPResponse:
        """JSON-RPC 2.0 pass-through (single and batch) with the method allowlist.

        Reads are for every local caller; a body holding anything else (eth_sendRawTransaction,
        or a method rpc_allow adds) needs the operator's token before anything is forwarded.
        """
        used = begin(request)
        reply: RpcReply = await self.proxy.handle(
            request.body,
            lambda: require_operator(request),
            key_values=request.headers.getall(HEADER, []),
            scope=operator_scope(request.headers.get("authorization")),
        )
        headers = dict(reply.headers)
        if used:
            headers[SERVER_HEADER] = used[-1]
        if reply.raw is not None:
            return response.raw(reply.raw, status=reply.status, headers=headers, content_type="application/json")
        if reply.payload is None:
            return response.empty(status=reply.status, headers=headers)
        return response.json(reply.payload, status=reply.status, headers=headers or None)


# The routes' entries in the gateway's /openapi.json (see the constants at the top).
ContractRoutes.ping.openapi = {  # type: ignore[attr-defined]
    "parameters": [SERVER_QUERY],
    "responses": {"200": "data: client_version, chain_id, block_number", "400": "a server not in the pool"},
}
ContractRoutes.list_contracts.openapi = {  # type: ignore[attr-defined]
    "responses": {"200": listing("The configured contracts.", data={"type": "array", "items": {"type": "object"}})}
}
ContractRoutes.list_servers.openapi = {  # type: ignore[attr-defined]
    "responses": {
        "200": listing(
            "The pool's nodes.",
            data={"type": "array", "items": {"type": "string"}},
            servers={"type": "array", "items": {"type": "object"}},
        )
    }
}
ContractRoutes.exec_contract.openapi = {  # type: ignore[attr-defined]
    "description": "A view answers its result in data. A transaction over GET is refused (405) unless "
    "allow_get_transactions is on, and then needs the operator's token.",
    "parameters": [
        {"in": "query", "name": "contractID", "required": True, "schema": {"type": "string"}},
        {"in": "query", "name": "operation", "required": True, "schema": {"type": "string"}},
        ARG_QUERY,
        {
            "in": "query",
            "name": "requestID",
            "required": False,
            "schema": {"type": "string"},
            "description": "Echoed in the answer's requestID.",
        },
        SERVER_QUERY,
        IDEMPOTENCY_HEADER,
    ],
    "security": WRITE_SECURITY,
    "responses": {
        "200": "the method's result in data (and requestID if one was sent)",
        "202": PENDING,
        "400": "missing contractID or operation, or arguments that do not fit the method",
        "404": UNKNOWN_CONTRACT,
        "405": "a transaction over GET while allow_get_transactions is off: POST it",
        **WRITE_ERRORS,
    },
}
ContractRoutes.hello.openapi = {  # type: ignore[attr-defined]
    "responses": {"200": "the greeting in data", "404": "no Hello contract is configured"}
}
ContractRoutes.rest_view.openapi = {  # type: ignore[attr-defined]
    "description": "Arguments by name (?amount=3) or by position (arg=...); a transaction is refused (405).",
    "parameters": [ARG_QUERY, SERVER_QUERY],
    "responses": {
        "200": "the view's result in data",
        "400": "arguments that do not fit the method",
        "404": UNKNOWN_CONTRACT,
        "405": "the method changes state: POST it with the operator's token",
    },
}
ContractRoutes.rest_call.openapi = {  # type: ignore[attr-defined]
    "description": "A view is open to every local caller; a transaction needs the operator's token and "
    "answers its receipt (or 202 with where to ask while its outcome is not known).",
    "parameters": [SERVER_QUERY, IDEMPOTENCY_HEADER],
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": '{"args": [...]} and/or arguments by name'},
                        {"type": "array", "description": "the arguments by position"},
                    ]
                }
            }
        },
    },
    "security": WRITE_SECURITY,
    "responses": {
        "200": "the view's result, or the transaction's receipt, in data",
        "202": PENDING,
        "400": "a body that is not JSON, or arguments that do not fit the method",
        "404": UNKNOWN_CONTRACT,
        **WRITE_ERRORS,
    },
}
ContractRoutes.tx_outcome.openapi = {  # type: ignore[attr-defined]
    "parameters": [
        {
            "in": "path",
            "name": "tx_hash",
            "required": True,
            "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"},
        }
    ],
    "responses": {"200": "data: state, looking, and the receipt's summary once mined", "400": "not a hash"},
}
ContractRoutes.rpc.openapi = {  # type: ignore[attr-defined]
    "parameters": [IDEMPOTENCY_HEADER],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": "one JSON-RPC 2.0 request"},
                        {"type": "array", "description": "a batch of JSON-RPC 2.0 requests"},
                    ]
                }
            }
        },
    },
    "security": WRITE_SECURITY,
    "responses": {
        "200": rpc_answer("The JSON-RPC answer (a result or a JSON-RPC error), or the batch's.", _JSON_RPC_ANSWER),
        "202": rpc_answer("A raw transaction handed to a node whose outcome is not known yet.", _JSON_RPC_ANSWER),
        "204": {"description": "Only notifications: no answer."},
        **{
            status: rpc_answer(description, _RPC_ERROR)
            for status, description in {
                "400": "not JSON, an invalid request, an empty or too large batch",
                "401": WRITE_ERRORS["401"],
                "403": WRITE_ERRORS["403"],
                "409": WRITE_ERRORS["409"],
                "413": "the body is larger than rpc_max_body_bytes",
                "415": WRITE_ERRORS["415"],
                "422": WRITE_ERRORS["422"],
                "502": "the node failed or could not be reached",
                "503": "no node of the pool is available",
                "504": "the node did not answer in time",
            }.items()
        },
    },
}


@hookimpl
def offload_routes(plugin: PluginContext) -> Blueprint:
    return ContractRoutes(plugin, plugin.base_dir).blueprint()
