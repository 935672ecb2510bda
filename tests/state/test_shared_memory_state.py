"""SharedMemoryState between real processes started like Sanic's workers ("spawn", handles as arguments).

Each child attaches to the parent's tables and works on them; the parent then
checks what only sharing can explain: one window admitting ``limit + 1`` events
in all, nonce leases that never overlapped, a health verdict crossing processes,
a dead holder's lease taken over and the late holder fenced off, cached values
and claims crossing processes, and one winner per key among racing claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from offload.state import shared_memory
from offload.state.base import HealthRecord, StateUnavailable
from offload.state.shared_memory import CACHE_KEY_BYTES, HEALTH_RECORD_BYTES, SharedMemoryState
from offload.throughput import WindowAdmission

SPAWN = multiprocessing.get_context("spawn")
# Upper bound for any wait on a child (start-up included); the tests take far less.
WAIT_S = 20.0
# Long enough that no window rolls over during a test.
LONG_WINDOW_S = 600.0


@pytest.fixture
def spawn_default() -> Iterator[None]:
    """Make "spawn" the default start method, as Sanic does before ``main_process_start``, and restore it after."""
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


@pytest.fixture
def state(spawn_default: None) -> SharedMemoryState:
    """Tables created with the default context, as the main process does under Sanic."""
    return SharedMemoryState.create(windows=8, nonce_slots=8, health_slots=16)


@contextlib.contextmanager
def children(*processes: BaseProcess, clean_exit: bool = True) -> Iterator[None]:
    """Start ``processes``; join them after the block (and check they exited cleanly); kill any left over."""
    started: list[BaseProcess] = []
    try:
        for process in processes:
            process.start()
            started.append(process)
        yield
        for process in started:
            process.join(WAIT_S)
        if clean_exit:
            assert [process.exitcode for process in started] == [0] * len(started)
    finally:
        for process in started:
            if process.is_alive():
                process.kill()
            process.join()


async def get(queue: Any) -> Any:
    """``queue.get`` without blocking the test's event loop (the parent's health poller runs meanwhile)."""
    return await asyncio.to_thread(queue.get, True, WAIT_S)


# -- what the children run (module level, so that a spawned process can import it) ----------


def race_admits(handles: tuple[Any, ...], limit: int, attempts: int, barrier: Any, results: Any) -> None:
    state = SharedMemoryState.attach(handles)
    seen = state.count_now("recorded", LONG_WINDOW_S)  # what the parent recorded before starting us
    barrier.wait(WAIT_S)  # every child starts admitting at the same moment
    admitted = sum(state.admit_now("raced", limit, LONG_WINDOW_S).admitted for _ in range(attempts))
    results.put((admitted, seen))


def hold_leases(handles: tuple[Any, ...], account: str, rounds: int, barrier: Any, events: Any) -> None:
    state = SharedMemoryState.attach(handles)
    barrier.wait(WAIT_S)  # start together: each child's leases take milliseconds, start-up takes longer

    async def signer() -> None:
        for _ in range(rounds):
            async with state.nonce_lease(account, hold_s=30) as lease:
                enter = time.monotonic_ns()
                nonce = await lease.current()
                nonce = 0 if nonce is None else nonce
                await asyncio.sleep(0.0005)  # hold it across a real await, as a signer does while sending
                await lease.advance(nonce + 1)
                events.put((os.getpid(), enter, time.monotonic_ns(), nonce))

    async def main() -> None:
        await asyncio.gather(signer(), signer())  # two tasks per process: the asyncio lock in front is used too

    asyncio.run(main())


def publish(handles: tuple[Any, ...], record: HealthRecord) -> None:
    asyncio.run(SharedMemoryState.attach(handles).publish_health(record))


def hold_and_hang(handles: tuple[Any, ...], account: str, hold_s: float, acquired: Any) -> None:
    state = SharedMemoryState.attach(handles)

    async def main() -> None:
        async with state.nonce_lease(account, hold_s=hold_s) as lease:
            await lease.advance(7)
            acquired.put(time.monotonic())
            await asyncio.sleep(3600)  # until the parent kills us, lease in hand

    asyncio.run(main())


def take_over(handles: tuple[Any, ...], account: str, found: Any) -> None:
    state = SharedMemoryState.attach(handles)

    async def main() -> None:
        async with state.nonce_lease(account, hold_s=30) as lease:
            found.put(await lease.current())
            await lease.advance(42)

    asyncio.run(main())


# -- windows ----------------------------------------------------------------------------------


def test_one_window_admits_limit_plus_one_across_processes(state: SharedMemoryState) -> None:
    limit, attempts, count = 300, 200, 4  # each process alone would admit all its 200
    for _ in range(5):
        asyncio.run(state.record("recorded", LONG_WINDOW_S))
    barrier, results = SPAWN.Barrier(count), SPAWN.Queue()
    racers = [
        SPAWN.Process(target=race_admits, args=(state.handles(), limit, attempts, barrier, results))
        for _ in range(count)
    ]
    with children(*racers):
        reports = [results.get(timeout=WAIT_S) for _ in racers]

    assert sum(admitted for admitted, _ in reports) == limit + 1
    assert [seen for _, seen in reports] == [5] * count
    assert state.count_now("raced", LONG_WINDOW_S) == limit + 1
    assert state.admit_now("raced", limit, LONG_WINDOW_S) == WindowAdmission(False, limit + 1)


def test_a_full_window_table_names_its_limit(spawn_default: None) -> None:
    state = SharedMemoryState.create(windows=2)
    assert state.admit_now("pool-a", 0, LONG_WINDOW_S) == WindowAdmission(True, 1)
    assert state.admit_now("pool-b", 0, LONG_WINDOW_S) == WindowAdmission(True, 1)
    with pytest.raises(RuntimeError, match="all 2 window slots are in use"):
        state.admit_now("pool-c", 0, LONG_WINDOW_S)
    # A key whose window length changed keeps its slot and starts over.
    assert state.admit_now("pool-a", 0, 60.0) == WindowAdmission(True, 1)
    assert state.count_now("pool-b", LONG_WINDOW_S) == 1


def test_another_attachment_sees_the_same_windows(state: SharedMemoryState) -> None:
    other = SharedMemoryState.attach(state.handles())
    assert [other.admit_now("pool", 1, LONG_WINDOW_S).admitted for _ in range(2)] == [True, True]
    assert state.admit_now("pool", 1, LONG_WINDOW_S) == WindowAdmission(False, 2)
    assert asyncio.run(state.count("pool", LONG_WINDOW_S)) == 2


# -- nonce leases -----------------------------------------------------------------------------


async def test_nonce_leases_never_overlap_and_advance_one_by_one(state: SharedMemoryState) -> None:
    processes, rounds = 3, 25
    total = processes * 2 * rounds
    barrier, events = SPAWN.Barrier(processes), SPAWN.Queue()
    signers = [
        SPAWN.Process(target=hold_leases, args=(state.handles(), "0xsigner", rounds, barrier, events))
        for _ in range(processes)
    ]
    with children(*signers):
        held = sorted([await get(events) for _ in range(total)], key=lambda event: event[1])

    overlaps = [(first, second) for first, second in itertools.pairwise(held) if first[2] >= second[1]]
    assert overlaps == []
    assert [nonce for *_, nonce in held] == list(range(total))
    assert len({pid for pid, *_ in held}) == processes
    async with state.nonce_lease("0xsigner", hold_s=1) as lease:
        assert await lease.current() == total


async def test_a_dead_holders_lease_is_taken_over_after_hold_s(state: SharedMemoryState) -> None:
    hold_s, acquired = 0.5, SPAWN.Queue()
    holder = SPAWN.Process(target=hold_and_hang, args=(state.handles(), "0xdead", hold_s, acquired))
    with children(holder, clean_exit=False):
        held_since = await get(acquired)
        holder.kill()  # dies lease in hand, never releasing it
        holder.join(WAIT_S)
    assert holder.exitcode is not None

    async with asyncio.timeout(5):
        async with state.nonce_lease("0xdead", hold_s=5) as lease:
            waited = time.monotonic() - held_since
            # The holder may have sent a transaction with nonce 7 before dying: ask the chain again.
            assert await lease.current() is None
    assert waited >= hold_s - 0.05


async def test_a_lease_taken_over_refuses_to_advance(state: SharedMemoryState) -> None:
    found = SPAWN.Queue()
    async with state.nonce_lease("0xslow", hold_s=0.3) as lease:
        await lease.advance(5)
        late = SPAWN.Process(target=take_over, args=(state.handles(), "0xslow", found))
        with children(late):
            assert await get(found) is None  # took over after 0.3 s, and forgot what we stored
        with pytest.raises(StateUnavailable, match="lease lost"):
            await lease.advance(6)
        with pytest.raises(StateUnavailable, match="lease lost"):
            await lease.current()
        await lease.forget()  # fenced: must not forget what the new holder stored
    async with state.nonce_lease("0xslow", hold_s=1) as lease:
        assert await lease.current() == 42


async def test_leases_of_different_accounts_do_not_wait_for_each_other(state: SharedMemoryState) -> None:
    async with asyncio.timeout(1):
        async with state.nonce_lease("0xa", hold_s=30) as first, state.nonce_lease("0xb", hold_s=30) as second:
            await first.advance(1)
            await second.advance(2)
            assert (await first.current(), await second.current()) == (1, 2)


# -- health verdicts --------------------------------------------------------------------------


def verdict(server: str, *, replica: str = "parent", available: bool = False, **fields: Any) -> HealthRecord:
    values: dict[str, Any] = {"reason": "probe failed", "at": time.time(), "ttl_s": 30.0, **fields}
    return HealthRecord(pool="rpc", server=server, available=available, replica=replica, **values)


async def test_a_verdict_published_by_a_child_reaches_the_parents_listener(state: SharedMemoryState) -> None:
    received: list[HealthRecord] = []
    arrived = {"child": asyncio.Event(), "parent": asyncio.Event()}

    def listener(record: HealthRecord) -> None:
        received.append(record)
        arrived[record.replica].set()

    state.on_health(listener)
    await state.start()
    try:
        from_child = verdict("http://10.0.0.1:8545", replica="child")
        with children(SPAWN.Process(target=publish, args=(state.handles(), from_child))):
            await asyncio.wait_for(arrived["child"].wait(), 5)
        own = verdict("http://10.0.0.2:8545", available=True, reason=None)
        await state.publish_health(own)
        await asyncio.wait_for(arrived["parent"].wait(), 5)  # this process's own records are told too
    finally:
        await state.close()

    assert received == [from_child, own]
    assert await state.health_records("rpc") == [from_child, own]
    assert await state.health_records("other-pool") == []


async def test_health_slots_keep_the_newest_verdict_per_server(state: SharedMemoryState) -> None:
    down = verdict("http://a", at=1000.0)
    await state.publish_health(down)
    up = verdict("http://a", available=True, reason=None, at=1001.0)
    await state.publish_health(up)
    await state.publish_health(verdict("http://a", at=999.0))  # older than what is stored: dropped
    await state.publish_health(verdict("http://gone", ttl_s=0))  # expires at once
    assert await state.health_records("rpc") == [up]

    # More servers than slots: the oldest records make room.
    servers = [f"http://server-{index}" for index in range(state.health_slots + 4)]
    for server in servers:
        await state.publish_health(verdict(server))
    kept = await state.health_records("rpc")
    assert [record.server for record in kept] == servers[-state.health_slots :]


async def test_a_long_reason_is_cut_to_fit_its_slot(state: SharedMemoryState) -> None:
    long = verdict("http://a", reason="é" * 5000)
    await state.publish_health(long)
    [stored] = await state.health_records("rpc")
    assert stored.reason is not None and stored.reason.endswith("…")
    assert 0 < len(stored.reason) < 1000
    assert stored == verdict("http://a", reason=stored.reason, at=long.at)
    assert len(json.dumps(stored.reason, ensure_ascii=False).encode()) < HEALTH_RECORD_BYTES


# -- cache, ping, hand-over -------------------------------------------------------------------


async def test_ping_answers_and_another_attachment_sees_the_cache(state: SharedMemoryState) -> None:
    await state.ping()
    assert (state.shares_cache, state.cache_slots, state.cache_value_bytes) == (True, 512, 16384)
    await state.cache_set("block", b"0x10", 30)
    assert await state.cache_get("block") == b"0x10"
    assert await SharedMemoryState.attach(state.handles()).cache_get("block") == b"0x10"


def test_handles_go_into_sanic_shared_ctx_without_warnings(
    state: SharedMemoryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sanic.types import shared_ctx

    warnings: list[str] = []
    monkeypatch.delenv("SANIC_WORKER_NAME", raising=False)
    monkeypatch.setattr(shared_ctx.error_logger, "warning", warnings.append)
    context = shared_ctx.SharedContext()
    context.offload_state = state.handles()
    assert warnings == []


# -- shared cache -----------------------------------------------------------------------------


def run_cache_steps(handles: tuple[Any, ...], steps: list[tuple[Any, ...]], results: Any) -> None:
    """Run ``("get" | "set" | "add" | "delete", *arguments)`` steps on the shared cache; report their results."""
    state = SharedMemoryState.attach(handles)

    async def main() -> list[Any]:
        return [await getattr(state, f"cache_{name}")(*arguments) for name, *arguments in steps]

    results.put(asyncio.run(main()))


def race_claims(handles: tuple[Any, ...], keys: list[str], barrier: Any, results: Any) -> None:
    state = SharedMemoryState.attach(handles)
    mine = str(os.getpid()).encode()

    async def main() -> list[bool]:
        barrier.wait(WAIT_S)  # inside the loop already: every child claims the same keys at the same moment
        return [await state.cache_add(key, mine, 30) for key in keys]

    results.put((mine, asyncio.run(main())))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The cache's monotonic clock in ms, moved by the test (``clock[0] += ...``)."""
    now = [10_000_000]
    monkeypatch.setattr(shared_memory, "_now_ms", lambda: now[0])
    return now


