"""Command line entry point: ``offload-edge`` / ``python -m offload_edge``."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from .app import EdgeConfig, create_edge_app
from .loopback import is_loopback_v4, loopback_http_url


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
_delay_ms = _number_type(float, 0, words="a number >= 0")
_processes = _number_type(int, 1, words="an integer >= 1")


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
        help="simulated link delay added to every request, in ms (default: %(default)s)",
    )
    parser.add_argument(
        "--compute-ms",
        type=_delay_ms,
        default=0.0,
        help="extra time every task takes, in ms: a slower processor that probes cannot see (default: 0)",
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
    chain = parser.add_mutually_exclusive_group()
    chain.add_argument(
        "--chain", action="store_true", help="serve an embedded EVM dev chain at POST /rpc (demo contracts deployed)"
    )
    chain.add_argument(
        "--chain-upstream",
        metavar="URL",
        help="relay POST /rpc to another node's JSON-RPC URL (loopback only), e.g. http://127.0.0.1:5000/rpc",
    )
    return parser


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

    A refused address or upstream is one line on stderr and exit code 2, as argparse's own errors.
    """
    args = build_parser().parse_args(argv)
    refusal = _refusal(args)
    if refusal is not None:
        # This node is for local experiments only; never expose it or relay off this machine.
        print(f"offload-edge: error: {refusal}", file=sys.stderr)
        return 2

    config = EdgeConfig(
        name=args.name,
        delay_ms=args.delay_ms,
        compute_ms=args.compute_ms,
        peers=args.peers,
        processes=args.processes,
        chain=args.chain,
        chain_upstream=args.chain_upstream,
    )
    app = create_edge_app(config)
    # single_process keeps the started PID the server itself (no worker manager),
    # so callers can stop it by PID; Sanic's own SIGINT/SIGTERM handlers stop it cleanly.
    app.run(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
