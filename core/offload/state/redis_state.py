"""Shared state in Redis (or Valkey): what lets a gateway run as many replicas on many machines.

Every operation is one round trip and atomic across processes: a Lua script
(``EVALSHA``; when the server does not know it yet, after a restart say,
redis-py loads it and retries, two more round trips once) or a single
command. Waiting for a nonce lease that another process holds retries
``SET NX`` with short pauses. Windows and expiries are measured with the server's clock
(``redis.call('TIME')``), so the replicas' own clocks do not matter. Only core
commands, Lua and pub/sub are used, so Redis >= 5 and Valkey both work.

Keys, under ``namespace`` (``offload`` by default)::

    <ns>:window:<key>                 a hash: the ring of buckets of one sliding window
    <ns>:nonce:{<account>}:lock       the lease: a random token, PX hold_s
    <ns>:nonce:{<account>}:next       the next nonce to use
    <ns>:health:{<pool>}              a sorted set: server URL -> expiry (server ms)
    <ns>:health:{<pool>}:<server>     one verdict (JSON), PX ttl_s
    <ns>:cache:<key>                  bytes, PX ttl_s

and one pub/sub channel, ``<ns>:<db>:health``, on which every verdict is published.
The braces are literal: Redis Cluster hash tags, so that the keys one script
touches together share a slot.

Every failure of the store (refused, reset, timed out, an error reply) is
raised as :class:`StateUnavailable` with a one-line reason naming the server
but never its password. redis-py's own retries are switched off: they would
turn a dead store into a slow one (its default is 10 retries with backoff up
to 1 s) and could apply a non-idempotent script twice; the caller
(:class:`~offload.state.resilient.ResilientState`) decides what a failure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import random
import re
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..throughput import WindowAdmission
from .base import HealthListener, HealthRecord, LeaseUnavailable, NonceLease, StateUnavailable
from .redis_lane import LANE_CONNECTIONS, Lane

__all__ = ["RedisState"]

log = logging.getLogger("offload.state")

T = TypeVar("T")

# Buckets per window, as in SlidingWindowCounter: an event is remembered at most
# window_s / WINDOW_BUCKETS too long, never forgotten early.
WINDOW_BUCKETS = 50
# Connections one process opens at most; more concurrent operations wait for one.
MAX_CONNECTIONS = 64
# Waiting for another process's nonce lease: first pause, longest pause.
LEASE_BACKOFF_START_S = 0.001
LEASE_BACKOFF_CAP_S = 0.016
# The health listener, after losing its connection: first and longest pause before reconnecting.
LISTEN_BACKOFF_START_S = 0.05
LISTEN_BACKOFF_CAP_S = 1.0
# A silent subscription is pinged after this long, and given up on after twice as long without any reply.
LISTEN_KEEPALIVE_S = 5.0
# health_records reads at most this many servers of one pool (one pool has a handful).
MAX_HEALTH_RECORDS = 1000
# Longest detail kept from an error message in a reason.
MAX_DETAIL = 160

# -- Lua ----------------------------------------------------------------------------------
#
# Numbers pass through string.format('%.0f', x): Lua 5.1 has only doubles, and
# tostring() would print a bucket index or a millisecond timestamp of more than
# 14 digits in exponent notation.

# SlidingWindowCounter's ring of WINDOW_BUCKETS + 1 buckets, kept in one hash:
# field 'w' the bucket width it was made with (a different width starts over, as
# MemoryState does), 'e' the newest bucket index written or cleared, 't' the
# running total, and field '<index mod slots>' the count of that bucket.
# KEYS[1] the hash. ARGV: mode ('admit', 'record' or 'count'), limit, bucket
# width in microseconds, number of slots, PEXPIRE in ms. Returns {admitted, count}
# (admitted is 0 for 'count'). 'count' never creates the key and leaves its expiry alone.
WINDOW_LUA = """
local key, mode = KEYS[1], ARGV[1]
local limit, width, slots = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local time = redis.call('TIME')
local current = math.floor((tonumber(time[1]) * 1000000 + tonumber(time[2])) / width)
local state = redis.call('HMGET', key, 'w', 'e', 't')
local epoch, total
if state[1] == ARGV[3] then
  epoch, total = tonumber(state[2]), tonumber(state[3])
