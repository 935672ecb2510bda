"""What the engine reports to metrics, and the recorder that drops it all.

The engine calls these at the points where it already counts things (see
:class:`~offload.balancer.PoolCounters`); this module imports nothing of
prometheus-client, so an engine built without a gateway (tests, tools) pays
nothing and writes no multiprocess files.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, get_args

if TYPE_CHECKING:
    from ..registry import Server

# The engine's per-pool events, named as PoolCounters' fields (GET /servers) are.
PoolEvent = Literal[
    "retries",
    "retries_refused_by_budget",
    "hedges",
    "hedges_won",
    "fail_open",
    "moved_off_hung_servers",
]
POOL_EVENTS: tuple[PoolEvent, ...] = get_args(PoolEvent)


class AttemptRecord(Protocol):
    """One attempt at one server, as a context manager around the send (it classifies how it ended)."""

    def __enter__(self) -> AttemptRecord: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

    def answered(self, elapsed_s: float) -> None:
        """The server answered (below 500) in ``elapsed_s``, as the engine measured it."""


class EngineMetrics(Protocol):
    """Where the engine reports what it did; :data:`NO_METRICS` unless a gateway installed real ones."""

    def attempt(self, pool: str, server: Server) -> AttemptRecord:
        """A context manager around one attempt at ``server`` of ``pool``."""

    def count(self, pool: str, event: PoolEvent, amount: int = 1) -> None:
        """``amount`` more of ``event`` in ``pool``."""

    def probed(self, pool: str, server: Server, ok: bool) -> None:
        """A health probe of ``server`` found it up (``ok``) or not."""

    def plugin_event(self, plugin: str, event: str, outcome: str) -> None:
        """A plugin counted one ``event`` ending in ``outcome`` (see ``PluginContext.count_event``)."""

    def cache(self, pool: str, outcome: str) -> None:
        """One answer of ``pool``'s read cache obtained as ``outcome`` (hit, coalesced, miss)."""


class _NoAttempt:
    """An attempt record that records nothing (one shared instance: no allocation per attempt)."""

    __slots__ = ()

    def __enter__(self) -> _NoAttempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        return None

    def answered(self, elapsed_s: float) -> None:
        return None


class NoMetrics:
    """The recorder of an engine no gateway installed metrics on: every call does nothing."""

    _attempt = _NoAttempt()

    def attempt(self, pool: str, server: Server) -> AttemptRecord:
        return self._attempt

    def count(self, pool: str, event: PoolEvent, amount: int = 1) -> None:
        return None

    def probed(self, pool: str, server: Server, ok: bool) -> None:
        return None

    def plugin_event(self, plugin: str, event: str, outcome: str) -> None:
        return None

    def cache(self, pool: str, outcome: str) -> None:
        return None


NO_METRICS: EngineMetrics = NoMetrics()
