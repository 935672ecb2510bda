"""Peak-EWMA latency, as Finagle and Linkerd score servers.

On each sample: w = exp(-dt/tau); cost = rtt if rtt > cost else cost*w + rtt*(1-w).
It rises at once on a slow answer and decays smoothly afterwards, so one slow
response is noticed immediately and forgiven gradually. A failure is charged
``penalty_s`` as if it were a slow answer (a server that fails fast must not
look fast), and a server with no sample yet starts at the penalty, so it has
to prove itself rather than attract all traffic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class PeakEwma:
    """A decaying, peak-sensitive latency estimate in seconds."""

    decay_s: float = 10.0
    penalty_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    cost_s: float = field(default=-1.0)  # < 0: no sample yet
    stamp: float = 0.0

    def observe(self, rtt_s: float) -> None:
        """Fold in one round-trip time."""
        now = self.clock()
        if self.cost_s < 0 or rtt_s > self.cost_s:
            self.cost_s = rtt_s
        else:
            weight = math.exp(-max(now - self.stamp, 0.0) / self.decay_s)
            self.cost_s = self.cost_s * weight + rtt_s * (1 - weight)
        self.stamp = now

    def reset(self) -> None:
        """Forget everything: the next sample sets the estimate."""
        self.cost_s = -1.0

    def penalize(self) -> None:
        """Charge a failure as a very slow answer."""
        self.observe(self.penalty_s)

    @property
    def estimate_s(self) -> float:
        """Current estimate; the penalty when nothing has been measured yet."""
        return self.penalty_s if self.cost_s < 0 else self.cost_s

    def load(self, inflight: int) -> float:
        """Finagle's load: expected latency times the queue a new request would join."""
        return self.estimate_s * (inflight + 1)
