"""Settings of the commands from three places, the first that has one winning: the command-line flag, the
environment variable, the TOML config file (`--config FILE` or `$ROLLML_CONFIG`).

    # rollml.toml
    rpc = "http://127.0.0.1:8545"
    deployment = "out/devnet.json"
    key = "keys/operator.key"
    [node]                  # only for `rollml node` (a [challenger] table for `rollml challenger`)
    models = "models/"
    http = "127.0.0.1:9100"

Relative paths in the file are relative to the file's folder. Unknown keys are an error (a typo must not be
silently ignored).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollml.cli.common import CliError

ENV = {
    "rpc": "ROLLML_RPC",
    "key": "ROLLML_KEY",
    "deployment": "ROLLML_DEPLOYMENT",
    "models": "ROLLML_MODELS",
    "db": "ROLLML_DB",
    "http": "ROLLML_HTTP",
    "password_env": "ROLLML_PASSWORD_ENV",
}
CONFIG_ENV = "ROLLML_CONFIG"
PATHS = ("key", "deployment", "models", "db")  # resolved against the config file's folder
SECTIONS = ("node", "challenger")


@dataclass
class Settings:
    """The config file's values for one command (its table over the top level) and the environment."""

    file: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def load(cls, path: Path | None, section: str | None = None) -> Settings:
        """Read `path` (or `$ROLLML_CONFIG`; no file: environment only); CliError for an unreadable or
        malformed file or an unknown key."""
        environ = dict(os.environ)
        if path is None and environ.get(CONFIG_ENV):
            path = Path(environ[CONFIG_ENV])
        if path is None:
            return cls(None, {}, environ)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise CliError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise CliError(f"{path}: not valid TOML: {exc}") from None
        values = {k: v for k, v in data.items() if k not in SECTIONS}
        table = data.get(section, {}) if section else {}
        if not isinstance(table, dict):
            raise CliError(f"{path}: [{section}] must be a table")
        for where, part in (("", values), (f"[{section}] ", table)):
            unknown = sorted(set(part) - set(ENV))
            if unknown:
                raise CliError(f"{path}: unknown key {where}{unknown[0]!r}; known: {', '.join(ENV)}")
        values.update(table)
        for key in PATHS:
            if key in values:
                values[key] = str(path.parent / Path(str(values[key])).expanduser())
        return cls(path, values, environ)

    def get(self, name: str, flag: Any, default: Any = None) -> Any:
        """The flag's value if given, else the environment's, else the file's, else `default`."""
        if flag is not None:
            return flag
        if self.environ.get(ENV[name]):
            return self.environ[ENV[name]]
        if name in self.values:
            return self.values[name]
        return default

    def path(self, name: str, flag: Path | None, default: Path | None = None) -> Path | None:
        value = self.get(name, flag, default)
        return None if value is None else Path(value)

    def need(self, name: str, flag: Any) -> Any:
        """`get` for a setting without a default: CliError naming the three places when none has it."""
        value = self.get(name, flag)
        if value is None or value == "":
            option = "--" + name.replace("_", "-")
            where = f" or {name} in {self.file}" if self.file else f" or {name} in a --config file"
            raise CliError(f"no {option}: pass {option}, set ${ENV[name]}{where}")
        return value
