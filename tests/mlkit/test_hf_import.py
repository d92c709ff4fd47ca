"""GPT-2 checkpoints from disk (`mlkit.hf_import`, `rollml model import-hf`): a checkpoint the test writes
with transformers (`save_pretrained` of a small randomly initialised GPT2LMHeadModel, and a GPT-2 BPE
tokenizer built from small vocab.json / merges.txt files) imports into an mlkit model whose greedy tokens
are identical to transformers' and a tokenizer whose ids are transformers'; anything wrong is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.cli import assert_one_line_error  # noqa: E402
from support.hf import EOT, expected_tokens, write_checkpoint  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from mlkit import native  # noqa: E402
from mlkit.cards import card_path, read_card  # noqa: E402
from mlkit.format import decode_model, model_id  # noqa: E402
from mlkit.hf_import import CheckpointError, import_gpt2  # noqa: E402
from mlkit.text import load_tokenizer, tokenizer_path  # noqa: E402
from rollml.cli import app  # noqa: E402

runner = CliRunner()
TEXTS = ["the cat in the hat", "  hello\n\nworld  ", "héllo wörld", "isn't 's", f"{EOT}the end{EOT}"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    d = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    model, tok = write_checkpoint(d)
    return d, model, tok


def test_checkpoint_layout_is_what_transformers_writes(checkpoint: tuple[Path, Any, Any]) -> None:
    d, _, _ = checkpoint
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= names
    assert json.loads((d / "config.json").read_text())["model_type"] == "gpt2"


def test_greedy_tokens_are_identical_to_transformers(checkpoint: tuple[Path, Any, Any]) -> None:
    d, model, tok = checkpoint
    imported = import_gpt2(d)
    eos = model.config.eos_token_id
    assert imported.eos == eos and decode_model(imported.model).gen_eos == eos
    for text in ("the cat", "in the hat, she said", "on and on"):
        prompt = tok(text).input_ids
        got = native.generate(imported.model, prompt, 24)
        assert got == expected_tokens(model, prompt, 24, eos), text


def test_the_tokenizer_gives_transformers_ids_and_text(checkpoint: tuple[Path, Any, Any]) -> None:
    d, _, tok = checkpoint
    ours = import_gpt2(d).tokenizer
    for text in TEXTS:
        ids = ours.encode(text).ids
        assert ids == tok(text).input_ids, text
        assert ours.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def test_pytorch_bin_and_tokenizer_json_only(checkpoint: tuple[Path, Any, Any], tmp_path: Path) -> None:
    """pytorch_model.bin instead of safetensors, and transformers 5's tokenizer.json without vocab/merges."""
    d, _, tok = checkpoint
    other = tmp_path / "bin"
    write_checkpoint(other, safe=False)
    assert (other / "pytorch_model.bin").is_file() and not (other / "model.safetensors").exists()
    (other / "vocab.json").unlink()
    (other / "merges.txt").unlink()
    imported = import_gpt2(other)
    assert imported.model == import_gpt2(d).model  # same seed: the same bytes from either weights file
    for text in TEXTS:
        assert imported.tokenizer.encode(text).ids == tok(text).input_ids


def test_untied_head_and_unprefixed_names(checkpoint: tuple[Path, Any, Any], tmp_path: Path) -> None:
    """The original GPT-2 checkpoints name tensors without `transformer.`; a separate lm_head is used."""
    from safetensors.numpy import load_file, save_file

    d, model, tok = checkpoint
    other = tmp_path / "unprefixed"
    shutil.copytree(d, other)
    weights = {k.removeprefix("transformer."): v for k, v in load_file(str(d / "model.safetensors")).items()}
    head = np.random.default_rng(0).normal(0, 0.3, weights["wte.weight"].shape).astype(np.float32)
    save_file({**weights, "lm_head.weight": head}, str(other / "model.safetensors"))
    imported = import_gpt2(other)
    untied = transformers.GPT2LMHeadModel(model.config).eval()
    untied.config.tie_word_embeddings = False
    untied.lm_head.weight = torch.nn.Parameter(torch.from_numpy(head))
    untied.transformer.load_state_dict(model.transformer.state_dict())
    prompt = tok("the cat").input_ids
    eos = model.config.eos_token_id
    assert native.generate(imported.model, prompt, 16) == expected_tokens(untied, prompt, 16, eos)


