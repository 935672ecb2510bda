"""What the generated document says of the core's own routes whose handlers carry no ``openapi`` attribute.

The core's handlers live in several modules (``app.py``, ``metrics``,
``dashboard``); their answers are described here, once, in the same form a
plugin's ``openapi`` attribute takes (see :mod:`offload.openapi.spec`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CORE_OPERATIONS"]


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, content_type: str) -> dict[str, Any]:
    return {"description": description, "content": {content_type: {"schema": {"type": "string"}}}}


_POOL_COUNTS = {
    "type": "object",
    "required": ["servers", "available"],
    "properties": {"servers": {"type": "integer"}, "available": {"type": "integer"}},
}
_HEALTH = {
    "type": "object",
    "required": ["status", "pools", "state", "worker_pid"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "draining"]},
        "pools": {"type": "object", "additionalProperties": _POOL_COUNTS},
        "state": {"type": "object", "description": "The shared state backend and whether it is degraded."},
        "worker_pid": {"type": "integer", "description": "The worker process that answered."},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}

# (method, path) -> the operation fields, as a handler's ``openapi`` attribute would give them.
CORE_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): {
        "summary": "Whether the gateway serves, and how many servers of each pool are available.",
        "description": "'degraded' (still 200) while the shared state is away and local state is used; "
        "503 'draining' while the gateway stops, so balancers send it no more work.",
        "responses": {
            "200": _json("Serving ('ok' or 'degraded').", _HEALTH),
            "503": _json("Draining: the gateway is stopping.", _HEALTH),
        },
    },
    ("GET", "/servers"): {
        "summary": "Every pool's servers with their live facts, throughput, counters and recent decisions.",
        "responses": {
            "200": _json(
                "The pools, the shared state's status and health sharing.",
                {
                    "type": "object",
                    "required": ["pools", "state", "health_sharing"],
                    "properties": {
                        "pools": {"type": "object", "additionalProperties": {"type": "object"}},
                        "state": {"type": "object"},
                        "health_sharing": {"type": "object"},
                    },
                },
            )
        },
    },
    ("GET", "/plugins"): {
        "summary": "Installed plugins, and the enabled ones with their prefix and pools.",
        "responses": {
            "200": _json(
                "Installed and enabled plugins.",
                {
                    "type": "object",
                    "required": ["installed", "enabled"],
                    "properties": {
                        "installed": {"type": "array", "items": {"type": "object"}},
                        "enabled": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "prefix", "pools"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "prefix": {"type": "string"},
                                    "pools": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
            )
        },
    },
    ("GET", "/metrics"): {
        "summary": "Prometheus metrics: requests per route, pools, servers, decisions (see docs/metrics.md).",
        "responses": {"200": _text("The Prometheus text exposition format.", "text/plain")},
    },
    ("GET", "/dashboard"): {
        "summary": "A live page of every pool and server (it polls /servers).",
        "responses": {"200": _text("The dashboard page.", "text/html")},
    },
    ("GET", "/dashboard/dashboard.js"): {
        "summary": "The dashboard's script.",
        "responses": {"200": _text("JavaScript.", "text/javascript")},
    },
    ("GET", "/dashboard/dashboard.css"): {
        "summary": "The dashboard's stylesheet.",
        "responses": {"200": _text("CSS.", "text/css")},
    },
}
