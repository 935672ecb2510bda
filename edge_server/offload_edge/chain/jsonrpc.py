"""JSON-RPC 2.0 envelopes: parsing requests, shaping answers (no transport here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .node import INTERNAL_ERROR, RpcError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


def error_answer(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def answer_one(request: Any, dispatch: Callable[[str, Any], Any]) -> dict[str, Any] | None:
    """The answer to one request object (None for a notification)."""
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
        request_id = request.get("id") if isinstance(request, dict) else None
        return error_answer(request_id, RpcError(INVALID_REQUEST, "invalid request"))
    request_id = request.get("id")
    try:
        answer = {"jsonrpc": "2.0", "id": request_id, "result": dispatch(request["method"], request.get("params"))}
    except RpcError as error:
        answer = error_answer(request_id, error)
    except Exception as exc:  # one bad call must not fail the batch or leak a traceback
        answer = error_answer(request_id, RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}"))
    return None if "id" not in request else answer


def answer_body(body: bytes, dispatch: Callable[[str, Any], Any]) -> tuple[int, Any]:
    """(HTTP status, JSON answer) for a request body, single or batch, as geth answers."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return 400, error_answer(None, RpcError(PARSE_ERROR, "parse error"))
    if isinstance(parsed, list):
        if not parsed:
            return 400, error_answer(None, RpcError(INVALID_REQUEST, "empty batch"))
        answers = [answer for answer in (answer_one(item, dispatch) for item in parsed) if answer is not None]
        return 200, answers
    answer = answer_one(parsed, dispatch)
    return 200, answer if answer is not None else ""
