"""`offload plugins new NAME`: the package it writes passes its own tests and ruff, before and after pip install -e."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from offload.cli import main
from offload.devtools.scaffold import ScaffoldError, write_plugin

BIN = Path(sys.executable).parent
RUFF = BIN / "ruff"
EXPECTED_FILES = (
    "README.md",
    "offload_demo_plugin/__init__.py",
    "pyproject.toml",
    "tests/test_demo_plugin.py",
)


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_new_writes_the_package_and_says_what_next(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "new", "demo_plugin", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    package = tmp_path / "demo_plugin"
    written = sorted(str(path.relative_to(package)) for path in package.rglob("*") if path.is_file())
    assert written == list(EXPECTED_FILES)
    for name in EXPECTED_FILES:
        assert str(package / name) in out
    steps = out.split("next:\n", 1)[1].splitlines()
    assert steps == [
        f"  pip install -e {package}",
        f"  pytest {package}",
        "  offload plugins   # lists demo_plugin; enable it with [plugins.demo_plugin] in plugins.toml",
    ]
    pyproject = (package / "pyproject.toml").read_text()
    assert 'name = "offload-demo-plugin"' in pyproject
    assert '[project.entry-points.offload]\ndemo_plugin = "offload_demo_plugin"' in pyproject
    assert '"task-offloading>=0.1"' in pyproject
    assert "[plugins.demo_plugin]" in (package / "README.md").read_text()
    assert not [path for path in tmp_path.iterdir() if path.name != "demo_plugin"], "a staging directory was left"


def test_new_never_overwrites_and_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "demo_plugin"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    assert main(["plugins", "new", "demo_plugin", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert [path.name for path in existing.iterdir()] == ["mine.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo_plugin"]


@pytest.mark.parametrize(
    "name", ["", "Demo", "9lives", "has space", "dots.no", "trailing-", "double__sep", "x" * 41, "../up", "é"]
)
def test_bad_names_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError, match="lower-case letters, digits"):
        write_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_name_of_an_installed_plugin_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The math plugin is installed in the dev environment: a second entry point "math" would clash with it.
    assert main(["plugins", "new", "math", "--dir", str(tmp_path)]) == 2
    assert "already installed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="is not a directory"):
        write_plugin("demo_plugin", tmp_path / "nowhere")


def test_plugins_listing_still_works_beside_new(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--config", "/nonexistent/plugins.toml", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "math" in {row["name"] for row in listing["installed"]}
    assert main(["plugins", "--config", "/nonexistent/plugins.toml"]) == 0
    assert capsys.readouterr().out.startswith("name ")


def test_generated_tests_pass_and_ruff_is_clean(tmp_path: Path) -> None:
    """Fast: the package importable through PYTHONPATH, the plugin handed to the gateway by object."""
    package = write_plugin("demo-plugin", tmp_path).directory
    env = {**os.environ, "PYTHONPATH": str(package)}
    tests = run(sys.executable, "-m", "pytest", package, "-q", "-p", "no:cacheprovider", cwd=tmp_path, env=env)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout
    lint = run(RUFF, "check", package, cwd=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = run(RUFF, "format", "--check", package, cwd=tmp_path)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_done_when_new_then_pip_install_e_then_pytest(tmp_path: Path) -> None:
    """The issue's check, for real, in a venv of its own so this environment gains no package.

    The venv sees this environment's packages (task-offloading, pytest, setuptools) through a
    .pth that adds its site-packages as a site directory (so their own .pth files, the editable
    installs, work too), as if they had been installed into it; ``--system-site-packages`` would
    show the base interpreter's instead.
    """
    assert run(BIN / "offload", "plugins", "new", "demo_plugin", cwd=tmp_path).returncode == 0
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).stdout.strip()
    parents = [path for path in site.getsitepackages() if Path(path).is_dir()]
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in parents)
    (Path(purelib) / "_offload_parent_env.pth").write_text(lines)
    pip = ("-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps", "--no-build-isolation")

    installed = run(python, *pip, "-e", "./demo_plugin", cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    tests = run(python, "-m", "pytest", "demo_plugin", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout

    # The gateway finds it through its entry point, from the editable install.
    listing = run(python, "-m", "offload", "plugins", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)["installed"]}
    assert rows["demo_plugin"]["distribution"] == "offload-demo-plugin"
    assert rows["demo_plugin"]["target"] == "offload_demo_plugin"
    where = run(python, "-c", "import offload_demo_plugin; print(offload_demo_plugin.__file__)", cwd=tmp_path)
    assert where.stdout.strip() == str(tmp_path / "demo_plugin" / "offload_demo_plugin" / "__init__.py")
    with pytest.raises(PackageNotFoundError):
        distribution("offload-demo-plugin")  # installed into the test's venv only
