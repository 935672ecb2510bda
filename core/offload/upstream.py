"""How the engine talks HTTP to a server: one call in, one reply (or a typed failure) out.

Two clients implement it: :class:`~offload.native_http.NativeHttpClient` (the
default: a lean HTTP/1.1 keep-alive client for ``http://`` servers) and
:class:`AiohttpUpstream` (the shared aiohttp session, for ``https://`` and for
anyone who sets ``upstream_client = "aiohttp"``). Whichever is used, the engine
sees the same :class:`UpstreamReply`, ``TimeoutError`` or :class:`UpstreamUnreachable`
(:class:`UpstreamAnswerRefused` when the server did answer, but with something
refused: too large, malformed, a protocol switch nobody asked for), and both
refuse the same malformed tasks with :class:`InvalidRequest` before sending anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from .health import describe_exception
from .tasks import Task

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "AiohttpUpstream",
    "InvalidRequest",
    "UpstreamAnswerRefused",
    "UpstreamClient",
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


class UpstreamClient(Protocol):
    """What the engine needs from an HTTP client."""

    async def request(self, base_url: str, task: Task, timeout_s: float) -> UpstreamReply:
        """Send ``task`` to the server at ``base_url`` and read the whole reply within ``timeout_s``.

        Raises ``TimeoutError`` when the deadline passes, :class:`UpstreamUnreachable`
        when the server cannot be reached or drops the connection (its subclass
        :class:`UpstreamAnswerRefused` when the answer itself is refused), and
        :class:`InvalidRequest` when the task cannot be sent at all.
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


class AiohttpUpstream:
    """The shared aiohttp session behind the :class:`UpstreamClient` interface (it does not own it).

    ``max_body`` caps an answer's body; ``max_header_bytes`` caps each of its
    header lines (aiohttp checks lines one at a time, not their total, and allows
    at most 128 of them). It refuses the same tasks as the native client.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        max_body: int = 1 << 24,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        self.session = session
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes

    async def request(self, base_url: str, task: Task, timeout_s: float) -> UpstreamReply:
        """See :meth:`UpstreamClient.request`."""
        check_request(task.method, task.headers)
        try:
            async with self.session.request(
                task.method,
                base_url + request_path(task.path),
                params=task.params,
                json=task.json,
                data=task.body,
                headers=task.headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                # Where traffic goes is the operator's choice, never a redirect's.
                allow_redirects=False,
                max_line_size=self.max_header_bytes,
                max_field_size=self.max_header_bytes,
            ) as response:
                if response.status == 101:
                    response.close()  # the connection now speaks something else: never reused
                    raise unsolicited_upgrade()
                content = await self._read(response)
                return UpstreamReply(response.status, media_type(response.headers.get("Content-Type")), content)
        except TimeoutError:
            raise  # aiohttp's timeouts are ClientErrors too; they stay timeouts (504, not 502)
        except aiohttp.ClientResponseError as exc:
            # aiohttp's parser refused the answer (a line too long, not HTTP): the server did answer.
            if "Got more than" in exc.message:
                raise headers_too_large(self.max_header_bytes) from exc
            raise UpstreamAnswerRefused(describe_exception(exc)) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                describe_exception(exc), never_arrived=isinstance(exc, aiohttp.ClientConnectorError)
            ) from exc

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, refused once it grows past ``max_body`` bytes (at once when announced larger)."""
        length = response.content_length
        if length is not None:
            if length > self.max_body:
                # Refused on the headers alone: the body is never read, and the connection is dropped.
                response.close()
                raise body_too_large(self.max_body)
            return await response.read()
        body = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > self.max_body:
                response.close()
                raise body_too_large(self.max_body)
        return bytes(body)

    def prune_idle(self) -> int:
        """Nothing to do: aiohttp's connector expires idle connections itself."""
        return 0

    async def close(self) -> None:
        """Nothing to do: the session belongs to the engine."""
