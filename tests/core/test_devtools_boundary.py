"""The runtime never imports the developer tooling (``offload.devtools``: demo, benchmarks, processes)."""

from __future__ import annotations

import ast
from pathlib import Path

import offload

PACKAGE = Path(offload.__file__).resolve().parent
# cli.py dispatches ``offload demo`` and ``offload bench`` to devtools, lazily inside those commands.
OUTSIDE_RUNTIME = (PACKAGE / "devtools", PACKAGE / "cli.py")


def runtime_modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if not any(path == outside or outside in path.parents for outside in OUTSIDE_RUNTIME)
    )


def devtools_imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, statement) for every import of offload.devtools in ``source``, the text of module ``module``."""
    package = module.split(".")[:-1]  # a module's relative imports start from its package
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            target = ".".join(part for part in (base, node.module or "") if part)
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(name == "offload.devtools" or name.startswith("offload.devtools.") for name in names):
            found.append((node.lineno, ast.unparse(node)))
    return found


def module_name(path: Path) -> str:
    """``offload.engine`` for engine.py; ``offload.__init__`` for the package itself (both import from ``offload``)."""
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_runtime_modules_are_found() -> None:
    modules = runtime_modules()
    assert {"app.py", "engine.py", "__init__.py"} <= {path.name for path in modules}
    assert not any("devtools" in path.parts for path in modules)
    assert PACKAGE / "cli.py" not in modules


def test_runtime_never_imports_devtools() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {statement}"
        for path in runtime_modules()
        for line, statement in devtools_imports(path.read_text(encoding="utf-8"), module_name(path))
    ]
    assert not offenders, "the runtime imports offload.devtools:\n" + "\n".join(offenders)


def test_every_spelling_of_the_import_is_caught() -> None:
    caught = [
        "import offload.devtools",
        "import offload.devtools.demo as demo",
        "from offload.devtools import demo",
        "from offload.devtools.bench.load import Sample",
        "from .devtools import ports",
        "from .devtools.processes import ProcessGroup",
        "from . import devtools",
        "def later():\n    from .devtools.demo import run_demo",
    ]
    for source in caught:
        assert devtools_imports(source, "offload.engine") == [(source.count("\n") + 1, source.split("\n")[-1].strip())]
    assert devtools_imports("from ..devtools import demo", "offload.transports.native") == [
        (1, "from ..devtools import demo")
    ]
    for source in ["import offload.engine", "from . import engine", "from .stats import mean", "import devtools"]:
        assert devtools_imports(source, "offload.engine") == [], source
