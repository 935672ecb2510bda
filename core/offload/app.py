"""The Sanic app factory: plugins -> pools -> engine -> routes."""

from __future__ import annotations

import inspect
import itertools
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy
from sanic import Blueprint, Request, Sanic, response
from sanic.response import HTTPResponse

from .context import PluginContext
from .dashboard import install_dashboard
from .engine import Engine
from .errors import ConfigError
from .health import ProbeResult, probe_server
from .metrics.http import install_metrics
from .openapi import install_openapi
from .plugins import call_for_plugin, installed_plugins, load_enabled_plugins, new_plugin_manager
from .policies import BUILTIN_POLICIES, PolicyFactory
from .pool_config import PLUGIN_CORE_DEFAULTS, PoolConfig, pool_config_from_options
from .registry import Registry, Server
from .request_ids import install_request_ids
from .responses import JsonErrorHandler
from .routing import RouteClaims, blueprint_routes, join_path
from .security import READ, AccessGuard, install_access_guard, load_api_token
from .settings import Settings
from .state import open_state, state_kind, state_status

CORE_OWNER = "offload (built-in)"
_app_numbers = itertools.count(1)


def create_app(
    settings: Settings,
    *,
    extra_plugins: Mapping[str, Any] | None = None,
    name: str | None = None,
    rng: random.Random | None = None,
    workers: int = 1,
    api_token: str | None = None,
    bind_host: str | None = None,
) -> Sanic:
    """Build the gateway for ``settings``; raises :class:`ConfigError` for anything to fix.

    ``extra_plugins`` registers plugin objects directly by name (they must also be
    enabled in ``settings``); ``rng`` seeds the policies for reproducible choices;
    ``workers`` > 1 makes the local-throughput windows shared by all worker processes;
    ``api_token`` is the operator's token (default: ``$OFFLOAD_API_TOKEN``, else
    ``[gateway] api_token_file``); ``bind_host`` is the address served when it is
    not ``[gateway] host`` (it joins the Host allowlist).
    """
    gateway = settings.gateway
    token = api_token if api_token is not None else load_api_token(gateway.api_token_file, settings_dir(settings))
    manager = new_plugin_manager()
    enabled = settings.enabled_plugins()
    load_enabled_plugins(manager, enabled, source=settings.source, extra_plugins=extra_plugins)
    contexts = [plugin_context(manager, plugin, settings) for plugin in enabled]

    registry = Registry()
    for context in contexts:
        for pool_config in plugin_pools(manager, context):
            if pool_config.name in registry.pools:
                raise ConfigError(f"server pool {pool_config.name!r} is defined by more than one plugin")
            registry.add_pool(pool_config)
            context.pool_names.append(pool_config.name)
    kind = state_kind(gateway.state, workers)
    # Shared memory for several workers is made by the main process and attached in each worker (below).
    state = None if kind == "shared-memory" and workers > 1 else open_state(gateway, workers=workers)
    try:
        engine = Engine(registry, settings.gateway, policies=plugin_policies(manager, contexts), rng=rng, state=state)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for context in contexts:
        context.engine = engine
        attach_custom_probe(manager, context, engine)

    app = Sanic(name or f"offload_gateway_{next(_app_numbers)}", error_handler=JsonErrorHandler())
    app.config.MOTD = False
    # Installing sanic-ext must change nothing: no implicit routes, OPTIONS handlers or CORS answers.
    app.config.AUTO_EXTEND = False
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_TIMEOUT = gateway.request_timeout_s
    app.config.KEEP_ALIVE_TIMEOUT = gateway.keep_alive_timeout_s
    app.ctx.max_client_connections = gateway.max_client_connections
    app.ctx.settings = settings
    app.ctx.engine = engine
    app.ctx.registry = registry
    app.ctx.plugins = contexts
    app.ctx.plugin_manager = manager
    app.ctx.draining = False

    claims = RouteClaims()
    add_builtin_routes(app, claims)
    install_dashboard(app, claims, CORE_OWNER)  # GET /dashboard: a live page that polls /servers
    install_metrics(app, engine, claims, CORE_OWNER, workers)  # GET /metrics; counts every route
    install_openapi(app, claims, CORE_OWNER)  # GET /openapi.json (built from the routes) and GET /docs
    for context in contexts:
        mount_plugin_routes(app, manager, context, claims)
    if state is None:
        share_state_between_workers(app, engine)  # before the engine's own start listener
    add_lifecycle(app, manager, engine, contexts)
    guard = AccessGuard.build(
        token, bind_host or gateway.host, gateway.allowed_hosts, gateway.allowed_origins, gateway.max_body_bytes
    )
    install_access_guard(app, guard)
    install_request_ids(app)  # X-Request-ID in and out, upstream and in the logs
    return app


