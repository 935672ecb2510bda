"""plugins.toml -> typed settings, with one clear line for anything wrong.

Layout of the file::

    [gateway]                 # optional; the gateway's own settings
    host = "127.0.0.1"
    port = 8899

    [plugins.math]            # a table per plugin; present + enabled = loaded
    enabled = true
    prefix = ""
    servers = [{ name = "local", url = "http://127.0.0.1:5000", local = true }]

Everything under ``[plugins.NAME]`` is that plugin's options: the keys the
core understands (``offload.pool_config.PLUGIN_CORE_DEFAULTS``) plus the keys the
plugin declares through its ``offload_default_settings`` hook.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .addresses import normalize_url
from .advertised import DEFAULT_NETWORKS, DEFAULT_PORTS, parse_networks, parse_ports
from .errors import ConfigError

GATEWAY_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8899,
    "probe_interval_s": 5.0,
    "probe_timeout_s": 1.0,
    "probe_path": "/health",
    "max_connections": 256,
    "upstream_client": "native",
    # Who may call (see offload.security and docs/security.md).
    "api_token_file": "",
    "allowed_hosts": [],
    "allowed_origins": [],
    # Limits on callers: body size, time to send a request, idle keep-alive, open connections.
    "max_body_bytes": 1_048_576,
    "request_timeout_s": 10.0,
    "keep_alive_timeout_s": 15.0,
    "max_client_connections": 512,
    # Limit on upstreams: the largest answer read from an edge or node.
    "max_response_bytes": 16_777_216,
    "max_response_header_bytes": 65_536,
    # Where servers advertised by edges (not the operator's own) may be: IP networks and ports.
    "advertised_networks": list(DEFAULT_NETWORKS),
    "advertised_ports": list(DEFAULT_PORTS),
    # What the gateway's processes share (see offload.state and docs/deploy.md).
    "state": "auto",
    "state_timeout_ms": 100,
    "state_required": True,
    "device": "default",
    "replica": "",
    # Each caching pool's read cache in this process (see offload.cache): at most this many
    # entries and bytes; with a shared state the entries are shared too.
    "cache_max_entries": 10_000,
    "cache_max_bytes": 67_108_864,
}
# The clients tasks can be sent with (see offload.transports).
UPSTREAM_CLIENTS = ("native", "aiohttp")


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's own settings (``[gateway]`` table)."""

    host: str = GATEWAY_DEFAULTS["host"]
    port: int = GATEWAY_DEFAULTS["port"]
    probe_interval_s: float = GATEWAY_DEFAULTS["probe_interval_s"]
    probe_timeout_s: float = GATEWAY_DEFAULTS["probe_timeout_s"]
    probe_path: str = GATEWAY_DEFAULTS["probe_path"]
    max_connections: int = GATEWAY_DEFAULTS["max_connections"]
    # "native" (lean HTTP/1.1 keep-alive client; https goes through aiohttp) or "aiohttp" for every task.
    upstream_client: str = GATEWAY_DEFAULTS["upstream_client"]
    # A file holding the operator's token ($OFFLOAD_API_TOKEN wins); relative to plugins.toml.
    api_token_file: str = GATEWAY_DEFAULTS["api_token_file"]
    # Host names (besides loopback and the bind address) and browser origins allowed to call.
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = GATEWAY_DEFAULTS["max_body_bytes"]
    request_timeout_s: float = GATEWAY_DEFAULTS["request_timeout_s"]
    keep_alive_timeout_s: float = GATEWAY_DEFAULTS["keep_alive_timeout_s"]
    max_client_connections: int = GATEWAY_DEFAULTS["max_client_connections"]
    max_response_bytes: int = GATEWAY_DEFAULTS["max_response_bytes"]
    max_response_header_bytes: int = GATEWAY_DEFAULTS["max_response_header_bytes"]
    advertised_networks: tuple[str, ...] = DEFAULT_NETWORKS
    advertised_ports: tuple[str, ...] = DEFAULT_PORTS
    # "auto" (memory for one worker, shared memory for more), "memory", "shared-memory",
    # or a redis://, rediss:// or unix:// URL shared by every replica.
    state: str = GATEWAY_DEFAULTS["state"]
    # How long one operation on a shared store may take before the gateway uses local state instead.
    state_timeout_ms: int = GATEWAY_DEFAULTS["state_timeout_ms"]
    # Whether an unreachable store stops startup (exit 2) rather than starting degraded.
    state_required: bool = GATEWAY_DEFAULTS["state_required"]
    # The device whose local server the throughput rule protects: processes naming the same
    # device share one window per pool.
    device: str = GATEWAY_DEFAULTS["device"]
    # This process's name in shared health verdicts ("" = hostname/pid).
    replica: str = GATEWAY_DEFAULTS["replica"]
    # Bounds of each caching pool's read cache in one process.
    cache_max_entries: int = GATEWAY_DEFAULTS["cache_max_entries"]
    cache_max_bytes: int = GATEWAY_DEFAULTS["cache_max_bytes"]


