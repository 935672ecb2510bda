"""``GET /openapi.json`` and ``GET /docs``: generated from the mounted routes, guarded like every route.

A third-party plugin's routes are documented from what it already has (route
patterns, docstrings, ``ctx_access``), and more from its handlers' ``openapi``
attribute. ``/docs`` is rendered by Debian's chromium (playwright drives it; its own
browser downloads are never used) with nothing but this gateway reachable.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import pytest
from jsonschema_rs import Draft202012Validator  # schemathesis validates answers with it too
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from offload import OPERATOR, READ, OffloadError, PluginContext, Task, envelope_response, hookimpl
from offload.openapi import content_security_policy
from offload_edge.app import EdgeConfig, create_edge_app

from conftest import TEST_TOKEN, EdgeFactory, Gateway, GatewayFactory, servers_table


class PluginObject:
    """A plugin built from functions, as a module would be (registered directly, no entry point)."""

    def __init__(self, **members: Any) -> None:
        self.__dict__.update(members)


def third_party_plugin() -> PluginObject:
    """Routes documented only as any plugin would write them, plus one with an ``openapi`` attribute."""

    @hookimpl
    def offload_routes(plugin: PluginContext) -> Blueprint:
        blueprint = Blueprint(f"shapes_{id(plugin)}")

        @blueprint.get("/area/<side:int>/<unit>", ctx_access=READ)
        async def area(request: Request, side: int, unit: str) -> HTTPResponse:
            """The area of a square.

            Computed on whichever server the engine picks.
            """
            return envelope_response(await plugin.offload(Task(f"/offloading/{side}")))

        @blueprint.post("/reset", ctx_access=OPERATOR)
        async def reset(request: Request) -> HTTPResponse:
            """Forget everything."""
            return response.json({"reset": True})

        async def volume(request: Request) -> HTTPResponse:
            """The volume of a cube."""
            if "side" not in request.args:
                raise OffloadError(400, "volume needs ?side=")
            return response.json({"volume": int(request.args["side"][0]) ** 3})

        volume.openapi = {  # type: ignore[attr-defined]
            "parameters": [{"in": "query", "name": "side", "required": True, "schema": {"type": "integer"}}],
            "responses": {"200": "the volume", "400": "no side given"},
        }
        blueprint.add_route(volume, "/volume", methods=["GET"], ctx_access=READ)

        async def hidden(request: Request) -> HTTPResponse:
            return response.json({})

        hidden.openapi = False  # type: ignore[attr-defined]
        blueprint.add_route(hidden, "/hidden", methods=["GET"], ctx_access=READ)
        return blueprint

    return PluginObject(offload_routes=offload_routes)


@pytest.fixture
async def shapes_gateway(edge: EdgeFactory, gateway: GatewayFactory) -> Gateway:
    remote = await edge("edge1")
    servers = servers_table(("edge1", remote))
    document = {"plugins": {"shapes": {"prefix": "/shapes", "servers": servers}, "math": {"servers": servers}}}
    return await gateway(document, extra_plugins={"shapes": third_party_plugin()})


async def spec_of(gw: Gateway) -> dict[str, Any]:
    status, spec, reply = await gw.get_json("/openapi.json")
    assert status == 200 and reply.content_type == "application/json"
    return spec


async def test_every_mounted_route_is_in_the_document(shapes_gateway: Gateway) -> None:
    spec = await spec_of(shapes_gateway)
    assert spec["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    mounted = set()
    for route in shapes_gateway.app.router.routes:
        path = "/" + re.sub(r"<([^:<>]+)(?::[^<>]*)?>", r"{\1}", route.path.strip("/"))
        mounted |= {(method, path) for method in route.methods}
    assert documented == mounted - {("GET", "/shapes/hidden")}
    # Installing sanic-ext changed nothing: no OPTIONS/HEAD handlers, no /docs/swagger of its own.
    assert all(method in ("GET", "POST") for method, _path in mounted)
    assert not any(path.startswith("/docs/") for _method, path in mounted)
    tags = {tag["name"] for tag in spec["tags"]}
    assert tags == {"offload (built-in)", "plugin shapes", "plugin math"}


async def test_a_plugins_route_is_documented_from_its_pattern_and_docstring(shapes_gateway: Gateway) -> None:
    operation = (await spec_of(shapes_gateway))["paths"]["/shapes/area/{side}/{unit}"]["get"]
    assert operation["summary"] == "The area of a square."
    assert operation["description"] == "Computed on whichever server the engine picks."
    assert operation["tags"] == ["plugin shapes"]
    parameters = {param["name"]: param for param in operation["parameters"]}
    assert parameters["side"] == {"in": "path", "name": "side", "required": True, "schema": {"type": "integer"}}
    assert parameters["unit"]["schema"] == {"type": "string", "minLength": 1}
    # The errors the gateway itself answers on a plugin's route: bad input, guard, no route, upstreams.
    assert set(operation["responses"]) == {"200", "400", "403", "404", "502", "503", "504"}
    assert operation["responses"]["502"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "security" not in operation


async def test_operator_routes_declare_the_bearer_scheme_and_its_refusals(shapes_gateway: Gateway) -> None:
    spec = await spec_of(shapes_gateway)
    assert spec["components"]["securitySchemes"]["operatorToken"]["scheme"] == "bearer"
    for path in ("/shapes/reset", "/updateservers"):
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"operatorToken": []}]
        assert {"401", "403", "413", "415"} <= set(operation["responses"])
    # And the document tells the truth: without the token that route is refused with 401.
    async with shapes_gateway.client.post("/shapes/reset", json={}) as reply:
        assert reply.status == 401 and "401" in spec["paths"]["/shapes/reset"]["post"]["responses"]
    async with shapes_gateway.operator.post("/shapes/reset", json={}) as reply:
        assert reply.status == 200


async def test_the_openapi_attribute_adds_parameters_and_answers(shapes_gateway: Gateway) -> None:
    spec = await spec_of(shapes_gateway)
    operation = spec["paths"]["/shapes/volume"]["get"]
    assert operation["parameters"] == [{"in": "query", "name": "side", "required": True, "schema": {"type": "integer"}}]
    ok = operation["responses"]["200"]
    assert ok["description"] == "the volume"
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Envelope"}
    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "/shapes/hidden" not in spec["paths"]


async def test_documented_shapes_match_real_answers(shapes_gateway: Gateway) -> None:
    spec = await spec_of(shapes_gateway)
    schemas = spec["components"]["schemas"]

    def validator(name: str) -> Draft202012Validator:
        return Draft202012Validator({**schemas[name], "components": spec["components"]})

    _status, body, _ = await shapes_gateway.get_json("/square/7")
    validator("Envelope").validate(body)
    status, body, _ = await shapes_gateway.get_json("/nthprime/0")
    assert status == 400
    validator("Error").validate(body)
    assert not validator("Error").is_valid({"data": 1})  # the schemas say something


async def test_the_document_is_guarded_like_every_route(shapes_gateway: Gateway) -> None:
    async with shapes_gateway.client.get("/openapi.json", headers={"Host": "evil.example:8899"}) as reply:
        assert reply.status == 403
    async with shapes_gateway.client.get("/docs", headers={"Origin": "http://evil.example"}) as reply:
        assert reply.status == 403


async def test_the_edge_is_not_extended_by_sanic_ext(offload_server: Any) -> None:
    server = await offload_server(create_edge_app(EdgeConfig(name="plain", processes=1)))
    assert server.app.config.AUTO_EXTEND is False
    methods = {method for route in server.app.router.routes for method in route.methods}
    assert "OPTIONS" not in methods


def test_the_docs_policy_allows_exactly_the_inline_code() -> None:
    page = "<style>a{}</style><script>x()</script>"
    policy = content_security_policy(page)
    assert "script-src 'sha256-" in policy and "style-src 'sha256-" in policy
    assert content_security_policy("<script>y()</script>") != policy
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy


def require_chromium() -> str:
    """Debian's chromium; skip without it, or fail under ``OFFLOAD_REQUIRE_CHROMIUM=1`` (as CI runs)."""
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("OFFLOAD_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is not installed: apt-get install chromium")
        pytest.skip("chromium is not installed: apt-get install chromium")
    return executable


