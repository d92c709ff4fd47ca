"""The reference models of rollml, rebuilt by code from fixed seeds.

Nothing here downloads anything. The models and their data sources:

- ``mnist-mlp``: 784-20-10 MLP with ReLU (the opML MNIST shape), and ``lenet``: a LeNet-5 style CNN
  (conv5-relu-maxpool x2, then linear 400-120-84-10). Both are trained on scikit-learn's ``load_digits``
  (1797 hand-written digits, 8x8 grey levels 0..16, shipped inside the scikit-learn package), scaled to
  [0, 1] and upscaled to 28x28 with torch's bilinear interpolation (``align_corners=False``, deterministic)
  so that they take MNIST-shaped inputs. The split is 75% train / 25% test, stratified, fixed seed.
  Training is deterministic (one thread, ``torch.use_deterministic_algorithms``, seeded shuffles) and takes
  a few seconds on CPU.
- ``dcgan32`` and ``dcgan128``: DCGAN generators in the architecture of the NFTCreators project
  (snowshine/NFTCreators, ``gan/dcgan.py``, Keras), written in torch: the latent z (nz = 100) enters as
  N x 100 x 1 x 1; the Keras ``Dense(4*4*256) + Reshape`` becomes the equivalent 4x4 ``ConvTranspose2d``
  from 1x1; Keras ``padding='same'`` transposed convolutions become ``ConvTranspose2d`` with the padding
  (and output padding) that doubles the size exactly; the 128 model's final ``Conv2D(3, k=4, 'same')``
  (asymmetric padding) becomes a 3x3 ``Conv2d`` with padding 1, and its channels halve at every doubling
  (256 at 4x4 down to 8 at 128x128, instead of NFTCreators' 256..64) so that it trains on a CPU. Both are
  trained on scikit-learn's digits (tinted, upscaled; `mlkit.gan`, `scripts/train_dcgan.py`), and their
  weights are committed (`mlkit/weights/NAME.npz`, int8 per output channel); ``dcgan_generator(name,
  trained=False)`` is the seeded random initialisation (DCGAN's N(0, 0.02), seeded affine BatchNorm
  parameters, BatchNorm statistics calibrated on a seeded batch of latents), the untrained baseline.
- ``gpt2-tiny`` and ``gpt2``: ``transformers.GPT2LMHeadModel`` with seeded random weights (no pretrained
  checkpoint can be fetched): a tiny config for tests and the full 124M config for benchmarks (built on
  demand only). Greedy generation of N tokens from token ids.
- ``fortune-gpt``: a small GPT (GPT-2 blocks) trained on Debian's ``fortunes`` (``mlkit.fortunes``,
  ``scripts/train_fortune_gpt.py``); its trained model, tokenizer and card are committed in mlkit/assets.

Trained classifiers are cached on disk under ``$ROLLML_CACHE/models`` (default ``~/.cache/rollml/models``),
keyed by a hash of this file and the torch version, so a code change retrains.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

DIGITS_SEED = 20240601
TRAIN_SEED = 7
DCGAN_SEED = 1234
GPT2_SEED = 1
NZ = 100
DIGITS_SIZE = 28

MLP_ACCURACY_FLOOR = 0.92
LENET_ACCURACY_FLOOR = 0.96

REFERENCE_MODELS = ("mnist-mlp", "lenet", "dcgan32", "dcgan128", "gpt2-tiny", "gpt2", "fortune-gpt")
# The models build_reference_models writes by default (gpt2 124M is for benchmarks, on demand).
DEFAULT_BUILD = ("mnist-mlp", "lenet", "dcgan32", "dcgan128", "gpt2-tiny")


def _torch() -> Any:
    import torch

    return torch


def deterministic_torch(threads: int = 1) -> None:
    """Make torch deterministic for training and reference runs."""
    torch = _torch()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def cache_dir() -> Path:
    root = os.environ.get("ROLLML_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "rollml"
    return base / "models"


def code_key(name: str | None = None) -> str:
    """Hash of this file and the torch version: the cache key of the trained models; for a DCGAN generator
    `name` also of the training code (`mlkit/gan.py`) and its committed weights, which only it depends on."""
    torch = _torch()
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(torch.__version__.encode())
    if name in GENERATORS:
        from mlkit import gan

        h.update(Path(gan.__file__).read_bytes())
        weights = gan.weights_path(name)
        if weights.is_file():
            h.update(weights.read_bytes())
    return h.hexdigest()[:16]


def export_key(name: str | None = None) -> str:
    """The cache key of the exported reference model `name`: `code_key(name)` and the exporter's code
    (export.py, plan.py, which splits big nodes, and format.py), so a change of either re-exports it."""
    h = hashlib.sha256(code_key(name).encode())
    for name in ("export.py", "plan.py", "format.py"):
        h.update(Path(__file__).with_name(name).read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------
# Data: scikit-learn digits, upscaled to MNIST's 28x28
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsSplit:
    x_train: np.ndarray  # float32, N x 1 x 28 x 28, values in [0, 1]
    y_train: np.ndarray  # int64, N
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_28() -> DigitsSplit:
    """scikit-learn's 8x8 digits scaled to [0, 1], upscaled bilinearly to 28x28, split 75/25 (seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch = _torch()
    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = torch.nn.functional.interpolate(
        small, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False
    )
    x = big.clamp(0.0, 1.0).numpy().astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=DIGITS_SEED % (2**31), stratify=y
    )
    return DigitsSplit(x_train, y_train, x_test, y_test)


