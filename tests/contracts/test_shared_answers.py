"""Write answers survive the trip through the shared store unchanged."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from offload.state.shared_memory import SharedMemoryState
from offload_contracts.idempotency import SharedClaims
from offload_contracts.service import Handed
from offload_contracts.shared_answers import compact_answer, decode_answer, encode_answer
from offload_contracts.writes import Reply


@pytest.mark.parametrize(
    "answer",
    [
        Reply(
            200, {"data": {"tx_hash": "0x" + "ab" * 32, "events": [{"args": {"value": 3}}]}}, {"X-Offload-Server": "a"}
        ),
        Reply(202, {"data": {"outcome": "unknown"}}, {"Location": "/contracts/tx/0x1"}, "0x1", final=False),
        Handed("0x" + "cd" * 32, True, "near"),
        Handed("0x" + "ef" * 32, False, None, "node 'far' dropped the connection"),
    ],
)
def test_answers_round_trip_through_json(answer: Reply | Handed) -> None:
    assert decode_answer(json.loads(json.dumps(encode_answer(answer)))) == answer


def test_anything_else_is_refused_both_ways() -> None:
    with pytest.raises(TypeError):
        encode_answer({"status": 200})
    with pytest.raises(KeyError):
        decode_answer({"kind": "other"})


async def test_an_answer_too_large_for_the_shared_cache_is_shared_as_its_transaction() -> None:
    state = SharedMemoryState.create(cache_slots=4, cache_value_bytes=512, context=multiprocessing.get_context("spawn"))
    claims = SharedClaims(lambda: state, encode_answer, decode_answer, compact=compact_answer)
    key = claims.key_for("operator", "big")
    assert claims.active() and await claims.claim(key, "fingerprint", 60)
    tx_hash = "0x" + "ab" * 32
    big = Reply(200, {"data": {"tx_hash": tx_hash, "events": ["x" * 100] * 20}}, {"X-Offload-Server": "a"}, tx_hash)
    await claims.finish(key, "fingerprint", big, 60)
    record = await claims.read(key)
    assert record is not None and record.done and record.fingerprint == "fingerprint"
    # Only the transaction: a replay asks the nodes what became of it (WriteAnswers.refreshed).
    assert record.value == Reply(202, {}, {}, tx_hash, final=False)
    small = Reply(200, {"data": {"tx_hash": tx_hash}}, {}, tx_hash)
    other = claims.key_for("operator", "small")
    assert await claims.claim(other, "fp", 60)
    await claims.finish(other, "fp", small, 60)
    assert (await claims.read(other)).value == small  # type: ignore[union-attr]
