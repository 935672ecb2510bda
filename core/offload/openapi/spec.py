"""The gateway's OpenAPI 3.1 document, generated from the routes as mounted.

Nothing is required from a plugin: every route is listed with its methods and
path parameters (typed from the route pattern, ``<n:int>`` is an integer), the
handler's docstring (first line: summary, the rest: description), who may call
it (an operator route carries the bearer scheme) and the errors the gateway
itself may answer for it (bad input, refused host or origin, body too large,
the token, an upstream's failure).

More is possible through an ``openapi`` attribute of the handler (a plain dict,
so a plugin imports nothing for it), merged into the route's operation object.
Its ``parameters`` are added to (or replace, by ``in`` and ``name``) the
generated ones; its ``responses`` are added per status code, and a response
given as a plain string is a description of the standard shape for that
status: the envelope (``#/components/schemas/Envelope``) below 400, the JSON
error (``#/components/schemas/Error``) from 400 up. ``openapi = False`` leaves
a route out of the document. For example::

    async def square(request: Request, num: str) -> HTTPResponse:
        ...  # its docstring: the summary and description

    square.openapi = {
        "parameters": [{"in": "path", "name": "num", "required": True, "schema": {"type": "number"}}],
        "responses": {"200": "the square, as a string", "400": "num is not a finite number"},
    }

(A handler that is a method gets the attribute in its class body, after its ``def``.)
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sanic import Sanic

from ..routing import RouteClaims, route_key
from ..security import OPERATOR, READ
from .core_routes import CORE_OPERATIONS

__all__ = ["COMPONENTS", "TASK_ERROR_REF", "build_spec", "error_response", "json_response", "operation_for"]

OPENAPI_VERSION = "3.1.0"
ENVELOPE_REF = "#/components/schemas/Envelope"
ERROR_REF = "#/components/schemas/Error"
TASK_ERROR_REF = "#/components/schemas/TaskError"
# <name>, <name:type> or <name:regex> in a Sanic route path.
_PARAMETER = re.compile(r"<([^:<>]+)(?::[^<>]*)?>")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sanic's built-in parameter types (sanic_routing's labels) as JSON Schema.
_PATTERN_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string", "minLength": 1},
    "strorempty": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "alpha": {"type": "string", "pattern": "^[A-Za-z]+$"},
    "slug": {"type": "string", "pattern": "^[a-z0-9]+(?:-[a-z0-9]+)*$"},
    "uuid": {"type": "string", "format": "uuid"},
    "ymd": {"type": "string", "format": "date"},
    "path": {"type": "string"},
}
# Why the gateway itself may refuse a request, whatever its route (see offload.security).
_GUARD_ERRORS = {
    "403": "host not allowed, or a cross-site request (see [gateway] allowed_hosts and allowed_origins)",
}
_READ_ERRORS = {"400": "bad input (a GET carries no body)"}
_WRITE_ERRORS = {"400": "bad input", "413": "the body is larger than this route accepts"}
_OPERATOR_ERRORS = {
    "401": "no or wrong operator token ('Authorization: Bearer <token>')",
    "403": "no operator token is configured, host not allowed, or a cross-site request",
    "405": "a state change sent with GET",
    "415": "a form or text content type: send application/json",
}
# A plugin route hands tasks to upstream servers (PluginContext.offload): their failures are these.
_UPSTREAM_ERRORS = {
    "502": "the chosen upstream server failed or could not be reached",
    "503": "no server of the pool is available",
    "504": "the upstream server did not answer in time",
}
_PATH_ERRORS = {"404": "no route matches these path parameters"}

COMPONENTS: dict[str, Any] = {
    "schemas": {
        "Envelope": {
            "type": "object",
            "description": "How the gateway answers a task: its result and how it was obtained.",
            "required": ["data", "server", "status_code", "throughput", "time"],
            "properties": {
                "data": {"description": "The task's answer (any JSON value)."},
                "server": {"type": "string", "description": "The server that answered ('local' or its name)."},
                "status_code": {"type": "integer", "description": "The status the server answered with."},
                "throughput": {"type": "integer", "description": "Requests run locally in the current window."},
                "time": {"type": "number", "description": "Seconds the task took, as the gateway measured."},
            },
        },
        "Error": {
            "type": "object",
            "description": "Every error the gateway answers: what went wrong and its status; never a traceback.",
            "required": ["error", "status_code"],
            "properties": {
                "error": {"type": "string", "description": "What went wrong, and what to do about it."},
                "status_code": {"type": "integer", "minimum": 400, "maximum": 599},
                "server": {"type": "string", "description": "The upstream server the error is about, if any."},
            },
        },
        "TaskError": {
            "description": "A task's refusal: the gateway's JSON error, or the upstream server's own 4xx "
            "answer passed on in the envelope (its status in status_code, its body in data).",
            "anyOf": [{"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/Envelope"}],
        },
    },
    "securitySchemes": {
        "operatorToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The operator's token ($OFFLOAD_API_TOKEN or [gateway] api_token_file), "
            "sent as 'Authorization: Bearer <token>' with a JSON content type.",
        }
    },
}


def json_response(description: str, ref: str) -> dict[str, Any]:
    """A response object whose JSON body is the schema at ``ref``."""
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def error_response(description: str) -> dict[str, Any]:
    """A response object for the gateway's JSON error."""
    return json_response(description, ERROR_REF)