async def test_values_and_claims_cross_processes(state: SharedMemoryState) -> None:
    await state.cache_set("from-parent", b"parent's", 30)
    assert await state.cache_add("claimed", b"parent", 30)
    steps = [
        ("get", "from-parent"),
        ("set", "from-child", b"child's", 30),
        ("add", "claimed", b"child", 30),  # the parent holds it
        ("get", "claimed"),
        ("delete", "claimed"),
        ("add", "claimed", b"child", 30),  # freed: a new claim
        ("get", "missing"),
    ]
    results = SPAWN.Queue()
    with children(SPAWN.Process(target=run_cache_steps, args=(state.handles(), steps, results))):
        assert await get(results) == [b"parent's", None, False, b"parent", None, True, None]

    assert await state.cache_get("from-child") == b"child's"
    assert not await state.cache_add("claimed", b"parent", 30)
    assert await state.cache_get("claimed") == b"child"


async def test_racing_claims_have_exactly_one_winner_per_key(state: SharedMemoryState) -> None:
    count, keys = 4, [f"idempotency:{index}" for index in range(100)]
    barrier, results = SPAWN.Barrier(count), SPAWN.Queue()
    racers = [SPAWN.Process(target=race_claims, args=(state.handles(), keys, barrier, results)) for _ in range(count)]
    with children(*racers):
        reports = [await get(results) for _ in racers]

    winners = {key: [pid for pid, claimed in reports if claimed[index]] for index, key in enumerate(keys)}
    assert [len(pids) for pids in winners.values()] == [1] * len(keys)
    assert {key: await state.cache_get(key) for key in keys} == {key: pids[0] for key, pids in winners.items()}


