"""The reference models, the torch / ONNX exporters and `rollml model`: parity with torch, transformers and
onnxruntime, classifier accuracy, clear errors.

Tolerances (measured figures in brackets; mlkit sums in a fixed order that is not torch's, so float32
results differ by rounding only):
- classifiers: the argmax is identical to torch's on the WHOLE test split (450 images); logits within
  1e-4 absolute [~6e-6];
- DCGAN generators: max abs error vs torch within 1e-4 on a tanh output in [-1, 1] [~3e-6 for both];
- GPT-2 tiny: greedy tokens identical to transformers' (16 tokens); logits within 1e-4 [~4e-6];
- ONNX round trips: within 1e-4 of onnxruntime [~1e-5 on logits of magnitude ~10], identical argmax.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.cli import assert_one_line_error  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from mlkit import models, native  # noqa: E402
from mlkit.export import ExportError, export_gpt2, export_module  # noqa: E402
from mlkit.format import decode_model, model_id  # noqa: E402
from mlkit.onnx_import import OnnxImportError, import_onnx  # noqa: E402
from rollml.cli import app  # noqa: E402

ATOL = 1e-4
runner = CliRunner()


# --------------------------------------------------------------------------------------------------------
# Fixtures: trained / seeded models, built once per session (trained weights are cached on disk)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def digits() -> models.DigitsSplit:
    return models.load_digits_28()


@pytest.fixture(scope="session")
def classifiers() -> dict[str, tuple[Any, float]]:
    return {name: models.trained_classifier(name) for name in models.CLASSIFIERS}


@pytest.fixture(scope="session")
def gpt2_tiny() -> Any:
    return models.gpt2_model("gpt2-tiny")


def torch_out(module: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------------------


def test_digits_are_upscaled_mnist_shaped_and_split_deterministically(digits: models.DigitsSplit) -> None:
    assert digits.x_train.shape[1:] == (1, 28, 28) and digits.x_test.shape == (450, 1, 28, 28)
    assert digits.x_train.dtype == np.float32 and digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    again = models.load_digits_28()
    assert np.array_equal(again.x_test, digits.x_test) and np.array_equal(again.y_test, digits.y_test)


@pytest.mark.parametrize(
    ("name", "floor"), [("mnist-mlp", models.MLP_ACCURACY_FLOOR), ("lenet", models.LENET_ACCURACY_FLOOR)]
)
def test_classifier_accuracy_is_above_its_floor(classifiers: dict, name: str, floor: float) -> None:
    _, acc = classifiers[name]
    assert acc >= floor, f"{name}: test accuracy {acc:.4f} < {floor}"


@pytest.mark.parametrize("name", ["mnist-mlp", "lenet"])
def test_classifier_matches_torch_on_the_whole_test_split(
    classifiers: dict, digits: models.DigitsSplit, name: str
) -> None:
    model, acc = classifiers[name]
    x = digits.x_test  # the exported model takes the whole split as one batch
    (logits,) = native.run_arrays(export_module(model, torch.from_numpy(x)), [x])
    ref = torch_out(model, x)
    assert np.array_equal(logits.argmax(axis=1), ref.argmax(axis=1))
    assert np.abs(logits - ref).max() <= ATOL
    assert float((logits.argmax(axis=1) == digits.y_test).mean()) == pytest.approx(acc)


def test_training_is_deterministic(digits: models.DigitsSplit) -> None:
    weights = []
    for _ in range(2):
        torch.manual_seed(models.TRAIN_SEED)
        model = models.mnist_mlp()
        models.train_classifier(model, digits, models.TrainConfig(epochs=2, lr=1e-3))
        weights.append(model[1].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


# --------------------------------------------------------------------------------------------------------
# DCGAN
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("dcgan32", 32), ("dcgan128", 128)])
def test_dcgan_matches_torch_and_draws_a_png(tmp_path: Path, name: str, size: int) -> None:
    from PIL import Image

    gen = models.dcgan_generator(name)
    z = models.latent(0)
    (image,) = native.run_arrays(export_module(gen, torch.from_numpy(z)), [z])
    ref = torch_out(gen, z)
    assert image.shape == (1, 3, size, size)
    assert np.abs(image - ref).max() <= ATOL
    assert image.std() > 0.1, "the trained generator draws a non-trivial image"
    png = models.save_png(image, tmp_path / f"{name}.png")
    with Image.open(png) as im:
        assert im.size == (size, size) and im.mode == "RGB"


def test_dcgan_batchnorm_has_seeded_nontrivial_running_stats() -> None:
    a, b = models.dcgan_generator("dcgan32", trained=False), models.dcgan_generator("dcgan32", trained=False)
    bn = [m for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not a.training
    for m in bn:
        assert m.running_var.min() > 0 and not torch.allclose(m.running_var, torch.ones_like(m.running_var))
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


# --------------------------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------------------------


def test_gpt2_tiny_greedy_tokens_match_transformers(gpt2_tiny: Any) -> None:
    prompt = models.gpt2_prompt()
    expected = models.gpt2_greedy(gpt2_tiny, prompt, 16)
    got = native.generate(export_gpt2(gpt2_tiny), prompt.tolist(), 16)
    assert got == expected
    assert len(set(got)) > 3, "the seeded model should not just repeat one token"


def test_gpt2_tiny_logits_match_transformers(gpt2_tiny: Any) -> None:
    tokens = np.arange(5, 29, dtype=np.int32)
    (logits,) = native.run_arrays(export_gpt2(gpt2_tiny, mode="logits", seq_len=len(tokens)), [tokens])
    assert np.abs(logits - models.gpt2_logits(gpt2_tiny, tokens)).max() <= ATOL


def test_gpt2_generation_stops_at_eos(gpt2_tiny: Any) -> None:
    prompt = models.gpt2_prompt().tolist()
    full = native.generate(export_gpt2(gpt2_tiny), prompt, 16)
    eos = full[3]
    stopped = native.generate(export_gpt2(gpt2_tiny, eos=eos), prompt, 16)
    assert stopped == full[: full.index(eos) + 1]


def test_gpt2_export_rejects_other_models_and_activations() -> None:
    with pytest.raises(ExportError, match="GPT2LMHeadModel"):
        export_gpt2(torch.nn.Linear(2, 2))
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2, activation_function="relu")
    with pytest.raises(ExportError, match="activation 'relu'"):
        export_gpt2(GPT2LMHeadModel(cfg))


# --------------------------------------------------------------------------------------------------------
# The torch.fx exporter on other modules and functions
# --------------------------------------------------------------------------------------------------------


class _Functional(torch.nn.Module):
    """Functions and methods rather than modules: F.relu, view, residual add, scalar ops, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 12)
        self.ln = torch.nn.LayerNorm(12)
        self.fc2 = torch.nn.Linear(12, 5)
        self.offset = torch.nn.Parameter(torch.randn(1, 12))

    def forward(self, x: Any) -> Any:
        h = x.view(x.shape[0], -1)
        h = torch.nn.functional.relu(self.fc1(h)) + h
        h = self.offset * h + self.offset
        h = self.ln(h) * 0.5 - 1.0
        h = torch.sigmoid(h) + torch.tanh(h)
        h = torch.nn.functional.gelu(h, approximate="tanh")
        return torch.softmax(self.fc2(h), dim=-1)


