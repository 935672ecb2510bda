"""What one JSON-RPC request may cost the embedded chain; importable without py-evm."""

from __future__ import annotations

__all__ = ["DEFAULT_CALL_TIMEOUT_S", "DEFAULT_GAS_CAP", "MAX_CALL_TIMEOUT_S", "MIN_GAS_CAP", "go_duration"]

# geth's --rpc.gascap default: the most gas an eth_call or eth_estimateGas may use.
DEFAULT_GAS_CAP = 50_000_000
# Below this not even a plain transfer could be estimated.
MIN_GAS_CAP = 21_000
# The wall-clock budget of all eth_call / eth_estimateGas work in one request (geth: --rpc.evmtimeout,
# 5 s). The chain serves one request at a time, so this is also about the longest anyone else
# waits behind such a request; 1 s keeps that well under 2 s while normal calls take milliseconds.
DEFAULT_CALL_TIMEOUT_S = 1.0
MAX_CALL_TIMEOUT_S = 60.0


def go_duration(seconds: float) -> str:
    """``seconds`` as geth prints a duration in its messages: ``1s``, ``1.5s``, ``250ms``."""
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"
