"""A whole MNIST dispute on a real anvil node: wall time, transactions, gas, the prover's time per round.

Starts anvil (the npm Foundry binary, `scripts/anvil`) on a free port, deploys every contract, and plays the
two dispute scenarios of `rollml demo` with the real agents: a dishonest prover posting a wrong digit
against the honest challenger, and a dishonest challenger disputing the honest node's correct result. Each
is a whole game over the ~0.9M-step MNIST MLP run (16-ary dissection, 5 rounds) ending in a one-step proof
in MIPS.sol. Printed next to the targets and opML's MNIST challenge:

- the game: rounds, moves and their gas (challenge, dissections, picks, the step; preimage loads emit no
  event and are counted in the scenario's figures, not the game's);
- the scenario: every transaction of it (request, posts, the game, finalize, withdrawals), their gas, and
  the wall time from the request to the finalized correct result;
- the proposer's answer time per round (computing its 15 state hashes and sending the dissection).

    python3 bench/dispute.py            # a table
    python3 bench/dispute.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from rollml.chain import Chain  # noqa: E402
from rollml.demo import Demo, Scenario, timeline_logging  # noqa: E402
from rollml.devnet import Anvil, anvil_missing  # noqa: E402

TARGETS = {"seconds": 30.0, "gas": 2_000_000}
ANCHORS = {"opml_seconds": 120.0, "opml_gas_min": 9_000_000, "opml_gas_max": 10_000_000, "opml_txs": 70}


def play(console: Console, url: str) -> list[Scenario]:
    chain = Chain.connect(url)
    with tempfile.TemporaryDirectory(prefix="rollml-bench-") as tmp:
        demo = Demo(console, chain, Path(tmp), Path(tmp))
        try:
            with timeline_logging(demo.timeline):
                return [demo.dishonest_prover(), demo.dishonest_challenger()]
        finally:
            demo.close()


def figures(s: Scenario) -> dict[str, Any]:
    (game,) = s.details["games"]
    return {
        "scenario": s.name,
        "honest_won": s.honest_won,
        "rounds": s.rounds,
        "game_moves": game["moves"],
        "game_gas": game["gas"],
        "txs": s.txs,
        "gas": s.gas,
        "seconds": s.seconds,
        "dissect_seconds": s.details["dissect_seconds"],
    }


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="MNIST dispute on anvil (16-ary dissection)")
    for col in ("", *[r["scenario"] for r in rows], "target", "opML"):
        t.add_column(col, justify="right")
    opml_gas = f"{ANCHORS['opml_gas_min'] / 1e6:.0f}-{ANCHORS['opml_gas_max'] / 1e6:.0f}M"
    t.add_row("honest side won", *[str(r["honest_won"]) for r in rows], "yes", "")
    t.add_row("rounds", *[str(r["rounds"]) for r in rows], "", "")
    t.add_row("game moves (txs)", *[str(r["game_moves"]) for r in rows], "", "")
    t.add_row("game gas", *[f"{r['game_gas']:,}" for r in rows], "", "")
    t.add_row("scenario txs", *[str(r["txs"]) for r in rows], "", f"~{ANCHORS['opml_txs']}")
    t.add_row("scenario gas", *[f"{r['gas']:,}" for r in rows], f"< {TARGETS['gas']:,}", opml_gas)
    t.add_row("wall time (s)", *[f"{r['seconds']:.1f}" for r in rows], f"< {TARGETS['seconds']:.0f}", "< 120")
    t.add_row(
        "proposer answer per round (s)",
        *[f"max {max(r['dissect_seconds'], default=0):.2f}" for r in rows],
        "",
        "",
    )
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    missing = anvil_missing()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    console = Console(stderr=True, quiet=args.json)
    with Anvil() as anvil:
        rows = [figures(s) for s in play(console, anvil.url)]
    result = {"scenarios": rows, "targets": TARGETS, "anchors": ANCHORS}
    if args.json:
        print(json.dumps(result))
    else:
        Console().print(table(rows))
    return 0 if all(r["honest_won"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
