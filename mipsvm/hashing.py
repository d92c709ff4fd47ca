"""keccak256, the one hash of the VM, the oracle and the contracts.

safe-pysha3 is used for speed (about 7x faster per call than pycryptodome's wrapper; the Merkle memory hashes
127 nodes per 4 KiB page).
"""

from __future__ import annotations

from typing import Any

from sha3 import keccak_256


def keccak256(data: bytes) -> bytes:
    return keccak_256(data).digest()


def keccak256_stream() -> Any:
    """A keccak256 hasher to `update(data)` piece by piece and `digest()`."""
    return keccak_256()
