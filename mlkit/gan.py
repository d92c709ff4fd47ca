"""The DCGAN reference generators trained on scikit-learn's digits: data, discriminator, training, the
committed weights, and the sample-quality measurement.

The generators' architectures are in `mlkit.models` (`dcgan32`, `dcgan128`); this module trains them.

- **Data**: the 1797 8x8 digits of `sklearn.datasets.load_digits` (grey levels 0..16, shipped inside the
  package), scaled to [0, 1] and upscaled bilinearly to the generator's size (torch, ``align_corners=False``,
  as `models.load_digits_28`), the ink tinted with a random colour whose brightest channel is 1 (the
  generator draws 3 channels; the background stays black), mapped to [-1, 1] (the generator ends in tanh).
  Augmentation: DiffAugment's random translation (up to 1/16 of the size), applied to the real and the
  generated images alike before the discriminator.
- **Training**: the DCGAN recipe (Radford et al. 2016): non-saturating logistic loss, Adam (2e-4, betas 0.5 /
  0.999) for both nets, N(0, 0.02) convolution weights, a strided-convolution discriminator with BatchNorm
  and LeakyReLU(0.2); latents N(0, 1); the generator kept is the exponential moving average of its weights.
  Seeded (`GAN_SEED`): every random draw comes from one `torch.Generator`, torch runs deterministic
  algorithms on a fixed number of threads (one by default).
- **Weights as committed** (`mlkit/weights/NAME.npz`): the convolution weights are quantised per output
  channel to int8 with a float32 scale (the bulk of the file), the BatchNorm parameters are stored as float32.
  After quantising, the BatchNorm running statistics are recomputed in one cumulative pass over a seeded
  batch of latents, so the eval-mode generator that is exported is exactly the one that was measured.
- **Sample quality**: an image is *recognised* when the trained digit classifier (`lenet` by default) gives
  one class probability >= 0.9 to it, converted as the classifier's inputs are made: grey = the brightest
  channel, mapped to [0, 1], resized to 28 x 28 (bilinear, antialiased). `quality` measures the share over N
  images; `bench/gan.py` prints it for the trained and the untrained (seeded) generator and for real digits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkit.models import NZ

if TYPE_CHECKING:
    from torch import nn

GAN_SEED = 20260516
MEASURE_SEED = 424242  # latents and tints of the measurements: a stream the training never drew from
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CONFIDENCE = 0.9
CALIBRATION_BATCH = 512


def _torch() -> Any:
    import torch

    return torch


@dataclass(frozen=True)
class GanConfig:
    """Training settings of one generator."""

    size: int
    steps: int
    batch: int = 64
    lr: float = 2e-4
    d_channels: tuple[int, ...] = (64, 128, 256)
    threads: int = 1
    ema: float = 0.998  # decay of the generator's weight average


CONFIGS = {
    "dcgan32": GanConfig(size=32, steps=2500),
    "dcgan128": GanConfig(size=128, steps=800, batch=32, d_channels=(16, 32, 64, 128, 256)),
}


def weights_path(name: str) -> Path:
    """Where the trained weights of generator `name` are committed."""
    return WEIGHTS_DIR / f"{name}.npz"


def weights_note(name: str) -> str:
    """The reference model's note (`models.Exported.notes`)."""
    return f"trained on scikit-learn's digits (mlkit/weights/{weights_path(name).name})"


def trained_generator(name: str) -> nn.Module:
    """The generator `name` with its committed trained weights, in eval mode."""
    from mlkit.models import GENERATORS

    path = weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained weights for {name} at {path}; scripts/train_dcgan.py writes them"
        )
    return load_weights(GENERATORS[name](), path)


# --------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------


def digits_at(size: int) -> np.ndarray:
    """All 1797 digits, N x 1 x size x size float32 in [0, 1] (bilinear upscale of the 8x8 grey levels)."""
    from sklearn.datasets import load_digits

    torch = _torch()
    small = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return big.clamp(0.0, 1.0).numpy()


def tint(ink: Any, gen: Any) -> Any:
    """Digits (B x 1 x S x S in [0, 1]) -> B x 3 x S x S in [-1, 1]: the ink in a random colour whose
    brightest channel is 1, on black."""
    torch = _torch()
    colour = torch.rand(len(ink), 3, generator=gen)
    colour = colour / colour.max(dim=1, keepdim=True).values
    return ink * colour.view(-1, 3, 1, 1) * 2.0 - 1.0


