"""A real ``redis-server`` on loopback for the tests, one per test, that a test may stop and restart.

Debian/Ubuntu: ``apt-get install redis-server`` (any Redis >= 5 or Valkey
binary named ``redis-server`` on PATH will do). Without it the tests that use
:func:`redis_server_fixture` are skipped, or fail when
``OFFLOAD_REQUIRE_REDIS=1`` says that this run must exercise Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.testing import bind_loopback

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 5
INSTALL_HINT = "redis-server is not installed: apt-get install redis-server (or put a Valkey/Redis >= 5 on PATH)"


def redis_server_executable() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def redis_server_available() -> tuple[bool, str]:
    """Whether redis-server is installed: (True, its path) or (False, how to install it)."""
    executable = redis_server_executable()
    if executable is not None:
        return True, executable
    return False, INSTALL_HINT


def require_redis_server() -> str:
    """The redis-server path; skip the test without it, or fail it under ``OFFLOAD_REQUIRE_REDIS=1``."""
    installed, detail = redis_server_available()
    if not installed:
        if os.environ.get("OFFLOAD_REQUIRE_REDIS") == "1":
            pytest.fail(detail)
        pytest.skip(detail)
    return detail


def _free_port() -> int:
    sock = bind_loopback()
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()


def _answering_pid(port: int, timeout_s: float = 0.5) -> int | None:
    """The PID of the Redis answering on 127.0.0.1:``port`` now, or None (one short blocking attempt).

    The PID, not just a PONG: between choosing a free port and redis-server
    binding it, another test run may take it, and its server must not be
    mistaken for ours.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    for line in reply.split(b"\r\n"):
        if line.startswith(b"process_id:"):
            return int(line.partition(b":")[2])
    return None


class RedisServer:
    """One redis-server process on 127.0.0.1: ``port`` stays the same across :meth:`stop`/:meth:`restart`.

    It keeps nothing on disk (``--save ''``, no AOF) in a temporary directory
    of its own, which also holds its Unix socket (:attr:`unix_url`).
    """

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or require_redis_server()
        self._set_port(_free_port())
        self._started_once = False
        self._dir = Path(tempfile.mkdtemp(prefix="offload-redis-"))
        self.socket_path = self._dir / "redis.sock"
        self.unix_url = f"unix://{self.socket_path}?db=0"
        self._log_path = self._dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    def _set_port(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    @property
    def pid(self) -> int | None:
        """The running server's PID, or None while stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and return once it answers on :attr:`port` (fail the test if it does not in time).

        On the first start only, a port that another program took meanwhile is
        replaced by a new free one; a restart keeps the port or fails.
        """
        if self.running:
            return
        for _ in range(PORT_ATTEMPTS):
            if self._launch():
                self._started_once = True
                return
            log = self._log_path.read_text(errors="replace")[-2000:] if self._log_path.exists() else ""
            if self._started_once or "Address already in use" not in log:
                pytest.fail(f"redis-server exited at startup: {log}")
            self._set_port(_free_port())
        pytest.fail(f"redis-server found no free port in {PORT_ATTEMPTS} attempts")

    def _launch(self) -> bool:
        """Run redis-server on :attr:`port`: True once it answers, False if it exited (port taken)."""
        command = [
            self.executable,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--daemonize", "no",
            "--logfile", str(self._log_path),
        ]  # fmt: skip
        self._log_path.unlink(missing_ok=True)
        process = self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        pause = 0.001
        while _answering_pid(self.port) != process.pid:
            if process.poll() is not None:
                self._process = None
                return False
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not answer on 127.0.0.1:{self.port} within {STARTUP_TIMEOUT_S:g} s")
            # Bounded readiness poll of a process we just started (it is usually ready within milliseconds).
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, SIGKILL if it lingers) and wait until it is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a frozen server handles SIGTERM only once resumed
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, with an empty data set."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """Suspend the server (SIGSTOP): connections stay open but nothing answers, as under an overload."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a server suspended by :meth:`freeze` (SIGCONT)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def redis_server_fixture() -> Iterator[RedisServer]:
    """Body of the ``redis_server`` fixture (conftest): a started server, closed after the test."""
    executable = require_redis_server()
    with RedisServer(executable) as server:
        yield server
