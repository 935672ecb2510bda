"""``GET /openapi.json`` (the gateway's OpenAPI document) and ``GET /docs`` (a page that renders it).

The document is generated from the routes as mounted (see :mod:`offload.openapi.spec`
for what a plugin may add), once, on its first request: by then every plugin's
routes are in the router. The page is one self-contained file of this package:
its script and style are inline and allowed by their hashes in its
Content-Security-Policy, and it fetches nothing but ``/openapi.json`` from this
gateway (a device gateway loads nothing from the internet).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from typing import Any

from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

from .. import __version__
from ..routing import RouteClaims
from ..security import READ
from .spec import build_spec

__all__ = ["DOCS_PATH", "SPEC_PATH", "content_security_policy", "install_openapi"]

SPEC_PATH = "/openapi.json"
DOCS_PATH = "/docs"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def content_security_policy(page: str) -> str:
    """A policy allowing exactly the page's inline scripts and styles (by hash) and fetches to this origin."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(hashes["script"]) or "'none'"
    styles = " ".join(hashes["style"]) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; img-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def install_openapi(app: Sanic, claims: RouteClaims, owner: str) -> None:
    """Add ``GET /openapi.json`` and ``GET /docs`` to ``app``, claimed by ``owner`` (the core).

    Call before the access guard is installed: both are reads (``READ``), open to
    local callers like ``/servers``.
    """
    page = (files(__name__) / "docs.html").read_text(encoding="utf-8")
    page_headers = {
        "Content-Security-Policy": content_security_policy(page),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    built: dict[str, Any] = {}

    async def openapi_json(request: Request) -> HTTPResponse:
        """The OpenAPI 3.1 document of this gateway: the core's routes and every enabled plugin's."""
        if "spec" not in built:
            # Built on first use: the routes do not change while the gateway serves.
            built["spec"] = build_spec(request.app, claims, owner, version=__version__)
        return response.json(built["spec"], headers={"Cache-Control": "no-cache"})

    async def docs(request: Request) -> HTTPResponse:
        """The API reference: a page rendering /openapi.json, with nothing loaded from elsewhere."""
        return response.html(page, headers=page_headers)

    openapi_json.openapi = {  # type: ignore[attr-defined]
        "responses": {"200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {}}}}}
    }
    docs.openapi = {  # type: ignore[attr-defined]
        "responses": {"200": {"description": "The API reference page.", "content": {"text/html": {"schema": {}}}}}
    }
    for path in (SPEC_PATH, DOCS_PATH):
        claims.claim(owner, "GET", path)
    app.add_route(openapi_json, SPEC_PATH, methods=["GET"], name="offload_openapi", ctx_access=READ)
    app.add_route(docs, DOCS_PATH, methods=["GET"], name="offload_docs", ctx_access=READ)
