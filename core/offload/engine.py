"""The decision engine: run locally or offload, pick a server, send, measure, account.

The engine knows nothing of what a task means; plugins describe a task as an
HTTP call relative to a server's base URL and get back the result envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .addresses import host_port, normalize_url
from .errors import OffloadError
from .health import Prober, describe_exception, fetch_server_list, probe_all
from .policies import BUILTIN_POLICIES, Policy, PolicyFactory
from .registry import Pool, Registry, Server
from .settings import GatewaySettings, ServerSpec
from .throughput import SlidingWindowCounter

log = logging.getLogger("offload.engine")

# Bytes of an upstream's error body quoted back to the caller.
ERROR_BODY_EXCERPT = 200


@dataclass(frozen=True)
class Task:
    """An HTTP call to make on whichever server the engine picks."""

    path: str
    method: str = "GET"
    params: Mapping[str, str] | None = None
    json: Any = None
    body: bytes | None = None  # sent as is when set (with your own Content-Type header)
    headers: Mapping[str, str] | None = None
    # Safe to send again elsewhere if the first server fails (used by retries).
    idempotent: bool = True
    timeout_s: float | None = None


@dataclass(frozen=True)
class OffloadResult:
    """A task's answer and how it was obtained."""

    data: Any
    server: str
    status_code: int
    throughput: int
    time: float

    def envelope(self) -> dict[str, Any]:
        """The gateway's answer: ``{"data", "server", "status_code", "throughput", "time"}``."""
        return {
            "data": self.data,
            "server": self.server,
            "status_code": self.status_code,
            "throughput": self.throughput,
            "time": self.time,
        }


@dataclass(frozen=True)
class PoolUpdate:
    """What updating a pool from a list of addresses did."""

    kept: list[str]
    dropped: dict[str, str]  # address -> why


