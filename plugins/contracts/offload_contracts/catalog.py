"""The configured contracts: names, addresses and ABIs, loaded and checked at startup."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address

from offload import ConfigError


@dataclass(frozen=True)
class ContractSpec:
    """One contract the gateway can call."""

    name: str
    address: str
    abi: list[dict[str, Any]] = field(repr=False)

    def functions(self) -> list[dict[str, Any]]:
        return [item for item in self.abi if item.get("type") == "function"]

    def function(self, name: str) -> dict[str, Any] | None:
        """The ABI entry of function ``name`` (the first, if overloaded)."""
        return next((item for item in self.functions() if item.get("name") == name), None)

    def describe(self) -> dict[str, Any]:
        """Name, address, methods with argument types, and events, for listings."""
        return {
            "name": self.name,
            "address": self.address,
            "methods": [
                {
                    "name": item["name"],
                    "inputs": [{"name": arg.get("name", ""), "type": arg["type"]} for arg in item.get("inputs", [])],
                    "outputs": [{"name": arg.get("name", ""), "type": arg["type"]} for arg in item.get("outputs", [])],
                    "kind": "view" if is_view(item) else "transaction",
                }
                for item in self.functions()
            ],
            "events": [item["name"] for item in self.abi if item.get("type") == "event"],
        }


def is_view(function_abi: dict[str, Any]) -> bool:
    """True for functions that read state only (run with eth_call)."""
    return function_abi.get("stateMutability") in ("view", "pure") or bool(function_abi.get("constant"))


def read_artifact(reference: str, base_dir: Path) -> dict[str, Any]:
    """Load a compiled artifact from a file path or ``package:relative/path``."""
    path = Path(reference)
    if not path.is_absolute():
        path = base_dir / path
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    package, sep, inner = reference.partition(":")
    if sep and package.isidentifier():
        try:
            text = resources.files(package).joinpath(inner).read_text(encoding="utf-8")
        except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
            pass
        else:
            return json.loads(text)
    raise FileNotFoundError(reference)


def load_contracts(entries: Any, where: str, base_dir: Path) -> dict[str, ContractSpec]:
    """Validate the ``contracts`` option: a list of {name, address, abi | artifact} tables."""
    if not isinstance(entries, list):
        raise ConfigError(f"{where} contracts must be a list of {{name, address, abi or artifact}} tables")
    contracts: dict[str, ContractSpec] = {}
    for index, entry in enumerate(entries):
        item = f"{where} contracts[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"{item} must be a table with a name")
        name = entry["name"]
        unknown = set(entry) - {"name", "address", "abi", "artifact"}
        if unknown:
            raise ConfigError(
                f"{item} ({name}) has unknown keys {sorted(unknown)}; allowed: name, address, abi, artifact"
            )
        address = entry.get("address")
        if not isinstance(address, str) or not is_address(address):
            raise ConfigError(f"{item} ({name}) address must be a 0x-prefixed 20-byte address, got {address!r}")
        abi = entry.get("abi")
        if abi is None and isinstance(entry.get("artifact"), str):
            try:
                abi = read_artifact(entry["artifact"], base_dir).get("abi")
            except (OSError, ValueError):
                raise ConfigError(f"{item} ({name}) artifact {entry['artifact']!r} cannot be read") from None
        if not isinstance(abi, list) or not all(isinstance(part, dict) for part in abi):
            raise ConfigError(f"{item} ({name}) needs an abi (a list) or an artifact file containing one")
        if name in contracts:
            raise ConfigError(f"{item}: contract name {name!r} is used twice")
        contracts[name] = ContractSpec(name=name, address=to_checksum_address(address), abi=abi)
    return contracts
