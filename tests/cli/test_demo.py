"""`rollml demo` end to end, as a user runs it: the six scenarios on the embedded py-evm chain and on a
real anvil process, every one won by the honest side, with the figures `--json` promises. The `blend` step
(two more DCGAN mints, ~1-2 minutes) runs on the embedded chain only: on anvil it would exercise no other
code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCENARIOS = ["honest", "blend", "dishonest-prover", "dishonest-challenger", "text", "train"]
WITHOUT_BLEND = [name for name in SCENARIOS if name != "blend"]
FIELDS = {"name": str, "winner": str, "honest_won": bool, "rounds": int, "txs": int, "gas": int}


def run_demo(tmp_path: Path, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "rollml", "demo", "--json", "--out", str(tmp_path), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"rollml demo failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def check_report(report: dict[str, Any], tmp_path: Path, names: list[str] = SCENARIOS) -> None:
    scenarios = report["scenarios"]
    assert [s["name"] for s in scenarios] == names
    for s in scenarios:
        for key, kind in FIELDS.items():
            assert isinstance(s[key], kind), f"{s['name']}.{key} is not {kind.__name__}: {s[key]!r}"
        assert isinstance(s["seconds"], float | int) and s["seconds"] > 0
        assert s["honest_won"], f"{s['name']}: the honest side lost ({s['winner']})"
        assert s["txs"] > 0 and s["gas"] > 0
    by_name = {s["name"]: s for s in scenarios}
    honest, liar, troll = by_name["honest"], by_name["dishonest-prover"], by_name["dishonest-challenger"]
    text = by_name["text"]
    train = by_name["train"]
    assert honest["rounds"] == 0 and honest["winner"] == "honest node"
    assert Path(honest["details"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "blend" in by_name:
        blend = by_name["blend"]["details"]
        assert blend["parents"][0] == honest["details"]["request"] and blend["weight"] == 5000
        from PIL import Image

        with Image.open(blend["png"]) as im:  # parent, child, parent: three 32x32 images, 2-pixel gaps, x8
            assert im.size == ((3 * 32 + 2 * 2) * 8, 32 * 8)
    assert liar["winner"] == "honest challenger" and liar["rounds"] >= 5  # ~0.9M steps, 16-ary: 5 rounds
    assert liar["details"]["digit"] == liar["details"]["label"]  # served correctly after the dispute
    assert troll["winner"] == "honest node" and troll["rounds"] >= 5
    assert text["winner"] == "honest node" and text["rounds"] == 0
    assert text["details"]["prompt"] and text["details"]["text"].strip()  # fortune-gpt wrote something
    # verifiable training: 20+ updates by two workers, the wrong one caught, the model trained and served
    assert "train" in train["name"] and train["winner"] == "fraud-proofer"
    assert train["updates"] >= 20 and train["wrong_updates_caught"] >= 1
    assert 0.8 <= train["accuracy"] <= 1.0
    assert Path(train["details"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(g["status"] == "CHALLENGER_WON" for g in train["details"]["games"])
    assert train["details"]["paid_wei"]["honest"] > train["details"]["paid_wei"]["dishonest"] >= 0
    assert report["honest_won_all"] is True


def test_demo_on_the_embedded_chain(tmp_path: Path) -> None:
    check_report(run_demo(tmp_path), tmp_path)


def test_demo_against_anvil(tmp_path: Path, anvil: Any) -> None:
    report = run_demo(
        tmp_path, "--rpc", anvil.url, *(arg for name in WITHOUT_BLEND for arg in ("--only", name))
    )
    assert report["chain"] == anvil.url
    check_report(report, tmp_path, WITHOUT_BLEND)


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
