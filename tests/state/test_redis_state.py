"""RedisState against a real redis-server: the shared-state contract across two clients, and outages.

Every test starts its own redis-server (tests/redis_server.py) and talks to it
through two or more RedisState instances, each with its own connection pool,
as two gateway replicas would. Waiting is always on a condition with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from offload.state.base import HealthRecord, StateBackend, StateUnavailable
from offload.throughput import SlidingWindowCounter, WindowAdmission

from redis_server import RedisServer

try:
    import redis.asyncio as redis_asyncio

    from offload.state.redis_state import RedisState
except ImportError:  # redis-py is an optional dependency of the gateway
    if os.environ.get("OFFLOAD_REQUIRE_REDIS") == "1":
        raise
    pytest.skip("redis-py is not installed: pip install redis", allow_module_level=True)

# Long enough that nothing leaves a window while a test runs.
LONG_WINDOW_S = 30.0
SHORT_S = 0.2
DEADLINE_S = 5.0
HEALTH_CHANNEL = "offload:0:health"  # the default namespace's channel in database 0

Connect = Callable[..., RedisState]


@pytest_asyncio.fixture
async def connect(redis_server: RedisServer) -> AsyncIterator[Connect]:
    """Factory: ``state = connect()`` a RedisState on the test's server (or ``connect(url)``), closed afterwards."""
    states: list[RedisState] = []

    def make(url: str | None = None, **kwargs: Any) -> RedisState:
        state = RedisState(url or redis_server.url, **kwargs)
        states.append(state)
        return state

    yield make
    for state in states:
        await state.close()


@pytest_asyncio.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis_asyncio.Redis]:
    """A plain redis-py client on the same server, to look at keys and publish foreign messages."""
    client = redis_asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S) -> float:
    """Poll ``check`` until it is true; fail after ``deadline_s``. Returns when it became true (monotonic)."""
    deadline = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {deadline_s:g} s")
        await asyncio.sleep(0.005)  # a poll interval, not a synchronisation
    return time.monotonic()


def verdict(server: str = "http://10.0.0.1:8000", **changes: Any) -> HealthRecord:
    record = HealthRecord(
        pool="edge",
        server=server,
        available=False,
        reason="connect refused",
        replica="replica-a",
        at=time.time(),
        ttl_s=LONG_WINDOW_S,
    )
    return dataclasses.replace(record, **changes)


# -- windows ------------------------------------------------------------------------------


async def test_is_a_shared_state_backend(connect: Connect) -> None:
    state = connect()
    assert isinstance(state, StateBackend)
    assert (state.kind, state.shared) == ("redis", True)
    # Answers need a round trip: the synchronous shortcuts always decline.
    assert state.admit_now("k", 1, 1.0) is None
    assert state.count_now("k", 1.0) is None


async def test_admit_record_count_match_the_sliding_window_counter(connect: Connect) -> None:
    state = connect()
    reference = SlidingWindowCounter(LONG_WINDOW_S, clock=lambda: 1000.0)
    steps = ["admit"] * 6 + ["record", "admit", "count"]
    got: list[WindowAdmission | int] = []
    expected: list[WindowAdmission | int] = []
    for step in steps:
        if step == "admit":
            got.append(await state.admit("device", 3, LONG_WINDOW_S))
            expected.append(reference.admit(3))
        elif step == "record":
            got.append(await state.record("device", LONG_WINDOW_S))
            reference.record()
            expected.append(reference.count())
        else:
            got.append(await state.count("device", LONG_WINDOW_S))
            expected.append(reference.count())
    assert got == expected
    # Spelled out: admitted while at most 3 were counted before, so 4 get in; then refused, not counted.
    assert got[:6] == [(True, 1), (True, 2), (True, 3), (True, 4), (False, 4), (False, 4)]
    assert got[6:] == [5, (False, 5), 5]
    # Other keys and other processes' keys are separate windows.
    assert await state.count("other", LONG_WINDOW_S) == 0
    assert await state.admit("other", 0, LONG_WINDOW_S) == (True, 1)
    assert await state.admit("other", 0, LONG_WINDOW_S) == (False, 1)


