"""Shared fixtures: a real anvil process (started once per test session, stopped at the end)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rollml.devnet import Anvil, anvil_missing


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