def test_fx_export_handles_functions_methods_and_scalars() -> None:
    torch.manual_seed(0)
    model = _Functional().eval()
    x = torch.randn(3, 3, 4).numpy()
    (y,) = native.run_arrays(export_module(model, torch.from_numpy(x)), [x])
    assert np.abs(y - torch_out(model, x)).max() <= ATOL


def test_fx_export_of_pooling_batchnorm1d_and_leaky_relu() -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, stride=2, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.LeakyReLU(0.1),
        torch.nn.AvgPool2d(3, stride=1, padding=1),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 6),
        torch.nn.BatchNorm1d(6),
        torch.nn.Dropout(0.5),
    )
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 2, 8, 8).numpy()
    (y,) = native.run_arrays(export_module(model, torch.from_numpy(x)), [x])
    assert np.abs(y - torch_out(model, x)).max() <= ATOL


@pytest.mark.parametrize(
    ("module", "shape", "message"),
    [
        (
            torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LSTM(4, 4)),
            (1, 4),
            "unsupported module LSTM at '1'",
        ),
        (torch.nn.Sequential(torch.nn.GELU()), (1, 4), "GELU at '0': approximate='none'"),
        (torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, groups=2)), (1, 2, 5, 5), "Conv2d at '0': groups=2"),
        (torch.nn.Sequential(torch.nn.Softmax(dim=1)), (1, 3, 4), "Softmax at '0'"),
        (torch.nn.Sequential(torch.nn.MaxPool2d(2, ceil_mode=True)), (1, 1, 5, 5), "ceil_mode"),
        (torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Hardswish()), (1, 4), "Hardswish"),
    ],
)
def test_export_names_unsupported_modules(module: Any, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ExportError, match=_re(message)):
        export_module(module, torch.zeros(shape))


