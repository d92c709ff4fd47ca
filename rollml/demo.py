"""`rollml demo`: the main job, run as far as the project has been built, each stage labelled."""

from __future__ import annotations

from rich.console import Console


def run(console: Console) -> dict[str, object]:
    from rollml.doctor import run_checks

    console.rule("[bold]rollml demo")
    console.print(
        "[yellow]Stage available now: toolchain check.[/] The VM run, the on-chain market and the dispute "
        "scenarios are not built yet (see the open issues); this demo grows with them."
    )
    checks = run_checks()
    for c in checks:
        console.print(f"  {'[green]ok[/]' if c.ok else '[red]missing[/]'} {c.name}: {c.detail}")
    return {"stages": ["toolchain"], "toolchain_ok": all(c.ok for c in checks), "scenarios": []}
