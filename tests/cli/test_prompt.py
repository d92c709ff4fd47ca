"""`rollml request --prompt` end to end on a real anvil: the prompt is tokenized with the model's tokenizer,
a prover node serves the request, and `--wait` prints the verified text (a small GPT-2 checkpoint imported
with `rollml model import-hf`'s library, so the VM runs take a moment)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.env import ROOT
from support.hf import expected_tokens, write_checkpoint
from typer.testing import CliRunner

from mlkit.format import model_id
from mlkit.hf_import import import_gpt2, write_imported
from mlkit.io import generate_payload
from rollml.cli import app
from rollml.core.chain import Chain
from rollml.world import World

pytestmark = pytest.mark.requires("guest", "anvil")
pytest.importorskip("transformers")


def test_request_with_a_prompt_waits_for_the_verified_text(anvil: Any, tmp_path: Path) -> None:
    hf, tok = write_checkpoint(tmp_path / "ckpt")
    imported = import_gpt2(tmp_path / "ckpt")
    model_file = write_imported(imported, tmp_path / "tiny.mlkit")["model"]
    world = World.create(Chain.connect(anvil.url), tmp_path / "world", {"tiny": imported.model})
    dep_file = world.deployment.save(tmp_path / "deployment.json")
    key = tmp_path / "dapp.key"
    key.write_text("0x" + bytes(world.accounts[9].key).hex())
    common = ["--rpc", anvil.url, "--key", str(key), "--deployment", str(dep_file)]

    # by model id, with the tokenizer given: the input is the prompt's token ids and the count
    mid = "0x" + model_id(imported.model).hex()
    result = CliRunner().invoke(
        app,
        [
            "request",
            mid,
            "--prompt",
            "the cat",
            "--tokenizer",
            str(tmp_path / "tiny.tokenizer.json"),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    (event,) = world.events("InferenceRequested")
    assert bytes(event["input"]) == generate_payload(tok("the cat").input_ids, 16)

    # by model file, waiting: a node serves it while the command waits
    cmd = [sys.executable, "-m", "rollml", "request", str(model_file), "--prompt", "in the hat"]
    cmd += [*common, "--new-tokens", "10", "--wait", "--timeout", "600", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node = world.node(1, "node")

    def waited() -> bool:
        time.sleep(0.2)
        return proc.poll() is not None

    try:
        world.play([node], waited, max_ticks=2000)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        node.close()
    assert proc.returncode == 0, err[-2000:]
    report = json.loads(out)
    want = expected_tokens(hf, tok("in the hat").input_ids, 10, hf.config.eos_token_id)
    assert report["status"] == "finalized" and report["output"] == want
    assert report["prompt"] == "in the hat" and report["text"] == tok.decode(want, skip_special_tokens=True)


def test_request_prompt_errors_are_one_line(tmp_path: Path) -> None:
    from support.cli import assert_one_line_error

    runner = CliRunner()
    common = [
        "--rpc",
        "http://127.0.0.1:9",
        "--key",
        str(tmp_path / "k"),
        "--deployment",
        str(tmp_path / "d"),
    ]
    mid = "0x" + "11" * 32
    for args in (["--prompt", "hi"], ["--prompt", "hi", "--input", "x.npy"], []):
        assert_one_line_error(runner.invoke(app, ["request", mid, *args, *common]))
