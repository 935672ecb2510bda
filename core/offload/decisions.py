"""The engine's recent decisions, per pool: where each task went, why, and how it ended.

A bounded ring buffer per pool (:data:`DECISIONS_KEPT` entries), filled by
:meth:`offload.engine.Engine.offload` and shown by ``GET /servers`` and the
dashboard. An entry holds only what the gateway itself decided (pool, server,
reason, status, attempts, time): never a task's path, arguments or body, which
come from callers.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Collection
from typing import Any

from .errors import OffloadError
from .registry import Pool, Server
from .selection import Choice

__all__ = ["DECISIONS_KEPT", "DecisionLog", "reason_for"]

# Enough to see a pattern at a glance; small enough that /servers stays a few KB per pool.
DECISIONS_KEPT = 50

NAMED = "named by the caller"
FAIL_OPEN = "nothing healthy: tried the least bad"
HEDGE_WON = "hedge: answered first"
LOCAL_UNDER_LIMIT = "local: under the throughput limit"
LOCAL_LAST_RESORT = "local: over the limit, no remote server available"

# when (wall clock), server, local, why, answered, status, attempts, seconds taken
_Entry = tuple[float, str, bool, str, bool, int, int, float]


def reason_for(pool: Pool, choice: Choice, answered_by: Server | None, requested: str | None) -> str:
    """Why ``choice`` (answered by ``answered_by``, None if it failed) took the task, in a few words."""
    if requested:
        return NAMED
    if choice.fail_open:
        return FAIL_OPEN
    if answered_by is not None and answered_by is not choice.server:
        return HEDGE_WON
    if choice.counted:
        return LOCAL_UNDER_LIMIT
    config = pool.config
    if config.consider_throughput:
        if choice.server.local:
            return LOCAL_LAST_RESORT
        local = pool.local_server()
        if local is not None:
            # The device passed this task on: why, as it stands now (a moment after choosing).
            return _by_policy(config.policy, "local over its limit: " if local.available else "local unavailable: ")
    return _by_policy(config.policy)


@functools.cache
def _by_policy(policy: str, prefix: str = "") -> str:
    # A handful of distinct strings, made once rather than formatted on every task.
    return f"{prefix}policy {policy}"


class DecisionLog:
    """The last :data:`DECISIONS_KEPT` decisions of every pool; recording one costs an append."""

    def __init__(self, kept: int = DECISIONS_KEPT) -> None:
        if kept < 1:
            raise ValueError("a decision log keeps at least one decision")
        self.kept = kept
        # Tuples, not dicts: this is on every task's path; the JSON shape is built when someone looks.
        self._pools: dict[str, deque[_Entry]] = {}

    def answered(
        self,
        pool: Pool,
        choice: Choice,
        server: Server,
        status: int,
        requested: str | None,
        tried: Collection[str],
        exclude: Collection[str],
        started: float,
    ) -> None:
        """Remember a task of ``pool`` that ``server`` answered with ``status``.

        ``choice`` is the engine's last choice (``server`` differs from it when a
        hedge won); ``requested`` the server the caller named, if any (only
        whether there was one is kept); ``tried`` the servers that failed this
        task or were excluded by the caller (``exclude``); ``started`` the task's
        ``time.perf_counter()`` at arrival.
        """
        why = reason_for(pool, choice, server, requested)
        attempts = 1 + _failures(tried, exclude)
        self._append(pool.name, (time.time(), server.name, server.local, why, True, status, attempts, _since(started)))

    def failed(
        self,
        pool: Pool,
        choice: Choice,
        error: OffloadError,
        failed_on: str | None,
        requested: str | None,
        tried: Collection[str],
        exclude: Collection[str],
        started: float,
    ) -> None:
        """Remember a task of ``pool`` that failed with ``error`` (``failed_on``: the server that failed last)."""
        server = (pool.find(failed_on) if failed_on else None) or choice.server
        why = reason_for(pool, choice, None, requested)
        entry = (
            time.time(),
            server.name,
            server.local,
            why,
            False,
            error.status,
            _failures(tried, exclude),
            _since(started),
        )
        self._append(pool.name, entry)

    def _append(self, pool_name: str, entry: _Entry) -> None:
        log = self._pools.get(pool_name)
        if log is None:
            log = self._pools[pool_name] = deque(maxlen=self.kept)
        log.append(entry)

    def recent(self, pool_name: str) -> list[dict[str, Any]]:
        """The pool's recent decisions, newest first, JSON-ready."""
        return [
            {
                "at": at,
                "server": server,
                "local": local,
                "why": why,
                "outcome": "answered" if answered else "failed",
                "status_code": status,
                "attempts": attempts,
                "time_ms": round(elapsed * 1000, 3),
            }
            for at, server, local, why, answered, status, attempts, elapsed in reversed(self._pools.get(pool_name, ()))
        ]


def _failures(tried: Collection[str], exclude: Collection[str]) -> int:
    """Attempts that failed: servers tried, less the ones the caller excluded before we began."""
    return sum(1 for name in tried if name not in exclude) if tried else 0


def _since(started: float) -> float:
    return time.perf_counter() - started
