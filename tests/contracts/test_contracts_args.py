"""ABI argument binding: every mistake names the parameter and the expected type."""

from __future__ import annotations

import pytest

from offload import OffloadError
from offload_contracts.abi_args import bind_arguments, coerce

TRANSFER = {
    "type": "function",
    "name": "transfer",
    "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
    "stateMutability": "nonpayable",
}
ADDRESS = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"


@pytest.mark.parametrize(
    ("abi_type", "raw", "value"),
    [
        ("uint256", "42", 42),
        ("uint8", "0xff", 255),
        ("int16", "-5", -5),
        ("uint256", 7, 7),
        ("bool", "true", True),
        ("bool", "0", False),
        ("address", ADDRESS.lower(), ADDRESS),
        ("string", "hi", "hi"),
        ("bytes", "0x0102", b"\x01\x02"),
        ("bytes2", "0xabcd", b"\xab\xcd"),
        ("uint256[]", "[1, 2, 3]", [1, 2, 3]),
        ("address[2]", [ADDRESS, ADDRESS], [ADDRESS, ADDRESS]),
    ],
)
def test_coerce_accepts(abi_type: str, raw: object, value: object) -> None:
    assert coerce(abi_type, raw) == value


def test_binds_positional_and_named() -> None:
    assert bind_arguments("Token", TRANSFER, [ADDRESS, "5"]) == [ADDRESS, 5]
    assert bind_arguments("Token", TRANSFER, [], {"amount": "5", "to": ADDRESS}) == [ADDRESS, 5]
    assert bind_arguments("Token", TRANSFER, [ADDRESS], {"amount": 5}) == [ADDRESS, 5]


@pytest.mark.parametrize(
    ("positional", "named", "message"),
    [
        ([ADDRESS, "-1"], {}, "parameter 'amount' must be uint256 (an integer from 0 to"),
        ([ADDRESS, "ten"], {}, "parameter 'amount' must be uint256 (an integer (decimal or 0x-hex))"),
        (["0x1234", "1"], {}, "parameter 'to' must be address (a 0x-prefixed 20-byte address)"),
        ([ADDRESS], {}, "missing parameter 'amount' (uint256)"),
        ([ADDRESS, "1", "2"], {}, "takes 2 argument(s), got 3"),
        ([ADDRESS, "1"], {"amount": "2"}, "parameter 'amount' given twice"),
        ([ADDRESS, "1"], {"memo": "x"}, "unknown parameter(s) ['memo']"),
    ],
)
def test_mistakes_name_the_parameter_and_type(positional: list, named: dict, message: str) -> None:
    with pytest.raises(OffloadError) as caught:
        bind_arguments("Token", TRANSFER, positional, named)
    assert caught.value.status == 400
    assert "Token.transfer(address to, uint256 amount)" in caught.value.message
    assert message in caught.value.message


SIZED = {
    "type": "function",
    "name": "store",
    "inputs": [
        {"name": "note", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "ids", "type": "uint8[]"},
    ],
    "stateMutability": "nonpayable",
}


def test_arguments_up_to_max_arg_bytes_are_taken() -> None:
    assert bind_arguments("Box", SIZED, ["x" * 64, "0x" + "ab" * 64, [1] * 2], max_arg_bytes=64) == [
        "x" * 64,
        b"\xab" * 64,
        [1, 1],
    ]


@pytest.mark.parametrize(
    ("positional", "parameter"),
    [
        (["x" * 65, "0x", []], "note"),
        (["é" * 33, "0x", []], "note"),  # 66 bytes in UTF-8
        (["", "0x" + "ab" * 65, []], "blob"),
        (["", "0x", [1] * 3], "ids"),  # 3 items x 32 bytes
        (["", "0x", "[" + "1," * 40 + "1]"], "ids"),  # the JSON text itself
        (["", "0x", [1] * 1_000_000], "ids"),  # refused by its length, before any item is converted
    ],
)
def test_larger_arguments_are_413_naming_the_parameter(positional: list, parameter: str) -> None:
    with pytest.raises(OffloadError) as caught:
        bind_arguments("Box", SIZED, positional, max_arg_bytes=64)
    assert caught.value.status == 413
    assert f"parameter {parameter!r}" in caught.value.message and "(64 bytes" in caught.value.message


def test_nested_arrays_count_every_item() -> None:
    assert coerce("uint8[][]", [[1], [2]]) == [[1], [2]]
    nested = {"type": "function", "name": "grid", "inputs": [{"name": "rows", "type": "uint8[][]"}]}
    with pytest.raises(OffloadError) as caught:
        bind_arguments("Box", nested, [[[1] * 2] * 2], max_arg_bytes=4 * 32)  # 2 rows + 4 items
    assert caught.value.status == 413


def test_long_values_are_not_repeated_in_messages() -> None:
    with pytest.raises(OffloadError) as caught:
        bind_arguments("Token", TRANSFER, [ADDRESS, "9" * 10_000])
    assert caught.value.status == 400 and len(caught.value.message) < 400
    with pytest.raises(OffloadError) as caught:
        bind_arguments("Token", TRANSFER, [ADDRESS, 1], {f"p{index}": 1 for index in range(1000)})
    assert "and 990 more" in caught.value.message and len(caught.value.message) < 400
