"""The performance benchmark's parsing and verdicts (the benchmark itself is a command)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from offload.devtools.bench.closed_loop import LoadResult, parse_wrk, run_builtin, wrk_argv
from offload.devtools.bench.cpu import group_cpu_seconds
from offload.devtools.bench.nginx import constant_config, nginx_config
from offload.devtools.bench.perf import median_run, render, summarize

WRK_OUTPUT = """Running 4s test @ http://127.0.0.1:8899/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.01ms  20.31ms   90.12%
    Req/Sec     3.71k   210.45     4.10k    71.25%
  Latency Distribution
     50%    2.07ms
     75%    2.50ms
     90%    3.01ms
     99%  850.00us
  29580 requests in 4.00s, 6.04MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   7394.21
Transfer/sec:      1.51MB
"""


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT, 16)
    assert result == LoadResult("wrk", 16, 29580, 7394.21, 2.07, 0.85, 6)


def test_wrk_runs_whole_seconds() -> None:
    assert wrk_argv("http://127.0.0.1:9/", 16, 0.5) == [
        "wrk",
        "-t2",
        "-c16",
        "-d1s",
        "--latency",
        "http://127.0.0.1:9/",
    ]
    assert "-d3s" in wrk_argv("http://127.0.0.1:9/", 1, 2.2) and "-t1" in wrk_argv("http://127.0.0.1:9/", 1, 2)


def test_summarize_judges_the_goals() -> None:
    results = {
        "direct": [LoadResult("wrk", 1, 1, 7000, 0.13, 0.19, 0), LoadResult("wrk", 16, 1, 12000, 1.2, 2.5, 0)],
        "ours": [LoadResult("wrk", 1, 1, 3000, 0.31, 0.71, 0), LoadResult("wrk", 16, 1, 7500, 2.0, 4.7, 0)],
        "nginx": [LoadResult("wrk", 1, 1, 4500, 0.22, 0.86, 0), LoadResult("wrk", 16, 1, 16000, 0.9, 2.8, 0)],
    }
    goals = summarize(results, {"growth_mb": 3.5}, "wrk")["goals"]
    assert [goal["met"] for goal in goals] == [True, True, False, True, False]
    assert goals[2]["figure"].startswith("47 %")
    assert goals[4]["measured"] is False  # no scaling runs: said, and not counted as met


def test_goals_that_need_nginx_are_reported_as_not_measured_without_it() -> None:
    results = {
        "direct": [LoadResult("wrk", 1, 1, 7000, 0.13, 0.19, 0), LoadResult("wrk", 16, 1, 12000, 1.2, 2.5, 0)],
        "ours": [LoadResult("wrk", 1, 1, 3000, 0.31, 0.71, 0), LoadResult("wrk", 16, 1, 7500, 2.0, 4.7, 0)],
    }
    figures = summarize(results, {}, "wrk")
    skipped = [goal for goal in figures["goals"] if goal.get("measured") is False]
    assert len(skipped) == 2 and all("apt-get install nginx-light" in goal["figure"] for goal in skipped)
    assert "[n/a]" in render(figures)


def test_nginx_config_stays_on_loopback_and_in_its_prefix(tmp_path) -> None:
    config = nginx_config(tmp_path, 8080, ["http://127.0.0.1:5001", "http://127.0.0.1:5002"]).read_text()
    assert "listen 127.0.0.1:8080;" in config and "least_conn;" in config and "keepalive 128;" in config
    assert "server 127.0.0.1:5001;" in config and str(tmp_path) in config
    constant = constant_config(tmp_path / "constant", 8081).read_text()
    assert "listen 127.0.0.1:8081;" in constant and 'return 200 "world";' in constant
    assert "proxy_pass" not in constant and str(tmp_path / "constant") in constant


def test_summarize_judges_scaling() -> None:
    scaling = {
        "ours, 1 worker": [LoadResult("wrk", 64, 1, 7800, 8.0, 20.0, 0)],
        "ours, 2 workers": [LoadResult("wrk", 64, 1, 13000, 4.8, 12.0, 0)],
    }
    goals = summarize({}, {}, "wrk", scaling)["goals"]
    assert len(goals) == 1 and goals[0]["met"] and goals[0]["figure"].startswith("1.67x")
    scaling["ours, 2 workers"] = [LoadResult("wrk", 64, 1, 8000, 8.0, 20.0, 0)]
    assert not summarize({}, {}, "wrk", scaling)["goals"][0]["met"]


@pytest.mark.asyncio
async def test_builtin_generator_measures_a_real_server(edge) -> None:
    server = await edge("target")
    result = await run_builtin(server.make_url("/hello"), connections=4, duration_s=0.3)
    assert result.tool == "builtin" and result.requests > 10 and result.errors == 0
    assert 0 < result.p50_ms <= result.p99_ms


def test_median_run_takes_medians_and_sums_counts() -> None:
    runs = [
        LoadResult("wrk", 16, 100, 7000, 2.0, 5.0, 1, 120.0),
        LoadResult("wrk", 16, 90, 6000, 2.5, 9.0, 0, 140.0),
        LoadResult("wrk", 16, 110, 8000, 1.5, 4.0, 2, None),
    ]
    assert median_run(runs) == LoadResult("wrk", 16, 300, 7000, 2.0, 5.0, 3, 130.0)


def test_group_cpu_seconds_counts_every_process_of_the_group() -> None:
    # A child in a session of its own burns CPU, says so, then waits for us to close its stdin.
    burn = (
        "import sys, time\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        assert group_cpu_seconds(child.pid) >= 0.25
        assert group_cpu_seconds(child.pid + 10_000_000) == 0  # no such group
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
