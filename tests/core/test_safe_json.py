"""Depth-guarded JSON parsing."""

from __future__ import annotations

import pytest

from offload import safe_json


def test_ordinary_documents_parse_as_json_loads_would() -> None:
    assert safe_json.loads(b'{"a": [1, {"b": "[[[["}], "c": "\\"]"}') == {"a": [1, {"b": "[[[["}], "c": '"]'}
    assert safe_json.loads("[[1]]") == [[1]]


def test_depth_counts_arrays_and_objects_but_not_brackets_in_strings() -> None:
    at_limit = "[" * 5 + "]" * 5
    assert not safe_json.nested_deeper_than(at_limit, 5)
    assert safe_json.nested_deeper_than("[" * 6 + "]" * 6, 5)
    assert safe_json.nested_deeper_than('{"x": [[{"y": [[]]}]]}', 5)
    # Many brackets side by side, or inside strings, are not depth.
    assert not safe_json.nested_deeper_than("[" + "[]," * 1000 + "[]]", 5)
    assert not safe_json.nested_deeper_than('["' + "[" * 1000 + '"]', 5)
    assert not safe_json.nested_deeper_than('["\\"' + "[" * 1000 + '"]', 5)


def test_too_deep_is_a_value_error_raised_before_parsing() -> None:
    with pytest.raises(safe_json.TooDeep, match="deeper than 128"):
        safe_json.loads(b"[" * 500_000)
    with pytest.raises(ValueError):
        safe_json.loads("[" * 200 + "]" * 200)


def test_an_upstream_answer_nested_too_deep_is_passed_on_as_text() -> None:
    from offload.sending import decode_body

    deep = b"[" * 300_000 + b"]" * 300_000
    assert decode_body(deep.decode(), is_json=True) == deep.decode()
    assert decode_body('{"a": [1]}', is_json=True) == {"a": [1]}
    assert decode_body('{"a": 1}', is_json=False) == '{"a": 1}'
    assert decode_body('{"a": NaN}', is_json=True) == '{"a": NaN}'


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_depth_is_counted_on_the_decoded_text_in_every_encoding_json_accepts(encoding: str) -> None:
    # In UTF-16 a bracket's neighbour byte can be 0x22 ("), which fooled a scan of the raw bytes.
    deep = ("[" * 80_000 + "]" * 80_000).encode(encoding)
    with pytest.raises(safe_json.TooDeep):
        safe_json.loads(deep)
    assert safe_json.loads('{"a": ["\u2222["]}'.encode(encoding)) == {"a": ["\u2222["]}


@pytest.mark.parametrize("document", ['{"id": NaN}', "[Infinity]", "-Infinity", '{"id": 1e400}', "[-1E999]"])
def test_non_standard_numbers_are_refused(document: str) -> None:
    with pytest.raises(safe_json.NotStandardJson):
        safe_json.loads(document)


def test_bytes_in_no_json_encoding_are_a_value_error() -> None:
    with pytest.raises(ValueError):
        safe_json.loads(b"\xff\xfe\x00")


def test_a_string_that_hides_brackets_from_a_byte_scan_does_not_hide_them_here() -> None:
    # U+2200 is the bytes 00 22 in UTF-16-LE: a scan of raw bytes takes the 22 for a quote.
    text = '["\u2200", ' + "[" * 1000 + "]" * 1000 + ', "x"]'
    with pytest.raises(safe_json.TooDeep):
        safe_json.loads(text.encode("utf-16-le"))
