"""The contracts plugin is safe to expose: writes need the operator's token, callers' requests are bounded.

Every test runs a real gateway in front of a real edge with the embedded EVM chain.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from eth_utils import keccak

from offload import ConfigError
from offload_edge.chain.node import DEV_ACCOUNT, DEV_PRIVATE_KEY, demo_contract_addresses

from conftest import EdgeFactory, Gateway, GatewayFactory

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"
RPC = "/contracts/rpc"
# Init code that returns the gas it was given (GAS PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN): eth_call
# without "to" runs it, so the answer is the gas the node actually ran the call with.
GAS_PROBE = "0x5a60005260206000f3"
# Init code that loops until it runs out of gas (JUMPDEST PUSH1 0 JUMP).
GAS_LOOP = "0x5b600056"


def contracts_document(server_url: str, **options: Any) -> dict[str, Any]:
    contracts = [
        {"name": name, "address": address, "artifact": f"offload_edge:chain/artifacts/{name}.json"}
        for name, address in demo_contract_addresses().items()
    ]
    table = {"rpc_path": "/rpc", "servers": [{"name": "origin", "url": server_url}], "contracts": contracts}
    return {"gateway": {"probe_interval_s": 60}, "plugins": {"contracts": {**table, **options}}}


@pytest.fixture
async def chain_url(edge: EdgeFactory) -> str:
    """A real edge serving the embedded chain."""
    return (await edge("origin", chain=True)).url


@pytest.fixture
async def signing_gateway(chain_url: str, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """A gateway that can sign transactions (the dev chain's funded key)."""
    monkeypatch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
    return await gateway(contracts_document(chain_url))


@pytest.fixture
async def relay_gateway(chain_url: str, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """A gateway without a signing key: /rpc relays transactions callers signed themselves."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    return await gateway(contracts_document(chain_url))


def strict_json(text: str) -> Any:
    """Parse ``text`` as JSON proper: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


async def counter(gw: Gateway) -> int:
    """Counter.get() through the gateway, without the token (a view)."""
    status, body, _ = await gw.get_json("/contracts/Counter/get")
    assert status == 200, body
    return int(body["data"])


async def rpc(session: aiohttp.ClientSession, payload: Any, **kwargs: Any) -> tuple[int, Any]:
    """POST ``payload`` to /rpc; (status, strictly parsed body or None when there is none)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    async with session.post(RPC, data=body, headers=headers, **kwargs) as reply:
        text = await reply.text()
        return reply.status, strict_json(text) if text else None


async def rpc_result(gw: Gateway, method: str, params: list[Any]) -> Any:
    status, answer = await rpc(gw.client, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    assert status == 200 and "result" in answer, answer
    return answer["result"]


async def signed_increment(gw: Gateway) -> str:
    """A raw Counter.increment() transaction signed by the dev account with its next nonce."""
    transaction = {
        "to": demo_contract_addresses()["Counter"],
        "data": "0x" + keccak(text="increment()")[:4].hex(),
        "nonce": int(await rpc_result(gw, "eth_getTransactionCount", [DEV_ACCOUNT, "pending"]), 16),
        "gas": 100_000,
        "gasPrice": int(await rpc_result(gw, "eth_gasPrice", []), 16),
        "chainId": int(await rpc_result(gw, "eth_chainId", []), 16),
    }
    return "0x" + Account.sign_transaction(transaction, DEV_PRIVATE_KEY).raw_transaction.hex()


def send_raw(raw: str, request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "eth_sendRawTransaction", "params": [raw]}


# -- who may write ------------------------------------------------------------------------------


async def test_rest_writes_need_the_token(signing_gateway: Gateway) -> None:
    gw = signing_gateway
    before = await counter(gw)
    path = "/contracts/Counter/increment"
    async with gw.client.post(path, json={}) as reply:
        assert reply.status == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in (await reply.json())["error"]
    async with gw.client.post(path, json={}, headers={"Authorization": "Bearer not-the-token-at-all"}) as reply:
        assert reply.status == 401
    # What a web page can send without a preflight: refused even with the token.
    async with gw.operator.post(path, data="{}", headers={"Content-Type": "text/plain"}) as reply:
        assert reply.status == 415
    async with gw.operator.post(path, data={"a": "1"}) as reply:
        assert reply.status == 415
    # A cross-site page's request, token or not.
    async with gw.operator.post(path, json={}, headers={"Origin": "http://evil.example"}) as reply:
        assert reply.status == 403
    async with gw.operator.post(path, json={}, headers={"Sec-Fetch-Site": "cross-site"}) as reply:
        assert reply.status == 403
    assert await counter(gw) == before
    # Views stay open to every local caller, in both forms.
    async with gw.client.post("/contracts/Hello/greet", json={"name": "you"}) as reply:
        assert (reply.status, (await reply.json())["data"]) == (200, "Hello, you!")
    async with gw.operator.post(path, json={}) as reply:
        assert reply.status == 200, await reply.text()
    assert await counter(gw) == before + 1


async def test_rpc_writes_need_the_token(relay_gateway: Gateway) -> None:
    gw = relay_gateway
    before = await counter(gw)
    raw = await signed_increment(gw)
    status, answer = await rpc(gw.client, send_raw(raw, "w1"))
    assert status == 401 and answer["id"] == "w1" and answer["error"]["code"] == -32003
    # Hidden in a batch among reads: the whole batch is refused, nothing is forwarded.
    read = {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []}
    status, answer = await rpc(gw.client, [read, send_raw(raw, 3)])
    assert status == 401 and answer["id"] is None and answer["error"]["code"] == -32003
    status, answer = await rpc(gw.operator, send_raw(raw), headers={"Content-Type": "text/plain"})
    assert status == 415
    status, answer = await rpc(gw.operator, send_raw(raw), headers={"Origin": "http://evil.example"})
    assert status == 403
    assert await counter(gw) == before
    status, answer = await rpc(gw.operator, send_raw(raw, "w2"))
    assert (status, answer["id"]) == (200, "w2")
    assert answer["result"] == "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    assert await counter(gw) == before + 1
    # Reads need nothing.
    status, answer = await rpc(gw.client, read)
    assert status == 200 and answer["result"].startswith("0x")


async def test_writes_are_refused_when_no_token_is_configured(
    chain_url: str, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OFFLOAD_API_TOKEN", raising=False)
    monkeypatch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
    gw = await gateway(contracts_document(chain_url), api_token=None)
    before = await counter(gw)
    async with gw.operator.post("/contracts/Counter/increment", json={}) as reply:
        assert reply.status == 403 and "OFFLOAD_API_TOKEN" in (await reply.json())["error"]
    status, answer = await rpc(gw.operator, send_raw(await signed_increment(gw)))
    assert status == 403 and answer["error"]["code"] == -32003
    assert await counter(gw) == before
    status, body, _ = await gw.get_json(
        "/contracts/execcontract", params={"contractID": "Hello", "operation": "greet", "arg": "x"}
    )
    assert (status, body["data"]) == (200, "Hello, x!")


async def test_get_execcontract_of_a_transaction_is_refused(signing_gateway: Gateway) -> None:
    gw = signing_gateway
    before = await counter(gw)
    params = {"contractID": "Counter", "operation": "increment"}
    for session in (gw.client, gw.operator):  # the token does not make a GET write
        async with session.get("/contracts/execcontract", params=params) as reply:
            body = await reply.json()
            assert reply.status == 405, body
        assert "POST /contracts/Counter/increment with a JSON body" in body["error"]
        assert "Authorization: Bearer" in body["error"]
    async with gw.operator.get("/contracts/Counter/increment") as reply:
        assert reply.status == 405
    assert await counter(gw) == before
    status, body, _ = await gw.get_json("/contracts/execcontract", params={"contractID": "Hello", "operation": "hello"})
    assert (status, body["data"]) == (200, "Hello, world!")


async def test_allow_get_transactions_still_needs_the_token(
    chain_url: str, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
    gw = await gateway(contracts_document(chain_url, allow_get_transactions=True))
    before = await counter(gw)
    params = {"contractID": "Counter", "operation": "increment", "requestID": "r-7"}
    async with gw.client.get("/contracts/execcontract", params=params) as reply:
        assert reply.status == 401
    assert await counter(gw) == before
    async with gw.operator.get("/contracts/execcontract", params=params) as reply:
        body = await reply.json()
        assert reply.status == 200, body
    assert body["requestID"] == "r-7" and body["data"]["status"] == 1
    assert await counter(gw) == before + 1


# -- limits -------------------------------------------------------------------------------------


async def test_batches_are_bounded(chain_url: str, gateway: GatewayFactory) -> None:
    gw = await gateway(contracts_document(chain_url, max_batch=5))
    read = {"jsonrpc": "2.0", "method": "eth_chainId", "params": []}
    status, answers = await rpc(gw.client, [{**read, "id": index} for index in range(5)])
    assert status == 200 and [answer["id"] for answer in answers] == list(range(5))
    status, answer = await rpc(gw.client, [{**read, "id": index} for index in range(6)])
    assert status == 400
    assert answer == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "invalid request: batch of 6 requests, more than max_batch (5)"},
    }


async def test_the_original_huge_batch_gets_a_small_answer(relay_gateway: Gateway) -> None:
    # Just under the 1 MiB body limit: half a million tiny elements, one short answer.
    elements = (1024 * 1024 - 2) // 2
    body = b"[" + b",".join([b"1"] * elements) + b"]"
    async with relay_gateway.client.post(RPC, data=body, headers={"Content-Type": "application/json"}) as reply:
        text = await reply.text()
        assert reply.status == 400
    assert len(text) < 200 and f"batch of {elements} requests" in strict_json(text)["error"]["message"]
    # Over the limit: refused before the body is read.
    async with relay_gateway.client.post(RPC, data=b"[" + b"1," * 3_000_000 + b"1]") as reply:
        assert reply.status == 413


async def test_argument_size_is_bounded(chain_url: str, gateway: GatewayFactory) -> None:
    gw = await gateway(contracts_document(chain_url))
    # A 1 MB argument: larger than the REST route's body limit, refused before it is read.
    async with gw.client.post("/contracts/Hello/greet", json={"name": "x" * 1_000_000}) as reply:
        assert reply.status == 413
    # Within the body limit but over max_arg_bytes (32 KiB): 413 naming the parameter.
    async with gw.client.post("/contracts/Hello/greet", json={"name": "x" * 40_000}) as reply:
        body = await reply.json()
        assert reply.status == 413, body
    assert "parameter 'name' (string) is larger than this gateway accepts (32768 bytes" in body["error"]
    async with gw.client.post("/contracts/Hello/greet", json={"name": "x" * 32_768}) as reply:
        assert reply.status == 200 and len((await reply.json())["data"]) == 32_768 + len("Hello, !")
    small = await gateway(contracts_document(chain_url, max_arg_bytes=10))
    status, body, _ = await small.get_json(
        "/contracts/execcontract", params={"contractID": "Hello", "operation": "greet", "arg": "x" * 11}
    )
    assert status == 413 and "parameter 'name'" in body["error"]


async def test_a_transaction_needing_more_gas_than_the_cap_is_a_caller_error(
    chain_url: str, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, DEV_PRIVATE_KEY)
    gw = await gateway(contracts_document(chain_url, call_gas_cap=1_000_000))
    # 2000 bytes of storage is about 1.5 million gas: more than any estimate may use here.
    async with gw.operator.post("/contracts/Hello/setGreeting", json={"newGreeting": "x" * 2000}) as reply:
        body = await reply.json()
        assert reply.status == 422, body
    assert "needs more gas than the node allows" in body["error"] and "(1000000)" in body["reason"]
    status, body, _ = await gw.get_json("/contracts/hello")
    assert (status, body["data"]) == (200, "Hello, world!")  # nothing was sent
    async with gw.operator.post("/contracts/Hello/setGreeting", json={"newGreeting": "short"}) as reply:
        assert reply.status == 200, await reply.text()
    status, body, _ = await gw.get_json("/contracts/hello")
    assert (status, body["data"]) == (200, "short")


async def test_call_gas_is_capped(chain_url: str, gateway: GatewayFactory) -> None:
    gw = await gateway(contracts_document(chain_url, call_gas_cap=1_000_000))
    for gas in ({"gas": hex(10**12)}, {"gas": 10**12}, {}):
        call = {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"data": GAS_PROBE, **gas}, "latest"]}
        status, answer = await rpc(gw.client, call)
        assert status == 200 and "result" in answer, answer
        # What is left after the creation's intrinsic cost: the node ran the call with 1,000,000 gas.
        assert 900_000 < int(answer["result"], 16) <= 1_000_000
    # A call looping until out of gas ends quickly with the node's out-of-gas error.
    loop = {"jsonrpc": "2.0", "id": 2, "method": "eth_call", "params": [{"data": GAS_LOOP, "gas": hex(10**12)}]}
    status, answer = await rpc(gw.client, loop)
    assert status == 200 and "out of gas" in answer["error"]["message"].lower()
    # The plugin's own views run under the same cap.
    assert await counter(gw) == 0


async def test_calls_are_stopped_at_call_timeout_s(chain_url: str, gateway: GatewayFactory) -> None:
    gw = await gateway(contracts_document(chain_url, call_timeout_s=0.2))
    loop = {"jsonrpc": "2.0", "id": 3, "method": "eth_call", "params": [{"data": GAS_LOOP}, "latest"]}
    status, answer = await rpc(gw.client, loop)
    assert status == 504 and answer["id"] == 3 and answer["error"]["code"] == -32603
    # The edge's own limit stops the call: the chain answers again (to a gateway that waits for it).
    patient = await gateway(contracts_document(chain_url))
    assert await counter(patient) == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_batch", 0, "max_batch must be an integer from 1 to"),
        ("max_arg_bytes", "32k", "max_arg_bytes must be an integer from 1 to"),
        ("rpc_max_body_bytes", True, "rpc_max_body_bytes must be an integer"),
        ("rest_max_body_bytes", -1, "rest_max_body_bytes must be an integer"),
        ("call_gas_cap", 100, "call_gas_cap must be an integer from 21000"),
        ("call_timeout_s", 0, "call_timeout_s must be a number more than 0"),
        ("allow_get_transactions", "yes", "allow_get_transactions must be true or false"),
    ],
)
async def test_bad_limits_stop_startup_with_one_line(
    gateway: GatewayFactory, option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await gateway(contracts_document("http://127.0.0.1:9", **{option: value}))
    assert str(caught.value).startswith(f"[plugins.contracts] {message}") and "\n" not in str(caught.value)


# -- JSON-RPC correctness -----------------------------------------------------------------------


@pytest.mark.parametrize("raw_id", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1.5", b"true", b"{}", b"[1]"])
async def test_ids_that_cannot_be_echoed_are_refused(relay_gateway: Gateway, raw_id: bytes) -> None:
    body = b'{"jsonrpc": "2.0", "id": ' + raw_id + b', "method": "eth_blockNumber", "params": []}'
    status, answer = await rpc(relay_gateway.client, body)
    # -32700 once non-finite numbers are refused while parsing; -32600 otherwise.
    assert status == 400 and answer["id"] is None and answer["error"]["code"] in (-32600, -32700)
    status, answers = await rpc(relay_gateway.client, b"[" + body + b"]")
    assert status == 400 or (status == 200 and answers[0]["id"] is None and answers[0]["error"]["code"] == -32600)


async def test_ids_that_can_be_echoed_are(relay_gateway: Gateway) -> None:
    for request_id in ("x" * 256, 2**70, -1, None, ""):
        status, answer = await rpc(
            relay_gateway.client, {"jsonrpc": "2.0", "id": request_id, "method": "eth_chainId", "params": []}
        )
        assert status == 200 and answer["id"] == request_id and "result" in answer
    status, answer = await rpc(
        relay_gateway.client, {"jsonrpc": "2.0", "id": "x" * 257, "method": "eth_chainId", "params": []}
    )
    assert status == 400 and answer["id"] is None and answer["error"]["code"] == -32600


@pytest.mark.parametrize(
    "params", [{}, 1, True, None, [], [1], ["zz"], ["0x123"], ["0x"], ["0x00", "0x00"], [{"raw": "0x00"}]]
)
async def test_send_raw_transaction_params_are_checked(relay_gateway: Gateway, params: Any) -> None:
    request = {"jsonrpc": "2.0", "id": 9, "method": "eth_sendRawTransaction", "params": params}
    status, answer = await rpc(relay_gateway.operator, request)
    assert status == 200 and answer["id"] == 9 and answer["error"]["code"] == -32602
    status, answers = await rpc(relay_gateway.operator, [request])
    assert status == 200 and answers[0]["error"]["code"] == -32602


async def test_notifications_get_no_answer(relay_gateway: Gateway) -> None:
    gw = relay_gateway
    status, answer = await rpc(gw.client, {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []})
    assert (status, answer) == (204, None)
    status, answer = await rpc(gw.client, [{"jsonrpc": "2.0", "method": "eth_chainId", "params": []}] * 2)
    assert (status, answer) == (204, None)
    # Not even a refusal is an answer to a notification; a malformed request still is.
    status, answer = await rpc(gw.client, {"jsonrpc": "2.0", "method": "admin_peers", "params": []})
    assert (status, answer) == (204, None)
    status, answer = await rpc(gw.client, {"jsonrpc": "1.0", "method": "eth_chainId"})
    assert status == 400 and answer["error"]["code"] == -32600
    # A transaction sent as a notification is still a write: the token first, then forwarded.
    before = await counter(gw)
    notification = send_raw(await signed_increment(gw))
    del notification["id"]
    status, _ = await rpc(gw.client, notification)
    assert status == 401
    status, answer = await rpc(gw.operator, notification)
    assert (status, answer) == (204, None)
    assert await counter(gw) == before + 1


async def test_caller_input_never_makes_a_500(relay_gateway: Gateway) -> None:
    bodies: list[Any] = [
        b"",
        b"null",
        b"42",
        b'"text"',
        {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": 5},
        {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": ["not a call object"]},
        {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"gas": "lots"}]},
        {"jsonrpc": "2.0", "id": 1, "method": "eth_estimateGas", "params": [{"gas": -1}]},
        b'{"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [NaN]}',
        {"jsonrpc": "2.0", "id": 1, "method": "x" * 10_000},
        [None, 1, "a", {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"gas": []}]}],
    ]
    for body in bodies:
        for session in (relay_gateway.client, relay_gateway.operator):
            status, answer = await rpc(session, body)
            assert status < 500, (body, answer)
            assert answer is not None and len(json.dumps(answer)) < 2_000, (body, answer)
    for path, payload in [
        ("/contracts/Counter/incrementBy", {"amount": 1e308}),
        ("/contracts/Hello/greet", {"name": ["x"]}),
        ("/contracts/Hello/greet", {"args": "x"}),
        ("/contracts/Hello/greet", {str(index): 1 for index in range(1000)}),
    ]:
        async with relay_gateway.operator.post(path, json=payload) as reply:
            text = await reply.text()
            assert 400 <= reply.status < 500 and len(text) < 2_000, text


async def test_a_deep_utf16_body_that_fooled_a_byte_scan_cannot_crash_the_gateway(relay_gateway: Gateway) -> None:
    # The attack: 80,000 levels behind a string whose UTF-16 bytes hold a lone quote
    # (U+2200 is 00 22), so a depth check reading raw bytes saw no brackets; json.loads then
    # overflowed the C stack (web3 raises the recursion limit) and the process died.
    body = ('["\u2200", ' + "[" * 80_000 + "]" * 80_000 + ', "x"]').encode("utf-16")
    assert len(body) > 300_000
    status, answer = await rpc(relay_gateway.client, body)
    assert status == 400
    assert answer["error"]["code"] == -32700
    status, health, _ = await relay_gateway.get_json("/health")
    assert (status, health["status"]) == (200, "ok")
