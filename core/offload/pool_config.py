"""How a server pool is configured: its servers and how the engine decides among them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .addresses import DEFAULT_EDGE_PORT
from .settings import OptionReader, ServerSpec

POLICY_DEFAULT = "p2c_ewma"


@dataclass(frozen=True)
class PoolConfig:
    """One named pool of servers and its decision settings."""

    name: str
    servers: tuple[ServerSpec, ...] = ()
    # Fetched at startup, answering {"data": [addresses]} (the original /getserverlists).
    servers_url: str | None = None
    policy: str = POLICY_DEFAULT
    # The original rule: run locally while the local throughput <= expected_throughput.
    consider_throughput: bool = False
    expected_throughput: int = 25
    window_s: float = 1.0
    timeout_s: float = 10.0
    default_port: int = DEFAULT_EDGE_PORT
    # Skip servers whose probed height is more than this behind the pool's best (0: off).
    max_lag: int = 0
    # Peak-EWMA decay time (Finagle's tau).
    decay_s: float = 10.0
    # What one failure adds to a server's peak-EWMA cost, so a server that fails fast never looks
    # fast (Linkerd's lesson); 0: the pool's timeout_s, what a failure may cost a caller.
    failure_penalty_s: float = 0.0
    # Passive ejection: open a server's circuit after this many consecutive failures,
    # for eject_base_s x times ejected (at most eject_max_s), never ejecting more
    # than max_ejected_ratio of the pool.
    eject_after: int = 5
    eject_base_s: float = 30.0
    eject_max_s: float = 300.0
    max_ejected_ratio: float = 0.5
    # Idempotent tasks whose server fails are retried this many times on other servers,
    # within the request's timeout. Retries spend a budget: each request earns retry_budget
    # of a retry, the pool may always retry retry_min_per_s a second, and both expire after
    # retry_window_s (Finagle's rule).
    retries: int = 1
    retry_budget: float = 0.2
    retry_min_per_s: float = 10.0
    retry_window_s: float = 10.0
    # Hedging: after hedge_after_ms (0: the pool's observed p95) without an answer, send the
    # task to a second server too; the first answer wins, the other is cancelled.
    hedge: bool = False
    hedge_after_ms: float = 0.0
    # A server with requests in flight that answers nothing for stall_after_s is health-checked;
    # if the check fails too, its retryable requests move to other servers (0: off).
    stall_after_s: float = 0.5


# How a PoolConfig default is written in a plugins.toml table, where it differs (TOML has no None).
_TOML_DEFAULTS: dict[str, Any] = {"servers": [], "servers_url": ""}


def core_plugin_defaults() -> dict[str, Any]:
    """Every option the core understands in a ``[plugins.NAME]`` table, with its default.

    ``enabled`` and ``prefix``, then :class:`PoolConfig`'s fields: the defaults are
    written once, on the dataclass, and read from it here.
    """
    defaults: dict[str, Any] = {"enabled": True, "prefix": ""}
    for option in fields(PoolConfig):
        if option.name != "name":
            defaults[option.name] = _TOML_DEFAULTS.get(option.name, option.default)
    return defaults


# Merged under every plugin's own defaults and the user's table (see offload.app.plugin_context).
PLUGIN_CORE_DEFAULTS = core_plugin_defaults()


def pool_config_from_options(name: str, where: str, options: Mapping[str, Any]) -> PoolConfig:
    """Build a :class:`PoolConfig` from a plugin's merged options (core keys only).

    ``where`` names the table in error messages, e.g. ``"[plugins.math]"``.
    """
    reader = OptionReader(where, options)
    default_port = reader.integer("default_port", 1, 65535)
    servers_url = reader.string("servers_url").strip() or None
    if servers_url is not None and not servers_url.startswith(("http://", "https://")):
        raise reader.fail("servers_url", 'an http(s) URL answering {"data": [addresses]}')
    return PoolConfig(
        name=name,
        servers=tuple(reader.servers("servers", default_port)),
        servers_url=servers_url,
        policy=reader.string("policy"),
        consider_throughput=reader.boolean("consider_throughput"),
        expected_throughput=reader.integer("expected_throughput", 0),
        window_s=reader.positive_number("window_s"),
        timeout_s=reader.positive_number("timeout_s"),
        default_port=default_port,
        max_lag=reader.integer("max_lag", 0),
        decay_s=reader.positive_number("decay_s"),
        failure_penalty_s=reader.non_negative_number("failure_penalty_s"),
        eject_after=reader.integer("eject_after", 1),
        eject_base_s=reader.positive_number("eject_base_s"),
        eject_max_s=reader.positive_number("eject_max_s"),
        max_ejected_ratio=reader.fraction("max_ejected_ratio"),
        retries=reader.integer("retries", 0, 5),
        retry_budget=reader.fraction("retry_budget"),
        retry_min_per_s=reader.non_negative_number("retry_min_per_s"),
        retry_window_s=reader.positive_number("retry_window_s"),
        hedge=reader.boolean("hedge"),
        hedge_after_ms=reader.non_negative_number("hedge_after_ms"),
        stall_after_s=reader.non_negative_number("stall_after_s"),
    )
