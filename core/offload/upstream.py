"""How the engine talks HTTP to a server: one call in, one reply (or a typed failure) out.

Two clients implement it: :class:`~offload.native_http.NativeHttpClient` (the
default: a lean HTTP/1.1 keep-alive client for ``http://`` servers) and
:class:`AiohttpUpstream` (the shared aiohttp session, for ``https://`` and for
anyone who sets ``upstream_client = "aiohttp"``). Whichever is used, the engine
sees the same :class:`UpstreamReply`, ``TimeoutError`` or :class:`UpstreamUnreachable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp

from .health import describe_exception
from .tasks import Task

__all__ = ["AiohttpUpstream", "UpstreamClient", "UpstreamReply", "UpstreamUnreachable"]


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


class UpstreamClient(Protocol):
    """What the engine needs from an HTTP client."""

    async def request(self, base_url: str, task: Task, timeout_s: float) -> UpstreamReply:
        """Send ``task`` to the server at ``base_url`` and read the whole reply within ``timeout_s``.

        Raises ``TimeoutError`` when the deadline passes and :class:`UpstreamUnreachable`
        when the server cannot be reached or drops the connection.
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
    """The shared aiohttp session behind the :class:`UpstreamClient` interface (it does not own it)."""

    def __init__(self, session: aiohttp.ClientSession, max_body: int = 1 << 24) -> None:
        self.session = session
        self.max_body = max_body

    async def request(self, base_url: str, task: Task, timeout_s: float) -> UpstreamReply:
        """See :meth:`UpstreamClient.request`."""
        try:
            async with self.session.request(
                task.method,
                base_url + task.path,
                params=task.params,
                json=task.json,
                data=task.body,
                headers=task.headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                # Where traffic goes is the operator's choice, never a redirect's.
                allow_redirects=False,
            ) as response:
                content = await self._read(response)
                return UpstreamReply(response.status, media_type(response.headers.get("Content-Type")), content)
        except TimeoutError:
            raise  # aiohttp's timeouts are ClientErrors too; they stay timeouts (504, not 502)
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                describe_exception(exc), never_arrived=isinstance(exc, aiohttp.ClientConnectorError)
            ) from exc

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, refused (as unreachable) once it grows past ``max_body`` bytes."""
        if response.content_length is not None and response.content_length <= self.max_body:
            return await response.read()
        body = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > self.max_body:
                raise UpstreamUnreachable(f"answer larger than {self.max_body} bytes ([gateway] max_response_bytes)")
        return bytes(body)

    def prune_idle(self) -> int:
        """Nothing to do: aiohttp's connector expires idle connections itself."""
        return 0

    async def close(self) -> None:
        """Nothing to do: the session belongs to the engine."""
