"""Peak-EWMA latency, as Finagle and Linkerd score servers.

On each sample: w = exp(-dt/tau); cost = rtt if rtt > cost else cost*w + rtt*(1-w).
It rises at once on a slow answer and decays smoothly afterwards, so one slow
response is noticed immediately and forgiven gradually. A failure is charged
``penalty_s`` as if it were a slow answer (a server that fails fast must not
look fast), and a server with no sample yet starts at the penalty, so it has
to prove itself rather than attract all traffic.

The load of a new request is Finagle's cost x (pending + 1), with one change:
it is divided by the concurrency the latency samples were measured at (an
EWMA of the in-flight count each sampled request saw). Finagle assumes every
extra request in flight queues behind the others; an edge that serves many
requests at once (network-bound, async) would then look overloaded at its
normal, harmless concurrency and lose traffic to slower servers. Relative to
its usual concurrency, a server's load still rises the moment requests pile
up beyond what its latency already reflects, and for an idle server (usual
concurrency 1) the formula is exactly Finagle's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CONCURRENCY_ALPHA = 0.1


@dataclass
class PeakEwma:
    """A decaying, peak-sensitive latency estimate in seconds."""

    decay_s: float = 10.0
    penalty_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    cost_s: float = field(default=-1.0)  # < 0: no sample yet
    stamp: float = 0.0
    concurrency: float = 1.0  # usual in-flight count (itself included) when samples were taken

    def observe(self, rtt_s: float, concurrency: float | None = None) -> None:
        """Fold in one round-trip time, measured with ``concurrency`` requests in flight (itself included)."""
        now = self.clock()
        weight = math.exp(-max(now - self.stamp, 0.0) / self.decay_s)
        if self.cost_s < 0 or rtt_s > self.cost_s:
            self.cost_s = rtt_s
        else:
            self.cost_s = self.cost_s * weight + rtt_s * (1 - weight)
        if concurrency is not None:
            # Per sample, not per second: concurrency is a property of the load, learnt in a few dozen requests.
            self.concurrency += CONCURRENCY_ALPHA * (max(concurrency, 1.0) - self.concurrency)
        self.stamp = now

    def reset(self) -> None:
        """Forget the latency: the next sample sets the estimate."""
        self.cost_s = -1.0

    def penalize(self) -> None:
        """Charge a failure as a very slow answer."""
        self.observe(self.penalty_s)

    @property
    def estimate_s(self) -> float:
        """Current estimate; the penalty when nothing has been measured yet."""
        return self.penalty_s if self.cost_s < 0 else self.cost_s

    def load(self, inflight: int) -> float:
        """Expected latency times the queue a new request would join, relative to the usual one."""
        # Never below the measured latency: an idle server is no faster than it has shown.
        return self.estimate_s * max(1.0, (inflight + 1) / self.concurrency)
