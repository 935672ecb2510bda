"""Routes of the math plugin: the original app.py's interface plus CPU-heavy tasks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from offload import (
    OPERATOR,
    READ,
    OffloadError,
    OptionReader,
    PluginContext,
    Task,
    envelope_response,
    hookimpl,
    parse_server_list,
)

from .inputs import HASH_CHAIN_MAX, MATMUL_MAX, NTH_PRIME_MAX, bounded_int, finite_number


@hookimpl
def offload_default_settings() -> dict[str, Any]:
    # The original rule (local while <= 25 requests/s), offloading by the default p2c_ewma.
    # cache_ttl_s: how long the answer of a pure task (square and the CPU tasks) may be served
    # again to the same question; 0 (the default) sends every task, as the original did.
    return {"consider_throughput": True, "expected_throughput": 25, "cache_ttl_s": 0}


# A day: a pure function's answer never changes, the bound only limits how long one is kept.
MAX_CACHE_TTL_S = 86_400.0


def cache_ttl(plugin: PluginContext) -> float | None:
    """``cache_ttl_s`` checked (0 to a day); None when caching is off."""
    reader = OptionReader(plugin.where, plugin.options)
    ttl_s = reader.non_negative_number("cache_ttl_s")
    if ttl_s > MAX_CACHE_TTL_S:
        raise reader.fail("cache_ttl_s", f"a number from 0 to {MAX_CACHE_TTL_S:g}")
    return ttl_s or None


# How the routes are described in the gateway's /openapi.json (plain dicts: see offload.openapi.spec).
# ?server= picks the server instead of the policy; a name not in the pool is the caller's mistake (400).
SERVER_QUERY = {
    "in": "query",
    "name": "server",
    "required": False,
    "schema": {"type": "string"},
    "description": "Run on this server of the pool (its name or address) instead of the one the policy picks.",
}
BAD_SERVER = "a server not in the pool, or bad input"
TASK_ERROR = {"$ref": "#/components/schemas/TaskError"}
_ADDRESSES = {"type": "array", "items": {"type": "string"}}
ADDRESSES_JSON = {
    "application/json": {
        "schema": {"type": "object", "required": ["data"], "properties": {"data": _ADDRESSES}},
    }
}
SERVER_LIST_JSON = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["data", "server", "status_code", "time"],
            "properties": {
                "data": _ADDRESSES,
                "server": {"type": "string"},
                "status_code": {"type": "integer"},
                "time": {"type": "number"},
            },
        }
    }
}
UPDATE_JSON = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["data", "dropped", "server", "status_code", "time"],
            "properties": {
                "data": {**_ADDRESSES, "description": "the addresses kept"},
                "dropped": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "each address dropped, with why",
                },
                "server": {"type": "string"},
                "status_code": {"type": "integer"},
                "time": {"type": "number"},
            },
        }
    }
}


def task_doc(answer: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    """The ``openapi`` attribute of a route that runs one task and answers the envelope."""
    # The edge's own refusal of a task comes back in the envelope with its status, like its answers.
    refused = {"description": BAD_SERVER, "content": {"application/json": {"schema": TASK_ERROR}}}
    return {"parameters": [*parameters, SERVER_QUERY], "responses": {"200": answer, "400": refused}}


# (route, parameter, largest accepted value, what it computes): CPU-bound tasks worth offloading.
CPU_TASKS = (
    ("nthprime", "n", NTH_PRIME_MAX, "The n-th prime."),
    ("matmul", "n", MATMUL_MAX, "Checksum of an n x n integer matrix product."),
    ("hashchain", "rounds", HASH_CHAIN_MAX, "SHA-256 iterated `rounds` times."),
)


def add_cpu_task(
    blueprint: Blueprint,
    run: Callable[..., Awaitable[HTTPResponse]],
    route: str,
    param: str,
    maximum: int,
    doc: str,
) -> None:
    """``GET /<route>/<param>`` running the edge's ``/tasks/<route>/<param>`` after checking the input."""

    async def handler(request: Request, value: str) -> HTTPResponse:
        return await run(request, f"/tasks/{route}/{bounded_int(param, value, maximum)}", pure=True)

    handler.__doc__ = doc
    handler.openapi = task_doc(  # type: ignore[attr-defined]
        "the result, computed by the chosen server",
        {
            "in": "path",
            "name": "value",
            "required": True,
            "description": f"{param}, from 1 to {maximum}",
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum},
        },
    )
    blueprint.add_route(handler, f"/{route}/<value>", methods=["GET"], name=f"task_{route}", ctx_access=READ)