async def test_entries_expire_and_a_ttl_of_zero_stores_nothing(state: SharedMemoryState, clock: list[int]) -> None:
    await state.cache_set("block", b"0x10", 1.0)
    clock[0] += 999
    assert await state.cache_get("block") == b"0x10"
    clock[0] += 1
    assert await state.cache_get("block") is None

    assert await state.cache_add("claim", b"first", 0.5)
    assert not await state.cache_add("claim", b"second", 0.5)
    clock[0] += 500
    assert await state.cache_add("claim", b"second", 0.5)  # the first claim expired
    assert await state.cache_get("claim") == b"second"

    assert not await state.cache_add("zero", b"x", 0)
    assert not await state.cache_add("zero", b"x", -1)
    await state.cache_set("zero", b"x", 0)
    assert await state.cache_get("zero") is None
    await state.cache_set("kept", b"old", 30)
    await state.cache_set("kept", b"new", 0)  # stores nothing, as MemoryState does
    assert await state.cache_get("kept") == b"old"


async def test_a_too_large_value_is_refused_and_never_truncated(spawn_default: None) -> None:
    state = SharedMemoryState.create(cache_slots=4, cache_value_bytes=64)
    await state.cache_set("answer", b"x" * 64, 30)
    assert await state.cache_get("answer") == b"x" * 64

    with pytest.raises(ValueError, match=r"value of 65 bytes is longer than .* limit of 64 bytes") as refused:
        await state.cache_set("answer", b"y" * 65, 30)
    assert await state.cache_get("answer") == b"x" * 64  # the old value stays, whole
    # Also "not shared" for code that stores answers for other processes (StateUnavailable, no outage).
    assert isinstance(refused.value, StateUnavailable) and not refused.value.outage
    with pytest.raises(ValueError, match="limit of 64 bytes"):
        await state.cache_add("claim", b"y" * 65, 30)
    assert await state.cache_get("claim") is None

    long_key = "k" * (CACHE_KEY_BYTES + 1)
    with pytest.raises(ValueError, match=f"limit of {CACHE_KEY_BYTES} bytes per key"):
        await state.cache_set(long_key, b"v", 30)
    assert await state.cache_get(long_key) is None
    await state.cache_delete(long_key)


