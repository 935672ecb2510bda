"""task-offloading: a plugin-based gateway that runs each task where it finishes best.

The names below are the public API: what a plugin, and its tests, may import,
always from ``offload`` itself (``from offload import Task, hookimpl``). Every
submodule (``offload.engine``, ``offload.health``, ...) is internal and may
change without notice.

Writing hooks:

* ``hookimpl``: marks a plugin's functions as hook implementations (the hooks are in ``offload.hookspecs``).
* ``PluginContext``: one enabled plugin as the gateway sees it, handed to its hooks.
* ``PoolConfig``: one named pool of servers, as returned by ``offload_pools``.
* ``OptionReader``: typed, error-naming access to a plugin's options (a TOML table).
* ``Server``: a server of a pool, as handed to ``offload_probe`` and to policies.
* ``Policy``: what a policy factory from ``offload_policies`` returns (``name``, ``choose(candidates)``).
* ``ProbeResult``: what an ``offload_probe`` awaitable returns.
* ``parse_server_list``: validate a ``{"data": [addresses]}`` server list.
* ``describe_exception``: a short description of a client-side failure (for a ``ProbeResult.error``).

Running tasks and answering:

* ``Task``: an HTTP call to make on whichever server the engine picks.
* ``OffloadResult``: a task's answer and how it was obtained.
* ``envelope_response``: an ``OffloadResult`` as the gateway's JSON response.
* ``SERVER_HEADER``: the response header naming the server that answered (``X-Offload-Server``).
* ``CACHE_HEADER``: the response header saying how a cacheable answer was obtained (``X-Offload-Cache``:
  ``hit``, ``coalesced`` or ``miss``).
* ``ReadCache``: a pool's read cache with request coalescing (``PluginContext.read_cache()``).
* ``Fresh``: what a ``ReadCache.load`` producer returns: the answer, and what of it to keep for how long.
* ``load_json``: ``json.loads`` for untrusted bytes or text: standard JSON only, nesting depth-checked
  first (a ``ValueError`` for anything else); see ``offload.safe_json.loads``.

Access and errors:

* ``READ``: a route's ``ctx_access`` for any local caller.
* ``OPERATOR``: a route's ``ctx_access`` that needs the operator's token.
* ``require_operator``: refuse a request, once a route knows it changes state, unless the operator's token came.
* ``OffloadError``: a task could not be answered; rendered as a JSON error with its ``status``.
* ``ConfigError``: configuration or plugin setup is wrong; the message says what to fix.

Shared state (``PluginContext.state``, the same for every worker and replica of a gateway):

* ``StateBackend``: what it offers: windowed counters, nonce leases, health verdicts, a cache.
* ``NonceLease``: exclusive hold of one account's nonce sequence (``state.nonce_lease(account, hold_s)``).
* ``StateUnavailable``: the shared store cannot be reached (a 503 naming why).

Building a gateway (e.g. in a plugin's tests, with the pytest fixtures ``offload_client``
and ``offload_server`` this package installs):

* ``parse_settings``: settings from a parsed plugins.toml document (a dict).
* ``create_app``: the gateway's Sanic app for those settings.

The names whose modules take a while to import (aiohttp, the engine) are loaded on
first use, so ``import offload`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .context import PluginContext
from .errors import ConfigError, OffloadError
from .hookspecs import hookimpl
from .responses import CACHE_HEADER, SERVER_HEADER, envelope_response
from .safe_json import loads as load_json
from .security import OPERATOR, READ, require_operator
from .tasks import OffloadResult, Task

if TYPE_CHECKING:
    from .app import create_app
    from .cache import Fresh, ReadCache
    from .health import ProbeResult, describe_exception, parse_server_list
    from .policies import Policy
    from .pool_config import PoolConfig
    from .registry import Server
    from .settings import OptionReader, parse_settings
    from .state import NonceLease, StateBackend, StateUnavailable

__all__ = [
    "CACHE_HEADER",
    "OPERATOR",
    "READ",
    "SERVER_HEADER",
    "ConfigError",
    "Fresh",
    "NonceLease",
    "OffloadError",
    "OffloadResult",
    "OptionReader",
    "PluginContext",
    "Policy",
    "PoolConfig",
    "ProbeResult",
    "ReadCache",
    "Server",
    "StateBackend",
    "StateUnavailable",
    "Task",
    "create_app",
    "describe_exception",
    "envelope_response",
    "hookimpl",
    "load_json",
    "parse_server_list",
    "parse_settings",
    "require_operator",
]
__version__ = "0.1.0"

# Public names imported on first access (PEP 562): their modules pull in aiohttp or the engine.
_LAZY: dict[str, str] = {
    "Fresh": ".cache",
    "ReadCache": ".cache",
    "OptionReader": ".settings",
    "Policy": ".policies",
    "PoolConfig": ".pool_config",
    "ProbeResult": ".health",
    "Server": ".registry",
    "StateBackend": ".state",
    "StateUnavailable": ".state",
    "NonceLease": ".state",
    "create_app": ".app",
    "describe_exception": ".health",
    "parse_server_list": ".health",
    "parse_settings": ".settings",
}


def __getattr__(name: str) -> Any:
    """Import a public name whose module is loaded on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported public ones included."""
    return sorted(set(globals()) | set(__all__))
