"""Finding plugins (entry points, group ``offload``) and loading the enabled ones."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError

ENTRY_POINT_GROUP = "offload"
# Comma-separated allowlist: only these installed plugins may be loaded.
LOAD_ALLOWLIST_ENV = "OFFLOAD_LOAD_PLUGINS"
# Any non-empty value prints every hook call and its result to stderr.
TRACE_ENV = "OFFLOAD_TRACE_HOOKS"


@dataclass(frozen=True)
class InstalledPlugin:
    """A plugin found through its entry point."""

    name: str
    target: str  # "module" or "module:attribute"
    distribution: str | None
    version: str | None

    def describe(self, enabled: bool) -> dict[str, object]:
        """JSON-ready row for ``offload plugins`` and ``GET /plugins``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "target": self.target,
            "enabled": enabled,
        }


def installed_entry_points() -> dict[str, EntryPoint]:
    """Entry points of group ``offload``, by plugin name."""
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def installed_plugins() -> list[InstalledPlugin]:
    """Every installed plugin with the distribution that provides it."""
    found = []
    for name, entry in sorted(installed_entry_points().items()):
        dist = entry.dist
        found.append(
            InstalledPlugin(
                name=name,
                target=entry.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
        )
    return found


def load_allowlist() -> set[str] | None:
    """Plugin names allowed by ``OFFLOAD_LOAD_PLUGINS``, or None when unset."""
    raw = os.environ.get(LOAD_ALLOWLIST_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows the offload hook specifications."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        manager.trace.root.setwriter(sys.stderr.write)
        manager.enable_tracing()
    return manager


def load_enabled_plugins(
    manager: pluggy.PluginManager,
    enabled: list[str],
    *,
    source: str,
    extra_plugins: Mapping[str, Any] | None = None,
) -> None:
    """Register every enabled plugin, or raise :class:`ConfigError` saying what to fix.

    ``extra_plugins`` maps names to plugin objects registered directly, without
    entry points (tests, embedding); they take precedence over installed ones.
    """
    extra = dict(extra_plugins or {})
    available = installed_entry_points()
    allowed = load_allowlist()
    for name in enabled:
        if name in extra:
            plugin: Any = extra[name]
        else:
            if allowed is not None and name not in allowed:
                raise ConfigError(f"plugin {name!r} is enabled in {source} but {LOAD_ALLOWLIST_ENV} does not list it")
            entry = available.get(name)
            if entry is None:
                known = ", ".join(sorted(available)) or "none"
                raise ConfigError(
                    f"plugin {name!r} is enabled in {source} but not installed (installed: {known}); "
                    f"pip install it or set [plugins.{name}] enabled = false"
                )
            try:
                plugin = entry.load()
            except Exception as exc:  # any import failure must become one clear line
                raise ConfigError(f"plugin {name!r} ({entry.value}) failed to import: {exc}") from None
        try:
            manager.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise ConfigError(f"plugin {name!r} cannot be registered: {exc}") from None
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        culprit = manager.get_name(exc.plugin) or repr(exc.plugin)
        raise ConfigError(f"plugin {culprit!r} implements an unknown hook: {exc}") from None


def call_for_plugin(manager: pluggy.PluginManager, plugin_name: str, hook_name: str, **kwargs: Any) -> list[Any]:
    """Call one hook on one plugin only, returning its (possibly empty) results."""
    others = [plugin for name, plugin in manager.list_name_plugin() if name != plugin_name]
    caller = manager.subset_hook_caller(hook_name, remove_plugins=others)
    outcome = caller(**kwargs)
    if caller.spec is not None and caller.spec.opts.get("firstresult"):
        return [] if outcome is None else [outcome]
    return [result for result in outcome if result is not None]
