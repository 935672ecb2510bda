"""--spike-every / --spike-ms: every Nth request waits longer, deterministically."""

from __future__ import annotations

import time

import aiohttp
import pytest

from offload.testing import serve_app
from offload_edge.app import MAX_DELAY_MS, EdgeConfig, LinkDelay, create_edge_app
from offload_edge.cli import build_parser, main


def test_every_nth_request_gets_the_spike_and_the_rest_the_link_delay() -> None:
    delay = LinkDelay(0.005, spike_every=3, spike_seconds=0.1)
    assert [delay.next_delay() for _ in range(7)] == pytest.approx([0.005, 0.005, 0.105, 0.005, 0.005, 0.105, 0.005])
    assert [LinkDelay(0.002).next_delay() for _ in range(3)] == [0.002] * 3  # off by default
    longest = LinkDelay(MAX_DELAY_MS / 1000, spike_every=1, spike_seconds=1.0)
    assert longest.next_delay() == MAX_DELAY_MS / 1000  # never beyond the longest link delay


async def test_the_spike_reaches_the_caller() -> None:
    app = create_edge_app(EdgeConfig(name="spiky", spike_every=3, spike_ms=300))
    async with serve_app(app) as server, aiohttp.ClientSession() as session:
        took = []
        for _ in range(6):
            started = time.perf_counter()
            async with session.get(server.make_url("/offloading/3")) as reply:
                assert await reply.text() == "9.0"
            took.append(time.perf_counter() - started)
    slow = [index for index, seconds in enumerate(took) if seconds >= 0.3]
    assert slow == [2, 5], took


@pytest.mark.parametrize("config", [{"spike_every": -1}, {"spike_every": 2.5}, {"spike_every": True}, {"spike_ms": -1}])
def test_the_config_refuses_bad_spikes(config: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="spike"):
        EdgeConfig(**config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv",
    [["--spike-every", "-1"], ["--spike-every", "2.5"], ["--spike-every", "1000001"], ["--spike-ms", "nan"],
     ["--spike-ms", "60001"]],
)  # fmt: skip
def test_the_cli_refuses_bad_spikes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2 and argv[0] in capsys.readouterr().err


def test_the_cli_parses_spikes() -> None:
    args = build_parser().parse_args(["--spike-every", "200", "--spike-ms", "100"])
    assert (args.spike_every, args.spike_ms) == (200, 100.0)
    assert (build_parser().parse_args([]).spike_every, build_parser().parse_args([]).spike_ms) == (0, 0.0)
