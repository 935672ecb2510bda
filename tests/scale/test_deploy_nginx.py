"""The shipped deploy/nginx/offload.conf in front of two replicas sharing a real Redis.

nginx runs in the foreground with its own prefix (pid, logs, temp files) in the
test's folder, on a free loopback port; the replicas are real ``offload serve``
processes; edges and the chain run in this process. Skipped without nginx or
redis-server, unless ``OFFLOAD_REQUIRE_NGINX=1`` / ``OFFLOAD_REQUIRE_REDIS=1``
say that this run must exercise them (then it fails instead).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from offload.devtools.bench.scale import DEPLOY_NGINX, nginx_argv, render_nginx_config, write_nginx_config
from offload.devtools.processes import ManagedProcess, ProcessGroup
from offload_edge.chain.node import DEV_PRIVATE_KEY, demo_contract_addresses

from conftest import OPERATOR_HEADERS, EdgeFactory
from replicas import Replicas, free_port, get_json, post_json

KEY_ENV = "OFFLOAD_CONTRACTS_PRIVATE_KEY"
MANIFEST = DEPLOY_NGINX.parents[1] / "kubernetes" / "offload.yaml"
INCREMENT = "/contracts/Counter/increment"


def require_nginx() -> str:
    """nginx's path; skip without it, or fail under ``OFFLOAD_REQUIRE_NGINX=1``."""
    nginx = shutil.which("nginx")
    if nginx is None:
        message = "nginx is not installed: apt-get install nginx-light"
        if os.environ.get("OFFLOAD_REQUIRE_NGINX") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return nginx


# -- the config itself ----------------------------------------------------------------------


def test_render_replaces_only_the_replicas_and_the_listen_address() -> None:
    template = DEPLOY_NGINX.read_text()
    text = render_nginx_config(
        template, ["127.0.0.1:7001", "http://127.0.0.1:7002/", "127.0.0.1:7003"], "127.0.0.1:7000"
    )
    servers = re.findall(r"^\s*server (\S+) (.*);$", text, re.MULTILINE)
    assert servers == [(f"127.0.0.1:700{n}", "max_fails=3 fail_timeout=10s") for n in (1, 2, 3)]
    assert re.findall(r"^\s*listen (\S+);", text, re.MULTILINE) == ["127.0.0.1:7000"]
    # Everything outside the replica block and the listen line is as shipped.
    assert _without_variable_lines(text) == _without_variable_lines(template)


def _without_variable_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not re.match(r"\s*(server \S+:\d+ |listen )", line)]


def test_render_refuses_what_it_cannot_place() -> None:
    template = DEPLOY_NGINX.read_text()
    with pytest.raises(ValueError, match="at least one replica"):
        render_nginx_config(template, [], "127.0.0.1:7000")
    with pytest.raises(ValueError, match="not a host:port"):
        render_nginx_config(template, ["127.0.0.1:7001; evil"], "127.0.0.1:7000")
    with pytest.raises(ValueError, match="BEGIN replicas"):
        render_nginx_config("listen 127.0.0.1:1;\n", ["127.0.0.1:7001"], "127.0.0.1:7000")


def test_the_shipped_config_keeps_posts_on_their_replica() -> None:
    directives = [line.split("#", 1)[0].strip() for line in DEPLOY_NGINX.read_text().splitlines()]
    next_upstream = [line for line in directives if line.startswith("proxy_next_upstream ")]
    assert next_upstream == ["proxy_next_upstream error timeout;"]  # never non_idempotent
    assert "client_max_body_size 1m;" in directives  # the gateway's max_body_bytes default, 1 MiB
    assert "least_conn;" in directives and "keepalive 32;" in directives
    assert "zone offload_gateways 64k;" in directives  # one count of in-flight requests for all nginx workers
    # nginx closes idle upstream connections before the gateway does (its keep_alive_timeout_s is 15 s).
    assert "keepalive_timeout 10s;" in directives


