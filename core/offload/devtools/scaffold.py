"""``offload plugins new NAME``: write a ready plugin package whose own tests pass once pip-installed.

The package it writes (``NAME/``) holds a pyproject with the ``offload`` entry
point, a module ``offload_NAME`` with typed default settings checked when the
gateway is built and one GET route that offloads a task, a README saying how to
enable it in plugins.toml, and ``tests/`` that build a real gateway with the
plugin and call the route through the ``offload_server``/``offload_client``
fixtures. The templates are strings here (no package data to ship); the plugin
uses only the public API (``from offload import ...``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

# A plugin name: the entry point's name and the [plugins.NAME] table. Lower case, so that the
# distribution, the module and the TOML table all spell it the same way; short, so paths stay readable.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*")
MAX_NAME_LENGTH = 40


class ScaffoldError(Exception):
    """The plugin cannot be written; the message is one line saying why."""


@dataclass(frozen=True)
class PluginNames:
    """How one plugin name is spelled in each place it appears."""

    name: str  # entry point, [plugins.NAME], URL prefix, directory
    module: str  # the import name: offload_NAME with '-' as '_'
    distribution: str  # what pip installs: offload-NAME with '_' as '-'

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        """Check ``name`` and derive the other spellings; raises :class:`ScaffoldError`."""
        if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
            raise ScaffoldError(
                f"plugin name {name[:60]!r} must be 1 to {MAX_NAME_LENGTH} lower-case letters, digits, '_' and '-', "
                "starting with a letter (e.g. demo_plugin)"
            )
        snake = name.replace("-", "_")
        return cls(name=name, module=f"offload_{snake}", distribution=f"offload-{snake.replace('_', '-')}")


@dataclass(frozen=True)
class Scaffold:
    """What :func:`write_plugin` wrote: the package directory and its files, relative to it."""

    directory: Path
    files: tuple[str, ...]
    names: PluginNames

    def next_steps(self) -> list[str]:
        """The three commands that take the new package to a running gateway."""
        where = str(self.directory)
        if not self.directory.is_absolute() and not where.startswith("."):
            where = f"./{where}"  # pip reads a bare name as a package to download, a ./path as a directory
        return [
            f"pip install -e {where}",
            f"pytest {where}",
            f"offload plugins   # lists {self.names.name}; enable it with [plugins.{self.names.name}] in plugins.toml",
        ]


def write_plugin(name: str, parent: Path, *, installed: set[str] | frozenset[str] = frozenset()) -> Scaffold:
    """Write the package for plugin ``name`` into ``parent/name``; never overwrites anything.

    ``installed`` holds the names of plugins already installed: reusing one would make the
    two entry points clash, so it is refused. The files are written into a temporary
    directory beside the target and renamed into place, so a failure leaves nothing half-written.
    """
    names = PluginNames.from_name(name)
    if names.name in installed:
        raise ScaffoldError(f"a plugin named {names.name!r} is already installed; choose another name")
    if not parent.is_dir():
        raise ScaffoldError(f"--dir {parent} is not a directory")
    target = parent / names.name
    if target.exists() or target.is_symlink():
        raise ScaffoldError(f"{target} already exists; remove it or choose another name or --dir")
    files = render(names)
    staging = Path(tempfile.mkdtemp(prefix=f".{names.name}-", dir=parent))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the package from anyone else
        if target.exists() or target.is_symlink():  # appeared meanwhile: still never overwrite
            raise ScaffoldError(f"{target} already exists; remove it or choose another name or --dir")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Scaffold(directory=target, files=tuple(sorted(files)), names=names)


def render(names: PluginNames) -> dict[str, str]:
    """Every file of the package, by its path inside it."""
    values = {
        "name": names.name,
        "module": names.module,
        "distribution": names.distribution,
        "test_module": f"test_{names.module.removeprefix('offload_')}",
    }
    templates = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{names.module}/__init__.py": MODULE,
        f"tests/{values['test_module']}.py": TESTS,
    }
    return {path: Template(text).substitute(values) for path, text in templates.items()}


# The templates: string.Template with $name, $module, $distribution ($$ would be a literal $).

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "A task-offloading plugin: $name"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["task-offloading>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-asyncio>=0.23"]

# How the gateway finds the plugin: entry point group "offload", named as in [plugins.$name].
[project.entry-points.offload]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
# The offload_server / offload_client fixtures (installed with task-offloading) are async.
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"

[tool.ruff]
line-length = 120
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF"]
"""

README = """\
# $distribution

A [task-offloading](https://pypi.org/project/task-offloading/) plugin. It adds one route,
`GET /$name/greet/<who>`, that runs the task `GET /hello` on whichever server of its pool
the gateway picks and answers with the gateway's envelope:

```json
{"data": "hello, bob: the edge says world", "server": "edge1", "status_code": 200, "throughput": 0, "time": 0.002}
```

## Install and test

```sh
pip install -e .            # registers the entry point "$name" (group "offload")
pip install pytest pytest-asyncio   # or: pip install -e '.[test]'
pytest                      # a real gateway and a stand-in edge, on 127.0.0.1
offload plugins             # "$name" is listed as installed, not yet enabled
```

## Enable it

A plugin runs only when plugins.toml has a table for it:

```toml
[plugins.$name]
# Where its task runs: any edge server with GET /hello (offload-edge has one). A server with
# local = true is the device itself, used while the device is under its expected_throughput.
servers = [{ name = "edge1", url = "http://127.0.0.1:5000" }]
greeting = "hello"        # string, 1 to 100 characters
max_name_length = 32      # integer, 1 to 256: longer <who> are refused with a 400
# prefix = "/$name"      # where its routes are mounted
```

Then `offload validate` checks the file (a wrong setting stops it with one line naming the
key) and `offload serve` serves the route: `curl http://127.0.0.1:8899/$name/greet/bob`.
The table also takes the core's pool settings (`policy`, `timeout_s`, `retries`, ...);
see the task-offloading README.

## Changing it

The hooks are in `$module/__init__.py`; every hook the gateway calls is documented in
`offload.hookspecs`. Import only from `offload` itself (its `__all__` is the public API).
"""

