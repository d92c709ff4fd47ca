"""fortune-gpt and text in and out of generate-mode models (`mlkit.fortunes`, `mlkit.text`, `--prompt`).

The committed model loads, matches its card (model id, the samples it wrote when it was trained) and its
tokenizer; the corpus it was trained on is the one installed; the training script runs a few steps; prompts
are checked against the model (context, vocabulary, mode) with one-line errors. Native == VM for
fortune-gpt is in test_model_vm.py; its validation loss and samples are figures of the training run
(scripts/train_fortune_gpt.py, `make fortune-gpt`), recorded in its card.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.cli import assert_one_line_error
from support.env import ROOT
from typer.testing import CliRunner

from mlkit import fortunes, native
from mlkit.cards import card_path, guest_program_hash, read_card
from mlkit.format import ModelBuilder, decode_model, model_id
from mlkit.guest import InputError
from mlkit.io import decode_payload
from mlkit.text import (
    check_tokenizer,
    decode_tokens,
    load_tokenizer,
    model_context,
    model_vocab,
    prompt_payload,
    tokenizer_path,
)
from rollml.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def committed() -> tuple[bytes, object, dict]:
    return fortunes.committed()


def test_the_committed_model_matches_its_card_and_tokenizer(committed: tuple) -> None:
    model, tok, card = committed
    m = decode_model(model)
    assert card["model_id"] == "0x" + model_id(model).hex()
    cfg = fortunes.TextTrainConfig()
    assert model_vocab(m) == cfg.vocab_size == tok.get_vocab_size()
    assert model_context(m) == cfg.n_ctx and m.gen_eos == fortunes.EOT_ID
    check_tokenizer(tok, m)
    assert card["training"]["steps"] == cfg.steps and card["training"]["seed"] == cfg.seed
    assert card["metrics"]["val_loss"] > 0 and isinstance(card["vm_steps"], int)
    assert card["vm_program"] == guest_program_hash(), (
        "the card holds VM steps of another guest build: python3 scripts/train_fortune_gpt.py --remeasure"
    )


def test_the_card_samples_are_what_the_committed_model_writes(committed: tuple) -> None:
    model, tok, card = committed
    assert [s["prompt"] for s in card["samples"]] == list(fortunes.SAMPLE_PROMPTS)
    for sample in card["samples"]:
        text = fortunes.generate_text(model, tok, sample["prompt"], sample["new_tokens"])
        assert text == sample["text"]


def test_prompts_start_a_fortune_and_decoding_drops_the_end_marker(committed: tuple) -> None:
    model, tok, _ = committed
    ids = tok.encode("Love is").ids
    assert ids[0] == fortunes.EOT_ID and len(ids) > 1
    assert decode_tokens(tok, ids) == "Love is"
    assert tok.encode("").ids == [fortunes.EOT_ID]  # an empty prompt asks for a fresh fortune
    payload, prompt = prompt_payload(decode_model(model), tok, "Love is", 8)
    assert prompt == ids
    (out,) = decode_payload(native.run(model, payload))
    assert 1 <= len(out) <= 8 and (len(out) == 8 or out[-1] == fortunes.EOT_ID)


def test_prompt_payload_rejects_what_the_model_cannot_take(committed: tuple) -> None:
    model, tok, _ = committed
    m = decode_model(model)
    ctx = model_context(m)
    n = len(tok.encode("Love is").ids)
    prompt_payload(m, tok, "Love is", ctx - n + 1)  # exactly fills the context
    with pytest.raises(InputError, match=rf"--new-tokens must be 1\.\.{ctx - n + 1}"):
        prompt_payload(m, tok, "Love is", ctx - n + 2)
    with pytest.raises(InputError, match="longer than the model's context"):
        prompt_payload(m, tok, "word " * 200, 1)
    b = ModelBuilder()
    b.output(b.relu(b.input((1, 4))))
    with pytest.raises(InputError, match="needs a generate-mode model"):
        prompt_payload(decode_model(b.to_bytes()), tok, "x", 1)


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path: Path) -> None:
    from support.hf import write_checkpoint

    from mlkit.hf_import import import_gpt2

    pytest.importorskip("transformers")
    write_checkpoint(tmp_path / "ckpt")
    small = decode_model(import_gpt2(tmp_path / "ckpt").model)
    _, tok, _ = fortunes.committed()  # 1024 tokens for a model of 265
    with pytest.raises(InputError, match="has 1024 tokens but the model's embedding has 265"):
        check_tokenizer(tok, small)


def test_load_tokenizer_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(InputError, match="not a tokenizers JSON file") as info:
        load_tokenizer(bad)
    assert "\n" not in str(info.value)


@pytest.mark.requires("fortunes")
def test_the_corpus_is_the_one_the_model_was_trained_on(committed: tuple) -> None:
    corpus = fortunes.load_corpus()
    assert corpus.sha256 == committed[2]["training"]["corpus_sha256"]
    n = len(corpus.train) + len(corpus.val)
    assert n > 14000 and len(corpus.val) == -(-n // fortunes.VAL_EVERY)  # every 20th fortune
    text = "".join(corpus.train + corpus.val)
    assert all(c in "\t\n" or " " <= c <= "~" for c in text)  # no overstrike or other control bytes


@pytest.mark.requires("fortunes")
def test_the_training_script_runs_a_few_steps(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "train_fortune_gpt.py"), "--steps", "2", "--no-vm"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path), "--json"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads(proc.stdout)
    model = (tmp_path / "fortune-gpt.mlkit").read_bytes()
    assert (
        card["model_id"]
        == "0x" + model_id(model).hex()
        == read_card(tmp_path / "fortune-gpt.card.json")["model_id"]
    )
    assert card["training"]["steps"] == 2 and [h["step"] for h in card["training"]["history"]] == [2]
    assert 5.0 < card["metrics"]["val_loss"] < 7.5  # ln(1024) = 6.93: barely trained
    tok = load_tokenizer(tmp_path / "fortune-gpt.tokenizer.json")
    assert tok.to_str() == fortunes.committed()[1].to_str()  # the BPE is trained deterministically


def test_cli_run_with_a_prompt_prints_the_text(committed: tuple, tmp_path: Path) -> None:
    model, tok, _ = committed
    path = tmp_path / "fortune.mlkit"
    result = runner.invoke(app, ["model", "export", "fortune-gpt", "-o", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == model and tokenizer_path(path).is_file() and card_path(path).is_file()
    result = runner.invoke(app, ["model", "run", str(path), "--prompt", "A computer", "--new-tokens", "10"])
    assert result.exit_code == 0, result.output
    payload, _ = prompt_payload(decode_model(model), tok, "A computer", 10)
    (ids,) = decode_payload(native.run(model, payload))
    assert result.stdout.startswith("A computer" + decode_tokens(tok, ids.tolist()) + "\n")
    report = json.loads(
        runner.invoke(app, ["model", "run", str(path), "--prompt", "A computer", "--json"]).stdout
    )
    assert report["prompt_tokens"] == tok.encode("A computer").ids and report["text"] and report["output"]


def test_cli_prompt_errors_are_one_line(committed: tuple, tmp_path: Path) -> None:
    path = tmp_path / "fortune.mlkit"
    path.write_bytes(committed[0])
    x = tmp_path / "x.npy"
    np.save(x, np.array([1, 2], np.int32))
    for args in (
        ["--prompt", "hi"],  # no tokenizer next to the model
        ["--prompt", "hi", "--tokenizer", str(tmp_path / "none.json")],
        ["--prompt", "hi", "--input", str(x)],
        [],
    ):
        assert_one_line_error(runner.invoke(app, ["model", "run", str(path), *args]))
    tokenizer_path(path).write_text(committed[1].to_str())
    result = runner.invoke(app, ["model", "run", str(path), "--prompt", "hi", "--new-tokens", "500"])
    assert_one_line_error(result)
    assert "--new-tokens must be 1.." in result.output
