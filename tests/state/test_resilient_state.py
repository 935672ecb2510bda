"""A shared store that goes away: local state meanwhile, writes refused with a reason, sharing resumed.

``Flaky`` is a fake store that can be switched off (the real one, Redis stopped
and restarted under load, is in tests/scale/test_shared_state.py).
"""

from __future__ import annotations

import asyncio

import pytest

from offload.state import LeaseUnavailable, MemoryState, StateUnavailable
from offload.state.resilient import ResilientState


class Flaky(MemoryState):
    """An in-process store that raises StateUnavailable while ``down`` (a fake for the interface)."""

    kind = "flaky"  # type: ignore[assignment]
    shared = True  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0
        self.back = asyncio.Event()

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StateUnavailable("flaky store: connection refused")

    async def ping(self) -> None:
        self._check()
        self.back.set()

    async def admit(self, key: str, limit: int, window_s: float):  # type: ignore[no-untyped-def]
        self._check()
        return await super().admit(key, limit, window_s)

    def nonce_lease(self, account: str, hold_s: float):  # type: ignore[no-untyped-def]
        self._check()
        if account == "busy":
            raise LeaseUnavailable("nonce lease on busy still held by another process after waiting 5 s")
        return super().nonce_lease(account, hold_s)


async def test_an_outage_falls_back_once_refuses_leases_and_recovers_by_itself() -> None:
    store = Flaky()
    state = ResilientState(store, recheck_s=0.01)
    assert (await state.admit("w", 1, 60)).admitted and state.status()["shared"] is True
    store.down = True
    admitted = await state.admit("w", 1, 60)  # from local state now: the store's count is not visible
    assert admitted.admitted and admitted.count == 1
    assert state.status()["degraded_reason"] == "flaky store: connection refused"
    calls = store.calls
    # While down, the request path does not wait on the store again: answers come from local state at once.
    assert state.admit_now("w", 1, 60) is not None
    assert state.status()["fallbacks"] == 2
    with pytest.raises(StateUnavailable) as refused:
        async with state.nonce_lease("account", 5):
            pass
    assert refused.value.status == 503 and "connection refused" in refused.value.message
    assert store.calls - calls <= 1  # at most the background ping touched the store meanwhile
    store.down = False
    await asyncio.wait_for(store.back.wait(), timeout=5)
    for _ in range(100):  # the recheck task clears the reason right after the successful ping
        if not state.degraded:
            break
        await asyncio.sleep(0.01)
    assert state.status()["shared"] is True and state.status()["outages"] == 1
    assert state.admit_now("w", 1, 60) is None  # shared again: answers need the store
    async with state.nonce_lease("account", 5) as lease:
        await lease.advance(7)
        assert await lease.current() == 7
    await state.close()


async def test_an_error_inside_a_lease_is_not_an_outage() -> None:
    state = ResilientState(Flaky())
    with pytest.raises(StateUnavailable):
        async with state.nonce_lease("account", 5):
            raise StateUnavailable("nonce lease lost")
    assert state.degraded is False
    await state.close()


async def test_a_lease_busy_too_long_is_a_503_of_its_own_not_an_outage() -> None:
    state = ResilientState(Flaky())
    with pytest.raises(LeaseUnavailable) as refused:
        async with state.nonce_lease("busy", 5):
            pass
    assert refused.value.status == 503 and "still held" in refused.value.message
    assert state.degraded is False and state.status()["outages"] == 0
    await state.close()
