"""Cacheable tasks end to end: the math plugin's pure tasks, a real edge, a real gateway."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from offload import CACHE_HEADER, ConfigError, Task
from offload.transports import FakeTransport
from offload.transports.fake import text_reply

from conftest import EdgeFactory, GatewayFactory, servers_table
from engines import engine_for


def math_config(servers: list[dict], **options: object) -> dict:
    return {"plugins": {"math": {"servers": servers, **options}}}


async def edge_requests(session: aiohttp.ClientSession, url: str) -> int:
    """Requests the edge itself counted (its /health), so what reached it is counted where it arrived."""
    async with session.get(url + "/health") as reply:
        return (await reply.json())["requests"]


async def test_a_pure_task_is_sent_once_then_answered_from_the_cache(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    remote = await edge("edge1")
    gw = await gateway(math_config(servers_table(("edge1", remote)), cache_ttl_s=60))
    async with aiohttp.ClientSession() as session:
        before = await edge_requests(session, remote.url)
        first = await gw.get_json("/square/12")
        second = await gw.get_json("/square/12")
        other = await gw.get_json("/square/13")
        reached = await edge_requests(session, remote.url) - before - 1  # not counting this /health
    assert (first[0], first[1]["data"], first[2].headers[CACHE_HEADER]) == (200, "144.0", "miss")
    assert (second[0], second[1]["data"], second[2].headers[CACHE_HEADER]) == (200, "144.0", "hit")
    assert second[1]["server"] == "edge1" and second[2].headers["X-Offload-Server"] == "edge1"
    assert set(second[1]) == {"data", "server", "status_code", "throughput", "time"}
    assert other[1]["data"] == "169.0" and other[2].headers[CACHE_HEADER] == "miss"
    assert reached == 2  # /square/12 once and /square/13 once (probes excluded: the interval is long)
    _, servers, _ = await gw.get_json("/servers")
    cache = servers["pools"]["math"]["cache"]
    assert (cache["hit"], cache["miss"], cache["coalesced"], cache["entries"]) == (1, 2, 0, 2)
    async with gw.client.get("/metrics") as reply:
        metrics = await reply.text()
    assert 'offload_cache_answers_total{outcome="hit",pool="math"} 1.0' in metrics
    assert 'offload_cache_answers_total{outcome="miss",pool="math"} 2.0' in metrics
    assert 'offload_cache_entries{pool="math"} 2.0' in metrics


async def test_identical_tasks_in_flight_go_to_the_edge_once(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    # The edge's link delay keeps the first request in flight while the others arrive.
    remote = await edge("edge1", delay_ms=300)
    gw = await gateway(math_config(servers_table(("edge1", remote)), cache_ttl_s=60))
    async with aiohttp.ClientSession() as session:
        before = await edge_requests(session, remote.url)
        answers = await asyncio.gather(*(gw.get_json("/nthprime/1000") for _ in range(20)))
        reached = await edge_requests(session, remote.url) - before - 1
    assert [status for status, _, _ in answers] == [200] * 20
    assert {body["data"] for _, body, _ in answers} == {"7919"}
    outcomes = sorted(response.headers[CACHE_HEADER] for _, _, response in answers)
    assert outcomes.count("miss") == 1 and outcomes.count("coalesced") == 19
    assert reached == 1


async def test_caching_is_off_by_default_and_never_applies_to_impure_tasks(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    remote = await edge("edge1")
    plain = await gateway(math_config(servers_table(("edge1", remote))))
    status, _, response = await plain.get_json("/square/3")
    assert status == 200 and CACHE_HEADER not in response.headers
    assert "cache" not in (await plain.get_json("/servers"))[1]["pools"]["math"]
    cached = await gateway(math_config(servers_table(("edge1", remote)), cache_ttl_s=60))
    for _ in range(2):  # the greeting names whichever server answers: not a pure task
        _, _, response = await cached.get_json("/")
        assert CACHE_HEADER not in response.headers


async def test_a_pinned_server_is_part_of_the_question(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    one, two = await edge("edge1"), await edge("edge2")
    gw = await gateway(math_config(servers_table(("edge1", one), ("edge2", two)), cache_ttl_s=60))
    first = await gw.get_json("/square/5", params={"server": "edge1"})
    second = await gw.get_json("/square/5", params={"server": "edge2"})
    again = await gw.get_json("/square/5", params={"server": "edge2"})
    assert (first[1]["server"], first[2].headers[CACHE_HEADER]) == ("edge1", "miss")
    assert (second[1]["server"], second[2].headers[CACHE_HEADER]) == ("edge2", "miss")
    assert (again[1]["server"], again[2].headers[CACHE_HEADER]) == ("edge2", "hit")


async def test_only_a_200_answer_is_kept_and_excluding_servers_asks_afresh() -> None:
    statuses = iter([404, 200, 200])
    transport = FakeTransport(lambda base_url, task: text_reply("x", next(statuses)))
    async with engine_for([("only", "http://127.0.0.1:1")], transport=transport) as engine:
        task = Task("/offloading/2", cache_ttl_s=60)
        refused = await engine.offload("p", task)
        answered = await engine.offload("p", task)
        kept = await engine.offload("p", task)
        assert [(r.status_code, r.cache) for r in (refused, answered, kept)] == [
            (404, "miss"),
            (200, "miss"),
            (200, "hit"),
        ]
        # A caller that excludes servers wants a new answer from another one: never the kept one.
        assert (await engine.offload("p", task, exclude=["nobody"])).cache is None
        assert len(transport.requests) == 3


async def test_a_bad_cache_ttl_stops_the_gateway_with_one_line(gateway: GatewayFactory) -> None:
    for bad in (-1, "soon", 86_401, True):
        with pytest.raises(ConfigError, match=r"\[plugins\.math\] cache_ttl_s"):
            await gateway(math_config([{"name": "e", "url": "http://127.0.0.1:9"}], cache_ttl_s=bad))
