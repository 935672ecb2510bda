"""Gauges read from the registry at scrape time: what each server looks like now, and each pool's window.

These are facts the gateway keeps anyway (:class:`~offload.registry.Server`,
the local-throughput window in the shared state), so nothing is counted on the
request path for them. With ``--workers N`` they are the answering worker's
view; health verdicts and the throughput window are shared between workers, so
every worker's view is the gateway's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..breaker import CLOSED, HALF_OPEN, OPEN

if TYPE_CHECKING:
    from ..engine import Engine

CIRCUIT_STATES = (CLOSED, OPEN, HALF_OPEN)


class RegistrySnapshot(Collector):
    """A prometheus-client collector over one engine's registry and windows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Metric]:
        # Nothing to check for clashes at registration: these names are ours alone.
        return ()

    def collect(self) -> Iterable[Metric]:
        engine = self.engine
        up = GaugeMetricFamily(
            "offload_server_up",
            "1 if the server may take requests now (probe passing, circuit closed).",
            labels=["pool", "server"],
        )
        probe_ok = GaugeMetricFamily(
            "offload_server_probe_ok",
            "The last health probe's verdict (1 up, 0 down); absent before the first.",
            labels=["pool", "server"],
        )
        circuit = GaugeMetricFamily(
            "offload_server_circuit_state",
            "The server's circuit: 1 for its current state (closed, open, half_open), 0 for the others.",
            labels=["pool", "server", "state"],
        )
        height = GaugeMetricFamily(
            "offload_server_block_height",
            "The latest block (height) the server's probe reported; only servers whose probe reports one.",
            labels=["pool", "server"],
        )
        lag = GaugeMetricFamily(
            "offload_server_block_lag",
            "Blocks the server is behind the highest server of its pool.",
            labels=["pool", "server"],
        )
        throughput = GaugeMetricFamily(
            "offload_local_throughput",
            "Requests run locally in the pool's current window (the original rule's count).",
            labels=["pool"],
        )
        threshold = GaugeMetricFamily(
            "offload_local_throughput_threshold",
            "expected_throughput: above this many local requests per window, tasks are offloaded.",
            labels=["pool"],
        )
        window = GaugeMetricFamily("offload_local_throughput_window_seconds", "The window's length.", labels=["pool"])
        cache_entries = GaugeMetricFamily(
            "offload_cache_entries", "Entries in the pool's read cache in this process.", labels=["pool"]
        )
        cache_bytes = GaugeMetricFamily(
            "offload_cache_bytes", "Bytes of keys and values in the pool's read cache in this process.", labels=["pool"]
        )
        cache_evicted = GaugeMetricFamily(
            "offload_cache_evicted",
            "Entries this process's read cache dropped to stay within its bounds, since it started.",
            labels=["pool"],
        )
        cache_invalidations = GaugeMetricFamily(
            "offload_cache_invalidations",
            "Times the pool's read cache was emptied at once (e.g. a chain reorganisation), since it started.",
            labels=["pool"],
        )
        for name, cache in engine.caches.items():
            cache_entries.add_metric([name], len(cache.memory))
            cache_bytes.add_metric([name], cache.memory.bytes)
            cache_evicted.add_metric([name], cache.memory.evicted)
            cache_invalidations.add_metric([name], cache.counts["invalidations"])
        for pool in engine.registry.pools.values():
            name = pool.name
            throughput.add_metric([name], engine.throughput(name))
            threshold.add_metric([name], pool.config.expected_throughput)
            window.add_metric([name], pool.config.window_s)
            heights = [server.height for server in pool.servers if server.height is not None]
            top = max(heights, default=None)
            for server in pool.servers:
                labels = [name, server.name]
                up.add_metric(labels, 1.0 if server.available else 0.0)
                if server.probe_ok is not None:
                    probe_ok.add_metric(labels, 1.0 if server.probe_ok else 0.0)
                state = server.breaker.refresh()
                for candidate in CIRCUIT_STATES:
                    circuit.add_metric([*labels, candidate], 1.0 if candidate == state else 0.0)
                if server.height is not None and top is not None:
                    height.add_metric(labels, server.height)
                    lag.add_metric(labels, top - server.height)
        return [
            up,
            probe_ok,
            circuit,
            height,
            lag,
            throughput,
            threshold,
            window,
            cache_entries,
            cache_bytes,
            cache_evicted,
            cache_invalidations,
        ]
