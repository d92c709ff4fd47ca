"""The foundation: the `rollml` command, `rollml doctor` and the demo's JSON shape."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from rollml.cli import app
from rollml.cli.doctor import Check, run_checks

runner = CliRunner()


def test_version_matches_package() -> None:
    from rollml import __version__

    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == __version__


def test_doctor_json_lists_every_tool_and_passes_after_bootstrap() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.output)
    names = {c["name"] for c in report["checks"]}
    assert {"mips-linux-gnu-gcc", "qemu-mips", "forge", "anvil", "cast", "torch", "unicorn"} <= names
    missing = [c for c in report["checks"] if not c["ok"]]
    assert missing == [], missing
    assert result.exit_code == 0


def test_doctor_exits_nonzero_and_names_the_fix_when_a_tool_is_missing(monkeypatch) -> None:
    import rollml.cli.doctor as doctor

    real = doctor.run_checks

    def with_missing() -> list[Check]:
        return [*real(), doctor._command("imaginary-tool", ["rollml-no-such-tool", "--version"], "apt-get x")]

    monkeypatch.setattr(doctor, "run_checks", with_missing)
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1
    bad = [c for c in json.loads(result.output)["checks"] if not c["ok"]]
    assert [c["name"] for c in bad] == ["imaginary-tool"]
    assert "fix: apt-get x" in bad[0]["detail"]


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "rollml", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "doctor" in out.stdout


def test_every_check_reports_a_version_when_ok() -> None:
    for c in run_checks():
        assert c.detail, c
