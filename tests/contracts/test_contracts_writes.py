"""Write outcomes callers can trust: the hash whatever happens, Idempotency-Key, node errors as errors.

The end-to-end tests run real edges with the embedded chain, a real gateway, and
:class:`DyingRelay`: a raw asyncio JSON-RPC node in front of a chain edge that passes
a transaction on and then fails (drops the connection, answers 502, or hangs), so the
transaction really is applied while its answer is lost. The store's own tests at the
end need no servers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from eth_account import Account
from eth_utils import keccak

from offload import ConfigError, OffloadError
from offload.app import create_app
from offload.settings import parse_settings
from offload.testing import serve_app
from offload_contracts.idempotency import MAX_KEY_CHARS, IdempotencyStore, KeyRefused, fingerprint, parse_key
from offload_edge.chain.node import DEV_ACCOUNT, DEV_PRIVATE_KEY, demo_contract_addresses

from clocks import FakeClock
from conftest import OPERATOR_HEADERS, TEST_TOKEN, EdgeFactory, Gateway, GatewayFactory

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"
RPC = "/contracts/rpc"
INCREMENT = "/contracts/Counter/increment"
# Long enough for a loaded machine, short enough that a hung relay does not stall a test for long.
POOL_TIMEOUT_S = 2.0
# How long a test waits for something the gateway does in the background.
EVENTUALLY_S = 15.0

T = TypeVar("T")


class DyingRelay:
    """A JSON-RPC node in front of a real chain edge that fails right after passing a transaction on.

    Raw asyncio, so it can do what a well-behaved server never does. What it does with an
    ``eth_sendRawTransaction`` (``after_write``):

    * ``drop``, ``502``, ``hang``: pass it on to the chain, then drop the connection without
      an answer, answer HTTP 502, or never answer;
    * ``hold``: keep it without passing it on and drop the connection (it reaches the chain
      only when the test calls :meth:`pass_on_held`, as a node that comes back would send it);
    * ``accept``: keep it and answer its hash, as a node that took it would.

    After each transaction it is down for ``downtime`` requests (None: until :meth:`revive`):
    reads are dropped unanswered, while transactions are still passed on (and it dies again).
    """

    def __init__(self, upstream: str, after_write: str = "drop", downtime: int | None = None) -> None:
        self.upstream = upstream
        self.after_write = after_write
        self.downtime = downtime
        self.down = 0.0  # requests it still drops; inf: until revived
        self.received: list[str] = []  # hashes of the transactions sent to it
        self.passed_on: list[str] = []  # hashes of those it passed on to the chain
        self.held: list[bytes] = []
        self._hung = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        self._session = aiohttp.ClientSession()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        self._hung.set()
        assert self._server is not None and self._session is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._session.close()

    def revive(self) -> None:
        self.down = 0

    async def pass_on_held(self) -> None:
        """The node is back and sends what it held on to the chain."""
        held, self.held = self.held, []
        for body in held:
            answer = await self._forward(body)
            self.passed_on.append(answer["result"])

    async def _forward(self, body: bytes) -> Any:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        async with self._session.post(self.upstream, data=body, headers=headers) as reply:
            return json.loads(await reply.read())

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._exchange(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request on a keep-alive connection; False when the connection is to be dropped."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        request = json.loads(body)
        if isinstance(request, dict) and request.get("method") == "eth_sendRawTransaction":
            return await self._write(request, body, writer)
        if self.down > 0:
            self.down -= 1
            return False
        await _answer(writer, await self._forward(body))
        return True

    async def _write(self, request: dict[str, Any], body: bytes, writer: asyncio.StreamWriter) -> bool:
        tx_hash = "0x" + keccak(bytes.fromhex(request["params"][0][2:])).hex()
        self.received.append(tx_hash)
        self.down = float("inf") if self.downtime is None else self.downtime
        if self.after_write in ("hold", "accept"):
            self.held.append(body)
            if self.after_write == "hold":
                return False
            await _answer(writer, {"jsonrpc": "2.0", "id": request.get("id"), "result": tx_hash})
            return True
        answer = await self._forward(body)
        assert "result" in answer, answer
        self.passed_on.append(answer["result"])
        if self.after_write == "502":
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        elif self.after_write == "hang":
            await self._hung.wait()
        return False


async def _answer(writer: asyncio.StreamWriter, payload: Any) -> None:
    """A 200 JSON answer on a keep-alive connection."""
    body = json.dumps(payload).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    writer.write(body)
    await writer.drain()


RelayFactory = Callable[..., Awaitable[tuple[DyingRelay, str]]]


@pytest_asyncio.fixture
async def relay() -> AsyncIterator[RelayFactory]:
    """Factory: ``relay, url = await relay(upstream_rpc_url, after_write="drop")``, closed after the test."""
    started: list[DyingRelay] = []

    async def start(upstream: str, after_write: str = "drop", downtime: int | None = None) -> tuple[DyingRelay, str]:
        node = DyingRelay(upstream, after_write, downtime)
        started.append(node)
        return node, await node.start()

    yield start
    for node in started:
        await node.close()


def contracts_document(servers: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    contracts = [
        {"name": name, "address": address, "artifact": f"offload_edge:chain/artifacts/{name}.json"}
        for name, address in demo_contract_addresses().items()
    ]
    table = {"rpc_path": "/rpc", "servers": servers, "contracts": contracts, "timeout_s": POOL_TIMEOUT_S}
    return {"gateway": {"probe_interval_s": 60}, "plugins": {"contracts": {**table, **options}}}


@pytest.fixture
def signing_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
    return DEV_PRIVATE_KEY


class Chain:
    """A chain edge, a dying relay in front of it, and a gateway with both in its pool."""

    def __init__(self, gw: Gateway, relay: DyingRelay) -> None:
        self.gw = gw
        self.relay = relay

    async def counter(self) -> int:
        """Counter.get() read from the chain edge itself (the relay may be down)."""
        status, body, _ = await self.gw.get_json("/contracts/Counter/get", params={"server": "origin"})
        assert status == 200, body
        return int(body["data"])

    async def write(self, key: str | None = None, path: str = INCREMENT, **kwargs: Any) -> tuple[int, Any, Any]:
        """A write pinned to the relay; (status, body, headers)."""
        headers = {"Idempotency-Key": key} if key is not None else {}
        params = {"server": "relay"}
        async with self.gw.operator.post(path, json=kwargs or {}, params=params, headers=headers) as reply:
            return reply.status, await reply.json(), reply.headers

    async def outcome(self, tx_hash: str) -> dict[str, Any]:
        status, body, _ = await self.gw.get_json(f"/contracts/tx/{tx_hash}")
        assert status == 200, body
        return dict(body["data"])

    async def rpc(self, payload: Any, key: str | None = None, server: str | None = None) -> tuple[int, Any, Any]:
        headers = {"Idempotency-Key": key} if key is not None else {}
        params = {"server": server} if server else {}
        async with self.gw.operator.post(RPC, json=payload, headers=headers, params=params) as reply:
            return reply.status, await reply.json(), reply.headers

    async def signed_increment(self, nonce_offset: int = 0) -> str:
        """A raw Counter.increment() signed by the dev account with its next nonce (read from the chain edge)."""

        async def result(method: str, params: list[Any]) -> Any:
            _, answer, _ = await self.rpc(
                {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, server="origin"
            )
            return answer["result"]

        transaction = {
            "to": demo_contract_addresses()["Counter"],
            "data": "0x" + keccak(text="increment()")[:4].hex(),
            "nonce": int(await result("eth_getTransactionCount", [DEV_ACCOUNT, "pending"]), 16) + nonce_offset,
            "gas": 100_000,
            "gasPrice": int(await result("eth_gasPrice", []), 16),
            "chainId": int(await result("eth_chainId", []), 16),
        }
        return "0x" + Account.sign_transaction(transaction, DEV_PRIVATE_KEY).raw_transaction.hex()


ChainFactory = Callable[..., Awaitable[Chain]]


@pytest.fixture
def chain(edge: EdgeFactory, gateway: GatewayFactory, relay: RelayFactory, signing_key: str) -> ChainFactory:
    """Factory: ``c = await chain(after_write="drop", downtime=None, **plugin_options)``."""

    async def start(after_write: str = "drop", downtime: int | None = None, **options: Any) -> Chain:
        origin = await edge("origin", chain=True)
        node, url = await relay(origin.make_url("/rpc"), after_write, downtime)
        servers = [{"name": "origin", "url": origin.url}, {"name": "relay", "url": url}]
        return Chain(await gateway(contracts_document(servers, **options)), node)

    return start


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = EVENTUALLY_S) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


async def mined(c: Chain, tx_hash: str) -> dict[str, Any]:
    """The outcome route's answer once it reports ``tx_hash`` mined."""

    async def check() -> dict[str, Any] | None:
        outcome = await c.outcome(tx_hash)
        return outcome if outcome["state"] == "mined" else None

    return await eventually(check, f"{tx_hash} reported mined")


