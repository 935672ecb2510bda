"""Property-based fuzzing of every gateway route: no request may get a 5xx or break the gateway (issue 9).

One real gateway runs both bundled plugins: math over a local and a remote edge,
contracts over an edge with an embedded chain and its two demo contracts. Every
route the app has (read from ``app.router.routes``, so a new route is fuzzed
without touching this file) gets requests that hypothesis builds: path parameters
of arbitrary (percent-encoded) unicode, raw bytes, huge numbers, ``..``, NUL and
bad escapes; query strings with random and meaningful keys, repeated keys and
junk; now and then odd headers (content types, Origin, Host, Sec-Fetch-Site,
Authorization, some twice), or header lines of raw bytes no client library sends
(non-UTF-8, controls: those go over a plain socket); and for POST routes JSON
values, JSON-RPC requests and batches, REST argument objects, random bytes,
deeply nested documents and JSON in UTF-16 and UTF-32. Each request goes out
twice: by the gateway's ``client`` session and by its ``operator`` one (with the
token). Each route's plain requests go first, and each route must answer 2xx to
at least one request, so the fuzzing is known to reach every handler.

Every answer must be below 500 (502/503/504 included: every upstream is up, so an
input that gets one has broken something), carry a JSON body (none for HEAD and
204), and arrive at all (a dropped connection or a timeout is a crash). No ERROR
is logged meanwhile, and afterwards the gateway, the edges and their worker
processes still answer. Failures are collected rather than raised, so one run
reports every distinct problem with the exact request, not just the first one.

Hypothesis runs in a worker thread, with its fixed derandomized seed: each request
is a coroutine sent to the test's event loop, where the servers and sessions live.
``OFFLOAD_FUZZ_SCALE=4`` quadruples the examples and ``OFFLOAD_FUZZ_SEED=n`` draws
other ones, for a deeper search by hand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st
from yarl import URL

from offload.app import create_app
from offload.settings import parse_settings
from offload.testing import RunningServer, serve_app
from offload_contracts.rpc import RAW_TRANSACTION_METHOD, READ_METHODS
from offload_edge.app import EdgeConfig, create_edge_app
from offload_edge.chain.node import DEV_PRIVATE_KEY, demo_contract_addresses

from conftest import OPERATOR_HEADERS, TEST_TOKEN, Gateway, servers_table

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"
SCALE = max(1, int(os.environ.get("OFFLOAD_FUZZ_SCALE", "1")))
SEED = os.environ.get("OFFLOAD_FUZZ_SEED")
# Examples per route and method (each sent twice: without and with the token).
READ_EXAMPLES = 60 * SCALE
WRITE_EXAMPLES = 100 * SCALE
OTHER_METHOD_EXAMPLES = 150 * SCALE
# One request may take a relayed chain call with the engine's timeouts; none should come near this.
REQUEST_TIMEOUT_S = 30.0
# Each test takes seconds; one still sending after this has hung somewhere: it stops and fails.
BUDGET_S = 240.0 * SCALE
# Largest input the CPU tasks are fuzzed with in range: bigger ones only cost time (seconds each).
CPU_TASK_CAPS = {"matmul": 60, "hashchain": 100_000, "nthprime": 50_000}
# Routes that by design never answer 2xx (the GET form of updateservers is refused with a 405).
NEVER_SUCCEED = {("GET", "/updateservers")}

# --- what the strategies draw from --------------------------------------------------------------

NASTY_SEGMENTS = [
    "",
    ".",
    "..",
    "...",
    "%2e%2e",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "..%2f..%2f",
    "%00",
    "a%00b",
    "%",
    "%%",
    "%zz",
    "%4",
    "%ff%fe",
    "%C0%AF",
    "%ED%A0%80",
    "%EF%BF%BF",
    "%2F",
    "%5C",
    "%0d%0aX-Injected:%20yes",
    "%20",
    "%09",
    "+",
    "~",
    ";",
    ";param=1",
    "@",
    ":",
    "*",
    "0",
    "-0",
    "+5",
    "-1",
    "1e309",
    "-1e309",
    "1e-400",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "0x10",
    "0b101",
    "1_000",
    "%201",
    "1%20",
    "%D9%A3",  # ARABIC-INDIC DIGIT THREE: int() and float() accept it
    "%EF%BC%95",  # FULLWIDTH DIGIT FIVE
    "9" * 300,
    "9" * 4400,
    "1" + "0" * 40,
    "-" + "9" * 30,
    "a" * 9000,
]
QUERY_KEYS = ["server", "arg", "contractID", "operation", "requestID", "args", "amount", "name", "newGreeting"]
# Every read the gateway forwards, the one write it relays, and methods it must refuse.
RPC_METHODS = [
    *sorted(READ_METHODS),
    RAW_TRANSACTION_METHOD,
    "eth_sendTransaction",
    "eth_sign",
    "admin_peers",
    "debug_traceTransaction",
    "evm_mine",
    "eth_newFilter",
    "",
]
BLOCK_TAGS = ["latest", "earliest", "pending", "safe", "finalized", "0x0", "0x1", "0x2", "0xffffffffffffffff", "0x"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/json;charset=latin-1",
    "APPLICATION/JSON",
    "application/octet-stream",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/jsonx",
    ";",
    "",
]
ENCODINGS = ["utf-8", "utf-8", "utf-8", "ascii", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"]
NASTY_BODIES = [
    b"",
    b" ",
    b"null",
    b"0",
    b'"str"',
    b"{}",
    b"[]",
    b"[[]]",
    b"NaN",
    b"-Infinity",
    b"1e400",
    b'{"args": [1e400]}',
    b'{"amount": 1e999}',
    b'{"jsonrpc": "2.0", "id": NaN, "method": "eth_chainId"}',
    b"[" + b"9" * 5000 + b"]",
    b'{"args": [' + b"9" * 4400 + b"]}",
    b'{"amount": "' + b"9" * 5000 + b'"}',
    b'{"a": 1, "a": 2}',
    b'{"args": [1], "args": "x"}',
    b"\xef\xbb\xbf{}",
    b"\xff\xfe",
    b"\xfe\xff\x00[",
    b"\x00\x00\x00",
    b'{"\\ud800": 1}',
    b'["\\udfff"]',
    b'"\\u0000"',
    b"{'single': 'quotes'}",
    b"[1,]",
    b"{} {}",
    b"\x80\x81\x82",
    b'{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0x'
    + b"0" * 40
    + b'","gas":"0xffffffffffffffffff"}]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0xzz"]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x02c0"]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0xf8"]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x' + b"ab" * 200 + b'"]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_getStorageAt","params":["0x' + b"0" * 40 + b'","0x' + b"f" * 80 + b'"]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_feeHistory","params":[1e30,"latest",[101]]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"gas":-1}]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[null]}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":{}}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":"0x00"}',
    b'{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"fromBlock":"0x0","toBlock":"0xffffffffffff"}]}',
    b'{"jsonrpc":"2.0","id":{"a":[1]},"method":"eth_blockNumber","params":[]}',
    b'[{"jsonrpc":"2.0","method":"eth_blockNumber"}]',
    b'[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}]',
    b"[" + b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},' * 300 + b"1]",
    b"x" * 1_100_000,  # above the gateway's 1 MiB body limit
]


# --- requests, answers and the runner -----------------------------------------------------------


def pct(text: str) -> str:
    """``text`` percent-encoded as UTF-8, every reserved character included."""
    return quote(text, safe="")


def reject_constant(name: str) -> Any:
    """For ``json.loads``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class RouteUnderTest:
    """One method of one route, with its path pattern such as ``/contracts/<contract>/<method>``."""

    method: str
    pattern: str

    @property
    def params(self) -> list[str]:
        """The names of the pattern's path parameters, in order."""
        return re.findall(r"<(\w+)[^>]*>", self.pattern)

    def fill(self, values: list[str]) -> str:
        """The pattern with its parameters replaced, in order, by ``values`` (already encoded)."""
        parts = iter(values)
        return re.sub(r"<[^>]+>", lambda _: next(parts), self.pattern)

    def __str__(self) -> str:
        return f"{self.method} {self.pattern}"


