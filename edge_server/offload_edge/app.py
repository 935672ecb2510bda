"""The edge node's Sanic application: routes, delay/counting middleware, lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json, text

from .chain.jsonrpc import parse_body
from .chain.limits import DEFAULT_CALL_TIMEOUT_S, DEFAULT_GAS_CAP, MAX_CALL_TIMEOUT_S, MIN_GAS_CAP
from .errors import error_response, install_error_handlers
from .guard import install_guards, is_admin_route
from .loopback import loopback_http_url
from .pool import attach_pool, run_in_pool
from .request_ids import HEADER as REQUEST_ID_HEADER
from .request_ids import request_id
from .stats import RequestStats
from .tasks import (
    HASH_CHAIN_MAX_ROUNDS,
    HASH_CHAIN_MIN_ROUNDS,
    MATMUL_MAX_N,
    MATMUL_MIN_N,
    NTH_PRIME_MAX_N,
    NTH_PRIME_MIN_N,
    hash_chain,
    matmul_checksum,
    nth_prime,
    parse_int,
    square,
)

if TYPE_CHECKING:
    from .chain.backend import ChainBackend

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "KEEP_ALIVE_TIMEOUT_S",
    "MAX_DELAY_MS",
    "MAX_SPIKE_EVERY",
    "REQUEST_TIMEOUT_S",
    "TASK_ROUTES",
    "EdgeConfig",
    "TaskRoute",
    "create_edge_app",
]

# Simulated link delay and extra compute time: at most a minute each, so no setting can wedge
# the node (1e308 ms would), and the response timeout below can cover both.
MAX_DELAY_MS = 60_000.0
# --spike-every: one outlier in at most this many requests (0 = none).
MAX_SPIKE_EVERY = 1_000_000
# Bodies beyond this are answered 413 unread. The largest real ones are JSON-RPC batches
# (1000 raw transactions are well under 1 MiB) and contract deployments (under 100 KB).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
MIN_MAX_BODY_BYTES = 1024
MAX_MAX_BODY_BYTES = 1024**3
# Headers, and then the whole body, must arrive within this.
REQUEST_TIMEOUT_S = 10.0
# Idle kept-alive connections are closed after this: well above the gateway's 30 s pool
# idle limit (the client, not this edge, should be the one to close), well below Sanic's 120 s.
KEEP_ALIVE_TIMEOUT_S = 60.0
# A request may take the longest link delay, the longest compute delay, a CPU task or a
# relayed chain call (30 s) and some margin; Sanic answers 503 beyond it.
RESPONSE_TIMEOUT_S = 2 * MAX_DELAY_MS / 1000 + 60.0
# /admin/delay takes {"delay_ms": n}; anything longer is not that.
ADMIN_MAX_BODY_BYTES = 1024
MIN_TOKEN_LENGTH = 16
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


@dataclass
class EdgeConfig:
    """Settings for one edge node.

    Attributes:
        name: Human-readable node name, reported by ``/health`` and used to derive the Sanic app name.
        delay_ms: Simulated link delay added to every request, in milliseconds (changeable at run time
            with ``PUT /admin/delay``).
        compute_ms: Extra time every task (``/offloading``, ``/tasks/*``) takes, in milliseconds: a node
            that is slower in compute, which a health probe cannot see.
        spike_every: Every this many requests (``/admin`` excluded, counted in arrival order) one
            waits ``spike_ms`` more than the link delay: deterministic outliers; 0 turns them off.
        spike_ms: The extra delay of each such outlier, in milliseconds.
        peers: Addresses advertised by ``/getserverlists``.
        processes: Process pool size for CPU tasks; ``None`` means ``os.cpu_count()``.
        chain: Serve an embedded EVM dev chain (demo contracts deployed) at ``POST /rpc``.
        chain_upstream: Instead relay ``POST /rpc`` to this JSON-RPC URL (``http://`` on 127.0.0.0/8),
            so several edges with different delays serve one chain's state.
        admin_token: The operator's token for the routes under ``/admin`` (sent as
            ``Authorization: Bearer <token>``); ``None`` turns those routes off (403).
        max_body_bytes: Largest request body accepted; larger ones get 413.
        call_timeout_s: Wall-clock budget for the ``eth_call`` / ``eth_estimateGas`` work of one
            ``POST /rpc`` request on the embedded chain; beyond it execution is aborted.
        rpc_gas_cap: Most gas one ``eth_call`` / ``eth_estimateGas`` may use (geth's ``--rpc.gascap``).
    """

    name: str = "edge"
    delay_ms: float = 0.0
    compute_ms: float = 0.0
    spike_every: int = 0
    spike_ms: float = 0.0
    peers: list[str] = field(default_factory=list)
    processes: int | None = None
    chain: bool = False
    chain_upstream: str | None = None
    admin_token: str | None = field(default=None, repr=False)  # a secret: keep it out of reprs and logs
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    rpc_gas_cap: int = DEFAULT_GAS_CAP

    def __post_init__(self) -> None:
        if self.chain and self.chain_upstream:
            raise ValueError("chain and chain_upstream are exclusive: host a chain or relay to one")
        if self.chain_upstream is not None:
            # All chain traffic stays on this machine, whoever builds the config.
            try:
                self.chain_upstream = loopback_http_url(self.chain_upstream)
            except ValueError as exc:
                raise ValueError(f"chain_upstream {exc}") from None
        spike_every = self.spike_every
        if isinstance(spike_every, bool) or not isinstance(spike_every, int) or not 0 <= spike_every <= MAX_SPIKE_EVERY:
            raise ValueError(f"spike_every must be an integer from 0 to {MAX_SPIKE_EVERY}, got {self.spike_every!r}")
        for name in ("delay_ms", "compute_ms", "spike_ms"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_DELAY_MS:  # also false for NaN
                raise ValueError(f"{name} must be a number from 0 to {MAX_DELAY_MS:g}, got {value!r}")
        if self.processes is not None and self.processes < 1:
            raise ValueError(f"processes must be >= 1 or None, got {self.processes!r}")
        if self.admin_token is not None and not (
            len(self.admin_token) >= MIN_TOKEN_LENGTH and _VISIBLE_ASCII.fullmatch(self.admin_token)
        ):
            # It travels in an HTTP header (printable ASCII, no spaces) and must not be guessable;
            # the same rules as the gateway's, so one token can serve both.
            raise ValueError(
                f"the admin token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces; "
                'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        if not MIN_MAX_BODY_BYTES <= self.max_body_bytes <= MAX_MAX_BODY_BYTES:
            raise ValueError(
                f"max_body_bytes must be from {MIN_MAX_BODY_BYTES} to {MAX_MAX_BODY_BYTES}, got {self.max_body_bytes!r}"
            )
        if not 0 < self.call_timeout_s <= MAX_CALL_TIMEOUT_S:
            raise ValueError(
                f"call_timeout_s must be above 0 and at most {MAX_CALL_TIMEOUT_S:g}, got {self.call_timeout_s!r}"
            )
        if self.rpc_gas_cap < MIN_GAS_CAP:
            raise ValueError(f"rpc_gas_cap must be at least {MIN_GAS_CAP}, got {self.rpc_gas_cap!r}")


@dataclass(frozen=True)
class TaskRoute:
    """A CPU task exposed as ``GET /tasks/<slug>/<param>``."""

    slug: str
    func: Callable[[int], object]
    param: str
    minimum: int
    maximum: int


TASK_ROUTES: tuple[TaskRoute, ...] = (
    TaskRoute("nthprime", nth_prime, "n", NTH_PRIME_MIN_N, NTH_PRIME_MAX_N),
    TaskRoute("matmul", matmul_checksum, "n", MATMUL_MIN_N, MATMUL_MAX_N),
    TaskRoute("hashchain", hash_chain, "rounds", HASH_CHAIN_MIN_ROUNDS, HASH_CHAIN_MAX_ROUNDS),
)

# Sanic keeps a process-wide registry of app names and refuses duplicates, while
# tests and demos build many edges in one process.
_app_counter = itertools.count(1)
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_\-]")


def _unique_app_name(name: str) -> str:
    """A Sanic-valid, process-unique app name derived from ``name``."""
    safe = _INVALID_NAME_CHARS.sub("_", name) or "edge"
    if not (safe[0].isalpha() or safe[0] == "_"):
        safe = "edge_" + safe
    return f"{safe}_{next(_app_counter)}_{uuid.uuid4().hex[:8]}"


def _finish_request(request: Request, stats: RequestStats) -> None:
    """Mark ``request`` as no longer in flight; safe to call more than once."""
    if getattr(request.ctx, "edge_counted", False):
        request.ctx.edge_counted = False
        stats.end()


@dataclass
class LinkDelay:
    """The simulated link delay, mutable so a benchmark can turn a node slow mid-run.

    With ``spike_every`` N > 0, every Nth request (counted in arrival order)
    waits ``spike_seconds`` more: a deterministic latency outlier. Spike and
    delay together never exceed ``MAX_DELAY_MS``, the longest link delay.
    """

    seconds: float
    spike_every: int = 0
    spike_seconds: float = 0.0
    arrived: int = 0  # requests so far, admin routes excluded

    def next_delay(self) -> float:
        """The delay of the request arriving now (counts it towards the next spike)."""
        self.arrived += 1
        if self.spike_every > 0 and self.arrived % self.spike_every == 0:
            return min(self.seconds + self.spike_seconds, MAX_DELAY_MS / 1000)
        return self.seconds


def _install_middleware(app: Sanic, stats: RequestStats, delay: LinkDelay) -> None:
    async def start_request(request: Request) -> None:
        # Sanic may run request middleware a second time when building an error
        # response; the flag keeps each request counted exactly once. Requests the
        # guards refused (see .guard) are answered at once, neither counted nor delayed.
        if getattr(request.ctx, "edge_counted", False) or getattr(request.ctx, "edge_refused", False):
            return
        request.ctx.edge_counted = True
        stats.begin()
        # The operator's routes skip the simulated link, so a delay can always be undone.
        if is_admin_route(request.route):
            return
        delay_s = delay.next_delay()
        if delay_s <= 0:
            return
        try:
            # Applies to every route, /health included, so latency probes see the link delay.
            await asyncio.sleep(delay_s)
        except asyncio.CancelledError:
            # The client went away mid-delay and Sanic cancelled the request. Sanic
            # normally still runs response middleware while writing its error
            # response, but skips it once the transport is gone; release here to be
            # sure (the flag makes a second release a no-op).
            _finish_request(request, stats)
            raise

    async def finish_request(request: Request, response: HTTPResponse) -> None:
        # Response middleware also runs for error responses (404, 400, 500, ...).
        _finish_request(request, stats)
        traced = request_id(request)
        if traced is not None:
            response.headers[REQUEST_ID_HEADER] = traced  # the caller can match our answer and log lines

    app.register_middleware(start_request, "request")
    app.register_middleware(finish_request, "response")


def _install_task_route(app: Sanic, stats: RequestStats, route: TaskRoute, compute_s: float) -> None:
    async def run_task(request: Request, raw: str) -> HTTPResponse:
        # Validate before touching the pool so bad input costs nothing.
        value = parse_int(raw, name=route.param, minimum=route.minimum, maximum=route.maximum)
        try:
            if compute_s > 0:
                await asyncio.sleep(compute_s)
            result = await run_in_pool(app, route.func, value)
        except asyncio.CancelledError:
            # Cancelled (client disconnect, timeout): response middleware may not run,
            # see start_request. The worker still finishes its computation; only the
            # HTTP request is gone.
            _finish_request(request, stats)
            raise
        return text(str(result))

    app.add_route(run_task, f"/tasks/{route.slug}/<raw:str>", methods=["GET"], name=f"task_{route.slug}", unquote=True)


def _chain_backend(config: EdgeConfig) -> ChainBackend:
    """The relay for ``chain_upstream``, else the embedded chain (imported only when used)."""
    if config.chain_upstream:
        from .chain.relay import RelayBackend

        return RelayBackend(config.chain_upstream)
    from .chain.embedded import EmbeddedBackend

    return EmbeddedBackend(call_timeout_s=config.call_timeout_s, gas_cap=config.rpc_gas_cap)


def _media_type(content_type: str | None) -> str:
    """``application/json`` of ``application/json; charset=utf-8``."""
    return (content_type or "").partition(";")[0].strip().lower()


def _delay_from_body(body: bytes) -> float | None:
    """The ``delay_ms`` of a ``{"delay_ms": n}`` body if it is a number in range, else None."""
    try:
        # Strict: UTF-8, nesting bounded, no NaN or Infinity (the same parser as JSON-RPC bodies).
        document = parse_body(body)
    except ValueError:
        return None
    value = document.get("delay_ms") if isinstance(document, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_DELAY_MS:
        return None
    return value


def create_edge_app(config: EdgeConfig) -> Sanic:
    """Build an edge node app for ``config``.

    Routes: ``/hello``, ``/offloading/<num>``, ``/getserverlists``, ``/health``,
    ``/const`` and ``/tasks/{nthprime,matmul,hashchain}/<arg>``; with ``chain`` or
    ``chain_upstream`` also ``POST /rpc`` and ``GET /chain/contracts``; and
    ``PUT /admin/delay`` for the holder of ``admin_token``. Every request is screened
    before its body is read (see :mod:`.guard`: loopback Host names only, no cross-site
    requests, the token for ``/admin``). Every error is answered as JSON
    ``{"error": "..."}``. The CPU-task process pool lives from ``before_server_start``
    to ``after_server_stop`` on ``app.ctx.pool``.
    """
    app = Sanic(_unique_app_name(config.name))
    app.config.MOTD = False
    # Installing sanic-ext must change nothing: no implicit routes, OPTIONS handlers or CORS answers.
    app.config.AUTO_EXTEND = False
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_MAX_SIZE = config.max_body_bytes
    app.config.REQUEST_TIMEOUT = REQUEST_TIMEOUT_S
    app.config.KEEP_ALIVE_TIMEOUT = KEEP_ALIVE_TIMEOUT_S
    app.config.RESPONSE_TIMEOUT = RESPONSE_TIMEOUT_S
    # TouchUp rewrites methods on the Sanic *class* at startup, tailored to one app;
    # a second app starting in the same process (tests, demos, a co-hosted gateway)
    # then fails with KeyError. The speed-up is negligible for an edge node.
    app.config.TOUCHUP = False

    stats = RequestStats()
    peers = list(config.peers)  # later changes to the caller's list must not leak in
    app.ctx.edge_config = config
    app.ctx.stats = stats
    app.ctx.pool = None

    install_error_handlers(app)
    install_guards(app, admin_token=config.admin_token, body_timeout_s=REQUEST_TIMEOUT_S)
    delay = LinkDelay(config.delay_ms / 1000.0, config.spike_every, config.spike_ms / 1000.0)
    compute_s = config.compute_ms / 1000.0
    app.ctx.link_delay = delay
    _install_middleware(app, stats, delay)
    attach_pool(app, config.processes)
    if config.chain or config.chain_upstream:
        # Imported here so an edge without the chain extra never needs eth-tester.
        from .chain.routes import install_chain_routes

        install_chain_routes(app, _chain_backend(config))

    @app.get("/hello")
    async def hello(request: Request) -> HTTPResponse:
        return text("world")

    # unquote: path parameters arrive percent-encoded otherwise (Flask decoded them).
    @app.get("/offloading/<num:str>", unquote=True)
    async def offloading(request: Request, num: str) -> HTTPResponse:
        # Cheap enough to run inline; TaskInputError becomes a 400 via the error handlers.
        result = square(num)
        if compute_s > 0:
            await asyncio.sleep(compute_s)  # a slower processor, invisible to health probes
        return text(result)

    @app.get("/getserverlists")
    async def getserverlists(request: Request) -> HTTPResponse:
        return json({"data": peers})

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return json(
            {
                "status": "ok",
                "name": config.name,
                "delay_ms": delay.seconds * 1000,
                # Exclude this probe itself, so an idle node reports 0.
                "inflight": max(0, stats.inflight - 1),
                "requests": stats.requests,
                "uptime_s": round(stats.uptime_s, 3),
                **(app.ctx.chain.health() if getattr(app.ctx, "chain", None) else {"chain": None}),
            }
        )

    @app.get("/const")
    async def const(request: Request) -> HTTPResponse:
        return text("ok")

    @app.put("/admin/delay")
    async def set_delay(request: Request) -> HTTPResponse:
        """Change the simulated link delay at run time: ``{"delay_ms": 25}`` (the token is checked in .guard)."""
        # A browser can send text/plain or form bodies cross-site without asking first; JSON it cannot.
        if _media_type(request.content_type) != "application/json":
            return error_response("send the new delay as JSON: Content-Type: application/json", 415)
        if len(request.body) > ADMIN_MAX_BODY_BYTES:
            return error_response(f"the body may have at most {ADMIN_MAX_BODY_BYTES} bytes", 413)
        value = _delay_from_body(request.body)
        if value is None:
            return error_response(f'send {{"delay_ms": <number from 0 to {MAX_DELAY_MS:g}>}}', 400)
        delay.seconds = value / 1000.0
        return json({"delay_ms": value})

    for route in TASK_ROUTES:
        _install_task_route(app, stats, route, compute_s)

    return app
