"""Choosing one server among the candidates the engine allows.

A policy only reads the registry's facts; it never probes or sends anything,
so choosing is cheap enough for every request. Policies are built per pool
from a seeded RNG, so choices are reproducible in tests and benchmarks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from .registry import Server


class Policy(Protocol):
    """Picks a server from a non-empty list of candidates (what ``offload_policies`` factories return).

    The candidates arrive filtered: only servers that may take the task now
    (probe passing, circuit closed or awaiting its trial, not lagging, not
    already failed by this request). A policy reads, never writes, a
    :class:`~offload.Server`'s facts: ``name``, ``url``, ``local``,
    ``inflight``, ``latency_ewma_s`` (plain average, probes included),
    ``load()`` (peak-EWMA cost x requests in flight) and ``load_key()``,
    ``requests``, ``failures`` and ``height``. The factory gets a seeded
    ``random.Random``: use it for every random choice, so runs can be replayed.
    """

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


class LeastInflightPolicy:
    """Fewest requests in flight; ties go to a random one of them."""

    name = "least_inflight"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Server]) -> Server:
        fewest = min(server.inflight for server in candidates)
        tied = [server for server in candidates if server.inflight == fewest]
        return tied[self.rng.randrange(len(tied))]


class RoundRobinPolicy:
    """Each candidate in turn."""

    name = "round_robin"

    def __init__(self, rng: random.Random) -> None:
        self.turn = rng.randrange(1 << 16)

    def choose(self, candidates: Sequence[Server]) -> Server:
        self.turn += 1
        return candidates[self.turn % len(candidates)]


# The previous winner is judged as if it could serve this many times the requests at once it has been seen to.
BURST_HEADROOM = 1.5


class P2CEwmaPolicy:
    """Power of two choices over peak-EWMA latency x (in-flight + 1), as Finagle and Linkerd do.

    One of the two candidates is the previous winner (when still a candidate),
    the other drawn at random: "two choices with memory" (Shah and Prabhakar).
    Under light load it settles on the fastest server instead of handing a
    third of the traffic to the second-best, as memoryless p2c does with three
    servers; as load grows, in-flight counts raise the winner's score and the
    traffic spreads. The random draw keeps every server in play.

    Memory makes the cost of a lone slow answer high: the winner is dropped
    and, unchosen, not measured again until its cost fades. So the cost (see
    :mod:`offload.peak_ewma`) believes a slow answer only once a later request
    confirms it, and lets the cost of an unchosen server fade with time.

    The previous winner is judged with ``BURST_HEADROOM``: as if it could
    serve half again as many requests at once as it has been seen to. That
    figure (see :mod:`offload.peak_ewma`) is only the most it was seen to
    absorb, and sending it more is the only way to learn more; the other
    candidate's figure is whatever it showed when last chosen, often seconds
    ago. When this machine stalls, the requests queued meanwhile in a client
    arrive together, and only the winner shows it: its in-flight count jumps.
    In ``offload bench --repeat`` runs, each time p2c_ewma sent requests away
    from the best server after the warm-up, it was such a burst (8-12 in
    flight where it usually had 3-4), which made its load 1.05-1.3x another
    server's figure, and each request sent away took longer than the same
    request at the best server beside it (the oracle): 14-28 ms against
    11-18 ms. The headroom only discounts requests in flight beyond the usual:
    a server that really turns slow loses its traffic as quickly as before (a
    slowed edge in the bench: 8x the other's figure), and an overloaded one
    sheds its excess at a queue half again as deep.
    """

    name = "p2c_ewma"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.remembered: Server | None = None

    def choose(self, candidates: Sequence[Server]) -> Server:
        if len(candidates) == 1:
            self.remembered = candidates[0]
            return candidates[0]
        if self.remembered is not None and self.remembered in candidates:
            first = self.remembered
            others = [server for server in candidates if server is not first]
            second = others[self.rng.randrange(len(others))]
        else:
            first, second = self.rng.sample(list(candidates), 2)
        # first is the remembered winner when there is one: trusted with a burst beyond its usual share.
        first_load = first.load(BURST_HEADROOM) if first is self.remembered else first.load()
        second_load = second.load()
        if first_load != second_load:
            winner = first if first_load < second_load else second
        else:  # ties (unproven servers both at infinity) are settled by the full key
            winner = first if first.load_key() <= second.load_key() else second
        self.remembered = winner
        return winner


class EstimatedCompletionPolicy:
    """Where the task is predicted to finish first: (in-flight + 1) x that server's service-time estimate.

    With the device itself in the pool this is the local-or-offload rule that
    compares the local queue against every edge: run locally while the local
    queue clears sooner than the best remote round trip, offload otherwise.
    """

    name = "estimated_completion"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Server]) -> Server:
        return min(candidates, key=lambda server: server.load_key())


PolicyFactory = Callable[[random.Random], Policy]

BUILTIN_POLICIES: dict[str, PolicyFactory] = {
    policy.name: policy
    for policy in (
        RandomPolicy,
        MinLatencyPolicy,
        LeastInflightPolicy,
        RoundRobinPolicy,
        P2CEwmaPolicy,
        EstimatedCompletionPolicy,
    )
}
