"""Starting, watching and stopping the child processes of ``offload demo`` and ``offload bench``.

Every process is started by us in a process group of its own, tracked by its
PID, and ended through that group only: SIGTERM to the process first, then
SIGKILL to its whole group if it does not stop in time, so helpers it started
itself (Sanic's worker manager, process pools) cannot outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


class StartupError(Exception):
    """A child process did not become healthy; the message includes its log tail."""


@dataclass
class ManagedProcess:
    """A child process with a health URL and a log file."""

    name: str
    argv: list[str]
    health_url: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    env: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """Processes started together and stopped together, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def start(
        self, name: str, argv: list[str], health_url: str, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        """Start ``argv`` (with ``env`` added to ours) logging to ``<log_dir>/<name>.log``."""
        process = ManagedProcess(name, argv, health_url, self.log_dir / f"{name}.log", env=env)
        self._launch(process)
        self.processes.append(process)
        return process

    @staticmethod
    def _launch(process: ManagedProcess) -> None:
        with process.log_path.open("ab") as log_file:
            process.popen = subprocess.Popen(
                process.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **process.env} if process.env else None,
                start_new_session=True,  # its own process group: see kill_tree
            )

    def stop(self, process: ManagedProcess, timeout_s: float = 10.0) -> None:
        """SIGTERM one process and wait for it (SIGKILL to its group if it will not stop)."""
        if process.popen is None:
            return
        if process.popen.poll() is None:
            process.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=timeout_s)
        kill_tree(process.popen)

    def kill(self, process: ManagedProcess) -> None:
        """SIGKILL, as a crash or a pulled cable would end it: no goodbye to open connections."""
        if process.popen is not None:
            kill_tree(process.popen)

    def pause(self, process: ManagedProcess) -> None:
        """SIGSTOP to its whole group: it hangs as a frozen host would, its connections open and silent.

        Whoever pauses a process must :meth:`resume` it: a stopped process cannot act on SIGTERM.
        """
        if process.popen is not None and process.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.popen.pid, signal.SIGSTOP)

    def resume(self, process: ManagedProcess) -> None:
        """SIGCONT to its whole group, after :meth:`pause` (harmless if it is running or gone)."""
        if process.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.popen.pid, signal.SIGCONT)

    def restart(self, process: ManagedProcess) -> None:
        """Start a stopped process again with the same command line (same port)."""
        self.kill(process)
        self._launch(process)

    async def wait_healthy(self, process: ManagedProcess, timeout_s: float = 20.0, name: str | None = None) -> None:
        """Poll the health URL until it answers 200, the process exits, or time runs out.

        With ``name``, only an answer naming it counts: a port picked free can be taken by
        another program before ours binds it, and that program's 200 must not pass for ours.
        """
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if process.popen is not None and process.popen.poll() is not None:
                    raise StartupError(
                        f"{process.name} exited with code {process.popen.returncode}:\n{process.log_tail()}"
                    )
                try:
                    async with session.get(process.health_url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                        if response.status == 200 and (name is None or await answer_names(response, name)):
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass  # not listening yet
                await asyncio.sleep(0.05)
        raise StartupError(f"{process.name} did not answer {process.health_url} within {timeout_s:g} s")

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every process (newest first), then SIGKILL those still running."""
        for process in reversed(self.processes):
            if process.popen is not None and process.popen.poll() is None:
                process.popen.terminate()
        deadline = time.monotonic() + timeout_s
        for process in reversed(self.processes):
            if process.popen is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            kill_tree(process.popen)
        self.processes.clear()


def kill_tree(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the process group we started ``popen`` in, and reap ``popen``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()


async def answer_names(response: aiohttp.ClientResponse, name: str) -> bool:
    """Whether a health answer is JSON whose ``name`` is ``name``."""
    try:
        body = await response.json(content_type=None)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("name") == name