end
if epoch == nil or total == nil or current - epoch >= slots then
  -- absent, made with another width, or every bucket left the window
  if mode == 'count' then
    if epoch ~= nil then redis.call('DEL', key) end
    return {0, 0}
  end
  redis.call('DEL', key)
  epoch, total = current, 0
elseif current > epoch then
  for index = epoch + 1, current do
    local field = string.format('%.0f', index % slots)
    local n = tonumber(redis.call('HGET', key, field))
    if n then
      total = total - n
      redis.call('HDEL', key, field)
    end
  end
  epoch = current
elseif current < epoch then
  -- the server's clock went back (a failover, a clock step): count in the newest bucket
  current = epoch
end
local admitted = 0
if mode == 'record' or (mode == 'admit' and total <= limit) then
  redis.call('HINCRBY', key, string.format('%.0f', current % slots), 1)
  total = total + 1
  admitted = 1
end
redis.call('HSET', key, 'w', ARGV[3], 'e', string.format('%.0f', epoch), 't', total)
if mode ~= 'count' then
  redis.call('PEXPIRE', key, ARGV[5])
end
return {admitted, total}
"""

# The lease's reads and writes only while KEYS[1] (the lock) holds ARGV[1] (our token).
# KEYS[2] the next nonce. ARGV[2]: 'get', 'set' or 'del'; ARGV[3] the value to set.
# Returns {0} when the lease is lost, {1} or {1, value} otherwise.
NONCE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
local action = ARGV[2]
if action == 'get' then
  local value = redis.call('GET', KEYS[2])
  if value then return {1, value} end
elseif action == 'set' then
  redis.call('SET', KEYS[2], ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
return {1}
"""

# Release the lease only if it is still ours (a taken-over lease belongs to its new holder).
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Store one verdict, index it in its pool, and publish it, unless a newer one is stored.
# KEYS[1] the verdict, KEYS[2] the pool's index. ARGV: PX in ms, JSON, channel,
# server URL, the verdict's 'at'. Returns 1 if stored and published, 0 if stale.
PUBLISH_HEALTH_LUA = """
local ttl = tonumber(ARGV[1])
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, old = pcall(cjson.decode, stored)
  if ok and type(old) == 'table' and tonumber(old.at) and tonumber(old.at) > tonumber(ARGV[5]) then
    return 0
  end
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], string.format('%.0f', now + ttl), ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""

# The unexpired verdicts of one pool. KEYS[1] the pool's index; a verdict's key is
# the index's name, ':' and the server URL (same hash tag, so same slot).
# ARGV[1] the most to return.
HEALTH_RECORDS_LUA = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local servers = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #servers == 0 then
  return {}
end
local keys = {}
for i, server in ipairs(servers) do
  keys[i] = KEYS[1] .. ':' .. server
end
return redis.call('MGET', unpack(keys))
"""


def _milliseconds(seconds: float) -> int:
    """A PX/PEXPIRE argument: at least 1 ms, rounded up (never expire early)."""
    return max(1, math.ceil(seconds * 1000))


def _encode_record(record: HealthRecord) -> bytes:
    return json.dumps(
        {
            "pool": record.pool,
            "server": record.server,
            "available": record.available,
            "reason": record.reason,
            "replica": record.replica,
            "at": record.at,
            "ttl_s": record.ttl_s,
        },
        separators=(",", ":"),
        allow_nan=False,
    ).encode()


