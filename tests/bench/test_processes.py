"""The bench's process group: a health check names the edge it expects, so another program on the port does not pass."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from offload.devtools.ports import free_port
from offload.devtools.processes import ProcessGroup, StartupError


def edge_argv(name: str, port: int) -> list[str]:
    return [sys.executable, "-m", "offload_edge", "--host", "127.0.0.1", "--port", str(port), "--name", name]


async def test_an_edge_is_healthy_only_when_its_health_names_it(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    try:
        edge = group.start("e1", edge_argv("e1", port), url)
        await group.wait_healthy(edge, name="e1")
        # A process that never binds, whose health URL is the port e1 took first: e1's 200 must not pass for it.
        slow_starter = group.start("e2", [sys.executable, "-c", "import time; time.sleep(30)"], url)
        with pytest.raises(StartupError, match="did not answer"):
            await group.wait_healthy(slow_starter, timeout_s=1.5, name="e2")
    finally:
        group.stop_all()
