"""The list of attacks, in running order (destructive last), and choosing some by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attacks_requests import (
    attack_bad_ids,
    attack_connect_nul,
    attack_csrf_form,
    attack_csrf_text,
    attack_edge_admin_delay,
    attack_get_write,
    attack_notification,
    attack_raw_params,
    attack_rebind,
    attack_updateservers_get,
    attack_with_token,
    judge_bad_ids,
    judge_connect_nul,
    judge_edge_delay,
    judge_notification,
    judge_raw_params,
    judge_updateservers,
    judge_with_token,
)
from attacks_resources import (
    attack_big_arg,
    attack_deep_utf16,
    attack_deep_utf16_edge,
    attack_half_open,
    attack_huge_batch,
    attack_loop_call,
    judge_big_arg,
    judge_deep,
    judge_deep_edge,
    judge_half_open,
    judge_huge_batch,
    judge_loop_call,
)
from common import UsageError
from records import Record, judge_write_refused

if TYPE_CHECKING:
    from probe import Probe


# --- the attacks -----------------------------------------------------------------------------------------

AttackFunc = Callable[["Probe", Record], Awaitable[None]]


@dataclass
class AttackSpec:
    name: str
    title: str
    target: str
    needs: tuple[str, ...]
    func: AttackFunc
    judge: Callable[[Record], str]


# --- the list, in running order (destructive last) -------------------------------------------------------------

ATTACKS: list[AttackSpec] = [
    AttackSpec(
        "csrf-text",
        "POST increment, text/plain {} + Origin evil",
        "gateway",
        ("gateway",),
        attack_csrf_text,
        judge_write_refused,
    ),
    AttackSpec(
        "csrf-form", "POST increment, empty form body", "gateway", ("gateway",), attack_csrf_form, judge_write_refused
    ),
    AttackSpec(
        "rebind", "POST increment, Host: evil.example:8899", "gateway", ("gateway",), attack_rebind, judge_write_refused
    ),
    AttackSpec(
        "get-write",
        "GET execcontract Counter.increment",
        "gateway",
        ("gateway",),
        attack_get_write,
        judge_write_refused,
    ),
    AttackSpec(
        "raw-params",
        "eth_sendRawTransaction params [{}] [1] [true]",
        "gateway",
        ("gateway",),
        attack_raw_params,
        judge_raw_params,
    ),
    AttackSpec("bad-ids", "JSON-RPC id NaN / Infinity / 1e400", "gateway", ("gateway",), attack_bad_ids, judge_bad_ids),
    AttackSpec(
        "notification",
        "JSON-RPC notification (no id)",
        "gateway",
        ("gateway",),
        attack_notification,
        judge_notification,
    ),
    AttackSpec(
        "connect-nul", "raw CONNECT and GET /\\x00", "gateway", ("gateway",), attack_connect_nul, judge_connect_nul
    ),
    AttackSpec("big-arg", "Hello.greet with a 1 MB string", "gateway", ("gateway",), attack_big_arg, judge_big_arg),
    AttackSpec(
        "with-token",
        "100 concurrent increments with the token",
        "gateway",
        ("gateway", "token"),
        attack_with_token,
        judge_with_token,
    ),
    AttackSpec("huge-batch", "6 MB /rpc batch [1,1,...]", "gateway", ("gateway",), attack_huge_batch, judge_huge_batch),
    AttackSpec(
        "updateservers-get",
        "anonymous GET /updateservers",
        "gateway",
        ("gateway",),
        attack_updateservers_get,
        judge_updateservers,
    ),
    AttackSpec(
        "loop-call",
        "eth_call of looping init code (x1, batch x4)",
        "gateway",
        ("gateway",),
        attack_loop_call,
        judge_loop_call,
    ),
    AttackSpec(
        "half-open", "1,100 half-open connections held 15 s", "gateway", ("gateway",), attack_half_open, judge_half_open
    ),
    AttackSpec(
        "deep-utf16",
        "80,000-deep JSON as UTF-16 to /rpc and increment",
        "gateway",
        ("gateway",),
        attack_deep_utf16,
        judge_deep,
    ),
    AttackSpec(
        "deep-utf16-edge",
        "100,000-deep JSON as UTF-16 to edge /rpc",
        "edge",
        ("edge",),
        attack_deep_utf16_edge,
        judge_deep_edge,
    ),
    AttackSpec(
        "edge-admin-delay",
        "anonymous PUT edge /admin/delay 1e308",
        "edge",
        ("edge",),
        attack_edge_admin_delay,
        judge_edge_delay,
    ),
]
BY_NAME = {spec.name: spec for spec in ATTACKS}
ALIASES = {"deep": ["deep-utf16", "deep-utf16-edge"]}


def selected(only: str | None) -> list[AttackSpec]:
    if not only:
        return list(ATTACKS)
    names: list[str] = []
    for item in only.split(","):
        item = item.strip()
        if not item:
            continue
        expanded = ALIASES.get(item, [item])
        for name in expanded:
            if name not in BY_NAME:
                raise UsageError(f"security_probe: unknown attack {name!r}; known: {', '.join(BY_NAME)}")
            names.append(name)
    return [spec for spec in ATTACKS if spec.name in names]  # always in the safe running order
