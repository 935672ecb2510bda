"""`offload demo` as the README runs it: real processes, real requests, clean shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from offload.devtools.ports import free_port


def child_pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"pid (\d+)", output)]


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; it only waits for its parent to reap it.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def assert_metrics_agree_with_servers(text: str, servers: list[dict], squares: int) -> None:
    """GET /metrics, parsed by prometheus-client, counts what GET /servers counts, server by server."""
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    attempts: dict[str, float] = {}
    for sample in samples:
        if sample.name == "offload_upstream_requests_total" and sample.labels["pool"] == "math":
            attempts[sample.labels["server"]] = attempts.get(sample.labels["server"], 0) + sample.value
    assert {server["name"]: server["requests"] for server in servers} == {
        name: attempts.get(name, 0) for name in (server["name"] for server in servers)
    }
    answered = sum(
        sample.value
        for sample in samples
        if sample.name == "offload_http_requests_total" and sample.labels["route"].startswith("/square/")
    )
    assert answered == squares


def test_demo_replays_the_experiment_and_prints_the_table() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "offload", "demo", "--requests", "200", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if re.match(r"^(local|edge-\S+|all)\s+\d", line)}
    assert set(rows) == {"local", "edge-near", "edge-far", "all"}
    assert int(rows["all"][1]) == 200
    assert sum(int(rows[name][1]) for name in ("local", "edge-near", "edge-far")) == 200
    # ~300 requests/s offered against 25 allowed locally: most are offloaded, some stay local.
    assert 1 <= int(rows["local"][1]) <= 27
    assert "failed: 0" in out
    peak = int(re.search(r"local throughput: peak (\d+)", out).group(1))
    assert peak <= 26
    assert not any(is_running(pid) for pid in child_pids(out))
    # Not a terminal: no progress frames in the log, only what happened.
    assert "\r" not in result.stderr and "\r" not in out
    assert "starting 3 edge servers" in result.stderr


async def test_demo_serve_answers_curl_and_stops_on_ctrl_c() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "demo", "--serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "gateway ready" in line:
                break
        output = "".join(lines)
        assert "gateway ready" in output, output
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/square/20") as response:
                body = await response.json()
            assert body["data"] == "400.0"
            assert set(body) == {"data", "server", "status_code", "throughput", "time"}
            for number in range(40):
                async with session.get(f"{base}/square/{number}") as response:
                    assert response.status == 200
            async with session.get(f"{base}/servers") as response:
                servers = (await response.json())["pools"]["math"]["servers"]
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
        assert_metrics_agree_with_servers(metrics, servers, squares=41)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert not any(is_running(pid) for pid in child_pids(output))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_demo_stopped_by_sigterm_mid_run_leaves_no_process_and_no_folder(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "demo", "--port", str(port), "--requests", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where the demo makes its temporary folder
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(child_pids("".join(lines))) < 4:
            line = process.stdout.readline()  # the edges' and the gateway's PIDs, printed once they answer
            if not line:
                break
            lines.append(line)
        output = "".join(lines)
        pids = child_pids(output)
        assert len(pids) == 4, output
        assert list(tmp_path.glob("offload-demo-*")), "the demo's folder exists while it runs"
        process.send_signal(signal.SIGTERM)  # mid-run: the experiment has 100,000 requests to go
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
        assert not any(is_running(pid) for pid in pids)
        assert not list(tmp_path.glob("offload-demo-*"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
