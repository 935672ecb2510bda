"""The contracts plugin end to end: an embedded chain behind three edges, the real gateway, real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from eth_account import Account
from sanic import Request, Sanic, response
from sanic.response import HTTPResponse
from web3 import AsyncHTTPProvider, AsyncWeb3

from offload import ConfigError
from offload.testing import serve_app
from offload_edge.chain.artifacts import load_artifact
from offload_edge.chain.node import DEV_ACCOUNT, DEV_PRIVATE_KEY, demo_contract_addresses

from chain_helpers import deploy, transact
from conftest import OPERATOR_HEADERS, EdgeFactory, Gateway, GatewayFactory, Web3Factory

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"


def contracts_document(servers: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    contracts = [
        {"name": name, "address": address, "artifact": f"offload_edge:chain/artifacts/{name}.json"}
        for name, address in demo_contract_addresses().items()
    ]
    table = {"rpc_path": "/rpc", "servers": servers, "contracts": contracts, **options}
    return {"gateway": {"probe_interval_s": 60}, "plugins": {"contracts": table}}


@pytest.fixture
def signing_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
    return DEV_PRIVATE_KEY


@pytest.fixture
async def chain_gateway(edge: EdgeFactory, gateway: GatewayFactory, signing_key: str) -> Gateway:
    origin = await edge("origin", chain=True)
    near = await edge("near", delay_ms=1, chain_upstream=origin.make_url("/rpc"))
    far = await edge("far", delay_ms=5, chain_upstream=origin.make_url("/rpc"))
    servers = [{"name": name, "url": server.url} for name, server in (("origin", origin), ("near", near), ("far", far))]
    return await gateway(contracts_document(servers, policy="random"))


async def post_json(session: aiohttp.ClientSession, path: str, payload: Any) -> tuple[int, Any]:
    """POST ``payload`` as JSON with ``session`` (a gateway's ``client``, or ``operator`` with the token)."""
    async with session.post(path, json=payload) as reply:
        return reply.status, await reply.json()


@pytest_asyncio.fixture
async def operator_web3() -> AsyncIterator[Callable[[str], AsyncWeb3]]:
    """Factory: an unmodified web3.py async client that sends the operator's token, closed after the test."""
    clients: list[AsyncWeb3] = []

    def connect(rpc_url: str) -> AsyncWeb3:
        headers = {"Content-Type": "application/json", **OPERATOR_HEADERS}
        client = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"headers": headers}))
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.provider.disconnect()


async def test_execcontract_keeps_the_original_interface(chain_gateway: Gateway) -> None:
    status, body, reply = await chain_gateway.get_json(
        "/contracts/execcontract", params={"contractID": "Hello", "operation": "hello", "requestID": "r-1"}
    )
    assert status == 200
    assert body["data"] == "Hello, world!"
    assert body["requestID"] == "r-1"
    assert body["server"] in {"origin", "near", "far"} and reply.headers["X-Offload-Server"] == body["server"]
    status, body, _ = await chain_gateway.get_json(
        "/contracts/execcontract", params={"contractID": "Hello", "operation": "greet", "arg": "bob"}
    )
    assert (status, body["data"]) == (200, "Hello, bob!")
    status, body, _ = await chain_gateway.get_json("/contracts/hello")
    assert (status, body["data"]) == (200, "Hello, world!")


async def test_ping_and_listings(chain_gateway: Gateway) -> None:
    status, body, _ = await chain_gateway.get_json("/contracts/ping", params={"server": "far"})
    assert status == 200 and body["server"] == "far"
    assert body["data"]["block_number"] == 2 and body["data"]["chain_id"] > 0
    assert "EthereumTester" in body["data"]["client_version"]
    status, body, _ = await chain_gateway.get_json("/contracts/listcontractprocess")
    assert status == 200
    listed = {item["name"]: item for item in body["data"]}
    assert listed["Counter"]["address"] == demo_contract_addresses()["Counter"]
    methods = {method["name"]: method for method in listed["Counter"]["methods"]}
    assert methods["incrementBy"] == {
        "name": "incrementBy",
        "inputs": [{"name": "amount", "type": "uint256"}],
        "outputs": [],
        "kind": "transaction",
    }
    assert methods["get"]["kind"] == "view" and "Incremented" in listed["Counter"]["events"]
    status, body, _ = await chain_gateway.get_json("/contracts/listservers")
    assert status == 200 and len(body["data"]) == 3
    assert {server["height"] for server in body["servers"]} == {2}  # probed with eth_blockNumber


