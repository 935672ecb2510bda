"""The attempts in flight on one server that may be moved elsewhere (see :mod:`offload.stalls`)."""

from __future__ import annotations

import asyncio
from typing import Any


class InflightAttempts:
    """The asyncio tasks running movable attempts on one server, and which of them were abandoned."""

    __slots__ = ("abandoned", "reason", "running")

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()
        self.abandoned: set[asyncio.Task[Any]] = set()
        self.reason = ""

    def abandon_all(self, reason: str) -> int:
        """Cancel every running attempt; each will fail with ``reason``. Returns how many."""
        self.reason = reason
        count = 0
        for task in list(self.running):
            if task not in self.abandoned and not task.done():
                self.abandoned.add(task)
                task.cancel()
                count += 1
        return count

    def was_abandoned(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task``'s cancellation was ours alone; if so it is withdrawn (the task goes on)."""
        if task not in self.abandoned:
            return False
        self.abandoned.discard(task)
        # Someone else (a caller who went away) may have cancelled it too: then it stays cancelled.
        return task.uncancel() == 0