def translate(x: Any, gen: Any) -> Any:
    """DiffAugment's translation (Zhao et al. 2020): each image shifted by up to S/16 pixels in each
    direction, filled with black (-1). Differentiable; applied to real and generated images alike before
    the discriminator, so the discriminator does not overfit 1797 digits and the generator still learns
    centred ones."""
    torch = _torch()
    b, _, s, _ = x.shape
    m = max(1, s // 16)
    padded = torch.nn.functional.pad(x, (m, m, m, m), value=-1.0)
    dx = torch.randint(0, 2 * m + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * m + 1, (b,), generator=gen)
    rows = (dy.view(b, 1) + torch.arange(s).view(1, s)).view(b, 1, s, 1).expand(b, x.shape[1], s, s + 2 * m)
    cols = (dx.view(b, 1) + torch.arange(s).view(1, s)).view(b, 1, 1, s).expand(b, x.shape[1], s, s)
    return padded.gather(2, rows).gather(3, cols)


# --------------------------------------------------------------------------------------------------------
# Discriminator and training
# --------------------------------------------------------------------------------------------------------


def discriminator(size: int, channels: tuple[int, ...]) -> nn.Module:
    """Strided 4x4 convolutions halving the size per layer (BatchNorm after the first), LeakyReLU(0.2),
    then one logit from the remaining size x size map."""
    layers = _torch().nn
    mods: list[Any] = []
    cin = 3
    for i, c in enumerate(channels):
        mods.append(layers.Conv2d(cin, c, 4, 2, 1, bias=i == 0))
        if i:
            mods.append(layers.BatchNorm2d(c))
        mods.append(layers.LeakyReLU(0.2))
        cin = c
    rest = size >> len(channels)
    mods += [layers.Conv2d(cin, 1, rest, 1, 0), layers.Flatten()]
    return layers.Sequential(*mods)


def dcgan_init(model: nn.Module, gen: Any) -> None:
    """DCGAN's init: convolution weights N(0, 0.02), biases 0, BatchNorm weights N(1, 0.02), biases 0."""
    torch = _torch()
    nn_ = torch.nn
    for m in model.modules():
        if isinstance(m, nn_.Conv2d | nn_.ConvTranspose2d):
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * 0.02
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn_.BatchNorm2d):
            m.weight.data = 1.0 + torch.randn(m.weight.shape, generator=gen) * 0.02
            m.bias.data.zero_()


@dataclass
class TrainStats:
    """What a training run did (`seconds` and `cpu_seconds` leave out the time spent in `checkpoint`)."""

    name: str
    steps: int
    seed: int
    threads: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    d_loss: list[float] = field(default_factory=list)  # mean per logging interval
    g_loss: list[float] = field(default_factory=list)


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    torch = _torch()
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.mul_(decay).add_(p, alpha=1.0 - decay)


def snapshot(ema: nn.Module, seed: int) -> nn.Module:
    """A finalized copy of the averaged generator (the model as it would be committed now)."""
    import copy

    torch = _torch()
    g = copy.deepcopy(ema)
    finalize(g, torch.Generator().manual_seed(seed + 1))
    return g