def send_raw(raw: str, request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "eth_sendRawTransaction", "params": [raw]}


def tx_hash_of(raw: str) -> str:
    return "0x" + keccak(bytes.fromhex(raw[2:])).hex()


# -- a node dies right after passing the transaction on ---------------------------------------


@pytest.mark.parametrize("after_write", ["drop", "502", "hang"])
async def test_a_write_whose_node_dies_answers_its_hash_and_a_retry_does_not_apply_it_again(
    chain: ChainFactory, after_write: str
) -> None:
    c = await chain(after_write)
    before = await c.counter()
    status, body, headers = await c.write("key-1")
    # The relay passed it on and died: the gateway found it on the other node and waited for its receipt.
    assert status == 200, body
    assert c.relay.passed_on == [body["data"]["tx_hash"]]
    assert body["data"]["status"] == 1 and body["data"]["events"][0]["event"] == "Incremented"
    assert "Idempotent-Replayed" not in headers
    assert await c.counter() == before + 1
    # The caller retries with its key while the relay is still dead: the first answer, nothing sent.
    status, again, headers = await c.write("key-1")
    assert status == 200 and headers["Idempotent-Replayed"] == "true"
    assert again["data"] == body["data"]
    assert c.relay.received == c.relay.passed_on == [body["data"]["tx_hash"]]
    assert await c.counter() == before + 1
    outcome = await c.outcome(body["data"]["tx_hash"])
    assert outcome["state"] == "mined" and outcome["receipt"]["status"] == 1


