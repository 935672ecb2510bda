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
from .analysis import analyse_faults, analyse_original, analyse_policies, goals
from .load import Progress
from .report import draw_original_plots, faults_table, original_table, policies_table
from .scenarios import run_faults, run_original, run_policies, total_requests


@dataclass(frozen=True)
class BenchOptions:
    out: Path = Path("bench/out")
    json: bool = False
    seed: int = 7


async def run_bench(options: BenchOptions) -> int:
    """Run everything; 0 when every goal is met, 1 when one is missed, 2 when it could not run."""
    started = time.perf_counter()
    progress = Progress(total_requests())
    print("offload bench: edges and gateways on 127.0.0.1 (separate processes) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as workdir:
        log_dir = Path(workdir)
        try:
            original = await run_original(log_dir, progress, options.seed)
            policies = await run_policies(log_dir, progress, options.seed)
            faults = await run_faults(log_dir, progress, options.seed)
        except StartupError as exc:
            progress.finish()
            print(f"offload bench: {exc}", file=sys.stderr)
            return 2
    progress.finish()
    figures: dict[str, Any] = {
        "original": analyse_original(original),
        "policies": analyse_policies(policies),
        "faults": analyse_faults(faults),
    }
    figures["goals"] = goals(figures["original"], figures["policies"], figures["faults"])
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
        for table in (
            original_table(figures["original"]),
            policies_table(figures["policies"]),
            faults_table(figures["faults"]),
        ):
            print(table, end="\n\n")
        print(as_text(goals_table(figures["goals"])))
        if figures["plots"]:
            print(f"\nplots: {', '.join(figures['plots'])}")
        print(f"ran in {figures['elapsed_s']} s")
    return 0 if all(goal["met"] for goal in figures["goals"]) else 1
