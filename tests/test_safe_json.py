"""Depth-guarded JSON parsing."""

from __future__ import annotations

import pytest

from offload import safe_json


def test_ordinary_documents_parse_as_json_loads_would() -> None:
    assert safe_json.loads(b'{"a": [1, {"b": "[[[["}], "c": "\\"]"}') == {"a": [1, {"b": "[[[["}], "c": '"]'}
    assert safe_json.loads("[[1]]") == [[1]]


def test_depth_counts_arrays_and_objects_but_not_brackets_in_strings() -> None:
    at_limit = b"[" * 5 + b"]" * 5
    assert not safe_json.nested_deeper_than(at_limit, 5)
    assert safe_json.nested_deeper_than(b"[" * 6 + b"]" * 6, 5)
    assert safe_json.nested_deeper_than(b'{"x": [[{"y": [[]]}]]}', 5)
    # Many brackets side by side, or inside strings, are not depth.
    assert not safe_json.nested_deeper_than(b"[" + b"[]," * 1000 + b"[]]", 5)
    assert not safe_json.nested_deeper_than(b'["' + b"[" * 1000 + b'"]', 5)
    assert not safe_json.nested_deeper_than(b'["\\"' + b"[" * 1000 + b'"]', 5)


def test_too_deep_is_a_value_error_raised_before_parsing() -> None:
    with pytest.raises(safe_json.TooDeep, match="deeper than 128"):
        safe_json.loads(b"[" * 500_000)
    with pytest.raises(ValueError):
        safe_json.loads("[" * 200 + "]" * 200)


def test_an_upstream_answer_nested_too_deep_is_passed_on_as_text() -> None:
    from offload.sending import decode_body

    deep = b"[" * 300_000 + b"]" * 300_000
    assert decode_body(deep, deep.decode(), is_json=True) == deep.decode()
    assert decode_body(b'{"a": [1]}', '{"a": [1]}', is_json=True) == {"a": [1]}
    assert decode_body(b'{"a": 1}', '{"a": 1}', is_json=False) == '{"a": 1}'
