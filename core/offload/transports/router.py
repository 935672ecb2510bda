"""One transport per request, chosen by the server's URL scheme and the method: the engine's default transport."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from ..tasks import Task
from .base import Transport, UpstreamReply

__all__ = ["TransportRouter"]

# Base URLs whose choice is remembered (servers of every pool); past it the memory starts over.
URLS_KEPT = 1024


class TransportRouter:
    """Sends plain ``http://`` requests other than ``HEAD`` with ``native``, everything else with ``general``.

    The choice is made once per base URL (a dict lookup afterwards), and
    :meth:`request` hands back the chosen transport's own coroutine instead of
    awaiting it in one of its own: routing adds no coroutine to the hot path.
    :meth:`prune_idle` and :meth:`close` reach both transports.
    """

    def __init__(self, native: Transport, general: Transport) -> None:
        self.native = native
        self.general = general
        self._by_url: dict[str, Transport] = {}

    def transport_for(self, base_url: str, method: str) -> Transport:
        """The transport a request with ``method`` to ``base_url`` goes to."""
        transport = self._by_url.get(base_url)
        if transport is None:
            transport = self._resolve(base_url)
        if transport is self.native and method.upper() == "HEAD":
            return self.general
        return transport

    def _resolve(self, base_url: str) -> Transport:
        """Choose by scheme (a plain ``http://`` URL with a host goes native) and remember the choice."""
        parts = urlsplit(base_url)
        transport = self.native if parts.scheme == "http" and parts.hostname else self.general
        if len(self._by_url) >= URLS_KEPT:
            self._by_url.clear()  # a crude bound: servers come and go with advertised lists
        self._by_url[base_url] = transport
        return transport

    def request(self, base_url: str, task: Task, timeout_s: float) -> Coroutine[Any, Any, UpstreamReply]:
        """See :meth:`offload.transports.base.Transport.request` (awaited as the chosen transport's call)."""
        return self.transport_for(base_url, task.method).request(base_url, task, timeout_s)

    def prune_idle(self) -> int:
        """Close both transports' connections idle for too long; returns how many."""
        return self.native.prune_idle() + self.general.prune_idle()

    async def close(self) -> None:
        """Close both transports (the second even if closing the first fails)."""
        try:
            await self.native.close()
        finally:
            await self.general.close()