async def test_outcome_unknown_is_a_202_with_the_hash_until_the_transaction_shows_up(chain: ChainFactory) -> None:
    c = await chain("hold")
    before = await c.counter()
    status, body, headers = await c.write("key-held")
    # The relay took the transaction and died before anyone saw it: nobody knows yet.
    assert status == 202, body
    data = body["data"]
    assert data["tx_hash"] == c.relay.received[0] and data["outcome"] == "unknown" and data["state"] == "unknown"
    assert data["status_url"] == f"/contracts/tx/{data['tx_hash']}" == headers["Location"]
    assert body["status_code"] == 202 and body["server"] == "relay"
    outcome = await c.outcome(data["tx_hash"])
    assert (outcome["state"], outcome["looking"]) == ("unknown", True)
    # A retry with the key sends nothing: it gets the current outcome, still unknown.
    status, again, headers = await c.write("key-held")
    assert status == 202 and again["data"]["tx_hash"] == data["tx_hash"] and headers["Idempotent-Replayed"] == "true"
    assert len(c.relay.received) == 1 and await c.counter() == before
    # The node comes back and passes it on: the background lookups find it.
    await c.relay.pass_on_held()
    outcome = await mined(c, data["tx_hash"])
    assert outcome["receipt"]["status"] == 1 and outcome["looking"] is False
    assert (outcome["contract"], outcome["function"]) == ("Counter", "increment")
    assert outcome["receipt"]["events"][0]["args"]["by"] == DEV_ACCOUNT
    # Now a retry gets the receipt: applied once, reported with its hash every time.
    status, final, headers = await c.write("key-held")
    assert status == 200 and final["data"]["tx_hash"] == data["tx_hash"] and headers["Idempotent-Replayed"] == "true"
    assert await c.counter() == before + 1 and len(c.relay.received) == 1


async def test_a_receipt_that_does_not_come_by_the_deadline_is_a_504_with_the_hash(chain: ChainFactory) -> None:
    c = await chain("accept", receipt_timeout_s=0.5)
    status, body, headers = await c.write()
    # The node answered the hash, but the transaction never reached a block within receipt_timeout_s.
    assert status == 504, body
    assert body["tx_hash"] == c.relay.received[0] and body["outcome"] == "unknown" and body["state"] == "pending"
    assert headers["Location"] == body["status_url"] and "no receipt within 0.5 s" in body["error"]
    await c.relay.pass_on_held()
    outcome = await mined(c, body["tx_hash"])
    assert outcome["receipt"]["status"] == 1


