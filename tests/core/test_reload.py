"""Hot reload of plugins.toml (offload.reload): SIGHUP and `offload reload`, without dropping a request."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from offload.devtools.processes import ProcessGroup
from offload.reload import reload_config
from offload.testing import RunningServer, bind_loopback

from conftest import EdgeFactory, Gateway, GatewayFactory

QUIET = "probe_interval_s = 600\n"  # no probe rounds during a test: only the ones a reload makes


def math_toml(
    servers: list[tuple[str, RunningServer]], *, math: str = 'policy = "round_robin"\n', gateway: str = QUIET
) -> str:
    """A plugins.toml with the math plugin over ``servers`` (name, edge)."""
    entries = ", ".join(f'{{ name = "{name}", url = "{edge.url}" }}' for name, edge in servers)
    return f"[gateway]\n{gateway}[plugins.math]\n{math}servers = [{entries}]\n"


async def start_gateway(gateway: GatewayFactory, text: str) -> Gateway:
    return await gateway(tomllib.loads(text))


async def served_by(gw: Gateway, count: int) -> list[str]:
    """Send ``count`` tasks; the server that answered each."""
    servers = []
    for index in range(count):
        status, body, _ = await gw.get_json(f"/square/{index}")
        assert status == 200, body
        servers.append(body["server"])
    return servers


def pool_servers(gw: Gateway) -> list[str]:
    return [server.name for server in gw.app.ctx.registry.pool("math").servers]


async def test_reload_adds_removes_and_changes_servers(
    gateway: GatewayFactory, edge: EdgeFactory, tmp_path: Path
) -> None:
    a, b, c = await edge("a"), await edge("b"), await edge("c")
    gw = await start_gateway(gateway, math_toml([("a", a), ("b", b)]))
    kept = gw.app.ctx.registry.pool("math").find("a")
    assert set(await served_by(gw, 4)) == {"a", "b"}
    config = tmp_path / "plugins.toml"
    config.write_text(math_toml([("alpha", a), ("c", c)]))

    report = await reload_config(gw.app, str(config))

    assert report.ok, report.error
    assert (report.added, report.removed, report.changed) == (["math/c"], ["math/b"], ["math/alpha"])
    assert pool_servers(gw) == ["alpha", "c"]
    alpha = gw.app.ctx.registry.pool("math").find("alpha")
    assert alpha is kept and alpha.requests == 2, "a server that stays keeps what was observed of it"
    assert gw.app.ctx.registry.pool("math").find("c").probe_ok is True, "an added server is probed before it joins"
    assert set(await served_by(gw, 4)) == {"alpha", "c"}
    status, body, _ = await gw.get_json("/servers")
    assert status == 200
    assert [server["configured"] for server in body["pools"]["math"]["servers"]] == [True, True]
    assert body["last_reload"]["ok"] is True
    assert body["last_reload"]["summary"].startswith("reload applied: +1 servers, -1 servers, ~1 changed;")


async def test_a_new_url_under_the_same_name_is_one_change(
    gateway: GatewayFactory, edge: EdgeFactory, tmp_path: Path
) -> None:
    a, c = await edge("a"), await edge("c")
    gw = await start_gateway(gateway, math_toml([("x", a)]))
    config = tmp_path / "plugins.toml"
    config.write_text(math_toml([("x", c)]))

    report = await reload_config(gw.app, str(config))

    assert (report.added, report.removed, report.changed) == ([], [], ["math/x"])
    assert [server.url for server in gw.app.ctx.registry.pool("math").servers] == [c.url]


async def test_reload_applies_pool_and_gateway_settings_live(
    gateway: GatewayFactory, edge: EdgeFactory, tmp_path: Path
) -> None:
    a = await edge("a")
    gw = await start_gateway(gateway, math_toml([("a", a)]))
    engine = gw.app.ctx.engine
    runtime = engine.runtime["math"]
    counters, old_policy = runtime.counters, runtime.policy
    config = tmp_path / "plugins.toml"
    changed_math = 'policy = "least_inflight"\ntimeout_s = 3.0\neject_after = 2\nexpected_throughput = 7\n'
    config.write_text(
        math_toml([("a", a)], math=changed_math, gateway="probe_interval_s = 300\nrequest_timeout_s = 4.0\n")
    )

    report = await reload_config(gw.app, str(config))

    assert report.ok and report.restart_needed == []
    assert set(report.settings) == {
        "gateway.probe_interval_s",
        "gateway.request_timeout_s",
        "math.policy",
        "math.timeout_s",
        "math.eject_after",
        "math.expected_throughput",
    }
    pool = engine.registry.pool("math")
    assert (pool.config.timeout_s, pool.config.expected_throughput) == (3.0, 7)
    assert pool.servers[0].breaker.settings.failures_to_open == 2
    assert runtime.policy is not old_policy and type(runtime.policy) is not type(old_policy)
    assert engine.runtime["math"].counters is counters, "the pool's counters survive a reload"
    assert engine.gateway.probe_interval_s == 300
    assert gw.app.config.REQUEST_TIMEOUT == 4.0
    assert gw.app.ctx.plugins[0].options["timeout_s"] == 3.0
    assert await served_by(gw, 2) == ["a", "a"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[plugins.math\n", "invalid TOML"),
        ('[plugins.math]\nservers = []\ncolour = "blue"\n', "unknown settings ['colour']"),
        ('[plugins.math]\nservers = []\npolicy = "fastest"\n', "unknown policy 'fastest'"),
        ("[plugins.math]\nservers = []\n[plugins.nosuchplugin]\n", "'nosuchplugin' is enabled"),
        ('[plugins.math]\nservers = [{ url = "ftp://x" }]\n', "servers[0]"),
    ],
)
async def test_an_invalid_file_is_rejected_with_one_line_and_nothing_changes(
    gateway: GatewayFactory,
    edge: EdgeFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    text: str,
    reason: str,
) -> None:
    a = await edge("a")
    gw = await start_gateway(gateway, math_toml([("a", a)]))
    pool = gw.app.ctx.registry.pool("math")
    config_before, servers_before, settings_before = pool.config, list(pool.servers), gw.app.ctx.settings
    config = tmp_path / "plugins.toml"
    config.write_text(text)

    with caplog.at_level(logging.INFO, logger="offload.reload"):
        report = await reload_config(gw.app, str(config))

    assert not report.ok
    assert reason in report.error and "\n" not in report.error
    rejected = [record.getMessage() for record in caplog.records if record.name == "offload.reload"]
    assert rejected == [f"reload rejected: {report.error}"]
    assert pool.config is config_before and pool.servers == servers_before
    assert gw.app.ctx.settings is settings_before
    status, body, _ = await gw.get_json("/servers")
    assert status == 200
    assert body["last_reload"]["ok"] is False and reason in body["last_reload"]["summary"]
    assert await served_by(gw, 1) == ["a"], "the running configuration still serves"


async def test_what_cannot_change_live_is_reported_once_a_line_and_the_rest_applied(
    gateway: GatewayFactory, edge: EdgeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await edge("a"), await edge("b")
    gw = await start_gateway(gateway, math_toml([("a", a)]))
    config = tmp_path / "plugins.toml"
    config.write_text(
        math_toml([("a", a), ("b", b)], math='policy = "round_robin"\nprefix = "/m"\n', gateway=QUIET + "port = 9123\n")
        + f'[plugins.contracts]\nservers = [{{ name = "node", url = "{a.url}" }}]\n'
    )

    with caplog.at_level(logging.INFO, logger="offload.reload"):
        report = await reload_config(gw.app, str(config))

    assert report.ok
    assert report.restart_needed == ["[gateway] port", "plugin 'contracts' enabled", "[plugins.math] prefix"]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [f"reload: {line} needs a restart to take effect" for line in report.restart_needed]
    assert report.added == ["math/b"], "the server change is applied all the same"
    assert [context.name for context in gw.app.ctx.plugins] == ["math"]
    assert gw.app.ctx.settings.gateway.port != 9123 and gw.app.ctx.plugins[0].prefix == ""
    status, _, _ = await gw.get_json("/square/2")
    assert status == 200, "routes stay where they were mounted"

    again = await reload_config(gw.app, str(config))
    assert again.restart_needed == report.restart_needed, "still waiting for a restart: said again"
    assert (again.added, again.removed, again.settings) == ([], [], [])


async def test_a_removed_server_finishes_its_request_in_flight(
    gateway: GatewayFactory, edge: EdgeFactory, tmp_path: Path
) -> None:
    fast, slow = await edge("fast"), await edge("slow", delay_ms=400)
    gw = await start_gateway(gateway, math_toml([("fast", fast), ("slow", slow)]))
    leaving = gw.app.ctx.registry.pool("math").find("slow")
    in_flight = asyncio.create_task(gw.get_json("/square/9?server=slow"))
    deadline = time.monotonic() + 10
    while leaving.inflight == 0:
        assert time.monotonic() < deadline and not in_flight.done(), "the request never reached the slow edge"
        await asyncio.sleep(0.005)
    config = tmp_path / "plugins.toml"
    config.write_text(math_toml([("fast", fast)]))

    report = await reload_config(gw.app, str(config))

    assert report.removed == ["math/slow"]
    assert leaving.inflight == 1, "the reload did not wait for the request, nor cut it"
    status, body, _ = await in_flight
    assert (status, body["server"]) == (200, "slow")
    assert float(body["data"]) == 81
    assert set(await served_by(gw, 6)) == {"fast"}


async def test_the_shipped_plugins_toml_reloads_onto_itself_as_no_change(gateway: GatewayFactory) -> None:
    shipped = Path(__file__).resolve().parents[2] / "plugins.toml"
    gw = await gateway(tomllib.loads(shipped.read_text()))
    report = await reload_config(gw.app, str(shipped))
    assert report.ok, report.error
    changes = (report.added, report.removed, report.changed, report.settings, report.restart_needed)
    assert changes == ([], [], [], [], [])


# -- the real thing: `offload serve` in its own process, reloaded under load ------------------------------


@dataclass
class Outcome:
    sent_at: float
    status: int
    server: str | None


async def run_offload(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m offload ARGS` to completion (bounded), off the event loop serving the edges."""
    argv = [sys.executable, "-m", "offload", *args]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)


