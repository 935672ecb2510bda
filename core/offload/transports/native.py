"""The native transport: a lean HTTP/1.1 keep-alive client for the engine's hot path.

Why not aiohttp here: measured at 16 connections on this project's 2-core test
machine, a gateway sending its tasks with aiohttp spent about 220 µs of CPU per
proxied request, most of it in aiohttp's client machinery (URL objects, header
multidicts, request/response objects, trace hooks, stream readers); with this
client it spends about 115 µs, of which Sanic's own request handling is about
60. It speaks exactly what the engine needs: one request at a time per
connection, a complete body read into memory, keep-alive reuse, and the C parser
Sanic already depends on (httptools). What it does not speak (``https://``,
``HEAD``) it refuses (:class:`~offload.transports.base.UnsupportedRequest`) without
sending anything: a :class:`~offload.transports.router.TransportRouter` sends
those with the aiohttp transport instead.

It is as strict as h11 where being lenient could mix up two exchanges: a
connection is reused only when nothing at all follows an answer (in the same
segment or later, while idle); a request that is not exactly one request (a
method or header name that is not a token, a value with control characters)
is never sent; answers past the header or body limit, malformed ones and
protocol switches are refused (:class:`~offload.transports.base.UpstreamAnswerRefused`)
and their connection closed; and a request is sent twice only when a reused
connection gave back nothing at all and the task may be retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlencode, urlsplit

import httptools

from ..tasks import Task
from .base import (
    DEFAULT_MAX_HEADER_BYTES,
    UnsupportedRequest,
    UpstreamAnswerRefused,
    UpstreamReply,
    UpstreamUnreachable,
    body_too_large,
    check_request,
    headers_too_large,
    media_type,
    request_path,
    unsolicited_upgrade,
)

__all__ = ["NativeTransport"]

# Methods a dropped keep-alive connection may be retried with (RFC 9110, 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE", "OPTIONS", "TRACE"})
# Methods whose request carries a body by definition: an empty one is announced as such.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Characters a request target may carry as they are; anything else is percent-encoded.
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9/%:@!$&'()*+,;=\-._~?]")
# Plain requests whose bytes are kept for reuse (GET /hello is sent over and over).
PLAIN_MESSAGES_KEPT = 1024


@dataclass(frozen=True, slots=True, eq=False)
class Origin:
    """Where a base URL's requests go, parsed once per base URL (and compared as that one object: cheaply)."""

    host: str
    port: int
    host_header: bytes


@functools.lru_cache(maxsize=64)
def _media_type(raw: bytes) -> str:
    # A server answers with a handful of distinct Content-Type values: parse each once.
    return media_type(raw.decode("latin-1"))


class _Stop(Exception):
    """Raised in a parser callback to stop parsing bytes that follow a complete answer."""


class _EndProbe:
    """Parses a copy of an exchange's first bytes to tell whether its final answer ends before their last byte.

    Used only when that cannot be worked out from Content-Length (a chunked
    answer, one after an interim answer) and the whole answer came in one segment.
    """

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.ended = False

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() >= 200:
            self.ended = True
            raise _Stop

    def ends_early(self, data: bytes) -> bool:
        # An error is _Stop, or bytes after the answer that are not HTTP: it is the answer's end that counts.
        with contextlib.suppress(httptools.HttpParserError):
            self.parser.feed_data(memoryview(data)[:-1])
        return self.ended


