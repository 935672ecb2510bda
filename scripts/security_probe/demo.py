"""``--demo``: starting ``offload demo --serve`` ourselves, reading the PIDs and URLs it prints, stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shlex
import signal
import socket
import sys
import tempfile
import time

from common import UsageError
from procfs import cmdline, process_alive

# --- --demo: start `offload demo --serve` ourselves, probe it, stop it ------------------------------------------

DEMO_LINE = re.compile(r"^\s+(?P<name>\S+)\s+pid\s+(?P<pid>\d+)\s+(?P<url>http://\S+)\s*$")
DEMO_START_LIMIT_S = 120.0


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Demo:
    """``<command> demo --serve --port P`` started by us, in a session of its own; its children found by PID."""

    def __init__(self, command: str, token: str, nofile: tuple[int, int] | None = None) -> None:
        self.argv = [*shlex.split(command), "demo", "--serve", "--port", str(free_loopback_port())]
        self.nofile = nofile
        self.token = token
        self.proc: asyncio.subprocess.Process | None = None
        self.children: dict[str, tuple[int, str]] = {}
        self.lines: list[str] = []
        handle, self.log_path = tempfile.mkstemp(prefix="security-probe-demo-", suffix=".log")
        os.close(handle)
        self.drainer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {**os.environ, "OFFLOAD_API_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        print(f"security_probe: starting {' '.join(self.argv)} (stderr: {self.log_path})", file=sys.stderr)
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=self._limit_files if self.nofile else None,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + DEMO_START_LIMIT_S
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            match = DEMO_LINE.match(line)
            if match:
                self.children[match["name"]] = (int(match["pid"]), match["url"].rstrip("/"))
            if line.startswith("gateway ready"):
                # Keep draining its stdout so the demo never blocks on a full pipe.
                self.drainer = asyncio.create_task(self._drain())
                return
        raise UsageError(
            "security_probe: the demo did not become ready; its output:\n"
            + "\n".join(self.lines)
            + f"\n(stderr in {self.log_path})"
        )

    def _limit_files(self) -> None:
        """In the demo's process (before exec): its open-files limit, inherited by the edges and the gateway."""
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(Exception):
            while await self.proc.stdout.readline():
                pass

    def gateway(self) -> tuple[int, str]:
        return self.children["gateway"]

    def chain_edge(self) -> tuple[int, str]:
        """The edge started with --chain (it hosts the EVM chain); else the first edge listed."""
        edges = [(name, pid, url) for name, (pid, url) in self.children.items() if name != "gateway"]
        for _, pid, url in edges:
            if "--chain" in cmdline(pid):
                return pid, url
        return edges[0][1], edges[0][2]

    async def stop(self) -> list[str]:
        """SIGINT to the demo (it stops its children), then make sure each child PID it printed is gone."""
        report: list[str] = []
        proc = self.proc
        if proc is None:
            return report
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 40)
            except TimeoutError:
                report.append("demo did not stop on SIGINT within 40 s: SIGTERM")
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    report.append("demo did not stop on SIGTERM: SIGKILL")
                    proc.kill()
                    await proc.wait()
        report.append(f"demo pid {proc.pid} exited with {proc.returncode}")
        if proc.returncode == 0:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)  # its stderr is only kept when something went wrong
        else:
            report.append(f"the demo's stderr is in {self.log_path}")
        for name, (pid, _) in self.children.items():
            deadline = time.monotonic() + 10
            while process_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if process_alive(pid) and any("offload" in part for part in cmdline(pid)):
                report.append(f"{name} pid {pid} still running after the demo stopped: SIGKILL")
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            elif process_alive(pid):
                report.append(f"{name} pid {pid} is alive but no longer an offload process (PID reused?): left alone")
            else:
                report.append(f"{name} pid {pid} gone")
        return report


def parse_nofile(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    soft, _, hard = text.partition(":")
    try:
        limits = int(soft), int(hard or soft)
    except ValueError:
        raise UsageError(f"security_probe: --demo-nofile takes SOFT[:HARD], got {text!r}") from None
    if not 64 <= limits[0] <= limits[1]:
        raise UsageError(f"security_probe: --demo-nofile needs 64 <= SOFT <= HARD, got {text!r}")
    return limits
