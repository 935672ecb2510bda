"""Who may talk to this edge: loopback names only, no browser pages from elsewhere, and the operator.

The edge runs on a device that also runs a web browser, and its embedded chain has an
unlocked dev account, so a web page must not be able to use it:

* **Host allowlist.** A page on ``evil.example`` that re-points its DNS name at
  127.0.0.1 (DNS rebinding) talks to this edge as a same-origin page, but its requests
  still carry ``Host: evil.example``. Only ``localhost``, ``127.x.x.x`` and ``[::1]``
  (any port), or no Host at all, are served.
* **No cross-site requests.** A browser marks requests from other sites with
  ``Sec-Fetch-Site: cross-site`` / ``same-site`` (another port of localhost is the same
  site) and sends the page's ``Origin``; both are refused unless the origin is this
  edge's own ``http://<Host>``. Programs (the gateway, web3.py, curl) send neither.
* **Operator token.** Routes under ``/admin`` need ``Authorization: Bearer <token>``.

The checks run in a Sanic signal that fires once the route is known and before the
request body is read, so a refused caller costs no body buffering and never waits
through the simulated link delay. The body itself must then arrive within a time
limit (Sanic's own timeouts restart with every packet, so a trickling sender could
hold a connection for hours).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
from functools import lru_cache
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import PayloadTooLarge, SanicException
from sanic.log import logger

from .request_ids import log_tag

__all__ = [
    "ADMIN_PREFIX",
    "cross_site_refusal",
    "host_allowed",
    "install_guards",
    "is_admin_route",
    "same_origin",
]

ADMIN_PREFIX = "admin"  # Sanic's route paths have no leading slash
TOKEN_HINT = "set OFFLOAD_API_TOKEN or --admin-token-file PATH when starting offload-edge"
# host[:port], the host a name, an IPv4 literal or a bracketed IPv6 literal (RFC 9110, 7.2).
_AUTHORITY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:@/\[\]]*)(?::(?P<port>[0-9]{0,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


def _split_authority(value: str) -> tuple[str, int | None] | None:
    """``(lower-case host, port or None)`` of ``host[:port]``, or None if it is not one."""
    match = _AUTHORITY.fullmatch(value)
    if match is None:
        return None
    port = match.group("port")
    if port is not None and (not port or int(port) > 65535):
        return None
    return match.group("host").lower(), int(port) if port else None


def _is_loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return address == _LOOPBACK_V6 and address.scope_id is None
    if host.count(".") != 3:  # dotted quads only: no "127.1", no decimal or octal forms
        return False
    try:
        return ipaddress.IPv4Address(host) in _LOOPBACK_V4
    except ValueError:
        return False


@lru_cache(maxsize=64)  # real callers send one or two Host values; parsing each time costs µs per request
def host_allowed(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback: localhost, 127.x.x.x or [::1]."""
    if host is None:
        return True  # HTTP/1.0 without Host: no browser sends that
    parts = _split_authority(host.strip())
    return parts is not None and _is_loopback_name(parts[0])


def same_origin(origin: str, scheme: str, host: str | None) -> bool:
    """Whether the ``Origin`` header ``origin`` is ``scheme://host`` (ports compared with defaults filled in)."""
    match = _ORIGIN.fullmatch(origin.strip())
    if match is None or host is None or match.group("scheme").lower() != scheme:
        return False  # also "null": sandboxed frames, file: pages, redirects across origins
    theirs, ours = _split_authority(match.group("authority")), _split_authority(host.strip())
    if theirs is None or ours is None:
        return False
    default = _DEFAULT_PORTS.get(scheme)
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


