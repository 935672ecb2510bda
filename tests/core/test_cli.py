"""The `offload` command as a user runs it: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def run_offload(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "offload", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[plugins.math\nservers = []", "invalid TOML"),
        ("[plugins.nosuchplugin]\n", "plugin 'nosuchplugin' is enabled"),
        ('[plugins.math]\nexpected_throughput = "lots"\n', "expected_throughput must be an integer"),
        ("[plugins.math]\nexpected_througput = 30\n", "unknown settings ['expected_througput']"),
        ('[plugins.math]\npolicy = "fastest"\n', "unknown policy 'fastest'"),
        ('[plugins.math]\nservers = ["ftp://127.0.0.1"]\n', "must use http or https"),
        ("[gateway]\nport = 70000\n", "port must be an integer of at least 0 and at most 65535"),
        ('[gateway]\nupstream_client = "curl"\n', 'upstream_client must be one of "native", "aiohttp"'),
        ('[plugins.math]\nprefix = "math"\n', "prefix must be '' or a path starting with /"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "validate"])
def test_bad_config_exits_2_with_one_clear_line(tmp_path: Path, toml: str, expected: str, command: str) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text(toml)
    result = run_offload(command, "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("offload: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = run_offload("serve", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml: no such file" in result.stderr


def test_validate_accepts_the_shipped_plugins_toml() -> None:
    shipped = Path(__file__).parents[2] / "plugins.toml"
    result = run_offload("validate", "--config", str(shipped))
    assert result.returncode == 0, result.stderr
    assert "plugin math: prefix /, pools math (3 servers)" in result.stdout
    assert "plugin contracts: prefix /contracts, pools contracts (2 servers)" in result.stdout


def test_plugins_lists_installed_plugins_with_versions(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text("[plugins.math]\n[plugins.ghost]\n")
    result = run_offload("plugins", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    math = next(row for row in listing["installed"] if row["name"] == "math")
    assert math["distribution"] == "offload-math" and math["enabled"] is True
    assert math["version"] and math["target"] == "offload_math.plugin"
    assert listing["enabled"] == [{"name": "math", "installed": True}, {"name": "ghost", "installed": False}]


def test_load_allowlist_refuses_unlisted_plugins(tmp_path: Path) -> None:
    import os

    config = tmp_path / "plugins.toml"
    config.write_text("[plugins.math]\n")
    result = subprocess.run(
        [sys.executable, "-m", "offload", "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OFFLOAD_LOAD_PLUGINS": "contracts"},
    )
    assert result.returncode == 2
    assert "OFFLOAD_LOAD_PLUGINS does not list it" in result.stderr


@pytest.mark.parametrize(("flag", "value"), [("--duration", "0"), ("--duration", "-1"), ("--rounds", "x")])
def test_bench_perf_refuses_bad_numbers_before_starting_anything(flag: str, value: str) -> None:
    result = run_offload("bench", "perf", flag, value)
    assert result.returncode == 2
    assert f"argument {flag}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_refuses_an_out_of_range_port_with_one_line(tmp_path: Path, port: str) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text("[plugins.math]\nservers = []\n")
    result = run_offload("serve", "--config", str(config), "--port", port)
    assert result.returncode == 2
    assert result.stderr.strip() == f"offload: error: --port must be from 0 (any free port) to 65535, got {port}"


def test_serve_on_port_0_listens_on_a_free_port_and_says_which(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text("[plugins.math]\nservers = []\n")
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # printed before the server starts; the process ends if it fails
        assert first.startswith("offload: serving on http://127.0.0.1:"), first
        port = int(first.strip().rsplit(":", 1)[1])
        assert port not in (0, 8000, 8899)
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    assert json.load(reply)["status"] == "ok"
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the gateway never answered"
                time.sleep(0.05)  # polling until it listens, bounded by the deadline
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_validate_counts_one_server_in_the_singular(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text('[plugins.math]\nservers = ["127.0.0.1:5000"]\n')
    result = run_offload("validate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "pools math (1 server)" in result.stdout