async def test_docs_renders_the_document_with_nothing_from_elsewhere(shapes_gateway: Gateway) -> None:
    from playwright.async_api import async_playwright

    executable = require_chromium()
    url = shapes_gateway.server.url
    async with async_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = await playwright.chromium.launch(executable_path=executable, args=args)
        try:
            page = await browser.new_page()
            problems: list[str] = []
            requested: list[str] = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            await page.goto(f"{url}/docs")
            await page.wait_for_selector("body[data-loaded='true']", timeout=10_000)
            text = await page.inner_text("#content")
            assert "plugin shapes" in text and "/shapes/area/{side}/{unit}" in text and "The area of a square." in text
            assert await page.locator("details.op").count() >= 20
            assert problems == []  # a CSP violation (inline code not allowed) would be a console error
            assert all(address.startswith(url) or address.startswith("data:") for address in requested), requested
        finally:
            await browser.close()


async def test_docs_page_sets_its_policy(shapes_gateway: Gateway) -> None:
    async with shapes_gateway.client.get("/docs") as reply:
        assert reply.status == 200 and reply.content_type == "text/html"
        page = await reply.text()
        assert reply.headers["Content-Security-Policy"] == content_security_policy(page)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from another origin
    assert TEST_TOKEN not in page


async def test_the_document_is_built_once_all_plugins_are_mounted(shapes_gateway: Gateway) -> None:
    first = await spec_of(shapes_gateway)
    second = await spec_of(shapes_gateway)
    assert first == second and "/shapes/volume" in first["paths"] and "/square/{num}" in first["paths"]
