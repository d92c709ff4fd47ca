"""`rollml doctor`: one line per tool the tests need, with its version or the exact fix."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from rollml.core.paths import NPM_BIN, SCRIPTS_DIR

BOOTSTRAP = "make bootstrap-dev"
PYTHON_PACKAGES = (
    *("unicorn", "pyelftools", "pycryptodome", "safe-pysha3", "web3", "eth-tester", "py-evm", "numpy"),
    "prometheus-client",
    *("torch", "onnx", "onnxruntime", "transformers", "scikit-learn", "tokenizers", "safetensors"),
    *("pytest", "hypothesis", "ruff", "mypy"),
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # the version when ok, the fix otherwise


def _command(name: str, cmd: list[str], fix: str, pick: int = 0) -> Check:
    exe = shutil.which(cmd[0])
    if exe is None:
        return Check(name, False, f"not found; fix: {fix}")
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return Check(name, False, f"{exe} did not run ({err}); fix: {fix}")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return Check(name, True, lines[pick] if len(lines) > pick else exe)


def _python_package(dist: str, fix: str) -> Check:
    try:
        return Check(dist, True, importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return Check(dist, False, f"not installed; fix: {fix}")


def _host_c_compiler() -> Check:
    """The host C compiler ($CC, else cc) that mipsvm.native builds the fast VM's hooks with."""
    cc = os.environ.get("CC", "cc")
    fix = "apt-get install gcc"
    if cc != "cc":
        fix = f"install {cc}, or unset CC to use cc ({fix})"
    return _command(f"host C compiler ({cc})", [cc, "--version"], fix)


def _fortunes() -> Check:
    """The fortunes corpus fortune-gpt is trained on (Debian's `fortunes` and `fortunes-min`)."""
    from mlkit.fortunes import CORPUS_FILES, FORTUNES_DIR

    missing = [name for name in CORPUS_FILES if not (FORTUNES_DIR / name).is_file()]
    if missing:
        return Check(
            "fortunes corpus", False, f"{FORTUNES_DIR}/{missing[0]} missing; fix: apt-get install fortunes"
        )
    return _command(
        "fortunes corpus", ["dpkg-query", "-W", "-f=${Version}\\n", "fortunes"], "apt-get install fortunes"
    )


def run_checks() -> list[Check]:
    py_ok = sys.version_info >= (3, 11)
    apt = "apt-get install gcc-mips-linux-gnu binutils-mips-linux-gnu qemu-user (or: " + BOOTSTRAP + ")"
    npm = "npm ci --prefix contracts (or: " + BOOTSTRAP + ")"
    pip = "pip install -e '.[dev]' (or: " + BOOTSTRAP + ")"
    checks = [
        Check("python", py_ok, sys.version.split()[0] if py_ok else "3.11+ required"),
        _host_c_compiler(),
        _command("mips-linux-gnu-gcc", ["mips-linux-gnu-gcc", "--version"], apt),
        _command("qemu-mips", ["qemu-mips", "-version"], apt),
        _command("node", ["node", "--version"], "apt-get install nodejs npm"),
        _command("forge", [str(NPM_BIN / "forge"), "--version"], npm),
        _command("anvil", [str(NPM_BIN / "anvil"), "--version"], npm),
        _command("cast", [str(NPM_BIN / "cast"), "--version"], npm),
        _command("solc (solc-js facade)", [str(SCRIPTS_DIR / "solc"), "--version"], npm, pick=1),
        _fortunes(),
    ]
    checks += [_python_package(dist, pip) for dist in PYTHON_PACKAGES]
    return checks
