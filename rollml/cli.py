"""The `rollml` command line."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from mipsvm.cli import app as vm_app
from mlkit.cli import app as model_app
from rollml import __version__, chaincli

app = typer.Typer(help="rollml: optimistic-rollup ML inference with fraud proofs.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(vm_app, name="vm")
chaincli.attach(app, model_app)
console = Console()


@app.command()
def version() -> None:
    """Print the rollml version."""
    console.print(__version__)


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Check every tool the tests need; exit 0 only when all are present."""
    from rollml.doctor import run_checks

    checks = run_checks()
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.__dict__ for c in checks]}))
    else:
        table = Table(show_header=False, box=None)
        for c in checks:
            table.add_row("[green]ok[/]" if c.ok else "[red]missing[/]", c.name, c.detail)
        console.print(table)
        console.print("[green]all tools present[/]" if ok else "[red]some tools are missing[/]")
    raise typer.Exit(0 if ok else 1)


@app.command()
def demo(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Run the main job as far as it is built, each stage labelled."""
    from rollml.demo import run

    result = run(Console(quiet=as_json))
    if as_json:
        print(json.dumps(result))
