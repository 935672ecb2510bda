"""Printing results: the text table, Markdown, BEFORE/AFTER comparison, and loading saved runs."""

from __future__ import annotations

import json
from typing import Any

from attacks import ATTACKS

# --- output ------------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def alive_text(record: dict[str, Any]) -> str:
    def one(value: Any) -> str:
        return "-" if value is None else ("up" if value else "DEAD")

    return f"{one(record.get('gateway_alive'))}/{one(record.get('edge_alive'))}"


def row_cells(record: dict[str, Any]) -> list[str]:
    delta = record.get("counter_delta")
    delta_text = "-" if delta is None else f"{delta:+d}"
    rss = f"{fmt(record.get('rss_before_mb'), 0)}->{fmt(record.get('rss_after_mb'), 0)}"
    if record.get("rss_peak_mb") is not None:
        rss += f" (pk {fmt(record.get('rss_peak_mb'), 0)})"
    stall = fmt(record.get("stall_ms"), 0)
    if record.get("stall_open"):
        stall = ">" + stall
    if record.get("health_bad"):
        stall += f" ({record['health_bad']} bad)"
    statuses = "; ".join(record.get("statuses") or []) or (
        f"skipped: {record.get('skipped')}" if record.get("skipped") else "-"
    )
    return [record["name"], record.get("verdict", ""), statuses, delta_text, rss, stall, alive_text(record)]


HEADERS = ["attack", "verdict", "status(es)", "Δcounter", "gw RSS MB", "stall ms", "gw/edge"]


def text_table(records: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    rows = [row_cells(r) for r in records]
    status_width = 70
    widths = [
        max(len(HEADERS[i]), *(len(row[i]) if i != 2 else min(len(row[i]), status_width) for row in rows))
        for i in range(len(HEADERS))
    ]
    lines = []
    if meta:
        lines.append(
            f"security probe{(' [' + meta['label'] + ']') if meta.get('label') else ''}: gateway {meta.get('gateway')}"
            f" (pid {meta.get('gateway_pid')}, nofile {meta.get('gateway_nofile')}), edge {meta.get('edge')}"
            f" (pid {meta.get('edge_pid')}), {meta.get('started')}"
        )
    lines.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(HEADERS)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        status = row[2]
        chunks = [status[i : i + status_width] for i in range(0, len(status), status_width)] or [""]
        first = [*row[:2], chunks[0], *row[3:]]
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(first)).rstrip())
        for chunk in chunks[1:]:
            lines.append((" " * (widths[0] + widths[1] + 4) + chunk).rstrip())
    lines.append("")
    lines.append("notes:")
    for record in records:
        for note in record.get("notes") or []:
            lines.append(f"  {record['name']}: {note}")
        answer = record.get("details", {}).get("answer")
        if answer:
            lines.append(f"  {record['name']}: answer {answer!r}")
    lines.append("")
    lines.append(
        "verdict: blocked = the attack failed safely; SUCCEEDS = it still works; DEGRADED = it was refused "
        "but slowed/bloated the gateway; CRASH = a process died; info = no rule to judge by."
    )
    lines.append(
        "stall = worst GET /health latency (fresh connection every 50 ms) during the attack; "
        "'>' = a poll was still waiting at the end; gw/edge = processes alive afterwards."
    )
    return "\n".join(lines)


def md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for record in records:
        lines.append("| " + " | ".join(md_escape(c) for c in row_cells(record)) + " |")
    return "\n".join(lines)


def compact(record: dict[str, Any] | None) -> str:
    if record is None:
        return "not run"
    cells = row_cells(record)
    if record.get("skipped"):
        return f"skipped ({record['skipped']})"
    stall = cells[5].replace(" (", " ms (", 1) if " (" in cells[5] else f"{cells[5]} ms"
    stall = stall.replace(" bad)", " bad polls)")
    return f"**{cells[1]}**: {cells[2]}; Δcounter {cells[3]}; RSS MB {cells[4]}; stall {stall}; gw/edge {cells[6]}"


def compare_table(before: list[dict[str, Any]], after: list[dict[str, Any]], markdown: bool) -> str:
    by_b = {r["name"]: r for r in before}
    by_a = {r["name"]: r for r in after}
    names = sorted(set(by_b) | set(by_a), key=attack_order)
    if markdown:
        lines = ["| attack | BEFORE | AFTER |", "|---|---|---|"]
        for name in names:
            lines.append(f"| {name} | {md_escape(compact(by_b.get(name)))} | {md_escape(compact(by_a.get(name)))} |")
        return "\n".join(lines)
    lines = []
    for name in names:
        lines.append(f"{name}:")
        lines.append(f"  BEFORE {compact(by_b.get(name)).replace('**', '')}")
        lines.append(f"  AFTER  {compact(by_a.get(name)).replace('**', '')}")
    return "\n".join(lines)


def load_runs(paths: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records of several saved runs, later runs replacing earlier ones attack by attack, in attack order."""
    merged: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    for path in paths:
        with open(path) as handle:
            run = json.load(handle)
        meta = meta or run.get("meta", {})
        for record in run["records"]:
            if record.get("skipped") and record["name"] in merged:
                continue  # an earlier run has real figures for it
            merged[record["name"]] = record
    return sorted(merged.values(), key=lambda r: attack_order(r["name"])), meta


def attack_order(name: str) -> tuple[int, str]:
    """Running order; a variant (``half-open@nofile=1024``) right after its attack."""
    base, _, variant = name.partition("@")
    order = [spec.name for spec in ATTACKS]
    return (order.index(base) if base in order else len(order), variant)
