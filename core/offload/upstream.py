"""Kept for compatibility: import from :mod:`offload.transports` instead.

``UpstreamClient`` is :class:`offload.transports.Transport` under its old name.
"""

from __future__ import annotations

from .transports.aiohttp import AiohttpUpstream
from .transports.base import (
    DEFAULT_MAX_HEADER_BYTES,
    InvalidRequest,
    Transport,
    UnsupportedRequest,
    UpstreamAnswerRefused,
    UpstreamReply,
    UpstreamUnreachable,
    body_too_large,
    check_request,
    headers_too_large,
    media_type,
    request_path,
    unsolicited_upgrade,
)

UpstreamClient = Transport

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "AiohttpUpstream",
    "InvalidRequest",
    "UnsupportedRequest",
    "UpstreamAnswerRefused",
    "UpstreamClient",
    "UpstreamReply",
    "UpstreamUnreachable",
    "body_too_large",
    "check_request",
    "headers_too_large",
    "media_type",
    "request_path",
    "unsolicited_upgrade",
]
