"""Peak-EWMA latency, as Finagle and Linkerd score servers, made robust to lone outliers.

Finagle's rule, on each sample: w = exp(-dt/tau); cost = rtt if rtt > cost
else cost*w + rtt*(1-w). It rises at once on a slow answer and decays
smoothly afterwards. A failure is charged ``penalty_s`` as if it were a slow
answer (a server that fails fast must not look fast), and a server with no
sample yet starts at the penalty, so it has to prove itself rather than
attract all traffic. Three changes, each found in ``offload bench`` runs where
p2c_ewma lost the fastest edge for a whole run:

* A rise needs confirmation. A slow answer raises the cost to the peak only
  when an answer to a request sent after it arrived is slow too (then to the
  lesser of the two). Until then it counts as an ordinary sample, at most
  ``SPIKE_CAP`` times the cost. Requests that were in flight together share
  one hiccup of this machine (a stall, a burst at start-up), so only a later
  request can tell a server that turned slow from a moment that passed: the
  lone spike moves the cost by a few percent, a real slowdown is believed one
  round trip later. Failures skip this and count at once.
* The weight of a sample is at least ``SAMPLE_WEIGHT``, however little time
  passed since the last one: under load, tau-based weights alone gave fast
  answers arriving 3 ms apart almost no say (twenty 6 ms answers left a 33 ms
  cost where it was), so a cost raised by a burst stayed raised for seconds.
* The cost decays with time also when nothing is measured, towards zero (as
  Finagle's reader does): a server that lost the comparison gets no samples,
  and without this its cost stayed frozen at its worst moment for good. The
  next sample is compared against the cost as it was measured, not as it
  decayed, so a server retried after a pause shows its real latency at once.
  Only peaks are forgiven at ``decay_s``; the level that ordinary samples
  set is forgiven ``LEVEL_DECAY_FACTOR`` times more slowly, so a server that is
  simply slower is tried again about once a minute, not every few seconds
  (each such try is a slow request). A peak can also be forgiven at once
  (:meth:`PeakEwma.forgive_peak`), when a health probe shows the server as
  fast as usual again.

The load of a new request is Finagle's cost x (pending + 1), with one change:
it is divided by the concurrency the server has been seen to absorb: the
in-flight count a sampled request saw, scaled down by how much slower than
usual it came back; the estimate rises to a new high at once and falls slowly
(a burst the server took in its stride, as when this machine stalls and then
sends a handful of requests at once, must not hand the next burst to a slower
server, which benchmarks showed it did). Finagle assumes every
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

# The concurrency a server absorbs falls by this share of the gap per sample (a few thousand samples):
# at 0.01 it fell back within a second between bursts, and each new burst at the fastest edge sent
# 0.3-0.7 % of p2c's requests to a server twice as slow, enough to lift its p99 1.3-1.8x (bench --repeat).
CONCURRENCY_ALPHA = 0.001
# The least weight one answer gets: the cost follows the last ~10 answers even when they come quickly.
SAMPLE_WEIGHT = 0.1
# An unconfirmed slow answer counts as at most this many times the cost.
SPIKE_CAP = 2.0
# Without samples, the level ordinary samples set fades this many times more slowly than a peak.
LEVEL_DECAY_FACTOR = 10.0


@dataclass
class PeakEwma:
    """A decaying, peak-sensitive latency estimate in seconds."""

    decay_s: float = 10.0
    penalty_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    cost_s: float = field(default=-1.0)  # < 0: no sample yet; else the cost as of ``stamp``
    level_s: float = 0.0  # the part of ``cost_s`` ordinary samples set (no peak), as of ``stamp``
    stamp: float = 0.0
    concurrency: float = 1.0  # usual in-flight count (itself included) when samples were taken
    # A slow answer awaiting confirmation: when it arrived and how slow it was.
    suspect_at: float | None = None
    suspect_s: float = 0.0
    penalized_at: float | None = None  # the last failure charged (see forgive_peak)

    def observe(self, rtt_s: float, concurrency: float | None = None) -> None:
        """Fold in one round-trip time, measured with ``concurrency`` requests in flight (itself included)."""
        now = self.clock()
        usual_s = rtt_s if self.cost_s < 0 else self._decayed(max(now - self.stamp, 0.0))[0]
        if self.cost_s < 0:
            self.cost_s = self.level_s = rtt_s
        else:
            self._fold(rtt_s, now)
        if concurrency is not None:
            self._learn_concurrency(max(concurrency, 1.0) * min(1.0, usual_s / rtt_s) if rtt_s > 0 else concurrency)
        self.stamp = now

    def _learn_concurrency(self, absorbed: float) -> None:
        """Fold in how many requests at once the server just served at its usual speed.

        ``absorbed`` is the in-flight count scaled down by how much slower than usual the answer
        came (Little's law: 4 at once at twice the latency is 2 at once). The estimate rises to it
        at once, so a burst the server took in its stride does not make it look queued next time,
        and falls slowly (per sample: it is a property of the server and its load).
        """
        absorbed = max(absorbed, 1.0)
        if absorbed > self.concurrency:
            self.concurrency = absorbed
        else:
            self.concurrency += CONCURRENCY_ALPHA * (absorbed - self.concurrency)

    def _fold(self, rtt_s: float, now: float) -> None:
        """Fold ``rtt_s``, arrived at ``now``: a confirmed peak, or a weighted sample."""
        elapsed = max(now - self.stamp, 0.0)
        current, level = self._decayed(elapsed)
        weight = max(1.0 - math.exp(-elapsed / self.decay_s), SAMPLE_WEIGHT)
        # Answers to requests sent before the suspect arrived were in flight with it: they neither
        # confirm nor clear it. The first later one decides.
        later = self.suspect_at is not None and now - rtt_s >= self.suspect_at
        if later:
            self.suspect_at = None
        # Compared with what the server has shown, not with what time forgave since.
        if rtt_s <= self.cost_s:
            self.cost_s = current + weight * (rtt_s - current)
            # The level follows the ordinary samples, never above the cost.
            self.level_s = min(level + weight * (rtt_s - level), self.cost_s)
            return
        self.level_s = min(level, current)  # whatever rises now is a peak, forgiven at decay_s
        if later:
            self.cost_s = max(current, min(rtt_s, self.suspect_s))
            return
        if self.suspect_at is None:
            self.suspect_at, self.suspect_s = now, rtt_s
        self.cost_s = current + weight * (min(rtt_s, SPIKE_CAP * self.cost_s) - current)

    def _decayed(self, elapsed: float) -> tuple[float, float]:
        """The cost and its level ``elapsed`` seconds after the last sample."""
        level = self.level_s * math.exp(-elapsed / (LEVEL_DECAY_FACTOR * self.decay_s))
        return level + (self.cost_s - self.level_s) * math.exp(-elapsed / self.decay_s), level

    def forgive_peak(self) -> bool:
        """Drop the part of the cost a confirmed slowdown added, keeping the level ordinary samples set.

        For when other evidence says the slowdown has passed (a health probe as
        fast as usual, see :meth:`Server.record_latency`): an unchosen server is
        not measured by requests, and its peak alone would keep it unchosen
        until it fades at ``decay_s``. A failure's penalty is never forgiven
        this way (a server can answer probes and still fail its tasks), nor is
        anything within ``decay_s`` of one. Returns whether anything was dropped.
        """
        if self.cost_s < 0:
            return False
        now = self.clock()
        if self.penalized_at is not None and now - self.penalized_at < self.decay_s:
            return False
        current, level = self._decayed(max(now - self.stamp, 0.0))
        if current <= level * 1.01:  # no peak worth the name (ordinary samples leave a trace above the level)
            return False
        self.cost_s = self.level_s = level
        self.suspect_at = None
        self.stamp = now
        return True

    def reset(self) -> None:
        """Forget the latency: the next sample sets the estimate."""
        self.cost_s = -1.0
        self.suspect_at = None

    def penalize(self) -> None:
        """Charge a failure as a very slow answer, at once (no confirmation needed); a peak, forgiven at decay_s."""
        now = self.clock()
        if self.cost_s < 0:
            current = level = 0.0
        else:
            current, level = self._decayed(max(now - self.stamp, 0.0))
        self.cost_s, self.level_s = max(current, self.penalty_s), level
        self.suspect_at = None
        self.stamp = self.penalized_at = now

    @property
    def estimate_s(self) -> float:
        """Current estimate, decayed since the last sample; the penalty when nothing has been measured yet."""
        if self.cost_s < 0:
            return self.penalty_s
        return self._decayed(max(self.clock() - self.stamp, 0.0))[0]

    def load(self, inflight: int, headroom: float = 1.0) -> float:
        """Expected latency times the queue a new request would join, relative to the usual one.

        ``headroom`` scales the usual concurrency: 1.5 counts a queue only beyond
        half again as many requests at once as the server has been seen to serve.
        """
        # Never below the measured latency: an idle server is no faster than it has shown.
        return self.estimate_s * max(1.0, (inflight + 1) / (self.concurrency * headroom))