async def test_two_clients_racing_admit_at_most_limit_plus_one(connect: Connect) -> None:
    # This is about atomicity, not latency: a generous timeout keeps a loaded CI machine from failing it.
    first, second = (connect(op_timeout_s=2.0, connect_timeout_s=5.0) for _ in range(2))
    limit, attempts = 25, 150
    calls = [client.admit("busy-device", limit, LONG_WINDOW_S) for _ in range(attempts) for client in (first, second)]
    results = await asyncio.gather(*calls)
    admitted = [result for result in results if result.admitted]
    assert len(admitted) == limit + 1
    # Atomic check-and-count: every admitted event saw a different count, 1 .. limit+1.
    assert sorted(result.count for result in admitted) == list(range(1, limit + 2))
    assert all(result.count == limit + 1 for result in results if not result.admitted)
    assert await first.count("busy-device", LONG_WINDOW_S) == limit + 1
    assert await second.count("busy-device", LONG_WINDOW_S) == limit + 1


async def test_window_forgets_after_the_window_and_its_key_expires(connect: Connect, raw: Any) -> None:
    state, other = connect(), connect()
    started = time.monotonic()
    for _ in range(3):
        await state.record("brief", SHORT_S)
    assert await other.count("brief", SHORT_S) == 3
    keys = await raw.keys("*")
    assert len(keys) == 1 and b"brief" in keys[0]
    # It expires by itself: one window and one bucket after the last write, never sooner.
    assert 0 < await raw.pttl(keys[0]) <= SHORT_S * 1000 * 51 / 50 + 1

    async def forgotten() -> bool:
        return await other.count("brief", SHORT_S) == 0

    # Conservative: the events (all recorded after `started`) are never forgotten before a full window.
    assert await eventually(forgotten, "the window emptying") - started >= SHORT_S

    async def key_gone() -> bool:
        return not await raw.exists(keys[0])

    await eventually(key_gone, "the idle window's key expiring")
    assert await state.admit("brief", 0, SHORT_S) == (True, 1)


async def test_a_key_used_with_another_window_starts_over(connect: Connect) -> None:
    state = connect()
    await state.record("device", LONG_WINDOW_S)
    await state.record("device", LONG_WINDOW_S)
    assert await state.count("device", LONG_WINDOW_S) == 2
    # As MemoryState does: another window length is another counter.
    assert await state.count("device", 10.0) == 0
    assert await state.admit("device", 5, 10.0) == (True, 1)
    with pytest.raises(ValueError, match="window_s"):
        await state.admit("device", 5, 0)


# -- nonce leases -------------------------------------------------------------------------


async def test_nonce_lease_is_exclusive_across_instances(connect: Connect) -> None:
    first, second = connect(), connect()
    events: list[tuple[str, str]] = []
    rounds = 4

    async def worker(state: RedisState, name: str) -> None:
        for _ in range(rounds):
            async with state.nonce_lease("0xAccount", hold_s=5.0) as lease:
                events.append(("enter", name))
                # A read-modify-write with round trips in between: overlapping holders would lose increments.
                current = await lease.current()
                await lease.current()
                await lease.advance((current or 0) + 1)
                events.append(("exit", name))

    workers = [worker(state, f"{label}{index}") for label, state in (("a", first), ("b", second)) for index in range(3)]
    await asyncio.gather(*workers)

    assert len(events) == 2 * 6 * rounds
    for position in range(0, len(events), 2):
        entered, exited = events[position], events[position + 1]
        assert entered[0] == "enter" and exited == ("exit", entered[1]), events[position : position + 4]
    assert {name[0] for _, name in events} == {"a", "b"}  # both processes held it
    async with second.nonce_lease("0xAccount", hold_s=5.0) as lease:
        assert await lease.current() == 6 * rounds  # no increment lost


