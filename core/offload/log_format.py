"""Where ``offload serve`` logs go and how they look: ``--log-format text`` (default) or ``json``.

Every line carries the request id (``-`` outside a request, see
:mod:`offload.request_ids`). In ``json`` mode every line on stderr is one JSON
object (python-json-logger) with ``time``, ``level``, ``logger``, ``message``,
``request_id`` and ``pid`` (the worker's, behind ``--workers N``), plus whatever
a record carries besides (Sanic's access lines: ``host``, ``request``,
``status``, ``byte``; a traceback as ``exc_info``): Sanic's own loggers, which
print to stdout by default, and Python's warnings are routed there too.

Sanic configures its loggers whenever an app is created, so :func:`configure`
runs again after the gateway app is built (in each worker).
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from .request_ids import RequestIdFilter

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s [%(request_id)s]: %(message)s"
TEXT_ACCESS_FORMAT = "%(asctime)s %(name)s %(levelname)s [%(request_id)s]: %(host)s %(request)s %(status)s %(byte)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(process)d"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}
SANIC_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets")
OFFLOAD_LOGGER = "offload"


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler this module installed (and may replace when configuring again)."""


def json_formatter() -> logging.Formatter:
    """One JSON object per record, with the field names above."""
    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES)


def _handler(formatter: logging.Formatter) -> logging.Handler:
    handler = _OurHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    return handler


def _drop_ours(logger: logging.Logger) -> None:
    for handler in [handler for handler in logger.handlers if isinstance(handler, _OurHandler)]:
        logger.removeHandler(handler)


def configure(log_format: str = "text") -> None:
    """Set up the ``offload`` and Sanic loggers for ``log_format``; safe to call again."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    offload = logging.getLogger(OFFLOAD_LOGGER)
    offload.setLevel(logging.INFO)
    root = logging.getLogger()
    _drop_ours(offload)
    _drop_ours(root)
    if log_format == "json":
        # One handler, on the root: every logger (Sanic's, asyncio's, warnings') ends up there, as JSON.
        root.addHandler(_handler(json_formatter()))
        logging.captureWarnings(True)
        offload.propagate = True
        for name in SANIC_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
        return
    # Text: our lines once each on stderr; Sanic's loggers keep their own handlers, with the request id added.
    offload.addHandler(_handler(logging.Formatter(TEXT_FORMAT)))
    offload.propagate = False
    for name in SANIC_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(existing, RequestIdFilter) for existing in handler.filters):
                handler.addFilter(RequestIdFilter())
            if name == "sanic.access":
                handler.setFormatter(logging.Formatter(TEXT_ACCESS_FORMAT))
