"""``offload bench scale --quick --json``, run for real: its figures' shape, and the ones that must hold.

Timing figures are the machine's to judge; what is checked here can only fail
through a fault: a contender that served nothing or answered errors, a write
lost or doubled, a request of the throughput check that left the device.
Skipped without nginx or redis-server, unless ``OFFLOAD_REQUIRE_NGINX=1`` /
``OFFLOAD_REQUIRE_REDIS=1`` (then it fails instead).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from offload.devtools.bench.scale import CONNECTIONS, PROCESS_COUNTS, QUICK_WRITES

# The quick run takes about 30 s here; the bound only stops a hang.
TIMEOUT_S = 150


def require(tool: str, variable: str, hint: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} is not installed: {hint}"
        if os.environ.get(variable) == "1":
            pytest.fail(message)
        pytest.skip(message)


def test_quick_scale_bench_measures_every_contender_and_loses_no_write() -> None:
    require("nginx", "OFFLOAD_REQUIRE_NGINX", "apt-get install nginx-light")
    require("redis-server", "OFFLOAD_REQUIRE_REDIS", "apt-get install redis-server")
    done = subprocess.run(
        [sys.executable, "-m", "offload", "bench", "scale", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    # 1: a timing goal missed on a busy machine, which the checks below do not judge; 2: could not start.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["quick"] is True and figures["notes"] == []

    rows = {(row["layout"], row["processes"], row["connections"]): row for row in figures["scaling"]}
    expected = {(layout, n, c) for layout in ("workers", "replicas") for n in PROCESS_COUNTS for c in CONNECTIONS}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["requests"] > 0 and row["rps"] > 0, key
        assert row["errors"] == 0, (key, row)
        assert 0 < row["p50_ms"] <= row["p99_ms"], (key, row)
    for connections in CONNECTIONS:
        assert rows[("workers", 1, connections)]["ratio"] == 1.0
        assert rows[("replicas", 1, connections)]["ratio"] == 1.0

    rule = figures["throughput_rule"]
    assert rule["memory"]["backend"] == "memory" and rule["redis"]["backend"] == "redis"
    for state in ("memory", "redis"):
        assert rule[state]["requests"] > 0 and rule[state]["errors"] == 0, rule[state]
        # Every request ran on the device: the limit is out of reach, so only the window's cost shows.
        assert rule[state]["local_requests"] >= rule[state]["requests"] and rule[state]["remote_requests"] == 0
    assert rule["added_p50_ms"] == pytest.approx(rule["redis"]["p50_ms"] - rule["memory"]["p50_ms"], abs=0.002)

    clients = figures["window_client"]
    assert set(clients) == {"redis-py (Script)", "lane (hiredis, pipelined)", "RedisState.admit"}
    assert all(figure["p50_us"] > 0 and figure["cpu_us"] > 0 for figure in clients.values())

    assert [burst["replicas"] for burst in figures["writes"]] == [1, 2]
    for burst in figures["writes"]:
        assert burst["writes"] == QUICK_WRITES
        assert burst["counter_delta"] == QUICK_WRITES, burst  # none lost, none doubled
        assert burst["non_200"] == 0 and burst["statuses"] == {"200": QUICK_WRITES}, burst
        assert burst["tx_per_s"] > 0

    correctness = [goal for goal in figures["goals"] if "writes" in goal["goal"] or "every request" in goal["goal"]]
    assert len(correctness) == 3 and all(goal["met"] for goal in correctness), correctness
