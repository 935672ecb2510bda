"""A cap on open client connections that idle or half-sent requests cannot use to lock callers out.

Without a cap, a caller that opens a thousand connections and sends half a
request on each holds a descriptor per connection until the request timeout:
past the process's descriptor limit nobody else gets in. With a plain cap, the
same caller holds every slot instead. So at the cap, a new connection is let in
and the oldest connection that is *not* being answered (idle between requests,
or still sending its request line, headers or body) is closed: a request that
has been received is never dropped, and an attacker's stalled connections are
the first to go. Only when every connection holds a received request is the new
one refused, with a 503.
"""

from __future__ import annotations

import json
import logging
import resource
from typing import Any

from sanic.exceptions import BadRequest
from sanic.http import Http
from sanic.http.constants import Stage
from sanic.server.protocols.http_protocol import HttpProtocol

__all__ = ["GuardedHttpProtocol", "raise_descriptor_limit"]

log = logging.getLogger("offload.connections")
# Descriptors kept for everything that is not a client connection: upstream connections, files, logs.
DESCRIPTOR_RESERVE = 320
_EVICTABLE = (Stage.IDLE, Stage.REQUEST)
_BUSY_BODY = json.dumps({"error": "too many connections: try again shortly", "status_code": 503}).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


def raise_descriptor_limit() -> int:
    """Raise this process's soft descriptor limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    return soft


def client_connection_cap(configured: int, descriptor_limit: int) -> int:
    """``configured``, lowered so client connections can never use up the process's descriptors."""
    return max(1, min(configured, descriptor_limit - DESCRIPTOR_RESERVE))


class AnsweringHttp(Http):
    """Sanic's HTTP/1.1 exchange, answering 400 to a request line whose target it cannot parse.

    Sanic builds a stand-in request for its error answer from the same target
    (``CONNECT host:443``, a NUL byte, ...), which fails again: the caller got no
    answer and the log two tracebacks. The stand-in gets ``*`` instead.
    """

    __slots__ = ()

    def create_empty_request(self) -> None:
        try:
            super().create_empty_request()
        except BadRequest:
            self.url = None
            super().create_empty_request()


class GuardedHttpProtocol(HttpProtocol):
    """Sanic's HTTP/1.1 protocol with the connection cap of ``app.ctx.max_client_connections``."""

    HTTP_CLASS = AnsweringHttp
    # Sanic's protocols have slots: our per-connection state needs its own.
    __slots__ = ("offload_open",)

    def connection_made(self, transport: Any) -> None:
        # The app's open connections, oldest first, so the one to close is found from the front.
        self.offload_open = open_connections = _open_connections(self.app)
        cap = getattr(self.app.ctx, "max_client_connections", 0)
        admitted = not cap or len(open_connections) < cap or self._evict_oldest_unanswered(cap)
        super().connection_made(transport)
        if admitted:
            open_connections[self] = None
            return
        log.warning("at the limit of %d client connections, every one holding a request: refused one", cap)
        transport.write(_BUSY)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.offload_open.pop(self, None)
        super().connection_lost(exc)

    def _evict_oldest_unanswered(self, cap: int) -> bool:
        """Close the oldest connection not being answered; False if every one holds a received request."""
        for connection in self.offload_open:
            if _still_receiving(connection):
                del self.offload_open[connection]  # counted out now: its close completes later
                log.info("at the limit of %d client connections: closed the oldest one not being answered", cap)
                connection.abort()
                return True
        return False


def _open_connections(app: Any) -> dict[HttpProtocol, None]:
    registry = getattr(app.ctx, "offload_open_connections", None)
    if registry is None:
        registry = app.ctx.offload_open_connections = {}
    return registry


def _still_receiving(connection: HttpProtocol) -> bool:
    """Idle between requests, or still receiving a request's line, headers or body."""
    http = connection._http  # Sanic's per-connection state; None before its task starts
    if http is None:
        return True
    return http.stage in _EVICTABLE or (http.stage is Stage.HANDLER and bool(http.request_body))
