"""A caller that hangs up before its answer is a log line at INFO, never an ERROR with a traceback."""

from __future__ import annotations

import contextvars
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from sanic.exceptions import RequestCancelled

from offload.responses import CALLER_GONE, JsonErrorHandler


def test_a_cancelled_request_is_a_499_logged_as_info(caplog: pytest.LogCaptureFixture) -> None:
    request: Any = SimpleNamespace(method="GET", path="/square/3", headers={}, ctx=SimpleNamespace())
    with caplog.at_level(logging.INFO, logger="offload"):
        # In a context of its own: the handler sets the request id, which must not leak into later tests.
        reply = contextvars.copy_context().run(JsonErrorHandler().default, request, RequestCancelled())
    assert reply.status == CALLER_GONE
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert any("-> 499" in record.getMessage() for record in caplog.records)
