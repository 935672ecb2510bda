"""An engine over a list of servers, for tests that drive the engine without a gateway in front."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from offload.engine import Engine
from offload.health import ProbeResult
from offload.pool_config import PoolConfig
from offload.registry import Registry, Server
from offload.settings import GatewaySettings, ServerSpec
from offload.transports import Transport


class AlwaysFirst:
    """A policy that always picks the first candidate: tests decide who is asked first."""

    name = "always_first"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Server]) -> Server:
        return candidates[0]


async def always_alive(server: Server) -> ProbeResult:
    """A probe that finds every server alive without asking it (for servers behind a fake transport)."""
    return ProbeResult(ok=True, latency_s=0.001)


@asynccontextmanager
async def engine_for(
    servers: list[tuple[str, str]],
    *,
    upstream_client: str = "native",
    transport: Transport | None = None,
    **config: object,
) -> AsyncIterator[Engine]:
    """A started engine with one pool ``p`` of ``servers`` ((name, url) pairs); probes only at start.

    With a ``transport`` (a :class:`~offload.transports.FakeTransport`), tasks go to it and the
    probes find every server alive without a socket; otherwise both go over the network.
    """
    registry = Registry()
    specs = tuple(ServerSpec(name, url) for name, url in servers)
    registry.add_pool(PoolConfig(name="p", servers=specs, **config))  # type: ignore[arg-type]
    engine = Engine(
        registry,
        GatewaySettings(probe_interval_s=3600, probe_timeout_s=1.0, upstream_client=upstream_client),
        policies={"always_first": AlwaysFirst},
        rng=random.Random(1),
        transport=transport,
    )
    if transport is not None:
        engine.probers["p"] = always_alive
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
