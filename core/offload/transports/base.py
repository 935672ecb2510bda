"""What a transport is: one call in (a task for a server), one reply or a typed failure out.

Every transport implements :class:`Transport`; the engine sees the same
:class:`UpstreamReply` or the same exceptions whichever one sent the task, and
every transport refuses the same malformed tasks (:func:`check_request`) before
sending anything. The failures a transport may raise::

    Exception
    ├── TimeoutError                    the deadline passed (the built-in: a 504, not a 502)
    ├── UpstreamUnreachable             not reached, or dropped before answering; never_arrived:
    │   │                               True when no connection could even be opened
    │   └── UpstreamAnswerRefused       it answered, but with something refused (too large,
    │                                   not HTTP/1.1, an unasked-for protocol switch)
    └── ValueError
        └── InvalidRequest              the task is not one valid request: nothing was sent
            └── UnsupportedRequest      valid, but not something this transport speaks (a scheme,
                                        a method): send it with another (see TransportRouter)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ..tasks import Task

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "InvalidRequest",
    "Transport",
    "UnsupportedRequest",
    "UpstreamAnswerRefused",
    "UpstreamReply",
    "UpstreamUnreachable",
    "check_request",
    "request_path",
]

# Bytes of header fields an answer may carry (names, values and separators; trailers included).
DEFAULT_MAX_HEADER_BYTES = 65536
# RFC 9110, 5.6.2: what a method and a header name are made of (tchar).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than HTAB (refused as h11 refuses them), and anything beyond ASCII: aiohttp
# would send it as UTF-8, the native client as latin-1, so neither may (h11 refuses it too).
_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A server's whole answer: status, media type (lowercase, no parameters) and body."""

    status: int
    content_type: str
    body: bytes


class UpstreamUnreachable(Exception):
    """The server could not be reached or dropped the exchange before answering.

    ``never_arrived`` is True when no connection could be opened at all, so the
    request provably reached no server.
    """

    def __init__(self, message: str, *, never_arrived: bool = False) -> None:
        super().__init__(message)
        self.never_arrived = never_arrived


class UpstreamAnswerRefused(UpstreamUnreachable):
    """The server answered, but with something this gateway refuses to pass on.

    Too large (past ``[gateway] max_response_bytes`` or
    ``[gateway] max_response_header_bytes``), not valid HTTP/1.1, or a protocol
    switch (101) nobody asked for. The connection it came on is closed.
    """


class InvalidRequest(ValueError):
    """The task cannot be sent as one valid HTTP request; nothing was sent.

    A method or header name that is not a token, or a header value with control
    characters: the caller's mistake, whichever server it was meant for.
    """


class UnsupportedRequest(InvalidRequest):
    """A transport was handed a request it does not speak (another scheme, a method it leaves to others).

    Nothing was sent. Only a transport used on its own raises it: a
    :class:`~offload.transports.router.TransportRouter` sends each request with
    a transport that speaks it.
    """


def check_request(method: str, headers: Mapping[str, str] | None) -> None:
    """Refuse (:class:`InvalidRequest`) what would put something else on the wire than one request.

    A method holding a space or CRLF could smuggle a second request; a header name
    like ``"Transfer-Encoding "`` would slip past the client's own framing headers.
    """
    if not _TOKEN.fullmatch(method):
        raise InvalidRequest(f"invalid method {method[:40]!r}: a method is a token (letters, digits, !#$%&'*+-.^_`|~)")
    for name, value in (headers or {}).items():
        if not _TOKEN.fullmatch(name):
            raise InvalidRequest(
                f"invalid header name {name[:60]!r}: a header name is a token (letters, digits, !#$%&'*+-.^_`|~)"
            )
        if _VALUE_FORBIDDEN.search(value):
            raise InvalidRequest(
                f"invalid value for header {name!r}: only printable ASCII, spaces and tabs may be sent "
                "(no control characters, nothing beyond ASCII)"
            )


def request_path(path: str) -> str:
    """The task's path as an origin-form target: an empty one is ``/``, and every one starts with ``/``."""
    return path if path.startswith("/") else "/" + path


def body_too_large(limit: int) -> UpstreamAnswerRefused:
    """The refusal of an answer whose body is (or is announced to be) larger than ``limit`` bytes."""
    return UpstreamAnswerRefused(f"answer larger than {limit} bytes ([gateway] max_response_bytes)")


def headers_too_large(limit: int) -> UpstreamAnswerRefused:
    """The refusal of an answer whose header fields pass ``limit`` bytes."""
    return UpstreamAnswerRefused(f"answer headers larger than {limit} bytes ([gateway] max_response_header_bytes)")


def unsolicited_upgrade() -> UpstreamAnswerRefused:
    """The refusal of a 101 answer: no task ever asks to switch protocols."""
    return UpstreamAnswerRefused("answered 101 Switching Protocols, but no protocol switch was asked for")


class Transport(Protocol):
    """What the engine needs from an HTTP client: one backend (or a router over several) per class."""

    async def request(self, base_url: str, task: Task, timeout_s: float) -> UpstreamReply:
        """Send ``task`` to the server at ``base_url`` and read the whole reply within ``timeout_s``.

        Raises ``TimeoutError`` when the deadline passes, :class:`UpstreamUnreachable`
        when the server cannot be reached or drops the connection (its subclass
        :class:`UpstreamAnswerRefused` when the answer itself is refused), and
        :class:`InvalidRequest` when the task cannot be sent at all (:class:`UnsupportedRequest`
        when it could be, but not by this transport).
        """
        ...

    def prune_idle(self) -> int:
        """Close connections idle for too long; returns how many."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


def media_type(value: str | None) -> str:
    """``"application/json"`` from ``"Application/JSON; charset=utf-8"``; ``""`` for none."""
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()
