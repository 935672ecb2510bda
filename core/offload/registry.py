"""Server pools and the live state of every server in them.

The registry holds facts (probe verdicts, latency, in-flight, failures, the
circuit); it decides nothing. Policies read these facts and the engine writes
them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .addresses import host_port, normalize_url
from .breaker import CLOSED, HALF_OPEN, BreakerSettings, CircuitBreaker
from .inflight import InflightAttempts
from .peak_ewma import PeakEwma
from .pool_config import PoolConfig
from .settings import ServerSpec

# Weight of the newest sample in the plain latency average (min_latency): reacts
# within a few requests yet is not thrown by one outlier.
LATENCY_EWMA_ALPHA = 0.3
# A probe at most this many times the usual round trip (plus PROBE_SLACK_S, for loopback jitter)
# says a server's slowdown has passed: its peak-EWMA peak is forgiven (PeakEwma.forgive_peak).
PROBE_AS_USUAL = 1.5
PROBE_SLACK_S = 0.001
# How far the usual probe round trip rises towards a slower probe, per probe.
PROBE_USUAL_RISE = 0.01


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@dataclass(eq=False)
class Server:
    """A server and what the gateway has observed of it."""

    name: str
    url: str
    local: bool = False
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    cost: PeakEwma = field(default_factory=PeakEwma)
    probe_ok: bool | None = None  # verdict of the last active probe; None: not probed yet
    probe_error: str | None = None
    latency_ewma_s: float | None = None
    last_latency_s: float | None = None
    inflight: int = 0
    requests: int = 0
    failures: int = 0
    last_error: str | None = None
    last_probe_at: float | None = None
    height: int | None = None  # progress reported by probes (e.g. latest block), if any
    measured_by_requests: bool = False  # whether real requests (not only probes) shaped the cost
    # Its usual health-probe round trip: follows a faster probe at once, a slower one only slowly.
    probe_usual_s: float | None = None
    # The first request's answer while the server is unproven: the second one decides with it.
    first_answer_s: float | None = None
    added_at: float = field(default_factory=time.time)
    # When it last answered anything (or took a request while idle), in perf_counter time:
    # a server with requests in flight that stays quiet is checked for a hang (offload.stalls).
    last_progress: float = 0.0
    attempts: InflightAttempts = field(default_factory=InflightAttempts)
    # Who decided the latest up/down verdict on this server, and when (wall clock): this
    # process or another replica (offload.shared_health).
    verdict_by: str | None = None
    verdict_at: float | None = None
    # When a request last succeeded here (wall clock): how recent an "up" verdict is.
    last_success_at: float | None = None

    @property
    def address(self) -> str:
        """``host:port``, the form the original server lists used."""
        return host_port(self.url)

    @property
    def available(self) -> bool:
        """Neither failing its probe nor kept out by its circuit."""
        return self.exclusion() is None

    @property
    def awaiting_trial(self) -> bool:
        """Half-open with its one trial request not yet sent."""
        if self.breaker.state == CLOSED:  # the usual case, and time cannot change it
            return False
        return self.probe_ok is not False and self.breaker.refresh() == HALF_OPEN and self.breaker.allows()

    def load(self, headroom: float = 1.0) -> float:
        """Expected time for one more request here (peak EWMA x queue), for p2c and estimated completion.

        A server no request has measured yet (its cost is only a probe's round
        trip) takes one request at a time until the first answer tells its real
        cost: exploring a new or recovered server costs at most one slow request.
        ``headroom`` > 1 trusts the server with that many times the requests at
        once it has been seen to serve (see :meth:`PeakEwma.load`).
        """
        if not self.measured_by_requests and self.inflight > 0:
            return math.inf
        return self.cost.load(self.inflight, headroom)

    def load_key(self) -> tuple[float, int, float]:
        """What policies compare: the load, then (when unproven servers tie at infinity) the fewest
        requests in flight, then the cheapest estimate."""
        return (self.load(), self.inflight, self.cost.estimate_s)

    def exclusion(self) -> str | None:
        """Why this server may not take a request now, or None."""
        if self.probe_ok is False:
            return self.probe_error or "probe failing"
        if self.breaker.state == CLOSED:  # checked on every task: skip the description when closed
            return None
        return self.breaker.describe() or None

    def record_latency(self, seconds: float, concurrency: int = 1, *, from_request: bool = True) -> None:
        """Fold a latency sample into both averages.

        A probe's round trip says how far the server is, not how long its tasks
        take: it seeds the peak-EWMA cost of a server no request has measured yet
        but never pulls down the cost that real requests established. The first
        two requests' answers replace that seed outright, with the faster of the
        two: they measure what the probe could not (the task itself), so they are
        no spike against the probe's figure, and one answer alone is not believed.
        A first answer that was an outlier (one in 200 100 ms late, a cold
        connection) used to become the cost outright, as the level ordinary
        samples set, which fades over minutes: the fastest edge then lost every
        comparison for a whole bench run (all of p2c_ewma's requests elsewhere).
        Until the second answer the seed keeps the server in the comparison, one
        request at a time (:meth:`load`).

        A probe as fast as usual forgives a measured server's peak: without it,
        a server that lost its traffic to a stall of this machine (every answer
        late for a moment, but only the chosen server measured) stayed unchosen
        for seconds, until its peak faded at ``decay_s``. In ``offload bench``
        during a full test run, p2c_ewma once sent 637 of 1600 requests around
        the best edge that way. A server that really turned slow answers its
        probes slowly too, or fails its tasks (penalties are not forgiven); one
        whose tasks alone are slow gets a suspect and a confirming request per
        probe interval, the price of noticing at once when it recovers.
        """
        self.last_latency_s = seconds
        if self.latency_ewma_s is None:
            self.latency_ewma_s = seconds
        else:
            self.latency_ewma_s += LATENCY_EWMA_ALPHA * (seconds - self.latency_ewma_s)
        if not from_request:
            if not self.measured_by_requests:
                self.cost.observe(seconds, concurrency)
            elif self.probe_usual_s is not None and seconds <= self.probe_usual_s * PROBE_AS_USUAL + PROBE_SLACK_S:
                self.cost.forgive_peak()
            self._learn_probe_usual(seconds)
            return
        if not self.measured_by_requests:
            if self.first_answer_s is None:
                self.first_answer_s = seconds
                if self.cost.cost_s < 0:  # no probe seed to keep it in the comparison: this answer must do
                    self.cost.observe(seconds, concurrency)
                return
            seconds, self.first_answer_s = min(seconds, self.first_answer_s), None
            self.cost.reset()
            self.measured_by_requests = True
        self.cost.observe(seconds, concurrency)

    def _learn_probe_usual(self, seconds: float) -> None:
        """Fold a probe's round trip into the usual one: down at once, up by ``PROBE_USUAL_RISE`` a probe.

        Slow to rise, so a server that turned slow for good is not taken for
        usual within a few probes (about a hundred, at 1 %).
        """
        usual = self.probe_usual_s
        if usual is None or seconds < usual:
            self.probe_usual_s = seconds
        else:
            self.probe_usual_s = usual + PROBE_USUAL_RISE * (seconds - usual)

    def record_success(self, seconds: float, concurrency: int = 1) -> None:
        """A request answered in ``seconds``; ``concurrency`` requests (itself included) were in flight."""
        if self.breaker.refresh() != CLOSED:
            # The trial request succeeded: the server is back, judged by how it answers now,
            # not by the penalties it collected while it was down.
            self.cost.reset()
            self.measured_by_requests = False
            self.first_answer_s = None
        self.record_latency(seconds, concurrency)
        self.breaker.on_success()
        self.last_success_at = time.time()

    def record_failure(self, reason: str, *, may_open: bool, immediate: bool = False) -> bool:
        """A request failed; returns True if that opened the circuit."""
        self.failures += 1
        self.last_error = reason
        self.cost.penalize()
        return self.breaker.on_failure(reason, may_open=may_open, immediate=immediate)

    def record_probe(self, ok: bool, latency_s: float | None, error: str | None, height: int | None) -> None:
        """An active health probe's verdict."""
        self.last_probe_at = time.time()
        if height is not None:
            self.height = height
        self.probe_ok = ok
        self.probe_error = None if ok else (error or "probe failed")
        if ok:
            if latency_s is not None:
                self.record_latency(latency_s, self.inflight + 1, from_request=False)
            self.breaker.on_probe_success()
        else:
            self.last_error = self.probe_error

    def describe(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /servers`` and error messages."""
        return {
            "name": self.name,
            "url": self.url,
            "local": self.local,
            "available": self.available,
            "excluded_because": self.exclusion(),
            "probe_ok": self.probe_ok,
            "circuit": self.breaker.refresh(),
            "score_ms": None if math.isinf(self.load()) else _ms(self.load()),
            "peak_ewma_ms": _ms(self.cost.estimate_s),
            "latency_ewma_ms": _ms(self.latency_ewma_s),
            "last_latency_ms": _ms(self.last_latency_s),
            "inflight": self.inflight,
            "requests": self.requests,
            "failures": self.failures,
            "consecutive_failures": self.breaker.consecutive_failures,
            "times_ejected": self.breaker.times_opened,
            "last_error": self.last_error,
            "height": self.height,
            "decided_by": self.verdict_by,
            "decided_at": self.verdict_at,
        }


class Pool:
    """An ordered set of servers, unique by URL and by name."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.servers: list[Server] = []
        for spec in config.servers:
            self.add(spec)
        # The operator's servers from plugins.toml: no caller or advertised list removes or renames them.
        self.configured_urls = frozenset(server.url for server in self.servers)

    @property
    def name(self) -> str:
        return self.config.name

    def __len__(self) -> int:
        return len(self.servers)

    def new_server(self, name: str, url: str, local: bool) -> Server:
        """A server with this pool's scoring and ejection settings."""
        config = self.config
        breaker = CircuitBreaker(BreakerSettings(config.eject_after, config.eject_base_s, config.eject_max_s))
        cost = PeakEwma(decay_s=config.decay_s, penalty_s=config.failure_penalty_s or config.timeout_s)
        return Server(name=name, url=url, local=local, breaker=breaker, cost=cost)

    def find(self, key: str) -> Server | None:
        """The server whose name, URL or ``host[:port]`` is ``key``, if any."""
        for server in self.servers:
            if key == server.name:
                return server
        try:
            url = normalize_url(key, self.config.default_port)
        except ValueError:
            return None
        for server in self.servers:
            if server.url == url:
                return server
        return None

    def add(self, spec: ServerSpec) -> Server:
        """Add a server; one already present under that URL is returned unchanged."""
        url = normalize_url(spec.url, self.config.default_port)
        for server in self.servers:
            if server.url == url:
                return server
        name = spec.name
        if any(server.name == name for server in self.servers):
            name = host_port(url)  # keep names unique without refusing the server
        server = self.new_server(name, url, spec.local)
        self.servers.append(server)
        return server

    def remove(self, key: str) -> Server | None:
        """Remove and return the server named or addressed by ``key``."""
        server = self.find(key)
        if server is not None:
            self.servers.remove(server)
        return server

    def replace(self, specs: Iterable[ServerSpec]) -> None:
        """Make the pool exactly ``specs``, keeping the live state of servers that stay."""
        kept = {server.url: server for server in self.servers}
        self.servers = []
        for spec in specs:
            url = normalize_url(spec.url, self.config.default_port)
            if url in kept and all(server.url != url for server in self.servers):
                self.servers.append(kept[url])
            else:
                self.add(spec)

    def is_configured(self, server: Server) -> bool:
        """Whether ``server`` came from plugins.toml (not from an advertised list)."""
        return server.url in self.configured_urls

    def local_server(self) -> Server | None:
        """The device itself, if the pool has it."""
        return next((server for server in self.servers if server.local), None)

    def ejected(self) -> int:
        """Servers whose circuit is not closed."""
        return sum(1 for server in self.servers if server.breaker.refresh() != CLOSED)

    def may_eject(self, server: Server) -> bool:
        """Whether ``server``'s circuit may open: ejection never takes out more than ``max_ejected_ratio``.

        A server already out (a half-open one whose trial just failed) counts once,
        not twice: re-opening it ejects no one new.
        """
        others = sum(1 for other in self.servers if other is not server and other.breaker.refresh() != CLOSED)
        return others + 1 <= int(self.config.max_ejected_ratio * len(self.servers))

    def addresses(self) -> list[str]:
        """``host:port`` of every server, as the original ``/listservers`` answered."""
        return [server.address for server in self.servers]

    def describe(self) -> dict[str, Any]:
        """JSON-ready view of the pool and its servers."""
        config = self.config
        return {
            "name": config.name,
            "policy": config.policy,
            "consider_throughput": config.consider_throughput,
            "expected_throughput": config.expected_throughput,
            "window_s": config.window_s,
            "servers": [{**server.describe(), "configured": self.is_configured(server)} for server in self.servers],
        }


class Registry:
    """All pools of the gateway, by name."""

    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {}

    def add_pool(self, config: PoolConfig) -> Pool:
        """Create a pool; its name must be new."""
        if config.name in self.pools:
            raise ValueError(f"server pool {config.name!r} is defined twice")
        pool = Pool(config)
        self.pools[config.name] = pool
        return pool

    def pool(self, name: str) -> Pool:
        """The pool called ``name`` (KeyError if there is none)."""
        return self.pools[name]

    def describe(self) -> dict[str, Any]:
        """JSON-ready view of every pool."""
        return {name: pool.describe() for name, pool in self.pools.items()}
