"""The exported contract artifacts (rollml/core/artifacts/*.json) must match a fresh forge build."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

import pytest
from support.env import ROOT

from rollml.core.artifacts import ARTIFACTS_DIR, DEPLOYABLE, load

pytestmark = pytest.mark.requires("forge")

FORGE_BIN = ROOT / "contracts" / "node_modules" / ".bin" / "forge"


def _export_module() -> ModuleType:
    script = ROOT / "scripts" / "export_contracts.py"
    spec = importlib.util.spec_from_file_location("export_contracts", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    rendered: dict[str, str] = _export_module().fresh_artifacts(build=True)
    return rendered


def test_every_deployable_contract_is_exported() -> None:
    for name in DEPLOYABLE:
        art = load(name)
        assert art["contractName"] == name
        assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 2
        assert isinstance(art["abi"], list)
    assert sorted(p.stem for p in ARTIFACTS_DIR.glob("*.json")) == sorted(DEPLOYABLE)


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_artifact_matches_fresh_build(fresh: dict[str, str], name: str) -> None:
    built = json.loads(fresh[name])
    exported = load(name)
    hint = "stale: run scripts/export_contracts.py"
    assert exported["abi"] == built["abi"], f"{name}: ABI {hint}"
    assert exported["bytecode"] == built["bytecode"], f"{name}: bytecode {hint}"
    assert exported["deployedBytecode"] == built["deployedBytecode"], f"{name}: deployed bytecode {hint}"
    assert (ARTIFACTS_DIR / f"{name}.json").read_text() == fresh[name], f"{name}: {hint}"
