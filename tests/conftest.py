"""Shared fixtures and the test markers.

- `@pytest.mark.requires("guest", "anvil", ...)`: what a test needs from the machine beyond the Python
  packages (those come with `scripts/bootstrap.sh --dev`); a test whose requirement is missing is skipped
  with the reason and the fix. Known requirements: `REQUIREMENTS` below.
- `@pytest.mark.slow`: runs for minutes. CI runs everything; `pytest -m "not slow"` is the quick loop.
- `anvil`: one real anvil process for the session. `world`: a fresh embedded chain with the contracts
  deployed and the MNIST MLP registered (`rollml.world.World`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support.env import ROOT

from mlkit.build import GUEST_ELF
from rollml.core.devnet import Anvil, anvil_missing

# `scripts/check.sh` (CI) runs the property tests with `--hypothesis-profile=ci`: the same examples on every
# run, so a red CI is the commit's doing and reproducible; `make fuzz` explores fresh ones at 50x the size.
settings.register_profile("ci", derandomize=True, print_blob=True)


def _missing_tool(command: str, fix: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(command) else f"{command} is not installed ({fix})"


REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "guest": lambda: (
        None if GUEST_ELF.is_file() else "mlkit/guest/mlkit.elf is not built (python3 -m mlkit.build)"
    ),
    "mips-cc": _missing_tool("mips-linux-gnu-gcc", "scripts/bootstrap.sh --dev"),
    "qemu": _missing_tool("qemu-mips", "scripts/bootstrap.sh --dev"),
    "anvil": anvil_missing,
    "fortunes": lambda: (
        None
        if Path("/usr/share/games/fortunes/zippy").is_file()
        else "the fortunes corpus is not installed (apt-get install fortunes; scripts/bootstrap.sh --dev)"
    ),
    "chromium": lambda: (
        None
        if shutil.which("chromium") and shutil.which("chromedriver")
        else "chromium and chromedriver are not installed (scripts/bootstrap.sh --dev)"
    ),
    "forge": lambda: (
        None
        if (ROOT / "contracts" / "node_modules" / ".bin" / "forge").exists()
        else "forge is not installed (scripts/bootstrap.sh --dev)"
    ),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        for name in mark.args:
            if name not in REQUIREMENTS:
                raise pytest.UsageError(f"unknown requirement {name!r}; known: {', '.join(REQUIREMENTS)}")
            missing = REQUIREMENTS[name]()
            if missing:
                pytest.skip(missing)


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """An anvil node on a free 127.0.0.1 port (`anvil.url`); skipped when the binary is not installed.

    Shared by the whole session: tests deploy their own contracts, so they do not see each other's state
    except block numbers and the dev accounts' nonces and balances.
    """
    missing = anvil_missing()
    if missing:
        pytest.skip(missing)
    node = Anvil().start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def own_anvil() -> Iterator[Anvil]:
    """An anvil of the test's own, for tests that revert the chain (a reset, a reorg): the session's anvil
    must not be touched."""
    missing = anvil_missing()
    if missing:
        pytest.skip(missing)
    node = Anvil().start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh embedded chain with everything deployed and the MNIST MLP registered and served."""
    from support.models import mnist

    from rollml.core.chain import Chain
    from rollml.world import World

    model, _ = mnist()
    return World.create(Chain.embedded(), tmp_path, {"mnist-mlp": model})
