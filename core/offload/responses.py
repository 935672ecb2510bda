"""Turning results and errors into HTTP responses: always JSON, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from sanic import Request, response
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.helpers import json_dumps
from sanic.response import HTTPResponse

from .errors import OffloadError
from .request_ids import HEADER as REQUEST_ID_HEADER
from .request_ids import assign as assign_request_id
from .tasks import OffloadResult

SERVER_HEADER = "X-Offload-Server"
# How a cacheable answer was obtained: "hit", "coalesced" (another request's) or "miss".
CACHE_HEADER = "X-Offload-Cache"

log = logging.getLogger("offload.errors")


def envelope_response(result: OffloadResult) -> HTTPResponse:
    """The envelope as JSON, with the upstream's status and the answering server in a header."""
    # Encoded here and handed over as bytes: Sanic's JSONResponse costs about 5 µs more per request.
    headers = {SERVER_HEADER: result.server}
    if result.cache is not None:
        headers[CACHE_HEADER] = result.cache
    return HTTPResponse(
        json_dumps(result.envelope()), status=result.status_code, headers=headers, content_type="application/json"
    )


# nginx's status for "the caller went away before the answer" (only ever logged and counted).
CALLER_GONE = 499


def error_response(status: int, message: str, **extra: Any) -> HTTPResponse:
    """A JSON error body ``{"error": message, "status_code": status, ...}``."""
    return response.json({"error": message, "status_code": status, **extra}, status=status)


class JsonErrorHandler(ErrorHandler):
    """Renders every exception as a JSON error with the right status."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        # Requests that reached no handler get their id here, before the log line that should carry it.
        request_id = assign_request_id(request) if request is not None else None
        reply = self.render(request, exception)
        if request_id is not None:
            reply.headers[REQUEST_ID_HEADER] = request_id
        if reply.status < 500:
            # One line per refused request, never a traceback: a caller's mistake is not our error.
            # %r keeps a caller's control characters out of the log's line structure.
            log.info("%s %.120r -> %d: %.160r", request.method, request.path, reply.status, str(exception))
        return reply

    def render(self, request: Request, exception: Exception) -> HTTPResponse:
        """The JSON answer for ``exception``."""
        if isinstance(exception, OffloadError):
            headers = dict(exception.headers)
            if exception.server:
                headers[SERVER_HEADER] = exception.server
            return response.json(exception.to_json(), status=exception.status, headers=headers or None)
        if isinstance(exception, RequestCancelled):
            # The caller closed the connection before its answer: nobody reads this, and nothing failed here.
            return error_response(CALLER_GONE, "the caller closed the connection")
        if isinstance(exception, SanicException):
            status = exception.status_code
            message = str(exception) or exception.message or "request failed"
            if status == 404:
                message = f"no route for {request.method} {request.path}"
            return error_response(status, message)
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exception)
        return error_response(500, f"internal error while handling {request.path}: {type(exception).__name__}")
