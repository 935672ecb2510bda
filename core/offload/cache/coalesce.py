"""Request coalescing: identical work in flight at the same time is done once.

The first caller of a key starts the work as a task of its own; everyone who
asks for the same key before it ends awaits that task. The work runs in its
own task so that the first caller hanging up (its handler cancelled) does not
cancel the answer the others are waiting for; it is bounded by the deadline of
whatever it does (every upstream call has one), so it always ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Runs ``produce`` once per key at a time; concurrent callers of that key share its outcome."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: str, produce: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``produce()``'s result (or exception), and whether it came from another caller's run."""
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running), True
        task: asyncio.Task[T] = asyncio.ensure_future(produce())
        self._running[key] = task
        task.add_done_callback(lambda _: self._forget(key, task))
        return await asyncio.shield(task), False

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            # Retrieved here so that work whose every caller hung up never logs "exception was never retrieved".
            task.exception()
