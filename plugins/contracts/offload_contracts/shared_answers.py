"""Write answers as JSON-ready data, so a retry on another replica can be given the first answer."""

from __future__ import annotations

from typing import Any

from .service import Handed
from .writes import Reply


def encode_answer(value: Any) -> dict[str, Any]:
    """A stored write answer (a REST :class:`Reply` or an RPC :class:`Handed`) as JSON-ready data."""
    if isinstance(value, Reply):
        return {
            "kind": "reply",
            "status": value.status,
            "payload": value.payload,
            "headers": value.headers,
            "tx_hash": value.tx_hash,
            "final": value.final,
        }
    if isinstance(value, Handed):
        return {
            "kind": "handed",
            "tx_hash": value.tx_hash,
            "confirmed": value.confirmed,
            "server": value.server,
            "failure": value.failure,
        }
    raise TypeError(f"no shared form for {type(value).__name__}")


def compact_answer(value: Any) -> Any:
    """What a replay needs of an answer too large to share: its transaction, looked up again on replay.

    A REST answer becomes a non-final one with only the hash (``WriteAnswers.refreshed``
    then asks the nodes what became of it and answers as the first request did); an RPC
    hand-over is small already.
    """
    if isinstance(value, Reply) and value.tx_hash is not None:
        return Reply(status=202, payload={}, headers={}, tx_hash=value.tx_hash, final=False)
    return value


def decode_answer(data: dict[str, Any]) -> Reply | Handed:
    """The answer :func:`encode_answer` wrote (KeyError/TypeError for anything else)."""
    if data["kind"] == "reply":
        return Reply(
            status=int(data["status"]),
            payload=dict(data["payload"]),
            headers={str(name): str(value) for name, value in data["headers"].items()},
            tx_hash=data["tx_hash"],
            final=bool(data["final"]),
        )
    if data["kind"] == "handed":
        return Handed(str(data["tx_hash"]), bool(data["confirmed"]), data["server"], str(data["failure"]))
    raise KeyError(data["kind"])
