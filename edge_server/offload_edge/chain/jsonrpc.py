"""JSON-RPC 2.0 envelopes as geth answers them over HTTP: parsing requests, shaping answers.

No transport and no chain here: :func:`answer_body` takes the raw HTTP body and
a ``dispatch(method, params)`` callable and returns what to send back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

__all__ = [
    "EXECUTION_REVERTED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_BATCH",
    "MAX_DEPTH",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "RpcError",
    "answer_body",
    "error_answer",
    "nesting_depth",
    "parse_body",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # geth's code for refused transactions: nonce too low, insufficient funds, ...
EXECUTION_REVERTED = 3  # geth's code for a revert in eth_call / eth_estimateGas
# geth's default batch limit; a batch runs under the chain lock, so it must stay bounded.
MAX_BATCH = 1000
# Deepest nesting of arrays and objects a body may have; real requests stay below 10.
# Deeper bodies are refused unparsed: py-evm's dependencies (py_ecc) raise Python's recursion
# limit to 100000, so json.loads would overflow the C stack and kill the process on a body
# of 100000 "[" instead of raising RecursionError.
MAX_DEPTH = 128
# A JSON string, its closing quote optional: an unterminated one runs to the end of the text
# instead of failing, so every match succeeds and scanning stays linear. (A pattern that needs
# the closing quote backtracks from every quote in '"\\"\\"\\"...': quadratic, minutes for 1 MB.)
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_BOM = "\ufeff"

Dispatch = Callable[[str, Any], Any]


class RpcError(Exception):
    """A JSON-RPC error object: ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The ``error`` member of an answer."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def error_answer(request_id: Any, error: RpcError) -> dict[str, Any]:
    """A complete error answer for ``request_id``."""
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _valid_id(request: dict[str, Any]) -> bool:
    # Strings, numbers and null are ids; objects, arrays and booleans are not (JSON-RPC 2.0,
    # section 4). A number too large for a float (1e400) would be echoed as Infinity: not JSON.
    request_id = request.get("id")
    if isinstance(request_id, float):
        return math.isfinite(request_id)
    return not isinstance(request_id, dict | list | bool)


def _is_call(request: Any) -> bool:
    """A request that expects an answer: an object with a valid ``id`` and a method."""
    if not isinstance(request, dict) or "id" not in request:
        return False
    return _valid_id(request) and isinstance(request.get("method"), str)


def nesting_depth(text: str | bytes) -> int:
    """How deeply arrays and objects nest in ``text``, brackets inside strings not counted.

    Bytes are scanned byte by byte (as Latin-1); a body must be checked as the very text
    that is then parsed, see :func:`parse_body`.
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and geth) do not.
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes) -> Any:
    """The JSON document in ``body``; ``ValueError`` for anything that is not strict JSON-RPC JSON.

    JSON-RPC over HTTP is UTF-8 (RFC 8259 section 8.1), without a byte order mark. ``json.loads``
    would also guess UTF-16 and UTF-32 from the bytes, and the nesting check must see the same
    characters the parser sees: a UTF-16 body read as bytes can hide brackets from it. So the
    body is decoded strictly first, and the decoded text is both checked and parsed.
    """
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text.startswith(_BOM):
        raise ValueError("a byte order mark is not JSON-RPC")
    # Counting is cheap and settles real requests (a few brackets) without scanning strings.
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # only if the interpreter's limit were set below MAX_DEPTH
        raise ValueError("nested too deeply") from None


def answer_one(request: Any, dispatch: Dispatch) -> dict[str, Any] | None:
    """The answer to one request object, or None for a notification (a request without ``id``)."""
    if not isinstance(request, dict) or not _valid_id(request):
        return error_answer(None, RpcError(INVALID_REQUEST, "invalid request"))
    request_id = request.get("id")
    if request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
        return error_answer(request_id, RpcError(INVALID_REQUEST, "invalid request"))
    try:
        answer = {"jsonrpc": "2.0", "id": request_id, "result": dispatch(request["method"], request.get("params"))}
    except RpcError as error:
        answer = error_answer(request_id, error)
    except Exception as exc:  # one bad call must not fail the batch or the server
        answer = error_answer(request_id, RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}"))
    # Notifications still run (eth_sendRawTransaction without id sends), they just get no answer.
    return answer if "id" in request else None


def answer_body(body: bytes, dispatch: Dispatch) -> Any:
    """The JSON answer to a request body, single or batch; None when nothing is to be sent back.

    As geth over HTTP, always with status 200:

    * a parse error (a body that is not UTF-8 JSON, or nests deeper than :data:`MAX_DEPTH`) is
      code -32700 with id null;
    * an empty batch is one -32600 error;
    * a batch of more than :data:`MAX_BATCH` requests is a one-element batch holding a
      -32600 error, and none of it runs;
    * notifications run but get no answer.
    """
    try:
        parsed = parse_body(body)
    except ValueError:
        return error_answer(None, RpcError(PARSE_ERROR, "parse error"))
    if not isinstance(parsed, list):
        return answer_one(parsed, dispatch)
    if not parsed:
        return error_answer(None, RpcError(INVALID_REQUEST, "empty batch"))
    if len(parsed) > MAX_BATCH:
        # geth answers an oversized batch with a one-element batch carrying the first call's id.
        first_id = next((item["id"] for item in parsed if _is_call(item)), None)
        too_large = RpcError(INVALID_REQUEST, f"batch too large: at most {MAX_BATCH} requests, got {len(parsed)}")
        return [error_answer(first_id, too_large)]
    answers = [answer for answer in (answer_one(item, dispatch) for item in parsed) if answer is not None]
    return answers or None