def settings_dir(settings: Settings) -> Path:
    """The directory of the plugins.toml ``settings`` came from (relative paths start there)."""
    source = Path(settings.source)
    return source.parent if source.is_file() else Path.cwd()


def share_state_between_workers(app: Sanic, engine: Engine) -> None:
    """One shared-memory state for all worker processes of this machine, not one per worker.

    The main process creates it before the workers start; each worker's engine
    then uses it, so the throughput rule counts the device as a whole, nonces
    come from one sequence per account, and one worker's ejection is every
    worker's.
    """
    from .state.shared_memory import SharedMemoryState

    async def create(app: Sanic) -> None:
        app.shared_ctx.offload_state = SharedMemoryState.create().handles()

    async def attach(app: Sanic) -> None:
        engine.use_state(SharedMemoryState.attach(app.shared_ctx.offload_state))

    app.register_listener(create, "main_process_start")
    # Registered before the engine's own start listener, so the engine starts with the shared state.
    app.register_listener(attach, "before_server_start")


def plugin_context(manager: pluggy.PluginManager, plugin: str, settings: Settings) -> PluginContext:
    """Merge core defaults, the plugin's defaults and the user's table; reject unknown keys."""
    defaults: dict[str, Any] = {}
    for declared in call_for_plugin(manager, plugin, "offload_default_settings"):
        defaults.update(declared)
    user = settings.plugins.get(plugin, {})
    known = set(PLUGIN_CORE_DEFAULTS) | set(defaults)
    unknown = sorted(set(user) - known)
    if unknown:
        raise ConfigError(
            f"[plugins.{plugin}] in {settings.source} has unknown settings {unknown}; "
            f"known settings: {', '.join(sorted(known))}"
        )
    options = {**PLUGIN_CORE_DEFAULTS, **defaults, **user}
    prefix = options["prefix"]
    if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
        raise ConfigError(f"[plugins.{plugin}] prefix must be '' or a path starting with /, got {prefix!r}")
    return PluginContext(name=plugin, options=options, source=settings.source)


def plugin_policies(manager: pluggy.PluginManager, contexts: list[PluginContext]) -> dict[str, PolicyFactory]:
    """Policies contributed by plugins; a name taken twice (or a built-in's) is an error naming both."""
    owners = {name: CORE_OWNER for name in BUILTIN_POLICIES}
    policies: dict[str, PolicyFactory] = {}
    for context in contexts:
        for declared in call_for_plugin(manager, context.name, "offload_policies"):
            for name, factory in declared.items():
                if name in owners:
                    raise ConfigError(
                        f"policy {name!r} is defined by both {owners[name]!r} and plugin {context.name!r}; rename one"
                    )
                owners[name] = f"plugin {context.name}"
                policies[name] = factory
    return policies


def plugin_pools(manager: pluggy.PluginManager, context: PluginContext) -> list[PoolConfig]:
    """The plugin's pools, or one pool named after it built from its options."""
    declared = call_for_plugin(manager, context.name, "offload_pools", plugin=context)
    if not declared:
        return [pool_config_from_options(context.name, context.where, context.options)]
    return [pool for pools in declared for pool in pools]


def attach_custom_probe(manager: pluggy.PluginManager, context: PluginContext, engine: Engine) -> None:
    """Route the health probes of the plugin's pools through its ``offload_probe`` hook, if it has one."""
    implementers = {impl.plugin_name for impl in manager.hook.offload_probe.get_hookimpls()}
    if context.name not in implementers:
        return

    async def probe(server: Server) -> ProbeResult:
        awaitables = call_for_plugin(manager, context.name, "offload_probe", plugin=context, server=server)
        if not awaitables:
            return await probe_server(engine.session, server, engine.gateway.probe_path, engine.gateway.probe_timeout_s)
        return await awaitables[0]

    for pool_name in context.pool_names:
        engine.probers[pool_name] = probe


