"""Who may call what: the operator's token, browser defences, and per-route access.

The gateway runs on a device that also runs a browser, so any web page can make
the browser send requests to ``127.0.0.1:8899``. Three controls stop a page
from using the gateway (see ``docs/security.md``):

* **Host allowlist** on every route: a DNS-rebound page reaches us with its own
  name in ``Host`` (``evil.example:8899``); only loopback names, the bind address
  and ``[gateway] allowed_hosts`` are answered.
* **No cross-site requests** on every route: ``Sec-Fetch-Site: cross-site`` /
  ``same-site`` or an ``Origin`` other than our own (or one listed in
  ``[gateway] allowed_origins``) is refused.
* **The operator's token** where state changes: ``Authorization: Bearer TOKEN``
  with the token from ``$OFFLOAD_API_TOKEN`` or ``[gateway] api_token_file``,
  compared in constant time; never over GET and never with a content type a
  plain HTML form can send.

Every route states who may call it with ``ctx_access`` (:data:`READ` or
:data:`OPERATOR`) when it is added; a route that says nothing is :data:`READ`
for GET/HEAD and :data:`OPERATOR` for every other method. A route whose
answer decides per request whether it changes state (a contract call that may
be a view or a transaction) is declared :data:`READ` and calls
:func:`require_operator` once it knows.
"""

from __future__ import annotations

import functools
import hmac
import inspect
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sanic import Request, Sanic

from .errors import ConfigError, OffloadError

__all__ = [
    "OPERATOR",
    "READ",
    "TOKEN_ENV",
    "AccessGuard",
    "install_access_guard",
    "is_loopback_host",
    "load_api_token",
    "require_operator",
]

TOKEN_ENV = "OFFLOAD_API_TOKEN"
READ = "read"  # any local caller that passes the browser defences
OPERATOR = "operator"  # the operator's token as well
ACCESS_LEVELS = (READ, OPERATOR)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Content types an HTML form (or a no-preflight fetch) can send cross-site: never accepted for a write.
_SIMPLE_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
# Distinct Host headers whose verdict is remembered (see AccessGuard.host_allowed).
HOST_VERDICTS_KEPT = 256
# A token shorter than this is guessable by a patient attacker on the local network.
MIN_TOKEN_LENGTH = 16
HOW_TO_CONFIGURE = (
    f"set {TOKEN_ENV} (or [gateway] api_token_file) when starting the gateway, "
    "then send it as 'Authorization: Bearer <token>'"
)


