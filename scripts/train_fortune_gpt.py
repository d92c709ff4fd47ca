#!/usr/bin/env python3
"""Train fortune-gpt, the small GPT that writes fortune cookies (mlkit/fortunes.py), and write its files.

    nice -n 10 python3 scripts/train_fortune_gpt.py            # ~20 minutes on 2 cores -> mlkit/assets/
    python3 scripts/train_fortune_gpt.py --steps 5 --out /tmp/f  # a few steps (what CI runs)
    python3 scripts/train_fortune_gpt.py --remeasure             # after a guest change: the card's VM steps

Writes fortune-gpt.mlkit, fortune-gpt.tokenizer.json and fortune-gpt.card.json (validation loss, samples,
training settings and history, and the VM steps of the example generation unless --no-vm). The corpus is
Debian's `fortunes` package (installed by scripts/bootstrap.sh). Training is seeded and deterministic for a
given torch build and thread count (--threads, default 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: E402

from mlkit import fortunes  # noqa: E402


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    default = fortunes.TextTrainConfig()
    parser.add_argument("--out", type=Path, default=fortunes.ASSETS_DIR, help="directory to write into")
    parser.add_argument("--steps", type=int, default=default.steps, help="optimizer steps")
    parser.add_argument("--threads", type=int, default=default.threads, help="torch threads")
    parser.add_argument("--no-vm", action="store_true", help="do not measure the VM steps of the example")
    parser.add_argument("--json", action="store_true", help="print the card as one JSON object")
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="no training: measure the VM steps of the model in --out again",
    )
    args = parser.parse_args()
    if args.remeasure:
        facts = fortunes.remeasure(args.out)
        print(json.dumps(facts) if args.json else f"VM steps: {facts['vm_steps']:,} ({facts['vm_program']})")
        return 0
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    eval_every = default.eval_every if args.steps >= 2 * default.eval_every else args.steps
    cfg = dataclasses.replace(default, steps=args.steps, threads=args.threads, eval_every=eval_every)
    if args.steps < default.warmup:
        cfg = dataclasses.replace(cfg, warmup=max(1, args.steps // 2))
    console = Console(stderr=True, quiet=args.json)
    try:
        corpus = fortunes.load_corpus()
    except fortunes.CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with Progress(
        TextColumn("training"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps, loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("train", total=cfg.steps, loss=float("nan"))
        trained = fortunes.train(
            cfg, corpus, lambda step, total, loss: progress.update(task, completed=step, loss=loss)
        )
    with console.status("exporting, sampling" + ("" if args.no_vm else " and measuring the VM steps")):
        paths = fortunes.write(trained, args.out, measure_vm=not args.no_vm)
    card = json.loads(paths["card"].read_text())
    if args.json:
        print(json.dumps(card))
        return 0
    console.print(
        f"trained {cfg.steps} steps in {trained.seconds:.0f} s ({trained.cpu_seconds:.0f} s CPU): "
        f"validation loss {trained.val_loss:.4f} nats/token ({trained.val_bits_per_char:.3f} bits/char), "
        f"train loss {trained.train_loss:.4f}"
    )
    for h in card["training"]["history"]:
        console.print(f"  step {h['step']:>5}: train {h['train_loss']:.4f}  val {h['val_loss']:.4f}")
    for s in card["samples"]:
        console.print(
            f"  sample {s['prompt']!r}: {s['prompt']}{s['text']!r}", soft_wrap=True, highlight=False
        )
    if "vm_steps" in card:
        console.print(f"  VM steps of the example ({card['workload']}): {card['vm_steps']:,}")
    for what, path in paths.items():
        console.print(f"wrote {what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
