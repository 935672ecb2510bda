"""Hooks and routes of the contracts plugin."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from offload import ConfigError, OffloadError, OffloadResult, hookimpl, safe_json
from offload.context import PluginContext
from offload.health import ProbeResult, describe_exception
from offload.registry import Server
from offload.responses import SERVER_HEADER, envelope_response

from .abi_args import bind_arguments
from .catalog import ContractSpec, is_view, load_contracts
from .rpc import JSON_HEADERS, RpcSender, pinned_server, rpc_payload, servers_used
from .rpc_proxy import RpcProxy
from .service import ContractService
from .signer import load_signer

SHORTHAND_CONTRACT = "Hello"  # the original interface had /hello for its Hello contract


@hookimpl
def offload_default_settings() -> dict[str, Any]:
    return {
        "prefix": "/contracts",
        "policy": "min_latency",
        "default_port": 8545,
        "max_lag": 8,  # blocks; proxyd's default
        "rpc_path": "/",
        "contracts": [],
        "rpc_allow": [],
        "private_key_env": "OFFLOAD_CONTRACTS_PRIVATE_KEY",
        "keystore": "",
        "keystore_password_env": "OFFLOAD_CONTRACTS_KEYSTORE_PASSWORD",
        "gas_multiplier": 1.2,
        "receipt_timeout_s": 30.0,
    }


def rpc_path(plugin: PluginContext) -> str:
    path = plugin.options["rpc_path"]
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{plugin.where} rpc_path must be a path starting with /, got {path!r}")
    return path


@hookimpl
def offload_probe(plugin: PluginContext, server: Server) -> Awaitable[ProbeResult]:
    """eth_blockNumber: alive, how fast, and how far along the chain."""

    async def probe() -> ProbeResult:
        session = plugin.require_engine().session
        started = time.perf_counter()
        try:
            async with session.post(
                server.url + rpc_path(plugin), data=rpc_payload("eth_blockNumber", []), headers=JSON_HEADERS
            ) as reply:
                payload = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return ProbeResult(ok=False, error=f"probe failed: {describe_exception(exc)}")
        latency = time.perf_counter() - started
        try:
            height = int(payload["result"], 16)
        except (KeyError, TypeError, ValueError):
            return ProbeResult(
                ok=False, latency_s=latency, error=f"probe failed: eth_blockNumber answered {payload!r:.120}"
            )
        return ProbeResult(ok=True, latency_s=latency, height=height)

    return probe()


class ContractRoutes:
    """The plugin's routes, bound to one gateway's engine and configuration."""

    def __init__(self, plugin: PluginContext, base_dir: Path) -> None:
        options = plugin.options
        self.plugin = plugin
        self.contracts = load_contracts(options["contracts"], plugin.where, base_dir)
        allowed = options["rpc_allow"]
        if not isinstance(allowed, list) or not all(isinstance(item, str) for item in allowed):
            raise ConfigError(f"{plugin.where} rpc_allow must be a list of JSON-RPC method names")
        sender = RpcSender(plugin, rpc_path(plugin))
        self.service = ContractService(
            sender,
            self.contracts,
            load_signer(options, plugin.where, base_dir),
            gas_multiplier=float(options["gas_multiplier"]),
            receipt_timeout_s=float(options["receipt_timeout_s"]),
        )
        self.proxy = RpcProxy(sender, self.service, allowed)

    async def answer(self, request: Request, produce: Callable[[], Awaitable[Any]], **extra: Any) -> HTTPResponse:
        """Run ``produce`` on the node(s) the engine picks and wrap its value in the envelope."""
        started = time.perf_counter()
        used: list[str] = []
        servers_used.set(used)
        pinned_server.set(request.args.get("server") or None)
        data = await produce()
        result = OffloadResult(
            data=data,
            server=used[-1] if used else "",
            status_code=200,
            throughput=self.plugin.require_engine().throughput(self.plugin.default_pool),
            time=time.perf_counter() - started,
        )
        reply = envelope_response(result)
        if extra:
            reply = response.json({**result.envelope(), **extra}, headers={SERVER_HEADER: result.server})
        return reply

    def contract(self, name: str) -> ContractSpec:
        spec = self.contracts.get(name)
        if spec is None:
            known = ", ".join(self.contracts) or "none configured"
            raise OffloadError(404, f"unknown contract {name!r}; known contracts: {known}")
        return spec

    def function(self, spec: ContractSpec, name: str) -> dict[str, Any]:
        function_abi = spec.function(name)
        if function_abi is None:
            methods = ", ".join(item["name"] for item in spec.functions())
            raise OffloadError(404, f"contract {spec.name!r} has no method {name!r}; its methods: {methods}")
        return function_abi

    async def invoke(self, spec: ContractSpec, function_abi: dict[str, Any], args: list[Any]) -> Any:
        if is_view(function_abi):
            return await self.service.call_view(spec.name, function_abi["name"], args)
        return await self.service.transact(spec.name, function_abi["name"], args)

    def blueprint(self) -> Blueprint:
        blueprint = Blueprint(f"offload_contracts_{id(self)}")
        blueprint.add_route(self.ping, "/ping", methods=["GET"])
        blueprint.add_route(self.list_contracts, "/listcontractprocess", methods=["GET"])
        blueprint.add_route(self.exec_contract, "/execcontract", methods=["GET"])
        blueprint.add_route(self.hello, "/hello", methods=["GET"])
        blueprint.add_route(self.list_servers, "/listservers", methods=["GET"])
        blueprint.add_route(self.rpc, "/rpc", methods=["POST"])
        blueprint.add_route(self.rest_view, "/<contract>/<method>", methods=["GET"])
        blueprint.add_route(self.rest_call, "/<contract>/<method>", methods=["POST"])
        return blueprint

    async def ping(self, request: Request) -> HTTPResponse:
        """The chosen node's client version, chain id and latest block (all from that one node)."""

        async def produce() -> Any:
            if pinned_server.get() is None:
                pinned_server.set(self.plugin.require_engine().choose(self.plugin.pool()).name)
            return await self.service.ping()

        return await self.answer(request, produce)

    async def list_contracts(self, request: Request) -> HTTPResponse:
        """Names, addresses, methods with argument types, and events (``listcontractprocess``)."""
        return response.json({"data": [spec.describe() for spec in self.contracts.values()], "status_code": 200})

    async def list_servers(self, request: Request) -> HTTPResponse:
        pool = self.plugin.pool()
        return response.json({"data": pool.addresses(), "servers": pool.describe()["servers"], "status_code": 200})

    async def exec_contract(self, request: Request) -> HTTPResponse:
        """The original interface: ``execcontract?contractID=&operation=&arg=&requestID=``."""
        contract_id = request.args.get("contractID")
        operation = request.args.get("operation")
        if not contract_id or not operation:
            raise OffloadError(400, "execcontract needs contractID and operation (and arg=... per argument)")
        spec = self.contract(contract_id)
        function_abi = self.function(spec, operation)
        raw_args: list[Any] = request.args.getlist("arg") or []
        inputs = function_abi.get("inputs", [])
        if len(raw_args) == 1 and len(inputs) > 1:
            # One arg holding a JSON array stands for all of them, as a single string did in the original.
            try:
                unpacked = safe_json.loads(raw_args[0])
            except ValueError:
                unpacked = None
            if isinstance(unpacked, list):
                raw_args = unpacked
        args = bind_arguments(spec.name, function_abi, raw_args)
        extra = {"requestID": request.args.get("requestID")} if request.args.get("requestID") else {}
        return await self.answer(request, lambda: self.invoke(spec, function_abi, args), **extra)

    async def hello(self, request: Request) -> HTTPResponse:
        """Shorthand for ``Hello.hello()``."""
        spec = self.contract(SHORTHAND_CONTRACT)
        function_abi = self.function(spec, "hello")
        return await self.answer(request, lambda: self.invoke(spec, function_abi, []))

    async def rest_view(self, request: Request, contract: str, method: str) -> HTTPResponse:
        """``GET {prefix}/{contract}/{method}?param=value``: views only."""
        spec = self.contract(contract)
        function_abi = self.function(spec, method)
        if not is_view(function_abi):
            raise OffloadError(
                405, f"{contract}.{method} changes state: send it with POST and a JSON body of arguments"
            )
        named = {key: request.args.get(key) for key in request.args if key not in ("arg", "server")}
        args = bind_arguments(spec.name, function_abi, request.args.getlist("arg") or [], named)
        return await self.answer(request, lambda: self.invoke(spec, function_abi, args))

    async def rest_call(self, request: Request, contract: str, method: str) -> HTTPResponse:
        """``POST {prefix}/{contract}/{method}`` with ``{"args": [...]}`` or ``{"name": value}``."""
        spec = self.contract(contract)
        function_abi = self.function(spec, method)
        try:
            body = safe_json.loads(request.body or b"{}")
        except ValueError:
            raise OffloadError(400, 'the body must be JSON: {"args": [...]} or {"param": value}') from None
        if isinstance(body, list):
            positional, named = body, {}
        elif isinstance(body, dict):
            positional = body.pop("args", [])
            named = body
            if not isinstance(positional, list):
                raise OffloadError(400, '"args" must be a JSON array of positional arguments')
        else:
            raise OffloadError(400, "the body must be a JSON object or array of arguments")
        args = bind_arguments(spec.name, function_abi, positional, named)
        return await self.answer(request, lambda: self.invoke(spec, function_abi, args))

    async def rpc(self, request: Request) -> HTTPResponse:
        """JSON-RPC 2.0 pass-through (single and batch) with the method allowlist."""
        used: list[str] = []
        servers_used.set(used)
        pinned_server.set(request.args.get("server") or None)
        status, payload = await self.proxy.handle(request.body)
        headers = {SERVER_HEADER: used[-1]} if used else None
        return response.json(payload, status=status, headers=headers)


@hookimpl
def offload_routes(plugin: PluginContext) -> Blueprint:
    return ContractRoutes(plugin, plugin.base_dir).blueprint()
