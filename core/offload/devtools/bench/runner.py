"""``offload bench``: run the scenarios, print the tables, write the plots, judge the goals."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..processes import StartupError
from ..tables import as_text, goals_table
from .analysis import analyse_faults, analyse_original, analyse_policies, goals, repeat_summary
from .load import Progress
from .report import (
    draw_original_plots,
    faults_table,
    original_table,
    policies_table,
    repeats_table,
    spikes_title,
)
from .scenarios import run_faults, run_original, run_policies, run_spikes, total_requests


@dataclass(frozen=True)
class BenchOptions:
    out: Path = Path("bench/out")
    json: bool = False
    seed: int = 7
    repeat: int = 1  # times the policy comparisons (with and without outliers) run, each on fresh processes


async def run_bench(options: BenchOptions) -> int:
    """Run everything; 0 when every goal is met, 1 when one is missed, 2 when it could not run."""
    started = time.perf_counter()
    progress = Progress(total_requests(options.repeat))
    print("offload bench: edges and gateways on 127.0.0.1 (separate processes) ...", file=sys.stderr)
    policies: list[dict[str, Any]] = []
    spikes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as workdir:
        log_dir = Path(workdir)
        try:
            original = await run_original(log_dir, progress, options.seed)
            for index in range(options.repeat):
                # Each repeat on fresh edges and gateways, with its own load.
                policies.append(analyse_policies(await run_policies(log_dir, progress, options.seed + index)))
                spikes.append(analyse_policies(await run_spikes(log_dir, progress, options.seed + index)))
            faults = await run_faults(log_dir, progress, options.seed)
        except StartupError as exc:
            progress.finish()
            print(f"offload bench: {exc}", file=sys.stderr)
            return 2
    progress.finish()
    figures: dict[str, Any] = {
        "original": analyse_original(original),
        "policies": policies[0],
        "spikes": spikes[0],
        "repeats": {"policies": repeat_summary(policies), "spikes": repeat_summary(spikes)},
        "faults": analyse_faults(faults),
    }
    if options.repeat > 1:
        figures["repeats"]["runs"] = {"policies": policies, "spikes": spikes}
    figures["goals"] = goals(figures["original"], policies, figures["faults"], spikes)
    try:
        plots = draw_original_plots(
            original["samples"],
            original["servers"],
            original["local"],
            figures["original"]["expected_throughput"],
            options.out,
        )
        figures["plots"] = [str(path) for path in plots]
    except ImportError:
        figures["plots"] = []
        print(
            "offload bench: matplotlib is not installed, no plots (pip install 'task-offloading[bench]')",
            file=sys.stderr,
        )
    figures["elapsed_s"] = round(time.perf_counter() - started, 1)
    if options.json:
        print(json.dumps(figures, indent=2))
    else:
        print()
        tables = [
            original_table(figures["original"]),
            policies_table(figures["policies"]),
            policies_table(figures["spikes"], spikes_title()),
        ]
        if options.repeat > 1:
            tables.append(repeats_table(figures["repeats"]["policies"], figures["repeats"]["spikes"]))
        tables.append(faults_table(figures["faults"]))
        for table in tables:
            print(table, end="\n\n")
        print(as_text(goals_table(figures["goals"])))
        if figures["plots"]:
            print(f"\nplots: {', '.join(figures['plots'])}")
        print(f"ran in {figures['elapsed_s']} s")
    return 0 if all(goal["met"] for goal in figures["goals"]) else 1
