"""One-step proofs (spec section 10): verify_step(make_proof(...)) is the post-state hash of really stepping,
for real programs and random states; malformed witnesses are rejected."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from support.env import scaled
from support.mips_asm import A0, A1, A2, BASE, DATA, T0, T2, V0, VM, asm
from support.mips_build import program
from support.mips_cases import KECCAK, ORACLE, STREAM_DATA, cases

from mipsvm.constants import MEM_PROOF_SIZE, Status
from mipsvm.elf import load_elf
from mipsvm.memory import Memory
from mipsvm.preimage import LocalData, PreimageMissing, PreimageOracle, PreimageStore, keccak_key, local_key
from mipsvm.state import State
from mipsvm.step import Access, Oracle, step
from mipsvm.witness import PROOF_SIZE, ProofMemory, StepProof, WitnessError, make_proof, verify_step

M = 0xFFFFFFFF


def real_post_hash(state: State, mem: Memory, oracle: Oracle) -> bytes:
    s, m = state.copy(), mem.copy()
    step(s, m, oracle)
    s.mem_root = m.root()
    return s.hash()


def check(state: State, mem: Memory, oracle: Oracle) -> StepProof:
    expected = real_post_hash(state, mem, oracle)
    proof = make_proof(state, mem, oracle)
    assert proof.post_state_hash == expected
    assert len(proof.proof) == PROOF_SIZE
    assert verify_step(proof.pre_state, proof.proof, proof.part, proof.part_len) == expected
    return proof


def verify(p: StepProof) -> bytes:
    return verify_step(p.pre_state, p.proof, p.part, p.part_len)


# --------------------------------------------------------------------------------------------------------
# Real programs
# --------------------------------------------------------------------------------------------------------
def test_every_step_of_a_preimage_program() -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(1000))
    store = PreimageStore()
    oracle = PreimageOracle(store, LocalData({1: store.put(data)}))
    prog = load_elf(program("preimage.c"))
    state, mem = prog.state, prog.memory
    kinds = {"read": 0, "select": 0}
    out: list[bytes] = []
    while not state.exited:
        p = check(state, mem, oracle)
        syscall = mem.read_u32(state.pc) == asm("syscall")
        select = syscall and (state.regs[V0], state.regs[A0]) == (4004, 6)
        access = step(state, mem, oracle, lambda fd, b: out.append(b))
        if access.preimage is not None:
            kinds["read"] += 1
            assert p.part is not None and p.part_len in (8 + len(data), 40)
        if select:
            kinds["select"] += 1
            assert access.data_addr == state.regs[A1]
    assert state.status == Status.VALID, hex(state.exit_code)
    assert out == [data]
    assert kinds["read"] > 30 and kinds["select"] >= 2
    check(state, mem, oracle)  # the exited fixed point too


def test_many_steps_of_a_c_program() -> None:
    prog = load_elf(program("compute.c"))
    state, mem, oracle = prog.state, prog.memory, PreimageOracle()
    n = 0
    checked = 0
    budget = scaled(500)
    while not state.exited:
        insn = mem.read_u32(state.pc)
        is_syscall = insn & 0xFC00003F == 0x0C
        if n < budget or is_syscall or n % 4999 == 0:
            check(state, mem, oracle)
            checked += 1
        step(state, mem, oracle)
        n += 1
    assert state.status == Status.VALID
    assert checked > budget


# --------------------------------------------------------------------------------------------------------
# Random states and instructions
# --------------------------------------------------------------------------------------------------------
@settings(
    max_examples=scaled(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(cases())
def test_random_steps(case: tuple[State, Memory]) -> None:
    state, mem = case
    try:
        check(state, mem, ORACLE)
    except PreimageMissing:
        assume(False)


def test_proof_memory_with_a_known_data_address() -> None:
    vm = VM([asm("lw", T2, 8, T0)], {T0: DATA})
    vm.mem.write(DATA + 8, b"\x01\x02\x03\x04")
    root = vm.mem.root()
    pm = ProofMemory(root, BASE, vm.mem.proof(BASE), DATA + 8, vm.mem.proof(DATA + 8))
    state = vm.state.copy()
    assert step(state, pm, ORACLE) == Access(DATA + 8)
    assert state.regs[T2] == 0x01020304
    with pytest.raises(WitnessError, match="outside the two proven leaves"):
        pm.read_u32(DATA + 32)
    with pytest.raises(WitnessError, match="outside the two proven leaves"):
        pm.write_u32(BASE, 0)
    with pytest.raises(WitnessError, match="data proof"):
        ProofMemory(root, BASE, vm.mem.proof(BASE), DATA + 64, vm.mem.proof(DATA + 8))


def test_same_leaf_for_code_and_data() -> None:
    """A store into the instruction's own leaf (self-modifying code) is proven by two proofs of one leaf."""
    vm = VM([asm("sw", T0, 12, T2), 0, 0, 0], {T0: 0xDEADBEEF, T2: BASE})
    p = check(vm.state, vm.mem, ORACLE)
    assert p.proof[:MEM_PROOF_SIZE] == p.proof[MEM_PROOF_SIZE:]
    vm = VM([asm("lw", T0, 4, T2), 0x12345678], {T2: BASE})
    check(vm.state, vm.mem, ORACLE)