def _decode_record(data: Any) -> HealthRecord | None:
    """The record in ``data`` (JSON bytes), or None if it is not one (another program's message)."""
    try:
        fields = json.loads(data)
        record = HealthRecord(
            pool=fields["pool"],
            server=fields["server"],
            available=fields["available"],
            reason=fields["reason"],
            replica=fields["replica"],
            at=float(fields["at"]),
            ttl_s=float(fields["ttl_s"]),
        )
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None
    valid = (
        isinstance(record.pool, str)
        and isinstance(record.server, str)
        and isinstance(record.available, bool)
        and (record.reason is None or isinstance(record.reason, str))
        and isinstance(record.replica, str)
        and math.isfinite(record.at)
        and math.isfinite(record.ttl_s)
    )
    return record if valid else None


# What the errno of a failed connect or send means, in a reason.
_SOCKET_ERRORS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENOENT: "no socket there",
    errno.EACCES: "no permission to use the socket",
    errno.ECONNRESET: "connection lost",
    errno.EPIPE: "connection lost",
    errno.ECONNABORTED: "connection lost",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


_CONNECT_ERRNO = re.compile(r"^Error (\d+) connecting to ")


def _socket_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: redis-py rewraps it into a ConnectionError whose message keeps only text."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 5:
        if isinstance(current, OSError) and not isinstance(current, TimeoutError):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 1] + "…"


class RedisNonceLease:
    """One holder's lease on an account's nonce sequence: every access is fenced by its token."""

    def __init__(self, state: RedisState, account: str, token: str, hold_s: float) -> None:
        self._state = state
        self._account = account
        self._token = token
        self._hold_s = hold_s

    async def _fenced(self, action: str, value: str = "") -> list[Any]:
        lock, sequence = self._state._nonce_keys(self._account)
        reply = await self._state._call(
            self._state._nonce_script(keys=[lock, sequence], args=[self._token, action, value])
        )
        if not reply or int(reply[0]) != 1:
            raise LeaseUnavailable(
                f"{self._state._where_prefix()}nonce lease lost on {self._account} "
                f"(held longer than {self._hold_s:g} s, or taken over)"
            )
        return reply

    async def current(self) -> int | None:
        """The stored next nonce, or None when none is stored; raises if the lease was lost.

        Reading is fenced too: a value read after losing the lease may be
        changed by the new holder at any moment, so it must not be used.
        """
        reply = await self._fenced("get")
        if len(reply) < 2:
            return None
        try:
            return int(reply[1])
        except (TypeError, ValueError):
            # Not ours to interpret: treat the sequence as unknown, the chain knows.
            log.warning("ignoring a malformed stored nonce for %s", self._account)
            return None

    async def advance(self, next_nonce: int) -> None:
        """Store ``next_nonce`` if this lease still holds; raise :class:`StateUnavailable` if it was lost."""
        if isinstance(next_nonce, bool) or not isinstance(next_nonce, int) or next_nonce < 0:
            raise ValueError(f"a nonce is a non-negative integer, got {next_nonce!r}")
        await self._fenced("set", str(next_nonce))

    async def forget(self) -> None:
        """Delete the stored nonce (the next holder asks the chain), if this lease still holds."""
        await self._fenced("del")


