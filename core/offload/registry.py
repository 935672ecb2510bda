"""Server pools and the live state of every server in them.

The registry holds facts (health, latency, in-flight, errors); it decides
nothing. Policies read these facts and the engine writes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .addresses import host_port, normalize_url
from .pool_config import PoolConfig
from .settings import ServerSpec

# Weight of the newest sample in the latency average: reacts within a few
# requests yet is not thrown by one outlier.
LATENCY_EWMA_ALPHA = 0.3


@dataclass(eq=False)
class Server:
    """A server and what the gateway has observed of it."""

    name: str
    url: str
    local: bool = False
    healthy: bool | None = None  # verdict of the last probe or call; None: not yet known
    down_reason: str | None = None
    latency_ewma_s: float | None = None
    last_latency_s: float | None = None
    inflight: int = 0
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_probe_at: float | None = None
    height: int | None = None  # progress reported by probes (e.g. latest block), if any
    added_at: float = field(default_factory=time.time)

    @property
    def address(self) -> str:
        """``host:port``, the form the original server lists used."""
        return host_port(self.url)

    @property
    def available(self) -> bool:
        """Not known to be down."""
        return self.healthy is not False

    def record_latency(self, seconds: float) -> None:
        """Fold a latency sample (probe or request) into the moving average."""
        self.last_latency_s = seconds
        if self.latency_ewma_s is None:
            self.latency_ewma_s = seconds
        else:
            self.latency_ewma_s += LATENCY_EWMA_ALPHA * (seconds - self.latency_ewma_s)

    def mark_up(self) -> None:
        """The server answered: clear any failure streak."""
        self.healthy = True
        self.down_reason = None
        self.consecutive_failures = 0

    def mark_down(self, reason: str) -> None:
        """The server failed to answer; keep it out of rotation until it answers again."""
        self.healthy = False
        self.down_reason = reason
        self.last_error = reason
        self.failures += 1
        self.consecutive_failures += 1

    def describe(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /servers`` and error messages."""
        return {
            "name": self.name,
            "url": self.url,
            "local": self.local,
            "healthy": self.healthy,
            "down_reason": self.down_reason,
            "latency_ewma_ms": None if self.latency_ewma_s is None else round(self.latency_ewma_s * 1000, 3),
            "last_latency_ms": None if self.last_latency_s is None else round(self.last_latency_s * 1000, 3),
            "inflight": self.inflight,
            "requests": self.requests,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "height": self.height,
        }


class Pool:
    """An ordered set of servers, unique by URL and by name."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.servers: list[Server] = []
        for spec in config.servers:
            self.add(spec)

    @property
    def name(self) -> str:
        return self.config.name

    def __len__(self) -> int:
        return len(self.servers)

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
        server = Server(name=name, url=url, local=spec.local)
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

    def local_server(self) -> Server | None:
        """The device itself, if the pool has it."""
        return next((server for server in self.servers if server.local), None)

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
            "servers": [server.describe() for server in self.servers],
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
