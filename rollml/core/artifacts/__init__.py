"""ABI and bytecode of the deployable contracts, exported by scripts/export_contracts.py.

Shipped with the package so that deploying and talking to the contracts needs no Solidity toolchain;
tests/contracts/test_artifacts.py fails when they are stale against a fresh forge build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parent

# The contracts deployed by rollml, in deployment order.
DEPLOYABLE = (
    "PreimageOracle",
    "MIPS",
    "DisputeGame",
    "ModelRegistry",
    "InferenceMarket",
    "GanNFT",
    "TrainingRun",
)


def load(name: str) -> dict[str, Any]:
    """The artifact of contract `name`.

    Keys: "contractName", "sourcePath", "abi", "bytecode", "deployedBytecode" (hex strings with 0x).
    """
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no exported artifact for {name}: run scripts/export_contracts.py")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
