"""The compiled demo contracts shipped with offload-edge (built by ``scripts/compile_contracts.mjs``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACT_DIR", "DEMO_CONTRACTS", "artifact_path", "load_artifact"]

ARTIFACT_DIR = Path(__file__).parent / "artifacts"
# Deployed in this order at chain start, so their addresses never change.
DEMO_CONTRACTS = ("Hello", "Counter")


def artifact_path(name: str) -> Path:
    """Path of a contract's artifact JSON (ABI + bytecode); ``name`` is a contract name such as ``"Counter"``."""
    # A bare identifier only: the name must not reach outside the artifact directory.
    if not name.isidentifier():
        raise ValueError(f"not a contract name: {name!r}")
    return ARTIFACT_DIR / f"{name}.json"


def load_artifact(name: str) -> dict[str, Any]:
    """A contract's artifact: ``contractName``, ``abi``, ``bytecode``, ``deployedBytecode``, ``compiler``.

    Raises ``FileNotFoundError`` for a contract that was never compiled.
    """
    return json.loads(artifact_path(name).read_text(encoding="utf-8"))