class Engine:
    """Owns the HTTP session, the registry's live state and the per-pool decisions."""

    def __init__(
        self,
        registry: Registry,
        gateway: GatewaySettings,
        *,
        policies: Mapping[str, PolicyFactory] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.gateway = gateway
        self.rng = rng or random.Random()
        self.policy_factories: dict[str, PolicyFactory] = {**BUILTIN_POLICIES, **(policies or {})}
        self.policies: dict[str, Policy] = {}
        self.meters: dict[str, SlidingWindowCounter] = {}
        self.timeouts: dict[str, aiohttp.ClientTimeout] = {}
        for pool in registry.pools.values():
            self.configure_pool(pool)
        # Custom health probes by pool name (from plugins); others get the HTTP probe.
        self.probers: dict[str, Prober] = {}
        self._session: aiohttp.ClientSession | None = None
        self._probe_task: asyncio.Task[None] | None = None

    def configure_pool(self, pool: Pool) -> None:
        """Build the pool's policy, throughput meter and call timeout."""
        config = pool.config
        factory = self.policy_factories.get(config.policy)
        if factory is None:
            known = ", ".join(sorted(self.policy_factories))
            raise ValueError(f"pool {pool.name!r}: unknown policy {config.policy!r}; choose one of: {known}")
        self.policies[pool.name] = factory(self.rng)
        self.meters[pool.name] = SlidingWindowCounter(config.window_s)
        self.timeouts[pool.name] = aiohttp.ClientTimeout(total=config.timeout_s)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared keep-alive client session (only between start and close)."""
        if self._session is None:
            raise RuntimeError("engine is not started")
        return self._session

    async def start(self) -> None:
        """Open the session, load remote server lists, probe once, then keep probing."""
        connector = aiohttp.TCPConnector(limit=self.gateway.max_connections, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector)
        for pool in self.registry.pools.values():
            if pool.config.servers_url:
                await self.load_server_list(pool)
        await self.probe_now()
        self._probe_task = asyncio.create_task(self._probe_forever(), name="offload-health-probes")

    async def load_server_list(self, pool: Pool) -> None:
        """Fill ``pool`` from its ``servers_url``; on failure keep the configured servers."""
        url = pool.config.servers_url
        if not url:
            return
        try:
            addresses = await fetch_server_list(self.session, url, self.gateway.probe_timeout_s)
        except OffloadError as exc:
            # Starting with the configured servers beats not starting at all.
            log.warning("pool %r keeps its configured servers: %s", pool.name, exc.message)
            return
        await self.update_pool_from_list(pool.name, addresses)

    async def close(self) -> None:
        """Stop probing and close the session."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe_now(self) -> None:
        """Probe every server of every pool once, all pools at the same time."""
        gateway = self.gateway
        await asyncio.gather(
            *(
                probe_all(
                    self.session,
                    pool.servers,
                    gateway.probe_path,
                    gateway.probe_timeout_s,
                    self.probers.get(pool.name),
                )
                for pool in self.registry.pools.values()
                if pool.servers
            )
        )

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.gateway.probe_interval_s)
            try:
                await self.probe_now()
            except Exception:  # a probe round must never kill the loop
                log.exception("health probe round failed")

    # -- deciding ----------------------------------------------------------------------------

    def throughput(self, pool_name: str) -> int:
        """Requests run locally in the pool's current window."""
        return self.meters[pool_name].count()

    def choose(self, pool: Pool, requested: str | None = None, exclude: Collection[str] = ()) -> Server:
        """Pick the server for one task, or raise a 400/503 :class:`OffloadError` saying why.

        ``exclude`` names servers not to use this time (e.g. one that just failed).
        """
        if requested:
            server = pool.find(requested)
            if server is None:
                names = ", ".join(f"{s.name} ({s.address})" for s in pool.servers) or "none"
                raise OffloadError(400, f"server {requested!r} is not in pool {pool.name!r}; choose one of: {names}")
            return server
        if not pool.servers:
            raise OffloadError(503, f"pool {pool.name!r} has no servers; add some in plugins.toml")
        config = pool.config
        eligible, excluded = self.eligible(pool, exclude)
        local = pool.local_server()
        policy = self.policies[pool.name]
        if config.consider_throughput and local is not None:
            local_ok = local in eligible
            # The original rule, kept exactly: local while throughput <= expected.
            if local_ok and self.meters[pool.name].count() <= config.expected_throughput:
                return local
            remote = [server for server in eligible if not server.local]
            if remote:
                return policy.choose(remote)
            if local_ok:  # over the limit but nobody else can take it: slow beats lost
                return local
        elif eligible:
            return policy.choose(eligible)
        raise self.no_server_error(pool, excluded)

    @staticmethod
    def eligible(pool: Pool, exclude: Collection[str] = ()) -> tuple[list[Server], dict[str, str]]:
        """Servers that may take a task now, and why each other one may not."""
        excluded: dict[str, str] = {}
        best_height = max((s.height for s in pool.servers if s.available and s.height is not None), default=None)
        eligible = []
        for server in pool.servers:
            if server.name in exclude:
                excluded[server.name] = "failed this request already"
            elif not server.available:
                excluded[server.name] = server.down_reason or "unavailable"
            elif (
                pool.config.max_lag
                and best_height is not None
                and server.height is not None
                and best_height - server.height > pool.config.max_lag
            ):
                behind = best_height - server.height
                excluded[server.name] = f"lagging {behind} behind the best known height {best_height}"
            else:
                eligible.append(server)
        return eligible, excluded

    @staticmethod
    def no_server_error(pool: Pool, excluded: dict[str, str]) -> OffloadError:
        """503 that says, per server, why it was not chosen."""
        reasons = "; ".join(f"{name}: {why}" for name, why in excluded.items())
        return OffloadError(
            503, f"no server available in pool {pool.name!r} ({reasons})", details={"excluded": excluded}
        )

    # -- sending -----------------------------------------------------------------------------

    async def offload(
        self, pool_name: str, task: Task, server: str | None = None, exclude: Collection[str] = ()
    ) -> OffloadResult:
        """Run ``task`` on the best server of ``pool_name`` (or the one named by ``server``)."""
        started = time.perf_counter()
        pool = self.registry.pool(pool_name)
        target = self.choose(pool, server, exclude)
        meter = self.meters[pool_name]
        if target.local:
            meter.record()
        status, data = await self._send(pool, target, task)
        return OffloadResult(
            data=data,
            server=target.name,
            status_code=status,
            throughput=meter.count(),
            time=time.perf_counter() - started,
        )

    async def _send(self, pool: Pool, target: Server, task: Task) -> tuple[int, Any]:
        """One HTTP call; updates the server's state; maps failures to 502/504."""
        timeout = aiohttp.ClientTimeout(total=task.timeout_s) if task.timeout_s else self.timeouts[pool.name]
        where = f"server {target.name!r} ({target.url})"
        target.inflight += 1
        target.requests += 1
        sent = time.perf_counter()
        try:
            async with self.session.request(
                task.method,
                target.url + task.path,
                params=task.params,
                json=task.json,
                data=task.body,
                headers=task.headers,
                timeout=timeout,
            ) as response:
                body = await response.read()
                status = response.status
                is_json = response.content_type == "application/json"
        except TimeoutError:
            target.failures += 1
            target.last_error = f"timed out after {timeout.total:g} s"
            raise OffloadError(504, f"{where} did not answer within {timeout.total:g} s", server=target.name) from None
        except aiohttp.ClientError as exc:
            target.mark_down(f"unreachable: {describe_exception(exc)}")
            raise OffloadError(502, f"{where} is unreachable: {describe_exception(exc)}", server=target.name) from None
        finally:
            target.inflight -= 1
        elapsed = time.perf_counter() - sent
        text = body.decode("utf-8", errors="replace")
        if status >= 500:
            target.failures += 1
            target.last_error = f"HTTP {status}"
            raise OffloadError(
                502,
                f"{where} failed with HTTP {status}: {text[:ERROR_BODY_EXCERPT]}",
                server=target.name,
                details={"upstream_status": status},
            )
        target.record_latency(elapsed)
        target.mark_up()
        return status, decode_body(text, is_json)

    # -- changing pools ----------------------------------------------------------------------

    async def update_pool_from_list(self, pool_name: str, addresses: Iterable[str]) -> PoolUpdate:
        """Merge ``addresses`` into the pool, keeping only servers that pass a probe.

        As the original did: current servers that fail a probe are dropped too,
        and duplicates (by address) are removed.
        """
        pool = self.registry.pool(pool_name)
        dropped: dict[str, str] = {}
        candidates: dict[str, ServerSpec] = {
            server.url: ServerSpec(server.name, server.url, server.local) for server in pool.servers
        }
        for address in addresses:
            try:
                url = normalize_url(address, pool.config.default_port)
            except ValueError as exc:
                dropped[address] = str(exc)
                continue
            candidates.setdefault(url, ServerSpec(host_port(url), url))
        trial = [Server(spec.name, spec.url, spec.local) for spec in candidates.values()]
        results = await probe_all(self.session, trial, self.gateway.probe_path, self.gateway.probe_timeout_s)
        keep = []
        for spec, result in zip(candidates.values(), results, strict=True):
            if result.ok:
                keep.append(spec)
            else:
                dropped[host_port(spec.url)] = result.error or "probe failed"
        pool.replace(keep)
        # Fresh probe results for the servers that stay, new ones included.
        for server, probed in zip(trial, results, strict=True):
            live = pool.find(server.url)
            if live is not None and probed.latency_s is not None:
                live.record_latency(probed.latency_s)
                live.mark_up()
        return PoolUpdate(kept=pool.addresses(), dropped=dropped)


def decode_body(text: str, is_json: bool) -> Any:
    """JSON bodies become values; everything else stays text, as the original returned it."""
    if is_json:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
