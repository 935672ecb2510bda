"""`offload serve --workers 2`: /metrics counts the gateway's requests once, whichever worker answers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from offload.devtools.processes import ProcessGroup
from offload.testing import bind_loopback

from conftest import EdgeFactory

SQUARES = 24


def metrics_directories(temp: Path) -> list[Path]:
    """The directories ``offload serve`` made for its workers' metric files under ``temp``."""
    return [path for path in temp.iterdir() if path.name.startswith("offload-metrics-")]


def route_total(text: str, metric: str, route: str) -> float:
    """The sum of ``metric``'s samples for ``route``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric and sample.labels.get("route") == route
    )


async def test_two_workers_report_each_request_once(edge: EdgeFactory, tmp_path: Path) -> None:
    remote = await edge("remote")
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'[gateway]\nprobe_interval_s = 600\n[plugins.math]\nservers = [{{ name = "remote", url = "{remote.url}" }}]\n'
    )
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    # The main process makes its metrics directory under TMPDIR: here, so the test can see it go.
    temp = tmp_path / "temp"
    temp.mkdir()
    group = ProcessGroup(tmp_path)
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", str(port), "--workers", "2"]
    try:
        await group.wait_healthy(group.start("gateway", argv, url + "/health", env={"TMPDIR": str(temp)}), timeout_s=60)
        assert len(metrics_directories(temp)) == 1
        # A new connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            # Health checks before ours (the start-up wait's) are counted too: ours are what is added.
            async with session.get(url + "/metrics") as reply:
                before = route_total(await reply.text(), "offload_http_requests_total", "/health")
            workers: set[int] = set()
            health_checks = 0
            deadline = asyncio.get_running_loop().time() + 30
            while len(workers) < 2 and asyncio.get_running_loop().time() < deadline:
                async with session.get(url + "/health") as reply:
                    workers.add((await reply.json())["worker_pid"])
                health_checks += 1
            for index in range(SQUARES):
                async with session.get(f"{url}/square/{index}") as reply:
                    assert reply.status == 200
            scrapes = []
            for _ in range(4):
                async with session.get(url + "/metrics") as reply:
                    assert reply.status == 200
                    scrapes.append(await reply.text())
    finally:
        await asyncio.to_thread(group.stop_all)  # keep serving our in-process edge meanwhile
    assert len(workers) == 2, "both workers answered"
    for text in scrapes:
        # Both workers' counts, summed once: not one worker's share, not doubled.
        assert route_total(text, "offload_http_requests_total", "/health") == before + health_checks
        assert route_total(text, "offload_http_requests_total", "/square/<num:str>") == SQUARES
        upstream = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "offload_upstream_requests_total" and sample.labels["server"] == "remote"
        )
        assert upstream == SQUARES
    assert metrics_directories(temp) == [], "the metrics directory is removed when the gateway stops"
