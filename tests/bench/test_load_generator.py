"""The open-loop load generator keeps its own garbage collector from pausing the load it sends."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator

import pytest

from offload.devtools.bench.load import Progress, collector_paused, open_loop
from offload.testing import serve_app


@pytest.fixture
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_the_collector_stays_paused_until_the_last_of_two_side_by_side_loops_ends(collector_on: None) -> None:
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # the first loop ends while the second still sends
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(collector_on: None) -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


async def test_the_collector_is_paused_for_every_request_an_open_loop_sends(collector_on: None) -> None:
    from sanic import Sanic
    from sanic.response import json

    app = Sanic("load_generator_gc")
    collector_on_at_request: list[bool] = []

    @app.get("/n/<index:int>")
    async def answer(request: object, index: int) -> object:
        # Served in this process, so this is the load generator's collector at that moment.
        collector_on_at_request.append(gc.isenabled())
        return json({"index": index})

    async with serve_app(app) as server:
        samples = await open_loop(
            lambda i: f"{server.url}/n/{i}", 300, (0.1, 0.3), random.Random(1), Progress(0), "gc", timeout_s=10
        )
    assert len(samples) == 300 and {sample.status for sample in samples} == {200}
    assert collector_on_at_request == [False] * 300
    assert gc.isenabled(), "switched back on when the loop ended"
