"""A plugin package pip-installed from tests/plugins, enabled in plugins.toml, called through `offload serve`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from offload.devtools.processes import ProcessGroup
from offload.testing import bind_loopback

from conftest import EdgeFactory

PLUGIN_DIR = Path(__file__).parents[1] / "plugins" / "offload-greeter"


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def installed_greeter() -> Iterator[None]:
    result = pip("install", "--no-deps", str(PLUGIN_DIR))
    assert result.returncode == 0, result.stderr
    yield
    pip("uninstall", "-y", "offload-greeter")


def run_offload(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "offload", *args], capture_output=True, text=True, timeout=60)


async def test_installed_plugin_is_listed_and_serves_its_route(
    installed_greeter: None, edge: EdgeFactory, tmp_path: Path
) -> None:
    remote = await edge("edge1")
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    config = tmp_path / "plugins.toml"
    config.write_text(f'[plugins.greeter]\ngreeting = "ahoy"\nservers = [{{ name = "edge1", url = "{remote.url}" }}]\n')

    listing = run_offload("plugins", "--config", str(config))
    assert listing.returncode == 0, listing.stderr
    line = next(row for row in listing.stdout.splitlines() if row.startswith("greeter"))
    assert "offload-greeter" in line and "0.3.1" in line and "yes" in line

    group = ProcessGroup(tmp_path)
    gateway_url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", str(port)]
    try:
        await group.wait_healthy(group.start("gateway", argv, gateway_url + "/health"))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway_url}/greeter/greet/bob") as response:
                assert response.status == 200
                body = await response.json()
            async with session.get(f"{gateway_url}/plugins") as response:
                plugins = await response.json()
    finally:
        await asyncio.to_thread(group.stop_all)  # keep serving our in-process edges meanwhile
    assert body["data"] == "ahoy, bob: the edge says world"
    assert body["server"] == "edge1"
    greeter = next(item for item in plugins["installed"] if item["name"] == "greeter")
    assert greeter == {
        "name": "greeter",
        "distribution": "offload-greeter",
        "version": "0.3.1",
        "target": "offload_greeter",
        "enabled": True,
    }
    assert [item["name"] for item in plugins["enabled"]] == ["greeter"]
