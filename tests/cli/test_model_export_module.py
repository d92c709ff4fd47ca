"""`rollml model export --module FILE.py[:FACTORY]`: a user's own torch module, from a file the test writes,
exported to mlkit with its card, and run natively to torch's answer; each way it can fail is one line and
writes nothing."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from support.cli import assert_one_line_error
from typer.testing import CliRunner

from mlkit.format import model_id
from rollml.cli import app

runner = CliRunner()

USER_FILE = """
import torch
from torch import nn


def model():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4)
    )
    return net, torch.rand(2, 1, 6, 6)


def tiny():
    return nn.Sequential(nn.Linear(3, 2)), torch.ones(1, 3)


def broken():
    raise RuntimeError("no weights here")


def not_a_pair():
    return nn.Linear(3, 2)


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return x
        return -x


def branchy():
    return Branchy(), torch.ones(1, 3)


def complex_out():
    class Fft(nn.Module):
        def forward(self, x):
            return torch.fft.fft(x).real

    return Fft(), torch.ones(1, 4)
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "mynet.py"
    path.write_text(USER_FILE)
    return path


def test_an_own_module_exported_runs_natively_as_torch_does(
    user_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, x_file = tmp_path / "mynet.mlkit", tmp_path / "x.npy"
    args = ["model", "export", "--module", str(user_file), "-o", str(out), "--example-input", str(x_file)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)
    assert entry["name"] == "mynet" and entry["input_shape"] == [2, 1, 6, 6]
    assert entry["model_id"] == "0x" + model_id(out.read_bytes()).hex()
    card = json.loads(Path(entry["card_file"]).read_text())
    assert card["name"] == "mynet" and card["notes"] == "exported from mynet.py:model"
    assert card["model_id"] == entry["model_id"]

    net, x = runpy.run_path(str(user_file))["model"]()
    with torch.no_grad():
        theirs = net.eval()(x).numpy()
    assert np.array_equal(np.load(x_file), x.numpy())
    ran = runner.invoke(app, ["model", "run", str(out), "-i", str(x_file), "--native", "--json"])
    assert ran.exit_code == 0, ran.output
    ours = np.asarray(json.loads(ran.stdout)["output"], dtype=np.float32)
    assert ours.shape == theirs.shape == (2, 4)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)  # binary32 to float rounding

    # FILE:FACTORY and a name: NAME.mlkit in the current folder by default
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    named = runner.invoke(app, ["model", "export", "small", "--module", f"{user_file}:tiny"])
    assert named.exit_code == 0, named.output
    assert Path("small.mlkit").is_file()
    assert json.loads(Path("small.card.json").read_text())["name"] == "small"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope.py", r"no such file: .*nope\.py$"),
        ("mynet.py:nothere", r"mynet\.py has no 'nothere' .*FACTORY"),
        ("mynet.py:broken", r"mynet\.py:broken\(\) raised RuntimeError: no weights here$"),
        ("mynet.py:not_a_pair", r"mynet\.py:not_a_pair\(\) returned Linear; FACTORY takes no arguments"),
        ("mynet.py:branchy", r"mynet\.py:branchy: torch\.fx cannot trace Branchy"),
        ("mynet.py:complex_out", r"mynet\.py:complex_out: .*complex64"),
        ("x.npy", r"x\.npy: not a Python file"),
    ],
)
def test_each_failure_is_one_line_and_writes_nothing(
    user_file: Path, tmp_path: Path, spec: str, message: str
) -> None:
    import re

    (tmp_path / "x.npy").write_bytes(b"")
    out = tmp_path / "out.mlkit"
    result = runner.invoke(app, ["model", "export", "--module", str(tmp_path / spec), "-o", str(out)])
    assert_one_line_error(result)
    assert re.search(message, result.output.strip()), result.output
    assert not out.exists() and not out.with_suffix(".card.json").exists()


def test_a_file_that_fails_to_import_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nraise ValueError('half-written')\n")
    result = runner.invoke(app, ["model", "export", "--module", str(bad), "-o", str(tmp_path / "b.mlkit")])
    assert_one_line_error(result)
    assert "bad.py: importing it raised ValueError: half-written" in result.output


def test_neither_a_reference_model_nor_a_module_is_one_line() -> None:
    assert_one_line_error(runner.invoke(app, ["model", "export"]))
