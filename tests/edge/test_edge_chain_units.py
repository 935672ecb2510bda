"""The chain's pure parts without a server: the txpool, loopback checks, envelopes, fees, reverts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_tester.exceptions import TransactionFailed

import offload_edge
from offload_edge.app import EdgeConfig
from offload_edge.chain.fees import rewards_at_percentiles
from offload_edge.chain.jsonrpc import MAX_DEPTH, answer_body, nesting_depth
from offload_edge.chain.node import revert_error
from offload_edge.chain.relay import RelayBackend
from offload_edge.chain.txpool import MAX_PER_SENDER, MAX_QUEUED, QueueFull, Waiting, WaitingTransactions
from offload_edge.cli import main
from offload_edge.loopback import is_loopback_v4, loopback_http_url

# --------------------------------------------------------------------------- txpool


def waiting(sender: int, nonce: int, version: str = "") -> Waiting:
    return Waiting(tx_hash=f"0x{sender:02x}{nonce:04x}{version}", raw=f"raw-{sender}-{nonce}{version}", decoded=None)


def test_txpool_takes_by_sender_and_nonce_and_finds_by_hash() -> None:
    pool = WaitingTransactions()
    pool.hold("A", 3, waiting(1, 3))
    pool.hold("A", 5, waiting(1, 5))
    pool.hold("B", 3, waiting(2, 3))
    assert len(pool) == 3
    assert pool.find(waiting(1, 5).tx_hash) == waiting(1, 5)
    assert pool.take("A", 4) is None and pool.take("C", 3) is None
    assert pool.take("A", 3) == waiting(1, 3)
    assert pool.find(waiting(1, 3).tx_hash) is None and len(pool) == 2
    assert pool.take("A", 5) == waiting(1, 5)
    assert "A" not in pool.by_sender  # an emptied sender leaves no trace


def test_txpool_replacement_keeps_one_per_slot() -> None:
    pool = WaitingTransactions()
    pool.hold("A", 3, waiting(1, 3))
    pool.hold("A", 3, waiting(1, 3, "ff"))
    assert len(pool) == 1
    assert pool.find(waiting(1, 3).tx_hash) is None
    assert pool.take("A", 3) == waiting(1, 3, "ff")


def test_txpool_per_sender_limit() -> None:
    pool = WaitingTransactions()
    for nonce in range(1, MAX_PER_SENDER + 1):
        pool.hold("A", nonce, waiting(1, nonce))
    with pytest.raises(QueueFull, match="txpool is full"):
        pool.hold("A", MAX_PER_SENDER + 1, waiting(1, MAX_PER_SENDER + 1))
    pool.hold("A", 1, waiting(1, 1, "ff"))  # replacing needs no room
    pool.hold("B", 1, waiting(2, 1))  # other senders are not affected
    assert len(pool) == MAX_PER_SENDER + 1


def test_txpool_global_limit() -> None:
    pool = WaitingTransactions()
    senders = MAX_QUEUED // MAX_PER_SENDER
    for sender in range(senders):
        for nonce in range(1, MAX_PER_SENDER + 1):
            pool.hold(f"S{sender}", nonce, waiting(sender, nonce))
    assert len(pool) == MAX_QUEUED
    with pytest.raises(QueueFull):
        pool.hold("newcomer", 1, waiting(senders, 1))
    assert "newcomer" not in pool.by_sender and len(pool) == MAX_QUEUED
    pool.hold("S0", 1, waiting(0, 1, "ff"))  # still room to replace
    pool.take("S0", 2)
    pool.hold("newcomer", 1, waiting(senders, 1))  # and room again once one is taken
    assert len(pool) == MAX_QUEUED


# --------------------------------------------------------------------------- loopback


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000/rpc", "http://127.3.2.1/rpc", "http://127.0.0.1:8545"])
def test_loopback_http_urls_pass_unchanged(url: str) -> None:
    assert loopback_http_url(url) == url


NOT_LOOPBACK_HTTP = [
    "https://127.0.0.1:5000/rpc",
    "ftp://127.0.0.1/rpc",
    "http://localhost:5000/rpc",
    "http://10.0.0.1:5000/rpc",
    "http://[::1]:5000/rpc",
    "http://127.0.0.1@example.com/rpc",
    "http://127.0.0.1:99999/rpc",
    "http://127.0.0.1\\@example.com/rpc",
    "127.0.0.1:5000/rpc",
    "",
]


@pytest.mark.parametrize("url", NOT_LOOPBACK_HTTP)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"must be an http:// URL on 127\.0\.0\.0/8"):
        loopback_http_url(url)


def test_is_loopback_v4_takes_literals_only() -> None:
    assert is_loopback_v4("127.0.0.1") and is_loopback_v4("127.255.0.9")
    assert not any(map(is_loopback_v4, ["localhost", "::1", "128.0.0.1", "127.1", "", "0177.0.0.1"]))


@pytest.mark.parametrize("url", NOT_LOOPBACK_HTTP[:4])
def test_edge_config_refuses_other_upstreams(url: str) -> None:
    with pytest.raises(ValueError, match=r"^chain_upstream must be an http:// URL on 127\.0\.0\.0/8"):
        EdgeConfig(chain_upstream=url)
    with pytest.raises(ValueError, match="must be an http:// URL"):
        RelayBackend(url)


@pytest.mark.parametrize("url", NOT_LOOPBACK_HTTP[:4])
def test_cli_refuses_other_upstreams_in_one_line(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "5999", "--chain-upstream", url]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("offload-edge: error: refusing to relay: --chain-upstream must be an http:// URL")
    assert "127.0.0.0/8" in lines[0] and repr(url) in lines[0]
    assert captured.out == ""


def test_a_relay_edge_loads_no_evm() -> None:
    # Run apart: this test process has long imported eth-tester for the embedded chain.
    script = (
        "import sys\n"
        "from offload_edge.app import EdgeConfig, create_edge_app\n"
        "create_edge_app(EdgeConfig(chain_upstream='http://127.0.0.1:5000/rpc'))\n"
        "print(sorted(name for name in ('eth', 'eth_tester', 'eth_abi', 'rlp') if name in sys.modules))\n"
    )
    package_root = str(Path(offload_edge.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- envelopes


def test_nesting_depth_ignores_brackets_in_strings() -> None:
    assert nesting_depth(b'{"a": [1, [2]]}') == 3
    assert nesting_depth(b'["[[[[", "\\"[[", {"}}": "]"}]') == 2
    assert nesting_depth(b"") == 0


def test_too_deep_bodies_are_parse_errors_without_parsing() -> None:
    def dispatch(method: str, params: object) -> object:
        raise AssertionError("nothing may run")

    deepest_allowed = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert answer_body(deepest_allowed, dispatch)[0]["error"]["code"] == -32600  # parsed: an invalid request
    for body in (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b"[" * 1_000_000):
        assert answer_body(body, dispatch) == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32700, "message": "parse error"},
        }


def test_answers_are_always_strict_json() -> None:
    bodies = [b'{"jsonrpc":"2.0","id":NaN,"method":"m"}', b'{"jsonrpc":"2.0","id":-1e999,"method":"m"}']
    for body in bodies:
        answer = answer_body(body, lambda method, params: "ok")
        json.dumps(answer, allow_nan=False)  # raises for NaN or Infinity
        assert "error" in answer and answer["id"] is None


# --------------------------------------------------------------------------- fees and reverts


def test_rewards_at_percentiles_weigh_by_gas() -> None:
    tips_and_gas = [(5, 21_000), (1, 50_000), (3, 29_000)]
    assert rewards_at_percentiles(tips_and_gas, 100_000, [0, 50, 51, 79, 80, 100]) == [1, 1, 3, 3, 5, 5]
    assert rewards_at_percentiles([], 0, [10, 90]) == [0, 0]


def test_revert_reason_that_looks_like_bytes_is_still_a_reason() -> None:
    error = revert_error(TransactionFailed("b'ad"))
    assert error.code == 3 and error.message == "execution reverted: b'ad"
    raw = revert_error(TransactionFailed("b'\\x01\\x02'"))  # eth-tester's repr of non-Error(string) data
    assert raw.message == "execution reverted" and raw.data == "0x0102"
