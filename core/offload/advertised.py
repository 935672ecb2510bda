"""Which advertised addresses the gateway may send traffic to.

Edges advertise servers (``/updateservers`` from a caller, an edge's
``/getserverlists`` through ``servers_url``); a rogue or compromised edge
could point the gateway anywhere: at a cloud metadata service on a
link-local address, at an internal host, at a port that is not HTTP. An
advertised address is admitted only as an IP literal inside the operator's
networks and ports (loopback and unprivileged ports by default). Link-local,
multicast, unspecified and broadcast addresses are refused whatever the
networks say. The operator's own servers in plugins.toml are not checked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_NETWORKS = ("127.0.0.0/8", "::1/128")
DEFAULT_PORTS = ("1024-65535",)


def parse_networks(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """``["10.0.0.0/8", "::1"]`` as networks; raises ``ValueError`` naming a bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network such as 10.0.0.0/8 or ::1/128") from None
    return tuple(networks)


def parse_ports(values: Iterable[str | int]) -> tuple[tuple[int, int], ...]:
    """``[8080, "5000-5099"]`` as inclusive ranges; raises ``ValueError`` naming a bad entry."""
    ranges = []
    for value in values:
        text = str(value).strip()
        low_text, _, high_text = text.partition("-")
        try:
            low, high = int(low_text), int(high_text or low_text)
        except ValueError:
            raise ValueError(f"{value!r} is not a port or a range such as 5000-5099") from None
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"{value!r} is not a port range within 1-65535")
        ranges.append((low, high))
    return tuple(ranges)


def never_admitted(address: IpAddress) -> str | None:
    """Why ``address`` is never a server, whatever the allowlist says; None if it may be."""
    if address.is_link_local:
        return "is link-local (where cloud metadata services answer)"
    if address.is_multicast:
        return "is a multicast address"
    if address.is_unspecified:
        return "is the unspecified address"
    if isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"):
        return "is the broadcast address"
    return None


@dataclass(frozen=True)
class AddressAllowlist:
    """Networks and port ranges an advertised server must be inside."""

    networks: tuple[IpNetwork, ...] = parse_networks(DEFAULT_NETWORKS)
    ports: tuple[tuple[int, int], ...] = parse_ports(DEFAULT_PORTS)

    @classmethod
    def from_settings(cls, networks: Iterable[str], ports: Iterable[str | int]) -> AddressAllowlist:
        """Build from ``[gateway] advertised_networks`` and ``advertised_ports``."""
        return cls(parse_networks(networks), parse_ports(ports))

    def refusal(self, url: str) -> str | None:
        """Why the normalised server ``url`` may not be admitted, or None if it may."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "localhost":
            host = "127.0.0.1"
        try:
            address: IpAddress = ipaddress.ip_address(host)
        except ValueError:
            return f"{host!r} is a name, not an IP address (a name can resolve anywhere)"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        reason = never_admitted(address)
        if reason is not None:
            return f"{address} {reason}"
        if not any(address in network for network in self.networks):
            allowed = ", ".join(str(network) for network in self.networks)
            return f"{address} is outside the advertised_networks ({allowed})"
        port = parts.port
        if port is None or not any(low <= port <= high for low, high in self.ports):
            allowed = ", ".join(f"{low}-{high}" if low != high else str(low) for low, high in self.ports)
            return f"port {port} is outside the advertised_ports ({allowed})"
        return None
