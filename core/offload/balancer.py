"""Per-pool balancing state: the policy, the retry budget, latencies, counters.

The registry holds what the gateway observed of each server; this holds what
the engine needs per pool to decide, one :class:`PoolRuntime` per pool.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .policies import Policy, PolicyFactory
from .pool_config import PoolConfig
from .retry_budget import RetryBudget
from .stats import LatencyWindow

# Hedging delay while a pool has no latency history yet.
DEFAULT_HEDGE_DELAY_S = 0.05


@dataclass
class PoolCounters:
    """What the engine did beyond a plain request, per pool (shown by ``GET /servers``)."""

    retries: int = 0
    retries_refused_by_budget: int = 0
    hedges: int = 0
    hedges_won: int = 0
    fail_open: int = 0
    moved_off_hung_servers: int = 0


@dataclass
class PoolRuntime:
    """The engine's per-pool machinery."""

    policy: Policy
    budget: RetryBudget
    latencies: LatencyWindow = field(default_factory=LatencyWindow)
    counters: PoolCounters = field(default_factory=PoolCounters)

    @classmethod
    def for_pool(cls, config: PoolConfig, factory: PolicyFactory, rng: random.Random) -> PoolRuntime:
        """Fresh state for a pool configured by ``config``, choosing with ``factory``'s policy."""
        return cls(
            policy=factory(rng),
            budget=RetryBudget(
                ratio=config.retry_budget, min_per_s=config.retry_min_per_s, window_s=config.retry_window_s
            ),
        )

    def hedge_delay(self, config: PoolConfig) -> float:
        """Seconds to wait before hedging: configured, or the pool's observed p95."""
        if config.hedge_after_ms > 0:
            return config.hedge_after_ms / 1000
        p95 = self.latencies.quantile(0.95)
        return DEFAULT_HEDGE_DELAY_S if math.isnan(p95) else p95