def requested_server(request: Request) -> str | None:
    """``?server=NAME_OR_ADDRESS``, as the original allowed (checked against the pool)."""
    if not request.query_string:
        return None  # most requests: spare parsing an empty query on the hot path
    return request.args.get("server") or None


@hookimpl
def offload_routes(plugin: PluginContext) -> Blueprint:
    blueprint = Blueprint(f"offload_math_{id(plugin)}")
    ttl_s = cache_ttl(plugin)
    if ttl_s is not None:
        plugin.read_cache()  # made now, so GET /servers shows its counts from the start

    async def run(request: Request, path: str, *, pure: bool = False) -> HTTPResponse:
        # A pure task's answer depends on its input alone: the same question may get the kept answer.
        task = Task(path, cache_ttl_s=ttl_s if pure else None)
        return envelope_response(await plugin.offload(task, server=requested_server(request)))

    @blueprint.get("/updateservers", ctx_access=READ)
    async def update_servers_by_get(request: Request) -> HTTPResponse:
        """The original's GET form, refused: changing the pool is an operator's POST."""
        raise OffloadError(
            405, "updateservers changes the server pool: POST it with 'Authorization: Bearer <operator token>'"
        )

    update_servers_by_get.openapi = {  # type: ignore[attr-defined]
        "deprecated": True,
        "responses": {"405": "always: POST /updateservers with the operator's token"},
    }

    @blueprint.get("/", ctx_access=READ)
    async def hello(request: Request) -> HTTPResponse:
        """Hello world from the chosen server (its /hello)."""
        return await run(request, "/hello")

    hello.openapi = task_doc("the server's greeting")  # type: ignore[attr-defined]

    @blueprint.get("/square/<num>", ctx_access=READ)
    async def square(request: Request, num: str) -> HTTPResponse:
        """``num`` squared on the chosen server: 20 -> "400.0"."""
        return await run(request, f"/offloading/{finite_number('num', num)}", pure=True)

    square.openapi = task_doc(  # type: ignore[attr-defined]
        'the square as a string, e.g. "400.0"',
        {"in": "path", "name": "num", "required": True, "description": "a finite number", "schema": {"type": "number"}},
    )

    for route, param, maximum, doc in CPU_TASKS:
        add_cpu_task(blueprint, run, route, param, maximum, doc)

    async def fetch_remote_list(request: Request) -> tuple[list[str], str, float]:
        started = time.perf_counter()
        result = await plugin.offload(Task("/getserverlists"), server=requested_server(request))
        if result.status_code != 200:
            raise OffloadError(502, f"server {result.server!r} answered HTTP {result.status_code} for its list")
        return parse_server_list(result.data, result.server), result.server, time.perf_counter() - started

    @blueprint.get("/getserverlists", ctx_access=READ)
    async def get_server_lists(request: Request) -> HTTPResponse:
        """The server list a chosen edge advertises (the original protocol)."""
        addresses, server, elapsed = await fetch_remote_list(request)
        return response.json({"data": addresses, "server": server, "status_code": 200, "time": elapsed})

    get_server_lists.openapi = {  # type: ignore[attr-defined]
        "parameters": [SERVER_QUERY],
        "responses": {"200": {"description": "The addresses the edge advertises.", "content": SERVER_LIST_JSON}},
    }

    @blueprint.get("/listservers", ctx_access=READ)
    async def list_servers(request: Request) -> HTTPResponse:
        """Addresses of the servers currently in the pool."""
        return response.json({"data": plugin.pool().addresses()})

    list_servers.openapi = {  # type: ignore[attr-defined]
        "responses": {"200": {"description": "The pool's addresses.", "content": ADDRESSES_JSON}}
    }

    @blueprint.post("/updateservers", ctx_access=OPERATOR)
    async def update_servers(request: Request) -> HTTPResponse:
        """Operator only: add the servers a chosen edge advertises that pass a probe.

        Servers from plugins.toml always stay as configured; servers added by an
        earlier update are dropped again when they fail their probe.
        """
        addresses, server, elapsed = await fetch_remote_list(request)
        update = await plugin.update_pool(addresses)
        return response.json(
            {"data": update.kept, "dropped": update.dropped, "server": server, "status_code": 200, "time": elapsed}
        )

    update_servers.openapi = {  # type: ignore[attr-defined]
        "parameters": [SERVER_QUERY],
        "responses": {"200": {"description": "The servers kept and dropped.", "content": UPDATE_JSON}},
    }

    return blueprint
