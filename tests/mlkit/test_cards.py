"""Model cards (`mlkit.cards`, `rollml model info`): the architecture recognised from the graph, parameters,
multiply-adds, the facts of the card file next to the model (dataset, metrics, measured VM steps) and the
dispute cost class (`rollml.core.dispute.dispute_cost`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.cli import assert_one_line_error
from typer.testing import CliRunner

from mlkit import models
from mlkit.cards import (
    STEPS_PER_MAC,
    architecture,
    card_path,
    guest_program_hash,
    model_card,
    multiply_adds,
    read_card,
    write_card,
)
from mlkit.format import ModelBuilder, decode_model
from mlkit.guest import InputError
from rollml.cli import app
from rollml.core.deploy import program_hash
from rollml.core.dispute import dispute_cost, rounds_needed

runner = CliRunner()


def test_architectures_are_recognised_from_the_graph() -> None:
    mlp = decode_model(models.reference("mnist-mlp").model)
    assert architecture(mlp) == "MLP 784-20-10; [1, 1, 28, 28] -> [1, 10]"
    assert architecture(decode_model(models.reference("lenet").model)).startswith(
        "CNN: 2 convolutions, 2 pools, 3 linear layers"
    )
    assert architecture(decode_model(models.reference("dcgan32").model)).startswith(
        "transposed-convolution generator (DCGAN): 6 transposed convolutions, 0 convolutions, 5 batchnorms;"
    )
    assert architecture(decode_model(models.reference("gpt2-tiny").model)) == (
        "GPT decoder (GPT-2 blocks): 2 layers, width 64, 2 heads, context 64, vocabulary 256; "
        "greedy generation"
    )
    b = ModelBuilder()
    b.output(b.relu(b.input((1, 4))))
    assert architecture(decode_model(b.to_bytes())) == "graph of 1 node; [1, 4] -> [1, 4]"


def test_multiply_adds_count_the_dot_products() -> None:
    assert multiply_adds(models.reference("mnist-mlp").model) == 784 * 20 + 20 * 10
    # GPT-2 tiny, an 8-token prompt and 16 new tokens (bench/mlkit.py's figure: 2.34M)
    gpt = models.reference("gpt2-tiny")
    macs = multiply_adds(gpt.model, 8, 16)
    assert 2.33e6 < macs < 2.35e6
    assert multiply_adds(gpt.model, 8, 17) > macs  # one more token, one more step


def test_the_card_file_adds_facts_but_cannot_override_the_file(tmp_path: Path) -> None:
    exp = models.reference("mnist-mlp")
    card = model_card(exp.model, {"dataset": "digits", "metrics": {"test_accuracy": 0.9}, "params": 1})
    assert card["params"] == 15910 and card["dataset"] == "digits" and card["metrics"]["test_accuracy"] == 0.9
    assert card["vm_steps"] is None and card["vm_steps_estimate"] == card["macs"] * STEPS_PER_MAC
    other = model_card(exp.model, {"model_id": "0x" + "00" * 32, "dataset": "something else"})
    assert other["dataset"] is None and "describes another model" in other["card_warning"]
    path = write_card(
        tmp_path / "m.card.json", {"vm_steps": 123, "vm_program": guest_program_hash()}, exp.model
    )
    assert model_card(exp.model, read_card(path))["vm_steps"] == 123
    stale = model_card(exp.model, {"vm_steps": 123, "vm_program": "0x" + "ab" * 32})
    assert stale["vm_steps"] is None and "another guest program" in stale["card_warning"]
    assert stale["vm_steps_estimate"] == stale["macs"] * STEPS_PER_MAC
    assert read_card(tmp_path / "none.card.json") == {}
    (tmp_path / "bad.card.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="malformed model card"):
        read_card(tmp_path / "bad.card.json")


def test_dispute_cost_classes() -> None:
    assert dispute_cost(1, 16).rounds == 0 and dispute_cost(1, 16).cost_class == "light"
    mnist = dispute_cost(890_000, 16)
    assert (mnist.cost_class, mnist.rounds, mnist.moves) == ("light", 5, 11)
    assert (
        dispute_cost(16**7, 16).cost_class == "light" and dispute_cost(16**7 + 1, 16).cost_class == "medium"
    )
    assert dispute_cost(16**9 + 1, 16).cost_class == "extreme"
    assert dispute_cost(15_000_000, 16).rounds == rounds_needed(15_000_000, 16) == 6
    with pytest.raises(ValueError, match="steps must be >= 1"):
        dispute_cost(0, 16)


@pytest.mark.requires("guest")
def test_cli_export_measure_then_info_shows_the_card(tmp_path: Path) -> None:
    path = tmp_path / "mlp.mlkit"
    result = runner.invoke(app, ["model", "export", "mnist-mlp", "-o", str(path), "--measure", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["card_file"] == str(card_path(path))
    info = json.loads(runner.invoke(app, ["model", "info", str(path), "--json"]).stdout)
    exp = models.reference("mnist-mlp")
    assert (
        info["macs"] == 15880 and info["params"] == 15910 and info["architecture"].startswith("MLP 784-20-10")
    )
    assert info["metrics"] == {"test_accuracy": round(exp.accuracy or 0, 4)}
    assert "load_digits" in info["dataset"] and info["name"] == "mnist-mlp"
    from mlkit.guest import run_vm

    steps = run_vm(exp.model, models.example_payload(exp)).steps
    assert info["vm_steps"] == steps and "vm_steps_estimate" not in info
    assert info["vm_program"] == guest_program_hash() == "0x" + program_hash().hex()
    assert info["dispute"] == {
        "steps": steps,
        "arity": 16,
        "rounds": rounds_needed(steps, 16),
        "moves": 2 * rounds_needed(steps, 16) + 1,
        "cost_class": "light",
        "steps_measured": True,
    }
    text = runner.invoke(app, ["model", "info", str(path)]).stdout
    assert "MLP 784-20-10" in text and f"{steps:,} (measured)" in text and "light: 5 rounds" in text


def test_cli_info_of_a_model_without_a_card_estimates(tmp_path: Path) -> None:
    path = tmp_path / "g.mlkit"
    path.write_bytes(models.reference("gpt2-tiny").model)
    info = json.loads(runner.invoke(app, ["model", "info", str(path), "--json"]).stdout)
    assert info["workload"] == {"prompt_tokens": 8, "new_tokens": 16}
    assert info["vm_steps"] is None and info["vm_steps_estimate"] == info["macs"] * STEPS_PER_MAC
    assert info["dispute"]["steps_measured"] is False and info["dataset"] is None
    card_path(path).write_text("{broken")
    assert_one_line_error(runner.invoke(app, ["model", "info", str(path)]))
    np.testing.assert_equal(info["ops"]["attention"], 2)
