"""The `rollml` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rollml import __version__
from rollml.cli import agents as agentcli
from rollml.cli import chain as chaincli
from rollml.cli import explorer as explorercli
from rollml.cli.model import app as model_app
from rollml.cli.train import app as train_app
from rollml.cli.vm import app as vm_app

app = typer.Typer(help="rollml: optimistic-rollup ML inference with fraud proofs.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(vm_app, name="vm")
app.add_typer(train_app, name="train")
chaincli.attach(app, model_app)
agentcli.attach(app)
explorercli.attach(app)
console = Console()


@app.command()
def version() -> None:
    """Print the rollml version."""
    console.print(__version__)


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Check every tool the tests need; exit 0 only when all are present."""
    from rollml.cli.doctor import run_checks

    checks = run_checks()
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.__dict__ for c in checks]}))
    else:
        table = Table(show_header=False, box=None)
        for c in checks:  # names and fixes are plain text: `pip install -e '.[dev]'` is no markup
            table.add_row("[green]ok[/]" if c.ok else "[red]missing[/]", Text(c.name), Text(c.detail))
        console.print(table)
        console.print("[green]all tools present[/]" if ok else "[red]some tools are missing[/]")
    raise typer.Exit(0 if ok else 1)


@app.command()
def demo(
    rpc: Annotated[
        str | None, typer.Option("--rpc", help="JSON-RPC endpoint (default: an in-process py-evm chain).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the GAN NFT image is written.")] = Path(
        "out/demo"
    ),
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Play only this scenario (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Deploy everything and play the scenarios: honest (then a blend of two GAN NFTs), dishonest prover,
    dishonest challenger, a text request, a verifiable training run."""
    from rollml.core.chain import ChainError
    from rollml.demo import SCENARIOS, run

    only = only or []
    unknown = [o for o in only if o not in {name for name, _, _ in SCENARIOS}]
    if unknown:
        names = ", ".join(name for name, _, _ in SCENARIOS)
        print(f"error: unknown scenario {unknown[0]!r}; expected one of {names}", file=sys.stderr)
        raise typer.Exit(2)
    try:
        result = run(Console(quiet=as_json, stderr=True), rpc, out, tuple(only))
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(result))
    raise typer.Exit(0 if result["honest_won_all"] else 1)