def load_api_token(token_file: str, base_dir: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """The operator's token from ``$OFFLOAD_API_TOKEN``, else ``token_file``; None when neither is set.

    Raises :class:`ConfigError` (one line, never the token) for an unreadable file or a short token.
    """
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    source = f"${TOKEN_ENV}"
    if not token and token_file:
        path = Path(token_file)
        path = path if path.is_absolute() else base_dir / path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"[gateway] api_token_file {str(path)!r}: cannot read ({exc.strerror})") from None
        source = f"[gateway] api_token_file {str(path)!r}"
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or any(char.isspace() for char in token):
        raise ConfigError(
            f"the token in {source} must be at least {MIN_TOKEN_LENGTH} printable characters without spaces; "
            'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return token


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine's loopback."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """``Host`` without its port, lower-cased (``[::1]:8899`` -> ``[::1]``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class AccessGuard:
    """The gateway's access rules, checked on every request before its handler runs."""

    token: str | None
    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]
    max_body_bytes: int
    # Host headers already judged: parsing an address on every request is measurable.
    _host_verdicts: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls, token: str | None, bind_host: str, hosts: Iterable[str], origins: Iterable[str], max_body_bytes: int
    ) -> AccessGuard:
        """Rules for a gateway bound to ``bind_host`` with the configured extra hosts and origins."""
        allowed = {_hostname(host) for host in hosts}
        if bind_host and bind_host not in ("0.0.0.0", "::"):
            allowed.add(_hostname(bind_host if ":" not in bind_host else f"[{bind_host}]"))
        return cls(
            token=token,
            allowed_hosts=frozenset(allowed),
            allowed_origins=frozenset(origin.rstrip("/").lower() for origin in origins),
            max_body_bytes=max_body_bytes,
        )

    def host_allowed(self, host_header: str | None) -> bool:
        """Loopback names, the bind address and ``allowed_hosts``; no Host at all is a non-browser client."""
        if host_header is None:
            return True
        verdict = self._host_verdicts.get(host_header)
        if verdict is None:
            name = _hostname(host_header)
            verdict = is_loopback_host(name) or name in self.allowed_hosts
            if len(self._host_verdicts) >= HOST_VERDICTS_KEPT:
                self._host_verdicts.clear()  # a crude bound: callers can send endless names
            self._host_verdicts[host_header] = verdict
        return verdict

    def target_allowed(self, raw_url: bytes) -> bool:
        """An origin-form target (``/path``), or an absolute one (``http://host/path``) naming an allowed host."""
        if raw_url[:1] == b"/" or raw_url == b"*":
            return True
        parts = urlsplit(raw_url.decode("latin-1"))
        return bool(parts.netloc) and self.host_allowed(parts.netloc)

    def cross_site(self, request: Request) -> str | None:
        """Why ``request`` is a cross-site request we refuse, or None."""
        origin = request.headers.get("origin")
        if origin is not None:
            origin = origin.rstrip("/").lower()
            if origin in self.allowed_origins:
                return None
            own = f"{request.scheme}://{(request.headers.get('host') or '').lower()}"
            if origin != own:
                return f"cross-origin request from {origin[:100]!r} refused"
        fetch_site = (request.headers.get("sec-fetch-site") or "").lower()
        if fetch_site in ("cross-site", "same-site"):
            return f"{fetch_site} request refused"
        return None

    def check(self, request: Request, access: str | None, max_body: int | None) -> None:
        """Refuse ``request`` (raising :class:`OffloadError`) unless its host, origin, size and credential pass.

        ``access`` and ``max_body`` are what its route declared (None: the defaults).
        """
        headers = request.headers
        hosts = headers.getall("host", None) or [None]
        # Two Host headers, or an absolute request target naming another host, would let a
        # request be judged by one name and meant for another.
        if len(hosts) > 1 or not self.host_allowed(hosts[0]) or not self.target_allowed(request.raw_url):
            raise OffloadError(
                403,
                "host not allowed: this gateway answers only to its own address "
                "(add the name to [gateway] allowed_hosts to serve it)",
            )
        if "origin" in headers or "sec-fetch-site" in headers:
            reason = self.cross_site(request)
            if reason is not None:
                raise OffloadError(
                    403, f"{reason}: add the page's origin to [gateway] allowed_origins to let it call this gateway"
                )
        method = request.method
        if method in _READ_METHODS:
            if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
                # A GET's body has no meaning (Sanic leaves it unread, and logs that per request).
                raise OffloadError(400, f"a {method} request carries no body")
        else:
            limit = self.max_body_bytes if max_body is None else max_body
            if len(request.body) > limit:
                raise OffloadError(413, f"the body is larger than this route accepts ({limit} bytes)")
        if (access or (READ if method in _READ_METHODS else OPERATOR)) == OPERATOR:
            self.require_operator(request)

    def require_operator(self, request: Request, *, allow_get: bool = False) -> None:
        """Refuse unless ``request`` carries the operator's token in a form no web page can forge."""
        if request.method in _READ_METHODS and not allow_get:
            raise OffloadError(405, f"{request.path} changes state: send it with POST, not {request.method}")
        content_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if content_type in _SIMPLE_CONTENT_TYPES:
            raise OffloadError(
                415, f"{request.path} changes state and does not accept {content_type}: send application/json"
            )
        if self.token is None:
            raise OffloadError(403, f"{request.path} changes state and needs the operator's token; {HOW_TO_CONFIGURE}")
        scheme, _, credential = (request.headers.get("authorization") or "").partition(" ")
        # surrogateescape: Sanic keeps a header's undecodable bytes as surrogates; compare the bytes sent.
        try:
            sent = credential.strip().encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            sent = b""  # not bytes any client sent: not the token
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, self.token.encode()):
            raise OffloadError(
                401,
                f"{request.path} changes state: send the operator's token as 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )


def require_operator(request: Request, *, allow_get: bool = False) -> None:
    """For routes that learn per request that they change state: refuse unless the operator's token came.

    Raises :class:`OffloadError` 401 (no or wrong token), 403 (no token configured),
    405 (a GET, unless ``allow_get``) or 415 (a form or text content type).
    """
    guard: AccessGuard = request.app.ctx.access_guard
    guard.require_operator(request, allow_get=allow_get)


def install_access_guard(app: Sanic, guard: AccessGuard) -> None:
    """Check every request to every route of ``app`` (as mounted now) against ``guard`` before its handler runs.

    Each route's handler is wrapped, with the route's declared access and body limit
    looked up once here: a Sanic signal or middleware would cost 6 to 12 µs a request,
    the wrapper about one. Bodies above the largest limit of any route are refused by
    Sanic before they are read (its ``REQUEST_MAX_SIZE``, set here); a route's own
    smaller limit is checked by the wrapper.
    """
    app.ctx.access_guard = guard
    largest = guard.max_body_bytes
    for route in app.router.routes:
        declared = getattr(route.ctx, "access", None)
        if declared is not None and declared not in ACCESS_LEVELS:
            raise ConfigError(f"route {route.path!r} declares ctx_access={declared!r}; use READ or OPERATOR")
        max_body = getattr(route.ctx, "max_body", None)
        if isinstance(max_body, int):
            largest = max(largest, max_body)
        route.handler = _guarded(route.handler, guard, declared, max_body)
    app.config.REQUEST_MAX_SIZE = largest


def _guarded(handler: Callable[..., Any], guard: AccessGuard, access: str | None, max_body: int | None) -> Any:
    @functools.wraps(handler)
    async def checked(request: Request, *args: Any, **kwargs: Any) -> Any:
        guard.check(request, access, max_body)
        answer = handler(request, *args, **kwargs)
        return await answer if inspect.isawaitable(answer) else answer

    return checked
