"""The contracts plugin's read cache end to end: a real gateway, a counting relay, real EVM nodes.

Every test counts what reached the node at a relay between the gateway and the
node (a real HTTP server forwarding to a real chain), so "cached" means "the node
was not asked", and asserts the gateway's own account of it (X-Offload-Cache,
``GET /servers``, ``GET /metrics``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from eth_utils import keccak
from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw
from web3 import AsyncHTTPProvider, AsyncWeb3

from offload import CACHE_HEADER, ConfigError
from offload.pytest_plugin import ServerFactory
from offload_edge.chain.artifacts import load_artifact
from offload_edge.chain.node import DEV_ACCOUNT, demo_contract_addresses

from chain_helpers import deploy, transact
from conftest import EdgeFactory, Gateway, GatewayFactory
from devnode import DevNode, dev_node  # noqa: F401  (dev_node is a fixture)

POOL = "contracts"
DEADLINE_S = 15.0
COUNTER = demo_contract_addresses()["Counter"]
GET = "0x" + keccak(text="get()")[:4].hex()
DECREMENT = "0x" + keccak(text="decrement()")[:4].hex()  # reverts while the counter is 0


class CountingRelay:
    """A JSON-RPC relay that counts every request it forwards, and can hold them until released."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: Counter[str] = Counter()  # by request_id(method, params)
        self.held = 0  # requests waiting at the gate
        self.gate: asyncio.Event | None = None  # None: forward at once
        self.hold = "eth_call"  # what the gate holds (the gateway's probes pass)
        self.session: aiohttp.ClientSession | None = None

    @staticmethod
    def key(method: str, params: Any = None) -> str:
        if method == "eth_call" and isinstance(params, list) and params and isinstance(params[0], dict):
            # The gateway caps every call's gas on the way: count the call as the test wrote it.
            params = [{k: v for k, v in params[0].items() if k != "gas"}, *params[1:]]
        return f"{method} {json.dumps(params, sort_keys=True)}"

    def count(self, method: str, params: Any = None) -> int:
        """How many requests for ``method`` (with ``params``, if given) reached the node."""
        if params is not None:
            return self.seen[self.key(method, params)]
        return sum(count for key, count in self.seen.items() if key.split(" ", 1)[0] == method)

    def app(self) -> Sanic:
        app = Sanic(f"relay_{uuid.uuid4().hex[:8]}")

        async def open_session(app: Sanic) -> None:
            self.session = aiohttp.ClientSession()

        async def close_session(app: Sanic) -> None:
            if self.session is not None:
                await self.session.close()

        async def rpc(request: Request) -> HTTPResponse:
            body = json.loads(request.body)
            for item in body if isinstance(body, list) else [body]:
                self.seen[self.key(item.get("method"), item.get("params"))] += 1
            if self.gate is not None and self.hold in json.dumps(body):
                self.held += 1
                await self.gate.wait()
            assert self.session is not None
            async with self.session.post(self.upstream, data=request.body, headers=JSON) as reply:
                return raw(await reply.read(), status=reply.status, content_type="application/json")

        app.register_listener(open_session, "before_server_start")
        app.register_listener(close_session, "after_server_stop")
        app.add_route(rpc, "/rpc", methods=["POST"])
        return app


JSON = {"Content-Type": "application/json"}
_ids = itertools.count(1)
AUTO = object()  # a fresh id per request


def cache_document(relay_url: str, *, probe_interval_s: float = 60, **options: Any) -> dict[str, Any]:
    contracts = [
        {"name": name, "address": address, "artifact": f"offload_edge:chain/artifacts/{name}.json"}
        for name, address in demo_contract_addresses().items()
    ]
    table = {
        "rpc_path": "/rpc",
        "servers": [{"name": "node", "url": relay_url}],
        "contracts": contracts,
        **options,
    }
    return {"gateway": {"probe_interval_s": probe_interval_s}, "plugins": {POOL: table}}


async def rpc(gw: Gateway, method: str, params: Any = None, request_id: Any = AUTO) -> tuple[Any, str | None]:
    """One JSON-RPC request through the gateway's /rpc: (answer, X-Offload-Cache)."""
    request = {"jsonrpc": "2.0", "id": next(_ids) if request_id is AUTO else request_id, "method": method}
    if params is not None:
        request["params"] = params
    async with gw.client.post("/contracts/rpc", json=request) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json(), reply.headers.get(CACHE_HEADER)


