"""A background round on a timer: start it, stop it, and never let one bad round end it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable


class Periodic:
    """Runs ``action`` every ``interval_s`` seconds (the first after one interval) until :meth:`stop`.

    A round that raises is logged on ``logger`` with ``failure`` and the next
    round runs as planned; ``action`` may be a plain or an async function.
    """

    def __init__(
        self,
        name: str,
        interval_s: float,
        action: Callable[[], Awaitable[object] | object],
        logger: logging.Logger,
        failure: str,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.action = action
        self.logger = logger
        self.failure = failure
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the rounds (inside a running event loop); nothing if they already run."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop the rounds (one in progress is cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                outcome = self.action()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # one bad round must never end the rounds
                self.logger.exception(self.failure)
