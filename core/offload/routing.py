"""Mounting plugin blueprints and refusing two owners for one route."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sanic import Blueprint

from .errors import ConfigError

_PARAMETER = re.compile(r"<[^>]*>")


def route_key(path: str) -> str:
    """A path with parameter names erased and no trailing slash, for clash detection."""
    normalized = _PARAMETER.sub("<>", path)
    return normalized.rstrip("/") or "/"


def join_path(*parts: str | None) -> str:
    """Join URL path pieces with single slashes; '' or None pieces vanish."""
    pieces = [part.strip("/") for part in parts if part and part.strip("/")]
    return "/" + "/".join(pieces)


def blueprint_routes(blueprint: Blueprint, prefix: str) -> Iterable[tuple[str, str]]:
    """(method, full path) for every route of ``blueprint`` mounted under ``prefix``."""
    # Sanic keeps a blueprint's routes in _future_routes until it is registered;
    # reading them first lets us name both plugins instead of a router error.
    for route in blueprint._future_routes:
        path = join_path(prefix, blueprint.url_prefix, route.uri)
        for method in route.methods or ("GET",):
            yield method.upper(), path


class RouteClaims:
    """Who owns which (method, path); a second claimant is a :class:`ConfigError`."""

    def __init__(self) -> None:
        self.owners: dict[tuple[str, str], tuple[str, str]] = {}

    def claim(self, owner: str, method: str, path: str) -> None:
        key = (method, route_key(path))
        previous = self.owners.get(key)
        if previous is not None and previous[0] != owner:
            raise ConfigError(
                f"route {method} {path} is claimed by both {previous[0]!r} ({previous[1]}) and {owner!r}; "
                "give one of them another prefix in plugins.toml"
            )
        self.owners[key] = (owner, path)