async def node_rpc(url: str, method: str, params: Any = None) -> Any:
    """One JSON-RPC request straight to a node (not through the gateway): its result."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}) as reply,
    ):
        answer = await reply.json()
    assert "error" not in answer, answer
    return answer["result"]


async def until(condition: Callable[[], Awaitable[Any]], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)  # pacing of a poll bounded by the deadline, not synchronisation


async def cache_status(gw: Gateway) -> dict[str, Any]:
    _, body, _ = await gw.get_json("/servers")
    return body["pools"][POOL]["cache"]


async def metric(gw: Gateway, name: str, **labels: str) -> float:
    """The value of the /metrics sample ``name`` with (at least) ``labels`` (0 if there is none)."""
    async with gw.client.get("/metrics") as reply:
        text = await reply.text()
    wanted = {f'{label}="{value}"' for label, value in labels.items()}
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        if sample_name == name and wanted <= set(sample_labels.rstrip("}").split(",")):
            return float(value)
    return 0.0


RelayFactory = Callable[[str], Awaitable[tuple[CountingRelay, str]]]


@pytest.fixture
def relay(offload_server: ServerFactory) -> RelayFactory:
    """Factory: ``relay, url = await relay(upstream_rpc_url)``, a counting relay started on loopback."""

    async def start(upstream: str) -> tuple[CountingRelay, str]:
        counting = CountingRelay(upstream)
        server = await offload_server(counting.app())
        return counting, server.url

    return start


@pytest.fixture
async def chain_url(edge: EdgeFactory) -> str:
    """The JSON-RPC URL of a real edge node hosting the embedded EVM chain."""
    origin = await edge("origin", chain=True)
    return origin.make_url("/rpc")


async def mine(chain_url: str, blocks: int) -> int:
    """Mine ``blocks`` blocks on the embedded chain (one transfer each); the new head."""
    for _ in range(blocks):
        await node_rpc(chain_url, "eth_sendTransaction", [{"from": DEV_ACCOUNT, "to": DEV_ACCOUNT, "value": "0x1"}])
    return int(await node_rpc(chain_url, "eth_blockNumber"), 16)


# -- hits, misses and what the gateway says of them ------------------------------------------------


async def test_chain_id_is_kept_answered_under_each_callers_id_and_counted(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory
) -> None:
    counting, relay_url = await relay(chain_url)
    gw = await gateway(cache_document(relay_url))
    first, outcome = await rpc(gw, "eth_chainId", [], request_id=7)
    assert outcome == "miss" and first["id"] == 7 and int(first["result"], 16) > 0
    for request_id in ("abc", 8, None):
        answer, outcome = await rpc(gw, "eth_chainId", [], request_id=request_id)
        assert outcome == "hit"
        assert answer == {"jsonrpc": "2.0", "id": request_id, "result": first["result"]}
    assert counting.count("eth_chainId") == 1
    status = await cache_status(gw)
    assert (status["hit"], status["miss"], status["entries"]) == (3, 1, 1)
    assert await metric(gw, "offload_cache_answers_total", pool=POOL, outcome="hit") == 3
    assert await metric(gw, "offload_cache_answers_total", pool=POOL, outcome="miss") == 1


async def test_hundred_concurrent_identical_calls_are_one_node_call(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory
) -> None:
    counting, relay_url = await relay(chain_url)
    gw = await gateway(cache_document(relay_url, probe_interval_s=0.1, cache_confirmations=0))
    await until(lambda: _kept(gw, "eth_getBlockByNumber", ["0x2", False]), "the head block to be final")
    call = [{"to": COUNTER, "data": GET}, "0x2"]
    answers = await _concurrently(gw, counting, call, 100)
    assert counting.count("eth_call", call) == 1 and counting.held == 1
    outcomes = Counter(outcome for _, outcome in answers)
    # Callers that arrived while the call was out waited for it; any after it found it kept.
    assert outcomes["miss"] == 1 and outcomes["coalesced"] + outcomes["hit"] == 99 and outcomes["coalesced"] > 0
    assert [answer["id"] for answer, _ in answers] == list(range(100))
    assert {answer["result"] for answer, _ in answers} == {"0x" + "0" * 64}
    status = await cache_status(gw)
    assert status["coalesced"] == outcomes["coalesced"] and status["hit"] >= outcomes["hit"] + 1


async def _post(client: aiohttp.ClientSession, request: dict[str, Any]) -> tuple[Any, str | None]:
    async with client.post("/contracts/rpc", json=request) as reply:
        assert reply.status == 200
        return await reply.json(), reply.headers.get(CACHE_HEADER)


async def _true(value: bool) -> bool:
    return value


async def test_identical_reads_that_are_never_kept_share_one_node_call(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory
) -> None:
    counting, relay_url = await relay(chain_url)
    gw = await gateway(cache_document(relay_url))
    call = [{"to": COUNTER, "data": GET}, "latest"]  # never kept: only coalescing spares the node
    answers = await _concurrently(gw, counting, call, 10)
    assert counting.count("eth_call", call) == 1
    assert sorted(outcome for _, outcome in answers) == ["coalesced"] * 9 + ["miss"]
    assert [answer["id"] for answer, _ in answers] == list(range(10))
    status = await cache_status(gw)
    assert (status["coalesced"], status["miss"], status["entries"], status["in_flight"]) == (9, 1, 0, 0)
    assert (await rpc(gw, "eth_call", call))[1] == "miss"  # and nothing of it was kept
    assert counting.count("eth_call", call) == 2


async def _concurrently(gw: Gateway, counting: CountingRelay, call: Any, callers: int) -> list[tuple[Any, Any]]:
    """``callers`` identical eth_calls at once; the node holds the first until every caller has sent its own."""
    counting.gate = asyncio.Event()
    sent = 0

    async def body_sent(*_: Any) -> None:
        nonlocal sent
        sent += 1

    tracing = aiohttp.TraceConfig()
    tracing.on_request_chunk_sent.append(body_sent)
    async with aiohttp.ClientSession(base_url=gw.server.url, trace_configs=[tracing]) as client:
        requests = [{"jsonrpc": "2.0", "id": index, "method": "eth_call", "params": call} for index in range(callers)]
        calls = [asyncio.ensure_future(_post(client, request)) for request in requests]
        await until(lambda: _true(counting.held > 0 and sent >= callers), "every call sent and the first at the node")
        counting.gate.set()
        answers = await asyncio.gather(*calls)
    counting.gate = None
    return answers


async def test_final_blocks_are_kept_and_blocks_above_the_finalized_height_never(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory
) -> None:
    counting, relay_url = await relay(chain_url)
    gw = await gateway(cache_document(relay_url, probe_interval_s=0.1, cache_confirmations=3))
    head = await mine(chain_url, 5)  # the demo contracts are blocks 1 and 2
    final = head - 3
    final_block = [hex(final), False]
    await until(lambda: _kept(gw, "eth_getBlockByNumber", final_block), "the final block to be kept")
    asked = counting.count("eth_getBlockByNumber", final_block)
    assert [(await rpc(gw, "eth_getBlockByNumber", final_block))[1] for _ in range(3)] == ["hit"] * 3
    assert counting.count("eth_getBlockByNumber", final_block) == asked
    # A call at an explicit final block is kept; the same call one block above the finalized height never.
    for block, outcomes in ((final, ["miss", "hit", "hit"]), (final + 1, ["miss"] * 3), (head, ["miss"] * 3)):
        call = [{"to": COUNTER, "data": GET}, hex(block)]
        seen = [(await rpc(gw, "eth_call", call))[1] for _ in range(3)]
        assert seen == outcomes, block
        assert counting.count("eth_call", call) == outcomes.count("miss")
    # A block above the finalized height, by number: every read goes to the node.
    above = [hex(head), False]
    assert [(await rpc(gw, "eth_getBlockByNumber", above))[1] for _ in range(3)] == ["miss"] * 3
    assert counting.count("eth_getBlockByNumber", above) == 3


async def test_errors_and_nulls_are_never_kept(chain_url: str, relay: RelayFactory, gateway: GatewayFactory) -> None:
    counting, relay_url = await relay(chain_url)
    gw = await gateway(cache_document(relay_url, probe_interval_s=0.1, cache_confirmations=0))
    await until(lambda: _kept(gw, "eth_getBlockByNumber", ["0x0", False]), "genesis to be kept")
    reverting = [{"to": COUNTER, "data": DECREMENT}, "0x2"]  # final, but the call reverts
    missing = ["0x" + "12" * 32]  # a transaction nobody has: null
    for method, params in (("eth_call", reverting), ("eth_getTransactionByHash", missing)):
        for _ in range(2):
            answer, outcome = await rpc(gw, method, params)
            assert outcome == "miss"
            assert "error" in answer if method == "eth_call" else answer["result"] is None
        assert counting.count(method, params) == 2


async def _kept(gw: Gateway, method: str, params: Any) -> bool:
    _, outcome = await rpc(gw, method, params)
    return outcome == "hit"


async def test_latest_is_kept_only_with_its_ttl(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting, relay_url = await relay(chain_url)
    call = [{"to": COUNTER, "data": GET}, "latest"]
    plain = await gateway(cache_document(relay_url))
    assert [(await rpc(plain, "eth_call", call))[1] for _ in range(2)] == ["miss", "miss"]
    assert counting.count("eth_call") == 2
    # The REST views read through the same cache, and say so.
    for _ in range(2):
        _, body, reply = await plain.get_json("/contracts/Counter/get")
        assert body["data"] == 0 and reply.headers[CACHE_HEADER] == "miss"
    assert counting.count("eth_call") == 4

    with_ttl = await gateway(cache_document(relay_url, cache_latest_ttl_s=0.5))
    assert [(await rpc(with_ttl, "eth_call", call))[1] for _ in range(2)] == ["miss", "hit"]
    assert counting.count("eth_call") == 5
    # The view's eth_call is the same read as the caller's above (same params, gas capped alike): one entry.
    views = [(await with_ttl.get_json("/contracts/Counter/get"))[1:] for _ in range(2)]
    assert [(body["data"], reply.headers[CACHE_HEADER]) for body, reply in views] == [(0, "hit"), (0, "hit")]
    assert counting.count("eth_call") == 5
    # Kept no longer than the TTL: the node is asked again once it has passed.
    started = time.monotonic()
    await until(lambda: _not_kept(with_ttl, "eth_call", call), "the latest answer to expire", deadline_s=5)
    assert time.monotonic() - started >= 0.2


async def _not_kept(gw: Gateway, method: str, params: Any) -> bool:
    _, outcome = await rpc(gw, method, params)
    return outcome == "miss"


async def test_a_batch_answers_kept_reads_and_forwards_the_rest(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory
) -> None:
    counting, relay_url = await relay(chain_url)
    gw = await gateway(cache_document(relay_url))
    chain_id, _ = await rpc(gw, "eth_chainId", [])
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "net_version", "params": []},
    ]
    async with gw.client.post("/contracts/rpc", json=batch) as reply:
        answers, outcome = await reply.json(), reply.headers.get(CACHE_HEADER)
    assert outcome == "partial"
    assert [answer["id"] for answer in answers] == ["a", 2, 3]
    assert answers[0]["result"] == chain_id["result"] and int(answers[1]["result"], 16) == 2
    assert counting.count("eth_chainId") == 1 and counting.count("net_version") == 1
    # net_version was kept from the batch's answer: now the cache answers both.
    async with gw.client.post("/contracts/rpc", json=[batch[0], batch[2]]) as reply:
        answers, outcome = await reply.json(), reply.headers.get(CACHE_HEADER)
    assert outcome == "hit" and [answer["id"] for answer in answers] == ["a", 3]
    assert counting.count("net_version") == 1


async def test_with_cache_and_coalescing_off_every_read_goes_to_the_node(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory
) -> None:
    counting, relay_url = await relay(chain_url)
    gw = await gateway(cache_document(relay_url, cache=False, coalesce=False))
    for _ in range(2):
        answer, outcome = await rpc(gw, "eth_chainId", [])
        assert outcome is None and int(answer["result"], 16) > 0
    assert counting.count("eth_chainId") == 2


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("cache", "yes", "cache must be true or false"),
        ("coalesce", 1, "coalesce must be true or false"),
        ("cache_confirmations", -1, "cache_confirmations must be an integer from 0 to"),
        ("cache_confirmations", 2.5, "cache_confirmations must be an integer from 0 to"),
        ("cache_latest_ttl_s", -1, "cache_latest_ttl_s must be a number at least 0"),
        ("cache_latest_ttl_s", "1s", "cache_latest_ttl_s must be a number at least 0"),
    ],
)
async def test_bad_cache_settings_stop_startup_with_one_line(
    gateway: GatewayFactory, option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await gateway(cache_document("http://127.0.0.1:9", **{option: value}))
    assert str(caught.value).startswith(f"[plugins.contracts] {message}") and "\n" not in str(caught.value)


async def test_a_read_kept_by_one_replica_is_a_hit_on_another_sharing_redis(
    chain_url: str, relay: RelayFactory, gateway: GatewayFactory, redis_server: Any
) -> None:
    counting, relay_url = await relay(chain_url)
    document = cache_document(relay_url, probe_interval_s=0.1, cache_confirmations=0)
    document["gateway"]["state"] = redis_server.url  # a real redis-server on loopback
    first = await gateway(document)
    second = await gateway(document)
    for gw in (first, second):  # each follows the head with its own probes
        await until(lambda gw=gw: _kept(gw, "eth_getBlockByNumber", ["0x2", False]), "block 2 to be final")
    call = [{"to": COUNTER, "data": GET}, "0x2"]
    answer, outcome = await rpc(first, "eth_call", call)
    assert outcome == "miss" and int(answer["result"], 16) == 0
    shared_answer, shared_outcome = await rpc(second, "eth_call", call)
    assert shared_outcome == "hit" and shared_answer["result"] == answer["result"]
    assert counting.count("eth_call", call) == 1
    first_status, second_status = await cache_status(first), await cache_status(second)
    assert first_status["shared"] is True and second_status["shared"] is True
    assert second_status["shared_errors"] == 0


# -- reorgs (a hardhat dev node, which can revert to a snapshot and mine another history) -----------


async def test_no_stale_answer_across_a_reorg(
    dev_node: DevNode,  # noqa: F811
    relay: RelayFactory,
    gateway: GatewayFactory,
) -> None:
    w3 = AsyncWeb3(AsyncHTTPProvider(dev_node.url))
    try:
        await _reorg_scenario(dev_node, w3, relay, gateway)
    finally:
        await w3.provider.disconnect()


async def _reorg_scenario(dev_node: DevNode, w3: AsyncWeb3, relay: RelayFactory, gateway: GatewayFactory) -> None:  # noqa: F811
    key = dev_node.private_keys[0]
    address = await deploy(w3, "Counter", key)
    counter = w3.eth.contract(address=address, abi=load_artifact("Counter")["abi"])
    _, relay_url = await relay(dev_node.url)
    document = cache_document(relay_url, probe_interval_s=0.1, cache_confirmations=2)
    document["plugins"][POOL].update(contracts=[], rpc_path="/rpc")
    gw = await gateway(document)

    snapshot = await w3.provider.make_request("evm_snapshot", [])  # type: ignore[arg-type]
    changed = (await transact(w3, counter, "incrementBy", key, 1))["blockNumber"]
    for _ in range(4):
        await w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    head = changed + 4
    call = [{"to": address, "data": GET}, hex(changed)]

    async def call_kept() -> bool:
        answer, outcome = await rpc(gw, "eth_call", call)
        assert int(answer["result"], 16) == 1
        return outcome == "hit"

    await until(call_kept, "the call at a final block to be kept")
    old_block, _ = await rpc(gw, "eth_getBlockByNumber", [hex(changed), False])
    above = [hex(head - 1), False]  # above the finalized height (head - 2)
    assert (await rpc(gw, "eth_getBlockByNumber", above))[1] == "miss"
    assert (await rpc(gw, "eth_getBlockByNumber", above))[1] == "miss"

    # Another history from the snapshot on: the same heights, other blocks, another counter value.
    assert (await w3.provider.make_request("evm_revert", [snapshot["result"]]))["result"] is True  # type: ignore[arg-type]
    assert (await transact(w3, counter, "incrementBy", key, 5))["blockNumber"] == changed
    for _ in range(6):
        await w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    new_above = await node_rpc(dev_node.url, "eth_getBlockByNumber", above)
    # Never kept, so never stale: the block above the finalized height is the new one at once.
    answer, outcome = await rpc(gw, "eth_getBlockByNumber", above)
    assert outcome == "miss" and answer["result"]["hash"] == new_above["hash"]

    async def new_value() -> bool:
        answer, _ = await rpc(gw, "eth_call", call)
        return int(answer["result"], 16) == 5

    await until(new_value, "the watcher to detect the reorg and drop the old answer")
    status = await cache_status(gw)
    assert status["invalidations"] >= 1
    assert await metric(gw, "offload_plugin_events_total", plugin=POOL, event="reorg", outcome="detected") >= 1
    block, _ = await rpc(gw, "eth_getBlockByNumber", [hex(changed), False])
    assert block["result"]["hash"] != old_block["result"]["hash"]
    assert (
        block["result"]["hash"] == (await node_rpc(dev_node.url, "eth_getBlockByNumber", [hex(changed), False]))["hash"]
    )
    # From now on only the new history is served, from the node or from the cache.
    for _ in range(3):
        answer, _ = await rpc(gw, "eth_call", call)
        assert int(answer["result"], 16) == 5