def app_routes(gw: Gateway) -> list[RouteUnderTest]:
    """Every (method, path pattern) the running gateway routes."""
    found = {
        RouteUnderTest(method, "/" + route.raw_path.lstrip("/"))
        for route in gw.app.router.routes
        for method in route.methods
    }
    return sorted(found, key=lambda route: (route.pattern, route.method))


@dataclass(frozen=True)
class FuzzRequest:
    """One generated request, exactly as it is put on the wire."""

    route: str  # the route it was generated for ("*" for a request to no route in particular)
    method: str
    target: str  # path and query, already percent-encoded
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    chunked: bool = False
    # Header lines of arbitrary bytes (no CR or LF), which aiohttp cannot send: the request then goes
    # over a plain socket, with a Content-Length, and the operator's token unless it sets Authorization.
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()

    def reproducer(self, operator: bool) -> str:
        """The request, exactly: method, target, headers (with the token if ``operator``) and body."""
        headers = dict(OPERATOR_HEADERS) if operator else {}
        headers.update(self.headers)
        body = "None" if self.body is None else bytes_expression(self.body)
        chunked = " (chunked)" if self.chunked and not self.raw_headers else ""
        raw = f" raw header lines={list(self.raw_headers)!r} (over a plain socket)" if self.raw_headers else ""
        return f"{self.method} {self.target!r} headers={headers!r}{raw} body={body}{chunked}"

    def wire_bytes(self, host: str, operator: bool) -> bytes:
        """The whole request as sent over a plain socket (for requests with raw header lines)."""
        names = {name.lower().encode() for name, _ in self.headers} | {name.lower() for name, _ in self.raw_headers}
        lines = [f"{self.method} {self.target} HTTP/1.1".encode()]
        if b"host" not in names:
            lines.append(f"Host: {host}".encode())
        if operator and b"authorization" not in names:
            lines.append(f"Authorization: {OPERATOR_HEADERS['Authorization']}".encode())
        lines += [f"{name}: {value}".encode() for name, value in self.headers]
        lines += [name + b": " + value for name, value in self.raw_headers]
        if self.body is not None:
            lines.append(b"Content-Length: %d" % len(self.body))
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + (self.body or b"")


class MalformedReply(ValueError):
    """What came back over a plain socket is no HTTP response."""


