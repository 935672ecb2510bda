"""Write answers survive the trip through the shared store unchanged."""

from __future__ import annotations

import json

import pytest

from offload_contracts.service import Handed
from offload_contracts.shared_answers import decode_answer, encode_answer
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
