"""One-step proofs (spec section 10): the verifier side, exactly what MIPS.sol does, and the off-chain prover.

`verify_step` decodes the pre-state, checks the two memory proofs against its `memRoot` and runs the very
same `step` function on a `ProofMemory` that holds only the two proven leaves. Both proofs are always
checked: the instruction proof at `pc`, the data proof at the address the step reports (`Access.data_addr`:
the load/store address, `buf` of a preimage select/read, else 0), so a step has exactly one valid witness.
"""

from __future__ import annotations

from dataclasses import dataclass

from mipsvm.constants import MEM_PROOF_SIZE
from mipsvm.memory import Memory, ProofError, proof_root
from mipsvm.preimage import PreimageMissing
from mipsvm.state import State, StateError
from mipsvm.step import Oracle, step

PROOF_SIZE = 2 * MEM_PROOF_SIZE  # instruction proof ++ data proof


class WitnessError(ValueError):
    """A malformed one-step witness: bad state encoding, a proof that does not match, a missing part."""


class ProofMemory:
    """WordMemory over the (at most) two leaves a step may touch, each checked against `mem_root`.

    `data_addr=None` binds the data proof lazily to the leaf of the first access outside the instruction's
    leaf (the verifier does not know the data address before it runs the step).
    """

    def __init__(
        self, mem_root: bytes, pc: int, insn_proof: bytes, data_addr: int | None, data_proof: bytes
    ) -> None:
        self.mem_root = mem_root
        self.insn_index = (pc & 0xFFFFFFFF) >> 5
        self.insn_proof = insn_proof
        self.data_proof = data_proof
        self.data_index: int | None = None
        self.data_leaf = bytearray(32)
        self.written = False
        if len(insn_proof) != MEM_PROOF_SIZE or len(data_proof) != MEM_PROOF_SIZE:
            raise WitnessError(f"a memory proof is {MEM_PROOF_SIZE} bytes")
        if proof_root(pc, insn_proof) != mem_root:
            raise WitnessError(f"the instruction proof (leaf of pc 0x{pc:08x}) does not match memRoot")
        self.insn_leaf = bytes(insn_proof[:32])
        if data_addr is not None:
            self.bind_data(data_addr)

    def bind_data(self, addr: int) -> None:
        """Check the data proof as the proof of the leaf holding `addr`."""
        if self.data_index is not None:
            if addr >> 5 != self.data_index:
                raise WitnessError(f"address 0x{addr:08x} is outside the proven data leaf")
            return
        if proof_root(addr, self.data_proof) != self.mem_root:
            raise WitnessError(f"the data proof (leaf of 0x{addr:08x}) does not match memRoot")
        self.data_index = addr >> 5
        self.data_leaf[:] = self.data_proof[:32]

    def read_u32(self, addr: int) -> int:
        index = addr >> 5
        off = addr & 31
        if index == self.data_index:
            return int.from_bytes(self.data_leaf[off : off + 4], "big")
        if index == self.insn_index:  # same value as the data leaf would give before any write
            return int.from_bytes(self.insn_leaf[off : off + 4], "big")
        self._bind_for(addr)
        return int.from_bytes(self.data_leaf[off : off + 4], "big")

    def write_u32(self, addr: int, value: int) -> None:
        if addr >> 5 != self.data_index:
            self._bind_for(addr)
        off = addr & 31
        self.data_leaf[off : off + 4] = value.to_bytes(4, "big")
        self.written = True

    def _bind_for(self, addr: int) -> None:
        if self.data_index is not None:
            raise WitnessError(
                f"step accessed 0x{addr:08x}, outside the two proven leaves "
                f"0x{self.insn_index << 5:08x} (instruction) and 0x{self.data_index << 5:08x} (data)"
            )
        self.bind_data(addr)

    def new_root(self) -> bytes:
        """The memory root after the step: the data proof's siblings with the (possibly written) leaf."""
        if not self.written:
            return self.mem_root
        assert self.data_index is not None
        return proof_root(self.data_index << 5, self.data_proof, bytes(self.data_leaf))


class OnePartOracle:
    """The oracle of a verification: the one stream part the witness carries (on-chain: PreimageOracle)."""

    def __init__(self, part: bytes | None, part_len: int) -> None:
        if part is not None and len(part) != 32:
            raise WitnessError(f"a stream part is 32 bytes, got {len(part)}")
        if not 0 <= part_len < 1 << 64:
            raise WitnessError("a stream length is a uint64")
        self.part = part
        self.part_len = part_len

    def stream_part(self, key: bytes, offset: int) -> tuple[bytes, int]:
        if self.part is None:
            raise PreimageMissing(key, "the witness carries no stream part")
        return self.part, self.part_len


def verify_step(state_bytes: bytes, proof: bytes, part: bytes | None = None, part_len: int = 0) -> bytes:
    """The post-state hash of one step from its witness, or WitnessError if the witness is malformed.

    `proof` is memProof(pc) ++ memProof(data address); a preimage read step also needs the 32-byte stream
    part at the selected key's offset and the stream length (PreimageMissing without them).
    """
    try:
        state = State.decode(state_bytes)
    except StateError as e:
        raise WitnessError(f"malformed state: {e}") from e
    if len(proof) != PROOF_SIZE:
        raise WitnessError(f"a step proof is {PROOF_SIZE} bytes, got {len(proof)}")
    try:
        mem = ProofMemory(state.mem_root, state.pc, proof[:MEM_PROOF_SIZE], None, proof[MEM_PROOF_SIZE:])
        access = step(state, mem, OnePartOracle(part, part_len))
        mem.bind_data(access.data_addr)  # checks the data proof also when the step did not use it
    except ProofError as e:
        raise WitnessError(str(e)) from e
    state.mem_root = mem.new_root()
    return state.hash()


@dataclass(frozen=True)
class StepProof:
    pre_state: bytes  # the 226-byte encoded pre-state (with its memory root)
    proof: bytes  # memProof(pc) ++ memProof(data address), 1792 bytes
    part: bytes | None  # the stream part of a preimage read step
    part_len: int  # the stream length of a preimage read step, else 0
    post_state_hash: bytes


class _Overlay:
    """WordMemory that reads `mem` and keeps writes to itself, so a dry-run step leaves `mem` alone."""

    def __init__(self, mem: Memory) -> None:
        self.mem = mem
        self.writes: dict[int, int] = {}

    def read_u32(self, addr: int) -> int:
        value = self.writes.get(addr)
        return self.mem.read_u32(addr) if value is None else value

    def write_u32(self, addr: int, value: int) -> None:
        self.writes[addr] = value


def make_proof(state: State, mem: Memory, oracle: Oracle) -> StepProof:
    """The witness of the next step of (`state`, `mem`); neither is changed."""
    pre = state.copy()
    pre.mem_root = mem.root()
    post = pre.copy()
    overlay = _Overlay(mem)
    access = step(post, overlay, oracle)
    data_proof = mem.proof(access.data_addr)
    part, part_len = oracle.stream_part(*access.preimage) if access.preimage is not None else (None, 0)
    if overlay.writes:
        leaf_addr = access.data_addr & ~31
        leaf = b"".join(overlay.read_u32(leaf_addr + i).to_bytes(4, "big") for i in range(0, 32, 4))
        post.mem_root = proof_root(leaf_addr, data_proof, leaf)
    return StepProof(pre.encode(), mem.proof(pre.pc) + data_proof, part, part_len, post.hash())