def parse_reply(data: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.1 response read until the server closed, after any 1xx."""
    while True:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            raise MalformedReply(f"no complete response: {data[:200]!r}")
        status_line, *header_lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise MalformedReply(f"no status line: {status_line[:200]!r}")
        status = int(parts[1])
        if status >= 200:
            break
        data = rest  # 100 Continue and the like: the real answer follows
    headers = dict(line.lower().split(b":", 1) for line in header_lines if b":" in line)
    if headers.get(b"transfer-encoding", b"").strip() == b"chunked":
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise MalformedReply(f"bad chunk size {size_line[:40]!r}") from None
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
        return status, bytes(body)
    length = headers.get(b"content-length", b"").strip()
    return status, rest[: int(length)] if length.isdigit() else rest


def bytes_expression(data: bytes, longest: int = 2000) -> str:
    """A Python expression for ``data`` with long repeats folded: ``b'[' * 1000 + b'1' + b']' * 1000``."""
    parts: list[str] = []
    literal = bytearray()
    index = 0
    while index < len(data):
        best_unit, best_count = b"", 0
        for size in range(1, 9):
            unit = data[index : index + size]
            count = 1
            while data[index + count * size : index + (count + 1) * size] == unit:
                count += 1
            if len(unit) == size and count >= 4 and count * size >= 24 and count * size > best_count * len(best_unit):
                best_unit, best_count = unit, count
        if best_count:
            if literal:
                parts.append(repr(bytes(literal)))
                literal.clear()
            parts.append(f"{bytes(best_unit)!r} * {best_count}")
            index += best_count * len(best_unit)
        else:
            literal.append(data[index])
            index += 1
    if literal or not parts:
        parts.append(repr(bytes(literal)))
    text = " + ".join(parts)
    return text if len(text) <= longest else text[:longest] + f"... ({len(data)} bytes)"


@dataclass
class Finding:
    """A request that got a 5xx, a non-JSON body, or no answer at all."""

    request: FuzzRequest
    operator: bool
    problem: str

    def __str__(self) -> str:
        who = "operator" if self.operator else "client"
        return f"[{self.request.route}] {self.problem} ({who})\n    {self.request.reproducer(self.operator)}"


@dataclass
class FuzzRun:
    """Sends generated requests from hypothesis's thread to the gateway on the test's loop, noting what went wrong."""

    gw: Gateway
    loop: asyncio.AbstractEventLoop
    started: float = field(default_factory=time.monotonic)
    findings: list[Finding] = field(default_factory=list)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    sent: int = 0

    def exchange(self, request: FuzzRequest) -> None:
        """Send ``request`` without and with the operator's token and check both answers (hypothesis's thread)."""
        for operator in (False, True):
            if time.monotonic() - self.started > BUDGET_S:
                if not any(finding.problem.startswith("time budget") for finding in self.findings):
                    self.findings.append(Finding(request, operator, f"time budget of {BUDGET_S:.0f} s exceeded"))
                return
            future = asyncio.run_coroutine_threadsafe(self.send(request, operator), self.loop)
            self.sent += 1
            try:
                status, body = future.result(timeout=REQUEST_TIMEOUT_S + 5)
            except (aiohttp.ClientError, OSError, MalformedReply, concurrent.futures.TimeoutError) as exc:
                future.cancel()
                self.findings.append(Finding(request, operator, f"no answer: {type(exc).__name__}: {exc}"))
                continue
            self.statuses.setdefault(request.route, Counter())[status] += 1
            problem = answer_problem(request, status, body)
            if problem is not None:
                self.findings.append(Finding(request, operator, problem))

    async def send(self, request: FuzzRequest, operator: bool) -> tuple[int, bytes]:
        """(status, body) of ``request`` sent by the gateway's client or operator session (or a plain socket)."""
        if request.raw_headers:
            return await asyncio.wait_for(self.send_raw(request, operator), REQUEST_TIMEOUT_S)
        session = self.gw.operator if operator else self.gw.client
        url = URL(self.gw.server.url + request.target, encoded=True)
        has_type = any(name.lower() == "content-type" for name, _ in request.headers)
        skip = () if request.body is not None or has_type else ("Content-Type",)
        async with session.request(
            request.method,
            url,
            headers=list(request.headers),
            # aiohttp warns that a large bytes body may block the loop; a file-like one it sends in parts.
            data=io.BytesIO(request.body) if request.body is not None and len(request.body) > 65536 else request.body,
            chunked=request.chunked or None,
            skip_auto_headers=skip,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        ) as reply:
            return reply.status, await reply.read()

    async def send_raw(self, request: FuzzRequest, operator: bool) -> tuple[int, bytes]:
        """(status, body) of ``request`` written to a plain socket, read until the server closes it."""
        server = self.gw.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(request.wire_bytes(f"{server.host}:{server.port}", operator))
            await writer.drain()
            return parse_reply(await reader.read())
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    def run(self, requests: st.SearchStrategy[FuzzRequest], examples: int, explicit: list[FuzzRequest]) -> None:
        """Exchange the ``explicit`` requests, then ``examples`` drawn by hypothesis (call from a worker thread)."""
        config = settings(
            max_examples=examples,
            deadline=None,
            derandomize=SEED is None,
            database=None,
            suppress_health_check=[
                HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.large_base_example,
                HealthCheck.filter_too_much,
            ],
        )
        test = given(requests)(self.exchange)
        for request in explicit:
            test = example(request)(test)
        test = config(test)
        if SEED is not None:
            test = seed(int(SEED))(test)
        test()

    def report(self) -> str:
        """Every finding, one per distinct (route, problem) with its first request, for the failure message."""
        distinct: dict[tuple[str, str], Finding] = {}
        counts: Counter[tuple[str, str]] = Counter()
        for finding in self.findings:
            key = (finding.request.route, re.sub(r"\d+", "N", finding.problem)[:80])
            distinct.setdefault(key, finding)
            counts[key] += 1
        lines = [f"{len(self.findings)} of {self.sent} requests failed ({len(distinct)} distinct):"]
        lines += [f"{counts[key]}x {finding}" for key, finding in list(distinct.items())[:40]]
        return "\n".join(lines)

    def summary(self) -> str:
        """Requests sent, time taken and the statuses answered, per route."""
        lines = [f"{self.sent} requests in {time.monotonic() - self.started:.1f} s"]
        lines += [f"  {route}: {dict(sorted(statuses.items()))}" for route, statuses in sorted(self.statuses.items())]
        return "\n".join(lines)