MODULE = '''\
"""The $name plugin for task-offloading: its settings and its route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offload import READ, OffloadError, OptionReader, PluginContext, Task, hookimpl
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

MAX_GREETING_LENGTH = 100
MAX_NAME_LIMIT = 256


@dataclass(frozen=True)
class Options:
    """The plugin's own settings, checked."""

    greeting: str
    max_name_length: int


@hookimpl
def offload_default_settings() -> dict[str, Any]:
    # A key the user's [plugins.$name] table may set must have a default here (others are refused).
    return {"prefix": "/$name", "greeting": "hello", "max_name_length": 32}


def read_options(plugin: PluginContext) -> Options:
    """The settings with their types and ranges checked; a ConfigError names the key otherwise."""
    reader = OptionReader(plugin.where, plugin.options)
    greeting = reader.string("greeting")
    if not 1 <= len(greeting) <= MAX_GREETING_LENGTH:
        raise reader.fail("greeting", f"a string of 1 to {MAX_GREETING_LENGTH} characters")
    return Options(greeting=greeting, max_name_length=reader.integer("max_name_length", 1, MAX_NAME_LIMIT))


@hookimpl
def offload_routes(plugin: PluginContext) -> Blueprint:
    # Checked here, while the gateway is built, so `offload validate` and `offload serve` both stop
    # with one line on a bad setting, before anything listens.
    options = read_options(plugin)
    # A new blueprint on every call, named uniquely: one process may build several gateways.
    blueprint = Blueprint(f"${module}_{id(plugin)}")

    @blueprint.get("/greet/<who>", ctx_access=READ)
    async def greet(request: Request, who: str) -> HTTPResponse:
        """Greet ``who`` with what the chosen server's GET /hello says."""
        if len(who) > options.max_name_length:
            raise OffloadError(400, f"who must be at most {options.max_name_length} characters")
        result = await plugin.offload(Task("/hello"))
        envelope = result.envelope()
        envelope["data"] = f"{options.greeting}, {who}: the edge says {result.data}"
        return json(envelope, status=result.status_code)

    return blueprint
'''

TESTS = '''\
"""The $name plugin in a real gateway, offloading to a real (stand-in) edge server, all on 127.0.0.1."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from offload import ConfigError, create_app, parse_settings
from sanic import Request, Sanic
from sanic.response import HTTPResponse, json, text

import $module

_app_numbers = itertools.count()


def edge_app() -> Sanic:
    """A stand-in edge server: the GET /hello the plugin's task calls, and the /health the gateway probes."""
    app = Sanic(f"${module}_edge_{next(_app_numbers)}")

    @app.get("/hello")
    async def hello(request: Request) -> HTTPResponse:
        return text("world")

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return json({"status": "ok"})

    return app


def gateway_app(edge_url: str, **options: Any) -> Sanic:
    """The gateway with the plugin enabled as plugins.toml would enable it, its pool being one edge."""
    table = {"servers": [{"name": "edge1", "url": edge_url}], **options}
    settings = parse_settings({"plugins": {"$name": table}}, source="test plugins.toml")
    # The plugin object is handed over directly, so these tests pass with or without `pip install -e`.
    return create_app(settings, extra_plugins={"$name": $module})


async def test_greet_runs_on_the_edge(offload_server: Any, offload_client: Any) -> None:
    edge = await offload_server(edge_app())
    client = await offload_client(gateway_app(edge.url, greeting="ahoy"))
    async with client.get("/$name/greet/bob") as response:
        assert response.status == 200
        body = await response.json()
    assert body["data"] == "ahoy, bob: the edge says world"
    assert body["server"] == "edge1"


async def test_a_name_over_the_limit_is_refused(offload_server: Any, offload_client: Any) -> None:
    edge = await offload_server(edge_app())
    client = await offload_client(gateway_app(edge.url, max_name_length=3))
    async with client.get("/$name/greet/bobby") as response:
        assert response.status == 400
        body = await response.json()
    assert "at most 3 characters" in body["error"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_name_length": "ten"}, "max_name_length must be an integer"),
        ({"max_name_length": 0}, "max_name_length must be an integer of at least 1"),
        ({"greeting": ""}, "greeting must be a string of 1 to"),
        ({"greting": "typo"}, "unknown settings"),
    ],
)
def test_a_bad_setting_stops_the_gateway_with_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        gateway_app("http://127.0.0.1:9", **options)
    assert "[plugins.$name]" in str(caught.value)
    assert "\\n" not in str(caught.value)
'''
