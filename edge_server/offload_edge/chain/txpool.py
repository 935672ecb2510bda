"""Signed transactions that arrived before their turn (a nonce gap), held until it comes.

A dev chain mines each transaction as it arrives, so one sent with nonce n+1
before n would be refused by eth-tester. geth instead queues it and runs it
once n is mined; clients that send many transactions concurrently (consecutive
nonces, arriving in any order) rely on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_PER_SENDER", "MAX_QUEUED", "QueueFull", "Waiting", "WaitingTransactions"]

# geth's defaults for its future queue (--txpool.accountqueue, --txpool.globalqueue).
MAX_PER_SENDER = 64
MAX_QUEUED = 1024


class QueueFull(Exception):
    """No room for another waiting transaction."""


@dataclass(frozen=True)
class Waiting:
    """One held transaction: its hash (lowercase 0x-hex), raw 0x-hex bytes and py-evm decoded form."""

    tx_hash: str
    raw: str
    decoded: Any


@dataclass
class WaitingTransactions:
    """Waiting transactions by sender and nonce, and by hash for lookups."""

    by_sender: dict[str, dict[int, Waiting]] = field(default_factory=dict)
    by_hash: dict[str, Waiting] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_hash)

    def hold(self, sender: str, nonce: int, waiting: Waiting) -> None:
        """Keep ``waiting`` until ``sender``'s nonce reaches ``nonce``; a later one for the same slot replaces it."""
        queue = self.by_sender.setdefault(sender, {})
        replaced = queue.get(nonce)
        if replaced is None and (len(queue) >= MAX_PER_SENDER or len(self.by_hash) >= MAX_QUEUED):
            if not queue:
                del self.by_sender[sender]
            raise QueueFull(f"txpool is full: at most {MAX_PER_SENDER} per sender, {MAX_QUEUED} in all")
        if replaced is not None:
            del self.by_hash[replaced.tx_hash]
        queue[nonce] = waiting
        self.by_hash[waiting.tx_hash] = waiting

    def take(self, sender: str, nonce: int) -> Waiting | None:
        """Remove and return ``sender``'s transaction with ``nonce``, if one waits."""
        queue = self.by_sender.get(sender)
        if not queue or nonce not in queue:
            return None
        waiting = queue.pop(nonce)
        if not queue:
            del self.by_sender[sender]
        del self.by_hash[waiting.tx_hash]
        return waiting

    def find(self, tx_hash: str) -> Waiting | None:
        """The waiting transaction with ``tx_hash`` (lowercase 0x-hex), if any."""
        return self.by_hash.get(tx_hash)
