"""This node only ever talks on loopback: checks for addresses and upstream URLs."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from yarl import URL

__all__ = ["is_loopback_v4", "loopback_http_url"]

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def is_loopback_v4(host: str) -> bool:
    """True only for IPv4 literals in 127.0.0.0/8; names such as ``localhost`` are not resolved."""
    try:
        return ipaddress.ip_address(host) in _LOOPBACK
    except ValueError:
        return False


def loopback_http_url(value: str) -> str:
    """``value`` if it is an ``http://`` URL on 127.0.0.0/8, else ``ValueError`` saying so.

    Both the standard library and yarl (what aiohttp connects with) must read it so:
    a URL the two parse differently is refused rather than trusted.
    """
    try:
        parts, url = urlsplit(value), URL(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        acceptable = all(
            scheme == "http" and is_loopback_v4(host or "")
            for scheme, host in ((parts.scheme, parts.hostname), (url.scheme, url.host))
        )
    except (ValueError, TypeError):
        acceptable = False
    if not acceptable:
        raise ValueError(f"must be an http:// URL on 127.0.0.0/8, got {value!r}")
    return value
