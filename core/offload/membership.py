"""Who is in a pool: merging the server lists edges advertise, through the allowlist and a probe.

The servers configured in plugins.toml always stay, with their names and
``local`` flags: an advertised list (which an edge, not the operator, writes)
only adds servers, and only the ones it added before can be dropped again when
they fail a probe. An address outside the ``[gateway]`` advertised networks and
ports is dropped with the reason, before anything is sent to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .addresses import host_port, normalize_url
from .advertised import AddressAllowlist
from .health import ProbeResult
from .registry import Pool, Server
from .settings import ServerSpec

ProbeServers = Callable[[list[Server]], Awaitable[list[ProbeResult]]]


@dataclass(frozen=True)
class PoolUpdate:
    """What updating a pool from a list of addresses did."""

    kept: list[str]
    dropped: dict[str, str]  # address -> why


async def merge_advertised(
    pool: Pool, addresses: Iterable[str], allowlist: AddressAllowlist, probe: ProbeServers
) -> PoolUpdate:
    """Merge advertised ``addresses`` into ``pool``, keeping only those admitted and passing ``probe``.

    Duplicates (by address) collapse; the answer says which were kept and why each other was dropped.
    """
    dropped: dict[str, str] = {}
    configured = [ServerSpec(s.name, s.url, s.local) for s in pool.servers if pool.is_configured(s)]
    discovered: dict[str, ServerSpec] = {
        server.url: ServerSpec(server.name, server.url, server.local)
        for server in pool.servers
        if not pool.is_configured(server)
    }
    for address in addresses:
        try:
            url = normalize_url(address, pool.config.default_port)
        except ValueError as exc:
            dropped[str(address)[:200]] = str(exc)
            continue
        if url in pool.configured_urls or url in discovered:
            continue
        refusal = allowlist.refusal(url)
        if refusal is not None:
            dropped[host_port(url)] = f"refused: {refusal}"
            continue
        discovered[url] = ServerSpec(host_port(url), url)
    trial = [pool.new_server(spec.name, spec.url, spec.local) for spec in discovered.values()]
    results = await probe(trial)
    keep = list(configured)
    for spec, result in zip(discovered.values(), results, strict=True):
        if result.ok:
            keep.append(spec)
        else:
            dropped[host_port(spec.url)] = result.error or "probe failed"
    pool.replace(keep)
    # Fresh probe results for the discovered servers that stay, new ones included.
    for server, probed in zip(trial, results, strict=True):
        live = pool.find(server.url)
        if live is not None:
            live.record_probe(probed.ok, probed.latency_s, probed.error, probed.height)
    return PoolUpdate(kept=pool.addresses(), dropped=dropped)