# --------------------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------------------


def mnist_mlp() -> nn.Module:
    """The 784-20-10 MLP (opML's MNIST shape): flatten, linear, ReLU, linear."""
    layers = _torch().nn
    return layers.Sequential(layers.Flatten(), layers.Linear(784, 20), layers.ReLU(), layers.Linear(20, 10))


def lenet() -> nn.Module:
    """LeNet-5 style: (conv5-relu-maxpool2) x 2, then linear 400-120-84-10."""
    layers = _torch().nn
    return layers.Sequential(
        layers.Conv2d(1, 6, 5, padding=2),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Conv2d(6, 16, 5),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Flatten(),
        layers.Linear(400, 120),
        layers.ReLU(),
        layers.Linear(120, 84),
        layers.ReLU(),
        layers.Linear(84, 10),
    )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float
    batch_size: int = 32
    weight_decay: float = 0.0


TRAIN_CONFIGS = {
    "mnist-mlp": TrainConfig(epochs=80, lr=1e-3),
    "lenet": TrainConfig(epochs=15, lr=2e-3),
}
CLASSIFIERS = {"mnist-mlp": mnist_mlp, "lenet": lenet}


def train_classifier(model: nn.Module, data: DigitsSplit, cfg: TrainConfig, seed: int = TRAIN_SEED) -> None:
    """Adam on cross-entropy with seeded shuffles; deterministic on one thread."""
    torch = _torch()
    deterministic_torch()
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    torch = _torch()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def trained_classifier(name: str, use_cache: bool = True) -> tuple[nn.Module, float]:
    """The trained classifier `name` ("mnist-mlp" or "lenet") and its test accuracy, cached on disk."""
    torch = _torch()
    if name not in CLASSIFIERS:
        raise KeyError(f"unknown classifier {name!r}; expected one of {sorted(CLASSIFIERS)}")
    data = load_digits_28()
    path = cache_dir() / f"{name}-{code_key()}.pt"
    torch.manual_seed(TRAIN_SEED)
    model = CLASSIFIERS[name]()
    if use_cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
    else:
        train_classifier(model, data, TRAIN_CONFIGS[name])
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
    return model, accuracy(model, data.x_test, data.y_test)


# --------------------------------------------------------------------------------------------------------
# DCGAN generators (NFTCreators architecture)
# --------------------------------------------------------------------------------------------------------


