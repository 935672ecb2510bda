"""offload-edge: the reference edge node for the task-offloading gateway.

``create_edge_app`` and ``EdgeConfig`` are loaded lazily: process-pool workers
import ``offload_edge.tasks`` and should not pay for importing Sanic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EdgeConfig", "__version__", "create_edge_app"]

if TYPE_CHECKING:
    from .app import EdgeConfig, create_edge_app


def __getattr__(name: str) -> Any:
    if name in ("EdgeConfig", "create_edge_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