# The gateway's pages and their files, and the Prometheus text format: not JSON when they succeed
# (their error answers still are).
NOT_JSON_WHEN_OK = frozenset({"/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css", "/metrics", "/docs"})


def answer_problem(request: FuzzRequest, status: int, body: bytes) -> str | None:
    """What is wrong with an answer, or None: below 500, JSON, and empty for HEAD and 204."""
    if status >= 500:
        return f"HTTP {status}: {body[:300]!r}"
    if request.method == "HEAD" or status in (204, 304):
        return None if not body else f"HTTP {status} with a body: {body[:100]!r}"
    path = request.target.split("?", 1)[0].rstrip("/")
    if status < 400 and (request.route.partition(" ")[2] in NOT_JSON_WHEN_OK or path in NOT_JSON_WHEN_OK):
        return None
    try:
        json.loads(body.decode("utf-8"), parse_constant=reject_constant)
    except ValueError:
        return f"HTTP {status} with a body that is not JSON: {body[:200]!r}"
    return None


# --- strategies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """Names that make requests reach deeper than a 400: the live gateway's contracts, servers, origin."""

    contracts: list[str]
    methods: list[str]
    inputs: list[str]
    servers: list[str]
    origin: str
    host: str
    functions: list[tuple[str, str, tuple[str, ...]]]  # (contract, method, names of its inputs)
    plain_call: tuple[str, str]  # a view without parameters: (contract, method)

    @property
    def words(self) -> list[str]:
        """Every name a path segment or query value may usefully be."""
        return [*self.contracts, *self.methods, *self.inputs, *self.servers]


def segments(vocab: Vocabulary) -> st.SearchStrategy[str]:
    """One path segment or query value, as it goes on the wire."""
    numbers = st.one_of(
        st.integers(),
        st.integers(min_value=-(10**80), max_value=10**80),
        st.floats(),
        st.integers(min_value=1, max_value=400),
    ).map(str)
    return st.one_of(
        st.sampled_from(vocab.words),
        st.sampled_from(vocab.words).map(str.upper),
        numbers,
        st.sampled_from(NASTY_SEGMENTS),
        st.text(max_size=30).map(pct),  # arbitrary unicode: NUL, '/', controls, astral planes
        st.text(alphabet="azAZ09-._~!$&'()*+,;=:@%", max_size=30),  # raw, bad escapes included
        st.text(st.characters(min_codepoint=0xA0, exclude_categories=["Cs"]), min_size=1, max_size=8),  # raw UTF-8
    )


def queries(vocab: Vocabulary) -> st.SearchStrategy[str]:
    """A query string (without '?'): meaningful keys and repeated keys, or junk."""
    keys = st.one_of(st.sampled_from(QUERY_KEYS + vocab.inputs), st.text(max_size=10))
    values = st.one_of(st.sampled_from(vocab.servers), segments(vocab), st.text(max_size=20))
    pairs = st.lists(st.tuples(keys, values), max_size=6).map(
        lambda items: "&".join(f"{pct(key)}={pct(value)}" for key, value in items)
    )
    encoded_pairs = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), segments(vocab)), max_size=5).map(
        lambda items: "&".join(f"{key}={value}" for key, value in items)
    )
    junk = st.text(alphabet="az09=&;%+#?/[]", max_size=30)
    calls = contract_calls(vocab)
    return st.one_of(st.just(""), st.just(""), st.just(""), pairs, encoded_pairs, junk, calls, calls)


def as_text(value: Any) -> str:
    """A generated value as a query parameter holds it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def contract_calls(vocab: Vocabulary) -> st.SearchStrategy[str]:
    """``contractID=&operation=&arg=...`` for a real contract function, sometimes with an argument too many."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        contract, method, inputs = draw(st.sampled_from(vocab.functions))
        count = len(inputs) + draw(st.sampled_from([0, 0, 0, 1]))
        arguments = draw(st.lists(abi_arguments(vocab), min_size=count, max_size=count))
        parts = [f"contractID={pct(contract)}", f"operation={pct(method)}"]
        parts += [f"arg={pct(as_text(argument))}" for argument in arguments]
        parts += draw(
            st.lists(st.sampled_from(["requestID=r-1", "requestID=", "server=chain", "server=x"]), max_size=2)
        )
        return "&".join(draw(st.permutations(parts)))

    return build()


