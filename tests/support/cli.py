"""What every test of a `rollml` command checks about its failures."""

from __future__ import annotations

from typing import Any


def assert_one_line_error(result: Any) -> None:
    """A CliRunner result that failed with exactly one `error: ...` line and no traceback."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = result.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