async def test_a_dead_holders_lease_is_taken_over_after_hold_s(connect: Connect) -> None:
    dead, alive, third = connect(), connect(), connect()
    hold_s = 0.3
    started = time.monotonic()
    # The holder "dies": it enters the lease and never leaves it.
    abandoned = dead.nonce_lease("0xAccount", hold_s)
    dead_lease = await abandoned.__aenter__()
    await dead_lease.advance(7)

    async with alive.nonce_lease("0xAccount", hold_s) as lease:
        waited = time.monotonic() - started
        # Not before the dead holder's hold_s ran out (1 ms for the server's millisecond expiry), not much after.
        assert hold_s - 0.001 <= waited < hold_s + 1.0
        assert await lease.current() == 7
        await lease.advance(8)
        for late in (lambda: dead_lease.advance(100), dead_lease.current, dead_lease.forget):
            with pytest.raises(StateUnavailable, match="lease lost") as raised:
                await late()
            assert raised.value.status == 503
        # The dead holder's late release must not free the lease it lost: a third one still waits, in vain.
        await abandoned.__aexit__(None, None, None)
        with pytest.raises(StateUnavailable, match="still held"):
            async with third.nonce_lease("0xAccount", hold_s=0.05):
                pytest.fail("entered a lease that another process holds")

    async with third.nonce_lease("0xAccount", hold_s) as lease:
        assert await lease.current() == 8  # the lost holder's advance(100) was refused


async def test_forget_clears_the_sequence_for_the_next_holder(connect: Connect) -> None:
    first, second = connect(), connect()
    async with first.nonce_lease("0xAccount", 5.0) as lease:
        assert await lease.current() is None
        await lease.advance(3)
        assert await lease.current() == 3
        await lease.forget()
        assert await lease.current() is None
        await lease.advance(4)
    async with second.nonce_lease("0xAccount", 5.0) as lease:
        assert await lease.current() == 4
        await lease.forget()
    async with first.nonce_lease("0xAccount", 5.0) as lease:
        assert await lease.current() is None
        with pytest.raises(ValueError):
            await lease.advance(-1)


# -- health verdicts ----------------------------------------------------------------------


async def test_published_verdicts_reach_every_listener_and_the_store(connect: Connect, raw: Any) -> None:
    publisher, subscriber = connect(), connect()
    heard_by_subscriber: list[HealthRecord] = []
    heard_by_publisher: list[HealthRecord] = []
    arrived, publisher_heard_both = asyncio.Event(), asyncio.Event()

    def faulty(record: HealthRecord) -> None:
        raise RuntimeError("a listener bug")

    def listen(record: HealthRecord) -> None:
        heard_by_subscriber.append(record)
        arrived.set()

    subscriber.on_health(faulty)  # must not keep the next listener, or the next message, from arriving
    subscriber.on_health(listen)

    def publisher_listens(record: HealthRecord) -> None:
        heard_by_publisher.append(record)
        if len(heard_by_publisher) == 2:
            publisher_heard_both.set()

    publisher.on_health(publisher_listens)
    for state in (publisher, subscriber):
        await state.start()
        await asyncio.wait_for(state.wait_listening(), DEADLINE_S)

    down = verdict()
    await publisher.publish_health(down)
    await asyncio.wait_for(arrived.wait(), DEADLINE_S)
    assert heard_by_subscriber == [down]
    assert await subscriber.health_records("edge") == [down]
    assert await subscriber.health_records("another-pool") == []

    # Foreign or malformed messages on the channel are ignored; an older verdict does not replace a newer one.
    # (Both subscribers receive them: the channel is the one the gateway listens on.)
    assert await raw.publish(HEALTH_CHANNEL, b"not json") == 2
    assert await raw.publish(HEALTH_CHANNEL, json.dumps({"pool": "edge", "server": 1})) == 2
    await publisher.publish_health(dataclasses.replace(down, available=True, reason=None, at=down.at - 10))
    newer = dataclasses.replace(down, available=True, reason=None, replica="replica-b", at=down.at + 1)
    arrived.clear()
    await publisher.publish_health(newer)
    await asyncio.wait_for(arrived.wait(), DEADLINE_S)
    assert heard_by_subscriber == [down, newer]
    assert await subscriber.health_records("edge") == [newer]
    # The publisher hears its own verdicts too (the caller filters by replica).
    await asyncio.wait_for(publisher_heard_both.wait(), DEADLINE_S)
    assert heard_by_publisher == [down, newer]


