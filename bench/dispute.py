"""A whole MNIST dispute on a real anvil node: wall time, transactions, gas, the prover's time per round.

Starts anvil (the npm Foundry binary, `scripts/anvil`) on a free port, deploys every contract, and plays the
two dispute scenarios of `rollml demo` with the real agents: a dishonest prover posting a wrong digit
against the honest challenger, and a dishonest challenger disputing the honest node's correct result. The
demo's node posts split claims (its default): each game bisects MNIST's 6 node executions, the proposer
opens the disputed one, and the bottom game bisects that execution's VM run (16-ary dissection) down to a
one-step proof in MIPS.sol. Printed next to the targets and opML's MNIST challenge:

- the game: rounds, moves and their gas (challenge, dissections, picks, the step; preimage loads emit no
  event and are counted in the scenario's figures, not the game's);
- the scenario: every transaction of it (request, posts, the game, finalize, withdrawals), their gas, and
  the wall time from the request to the finalized correct result;
- the proposer's answer time per round (computing its 15 state hashes and sending the dissection).

    python3 bench/dispute.py            # a table
    python3 bench/dispute.py --json     # one JSON object

With `--model NAME` (mnist-mlp, gpt2-tiny, dcgan128, gpt2) it measures a split dispute instead
(docs/protocol.md, "Split game"): a dishonest node (`split=True`) posts states with a wrong tensor in the
middle of the schedule, the honest challenger re-checks natively and wins the top level over the states, the
node opens the leaf and loses the node guest's VM game; an honest node then serves the request. One JSON
object (`--json`) with native_s, post_s (the node's computation before its post), recheck_s, top_rounds,
bottom_rounds, bottom_steps, txs and gas (the game's), dispute_s (challenge to resolution, wall), honest_won,
peak_rss_mb (the agents run in this process: the peak of either), next to the anchors of
/work/shared/anchors.md.

    python3 bench/dispute.py --model gpt2-tiny --json
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

from rollml.core.chain import Chain  # noqa: E402
from rollml.core.devnet import Anvil, anvil_missing  # noqa: E402
from rollml.demo import Demo, Scenario, timeline_logging  # noqa: E402

TARGETS = {"seconds": 30.0, "gas": 2_000_000}
SPLIT_TARGETS = {
    "post_over_native": 2.0,
    "recheck_over_native": 2.0,
    "gpt2_dispute_s": 300,
    "gpt2_gas": 3_000_000,
}
SPLIT_ANCHORS = {
    "opml_mnist_gas": "9-10M over ~70 txs (phases not linked)",
    "rollml_vm_mnist_scenario_gas": "1.4-1.5M (whole-program claim, before issue 13)",
    "rollml_vm_mnist_to_post_s": 0.073,
    "gpt2_vm_s_per_token": "46-54 (whole-program claim: the VM before posting)",
}
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
    t = Table(title="MNIST dispute on anvil (split claims, 16-ary dissection)")
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


def split_dispute(url: str, name: str, console: Console) -> dict[str, Any]:
    """One split dispute of model `name` on the chain at `url` (see the module docstring)."""
    import resource
    import time

    from mlkit import models
    from mlkit.guest import run_native, run_states
    from rollml.agent.reads import game_report
    from rollml.core.dispute import GameStatus
    from rollml.core.execution import Tamper, TamperKind
    from rollml.core.sdk import game_status
    from rollml.core.split import split_execution, split_verify
    from rollml.core.store import JobState
    from rollml.world import World

    exp = models.reference(name)
    model, payload = exp.model, models.example_payload(exp)
    console.print(f"{name}: {len(model) / 1e6:.1f} MB model")
    t0 = time.perf_counter()
    run_native(model, payload)
    native_s = time.perf_counter() - t0
    n = len(run_states(model, payload))
    tamper = Tamper(TamperKind.TENSOR, at=max(1, n // 2))
    t0 = time.perf_counter()
    honest = split_execution(model, payload).claim  # the honest node's work before its post
    post_s = time.perf_counter() - t0
    claim = split_execution(model, payload, tamper).claim
    t0 = time.perf_counter()
    correct, _ = split_verify(model, payload, claim.final_hash, claim.steps, claim.output_hash)
    recheck_s = time.perf_counter() - t0
    assert not correct and honest.final_hash != claim.final_hash

    chain = Chain.connect(url)
    with tempfile.TemporaryDirectory(prefix="rollml-bench-") as tmp:
        world = World.create(chain, Path(tmp), {name: model})
        bad = world.node(2, "bad", tamper=tamper, split=True)
        node = world.node(1, "node", split=True)
        challenger = world.challenger(3, "challenger")
        rid = world.request(model, payload)
        bad.tick()
        world.play([bad, challenger], lambda: bool(world.events("ResultChallenged")), max_ticks=50)
        gid = int(world.events("ResultChallenged")[0]["gameId"])
        t0 = time.perf_counter()

        def resolved() -> bool:
            return game_status(world.chain, world.contracts, gid) != GameStatus.ACTIVE

        world.play([bad, challenger], resolved, max_ticks=2000)
        dispute_s = time.perf_counter() - t0

        def served() -> bool:
            job = node.store.job(rid)
            return job is not None and job.state == JobState.FINALIZED

        world.play([bad, challenger, node], served, max_ticks=400)
        report = game_report(world.chain, world.contracts, gid, world.deployment.block)
        (opened,) = world.chain.events(world.contracts.game, "Opened", world.deployment.block, gameId=gid)
        for agent in (bad, node, challenger):
            agent.close()
    return {
        "model": name,
        "executions": n,
        "lie_at": tamper.at,
        "native_s": native_s,
        "post_s": post_s,
        "recheck_s": recheck_s,
        "top_rounds": report.top_rounds,
        "bottom_rounds": report.bottom_rounds,
        "bottom_steps": int(opened["args"]["bottomSteps"]),
        "txs": len(report.txs),
        "gas": report.gas,
        "dispute_s": dispute_s,
        "honest_won": report.status.name == "CHALLENGER_WON",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "targets": SPLIT_TARGETS,
        "anchors": SPLIT_ANCHORS,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--model", help="a split dispute of this reference model (mnist-mlp, gpt2-tiny, dcgan128, gpt2)"
    )
    args = ap.parse_args()
    missing = anvil_missing()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    if args.model is not None:
        from mlkit.models import REFERENCE_MODELS

        if args.model not in REFERENCE_MODELS:
            print(
                f"error: unknown model {args.model!r} (one of {', '.join(REFERENCE_MODELS)})", file=sys.stderr
            )
            return 2
        console = Console(stderr=True, quiet=args.json)
        with Anvil() as anvil:
            out = split_dispute(anvil.url, args.model, console)
        if args.json:
            print(json.dumps(out))
        else:
            Console().print_json(json.dumps(out))
        return 0 if out["honest_won"] else 1
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
