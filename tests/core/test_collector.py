"""The serving process freezes its startup objects, so full garbage collections skip them."""

from __future__ import annotations

import gc
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sanic import Sanic
from sanic.response import text
from test_serving_signals import wait_for_health

from offload.collector import freeze_after_startup, freeze_startup_objects
from offload.testing import serve_app


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen (pytest's own objects must stay collectable)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezing_moves_every_live_object_out_of_the_scanned_generations(unfrozen: None) -> None:
    survivor = [[] for _ in range(1000)]  # containers, which the collector tracks
    assert any(obj is survivor for obj in gc.get_objects())
    frozen = freeze_startup_objects()
    # (The count is not compared with gc.get_freeze_count() afterwards: frozen objects that other
    # threads drop leave the permanent generation at any moment.)
    assert frozen >= len(survivor)
    # What was alive is no longer in any generation a collection scans.
    assert not any(obj is survivor or obj is survivor[0] for obj in gc.get_objects())


async def test_a_started_server_has_frozen_its_startup_objects(unfrozen: None) -> None:
    app = Sanic("collector_freeze")

    @app.get("/")
    async def index(request: object) -> object:
        return text("ok")

    freeze_after_startup(app)
    assert gc.get_freeze_count() == 0
    async with serve_app(app) as server:
        assert gc.get_freeze_count() > 0, "after_server_start froze nothing"
        async with aiohttp.ClientSession() as session, session.get(server.url) as reply:
            assert reply.status == 200 and await reply.text() == "ok"


def test_offload_serve_freezes_its_startup_objects(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text("[plugins.math]\nservers = []\n")
    log = tmp_path / "gateway.log"
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", "0"]
    with log.open("w") as log_file:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=tmp_path)
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline().strip().rsplit(":", 1)[1])
            wait_for_health(process, port)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    frozen = re.findall(r"garbage collector: (\d+) startup objects frozen", log.read_text())
    # Sanic, aiohttp, pluggy and the math plugin alone are tens of thousands of objects.
    assert len(frozen) == 1 and int(frozen[0]) > 10_000, log.read_text()[-2000:]