async def test_verdicts_expire_after_their_ttl(connect: Connect) -> None:
    state = connect()
    started = time.monotonic()
    brief = verdict("http://10.0.0.1:8000", ttl_s=SHORT_S)
    lasting = verdict("http://10.0.0.2:8000")
    await state.publish_health(brief)
    await state.publish_health(lasting)
    assert sorted(await state.health_records("edge"), key=lambda record: record.server) == [brief, lasting]

    async def only_lasting() -> bool:
        return await state.health_records("edge") == [lasting]

    assert await eventually(only_lasting, "the brief verdict expiring") - started >= SHORT_S


# -- cache --------------------------------------------------------------------------------


async def test_cache_is_shared_and_expires(connect: Connect) -> None:
    writer, reader = connect(), connect()
    assert await reader.cache_get("block:1") is None
    await writer.cache_set("block:1", b"\x00\xffpayload", LONG_WINDOW_S)
    assert await reader.cache_get("block:1") == b"\x00\xffpayload"
    for ttl_s in (0, -1.0):
        await writer.cache_set("never", b"x", ttl_s)
        assert await reader.cache_get("never") is None
    started = time.monotonic()
    await writer.cache_set("brief", b"y", SHORT_S)
    assert await reader.cache_get("brief") == b"y"

    async def gone() -> bool:
        return await reader.cache_get("brief") is None

    assert await eventually(gone, "the cache entry expiring") - started >= SHORT_S


async def test_cache_add_is_one_claim_across_processes(connect: Connect) -> None:
    first, second = connect(), connect()
    assert first.shares_cache is True
    claims = await asyncio.gather(*(state.cache_add("claim", b"mine", LONG_WINDOW_S) for state in (first, second) * 5))
    assert claims.count(True) == 1
    assert await second.cache_add("claim", b"again", LONG_WINDOW_S) is False
    await first.cache_delete("claim")
    assert await second.cache_get("claim") is None
    assert await second.cache_add("claim", b"again", LONG_WINDOW_S) is True
    assert await first.cache_add("never", b"x", 0) is False


# -- outages ------------------------------------------------------------------------------


