"""The compiled demo contracts shipped with offload-edge (see scripts/compile_contracts.mjs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARTIFACT_DIR = Path(__file__).parent / "artifacts"
# Deployed in this order at chain start, so their addresses never change.
DEMO_CONTRACTS = ("Hello", "Counter")


def artifact_path(name: str) -> Path:
    """Path of a contract's artifact JSON (ABI + bytecode)."""
    return ARTIFACT_DIR / f"{name}.json"


def load_artifact(name: str) -> dict[str, Any]:
    """A contract's artifact: ``contractName``, ``abi``, ``bytecode``, ``deployedBytecode``, ``compiler``."""
    return json.loads(artifact_path(name).read_text(encoding="utf-8"))
