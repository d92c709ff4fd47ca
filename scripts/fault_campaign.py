#!/usr/bin/env python3
"""The fault campaign: N random faults played by the real agents on a real chain (rollml/harness/campaign.py).

    python3 scripts/fault_campaign.py [--faults N] [--seed S] [--models mnist-mlp,lenet,gpt2-tiny]
                                      [--kinds KIND,...|inference|split|training] [--rpc URL|embedded]
                                      [--json]

Each fault runs on its own deployment: a dishonest prover or challenger (VM tampering at a random step,
wrong outputs, wrong step counts, stalls, malformed leaf proofs, fabricated preimage parts; on split claims
a wrong tensor early, late or in the KV cache, a wrong output, a lying challenger) or, with the
training kinds, a training run with a lying worker or fraud-proofer (wrong update, stalled lease, withheld
weights, lying fraud-proofer: rollml/harness/training_faults.py), the honest agents answering, and the
funds checked after the game. Prints a progress bar, one table row per fault and,
as the last line, `faults: N injected, N caught, N honest wins, funds conserved: yes|no`. With --json the
report is one JSON object on stdout and the table goes to stderr. Exit status 0 only when every fault was
caught, won by the honest side and the funds were conserved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from mlkit.models import REFERENCE_MODELS  # noqa: E402
from rollml.core.chain import Chain, ChainError  # noqa: E402
from rollml.harness.campaign import (  # noqa: E402
    SPLIT_KINDS,
    CampaignReport,
    FaultKind,
    FaultResult,
    FaultSpec,
    TrainingFaultKind,
    plan_faults,
    run_campaign,
)

DEFAULT_MODELS = "mnist-mlp,lenet,gpt2-tiny"
NUMERIC = ("#", "rounds", "gas", "s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--faults", type=int, default=50, help="how many faults to inject (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="the plan's seed: the same seed, the same faults")
    parser.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})"
    )
    parser.add_argument(
        "--kinds",
        default="",
        help="comma-separated fault kinds; 'inference' (the default), 'split' (its split-claim kinds) or"
        " 'training' name all of a sort",
    )
    parser.add_argument("--rpc", default="embedded", help="a JSON-RPC url, or 'embedded' (in-process py-evm)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.faults < 1:
        parser.error("--faults must be at least 1")
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in REFERENCE_MODELS]
    if unknown or not args.models:
        parser.error(
            f"unknown model(s) {', '.join(unknown) or '(none)'}; expected {', '.join(REFERENCE_MODELS)}"
        )
    groups: dict[str, list[FaultKind | TrainingFaultKind]] = {
        "inference": list(FaultKind),
        "split": [k for k in FaultKind if k in SPLIT_KINDS],
        "training": list(TrainingFaultKind),
    }
    kinds: list[FaultKind | TrainingFaultKind] = []
    for name in [k for k in args.kinds.split(",") if k] or ["inference"]:
        if name in groups:
            kinds += groups[name]
        elif name in set(FaultKind):
            kinds.append(FaultKind(name))
        elif name in set(TrainingFaultKind):
            kinds.append(TrainingFaultKind(name))
        else:
            expected = ", ".join(["inference", "training", *FaultKind, *TrainingFaultKind])
            parser.error(f"unknown fault kind {name!r}; expected {expected}")
    args.kinds = list(dict.fromkeys(kinds))
    return args


def fault_table(results: list[FaultResult]) -> Table:
    """One row per fault."""
    table = Table(title="fault campaign")
    for name in (
        "#",
        "kind",
        "model",
        "liar",
        "fault",
        "ended",
        "caught",
        "winner",
        "funds",
        "rounds",
        "gas",
        "s",
    ):
        table.add_column(name, justify="right" if name in NUMERIC else "left", overflow="fold")
    for r in results:
        fault = escape(r.detail or r.error or "")  # "mem[sp]" is not markup
        cells = (r.kind, r.model, r.liar, fault, r.ending or "-", mark(r.caught), r.winner or "-")
        figures = (mark(r.funds_conserved), str(r.rounds), f"{r.gas:,}", f"{r.seconds:.1f}")
        table.add_row(str(r.index), *cells, *figures)
    return table


def mark(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[bold red]NO[/]"


def print_report(out: Console, report: CampaignReport) -> None:
    """The table, what went wrong with any fault that failed, the totals (the summary line comes last)."""
    out.print(fault_table(report.results))
    for r in report.results:
        if not r.ok:
            out.print(f"[bold red]fault {r.index} ({r.kind}):[/]")
            for line in ([r.error] if r.error else []) + r.problems:
                out.print(f"  {line}", markup=False, highlight=False)
    gas = sum(r.gas for r in report.results)
    out.print(
        f"{report.injected} faults in {report.seconds:.1f} s on {report.chain}, {gas:,} gas after deployments"
    )


def console(stderr: bool) -> Console:
    """A console on stdout or stderr; 200 columns when it is not a terminal (CI logs, pipes)."""
    con = Console(stderr=stderr)
    return con if con.is_terminal else Console(stderr=stderr, width=200)


def progress_line(result: FaultResult, total: int) -> str:
    """The line printed as each fault finishes (above the bar; CI logs see it too)."""
    verdict = "[green]caught[/]" if result.ok else "[bold red]FAILED[/]"
    return (
        f"fault {result.index}/{total} {result.kind} on {result.model} ({result.liar} lies): {verdict}, "
        f"{result.winner or 'no winner'}, {result.seconds:.1f} s"
    )


def run_with_progress(chain: Chain, plan: list[FaultSpec], seed: int) -> CampaignReport:
    """The campaign under a progress bar on stderr, one line per finished fault."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as progress:
        task = progress.add_task("fault campaign", total=len(plan))

        def started(spec: FaultSpec) -> None:
            progress.update(task, description=f"fault {spec.index}: {spec.kind} on {spec.model}")

        def finished(result: FaultResult) -> None:
            progress.console.print(progress_line(result, len(plan)), highlight=False)
            progress.advance(task)

        return run_campaign(chain, plan, started, finished, seed=seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = console(stderr=args.json)
    try:
        chain = Chain.embedded() if args.rpc == "embedded" else Chain.connect(args.rpc)
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        plan = plan_faults(args.faults, args.seed, args.models, args.kinds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = run_with_progress(chain, plan, args.seed)
    if args.json:
        print(json.dumps(report.to_json()))
    print_report(out, report)
    print(report.summary(), file=sys.stderr if args.json else sys.stdout, flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
