"""Active health probes and fetching server lists, over the shared HTTP session.

A probe is one bounded HTTP GET; it replaces the original's ICMP ping of every
server on every request, and its round trip feeds the latency average.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from .errors import OffloadError
from .registry import Server


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found."""

    ok: bool
    latency_s: float | None = None
    error: str | None = None
    # How far the server has progressed (e.g. its latest block), when the probe knows.
    height: int | None = None


def describe_exception(exc: BaseException) -> str:
    """Short, human description of a client-side failure."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def probe_server(session: aiohttp.ClientSession, server: Server, path: str, timeout_s: float) -> ProbeResult:
    """GET ``path`` on ``server``; any answer below 500 means it is alive."""
    started = time.perf_counter()
    try:
        async with session.get(
            server.url + path, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return ProbeResult(ok=False, error=f"probe failed: {describe_exception(exc)}")
    latency = time.perf_counter() - started
    if status >= 500:
        return ProbeResult(ok=False, latency_s=latency, error=f"probe failed: HTTP {status}")
    return ProbeResult(ok=True, latency_s=latency)


def apply_probe(server: Server, result: ProbeResult) -> None:
    """Record a probe's verdict and latency on the server."""
    server.record_probe(result.ok, result.latency_s, result.error, result.height)


Prober = Callable[[Server], Awaitable[ProbeResult]]


async def probe_all(
    session: aiohttp.ClientSession,
    servers: list[Server],
    path: str,
    timeout_s: float,
    prober: Prober | None = None,
) -> list[ProbeResult]:
    """Probe ``servers`` concurrently (with ``prober`` if given), record the results, return them in order."""

    async def one(server: Server) -> ProbeResult:
        if prober is None:
            return await probe_server(session, server, path, timeout_s)
        try:
            return await asyncio.wait_for(prober(server), timeout_s)
        except TimeoutError:
            return ProbeResult(ok=False, error="probe failed: timed out")
        except Exception as exc:  # a plugin's probe must not break the probe round
            return ProbeResult(ok=False, error=f"probe failed: {describe_exception(exc)}")

    results = await asyncio.gather(*(one(server) for server in servers))
    for server, result in zip(servers, results, strict=True):
        apply_probe(server, result)
    return list(results)


async def fetch_server_list(session: aiohttp.ClientSession, url: str, timeout_s: float) -> list[str]:
    """GET a server list in the original protocol ``{"data": [addresses]}``."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False) as response:
            if response.status != 200:
                raise OffloadError(502, f"server list {url} answered HTTP {response.status}")
            payload = await response.json(content_type=None)
    except TimeoutError:
        raise OffloadError(504, f"server list {url} did not answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise OffloadError(502, f"server list {url} could not be read: {describe_exception(exc)}") from None
    return parse_server_list(payload, url)


# An edge's list is probed address by address: a longer one is a way to make us probe the world.
MAX_ADVERTISED_SERVERS = 64


def parse_server_list(payload: object, source: str) -> list[str]:
    """Validate ``{"data": [addresses]}`` and return the addresses."""
    addresses = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(addresses, list) or not all(isinstance(item, str) for item in addresses):
        raise OffloadError(502, f'server list from {source} is not {{"data": [addresses]}}')
    if len(addresses) > MAX_ADVERTISED_SERVERS:
        raise OffloadError(
            502, f"server list from {source} has {len(addresses)} addresses, more than {MAX_ADVERTISED_SERVERS}"
        )
    return addresses
