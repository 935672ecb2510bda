"""Parsing server addresses the way users write them: ``host``, ``host:port`` or a URL."""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_EDGE_PORT = 5000  # the original edge servers listened on 5000


def normalize_url(address: str, default_port: int = DEFAULT_EDGE_PORT) -> str:
    """Return ``scheme://host:port`` for an address, or raise ``ValueError`` saying why not.

    >>> normalize_url("127.0.0.2")
    'http://127.0.0.2:5000'
    >>> normalize_url("http://127.0.0.1:8000/")
    'http://127.0.0.1:8000'
    """
    text = address.strip()
    if not text:
        raise ValueError("empty server address")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"server address {address!r} must use http or https")
    if not parts.hostname:
        raise ValueError(f"server address {address!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"server address {address!r} must be a base address without a path or query")
    try:
        port = parts.port or (default_port if parts.scheme == "http" else 443)
    except ValueError as exc:
        raise ValueError(f"server address {address!r} has an invalid port") from exc
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def host_port(url: str) -> str:
    """``host:port`` of a normalised URL, the form the original server lists used."""
    return url.split("://", 1)[1]
