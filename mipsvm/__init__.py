"""mipsvm: the deterministic MIPS32 VM, its Merkleized state, preimage oracle and one-step proofs."""