def mount_plugin_routes(app: Sanic, manager: pluggy.PluginManager, context: PluginContext, claims: RouteClaims) -> None:
    """Register the plugin's blueprints under its prefix after checking for clashes."""
    blueprints: list[Blueprint] = []
    for declared in call_for_plugin(manager, context.name, "offload_routes", plugin=context):
        blueprints.extend(declared if isinstance(declared, list) else [declared])
    for blueprint in blueprints:
        if blueprint.name in app.blueprints:
            raise ConfigError(
                f"plugin {context.name!r} returns blueprint {blueprint.name!r}, a name already mounted; rename it"
            )
        for method, path in blueprint_routes(blueprint, context.prefix):
            claims.claim(f"plugin {context.name}", method, path)
        prefix = join_path(context.prefix, blueprint.url_prefix)
        app.blueprint(blueprint, url_prefix=None if prefix == "/" else prefix)


def add_builtin_routes(app: Sanic, claims: RouteClaims) -> None:
    """``/health``, ``/servers`` and ``/plugins``."""
    for path in ("/health", "/servers", "/plugins"):
        claims.claim(CORE_OWNER, "GET", path)

    async def health(request: Request) -> HTTPResponse:
        registry: Registry = request.app.ctx.registry
        engine: Engine = request.app.ctx.engine
        pools = {
            name: {"servers": len(pool), "available": sum(1 for s in pool.servers if s.available)}
            for name, pool in registry.pools.items()
        }
        state = state_status(engine.state)
        body = {"status": "ok", "pools": pools, "state": state, "worker_pid": os.getpid()}
        # The worker's PID tells, behind `offload serve --workers N`, which process answered.
        if request.app.ctx.draining:
            return response.json({**body, "status": "draining"}, status=503)
        if state["degraded_reason"]:
            # Still serving (reads and tasks run on local state), so still 200: balancers keep us.
            body["status"] = "degraded"
            body["warnings"] = [f"shared state unavailable, using local state: {state['degraded_reason']}"]
        return response.json(body)

    async def servers(request: Request) -> HTTPResponse:
        engine: Engine = request.app.ctx.engine
        pools = engine.registry.describe()
        for name, description in pools.items():
            description["throughput"] = await engine.throughput_now(name)
            description["counters"] = engine.counters(name)
            description["recent_decisions"] = engine.decisions.recent(name)  # newest first, bounded
            if name in engine.caches:
                description["cache"] = engine.caches[name].status()
        return response.json(
            {
                "pools": pools,
                "state": state_status(engine.state),
                "health_sharing": engine.health_sharing.status(),
                # {at, ok, summary, worker_pid} of the latest SIGHUP / `offload reload`, None before one.
                "last_reload": getattr(request.app.ctx, "last_reload", None),
            }
        )

    async def plugins(request: Request) -> HTTPResponse:
        enabled = {context.name: context for context in request.app.ctx.plugins}
        installed = [plugin.describe(plugin.name in enabled) for plugin in installed_plugins()]
        loaded = [
            {"name": context.name, "prefix": context.prefix or "/", "pools": context.pool_names}
            for context in enabled.values()
        ]
        return response.json({"installed": installed, "enabled": loaded})

    # Reads for every local caller (they reveal pool state, never the token or a key).
    app.add_route(health, "/health", methods=["GET"], name="offload_health", ctx_access=READ)
    app.add_route(servers, "/servers", methods=["GET"], name="offload_servers", ctx_access=READ)
    app.add_route(plugins, "/plugins", methods=["GET"], name="offload_plugins", ctx_access=READ)


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


def add_lifecycle(app: Sanic, manager: pluggy.PluginManager, engine: Engine, contexts: list[PluginContext]) -> None:
    """Start the engine and plugins with the server; drain and stop them with it."""

    async def start(app: Sanic) -> None:
        await engine.start()
        for context in contexts:
            for result in call_for_plugin(manager, context.name, "offload_startup", plugin=context):
                await _maybe_await(result)

    async def drain(app: Sanic) -> None:
        # /health answers 503 from now on, so balancers stop sending us work.
        app.ctx.draining = True
        for context in reversed(contexts):
            for result in call_for_plugin(manager, context.name, "offload_shutdown", plugin=context):
                await _maybe_await(result)

    async def stop(app: Sanic) -> None:
        await engine.close()

    app.register_listener(start, "before_server_start")
    app.register_listener(drain, "before_server_stop")
    app.register_listener(stop, "after_server_stop")
