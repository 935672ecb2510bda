"""A third-party plugin: greets through whichever edge the gateway picks."""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from offload import PluginContext, Task, hookimpl


@hookimpl
def offload_default_settings() -> dict[str, Any]:
    return {"greeting": "hello", "prefix": "/greeter"}


@hookimpl
def offload_routes(plugin: PluginContext) -> Blueprint:
    blueprint = Blueprint(f"greeter_{id(plugin)}")

    @blueprint.get("/greet/<name>")
    async def greet(request: Request, name: str) -> HTTPResponse:
        result = await plugin.offload(Task("/hello"))
        envelope = result.envelope()
        envelope["data"] = f"{plugin.options['greeting']}, {name}: the edge says {result.data}"
        return response.json(envelope)

    return blueprint
