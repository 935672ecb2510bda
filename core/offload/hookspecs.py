"""The plugin contract: every hook a plugin may implement.

A plugin is any importable object (usually a module) with functions marked
``@hookimpl`` whose names and arguments match the stubs below. It is found
through the entry-point group ``offload`` and loaded only when plugins.toml
has an enabled ``[plugins.NAME]`` table for it.

Hooks that describe one plugin (settings, pools, routes, startup, shutdown) are
called for each enabled plugin on its own, with that plugin's
:class:`offload.PluginContext`; a plugin never sees another's.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from sanic import Blueprint

    from .context import PluginContext
    from .health import ProbeResult
    from .policies import PolicyFactory
    from .pool_config import PoolConfig
    from .registry import Server

PROJECT_NAME = "offload"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def offload_default_settings() -> dict[str, Any]:  # type: ignore[empty-body]
    """Return the plugin's default options.

    Called once at startup, before anything else of the plugin. The user's
    ``[plugins.NAME]`` table is merged over these defaults. Besides its own keys
    a plugin may set defaults for the keys the core understands: ``enabled``,
    ``prefix`` and every field of :class:`offload.PoolConfig`
    (``servers``, ``policy``, ``timeout_s``, ``retries``, ``hedge``, ...; the
    full list with defaults is ``offload.pool_config.PLUGIN_CORE_DEFAULTS``).
    A key in the user's table that is neither is a startup error, so typos
    are caught rather than silently ignored.
    """


@hookspec
def offload_pools(plugin: PluginContext) -> list[PoolConfig] | None:  # type: ignore[empty-body]
    """Return the server pools the plugin needs.

    Called once at startup with the merged options in ``plugin.options``.
    A plugin that does not implement this hook gets one pool named after
    itself, built from its options (see
    :func:`offload.pool_config.pool_config_from_options`). Raise
    :class:`offload.ConfigError` for a bad option; its message is shown as is.
    """


@hookspec
def offload_routes(plugin: PluginContext) -> Blueprint | list[Blueprint] | None:  # type: ignore[empty-body]
    """Return a Sanic Blueprint (or several) with the plugin's routes.

    Build a new Blueprint on every call: one process may create several apps.
    The gateway mounts it under the plugin's ``prefix`` option. Handlers run a
    task with ``await plugin.offload(Task(...), server=...)`` and answer with
    :func:`offload.envelope_response`. Two plugins claiming the same
    method and path stop startup with an error naming both.

    Every route states who may call it when it is added: ``ctx_access=READ``
    (any local caller) or ``ctx_access=OPERATOR`` (the operator's token), from
    ``offload``; without it a GET/HEAD route is READ and any other method
    OPERATOR. A route that only learns per request whether it changes state is
    READ and calls ``offload.require_operator(request)`` when it does.
    ``ctx_max_body=N`` sets the route's body limit in bytes.
    """


@hookspec
def offload_policies() -> dict[str, PolicyFactory] | None:  # type: ignore[empty-body]
    """Return extra server-selection policies, by name.

    Called once at startup for every enabled plugin. Each value is a factory
    taking a ``random.Random`` (seeded, for reproducible choices) and returning
    an object with a ``name`` and ``choose(candidates) -> Server`` (see
    :class:`offload.Policy`). Pools select one by name with
    ``policy = "..."`` in plugins.toml; a name that is already taken is a
    startup error naming both.
    """


@hookspec(firstresult=True)
def offload_probe(plugin: PluginContext, server: Server) -> Awaitable[ProbeResult] | None:  # type: ignore[empty-body]
    """Return an awaitable that health-checks ``server`` of one of the plugin's pools.

    Called for every server of the plugin's pools on each probe round (every
    ``[gateway] probe_interval_s``), bounded by ``probe_timeout_s``. Return
    ``None`` to use the default probe (HTTP GET of ``[gateway] probe_path``). The
    awaitable returns a :class:`offload.ProbeResult`; set its ``height``
    (e.g. the latest block) so the pool's ``max_lag`` can skip servers that lag.
    Use ``plugin.engine.session`` for HTTP; an exception counts as a failed probe.
    """


@hookspec
def offload_startup(plugin: PluginContext) -> Awaitable[None] | None:  # type: ignore[empty-body]
    """Called when the gateway starts, after the engine is up; may return an awaitable.

    Raise :class:`offload.ConfigError` to refuse to start (e.g. an unreachable
    required resource); the message is shown as one line.
    """


@hookspec
def offload_shutdown(plugin: PluginContext) -> Awaitable[None] | None:  # type: ignore[empty-body]
    """Called when the gateway stops, before the engine closes; may return an awaitable.

    ``/health`` already answers 503 ("draining") at this point. Release what
    ``offload_startup`` acquired (connections, files, background tasks); the
    engine's HTTP session is still open, so a final call upstream still works.
    """