def dcgan32() -> nn.Module:
    """NFTCreators' Generator32x32: dense 4x4x256 (no bias), then transposed convs 3x3 to 32x32x3.

    Keras' default ``LeakyReLU()`` slope is 0.3, which this model keeps.
    """
    layers = _torch().nn

    def block(cin: int, cout: int, stride: int) -> list[Any]:
        pad_out = 1 if stride == 2 else 0
        return [
            layers.ConvTranspose2d(cin, cout, 3, stride, 1, output_padding=pad_out, bias=False),
            layers.BatchNorm2d(cout),
            layers.LeakyReLU(0.3),
        ]

    return layers.Sequential(
        layers.ConvTranspose2d(NZ, 256, 4, 1, 0, bias=False),  # Dense(4*4*256) + Reshape
        layers.BatchNorm2d(256),
        layers.LeakyReLU(0.3),
        *block(256, 256, 1),  # 4x4
        *block(256, 256, 2),  # 8x8
        *block(256, 128, 2),  # 16x16
        *block(128, 64, 2),  # 32x32
        layers.ConvTranspose2d(64, 3, 3, 1, 1, bias=False),
        layers.Tanh(),
    )


def dcgan128() -> nn.Module:
    """NFTCreators' Generator128x128 with fewer channels: dense 4x4x256, five 4x4 stride-2 transposed convs
    halving the channels (128, 64, 32, 16, 8), conv to 3, tanh."""
    layers = _torch().nn

    def block(cin: int, cout: int) -> list[Any]:
        return [layers.ConvTranspose2d(cin, cout, 4, 2, 1), layers.BatchNorm2d(cout), layers.LeakyReLU(0.2)]

    return layers.Sequential(
        layers.ConvTranspose2d(NZ, 256, 4, 1, 0),  # Dense(4*4*256) + Reshape
        layers.BatchNorm2d(256),
        layers.LeakyReLU(0.2),
        *block(256, 128),  # 8x8
        *block(128, 64),  # 16x16
        *block(64, 32),  # 32x32
        *block(32, 16),  # 64x64
        *block(16, 8),  # 128x128
        layers.Conv2d(8, 3, 3, 1, 1),
        layers.Tanh(),
    )


GENERATORS = {"dcgan32": dcgan32, "dcgan128": dcgan128}


def _init_generator(model: nn.Module, seed: int, calib_batch: int) -> None:
    """DCGAN init from `seed`, then BatchNorm running stats calibrated on a seeded batch of latents."""
    torch = _torch()
    nn = torch.nn
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d | nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * 0.02
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.02
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data = 1.0 + torch.randn(m.weight.shape, generator=gen) * 0.2
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.2
            m.momentum = None  # cumulative average over the calibration pass
            m.reset_running_stats()
    z = torch.randn(calib_batch, NZ, 1, 1, generator=gen)
    model.train()
    with torch.no_grad():
        model(z)
    model.eval()


def dcgan_generator(name: str, seed: int = DCGAN_SEED, trained: bool = True) -> nn.Module:
    """The DCGAN generator `name` ("dcgan32" or "dcgan128") in eval mode: with its committed trained weights
    (`mlkit.gan.trained_generator`), or with `trained=False` the seeded random initialisation."""
    if name not in GENERATORS:
        raise KeyError(f"unknown generator {name!r}; expected one of {sorted(GENERATORS)}")
    if trained:
        from mlkit.gan import trained_generator

        return trained_generator(name)
    _torch().manual_seed(seed)
    model = GENERATORS[name]()
    _init_generator(model, seed, calib_batch=32 if name == "dcgan32" else 8)
    return model


def latent(seed: int = 0, batch: int = 1) -> np.ndarray:
    """A seeded latent z, batch x 100 x 1 x 1 float32."""
    torch = _torch()
    gen = torch.Generator().manual_seed(10_000 + seed)
    return torch.randn(batch, NZ, 1, 1, generator=gen).numpy()


