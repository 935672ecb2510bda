"""The edge node's Sanic application: routes, delay/counting middleware, lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json, text

from .errors import install_error_handlers
from .loopback import loopback_http_url
from .pool import attach_pool, run_in_pool
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

__all__ = ["TASK_ROUTES", "EdgeConfig", "TaskRoute", "create_edge_app"]


@dataclass
class EdgeConfig:
    """Settings for one edge node.

    Attributes:
        name: Human-readable node name, reported by ``/health`` and used to derive the Sanic app name.
        delay_ms: Simulated link delay added to every request, in milliseconds (changeable at run time
            with ``PUT /admin/delay``).
        compute_ms: Extra time every task (``/offloading``, ``/tasks/*``) takes, in milliseconds: a node
            that is slower in compute, which a health probe cannot see.
        peers: Addresses advertised by ``/getserverlists``.
        processes: Process pool size for CPU tasks; ``None`` means ``os.cpu_count()``.
        chain: Serve an embedded EVM dev chain (demo contracts deployed) at ``POST /rpc``.
        chain_upstream: Instead relay ``POST /rpc`` to this JSON-RPC URL (``http://`` on 127.0.0.0/8),
            so several edges with different delays serve one chain's state.
    """

    name: str = "edge"
    delay_ms: float = 0.0
    compute_ms: float = 0.0
    peers: list[str] = field(default_factory=list)
    processes: int | None = None
    chain: bool = False
    chain_upstream: str | None = None

    def __post_init__(self) -> None:
        if self.chain and self.chain_upstream:
            raise ValueError("chain and chain_upstream are exclusive: host a chain or relay to one")
        if self.chain_upstream is not None:
            # All chain traffic stays on this machine, whoever builds the config.
            try:
                self.chain_upstream = loopback_http_url(self.chain_upstream)
            except ValueError as exc:
                raise ValueError(f"chain_upstream {exc}") from None
        if not math.isfinite(self.delay_ms) or self.delay_ms < 0:
            raise ValueError(f"delay_ms must be a finite number >= 0, got {self.delay_ms!r}")
        if not math.isfinite(self.compute_ms) or self.compute_ms < 0:
            raise ValueError(f"compute_ms must be a finite number >= 0, got {self.compute_ms!r}")
        if self.processes is not None and self.processes < 1:
            raise ValueError(f"processes must be >= 1 or None, got {self.processes!r}")


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
    """The simulated link delay, mutable so a benchmark can turn a node slow mid-run."""

    seconds: float


def _install_middleware(app: Sanic, stats: RequestStats, delay: LinkDelay) -> None:
    async def start_request(request: Request) -> None:
        # Sanic may run request middleware a second time when building an error
        # response; the flag keeps each request counted exactly once.
        if getattr(request.ctx, "edge_counted", False):
            return
        request.ctx.edge_counted = True
        stats.begin()
        delay_s = delay.seconds
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

    return EmbeddedBackend()


def create_edge_app(config: EdgeConfig) -> Sanic:
    """Build an edge node app for ``config``.

    Routes: ``/hello``, ``/offloading/<num>``, ``/getserverlists``, ``/health``,
    ``/const`` and ``/tasks/{nthprime,matmul,hashchain}/<arg>``; with ``chain`` or
    ``chain_upstream`` also ``POST /rpc`` and ``GET /chain/contracts``. Every error is
    answered as JSON ``{"error": "..."}``. The CPU-task process pool lives from
    ``before_server_start`` to ``after_server_stop`` on ``app.ctx.pool``.
    """
    app = Sanic(_unique_app_name(config.name))
    app.config.MOTD = False
    app.config.FALLBACK_ERROR_FORMAT = "json"
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
    delay = LinkDelay(config.delay_ms / 1000.0)
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
        """Change the simulated link delay at run time: ``{"delay_ms": 25}``."""
        value = (request.json or {}).get("delay_ms") if isinstance(request.json, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            return json({"error": 'send {"delay_ms": <number >= 0>}'}, status=400)
        delay.seconds = value / 1000.0
        return json({"delay_ms": value})

    for route in TASK_ROUTES:
        _install_task_route(app, stats, route, compute_s)

    return app
