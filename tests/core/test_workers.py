"""`offload serve --workers N`: several processes, one local-throughput window."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
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


def test_workers_stop_on_sigterm_or_sigint_every_time_even_while_starting(tmp_path: Path) -> None:
    """Sanic's main process could hang on a stop signal (a proxy call interrupted by the handler's own, or a
    worker stopped before it acknowledged its start): now every stop ends the process and cleans up."""
    config = tmp_path / "plugins.toml"
    config.write_text('[plugins.math]\nservers = [{ name = "remote", url = "http://127.0.0.1:9" }]\n')
    temp = tmp_path / "temp"  # where the metrics directory goes
    temp.mkdir()
    pid_file = tmp_path / "gateway.pid"
    for attempt in range(10):
        sock = bind_loopback()
        port = sock.getsockname()[1]
        sock.close()
        argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", str(port),
                "--workers", "2", "--pid-file", str(pid_file)]  # fmt: skip
        process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(temp)},
            start_new_session=True,
        )
        try:
            # Half the stops come as soon as one worker answers (the other may still be starting), half later.
            wanted = 1 if attempt % 2 == 0 else 2
            assert answering_workers(port, wanted, deadline_s=60) == wanted
            process.send_signal(signal.SIGTERM if attempt % 4 < 2 else signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            assert process.returncode == 0, f"stop {attempt + 1} did not end the gateway"
            assert "Traceback" not in process.communicate()[1]
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert not pid_file.exists()
        assert list(temp.iterdir()) == [], "the metrics directory went with the gateway"


def answering_workers(port: int, wanted: int, deadline_s: float) -> int:
    """How many distinct workers answered ``GET /health`` (a new connection each) until ``wanted`` did."""
    workers: set[int] = set()
    deadline = time.monotonic() + deadline_s
    while len(workers) < wanted and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                workers.add(json.loads(reply.read())["worker_pid"])
        except OSError:
            time.sleep(0.02)  # not listening yet: poll again (bounded by the deadline)
    return len(workers)