def operations(state: RedisState) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of every operation that needs the store."""

    async def lease() -> None:
        async with state.nonce_lease("0xAccount", 1.0) as held:
            await held.advance(1)

    return {
        "ping": state.ping,
        "admit": lambda: state.admit("device", 10, LONG_WINDOW_S),
        "record": lambda: state.record("device", LONG_WINDOW_S),
        "count": lambda: state.count("device", LONG_WINDOW_S),
        "nonce_lease": lease,
        "publish_health": lambda: state.publish_health(verdict()),
        "health_records": lambda: state.health_records("edge"),
        "cache_set": lambda: state.cache_set("k", b"v", LONG_WINDOW_S),
        "cache_get": lambda: state.cache_get("k"),
    }


async def test_a_stopped_redis_fails_fast_and_is_used_again_once_back(
    connect: Connect, redis_server: RedisServer
) -> None:
    state = connect(op_timeout_s=0.1)
    heard = asyncio.Event()
    state.on_health(lambda record: heard.set())
    await state.start()
    await asyncio.wait_for(state.wait_listening(), DEADLINE_S)
    for operation in operations(state).values():
        await operation()  # all work while it is up (and leave pooled connections behind)

    redis_server.stop()
    for name, operation in operations(state).items():
        began = time.monotonic()
        with pytest.raises(StateUnavailable) as raised:
            await operation()
        assert time.monotonic() - began < 0.1 + 0.2, name
        reason = raised.value.reason
        assert reason.startswith(f"redis at 127.0.0.1:{redis_server.port}: "), (name, reason)
        assert "\n" not in reason and "Traceback" not in reason, (name, reason)
        assert raised.value.status == 503

    async def listener_down() -> bool:
        return not state.listening

    await eventually(listener_down, "the listener noticing the outage")
    heard.clear()  # it heard the verdict published while Redis was up

    redis_server.restart()
    # The same RedisState works again at once: no retry here, and the restarted server is empty.
    await state.ping()
    assert await state.admit("device", 10, LONG_WINDOW_S) == (True, 1)
    await state.cache_set("k", b"back", LONG_WINDOW_S)
    assert await state.cache_get("k") == b"back"
    async with state.nonce_lease("0xAccount", 1.0) as lease:
        assert await lease.current() is None
    # The listener resubscribed by itself: a verdict published now is heard.
    back = verdict(available=True, reason=None)

    async def heard_after_publishing() -> bool:
        await state.publish_health(back)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), 0.1)
        return heard.is_set()

    await eventually(heard_after_publishing, "the listener hearing a verdict after the restart")
    assert state.listening
    assert await state.health_records("edge") == [back]


async def test_a_redis_that_does_not_answer_times_out_within_op_timeout(
    connect: Connect, redis_server: RedisServer
) -> None:
    state = connect(op_timeout_s=0.2)
    await state.ping()
    redis_server.freeze()
    try:
        for name in ("ping", "admit", "cache_get"):
            began = time.monotonic()
            with pytest.raises(StateUnavailable, match="no answer within 200 ms"):
                await operations(state)[name]()
            assert 0.19 <= time.monotonic() - began < 0.2 + 0.2, name  # the timeout, not another failure
    finally:
        redis_server.thaw()
    await state.ping()
    # The window's connection that timed out mid-reply was dropped: later answers are their own.
    counted = await state.record("after-freeze", 60)
    assert counted == 1 and await state.count("after-freeze", 60) == 1
    assert (await state.admit("after-freeze", 5, 60)).count == 2


# -- URLs ---------------------------------------------------------------------------------


async def test_unix_socket_url(connect: Connect, redis_server: RedisServer) -> None:
    over_socket, over_tcp = connect(redis_server.unix_url), connect()
    assert over_socket.describe_url() == redis_server.unix_url
    await over_socket.ping()
    assert await over_socket.record("device", LONG_WINDOW_S) == 1
    assert await over_tcp.count("device", LONG_WINDOW_S) == 1  # the same store either way


async def test_the_password_is_never_shown(connect: Connect, redis_server: RedisServer) -> None:
    # This server has no password, so the AUTH that the URL asks for is refused: a real failure path.
    state = connect(f"redis://bob:hunter2@127.0.0.1:{redis_server.port}/0")
    assert state.describe_url() == f"redis://bob:***@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(StateUnavailable) as raised:
        await state.ping()
    assert raised.value.reason == f"redis at 127.0.0.1:{redis_server.port}: authentication failed"
    assert "hunter2" not in str(raised.value)
    assert raised.value.__cause__ is None and "hunter2" not in repr(raised.value.__context__)
    # Other spellings of a password, checked without connecting.
    assert connect("rediss://:s3cret@cache.example:6380/2").describe_url() == "rediss://:***@cache.example:6380/2"
    assert (
        connect("redis://cache.example/0?password=s3cret&ssl_cert_reqs=none").describe_url()
        == "redis://cache.example/0?password=***&ssl_cert_reqs=none"
    )


async def test_the_window_lane_authenticates_selects_its_database_and_pipelines(
    connect: Connect, raw: redis_asyncio.Redis, redis_server: RedisServer
) -> None:
    await raw.config_set("requirepass", "s3cret")
    try:
        state = connect(f"redis://:s3cret@127.0.0.1:{redis_server.port}/3")
        assert state._lane is not None  # plain TCP: the window takes the lean path
        counts = await asyncio.gather(*(state.record("lane", 60) for _ in range(50)))
        # 50 commands in flight on one connection, each answered with its own count.
        assert sorted(counts) == list(range(1, 51))
        assert await state.count("lane", 60) == 50
        await raw.execute_command("AUTH", "s3cret")
        await raw.execute_command("SELECT", 3)
        assert await raw.exists(state._window_key("lane")) == 1
        wrong = connect(f"redis://:wrong@127.0.0.1:{redis_server.port}/3")
        with pytest.raises(StateUnavailable) as refused:
            await wrong.admit("lane", 5, 60)
        assert "authentication failed" in refused.value.reason and "wrong" not in refused.value.message
    finally:
        await raw.config_set("requirepass", "")
