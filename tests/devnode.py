"""A real Ethereum dev node (hardhat from the npm registry), started on loopback for the tests.

``scripts/devnode/install.sh`` installs it (CI does; so can you, with Node.js).
Without it the dev-node tests fail under CI (or ``OFFLOAD_REQUIRE_DEVNODE=1``)
and are skipped elsewhere with the command to run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_utils import to_checksum_address

from offload.testing import bind_loopback

DEVNODE_DIR = Path(__file__).resolve().parent.parent / "scripts" / "devnode"
HARDHAT = DEVNODE_DIR / "node_modules" / ".bin" / "hardhat"
STARTUP_TIMEOUT_S = 60.0
# hardhat's well-known, publicly documented dev accounts (mnemonic "test test ... junk").
HARDHAT_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)
HARDHAT_ACCOUNTS = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
)


@dataclass(frozen=True)
class DevNode:
    """A running dev node."""

    url: str  # JSON-RPC endpoint, e.g. http://127.0.0.1:41234/
    base_url: str  # the same without the path, for a gateway's servers list
    chain_id: int
    accounts: tuple[str, ...]
    private_keys: tuple[str, ...]
    pid: int


def dev_node_available() -> tuple[bool, str]:
    """Whether hardhat is installed, and if not, how to install it."""
    if HARDHAT.exists():
        return True, str(HARDHAT)
    return False, "the dev node is not installed: run scripts/devnode/install.sh (needs Node.js and npm)"


def rpc_call(url: str, method: str, params: list | None = None, timeout_s: float = 2.0) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        return json.loads(reply.read())["result"]


@pytest.fixture(scope="module")
def dev_node() -> Iterator[DevNode]:
    """A hardhat node on 127.0.0.1 and a free port, for the whole test module; stopped by its PID."""
    installed, detail = dev_node_available()
    if not installed:
        if os.environ.get("CI") or os.environ.get("OFFLOAD_REQUIRE_DEVNODE") == "1":
            pytest.fail(detail)
        pytest.skip(detail)
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}/"
    log = tempfile.NamedTemporaryFile(prefix="hardhat-", suffix=".log", delete=False)  # noqa: SIM115
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "DO_NOT_TRACK": "1"}
    process = subprocess.Popen(
        [str(HARDHAT), "node", "--hostname", "127.0.0.1", "--port", str(port)],
        cwd=DEVNODE_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"hardhat exited with {process.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                chain_id = int(str(rpc_call(url, "eth_chainId")), 16)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"hardhat did not answer on {url} within {STARTUP_TIMEOUT_S:g} s")
                time.sleep(0.1)  # bounded readiness poll of a process we just started
        # Nodes answer lowercase addresses; compare and report them checksummed.
        accounts = tuple(to_checksum_address(str(account)) for account in rpc_call(url, "eth_accounts"))  # type: ignore[union-attr]
        yield DevNode(
            url=url,
            base_url=url.rstrip("/"),
            chain_id=chain_id,
            accounts=accounts[: len(HARDHAT_KEYS)],
            private_keys=HARDHAT_KEYS,
            pid=process.pid,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)
