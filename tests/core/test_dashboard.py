"""``GET /dashboard`` and the recent decisions behind it.

The page is tested in a real headless Chromium (Debian's ``chromium``, driven by
playwright; playwright's own browser downloads are never used) against real edges
and a real gateway: it loads without a console error, shows the demo's servers,
and turns a server red within seconds of its edge being stopped. Without chromium
the browser test is skipped, or fails when ``OFFLOAD_REQUIRE_CHROMIUM=1`` says this
run must exercise it (as CI does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio

from offload import OffloadError, Task
from offload.dashboard import CONTENT_SECURITY_POLICY
from offload.decisions import DECISIONS_KEPT, LOCAL_UNDER_LIMIT, NAMED, DecisionLog
from offload.devtools.demo import DEMO_EDGES
from offload.testing import RunningServer, serve_app
from offload.transports import FakeTransport, UpstreamUnreachable, text_reply
from offload_edge.app import EdgeConfig, create_edge_app

from conftest import EdgeFactory, GatewayFactory, servers_table
from engines import engine_for

CHROMIUM_INSTALL_HINT = "chromium is not installed: apt-get install chromium"
# The page polls every second and the test gateway probes every 0.2 s: red well within this.
TURNS_RED_WITHIN_MS = 8000
FIRST, SECOND = "http://first.test:8001", "http://second.test:8002"


def require_chromium() -> str:
    """Debian's chromium; skip the test without it, or fail it under ``OFFLOAD_REQUIRE_CHROMIUM=1``."""
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("OFFLOAD_REQUIRE_CHROMIUM") == "1":
            pytest.fail(CHROMIUM_INSTALL_HINT)
        pytest.skip(CHROMIUM_INSTALL_HINT)
    return executable


@pytest_asyncio.fixture
async def browser_page() -> AsyncIterator[object]:
    """A page of a headless chromium that exits with the test."""
    executable = require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # Chromium's sandbox refuses to start as root (containers, CI); elsewhere it stays on.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = await playwright.chromium.launch(executable_path=executable, args=args)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            yield page
        finally:
            await browser.close()


def demo_config(servers: list[dict], **options: object) -> dict:
    """The demo's math pool (p2c_ewma, the throughput rule on), probed every 0.2 s so a dead edge shows fast."""
    math = {"policy": "p2c_ewma", "consider_throughput": True, "expected_throughput": 25, "window_s": 1.0, **options}
    return {
        "gateway": {"probe_interval_s": 0.2, "probe_timeout_s": 0.5},
        "plugins": {"math": {"servers": servers, **math}},
    }


async def test_the_dashboard_shows_the_demo_and_turns_a_stopped_edge_red(
    edge: EdgeFactory, gateway: GatewayFactory, browser_page: object
) -> None:
    from playwright.async_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    async with AsyncExitStack() as edges:
        running: dict[str, RunningServer] = {}
        for plan in DEMO_EDGES:
            if plan.name == "edge-far":  # the one this test stops, so served here rather than by the fixture
                config = EdgeConfig(name=plan.name, delay_ms=plan.delay_ms, processes=1)
                running[plan.name] = await edges.enter_async_context(serve_app(create_edge_app(config)))
            else:
                running[plan.name] = await edge(plan.name, delay_ms=plan.delay_ms)
        local = next(plan.name for plan in DEMO_EDGES if plan.local)
        # The gateway has an operator token (the fixture's): the page needs none, its routes are reads.
        gw = await gateway(demo_config(servers_table(*running.items(), local=local), cache_ttl_s=60))
        for number in range(5):
            status, body, _ = await gw.get_json(f"/square/{number}")
            assert status == 200 and body["server"] == local
        # Asked again: the read cache answers, so no decision is made (and none is listed below).
        assert (await gw.get_json("/square/4"))[2].headers["X-Offload-Cache"] == "hit"

        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("requestfailed", lambda request: problems.append(f"{request.url}: {request.failure}"))
        answer = await page.goto(gw.server.make_url("/dashboard"))
        assert answer is not None and answer.status == 200

        pool = page.locator('section[data-pool="math"]')
        for plan in DEMO_EDGES:
            await expect(pool.locator(f'tr[data-server="{plan.name}"]')).to_have_attribute("data-state", "up")
        await expect(pool.locator(".decision-table tbody tr")).to_have_count(5)
        await expect(pool.locator(".decision-table tbody tr").first).to_contain_text(LOCAL_UNDER_LIMIT)
        # The local window (its count falls back to 0 once the 1 s window has passed) against its limit.
        await expect(pool.locator(".window")).to_contain_text(re.compile(r"\d+ / 25 in 1 s"))
        await expect(pool.locator(".window meter")).to_have_js_property("max", 25)
        await expect(pool.locator(".counters")).to_contain_text("cache: 1 hits, 0 coalesced, 5 misses")

        await edges.aclose()  # edge-far stops: its port now refuses connections
        far = pool.locator('tr[data-server="edge-far"]')
        await expect(far).to_have_attribute("data-state", "down", timeout=TURNS_RED_WITHIN_MS)
        await expect(far.locator("td.state")).to_have_text("down")
        red = await far.locator("td.state").evaluate("cell => getComputedStyle(cell).color")
        assert red == "rgb(207, 34, 46)"  # --down
        for name in ("local", "edge-near"):
            await expect(pool.locator(f'tr[data-server="{name}"]')).to_have_attribute("data-state", "up")
        assert problems == []


