"""Take the README's screenshot of ``GET /dashboard``: the demo's topology under load, one edge stopped.

Starts the demo's three edges (the device and two remote edges with their simulated
link delays) and a gateway with the demo's math pool, all in this process on
127.0.0.1 ephemeral ports; sends a steady stream of ``/square`` tasks, above the
local limit so that some go to the edges; stops ``edge-far``; waits until the page
shows it red; and saves a 1280x800 PNG. Uses Debian's ``chromium`` (playwright's own
browsers are never downloaded)::

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tomllib
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright, expect

from offload.app import create_app
from offload.devtools.demo import DEMO_EDGES, gateway_config
from offload.settings import parse_settings
from offload.testing import serve_app
from offload_edge.app import EdgeConfig, create_edge_app

ROOT = Path(__file__).resolve().parents[1]
STOPPED = "edge-far"
# Above the demo's 25 local tasks a second, so the window fills and the edges take the rest.
TASKS_PER_S = 40
EXPECTED_THROUGHPUT = 25
TURNS_RED_WITHIN_MS = 10_000


async def steady_load(session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
    """``TASKS_PER_S`` tasks a second, each sent on schedule whatever the others are doing, until ``stop``."""
    number = 0
    async with asyncio.TaskGroup() as group:
        while not stop.is_set():
            number += 1
            group.create_task(one_task(session, number))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / TASKS_PER_S)  # pacing, not synchronisation


async def one_task(session: aiohttp.ClientSession, number: int) -> None:
    async with session.get(f"/square/{number}") as reply:
        await reply.read()


async def take_screenshot(out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    async with AsyncExitStack() as stack:
        edges = {}
        stoppable = None
        for plan in DEMO_EDGES:
            serving = serve_app(create_edge_app(EdgeConfig(name=plan.name, delay_ms=plan.delay_ms, processes=1)))
            if plan.name == STOPPED:
                stoppable = serving
                edges[plan.name] = (await serving.__aenter__()).url
            else:
                edges[plan.name] = (await stack.enter_async_context(serving)).url
        settings = parse_settings(tomllib.loads(gateway_config(edges, EXPECTED_THROUGHPUT, {})), "demo plugins.toml")
        gateway = await stack.enter_async_context(serve_app(create_app(settings, api_token=secrets.token_urlsafe(24))))
        session = await stack.enter_async_context(aiohttp.ClientSession(base_url=gateway.url))
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(session, stop))
        try:
            playwright = await stack.enter_async_context(async_playwright())
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = await playwright.chromium.launch(executable_path=chromium, args=args)
            stack.push_async_callback(browser.close)
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(gateway.make_url("/dashboard"))
            decisions = page.locator(".decision-table tbody tr")
            await expect(decisions).to_have_count(50, timeout=10_000)  # the log is full
            assert stoppable is not None
            await stoppable.__aexit__(None, None, None)
            row = page.locator(f'tr[data-server="{STOPPED}"]')
            await expect(row).to_have_attribute("data-state", "down", timeout=TURNS_RED_WITHIN_MS)
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out))
        finally:
            stop.set()
            await load
    print(f"saved {out} ({out.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png", help="where to save the PNG")
    asyncio.run(take_screenshot(parser.parse_args().out))


if __name__ == "__main__":
    main()
