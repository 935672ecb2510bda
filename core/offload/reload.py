"""Hot reload of plugins.toml: ``SIGHUP`` (or ``offload reload``) re-reads it without dropping a request.

A reload first builds a throwaway gateway from the new file, exactly as startup
would (every plugin loaded, every option checked, routes claimed), so an
invalid file is refused with one line and nothing changes. Only then is the new
configuration applied to the running gateway, in one synchronous step (no
``await`` in it, so no request sees half of it):

* servers added to a pool (probed first, so a dead one gets no traffic), removed
  (no new task picks them; a request already sent holds its ``Server`` and
  finishes normally), or changed (name, ``local``; a new URL is a removal and an
  addition, counted as one change);
* a pool's settings (policy, timeouts, throughput rule, retries, ejection...),
  keeping its counters and latency history;
* the ``[gateway]`` settings in :data:`LIVE_GATEWAY_KEYS`.

Anything else that changed (the host, port, state backend, the set of enabled
plugins, a plugin's prefix or own options, a pool added to or removed from a
plugin) needs a restart: each is logged on one line and left as it is.

With ``offload serve --workers N`` the signal reaches the main process, which
forwards it to every worker that is serving (see :func:`install_reload_signal`);
each worker reloads its own gateway.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sanic import Sanic

from .breaker import BreakerSettings
from .errors import ConfigError
from .pool_config import PLUGIN_CORE_DEFAULTS, PoolConfig
from .registry import Pool, Server
from .retry_budget import RetryBudget
from .settings import GatewaySettings, Settings, load_settings

log = logging.getLogger("offload.reload")

# [gateway] settings a reload applies; every other one is fixed at startup (listening socket,
# transports and their limits, the shared state, the access guard wrapped around the routes).
LIVE_GATEWAY_KEYS = frozenset(
    {
        "probe_interval_s",
        "probe_timeout_s",
        "probe_path",
        "advertised_networks",
        "advertised_ports",
        "request_timeout_s",
        "keep_alive_timeout_s",
    }
)
# [plugins.NAME] keys that describe the plugin's pool: applied through the pools themselves.
POOL_KEYS = frozenset(PLUGIN_CORE_DEFAULTS) - {"enabled", "prefix"}
# PoolConfig fields compared as "settings" (servers are compared one by one).
POOL_SETTING_FIELDS = tuple(option.name for option in fields(PoolConfig) if option.name not in ("name", "servers"))

_check_numbers = itertools.count(1)


@dataclass(frozen=True)
class ReloadReport:
    """What one reload did, or why it did nothing."""

    ok: bool
    error: str | None = None
    added: list[str] = field(default_factory=list)  # "pool/server"
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # "gateway.probe_interval_s", "math.timeout_s"
    restart_needed: list[str] = field(default_factory=list)  # one line each

    def summary(self) -> str:
        """The one line logged and shown in ``GET /servers`` as ``last_reload.summary``."""
        if not self.ok:
            return f"reload rejected: {self.error}"
        settings = ", ".join(self.settings) or "none"
        restart = "; ".join(self.restart_needed) or "nothing"
        return (
            f"reload applied: +{len(self.added)} servers, -{len(self.removed)} servers, "
            f"~{len(self.changed)} changed; settings changed: {settings}; restart needed for: {restart}"
        )


@dataclass
class _Plan:
    """What applying the new configuration will do, worked out before anything changes."""

    report: ReloadReport
    pools: list[tuple[Pool, PoolConfig, Pool]] = field(default_factory=list)  # live, new config, fresh servers
    gateway: GatewaySettings | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # plugin -> new core pool options
    settings: Settings | None = None


def check_settings(settings: Settings, api_token: str | None = None) -> Sanic:
    """Build (never start) a gateway for ``settings``: every error a start would hit, as :class:`ConfigError`.

    The state backend is not opened (it cannot change without a restart, and
    creating shared memory or a Redis client for a check would leak them); the
    app is unregistered from Sanic again, so checks can be repeated.
    """
    from .app import create_app

    checked = dataclasses.replace(settings, gateway=dataclasses.replace(settings.gateway, state="memory"))
    with _logging_kept():
        app = create_app(checked, name=f"offload_reload_check_{next(_check_numbers)}", api_token=api_token)
    Sanic.unregister_app(app)
    return app


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """Keep the running process's log setup: a new Sanic app re-applies Sanic's default logging config."""
    from sanic.log import LOGGING_CONFIG_DEFAULTS

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in LOGGING_CONFIG_DEFAULTS["loggers"])]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


async def reload_config(app: Sanic, settings_path: str, overrides: Iterable[tuple[str, object]] = ()) -> ReloadReport:
    """Re-read ``settings_path`` and apply it to the running gateway ``app``; never raises for a bad file.

    ``overrides`` are the ``[gateway]`` settings given on the command line, applied
    over the file's as at startup. The outcome is logged and kept in
    ``app.ctx.last_reload`` (shown by ``GET /servers``).
    """
    lock = _reload_lock(app)
    async with lock:  # two signals in a row: the second reload sees the first one's result
        try:
            new_settings = load_settings(settings_path, dict(overrides))
            guard = getattr(app.ctx, "access_guard", None)
            checked = check_settings(new_settings, api_token=guard.token if guard is not None else None)
            plan = _plan(app, new_settings, checked)
            await _probe_new_servers(app, plan)
        except ConfigError as exc:
            report = ReloadReport(ok=False, error=str(exc))
        except Exception as exc:  # a plugin's hook failing on the new file: refused like a bad file, never fatal
            log.debug("reload check failed", exc_info=True)
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the plugin raised
            report = ReloadReport(ok=False, error=f"checking the new file failed: {reason}")
        else:
            _apply(app, plan)
            report = plan.report
            await _load_changed_server_lists(app, plan)
    _record(app, report)
    return report


def _reload_lock(app: Sanic) -> asyncio.Lock:
    lock = getattr(app.ctx, "reload_lock", None)
    if lock is None:
        lock = app.ctx.reload_lock = asyncio.Lock()
    return lock


def _record(app: Sanic, report: ReloadReport) -> None:
    summary = report.summary()
    if report.ok:
        for line in report.restart_needed:
            log.warning("reload: %s needs a restart to take effect", line)
        log.info("%s", summary)
    else:
        log.error("%s", summary)
    # The worker's PID says, behind --workers N, which process this record is from.
    app.ctx.last_reload = {"at": time.time(), "ok": report.ok, "summary": summary, "worker_pid": os.getpid()}


def _plan(app: Sanic, new: Settings, checked: Sanic) -> _Plan:
    """Compare the running gateway with the checked one; say what changes live and what needs a restart."""
    running: Settings = app.ctx.settings
    restart: list[str] = []
    settings_changed: list[str] = []

    old_gateway, new_gateway = running.gateway, new.gateway
    live: dict[str, Any] = {}
    for option in fields(GatewaySettings):
        before, after = getattr(old_gateway, option.name), getattr(new_gateway, option.name)
        if before == after:
            continue
        if option.name in LIVE_GATEWAY_KEYS:
            live[option.name] = after
            settings_changed.append(f"gateway.{option.name}")
        else:
            restart.append(f"[gateway] {option.name}")
    applied_gateway = dataclasses.replace(old_gateway, **live)

    old_contexts = {context.name: context for context in app.ctx.plugins}
    new_contexts = {context.name: context for context in checked.ctx.plugins}
    restart += [f"plugin {name!r} enabled" for name in new_contexts if name not in old_contexts]
    restart += [f"plugin {name!r} disabled" for name in old_contexts if name not in new_contexts]

    plan = _Plan(report=ReloadReport(ok=True))
    registry, new_registry = app.ctx.registry, checked.ctx.registry
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    for name, context in old_contexts.items():
        fresh_context = new_contexts.get(name)
        if fresh_context is None:
            continue
        for key in sorted(set(context.options) | set(fresh_context.options)):
            if key not in POOL_KEYS and context.options.get(key) != fresh_context.options.get(key):
                restart.append(f"[plugins.{name}] {key}")
        plan.options[name] = {key: value for key, value in fresh_context.options.items() if key in POOL_KEYS}
        restart += [f"pool {pool!r} added" for pool in fresh_context.pool_names if pool not in context.pool_names]
        restart += [f"pool {pool!r} removed" for pool in context.pool_names if pool not in fresh_context.pool_names]
        for pool_name in context.pool_names:
            if pool_name not in fresh_context.pool_names:
                continue
            pool, config = registry.pool(pool_name), new_registry.pool(pool_name).config
            if config.policy != pool.config.policy and config.policy not in app.ctx.engine.policy_factories:
                # A policy a plugin not loaded yet contributes: only a restart loads that plugin.
                restart.append(f"pool {pool_name!r} policy {config.policy!r}")
                config = dataclasses.replace(config, policy=pool.config.policy)
            settings_changed += [
                f"{pool_name}.{key}" for key in POOL_SETTING_FIELDS if getattr(pool.config, key) != getattr(config, key)
            ]
            pool_added, pool_removed, pool_changed = _server_changes(pool.config, config)
            added += [f"{pool_name}/{server}" for server in pool_added]
            removed += [f"{pool_name}/{server}" for server in pool_removed]
            changed += [f"{pool_name}/{server}" for server in pool_changed]
            plan.pools.append((pool, config, Pool(config)))

    plan.report = ReloadReport(
        ok=True, added=added, removed=removed, changed=changed, settings=settings_changed, restart_needed=restart
    )
    plan.gateway = applied_gateway
    plan.settings = Settings(gateway=applied_gateway, plugins=_running_tables(running, new), source=running.source)
    return plan


def _server_changes(old: PoolConfig, new: PoolConfig) -> tuple[list[str], list[str], list[str]]:
    """Names of the configured servers added, removed and changed (a server keeping its name but not its URL
    is one change, not an addition and a removal)."""
    old_by_url = {spec.url: spec for spec in old.servers}
    new_by_url = {spec.url: spec for spec in new.servers}
    gone = [spec for url, spec in old_by_url.items() if url not in new_by_url]
    came = [spec for url, spec in new_by_url.items() if url not in old_by_url]
    moved = {spec.name for spec in gone} & {spec.name for spec in came}
    changed = sorted(moved) + [
        spec.name for url, spec in new_by_url.items() if url in old_by_url and old_by_url[url] != spec
    ]
    added = [spec.name for spec in came if spec.name not in moved]
    removed = [spec.name for spec in gone if spec.name not in moved]
    return added, removed, changed


def _running_tables(running: Settings, new: Settings) -> dict[str, dict[str, Any]]:
    """The plugin tables the gateway runs with after the reload: the new pool keys, the old rest.

    Kept as the baseline of the next reload, so a change that still waits for a
    restart is reported again.
    """
    tables: dict[str, dict[str, Any]] = {}
    for name, table in running.plugins.items():
        fresh = new.plugins.get(name)
        if fresh is None or table.get("enabled", True) is False:
            tables[name] = table
            continue
        kept = {key: value for key, value in table.items() if key not in POOL_KEYS}
        tables[name] = {**kept, **{key: value for key, value in fresh.items() if key in POOL_KEYS}}
    return tables


async def _probe_new_servers(app: Sanic, plan: _Plan) -> None:
    """Probe the servers a reload adds before they join, so a dead one never gets a task."""
    engine = app.ctx.engine
    if not _serving(engine):
        return
    assert plan.gateway is not None
    for pool, _config, fresh in plan.pools:
        live_urls = {server.url for server in pool.servers}
        newcomers = [server for server in fresh.servers if server.url not in live_urls]
        if newcomers:
            await engine.monitor.probe(pool, newcomers, plan.gateway.probe_timeout_s)


def _apply(app: Sanic, plan: _Plan) -> None:
    """Make the plan true, all at once (nothing here awaits)."""
    engine = app.ctx.engine
    assert plan.gateway is not None and plan.settings is not None
    for pool, config, fresh in plan.pools:
        _apply_pool(engine, pool, config, fresh)
    for context in app.ctx.plugins:
        context.options.update(plan.options.get(context.name, {}))
    engine.apply_gateway(plan.gateway)
    # Sanic reads these when a connection opens: connections from now on use the new ones.
    app.config.REQUEST_TIMEOUT = plan.gateway.request_timeout_s
    app.config.KEEP_ALIVE_TIMEOUT = plan.gateway.keep_alive_timeout_s
    app.ctx.settings = plan.settings


def _apply_pool(engine: Any, pool: Pool, config: PoolConfig, fresh: Pool) -> None:
    """The pool's servers become the new file's (keeping the live state of those that stay) plus the
    servers edges advertised; its settings and runtime follow the new config."""
    previous = pool.config
    live = {server.url: server for server in pool.servers}
    servers: list[Server] = []
    for newcomer in fresh.servers:
        kept = live.get(newcomer.url)
        if kept is None:
            servers.append(newcomer)  # already probed by _probe_new_servers
            continue
        kept.name, kept.local = newcomer.name, newcomer.local
        servers.append(kept)
    configured = frozenset(server.url for server in servers)
    advertised = [server for server in pool.servers if server.url not in configured and not pool.is_configured(server)]
    servers += advertised
    if _scoring_changed(previous, config):
        for server in servers:
            _retune_server(server, config)
    pool.config = config
    pool.configured_urls = configured
    pool.servers = servers  # one assignment: the next choice sees the new list, a request in flight its old server

    runtime = engine.runtime[pool.name]
    if config.policy != previous.policy:
        runtime.policy = engine.policy_factories[config.policy](engine.rng)
    budget = (config.retry_budget, config.retry_min_per_s, config.retry_window_s)
    if budget != (previous.retry_budget, previous.retry_min_per_s, previous.retry_window_s):
        runtime.budget = RetryBudget(ratio=budget[0], min_per_s=budget[1], window_s=budget[2])


def _scoring_changed(old: PoolConfig, new: PoolConfig) -> bool:
    keys = ("eject_after", "eject_base_s", "eject_max_s", "decay_s", "failure_penalty_s", "timeout_s")
    return any(getattr(old, key) != getattr(new, key) for key in keys)


def _retune_server(server: Server, config: PoolConfig) -> None:
    """New ejection and scoring settings on a server that stays; what was observed of it stays too."""
    server.breaker.settings = BreakerSettings(config.eject_after, config.eject_base_s, config.eject_max_s)
    server.cost.decay_s = config.decay_s
    server.cost.penalty_s = config.failure_penalty_s or config.timeout_s


async def _load_changed_server_lists(app: Sanic, plan: _Plan) -> None:
    """A pool whose ``servers_url`` changed fetches its list now rather than at the next start."""
    engine = app.ctx.engine
    if not _serving(engine):
        return
    for pool, config, _fresh in plan.pools:
        if config.servers_url and f"{pool.name}.servers_url" in plan.report.settings:
            await engine.load_server_list(pool)


def _serving(engine: Any) -> bool:
    """Whether the engine has started (before that, its start probes and loads everything itself)."""
    try:
        engine.session  # noqa: B018 (raises RuntimeError before start and after close)
    except RuntimeError:
        return False
    return True


# -- signals -------------------------------------------------------------------------------------


def install_reload_signal(app: Sanic, settings_path: str, overrides: Iterable[tuple[str, object]] = ()) -> None:
    """Reload ``settings_path`` on ``SIGHUP`` in every process serving ``app``; never stop on one.

    A serving process (the only one, or each worker) reloads its own gateway. The
    main process of ``--workers N`` serves nothing: it forwards the signal to its
    server workers.
    """
    overrides = tuple(overrides)
    reloads: set[asyncio.Task[ReloadReport]] = set()

    def on_sighup() -> None:
        task = asyncio.get_running_loop().create_task(reload_config(app, settings_path, overrides))
        reloads.add(task)  # a reference, so the task is not collected half-way
        task.add_done_callback(reloads.discard)

    async def listen(app: Sanic) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)

    async def stop_listening(app: Sanic) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def forward_from_main(app: Sanic) -> None:
        def on_main_sighup(signum: int, frame: object) -> None:
            # Off the signal handler: logging there could re-enter a handler the interrupted code holds.
            threading.Thread(target=forward_sighup, args=(app,), name="offload-reload-forward", daemon=True).start()

        signal.signal(signal.SIGHUP, on_main_sighup)

    app.register_listener(listen, "before_server_start")
    app.register_listener(stop_listening, "before_server_stop")
    app.register_listener(forward_from_main, "main_process_start")


def forward_sighup(app: Sanic) -> list[int]:
    """Send ``SIGHUP`` to each server worker of ``app`` (run in the main process); returns their PIDs.

    A worker still starting ignores it (see :func:`hold_sighup`) and reads the
    file as it is when it builds its gateway.
    """
    from sanic.worker.process import WorkerProcess

    sent = []
    for process in list(app.manager.processes):
        if WorkerProcess.SERVER_LABEL not in process.name or not process.pid:
            continue  # Sanic's reloader or inspector, or not started
        try:
            os.kill(process.pid, signal.SIGHUP)
        except ProcessLookupError:  # ended meanwhile; Sanic restarts it with the file as it is now
            continue
        sent.append(process.pid)
    log.info("reload: SIGHUP forwarded to workers %s", ", ".join(map(str, sent)) or "(none running)")
    return sent


def hold_sighup() -> None:
    """Ignore ``SIGHUP`` until a reload handler is installed: during startup one must never end the server.

    Called by ``offload serve`` before it writes its pid file. Worker processes
    inherit the ignoring (it survives their exec) until their own handler replaces it.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


