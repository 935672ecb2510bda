"""Relaying ``POST /rpc`` to another node, so several edges serve one chain's state.

Bodies go upstream and come back byte for byte; only the transport is this
edge's (its own simulated link delay, its own HTTP connection).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..loopback import loopback_http_url
from .backend import Reply, json_reply
from .jsonrpc import INTERNAL_ERROR, RpcError, error_answer

__all__ = ["RELAY_CONNECT_TIMEOUT_S", "RELAY_TIMEOUT_S", "RelayBackend", "UpstreamUnreachable", "contracts_url"]

RELAY_TIMEOUT_S = 30.0
RELAY_CONNECT_TIMEOUT_S = 5.0
_FORWARDED_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def contracts_url(upstream_rpc_url: str) -> str | None:
    """Where an offload-edge upstream lists its contracts: ``.../rpc`` -> ``.../chain/contracts``."""
    base, slash, last = upstream_rpc_url.rstrip("/").rpartition("/")
    return f"{base}/chain/contracts" if slash and last == "rpc" else None


class UpstreamUnreachable(Exception):
    """The upstream node could not be reached or did not answer in time."""


class RelayBackend:
    """Forwards JSON-RPC bodies verbatim to ``upstream_rpc_url`` over one kept-alive session."""

    mode = "relay"

    def __init__(self, upstream_rpc_url: str, timeout_s: float = RELAY_TIMEOUT_S) -> None:
        # Checked here too, not only in EdgeConfig: this is the class that sends the requests.
        self.upstream = loopback_http_url(upstream_rpc_url)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, RELAY_CONNECT_TIMEOUT_S))
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the shared session (inside the server's event loop, hence not in ``__init__``)."""
        self.session = aiohttp.ClientSession(timeout=self.timeout, headers=_FORWARDED_HEADERS)

    async def stop(self) -> None:
        """Close the session and its kept-alive connections."""
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _forward(self, method: str, url: str, body: bytes | None = None) -> Reply:
        """The upstream's answer, untouched; raises :class:`UpstreamUnreachable`."""
        if self.session is None:
            raise RuntimeError("the relay is not started")
        try:
            # Never follow a redirect: it could lead off loopback, where this node must not talk.
            async with self.session.request(method, url, data=body, allow_redirects=False) as response:
                payload = await response.read()
                return Reply(response.status, payload, response.headers.get("Content-Type", "application/json"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise UpstreamUnreachable(f"upstream chain node {self.upstream} failed: {reason}") from exc

    async def rpc(self, body: bytes) -> Reply:
        """The upstream's answer to ``body``, or a -32603 error naming it (HTTP 502) when unreachable."""
        try:
            return await self._forward("POST", self.upstream, body)
        except UpstreamUnreachable as exc:
            return json_reply(error_answer(None, RpcError(INTERNAL_ERROR, str(exc))), status=502)

    async def contracts(self) -> Reply:
        """The upstream edge's ``/chain/contracts``, or ``{"error"}`` with 404 / 502."""
        url = contracts_url(self.upstream)
        if url is None:
            return json_reply({"error": f"upstream {self.upstream} is not an offload-edge /rpc URL"}, status=404)
        try:
            return await self._forward("GET", url)
        except UpstreamUnreachable as exc:
            return json_reply({"error": str(exc)}, status=502)

    def health(self) -> dict[str, Any]:
        """``{"chain": "relay", "upstream": URL}``; never contacts the upstream."""
        return {"chain": self.mode, "upstream": self.upstream}
