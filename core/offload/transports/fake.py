"""A transport without sockets, for tests: a function of yours answers every request.

::

    async def handler(base_url: str, task: Task) -> UpstreamReply:
        if base_url == "http://dead.test":
            raise UpstreamUnreachable("refused", never_arrived=True)
        return text_reply("world")

    engine = Engine(registry, gateway, transport=FakeTransport(handler))

A handler may be a plain or an async function; an async one can wait on events
to make a server slow or hung. The request's ``timeout_s`` is enforced as a real
transport enforces it (``TimeoutError``), and a cancelled request (a lost hedge)
cancels the handler.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..tasks import Task
from .base import UpstreamReply, check_request

__all__ = ["FakeTransport", "Handler", "SentRequest", "json_reply", "text_reply"]

Handler = Callable[[str, Task], UpstreamReply | Awaitable[UpstreamReply]]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request a :class:`FakeTransport` was asked to send."""

    base_url: str
    task: Task
    timeout_s: float


def text_reply(text: str, status: int = 200) -> UpstreamReply:
    """A ``text/plain`` answer."""
    return UpstreamReply(status, "text/plain", text.encode())


def json_reply(value: Any, status: int = 200) -> UpstreamReply:
    """An ``application/json`` answer."""
    return UpstreamReply(status, "application/json", json.dumps(value).encode())


class FakeTransport:
    """Answers every request with ``handler(base_url, task)``; records what it was asked (``requests``).

    Malformed tasks are refused (:class:`~offload.transports.base.InvalidRequest`)
    as every transport refuses them, before the handler sees them.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[SentRequest] = []
        self.cancelled: list[SentRequest] = []
        self.closed = False

    async def request(self, base_url: str, task: Task, timeout_s: float) -> UpstreamReply:
        """See :meth:`offload.transports.base.Transport.request`."""
        check_request(task.method, task.headers)
        sent = SentRequest(base_url, task, timeout_s)
        self.requests.append(sent)
        try:
            async with asyncio.timeout(timeout_s):
                reply = self.handler(base_url, task)
                if inspect.isawaitable(reply):
                    reply = await reply
        except asyncio.CancelledError:
            self.cancelled.append(sent)
            raise
        return reply

    def sent_to(self, base_url: str) -> list[Task]:
        """The tasks sent to ``base_url``, in order."""
        return [sent.task for sent in self.requests if sent.base_url == base_url]

    def prune_idle(self) -> int:
        """Nothing to prune: there are no connections."""
        return 0

    async def close(self) -> None:
        """Remember that it was closed."""
        self.closed = True