class _Exchange(asyncio.Protocol):
    """One keep-alive connection; reads one response at a time with httptools.

    It is reused only after an answer that ended exactly where the bytes received
    so far end: any byte after an answer, in the same segment or while idle, means
    the stream is out of step, so the connection is closed. That is also why one
    parser serves every exchange: it is reused only in its start state.
    """

    def __init__(
        self, origin: Origin, max_body: int = 1 << 62, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    ) -> None:
        self.origin = origin
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[UpstreamReply] | None = None
        self._begin(None)

    def _begin(self, waiter: asyncio.Future[UpstreamReply] | None) -> None:
        """Fresh per-exchange state; it outlives the exchange so that its caller can tell what was received."""
        self.waiter = waiter
        self.received = 0  # bytes received in this exchange
        self.end_at = -1  # where the final answer ends within them, once that is known
        self.interim = False  # a 1xx answer came first
        self.done = False  # the final answer is complete
        self.quiet = 0  # bytes received since the last body byte (a header section, chunk framing, trailers)
        self.header_bytes = 0
        self._begin_answer()

    def _begin_answer(self) -> None:
        self.status = 0
        self.content_type = b""
        self.content_length = -1
        self.chunked = False
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.body_size = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Small requests must leave now, not after the previous segment is acknowledged.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.done or self.closed:
            # Bytes nobody asked for (after the answer, or while idle): the stream is out of step.
            self.close()
            return
        start = self.received
        self.received = received = start + len(data)
        body_before = self.body_size
        try:
            if start and self.end_at < 0 and len(data) > 1:
                # Where the answer ends is unknown (chunked, or after an interim answer): hold back the
                # last byte, so that an answer complete before it shows that bytes follow it.
                self.parser.feed_data(memoryview(data)[:-1])
                if self.done:
                    self.close()
                    return
                self.parser.feed_data(data[-1:])
            else:
                self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._refuse(exc.__context__ or exc)
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._refuse(exc)
            return
        if not start and self.headers_done and not self.interim:
            self.end_at = self._first_answer_end(data)
        if self.done:
            if self.end_at >= 0:
                if received != self.end_at:
                    self.close()
            elif not start and _EndProbe().ends_early(data):
                # (Fed whole, its end unknown, only as the exchange's first segment; a later segment
                # was held back by a byte, and the answer ended on it.)
                self.close()
        elif self.body_size == body_before:
            self.quiet += len(data)
            if self.quiet > self.max_header_bytes:
                # An endless header line (or chunk framing, or trailers) must not cost seconds and megabytes.
                self._refuse(headers_too_large(self.max_header_bytes))
        else:
            self.quiet = 0

    def _first_answer_end(self, data: bytes) -> int:
        """Where the answer whose headers came whole in the exchange's first segment ends; -1 if unknown.

        The parser refuses bare LF line ends, so the first blank line ends the header section.
        """
        if self.status in (204, 304):
            return data.find(b"\r\n\r\n") + 4
        if self.content_length >= 0 and not self.chunked:
            return data.find(b"\r\n\r\n") + 4 + self.content_length
        return -1

    def _refuse(self, error: BaseException) -> None:
        """The answer is refused (or the bytes after a complete one are): the connection goes."""
        self.close()
        if self.done:
            return  # the answer itself was complete and delivered; only what followed it is dropped
        if not isinstance(error, UpstreamUnreachable):
            error = UpstreamAnswerRefused(f"invalid HTTP response: {error}")
        self._fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self.headers_done and self.content_length < 0 and not self.chunked:
            # A body delimited by the end of the connection (HTTP/1.0 style) ends here; a reset is no end.
            self._complete()
            return
        what = "closed the connection mid-answer" if self.received else "closed the connection before answering"
        detail = f": {exc}" if exc else ""
        self._fail(UpstreamUnreachable(f"ServerDisconnected: server {what}{detail}"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4  # as sent: "name: value\r\n"
        if self.header_bytes > self.max_header_bytes:
            raise headers_too_large(self.max_header_bytes)
        if self.headers_done:
            return  # a trailer: it changes nothing about the answer
        lowered = name.lower()
        if lowered == b"content-type":
            self.content_type = value
        elif lowered == b"content-length":
            self.content_length = int(value)  # the parser has checked it is digits (and the only one)
        elif lowered == b"transfer-encoding":
            # RFC 9112, 6.3: chunked only when it is the last coding; otherwise the body ends with the connection.
            self.chunked = value.rstrip().lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        if self.done:
            raise _Stop  # the start of another answer after the final one: never parsed
        status = self.parser.get_status_code()
        if status == 101:
            raise unsolicited_upgrade()
        self.status = status
        self.headers_done = True
        if self.content_length > self.max_body and status >= 200 and status not in (204, 304):
            # Announced too large: refused on the headers, without reading the body.
            raise body_too_large(self.max_body)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.body_size += len(body)
        if self.body_size > self.max_body:
            # Holding more would let one upstream answer take the gateway's memory.
            raise body_too_large(self.max_body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows on the same stream.
            self.interim = True
            self._begin_answer()
            return
        self.done = True
        if not self.parser.should_keep_alive():
            self.close()
        self._complete()

    # -- the exchange ----------------------------------------------------------------------

    def _complete(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            waiter.set_result(UpstreamReply(self.status, _media_type(self.content_type), body))

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def time_out(self) -> None:
        """The deadline passed: the waiting request fails with ``TimeoutError``."""
        self._fail(TimeoutError())

    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[UpstreamReply]:
        """Write ``request``; the future is its whole answer. The caller sets ``waiter`` back to None after it.

        Afterwards, ``received`` tells how many bytes of an answer arrived (0: none at all).
        """
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            self.received = 0
            raise UpstreamUnreachable(
                "ServerDisconnected: connection closed before the request was sent", never_arrived=True
            )
        waiter = loop.create_future()
        self._begin(waiter)
        transport.write(request)
        return waiter

    def reusable(self, oldest_allowed: float) -> bool:
        """Still open, and idle since no earlier than ``oldest_allowed`` (monotonic time)."""
        return not self.closed and self.idle_since >= oldest_allowed

    def close(self) -> None:
        """Close the connection (it will not be reused)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class NativeTransport:
    """Keep-alive connections per server, at most ``limit`` busy at once, idle ones kept ``keepalive_s``.

    An answer whose body is (or is announced to be) larger than ``max_body``
    bytes, or whose header fields pass ``max_header_bytes``, is refused
    (:class:`~offload.transports.base.UpstreamAnswerRefused`); so is one that is
    not valid HTTP/1.1 or switches protocols. It speaks ``http://`` only, and no
    ``HEAD``: anything else is refused with
    :class:`~offload.transports.base.UnsupportedRequest`, nothing sent.
    """

    def __init__(
        self,
        *,
        limit: int = 256,
        keepalive_s: float = 30.0,
        max_body: int = 1 << 24,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        self.limit = limit
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.keepalive_s = keepalive_s
        # Free connection slots, and the requests waiting for one (first come, first served). A plain
        # counter, not an asyncio.Semaphore: taking a free slot is then no call at all (the hot path).
        self._free_slots = limit
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._origins: dict[str, Origin | None] = {}
        self._idle: dict[Origin, list[_Exchange]] = {}
        self._busy: set[_Exchange] = set()
        self._plain_messages: dict[tuple[str, Origin, str], bytes] = {}

    def _origin(self, base_url: str) -> Origin | None:
        """The parsed origin of a ``http://`` base URL; None for one this transport does not speak."""
        try:
            return self._origins[base_url]
        except KeyError:
            pass
        parts = urlsplit(base_url)
        origin = None
        if parts.scheme == "http" and parts.hostname:
            port = parts.port or 80
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            origin = Origin(parts.hostname, port, host.encode("idna") + b":%d" % port)
        self._origins[base_url] = origin
        return origin

    async def request(self, base_url: str, task: Task, timeout_s: float) -> UpstreamReply:
        """See :meth:`offload.transports.base.Transport.request`; only ``http://``, and no ``HEAD``."""
        method = task.method.upper()
        origin = self._origin(base_url)
        if origin is None or method == "HEAD":
            raise unsupported(base_url, method)
        message = self._message(origin, task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._free_slots:
            self._free_slots -= 1
        else:
            await self._wait_for_slot(loop, deadline)
        try:
            # One coroutine from here to the answer (no nested ones): this is the hot path.
            exchange = self._reusable(origin)
            reused = exchange is not None
            while True:
                if exchange is None:
                    exchange = await self._connect(origin, deadline)
                self._busy.add(exchange)
                timer = loop.call_at(deadline, exchange.time_out)
                retry = False
                try:
                    reply = await exchange.send(message, loop)
                except UpstreamUnreachable:
                    exchange.close()
                    # A kept-alive connection the server had already given up on: not one byte came back,
                    # so a request the engine itself may retry goes once more on a fresh connection (as
                    # browsers do). After any byte of an answer the request surely arrived: no second copy.
                    if not (reused and not exchange.received and task.idempotent and method in IDEMPOTENT_METHODS):
                        raise
                    retry = True
                except BaseException:
                    # Timed out, cancelled or broken: the stream's state is unknown, so it is never reused.
                    exchange.close()
                    raise
                finally:
                    timer.cancel()
                    exchange.waiter = None
                    self._busy.discard(exchange)
                if not retry:
                    break
                exchange, reused = None, False
            if not exchange.closed:
                self._keep(exchange)
            return reply
        finally:
            self._release_slot()

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Wait (not past ``deadline``) until a busy request hands its slot over."""
        waiter = loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed a slot just as this request gave up: pass it on
            raise

    def _release_slot(self) -> None:
        """Hand the slot to the first request still waiting, else free it."""
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # (one that timed out or was cancelled is done: skipped)
                waiter.set_result(None)
                return
        self._free_slots += 1

    def _message(self, origin: Origin, task: Task) -> bytes:
        """The request's bytes; those of plain requests (no query, body or headers) are built once.

        Keyed by the task's method as given: only one that passed the checks once is ever found.
        """
        if task.params or task.json is not None or task.body is not None or task.headers:
            return build_request(origin, task)
        key = (task.method, origin, task.path)
        message = self._plain_messages.get(key)
        if message is None:
            if len(self._plain_messages) >= PLAIN_MESSAGES_KEPT:
                self._plain_messages.clear()  # a crude bound: paths with arguments are endless
            message = self._plain_messages[key] = build_request(origin, task)
        return message

    def _keep(self, exchange: _Exchange) -> None:
        """Put an open connection back among the idle ones (or close it if there are enough)."""
        exchange.idle_since = time.monotonic()
        idle = self._idle.setdefault(exchange.origin, [])
        if len(idle) < self.limit:
            idle.append(exchange)
        else:
            exchange.close()

    def _reusable(self, origin: Origin) -> _Exchange | None:
        """The most recently used idle connection to ``origin`` that may still be used, if any."""
        idle = self._idle.get(origin)
        if idle:
            oldest_allowed = time.monotonic() - self.keepalive_s
            while idle:
                exchange = idle.pop()
                if exchange.reusable(oldest_allowed):
                    return exchange
                exchange.close()
        return None

    async def _connect(self, origin: Origin, deadline: float) -> _Exchange:
        """A new connection to ``origin``, opened before ``deadline`` (event-loop time)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, exchange = await loop.create_connection(
                    lambda: _Exchange(origin, self.max_body, self.max_header_bytes), origin.host, origin.port
                )
        except TimeoutError:
            raise  # the request's deadline (TimeoutError is an OSError too)
        except OSError as exc:
            raise UpstreamUnreachable(
                f"ClientConnectorError: cannot connect to {origin.host}:{origin.port}: {exc.strerror or exc}",
                never_arrived=True,
            ) from exc
        return exchange

    def prune_idle(self) -> int:
        """Close idle connections unused for ``keepalive_s`` (also those of servers no longer in any pool).

        Returns how many were closed. The engine calls it after every probe round.
        """
        oldest_allowed = time.monotonic() - self.keepalive_s
        closed = 0
        for origin, idle in list(self._idle.items()):
            keep = []
            for exchange in idle:
                if exchange.reusable(oldest_allowed):
                    keep.append(exchange)
                else:
                    exchange.close()
                    closed += 1
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        return closed

    async def close(self) -> None:
        """Close every idle and busy connection."""
        for idle in self._idle.values():
            for exchange in idle:
                exchange.close()
        self._idle.clear()
        for exchange in list(self._busy):
            exchange.close()


def speaks(base_url: str, method: str) -> bool:
    """Whether the native transport sends ``method`` to ``base_url`` (plain ``http://``, any method but HEAD)."""
    parts = urlsplit(base_url)
    return parts.scheme == "http" and bool(parts.hostname) and method.upper() != "HEAD"


def unsupported(base_url: str, method: str) -> UnsupportedRequest:
    """The refusal of a request the native transport does not speak."""
    if method == "HEAD":
        return UnsupportedRequest("the native transport sends no HEAD requests (the aiohttp transport does)")
    return UnsupportedRequest(f"the native transport speaks plain http:// only, not {base_url[:80]!r}")


def build_request(origin: Origin, task: Task) -> bytes:
    """The request's bytes: request line, headers and body.

    Raises :class:`~offload.transports.base.InvalidRequest` for a method or header that
    would put anything but this one request on the wire.
    """
    check_request(task.method, task.headers)
    method = task.method.upper()
    path = request_path(task.path)
    target = path if not _NEEDS_QUOTING.search(path) else quote(path, safe=_TARGET_SAFE)
    if task.params:
        target += ("&" if "?" in target else "?") + urlencode(task.params)
    body, content_type = task.body, None
    if body is None and task.json is not None:
        body = json.dumps(task.json).encode()
        content_type = "application/json"
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + origin.host_header]
    has_type = False
    for name, value in (task.headers or {}).items():
        lowered = name.lower()
        if lowered in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # framing is this client's business
        has_type = has_type or lowered == "content-type"
        lines.append(f"{name}: {value}".encode("latin-1"))
    if body is not None:
        if not has_type:
            lines.append(f"Content-Type: {content_type or 'application/octet-stream'}".encode())
        lines.append(b"Content-Length: %d" % len(body))
    elif method in BODY_METHODS:
        lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
