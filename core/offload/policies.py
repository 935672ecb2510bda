"""Choosing one server among the candidates the engine allows.

A policy only reads the registry's facts; it never probes or sends anything,
so choosing is cheap enough for every request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from .registry import Server


class Policy(Protocol):
    """Picks a server from a non-empty list of candidates."""

    name: str

    def choose(self, candidates: Sequence[Server]) -> Server:
        """Return one of ``candidates`` (never called with an empty list)."""
        ...


class RandomPolicy:
    """Uniformly random, as the original's ``select_random_server``."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Server]) -> Server:
        return candidates[self.rng.randrange(len(candidates))]


class MinLatencyPolicy:
    """Lowest measured latency, as the original's ``minimum_ping_delay``.

    The original pinged every server on every request; here the latency is the
    moving average of background health probes and of real requests, so the
    choice costs nothing on the request path. A server not yet measured sorts
    last, and ties keep pool order so the choice is deterministic.
    """

    name = "min_latency"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Server]) -> Server:
        def latency(server: Server) -> float:
            return math.inf if server.latency_ewma_s is None else server.latency_ewma_s

        return min(candidates, key=latency)


PolicyFactory = Callable[[random.Random], Policy]

BUILTIN_POLICIES: dict[str, PolicyFactory] = {
    RandomPolicy.name: RandomPolicy,
    MinLatencyPolicy.name: MinLatencyPolicy,
}
