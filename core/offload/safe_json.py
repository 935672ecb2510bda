"""Parsing JSON from strangers without letting one body take the process down.

web3.py's dependencies raise Python's recursion limit to 100,000 on import, so
in a gateway with the contracts plugin ``json.loads`` no longer raises
``RecursionError`` on a body of a few hundred thousand ``[``: it overflows the
C stack and the whole gateway dies. Bodies nested deeper than any real request
(or answer) are therefore refused before they are parsed.

The depth is counted on the *decoded* text: ``json.loads`` also accepts UTF-16
and UTF-32 bytes, where a bracket's neighbouring byte can look like a quote to a
scan of the raw bytes. And only standard JSON is accepted: ``NaN``,
``Infinity`` and numbers too large for a float (``1e400``) would otherwise come
back out of ``json.dumps`` as invalid JSON.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "NotStandardJson", "TooDeep", "decode", "loads", "nested_deeper_than"]

# Real JSON-RPC bodies and task answers nest a handful of levels; 128 leaves room to spare.
MAX_DEPTH = 128
# A JSON string (brackets inside it do not count) or one bracket. The closing quote is optional:
# an unterminated string runs to the end instead of failing, so every match succeeds and the scan
# stays linear (requiring it made '"\\"\\"\\"...' backtrack from every quote: 40 KB took seconds).
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


class TooDeep(ValueError):
    """The document nests arrays and objects deeper than allowed."""


class NotStandardJson(ValueError):
    """The document uses ``NaN``/``Infinity`` or a number no float can hold."""


def decode(data: bytes) -> str:
    """The text of a JSON document in UTF-8, -16 or -32 (as ``json.loads`` reads bytes); ValueError if none."""
    return data.decode(json.detect_encoding(data), "surrogatepass")


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects in the JSON ``text`` nest more than ``limit`` levels (strings ignored)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case, decided without scanning
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        first = match.group()[0]
        if first == "[" or first == "{":
            depth += 1
            if depth > limit:
                return True
        elif first == "]" or first == "}":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise NotStandardJson(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStandardJson(f"the number {text[:40]} is too large")
    return value


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of standard JSON, refusing a document nested deeper than ``max_depth`` unparsed.

    Raises :class:`TooDeep`, :class:`NotStandardJson` or another ``ValueError`` (bad JSON, bad encoding).
    """
    text = data if isinstance(data, str) else decode(data)
    if nested_deeper_than(text, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
