"""GET /metrics: Prometheus text that parses, agrees with GET /servers, and never echoes a caller's path.

Real gateways and real edges on loopback; the text is read with prometheus-client's
own parser, so a malformed line fails here before it fails a Prometheus server.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from offload import PluginContext, ProbeResult, Server, Task, hookimpl
from offload.metrics.events import POOL_EVENTS
from offload.metrics.recorder import MAX_PLUGIN_SERIES
from offload.testing import serve_app
from offload_edge.app import EdgeConfig, create_edge_app

from conftest import EdgeFactory, Gateway, GatewayFactory, servers_table

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(gw: Gateway) -> tuple[str, Samples]:
    """GET /metrics: its text, and its samples by sample name (``..._total``, ``..._bucket``, ...)."""
    async with gw.client.get("/metrics") as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await reply.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return text, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(value for got, value in samples.get(name, []) if labels.items() <= got.items())


def one(samples: Samples, name: str, **labels: str) -> float:
    """The value of the single sample of ``name`` with exactly these labels."""
    matches = [value for got, value in samples.get(name, []) if got == labels]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


async def servers_view(gw: Gateway, pool: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """GET /servers: the pool's description, and its servers by name."""
    status, body, _ = await gw.get_json("/servers")
    assert status == 200
    description = body["pools"][pool]
    return description, {server["name"]: server for server in description["servers"]}