def png_bytes(output: Any, scale: int = 1) -> bytes:
    """A generator output (1 x 3 x H x W or 3 x H x W, values in [-1, 1]; one channel gives grey) as the bytes
    of an RGB PNG, each pixel drawn as a `scale` x `scale` block (a 32 x 32 image is hard to see at its own
    size)."""
    import io

    from PIL import Image

    arr = np.asarray(output, dtype=np.float32)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"a PNG takes one image, got a batch of {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"an image is 3 x H x W (or 1 x 3 x H x W), got shape {arr.shape}")
    pixels = np.clip((arr + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    if pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def save_png(output: Any, path: str | Path, scale: int = 1) -> Path:
    """Save a generator output as an RGB PNG file (`png_bytes`)."""
    data = png_bytes(output, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_grid(images: Any, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Lay out N images (N x C x H x W, values in [-1, 1]) as one C x H' x W' image, row by row,
    `columns` per row (default: all in one row), `gap` black pixels between them (for `save_png`)."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] < 1:
        raise ValueError(f"image_grid expects N x C x H x W, got shape {arr.shape}")
    n, c, h, w = arr.shape
    cols = n if columns is None else max(1, min(columns, n))
    rows = -(-n // cols)
    grid = np.full((c, rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), -1.0, np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = arr[i]
    return grid


# --------------------------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------------------------

GPT2_TINY: dict[str, Any] = {
    "vocab_size": 256,
    "n_positions": 64,
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 2,
    "initializer_range": 0.2,
    "bos_token_id": 255,
    "eos_token_id": 255,
}
GPT2_124M: dict[str, Any] = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
}
GPT2_CONFIGS: dict[str, dict[str, Any]] = {"gpt2-tiny": GPT2_TINY, "gpt2": GPT2_124M}


def gpt2_model(name: str = "gpt2-tiny", seed: int = GPT2_SEED) -> Any:
    """`transformers.GPT2LMHeadModel` with seeded random weights, in eval mode (no dropout)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if name not in GPT2_CONFIGS:
        raise KeyError(f"unknown GPT-2 config {name!r}; expected one of {sorted(GPT2_CONFIGS)}")
    cfg = GPT2Config(
        **GPT2_CONFIGS[name],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    _torch().manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    model.eval()
    return model


def gpt2_prompt(name: str = "gpt2-tiny", length: int = 8, seed: int = 0) -> np.ndarray:
    """Seeded prompt token ids (int32, 1-D)."""
    vocab = int(GPT2_CONFIGS[name]["vocab_size"])
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=length).astype(np.int32)


def gpt2_greedy(model: Any, prompt: np.ndarray, n_new: int) -> list[int]:
    """Greedy generation of `n_new` tokens after `prompt` with the KV cache; returns the new token ids."""
    torch = _torch()
    ids = torch.tensor(np.asarray(prompt, dtype=np.int64)).unsqueeze(0)
    out: list[int] = []
    past = None
    with torch.no_grad():
        for _ in range(n_new):
            res = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            token = int(res.logits[0, -1].argmax())
            out.append(token)
            ids = torch.tensor([[token]])
    return out


def gpt2_logits(model: Any, tokens: np.ndarray) -> np.ndarray:
    """Logits of the whole sequence (no cache), float32 T x vocab."""
    torch = _torch()
    ids = torch.tensor(np.asarray(tokens, dtype=np.int64)).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits[0].numpy()


# --------------------------------------------------------------------------------------------------------
# Reference models as mlkit files
# --------------------------------------------------------------------------------------------------------

GPT2_NEW_TOKENS = {"gpt2-tiny": 16, "gpt2": 8}


@dataclass
class Exported:
    """A reference model exported to the mlkit format, with its example input."""

    name: str
    model: bytes
    example: np.ndarray  # plain mode: the one graph input; generate mode: the prompt token ids
    new_tokens: int | None = None  # generate mode: how many tokens the example asks for
    accuracy: float | None = None  # classifiers: test accuracy (torch)
    notes: str = ""


def export_reference(name: str) -> Exported:
    """Build (train / seed) the reference model `name` and export it with its example input."""
    from mlkit.export import export_gpt2, export_module

    if name == "fortune-gpt":  # trained by scripts/train_fortune_gpt.py, committed in mlkit/assets
        from mlkit import fortunes

        return fortunes.exported()
    torch = _torch()
    if name in CLASSIFIERS:
        model, acc = trained_classifier(name)
        x = load_digits_28().x_test[:1]
        return Exported(name, export_module(model, torch.from_numpy(x)), x, accuracy=acc)
    if name in GENERATORS:
        from mlkit.gan import weights_note

        gen = dcgan_generator(name)
        z = latent(0)
        return Exported(name, export_module(gen, torch.from_numpy(z)), z, notes=weights_note(name))
    if name in GPT2_CONFIGS:
        gpt = gpt2_model(name)
        n_new = GPT2_NEW_TOKENS[name]
        prompt = gpt2_prompt(name)
        return Exported(name, export_gpt2(gpt), prompt, new_tokens=n_new, notes="seeded random weights")
    raise KeyError(f"unknown reference model {name!r}; expected one of {', '.join(REFERENCE_MODELS)}")


@functools.cache
def reference(name: str) -> Exported:
    """`export_reference(name)`, cached on disk next to the trained weights (keyed by `export_key`: this file,
    the torch version and the exporter) and in memory: the one loader of reference models for the CLI, the
    agents' demos, the harnesses and the tests. fortune-gpt is read from its committed files, never cached."""
    if name == "fortune-gpt":
        return export_reference(name)
    base = cache_dir() / f"{name}-{export_key(name)}"
    files = base.with_suffix(".mlkit"), base.with_suffix(".example.npy"), base.with_suffix(".json")
    if all(f.is_file() for f in files):
        meta = json.loads(files[2].read_text())
        return Exported(name, files[0].read_bytes(), np.load(files[1], allow_pickle=False), **meta)
    exp = export_reference(name)
    meta = {"new_tokens": exp.new_tokens, "accuracy": exp.accuracy, "notes": exp.notes}
    base.parent.mkdir(parents=True, exist_ok=True)
    for path, write in (
        (files[0], lambda f: f.write(exp.model)),
        (files[1], lambda f: np.save(f, exp.example)),
        (files[2], lambda f: f.write(json.dumps(meta).encode())),
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, path)  # concurrent builders never see a half-written file
    return exp


def reference_model(name: str) -> bytes:
    """A reference model's mlkit bytes (see `reference`)."""
    return reference(name).model


# --------------------------------------------------------------------------------------------------------
# Your own torch model: `rollml model export --module FILE.py[:FACTORY]`
# --------------------------------------------------------------------------------------------------------

DEFAULT_FACTORY = "model"
FACTORY_CONTRACT = (
    "FACTORY takes no arguments and returns (module, example_input): a torch nn.Module and one input "
    "tensor (or numpy array) of exactly the shape and dtype the exported model takes, batch included"
)


def split_module_spec(spec: str) -> tuple[Path, str]:
    """`FILE.py[:FACTORY]` as (file, factory name; `DEFAULT_FACTORY` when none is given)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier() and head:
        return Path(head), tail
    return Path(spec), DEFAULT_FACTORY


def export_user_module(spec: str, name: str | None = None) -> Exported:
    """Import the Python file of `spec` (`FILE.py[:FACTORY]`), call its factory (`FACTORY_CONTRACT`) and
    export the module with `mlkit.export.export_module`. The model is named `name` (default: the file's
    stem). Every failure (no such file, no such factory, a factory or import that raises, a result of the
    wrong kind, a module mlkit cannot export) raises ExportError with one line naming FILE:FACTORY."""
    import importlib.util
    import sys

    from mlkit.export import ExportError, export_module

    path, factory = split_module_spec(spec)
    where = f"{path}:{factory}"
    if not path.is_file():
        raise ExportError(f"no such file: {path}")
    if path.suffix != ".py":
        raise ExportError(f"{path}: not a Python file (expected FILE.py[:FACTORY])")
    module_name = f"_rollml_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    assert loader_spec is not None and loader_spec.loader is not None  # a .py file always has one
    user = importlib.util.module_from_spec(loader_spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # the file may import its neighbours
    sys.modules[module_name] = user  # as an import would (dataclasses, pickling look it up)
    try:
        loader_spec.loader.exec_module(user)
    except Exception as exc:
        del sys.modules[module_name]
        raise ExportError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(folder)
    fn = getattr(user, factory, None)
    if fn is None:
        raise ExportError(f"{path} has no {factory!r} (the factory of FILE.py[:FACTORY]; {FACTORY_CONTRACT})")
    if not callable(fn):
        raise ExportError(f"{where} is not a function ({FACTORY_CONTRACT})")
    try:
        made = fn()
    except Exception as exc:
        raise ExportError(f"{where}() raised {type(exc).__name__}: {exc}") from exc
    torch = _torch()
    if not (isinstance(made, tuple | list) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        raise ExportError(f"{where}() returned {type(made).__name__}; {FACTORY_CONTRACT}")
    module, example = made
    try:
        x = torch.as_tensor(example)
    except Exception as exc:
        raise ExportError(f"{where}(): the example input is no tensor ({type(exc).__name__}: {exc})") from exc
    try:
        model = export_module(module, x)
    except ExportError as exc:
        raise ExportError(f"{where}: {exc}") from exc
    except Exception as exc:  # fx shape propagation: the module fails on its own example
        raise ExportError(f"{where}: cannot export: {type(exc).__name__}: {exc}") from exc
    return Exported(
        name or path.stem, model, x.detach().cpu().numpy(), notes=f"exported from {path.name}:{factory}"
    )


def example_payload(exp: Exported) -> bytes:
    """The input payload of an exported reference model's example."""
    from mlkit.io import encode_payload, generate_payload

    if exp.new_tokens is not None:
        return generate_payload(exp.example.tolist(), exp.new_tokens)
    return encode_payload([exp.example])


def manifest_entry(exp: Exported, model_file: str, input_file: str) -> dict[str, Any]:
    from mlkit.format import decode_model, model_id

    m = decode_model(exp.model)
    params = sum(t.numel for t in m.tensors if t.data is not None)
    return {
        "name": exp.name,
        "file": model_file,
        "input": input_file,
        "model_id": "0x" + model_id(exp.model).hex(),
        "bytes": len(exp.model),
        "params": params,
        "mode": str(m.mode.name).lower(),
        "input_shape": list(exp.example.shape),
        "input_dtype": str(exp.example.dtype),
        "output_shapes": [list(shape) for _, shape in m.output_specs()],
        "new_tokens": exp.new_tokens,
        "accuracy": exp.accuracy,
        "notes": exp.notes,
    }


def build_reference_models(
    out_dir: str | Path, names: tuple[str, ...] = DEFAULT_BUILD, progress: Any = None
) -> dict[str, Any]:
    """Write each model (`NAME.mlkit`), its example input (`NAME.input.npy`), the DCGAN images as rendered
    by the native runtime (`NAME.png`), and `manifest.json`; returns the manifest."""
    from mlkit import native

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in names:
        if progress is not None:
            progress(name)
        exp = export_reference(name)
        (out / f"{name}.mlkit").write_bytes(exp.model)
        np.save(out / f"{name}.input.npy", exp.example)
        entries.append(manifest_entry(exp, f"{name}.mlkit", f"{name}.input.npy"))
        if name in GENERATORS:
            (image,) = native.run_arrays(exp.model, [exp.example])
            save_png(image, out / f"{name}.png")
    manifest = {"models": entries, "code_key": code_key()}
    write_json(out / "manifest.json", manifest)
    return manifest


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
