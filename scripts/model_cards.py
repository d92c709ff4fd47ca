#!/usr/bin/env python3
"""The reference models' cards as one table (docs/models.md): architecture, parameters, MACs, VM steps,
dataset and accuracy or loss, dispute cost class.

    python3 scripts/model_cards.py                 # measures the VM steps of every model but GPT-2 124M
    python3 scripts/model_cards.py --measure-all   # also GPT-2 124M (hours)
    python3 scripts/model_cards.py --json          # the cards as one JSON object

VM steps are measured on each model's example input (`mlkit.models.reference`; fortune-gpt's come from its
committed card, measured when it was trained); where a run is not measured the table gives the estimate
MACs x `mlkit.cards.STEPS_PER_MAC`, marked "~". `make model-cards` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from mlkit import models  # noqa: E402
from mlkit.cards import model_card, reference_facts  # noqa: E402
from rollml.core.deploy import DEV_ARITY  # noqa: E402
from rollml.core.dispute import dispute_cost  # noqa: E402

LARGEST = ("gpt2",)  # hours in the VM


def card_of(name: str, measure: bool) -> dict[str, Any]:
    exp = models.reference(name)
    card = model_card(exp.model, reference_facts(exp, measure=measure and name != "fortune-gpt"), name)
    steps = card["vm_steps"] if card["vm_steps"] is not None else card["vm_steps_estimate"]
    card["dispute"] = {
        **asdict(dispute_cost(steps, DEV_ARITY)),
        "steps_measured": card["vm_steps"] is not None,
    }
    return card


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def markdown(cards: list[dict[str, Any]]) -> str:
    rows = [
        "| model | architecture | params | MACs | VM steps | data | accuracy / loss | dispute |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for c in cards:
        w = c["workload"]
        macs = _si(c["macs"]) + (
            f" ({w['prompt_tokens']}+{w.get('generated', w['new_tokens'])} tokens)" if w else ""
        )
        steps = _si(c["vm_steps"]) if c["vm_steps"] is not None else "~" + _si(c["vm_steps_estimate"])
        metrics = ", ".join(f"{k} {v}" for k, v in c["metrics"].items()) or "-"
        d = c["dispute"]
        arch = c["architecture"].split(";")[0]
        data = (c["dataset"] or "-").split(":")[0]
        rows.append(
            f"| {c['file']} | {arch} | {c['params']:,} | {macs} | {steps} | {data} | {metrics} | "
            f"{d['cost_class']}, {d['rounds']} rounds |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--measure-all", action="store_true", help="also run GPT-2 124M in the VM")
    parser.add_argument("--json", action="store_true", help="print the cards as one JSON object")
    args = parser.parse_args()
    console = Console(stderr=True, quiet=args.json)
    cards = []
    for name in models.REFERENCE_MODELS:
        measure = args.measure_all or name not in LARGEST
        with console.status(f"{name}: building" + (" and running it in the VM" if measure else "")):
            cards.append(card_of(name, measure))
    if args.json:
        print(json.dumps({"cards": cards}))
    else:
        print(markdown(cards))
    return 0


if __name__ == "__main__":
    sys.exit(main())
