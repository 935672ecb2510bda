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
