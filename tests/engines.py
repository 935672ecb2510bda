"""An engine over a list of servers, for tests that drive the engine without a gateway in front."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from offload.engine import Engine
from offload.pool_config import PoolConfig
from offload.registry import Registry, Server
from offload.settings import GatewaySettings, ServerSpec


class AlwaysFirst:
    """A policy that always picks the first candidate: tests decide who is asked first."""

    name = "always_first"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Server]) -> Server:
        return candidates[0]


@asynccontextmanager
async def engine_for(
    servers: list[tuple[str, str]], *, upstream_client: str = "native", **config: object
) -> AsyncIterator[Engine]:
    """A started engine with one pool ``p`` of ``servers`` ((name, url) pairs); probes only at start."""
    registry = Registry()
    specs = tuple(ServerSpec(name, url) for name, url in servers)
    registry.add_pool(PoolConfig(name="p", servers=specs, **config))  # type: ignore[arg-type]
    engine = Engine(
        registry,
        GatewaySettings(probe_interval_s=3600, probe_timeout_s=1.0, upstream_client=upstream_client),
        policies={"always_first": AlwaysFirst},
        rng=random.Random(1),
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