async def reloaded_workers(session: aiohttp.ClientSession, url: str, workers: int, after: float) -> dict[int, Any]:
    """Poll ``/servers`` (bounded) until ``workers`` processes each report a reload newer than ``after``."""
    seen: dict[int, Any] = {}
    deadline = time.monotonic() + 30
    while len(seen) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(seen)} reloaded"
        async with session.get(url + "/servers") as reply:
            record = (await reply.json())["last_reload"]
        if record is not None and record["at"] > after:
            seen[record["worker_pid"]] = record
        await asyncio.sleep(0.01)
    return seen


async def wait_for_workers(session: aiohttp.ClientSession, url: str, workers: int) -> None:
    """Wait (bounded) until every worker answers, so each has its SIGHUP handler installed."""
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while len(seen) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(seen)} answer"
        async with session.get(url + "/health") as reply:
            seen.add((await reply.json())["worker_pid"])
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("workers", [1, 2])
async def test_reload_under_load_adds_and_removes_a_server_with_no_failed_request(
    edge: EdgeFactory, tmp_path: Path, workers: int
) -> None:
    a, b, c = await edge("a", delay_ms=5), await edge("b", delay_ms=5), await edge("c", delay_ms=5)
    config, pid_file = tmp_path / "plugins.toml", tmp_path / "gateway.pid"
    config.write_text(math_toml([("a", a), ("b", b)]))
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", str(port)]
    argv += ["--workers", str(workers), "--pid-file", str(pid_file)]
    group = ProcessGroup(tmp_path)
    outcomes: list[Outcome] = []
    applied_at: float | None = None
    signalled_mono = 0.0
    try:
        gateway_process = group.start("gateway", argv, url + "/health")
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert time.monotonic() < deadline and gateway_process.popen.poll() is None, gateway_process.log_tail()
            await asyncio.sleep(0.01)
        # A SIGHUP while it is still starting is ignored, never fatal.
        os.kill(int(pid_file.read_text()), signal.SIGHUP)
        await group.wait_healthy(gateway_process, timeout_s=60)
        # A new connection per request, so that with --workers 2 both workers take tasks.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await wait_for_workers(session, url, workers)

            async def client(number: int) -> None:
                # Closed loop: one task at a time, until enough ran after the reload (or a hard cap).
                for index in range(1500):
                    if applied_at is not None and sum(o.sent_at > applied_at for o in outcomes) >= 150:
                        return
                    sent_at = time.monotonic()
                    try:
                        async with session.get(f"{url}/square/{number * 10_000 + index}") as reply:
                            body = await reply.json(content_type=None)
                            outcomes.append(Outcome(sent_at, reply.status, body.get("server")))
                    except aiohttp.ClientError as exc:
                        outcomes.append(Outcome(sent_at, 0, repr(exc)))

            clients = [asyncio.create_task(client(number)) for number in range(4)]
            deadline = time.monotonic() + 30
            while len(outcomes) < 100:  # under load before the reload
                assert time.monotonic() < deadline and not any(task.done() for task in clients)
                await asyncio.sleep(0.01)
            config.write_text(math_toml([("a", a), ("c", c)]))
            signalled_at, signalled_mono = time.time(), time.monotonic()
            result = await run_offload("reload", "--config", str(config), "--pid-file", str(pid_file))
            assert result.returncode == 0, result.stderr
            assert f"sent SIGHUP to the gateway (PID {gateway_process.pid})" in result.stdout
            records = await reloaded_workers(session, url, workers, signalled_at)
            applied_at = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*clients), timeout=60)

            # An invalid file: one line, exit 2, and the gateway is left alone.
            config.write_text('[plugins.math]\nservers = []\npolicy = "fastest"\n')
            refused = await run_offload("reload", "--config", str(config), "--pid-file", str(pid_file))
            async with session.get(url + "/servers") as reply:
                after_refusal = await reply.json()
    finally:
        await asyncio.to_thread(group.stop_all)  # keep serving our in-process edges meanwhile
    log = (tmp_path / "gateway.log").read_text()

    failed = [outcome for outcome in outcomes if outcome.status != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed, e.g. {failed[:3]}"
    assert applied_at is not None
    before = [o.server for o in outcomes if o.sent_at < signalled_mono]
    after = [o.server for o in outcomes if o.sent_at > applied_at]
    assert len(before) >= 100 and "b" in before and "c" not in before, "the old configuration served until the reload"
    assert len(after) >= 150
    assert "b" not in after, "the removed server took no task sent after the reload"
    assert after.count("c") > 0 and after.count("a") > 0, "the added server took its share"
    assert len(records) == workers
    for record in records.values():
        assert record["ok"] is True
        assert record["summary"].startswith("reload applied: +1 servers, -1 servers, ~0 changed;")
    assert log.count("reload applied: +1 servers, -1 servers, ~0 changed") == workers
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "unknown policy 'fastest'" in refused.stderr
    assert [s["name"] for s in after_refusal["pools"]["math"]["servers"]] == ["a", "c"]
    assert "reload rejected" not in log, "an invalid file is never sent to the gateway"
    assert not pid_file.exists(), "the pid file goes with the gateway"


async def test_reload_refuses_a_stale_pid_file_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text("[plugins.math]\nservers = []\n")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    (tmp_path / ".offload.pid").write_text(f"{gone.pid}\n")

    result = await run_offload("reload", "--config", str(config))

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"offload: error: stale pid file {tmp_path / '.offload.pid'}: no process {gone.pid} "
        "(offload serve is not running)"
    )


async def test_reload_without_a_pid_file_says_where_it_looked(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text("[plugins.math]\nservers = []\n")
    result = await run_offload("reload", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"offload: error: no pid file {tmp_path / '.offload.pid'}")


def test_the_pid_file_appears_whole_and_never_truncates_the_old_one(tmp_path: Path) -> None:
    # A reader racing the write (offload reload while serve starts) must see the old
    # PID or the new one, never an empty file: the new file is renamed into place.
    from offload.reload import write_pid_file

    pid_file = tmp_path / "gateway.pid"
    pid_file.write_text("12345\n")
    with pid_file.open() as reader_of_the_old_file:
        write_pid_file(pid_file, required=True)
        assert reader_of_the_old_file.read() == "12345\n", "the old file was rewritten in place"
    assert pid_file.read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.pid"], "no temporary file is left behind"


def test_an_unwritable_pid_file_leaves_nothing_behind(tmp_path: Path) -> None:
    from offload.errors import ConfigError
    from offload.reload import write_pid_file

    with pytest.raises(ConfigError, match="cannot write the pid file"):
        write_pid_file(tmp_path / "missing-dir" / "gateway.pid", required=True)
    assert list(tmp_path.iterdir()) == []
