"""The contracts part of ``offload demo``: one embedded EVM chain behind every edge.

The device's edge runs the chain (``offload-edge --chain``); the remote edges
relay to it under their own simulated delays (``--chain-upstream``), so every
node of the pool serves the same state: a write through one is visible
through all. The gateway signs with the chain's first dev account.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from typing import Any

import aiohttp

# eth-tester's first dev account (private key 1): public knowledge, for the demo chain only.
DEMO_PRIVATE_KEY = "0x" + "00" * 31 + "01"
KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"
CONCURRENT_INCREMENTS = 20


def contracts_available() -> bool:
    """Whether the contracts plugin is installed (the demo runs without it, math only)."""
    return importlib.util.find_spec("offload_contracts") is not None


def chain_args(is_chain_node: bool, chain_url: str) -> list[str]:
    """offload-edge flags: the chain itself, or a relay to it."""
    return ["--chain"] if is_chain_node else ["--chain-upstream", chain_url]


async def deployed_contracts(edge_url: str) -> dict[str, str]:
    """Addresses of the demo contracts, as the chain's edge reports them."""
    async with aiohttp.ClientSession() as session, session.get(f"{edge_url}/chain/contracts") as response:
        response.raise_for_status()
        payload = await response.json()
    return dict(payload["data"])


def contracts_config(edges: dict[str, str], addresses: dict[str, str]) -> str:
    """The ``[plugins.contracts]`` table of the demo's plugins.toml."""
    servers = ", ".join(f'{{ name = "{name}", url = "{url}" }}' for name, url in edges.items())
    contracts = ",\n".join(
        f'  {{ name = "{name}", address = "{address}", artifact = "offload_edge:chain/artifacts/{name}.json" }}'
        for name, address in addresses.items()
    )
    return (
        "\n[plugins.contracts]\n"
        'rpc_path = "/rpc"\n'
        'policy = "p2c_ewma"\n'
        f"servers = [{servers}]\n"
        f"contracts = [\n{contracts},\n]\n"
    )


async def run_contract_calls(gateway_url: str, token: str) -> tuple[list[str], bool]:
    """A few calls through the gateway, writes with the operator's ``token``; returns report lines and success."""
    base = f"{gateway_url}/contracts"
    lines = ["", "contracts through the gateway (embedded EVM chain, every edge serving it):"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def get(path: str) -> tuple[int, dict[str, Any]]:
            async with session.get(base + path) as response:
                return response.status, await response.json()

        status, ping = await get("/ping")
        ok = status == 200
        if ok:
            data = ping["data"]
            lines.append(
                f"  ping                      chain {data['chain_id']}, block {data['block_number']}, "
                f"{data['client_version']}  (via {ping['server']})"
            )
        status, hello = await get("/execcontract?contractID=Hello&operation=hello&requestID=demo-1")
        ok = ok and status == 200
        lines.append(f"  Hello.hello()             {hello.get('data')!r}  (via {hello.get('server')})")
        status, greet = await get("/Hello/greet?name=edge")
        ok = ok and status == 200
        lines.append(f"  Hello.greet('edge')       {greet.get('data')!r}  (via {greet.get('server')})")

        async def write(path: str) -> tuple[int, dict[str, Any]]:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(base + path, json={}, headers=headers) as response:
                return response.status, await response.json()

        _, before = await get("/Counter/get")
        started = time.perf_counter()
        results = await asyncio.gather(*(write("/Counter/increment") for _ in range(CONCURRENT_INCREMENTS)))
        elapsed = time.perf_counter() - started
        _, after = await get("/Counter/get")
        sent = sum(1 for status, body in results if status == 200 and body["data"]["status"] == 1)
        delta = int(after["data"]) - int(before["data"])
        ok = ok and sent == CONCURRENT_INCREMENTS and delta == CONCURRENT_INCREMENTS
        lines.append(
            f"  Counter.increment() x{CONCURRENT_INCREMENTS}  concurrent: {sent} mined in {elapsed:.2f} s, "
            f"get() {before['data']} -> {after['data']} (+{delta})"
        )
    return lines, ok
