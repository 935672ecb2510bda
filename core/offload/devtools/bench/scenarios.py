"""The benchmark scenarios: the original experiment, policies side by side (also with outliers), and faults."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from ..processes import ProcessGroup
from .load import Progress, Sample, open_loop
from .topology import EdgeSpec, GatewayOptions, Topology

ORIGINAL_EDGES = [EdgeSpec("local", 0.0, local=True), EdgeSpec("edge-near", 2.0), EdgeSpec("edge-far", 10.0)]
ORIGINAL_REQUESTS = 1000
ORIGINAL_GAP_MS = (1.0, 5.0)
EXPECTED_THROUGHPUT = 25

# Heterogeneous: the device is slow to compute, e1 is near but slow to compute (its probes look
# fast), e5 is the true best, e20 is far.
POLICY_EDGES = [
    EdgeSpec("local", 0.0, compute_ms=15.0, local=True),
    EdgeSpec("e1", 1.0, compute_ms=12.0),
    EdgeSpec("e5", 5.0),
    EdgeSpec("e20", 20.0),
]
POLICIES = ("random", "min_latency", "p2c_ewma", "estimated_completion")
ORACLE = "oracle"
POLICY_REQUESTS = 1600
POLICY_ROUNDS = 4
POLICY_GAP_MS = (2.0, 4.0)
# Sent through every gateway before its rounds and not counted: a fresh process's first answers
# are slow everywhere (connections opened, code run for the first time) and a policy meets each
# server once; the comparison is about the choices after that.
POLICY_WARMUP = 100

# The same edges with the true best answering one request in 200 late: lone outliers, which
# must not cost it its traffic. Only p2c_ewma (the default) runs it, beside the oracle.
SPIKE_EDGE = "e5"
SPIKE_EVERY = 200
SPIKE_MS = 100.0
SPIKE_EDGES = [
    replace(spec, spike_every=SPIKE_EVERY, spike_ms=SPIKE_MS) if spec.name == SPIKE_EDGE else spec
    for spec in POLICY_EDGES
]
SPIKE_POLICIES = ("p2c_ewma",)

FAULT_EDGES = [EdgeSpec("f1", 1.0), EdgeSpec("f5", 5.0), EdgeSpec("f20", 20.0)]
FAULT_REQUESTS = 2200
FAULT_GAP_MS = (3.0, 7.0)
KILL_AT_S, RESTART_AT_S, SLOW_AT_S = 2.5, 5.5, 8.5
SLOW_DELAY_MS = 40.0


def total_requests(repeat: int = 1) -> int:
    """Every request the decision bench sends, with the policy comparisons run ``repeat`` times."""
    # Each policy's requests, and as many again to the oracle beside it.
    decisions = 2 * (POLICY_REQUESTS + POLICY_WARMUP) * (len(POLICIES) + len(SPIKE_POLICIES))
    return ORIGINAL_REQUESTS + repeat * decisions + FAULT_REQUESTS


@dataclass
class Scenario:
    """A topology that stops its processes when the scenario ends."""

    log_dir: Path
    group: ProcessGroup = field(init=False)
    topology: Topology = field(init=False)

    def __post_init__(self) -> None:
        self.group = ProcessGroup(self.log_dir)
        self.topology = Topology(self.group, self.log_dir)

    async def __aenter__(self) -> Topology:
        return self.topology

    async def __aexit__(self, *exc: object) -> None:
        self.group.stop_all()


async def gateway_counters(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/servers") as reply:
        return (await reply.json())["pools"]["math"]


async def run_original(log_dir: Path, progress: Progress, seed: int) -> dict[str, Any]:
    """1000 requests 1-5 ms apart through the original rule (local while <= 25/s, else min latency)."""
    async with Scenario(log_dir) as topology:
        await topology.start_edges(ORIGINAL_EDGES)
        options = GatewayOptions(
            policy="min_latency", consider_throughput=True, expected_throughput=EXPECTED_THROUGHPUT
        )
        _, url = await topology.start_gateway("original", options)
        samples = await open_loop(
            lambda i: f"{url}/square/{i}",
            ORIGINAL_REQUESTS,
            ORIGINAL_GAP_MS,
            random.Random(seed),
            progress,
            "original experiment",
        )
    return {"samples": samples, "servers": [spec.name for spec in ORIGINAL_EDGES], "local": "local"}


async def run_policies(
    log_dir: Path,
    progress: Progress,
    seed: int,
    edges: list[EdgeSpec] = POLICY_EDGES,
    policies: tuple[str, ...] = POLICIES,
    label: str = "policy",
) -> dict[str, Any]:
    """The same open-loop load through each policy, each time with the oracle beside it.

    Every contender has its own gateway over the same edges. The oracle knows
    every server's true cost and always names the cheapest; it takes the same
    load at the same moments as the policy it is compared with, so a hiccup of
    this shared machine falls on both alike (taking turns, one of them could
    meet a busy second the other never saw). The policies take turns in
    rounds, in a rotating order.
    """
    oracle_target = min(edges, key=lambda spec: spec.service_ms).name
    runs: dict[str, list[Sample]] = {name: [] for name in (*policies, ORACLE)}
    alongside: dict[str, list[Sample]] = {name: [] for name in policies}
    per_round = POLICY_REQUESTS // POLICY_ROUNDS
    async with Scenario(log_dir) as topology:
        await topology.start_edges(edges)
        urls = {}
        for name in (*policies, ORACLE):
            _, urls[name] = await topology.start_gateway(
                f"{label}-{name}", GatewayOptions(policy="random" if name == ORACLE else name)
            )
        rng = random.Random(seed)

        async def pair(name: str, count: int, offset: int) -> tuple[list[Sample], list[Sample]]:
            """``count`` requests through ``name``'s gateway and as many through the oracle's, at once."""
            chosen, oracle = await asyncio.gather(
                open_loop(
                    lambda i: f"{urls[name]}/square/{offset + i}",
                    count,
                    POLICY_GAP_MS,
                    random.Random(rng.random()),
                    progress,
                    f"{label} {name}",
                ),
                open_loop(
                    lambda i: f"{urls[ORACLE]}/square/{offset + i}?server={oracle_target}",
                    count,
                    POLICY_GAP_MS,
                    random.Random(rng.random()),
                    progress,
                    f"{label} {name}",
                ),
            )
            return chosen, oracle

        for name in policies:
            await pair(name, POLICY_WARMUP, POLICY_ROUNDS * POLICY_REQUESTS)
        for round_index in range(POLICY_ROUNDS):
            shift = round_index % len(policies)
            for name in policies[shift:] + policies[:shift]:
                chosen, oracle = await pair(name, per_round, round_index * POLICY_REQUESTS)
                runs[name].extend(chosen)
                runs[ORACLE].extend(oracle)
                alongside[name].extend(oracle)
    return {
        "runs": runs,
        "alongside": alongside,
        "servers": [spec.name for spec in edges],
        "service_ms": {spec.name: spec.service_ms for spec in edges},
        "oracle_target": oracle_target,
    }


async def run_spikes(log_dir: Path, progress: Progress, seed: int) -> dict[str, Any]:
    """p2c_ewma beside the oracle while the best edge answers one request in SPIKE_EVERY SPIKE_MS late."""
    return await run_policies(log_dir, progress, seed, SPIKE_EDGES, SPIKE_POLICIES, "spikes")


async def run_faults(log_dir: Path, progress: Progress, seed: int) -> dict[str, Any]:
    """p2c_ewma while the best edge is killed, restarted, then slowed down."""
    victim = FAULT_EDGES[0].name
    async with Scenario(log_dir) as topology:
        await topology.start_edges(FAULT_EDGES)
        options = GatewayOptions(policy="p2c_ewma", probe_interval_s=0.5, eject_base_s=5.0)
        _, url = await topology.start_gateway("faults", options)
        events: dict[str, float] = {}
        victim_counts: list[tuple[float, int, int]] = []  # (t, requests, failures) as the gateway counts them
        origin = time.perf_counter()

        async def timeline() -> None:
            async def at(offset: float) -> None:
                await asyncio.sleep(max(0.0, origin + offset - time.perf_counter()))

            await at(KILL_AT_S)
            topology.kill(victim)
            events["killed"] = time.perf_counter() - origin
            await at(RESTART_AT_S)
            events["restart_requested"] = time.perf_counter() - origin
            await topology.restart(victim)
            events["restarted"] = time.perf_counter() - origin
            await at(SLOW_AT_S)
            await topology.set_delay(victim, SLOW_DELAY_MS)
            events["slowed"] = time.perf_counter() - origin

        async def watch_victim() -> None:
            # What the gateway sent the victim and how much failed, 20 times a second (ends with the run).
            while True:
                pool = await gateway_counters(url)
                state = next(server for server in pool["servers"] if server["name"] == victim)
                victim_counts.append((time.perf_counter() - origin, state["requests"], state["failures"]))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_victim())
        timeline_task = asyncio.create_task(timeline())
        try:
            samples = await open_loop(
                lambda i: f"{url}/square/{i}",
                FAULT_REQUESTS,
                FAULT_GAP_MS,
                random.Random(seed),
                progress,
                "faults",
                origin=origin,
            )
            await timeline_task
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        counters = (await gateway_counters(url))["counters"]
    return {
        "samples": samples,
        "victim": victim,
        "events": events,
        "victim_counts": victim_counts,
        "counters": counters,
        "servers": [spec.name for spec in FAULT_EDGES],
    }
