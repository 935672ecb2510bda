"""Prometheus metrics for the gateway (``GET /metrics``), with prometheus-client.

* :mod:`.events`: what the engine reports, and the recorder that drops it (no prometheus import).
* :mod:`.recorder`: the counters, histograms and live gauges, counted as things happen.
* :mod:`.snapshot`: gauges read from the registry at scrape time (circuits, probes, heights, windows).
* :mod:`.http`: the route, and the wrapper that counts every route's requests.
* :mod:`.multiproc`: ``--workers N``: one directory of metric files for all workers.

docs/metrics.md lists every metric. Importing this package does not import
prometheus-client: the multiprocess directory must be set before that happens.
"""

from __future__ import annotations

from .events import NO_METRICS, EngineMetrics, PoolEvent

__all__ = ["NO_METRICS", "EngineMetrics", "PoolEvent"]
