"""The README's instructions, tried: the command table against the CLI, and "Running your own" run for real."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from offload.devtools.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
EDGE_README = (ROOT / "edge_server" / "README.md").read_text()
BIN = Path(sys.executable).parent


def section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of that level."""
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def shell_block(text: str) -> str:
    """The first ```sh block of ``text``."""
    match = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert match, "no sh block"
    return match.group(1)


def help_options(*command: str) -> set[str]:
    """The long options a command's --help lists."""
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60, check=True)
    # Only where an option is defined (the start of its help entry), not where a description mentions one.
    return set(re.findall(r"^ {2}(?:-\w[ ,\w]*, )?(--[a-z][a-z0-9-]+)", result.stdout, re.MULTILINE)) - {"--help"}


def subcommands() -> set[str]:
    result = subprocess.run([BIN / "offload", "--help"], capture_output=True, text=True, timeout=60, check=True)
    listed = re.search(r"\{([a-z,]+)\}", result.stdout)
    assert listed, result.stdout
    return set(listed.group(1).split(","))


def command_table_rows() -> dict[str, str]:
    """Each row of the README's command table, by the command it starts with (``offload serve``, ...)."""
    rows = {}
    for line in README.splitlines():
        match = re.match(r"\| `((?:offload|offload-edge)(?: [a-z]+)?)\b([^`]*)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_the_command_table_has_every_subcommand_and_every_serve_option() -> None:
    rows = command_table_rows()
    missing = {name for name in subcommands() if f"offload {name}" not in rows}
    assert not missing, f"README command table lacks: {sorted(missing)}"
    for option in help_options(str(BIN / "offload"), "serve"):
        assert option in rows["offload serve"], f"README's offload serve row lacks {option}"
    for bench in ("perf", "outages", "client", "scale"):
        assert bench in rows["offload bench"]


def test_the_edge_readme_lists_every_edge_option() -> None:
    for option in help_options(str(BIN / "offload-edge")):
        assert f"`{option}`" in EDGE_README or f"`{option} " in EDGE_README, f"edge_server/README.md lacks {option}"


def test_running_your_own_works_as_written(tmp_path: Path) -> None:
    """The README's commands, with this checkout's venv and free ports: edges up, the gateway answers a
    math task and a contract read, and after the last line no edge is left running."""
    script = shell_block(section(README, "Running your own"))
    ports = {"5000": free_port(), "5001": free_port(), "5002": free_port(), "8899": free_port()}
    config = (ROOT / "plugins.toml").read_text()
    for old, new in ports.items():
        script = script.replace(old, str(new))
        config = config.replace(f":{old}", f":{new}").replace(f"port = {old}", f"port = {new}")
    (tmp_path / "plugins.toml").write_text(config)
    assert "source .venv/bin/activate" in script and "OFFLOAD_API_TOKEN=..." in script
    script = script.replace("source .venv/bin/activate", f"source {BIN / 'activate'}")
    script = script.replace("OFFLOAD_API_TOKEN=...", f"OFFLOAD_API_TOKEN={secrets.token_urlsafe(16)}")
    serve = next(line for line in script.splitlines() if line.startswith("offload serve"))
    gateway = f"http://127.0.0.1:{ports['8899']}"
    # The gateway runs in the foreground in the README (Ctrl-C stops it): here it runs in the
    # background until two requests are answered, then gets the SIGINT Ctrl-C would send.
    script = script.replace(
        serve,
        f"{serve.split('#')[0]} & GATEWAY=$!\n"
        f"until curl -sf {gateway}/health >/dev/null; do sleep 0.2; done\n"
        f"curl -s {gateway}/square/20; echo\n"
        f"curl -s '{gateway}/contracts/execcontract?contractID=Hello&operation=hello'; echo\n"
        "kill -INT $GATEWAY; wait $GATEWAY\n",
    )
    # Only when a line fails: the edges the README starts must not outlive this test.
    script = "trap 'if [ $? -ne 0 ]; then kill ${EDGES:-} ${GATEWAY:-} 2>/dev/null; fi' EXIT\n" + script
    script += "echo EDGES=$EDGES\n"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OFFLOAD_")}
    process = subprocess.Popen(
        ["bash", "-e", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, out + err
    assert '"data":"400.0"' in out.replace(" ", "")
    assert "Hello, world!" in out
    pids = [int(pid) for pid in re.search(r"EDGES=([\d ]+)", out).group(1).split()]  # type: ignore[union-attr]
    assert len(pids) == 3
    assert wait_until_gone(pids, timeout_s=15), "the README's last line left edges running"


def wait_until_gone(pids: list[int], timeout_s: float) -> bool:
    """True once none of ``pids`` runs; False (after ending them) if some still run at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [pid for pid in pids if alive(pid)]:
            return True
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
