"""The dev account and where the demo contracts live: pure arithmetic, no chain needed.

Kept apart from :mod:`.node` so gateways and tests can learn the addresses
without importing eth-tester and py-evm.
"""

from __future__ import annotations

import rlp
from eth_utils import decode_hex, keccak, to_checksum_address

from .artifacts import DEMO_CONTRACTS

__all__ = ["DEV_ACCOUNT", "DEV_PRIVATE_KEY", "create_address", "demo_contract_addresses"]

# eth-tester's first dev account: private key 1. Public knowledge; for dev chains only.
DEV_PRIVATE_KEY = "0x" + "00" * 31 + "01"
DEV_ACCOUNT = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"


def create_address(sender: str, nonce: int) -> str:
    """The checksummed address a contract created by ``sender`` with ``nonce`` gets (CREATE)."""
    return to_checksum_address(keccak(rlp.encode([decode_hex(sender), nonce]))[12:])


def demo_contract_addresses() -> dict[str, str]:
    """Where the demo contracts live on every embedded chain.

    They are deployed in :data:`DEMO_CONTRACTS` order from :data:`DEV_ACCOUNT` at
    nonces 0, 1, ..., so the addresses are the same on every start.
    """
    return {name: create_address(DEV_ACCOUNT, nonce) for nonce, name in enumerate(DEMO_CONTRACTS)}
