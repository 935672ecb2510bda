"""How the engine sends a task to a server: one small protocol, one class per backend, chosen per URL.

- :class:`Transport` (:mod:`.base`): ``request(base_url, task, timeout_s)``,
  ``prune_idle()``, ``close()``, with the replies and failures every transport
  shares (the exception hierarchy is drawn at the top of :mod:`.base`);
- :class:`NativeTransport` (:mod:`.native`): lean HTTP/1.1 keep-alive, plain
  ``http://`` only, no ``HEAD``;
- :class:`AiohttpUpstream` (:mod:`.aiohttp`): the shared aiohttp session, any
  scheme and method;
- :class:`TransportRouter` (:mod:`.router`): picks one of two per URL scheme and
  method; what the engine builds unless it is given a transport;
- :class:`FakeTransport` (:mod:`.fake`): a function answers, no sockets (tests).
"""

from __future__ import annotations

from .aiohttp import AiohttpUpstream
from .base import (
    DEFAULT_MAX_HEADER_BYTES,
    InvalidRequest,
    Transport,
    UnsupportedRequest,
    UpstreamAnswerRefused,
    UpstreamReply,
    UpstreamUnreachable,
    check_request,
    request_path,
)
from .fake import FakeTransport, SentRequest, json_reply, text_reply
from .native import NativeTransport
from .router import TransportRouter

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "AiohttpUpstream",
    "FakeTransport",
    "InvalidRequest",
    "NativeTransport",
    "SentRequest",
    "Transport",
    "TransportRouter",
    "UnsupportedRequest",
    "UpstreamAnswerRefused",
    "UpstreamReply",
    "UpstreamUnreachable",
    "check_request",
    "json_reply",
    "request_path",
    "text_reply",
]
