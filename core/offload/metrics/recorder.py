"""The gateway's prometheus-client metrics: what the engine and the routes count as it happens.

Everything here is an event (a counter, a histogram, a live gauge), so that with
``--workers N`` each worker's share lands in prometheus-client's multiprocess
files and a scrape sums them once. Facts the registry already holds (circuit
state, probe verdict, block height, the local window) are read at scrape time
by :mod:`offload.metrics.snapshot` instead.

Label values are never a caller's text: pool, server and plugin names come from
the configuration, routes are Sanic's route patterns, and outcomes are fixed
sets. Labelled children are cached per label set, which keeps a hot-path
increment at a dictionary lookup and an add.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from types import TracebackType
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..errors import OffloadError
from .events import POOL_EVENTS, PoolEvent

if TYPE_CHECKING:
    from ..registry import Server

# Upstream answers on loopback take well under a millisecond; a slow edge task, seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# How an attempt at a server ended (offload_upstream_requests_total's "outcome").
OUTCOMES = ("ok", "http_5xx", "timeout", "transport_error", "invalid_task", "cancelled")

# A plugin's event and outcome names: short identifiers, and only so many per plugin, so that a
# plugin passing a caller's text by mistake cannot grow the label set without bound.
PLUGIN_LABEL = re.compile(r"[a-z][a-z0-9_]{0,47}")
MAX_PLUGIN_SERIES = 64

POOL_EVENT_HELP: dict[PoolEvent, str] = {
    "retries": "Attempts retried on another server.",
    "retries_refused_by_budget": "Retries the retry budget refused.",
    "hedges": "Hedge requests sent to a second server because the first was slow.",
    "hedges_won": "Hedge requests that answered before the first server.",
    "fail_open": "Tasks sent to an unavailable server because no server was available (fail-open).",
    "moved_off_hung_servers": "Attempts abandoned on a hung server and moved to another.",
}


def classify(error: BaseException | None) -> str:
    """The outcome label for an attempt that ended with ``error`` (None: it answered)."""
    if error is None:
        return "ok"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"  # a hedge lost the race, or the caller went away
    if isinstance(error, OffloadError):
        if "upstream_status" in error.details:
            return "http_5xx"
        if error.status == 504:
            return "timeout"
        if error.status < 500:
            return "invalid_task"
    return "transport_error"


class _ServerSeries:
    """One server's labelled children, looked up once per server instead of once per attempt."""

    __slots__ = ("ejections", "inflight", "latency", "outcomes", "seen_opened")

    def __init__(self, metrics: GatewayMetrics, pool: str, server: Server) -> None:
        name = server.name
        self.inflight = metrics.upstream_inflight.labels(pool, name)
        self.latency = metrics.upstream_latency.labels(pool, name)
        self.outcomes = {outcome: metrics.upstream_requests.labels(pool, name, outcome) for outcome in OUTCOMES}
        self.ejections = metrics.ejections.labels(pool, name)
        # Circuit openings already counted: a server's breaker counts them (times_opened), we count the new ones.
        self.seen_opened = server.breaker.times_opened


class _Attempt:
    """Counts one attempt: in flight while it runs, then its outcome, latency and any ejection it caused."""

    __slots__ = ("elapsed_s", "series", "server")

    def __init__(self, series: _ServerSeries, server: Server) -> None:
        self.series = series
        self.server = server
        self.elapsed_s: float | None = None

    def __enter__(self) -> _Attempt:
        self.series.inflight.inc()
        return self

    def answered(self, elapsed_s: float) -> None:
        self.elapsed_s = elapsed_s

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        series = self.series
        series.inflight.dec()
        series.outcomes[classify(error)].inc()
        if error is None and self.elapsed_s is not None:
            series.latency.observe(self.elapsed_s)
        opened = self.server.breaker.times_opened
        if opened > series.seen_opened:
            # Compared, not assumed: of two attempts failing together only the one that opened the circuit counts.
            series.ejections.inc(opened - series.seen_opened)
            series.seen_opened = opened


