"""The probe's limits and the small text helpers every module uses."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import urllib.parse

# --- limits --------------------------------------------------------------------------------------------

ATTACK_HARD_LIMIT_S = 75.0  # a whole attack, whatever happens (single requests are limited to 30 s)
REQUEST_TIMEOUT_S = 30.0
HEALTH_POLL_EVERY_S = 0.05
HEALTH_POLL_TIMEOUT_S = 10.0
HEALTH_POLL_MAX_OUTSTANDING = 200
COUNTER_TIMEOUT_S = 15.0
SETTLE_MAX_S = 45.0  # waiting for the gateway/chain to answer quickly again before an attack
EXCERPT = 160


# --- small helpers ----------------------------------------------------------------------------------


class UsageError(SystemExit):
    """A bad argument: its message on stderr and exit code 2, as argparse's own errors."""

    def __init__(self, message: str) -> None:
        print(message, file=sys.stderr)
        super().__init__(2)


def require_loopback(url: str, what: str) -> str:
    """``url`` without a trailing slash if it is http://<loopback IP literal>:port; else exit 2."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback or parts.port is None:
        raise UsageError(f"security_probe: {what} must be http://127.0.0.1:PORT (a loopback address), got {url!r}")
    return url.rstrip("/")


def excerpt(data: bytes | str | None, limit: int = EXCERPT) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit})"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}"[:120] if text else name
