"""What a plugin is handed: its name, its options, and a way to run tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection

    import aiohttp

    from .cache import ReadCache
    from .engine import Engine, OffloadResult, PoolUpdate, Task
    from .registry import Pool
    from .state import StateBackend


@dataclass
class PluginContext:
    """One enabled plugin as the gateway sees it."""

    name: str
    options: dict[str, Any]
    # Pools the plugin contributed, by name; the first is its default pool.
    pool_names: list[str] = field(default_factory=list)
    engine: Engine | None = None
    # The plugins.toml this plugin was configured from ("" when built in memory).
    source: str = ""

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in the plugin's options are relative to."""
        source = Path(self.source) if self.source else None
        return source.parent if source is not None and source.is_file() else Path.cwd()

    @property
    def where(self) -> str:
        """The plugin's table in plugins.toml, for error messages."""
        return f"[plugins.{self.name}]"

    @property
    def prefix(self) -> str:
        """URL prefix the plugin's routes are mounted under ('' for the root)."""
        return str(self.options.get("prefix", "")).rstrip("/")

    @property
    def default_pool(self) -> str:
        """Name of the plugin's first pool."""
        if not self.pool_names:
            raise RuntimeError(f"plugin {self.name!r} has no server pool")
        return self.pool_names[0]

    def require_engine(self) -> Engine:
        """The gateway's engine (set once the app is built)."""
        if self.engine is None:
            raise RuntimeError(f"plugin {self.name!r} is not attached to a gateway yet")
        return self.engine

    def pool(self, name: str | None = None) -> Pool:
        """One of the plugin's pools (the default one when ``name`` is None)."""
        return self.require_engine().registry.pool(name or self.default_pool)

    async def offload(
        self, task: Task, *, server: str | None = None, pool: str | None = None, exclude: Collection[str] = ()
    ) -> OffloadResult:
        """Run ``task`` on the best server of the plugin's (default) pool, or on ``server`` (a name or address).

        Servers named in ``exclude`` are not tried (e.g. one that just failed a write).
        """
        return await self.require_engine().offload(pool or self.default_pool, task, server=server, exclude=exclude)

    def choose(self, pool: str | None = None) -> str:
        """The name of the server the next task of the (default) pool would go to."""
        engine = self.require_engine()
        return engine.choose(engine.registry.pool(pool or self.default_pool)).name

    def throughput(self, pool: str | None = None) -> int:
        """Requests the (default) pool ran locally in its current window."""
        return self.require_engine().throughput(pool or self.default_pool)

    def read_cache(self, pool: str | None = None) -> ReadCache:
        """The (default) pool's read cache, shared by every plugin task and read of that pool.

        ``load(key, produce, decode)`` answers from memory, then from the shared
        store (with ``--workers`` or replicas), then by running ``produce`` once
        for all identical concurrent callers; ``produce`` returns a
        :class:`~offload.Fresh` saying what to keep and for how long. Tasks
        with ``cache_ttl_s`` use it by themselves. Its counts appear in
        ``GET /servers`` (the pool's ``cache``) and ``GET /metrics``.
        """
        return self.require_engine().read_cache(pool or self.default_pool)

    def count_event(self, event: str, outcome: str) -> None:
        """Count one ``event`` that ended in ``outcome`` in ``GET /metrics`` (``offload_plugin_events_total``).

        Both are short fixed names (``[a-z][a-z0-9_]*``, e.g. ``"transaction"``,
        ``"refused"``), never a caller's text: anything else, and names beyond the
        first 64 pairs, are counted as ``"other"``. Does nothing before the plugin
        is attached to a gateway.
        """
        if self.engine is not None:
            self.engine.metrics.plugin_event(self.name, event, outcome)

    @property
    def state(self) -> StateBackend:
        """What every process of this gateway shares (``[gateway] state``): e.g. nonce leases, windows, a cache.

        One worker keeps it in memory; ``--workers N`` in shared memory; replicas in
        Redis. Its operations raise :class:`~offload.StateUnavailable` (a 503) when the
        shared store cannot be reached.
        """
        return self.require_engine().state

    @property
    def http_session(self) -> aiohttp.ClientSession:
        """The gateway's shared aiohttp session, for a plugin's own probes (never follow redirects with it)."""
        return self.require_engine().session

    async def update_pool(self, addresses: list[str], pool: str | None = None) -> PoolUpdate:
        """Replace a pool's servers with those of ``addresses`` that pass a probe."""
        return await self.require_engine().update_pool_from_list(pool or self.default_pool, addresses)
