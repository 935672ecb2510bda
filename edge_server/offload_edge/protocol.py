"""Sanic's HTTP/1.1 protocol, answering requests whose target it cannot parse.

For a request line such as ``CONNECT example.com:443`` or a path with a NUL byte,
Sanic fails to build the request, then fails again building the stand-in request it
answers errors with, from the same target: the caller gets no answer and the log
gets two tracebacks per request, which any caller can trigger at will.
"""

from __future__ import annotations

from sanic.exceptions import BadRequest
from sanic.http import Http
from sanic.server.protocols.http_protocol import HttpProtocol

__all__ = ["EdgeHttpProtocol"]


class _AnsweringHttp(Http):
    __slots__ = ()

    def create_empty_request(self) -> None:
        try:
            super().create_empty_request()
        except BadRequest:
            # The target is what could not be parsed: build the stand-in for "*" instead,
            # so the caller gets the 400 (as JSON, through the app's error handlers).
            self.url = None
            super().create_empty_request()


class EdgeHttpProtocol(HttpProtocol):
    """The protocol ``offload-edge`` serves with: Sanic's, but every malformed request gets a 400."""

    HTTP_CLASS = _AnsweringHttp
