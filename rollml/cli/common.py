"""What every `rollml` command shares: one-line errors, reports as JSON or plain lines, progress bars.

Every expected failure (a missing or malformed file, an input the model cannot take, a model the runtime
rejects, an RPC error or revert) prints one line `error: ...` on stderr and exits non-zero; no traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console()  # reports (stdout)
err_console = Console(stderr=True)  # progress and notes (stderr: stdout stays parseable)


class CliError(Exception):
    """An expected failure, reported as one line."""


def fail(message: str, code: int = 1) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def errors_as_lines() -> Iterator[None]:
    """Turn the expected exceptions of any command into one `error: ...` line and exit code 1."""
    from mlkit.export import ExportError
    from mlkit.native import MlkitError
    from rollml.core.chain import ChainError
    from rollml.core.devnet import DevnetError

    try:
        yield
    except KeyError as exc:  # an unknown name (a reference model, a scenario)
        msg = exc.args[0] if exc.args else ""
        raise fail(str(msg) or "KeyError") from None
    except (CliError, ChainError, DevnetError, ExportError, MlkitError, ValueError, OSError) as exc:
        raise fail(" ".join(str(exc).split()) or type(exc).__name__) from None


def hex0x(value: bytes) -> str:
    return "0x" + value.hex()


def emit(report: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    """Print a report: one JSON object, or a two-column table of plain lines."""
    if as_json:
        print(json.dumps(report))
        return
    if title:
        console.print(title, highlight=False)
    rows: list[tuple[str, str]] = []
    for key, value in report.items():
        if isinstance(value, dict):
            rows.extend((f"{key}.{sub}", str(item)) for sub, item in value.items())
        else:
            rows.append((key, json.dumps(value) if isinstance(value, list) else str(value)))
    width = max((len(k) for k, _ in rows), default=0)
    for key, shown in rows:  # plain lines, never folded: addresses and ids stay copyable
        console.print(f"  {key:<{width}}  {shown}", highlight=False, soft_wrap=True)


def progress_bar(disabled: bool) -> Progress:
    """A transient progress display on stderr (disabled for --json)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=disabled,
        transient=True,
    )
