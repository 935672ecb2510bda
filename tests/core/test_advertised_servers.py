"""Servers advertised by edges pass the operator's allowlist of networks and ports, or are refused with the reason.

The refusals of addresses off this machine are checked on the allowlist alone:
a test must never send anything there, even if the check were broken. The
gateway tests use loopback addresses outside a narrowed allowlist instead.
"""

from __future__ import annotations

import aiohttp
import pytest

from offload.advertised import AddressAllowlist
from offload.errors import ConfigError
from offload.settings import parse_gateway

from conftest import EdgeFactory, GatewayFactory, servers_table

DEFAULT = AddressAllowlist()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254:5000", "link-local"),
        ("http://[fe80::1]:5000", "link-local"),
        ("http://[::ffff:169.254.169.254]:5000", "link-local"),  # IPv4 inside IPv6 is still IPv4
        ("http://224.0.0.1:5000", "multicast"),
        ("http://0.0.0.0:5000", "unspecified"),
        ("http://10.0.0.1:5000", "outside the advertised_networks"),
        ("http://[2001:db8::1]:5000", "outside the advertised_networks"),
        ("http://metadata.internal:5000", "is a name"),
        ("http://2130706433:5000", "is a name"),  # 127.0.0.1 spelt as a number: not admitted as an address
        ("http://127.0.0.1:22", "port 22 is outside the advertised_ports (1024-65535)"),
    ],
)
def test_the_default_allowlist_refuses_what_an_edge_should_not_point_at(url: str, reason: str) -> None:
    refusal = DEFAULT.refusal(url)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:5001", "http://127.0.0.9:8000", "http://[::1]:5000", "http://localhost:5000"]
)
def test_the_default_allowlist_admits_loopback_edges(url: str) -> None:
    assert DEFAULT.refusal(url) is None


def test_an_operator_widens_the_allowlist_but_never_to_link_local() -> None:
    settings = parse_gateway({"advertised_networks": ["0.0.0.0/0"], "advertised_ports": [80, "5000-5099"]})
    allowlist = AddressAllowlist.from_settings(settings.advertised_networks, settings.advertised_ports)
    assert allowlist.refusal("http://10.1.2.3:5050") is None
    assert allowlist.refusal("http://10.1.2.3:80") is None
    assert "port 5100" in (allowlist.refusal("http://10.1.2.3:5100") or "")
    assert "link-local" in (allowlist.refusal("http://169.254.169.254:80") or "")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"advertised_networks": ["10.0.0.0/33"]}, "advertised_networks: '10.0.0.0/33' is not a network"),
        ({"advertised_ports": ["0-10"]}, "advertised_ports: '0-10' is not a port range within 1-65535"),
        ({"advertised_ports": ["http"]}, "advertised_ports: 'http' is not a port"),
        ({"advertised_networks": "127.0.0.0/8"}, "advertised_networks must be a list of networks"),
    ],
)
def test_a_bad_allowlist_stops_startup_with_one_line(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_gateway(table)


async def test_updateservers_refuses_addresses_outside_the_allowlist_with_the_reason(
    edge: EdgeFactory, gateway: GatewayFactory
) -> None:
    allowed, outside = await edge("allowed"), await edge("outside")
    # "outside" listens on 127.0.0.1, advertised as 127.0.0.2 (loopback too, so nothing leaves this machine).
    peers = [f"127.0.0.1:{allowed.port}", f"127.0.0.2:{outside.port}", "127.0.0.1:80"]
    advertiser = await edge("advertiser", peers=peers)
    document = {
        "gateway": {"advertised_networks": ["127.0.0.1/32"]},
        "plugins": {"math": {"servers": servers_table(("advertiser", advertiser))}},
    }
    gw = await gateway(document)
    async with gw.operator.post("/updateservers?server=advertiser") as reply:
        assert reply.status == 200
        body = await reply.json()
    assert body["data"] == [f"127.0.0.1:{advertiser.port}", f"127.0.0.1:{allowed.port}"]
    assert "outside the advertised_networks (127.0.0.1/32)" in body["dropped"][f"127.0.0.2:{outside.port}"]
    assert "port 80 is outside the advertised_ports" in body["dropped"]["127.0.0.1:80"]
    assert body["dropped"][f"127.0.0.2:{outside.port}"].startswith("refused: ")
    # Nothing was sent to the refused one, not even a probe: this health check is its first request.
    async with aiohttp.ClientSession() as session:
        for server, first in ((outside, True), (allowed, False)):
            async with session.get(server.url + "/health") as reply:
                assert ((await reply.json())["requests"] == 1) is first
