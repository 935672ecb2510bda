"""The outage benchmark's figures and verdicts on synthetic samples, and one short real run of each scenario."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tomllib
from pathlib import Path

import pytest

from offload.devtools.bench import outages
from offload.devtools.bench.outages import (
    ERROR_EXCERPT,
    OutagesOptions,
    Outcome,
    across_runs,
    busiest,
    chosen_until,
    error_excerpt,
    parse_pool_option,
    plan,
    render,
    run_figures,
    summarize,
    time_to_move,
)
from offload.devtools.bench.topology import GatewayOptions, Topology
from offload.devtools.processes import ProcessGroup
from offload.errors import ConfigError

OK = Outcome(0.0, 0.010, 200, "e1")


def failure(status: int, error: str, sent_at: float = 1.0, latency_s: float = 0.5) -> Outcome:
    return Outcome(sent_at, latency_s, status, "?", error)


def test_run_figures_count_every_non_200_by_status_and_by_message() -> None:
    outcomes = [OK] * 97 + [failure(502, "ServerDisconnected")] * 2 + [failure(0, "TimeoutError: ")]
    figures = run_figures(outcomes, elapsed_s=2.0)
    assert figures["requests"] == 100 and figures["rps"] == 50.0
    assert figures["failed"] == 3
    assert figures["failed_by_status"] == {"502": 2, "0": 1}
    assert figures["errors"] == {"502 ServerDisconnected": 2, "0 TimeoutError: ": 1}
    # 100 samples: the 99th by rank is one of the three 500 ms failures; the max is one of them too.
    assert figures["p99_ms"] == 500.0 and figures["max_ms"] == 500.0


def test_run_figures_of_an_empty_run_have_no_latencies() -> None:
    figures = run_figures([], elapsed_s=0.0)
    assert figures["requests"] == 0 and figures["p99_ms"] is None and figures["max_ms"] is None
    assert figures["rps"] == 0.0


def test_across_runs_gives_worst_and_median() -> None:
    runs = [{"failed": 8}, {"failed": 0}, {"failed": 1}]
    assert across_runs(runs, "failed") == {"per_run": [8, 0, 1], "worst": 8, "median": 1}
    # A run without the figure (None) is listed but judged by the others.
    assert across_runs([{"x": None}, {"x": 2.0}], "x") == {"per_run": [None, 2.0], "worst": 2.0, "median": 2.0}


def test_time_to_move_is_the_longest_wait_after_the_stop() -> None:
    stopped, resumed = 2.0, 12.0
    outcomes = [
        Outcome(1.0, 0.5, 200, "e1"),  # done before the stop: not counted
        Outcome(1.9, 0.6, 200, "e2"),  # in flight at the stop: 0.5 s after it
        Outcome(3.0, 1.2, 200, "e1"),  # sent while stopped: its latency
        Outcome(12.5, 5.0, 200, "e2"),  # sent after the SIGCONT: not counted
    ]
    assert time_to_move(outcomes, stopped, resumed) == pytest.approx(1.2)
    # One stuck at the stop until the gateway's 10 s timeout outweighs everything sent later.
    stuck = Outcome(1.99, 10.0, 504, "?")
    assert time_to_move([*outcomes, stuck], stopped, resumed) == pytest.approx(9.99)
    assert time_to_move([], stopped, resumed) == 0.0


def test_busiest_counts_all_attempts_or_only_recent_ones() -> None:
    now = {"e1": 900, "e2": 500, "e5": 100}
    assert busiest(now) == "e1"
    # Since the earlier read e1 took 0 and e2 took 200: e2 is the one in use now.
    assert busiest(now, {"e1": 900, "e2": 300, "e5": 90}) == "e2"


def test_chosen_until_is_when_the_stopped_edges_counter_stopped_rising() -> None:
    polls = [(2.1, 110), (2.2, 130), (2.6, 140), (2.7, 140), (12.0, 140)]
    assert chosen_until(polls, count_at_stop=100, stopped_at=2.0) == pytest.approx(0.6)
    assert chosen_until([(2.1, 100), (3.0, 100)], count_at_stop=100, stopped_at=2.0) == 0.0
    assert chosen_until([], count_at_stop=100, stopped_at=2.0) is None


def test_summarize_judges_failures_and_time_to_move_in_every_run() -> None:
    kill = {"16 clients": [{"failed": 0}, {"failed": 3}, {"failed": 0}], "64 clients": [{"failed": 0}] * 3}
    hang_runs = [
        {"failed": 0, "time_to_move_s": 0.2, "max_ms": 210.0},
        {"failed": 0, "time_to_move_s": 2.5, "max_ms": 2500.0},
    ]
    figures = summarize(kill, {"p2c_ewma": hang_runs})
    verdicts = {goal["goal"]: goal["met"] for goal in figures["goals"]}
    assert verdicts == {
        f"kill, 16 clients: {outages.NO_FAILURES_GOAL}": False,
        f"kill, 64 clients: {outages.NO_FAILURES_GOAL}": True,
        f"hang, p2c_ewma: {outages.NO_FAILURES_GOAL}": True,
        f"hang, p2c_ewma: {outages.MOVE_GOAL}": False,  # one run of two took 2.5 s
    }
    assert figures["kill"]["16 clients"]["failed"] == {"per_run": [0, 3, 0], "worst": 3, "median": 0}
    assert figures["hang"]["p2c_ewma"]["time_to_move_s"]["worst"] == 2.5


def test_render_shows_each_run_its_errors_and_the_goals() -> None:
    kill_run = {
        "clients": 16, "victim": "e1", "killed_at_s": 2.0, **run_figures([OK, failure(502, "gone")], 1.0)
    }  # fmt: skip
    hang_run = {
        **run_figures([OK, failure(504, "did not answer within 10 s", latency_s=10.0)], 1.0),
        "victim": "e2", "stopped_at_s": 2.0, "resumed_at_s": 12.0, "time_to_move_s": 10.0,
        "sent_to_stopped": 67, "chosen_until_s": 0.3, "counters": {},
    }  # fmt: skip
    text = render(summarize({"16 clients": [kill_run]}, {"min_latency": [hang_run]}))
    assert "1 x 502 gone" in text and "1 x 504 did not answer within 10 s" in text
    assert "504:1" in text and "10,000.0" in text and "67" in text
    assert re.search(r"\[MISSED\] +hang, min_latency: requests move within about 2 s", text)


def test_error_excerpt_prefers_the_gateways_message_and_cuts_it_short() -> None:
    body = json.dumps({"error": "server 'e1' is unreachable: ServerDisconnected", "status_code": 502}).encode()
    assert error_excerpt(body) == "server 'e1' is unreachable: ServerDisconnected"
    assert error_excerpt(b"x" * 500) == "x" * ERROR_EXCERPT
    assert error_excerpt(b"[1, 2]") == "[1, 2]"


def test_parse_pool_option_reads_toml_like_values() -> None:
    assert parse_pool_option("hedge=true") == ("hedge", True)
    assert parse_pool_option("retries = 2") == ("retries", 2)
    assert parse_pool_option("hedge_after_ms=2.5") == ("hedge_after_ms", 2.5)
    assert parse_pool_option("policy=min_latency") == ("policy", "min_latency")
    with pytest.raises(ConfigError):
        parse_pool_option("hedge")


def test_plan_interleaves_the_contenders_over_the_runs() -> None:
    order = [(scenario, name) for scenario, name, _ in plan(OutagesOptions(runs=2, kill_clients=(16, 64)))]
    first = [
        ("kill", "16 clients"), ("kill", "64 clients"),
        ("hang", "min_latency"), ("hang", "p2c_ewma"), ("hang", "p2c_ewma + hedge"),
    ]  # fmt: skip
    assert order == first + first[1:] + first[:1]
    assert [name for _, name, _ in plan(OutagesOptions(scenario="kill", runs=1, kill_clients=(8,)))] == ["8 clients"]


def test_gateway_config_writes_hedge_and_extras_only_when_given(tmp_path: Path) -> None:
    topology = Topology(ProcessGroup(tmp_path), tmp_path)
    topology.urls, topology.specs = {"e1": "http://127.0.0.1:1"}, {"e1": outages.EDGES[0]}
    plain = tomllib.loads(topology.gateway_config(GatewayOptions(policy="p2c_ewma")))["plugins"]["math"]
    assert "hedge" not in plain and "retries" not in plain
    options = GatewayOptions(policy="p2c_ewma", hedge=True, extra=(("retries", 2), ("note", 'a "b"')))
    pool = tomllib.loads(topology.gateway_config(options))["plugins"]["math"]
    assert pool["hedge"] is True and pool["retries"] == 2 and pool["note"] == 'a "b"'
    assert pool["servers"] == [{"name": "e1", "url": "http://127.0.0.1:1", "local": False}]


def test_pause_stops_the_whole_process_and_resume_continues_it(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    process = group.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], "http://127.0.0.1:1/")
    try:
        assert process.pid is not None
        group.pause(process)
        # waitpid reports the child's stop and continuation itself: no polling, no sleeping.
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
        group.resume(process)
        _, status = os.waitpid(process.pid, os.WCONTINUED)
        assert os.WIFCONTINUED(status)
    finally:
        group.stop_all(timeout_s=2.0)
    assert process.popen is not None and process.popen.returncode is not None


async def test_a_short_kill_run_kills_an_edge_and_counts_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outages, "KILL_DURATION_S", 1.5)
    monkeypatch.setattr(outages, "OUTAGE_AT_S", 0.7)
    run = await outages.run_kill(tmp_path, "kill-test", 8, ())
    assert run["victim"] in {spec.name for spec in outages.EDGES}
    assert run["killed_at_s"] >= 0.7 and run["requests"] > 50
    assert run["failed"] == sum(run["errors"].values())


async def test_a_short_hang_run_stops_and_resumes_the_busiest_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outages, "OUTAGE_AT_S", 0.8)
    monkeypatch.setattr(outages, "RECENT_S", 0.3)
    monkeypatch.setattr(outages, "HANG_FOR_S", 1.0)
    monkeypatch.setattr(outages, "HANG_TAIL_S", 0.3)
    monkeypatch.setattr(outages, "HANG_CLIENTS", 16)
    run = await outages.run_hang(tmp_path, "hang-test", outages.hang_variants()["p2c_ewma + hedge"])
    # The figures are rounded to the millisecond: 1.803 - 0.803 is 0.9999999999999999.
    assert run["resumed_at_s"] - run["stopped_at_s"] >= 1.0 - 1e-3
    assert run["requests"] > 50 and run["sent_to_stopped"] is not None
    # Whatever waited on the stopped edge was answered by the end: within the stop, or soon after it.
    assert 0.0 < run["time_to_move_s"] < outages.CLIENT_TIMEOUT_S