async def test_the_page_and_its_files_are_reads_with_a_strict_policy(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    gw = await gateway(demo_config(servers_table(("local", await edge("local")), local="local")))
    expected = {
        "/dashboard": "text/html",
        "/dashboard/dashboard.js": "text/javascript",
        "/dashboard/dashboard.css": "text/css",
    }
    for path, content_type in expected.items():
        async with gw.client.get(path) as reply:  # a local caller without the operator's token
            assert reply.status == 200, path
            assert reply.content_type == content_type
            assert reply.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            text = await reply.text()
        assert "http://" not in text and "https://" not in text, f"{path} must load nothing from elsewhere"
    async with gw.client.get("/dashboard") as reply:
        page = await reply.text()
    assert "<script>" not in page and "style=" not in page  # the policy forbids inline script and style
    assert "innerHTML" not in (await (await gw.client.get("/dashboard/dashboard.js")).text())
    # Like every route: no cross-site callers, no rebound hosts.
    async with gw.client.get("/dashboard", headers={"Sec-Fetch-Site": "cross-site"}) as reply:
        assert reply.status == 403
    async with gw.client.get("/dashboard", headers={"Host": "evil.example"}) as reply:
        assert reply.status == 403


async def test_servers_lists_recent_decisions_without_the_callers_paths(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    local, near = await edge("local"), await edge("edge-near")
    servers = servers_table(("local", local), ("edge-near", near), local="local")
    gw = await gateway(demo_config(servers, expected_throughput=1, window_s=60))
    answered_by = []
    while "edge-near" not in answered_by:  # the device takes tasks until its window is full
        assert len(answered_by) < 5
        status, body, _ = await gw.get_json("/square/31337")
        assert status == 200
        answered_by.append(body["server"])
    assert (await gw.get_json("/square/4242", params={"server": "edge-near"}))[0] == 200
    status, body, _ = await gw.get_json("/servers")
    assert status == 200
    decisions = body["pools"]["math"]["recent_decisions"]
    locals_ = [("local", LOCAL_UNDER_LIMIT, "answered", 200, 1)] * (len(answered_by) - 1)
    assert len(locals_) >= 1
    assert [(d["server"], d["why"], d["outcome"], d["status_code"], d["attempts"]) for d in decisions] == [
        ("edge-near", NAMED, "answered", 200, 1),
        ("edge-near", "local over its limit: policy p2c_ewma", "answered", 200, 1),
        *locals_,
    ]
    assert set(decisions[0]) == {"at", "server", "local", "why", "outcome", "status_code", "attempts", "time_ms"}
    shown = json.dumps(decisions)
    assert "31337" not in shown and "4242" not in shown and "square" not in shown


async def test_retries_and_failures_are_recorded_with_their_attempts() -> None:
    def handler(base_url: str, task: Task) -> object:
        if base_url == FIRST:
            raise UpstreamUnreachable("ClientConnectorError: connection refused", never_arrived=True)
        return text_reply("world")

    servers = [("dead", FIRST), ("backup", SECOND)]
    async with engine_for(servers, policy="always_first", transport=FakeTransport(handler)) as engine:
        assert (await engine.offload("p", Task("/hello"))).server == "backup"
        with pytest.raises(OffloadError):
            await engine.offload("p", Task("/hello"), server="dead")
        recent = engine.decisions.recent("p")
    failed, retried = recent
    assert (retried["server"], retried["outcome"], retried["attempts"]) == ("backup", "answered", 2)
    assert retried["why"] == "policy always_first"
    assert (failed["server"], failed["outcome"], failed["status_code"]) == ("dead", "failed", 502)
    assert (failed["why"], failed["attempts"]) == (NAMED, 1)


async def test_the_log_keeps_only_the_newest_decisions_of_each_pool() -> None:
    async with engine_for(
        [("only", FIRST)], transport=FakeTransport(lambda base_url, task: text_reply("ok"))
    ) as engine:
        for _ in range(DECISIONS_KEPT + 7):
            await engine.offload("p", Task("/hello"))
        recent = engine.decisions.recent("p")
    assert len(recent) == DECISIONS_KEPT
    times = [decision["at"] for decision in recent]
    assert times == sorted(times, reverse=True)  # newest first
    assert engine.decisions.recent("unknown pool") == []
    with pytest.raises(ValueError):
        DecisionLog(kept=0)
