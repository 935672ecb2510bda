"""Arguments from query strings or JSON bodies, checked and converted by the ABI.

Every failure names the parameter and the type it expects, so a caller can fix
the request without reading the contract.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from eth_utils import is_address, to_checksum_address

from offload import OffloadError, load_json

_ARRAY = re.compile(r"^(?P<inner>.+)\[(?P<size>\d*)\]$")
_INTEGER = re.compile(r"^(?P<sign>u?)int(?P<bits>\d*)$")
_FIXED_BYTES = re.compile(r"^bytes(?P<size>\d+)$")


# The most bytes one argument may take, by default (max_arg_bytes): a 1 MB string is no
# contract call, only a way to make a node run out of gas and the gateway to copy megabytes.
DEFAULT_MAX_ARG_BYTES = 32 * 1024
# An ABI word: what each array item takes at least once encoded, and so what it counts against the limit.
ABI_WORD = 32
# How much of a refused value or of unknown names a message repeats.
SHOWN_CHARS = 100
SHOWN_NAMES = 10


class ArgumentError(ValueError):
    """One argument does not fit its ABI type."""


class ArgumentTooLarge(ArgumentError):
    """One argument is larger than the gateway accepts (``max_arg_bytes``)."""


class Budget:
    """The bytes one argument may still take: strings and bytes by length, array items 32 bytes each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, size: int) -> None:
        """Count ``size`` bytes against the limit; raises :class:`ArgumentTooLarge` past it."""
        self.left -= size
        if self.left < 0:
            raise ArgumentTooLarge(f"at most {self.limit} bytes")


def signature(function_abi: Mapping[str, Any]) -> str:
    """``name(type name, ...)`` for messages."""
    params = ", ".join(f"{arg['type']} {arg.get('name', '')}".strip() for arg in function_abi.get("inputs", []))
    return f"{function_abi['name']}({params})"


def coerce(abi_type: str, value: Any, budget: Budget | None = None) -> Any:
    """Convert one value (a string from a URL, or a JSON value) to what web3 expects for ``abi_type``.

    ``budget`` bounds the value's size (default :data:`DEFAULT_MAX_ARG_BYTES`); a larger
    value raises :class:`ArgumentTooLarge`.
    """
    budget = budget if budget is not None else Budget(DEFAULT_MAX_ARG_BYTES)
    array = _ARRAY.match(abi_type)
    if array:
        if isinstance(value, str):
            # The JSON text itself is bounded before it is parsed.
            if len(value) > budget.limit:
                raise ArgumentTooLarge(f"at most {budget.limit} bytes")
            items = load_json(value)
        else:
            items = value
        if not isinstance(items, list):
            raise ArgumentError("a JSON array")
        if array["size"] and len(items) != int(array["size"]):
            raise ArgumentError(f"an array of exactly {array['size']} items")
        # Counted before any item is converted: a huge array costs nothing to refuse.
        budget.spend(ABI_WORD * len(items))
        return [coerce(array["inner"], item, budget) for item in items]
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
            budget.spend(len(value))  # a lower bound, checked before encoding a huge string
            budget.spend(len(value.encode("utf-8", "surrogatepass")) - len(value))
            return value
        raise ArgumentError("a string")
    fixed = _FIXED_BYTES.match(abi_type)
    if abi_type == "bytes" or fixed:
        if isinstance(value, str):
            budget.spend(max(len(value) - 2, 0) // 2)  # the decoded length, counted before decoding
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
    *,
    max_arg_bytes: int = DEFAULT_MAX_ARG_BYTES,
) -> list[Any]:
    """Match positional and/or named values to the function's inputs and convert each.

    Raises a 400 :class:`OffloadError` naming the parameter and expected type, or a 413
    naming the parameter when one argument is larger than ``max_arg_bytes`` (strings and
    bytes by length, JSON text of an array by length, array items 32 bytes each).
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
            values.append(coerce(param["type"], raw, Budget(max_arg_bytes)))
        except ArgumentTooLarge:
            raise OffloadError(
                413,
                f"{where}: parameter {name!r} ({param['type']}) is larger than this gateway accepts "
                f"({max_arg_bytes} bytes; array items count 32 bytes each; max_arg_bytes in [plugins.contracts])",
            ) from None
        except (ArgumentError, ValueError) as exc:
            expected = str(exc) if isinstance(exc, ArgumentError) else "valid JSON"
            raise OffloadError(
                400,
                f"{where}: parameter {name!r} must be {param['type']} ({expected}), got {raw!r:.{SHOWN_CHARS}}",
            ) from None
    if named:
        unknown = [name[:SHOWN_CHARS] for name in sorted(named)[:SHOWN_NAMES]]
        more = f" and {len(named) - SHOWN_NAMES} more" if len(named) > SHOWN_NAMES else ""
        raise OffloadError(400, f"{where}: unknown parameter(s) {unknown}{more}")
    return values
