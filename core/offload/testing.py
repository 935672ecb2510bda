"""Run Sanic apps in-process on loopback ephemeral ports, for tests and the demo.

A socket is bound before the server starts so the caller learns the real port
without racing anyone for it; the app's full lifecycle (startup, listeners,
shutdown) runs exactly as under ``app.run``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sanic import Sanic

from .connections import GuardedHttpProtocol


@dataclass(frozen=True)
class RunningServer:
    """A server started by :func:`serve_app`."""

    app: Sanic
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def make_url(self, path: str) -> str:
        """Absolute URL for ``path`` on this server."""
        return self.url + (path if path.startswith("/") else "/" + path)


def bind_loopback(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind a listening TCP socket; refuses anything outside 127.0.0.0/8."""
    if not host.startswith("127."):
        raise ValueError(f"refusing to bind {host!r}: only loopback (127.0.0.0/8) is allowed")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve_app(app: Sanic, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on ``host`` inside the running event loop until the block exits."""
    # Several apps in one process need Sanic's test mode: without it the second
    # app's startup re-compiles methods the first already rewrote, and fails.
    Sanic.test_mode = True
    # TouchUp rewrites request handling on the Sanic *class* for the signals one app has; another
    # app in the same process (one without the gateway's signal, say) would then fail on every request.
    app.config.TOUCHUP = False
    app.config.MOTD = False
    sock = bind_loopback(host, port)
    bound_port = sock.getsockname()[1]
    server = await app.create_server(sock=sock, access_log=False, noisy_exceptions=False, protocol=GuardedHttpProtocol)
    if server is None:  # pragma: no cover - create_server always returns one on current Sanic
        raise RuntimeError("Sanic did not create a server")
    await server.startup()
    await server.before_start()
    await server.after_start()
    await server.start_serving()
    try:
        yield RunningServer(app=app, host=host, port=bound_port)
    finally:
        await server.before_stop()
        closing = server.close()
        if closing is not None:
            await closing
        await close_connections(server.connections)
        await server.after_stop()
        sock.close()


async def close_connections(connections: set, grace_s: float = 1.0) -> None:
    """Close kept-alive connections as ``app.run`` does at shutdown: idle ones now, busy ones after a grace period.

    Without this a stopped server would keep answering on connections clients already had open.
    """
    for connection in list(connections):
        connection.close_if_idle()
    deadline = asyncio.get_running_loop().time() + grace_s
    while connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # let in-flight responses finish (bounded)
    for connection in list(connections):
        connection.close()
