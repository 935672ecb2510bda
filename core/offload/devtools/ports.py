"""Loopback ports for the processes the demo and the benchmarks start."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def _require_loopback(host: str) -> None:
    if not host.startswith("127."):
        raise ValueError(f"refusing to bind {host!r}: only loopback (127.0.0.0/8) is allowed")


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now on loopback ``host`` (the OS picks it)."""
    _require_loopback(host)
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` on loopback ``host`` can be bound right now."""
    _require_loopback(host)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