async def test_a_batch_of_pinned_writes_through_a_dying_relay_applies_exactly_those_reported_with_a_hash(
    chain: ChainFactory,
) -> None:
    # The relay passes every transaction on and then drops the next two requests: a node in a crash loop.
    c = await chain("drop", downtime=2)
    before = await c.counter()
    replies = []
    for wave in range(4):  # in waves, so that each wave's first reads meet the relay still down
        replies += await asyncio.gather(*(c.write(f"batch-{wave}-{index}") for index in range(5)))
    reported = {body["data"]["tx_hash"] for status, body, _ in replies if status == 200}
    assert all(status in (200, 502) for status, _, _ in replies), [status for status, _, _ in replies]
    # A 502 here failed before anything was sent (its estimate or nonce read was dropped): no hash to give.
    assert all("tx_hash" not in json.dumps(body) for status, body, _ in replies if status != 200)
    assert reported and set(c.relay.passed_on) == reported
    assert await c.counter() - before == len(reported)
    for tx_hash in reported:
        assert (await c.outcome(tx_hash))["receipt"]["status"] == 1
    # Every caller that got a hash retries: nothing is applied twice.
    sent = len(c.relay.received)
    retried = [index for index, (status, _, _) in enumerate(replies) if status == 200]
    again = await asyncio.gather(*(c.write(f"batch-{index // 5}-{index % 5}") for index in retried))
    assert [body["data"]["tx_hash"] for _, body, _ in again] == [
        replies[index][1]["data"]["tx_hash"] for index in retried
    ]
    assert all(headers["Idempotent-Replayed"] == "true" for _, _, headers in again)
    assert len(c.relay.received) == sent and await c.counter() - before == len(reported)


# -- the JSON-RPC pass-through's eth_sendRawTransaction ----------------------------------------


async def test_a_relayed_raw_transaction_whose_node_dies_answers_its_hash(chain: ChainFactory) -> None:
    c = await chain("drop")
    before = await c.counter()
    raw = await c.signed_increment()
    status, answer, _ = await c.rpc(send_raw(raw, "r1"), server="relay")
    # A lookup found it on the chain edge: the hash is the result.
    assert (status, answer) == (200, {"jsonrpc": "2.0", "id": "r1", "result": tx_hash_of(raw)})
    assert await c.counter() == before + 1


async def test_a_relayed_raw_transaction_nobody_has_seen_is_an_error_carrying_its_hash(chain: ChainFactory) -> None:
    c = await chain("hold")
    before = await c.counter()
    raw = await c.signed_increment()
    status, answer, headers = await c.rpc(send_raw(raw, 7), key="rpc-key", server="relay")
    assert status == 202 and answer["id"] == 7 and "result" not in answer
    error = answer["error"]
    assert error["code"] == -32603 and "outcome unknown" in error["message"]
    assert error["data"]["tx_hash"] == tx_hash_of(raw) and error["data"]["outcome"] == "unknown"
    assert headers["Location"] == error["data"]["status_url"]
    # The same key and bytes: the stored outcome, nothing sent again.
    status, again, headers = await c.rpc(send_raw(raw, 8), key="rpc-key", server="relay")
    assert status == 202 and again["id"] == 8 and headers["Idempotent-Replayed"] == "true"
    assert len(c.relay.received) == 1
    # The same key for other bytes is refused.
    other = await c.signed_increment(nonce_offset=1)
    status, refused, _ = await c.rpc(send_raw(other, 9), key="rpc-key", server="relay")
    assert status == 422 and refused["error"]["code"] == -32600 and "different request" in refused["error"]["message"]
    assert len(c.relay.received) == 1 and await c.counter() == before
    await c.relay.pass_on_held()
    await mined(c, tx_hash_of(raw))
    # Once it is mined, a retry with the key gets the hash as its result.
    status, final, _ = await c.rpc(send_raw(raw, 10), key="rpc-key", server="relay")
    assert (status, final) == (200, {"jsonrpc": "2.0", "id": 10, "result": tx_hash_of(raw)})
    assert await c.counter() == before + 1


