"""The decision engine: run locally or offload, pick a server, send, measure, retry, account.

The engine knows nothing of what a task means; plugins describe a task as an
HTTP call relative to a server's base URL and get back the result envelope.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict

import aiohttp

from .advertised import AddressAllowlist
from .balancer import PoolRuntime
from .cache import Fresh, ReadCache
from .cache.task_cache import cacheable, decode_result, encode_result, task_key
from .decisions import DecisionLog
from .errors import OffloadError
from .health import Prober, ProbeResult, fetch_server_list
from .membership import PoolUpdate, merge_advertised
from .metrics import NO_METRICS, EngineMetrics, PoolEvent
from .monitor import HealthMonitor
from .policies import BUILTIN_POLICIES, PolicyFactory
from .registry import Pool, Registry, Server
from .selection import Choice, choose, eligible, local_rule_applies, no_server_error
from .sending import Attempt, AttemptFailed, send_once
from .settings import GatewaySettings
from .shared_health import HealthSharing
from .stalls import StallWatch
from .state import MemoryState, StateBackend
from .tasks import OffloadResult, Task
from .transports import AiohttpUpstream, NativeTransport, Transport, TransportRouter

__all__ = ["Engine", "OffloadResult", "PoolUpdate", "Task"]

log = logging.getLogger("offload.engine")

# Idle upstream connections are closed after this long, well before the edges' own
# keep-alive timeout (Sanic's default is 120 s), so a reused connection is rarely a dead one.
KEEPALIVE_S = 30.0


class Engine:
    """Decides where each task runs and sends it there; owns the session, transport and background watchers.

    Probing is :class:`~offload.monitor.HealthMonitor`'s, pool membership
    :mod:`offload.membership`'s, per-pool state :class:`~offload.balancer.PoolRuntime`'s
    and hung-server detection :class:`~offload.stalls.StallWatch`'s: the engine
    wires them together and runs the retry and hedge loop.

    Tasks are sent with ``transport`` when one is given (a
    :class:`~offload.transports.FakeTransport` in tests, say; the engine closes
    it on :meth:`close`); otherwise :meth:`start` builds the default one, a
    :class:`~offload.transports.TransportRouter` over the native and aiohttp
    transports (aiohttp alone with ``upstream_client = "aiohttp"``). Health
    probes and server lists always go over the aiohttp session.
    """

    def __init__(
        self,
        registry: Registry,
        gateway: GatewaySettings,
        *,
        policies: Mapping[str, PolicyFactory] | None = None,
        rng: random.Random | None = None,
        transport: Transport | None = None,
        state: StateBackend | None = None,
    ) -> None:
        self.registry = registry
        self.gateway = gateway
        # What every process of this gateway shares (windows, health, nonces); the engine closes it.
        self.state: StateBackend = state or MemoryState()
        # The latest count each pool's window reported, for backends that cannot answer at once.
        self._window_counts: dict[str, int] = {}
        self.rng = rng or random.Random()
        self.policy_factories: dict[str, PolicyFactory] = {**BUILTIN_POLICIES, **(policies or {})}
        self.runtime: dict[str, PoolRuntime] = {}
        for pool in registry.pools.values():
            self.configure_pool(pool)
        self._session: aiohttp.ClientSession | None = None
        self._given_transport = transport
        self._client: Transport | None = None
        # Where the engine reports what it does (GET /metrics); the app installs real metrics.
        self.metrics: EngineMetrics = NO_METRICS
        self.decisions = DecisionLog()  # the last few decisions per pool (GET /servers, /dashboard)
        # Read caches by pool, made when a plugin first asks for one (PluginContext.read_cache).
        self.caches: dict[str, ReadCache] = {}
        # Idle upstream connections do not outlive their keep-alive time (nor their server's removal).
        self.monitor = HealthMonitor(
            registry,
            gateway,
            lambda: self.session,
            lambda: self.client.prune_idle(),
            on_probe=lambda pool, server, ok: self.metrics.probed(pool.name, server, ok),
        )
        self.stall_watch = StallWatch(
            registry,
            self.monitor.probe_one,
            gateway.probe_timeout_s,
            on_moved=lambda pool_name, moved: self.metrics.count(pool_name, "moved_off_hung_servers", moved),
        )
        self.advertised = AddressAllowlist.from_settings(gateway.advertised_networks, gateway.advertised_ports)
        self.health_sharing = HealthSharing(registry, self.state, gateway.replica, gateway.probe_interval_s)

    def configure_pool(self, pool: Pool) -> None:
        """Build the pool's policy, retry budget and latency window."""
        config = pool.config
        factory = self.policy_factories.get(config.policy)
        if factory is None:
            known = ", ".join(sorted(self.policy_factories))
            raise ValueError(f"pool {pool.name!r}: unknown policy {config.policy!r}; choose one of: {known}")
        self.runtime[pool.name] = PoolRuntime.for_pool(config, factory, self.rng)

    def apply_gateway(self, gateway: GatewaySettings) -> None:
        """Probe and admit advertised servers by ``gateway`` from now on (a reload: see :mod:`offload.reload`).

        Only the probe settings and the advertised networks and ports change live;
        the transport, its limits and the state were built at start and stay.
        """
        self.gateway = gateway
        self.monitor.use_settings(gateway)
        self.stall_watch.probe_timeout_s = gateway.probe_timeout_s
        self.advertised = AddressAllowlist.from_settings(gateway.advertised_networks, gateway.advertised_ports)

    def use_state(self, state: StateBackend) -> None:
        """Share state through ``state`` instead (before :meth:`start`; the engine closes it)."""
        self.state = state
        self.health_sharing.state = state
        for cache in self.caches.values():
            cache.state = state

    def read_cache(self, pool_name: str) -> ReadCache:
        """``pool_name``'s read cache (made on first use, bounded by ``[gateway] cache_max_*``)."""
        cache = self.caches.get(pool_name)
        if cache is None:
            self.registry.pool(pool_name)  # a KeyError for a pool that does not exist
            cache = self.caches[pool_name] = ReadCache(
                pool_name,
                max_entries=self.gateway.cache_max_entries,
                max_bytes=self.gateway.cache_max_bytes,
                state=self.state,
                on_outcome=lambda outcome: self.metrics.cache(pool_name, outcome),
            )
        return cache

    def window_key(self, pool_name: str) -> str:
        """The name of the pool's local-throughput window in the shared state (one per device and pool)."""
        return f"window:{self.gateway.device}:{pool_name}"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def probers(self) -> dict[str, Prober]:
        """Custom health probes by pool name (from plugins); other pools get the HTTP probe."""
        return self.monitor.probers

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared keep-alive client session (only between start and close)."""
        if self._session is None:
            raise RuntimeError("engine is not started")
        return self._session

    @property
    def client(self) -> Transport:
        """The transport tasks are sent with (only between start and close)."""
        if self._client is None:
            raise RuntimeError("engine is not started")
        return self._client

    async def start(self) -> None:
        """Open the session and the transport, load remote server lists, probe once, then keep probing."""
        connector = aiohttp.TCPConnector(limit=self.gateway.max_connections, keepalive_timeout=KEEPALIVE_S)
        # No cookie jar (edges are not browsers' peers; a jar only costs time per request) and
        # no automatic decompression (edges answer uncompressed, and bodies are relayed as they are).
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            # Fewer headers to build and send on every call; edges need none of them.
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        self._client = self._given_transport or self._default_transport(self._session)
        await self.state.start()
        await self.health_sharing.start()
        for pool in self.registry.pools.values():
            if pool.config.servers_url:
                await self.load_server_list(pool)
        await self.probe_now()
        self.monitor.start()
        self.stall_watch.start()

    def _default_transport(self, session: aiohttp.ClientSession) -> Transport:
        """Native for plain ``http://`` and aiohttp (over ``session``) for the rest, or aiohttp for all."""
        max_body, max_header_bytes = self.gateway.max_response_bytes, self.gateway.max_response_header_bytes
        general = AiohttpUpstream(session, max_body=max_body, max_header_bytes=max_header_bytes)
        if self.gateway.upstream_client != "native":
            return general
        native = NativeTransport(
            limit=self.gateway.max_connections,
            keepalive_s=KEEPALIVE_S,
            max_body=max_body,
            max_header_bytes=max_header_bytes,
        )
        return TransportRouter(native, general)

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
        """Stop probing and watching, and close the session."""
        await self.stall_watch.stop()
        await self.monitor.stop()
        await self.health_sharing.stop()
        await self.state.close()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe_now(self) -> None:
        """Probe every server of every pool once, all pools at the same time."""
        await self.monitor.probe_now()

    async def probe_one(self, pool: Pool, server: Server, timeout_s: float) -> ProbeResult:
        """Probe one server of ``pool`` now (with the pool's own probe, if a plugin gave one) and record it."""
        return await self.monitor.probe_one(pool, server, timeout_s)

    # -- deciding ----------------------------------------------------------------------------

    def throughput(self, pool_name: str) -> int:
        """Requests run locally in the pool's current window (the last count seen, if the state is remote)."""
        counted = self.state.count_now(self.window_key(pool_name), self.registry.pool(pool_name).config.window_s)
        return self._window_counts.get(pool_name, 0) if counted is None else counted

    async def throughput_now(self, pool_name: str) -> int:
        """Requests run locally in the pool's current window, asked of the shared state now."""
        count = await self.state.count(self.window_key(pool_name), self.registry.pool(pool_name).config.window_s)
        self._window_counts[pool_name] = count
        return count

    async def _admit_local(self, pool: Pool) -> bool:
        """The local-throughput window's verdict for one task (counted if admitted)."""
        config = pool.config
        key = self.window_key(pool.name)
        admission = self.state.admit_now(key, config.expected_throughput, config.window_s)
        if admission is None:
            admission = await self.state.admit(key, config.expected_throughput, config.window_s)
        self._window_counts[pool.name] = admission.count
        return admission.admitted

    async def _count_local(self, pool: Pool) -> None:
        """Count a request the local server takes without the window's admission (pinned, or last resort)."""
        self._window_counts[pool.name] = await self.state.record(self.window_key(pool.name), pool.config.window_s)

    def counters(self, pool_name: str) -> dict[str, int]:
        """Retries, hedges, fail-open decisions and requests moved off hung servers so far."""
        runtime = self.runtime[pool_name]
        runtime.counters.retries_refused_by_budget = runtime.budget.refused
        runtime.counters.moved_off_hung_servers = self.stall_watch.moved.get(pool_name, 0)
        return asdict(runtime.counters)

    def choose(self, pool: Pool, requested: str | None = None, exclude: Collection[str] = ()) -> Server:
        """The server the next task would go to (see :func:`offload.selection.choose`); counts nothing."""
        under_limit = self.throughput(pool.name) <= pool.config.expected_throughput
        return self._choose(pool, requested, exclude, local_admitted=under_limit).server

    def _choose(
        self,
        pool: Pool,
        requested: str | None,
        exclude: Collection[str],
        *,
        local_admitted: bool = False,
        may_trial: bool = False,
    ) -> Choice:
        runtime = self.runtime[pool.name]
        return choose(pool, runtime.policy, local_admitted, requested, exclude, may_trial=may_trial)

    eligible = staticmethod(eligible)

    # -- sending -----------------------------------------------------------------------------

    async def offload(
        self, pool_name: str, task: Task, server: str | None = None, exclude: Collection[str] = ()
    ) -> OffloadResult:
        """Run ``task`` on the best server of ``pool_name`` (or the one named by ``server``).

        An idempotent task whose server fails is retried on another server within
        the task's deadline and the pool's retry budget; with hedging on, a slow
        answer is raced by a second server. A cacheable task (``task.cache_ttl_s``)
        may be answered from the pool's read cache, or by an identical task in flight.
        """
        if task.cache_ttl_s is not None and cacheable(task, exclude):
            return await self._offload_cached(pool_name, task, server)
        return await self._offload(pool_name, task, server, exclude)

    async def _offload_cached(self, pool_name: str, task: Task, server: str | None) -> OffloadResult:
        started = time.perf_counter()
        ttl_s: float = task.cache_ttl_s  # type: ignore[assignment]

        async def produce() -> Fresh[OffloadResult]:
            result = await self._offload(pool_name, task, server, ())
            if result.status_code != 200:
                return Fresh(result)
            return Fresh(result, encode_result(result), ttl_s)

        def decode(kept: bytes) -> OffloadResult:
            return decode_result(kept, self.throughput(pool_name), time.perf_counter() - started)

        result, outcome = await self.read_cache(pool_name).load(task_key(task, server), produce, decode)
        if outcome == "hit":
            return result
        elapsed = result.time if outcome == "miss" else time.perf_counter() - started
        return OffloadResult(result.data, result.server, result.status_code, result.throughput, elapsed, outcome)

    async def _offload(self, pool_name: str, task: Task, server: str | None, exclude: Collection[str]) -> OffloadResult:
        started = time.perf_counter()
        pool = self.registry.pool(pool_name)
        runtime = self.runtime[pool_name]
        deadline = started + (task.timeout_s or pool.config.timeout_s)
        tried = set(exclude)
        flexible = task.idempotent and not server
        retries_left = pool.config.retries if flexible else 0
        runtime.budget.deposit()
        local_admitted = local_rule_applies(pool, server, tried) and await self._admit_local(pool)
        choice = self._choose(pool, server, tried, local_admitted=local_admitted, may_trial=flexible)
        while True:
            if choice.fail_open:
                self._record_event(pool_name, runtime, "fail_open")
            try:
                answer = await self._attempt(pool, choice, task, deadline, tried, flexible)
                break
            except AttemptFailed as failure:
                tried.add(failure.server or choice.server.name)
                next_choice = self._next_choice(
                    pool, runtime, deadline, tried, retries_left, needs_budget=not failure.never_arrived
                )
                if next_choice is None:
                    error = self._final_error(pool, choice, failure)
                    self.decisions.failed(pool, choice, error, failure.server, server, tried, exclude, started)
                    raise error from None
                retries_left -= 1
                self._record_event(pool_name, runtime, "retries")
                choice = next_choice
        self.decisions.answered(pool, choice, answer.server, answer.status, server, tried, exclude, started)
        return OffloadResult(
            data=answer.data,
            server=answer.server.name,
            status_code=answer.status,
            throughput=self.throughput(pool_name),
            time=time.perf_counter() - started,
        )

    def _next_choice(
        self,
        pool: Pool,
        runtime: PoolRuntime,
        deadline: float,
        tried: set[str],
        retries_left: int,
        *,
        needs_budget: bool,
    ) -> Choice | None:
        """Where to retry, if a retry is allowed and anyone is left; withdraws from the budget if needed."""
        if retries_left <= 0 or time.perf_counter() >= deadline:
            return None
        try:
            choice = self._choose(pool, None, tried)
        except OffloadError:
            return None
        if needs_budget and not runtime.budget.allow_retry():
            self.metrics.count(pool.name, "retries_refused_by_budget")
            return None
        return choice

    @staticmethod
    def _final_error(pool: Pool, choice: Choice, failure: AttemptFailed) -> OffloadError:
        """The error the caller gets: the failure itself, or a 503 if we were already failing open."""
        if not choice.fail_open:
            return failure
        excluded = {**choice.excluded, choice.server.name: f"tried anyway: {failure.message}"}
        return no_server_error(pool, excluded)

    async def _attempt(
        self, pool: Pool, choice: Choice, task: Task, deadline: float, tried: set[str], may_hedge: bool
    ) -> Attempt:
        """One attempt, raced by a hedge on a second server when hedging is on and the first is slow."""
        first = self._send(pool, choice.server, task, deadline, movable=may_hedge, counted=choice.counted)
        if not (may_hedge and pool.config.hedge and not choice.fail_open):
            return await first
        runtime = self.runtime[pool.name]
        contenders: dict[asyncio.Future[Attempt], Server] = {asyncio.ensure_future(first): choice.server}
        try:
            done, _ = await asyncio.wait(set(contenders), timeout=self.hedge_delay(pool))
            if not done:
                try:
                    second = self._choose(pool, None, {*tried, choice.server.name})
                except OffloadError:
                    second = None
                if second is not None and not second.fail_open:
                    self._record_event(pool.name, runtime, "hedges")
                    hedge = self._send(pool, second.server, task, deadline, movable=True)
                    contenders[asyncio.ensure_future(hedge)] = second.server
            pending = set(contenders)
            failure: AttemptFailed | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    error = future.exception()
                    if error is None:
                        if contenders[future] is not choice.server:
                            self._record_event(pool.name, runtime, "hedges_won")
                        return future.result()
                    if not isinstance(error, AttemptFailed):
                        raise error
                    tried.add(contenders[future].name)
                    failure = failure or error
            assert failure is not None
            raise failure
        finally:
            # The loser (or everything, if our caller went away) is cancelled, never left running.
            for future in contenders:
                if not future.done():
                    future.cancel()
            await asyncio.gather(*contenders, return_exceptions=True)

    async def _send(
        self, pool: Pool, target: Server, task: Task, deadline: float, *, movable: bool, counted: bool = False
    ) -> Attempt:
        if deadline - time.perf_counter() <= 0:
            raise AttemptFailed(
                504, f"no time left for server {target.name!r}: the deadline passed", server=target.name
            )
        runtime = self.runtime[pool.name]
        if target.local and not counted:
            await self._count_local(pool)
        remaining = deadline - time.perf_counter()
        with self.metrics.attempt(pool.name, target) as attempt:
            answer = await send_once(self.client, pool, target, task, remaining, movable=movable)
            attempt.answered(answer.elapsed_s)
        runtime.latencies.add(answer.elapsed_s)
        return answer

    def _record_event(self, pool_name: str, runtime: PoolRuntime, event: PoolEvent) -> None:
        """One more ``event`` of the pool: in its counters (``GET /servers``) and its metrics (``GET /metrics``)."""
        setattr(runtime.counters, event, getattr(runtime.counters, event) + 1)
        self.metrics.count(pool_name, event)

    def hedge_delay(self, pool: Pool) -> float:
        """Seconds to wait before hedging: configured, or the pool's observed p95."""
        return self.runtime[pool.name].hedge_delay(pool.config)

    # -- changing pools ----------------------------------------------------------------------

    async def update_pool_from_list(self, pool_name: str, addresses: Iterable[str]) -> PoolUpdate:
        """Merge advertised ``addresses`` into the pool (see :func:`offload.membership.merge_advertised`)."""
        pool = self.registry.pool(pool_name)
        return await merge_advertised(
            pool, addresses, self.advertised, lambda servers: self.monitor.probe(pool, servers)
        )
