"""mipsvm: the deterministic MIPS32 VM, its Merkleized state, preimage oracle and one-step proofs."""

from pathlib import Path

ABI_HEADER = Path(__file__).resolve().with_name("csrc") / "vmabi.h"
"""The VM ABI constants in C (syscalls, file descriptors, keys, blobs): the guest and the native hooks include
it; tests/mipsvm/test_vmabi.py checks it against mipsvm/constants.py."""