@pytest.mark.parametrize("raw", ["0x00", "0xdeadbeef", "0x" + "ff" * 40])
async def test_a_raw_transaction_the_node_refuses_is_its_error_never_a_hash(chain: ChainFactory, raw: str) -> None:
    c = await chain()
    status, answer, _ = await c.rpc(send_raw(raw, "bad"), server="origin")
    # The node's own error, passed on as it came (-32000 "... Unknown transaction type" for 0x00).
    assert status == 200 and "result" not in answer, answer
    assert answer["error"]["code"] == -32000 and "invalid transaction" in answer["error"]["message"]
    if raw == "0x00":
        assert "Unknown transaction type" in answer["error"]["message"]
    status, answers, _ = await c.rpc([send_raw(raw, 1), {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId"}])
    assert status == 200 and "result" not in answers[0] and answers[0]["error"]["code"] == -32000
    assert answers[1]["result"].startswith("0x")


async def test_a_transaction_sent_again_is_known_by_its_hash_not_by_a_message(chain: ChainFactory) -> None:
    c = await chain()
    before = await c.counter()
    raw = await c.signed_increment()
    status, first, _ = await c.rpc(send_raw(raw, 1), server="origin")
    assert (status, first["result"]) == (200, tx_hash_of(raw))
    # The node answers "nonce too low" (it is mined): the lookup finds it, so it is the same transaction.
    status, again, _ = await c.rpc(send_raw(raw, 2), server="origin")
    assert (status, again) == (200, {"jsonrpc": "2.0", "id": 2, "result": tx_hash_of(raw)})
    # In a batch too, each raw transaction answered as a single one would be.
    status, answers, _ = await c.rpc([send_raw(raw, 3), {"jsonrpc": "2.0", "id": 4, "method": "eth_blockNumber"}])
    assert status == 200 and answers[0] == {"jsonrpc": "2.0", "id": 3, "result": tx_hash_of(raw)}
    assert await c.counter() == before + 1
    # A different transaction with a used nonce is refused with the node's error: nobody has it.
    stale = await c.signed_increment(nonce_offset=-1)
    status, refused, _ = await c.rpc(send_raw(stale, 5), server="origin")
    assert status == 200 and refused["error"]["code"] == -32000 and "nonce too low" in refused["error"]["message"]


async def test_an_idempotency_key_on_a_batch_with_a_write_is_refused(chain: ChainFactory) -> None:
    c = await chain()
    raw = await c.signed_increment()
    status, answer, _ = await c.rpc([send_raw(raw, 1)], key="batch-key")
    assert status == 400 and answer["error"]["code"] == -32600 and "not a batch" in answer["error"]["message"]
    # On reads a key changes nothing.
    status, answer, _ = await c.rpc({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, key="read-key")
    assert status == 200 and answer["result"].startswith("0x")


# -- Idempotency-Key on the REST routes --------------------------------------------------------


async def test_a_retry_with_the_same_key_gets_the_first_answer(chain: ChainFactory) -> None:
    c = await chain()
    before = await c.counter()

    async def write(key: str, amount: Any, server: str = "origin") -> tuple[int, Any, Any]:
        headers = {"Idempotency-Key": key}
        path = "/contracts/Counter/incrementBy"
        async with c.gw.operator.post(path, json={"amount": amount}, params={"server": server}, headers=headers) as r:
            return r.status, await r.json(), r.headers

    status, first, _ = await write("k-2", 2)
    assert status == 200 and first["data"]["events"][0]["args"]["value"] == before + 2
    # The same call spelled by position, through another node: still the same request.
    async with c.gw.operator.post(
        "/contracts/Counter/incrementBy", json={"args": ["0x2"]}, headers={"Idempotency-Key": "k-2"}
    ) as reply:
        assert reply.status == 200 and reply.headers["Idempotent-Replayed"] == "true"
        assert (await reply.json())["data"]["tx_hash"] == first["data"]["tx_hash"]
    status, mismatch, _ = await write("k-2", 3)
    assert status == 422 and "already used for a different request" in mismatch["error"]
    # Two at once with a new key: the second waits for the first and gets its answer.
    (status_a, a, headers_a), (status_b, b, headers_b) = await asyncio.gather(write("k-5", 5), write("k-5", 5))
    assert status_a == status_b == 200 and a["data"]["tx_hash"] == b["data"]["tx_hash"]
    assert sorted([headers_a.get("Idempotent-Replayed", ""), headers_b.get("Idempotent-Replayed", "")]) == ["", "true"]
    assert await c.counter() == before + 7
    # Keys are the operator's: without the token, nothing is answered from them.
    async with c.gw.client.post(
        "/contracts/Counter/incrementBy", json={"amount": 2}, headers={"Idempotency-Key": "k-2"}
    ) as reply:
        assert reply.status == 401


async def test_a_write_that_sent_nothing_does_not_use_up_its_key(chain: ChainFactory) -> None:
    c = await chain()
    headers = {"Idempotency-Key": "dec-1"}
    async with c.gw.operator.post("/contracts/Counter/decrement", json={}, headers=headers) as reply:
        # Reverted in the estimate: nothing was signed or sent.
        assert reply.status == 422 and "tx_hash" not in await reply.json()
    status, _, _ = await c.write()
    assert status == 200
    async with c.gw.operator.post("/contracts/Counter/decrement", json={}, headers=headers) as reply:
        body = await reply.json()
        assert reply.status == 200 and "Idempotent-Replayed" not in reply.headers, body
    assert await c.counter() == 0


async def test_the_execcontract_write_form_takes_a_key(chain: ChainFactory) -> None:
    c = await chain(allow_get_transactions=True)
    params = {"contractID": "Counter", "operation": "increment", "requestID": "r-1"}
    headers = {"Idempotency-Key": "exec-1"}
    async with c.gw.operator.get("/contracts/execcontract", params=params, headers=headers) as reply:
        first = await reply.json()
        assert reply.status == 200 and first["requestID"] == "r-1", first
    async with c.gw.operator.get(
        "/contracts/execcontract", params={**params, "requestID": "r-2"}, headers=headers
    ) as reply:
        again = await reply.json()
        assert reply.status == 200 and reply.headers["Idempotent-Replayed"] == "true"
    # The retry's own requestID is echoed; the write is the first one.
    assert again["requestID"] == "r-2" and again["data"] == first["data"]
    # The REST form of the same call is the same request.
    status, rest, _ = await c.write("exec-1")
    assert status == 200 and rest["data"]["tx_hash"] == first["data"]["tx_hash"]
    assert await c.counter() == 1


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Idempotency-Key": "x" * (MAX_KEY_CHARS + 1)}, "1 to 255 printable ASCII characters (got 256"),
        ({"Idempotency-Key": ""}, "1 to 255 printable ASCII characters (got 0"),
        ({"Idempotency-Key": "caf\u00e9"}, "not all ASCII"),
        ({"Idempotency-Key": "a\tb"}, "printable ASCII"),
    ],
)
async def test_bad_keys_are_a_clear_400(chain: ChainFactory, headers: dict[str, str], message: str) -> None:
    c = await chain()
    async with c.gw.operator.post(INCREMENT, json={}, headers=headers) as reply:
        body = await reply.json()
        assert reply.status == 400 and message in body["error"], body
    status, answer, _ = await c.rpc(send_raw(await c.signed_increment()), key=headers["Idempotency-Key"])
    assert status == 400 and answer["error"]["code"] == -32600
    assert await c.counter() == 0


async def test_two_key_headers_are_a_400(chain: ChainFactory) -> None:
    c = await chain()
    headers = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    async with c.gw.operator.post(INCREMENT, json={}, headers=headers) as reply:
        assert reply.status == 400 and "one Idempotency-Key header" in (await reply.json())["error"]
    assert await c.counter() == 0


# -- the outcome route -------------------------------------------------------------------------


async def test_the_outcome_route_is_a_read_of_what_the_nodes_show(chain: ChainFactory) -> None:
    c = await chain()
    status, body, _ = await c.write()
    tx_hash = body["data"]["tx_hash"]
    # Open to every local caller, like any read.
    status, answer, _ = await c.gw.get_json(f"/contracts/tx/{tx_hash.upper().replace('0X', '0x')}")
    assert status == 200 and answer["data"]["state"] == "mined" and answer["data"]["tx_hash"] == tx_hash
    assert answer["data"]["receipt"] == body["data"] and answer["server"] in ("origin", "relay")
    unknown = "0x" + "ab" * 32
    status, answer, _ = await c.gw.get_json(f"/contracts/tx/{unknown}")
    assert status == 200 and answer["data"] == {
        "tx_hash": unknown,
        "state": "unknown",
        "looking": False,
        "server": None,
    }
    for bad in ("0x12", "abc", "0x" + "g" * 64, "0x" + "a" * 65):
        status, answer, _ = await c.gw.get_json(f"/contracts/tx/{bad}")
        assert status == 400 and "not a transaction hash" in answer["error"]


def looking_tasks() -> list[asyncio.Task[Any]]:
    """The gateways' background lookups still running."""
    return [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "OutcomeTracker._look"]


async def test_stopping_the_gateway_stops_its_background_lookups(
    edge: EdgeFactory, relay: RelayFactory, signing_key: str
) -> None:
    origin = await edge("origin", chain=True)
    _, url = await relay(origin.make_url("/rpc"), "hold")
    document = contracts_document([{"name": "origin", "url": origin.url}, {"name": "relay", "url": url}])
    app = create_app(parse_settings(document, source="test"), api_token=TEST_TOKEN)
    async with serve_app(app) as server, aiohttp.ClientSession(server.url, headers=OPERATOR_HEADERS) as session:
        async with session.post(INCREMENT, json={}, params={"server": "relay"}) as reply:
            assert reply.status == 202
        assert len(looking_tasks()) == 1  # nobody has the transaction: the gateway looks for it
    assert looking_tasks() == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("idempotency_max_keys", 0, "idempotency_max_keys must be an integer from 1 to"),
        ("idempotency_ttl_s", -1, "idempotency_ttl_s must be a number more than 0"),
        ("outcome_lookup_s", "long", "outcome_lookup_s must be a number more than 0"),
        ("outcome_max_tracked", 1.5, "outcome_max_tracked must be an integer from 1 to"),
    ],
)
async def test_bad_write_options_stop_startup_with_one_line(
    gateway: GatewayFactory, option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await gateway(contracts_document([{"name": "origin", "url": "http://127.0.0.1:9"}], **{option: value}))
    assert str(caught.value).startswith(f"[plugins.contracts] {message}") and "\n" not in str(caught.value)


async def test_a_contract_named_like_the_outcome_route_is_refused(gateway: GatewayFactory) -> None:
    document = contracts_document([{"name": "origin", "url": "http://127.0.0.1:9"}])
    document["plugins"]["contracts"]["contracts"][0]["name"] = "tx"
    with pytest.raises(ConfigError, match="may not be named 'tx'"):
        await gateway(document)


# -- the idempotency store on its own ----------------------------------------------------------


def test_keys_are_checked() -> None:
    assert parse_key([]) is None
    assert parse_key(["order-42"]) == "order-42"
    assert parse_key(['"quoted key"']) == "quoted key"  # the IETF draft's structured-field string
    assert parse_key(["x" * MAX_KEY_CHARS]) == "x" * MAX_KEY_CHARS
    for values in (["x" * (MAX_KEY_CHARS + 1)], [""], ['""'], ["\u00e9"], ["a\x00b"], ["a", "b"]):
        with pytest.raises(KeyRefused) as caught:
            parse_key(values)
        assert caught.value.status == 400


class Counting:
    """An action for the store that counts its runs and returns ``(value, keep)``."""

    def __init__(self, value: str = "outcome", keep: bool = True) -> None:
        self.value = value
        self.keep = keep
        self.runs = 0
        self.release: asyncio.Event | None = None

    async def __call__(self) -> tuple[str, bool]:
        self.runs += 1
        if self.release is not None:
            await self.release.wait()
        return f"{self.value}-{self.runs}", self.keep


async def running_first(store: IdempotencyStore[str], key: str) -> tuple[Counting, asyncio.Future[Any]]:
    """A first request with ``key`` that has started and runs until its action's ``release`` is set."""
    action = Counting()
    action.release = asyncio.Event()
    first = asyncio.ensure_future(store.run("op", key, "fp", action))
    await eventually(lambda: _ran(action), "the first request started")
    return action, first


async def test_the_store_replays_the_first_outcome_per_scope_and_refuses_another_request() -> None:
    store: IdempotencyStore[str] = IdempotencyStore()
    action = Counting()
    assert await store.run("op", "k", "fp", action) == ("outcome-1", False)
    assert await store.run("op", "k", "fp", action) == ("outcome-1", True)
    with pytest.raises(KeyRefused) as caught:
        await store.run("op", "k", "other", action)
    assert caught.value.status == 422
    # Another operator's key of the same name is another key.
    assert await store.run("someone else", "k", "other", action) == ("outcome-2", False)
    assert action.runs == 2


async def test_an_outcome_not_kept_or_an_error_frees_the_key() -> None:
    store: IdempotencyStore[str] = IdempotencyStore()
    assert await store.run("op", "k", "fp", Counting(keep=False)) == ("outcome-1", False)

    async def failing() -> tuple[str, bool]:
        raise OffloadError(502, "no node")

    with pytest.raises(OffloadError, match="no node"):
        await store.run("op", "k", "fp", failing)
    assert len(store) == 0
    # Another request may use the key now: nothing was stored under it.
    assert await store.run("op", "k", "different", Counting()) == ("outcome-1", False)


async def test_the_store_is_bounded_in_count() -> None:
    store: IdempotencyStore[str] = IdempotencyStore(max_keys=3)
    action = Counting()
    for key in ("a", "b", "c", "d"):
        await store.run("op", key, "fp", action)
    assert len(store) == 3 and action.runs == 4
    # "a", the oldest, was forgotten: it runs again; "d" is still answered from the store.
    assert (await store.run("op", "d", "fp", action))[1] is True
    assert await store.run("op", "a", "fp", action) == ("outcome-5", False)


async def test_keys_expire_after_ttl_s() -> None:
    clock = FakeClock()
    store: IdempotencyStore[str] = IdempotencyStore(ttl_s=60, clock=clock)
    action = Counting()
    await store.run("op", "k", "fp", action)
    clock.now += 59
    assert await store.run("op", "k", "fp", action) == ("outcome-1", True)
    clock.now += 2
    assert await store.run("op", "k", "fp", action) == ("outcome-2", False)
    assert len(store) == 1


async def test_a_concurrent_request_with_the_same_key_waits_for_the_first() -> None:
    store: IdempotencyStore[str] = IdempotencyStore()
    action, first = await running_first(store, "k")
    second = asyncio.ensure_future(store.run("op", "k", "fp", action))
    # The second waits: it neither runs the action nor answers before the first ends.
    await asyncio.wait({second}, timeout=0.05)
    assert not first.done() and not second.done() and action.runs == 1
    action.release.set()
    assert await first == ("outcome-1", False)
    assert await second == ("outcome-1", True)
    assert action.runs == 1


async def test_a_request_whose_first_still_runs_after_wait_s_gets_409() -> None:
    store: IdempotencyStore[str] = IdempotencyStore(wait_s=0.05)
    action, first = await running_first(store, "k")
    with pytest.raises(KeyRefused) as caught:
        await store.run("op", "k", "fp", action)
    assert caught.value.status == 409 and caught.value.headers == {"Retry-After": "1"}
    action.release.set()
    assert await first == ("outcome-1", False) and action.runs == 1


async def test_a_store_full_of_running_requests_refuses_new_keys() -> None:
    store: IdempotencyStore[str] = IdempotencyStore(max_keys=1)
    action, first = await running_first(store, "a")
    with pytest.raises(KeyRefused) as caught:
        await store.run("op", "b", "fp", action)
    assert caught.value.status == 503
    action.release.set()
    await first
    # Once it is stored, a new key pushes it out.
    assert await store.run("op", "b", "fp", Counting()) == ("outcome-1", False)


async def test_the_first_caller_going_away_does_not_cancel_the_write() -> None:
    store: IdempotencyStore[str] = IdempotencyStore()
    action, first = await running_first(store, "k")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    action.release.set()
    # The retry waits for the write the first caller left behind, and gets its outcome.
    assert await store.run("op", "k", "fp", action) == ("outcome-1", True)
    assert action.runs == 1


def test_fingerprints_follow_the_request() -> None:
    assert fingerprint("transaction", "Counter", "incrementBy", [2]) == fingerprint(
        "transaction", "Counter", "incrementBy", [2]
    )
    assert fingerprint("transaction", "Counter", "incrementBy", [2]) != fingerprint(
        "transaction", "Counter", "incrementBy", [3]
    )


async def _ran(action: Counting) -> bool:
    return action.runs > 0