def cross_site_refusal(request: Request) -> str | None:
    """Why ``request`` looks like it came from another site's web page, or None."""
    headers = request.headers
    for site in headers.getall("sec-fetch-site", []):
        if site.strip().lower() in ("cross-site", "same-site"):
            return f"cross-site request refused (Sec-Fetch-Site: {site.strip().lower()})"
    origins = headers.getall("origin", [])
    if origins:
        hosts = headers.getall("host", [])
        host = hosts[0] if len(hosts) == 1 else None
        if len(origins) > 1 or not same_origin(origins[0], request.scheme, host):
            return f"cross-site request refused (Origin: {origins[0][:100]!r} is not this edge)"
    return None


def is_admin_route(route: Any) -> bool:
    """Whether a matched Sanic route is one of the operator's (``/admin/...``)."""
    path = getattr(route, "path", "") or ""
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def _refuse(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> SanicException:
    """The error to raise for a refused request, logged in one line (no traceback: it is the caller's doing)."""
    # Request middleware still runs while Sanic answers the error; this flag keeps the
    # link delay and the request counters out of it (see app._install_middleware).
    request.ctx.edge_refused = True
    logger.info("refused %s %r (request %s): %s", request.method, request.path[:200], log_tag(request), message)
    return SanicException(message, status_code=status, headers=headers, quiet=True)


def _check_token(request: Request, admin_token: str | None) -> None:
    if admin_token is None:
        raise _refuse(request, 403, f"admin routes are disabled: no operator token; {TOKEN_HINT}")
    scheme, _, presented = request.headers.get("authorization", "").strip().partition(" ")
    # Compared as bytes in constant time; surrogatepass encodes whatever text the header decoded to.
    presented_bytes = presented.strip().encode("utf-8", "surrogatepass")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented_bytes, admin_token.encode()):
        raise _refuse(
            request,
            401,
            "admin routes need the operator's token: Authorization: Bearer <token>",
            {"WWW-Authenticate": "Bearer"},
        )


async def _receive_body(request: Request, timeout_s: float) -> None:
    """Read the whole body within ``timeout_s``: 408 otherwise, 413 beyond the size limit; both close the connection."""
    try:
        async with asyncio.timeout(timeout_s):
            await request.receive_body()
    except TimeoutError:
        _stop_reading(request)
        raise _refuse(request, 408, f"request body not received within {timeout_s:g} s") from None
    except PayloadTooLarge:  # raised before any of the body is read when Content-Length says so
        _stop_reading(request)
        limit = request.app.config.REQUEST_MAX_SIZE
        raise _refuse(request, 413, f"request body larger than this edge accepts ({limit} bytes)") from None


def _stop_reading(request: Request) -> None:
    stream = request.stream
    if stream is not None:
        # Sanic would otherwise go on reading (and discarding) the rest of the body after
        # answering; with no size allowed it drops the connection instead.
        stream.keep_alive = False
        stream.request_max_size = 0


def install_guards(app: Sanic, *, admin_token: str | None, body_timeout_s: float) -> None:
    """Refuse foreign hosts, cross-site requests and unauthenticated admin calls before any body is read.

    One signal, once the route is known (an unknown path or method is answered 404/405
    before it, which serves nothing): each signal costs every request several microseconds.
    """

    async def admit(request: Request, route: Any, kwargs: dict[str, Any], handler: Any) -> None:
        hosts = request.headers.getall("host", [])
        if len(hosts) > 1 or not host_allowed(hosts[0] if hosts else None):
            shown = hosts[0][:100] if hosts else ""
            raise _refuse(
                request, 403, f"host not allowed: {shown!r}; this edge answers only localhost, 127.x.x.x or [::1]"
            )
        refusal = cross_site_refusal(request)
        if refusal is not None:
            raise _refuse(request, 403, refusal)
        # The matched route, not the raw path, decides what is an admin route: no spelling
        # of the path can reach one without the token.
        if is_admin_route(route):
            _check_token(request, admin_token)
        stream = request.stream
        if stream is not None and stream.request_body and not route.extra.ignore_body:
            await _receive_body(request, body_timeout_s)

    app.add_signal(admit, "http.routing.after")
