"""Exceptions the gateway raises, each carrying what a user needs to fix it.

::

    Exception
    ├── ConfigError            plugins.toml or a plugin's setup is wrong (one line: what to fix)
    └── OffloadError           a request cannot be answered; rendered as JSON with its status
        └── AttemptFailed      (offload.sending) one server failed in a way another might not

The transports' own failures (``offload.transports``: unreachable, answer refused,
invalid request) never reach a caller as such: the engine turns them into
:class:`OffloadError` with the status that says whose fault it was.
"""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """Configuration or plugin setup is wrong; the message is one line saying what to fix."""


class OffloadError(Exception):
    """A task could not be answered; rendered as a JSON error with ``status``.

    ``status`` follows whose fault it is: 400/404/422 for the caller's mistake,
    502 (unreachable or failing upstream), 503 (no server available) and 504
    (upstream timeout) for an upstream's. ``never_arrived`` is True when the
    request provably reached no server (no connection could be opened): a
    write that failed so was not applied anywhere.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        server: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        never_arrived: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.server = server
        self.details = details or {}
        # Extra response headers (e.g. WWW-Authenticate on a 401).
        self.headers = headers or {}
        self.never_arrived = never_arrived

    def to_json(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        body: dict[str, Any] = {"error": self.message, "status_code": self.status}
        if self.server is not None:
            body["server"] = self.server
        body.update(self.details)
        return body