def header_sets(vocab: Vocabulary) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Usually no extra header; sometimes odd content types, origins, hosts and credentials."""
    text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
    optional = {
        "Content-Type": st.one_of(st.sampled_from(CONTENT_TYPES), text),
        "Origin": st.one_of(
            st.sampled_from([vocab.origin, vocab.origin + "/", "null", "http://localhost", "http://evil.example"]),
            text,
        ),
        "Host": st.one_of(
            st.sampled_from([vocab.host, "localhost", "[::1]", "127.0.0.1", "127.0.0.1:1", "evil.example", ""]),
            text,
        ),
        "Sec-Fetch-Site": st.sampled_from(["same-origin", "none", "cross-site", "same-site", "CROSS-SITE", "x"]),
        "Authorization": st.one_of(
            st.sampled_from([f"Bearer {TEST_TOKEN}", f"bearer  {TEST_TOKEN} ", "Bearer", "Bearer x", "Basic eDp5"]),
            text,
        ),
        "Accept": text,
        "Accept-Encoding": st.sampled_from(["gzip", "br", "identity;q=0", "*"]),
        "X-Forwarded-For": text,
    }
    # Any of them, in any order, some twice (two Hosts, two Authorizations).
    lines = st.one_of(*(st.tuples(st.just(name), values) for name, values in optional.items()))
    return st.one_of(st.just(()), st.just(()), st.lists(lines, min_size=1, max_size=5).map(tuple))


def raw_header_sets() -> st.SearchStrategy[tuple[tuple[bytes, bytes], ...]]:
    """Header lines with bytes no client library sends: non-UTF-8, controls, a token with a bad byte.

    Half of them are one Authorization line (the header the operator's routes check), since hypothesis
    rarely builds a particular byte in a particular header by chance.
    """
    # Bytes no header should hold (non-ASCII, controls) more often than harmless ones.
    odd_byte = st.one_of(st.integers(0x80, 0xFF), st.integers(0x00, 0x1F), st.integers(0x00, 0xFF)).map(
        lambda byte: bytes([byte])
    )
    odd_bytes = st.lists(st.one_of(odd_byte, st.binary(min_size=1, max_size=4)), min_size=1, max_size=8).map(b"".join)
    token = TEST_TOKEN.encode()
    credentials = st.one_of(
        st.tuples(st.integers(0, len(token) - 1), odd_byte).map(
            lambda change: b"Bearer " + token[: change[0]] + change[1] + token[change[0] + 1 :]
        ),
        odd_bytes.map(lambda value: b"Bearer " + value),
        odd_bytes.map(lambda value: b"Bearer " + token + value),
        odd_bytes,
    )
    known = st.sampled_from([b"Authorization", b"Host", b"Origin", b"Content-Type", b"Sec-Fetch-Site", b"Cookie"])
    names = st.one_of(known, known, st.binary(min_size=1, max_size=12).map(lambda raw: raw.replace(b":", b"")))
    values = st.one_of(
        credentials,
        odd_bytes,
        st.binary(max_size=24),
        st.sampled_from([b"http://\xff", b"127.0.0.1\x00", b"application/json\xff", b"\xc3\xa9", b"\xed\xa0\x80"]),
    )
    authorization = st.tuples(st.just(b"Authorization"), credentials).map(lambda line: (line,))
    any_lines = st.lists(st.tuples(names, values), min_size=1, max_size=3).map(tuple)
    return st.one_of(authorization, any_lines).map(lambda lines: tuple(map(one_line, lines)))


def one_line(header: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """A raw header without CR or LF, which would end it (and smuggle what follows in as another request)."""
    name, value = (part.replace(b"\r", b"").replace(b"\n", b"") for part in header)
    return name, value


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON document hypothesis can build (nested a few levels)."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )


def eth_values(vocab: Vocabulary) -> st.SearchStrategy[Any]:
    """Things a node or an ABI argument takes: addresses, hex quantities and data, block tags, call objects."""
    addresses = st.one_of(
        st.sampled_from(list(demo_contract_addresses().values())),
        st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex()),
        st.binary(max_size=24).map(lambda raw: "0x" + raw.hex()),
    )
    quantities = st.one_of(st.integers(min_value=0, max_value=2**260).map(hex), st.sampled_from(BLOCK_TAGS))
    data = st.binary(max_size=68).map(lambda raw: "0x" + raw.hex())
    calls = st.fixed_dictionaries(
        {},
        optional={
            "to": addresses,
            "from": addresses,
            "data": data,
            "input": data,
            "gas": quantities,
            "gasPrice": quantities,
            "value": quantities,
            "fromBlock": quantities,
            "toBlock": quantities,
            "address": addresses,
            "topics": st.lists(st.one_of(st.none(), data), max_size=3),
        },
    )
    numbers = st.integers(min_value=-(2**300), max_value=2**300)
    return st.one_of(addresses, quantities, data, calls, numbers, numbers.map(str), st.sampled_from(vocab.words))


def rpc_requests(vocab: Vocabulary) -> st.SearchStrategy[dict[str, Any]]:
    """JSON-RPC-shaped objects: allowed and refused methods, odd versions, params and ids; some notifications."""
    params = st.one_of(st.lists(st.one_of(eth_values(vocab), json_values()), max_size=4), json_values())
    ids = st.one_of(st.integers(), st.text(max_size=10), st.none(), json_values())
    return st.fixed_dictionaries(
        {
            "jsonrpc": st.one_of(st.just("2.0"), st.just("2.0"), st.sampled_from(["1.0", "2", 2.0]), json_values()),
            "method": st.one_of(st.sampled_from(RPC_METHODS), st.sampled_from(RPC_METHODS), st.text(max_size=20)),
        },
        optional={"params": params, "id": ids},
    )


def abi_arguments(vocab: Vocabulary) -> st.SearchStrategy[Any]:
    """A value for a contract function's parameter: right for some ABI type, or not."""
    return st.one_of(eth_values(vocab), json_values(), segments(vocab), st.text(max_size=40))


def documents(vocab: Vocabulary, route: str = "") -> st.SearchStrategy[Any]:
    """A JSON body: REST arguments, JSON-RPC requests and batches, or anything; ``route``'s own shape most often."""
    argument = abi_arguments(vocab)
    keys = st.one_of(st.sampled_from([*vocab.inputs, "args"]), st.text(max_size=8))
    rest = st.one_of(
        st.dictionaries(keys, argument, max_size=3),
        st.fixed_dictionaries({"args": st.lists(argument, max_size=3)}),
        st.lists(argument, max_size=3),
    )
    rpc = rpc_requests(vocab)
    batches = st.lists(st.one_of(rpc, rpc, json_values()), max_size=5)
    if route.endswith("/rpc"):
        return st.one_of(rpc, rpc, batches, batches, rest, json_values())
    if "<" in route:
        return st.one_of(rest, rest, rest, rpc, batches, json_values())
    return st.one_of(rest, rpc, batches, json_values())


def encode(document: Any, encoding: str) -> bytes:
    """``document`` as JSON in ``encoding`` (utf-8-sig and the UTF-16/32 forms carry a BOM)."""
    text = json.dumps(document, ensure_ascii=encoding == "ascii")
    return text.encode(encoding, "surrogatepass")


def deep_bodies() -> st.SearchStrategy[bytes]:
    """Arrays or objects nested around the limit (128) and far past it."""
    depths = st.sampled_from([127, 128, 129, 1000, 100_000])
    kinds = st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"args":[', b"]}")])
    return st.tuples(depths, kinds).map(lambda pair: pair[1][0] * pair[0] + b"1" + pair[1][1] * pair[0])


def bodies(vocab: Vocabulary, route: str = "") -> st.SearchStrategy[bytes | None]:
    """A POST body: none, generated JSON in some encoding, raw bytes, nasty documents, deep nesting."""
    encoded = st.builds(encode, documents(vocab, route), st.sampled_from(ENCODINGS))
    return st.one_of(
        encoded, encoded, encoded, st.none(), st.binary(max_size=200), st.sampled_from(NASTY_BODIES), deep_bodies()
    )


def cheap_enough(route: RouteUnderTest, values: list[str]) -> bool:
    """False for in-range inputs of the CPU tasks that would only cost seconds of compute."""
    for task, cap in CPU_TASK_CAPS.items():
        if route.pattern.startswith(f"/{task}/"):
            try:
                return int(values[0]) <= cap
            except ValueError:
                return True
    return True


def requests_for(route: RouteUnderTest, vocab: Vocabulary) -> st.SearchStrategy[FuzzRequest]:
    """Requests for one route: its path filled in, a query, sometimes headers, a body for POST."""

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        values = draw(st.lists(segments(vocab), min_size=len(route.params), max_size=len(route.params)))
        query = draw(queries(vocab))
        body = (
            draw(bodies(vocab, route.pattern))
            if route.method == "POST"
            else draw(st.sampled_from([None, None, None, b"{}"]))
        )
        if route.params == ["contract", "method"] and draw(st.booleans()):
            # Half of the calls name a real contract function and pass its parameters by name.
            contract, method, inputs = draw(st.sampled_from(vocab.functions))
            values = [contract, method]
            arguments = draw(st.lists(abi_arguments(vocab), min_size=len(inputs), max_size=len(inputs)))
            if route.method == "POST":
                body = encode(dict(zip(inputs, arguments, strict=True)), "utf-8")
            else:
                query = "&".join(f"{name}={pct(as_text(value))}" for name, value in zip(inputs, arguments, strict=True))
        if not cheap_enough(route, values):
            values = ["1"] * len(values)
        path = route.fill(values)
        path = draw(st.sampled_from([path, path, path, path, path + "/", "/" + path]))
        headers = list(draw(header_sets(vocab)))
        if body is not None and not any(name == "Content-Type" for name, _ in headers):
            headers.append(("Content-Type", draw(st.sampled_from(["application/json", "application/json", ""]))))
        chunked = body is not None and draw(st.integers(0, 9)) == 0
        target = path + ("?" + query if query or draw(st.booleans()) else "")
        # Now and then header bytes aiohttp cannot send (over a plain socket; small bodies only, as a server
        # may close on a refused large one before reading it, and a plain socket then loses the answer).
        raw_headers = draw(st.one_of(st.just(()), st.just(()), raw_header_sets()))
        if body is not None and len(body) >= 65536:
            raw_headers = ()
        return FuzzRequest(str(route), route.method, target, tuple(headers), body, chunked, raw_headers)

    return build()


def plain_requests(route: RouteUnderTest, vocab: Vocabulary) -> list[FuzzRequest]:
    """The route's simplest well-formed requests, always sent first: each route must answer 2xx to one of them.

    Path parameters are a parameterless view's contract and method, a transaction hash, or 1; the query is
    empty or names that view; a POST carries ``{}`` or a JSON-RPC ``eth_blockNumber``.
    """
    contract, method = vocab.plain_call
    plain = {"contract": contract, "method": method, "tx_hash": "0x" + "00" * 32}
    path = route.fill([plain.get(name, "1") for name in route.params])
    targets = [path, f"{path}?contractID={contract}&operation={method}"]
    if route.method != "POST":
        return [FuzzRequest(str(route), route.method, target) for target in targets]
    json_type = (("Content-Type", "application/json"),)
    rpc = encode({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, "utf-8")
    return [
        FuzzRequest(str(route), route.method, target, json_type, body) for target in targets for body in (b"{}", rpc)
    ]


def requests_with_other_methods(routes: list[RouteUnderTest], vocab: Vocabulary) -> st.SearchStrategy[FuzzRequest]:
    """Any method on any route's path (most answer 404 or 405), and paths no route has."""
    methods = st.sampled_from(
        ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "PURGE", "FOO"]
    )
    patterns = st.sampled_from(routes).map(lambda route: route.pattern)
    random_paths = st.lists(segments(vocab), min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        pattern = draw(st.one_of(patterns, patterns, random_paths))
        route = RouteUnderTest("*", pattern)
        values = draw(st.lists(segments(vocab), min_size=len(route.params), max_size=len(route.params)))
        path = route.fill(["1" if any(f"/{t}/" in pattern for t in CPU_TASK_CAPS) else v for v in values])
        method = draw(methods)
        query = draw(queries(vocab))
        headers = draw(header_sets(vocab))
        body = draw(st.one_of(st.none(), bodies(vocab))) if method not in ("GET", "HEAD", "TRACE") else None
        target = path + ("?" + query if query else "")
        raw_headers = draw(st.one_of(st.just(()), st.just(()), raw_header_sets()))
        if body is not None and len(body) >= 65536:
            raw_headers = ()
        return FuzzRequest("* (any method, any path)", method, target, headers, body, raw_headers=raw_headers)

    return build()


# --- the gateway under fuzz ---------------------------------------------------------------------


@dataclass(frozen=True)
class HypothesisRun:
    """Requests for one route (or for any): ``explicit`` ones first, then ``examples`` drawn from ``requests``."""

    requests: st.SearchStrategy[FuzzRequest]
    examples: int
    explicit: list[FuzzRequest] = field(default_factory=list)


# A test's runs, made from the app's routes and the gateway's names.
Plan = Callable[[list[RouteUnderTest], Vocabulary], list[HypothesisRun]]


@dataclass
class FuzzTarget:
    """The gateway and the edges behind it."""

    gw: Gateway
    edges: dict[str, RunningServer]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fuzz_target() -> AsyncIterator[FuzzTarget]:
    """One gateway with math (a local and a remote edge) and contracts (an edge hosting a chain)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
        async with AsyncExitStack() as stack:
            edges = {}
            for name, chain in (("local", False), ("remote", False), ("chain", True)):
                app = create_edge_app(EdgeConfig(name=name, processes=1, chain=chain))
                edges[name] = await stack.enter_async_context(serve_app(app))
            contracts = [
                {"name": name, "address": address, "artifact": f"offload_edge:chain/artifacts/{name}.json"}
                for name, address in demo_contract_addresses().items()
            ]
            document = {
                "gateway": {"probe_interval_s": 60},
                "plugins": {
                    "math": {
                        "servers": servers_table(("local", edges["local"]), ("remote", edges["remote"]), local="local")
                    },
                    "contracts": {
                        "rpc_path": "/rpc",
                        "servers": [{"name": "chain", "url": edges["chain"].url}],
                        "contracts": contracts,
                    },
                },
            }
            settings_ = parse_settings(document, source="test_fuzz_routes")
            server = await stack.enter_async_context(serve_app(create_app(settings_, api_token=TEST_TOKEN)))
            client = aiohttp.ClientSession(base_url=server.url)
            stack.push_async_callback(client.close)
            operator = aiohttp.ClientSession(base_url=server.url, headers=OPERATOR_HEADERS)
            stack.push_async_callback(operator.close)
            yield FuzzTarget(Gateway(server, client, operator), edges)


async def vocabulary(gw: Gateway) -> Vocabulary:
    """Contract, method, argument and server names from the running gateway."""
    status, listed, _ = await gw.get_json("/contracts/listcontractprocess")
    assert status == 200, listed
    methods = [method for contract in listed["data"] for method in contract["methods"]]
    status, servers, _ = await gw.get_json("/servers")
    assert status == 200, servers
    described = [server for pool in servers["pools"].values() for server in pool["servers"]]
    origin = gw.server.url
    plain_calls = [
        (contract["name"], method["name"])
        for contract in listed["data"]
        for method in contract["methods"]
        if method["kind"] == "view" and not method["inputs"]
    ]
    assert plain_calls, listed
    return Vocabulary(
        contracts=sorted({contract["name"] for contract in listed["data"]}),
        methods=sorted({method["name"] for method in methods}),
        inputs=sorted({arg["name"] for method in methods for arg in method["inputs"] if arg["name"]}),
        servers=sorted(
            {server["name"] for server in described}
            | {server["url"] for server in described}
            | {server["url"].removeprefix("http://") for server in described}
        ),
        origin=origin,
        host=origin.removeprefix("http://"),
        functions=[
            (contract["name"], method["name"], tuple(arg["name"] for arg in method["inputs"]))
            for contract in listed["data"]
            for method in contract["methods"]
        ],
        plain_call=plain_calls[0],
    )


@contextmanager
def logged_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR (and worse) records logged by anyone in this process meanwhile: a gateway or edge crash shows here."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def describe_records(records: list[logging.LogRecord]) -> str:
    """The first few records, with their exceptions, for a failure message."""
    lines = [f"{len(records)} ERROR log record(s):"]
    for record in records[:10]:
        lines.append(f"  {record.name}: {record.getMessage()[:300]}")
        if record.exc_info and record.exc_info[1] is not None:
            lines.append(f"    {type(record.exc_info[1]).__name__}: {str(record.exc_info[1])[:300]}")
    return "\n".join(lines)


async def fuzz(target: FuzzTarget, plan: Plan) -> FuzzRun:
    """Send the requests of every run of ``plan``; fail on any finding or ERROR log, or if anything stopped working."""
    gw = target.gw
    vocab = await vocabulary(gw)
    runs = plan(app_routes(gw), vocab)
    fuzz_run = FuzzRun(gw, asyncio.get_running_loop())
    with logged_errors() as records:

        def run_all() -> None:
            for run in runs:
                fuzz_run.run(run.requests, run.examples, run.explicit)

        await asyncio.to_thread(run_all)
        print(fuzz_run.summary())  # shown with -s, or -rP
        await assert_everything_still_answers(target)
    assert not fuzz_run.findings, fuzz_run.report()
    assert not records, describe_records(records)
    return fuzz_run


async def assert_everything_still_answers(target: FuzzTarget) -> None:
    """The gateway, every edge, their worker processes and the chain still work."""
    gw = target.gw
    status, health, _ = await gw.get_json("/health")
    assert status == 200 and health["status"] == "ok", health
    assert all(pool["available"] == pool["servers"] for pool in health["pools"].values()), health
    for name, edge in target.edges.items():
        async with gw.client.get(edge.make_url("/health")) as reply:
            assert reply.status == 200, name
    for server in ("local", "remote"):  # a task runs in the edge's worker process
        status, body, _ = await gw.get_json("/nthprime/10", params={"server": server})
        assert (status, body["data"], body["server"]) == (200, "29", server), body
    status, body, _ = await gw.get_json("/contracts/Hello/greet", params={"name": "fuzz"})
    assert (status, body["data"]) == (200, "Hello, fuzz!"), body


# --- the tests ----------------------------------------------------------------------------------


async def test_every_route_is_found(fuzz_target: FuzzTarget) -> None:
    """The enumeration the fuzzing relies on sees the core's and both plugins' routes."""
    routes = {str(route) for route in app_routes(fuzz_target.gw)}
    assert {
        "GET /health",
        "GET /servers",
        "GET /plugins",
        "GET /square/<num>",
        "POST /updateservers",
        "GET /contracts/execcontract",
        "POST /contracts/rpc",
        "GET /contracts/<contract>/<method>",
        "POST /contracts/<contract>/<method>",
    } <= routes
    assert len(routes) >= 20


def is_read(route: RouteUnderTest) -> bool:
    """Routes without a body: everything but POST."""
    return route.method != "POST"


def is_write(route: RouteUnderTest) -> bool:
    """Routes taking a body."""
    return route.method == "POST"


def per_route(select: Callable[[RouteUnderTest], bool], examples: int) -> Plan:
    """A plan with one hypothesis run of ``examples`` requests for each route ``select`` picks."""

    def plan(routes: list[RouteUnderTest], vocab: Vocabulary) -> list[HypothesisRun]:
        chosen = [route for route in routes if select(route)]
        assert chosen, "no route to fuzz"
        return [HypothesisRun(requests_for(route, vocab), examples, plain_requests(route, vocab)) for route in chosen]

    return plan


def assert_handlers_reached(fuzz_run: FuzzRun, routes: list[RouteUnderTest], examples: int) -> None:
    """Each route got its requests and answered 2xx at least once (to its plain form at least): nothing refuses all."""
    for route in routes:
        statuses = fuzz_run.statuses.get(str(route), Counter())
        assert sum(statuses.values()) >= 2 * examples, (str(route), statuses)
        if (route.method, route.pattern) not in NEVER_SUCCEED:
            assert any(200 <= status < 300 for status in statuses), (str(route), statuses)


async def test_fuzzed_reads_never_fail(fuzz_target: FuzzTarget) -> None:
    """Every GET route: fuzzed path parameters, queries and headers."""
    fuzz_run = await fuzz(fuzz_target, per_route(is_read, READ_EXAMPLES))
    reads = [route for route in app_routes(fuzz_target.gw) if is_read(route)]
    assert_handlers_reached(fuzz_run, reads, READ_EXAMPLES)


async def test_fuzzed_writes_never_fail(fuzz_target: FuzzTarget) -> None:
    """Every POST route: the same, and fuzzed bodies (the operator's requests really change the chain)."""
    fuzz_run = await fuzz(fuzz_target, per_route(is_write, WRITE_EXAMPLES))
    writes = [route for route in app_routes(fuzz_target.gw) if is_write(route)]
    assert_handlers_reached(fuzz_run, writes, WRITE_EXAMPLES)


async def test_fuzzed_methods_and_paths_never_fail(fuzz_target: FuzzTarget) -> None:
    """Any method on any route's path, and paths no route has."""

    def plan(routes: list[RouteUnderTest], vocab: Vocabulary) -> list[HypothesisRun]:
        return [HypothesisRun(requests_with_other_methods(routes, vocab), OTHER_METHOD_EXAMPLES)]

    fuzz_run = await fuzz(fuzz_target, plan)
    statuses = fuzz_run.statuses["* (any method, any path)"]
    assert statuses[404] > 0 and statuses[405] > 0, statuses
