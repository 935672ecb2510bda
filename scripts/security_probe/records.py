"""The record of one attack and the helpers the verdicts share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --- records -------------------------------------------------------------------------------------------


@dataclass
class Record:
    name: str
    title: str
    target: str  # gateway | edge
    ran: bool = False
    skipped: str = ""
    statuses: list[str] = field(default_factory=list)
    counter_before: int | None = None
    counter_after: int | None = None
    counter_delta: int | None = None
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    rss_peak_mb: float | None = None
    stall_ms: float | None = None
    stall_open: bool = False  # a poll was still waiting when the attack ended (stall_ms is a lower bound)
    health_polls: int = 0
    health_bad: int = 0
    edge_stall_ms: float | None = None
    gateway_alive: bool | None = None
    edge_alive: bool | None = None
    duration_s: float = 0.0
    verdict: str = ""  # blocked | SUCCEEDS | DEGRADED | CRASH | info | skipped
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):
    """The attack cannot run (a process it needs is dead)."""


def wrote(record: Record) -> bool:
    return bool(record.counter_delta)


def judge_write_refused(record: Record) -> str:
    """A write a stranger must not be able to make: SUCCEEDS if the counter moved or a 2xx came back."""
    if wrote(record) or any(s.startswith("2") for s in record.statuses):
        return "SUCCEEDS"
    return "blocked"


def slow(record: Record, limit_ms: float = 1000.0) -> bool:
    return record.stall_ms is not None and record.stall_ms > limit_ms
