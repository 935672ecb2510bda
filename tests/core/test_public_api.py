"""The plugin boundary: ``offload``'s top-level names are the whole public API.

Plugins (the bundled ones, the example third-party one, the README's) import only
from ``offload`` itself; a change to what it exports is deliberate (this file's
expected set changes with it), and every exported name is documented.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import offload
from offload.pytest_plugin import ClientFactory

from conftest import EdgeFactory

ROOT = Path(__file__).parents[2]
PLUGIN_DIRS = (ROOT / "plugins", ROOT / "tests" / "plugins")

EXPECTED_PUBLIC_NAMES = {
    "CACHE_HEADER",
    "Fresh",
    "ReadCache",
    "OPERATOR",
    "READ",
    "SERVER_HEADER",
    "ConfigError",
    "NonceLease",
    "OffloadError",
    "OffloadResult",
    "OptionReader",
    "PluginContext",
    "Policy",
    "PoolConfig",
    "ProbeResult",
    "Server",
    "StateBackend",
    "StateUnavailable",
    "Task",
    "create_app",
    "describe_exception",
    "envelope_response",
    "hookimpl",
    "load_json",
    "parse_server_list",
    "parse_settings",
    "require_operator",
}
# Modules the public names must not drag into a bare ``import offload`` (they load on first use).
HEAVY_MODULES = ("aiohttp", "offload.app", "offload.engine", "offload.health", "offload.registry")


def offload_import_violations(source: str) -> Iterator[tuple[int, str]]:
    """(line, reason) for every import in ``source`` that reaches past ``offload``'s public names."""
    public = set(offload.__all__)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("offload."):
                    yield node.lineno, f"import {alias.name}: import from offload itself"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module.startswith("offload."):
                yield node.lineno, f"from {node.module} import ...: import from offload itself"
            elif node.module == "offload":
                for alias in node.names:
                    if alias.name not in public:
                        yield node.lineno, f"from offload import {alias.name}: not in offload.__all__"


def plugin_sources() -> list[Path]:
    """Every .py file of the bundled and example plugins, build output and egg-info excluded."""
    files: list[Path] = []
    for base in PLUGIN_DIRS:
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).parts
            if any(part == "build" or part.endswith(".egg-info") for part in parts):
                continue
            files.append(path)
    return files


def readme_plugin_examples() -> list[str]:
    """The python code blocks of the README's "Writing a plugin" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Writing a plugin\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match is not None, 'README.md has no "## Writing a plugin" section'
    return re.findall(r"^```python\n(.*?)^```", match.group(1), re.MULTILINE | re.DOTALL)


def test_all_is_exactly_the_expected_public_names() -> None:
    assert set(offload.__all__) == EXPECTED_PUBLIC_NAMES
    assert len(offload.__all__) == len(EXPECTED_PUBLIC_NAMES), "a name is listed twice in offload.__all__"


def test_every_public_name_is_importable_and_documented() -> None:
    package_doc = offload.__doc__ or ""
    for name in offload.__all__:
        value = getattr(offload, name)
        assert name in dir(offload)
        # The package docstring is the index of the public API; constants are documented only there.
        assert f"``{name}``" in package_doc, f"{name} is not described in offload's docstring"
        if not isinstance(value, str | int | float | bytes):
            assert inspect.getdoc(value), f"offload.{name} has no docstring"


def test_unknown_attribute_is_an_attribute_error() -> None:
    assert not hasattr(offload, "no_such_name")


def test_import_offload_stays_cheap() -> None:
    code = f"import sys, offload; print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import offload loads {result.stdout.strip()}"


def test_import_check_flags_submodules_and_private_names() -> None:
    source = (
        "import offload\n"
        "from offload import Task, hookimpl\n"
        "from offload.context import PluginContext\n"
        "import offload.health\n"
        "from offload import safe_json\n"
        "from . import offload\n"
    )
    assert sorted(line for line, _ in offload_import_violations(source)) == [3, 4, 5]


def test_plugins_import_only_public_names() -> None:
    files = plugin_sources()
    assert any(path.name == "plugin.py" for path in files), "no plugin sources found"
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {reason}"
        for path in files
        for line, reason in offload_import_violations(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "plugins must import only from offload's public names:\n" + "\n".join(problems)


def test_readme_plugin_examples_import_only_public_names() -> None:
    blocks = readme_plugin_examples()
    assert blocks, 'the README\'s "Writing a plugin" section has no python example'
    assert any("from offload import" in block for block in blocks)
    problems = [
        f"example {number}, line {line}: {reason}"
        for number, block in enumerate(blocks, 1)
        for line, reason in offload_import_violations(block)
    ]
    assert not problems, "README plugin examples must import only public names:\n" + "\n".join(problems)


async def test_the_readme_plugin_and_its_test_run_as_written(
    edge: EdgeFactory, offload_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_code, test_code = readme_plugin_examples()
    plugin = types.ModuleType("offload_weather")
    exec(compile(plugin_code, "README: offload_weather/__init__.py", "exec"), plugin.__dict__)
    monkeypatch.setitem(sys.modules, "offload_weather", plugin)
    # The example's test, run as written except for where its edge listens (a real one, here).
    weather_edge = await edge("weather")
    test_code = test_code.replace("127.0.0.1:5001", f"127.0.0.1:{weather_edge.port}")
    answers: list[aiohttp.ClientResponse] = []

    async def recording(app: Any) -> aiohttp.ClientSession:
        session = await offload_client(app)
        original_get = session.get

        async def get(path: str, **kwargs: Any) -> aiohttp.ClientResponse:
            answer = await original_get(path, **kwargs)
            answers.append(answer)
            return answer

        session.get = get  # type: ignore[method-assign]
        return session

    namespace: dict[str, Any] = {}
    exec(compile(test_code, "README: the plugin's test", "exec"), namespace)
    await namespace["test_now"](recording)
    assert len(answers) == 1
    # The plugin's route answered, by way of the edge (which has no /weather task: its 404 is relayed).
    assert answers[0].headers["X-Offload-Server"] == f"127.0.0.1:{weather_edge.port}"
    body = await answers[0].json()
    assert body["server"] == f"127.0.0.1:{weather_edge.port}" and body["status_code"] == 404


def test_plugins_do_not_reach_around_their_context_for_the_engine() -> None:
    reaching = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in plugin_sources()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "require_engine" in line or ".engine." in line
    ]
    assert reaching == [], "plugins use PluginContext's methods, not the engine behind it: " + ", ".join(reaching)
