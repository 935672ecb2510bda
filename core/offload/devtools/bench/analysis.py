"""Figures from benchmark samples: per-server tables, the local window, fault timings, goals."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ...stats import mean, percentile
from .load import Sample
from .scenarios import EXPECTED_THROUGHPUT, ORACLE, POLICIES


def latency_summary(samples: list[Sample]) -> dict[str, float | int]:
    latencies = [sample.latency_s * 1000 for sample in samples]
    return {
        "requests": len(samples),
        "mean_ms": round(mean(latencies), 3),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
    }


def per_server(samples: list[Sample], servers: list[str]) -> dict[str, dict[str, Any]]:
    """Requests, share and latency per answering server (failures under their own key)."""
    names = servers + sorted({s.server for s in samples} - set(servers))
    table = {}
    for name in names:
        answered = [sample for sample in samples if sample.server == name and sample.status == 200]
        table[name] = {**latency_summary(answered), "share": round(len(answered) / max(len(samples), 1), 4)}
    return table


def max_local_in_window(samples: list[Sample], local: str, window_s: float = 1.0) -> int:
    """Most local requests sent within any window of ``window_s`` (client clock)."""
    times = [sample.sent_at for sample in samples if sample.server == local]
    best = start = 0
    for end, sent in enumerate(times):
        while sent - times[start] > window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def analyse_original(result: dict[str, Any]) -> dict[str, Any]:
    samples: list[Sample] = result["samples"]
    local = result["local"]
    peak = max((s.throughput for s in samples if s.server == local and s.throughput is not None), default=0)
    return {
        "servers": per_server(samples, result["servers"]),
        "all": latency_summary(samples),
        "failed": sum(1 for sample in samples if sample.status != 200),
        "expected_throughput": EXPECTED_THROUGHPUT,
        "peak_local_throughput": peak,
        "max_local_per_1s_client_clock": max_local_in_window(samples, local),
        "local_per_second": local_per_second(samples, local),
    }


def local_per_second(samples: list[Sample], local: str) -> list[int]:
    """Local requests sent in each whole second of the run: the local throughput over time."""
    seconds = int(max((sample.sent_at for sample in samples), default=0.0)) + 1
    counts = [0] * seconds
    for sample in samples:
        if sample.server == local:
            counts[int(sample.sent_at)] += 1
    return counts


def analyse_policies(result: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for policy, samples in result["runs"].items():
        answered = [sample for sample in samples if sample.status == 200]
        shares = Counter(sample.server for sample in answered)
        rows[policy] = {
            **latency_summary(answered),
            "errors": len(samples) - len(answered),
            "share": {name: round(shares[name] / max(len(samples), 1), 3) for name in result["servers"]},
        }
    return {"rows": rows, "service_ms": result["service_ms"], "oracle_target": result["oracle_target"]}


def analyse_faults(result: dict[str, Any]) -> dict[str, Any]:
    samples: list[Sample] = result["samples"]
    events: dict[str, float] = result["events"]
    victim = result["victim"]
    killed, restarted, slowed = events["killed"], events["restart_requested"], events["slowed"]
    # While it is dead every attempt at the victim fails: the gateway's failure count says how many
    # attempts there were, and the last poll at which it still rose says when they stopped.
    polls = [(t, failures) for t, _, failures in result["victim_counts"]]
    before = max((failures for t, failures in polls if t <= killed), default=0)
    dead = [(t, failures) for t, failures in polls if killed < t <= restarted]
    attempts = (max((failures for _, failures in dead), default=before)) - before
    rises = [
        t for (t, failures), (_, previous) in zip(dead, [(killed, before), *dead], strict=False) if failures > previous
    ]
    stop_s = (max(rises) - killed) if rises else 0.0
    readmitted = [s.sent_at for s in samples if s.server == victim and restarted <= s.sent_at < slowed]
    after_slow = [s for s in samples if s.sent_at >= slowed]
    slow_served = [s.sent_at for s in after_slow if s.server == victim]
    return {
        "requests": len(samples),
        "failed": sum(1 for sample in samples if sample.status != 200),
        "events_s": {name: round(value, 3) for name, value in events.items()},
        "victim": victim,
        "attempts_at_victim_while_dead": attempts,
        "stops_being_chosen_s": round(stop_s, 3),
        "readmitted_after_restart_s": round(min(readmitted) - restarted, 3) if readmitted else None,
        "traffic_shift_after_slowdown_s": round(max(slow_served) - slowed, 3) if slow_served else 0.0,
        "victim_share_after_slowdown": round(len(slow_served) / max(len(after_slow), 1), 4),
        "counters": result["counters"],
        "servers": per_server(samples, result["servers"]),
    }


def goals(original: dict[str, Any], policies: dict[str, Any], faults: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each with the figure that decides it."""
    rows = policies["rows"]
    p2c, oracle = rows["p2c_ewma"]["p99_ms"], rows[ORACLE]["p99_ms"]
    return [
        {
            "goal": "zero failed idempotent requests when one of three edges dies under load",
            "figure": f"{faults['failed']} failed of {faults['requests']}",
            "met": faults["failed"] == 0,
        },
        {
            "goal": "p2c_ewma p99 <= 1.2 x the oracle's",
            "figure": f"{p2c:.2f} ms vs oracle {oracle:.2f} ms ({p2c / oracle:.2f}x)",
            "met": p2c <= 1.2 * oracle,
        },
        {
            "goal": "p2c_ewma p99 better than random and min_latency",
            "figure": f"{p2c:.2f} ms vs random {rows['random']['p99_ms']:.2f} ms, "
            f"min_latency {rows['min_latency']['p99_ms']:.2f} ms",
            "met": p2c < rows["random"]["p99_ms"] and p2c < rows["min_latency"]["p99_ms"],
        },
        {
            "goal": "local throughput never above expected_throughput + 1 per window (original rule)",
            "figure": f"peak {original['peak_local_throughput']} with expected {original['expected_throughput']}",
            "met": original["peak_local_throughput"] <= original["expected_throughput"] + 1,
        },
    ]


POLICY_ORDER = (*POLICIES, ORACLE)