async def test_rest_transaction_returns_receipt_and_events(chain_gateway: Gateway) -> None:
    status, body = await post_json(chain_gateway.operator, "/contracts/Counter/incrementBy", {"amount": 3})
    assert status == 200, body
    receipt = body["data"]
    assert receipt["status"] == 1 and receipt["gas_used"] > 21000 and receipt["block_number"] == 3
    assert receipt["tx_hash"].startswith("0x") and len(receipt["tx_hash"]) == 66
    assert receipt["events"] == [{"event": "Incremented", "args": {"by": DEV_ACCOUNT, "value": 3}, "log_index": 0}]
    status, body, _ = await chain_gateway.get_json("/contracts/Counter/get")
    assert (status, body["data"]) == (200, 3)


async def test_hundred_concurrent_increments_raise_the_counter_by_exactly_100(chain_gateway: Gateway) -> None:
    _, before, _ = await chain_gateway.get_json("/contracts/Counter/get")
    replies = await asyncio.gather(
        *(post_json(chain_gateway.operator, "/contracts/Counter/increment", {}) for _ in range(100))
    )
    assert [status for status, _ in replies] == [200] * 100, [body for status, body in replies if status != 200][:2]
    assert len({body["data"]["tx_hash"] for _, body in replies}) == 100
    _, after, _ = await chain_gateway.get_json("/contracts/Counter/get")
    assert after["data"] - before["data"] == 100


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "message"),
    [
        ("POST", "/contracts/Counter/incrementBy", {"amount": "lots"}, 400, "parameter 'amount' must be uint256"),
        ("POST", "/contracts/Counter/incrementBy", {}, 400, "missing parameter 'amount' (uint256)"),
        ("POST", "/contracts/Counter/incrementBy", {"args": [1, 2]}, 400, "takes 1 argument(s), got 2"),
        ("GET", "/contracts/Nope/get", None, 404, "unknown contract 'Nope'; known contracts: Hello, Counter"),
        ("GET", "/contracts/Counter/nope", None, 404, "contract 'Counter' has no method 'nope'"),
        ("GET", "/contracts/Counter/increment", None, 405, "send it as POST /contracts/Counter/increment with"),
        ("POST", "/contracts/Counter/decrement", {}, 422, "reverted: Counter: cannot go below zero"),
        ("POST", "/contracts/Counter/incrementBy", {"amount": 0}, 422, "Counter: amount must be positive"),
        ("GET", "/contracts/execcontract?contractID=Counter", None, 400, "needs contractID and operation"),
        ("GET", "/contracts/ping?server=127.0.0.1:1", None, 400, "not in pool 'contracts'"),
    ],
)
async def test_mistakes_get_clear_errors(
    chain_gateway: Gateway, method: str, path: str, payload: Any, status: int, message: str
) -> None:
    # With the token, so the transactions get as far as their arguments and the chain.
    async with chain_gateway.operator.request(method, path, json=payload) as reply:
        body = await reply.json()
        assert reply.status == status, body
    assert message in body["error"]
    if status == 422:
        assert body["reason"] in body["error"]


async def test_rpc_pass_through_with_allowlist(chain_gateway: Gateway) -> None:
    status, answer = await post_json(
        chain_gateway.client,
        "/contracts/rpc",
        {"jsonrpc": "2.0", "id": "a", "method": "eth_blockNumber", "params": []},
    )
    assert status == 200 and answer == {"jsonrpc": "2.0", "id": "a", "result": "0x2"}
    status, answers = await post_json(
        chain_gateway.client,
        "/contracts/rpc",
        [
            {"jsonrpc": "2.0", "id": 10, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 11, "method": "eth_sendTransaction", "params": [{"from": DEV_ACCOUNT}]},
            {"jsonrpc": "2.0", "id": 12, "method": "admin_peers", "params": []},
            {"jsonrpc": "2.0", "id": 13, "method": "eth_getBalance", "params": [DEV_ACCOUNT, "latest"]},
        ],
    )
    assert status == 200
    assert [answer["id"] for answer in answers] == [10, 11, 12, 13]
    assert answers[0]["result"].startswith("0x") and int(answers[3]["result"], 16) > 0
    for refused in answers[1:3]:
        assert refused["error"]["code"] == -32601 and "not allowed through this gateway" in refused["error"]["message"]
    async with chain_gateway.client.post("/contracts/rpc", data=b"not json") as reply:
        assert reply.status == 400 and (await reply.json())["error"]["code"] == -32700


