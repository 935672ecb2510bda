"""Parsing JSON from strangers without letting one body take the process down.

web3.py's dependencies raise Python's recursion limit to 100,000 on import, so
in a gateway with the contracts plugin ``json.loads`` no longer raises
``RecursionError`` on a body of a few hundred thousand ``[``: it overflows the
C stack and the whole gateway dies. Bodies nested deeper than any real request
(or answer) are therefore refused before they are parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "TooDeep", "loads", "nested_deeper_than"]

# Real JSON-RPC bodies and task answers nest a handful of levels; 128 leaves room to spare.
MAX_DEPTH = 128
# A JSON string (brackets inside it do not count) or one bracket.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


class TooDeep(ValueError):
    """The document nests arrays and objects deeper than allowed."""


def nested_deeper_than(data: bytes, limit: int) -> bool:
    """Whether arrays and objects in ``data`` nest more than ``limit`` levels (strings ignored)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case, decided without scanning
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(data):
        first = match.group()[0]
        if first in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif first in _CLOSERS:
            depth -= 1
    return False


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, but a document nested deeper than ``max_depth`` raises :class:`TooDeep` unparsed."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if nested_deeper_than(raw, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(data)