def train_gan(
    name: str,
    steps: int | None = None,
    seed: int = GAN_SEED,
    progress: Callable[[int, int, float, float], None] | None = None,
    threads: int | None = None,
    checkpoint: Callable[[int, nn.Module], None] | None = None,
    checkpoint_every: int = 500,
) -> tuple[nn.Module, TrainStats]:
    """Train the generator `name` ("dcgan32" or "dcgan128") on the digits; returns the exponential moving
    average of its weights (decay `cfg.ema`, the usual GAN practice: smoother samples than the last step's
    weights) finalized (`finalize`: quantised, BatchNorm statistics recalibrated, eval mode), and the run's
    statistics. `progress(step, steps, d_loss, g_loss)` is called every 10 steps, `checkpoint(step,
    generator)` every `checkpoint_every` steps with the finalized average so far (it draws no random number
    from the training stream, so the result does not depend on it)."""
    import copy

    from mlkit.models import GENERATORS

    torch = _torch()
    cfg = CONFIGS[name]
    steps = cfg.steps if steps is None else steps
    threads = cfg.threads if threads is None else threads
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    g_net, d_net = GENERATORS[name](), discriminator(cfg.size, cfg.d_channels)
    dcgan_init(g_net, gen)
    dcgan_init(d_net, gen)
    ema = copy.deepcopy(g_net)
    data = torch.from_numpy(digits_at(cfg.size))
    opt_g = torch.optim.Adam(g_net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(cfg.batch, 1), torch.zeros(cfg.batch, 1)
    stats = TrainStats(name, steps, seed, threads)
    wall, cpu = time.perf_counter(), time.process_time()
    d_sum = g_sum = 0.0
    g_net.train()
    d_net.train()
    for step in range(1, steps + 1):
        real = tint(data[torch.randint(0, len(data), (cfg.batch,), generator=gen)], gen)
        z = torch.randn(cfg.batch, NZ, 1, 1, generator=gen)
        fake = g_net(z)
        opt_d.zero_grad()
        d_loss = bce(d_net(translate(real, gen)), ones) + bce(d_net(translate(fake.detach(), gen)), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = bce(d_net(translate(fake, gen)), ones)
        g_loss.backward()
        opt_g.step()
        ema_update(ema, g_net, min(cfg.ema, (1 + step) / (10 + step)))
        d_sum, g_sum = d_sum + d_loss.item(), g_sum + g_loss.item()
        if step % 10 == 0 or step == steps:
            n = 10 if step % 10 == 0 else step % 10
            stats.d_loss.append(round(d_sum / n, 4))
            stats.g_loss.append(round(g_sum / n, 4))
            if progress is not None:
                progress(step, steps, d_sum / n, g_sum / n)
            d_sum = g_sum = 0.0
        if checkpoint is not None and step % checkpoint_every == 0 and step < steps:
            paused, paused_cpu = time.perf_counter(), time.process_time()
            checkpoint(step, snapshot(ema, seed))
            wall += time.perf_counter() - paused
            cpu += time.process_time() - paused_cpu
    stats.seconds = round(time.perf_counter() - wall, 1)
    stats.cpu_seconds = round(time.process_time() - cpu, 1)
    final = snapshot(ema, seed)
    if checkpoint is not None:
        checkpoint(steps, final)
    return final, stats


# --------------------------------------------------------------------------------------------------------
# Weights: int8 per output channel for convolutions, float32 for the rest
# --------------------------------------------------------------------------------------------------------


def _quantise(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and float32 scales (one per index of `axis`): w ~ q * scale, |q| <= 127."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    peak = np.abs(w).max(axis=other, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.reshape(-1)


def _out_axis(module: Any) -> int:
    """The output-channel axis of a convolution's weight: 0 for Conv2d, 1 for ConvTranspose2d."""
    return 1 if isinstance(module, _torch().nn.ConvTranspose2d) else 0


def _dequantise(q: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)


def finalize(g_net: nn.Module, gen: Any) -> None:
    """Quantise the convolution weights in place (int8 per output channel), then recompute the BatchNorm
    running statistics as a cumulative average over one batch of `CALIBRATION_BATCH` latents from `gen`,
    and leave the generator in eval mode."""
    torch = _torch()
    nn_ = torch.nn
    for m in g_net.modules():
        if isinstance(m, nn_.Conv2d | nn_.ConvTranspose2d):
            axis = _out_axis(m)
            q, scale = _quantise(m.weight.detach().numpy(), axis)
            m.weight.data = torch.from_numpy(_dequantise(q, scale, axis))
        elif isinstance(m, nn_.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    z = torch.randn(CALIBRATION_BATCH, NZ, 1, 1, generator=gen)
    g_net.train()
    with torch.no_grad():
        g_net(z)
    for m in g_net.modules():
        if isinstance(m, nn_.BatchNorm2d):
            m.momentum = 0.1
    g_net.eval()


def save_weights(g_net: nn.Module, path: Path) -> Path:
    """Write the generator's state: convolution weights as `KEY.q` (int8) + `KEY.scale` (float32), every
    other tensor as float32 (BatchNorm's `num_batches_tracked` is left out)."""
    torch = _torch()
    arrays: dict[str, np.ndarray] = {}
    modules = dict(g_net.named_modules())
    for key, value in g_net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        owner = modules[key.rsplit(".", 1)[0]]
        arr = value.detach().numpy()
        if key.endswith("weight") and isinstance(owner, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            q, scale = _quantise(arr, _out_axis(owner))
            if not np.array_equal(_dequantise(q, scale, _out_axis(owner)), arr):
                raise ValueError(f"{key} is not quantised: call finalize() before save_weights()")
            arrays[key + ".q"], arrays[key + ".scale"] = q, scale
        else:
            arrays[key] = arr.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    savez: Any = np.savez_compressed  # numpy's stubs type **kwds as if a key could be `allow_pickle`
    with path.open("wb") as f:
        savez(f, **arrays)
    return path


def load_weights(g_net: nn.Module, path: Path) -> nn.Module:
    """Load `save_weights`' file into a generator of the same architecture; returns it in eval mode."""
    torch = _torch()
    modules = dict(g_net.named_modules())
    state = {}
    with np.load(path, allow_pickle=False) as f:
        files = set(f.files)
        for key, value in g_net.state_dict().items():
            if key.endswith("num_batches_tracked"):
                state[key] = value
                continue
            if key + ".q" in files:
                arr = _dequantise(f[key + ".q"], f[key + ".scale"], _out_axis(modules[key.rsplit(".", 1)[0]]))
            elif key in files:
                arr = f[key]
            else:
                raise ValueError(f"{path}: no tensor {key!r}")
            if tuple(arr.shape) != tuple(value.shape):
                raise ValueError(
                    f"{path}: {key} has shape {arr.shape}, the model expects {tuple(value.shape)}"
                )
            state[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    g_net.load_state_dict(state)
    g_net.eval()
    return g_net


# --------------------------------------------------------------------------------------------------------
# Sample quality
# --------------------------------------------------------------------------------------------------------


def to_digit_28(images: np.ndarray) -> np.ndarray:
    """Generator outputs (N x 3 x S x S in [-1, 1]) -> the classifiers' input (N x 1 x 28 x 28 in [0, 1]):
    the brightest channel, mapped to [0, 1], resized bilinearly (antialiased)."""
    torch = _torch()
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    grey = ((x.max(dim=1, keepdim=True).values + 1.0) / 2.0).clamp(0.0, 1.0)
    small = torch.nn.functional.interpolate(grey, size=(28, 28), mode="bilinear", antialias=True)
    return small.clamp(0.0, 1.0).numpy()


@dataclass(frozen=True)
class Quality:
    """How the classifier sees N images."""

    images: int
    recognised: int  # top class probability >= CONFIDENCE
    share: float
    classes: list[int]  # recognised images per digit 0..9
    mean_confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "recognised": self.recognised,
            "share": self.share,
            "classes": self.classes,
            "mean_confidence": self.mean_confidence,
        }


def _probabilities(classifier: nn.Module, images: np.ndarray) -> np.ndarray:
    torch = _torch()
    x = images if images.shape[1:] == (1, 28, 28) else to_digit_28(images)
    with torch.no_grad():
        return torch.softmax(classifier(torch.from_numpy(np.ascontiguousarray(x))), dim=1).numpy()


def verdicts(classifier: nn.Module, images: np.ndarray, threshold: float = CONFIDENCE) -> np.ndarray:
    """Per image: the class the classifier is sure of (top probability >= threshold), else -1."""
    p = _probabilities(classifier, images)
    return np.where(p.max(axis=1) >= threshold, p.argmax(axis=1), -1)


def quality(classifier: nn.Module, images: np.ndarray, threshold: float = CONFIDENCE) -> Quality:
    """The share of `images` (generator outputs, or 28 x 28 digits already) the classifier is sure of."""
    p = _probabilities(classifier, images)
    top, cls = p.max(axis=1), p.argmax(axis=1)
    sure = top >= threshold
    counts = np.bincount(cls[sure], minlength=10)
    n = len(images)
    return Quality(
        n, int(sure.sum()), round(float(sure.mean()), 4), counts.tolist(), round(float(top.mean()), 4)
    )


def generate(g_net: nn.Module, z: np.ndarray, batch: int = 64) -> np.ndarray:
    """The generator's outputs for latents z (N x 100 x 1 x 1), in eval mode, in batches."""
    torch = _torch()
    out = []
    with torch.no_grad():
        for i in range(0, len(z), batch):
            out.append(g_net(torch.from_numpy(np.ascontiguousarray(z[i : i + batch]))).numpy())
    return np.concatenate(out)


def fresh_latents(n: int, seed: int = MEASURE_SEED) -> np.ndarray:
    """n latents N(0, 1) (n x 100 x 1 x 1 float32) from their own seeded stream."""
    torch = _torch()
    return torch.randn(n, NZ, 1, 1, generator=torch.Generator().manual_seed(seed)).numpy()


def real_digits(size: int, n: int, seed: int = MEASURE_SEED) -> np.ndarray:
    """The first n digits of the classifiers' test split (`models.load_digits_28`'s split, which they never
    trained on) as the generator's training data looks: at size x size, tinted (seeded), in [-1, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from mlkit.models import DIGITS_SEED

    torch = _torch()
    y = load_digits().target
    _, test = train_test_split(
        np.arange(len(y)), test_size=0.25, random_state=DIGITS_SEED % (2**31), stratify=y
    )
    ink = torch.from_numpy(digits_at(size)[test[:n]])
    return tint(ink, torch.Generator().manual_seed(seed)).numpy()


def measure(
    g_net: nn.Module, n: int = 256, classifier: str = "lenet", latents: np.ndarray | None = None
) -> Quality:
    """`quality` of the generator's images for n fresh latents (or the given ones), as seen by the trained
    classifier `classifier` ("lenet" or "mnist-mlp")."""
    from mlkit.models import trained_classifier

    z = fresh_latents(n) if latents is None else latents
    return quality(trained_classifier(classifier)[0], generate(g_net, z))
