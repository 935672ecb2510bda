"""``GET /metrics`` and the per-route request counting behind it.

Every route's handler is wrapped once before the server starts (outside the
access guard's wrapper, so refusals are counted too): a wrapper costs about a
microsecond a request where a Sanic middleware or signal costs several.
Requests that match no route never reach a handler; they are counted from
Sanic's exception signal under the route label ``unmatched``, never under
their path.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics import Counter
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse

from ..errors import OffloadError
from ..responses import SERVER_HEADER
from ..routing import RouteClaims, route_key
from ..security import READ
from ..state import StateUnavailable
from .multiproc import mark_dead_workers, mark_this_process_dead, multiprocess_directory
from .recorder import GatewayMetrics
from .snapshot import RegistrySnapshot

if TYPE_CHECKING:
    from ..engine import Engine

METRICS_PATH = "/metrics"
CORE_PLUGIN = "offload"  # the plugin label of the gateway's own routes
NONE = "none"  # no plugin, or no server answered
UNMATCHED = "unmatched"  # the route label of requests no route matched
# Methods a caller may send to no route at all: anything else is "OTHER", not a new label value.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# nginx's code for "the caller went away before the answer": the handler was cancelled.
CALLER_GONE = "499"


def install_metrics(app: Sanic, engine: Engine, claims: RouteClaims, owner: str, workers: int = 1) -> GatewayMetrics:
    """Give ``app`` a ``GET /metrics`` route, count its requests and ``engine``'s events.

    Call before the access guard is installed (the route must be guarded like
    the others); ``owner`` is the claim name of built-in routes. With ``workers``
    > 1 and a multiprocess directory set (``offload serve`` sets it), a scrape
    sums every worker's files.
    """
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    engine.metrics = metrics
    snapshot = RegistrySnapshot(engine)
    directory = multiprocess_directory() if workers > 1 else None
    if directory is None:
        registry.register(snapshot)
        scraped = registry
    else:
        from prometheus_client import multiprocess

        # The workers' files, summed, and this worker's view of the registry; never this process's memory alone.
        scraped = CollectorRegistry()
        multiprocess.MultiProcessCollector(scraped, path=directory)
        scraped.register(snapshot)

        async def withdraw(app: Sanic) -> None:
            mark_this_process_dead(directory)

        app.register_listener(withdraw, "after_server_stop")

    async def scrape(request: Request) -> HTTPResponse:
        for pool_name in engine.registry.pools:
            # The window as the shared state counts it now; while the state is away, the last count seen.
            with contextlib.suppress(StateUnavailable):
                await engine.throughput_now(pool_name)
        if directory is not None:
            mark_dead_workers(directory)
        return HTTPResponse(generate_latest(scraped), content_type=CONTENT_TYPE_LATEST)

    claims.claim(owner, "GET", METRICS_PATH)
    # Read like /servers: any local caller (it shows pool state, never the token, a key or a caller's path).
    app.add_route(scrape, METRICS_PATH, methods=["GET"], name="offload_metrics", ctx_access=READ)

    async def wrap_routes(app: Sanic) -> None:
        owners = {key: who for key, (who, _path) in claims.owners.items()}
        for route in app.router.routes:
            if getattr(route.handler, "__offload_metrics__", False):
                continue
            method = next(iter(sorted(route.methods)), "GET")
            plugin = _plugin_label(owners.get((method, route_key(route.uri))), owner)
            route.handler = _counted(route.handler, metrics, engine, plugin, route.uri)

    async def count_unmatched(request: Request, exception: BaseException) -> None:
        if request.route is not None:
            return  # reached a handler: counted there
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        status = str(getattr(exception, "status_code", 500))
        metrics.http_requests.labels(NONE, UNMATCHED, method, status, NONE).inc()

    app.register_listener(wrap_routes, "before_server_start")
    app.add_signal(count_unmatched, "http.lifecycle.exception")
    return metrics


def _plugin_label(claimant: str | None, core_owner: str) -> str:
    """``plugin math`` -> ``math``; the gateway's own (or unclaimed) routes -> ``offload``."""
    if claimant is None or claimant == core_owner or not claimant.startswith("plugin "):
        return CORE_PLUGIN
    return claimant.removeprefix("plugin ")


def _known_server(engine: Engine, name: str) -> bool:
    return any(server.name == name for pool in engine.registry.pools.values() for server in pool.servers)


def _counted(
    handler: Callable[..., Any], metrics: GatewayMetrics, engine: Engine, plugin: str, route: str
) -> Callable[..., Any]:
    """``handler``, timed and counted under ``plugin`` and the route pattern ``route``."""
    duration = metrics.http_duration.labels(plugin, route)
    inflight = metrics.http_inflight
    children: dict[tuple[str, str, str], Counter] = {}

    def count(method: str, status: str, server: str) -> None:
        key = (method, status, server)
        child = children.get(key)
        if child is None:
            # Checked once per new label set: a header a handler filled from elsewhere is no new label value.
            named = server if server == NONE or _known_server(engine, server) else "other"
            child = children[key] = metrics.http_requests.labels(plugin, route, method, status, named)
        child.inc()

    @functools.wraps(handler)
    async def counted(request: Request, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        inflight.inc()
        status, server = CALLER_GONE, NONE
        try:
            answer = handler(request, *args, **kwargs)
            reply = await answer if inspect.isawaitable(answer) else answer
            status = str(getattr(reply, "status", 200))
            headers = getattr(reply, "headers", None)
            server = (headers.get(SERVER_HEADER) if headers is not None else None) or NONE
            return reply
        except OffloadError as error:
            status, server = str(error.status), error.server or NONE
            raise
        except SanicException as error:
            status = str(error.status_code)
            raise
        except Exception:
            status = "500"
            raise
        finally:
            inflight.dec()
            duration.observe(time.perf_counter() - started)
            count(request.method, status, server)

    counted.__offload_metrics__ = True  # type: ignore[attr-defined]
    return counted
