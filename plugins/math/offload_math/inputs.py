"""Checking task inputs at the gateway, so bad input costs no round trip.

The limits match the reference edge server's; a number outside them is the
caller's mistake (400), not something to send anywhere.
"""

from __future__ import annotations

import math

from offload import OffloadError

NTH_PRIME_MAX = 200_000
MATMUL_MAX = 300
HASH_CHAIN_MAX = 5_000_000


def finite_number(name: str, raw: str) -> str:
    """``raw`` if it parses as a finite float (the original squared ``float(num)``)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise OffloadError(400, f"{name} must be a finite number such as 20 or -1.5, got {raw!r}")
    return raw


def bounded_int(name: str, raw: str, maximum: int) -> int:
    """``raw`` as an int from 1 to ``maximum``."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise OffloadError(400, f"{name} must be an integer from 1 to {maximum}, got {raw!r}")
    return value
