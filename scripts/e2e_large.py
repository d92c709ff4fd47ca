#!/usr/bin/env python3
"""Large models end to end through the daemons on anvil (issue 13; rollml/harness/e2e.py).

    python3 scripts/e2e_large.py [--models gpt2,dcgan128] [--faults output,tensor] [--json]

For each model and fault: a dishonest `rollml node --dishonest FAULT` posts a wrong split claim, the honest
`rollml challenger` daemon wins the split game, the honest `rollml node` daemon re-serves the request and
finalizes it with mlkit's native output. Prints each run's figures (rounds at each level, the bottom game's
VM steps, transactions, gas, wall times, each daemon's peak memory) next to the targets; with --json one JSON
object per run on stdout. Exit status 0 only when the honest side won every game and served every request
correctly. GPT-2 124M takes minutes (its model file is built from seeded weights first, ~0.5 GB).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlkit.models import REFERENCE_MODELS  # noqa: E402
from rollml.core.devnet import anvil_missing  # noqa: E402
from rollml.harness import e2e  # noqa: E402

TARGETS = {"gpt2_dispute_s": 300, "gpt2_game_gas": 3_000_000, "peak_rss_mib": 8192}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gpt2,dcgan128", help="reference models, comma-separated")
    ap.add_argument("--faults", default=",".join(e2e.FAULTS), help="dishonest node kinds, comma-separated")
    ap.add_argument("--json", action="store_true", help="one JSON object per run on stdout")
    args = ap.parse_args()
    names = [m for m in args.models.split(",") if m]
    faults = [f for f in args.faults.split(",") if f]
    bad = [m for m in names if m not in REFERENCE_MODELS] + [f for f in faults if f not in e2e.FAULTS]
    if bad:
        print(f"error: unknown model or fault {bad[0]!r}", file=sys.stderr)
        return 2
    missing = anvil_missing()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 1

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    ok = True
    for name in names:
        for fault in faults:
            with tempfile.TemporaryDirectory(prefix="rollml-e2e-") as tmp:
                try:
                    result = e2e.run(name, fault, Path(tmp), log)
                except (RuntimeError, TimeoutError, ValueError) as exc:
                    print(f"error: {name} / {fault}: {exc}", file=sys.stderr)
                    return 1
            ok = ok and result.honest_won and result.served_correctly
            report = {**result.report(), "targets": TARGETS}
            print(json.dumps(report) if args.json else json.dumps(report, indent=1), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