@dataclass(frozen=True)
class Settings:
    """Everything read from plugins.toml."""

    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    # Raw option tables per plugin name, in file order; merged with defaults later.
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<defaults>"

    def enabled_plugins(self) -> list[str]:
        """Names of plugins whose table is present and not ``enabled = false``."""
        return [name for name, table in self.plugins.items() if table.get("enabled", True) is not False]


@dataclass(frozen=True)
class ServerSpec:
    """A configured server: a name, a base URL, and whether it is the device itself."""

    name: str
    url: str
    local: bool = False


class OptionReader:
    """Typed access to one TOML table; every failure names the table and key."""

    def __init__(self, where: str, table: Mapping[str, Any]) -> None:
        self.where = where
        self.table = table

    def fail(self, key: str, expected: str) -> ConfigError:
        value = self.table.get(key)
        return ConfigError(f"{self.where} {key} must be {expected}, got {value!r}")

    def boolean(self, key: str) -> bool:
        value = self.table[key]
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def string(self, key: str) -> str:
        value = self.table[key]
        if not isinstance(value, str):
            raise self.fail(key, "a string")
        return value

    def name(self, key: str, *, allow_empty: bool = False) -> str:
        """A short identifier: letters, digits and ``._:/-``, at most 64 characters."""
        value = self.table[key]
        if (
            not isinstance(value, str)
            or len(value) > 64
            or (not value and not allow_empty)
            or not all(char.isascii() and (char.isalnum() or char in "._:/-") for char in value)
        ):
            raise self.fail(key, "a name of at most 64 letters, digits and ._:/-")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.table[key]
        if value not in allowed:
            raise self.fail(key, "one of " + ", ".join(f'"{option}"' for option in allowed))
        return str(value)

    def integer(self, key: str, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.table[key]
        in_range = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if not in_range or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise self.fail(key, f"an integer of at least {minimum}{upper}")
        return int(value)

    def positive_number(self, key: str) -> float:
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise self.fail(key, "a positive number")
        return float(value)

    def non_negative_number(self, key: str) -> float:
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise self.fail(key, "a number of at least 0")
        return float(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.table[key]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.fail(key, "a list of non-empty strings")
        return tuple(value)

    def checked_list(self, key: str, check: Callable[[list[Any]], object], expected: str) -> tuple[str, ...]:
        """A list whose entries ``check`` accepts (raising ``ValueError`` naming the bad one), as strings."""
        value = self.table[key]
        if not isinstance(value, list) or not all(isinstance(item, str | int) for item in value):
            raise self.fail(key, expected)
        try:
            check(value)
        except ValueError as exc:
            raise ConfigError(f"{self.where} {key}: {exc}") from None
        return tuple(str(item) for item in value)

    def fraction(self, key: str) -> float:
        value = self.non_negative_number(key)
        if value > 1:
            raise self.fail(key, "a fraction from 0 to 1")
        return value

    def servers(self, key: str, default_port: int) -> list[ServerSpec]:
        """A list of ``"host:port"`` strings or ``{name, url, local}`` tables."""
        value = self.table[key]
        if not isinstance(value, list):
            raise self.fail(key, 'a list of addresses or {name = "...", url = "..."} tables')
        specs: list[ServerSpec] = []
        for index, item in enumerate(value):
            item_where = f"{self.where} {key}[{index}]"
            if isinstance(item, str):
                item = {"url": item}
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                raise ConfigError(f"{item_where} must be an address or a table with a url, got {item!r}")
            unknown = set(item) - {"name", "url", "local"}
            if unknown:
                raise ConfigError(f"{item_where} has unknown keys {sorted(unknown)}; allowed: name, url, local")
            try:
                url = normalize_url(item["url"], default_port)
            except ValueError as exc:
                raise ConfigError(f"{item_where}: {exc}") from None
            name = item.get("name", url.split("://", 1)[1])
            local = item.get("local", False)
            if not isinstance(name, str) or not name or not isinstance(local, bool):
                raise ConfigError(f"{item_where} name must be a non-empty string and local true or false")
            specs.append(ServerSpec(name=name, url=url, local=local))
        names = [spec.name for spec in specs]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ConfigError(f"{self.where} {key} names {duplicated} more than once; server names must be unique")
        return specs


def parse_gateway(table: Mapping[str, Any], where: str = "[gateway]") -> GatewaySettings:
    """Validate the ``[gateway]`` table."""
    unknown = set(table) - set(GATEWAY_DEFAULTS)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {', '.join(GATEWAY_DEFAULTS)}")
    reader = OptionReader(where, {**GATEWAY_DEFAULTS, **table})
    probe_path = reader.string("probe_path")
    if not probe_path.startswith("/"):
        raise reader.fail("probe_path", "a path starting with /")
    return GatewaySettings(
        host=reader.string("host"),
        port=reader.integer("port", 0, 65535),
        probe_interval_s=reader.positive_number("probe_interval_s"),
        probe_timeout_s=reader.positive_number("probe_timeout_s"),
        probe_path=probe_path,
        max_connections=reader.integer("max_connections", 1),
        upstream_client=reader.choice("upstream_client", UPSTREAM_CLIENTS),
        api_token_file=reader.string("api_token_file"),
        allowed_hosts=reader.strings("allowed_hosts"),
        allowed_origins=reader.strings("allowed_origins"),
        max_body_bytes=reader.integer("max_body_bytes", 0, 1 << 30),
        request_timeout_s=reader.positive_number("request_timeout_s"),
        keep_alive_timeout_s=reader.positive_number("keep_alive_timeout_s"),
        max_client_connections=reader.integer("max_client_connections", 1, 1_000_000),
        max_response_bytes=reader.integer("max_response_bytes", 1024, 1 << 31),
        max_response_header_bytes=reader.integer("max_response_header_bytes", 1024, 1 << 24),
        advertised_networks=reader.checked_list("advertised_networks", parse_networks, "a list of networks"),
        advertised_ports=reader.checked_list("advertised_ports", parse_ports, "a list of ports or port ranges"),
        state=parse_state(reader),
        state_timeout_ms=reader.integer("state_timeout_ms", 1, 60_000),
        state_required=reader.boolean("state_required"),
        device=reader.name("device"),
        replica=reader.name("replica", allow_empty=True),
        cache_max_entries=reader.integer("cache_max_entries", 1, 10_000_000),
        cache_max_bytes=reader.integer("cache_max_bytes", 1024, 1 << 34),
    )


# Where shared state may live: a keyword, or the URL of a Redis-compatible store.
STATE_KEYWORDS = ("auto", "memory", "shared-memory")
STATE_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def parse_state(reader: OptionReader) -> str:
    """``[gateway] state``: a keyword or a Redis URL (checked for form here, for reachability at startup)."""
    value = reader.string("state")
    if value in STATE_KEYWORDS:
        return value
    if value.startswith(STATE_URL_SCHEMES) and len(value) <= 2048:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError for a port out of range)
        except ValueError:
            # Never echo the URL: it may hold a password.
            raise ConfigError("[gateway] state is not a valid URL (check its port)") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError("[gateway] state must name a host, as in redis://127.0.0.1:6379/0")
        return value
    raise ConfigError(
        "[gateway] state must be one of "
        + ", ".join(f'"{keyword}"' for keyword in STATE_KEYWORDS)
        + " or a redis://, rediss:// or unix:// URL"
    )


def parse_settings(document: Mapping[str, Any], source: str = "<memory>") -> Settings:
    """Validate a parsed plugins.toml document."""
    unknown = set(document) - {"gateway", "plugins"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level tables {sorted(unknown)}; allowed: gateway, plugins")
    gateway_table = document.get("gateway", {})
    plugins_table = document.get("plugins", {})
    if not isinstance(gateway_table, dict):
        raise ConfigError(f"{source}: [gateway] must be a table")
    if not isinstance(plugins_table, dict):
        raise ConfigError(f"{source}: [plugins] must be a table of [plugins.NAME] tables")
    plugins: dict[str, dict[str, Any]] = {}
    for name, table in plugins_table.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: plugins.{name} must be a table ([plugins.{name}])")
        if not isinstance(table.get("enabled", True), bool):
            raise ConfigError(f"{source}: [plugins.{name}] enabled must be true or false")
        plugins[name] = dict(table)
    return Settings(gateway=parse_gateway(gateway_table), plugins=plugins, source=source)


def load_settings(path: str | Path, gateway_overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read and validate plugins.toml; raises :class:`ConfigError` with one line.

    ``gateway_overrides`` replace ``[gateway]`` keys (command-line options) and
    are validated like the file's own.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file; pass --config PATH to a plugins.toml") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    if gateway_overrides:
        gateway_table = document.setdefault("gateway", {})
        if isinstance(gateway_table, dict):
            gateway_table.update(gateway_overrides)
    return parse_settings(document, source=str(file))
