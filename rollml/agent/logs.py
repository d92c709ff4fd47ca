"""Agent logs: one `event=<name> key=value ...` line per event (bytes as 0x hex, values with spaces quoted),
easy to grep and to parse; structured handlers get the fields too (`rollml.cli.agents.JsonFormatter`)."""

from __future__ import annotations

import logging


def _fmt(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value)
    return f'"{text}"' if not text or any(c in text for c in ' ="') else text


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log `event=<event> k=v ...` (bytes as 0x hex, values with spaces quoted): easy to grep and parse."""
    if logger.isEnabledFor(level):
        parts = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        extra = {"event": event, "fields": fields}  # for structured handlers (JSON logs)
        logger.log(level, "event=%s%s", event, " " + parts if parts else "", extra=extra)
