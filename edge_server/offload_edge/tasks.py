"""Pure, CPU-bound task functions served by the edge node, and their input limits.

Everything here is deliberately free of I/O and of Sanic so the functions can be
pickled into a process pool, unit-tested directly, and reused by benchmarks.
The limits keep a single request bounded to a few seconds of CPU time.
"""

from __future__ import annotations

import hashlib
import math
import re
from itertools import compress, islice

__all__ = [
    "HASH_CHAIN_MAX_ROUNDS",
    "HASH_CHAIN_MIN_ROUNDS",
    "HASH_CHAIN_SEED",
    "MATMUL_MAX_N",
    "MATMUL_MIN_N",
    "NTH_PRIME_MAX_N",
    "NTH_PRIME_MIN_N",
    "TaskInputError",
    "hash_chain",
    "matmul_checksum",
    "nth_prime",
    "parse_int",
    "square",
]

NTH_PRIME_MIN_N = 1
NTH_PRIME_MAX_N = 200_000
MATMUL_MIN_N = 1
MATMUL_MAX_N = 300
HASH_CHAIN_MIN_ROUNDS = 1
HASH_CHAIN_MAX_ROUNDS = 5_000_000

HASH_CHAIN_SEED = b"offload"

# Plain ASCII digits with an optional sign. int() alone would also accept
# whitespace, underscores and non-ASCII digits, which are surprising in a URL.
_INT_PATTERN = re.compile(r"[+-]?[0-9]+")
# Anything longer cannot be in range; checking first avoids converting huge strings.
_MAX_INT_CHARS = 20
# Inputs are echoed back in error messages; keep those messages short.
_MAX_ECHO_CHARS = 40


class TaskInputError(ValueError):
    """A task input is outside what the task accepts; the message says what is accepted."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _echo(raw: object) -> str:
    """Quote a rejected input for an error message, truncated so messages stay readable."""
    text = raw if isinstance(raw, str) else str(raw)
    if len(text) > _MAX_ECHO_CHARS:
        text = text[:_MAX_ECHO_CHARS] + "..."
    return repr(text)


def _range_error(name: str, raw: object, minimum: int, maximum: int) -> TaskInputError:
    return TaskInputError(f"{name} must be an integer from {minimum} to {maximum}, got {_echo(raw)}")


def parse_int(raw: str, *, name: str, minimum: int, maximum: int) -> int:
    """Parse a URL path segment into an int within ``[minimum, maximum]``.

    Raises :class:`TaskInputError` naming the parameter and the accepted range,
    e.g. ``n must be an integer from 1 to 200000, got 'abc'``.
    """
    if len(raw) > _MAX_INT_CHARS or not _INT_PATTERN.fullmatch(raw):
        raise _range_error(name, raw, minimum, maximum)
    value = int(raw)
    if not minimum <= value <= maximum:
        raise _range_error(name, raw, minimum, maximum)
    return value


def _require_int(name: str, value: object, minimum: int, maximum: int) -> int:
    """Validate an already-typed argument, so direct callers get the same guarantees as HTTP ones."""
    # bool is an int subclass, but nth_prime(True) is certainly a bug.
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _range_error(name, value, minimum, maximum)
    return value


def _prime_upper_bound(n: int) -> int:
    """An integer that is >= the n-th prime.

    Uses p_n < n(ln n + ln ln n), valid for n >= 6; the first five primes are <= 11.
    """
    if n < 6:
        return 11
    # +1 because int() truncates the real bound.
    return int(n * (math.log(n) + math.log(math.log(n)))) + 1


def nth_prime(n: int) -> int:
    """Return the n-th prime (``nth_prime(1) == 2``), for 1 <= n <= NTH_PRIME_MAX_N.

    Sieve of Eratosthenes over a bytearray sized by the standard upper bound.
    """
    _require_int("n", n, NTH_PRIME_MIN_N, NTH_PRIME_MAX_N)
    limit = _prime_upper_bound(n)
    sieve = bytearray([1]) * (limit + 1)
    sieve[0] = sieve[1] = 0
    for p in range(2, math.isqrt(limit) + 1):
        if sieve[p]:
            # Slice assignment clears all multiples in C rather than a Python loop.
            sieve[p * p :: p] = bytes(len(range(p * p, limit + 1, p)))
    primes = compress(range(limit + 1), sieve)
    return next(islice(primes, n - 1, None))


def matmul_checksum(n: int) -> int:
    """Multiply two deterministic n x n integer matrices; return the sum of all entries of A @ B.

    ``A[i][j] = (i*n + j) % 97`` and ``B[i][j] = (i + 2*j) % 89``, for 1 <= n <= MATMUL_MAX_N.
    The naive pure-Python triple loop is intentional: this task exists to burn CPU.
    """
    _require_int("n", n, MATMUL_MIN_N, MATMUL_MAX_N)
    a = [[(i * n + j) % 97 for j in range(n)] for i in range(n)]
    b = [[(i + 2 * j) % 89 for j in range(n)] for i in range(n)]
    total = 0
    for i in range(n):
        row = a[i]
        for j in range(n):
            cell = 0
            for k in range(n):
                cell += row[k] * b[k][j]
            total += cell
    return total


def hash_chain(rounds: int) -> str:
    """Apply SHA-256 ``rounds`` times starting from ``b"offload"``; return the final hex digest.

    Each round hashes the previous round's raw 32-byte digest, so
    ``hash_chain(1) == sha256(b"offload").hexdigest()``. 1 <= rounds <= HASH_CHAIN_MAX_ROUNDS.
    """
    _require_int("rounds", rounds, HASH_CHAIN_MIN_ROUNDS, HASH_CHAIN_MAX_ROUNDS)
    sha256 = hashlib.sha256
    digest = HASH_CHAIN_SEED
    for _ in range(rounds):
        digest = sha256(digest).digest()
    return digest.hex()


def square(num: str) -> str:
    """Square a number given as text, formatted like the original Flask edge: ``"20" -> "400.0"``.

    Accepts anything ``float()`` accepts except non-finite values (nan, inf) and
    values whose square overflows a float.
    """
    try:
        value = float(num)
    except ValueError:
        raise TaskInputError(f"num must be a finite number such as 20 or 1.5, got {_echo(num)}") from None
    if not math.isfinite(value):
        raise TaskInputError(f"num must be a finite number such as 20 or 1.5, got {_echo(num)}")
    try:
        result = value**2
    except OverflowError:
        raise TaskInputError(f"num must be a finite number whose square fits in a float, got {_echo(num)}") from None
    return f"{result}"
