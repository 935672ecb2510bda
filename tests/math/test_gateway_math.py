"""The math plugin end to end: real edges, real gateway, real HTTP."""

from __future__ import annotations

import asyncio

import pytest

from conftest import EdgeFactory, GatewayFactory, servers_table


def math_config(servers: list[dict], **options: object) -> dict:
    return {"plugins": {"math": {"servers": servers, **options}}}


async def test_square_answers_the_original_envelope(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    local = await edge("local")
    gw = await gateway(math_config(servers_table(("local", local), local="local")))
    status, body, response = await gw.get_json("/square/20")
    assert status == 200
    assert set(body) == {"data", "server", "status_code", "throughput", "time"}
    assert body["data"] == "400.0"
    assert body["server"] == "local"
    assert body["status_code"] == 200
    assert body["throughput"] == 1
    assert 0 < body["time"] < 5
    assert response.headers["X-Offload-Server"] == "local"


async def test_hello_and_cpu_tasks_run_on_the_edge(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    remote = await edge("edge1")
    gw = await gateway(math_config(servers_table(("edge1", remote))))
    assert (await gw.get_json("/"))[1]["data"] == "world"
    assert (await gw.get_json("/nthprime/1000"))[1]["data"] == "7919"
    digest = (await gw.get_json("/hashchain/1"))[1]["data"]
    assert len(digest) == 64 and int(digest, 16) >= 0
    status, body, _ = await gw.get_json("/matmul/3")
    assert status == 200 and body["server"] == "edge1" and body["data"].isdigit()


async def test_bad_input_is_a_400_saying_what_is_accepted(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    remote = await edge("edge1")
    gw = await gateway(math_config(servers_table(("edge1", remote))))
    for path, accepted in [
        ("/square/abc", "finite number"),
        ("/square/nan", "finite number"),
        ("/nthprime/0", "from 1 to 200000"),
        ("/matmul/301", "from 1 to 300"),
        ("/hashchain/x", "from 1 to 5000000"),
    ]:
        status, body, _ = await gw.get_json(path)
        assert status == 400, path
        assert accepted in body["error"], (path, body)
    # Nothing was sent upstream for them.
    registry = gw.app.ctx.registry
    assert registry.pool("math").servers[0].requests == 0


async def test_unknown_route_is_a_json_404(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    gw = await gateway(math_config(servers_table(("edge1", await edge("edge1")))))
    status, body, _ = await gw.get_json("/no/such/route")
    assert status == 404
    assert "no route" in body["error"]


async def test_throughput_rule_keeps_local_until_expected_then_offloads(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    local, near = await edge("local"), await edge("near")
    servers = servers_table(("local", local), ("near", near), local="local")
    gw = await gateway(math_config(servers, expected_throughput=5, window_s=60))
    chosen = [(await gw.get_json(f"/square/{i}"))[1]["server"] for i in range(12)]
    # local while throughput <= 5: the 6th local request sees 5 and is still allowed.
    assert chosen[:6] == ["local"] * 6
    assert chosen[6:] == ["near"] * 6


async def test_throughput_rule_off_uses_the_policy_over_every_server(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    slow, fast = await edge("slow", delay_ms=40), await edge("fast")
    servers = servers_table(("slow", slow), ("fast", fast))
    gw = await gateway(math_config(servers, consider_throughput=False, policy="min_latency"))
    # The startup probe measured both; min_latency must prefer the fast one.
    chosen = {(await gw.get_json("/square/2"))[1]["server"] for _ in range(5)}
    assert chosen == {"fast"}


async def test_named_server_must_be_in_the_pool(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    a, b = await edge("a"), await edge("b")
    gw = await gateway(math_config(servers_table(("a", a), ("b", b)), consider_throughput=False))
    status, body, _ = await gw.get_json("/square/3", params={"server": "b"})
    assert (status, body["server"], body["data"]) == (200, "b", "9.0")
    status, body, _ = await gw.get_json("/square/3", params={"server": f"127.0.0.1:{a.port}"})
    assert (status, body["server"]) == (200, "a")
    # Not an open proxy: any address outside the pool is refused before sending.
    for outsider in ("127.0.0.1:1", "http://127.0.0.9:5000", "c"):
        status, body, _ = await gw.get_json("/square/3", params={"server": outsider})
        assert status == 400, outsider
        assert "not in pool" in body["error"]


# Both clients tasks can be sent with must fail the same way.
UPSTREAM_CLIENTS = pytest.mark.parametrize("upstream_client", ["native", "aiohttp"])


@UPSTREAM_CLIENTS
async def test_edge_down_is_a_502_naming_it(edge: EdgeFactory, gateway: GatewayFactory, upstream_client: str) -> None:
    from offload.testing import bind_loopback

    # A port that was bound and released: nothing listens there.
    sock = bind_loopback()
    dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    config = math_config([{"name": "ghost", "url": dead_url}])
    config["gateway"] = {"upstream_client": upstream_client}
    gw = await gateway(config)
    status, body, response = await gw.get_json("/square/4", params={"server": "ghost"})
    assert status == 502
    assert body["server"] == "ghost" and "ghost" in body["error"] and "unreachable" in body["error"]
    assert response.headers["X-Offload-Server"] == "ghost"
    # Without naming it, the engine knows it is down and says why instead of trying.
    status, body, _ = await gw.get_json("/square/4")
    assert status == 503
    assert "ghost" in body["excluded"]


@UPSTREAM_CLIENTS
async def test_edge_timeout_is_a_504_naming_it(
    edge: EdgeFactory, gateway: GatewayFactory, upstream_client: str
) -> None:
    slow = await edge("slow", delay_ms=300)
    config = math_config(servers_table(("slow", slow)), timeout_s=0.1)
    config["gateway"] = {"probe_timeout_s": 2.0, "upstream_client": upstream_client}
    gw = await gateway(config)
    status, body, _ = await gw.get_json("/square/4")
    assert status == 504
    assert body["server"] == "slow" and "did not answer within 0.1 s" in body["error"]


async def test_server_lists_follow_the_original_protocol(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    from offload.testing import bind_loopback

    extra = await edge("extra")
    sock = bind_loopback()
    dead = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    advertising = await edge("advertiser", peers=[f"127.0.0.1:{extra.port}", dead, f"127.0.0.1:{extra.port}"])
    gw = await gateway(math_config(servers_table(("advertiser", advertising)), consider_throughput=False))

    status, body, _ = await gw.get_json("/getserverlists")
    assert status == 200
    assert body["data"] == [f"127.0.0.1:{extra.port}", dead, f"127.0.0.1:{extra.port}"]

    async with gw.operator.post("/updateservers") as reply:
        status, body = reply.status, await reply.json()
    assert status == 200
    # The dead address is dropped with a reason, the duplicate collapses, the live ones stay.
    assert sorted(body["data"]) == sorted([f"127.0.0.1:{advertising.port}", f"127.0.0.1:{extra.port}"])
    assert dead in body["dropped"]
    listed = (await gw.get_json("/listservers"))[1]["data"]
    assert sorted(listed) == sorted(body["data"])


async def test_pool_initialised_from_a_remote_list(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    first, second = await edge("first"), await edge("second")
    advertiser = await edge("list", peers=[f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"])
    config = math_config([], servers_url=advertiser.make_url("/getserverlists"), consider_throughput=False)
    gw = await gateway(config)
    listed = (await gw.get_json("/listservers"))[1]["data"]
    assert sorted(listed) == sorted([f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"])


@UPSTREAM_CLIENTS
async def test_concurrent_requests_are_all_answered(
    edge: EdgeFactory, gateway: GatewayFactory, upstream_client: str
) -> None:
    local, near, far = await edge("local"), await edge("near", delay_ms=2), await edge("far", delay_ms=10)
    servers = servers_table(("local", local), ("near", near), ("far", far), local="local")
    config = math_config(servers, expected_throughput=10)
    config["gateway"] = {"upstream_client": upstream_client}
    gw = await gateway(config)
    results = await asyncio.gather(*(gw.get_json(f"/square/{i}") for i in range(60)))
    assert all(status == 200 for status, _, _ in results)
    assert [body["data"] for _, body, _ in results] == [f"{float(i) ** 2}" for i in range(60)]
    local_count = sum(1 for _, body, _ in results if body["server"] == "local")
    # At most expected + 1 run locally within the one-second window.
    assert 1 <= local_count <= 11
