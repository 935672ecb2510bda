"""Command line entry point: ``offload-edge`` / ``python -m offload_edge``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .app import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_DELAY_MS,
    MAX_MAX_BODY_BYTES,
    MAX_SPIKE_EVERY,
    MIN_MAX_BODY_BYTES,
    EdgeConfig,
    create_edge_app,
)
from .chain.limits import DEFAULT_CALL_TIMEOUT_S, DEFAULT_GAS_CAP, MAX_CALL_TIMEOUT_S, MIN_GAS_CAP
from .loopback import is_loopback_v4, loopback_http_url
from .protocol import EdgeHttpProtocol

# The same variable the gateway reads its API token from, so one secret serves both.
TOKEN_ENV = "OFFLOAD_API_TOKEN"


def _number_type(kind: type[int] | type[float], minimum: float, maximum: float = math.inf, words: str = "") -> Any:
    """An argparse type accepting ``kind`` values from ``minimum`` to ``maximum``, saying so when refused."""

    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not minimum <= number <= maximum:
            raise argparse.ArgumentTypeError(f"must be {words}, got {value!r}")
        return number

    return parse


_port = _number_type(int, 1, 65535, "an integer from 1 to 65535")
_delay_ms = _number_type(float, 0, MAX_DELAY_MS, f"a number from 0 to {MAX_DELAY_MS:g}")
_processes = _number_type(int, 1, words="an integer >= 1")
_spike_every = _number_type(int, 0, MAX_SPIKE_EVERY, f"an integer from 0 to {MAX_SPIKE_EVERY}")
_call_timeout_s = _number_type(float, 0.001, MAX_CALL_TIMEOUT_S, f"a number from 0.001 to {MAX_CALL_TIMEOUT_S:g}")
_gas_cap = _number_type(int, MIN_GAS_CAP, words=f"an integer >= {MIN_GAS_CAP}")
_body_bytes = _number_type(
    int, MIN_MAX_BODY_BYTES, MAX_MAX_BODY_BYTES, f"an integer from {MIN_MAX_BODY_BYTES} to {MAX_MAX_BODY_BYTES}"
)


def _peers(value: str) -> list[str]:
    return [peer.strip() for peer in value.split(",") if peer.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``offload-edge``."""
    parser = argparse.ArgumentParser(
        prog="offload-edge",
        description="Run a reference edge node for the task-offloading gateway.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.0/8 only)")
    parser.add_argument("--port", type=_port, default=5000, help="TCP port (default: %(default)s)")
    parser.add_argument("--name", default="edge", help="node name reported by /health (default: %(default)s)")
    parser.add_argument(
        "--delay-ms",
        type=_delay_ms,
        default=0.0,
        help=f"simulated link delay added to every request except /admin, in ms, at most {MAX_DELAY_MS:g} (default: 0)",
    )
    parser.add_argument(
        "--compute-ms",
        type=_delay_ms,
        default=0.0,
        help=f"extra time every task takes, in ms, at most {MAX_DELAY_MS:g}: a slower processor that probes "
        "cannot see (default: 0)",
    )
    parser.add_argument(
        "--spike-every",
        type=_spike_every,
        default=0,
        metavar="N",
        help="every Nth request (not /admin) waits --spike-ms longer: deterministic latency outliers "
        "(default: 0, none)",
    )
    parser.add_argument(
        "--spike-ms",
        type=_delay_ms,
        default=0.0,
        help=f"the extra delay of each --spike-every outlier, in ms; with the link delay at most {MAX_DELAY_MS:g} "
        "(default: 0)",
    )
    parser.add_argument(
        "--peers",
        type=_peers,
        default=[],
        help="comma-separated addresses advertised by /getserverlists",
    )
    parser.add_argument(
        "--processes",
        type=_processes,
        default=None,
        help="process pool size for CPU tasks (default: number of CPUs)",
    )
    parser.add_argument(
        "--admin-token-file",
        metavar="PATH",
        help=f"file holding the operator's token for the /admin routes (surrounding whitespace ignored); "
        f"default: ${TOKEN_ENV}; with neither, /admin is off",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_body_bytes,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted, larger ones get 413 (default: %(default)s)",
    )
    chain = parser.add_mutually_exclusive_group()
    chain.add_argument(
        "--chain", action="store_true", help="serve an embedded EVM dev chain at POST /rpc (demo contracts deployed)"
    )
    chain.add_argument(
        "--chain-upstream",
        metavar="URL",
        help="relay POST /rpc to another node's JSON-RPC URL (loopback only), e.g. http://127.0.0.1:5000/rpc",
    )
    parser.add_argument(
        "--call-timeout-s",
        type=_call_timeout_s,
        default=DEFAULT_CALL_TIMEOUT_S,
        help="--chain: wall-clock limit for the eth_call/eth_estimateGas work of one request, after which it is "
        "aborted (default: %(default)s)",
    )
    parser.add_argument(
        "--rpc-gas-cap",
        type=_gas_cap,
        default=DEFAULT_GAS_CAP,
        help="--chain: most gas one eth_call/eth_estimateGas may use, as geth's --rpc.gascap (default: %(default)s)",
    )
    return parser


def admin_token(token_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The operator's token: the file's content if a file is given, else ``$OFFLOAD_API_TOKEN``, else None.

    Raises ``ValueError`` saying why for a file that cannot be read or holds no token.
    """
    if token_file is None:
        return environ.get(TOKEN_ENV, "").strip() or None  # set but empty means unset, as for most tools
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --admin-token-file {token_file!r}: {exc}") from None
    if not token:
        raise ValueError(f"--admin-token-file {token_file!r} is empty")
    return token


def _refusal(args: argparse.Namespace) -> str | None:
    """Why this node must not start with ``args`` (it talks on loopback only), or None."""
    if not is_loopback_v4(args.host):
        return f"refusing to bind {args.host!r}: only loopback addresses (127.0.0.0/8) are allowed"
    if args.chain_upstream is not None:
        try:
            loopback_http_url(args.chain_upstream)
        except ValueError as exc:
            return f"refusing to relay: --chain-upstream {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted; returns the process exit code.

    A refused address or upstream, or an unusable admin token, is one line on stderr and exit
    code 2, as argparse's own errors.
    """
    args = build_parser().parse_args(argv)
    refusal = _refusal(args)
    if refusal is not None:
        # This node is for local experiments only; never expose it or relay off this machine.
        print(f"offload-edge: error: {refusal}", file=sys.stderr)
        return 2

    try:
        config = EdgeConfig(
            name=args.name,
            delay_ms=args.delay_ms,
            compute_ms=args.compute_ms,
            spike_every=args.spike_every,
            spike_ms=args.spike_ms,
            peers=args.peers,
            processes=args.processes,
            chain=args.chain,
            chain_upstream=args.chain_upstream,
            admin_token=admin_token(args.admin_token_file, os.environ),
            max_body_bytes=args.max_body_bytes,
            call_timeout_s=args.call_timeout_s,
            rpc_gas_cap=args.rpc_gas_cap,
        )
    except ValueError as exc:  # an unusable token: the message never includes the token itself
        print(f"offload-edge: error: {exc}", file=sys.stderr)
        return 2
    app = create_edge_app(config)
    # single_process keeps the started PID the server itself (no worker manager),
    # so callers can stop it by PID; Sanic's own SIGINT/SIGTERM handlers stop it cleanly.
    app.run(
        host=args.host, port=args.port, single_process=True, access_log=False, motd=False, protocol=EdgeHttpProtocol
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
