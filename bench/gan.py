"""Sample quality of the DCGAN reference generators, measured, not eyeballed.

    python3 bench/gan.py                       # dcgan32 and dcgan128, 256 images each (~1-2 minutes)
    python3 bench/gan.py --models dcgan32 --json

An image is *recognised* when the trained digit classifier (LeNet, test accuracy ~98% on scikit-learn's
digits; the MLP is reported too) gives one class a probability >= 0.9 to it, converted as the classifiers'
inputs are made (the brightest channel, mapped to [0, 1], resized to 28 x 28; `mlkit.gan.to_digit_28`).
Per generator, the share of recognised images among 256:

- `trained`: the committed weights on 256 fresh latents (N(0, 1), a seeded stream training never drew from);
- `nft`: the committed weights on the latents `GanNFT.latentInput` gives seeds 0..255 (the NFTs themselves);
- `blend`: on the GanNFT blends of seeds (2k, 2k+1) at weight 0.5 (the children of `GanNFT.blend`);
- `untrained`: the seeded random initialisation of the same architecture, on the fresh latents;
- `real`: 256 real digits of the classifiers' test split at the generator's size, tinted as in training.

`native_agrees` checks the first 16 `nft` images through the mlkit runtime (native build, the bytes the
market serves): the classifier's verdicts (class and recognised or not) must equal torch's. Target: the
trained share >= 70% (issue 16). There is no peer anchor for this figure (anchors.md lists none).

Measured on the development machine (mlkit/weights as committed; 256 images each; ~80 s per generator):

| generator, judge | trained | nft | blend | untrained | real |
|---|---:|---:|---:|---:|---:|
| dcgan32, LeNet | 73.8% | 75.4% | 66.4% | 0.0% | 96.5% |
| dcgan128, LeNet | 64.1% | 62.5% | 59.0% | 0.0% | 96.5% |
| dcgan32, MLP | 59.8% | 61.3% | 53.1% | 100% (all "4") | 89.8% |
| dcgan128, MLP | 44.9% | 46.9% | 40.2% | 100% (all "4") | 89.5% |

LeNet is the judge: the MLP is sure of noise (it calls every untrained image a 4 with p >= 0.9), so its
shares say little. dcgan32 meets the target; dcgan128 (800 training steps, fewer channels) does not yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from mlkit import gan, models  # noqa: E402
from rollml.core.gan_nft import WEIGHT_ONE, blend_latent, latent_array, seed_latent  # noqa: E402

TARGET_SHARE = 0.70
N_IMAGES = 256
NATIVE_CHECK = 16
CLASSIFIERS = ("lenet", "mnist-mlp")


def nft_latents(n: int) -> np.ndarray:
    """The latents of GanNFT seeds 0 .. n-1 (the on-chain rule), n x 100 x 1 x 1."""
    return np.concatenate([latent_array(seed_latent(s)) for s in range(n)])


def blend_latents(n: int) -> np.ndarray:
    """GanNFT blends of the seeds (2k, 2k+1) at weight 1/2, k = 0 .. n-1."""
    half = WEIGHT_ONE // 2
    return np.concatenate(
        [latent_array(blend_latent(seed_latent(2 * k), seed_latent(2 * k + 1), half)) for k in range(n)]
    )


def native_agrees(name: str, generator: Any, latents: np.ndarray, classifier: Any) -> bool:
    """The classifier's verdicts on mlkit's native outputs equal those on torch's, image by image."""
    from mlkit import native

    model = models.reference_model(name)
    ours = np.concatenate([native.run_arrays(model, [z[None]])[0] for z in latents])
    theirs = gan.generate(generator, latents)
    a, b = gan.verdicts(classifier, ours), gan.verdicts(classifier, theirs)
    return bool(np.array_equal(a, b))


def bench_model(name: str, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    trained = models.dcgan_generator(name)
    untrained = models.dcgan_generator(name, trained=False)
    size = gan.CONFIGS[name].size
    fresh, nft, blends = gan.fresh_latents(n), nft_latents(n), blend_latents(n)
    images = {
        "trained": gan.generate(trained, fresh),
        "nft": gan.generate(trained, nft),
        "blend": gan.generate(trained, blends),
        "untrained": gan.generate(untrained, fresh),
        "real": gan.real_digits(size, n),
    }
    result: dict[str, Any] = {
        "name": name,
        "images": n,
        "weights_bytes": gan.weights_path(name).stat().st_size,
    }
    for clf_name in CLASSIFIERS:
        clf = models.trained_classifier(clf_name)[0]
        result[clf_name] = {kind: gan.quality(clf, x).as_dict() for kind, x in images.items()}
    lenet = models.trained_classifier("lenet")[0]
    result["native_agrees"] = native_agrees(name, trained, nft[:NATIVE_CHECK], lenet)
    result["meets_target"] = result["lenet"]["trained"]["share"] >= TARGET_SHARE
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="dcgan32,dcgan128", help="comma-separated generators")
    parser.add_argument("--images", type=int, default=N_IMAGES, help="images per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in gan.CONFIGS]
    if unknown:
        print(
            f"error: unknown generator {unknown[0]!r}; expected one of {', '.join(gan.CONFIGS)}",
            file=sys.stderr,
        )
        return 2
    if args.images < NATIVE_CHECK:
        print(f"error: --images must be at least {NATIVE_CHECK}", file=sys.stderr)
        return 2
    console = Console(stderr=True, quiet=args.json)
    results = []
    for name in names:
        with console.status(f"measuring {name}"):
            results.append(bench_model(name, args.images))
    report = {"target_share": TARGET_SHARE, "confidence": gan.CONFIDENCE, "models": results}
    if args.json:
        print(json.dumps(report))
        return 0
    for clf_name in CLASSIFIERS:
        table = Table(title=f"share of {args.images} images {clf_name} recognises with p >= {gan.CONFIDENCE}")
        for col in ("generator", "trained", "nft", "blend", "untrained", "real", "target"):
            table.add_column(col, justify="left" if col == "generator" else "right")
        for r in results:
            q = r[clf_name]
            table.add_row(
                r["name"],
                *(f"{q[k]['share']:.1%}" for k in ("trained", "nft", "blend", "untrained", "real")),
                f">= {TARGET_SHARE:.0%}" if clf_name == "lenet" else "",
            )
        Console().print(table)
    for r in results:
        per_digit = r["lenet"]["trained"]["classes"]
        Console().print(
            f"{r['name']}: recognised per digit {per_digit}; "
            f"native verdicts equal torch's: {r['native_agrees']}; "
            f"weights {r['weights_bytes']:,} bytes; {r['seconds']} s",
            highlight=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
