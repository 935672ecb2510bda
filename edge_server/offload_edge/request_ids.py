"""The caller's ``X-Request-ID`` (the gateway sends one with every task): echoed back and named in log lines.

Only a sane id is used (at most 128 printable token characters); anything else
counts as none, so a caller's bytes never reach a header or a log line.
"""

from __future__ import annotations

from sanic import Request

HEADER = "X-Request-ID"
MAX_LENGTH = 128
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/+=@")


def request_id(request: Request) -> str | None:
    """The request's sane ``X-Request-ID``, or None."""
    value = request.headers.get(HEADER)
    if not value or len(value) > MAX_LENGTH or not TOKEN_CHARS.issuperset(value):
        return None
    return value


def log_tag(request: Request) -> str:
    """How log lines name the request: its id, or ``-``."""
    return request_id(request) or "-"
