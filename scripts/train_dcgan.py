#!/usr/bin/env python3
"""Train a DCGAN reference generator on scikit-learn's digits and write its weights (mlkit/gan.py).

    nice -n 10 python3 scripts/train_dcgan.py dcgan32     # writes mlkit/weights/dcgan32.npz
    python3 scripts/train_dcgan.py dcgan128 --steps 20 --out /tmp/g.npz --json

Seeded (--seed, default mlkit.gan.GAN_SEED) and deterministic on a fixed number of threads (--threads,
default 1: one thread is bit-for-bit reproducible on the same torch build and robust on a shared machine).
At the end it measures the trained generator as bench/gan.py does (the share of 256 images the trained
LeNet recognises with probability >= 0.9; with --measure-every N also every N steps, which does not change
the result) and prints the training time (wall and CPU, measurements left out) and the file's size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: E402

from mlkit import gan  # noqa: E402


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("name", choices=sorted(gan.CONFIGS), help="the generator to train")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the model's config)"
    )
    parser.add_argument("--seed", type=int, default=gan.GAN_SEED)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--out", type=Path, default=None, help="weights file (default: mlkit/weights/NAME.npz)"
    )
    parser.add_argument("--no-measure", action="store_true", help="skip the sample-quality measurement")
    parser.add_argument("--measure-every", type=int, default=0, help="also measure every N steps")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.measure_every < 0:
        parser.error("--measure-every must be positive (or 0: only at the end)")
    console = Console(stderr=True, quiet=args.json)
    out = args.out or gan.weights_path(args.name)
    steps = args.steps or gan.CONFIGS[args.name].steps
    t0 = time.perf_counter()
    checkpoints: list[dict[str, object]] = []
    with Progress(
        TextColumn(f"training {args.name}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps  D {task.fields[d]:.3f}  G {task.fields[g]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=args.json,
        transient=True,
    ) as bar:
        task = bar.add_task("train", total=steps, d=0.0, g=0.0)

        def progress(step: int, total: int, d_loss: float, g_loss: float) -> None:
            bar.update(task, completed=step, d=d_loss, g=g_loss)

        def measure(step: int, generator: object) -> None:
            q = gan.measure(generator).share  # type: ignore[arg-type]
            checkpoints.append({"step": step, "share": q})
            console.print(f"step {step}: {q:.1%} of 256 images recognised", highlight=False)

        every = args.measure_every or steps
        hook = measure if args.measure_every and not args.no_measure else None
        generator, stats = gan.train_gan(args.name, steps, args.seed, progress, args.threads, hook, every)
    gan.save_weights(generator, out)
    report = {
        "name": args.name,
        "file": str(out),
        "bytes": out.stat().st_size,
        "steps": stats.steps,
        "seed": stats.seed,
        "threads": stats.threads,
        "seconds": stats.seconds,
        "cpu_seconds": stats.cpu_seconds,
        "final_d_loss": stats.d_loss[-1],
        "final_g_loss": stats.g_loss[-1],
    }
    if not args.no_measure:
        with console.status("measuring 256 images with the trained LeNet"):
            report["quality"] = gan.measure(generator).as_dict()
        report["checkpoints"] = checkpoints
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(report))
        return 0
    console.print(
        f"wrote {out} ({report['bytes']:,} bytes): {stats.steps} steps in {stats.seconds:.0f} s "
        f"({report['cpu_seconds']:.0f} s CPU, {stats.threads} thread(s)), "
        f"final losses D {stats.d_loss[-1]:.3f} G {stats.g_loss[-1]:.3f}",
        highlight=False,
    )
    if "quality" in report:
        q = report["quality"]
        console.print(
            f"recognised with p >= {gan.CONFIDENCE}: {q['recognised']}/{q['images']} ({q['share']:.1%}), "
            f"per digit {q['classes']}",
            highlight=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