def _corrupt(directory: Path, case: str) -> None:
    cfg = json.loads((directory / "config.json").read_text())
    if case == "no config":
        (directory / "config.json").unlink()
    elif case == "not gpt2":
        (directory / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    elif case == "config not json":
        (directory / "config.json").write_text("{not json")
    elif case == "relu":
        (directory / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    elif case == "no weights":
        (directory / "model.safetensors").unlink()
    elif case == "truncated weights":
        data = (directory / "model.safetensors").read_bytes()
        (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "garbage weights":
        (directory / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    elif case == "missing tensor" or case == "wrong shape":
        from safetensors.numpy import load_file, save_file

        w = load_file(str(directory / "model.safetensors"))
        if case == "missing tensor":
            del w["transformer.h.1.mlp.c_fc.weight"]
        else:
            w["transformer.h.0.attn.c_attn.weight"] = w["transformer.h.0.attn.c_attn.weight"][:, :-1].copy()
        save_file(w, str(directory / "model.safetensors"))
    elif case == "no merges":
        (directory / "merges.txt").unlink()
        (directory / "tokenizer.json").unlink()
    elif case == "bad merge":
        (directory / "merges.txt").write_text("#version: 0.2\nĠ t\nnot-a-merge\n")
    elif case == "bad vocab":
        (directory / "vocab.json").write_text(json.dumps(["a", "b"]))
    elif case == "vocab too large":
        (directory / "config.json").write_text(json.dumps({**cfg, "vocab_size": 100}))
    elif case == "not a directory":
        shutil.rmtree(directory)
        directory.write_text("a file")
    else:
        raise AssertionError(case)


BAD_CASES = {
    "no config": "no config.json",
    "not gpt2": "model_type 'llama' is not GPT-2",
    "config not json": "unreadable config",
    "relu": "unsupported GPT-2 activation 'relu'",
    "no weights": "no model.safetensors or pytorch_model.bin",
    "truncated weights": "malformed safetensors file",
    "garbage weights": "malformed safetensors file",
    "missing tensor": "no tensor 'h.1.mlp.c_fc.weight'",
    "wrong shape": "'h.0.attn.c_attn.weight' has shape [32, 95], expected [32, 96]",
    "no merges": "no merges.txt",
    "bad merge": "merges.txt:3: malformed merge 'not-a-merge'",
    "bad vocab": "malformed vocabulary",
    "vocab too large": "the tokenizer has",
    "not a directory": "is not a directory",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_a_bad_directory_is_one_clear_line(
    checkpoint: tuple[Path, Any, Any], tmp_path: Path, case: str
) -> None:
    d = tmp_path / "ckpt"
    shutil.copytree(checkpoint[0], d)
    _corrupt(d, case)
    with pytest.raises(CheckpointError, match=BAD_CASES[case].replace("[", r"\[").replace("]", r"\]")):
        import_gpt2(d)
    out = tmp_path / "out.mlkit"
    result = runner.invoke(app, ["model", "import-hf", str(d), "-o", str(out)])
    assert_one_line_error(result)
    assert BAD_CASES[case] in result.output
    assert not out.exists()  # nothing half-written


def test_cli_import_hf_then_run_with_a_prompt(checkpoint: tuple[Path, Any, Any], tmp_path: Path) -> None:
    d, model, tok = checkpoint
    out = tmp_path / "tiny.mlkit"
    result = runner.invoke(app, ["model", "import-hf", str(d), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model_id"] == "0x" + model_id(out.read_bytes()).hex()
    assert (report["layers"], report["width"], report["heads"], report["context"]) == (2, 32, 4, 48)
    assert load_tokenizer(tokenizer_path(out)).encode("the cat").ids == tok("the cat").input_ids
    card = read_card(card_path(out))
    assert card["model_id"] == report["model_id"] and card["name"] == "tiny-gpt2"

    result = runner.invoke(
        app, ["model", "run", str(out), "--prompt", "the cat", "--new-tokens", "12", "--json"]
    )
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    prompt = tok("the cat").input_ids
    want = expected_tokens(model, prompt, 12, model.config.eos_token_id)
    assert run["prompt_tokens"] == prompt and run["output"] == want
    assert run["text"] == tok.decode(want, skip_special_tokens=True)

    info = json.loads(runner.invoke(app, ["model", "info", str(out), "--json"]).stdout)
    assert info["architecture"].startswith("GPT decoder (GPT-2 blocks): 2 layers, width 32, 4 heads")
    assert info["name"] == "tiny-gpt2" and info["tokenizer_file"] == str(tokenizer_path(out))