# -- finding the running gateway -------------------------------------------------------------------

PID_FILE_NAME = ".offload.pid"


def pid_file_path(given: str | None, settings_path: str | Path) -> Path:
    """``--pid-file``, else ``.offload.pid`` next to plugins.toml (``offload serve`` and ``reload`` agree on it)."""
    return Path(given) if given else Path(settings_path).resolve().parent / PID_FILE_NAME


def write_pid_file(path: Path, *, required: bool) -> None:
    """Write this process's PID to ``path`` and remove it at exit (if it is still ours).

    A default location that cannot be written is one warning (``offload reload``
    then needs ``--pid-file``); a path the operator gave is an error.
    """
    pid = os.getpid()
    try:
        _replace_atomically(path, f"{pid}\n")
    except OSError as exc:
        if required:
            raise ConfigError(f"cannot write the pid file {path}: {exc.strerror or exc}") from None
        log.warning("no pid file (%s: %s); offload reload will need --pid-file", path, exc.strerror or exc)
        return

    def remove() -> None:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="ascii").strip() == str(pid):  # not a newer gateway's
                path.unlink()

    atexit.register(remove)


def _replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a fresh file beside ``path``, then rename it over ``path``.

    ``offload reload`` (or a supervisor) may read the pid file the moment it
    appears; writing in place would let it see an empty or half-written file.
    The rename makes the whole content appear at once, and an older file stays
    whole until then.
    """
    fresh = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fresh.write_text(text, encoding="ascii")
        os.replace(fresh, path)
    except OSError:
        with contextlib.suppress(OSError):
            fresh.unlink()
        raise


def signal_gateway(path: Path) -> int:
    """Send ``SIGHUP`` to the ``offload serve`` whose PID ``path`` holds; returns the PID.

    Raises :class:`ConfigError` (one line) when there is no such file, no such
    process, or the process is not an ``offload`` gateway (a PID from a stale file
    may have been reused by anything; SIGHUP would end most programs).
    """
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise ConfigError(f"no pid file {path}: is offload serve running? (give --pid-file as serve had)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the pid file {path}: {exc.strerror or exc}") from None
    if not text.isdigit() or int(text) <= 1:
        raise ConfigError(f"pid file {path} does not hold a process id")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ConfigError(f"stale pid file {path}: no process {pid} (offload serve is not running)") from None
    except PermissionError:
        raise ConfigError(f"not allowed to signal process {pid} named by {path}") from None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        with contextlib.suppress(OSError):
            if b"offload" not in cmdline.read_bytes():
                raise ConfigError(f"stale pid file {path}: process {pid} is not offload serve")
    os.kill(pid, signal.SIGHUP)
    return pid
