"""keccak256, the one hash of the VM, the oracle and the contracts."""

from __future__ import annotations

from Crypto.Hash import keccak


def keccak256(data: bytes) -> bytes:
    return keccak.new(data=data, digest_bits=256).digest()
