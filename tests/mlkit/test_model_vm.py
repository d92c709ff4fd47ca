"""The reference models in the VM: the MIPS guest (mlkit/guest/mlkit.elf on the fast executor) produces
byte for byte the output of the native build, and exits 0 on the true claim (spec section 9).

Measured on the development machine (2 cores; the dot products run the integer kernel sf_dot, 32-43
steps per multiply-add; bench/mlkit.py has the figures and the int8 ones):

| model | VM steps | steps per multiply-add (whole run) |
|---|---:|---:|
| mnist-mlp | 0.57M | 36.1 |
| lenet | 15.5M | 38.2 |
| gpt2-tiny (8-token prompt, 16 new tokens) | 122M | 52.3 |
| dcgan32 (trained weights) | 2.02G | 38.8 |
| dcgan128 (trained, fewer channels) | 1.78G | 42.4 |
| fortune-gpt (11-token prompt; it stops at its eos after 7 of the 24 new tokens asked) | its card | |
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mipsvm.hashing import keccak256
from mlkit import models
from mlkit.guest import run_native, run_vm
from mlkit.io import encode_payload
from rollml.cli import app

pytestmark = pytest.mark.requires("guest")


def exported(name: str) -> models.Exported:
    return models.reference(name)


def assert_vm_matches_native(name: str) -> None:
    exp = exported(name)
    payload = models.example_payload(exp)
    native = run_native(exp.model, payload)
    vm = run_vm(exp.model, payload, keccak256(native.output))
    assert vm.exit_code == 0, f"{name}: the VM exited {vm.exit_code} after {vm.steps} steps"
    assert vm.output == native.output, f"{name}: VM and native outputs differ"
    print(f"{name}: {vm.steps:,} steps, {vm.seconds:.2f} s in the VM, {native.seconds * 1e3:.2f} ms native")


@pytest.mark.parametrize("name", ["mnist-mlp", "lenet", "gpt2-tiny", "dcgan32", "dcgan128", "fortune-gpt"])
def test_vm_output_is_byte_identical_to_native(name: str) -> None:
    assert_vm_matches_native(name)


def test_vm_exits_1_on_a_wrong_claim() -> None:
    exp = exported("mnist-mlp")
    payload = models.example_payload(exp)
    true_out = run_native(exp.model, payload).output
    vm = run_vm(exp.model, payload, keccak256(true_out + b"x"))
    assert vm.exit_code == 1
    assert vm.output == true_out  # the output is still written to fd 3; only the claim check fails


def test_vm_exits_3_on_an_input_of_the_wrong_shape() -> None:
    exp = exported("mnist-mlp")
    payload = encode_payload([np.zeros((1, 784), np.float32)])
    vm = run_vm(exp.model, payload, bytes(32))
    assert vm.exit_code == 3


def test_cli_model_run_vm_json_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    model, x = tmp_path / "lenet.mlkit", tmp_path / "x.npy"
    args = ["model", "export", "lenet", "-o", str(model), "--example-input", str(x), "--json"]
    assert runner.invoke(app, args).exit_code == 0
    native = json.loads(runner.invoke(app, ["model", "run", str(model), "-i", str(x), "--json"]).stdout)
    result = runner.invoke(app, ["model", "run", str(model), "-i", str(x), "--vm", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backend"] == "vm" and report["exit_code"] == 0
    assert report["steps"] > 1_000_000 and report["seconds"] > 0
    assert report["output_sha"] == native["output_sha"] and report["output"] == native["output"]