def test_the_shipped_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = require_nginx()
    config = write_nginx_config(
        tmp_path / "nginx",
        render_nginx_config(DEPLOY_NGINX.read_text(), ["127.0.0.1:7001", "127.0.0.1:7002"], "127.0.0.1:7000"),
    )
    done = subprocess.run(
        [nginx, "-t", "-p", str(config.parent), "-c", str(config), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def test_the_kubernetes_manifest_is_valid_yaml() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the manifest's syntax is not checked")
    documents = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc is not None]
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds.count("Deployment") == 2 and kinds.count("Service") == 2 and "Secret" in kinds


# -- nginx in front of two replicas ----------------------------------------------------------


@dataclass
class Deployment:
    """nginx (shipped config) over replicas "a" and "b" sharing one Redis; the chain and a math edge in-process."""

    url: str
    replicas: dict[str, str]  # name -> URL
    processes: dict[str, ManagedProcess]
    access_log: Path
    chain: Any
    group: ProcessGroup


def deployment_config(tmp_path: Path, math_url: str, chain_url: str) -> Path:
    contracts = (
        "[plugins.contracts]\n"
        'rpc_path = "/rpc"\n'
        f'servers = [{{ name = "chain", url = "{chain_url}" }}]\n'
        f'contracts = [{{ name = "Counter", address = "{demo_contract_addresses()["Counter"]}", '
        'artifact = "offload_edge:chain/artifacts/Counter.json" }]\n'
    )
    math = f'[plugins.math]\nservers = [{{ name = "edge", url = "{math_url}" }}]\n'
    config = tmp_path / "plugins.toml"
    config.write_text("[gateway]\nprobe_interval_s = 60\n" + math + contracts)
    return config


@pytest.fixture
async def deployment(edge: EdgeFactory, tmp_path: Path, redis_server: Any) -> AsyncIterator[Deployment]:
    nginx = require_nginx()
    chain, math_edge = await edge("chain", chain=True), await edge("math")
    group = ProcessGroup(tmp_path)
    try:
        replicas = Replicas(
            group, deployment_config(tmp_path, math_edge.url, chain.url), env={KEY_ENV: DEV_PRIVATE_KEY}
        )
        urls = await asyncio.gather(
            *(replicas.start(name, "--state", redis_server.url, "--replica", name) for name in ("a", "b"))
        )
        port = free_port()
        text = render_nginx_config(DEPLOY_NGINX.read_text(), list(urls), f"127.0.0.1:{port}")
        config = write_nginx_config(tmp_path / "nginx", text)
        url = f"http://127.0.0.1:{port}"
        balancer = group.start("nginx", nginx_argv(nginx, config), url + "/health")
        await group.wait_healthy(balancer)
        processes = {process.name: process for process in group.processes if process.name in ("a", "b")}
        yield Deployment(
            url, dict(zip(("a", "b"), urls, strict=True)), processes, config.parent / "access.log", chain, group
        )
    finally:
        await asyncio.to_thread(group.stop_all)  # in-process edges keep serving meanwhile


async def counter(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        status, body = await get_json(session, url + "/contracts/Counter/get")
    assert status == 200, body
    return int(body["data"])


async def log_lines(access_log: Path, needle: str, timeout_s: float = 5.0) -> list[str]:
    """Access-log lines holding ``needle``; nginx writes its buffer at least once a second."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [line for line in access_log.read_text().splitlines() if needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.1)


def upstreams(line: str) -> list[str]:
    """The replicas one logged request was sent to, in order (``$upstream_addr``)."""
    match = re.search(r" upstream=(.*) upstream_status=", line)
    assert match, line
    return [address.strip() for address in match[1].split(",")]


async def test_requests_reach_both_replicas_and_an_operator_write_counts_once(deployment: Deployment) -> None:
    seen = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(10):
            status, body = await get_json(session, deployment.url + "/servers")
            assert status == 200, body
            seen.append(body["health_sharing"]["replica"])
    assert set(seen) == {"a", "b"}, seen
    before = await counter(deployment.url)
    async with aiohttp.ClientSession(headers=OPERATOR_HEADERS) as session:
        status, body = await post_json(session, deployment.url + INCREMENT, {})
    assert status == 200, body
    assert await counter(deployment.url) == before + 1
    [line] = await log_lines(deployment.access_log, f"POST {INCREMENT}")
    assert len(upstreams(line)) == 1


async def holder_of_a_write(replicas: dict[str, str], timeout_s: float = 5.0) -> str:
    """The replica with a request in flight to the chain (polled directly, not through nginx)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for name, url in replicas.items():
                _, body = await get_json(session, url + "/servers")
                if any(server["inflight"] for server in body["pools"]["contracts"]["servers"]):
                    return name
            await asyncio.sleep(0.02)
    raise AssertionError(f"no replica had the write in flight within {timeout_s:g} s")


async def test_a_post_is_not_resent_to_the_other_replica_when_its_replica_dies_mid_way(
    deployment: Deployment,
) -> None:
    before = await counter(deployment.url)
    deployment.chain.app.ctx.link_delay.seconds = 3.0  # the write waits at the chain: time to kill its replica
    async with aiohttp.ClientSession(headers=OPERATOR_HEADERS, timeout=aiohttp.ClientTimeout(total=60)) as session:
        write = asyncio.create_task(post_json(session, deployment.url + INCREMENT, {}))
        try:
            victim = await holder_of_a_write(deployment.replicas)
            deployment.group.kill(deployment.processes[victim])
        finally:
            # Were nginx to resend the POST, the other replica would now apply it at once.
            deployment.chain.app.ctx.link_delay.seconds = 0.0
        status, body = await write
    assert status == 502, body
    assert "not resent" in body["error"]
    [line] = await log_lines(deployment.access_log, f"POST {INCREMENT}")
    victim_address = deployment.replicas[victim].removeprefix("http://")
    assert upstreams(line) == [victim_address]
    survivor = next(url for name, url in deployment.replicas.items() if name != victim)
    await asyncio.sleep(0.5)  # anything still on its way to the chain lands meanwhile
    assert await counter(survivor) - before <= 1  # never twice; the killed replica's write may or may not have left


async def test_math_through_nginx_keeps_working_while_a_replica_is_killed(deployment: Deployment) -> None:
    statuses: list[int] = []
    killed_at_request = 0
    stop = asyncio.Event()

    async def load(session: aiohttp.ClientSession, worker: int) -> None:
        index = 0
        while not stop.is_set():
            async with session.get(f"{deployment.url}/square/{worker * 1000 + index}") as reply:
                statuses.append(reply.status)
            index += 1

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(load(session, worker)) for worker in range(4)]
        try:
            await asyncio.sleep(0.5)
            killed_at_request = len(statuses)
            deployment.group.kill(deployment.processes["a"])
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        # And a fresh connection, now that one replica is gone.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            for index in range(5):
                status, body = await get_json(fresh, f"{deployment.url}/square/{index}")
                assert status == 200, body
    assert killed_at_request > 0 and len(statuses) > killed_at_request
    assert set(statuses) == {200}, f"{sum(1 for s in statuses if s != 200)} of {len(statuses)} failed"