class RedisState:
    """:class:`~offload.state.base.StateBackend` in Redis: shared by every process that names the same URL."""

    kind = "redis"
    shared = True
    shares_cache = True

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "offload",
        op_timeout_s: float = 0.1,
        connect_timeout_s: float = 1.0,
    ) -> None:
        """Prepare a client for ``url`` (``redis://``, ``rediss://`` or ``unix://``); nothing connects yet.

        ``op_timeout_s`` bounds each reply, ``connect_timeout_s`` each new
        connection; one operation never takes longer than both together.
        """
        if not (op_timeout_s > 0 and math.isfinite(op_timeout_s)):
            raise ValueError(f"op_timeout_s must be a positive number of seconds, got {op_timeout_s!r}")
        if not (connect_timeout_s > 0 and math.isfinite(connect_timeout_s)):
            raise ValueError(f"connect_timeout_s must be a positive number of seconds, got {connect_timeout_s!r}")
        if not namespace:
            raise ValueError("namespace must not be empty")
        self.url = url
        self.namespace = namespace
        self.op_timeout_s = float(op_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._password = self._url_password(url)
        self._where = self._describe_server(url)
        # The pool raises ValueError for a URL it cannot use: a configuration error, raised as is.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            # Waiting for a free connection is bounded like opening one.
            timeout=self.connect_timeout_s,
            socket_timeout=self.op_timeout_s,
            socket_connect_timeout=self.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = Redis.from_pool(self._pool)
        self._window_script = self._client.register_script(WINDOW_LUA)
        # The window runs on every task: a lean pipelined connection for it where one can stand in
        # for redis-py's (plain TCP and Unix sockets; see redis_lane and `offload bench scale`).
        self._lane = (
            Lane(self._pool.connection_kwargs, self.op_timeout_s, self.connect_timeout_s)
            if self._pool.connection_class.__name__ in LANE_CONNECTIONS
            else None
        )
        self._nonce_script = self._client.register_script(NONCE_LUA)
        self._release_script = self._client.register_script(RELEASE_LUA)
        self._publish_script = self._client.register_script(PUBLISH_HEALTH_LUA)
        self._records_script = self._client.register_script(HEALTH_RECORDS_LUA)
        # Pub/sub ignores the database number: the channel names it, so deployments sharing one
        # Redis server in different databases do not hear each other's verdicts.
        self._health_channel = f"{namespace}:{self._pool.connection_kwargs.get('db', 0)}:health"
        self._listeners: list[HealthListener] = []
        self._listener_task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._nonce_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    # -- naming and errors ----------------------------------------------------------------

    @staticmethod
    def _url_password(url: str) -> str | None:
        parts = urlsplit(url)
        if parts.password:
            return unquote(parts.password)
        for name, value in parse_qsl(parts.query):
            if name == "password" and value:
                return value
        return None

    @staticmethod
    def _describe_server(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "?"
        try:
            port = parts.port or 6379
        except ValueError:
            port = "?"
        return f"{parts.hostname or 'localhost'}:{port}"

    def describe_url(self) -> str:
        """The URL for messages and logs, its password (in the userinfo or ``?password=``) replaced by ``***``."""
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            # "user:password@" keeps the user; a lone "name@" may well be a password written without
            # its colon, so it is hidden too.
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else f"***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(name, "***" if name == "password" else value) for name, value in pairs], safe="*/")
        # Not urlunsplit: it would turn "unix:///path" into "unix:/path".
        described = f"{parts.scheme}://{netloc}{parts.path}"
        return described + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")

    def _where_prefix(self) -> str:
        return f"redis at {self._where}: "

    def _reason(self, error: BaseException) -> str:
        """One line: which server, and what went wrong, without a password or a traceback."""
        text = str(error)
        lowered = text.lower()
        if isinstance(error, redis.exceptions.TimeoutError):
            # redis-py's own: "Timeout connecting to server" or "Timeout reading from <host>".
            if "connect" in lowered:
                what = f"no connection within {self.connect_timeout_s * 1000:g} ms"
            else:
                what = f"no answer within {self.op_timeout_s * 1000:g} ms"
        elif isinstance(error, TimeoutError):
            # The bound on the whole operation (see _call), which includes waiting for a connection.
            what = f"no answer within {(self.op_timeout_s + self.connect_timeout_s) * 1000:g} ms"
        elif isinstance(
            error, (redis.exceptions.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError)
        ):
            what = "authentication failed"
        elif isinstance(error, redis.exceptions.MaxConnectionsError) or "no connection available" in lowered:
            what = f"all {MAX_CONNECTIONS} connections busy for {self.connect_timeout_s:g} s"
        elif isinstance(error, redis.exceptions.BusyLoadingError):
            what = "still loading its data set"
        elif isinstance(error, redis.exceptions.ReadOnlyError):
            what = "read-only (a replica, not the primary)"
        elif (cause := _socket_error(error)) is not None:
            what = _SOCKET_ERRORS.get(cause.errno or 0) or (
                "host not found" if isinstance(cause, socket.gaierror) else f"cannot connect: {cause.strerror or cause}"
            )
        elif (code := _CONNECT_ERRNO.search(text)) and int(code.group(1)) in _SOCKET_ERRORS:
            # The same, when redis-py kept only its message ("Error 111 connecting to host:port. ...").
            what = _SOCKET_ERRORS[int(code.group(1))]
        elif any(word in lowered for word in ("closed by server", "connection reset", "broken pipe", "while reading")):
            what = "connection lost"
        elif isinstance(error, redis.exceptions.ResponseError):
            what = f"error reply: {_one_line(text)}"
        else:
            what = _one_line(text) or type(error).__name__
        reason = self._where_prefix() + what
        if self._password:
            reason = reason.replace(self._password, "***")
        return reason

    async def _call(self, operation: Awaitable[T]) -> T:
        """Await one store operation; any failure becomes :class:`StateUnavailable` with a one-line reason."""
        try:
            # The socket timeouts bound each connect and each reply; this bounds the whole,
            # including waiting for a free pooled connection.
            async with asyncio.timeout(self.op_timeout_s + self.connect_timeout_s):
                return await operation
        except StateUnavailable:
            raise
        except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
            # `from None`: what callers see and log is the one-line reason; the original
            # error (and its traceback) only at debug level.
            log.debug("redis operation failed", exc_info=error)
            raise StateUnavailable(self._reason(error)) from None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the health listener in the background; it connects (and reconnects) by itself.

        Does not fail when Redis is down: :meth:`ping` says whether it answers.
        """
        if self._listener_task is None or self._listener_task.done():
            self._listener_task = asyncio.get_running_loop().create_task(
                self._listen(), name=f"offload-redis-health-listener({self._where})"
            )

    async def close(self) -> None:
        """Stop the listener and close every connection (safe to call twice, or without :meth:`start`)."""
        self._closed = True
        task, self._listener_task = self._listener_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.clear()
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            if self._lane is not None:
                await self._lane.close()
            await self._client.aclose()

    async def ping(self) -> None:
        """Return if Redis answers PING now; raise :class:`StateUnavailable` saying why not."""
        await self._call(self._client.ping())

    @property
    def listening(self) -> bool:
        """Whether the health listener is subscribed now (it resubscribes by itself after an outage)."""
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        """Wait until the health listener is subscribed (bound it with ``asyncio.wait_for``)."""
        await self._listening.wait()

    # -- windowed counters ----------------------------------------------------------------

    def _window_key(self, key: str) -> str:
        return f"{self.namespace}:window:{key}"

    async def _window(self, mode: str, key: str, limit: int, window_s: float) -> tuple[bool, int]:
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
        width_us = window_s * 1_000_000 / WINDOW_BUCKETS
        # Gone once every bucket left the window: WINDOW_BUCKETS + 1 widths after the last write.
        expire_ms = _milliseconds(window_s + window_s / WINDOW_BUCKETS)
        keys = [self._window_key(key)]
        args = [mode, int(limit), repr(width_us), WINDOW_BUCKETS + 1, expire_ms]
        if self._lane is not None:
            reply = await self._call(self._lane.evalsha(self._window_script.sha, WINDOW_LUA, keys, args))
        else:
            reply = await self._call(self._window_script(keys=keys, args=args))
        return int(reply[0]) == 1, int(reply[1])

    def admit_now(self, key: str, limit: int, window_s: float) -> WindowAdmission | None:
        """Always None: every answer needs a round trip to Redis."""
        return None

    async def admit(self, key: str, limit: int, window_s: float) -> WindowAdmission:
        """Atomically across processes: admit and count one event iff at most ``limit`` are in the window."""
        admitted, count = await self._window("admit", key, limit, window_s)
        return WindowAdmission(admitted, count)

    async def record(self, key: str, window_s: float) -> int:
        """Count one event unconditionally; the count after it."""
        _, count = await self._window("record", key, 0, window_s)
        return count

    async def count(self, key: str, window_s: float) -> int:
        """Events in ``key``'s window now (conservative, as :class:`SlidingWindowCounter`)."""
        _, count = await self._window("count", key, 0, window_s)
        return count

    def count_now(self, key: str, window_s: float) -> int | None:
        """Always None: every answer needs a round trip to Redis."""
        return None

    # -- nonce sequences ------------------------------------------------------------------

    def _nonce_keys(self, account: str) -> tuple[str, str]:
        base = f"{self.namespace}:nonce:{{{account}}}"
        return f"{base}:lock", f"{base}:next"

    @contextlib.asynccontextmanager
    async def nonce_lease(self, account: str, hold_s: float) -> AsyncIterator[NonceLease]:
        """Hold ``account``'s nonce sequence across every process until the block ends.

        Coroutines of this process queue on a local lock, so only one of them
        at a time competes for the Redis lock (``SET NX PX``) with the other
        processes. A holder that dies keeps the others waiting at most
        ``hold_s``; waiting longer than that raises :class:`StateUnavailable`.
        """
        if not (hold_s > 0 and math.isfinite(hold_s)):
            raise ValueError(f"hold_s must be a positive number of seconds, got {hold_s!r}")
        local = self._nonce_locks.setdefault(account, asyncio.Lock())
        async with local:
            lock_key, _ = self._nonce_keys(account)
            token = secrets.token_hex(16)
            await self._acquire(lock_key, token, account, hold_s)
            try:
                yield RedisNonceLease(self, account, token, hold_s)
            finally:
                try:
                    await self._call(self._release_script(keys=[lock_key], args=[token]))
                except StateUnavailable as error:
                    # Not the holder's failure: the lock expires by itself after hold_s.
                    log.warning("could not release the nonce lease on %s: %s", account, error.reason)

    async def _acquire(self, lock_key: str, token: str, account: str, hold_s: float) -> None:
        loop = asyncio.get_running_loop()
        # A dead holder's lock expires within hold_s of our first try; allow for the last pause.
        deadline = loop.time() + hold_s + 2 * LEASE_BACKOFF_CAP_S
        pause = LEASE_BACKOFF_START_S
        hold_ms = _milliseconds(hold_s)
        while True:
            # If this SET fails (times out) after the server applied it, the lock is orphaned,
            # but only until hold_ms: the same bound as a holder that died.
            if await self._call(self._client.set(lock_key, token, nx=True, px=hold_ms)):
                return
            if loop.time() + pause > deadline:
                raise LeaseUnavailable(
                    f"{self._where_prefix()}nonce lease on {account} still held by another process "
                    f"after waiting {hold_s:g} s"
                )
            # Another process holds it: short jittered pauses, so a release is noticed within milliseconds
            # and waiters in several processes do not retry in lockstep.
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, LEASE_BACKOFF_CAP_S)

    # -- health verdicts ------------------------------------------------------------------

    def _health_keys(self, pool: str, server: str) -> tuple[str, str]:
        index = f"{self.namespace}:health:{{{pool}}}"
        return f"{index}:{server}", index

    async def publish_health(self, record: HealthRecord) -> None:
        """Store ``record`` for ``record.ttl_s`` and publish it, in one atomic step.

        A record older (by ``at``) than the one stored for the same server is
        neither stored nor published: the newer verdict stands.
        """
        record_key, index_key = self._health_keys(record.pool, record.server)
        await self._call(
            self._publish_script(
                keys=[record_key, index_key],
                args=[
                    _milliseconds(record.ttl_s),
                    _encode_record(record),
                    self._health_channel,
                    record.server,
                    repr(record.at),
                ],
            )
        )

    async def health_records(self, pool: str) -> list[HealthRecord]:
        """The unexpired verdicts on ``pool``'s servers, one per server (at most ``MAX_HEALTH_RECORDS``)."""
        _, index_key = self._health_keys(pool, "")
        values = await self._call(self._records_script(keys=[index_key], args=[MAX_HEALTH_RECORDS]))
        records = []
        for value in values or ():
            if value is None:
                continue  # expired between the index and the record
            record = _decode_record(value)
            if record is not None and record.pool == pool:
                records.append(record)
        return records

    def on_health(self, listener: HealthListener) -> None:
        """Call ``listener`` with every verdict published from now on, this process's own included.

        Verdicts published while the listener was disconnected are not
        replayed: :meth:`health_records` has the current ones.
        """
        self._listeners.append(listener)

    def _dispatch(self, data: Any) -> None:
        record = _decode_record(data)
        if record is None:
            log.debug("ignoring a malformed message on %s", self._health_channel)
            return
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:
                # One faulty listener must neither stop the others nor the subscription.
                log.exception("health listener %r failed", listener)

    async def _listen(self) -> None:
        """Subscribe to the health channel and dispatch; reconnect with backoff whenever the connection is lost."""
        pause = LISTEN_BACKOFF_START_S
        outage_logged = False
        while not self._closed:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._health_channel)
                await self._read_subscription(pubsub)
            except Exception as error:
                if self._listening.is_set():
                    # It was subscribed, so this is a new outage: start the backoff over and say so once.
                    pause, outage_logged = LISTEN_BACKOFF_START_S, False
                if isinstance(error, (redis.exceptions.RedisError, OSError, TimeoutError)):
                    if not outage_logged:
                        log.warning("health listener disconnected, reconnecting: %s", self._reason(error))
                else:
                    # A bug here must not end the listening for good: log it and reconnect as after an outage.
                    log.exception("health listener failed, reconnecting")
                outage_logged = True
            finally:
                self._listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, LISTEN_BACKOFF_CAP_S)

    async def _read_subscription(self, pubsub: Any) -> None:
        """Dispatch messages until the connection fails (raises) or stays silent too long (raises TimeoutError)."""
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=LISTEN_KEEPALIVE_S)
            now = loop.time()
            if message is None:
                if now - last_heard >= 2 * LISTEN_KEEPALIVE_S:
                    raise TimeoutError(f"no reply to a ping within {LISTEN_KEEPALIVE_S:g} s")
                if not pinged:
                    # A silent channel or a dead peer: only a reply tells them apart.
                    await pubsub.ping()
                    pinged = True
                continue
            last_heard, pinged = now, False
            kind = message.get("type")
            if kind == "subscribe":
                self._listening.set()
            elif kind == "message":
                self._dispatch(message.get("data"))

    # -- cache ----------------------------------------------------------------------------

    def _cache_key(self, key: str) -> str:
        return f"{self.namespace}:cache:{key}"

    async def cache_get(self, key: str) -> bytes | None:
        """The cached bytes, or None if absent or expired."""
        value = await self._call(self._client.get(self._cache_key(key)))
        return bytes(value) if value is not None else None

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Cache ``value`` for ``ttl_s`` seconds (a ttl of zero or less stores nothing)."""
        if not ttl_s > 0:
            return
        await self._call(self._client.set(self._cache_key(key), value, px=_milliseconds(ttl_s)))

    async def cache_add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """``SET NX PX``: store ``value`` only if the key is free; True if this call stored it."""
        if not ttl_s > 0:
            return False
        stored = await self._call(self._client.set(self._cache_key(key), value, px=_milliseconds(ttl_s), nx=True))
        return bool(stored)

    async def cache_delete(self, key: str) -> None:
        """Remove the key (nothing if absent)."""
        await self._call(self._client.delete(self._cache_key(key)))
