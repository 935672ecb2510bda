"""What the HTTP routes need from a chain backend (embedded or relay), and the reply they get."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ChainBackend", "Reply", "json_reply"]


@dataclass(frozen=True)
class Reply:
    """An HTTP answer as bytes, so a relay can pass an upstream's answer on untouched."""

    status: int
    body: bytes
    content_type: str = "application/json"


def json_reply(payload: Any, status: int = 200) -> Reply:
    """``payload`` as compact JSON; None means an empty body (JSON-RPC notifications)."""
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, body)


class ChainBackend(Protocol):
    """Serves ``POST /rpc`` and ``GET /chain/contracts``; started and stopped with the server."""

    mode: str

    async def start(self) -> None:
        """Acquire resources (the chain, an HTTP session); runs before the server accepts requests."""

    async def stop(self) -> None:
        """Release them; runs after the server stopped."""

    async def rpc(self, body: bytes) -> Reply:
        """The answer to a JSON-RPC request body (single or batch)."""

    async def contracts(self) -> Reply:
        """``{"data": {name: address}, "chain_id": N}`` for the demo contracts."""

    def health(self) -> dict[str, Any]:
        """Fields added to ``/health``: at least ``chain`` (the mode); must not block."""
