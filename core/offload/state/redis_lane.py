"""A lean path to Redis for the one operation on every task: the throughput window's script.

The window check runs once per task, so its cost is the gateway's cost. Through
redis-py it takes about 200 µs on loopback (pool bookkeeping, a check of each
borrowed connection for unread data, Python-level command packing), of which
the round trip itself is under half; ``offload bench scale`` prints both side
by side. :class:`Lane` keeps one connection and pipelines: each call writes its
command and waits for its reply in order (Redis answers in the order it
reads), replies are parsed by hiredis, the C parser redis-py itself uses. It
speaks only what the window needs (``AUTH``, ``SELECT``, ``EVALSHA``/``EVAL``)
over plain TCP or a Unix socket; TLS (``rediss://``) keeps redis-py's own path.

A call that times out or is cancelled keeps its place in the queue, so the late
reply is dropped rather than handed to the next caller; a lost connection fails
every waiting call and the next call connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import hiredis
import redis.exceptions

# The redis-py connection classes a lane can stand in for: plain TCP and Unix sockets (not TLS).
LANE_CONNECTIONS = ("Connection", "UnixDomainSocketConnection")


def encode_command(*parts: Any) -> bytes:
    """One command in RESP: an array of bulk strings."""
    chunks = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        chunks.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(chunks)


class _LaneProtocol(asyncio.Protocol):
    """Feeds bytes to hiredis and resolves the oldest waiting call with each complete reply."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:
                # A reply nobody asked for: the stream cannot be trusted any more.
                self.fail(ConnectionError("an unexpected reply from Redis"))
                return
            waiter = self.waiting.popleft()
            if not waiter.done():  # a cancelled or timed-out call's reply is dropped here
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or ConnectionError("connection closed by Redis"))

    def fail(self, error: BaseException) -> None:
        self.lost = error
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(str(error) or type(error).__name__))
        if self.transport is not None:
            self.transport.close()


class Lane:
    """One pipelined connection to the Redis of ``settings`` (redis-py's parsed URL keywords)."""

    def __init__(self, settings: Mapping[str, Any], reply_timeout_s: float, connect_timeout_s: float) -> None:
        self._settings = dict(settings)
        self._reply_timeout_s = reply_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _LaneProtocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run the script by its hash, loading it once if this Redis does not know it (after a restart)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def execute(self, *command: Any) -> Any:
        """Send one command and wait for its reply; Redis's error replies raise redis-py's exceptions."""
        protocol = await self._connected()
        waiter = asyncio.get_running_loop().create_future()
        protocol.waiting.append(waiter)
        assert protocol.transport is not None
        protocol.transport.write(encode_command(*command))
        try:
            async with asyncio.timeout(self._reply_timeout_s):
                reply = await waiter
        except TimeoutError:
            # As redis-py words it, so the reason a caller sees is the same whichever path timed out.
            raise redis.exceptions.TimeoutError("Timeout reading from Redis") from None
        if isinstance(reply, hiredis.ReplyError):
            raise _as_redis_error(str(reply))
        return reply

    async def _connected(self) -> _LaneProtocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connection attempt at a time, shared by every caller
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    self._protocol = await self._open()
            except TimeoutError:
                raise redis.exceptions.TimeoutError("Timeout connecting to server") from None
            return self._protocol

    async def _open(self) -> _LaneProtocol:
        loop = asyncio.get_running_loop()
        settings = self._settings
        if settings.get("path"):
            _, protocol = await loop.create_unix_connection(_LaneProtocol, settings["path"])
        else:
            _, protocol = await loop.create_connection(
                _LaneProtocol, settings.get("host", "localhost"), int(settings.get("port", 6379))
            )
        self._protocol = protocol
        try:
            if settings.get("password") is not None:
                credentials = [settings["username"]] if settings.get("username") else []
                await self.execute("AUTH", *credentials, settings["password"])
            if int(settings.get("db") or 0):
                await self.execute("SELECT", int(settings["db"]))
        except BaseException:
            protocol.fail(ConnectionError("connection setup failed"))
            raise
        return protocol

    async def close(self) -> None:
        """Close the connection; waiting calls fail."""
        if self._protocol is not None:
            with contextlib.suppress(Exception):
                self._protocol.fail(ConnectionError("lane closed"))
            self._protocol = None


def _as_redis_error(message: str) -> redis.exceptions.RedisError:
    """Redis's error reply as the exception redis-py would raise for it."""
    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")) or "invalid password" in message:
        return redis.exceptions.AuthenticationError(message)
    return redis.exceptions.ResponseError(message)