async def test_metrics_agree_with_servers_after_traffic(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local, edge1, edge2 = await edge("local"), await edge("edge1"), await edge("edge2")
    options = {"consider_throughput": True, "expected_throughput": 4, "window_s": 600}
    servers = servers_table(("local", local), ("edge1", edge1), ("edge2", edge2), local="local")
    gw = await gateway({"gateway": {"probe_interval_s": 600}, "plugins": {"math": {"servers": servers, **options}}})
    answered_by: dict[str, int] = {}
    for number in range(20):
        status, body, _ = await gw.get_json(f"/square/{number}")
        assert status == 200
        answered_by[body["server"]] = answered_by.get(body["server"], 0) + 1

    pool, by_name = await servers_view(gw, "math")
    _, samples = await scrape(gw)

    route = {"plugin": "math", "route": "/square/<num:str>", "method": "GET", "status": "200"}
    assert total(samples, "offload_http_requests_total", **route) == 20
    assert total(samples, "offload_http_request_duration_seconds_count", plugin="math", route=route["route"]) == 20
    assert answered_by["local"] == 5  # the original rule: 4 a window, and the 5th still runs locally
    for name, server in by_name.items():
        labels = {"pool": "math", "server": name}
        # Engine-side: every attempt at the server, and how many failed, as /servers counts them.
        assert total(samples, "offload_upstream_requests_total", **labels) == server["requests"]
        failed = sum(
            total(samples, "offload_upstream_requests_total", **labels, outcome=outcome)
            for outcome in ("http_5xx", "timeout", "transport_error")
        )
        assert failed == server["failures"] == 0
        assert total(samples, "offload_upstream_latency_seconds_count", **labels) == server["requests"]
        # Route-side: the answers that named this server.
        assert total(samples, "offload_http_requests_total", **route, server=name) == answered_by.get(name, 0)
        assert total(samples, "offload_server_ejections_total", **labels) == server["times_ejected"]
        assert one(samples, "offload_server_up", **labels) == (1.0 if server["available"] else 0.0)
        assert one(samples, "offload_server_circuit_state", **labels, state=server["circuit"]) == 1.0
        assert total(samples, "offload_upstream_requests_in_flight", **labels) == 0.0
        assert total(samples, "offload_probes_total", **labels, result="ok") >= 1  # the startup probe
    for event in POOL_EVENTS:
        assert total(samples, f"offload_{event}_total", pool="math") == pool["counters"][event], event
    assert one(samples, "offload_local_throughput", pool="math") == pool["throughput"] == 5
    assert one(samples, "offload_local_throughput_threshold", pool="math") == pool["expected_throughput"] == 4
    assert one(samples, "offload_http_requests_in_flight") == 1.0  # the scrape itself


async def test_failures_retries_and_ejections_are_counted_as_servers_shows_them(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    healthy = await edge("healthy")
    doomed_life = serve_app(create_edge_app(EdgeConfig(name="doomed")))
    doomed = await doomed_life.__aenter__()
    servers = servers_table(("healthy", healthy), ("doomed", doomed))
    options = {"policy": "round_robin", "retries": 2}
    gw = await gateway({"gateway": {"probe_interval_s": 600}, "plugins": {"math": {"servers": servers, **options}}})
    # The edge the gateway probed as healthy dies: its next request is refused, retried, and it is ejected.
    await doomed_life.__aexit__(None, None, None)
    for number in range(6):
        status, body, _ = await gw.get_json(f"/square/{number}")
        assert (status, body["server"]) == (200, "healthy")

    pool, by_name = await servers_view(gw, "math")
    _, samples = await scrape(gw)
    dead = by_name["doomed"]
    labels = {"pool": "math", "server": "doomed"}
    assert dead["failures"] >= 1 and dead["times_ejected"] >= 1
    assert total(samples, "offload_upstream_requests_total", **labels) == dead["requests"]
    assert total(samples, "offload_upstream_requests_total", **labels, outcome="transport_error") == dead["failures"]
    assert total(samples, "offload_server_ejections_total", **labels) == dead["times_ejected"]
    assert one(samples, "offload_server_circuit_state", **labels, state="open") == 1.0
    assert one(samples, "offload_server_up", **labels) == 0.0
    assert total(samples, "offload_retries_total", pool="math") == pool["counters"]["retries"] >= 1


async def test_labels_never_carry_a_callers_path(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    remote = await edge("edge1")
    gw = await gateway({"plugins": {"math": {"servers": servers_table(("edge1", remote))}}})
    async with gw.client.get("/nonexistent/abc123") as reply:
        assert reply.status == 404
    async with gw.client.request("BREW", "/nonexistent/abc124") as reply:
        assert reply.status >= 400
    async with gw.client.get("/square/notanumber987") as reply:
        assert reply.status == 400
    async with gw.client.get("/servers", headers={"Host": "evil.example"}) as reply:
        assert reply.status == 403  # refused by the access guard, and still counted
    text, samples = await scrape(gw)
    for caller_text in ("abc123", "abc124", "BREW", "notanumber987", "evil.example"):
        assert caller_text not in text
    assert (
        one(
            samples,
            "offload_http_requests_total",
            plugin="none",
            route="unmatched",
            method="GET",
            status="404",
            server="none",
        )
        == 1
    )
    assert total(samples, "offload_http_requests_total", route="unmatched", method="OTHER") == 1
    assert total(samples, "offload_http_requests_total", route="/square/<num:str>", status="400") == 1
    assert total(samples, "offload_http_requests_total", plugin="offload", route="/servers", status="403") == 1


async def test_metrics_is_guarded_like_servers(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    remote = await edge("edge1")
    gw = await gateway({"plugins": {"math": {"servers": servers_table(("edge1", remote))}}})
    for headers in ({"Host": "evil.example"}, {"Origin": "http://evil.example"}):
        for path in ("/servers", "/metrics"):
            async with gw.client.get(path, headers=headers) as reply:
                assert reply.status == 403, (path, headers)
    routes = {route.path: route for route in gw.app.router.routes}
    assert routes["metrics"].ctx.access == routes["servers"].ctx.access


class HeightsPlugin:
    """A third-party plugin: probes that report block heights, and a route that counts its own events."""

    def __init__(self, heights: dict[str, int]) -> None:
        self.heights = heights

    @hookimpl
    def offload_probe(self, plugin: PluginContext, server: Server) -> Awaitable[ProbeResult]:
        async def probe() -> ProbeResult:
            return ProbeResult(ok=True, latency_s=0.001, height=self.heights[server.name])

        return probe()

    @hookimpl
    def offload_routes(self, plugin: PluginContext) -> Blueprint:
        blueprint = Blueprint(f"heights_{id(self)}")

        @blueprint.get("/send/<outcome:str>")
        async def send(request: Request, outcome: str) -> HTTPResponse:
            result = await plugin.offload(Task("/hello", idempotent=False))
            plugin.count_event("transaction", outcome)  # the caller's text, on purpose: it must not become a label
            return response.json(result.envelope())

        return blueprint


async def test_block_height_lag_and_plugin_events(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    node1, node2 = await edge("node1"), await edge("node2")
    plugin = HeightsPlugin({"node1": 120, "node2": 117})
    servers = servers_table(("node1", node1), ("node2", node2))
    gw = await gateway(
        {"gateway": {"probe_interval_s": 600}, "plugins": {"chain": {"prefix": "/chain", "servers": servers}}},
        extra_plugins={"chain": plugin},
    )
    for outcome in ("accepted", "accepted", "refused", "Not-A-Name!"):
        status, _, _ = await gw.get_json(f"/chain/send/{outcome}")
        assert status == 200
    _, samples = await scrape(gw)
    assert one(samples, "offload_server_block_height", pool="chain", server="node1") == 120
    assert one(samples, "offload_server_block_lag", pool="chain", server="node1") == 0
    assert one(samples, "offload_server_block_lag", pool="chain", server="node2") == 3
    assert one(samples, "offload_server_probe_ok", pool="chain", server="node2") == 1
    events = {"plugin": "chain", "event": "transaction"}
    assert one(samples, "offload_plugin_events_total", **events, outcome="accepted") == 2
    assert one(samples, "offload_plugin_events_total", **events, outcome="refused") == 1
    assert one(samples, "offload_plugin_events_total", plugin="chain", event="other", outcome="other") == 1
    assert total(samples, "offload_http_requests_total", plugin="chain", route="/chain/send/<outcome:str>") == 4
    # Past the cap, new names are folded into "other" instead of growing the label set.
    for index in range(MAX_PLUGIN_SERIES + 5):
        gw.app.ctx.plugins[0].count_event("transaction", f"kind_{index}")
    _, samples = await scrape(gw)
    assert (
        len([1 for labels, _ in samples["offload_plugin_events_total"] if labels["plugin"] == "chain"])
        <= MAX_PLUGIN_SERIES
    )


async def test_contract_transactions_and_node_heights(
    edge: EdgeFactory, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offload_edge.chain.node import DEV_PRIVATE_KEY, demo_contract_addresses

    monkeypatch.setenv("OFFLOAD_CONTRACTS_PRIVATE_KEY", DEV_PRIVATE_KEY)
    origin = await edge("origin", chain=True)
    near = await edge("near", chain_upstream=origin.make_url("/rpc"))
    contracts = [
        {"name": name, "address": address, "artifact": f"offload_edge:chain/artifacts/{name}.json"}
        for name, address in demo_contract_addresses().items()
    ]
    servers = servers_table(("origin", origin), ("near", near))
    table = {"rpc_path": "/rpc", "servers": servers, "contracts": contracts}
    gw = await gateway({"gateway": {"probe_interval_s": 600}, "plugins": {"contracts": table}})
    for _ in range(2):
        async with gw.operator.post("/contracts/Counter/increment", json={}) as reply:
            assert reply.status == 200, await reply.text()
    await gw.app.ctx.engine.probe_now()  # the nodes' heights after the writes
    _, by_name = await servers_view(gw, "contracts")
    _, samples = await scrape(gw)
    events = {"plugin": "contracts"}
    assert one(samples, "offload_plugin_events_total", **events, event="transaction", outcome="accepted") == 2
    assert one(samples, "offload_plugin_events_total", **events, event="receipt", outcome="succeeded") == 2
    top = max(server["height"] for server in by_name.values())
    assert top >= 2  # two blocks mined
    for name, server in by_name.items():
        labels = {"pool": "contracts", "server": name}
        assert one(samples, "offload_server_block_height", **labels) == server["height"]
        assert one(samples, "offload_server_block_lag", **labels) == top - server["height"]
        assert total(samples, "offload_upstream_requests_total", **labels) == server["requests"]
