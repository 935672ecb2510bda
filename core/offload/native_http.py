"""Kept for compatibility: import from :mod:`offload.transports` instead.

``NativeHttpClient(fallback, limit=..., ...)`` keeps its old signature and
behaviour: a :class:`~offload.transports.TransportRouter` sending plain
``http://`` requests with a :class:`~offload.transports.NativeTransport` built
from the keyword arguments, and everything else (``https://``, ``HEAD``) with
``fallback``.
"""

from __future__ import annotations

from .transports.base import DEFAULT_MAX_HEADER_BYTES, Transport
from .transports.native import PLAIN_MESSAGES_KEPT, NativeTransport, Origin, _Exchange, build_request
from .transports.router import TransportRouter

__all__ = ["PLAIN_MESSAGES_KEPT", "NativeHttpClient", "NativeTransport", "Origin", "_Exchange", "build_request"]


class NativeHttpClient(TransportRouter):
    """The old native client: native for plain ``http://`` (not ``HEAD``), ``fallback`` for the rest."""

    def __init__(
        self,
        fallback: Transport,
        *,
        limit: int = 256,
        keepalive_s: float = 30.0,
        max_body: int = 1 << 24,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        native = NativeTransport(
            limit=limit, keepalive_s=keepalive_s, max_body=max_body, max_header_bytes=max_header_bytes
        )
        super().__init__(native, fallback)
