#!/usr/bin/env python3
"""Build the contracts with forge and export the ABI and bytecode of the deployable ones.

Writes rollml/core/artifacts/<Name>.json (so pip users need no Solidity toolchain). With --check, writes
nothing and exits 1 when an exported artifact differs from a fresh build (tests/contracts/test_artifacts.py
does the same).
The bytecode carries no metadata hash (contracts/foundry.toml: bytecode_hash = "none", cbor_metadata =
false), so it depends only on the sources and the compiler settings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rollml.core.artifacts import ARTIFACTS_DIR, DEPLOYABLE  # noqa: E402

FORGE = ROOT / "scripts" / "forge"
OUT = ROOT / "contracts" / "out"


def forge_build() -> None:
    """`forge build` of the whole project (incremental; sources only, tests are not needed)."""
    subprocess.run([str(FORGE), "build", "--skip", "test", "--skip", "script"], check=True, cwd=ROOT)


def artifact(name: str) -> dict[str, Any]:
    """The exported form of contract `name` from the forge output."""
    path = OUT / f"{name}.sol" / f"{name}.json"
    data = json.loads(path.read_text())
    bytecode = data["bytecode"]["object"]
    deployed = data["deployedBytecode"]["object"]
    if "__$" in bytecode:
        raise SystemExit(f"{name}: unlinked library references are not supported")
    return {
        "contractName": name,
        "sourcePath": f"contracts/src/{name}.sol",
        "abi": data["abi"],
        "bytecode": bytecode,
        "deployedBytecode": deployed,
    }


def render(art: dict[str, Any]) -> str:
    return json.dumps(art, indent=1, sort_keys=True) + "\n"


def fresh_artifacts(build: bool = True) -> dict[str, str]:
    """Contract name -> rendered artifact JSON of a fresh build."""
    if build:
        forge_build()
    return {name: render(artifact(name)) for name in DEPLOYABLE}


def stale(fresh: dict[str, str]) -> list[str]:
    """Names whose exported artifact is missing or differs from `fresh`."""
    out = []
    for name, text in fresh.items():
        path = ARTIFACTS_DIR / f"{name}.json"
        if not path.is_file() or path.read_text() != text:
            out.append(name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    parser.add_argument("--no-build", action="store_true", help="use contracts/out as it is")
    args = parser.parse_args()
    fresh = fresh_artifacts(build=not args.no_build)
    names = stale(fresh)
    if args.check:
        if names:
            print("stale artifacts: " + ", ".join(names) + " (run scripts/export_contracts.py)")
            return 1
        print(f"{len(fresh)} artifacts up to date")
        return 0
    for name in names:
        (ARTIFACTS_DIR / f"{name}.json").write_text(fresh[name])
        print(f"wrote rollml/core/artifacts/{name}.json")
    print(f"{len(fresh)} artifacts, {len(names)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
