"""Shared state for every process of one gateway: one interface, three backends (see :mod:`.base`).

``[gateway] state`` picks the backend: ``memory`` (one process), ``shared-memory``
(the workers of one machine; what ``auto`` means with ``--workers N``), or a
``redis://`` URL (every replica that names it), wrapped in
:class:`~offload.state.resilient.ResilientState` so that an outage degrades to
local state instead of failing requests.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..settings import GatewaySettings
from .base import HealthListener, HealthRecord, LeaseUnavailable, NonceLease, StateBackend, StateUnavailable
from .memory import MemoryState

__all__ = [
    "HealthListener",
    "HealthRecord",
    "LeaseUnavailable",
    "MemoryState",
    "NonceLease",
    "StateBackend",
    "StateUnavailable",
    "open_state",
    "redis_store",
    "state_kind",
    "state_status",
]


def state_kind(setting: str, workers: int = 1) -> str:
    """``memory``, ``shared-memory`` or ``redis`` for ``[gateway] state`` under ``workers`` processes."""
    if setting == "auto":
        return "memory" if workers <= 1 else "shared-memory"
    if setting in ("memory", "shared-memory"):
        if setting == "memory" and workers > 1:
            raise ConfigError(
                '[gateway] state = "memory" keeps state per process, so --workers '
                f'{workers} would each count and sign alone; use "shared-memory", "auto" or a redis:// URL'
            )
        return setting
    return "redis"


def open_state(gateway: GatewaySettings, *, workers: int = 1, shared_handles: Any = None) -> StateBackend:
    """The backend ``gateway.state`` names (not started yet; the engine starts and closes it).

    ``shared_handles`` are the shared-memory objects the main process created
    (see :meth:`SharedMemoryState.create`) when the backend is ``shared-memory``.
    """
    kind = state_kind(gateway.state, workers)
    if kind == "memory":
        return MemoryState()
    if kind == "shared-memory":
        from .shared_memory import SharedMemoryState

        return SharedMemoryState.attach(shared_handles) if shared_handles is not None else SharedMemoryState.create()
    return resilient_redis(gateway)


def redis_store(gateway: GatewaySettings, *, op_timeout_s: float | None = None) -> Any:
    """A :class:`~offload.state.redis_state.RedisState` for ``gateway.state`` (not connected yet).

    Raises :class:`ConfigError` with the install command when redis-py is missing.
    """
    try:
        from .redis_state import RedisState
    except ImportError:
        raise ConfigError(
            "[gateway] state is a Redis URL but redis-py is not installed; pip install 'task-offloading[redis]'"
        ) from None
    timeout_s = gateway.state_timeout_ms / 1000 if op_timeout_s is None else op_timeout_s
    return RedisState(gateway.state, op_timeout_s=timeout_s)


def resilient_redis(gateway: GatewaySettings) -> StateBackend:
    """The Redis backend for ``gateway.state``, falling back to local state while Redis is unreachable."""
    from .resilient import ResilientState

    return ResilientState(redis_store(gateway))


def state_status(state: StateBackend) -> dict[str, Any]:
    """What ``/health`` and ``/servers`` say of the shared state."""
    status = getattr(state, "status", None)
    if callable(status):
        return status()
    return {"backend": state.kind, "shared": state.shared, "degraded_reason": None, "fallbacks": 0, "outages": 0}
