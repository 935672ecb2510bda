"""``GET /dashboard``: a live view of every pool and server, one static page that polls ``/servers``.

No build step and nothing fetched from elsewhere: the page, its script and its
stylesheet ship in this package and are served by the gateway itself. The page
builds its DOM with ``textContent`` only (server names come from config and
from edges), and its Content-Security-Policy lets it load nothing but these
files and call nothing but this gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from ..routing import RouteClaims
from ..security import READ

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "DASHBOARD_PATH", "install_dashboard"]

DASHBOARD_PATH = "/dashboard"
# Served path -> (file in this package, content type).
ASSETS = {
    DASHBOARD_PATH: ("dashboard.html", "text/html; charset=utf-8"),
    f"{DASHBOARD_PATH}/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    f"{DASHBOARD_PATH}/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
# Same origin only: a script injected through some server name could neither run inline nor call out.
# (img-src data: is the page's empty favicon, which spares the browser a request for /favicon.ico.)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load: a gateway upgrade must not leave an old script polling a new /servers.
    "Cache-Control": "no-cache",
}


def install_dashboard(app: Sanic, claims: RouteClaims, owner: str) -> None:
    """Add ``GET /dashboard`` and its two static files to ``app``, claimed by ``owner``.

    Call before the access guard is installed: the routes are reads (``READ``),
    open to local callers like ``/servers``, which the page polls.
    """
    package = files(__name__)
    for path, (filename, content_type) in ASSETS.items():
        body = (package / filename).read_bytes()  # read once: the files never change while serving
        claims.claim(owner, "GET", path)
        app.add_route(
            _static(body, content_type),
            path,
            methods=["GET"],
            name="offload_" + filename.replace(".", "_"),
            ctx_access=READ,
        )


def _static(body: bytes, content_type: str) -> Callable[[Request], Awaitable[HTTPResponse]]:
    async def serve(request: Request) -> HTTPResponse:
        return HTTPResponse(body, content_type=content_type, headers=_HEADERS)

    return serve
