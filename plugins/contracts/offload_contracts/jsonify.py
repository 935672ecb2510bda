"""Turning web3 values (HexBytes, AttributeDict, tuples) into plain JSON values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def to_json(value: Any) -> Any:
    """Bytes become 0x-hex strings, mappings dicts, sequences lists; the rest stays."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return value
