"""The aiohttp transport: the engine's shared aiohttp session (for ``https://``, ``HEAD``, or everything)."""

from __future__ import annotations

import aiohttp

from ..health import describe_exception
from ..tasks import Task
from .base import (
    DEFAULT_MAX_HEADER_BYTES,
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

__all__ = ["AiohttpUpstream"]


class AiohttpUpstream:
    """The shared aiohttp session behind the :class:`~offload.transports.base.Transport` interface (not owned).

    ``max_body`` caps an answer's body; ``max_header_bytes`` caps each of its
    header lines (aiohttp checks lines one at a time, not their total, and allows
    at most 128 of them). It refuses the same tasks as the native transport,
    and speaks every scheme and method aiohttp does (``https://``, ``HEAD``).
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
        """See :meth:`offload.transports.base.Transport.request`."""
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