async def test_a_full_cache_evicts_ordinary_entries_but_never_a_live_claim(
    spawn_default: None, clock: list[int]
) -> None:
    state = SharedMemoryState.create(cache_slots=3)
    await state.cache_set("a", b"a", 30)
    await state.cache_set("b", b"b", 30)
    assert await state.cache_add("claim-1", b"c1", 30)
    assert await state.cache_get("a") == b"a"  # "b" is now the least recently used
    await state.cache_set("d", b"d", 30)
    assert [await state.cache_get(key) for key in ("a", "b", "claim-1", "d")] == [b"a", None, b"c1", b"d"]

    # Claims evict ordinary entries too, the least recently used first.
    assert await state.cache_add("claim-2", b"c2", 30)
    assert await state.cache_add("claim-3", b"c3", 1)
    assert await state.cache_get("a") is None and await state.cache_get("d") is None

    # Nothing but live claims: refused with a 503, whether claiming or setting; every claim stays.
    with pytest.raises(StateUnavailable, match="cache full: all 3 slots hold unexpired claims"):
        await state.cache_add("claim-4", b"c4", 30)
    with pytest.raises(StateUnavailable, match="cache full"):
        await state.cache_set("e", b"e", 30)
    assert [await state.cache_add(key, b"again", 30) for key in ("claim-1", "claim-2", "claim-3")] == [False] * 3

    # An expired claim makes room...
    clock[0] += 1000
    assert await state.cache_add("claim-4", b"c4", 30)
    # ... and so does a claim answered with cache_set (an ordinary entry from then on) or deleted.
    await state.cache_set("claim-1", b"answer", 30)
    assert await state.cache_add("claim-5", b"c5", 30)
    assert await state.cache_get("claim-1") is None
    await state.cache_delete("claim-2")
    assert await state.cache_add("claim-6", b"c6", 30)
    assert [await state.cache_get(key) for key in ("claim-4", "claim-5", "claim-6")] == [b"c4", b"c5", b"c6"]


async def test_a_hash_collision_never_answers_with_another_keys_value(
    state: SharedMemoryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_memory, "_hash64_bytes", lambda data: 7)  # every key collides
    await state.cache_set("key-a", b"A", 30)
    await state.cache_set("key-b", b"B", 30)
    assert (await state.cache_get("key-a"), await state.cache_get("key-b")) == (b"A", b"B")
    assert await state.cache_get("key-c") is None
    assert await state.cache_get("key") is None  # a prefix of the stored keys
    assert not await state.cache_add("key-a", b"other", 30)
    assert await state.cache_add("key-c", b"C", 30)
    await state.cache_delete("key-b")
    assert [await state.cache_get(key) for key in ("key-a", "key-b", "key-c")] == [b"A", None, b"C"]
    assert await state.cache_add("key-b", b"B2", 30)
    assert await state.cache_get("key-b") == b"B2"
