"""Turn every error into a JSON ``{"error": "..."}`` response.

Clients of the edge are programs (the gateway, benchmarks), so an HTML error page
or a traceback would only get in their way.
"""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.log import error_logger
from sanic.response import HTTPResponse, json

from .request_ids import log_tag
from .tasks import TaskInputError


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> HTTPResponse:
    """The single JSON error shape used by every route."""
    return json({"error": message}, status=status, headers=headers)


async def _task_input_error(request: Request, exc: Exception) -> HTTPResponse:
    return error_response(str(exc), 400)


async def _sanic_error(request: Request, exc: SanicException) -> HTTPResponse:
    status = exc.status_code or 500
    message = str(exc) or getattr(exc, "message", "") or "error"
    if status >= 500 and not exc.quiet:
        error_logger.exception(
            "error while handling %s %s (request %s)", request.method, request.path, log_tag(request), exc_info=exc
        )
    # Keep headers such as ``Allow`` on 405 responses.
    headers = {str(k): str(v) for k, v in (exc.headers or {}).items()}
    return error_response(message, status, headers)


async def _unexpected_error(request: Request, exc: Exception) -> HTTPResponse:
    # Log the details for the operator but do not leak them to the client.
    error_logger.exception(
        "unhandled error in %s %s (request %s)", request.method, request.path, log_tag(request), exc_info=exc
    )
    return error_response("internal server error", 500)


def install_error_handlers(app: Sanic) -> None:
    """Register JSON error handlers; Sanic picks the most specific class in the MRO."""
    app.error_handler.add(TaskInputError, _task_input_error)
    app.error_handler.add(SanicException, _sanic_error)
    app.error_handler.add(Exception, _unexpected_error)