async def test_deeply_nested_bodies_are_refused_not_fatal(chain_gateway: Gateway) -> None:
    # Parsed naively, this overflows the C stack once web3 has raised the recursion limit.
    deep = b"[" * 300_000 + b"]" * 300_000
    async with chain_gateway.client.post("/contracts/rpc", data=deep) as reply:
        assert reply.status == 400 and (await reply.json())["error"]["code"] == -32700
    # The REST route takes at most 64 KiB: deep, but within that.
    deep_rest = b"[" * 30_000 + b"]" * 30_000
    async with chain_gateway.operator.post(
        "/contracts/Counter/incrementBy", data=deep_rest, headers={"Content-Type": "application/json"}
    ) as reply:
        assert reply.status == 400
    status, answer = await post_json(
        chain_gateway.client, "/contracts/rpc", {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    )
    assert status == 200 and answer["result"].startswith("0x")


async def test_rpc_allow_enables_more_methods(edge: EdgeFactory, gateway: GatewayFactory) -> None:
    origin = await edge("origin", chain=True)
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_mining"}  # not a read the gateway knows
    plain = await gateway(contracts_document([{"name": "origin", "url": origin.url}]))
    status, answer = await post_json(plain.operator, "/contracts/rpc", request)
    assert status == 200 and answer["error"]["code"] == -32601
    gw = await gateway(contracts_document([{"name": "origin", "url": origin.url}], rpc_allow=["eth_mining"]))
    # Only the operator may use what rpc_allow adds beyond the reads.
    status, answer = await post_json(gw.client, "/contracts/rpc", request)
    assert status == 401 and answer["error"]["code"] == -32003 and answer["id"] == 1
    status, answer = await post_json(gw.operator, "/contracts/rpc", request)
    assert (status, answer) == (200, {"jsonrpc": "2.0", "id": 1, "result": False})


async def test_unmodified_web3_client_deploys_and_calls_through_the_gateway(
    chain_gateway: Gateway, operator_web3: Callable[[str], AsyncWeb3]
) -> None:
    w3 = operator_web3(chain_gateway.server.make_url("/contracts/rpc"))
    address = await deploy(w3, "Counter", DEV_PRIVATE_KEY)
    counter = w3.eth.contract(address=address, abi=load_artifact("Counter")["abi"])
    assert await counter.functions.get().call() == 0
    hello = w3.eth.contract(address=demo_contract_addresses()["Hello"], abi=load_artifact("Hello")["abi"])
    assert await hello.functions.greet("web3").call() == "Hello, web3!"


async def test_reads_fail_over_when_a_node_dies(edge: EdgeFactory, gateway: GatewayFactory, signing_key: str) -> None:
    from offload_edge.app import EdgeConfig, create_edge_app

    origin = await edge("origin", chain=True)
    slow = await edge("slow", delay_ms=30, chain_upstream=origin.make_url("/rpc"))
    fast_app = create_edge_app(EdgeConfig(name="fast", chain_upstream=origin.make_url("/rpc")))
    async with serve_app(fast_app) as fast:
        servers = [{"name": "fast", "url": fast.url}, {"name": "slow", "url": slow.url}]
        gw = await gateway(contracts_document(servers, policy="min_latency"))
        assert (await gw.get_json("/contracts/Counter/get"))[1]["server"] == "fast"
    # "fast" is gone, but the engine still ranks it first: the read must fail over, not fail.
    status, body, _ = await gw.get_json("/contracts/Counter/get")
    assert (status, body["server"], body["data"]) == (200, "slow", 0)
    fast_state = gw.app.ctx.registry.pool("contracts").find("fast")
    assert fast_state.breaker.state == "open" and "unreachable" in fast_state.exclusion()


async def test_a_write_whose_answer_is_lost_is_not_sent_twice(
    edge: EdgeFactory, gateway: GatewayFactory, signing_key: str
) -> None:
    origin = await edge("origin", chain=True)
    # Far slower than the lossy node (a few ms even when it opens a connection per call), so
    # min_latency sends the write to the lossy node first however busy the machine is.
    backup = await edge("backup", delay_ms=100, chain_upstream=origin.make_url("/rpc"))
    sent_through_lossy: list[str] = []
    lossy = Sanic("lossy_node")

    @lossy.post("/rpc")
    async def forward_then_fail(request: Request) -> HTTPResponse:
        # The transaction reaches the chain, but its answer never reaches the gateway.
        async with aiohttp.ClientSession() as session, session.post(origin.make_url("/rpc"), data=request.body) as up:
            answer = await up.json()
        if request.json.get("method") == "eth_sendRawTransaction":
            sent_through_lossy.append(answer["result"])
            return response.json({"error": "connection reset"}, status=500)
        return response.json(answer)

    async with serve_app(lossy) as lossy_server:
        servers = [{"name": "lossy", "url": lossy_server.url}, {"name": "backup", "url": backup.url}]
        gw = await gateway(contracts_document(servers, policy="min_latency"))
        status, body = await post_json(gw.operator, "/contracts/Counter/increment", {})
    assert status == 200, body
    assert sent_through_lossy == [body["data"]["tx_hash"]]
    _, counter, _ = await gw.get_json("/contracts/Counter/get")
    assert counter["data"] == 1  # once, not twice


async def test_without_a_key_writes_are_refused_and_reads_work(
    edge: EdgeFactory, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    origin = await edge("origin", chain=True)
    gw = await gateway(contracts_document([{"name": "origin", "url": origin.url}]))
    assert (await gw.get_json("/contracts/Counter/get"))[0] == 200
    status, body = await post_json(gw.operator, "/contracts/Counter/increment", {})
    assert status == 503 and "no signing key is configured" in body["error"]


async def test_the_key_is_never_shown(chain_gateway: Gateway) -> None:
    key_hex = DEV_PRIVATE_KEY.removeprefix("0x")
    for path in ("/servers", "/plugins", "/contracts/listservers", "/contracts/listcontractprocess"):
        async with chain_gateway.client.get(path) as reply:
            assert key_hex not in await reply.text()
    status, body = await post_json(chain_gateway.operator, "/contracts/Counter/decrement", {})
    assert status == 422 and key_hex not in str(body)


async def test_a_lagging_node_is_not_chosen_for_reads(
    edge: EdgeFactory, gateway: GatewayFactory, signing_key: str, web3_client: Web3Factory
) -> None:
    ahead, behind = await edge("ahead", chain=True), await edge("behind", chain=True)
    w3 = web3_client(ahead.make_url("/rpc"))
    counter = w3.eth.contract(address=demo_contract_addresses()["Counter"], abi=load_artifact("Counter")["abi"])
    for _ in range(10):  # ten more blocks on one chain only
        await transact(w3, counter, "increment", DEV_PRIVATE_KEY)
    servers = [{"name": "behind", "url": behind.url}, {"name": "ahead", "url": ahead.url}]
    gw = await gateway(contracts_document(servers, policy="random", max_lag=8))
    chosen = {(await gw.get_json("/contracts/Counter/get"))[1]["server"] for _ in range(12)}
    assert chosen == {"ahead"}
    status, body, _ = await gw.get_json("/servers")
    assert status == 200
    described = {server["name"]: server for server in body["pools"]["contracts"]["servers"]}
    assert (described["ahead"]["height"], described["behind"]["height"]) == (12, 2)


async def test_keystore_signer(
    edge: EdgeFactory, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("OFFLOAD_CONTRACTS_KEYSTORE_PASSWORD", "correct horse")
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(DEV_PRIVATE_KEY, "correct horse")))
    origin = await edge("origin", chain=True)
    gw = await gateway(contracts_document([{"name": "origin", "url": origin.url}], keystore=str(keystore)))
    status, body = await post_json(gw.operator, "/contracts/Counter/increment", {})
    assert status == 200 and body["data"]["events"][0]["args"]["by"] == DEV_ACCOUNT

    monkeypatch.setenv("OFFLOAD_CONTRACTS_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(ConfigError, match="cannot be read or decrypted") as caught:
        await gateway(contracts_document([{"name": "origin", "url": origin.url}], keystore=str(keystore)))
    assert "wrong" not in str(caught.value)