class _Sine(torch.nn.Module):
    def forward(self, x: Any) -> Any:
        return torch.sin(x)


def test_export_names_unsupported_functions() -> None:
    with pytest.raises(ExportError, match="unsupported function or method 'sin'"):
        export_module(_Sine(), torch.zeros(1, 4))


def _re(text: str) -> str:
    import re

    return re.escape(text)


# --------------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------------


def to_onnx(module: Any, x: np.ndarray, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=False)
    return path


def onnxruntime_out(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


class _OnnxZoo(torch.nn.Module):
    """Sigmoid, LeakyRelu, AveragePool, BatchNormalization, Mul/Add/Sub/Div by constants, Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(64, 7)

    def forward(self, x: Any) -> Any:
        h = torch.nn.functional.leaky_relu(self.bn(self.conv(x)), 0.2)
        h = self.pool(torch.sigmoid(h) * 2.0 - 0.5) / 4.0
        return torch.softmax(self.fc(h.flatten(1)) + 1.0, dim=-1)


@pytest.mark.parametrize("name", ["mnist-mlp", "lenet", "dcgan32", "zoo"])
def test_onnx_round_trip_matches_onnxruntime(
    tmp_path: Path, classifiers: dict, digits: models.DigitsSplit, name: str
) -> None:
    if name in classifiers:
        module, x = classifiers[name][0], digits.x_test[:8]
    elif name == "dcgan32":
        module, x = models.dcgan_generator(name), models.latent(1)
    else:
        torch.manual_seed(2)
        module, x = _OnnxZoo().eval(), torch.randn(2, 3, 8, 8).numpy()
    path = to_onnx(module, x, tmp_path / f"{name}.onnx")
    (y,) = native.run_arrays(import_onnx(path), [x])
    ref = onnxruntime_out(path, x)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= ATOL
    if name in classifiers:
        assert np.array_equal(y.argmax(axis=1), ref.argmax(axis=1))


def test_onnx_import_fixes_a_dynamic_batch_to_1(tmp_path: Path, classifiers: dict) -> None:
    path = tmp_path / "dyn.onnx"
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            classifiers["lenet"][0], (torch.from_numpy(x),), str(path), dynamo=False,
            input_names=["x"], dynamic_axes={"x": {0: "batch"}},
        )  # fmt: skip
    model = import_onnx(path)
    assert decode_model(model).input_specs()[0][1] == (1, 1, 28, 28)
    (y,) = native.run_arrays(model, [x])
    assert np.abs(y - onnxruntime_out(path, x)).max() <= ATOL


def test_onnx_import_names_unsupported_ops(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Hardswish(), _Sine())
    path = to_onnx(module.eval(), np.zeros((1, 4), np.float32), tmp_path / "bad.onnx")
    with pytest.raises(OnnxImportError, match=r"unsupported ONNX op\(s\): HardSwish, Sin \(supported: Add"):
        import_onnx(path)
    exact_gelu = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
    path = to_onnx(exact_gelu.eval(), np.zeros((1, 4), np.float32), tmp_path / "gelu.onnx")
    with pytest.raises(OnnxImportError, match=r"(Gelu .*approximate='none'|unsupported ONNX op\(s\): Erf)"):
        import_onnx(path)


def test_onnx_import_rejects_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00not onnx at all")
    with pytest.raises(OnnxImportError, match="not a readable ONNX model"):
        import_onnx(bad)


# --------------------------------------------------------------------------------------------------------
# build_reference_models and the CLI (native runs; the VM runs are in test_model_vm.py)
# --------------------------------------------------------------------------------------------------------


def test_build_reference_models_writes_models_inputs_and_manifest(tmp_path: Path) -> None:
    manifest = models.build_reference_models(tmp_path, names=("mnist-mlp", "dcgan32", "gpt2-tiny"))
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    by_name = {e["name"]: e for e in manifest["models"]}
    assert set(by_name) == {"mnist-mlp", "dcgan32", "gpt2-tiny"}
    for entry in manifest["models"]:
        data = (tmp_path / entry["file"]).read_bytes()
        assert entry["model_id"] == "0x" + model_id(data).hex()
        assert np.load(tmp_path / entry["input"]).shape == tuple(entry["input_shape"])
        decode_model(data)
    assert by_name["mnist-mlp"]["params"] == 784 * 20 + 20 + 20 * 10 + 10
    assert by_name["mnist-mlp"]["accuracy"] >= models.MLP_ACCURACY_FLOOR
    assert by_name["gpt2-tiny"]["mode"] == "generate" and by_name["gpt2-tiny"]["new_tokens"] == 16
    assert (tmp_path / "dcgan32.png").is_file()


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cli")
    model, x = d / "mlp.mlkit", d / "x.npy"
    result = runner.invoke(app, ["model", "export", "mnist-mlp", "-o", str(model), "--example-input", str(x)])
    assert result.exit_code == 0, result.output
    return model, x


def test_cli_export_info_and_native_run(mlp_files: tuple[Path, Path], tmp_path: Path) -> None:
    model, x = mlp_files
    info = json.loads(runner.invoke(app, ["model", "info", str(model), "--json"]).stdout)
    assert info["params"] == 15910 and info["ops"] == {"reshape": 1, "linear": 2, "relu": 1}
    assert info["inputs"] == [{"dtype": "f32", "shape": [1, 1, 28, 28]}]
    assert info["model_id"] == "0x" + model_id(model.read_bytes()).hex()
    out = tmp_path / "y.npy"
    result = runner.invoke(
        app, ["model", "run", str(model), "--input", str(x), "--output", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    y = np.load(out)
    assert report["output"] == y.tolist() and report["shapes"] == [[1, 10]]
    from mipsvm.hashing import keccak256
    from mlkit.io import encode_payload

    assert report["output_sha"] == "0x" + keccak256(encode_payload([y])).hex()


def test_cli_gpt2_tiny_generates_tokens(tmp_path: Path) -> None:
    model, prompt = tmp_path / "g.mlkit", tmp_path / "p.npy"
    assert (
        runner.invoke(
            app, ["model", "export", "gpt2-tiny", "-o", str(model), "--example-input", str(prompt)]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app, ["model", "run", str(model), "-i", str(prompt), "--new-tokens", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    expected = models.gpt2_greedy(models.gpt2_model("gpt2-tiny"), np.load(prompt), 5)
    assert json.loads(result.stdout)["output"] == expected


def test_cli_import_onnx(tmp_path: Path, classifiers: dict, digits: models.DigitsSplit) -> None:
    path = to_onnx(classifiers["lenet"][0], digits.x_test[:1], tmp_path / "lenet.onnx")
    out = tmp_path / "lenet.mlkit"
    result = runner.invoke(app, ["model", "import-onnx", str(path), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_id"] == "0x" + model_id(out.read_bytes()).hex()


def test_cli_blend_sheet_writes_a_row_of_blends(tmp_path: Path) -> None:
    from PIL import Image

    from mipsvm.hashing import keccak256
    from rollml.core.gan_nft import blend_latent, latent_input, latent_payload, seed_latent

    png = tmp_path / "sheet.png"
    args = ["model", "blend-sheet", "dcgan32", "--seed-a", "3", "--seed-b", "4", "--steps", "5"]
    result = runner.invoke(app, [*args, "-o", str(png), "--scale", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["weights"] == [0, 2500, 5000, 7500, 10_000] and report["file"] == str(png)
    with Image.open(png) as im:
        assert im.size == ((5 * 32 + 4 * 2) * 2, 32 * 2) and im.mode == "RGB"
    model = models.reference_model("dcgan32")
    assert report["model_id"] == "0x" + model_id(model).hex()
    # the ends are the GanNFT mints of the two seeds, the middle is the blend GanNFT.blend would request
    assert report["output_shas"][0] == "0x" + keccak256(native.run(model, latent_input(3))).hex()
    assert report["output_shas"][4] == "0x" + keccak256(native.run(model, latent_input(4))).hex()
    middle = latent_payload(blend_latent(seed_latent(3), seed_latent(4), 5000))
    assert report["output_shas"][2] == "0x" + keccak256(native.run(model, middle)).hex()
    assert len(set(report["output_shas"])) == 5


def test_cli_blend_sheet_rejects_bad_arguments_with_one_line(
    mlp_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = ["-o", str(tmp_path / "s.png")]
    for args in (
        ["--steps", "1"],
        ["--scale", "0"],
        ["--seed-a", "-1"],
    ):
        assert_one_line_error(runner.invoke(app, ["model", "blend-sheet", "dcgan32", *args, *out]))
    assert_one_line_error(runner.invoke(app, ["model", "blend-sheet", "resnet", *out]))
    model, _ = mlp_files  # not an image generator
    assert_one_line_error(runner.invoke(app, ["model", "blend-sheet", str(model), *out]))
    assert not (tmp_path / "s.png").exists()


def _bad_inputs(tmp_path: Path) -> dict[str, np.ndarray | bytes]:
    return {
        "shape": np.zeros((1, 784), np.float32),
        "dtype": np.zeros((1, 1, 28, 28), np.float64),
        "size": np.zeros((2, 1, 28, 28), np.float32),
        "text": b"hello, not numpy",
        "object": np.array([{"a": 1}], dtype=object),
    }


@pytest.mark.parametrize("case", ["shape", "dtype", "size", "text", "object", "missing"])
def test_cli_rejects_bad_inputs_with_one_line(
    mlp_files: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    model, _ = mlp_files
    path = tmp_path / f"{case}.npy"
    if case != "missing":
        value = _bad_inputs(tmp_path)[case]
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            np.save(path, value, allow_pickle=True)
    result = runner.invoke(app, ["model", "run", str(model), "--input", str(path)])
    assert_one_line_error(result)


@pytest.mark.parametrize("case", ["truncated", "garbage", "bitflip", "empty"])
def test_cli_rejects_malformed_models_with_one_line(
    mlp_files: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    model, x = mlp_files
    data = model.read_bytes()
    bad = {
        "truncated": data[: len(data) // 2],
        "garbage": b"RMLM" + bytes(range(200)),
        "bitflip": data[:40] + bytes([data[40] ^ 0x10]) + data[41:],
        "empty": b"",
    }[case]
    path = tmp_path / "bad.mlkit"
    path.write_bytes(bad)
    for args in (["model", "info", str(path)], ["model", "run", str(path), "--input", str(x)]):
        assert_one_line_error(runner.invoke(app, args))


def test_cli_rejects_unknown_reference_model_and_missing_onnx(tmp_path: Path) -> None:
    assert_one_line_error(runner.invoke(app, ["model", "export", "resnet", "-o", str(tmp_path / "m")]))
    assert_one_line_error(runner.invoke(app, ["model", "import-onnx", str(tmp_path / "no.onnx"), "-o", "m"]))