class GatewayMetrics:
    """The gateway's metrics, registered in ``registry`` (one per app: apps in one process never clash).

    Implements :class:`~offload.metrics.events.EngineMetrics` for the engine and
    :meth:`request` for the route wrapper (:mod:`offload.metrics.http`).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "offload_http_requests",
            "Requests the gateway answered, by plugin, route pattern, method, status and answering server.",
            ["plugin", "route", "method", "status", "server"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "offload_http_request_duration_seconds",
            "Time from routing a request to its answer, by plugin and route pattern.",
            ["plugin", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_inflight = Gauge(
            "offload_http_requests_in_flight",
            "Requests being handled now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.upstream_requests = Counter(
            "offload_upstream_requests",
            "Attempts sent to servers, by pool, server and outcome "
            "(ok, http_5xx, timeout, transport_error, invalid_task, cancelled).",
            ["pool", "server", "outcome"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "offload_upstream_latency_seconds",
            "Time the engine measured for a server's answers (below 500), by pool and server.",
            ["pool", "server"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_inflight = Gauge(
            "offload_upstream_requests_in_flight",
            "Attempts waiting for a server's answer now, by pool and server.",
            ["pool", "server"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ejections = Counter(
            "offload_server_ejections",
            "Times a server's circuit opened (passive ejection), by pool and server.",
            ["pool", "server"],
            registry=registry,
        )
        self.probes = Counter(
            "offload_probes",
            "Health probes, by pool, server and result (ok, failed).",
            ["pool", "server", "result"],
            registry=registry,
        )
        self.pool_events = {
            event: Counter(f"offload_{event}", POOL_EVENT_HELP[event], ["pool"], registry=registry)
            for event in POOL_EVENTS
        }
        self.plugin_events = Counter(
            "offload_plugin_events",
            "Events plugins count (e.g. the contracts plugin's transactions), by plugin, event and outcome.",
            ["plugin", "event", "outcome"],
            registry=registry,
        )
        self.cache_answers = Counter(
            "offload_cache_answers",
            "Answers of cacheable reads and tasks, by pool and how they were obtained "
            "(hit: kept answer, coalesced: an identical request's, miss: sent to a server).",
            ["pool", "outcome"],
            registry=registry,
        )
        self._servers: weakref.WeakKeyDictionary[Server, _ServerSeries] = weakref.WeakKeyDictionary()
        self._plugin_series: dict[str, set[tuple[str, str]]] = {}

    # -- the engine's events (EngineMetrics) ----------------------------------------------

    def attempt(self, pool: str, server: Server) -> _Attempt:
        """A context manager around one attempt at ``server`` of ``pool``."""
        series = self._servers.get(server)
        if series is None:
            series = self._servers[server] = _ServerSeries(self, pool, server)
        return _Attempt(series, server)

    def count(self, pool: str, event: PoolEvent, amount: int = 1) -> None:
        """``amount`` more of ``event`` in ``pool``."""
        if amount:
            self.pool_events[event].labels(pool).inc(amount)

    def probed(self, pool: str, server: Server, ok: bool) -> None:
        """A health probe's result."""
        self.probes.labels(pool, server.name, "ok" if ok else "failed").inc()

    def cache(self, pool: str, outcome: str) -> None:
        """One answer of ``pool``'s read cache obtained as ``outcome``."""
        self.cache_answers.labels(pool, outcome).inc()

    def plugin_event(self, plugin: str, event: str, outcome: str) -> None:
        """One ``event`` ending in ``outcome``, counted for ``plugin``; odd or too many names become "other"."""
        if not (PLUGIN_LABEL.fullmatch(event) and PLUGIN_LABEL.fullmatch(outcome)):
            event, outcome = "other", "other"
        seen = self._plugin_series.setdefault(plugin, set())
        if (event, outcome) not in seen:
            if len(seen) >= MAX_PLUGIN_SERIES:
                event, outcome = "other", "other"
            seen.add((event, outcome))
        self.plugin_events.labels(plugin, event, outcome).inc()
