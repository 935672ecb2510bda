"""Printing benchmark tables and drawing the original experiment's two plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tables import add_rows, as_text, table
from .load import Sample
from .scenarios import ORACLE, POLICY_WARMUP, SPIKE_EDGE, SPIKE_EVERY, SPIKE_MS

BIN_S = 0.1


def fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:  # NaN
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def original_table(figures: dict[str, Any]) -> str:
    servers = table("server", "requests", "share", "mean ms", "p50 ms", "p99 ms")
    add_rows(
        servers,
        (
            (
                name,
                row["requests"],
                f"{100 * row['share']:.1f}%",
                fmt(row["mean_ms"]),
                fmt(row["p50_ms"]),
                fmt(row["p99_ms"]),
            )
            for name, row in figures["servers"].items()
        ),
    )
    per_second = ", ".join(str(count) for count in figures["local_per_second"])
    return as_text(
        "1. The original experiment: 1000 requests 1-5 ms apart, throughput rule on (expected 25/s), min_latency",
        servers,
        f"failed {figures['failed']}; local throughput peak {figures['peak_local_throughput']} per 1 s window "
        f"(gateway's meter), {figures['max_local_per_1s_client_clock']} by the client's clock; "
        f"expected {figures['expected_throughput']}",
        f"local requests in each second of the run: {per_second}",
    )


def policies_table(figures: dict[str, Any], title: str | None = None) -> str:
    """Each policy's latency and shares, with its p99 against the oracle's run beside it."""
    servers = figures["servers"]
    service = ", ".join(f"{name} {figures['service_ms'][name]:g} ms" for name in servers)
    policies = table("policy", "p50 ms", "p99 ms", "mean ms", "errors", "p99 / oracle beside", *servers)
    for policy, row in figures["rows"].items():
        label = f"oracle ({figures['oracle_target']})" if policy == ORACLE else policy
        shares = [f"{100 * row['share'][name]:.1f}%" for name in servers]
        versus = "-" if row.get("vs_oracle") is None else f"{row['vs_oracle']:.2f}x ({row['oracle_beside_p99_ms']:.2f})"
        add_rows(
            policies,
            [(label, fmt(row["p50_ms"]), fmt(row["p99_ms"]), fmt(row["mean_ms"]), row["errors"], versus, *shares)],
        )
    heading = title or "2. Policies side by side, same open-loop load (~330 req/s), each with the oracle beside it"
    counted = f"true cost per request: {service}; {POLICY_WARMUP} warm-up requests not counted"
    return as_text(f"{heading}; {counted}", policies)


def spikes_title() -> str:
    return (
        f"2b. Lone outliers: {SPIKE_EDGE} answers 1 request in {SPIKE_EVERY} {SPIKE_MS:g} ms late "
        "(p2c_ewma, the oracle beside it)"
    )


def repeats_table(normal: dict[str, Any], spikes: dict[str, Any]) -> str:
    """p2c_ewma's p99 against the oracle's in every repeat, without and with outliers."""
    drawn = table(
        "repeat",
        "p2c p99 ms",
        "oracle p99 ms",
        "ratio",
        "p2c off best",
        "spikes: p2c p99 ms",
        "oracle p99 ms",
        "ratio",
        "p2c off best",
    )
    for index in range(normal["repeats"]):
        add_rows(
            drawn,
            [
                (
                    index + 1,
                    fmt(normal["p2c_p99_ms"][index]),
                    fmt(normal["oracle_p99_ms"][index]),
                    f"{normal['ratios'][index]:.2f}x",
                    f"{normal['p2c_off_best'][index]:.1%}",
                    fmt(spikes["p2c_p99_ms"][index]),
                    fmt(spikes["oracle_p99_ms"][index]),
                    f"{spikes['ratios'][index]:.2f}x",
                    f"{spikes['p2c_off_best'][index]:.1%}",
                )
            ],
        )
    for label, key in (("median", "median_ratio"), ("worst", "worst_ratio")):
        add_rows(drawn, [(label, "", "", f"{normal[key]:.2f}x", "", "", "", f"{spikes[key]:.2f}x", "")])
    return as_text(f"2c. p2c_ewma against the oracle in each of {normal['repeats']} repeats (fresh gateways)", drawn)


def faults_table(figures: dict[str, Any]) -> str:
    events = figures["events_s"]
    victim = figures["victim"]
    counters = figures["counters"]
    return "\n".join(
        [
            f"3. Faults under p2c_ewma (~200 req/s): {victim} killed at {events['killed']:.1f} s, restarted at "
            f"{events['restart_requested']:.1f} s, slowed to +40 ms at {events['slowed']:.1f} s",
            f"   failed requests: {figures['failed']} of {figures['requests']} "
            f"(retries {counters['retries']}, budget refusals {counters['retries_refused_by_budget']})",
            f"   attempts at {victim} while dead: {figures['attempts_at_victim_while_dead']} (each retried elsewhere); "
            f"it stopped being chosen within {fmt(figures['stops_being_chosen_s'], 3)} s (polled every 0.05 s)",
            f"   readmitted {fmt(figures['readmitted_after_restart_s'], 3)} s after the restart began",
            f"   after the slowdown: traffic moved away within {fmt(figures['traffic_shift_after_slowdown_s'], 3)} s "
            f"({100 * figures['victim_share_after_slowdown']:.1f}% of later requests still went to {victim})",
        ]
    )


def draw_original_plots(samples: list[Sample], servers: list[str], local: str, expected: int, out: Path) -> list[Path]:
    """The original's two plots: per-server request counts with throughput, and local counts with throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    end = max((sample.sent_at for sample in samples), default=0.0)
    bins = int(end / BIN_S) + 1
    edges = [index * BIN_S for index in range(bins)]
    counts = {name: [0] * bins for name in servers}
    for sample in samples:
        if sample.server in counts:
            counts[sample.server][int(sample.sent_at / BIN_S)] += 1
    # Every answer carries the gateway's local throughput at that moment, whichever server gave it.
    local_points = [(s.sent_at, s.throughput) for s in samples if s.throughput is not None]

    paths = []
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for name in servers:
        axis.plot(edges, counts[name], label=f"{name} requests / {int(BIN_S * 1000)} ms")
    axis.set_xlabel("time (s)")
    axis.set_ylabel(f"requests per {int(BIN_S * 1000)} ms")
    twin = axis.twinx()
    twin.plot([t for t, _ in local_points], [v for _, v in local_points], "k:", label="local throughput (per 1 s)")
    twin.set_ylabel("local throughput (requests in last 1 s)")
    paths.append(finish(figure, axis, twin, "Requests per server over time, with the local throughput",
                        out / "request_counts.png"))  # fmt: skip

    figure, axis = plt.subplots(figsize=(9, 4.5))
    axis.bar(edges, counts[local], width=BIN_S * 0.9, align="edge", label=f"local requests / {int(BIN_S * 1000)} ms")
    axis.set_xlabel("time (s)")
    axis.set_ylabel(f"local requests per {int(BIN_S * 1000)} ms")
    twin = axis.twinx()
    twin.plot([t for t, _ in local_points], [v for _, v in local_points], "r-", label="local throughput (per 1 s)")
    twin.axhline(expected, color="grey", linestyle="--", label=f"expected_throughput = {expected}")
    twin.set_ylabel("requests in last 1 s")
    paths.append(finish(figure, axis, twin, "Local request count and local throughput (throughput rule on)",
                        out / "local_throughput.png"))  # fmt: skip
    return paths


def finish(figure: Any, axis: Any, twin: Any, title: str, path: Path) -> Path:
    """One legend for both y axes, the title, and the PNG."""
    import matplotlib.pyplot as plt

    handles, labels = axis.get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    axis.legend(handles + twin_handles, labels + twin_labels, loc="upper right", fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