def _expand_response(status: str, value: Any) -> dict[str, Any]:
    """A plain string stands for the standard shape of ``status``: the envelope, or the error from 400 up."""
    if isinstance(value, str):
        ref = ERROR_REF if status[:1] in ("4", "5") else ENVELOPE_REF
        return json_response(value, ref)
    if not isinstance(value, Mapping):
        raise TypeError(f"an OpenAPI response must be a string or a dict, got {type(value).__name__}")
    return dict(value)


def _docstring_parts(handler: Any) -> tuple[str, str]:
    """(summary, description) from the handler's docstring: its first line and the rest."""
    doc = inspect.getdoc(inspect.unwrap(handler)) or ""
    summary, _, rest = doc.partition("\n")
    return summary.strip(), rest.strip()


def _openapi_path(route_path: str) -> str:
    """``square/<num:str>`` -> ``/square/{num}``."""
    return "/" + _PARAMETER.sub(lambda match: "{" + match.group(1) + "}", route_path.strip("/"))


def _ordered_params(route: Any) -> list[Any]:
    """The route's parameters in the order they appear in its path."""
    by_name = {param.name: param for param in route.params.values()}
    return [by_name[name] for name in _PARAMETER.findall(route.path) if name in by_name]


def _path_parameters(params: Iterable[Any]) -> list[dict[str, Any]]:
    parameters = []
    for param in params:
        schema = copy.deepcopy(_PATTERN_TYPES.get(param.label, {"type": "string"}))
        if param.label not in _PATTERN_TYPES and param.pattern is not None:
            # A custom regex parameter, <name:[0-9]+>: the pattern says what matches.
            schema["pattern"] = param.pattern.pattern
        parameters.append({"in": "path", "name": param.name, "required": True, "schema": schema})
    return parameters


def _merge_parameters(generated: list[dict[str, Any]], declared: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    merged = {(item["in"], item["name"]): item for item in generated}
    for item in declared:
        merged[(item["in"], item["name"])] = {**merged.get((item["in"], item["name"]), {}), **item}
    return list(merged.values())


def operation_for(
    route: Any,
    method: str,
    owner: str,
    *,
    from_plugin: bool,
    token_configured: bool,
    fallback: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The operation object of ``method`` on ``route``; None when the route asks to be left out.

    ``fallback`` stands for the handler's ``openapi`` attribute when it has none.
    """
    declared = getattr(inspect.unwrap(route.handler), "openapi", fallback)
    if declared is False:
        return None
    if declared is not None and not isinstance(declared, Mapping):
        raise TypeError(f"route {route.path!r}: openapi must be a dict or False, got {type(declared).__name__}")
    declared = copy.deepcopy(dict(declared or {}))
    access = getattr(route.ctx, "access", None) or (READ if method in _READ_METHODS else OPERATOR)
    params = _ordered_params(route)

    responses: dict[str, Any] = {}
    errors = {**(_READ_ERRORS if method in _READ_METHODS else _WRITE_ERRORS), **_GUARD_ERRORS}
    if params:
        errors.update(_PATH_ERRORS)
    if from_plugin:
        errors.update(_UPSTREAM_ERRORS)
    if access == OPERATOR:
        errors.update(_OPERATOR_ERRORS)
    for status, description in sorted(errors.items()):
        responses[status] = error_response(description)
    answers = declared.pop("responses", None) or {}
    for status, value in answers.items():
        responses[str(status)] = _expand_response(str(status), value)
    if not answers:
        responses["200"] = {"description": "The route's answer."}

    summary, description = _docstring_parts(route.handler)
    operation: dict[str, Any] = {"operationId": f"{route.name}.{method.lower()}", "tags": [owner]}
    if summary:
        operation["summary"] = summary
    if description:
        operation["description"] = description
    operation["parameters"] = _merge_parameters(_path_parameters(params), declared.pop("parameters", None) or [])
    if access == OPERATOR:
        operation["security"] = [{"operatorToken": []}]
        operation["x-offload-access"] = OPERATOR
    else:
        operation["x-offload-access"] = READ
    operation["responses"] = dict(sorted(responses.items()))
    operation.update(declared)
    if not operation["parameters"]:
        del operation["parameters"]
    if access == OPERATOR and not token_configured:
        operation["description"] = (
            operation.get("description", "") + "\n\nThis gateway has no operator token configured: refused (403)."
        ).strip()
    return operation


def build_spec(
    app: Sanic, claims: RouteClaims, core_owner: str, *, title: str = "offload gateway", version: str = "0.1.0"
) -> dict[str, Any]:
    """The OpenAPI document of every route of ``app`` (as mounted now), tagged by who owns it."""
    owners = {key: owner for key, (owner, _path) in claims.owners.items()}
    token_configured = getattr(getattr(app.ctx, "access_guard", None), "token", None) is not None
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(app.router.routes, key=lambda route: route.path):
        path = _openapi_path(route.path)
        for method in sorted(route.methods):
            owner = owners.get((method, route_key(path_for_claims(route.path))), core_owner)
            from_plugin = owner != core_owner
            operation = operation_for(
                route,
                method,
                owner,
                from_plugin=from_plugin,
                token_configured=token_configured,
                fallback=None if from_plugin else CORE_OPERATIONS.get((method, path)),
            )
            if operation is not None:
                paths.setdefault(path, {})[method.lower()] = operation
    tags = sorted({operation["tags"][0] for item in paths.values() for operation in item.values()})
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "Every API answer is JSON: the envelope {data, server, status_code, throughput, time} "
            "or an error {error, status_code}. Routes marked operatorToken need the operator's token.",
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": copy.deepcopy(COMPONENTS),
    }


def path_for_claims(route_path: str) -> str:
    """A router path as the claims spell it (leading slash; parameters are erased by ``route_key``)."""
    return "/" + route_path.strip("/")
