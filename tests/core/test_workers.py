"""`offload serve --workers N`: several processes, one local-throughput window."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from offload.devtools.processes import ProcessGroup
from offload.testing import bind_loopback

from conftest import EdgeFactory


async def test_workers_share_one_throughput_window(edge: EdgeFactory, tmp_path: Path) -> None:
    local, remote = await edge("local"), await edge("remote")
    config = tmp_path / "plugins.toml"
    config.write_text(
        "[gateway]\nprobe_interval_s = 600\n"
        "[plugins.math]\nconsider_throughput = true\nexpected_throughput = 5\nwindow_s = 600\n"
        f'servers = [{{ name = "local", url = "{local.url}", local = true }}, '
        f'{{ name = "remote", url = "{remote.url}" }}]\n'
    )
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    group = ProcessGroup(tmp_path)
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", str(port), "--workers", "2"]
    try:
        await group.wait_healthy(group.start("gateway", argv, url + "/health"), timeout_s=60)
        # A new connection per request, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            # /health answers as soon as one worker is up; wait (bounded) until the second answers too.
            workers = set()
            deadline = asyncio.get_running_loop().time() + 30
            while len(workers) < 2 and asyncio.get_running_loop().time() < deadline:
                async with session.get(url + "/health") as reply:
                    workers.add((await reply.json())["worker_pid"])
                await asyncio.sleep(0.01)
            servers = []
            for index in range(30):
                async with session.get(f"{url}/square/{index}") as reply:
                    assert reply.status == 200
                    servers.append((await reply.json())["server"])
    finally:
        await asyncio.to_thread(group.stop_all)  # keep serving our in-process edges meanwhile
    assert len(workers) == 2, "both workers answer"
    # expected_throughput 5 for the device as a whole: 6 local runs (<= 5 lets the 6th in), not 6 per worker.
    assert servers.count("local") == 6
    assert servers.count("remote") == 24
