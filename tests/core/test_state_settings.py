"""``[gateway] state`` and friends: one clear line for anything wrong, never a password echoed."""

from __future__ import annotations

import pytest

from offload import ConfigError, create_app, parse_settings
from offload.state import MemoryState, state_kind


def gateway(**table: object) -> object:
    return parse_settings({"gateway": table}).gateway


@pytest.mark.parametrize(
    "value",
    [
        "auto",
        "memory",
        "shared-memory",
        "redis://127.0.0.1:6390/0",
        "rediss://user:pw@10.0.0.5:6380",
        "unix:///tmp/r.sock",
    ],
)
def test_accepted_state_settings(value: str) -> None:
    assert gateway(state=value).state == value  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("redis", 'must be one of "auto", "memory", "shared-memory" or a redis://'),
        ("http://127.0.0.1:6379", "or a redis://, rediss:// or unix:// URL"),
        ("redis://", "must name a host"),
        ("redis://:hunter2@127.0.0.1:99999/0", "is not a valid URL (check its port)"),
        (5, "must be a string"),
    ],
)
def test_refused_state_settings_say_why_in_one_line(value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        gateway(state=value)
    message = str(refused.value)
    assert expected in message and "\n" not in message
    assert "hunter2" not in message


def test_memory_state_with_several_workers_is_refused_and_auto_picks_shared_memory() -> None:
    assert state_kind("auto", 1) == "memory" and state_kind("auto", 3) == "shared-memory"
    assert state_kind("redis://127.0.0.1:1/0", 4) == "redis"
    with pytest.raises(ConfigError, match='state = "memory" keeps state per process'):
        state_kind("memory", 2)


@pytest.mark.parametrize(("key", "value"), [("device", ""), ("device", "a b"), ("replica", "x" * 65), ("replica", 3)])
def test_device_and_replica_names_are_short_identifiers(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"\\[gateway\\] {key} must be a name of at most 64"):
        gateway(**{key: value})


@pytest.mark.parametrize(("key", "value"), [("state_timeout_ms", 0), ("state_required", "yes")])
def test_state_limits_are_checked(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"\\[gateway\\] {key} must be"):
        gateway(**{key: value})


def test_one_process_keeps_its_state_in_memory_and_plugins_reach_it() -> None:
    app = create_app(parse_settings({"plugins": {"math": {"servers": []}}}))
    engine = app.ctx.engine
    assert isinstance(engine.state, MemoryState)
    assert app.ctx.plugins[0].state is engine.state
