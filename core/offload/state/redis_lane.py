"""A lean path to Redis for the one operation on every request: the throughput window's script.

redis-py's connection pools check each connection for unread data every time
one is taken (``can_read_destructive``) and guard the pool with an
``asyncio.Condition``: right for general use, but on loopback that is about
as much CPU as the round trip itself, and the window check runs once per
task. :class:`Lane` keeps its own free list of redis-py connections (made by
the pool, so URL, TLS and password handling stay redis-py's) and runs one
``EVALSHA`` per borrow. A connection that fails, times out or is cancelled
mid-reply is discarded, never reused, so an answer never reaches the wrong
caller.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import redis.exceptions
from redis.asyncio.connection import AbstractConnection, ConnectionPool


class Lane:
    """At most ``size`` connections from ``pool``'s settings, borrowed one command at a time."""

    def __init__(self, pool: ConnectionPool, size: int) -> None:
        self._pool = pool
        self._size = size
        self._free: list[AbstractConnection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run the script by its hash (loading it once if this Redis does not know it: after a restart)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def execute(self, *command: Any) -> Any:
        """Send one command on a free connection and read its reply."""
        connection = await self._borrow()
        try:
            if not connection.is_connected:
                await connection.connect()
            await connection.send_command(*command)
            reply = await connection.read_response()
        except BaseException:
            # Half a reply may be left unread: this connection must not serve anyone else.
            self._open -= 1
            await connection.disconnect(nowait=True)
            self._wake()
            raise
        self._free.append(connection)
        self._wake()
        return reply

    async def _borrow(self) -> AbstractConnection:
        while True:
            if self._free:
                return self._free.pop()
            if self._open < self._size:
                self._open += 1
                return self._pool.make_connection()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close every idle connection (borrowed ones close when their command ends)."""
        free, self._free = self._free, []
        self._open -= len(free)
        for connection in free:
            await connection.disconnect(nowait=True)
