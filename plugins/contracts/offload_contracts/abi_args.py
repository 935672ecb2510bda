"""Arguments from query strings or JSON bodies, checked and converted by the ABI.

Every failure names the parameter and the type it expects, so a caller can fix
the request without reading the contract.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from eth_utils import is_address, to_checksum_address

from offload import OffloadError, safe_json

_ARRAY = re.compile(r"^(?P<inner>.+)\[(?P<size>\d*)\]$")
_INTEGER = re.compile(r"^(?P<sign>u?)int(?P<bits>\d*)$")
_FIXED_BYTES = re.compile(r"^bytes(?P<size>\d+)$")


class ArgumentError(ValueError):
    """One argument does not fit its ABI type."""


def signature(function_abi: Mapping[str, Any]) -> str:
    """``name(type name, ...)`` for messages."""
    params = ", ".join(f"{arg['type']} {arg.get('name', '')}".strip() for arg in function_abi.get("inputs", []))
    return f"{function_abi['name']}({params})"


def coerce(abi_type: str, value: Any) -> Any:
    """Convert one value (a string from a URL, or a JSON value) to what web3 expects for ``abi_type``."""
    array = _ARRAY.match(abi_type)
    if array:
        items = safe_json.loads(value) if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ArgumentError("a JSON array")
        if array["size"] and len(items) != int(array["size"]):
            raise ArgumentError(f"an array of exactly {array['size']} items")
        return [coerce(array["inner"], item) for item in items]
    integer = _INTEGER.match(abi_type)
    if integer:
        return _integer(value, unsigned=integer["sign"] == "u", bits=int(integer["bits"] or 256))
    if abi_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ArgumentError("true or false")
    if abi_type == "address":
        if isinstance(value, str) and is_address(value):
            return to_checksum_address(value)
        raise ArgumentError("a 0x-prefixed 20-byte address")
    if abi_type == "string":
        if isinstance(value, str):
            return value
        raise ArgumentError("a string")
    fixed = _FIXED_BYTES.match(abi_type)
    if abi_type == "bytes" or fixed:
        data = _hex_bytes(value)
        if fixed and len(data) != int(fixed["size"]):
            raise ArgumentError(f"exactly {fixed['size']} bytes as 0x-hex")
        return data
    raise ArgumentError(f"a type this gateway cannot take from a request yet ({abi_type})")


def _integer(value: Any, *, unsigned: bool, bits: int) -> int:
    if isinstance(value, bool):
        raise ArgumentError("an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text, 16) if text.lower().startswith(("0x", "-0x")) else int(text, 10)
        except ValueError:
            raise ArgumentError("an integer (decimal or 0x-hex)") from None
    else:
        raise ArgumentError("an integer")
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not low <= number <= high:
        raise ArgumentError(f"an integer from {low} to {high}")
    return number


def _hex_bytes(value: Any) -> bytes:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise ArgumentError("0x-prefixed hex bytes")


def bind_arguments(
    contract: str,
    function_abi: Mapping[str, Any],
    positional: Sequence[Any] = (),
    named: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Match positional and/or named values to the function's inputs and convert each.

    Raises a 400 :class:`OffloadError` naming the parameter and expected type.
    """
    inputs = list(function_abi.get("inputs", []))
    named = dict(named or {})
    where = f"{contract}.{signature(function_abi)}"
    if len(positional) > len(inputs):
        raise OffloadError(400, f"{where} takes {len(inputs)} argument(s), got {len(positional)}")
    values: list[Any] = []
    for index, param in enumerate(inputs):
        name = param.get("name") or f"#{index}"
        if index < len(positional):
            if param.get("name") in named:
                raise OffloadError(400, f"{where}: parameter {name!r} given twice (by position and by name)")
            raw = positional[index]
        elif param.get("name") and param["name"] in named:
            raw = named.pop(param["name"])
        else:
            raise OffloadError(400, f"{where}: missing parameter {name!r} ({param['type']})")
        try:
            values.append(coerce(param["type"], raw))
        except (ArgumentError, ValueError) as exc:
            expected = str(exc) if isinstance(exc, ArgumentError) else "valid JSON"
            raise OffloadError(
                400, f"{where}: parameter {name!r} must be {param['type']} ({expected}), got {raw!r}"
            ) from None
    if named:
        raise OffloadError(400, f"{where}: unknown parameter(s) {sorted(named)}")
    return values
