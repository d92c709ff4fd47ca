"""`rollml demo` end to end, as a user runs it: the three scenarios on the embedded py-evm chain and on a
real anvil process, every one won by the honest side, with the figures `--json` promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

SCENARIOS = ["honest", "dishonest-prover", "dishonest-challenger"]
FIELDS = {"name": str, "winner": str, "honest_won": bool, "rounds": int, "txs": int, "gas": int}


def run_demo(tmp_path: Path, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "rollml", "demo", "--json", "--out", str(tmp_path), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"rollml demo failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def check_report(report: dict[str, Any], tmp_path: Path) -> None:
    scenarios = report["scenarios"]
    assert [s["name"] for s in scenarios] == SCENARIOS
    for s in scenarios:
        for key, kind in FIELDS.items():
            assert isinstance(s[key], kind), f"{s['name']}.{key} is not {kind.__name__}: {s[key]!r}"
        assert isinstance(s["seconds"], float | int) and s["seconds"] > 0
        assert s["honest_won"], f"{s['name']}: the honest side lost ({s['winner']})"
        assert s["txs"] > 0 and s["gas"] > 0
    honest, liar, troll = scenarios
    assert honest["rounds"] == 0 and honest["winner"] == "honest node"
    assert Path(honest["details"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert liar["winner"] == "honest challenger" and liar["rounds"] >= 5  # ~0.9M steps, 16-ary: 5 rounds
    assert liar["details"]["digit"] == liar["details"]["label"]  # served correctly after the dispute
    assert troll["winner"] == "honest node" and troll["rounds"] >= 5
    assert report["honest_won_all"] is True


def test_demo_on_the_embedded_chain(tmp_path: Path) -> None:
    check_report(run_demo(tmp_path), tmp_path)


def test_demo_against_anvil(tmp_path: Path, anvil: Any) -> None:
    report = run_demo(tmp_path, "--rpc", anvil.url)
    assert report["chain"] == anvil.url
    check_report(report, tmp_path)


def test_an_unknown_scenario_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rollml", "demo", "--only", "nope"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown scenario 'nope'")


def test_an_unreachable_rpc_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rollml", "demo", "--rpc", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
