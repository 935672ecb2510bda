"""``eth_feeHistory`` computed as geth does.

eth-tester's own fee history is not usable: it always reports block 1 as the
oldest, walks the ancestors of the newest block instead of ending at it, leaves
out the next block's base fee and never fills in rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["MAX_BLOCKS", "fee_history", "rewards_at_percentiles"]

MAX_BLOCKS = 1024  # geth's cap on blockCount


class BlockSource(Protocol):
    """The part of eth_tester.EthereumTester fee history reads."""

    def get_block_by_number(self, block_number: Any = "latest", full_transactions: bool = False) -> Any: ...

    def get_transaction_receipt(self, transaction_hash: str) -> Any: ...


def rewards_at_percentiles(
    tips_and_gas: Sequence[tuple[int, int]], block_gas_used: int, percentiles: Sequence[float]
) -> list[int]:
    """The priority fee paid at each gas-weighted percentile of a block, as geth computes it.

    ``tips_and_gas`` holds (effective tip, gas used) per transaction; an empty block pays 0.
    """
    if not tips_and_gas:
        return [0] * len(percentiles)
    ordered = sorted(tips_and_gas, key=lambda pair: pair[0])
    rewards = []
    index, gas_so_far = 0, ordered[0][1]
    for percentile in percentiles:
        threshold = int(block_gas_used * percentile / 100)
        while gas_so_far < threshold and index < len(ordered) - 1:
            index += 1
            gas_so_far += ordered[index][1]
        rewards.append(ordered[index][0])
    return rewards


def _check_percentiles(percentiles: Any) -> list[float]:
    if not isinstance(percentiles, list):
        raise ValueError("reward percentiles must be a list of numbers")
    checked: list[float] = []
    for value in percentiles:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise ValueError(f"invalid reward percentile: {value!r}")
        if checked and value < checked[-1]:
            raise ValueError(f"invalid reward percentile: #{len(checked)}:{checked[-1]} > #{len(checked) + 1}:{value}")
        checked.append(float(value))
    return checked


def fee_history(source: BlockSource, block_count: int, newest: int, percentiles: Any) -> dict[str, Any]:
    """The wire-format answer for ``block_count`` blocks ending at block number ``newest``."""
    wanted = _check_percentiles(percentiles or [])
    count = max(0, min(block_count, MAX_BLOCKS, newest + 1))
    oldest = newest - count + 1
    base_fees: list[str] = []
    ratios: list[float] = []
    rewards: list[list[str]] = []
    for number in range(oldest, newest + 1):
        block = source.get_block_by_number(number, full_transactions=bool(wanted))
        base_fee = int(block.get("base_fee_per_gas") or 0)
        base_fees.append(hex(base_fee))
        ratios.append(block["gas_used"] / block["gas_limit"])
        if wanted:
            # A mined transaction's gas_price is its effective price: base fee plus effective tip.
            tips = [
                (int(tx["gas_price"]) - base_fee, int(source.get_transaction_receipt(tx["hash"])["gas_used"]))
                for tx in block["transactions"]
            ]
            rewards.append([hex(reward) for reward in rewards_at_percentiles(tips, block["gas_used"], wanted)])
    if count == 0:
        return {"oldestBlock": "0x0", "baseFeePerGas": [], "gasUsedRatio": []}
    # geth adds the base fee of the block after the newest: what the next transaction pays.
    following = source.get_block_by_number(newest + 1 if newest < latest_number(source) else "pending")
    base_fees.append(hex(int(following.get("base_fee_per_gas") or 0)))
    answer: dict[str, Any] = {"oldestBlock": hex(oldest), "baseFeePerGas": base_fees, "gasUsedRatio": ratios}
    if wanted:
        answer["reward"] = rewards
    return answer


def latest_number(source: BlockSource) -> int:
    """The number of the newest mined block."""
    return int(source.get_block_by_number("latest")["number"])
