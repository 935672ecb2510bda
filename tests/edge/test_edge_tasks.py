"""Unit tests for the edge node's pure task functions (offload_edge.tasks)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from offload_edge.tasks import (
    HASH_CHAIN_MAX_ROUNDS,
    MATMUL_MAX_N,
    NTH_PRIME_MAX_N,
    TaskInputError,
    hash_chain,
    matmul_checksum,
    nth_prime,
    parse_int,
    square,
)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 2), (2, 3), (5, 11), (6, 13), (10, 29), (1000, 7919), (10000, 104729)],
)
def test_nth_prime_known_values(n: int, expected: int) -> None:
    assert nth_prime(n) == expected


def test_nth_prime_matches_trial_division_for_small_n() -> None:
    # Covers the n < 6 special case of the sieve bound and the switch-over to the formula.
    primes: list[int] = []
    candidate = 2
    while len(primes) < 300:
        if all(candidate % p for p in primes if p * p <= candidate):
            primes.append(candidate)
        candidate += 1
    assert [nth_prime(i) for i in range(1, 301)] == primes


def test_nth_prime_upper_limit() -> None:
    assert nth_prime(NTH_PRIME_MAX_N) == 2750159


def _checksum_reference(n: int) -> int:
    """Independent implementation: sum(A @ B) = sum_k (column k of A summed) * (row k of B summed)."""
    a = [[(i * n + j) % 97 for j in range(n)] for i in range(n)]
    b = [[(i + 2 * j) % 89 for j in range(n)] for i in range(n)]
    return sum(sum(a[i][k] for i in range(n)) * sum(b[k]) for k in range(n))


def test_matmul_checksum_by_hand() -> None:
    # n=2: A = [[0, 1], [2, 3]], B = [[0, 2], [1, 3]], A @ B = [[1, 3], [3, 13]] -> 20.
    assert matmul_checksum(2) == 20
    assert _checksum_reference(2) == 20


@pytest.mark.parametrize("n", [1, 3, 7, 31, 100])
def test_matmul_checksum_matches_reference(n: int) -> None:
    assert matmul_checksum(n) == _checksum_reference(n)


def test_hash_chain() -> None:
    assert hash_chain(1) == hashlib.sha256(b"offload").hexdigest()
    twice = hashlib.sha256(hashlib.sha256(b"offload").digest()).hexdigest()
    assert hash_chain(2) == twice


@pytest.mark.parametrize(("num", "expected"), [("20", "400.0"), ("1.5", "2.25"), ("-3", "9.0"), ("0", "0.0")])
def test_square(num: str, expected: str) -> None:
    assert square(num) == expected


@pytest.mark.parametrize("num", ["abc", "", "nan", "inf", "-inf", "1e200"])
def test_square_rejects_non_finite_or_non_numeric(num: str) -> None:
    with pytest.raises(TaskInputError, match="finite number"):
        square(num)


@pytest.mark.parametrize(
    ("func", "name", "maximum"),
    [
        (nth_prime, "n", NTH_PRIME_MAX_N),
        (matmul_checksum, "n", MATMUL_MAX_N),
        (hash_chain, "rounds", HASH_CHAIN_MAX_ROUNDS),
    ],
)
@pytest.mark.parametrize("bad", ["below", "above", "bool", "float"])
def test_task_limits(func: Callable[[Any], object], name: str, maximum: int, bad: str) -> None:
    value = {"below": 0, "above": maximum + 1, "bool": True, "float": 2.0}[bad]
    with pytest.raises(TaskInputError) as excinfo:
        func(value)
    assert str(excinfo.value).startswith(f"{name} must be an integer from 1 to {maximum}, got ")


def test_parse_int_accepts_range() -> None:
    assert parse_int("1", name="n", minimum=1, maximum=10) == 1
    assert parse_int("10", name="n", minimum=1, maximum=10) == 10
    assert parse_int("+7", name="n", minimum=1, maximum=10) == 7


@pytest.mark.parametrize("raw", ["abc", "", "0", "11", "-1", "1.5", " 5", "1_0", "٣", "9" * 5000])
def test_parse_int_rejects_with_helpful_message(raw: str) -> None:
    with pytest.raises(TaskInputError) as excinfo:
        parse_int(raw, name="n", minimum=1, maximum=10)
    message = str(excinfo.value)
    assert message.startswith("n must be an integer from 1 to 10, got ")
    assert len(message) < 120  # huge inputs are truncated in the echo


def test_parse_int_message_example() -> None:
    with pytest.raises(TaskInputError) as excinfo:
        parse_int("abc", name="n", minimum=1, maximum=NTH_PRIME_MAX_N)
    assert str(excinfo.value) == "n must be an integer from 1 to 200000, got 'abc'"
