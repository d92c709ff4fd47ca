"""The trained DCGAN generators (mlkit/gan.py): the committed weights load into the reference models, the
training runs a few steps deterministically from its seed, the weights file round-trips exactly, and the
sample-quality measurement tells real digits from noise. The quality figures themselves (trained /
untrained / real shares) are measured by bench/gan.py, not here; native == VM runs are in test_model_vm.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlkit import gan, models, native  # noqa: E402
from mlkit.export import export_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GENERATORS = ["dcgan32", "dcgan128"]


@pytest.mark.parametrize("name", GENERATORS)
def test_committed_weights_load_into_the_reference_model(name: str) -> None:
    path = gan.weights_path(name)
    assert path.is_file(), f"{path} is committed"
    trained = models.dcgan_generator(name)
    untrained = models.dcgan_generator(name, trained=False)
    assert not trained.training
    for (key, a), b in zip(trained.state_dict().items(), untrained.state_dict().values(), strict=True):
        if a.dtype.is_floating_point and a.numel() > 1:
            assert not torch.equal(a, b), f"{name}.{key} is still the seeded initialisation"
    assert path.stat().st_size < 2_500_000, "the committed weights stay small"
    assert models.reference(name).notes == gan.weights_note(name)


@pytest.mark.parametrize("name", GENERATORS)
def test_trained_generator_draws_the_same_image_in_mlkit(name: str) -> None:
    gen = models.dcgan_generator(name)
    z = models.latent(3)
    (image,) = native.run_arrays(export_module(gen, torch.from_numpy(z)), [z])
    with torch.no_grad():
        ref = gen(torch.from_numpy(z)).numpy()
    assert np.abs(image - ref).max() <= 1e-4
    assert image.min() < -0.9 and image.max() > 0.5, "a tinted digit on black, not uniform noise"


@pytest.mark.parametrize("name", GENERATORS)
def test_training_is_seeded_and_the_weights_file_round_trips(tmp_path: Path, name: str) -> None:
    runs = [gan.train_gan(name, steps=2, seed=5) for _ in range(2)]
    (g1, stats), (g2, _) = runs
    assert stats.steps == 2 and len(stats.d_loss) == 1 and np.isfinite(stats.d_loss + stats.g_loss).all()
    for a, b in zip(g1.state_dict().values(), g2.state_dict().values(), strict=True):
        assert torch.equal(a, b), "same seed, same weights"
    path = gan.save_weights(g1, tmp_path / f"{name}.npz")
    loaded = gan.load_weights(models.GENERATORS[name](), path)
    z = gan.fresh_latents(4)
    assert np.array_equal(gan.generate(loaded, z), gan.generate(g1, z)), "the file holds exactly the model"
    other = gan.train_gan(name, steps=2, seed=6)[0]
    assert not torch.equal(next(iter(other.parameters())), next(iter(g1.parameters())))


def test_save_weights_refuses_unquantised_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not quantised"):
        gan.save_weights(models.dcgan_generator("dcgan32", trained=False), tmp_path / "x.npz")


def test_load_weights_rejects_a_file_of_another_architecture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dcgan128\.npz: 3\.weight has shape"):
        gan.load_weights(models.GENERATORS["dcgan32"](), gan.weights_path("dcgan128"))
    with pytest.raises(ValueError, match=r"dcgan32\.npz: no tensor '0\.bias'"):  # dcgan32's dense has none
        gan.load_weights(models.GENERATORS["dcgan128"](), gan.weights_path("dcgan32"))


def test_quality_tells_real_digits_from_noise() -> None:
    clf = models.trained_classifier("lenet")[0]
    real = gan.quality(clf, gan.real_digits(32, 128))
    assert real.share >= 0.9 and min(real.classes) > 0
    noise = np.random.default_rng(0).uniform(-1, 1, (128, 3, 32, 32)).astype(np.float32)
    assert gan.quality(clf, noise).share < real.share - 0.5
    v = gan.verdicts(clf, gan.real_digits(32, 16))
    assert v.shape == (16,) and set(v.tolist()) <= set(range(-1, 10))


def test_real_digits_are_the_classifiers_test_split() -> None:
    x = gan.to_digit_28(gan.real_digits(28, 450))
    assert np.abs(x - models.load_digits_28().x_test).max() < 1e-6


def test_train_script_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "g.npz"
    cmd = [sys.executable, "scripts/train_dcgan.py", "dcgan32", "--steps", "2", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    report = json.loads(proc.stdout)
    assert report["steps"] == 2 and report["bytes"] == out.stat().st_size
    assert 0.0 <= report["quality"]["share"] <= 1.0 and report["quality"]["images"] == 256
    bad = subprocess.run([*cmd[:3], "--steps", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--steps must be at least 1" in bad.stderr
