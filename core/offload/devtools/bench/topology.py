"""Edge servers and gateways for a benchmark, as separate processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ...security import TOKEN_ENV
from ..ports import LOOPBACK, free_port
from ..processes import ManagedProcess, ProcessGroup

HOST = LOOPBACK


@dataclass(frozen=True)
class EdgeSpec:
    """One edge node: link delay, extra compute time, whether it is the device itself, and its outliers.

    With ``spike_every`` N > 0 every Nth request it gets waits ``spike_ms`` more (``--spike-every``).
    """

    name: str
    delay_ms: float
    compute_ms: float = 0.0
    local: bool = False
    spike_every: int = 0
    spike_ms: float = 0.0

    @property
    def service_ms(self) -> float:
        """What one request costs on it when nothing else is going on."""
        return self.delay_ms + self.compute_ms


@dataclass(frozen=True)
class GatewayOptions:
    """The math pool's settings for one gateway run."""

    policy: str
    consider_throughput: bool = False
    expected_throughput: int = 25
    probe_interval_s: float = 1.0
    eject_base_s: float = 5.0
    timeout_s: float = 5.0
    upstream_client: str = "native"
    # None: not written, so the gateway's own default applies.
    hedge: bool | None = None
    # More [plugins.math] keys, written as given (keys the fields above write must not repeat).
    extra: tuple[tuple[str, bool | int | float | str], ...] = ()


class Topology:
    """Starts, changes and stops the processes of one benchmark scenario."""

    def __init__(self, group: ProcessGroup, workdir: Path) -> None:
        self.group = group
        self.workdir = workdir
        self.edges: dict[str, ManagedProcess] = {}
        self.urls: dict[str, str] = {}
        self.specs: dict[str, EdgeSpec] = {}
        # The edges' operator token for this run only: set_delay needs it, nobody else gets it.
        self.edge_token = secrets.token_urlsafe(32)

    async def start_edges(self, specs: list[EdgeSpec]) -> None:
        started = []
        for spec in specs:
            url = f"http://{HOST}:{free_port()}"
            argv = [
                sys.executable, "-m", "offload_edge", "--host", HOST, "--port", url.rsplit(":", 1)[1],
                "--name", spec.name, "--delay-ms", str(spec.delay_ms), "--compute-ms", str(spec.compute_ms),
                "--processes", "1",
            ]  # fmt: skip
            if spec.spike_every > 0:
                argv += ["--spike-every", str(spec.spike_every), "--spike-ms", str(spec.spike_ms)]
            # offload-edge reads its operator token from the gateway's variable; in the environment,
            # not argv, where any local user could read it.
            process = self.group.start(spec.name, argv, url + "/health", env={TOKEN_ENV: self.edge_token})
            self.edges[spec.name], self.urls[spec.name], self.specs[spec.name] = process, url, spec
            started.append(process)
        await asyncio.gather(*(self.group.wait_healthy(process, name=process.name) for process in started))

    def gateway_config(self, options: GatewayOptions) -> str:
        servers = ",\n".join(
            f'  {{ name = "{name}", url = "{url}", local = {"true" if self.specs[name].local else "false"} }}'
            for name, url in self.urls.items()
        )
        return (
            f'[gateway]\nhost = "{HOST}"\nprobe_interval_s = {options.probe_interval_s}\n'
            f'upstream_client = "{options.upstream_client}"\n\n'
            "[plugins.math]\n"
            f'policy = "{options.policy}"\n'
            f"consider_throughput = {'true' if options.consider_throughput else 'false'}\n"
            f"expected_throughput = {options.expected_throughput}\n"
            f"timeout_s = {options.timeout_s}\n"
            f"eject_base_s = {options.eject_base_s}\n"
            + ("" if options.hedge is None else f"hedge = {toml_value(options.hedge)}\n")
            + "".join(f"{key} = {toml_value(value)}\n" for key, value in options.extra)
            + f"servers = [\n{servers},\n]\n"
        )

    async def start_gateway(self, label: str, options: GatewayOptions) -> tuple[ManagedProcess, str]:
        """A gateway over this topology's edges, with the math pool set by ``options``."""
        return await self.start_gateway_with(label, self.gateway_config(options))

    async def start_gateway_with(self, label: str, config_text: str, workers: int = 1) -> tuple[ManagedProcess, str]:
        """``offload serve`` with ``config_text`` as its plugins.toml, on a free port, once healthy."""
        config = self.workdir / f"{label}.toml"
        config.write_text(config_text)
        port = free_port()
        url = f"http://{HOST}:{port}"
        argv = [
            sys.executable, "-m", "offload", "serve", "--config", str(config), "--port", str(port),
            "--workers", str(workers),
        ]  # fmt: skip
        process = self.group.start(f"gateway-{label}", argv, url + "/health")
        await self.group.wait_healthy(process)
        return process, url

    async def set_delay(self, name: str, delay_ms: float) -> None:
        """Change edge ``name``'s simulated link delay while it runs (its /admin route, with the token)."""
        url = self.urls[name] + "/admin/delay"
        headers = {"Authorization": f"Bearer {self.edge_token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.put(url, json={"delay_ms": delay_ms}, headers=headers) as reply,
        ):
            reply.raise_for_status()

    def kill(self, name: str) -> None:
        self.group.kill(self.edges[name])

    def pause(self, name: str) -> None:
        """SIGSTOP edge ``name``: it hangs, accepting connections and answering nothing (see :meth:`resume`)."""
        self.group.pause(self.edges[name])

    def resume(self, name: str) -> None:
        """SIGCONT edge ``name`` after :meth:`pause`."""
        self.group.resume(self.edges[name])

    async def restart(self, name: str) -> None:
        self.group.restart(self.edges[name])
        await self.group.wait_healthy(self.edges[name], name=name)


def toml_value(value: bool | int | float | str) -> str:
    """``value`` as a TOML literal (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
