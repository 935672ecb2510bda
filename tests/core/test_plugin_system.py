"""The plugin contract: hooks per plugin, route clashes, startup/shutdown, built-in routes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from offload import ConfigError, Task, hookimpl, hookspecs
from offload.app import create_app
from offload.context import PluginContext
from offload.health import ProbeResult
from offload.pool_config import PoolConfig
from offload.registry import Server
from offload.settings import parse_settings

from conftest import EdgeFactory, GatewayFactory, servers_table


class PluginObject:
    """A plugin built from functions, as a module would be (hashable, unlike SimpleNamespace)."""

    def __init__(self, **members: Any) -> None:
        self.__dict__.update(members)


def make_plugin(route: str = "/ping", **defaults: Any) -> PluginObject:
    """A plugin object registered directly, as third-party tests do (no entry point)."""
    calls: list[str] = []

    @hookimpl
    def offload_default_settings() -> dict[str, Any]:
        return dict(defaults)

    @hookimpl
    def offload_routes(plugin: PluginContext) -> Blueprint:
        blueprint = Blueprint(f"bp_{plugin.name}_{id(plugin)}")

        @blueprint.get(route)
        async def handler(request: Request) -> HTTPResponse:
            result = await plugin.offload(Task("/hello"))
            return response.json({"plugin": plugin.name, "options": plugin.options.get("colour"), **result.envelope()})

        return blueprint

    @hookimpl
    async def offload_startup(plugin: PluginContext) -> None:
        calls.append(f"startup {plugin.name} pools={plugin.pool_names}")

    @hookimpl
    def offload_shutdown(plugin: PluginContext) -> None:
        calls.append(f"shutdown {plugin.name}")

    return PluginObject(
        offload_default_settings=offload_default_settings,
        offload_routes=offload_routes,
        offload_startup=offload_startup,
        offload_shutdown=offload_shutdown,
        calls=calls,
    )


def test_every_hook_is_documented() -> None:
    hooks = [name for name in dir(hookspecs) if name.startswith("offload_")]
    assert hooks == [
        "offload_default_settings",
        "offload_policies",
        "offload_pools",
        "offload_probe",
        "offload_routes",
        "offload_shutdown",
        "offload_startup",
    ]
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.split()) > 15, f"{name} needs a docstring saying when it is called and what it returns"


async def test_hook_offload_default_settings_each_plugin_sees_only_its_own_options(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    remote = await edge("edge1")
    red, blue = make_plugin(colour="red"), make_plugin(colour="?")
    servers = servers_table(("edge1", remote))
    document = {
        "plugins": {
            "red": {"prefix": "/red", "servers": servers},
            "blue": {"prefix": "/blue", "servers": servers, "colour": "blue"},
        }
    }
    gw = await gateway(document, extra_plugins={"red": red, "blue": blue})
    status, body, _ = await gw.get_json("/red/ping")
    assert (status, body["plugin"], body["options"], body["data"]) == (200, "red", "red", "world")
    status, body, _ = await gw.get_json("/blue/ping")
    assert (status, body["plugin"], body["options"]) == (200, "blue", "blue")
    assert red.calls == ["startup red pools=['red']"]
    assert blue.calls == ["startup blue pools=['blue']"]


async def test_hook_offload_routes_mount_under_the_plugins_prefix(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    remote = await edge("edge1")
    document = {"plugins": {"red": {"prefix": "/red", "servers": servers_table(("edge1", remote))}}}
    gw = await gateway(document, extra_plugins={"red": make_plugin(route="/ping")})
    assert (await gw.get_json("/red/ping"))[0] == 200
    async with gw.client.get("/ping") as outside_the_prefix:
        assert outside_the_prefix.status == 404


async def test_hook_offload_startup_runs_once_knowing_the_plugins_pools(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    remote = await edge("edge1")
    plugin = make_plugin()
    document = {"plugins": {"green": {"servers": servers_table(("edge1", remote))}}}
    await gateway(document, extra_plugins={"green": plugin})
    assert plugin.calls == ["startup green pools=['green']"]


def test_every_hook_has_a_test_of_its_own() -> None:
    hooks = [name for name in dir(hookspecs) if name.startswith("offload_")]
    tests = [name for name in globals() if name.startswith("test_hook_")]
    untested = [hook for hook in hooks if not any(test.startswith(f"test_hook_{hook}_") for test in tests)]
    assert untested == [], f"every hook needs a test named test_hook_<hook>_...: {untested}"


async def test_hook_offload_shutdown_runs_and_health_drains(edge: EdgeFactory) -> None:
    from offload.testing import serve_app

    remote = await edge("edge1")
    plugin = make_plugin()
    settings = parse_settings({"plugins": {"p": {"servers": servers_table(("edge1", remote))}}})
    app = create_app(settings, extra_plugins={"p": plugin})
    async with serve_app(app):
        assert app.ctx.draining is False
    assert plugin.calls[-1] == "shutdown p"
    assert app.ctx.draining is True


def test_two_plugins_claiming_one_route_name_both() -> None:
    settings = parse_settings({"plugins": {"first": {}, "second": {}}})
    with pytest.raises(ConfigError) as caught:
        create_app(settings, extra_plugins={"first": make_plugin("/same/<x>"), "second": make_plugin("/same/<y>")})
    message = str(caught.value)
    assert "route GET /same/<y> is claimed by both 'plugin first'" in message
    assert "'plugin second'" in message


def test_a_plugin_may_not_take_a_built_in_route() -> None:
    settings = parse_settings({"plugins": {"p": {}}})
    with pytest.raises(ConfigError, match="route GET /health is claimed by both 'offload \\(built-in\\)'"):
        create_app(settings, extra_plugins={"p": make_plugin("/health")})


def test_a_misspelt_hook_is_an_error_not_silence() -> None:
    @hookimpl
    def offload_route(plugin: PluginContext) -> None:  # missing the final "s"
        return None

    settings = parse_settings({"plugins": {"typo": {}}})
    with pytest.raises(ConfigError, match="unknown hook"):
        create_app(settings, extra_plugins={"typo": PluginObject(offload_route=offload_route)})


def test_hook_offload_pools_declares_a_plugins_own_pools() -> None:
    @hookimpl
    def offload_pools(plugin: PluginContext) -> list[PoolConfig]:
        return [PoolConfig(name=f"{plugin.name}-reads"), PoolConfig(name=f"{plugin.name}-writes")]

    settings = parse_settings({"plugins": {"chain": {}}})
    app = create_app(settings, extra_plugins={"chain": PluginObject(offload_pools=offload_pools)})
    assert list(app.ctx.registry.pools) == ["chain-reads", "chain-writes"]
    assert app.ctx.plugins[0].default_pool == "chain-reads"


async def test_servers_and_plugins_routes_show_live_state(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local, near = await edge("local"), await edge("near", delay_ms=5)
    gw = await gateway(
        {"plugins": {"math": {"servers": servers_table(("local", local), ("near", near), local="local")}}}
    )
    await gw.get_json("/square/3")
    status, body, _ = await gw.get_json("/servers")
    assert status == 200
    pool = body["pools"]["math"]
    assert pool["policy"] == "p2c_ewma" and pool["consider_throughput"] is True and pool["throughput"] == 1
    assert pool["counters"] == {
        "retries": 0,
        "retries_refused_by_budget": 0,
        "hedges": 0,
        "hedges_won": 0,
        "fail_open": 0,
        "moved_off_hung_servers": 0,
    }
    by_name = {server["name"]: server for server in pool["servers"]}
    assert by_name["local"]["requests"] == 1 and by_name["local"]["local"] is True
    near = by_name["near"]
    assert near["available"] is True and near["probe_ok"] is True and near["circuit"] == "closed"
    assert near["latency_ewma_ms"] >= 5 and near["peak_ewma_ms"] >= 5 and near["score_ms"] >= 5
    assert near["inflight"] == 0 and near["failures"] == 0 and near["excluded_because"] is None
    status, body, _ = await gw.get_json("/plugins")
    assert status == 200
    assert body["enabled"] == [{"name": "math", "prefix": "/", "pools": ["math"]}]
    assert any(item["name"] == "math" and item["enabled"] for item in body["installed"])
    status, body, _ = await gw.get_json("/health")
    assert (status, body["status"], body["pools"]["math"]) == (200, "ok", {"servers": 2, "available": 2})


async def test_hook_offload_probe_heights_keep_lagging_servers_out(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    fresh, stale = await edge("fresh"), await edge("stale")
    heights = {"fresh": 100, "stale": 80}
    probed: list[str] = []

    @hookimpl
    def offload_probe(plugin: PluginContext, server: Server) -> Awaitable[ProbeResult]:
        async def probe() -> ProbeResult:
            probed.append(server.name)
            return ProbeResult(ok=True, latency_s=0.001, height=heights[server.name])

        return probe()

    plugin = make_plugin()
    plugin.offload_probe = offload_probe
    servers = servers_table(("stale", stale), ("fresh", fresh))
    gw = await gateway(
        {"plugins": {"chain": {"servers": servers, "max_lag": 8, "policy": "random"}}},
        extra_plugins={"chain": plugin},
    )
    assert sorted(probed) == ["fresh", "stale"]
    chosen = {(await gw.get_json("/ping"))[1]["server"] for _ in range(10)}
    assert chosen == {"fresh"}
    status, body, _ = await gw.get_json("/servers")
    assert status == 200
    described = {server["name"]: server for server in body["pools"]["chain"]["servers"]}
    assert described["stale"]["height"] == 80 and described["fresh"]["height"] == 100

    # Within the allowed lag both are used again; the policy is random over both.
    heights["stale"] = 95
    await gw.app.ctx.engine.probe_now()
    chosen = {(await gw.get_json("/ping"))[1]["server"] for _ in range(40)}
    assert chosen == {"fresh", "stale"}


def test_lag_exclusion_is_explained() -> None:
    from offload.engine import Engine
    from offload.registry import Registry
    from offload.settings import GatewaySettings, ServerSpec

    registry = Registry()
    pool = registry.add_pool(
        PoolConfig(name="p", servers=(ServerSpec("a", "127.0.0.1:1"), ServerSpec("b", "127.0.0.1:2")), max_lag=2)
    )
    pool.servers[0].height, pool.servers[1].height = 10, 5
    eligible, excluded = Engine.eligible(pool, exclude=())
    assert [server.name for server in eligible] == ["a"]
    assert excluded == {"b": "lagging 5 behind the best known height 10"}
    eligible, excluded = Engine(registry, GatewaySettings()).eligible(pool, exclude=("a",))
    assert eligible == [] and excluded["a"] == "failed this request already"


class AlwaysLast:
    """A third-party policy: always the last candidate."""

    name = "always_last"

    def __init__(self, rng: object) -> None:
        self.rng = rng

    def choose(self, candidates: list[Server]) -> Server:
        return candidates[-1]


async def test_hook_offload_policies_are_selectable_by_name(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    first, last = await edge("first"), await edge("last")

    @hookimpl
    def offload_policies() -> dict[str, Any]:
        return {"always_last": AlwaysLast}

    plugin = make_plugin()
    plugin.offload_policies = offload_policies
    servers = servers_table(("first", first), ("last", last))
    gw = await gateway({"plugins": {"p": {"servers": servers, "policy": "always_last"}}}, extra_plugins={"p": plugin})
    chosen = {(await gw.get_json("/ping"))[1]["server"] for _ in range(5)}
    assert chosen == {"last"}


def test_a_policy_name_taken_twice_names_both() -> None:
    @hookimpl
    def offload_policies() -> dict[str, Any]:
        return {"random": AlwaysLast}

    plugin = PluginObject(offload_policies=offload_policies)
    with pytest.raises(ConfigError, match="policy 'random' is defined by both 'offload \\(built-in\\)' and plugin 'p'"):
        create_app(parse_settings({"plugins": {"p": {}}}), extra_plugins={"p": plugin})
