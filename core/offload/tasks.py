"""What plugins hand the engine (a task) and what they get back (a result)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    """An HTTP call to make on whichever server the engine picks."""

    path: str
    method: str = "GET"
    params: Mapping[str, str] | None = None
    json: Any = None
    body: bytes | None = None  # sent as is when set (with your own Content-Type header)
    headers: Mapping[str, str] | None = None
    # Safe to send again, or twice at once, elsewhere: enables retries and hedging.
    idempotent: bool = True
    timeout_s: float | None = None  # the whole request's deadline, retries included
    # Seconds a 200 answer may be served again to an identical task (None: never). Only for tasks
    # whose answer depends on nothing but the task itself (a pure function); identical tasks in
    # flight at the same time are then also sent once (coalesced). See PluginContext.read_cache.
    cache_ttl_s: float | None = None


@dataclass(frozen=True)
class OffloadResult:
    """A task's answer and how it was obtained."""

    data: Any
    server: str
    status_code: int
    throughput: int
    time: float
    # For a cacheable task: "hit" (kept answer), "coalesced" (an identical task's) or "miss"; else None.
    cache: str | None = None

    def envelope(self) -> dict[str, Any]:
        """The gateway's answer: ``{"data", "server", "status_code", "throughput", "time"}``."""
        return {
            "data": self.data,
            "server": self.server,
            "status_code": self.status_code,
            "throughput": self.throughput,
            "time": self.time,
        }