# --------------------------------------------------------------------------------------------------------
# Malformed witnesses
# --------------------------------------------------------------------------------------------------------
def load_proof() -> tuple[VM, StepProof]:
    vm = VM([asm("lw", T2, 0x44, T0)], {T0: DATA})
    vm.mem.write(DATA + 0x44, b"\xca\xfe\xba\xbe")
    vm.mem.write(0x7000, b"elsewhere")
    return vm, check(vm.state, vm.mem, ORACLE)


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (5, "instruction proof"),  # leaf value
        (32 + 3, "instruction proof"),  # first sibling
        (32 * 27 + 31, "instruction proof"),  # top sibling
        (MEM_PROOF_SIZE + 2, "data proof"),
        (MEM_PROOF_SIZE + 32 * 9, "data proof"),
        (PROOF_SIZE - 1, "data proof"),
    ],
)
def test_tampered_proof_is_rejected(where: int, message: str) -> None:
    _, p = load_proof()
    with pytest.raises(WitnessError, match=message):
        verify_step(p.pre_state, flip(p.proof, where), p.part, p.part_len)


def test_proof_of_the_wrong_leaf_is_rejected() -> None:
    vm, p = load_proof()
    wrong = p.proof[:MEM_PROOF_SIZE] + vm.mem.proof(0x7000)
    with pytest.raises(WitnessError, match="data proof"):
        verify_step(p.pre_state, wrong, None, 0)
    wrong = vm.mem.proof(0x7000) + p.proof[MEM_PROOF_SIZE:]
    with pytest.raises(WitnessError, match="instruction proof"):
        verify_step(p.pre_state, wrong, None, 0)
    # a step that touches no data must carry the proof of leaf 0: exactly one witness per step
    vm = VM([asm("addiu", T0, T0, 1)])
    vm.mem.write(0x7000, b"x")
    p = check(vm.state, vm.mem, ORACLE)
    with pytest.raises(WitnessError, match="data proof"):
        verify_step(p.pre_state, p.proof[:MEM_PROOF_SIZE] + vm.mem.proof(0x7000))


def test_wrong_state_bytes_are_rejected() -> None:
    _, p = load_proof()
    with pytest.raises(WitnessError, match="226"):
        verify_step(p.pre_state[:-1], p.proof)
    with pytest.raises(WitnessError, match="instruction proof"):
        verify_step(flip(p.pre_state, 0), p.proof)  # memRoot
    with pytest.raises(WitnessError, match="instruction proof"):
        verify_step(flip(p.pre_state, 68 + 2), p.proof)  # pc moved to another leaf
    with pytest.raises(WitnessError, match="r0"):
        verify_step(flip(p.pre_state, 98 + 3), p.proof)
    exited_2 = bytearray(p.pre_state)
    exited_2[89] = 2
    with pytest.raises(WitnessError, match="exited"):
        verify_step(bytes(exited_2), p.proof)
    with pytest.raises(WitnessError, match="1792"):
        verify_step(p.pre_state, p.proof[:-1])


def test_preimage_read_needs_its_part() -> None:
    vm = VM([asm("syscall")], {V0: 4003, A0: 5, A1: DATA, A2: 32}, oracle=ORACLE)
    vm.state.preimage_key = KECCAK
    p = check(vm.state, vm.mem, ORACLE)
    assert (p.part, p.part_len) == (
        len(STREAM_DATA).to_bytes(8, "big") + STREAM_DATA[:24],
        8 + len(STREAM_DATA),
    )
    with pytest.raises(PreimageMissing):
        verify_step(p.pre_state, p.proof)
    assert p.part is not None
    with pytest.raises(WitnessError, match="32 bytes"):
        verify_step(p.pre_state, p.proof, p.part[:31], p.part_len)
    with pytest.raises(WitnessError, match="uint64"):
        verify_step(p.pre_state, p.proof, p.part, 2**64)


def test_exited_state_proof() -> None:
    vm = VM([asm("syscall")], {V0: 4246, A0: 1})
    vm.step()
    p = check(vm.state, vm.mem, ORACLE)
    assert p.post_state_hash == vm.state.hash() or p.post_state_hash[0] == Status.INVALID
    pre = State.decode(p.pre_state)
    assert verify(p) == pre.hash()


def test_local_key_in_make_proof() -> None:
    vm = VM([asm("syscall")], {V0: 4003, A0: 5, A1: DATA + 7, A2: 100})
    vm.state.preimage_key, vm.state.preimage_offset = local_key(1), 3
    p = check(vm.state, vm.mem, ORACLE)
    assert p.part == ((32).to_bytes(8, "big") + KECCAK)[3:35] and p.part_len == 40
    assert keccak_key(STREAM_DATA) == KECCAK
