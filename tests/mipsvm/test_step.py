"""The reference stepper (mipsvm/step.py) against docs/vm-spec.md, instruction by instruction.

Expected values are computed by hand from the spec; `test_alu_matches_qemu` and `test_c_program_*` compare
with qemu-mips as well. Tests named `test_cantina_*` pin the classes of bugs found in Cannon audits.
"""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest
from support.mips_asm import (
    A0,
    A1,
    A2,
    A3,
    BASE,
    DATA,
    RA,
    S0,
    SP,
    T0,
    T1,
    T2,
    V0,
    VM,
    ZERO,
    asm,
    i_type,
    r_type,
    run1,
)
from support.mips_build import build_source, program

from mipsvm.constants import BRK_FIXED, HEAP_END, HEAP_START, STACK_TOP, Fault, Status
from mipsvm.elf import load_elf
from mipsvm.preimage import LocalData, PreimageMissing, PreimageOracle, PreimageStore, keccak_key, local_key
from mipsvm.state import State, StateError
from mipsvm.step import NO_ACCESS, Access, run

M = 0xFFFFFFFF
INT_MIN = 0x80000000


def neg(v: int) -> int:
    return v & M


def assert_fault(vm: VM, code: Fault, before: tuple[bytes, dict[int, bytes]] | None = None) -> None:
    """The step faulted with `code` and changed nothing but exited, exitCode and step."""
    s = vm.state
    assert s.exited and s.exit_code == code, (s.exited, hex(s.exit_code))
    assert s.status == Status.PANIC
    if before is not None:
        old = State.decode(before[0])
        assert (s.pc, s.next_pc, s.regs, s.hi, s.lo, s.heap) == (
            old.pc,
            old.next_pc,
            old.regs,
            old.hi,
            old.lo,
            old.heap,
        )
        assert (s.preimage_key, s.preimage_offset) == (old.preimage_key, old.preimage_offset)
        assert s.step == old.step + 1
        assert {p: bytes(b) for p, b in vm.mem.pages.items()} == before[1]


def faults(code: Fault, words: list[int], **regs: int) -> VM:
    vm = VM(words, {int(k[1:]): v for k, v in regs.items()})
    before = vm.snapshot()
    assert vm.step() == NO_ACCESS
    assert_fault(vm, code, before)
    return vm


def advanced(vm: VM) -> None:
    """The last step was an ordinary one at BASE: pc moved on by one instruction."""
    assert not vm.state.exited
    assert (vm.state.pc, vm.state.next_pc) == (BASE + 4, BASE + 8)
    assert vm.state.step == 1


# --------------------------------------------------------------------------------------------------------
# The test encoder agrees with the GNU assembler
# --------------------------------------------------------------------------------------------------------
ENCODER_CHECKS = [
    ("addiu $8, $9, -3", ("addiu", 8, 9, -3)),
    ("addu $3, $4, $5", ("addu", 3, 4, 5)),
    ("sll $2, $3, 31", ("sll", 2, 3, 31)),
    ("srav $2, $3, $4", ("srav", 2, 3, 4)),
    ("jalr $7, $9", ("jalr", 7, 9)),
    ("jr $31", ("jr", 31)),
    ("mult $4, $5", ("mult", 4, 5)),
    ("div $0, $4, $5", ("div", 4, 5)),
    ("madd $4, $5", ("madd", 4, 5)),
    ("mul $2, $3, $4", ("mul", 2, 3, 4)),
    ("clz $2, $3", ("clz", 2, 3)),
    ("clo $2, $3", ("clo", 2, 3)),
    ("lwl $2, 5($3)", ("lwl", 2, 5, 3)),
    ("swr $2, -1($3)", ("swr", 2, -1, 3)),
    ("sc $2, 8($29)", ("sc", 2, 8, 29)),
    ("lui $2, 0x1234", ("lui", 2, 0x1234)),
    ("bgezal $4, 3", ("bgezal", 4, 3)),
    ("teq $4, $0", ("teq", 4, 0)),
    ("tgeiu $4, -1", ("tgeiu", 4, -1)),
    ("mthi $6", ("mthi", 6)),
    ("mflo $6", ("mflo", 6)),
    ("movn $2, $3, $4", ("movn", 2, 3, 4)),
]


@pytest.mark.skipif(shutil.which("mips-linux-gnu-as") is None, reason="no mips-linux-gnu-as")
def test_encoder_matches_gnu_as(tmp_path) -> None:
    lines = [".set noreorder", ".set noat", ".set nomacro"]
    for text, _ in ENCODER_CHECKS:
        if text.startswith("bgezal"):
            text = "bgezal $4, . + 4 + 4*3"
        lines.append(text)
    (tmp_path / "e.S").write_text("\n".join(lines) + "\n")
    subprocess.run(
        ["mips-linux-gnu-as", "-march=mips32", "-o", str(tmp_path / "e.o"), str(tmp_path / "e.S")], check=True
    )
    subprocess.run(
        ["mips-linux-gnu-objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "e.o"), str(tmp_path / "e")],
        check=True,
    )
    code = (tmp_path / "e").read_bytes()
    words = [int.from_bytes(code[i : i + 4], "big") for i in range(0, 4 * len(ENCODER_CHECKS), 4)]
    for (text, ops), word in zip(ENCODER_CHECKS, words, strict=True):
        assert asm(*ops) == word, text  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# Section 5: ALU
# --------------------------------------------------------------------------------------------------------
ALU_CASES = [
    # (instruction, registers before, expected value of the destination)
    (("addu", T2, T0, T1), {T0: 0xFFFFFFFF, T1: 2}, 1),
    (("add", T2, T0, T1), {T0: 0x7FFFFFFE, T1: 1}, 0x7FFFFFFF),
    (("subu", T2, T0, T1), {T0: 1, T1: 2}, M),
    (("sub", T2, T0, T1), {T0: neg(-5), T1: 3}, neg(-8)),
    (("and", T2, T0, T1), {T0: 0xF0F0F0F0, T1: 0xFF00FF00}, 0xF000F000),
    (("or", T2, T0, T1), {T0: 0xF0F0F0F0, T1: 0x0F000000}, 0xFFF0F0F0),
    (("xor", T2, T0, T1), {T0: 0xF0F0F0F0, T1: 0xFF00FF00}, 0x0FF00FF0),
    (("nor", T2, T0, T1), {T0: 0xF0F0F0F0, T1: 0x0F000000}, 0x000F0F0F),
    (("slt", T2, T0, T1), {T0: neg(-1), T1: 1}, 1),
    (("slt", T2, T0, T1), {T0: 1, T1: neg(-1)}, 0),
    (("slt", T2, T0, T1), {T0: 5, T1: 5}, 0),
    (("sltu", T2, T0, T1), {T0: neg(-1), T1: 1}, 0),
    (("sltu", T2, T0, T1), {T0: 1, T1: neg(-1)}, 1),
    (("addiu", T2, T0, -1), {T0: 0}, M),  # sign-extended immediate
    (("addiu", T2, T0, 0x7FFF), {T0: 1}, 0x8000),
    (("addi", T2, T0, -2), {T0: 1}, M),
    (("slti", T2, T0, -1), {T0: neg(-2)}, 1),
    (("slti", T2, T0, -1), {T0: 0}, 0),
    (("sltiu", T2, T0, -1), {T0: 0xFFFFFFFE}, 1),  # compares with 0xFFFFFFFF
    (("sltiu", T2, T0, 0x7FFF), {T0: 0x8000}, 0),
    (("andi", T2, T0, 0x8001), {T0: M}, 0x8001),  # zero-extended
    (("ori", T2, T0, 0x8000), {T0: 0x10000}, 0x18000),
    (("xori", T2, T0, 0xFFFF), {T0: M}, 0xFFFF0000),
    (("lui", T2, 0x8001), {}, 0x80010000),
    (("sll", T2, T0, 0), {T0: 0x12345678}, 0x12345678),
    (("sll", T2, T0, 31), {T0: 3}, INT_MIN),
    (("srl", T2, T0, 0), {T0: INT_MIN}, INT_MIN),
    (("srl", T2, T0, 31), {T0: INT_MIN}, 1),
    (("sra", T2, T0, 0), {T0: INT_MIN}, INT_MIN),
    (("sra", T2, T0, 31), {T0: INT_MIN}, M),
    (("sra", T2, T0, 4), {T0: 0x7FFFFFF0}, 0x07FFFFFF),
    (("sra", T2, T0, 4), {T0: 0x80000010}, 0xF8000001),
    (("sllv", T2, T0, T1), {T0: 1, T1: 33}, 2),  # amount & 31
    (("sllv", T2, T0, T1), {T0: 1, T1: 31}, INT_MIN),
    (("srlv", T2, T0, T1), {T0: INT_MIN, T1: 0xFFFFFFFF}, 1),
    (("srlv", T2, T0, T1), {T0: INT_MIN, T1: 32}, INT_MIN),
    (("srav", T2, T0, T1), {T0: INT_MIN, T1: 35}, 0xF0000000),
    (("srav", T2, T0, T1), {T0: INT_MIN, T1: 0}, INT_MIN),
    (("mul", T2, T0, T1), {T0: 0x10001, T1: 0x10001}, 0x00020001),
    (("mul", T2, T0, T1), {T0: neg(-3), T1: 7}, neg(-21)),
    (("clz", T2, T0), {T0: 0}, 32),
    (("clz", T2, T0), {T0: M}, 0),
    (("clz", T2, T0), {T0: 1}, 31),
    (("clz", T2, T0), {T0: 0x00800000}, 8),
    (("clo", T2, T0), {T0: M}, 32),
    (("clo", T2, T0), {T0: 0}, 0),
    (("clo", T2, T0), {T0: 0xFFFF0000}, 16),
    (("clo", T2, T0), {T0: 0x7FFFFFFF}, 0),
    (("movz", T2, T0, T1), {T0: 7, T1: 0, T2: 9}, 7),
    (("movz", T2, T0, T1), {T0: 7, T1: 1, T2: 9}, 9),
    (("movn", T2, T0, T1), {T0: 7, T1: 5, T2: 9}, 7),
    (("movn", T2, T0, T1), {T0: 7, T1: 0, T2: 9}, 9),
]


@pytest.mark.parametrize(("insn", "regs", "expected"), ALU_CASES)
def test_alu(insn: tuple, regs: dict[int, int], expected: int) -> None:
    vm = VM([asm(*insn)], regs)
    before = dict(enumerate(vm.state.regs))
    assert vm.step() == NO_ACCESS
    advanced(vm)
    assert vm.r(T2) == expected, f"{insn}: got {vm.r(T2):#x}"
    for r, v in before.items():  # nothing else changed
        if r != T2:
            assert vm.r(r) == v
    assert (vm.state.hi, vm.state.lo) == (0, 0)


def test_writes_to_r0_are_dropped() -> None:
    insns: list[tuple] = [("addiu", ZERO, ZERO, 5), ("lui", ZERO, 1), ("mfhi", ZERO), ("clz", ZERO, ZERO)]
    for insn in insns:
        vm = VM([asm(*insn)])
        vm.state.hi = 7
        vm.step()
        assert vm.r(ZERO) == 0
        advanced(vm)


@pytest.mark.parametrize(
    ("insn", "a", "b"),
    [
        ("add", 0x7FFFFFFF, 1),
        ("add", INT_MIN, M),
        ("sub", INT_MIN, 1),
        ("sub", 0x7FFFFFFF, M),
    ],
)
def test_overflow_faults(insn: str, a: int, b: int) -> None:
    faults(Fault.OVERFLOW, [asm(insn, T2, T0, T1)], r8=a, r9=b)


def test_addi_overflow_and_its_boundaries() -> None:
    faults(Fault.OVERFLOW, [asm("addi", T2, T0, 1)], r8=0x7FFFFFFF)
    faults(Fault.OVERFLOW, [asm("addi", T2, T0, -1)], r8=INT_MIN)
    assert run1("addi", T2, T0, -1, r8=0x7FFFFFFF).r(T2) == 0x7FFFFFFE
    assert run1("addi", T2, T0, 1, r8=INT_MIN).r(T2) == INT_MIN + 1
    assert run1("sub", T2, T0, T1, r8=neg(-1), r9=0x7FFFFFFF).r(T2) == INT_MIN
    assert run1("add", T2, T0, T1, r8=neg(-1), r9=INT_MIN + 1).r(T2) == INT_MIN


# --------------------------------------------------------------------------------------------------------
# HI/LO
# --------------------------------------------------------------------------------------------------------
def hilo(name: str, rs: int, rt: int, hi: int = 0, lo: int = 0) -> tuple[int, int]:
    vm = VM([asm(name, T0, T1)], {T0: rs, T1: rt})
    vm.state.hi, vm.state.lo = hi, lo
    regs = list(vm.state.regs)
    vm.step()
    advanced(vm)
    assert vm.state.regs == regs
    return vm.state.hi, vm.state.lo


def test_mult_multu() -> None:
    assert hilo("mult", neg(-2), 3) == (M, neg(-6))
    assert hilo("mult", INT_MIN, INT_MIN) == (0x40000000, 0)
    assert hilo("mult", INT_MIN, 0x7FFFFFFF) == (0xC0000000, INT_MIN)
    assert hilo("multu", M, M) == (0xFFFFFFFE, 1)
    assert hilo("multu", neg(-2), 3) == (2, neg(-6))


def test_div_divu_including_edge_cases() -> None:
    assert hilo("div", 7, neg(-2)) == (1, neg(-3))  # truncated toward zero
    assert hilo("div", neg(-7), 2) == (neg(-1), neg(-3))  # remainder has the dividend's sign
    assert hilo("div", neg(-7), neg(-2)) == (neg(-1), 3)
    assert hilo("div", 5, 0) == (0, 5)  # /0: lo = dividend, hi = 0 (as QEMU)
    assert hilo("div", 0, 0) == (0, 0)
    assert hilo("div", neg(-5), 0) == (0, neg(-5))
    assert hilo("div", INT_MIN, M) == (0, INT_MIN)  # INT_MIN / -1
    assert hilo("div", INT_MIN, 1) == (0, INT_MIN)
    assert hilo("divu", 7, 2) == (1, 3)
    assert hilo("divu", M, 0x10) == (0xF, 0x0FFFFFFF)
    assert hilo("divu", 1234, 0) == (0, 1234)
    assert hilo("divu", INT_MIN, M) == (INT_MIN, 0)


def test_madd_msub_wrap_64_bits() -> None:
    assert hilo("madd", 1, 1, hi=M, lo=M) == (0, 0)  # 2^64 - 1 + 1 wraps
    assert hilo("madd", neg(-1), 1, hi=0, lo=0) == (M, M)  # signed product -1
    assert hilo("madd", INT_MIN, INT_MIN, hi=0xC0000000, lo=5) == (0, 5)
    assert hilo("maddu", M, M, hi=0, lo=M) == (M, 0)  # 0xFFFFFFFE_00000001 + 0xFFFFFFFF
    assert hilo("maddu", neg(-1), 1, hi=0, lo=0) == (0, M)  # unsigned: no sign extension
    assert hilo("msub", 1, 1, hi=0, lo=0) == (M, M)
    assert hilo("msub", neg(-1), 1, hi=0, lo=0) == (0, 1)
    assert hilo("msubu", 1, 1, hi=0, lo=0) == (M, M)
    assert hilo("msubu", M, M, hi=M, lo=M) == (1, 0xFFFFFFFE)


def test_mfhi_mflo_mthi_mtlo() -> None:
    t3 = 11
    vm = VM([asm("mfhi", T2), asm("mflo", t3), asm("mthi", T0), asm("mtlo", T1)], {T0: 0xAA, T1: 0xBB})
    vm.state.hi, vm.state.lo = 0x11, 0x22
    vm.run(4)
    assert (vm.r(T2), vm.r(t3), vm.state.hi, vm.state.lo) == (0x11, 0x22, 0xAA, 0xBB)


def test_mul_leaves_hi_lo() -> None:
    vm = VM([asm("mul", T2, T0, T1)], {T0: 0x10000, T1: 0x10000})
    vm.state.hi, vm.state.lo = 3, 4
    vm.step()
    assert (vm.r(T2), vm.state.hi, vm.state.lo) == (0, 3, 4)


# --------------------------------------------------------------------------------------------------------
# Loads and stores
# --------------------------------------------------------------------------------------------------------
def mem_vm(words: list[int], data: bytes = bytes(range(0x11, 0x19)), **regs: int) -> VM:
    vm = VM(words, {S0: DATA, **{int(k[1:]): v for k, v in regs.items()}})
    vm.mem.write(DATA, data)
    return vm


@pytest.mark.parametrize(
    ("name", "offset", "expected"),
    [
        ("lb", 0, 0x11),
        ("lb", 3, 0x14),
        ("lb", 5, 0x16),
        ("lbu", 1, 0x12),
        ("lh", 0, 0x1112),
        ("lh", 2, 0x1314),
        ("lhu", 6, 0x1718),
        ("lw", 0, 0x11121314),
        ("lw", 4, 0x15161718),
        ("ll", 4, 0x15161718),
    ],
)
def test_loads(name: str, offset: int, expected: int) -> None:
    vm = mem_vm([asm(name, T2, offset, S0)])
    assert vm.step() == Access(DATA + offset)
    advanced(vm)
    assert vm.r(T2) == expected


@pytest.mark.parametrize(
    ("name", "offset", "expected"),
    [
        ("lb", 0, 0xFFFFFF80),
        ("lb", 1, 0x7F),
        ("lbu", 0, 0x80),
        ("lb", 3, 0xFFFFFFFF),
        ("lbu", 3, 0xFF),
        ("lh", 0, 0xFFFF807F),
        ("lhu", 0, 0x807F),
        ("lh", 2, 0x00FF),
    ],
)
def test_load_sign_and_zero_extension(name: str, offset: int, expected: int) -> None:
    vm = mem_vm([asm(name, T2, offset, S0)], bytes([0x80, 0x7F, 0x00, 0xFF]))
    vm.step()
    assert vm.r(T2) == expected


@pytest.mark.parametrize(
    ("name", "offset", "value", "expected"),
    [
        ("sb", 0, 0xAABBCCDD, "dd12131415161718"),
        ("sb", 3, 0xAABBCCDD, "111213dd15161718"),
        ("sb", 6, 0x1FF, "111213141516ff18"),
        ("sh", 0, 0xAABBCCDD, "ccdd131415161718"),
        ("sh", 2, 0xAABBCCDD, "1112ccdd15161718"),
        ("sh", 6, 0xAABBCCDD, "111213141516ccdd"),
        ("sw", 4, 0xAABBCCDD, "11121314aabbccdd"),
    ],
)
def test_stores(name: str, offset: int, value: int, expected: str) -> None:
    vm = mem_vm([asm(name, T2, offset, S0)], r10=value)
    assert vm.step() == Access(DATA + offset)
    advanced(vm)
    assert vm.mem.read(DATA, 8).hex() == expected
    assert vm.r(T2) == value


def test_load_store_address_wraps_and_uses_signed_offset() -> None:
    vm = mem_vm([asm("lw", T2, 8, S0)], r16=0xFFFFFFFC)
    vm.mem.write(4, b"\xde\xad\xbe\xef")
    assert vm.step() == Access(4)
    assert vm.r(T2) == 0xDEADBEEF
    vm = mem_vm([asm("lbu", T2, -1, S0)])
    vm.mem.write(DATA - 1, b"\x99")
    vm.step()
    assert vm.r(T2) == 0x99


WORD = 0x11223344
RT = 0xAABBCCDD


@pytest.mark.parametrize(
    ("name", "k", "expected"),
    [
        ("lwl", 0, 0x11223344),
        ("lwl", 1, 0x223344DD),
        ("lwl", 2, 0x3344CCDD),
        ("lwl", 3, 0x44BBCCDD),
        ("lwr", 0, 0xAABBCC11),
        ("lwr", 1, 0xAABB1122),
        ("lwr", 2, 0xAA112233),
        ("lwr", 3, 0x11223344),
    ],
)
def test_lwl_lwr(name: str, k: int, expected: int) -> None:
    vm = mem_vm([asm(name, T2, k, S0)], WORD.to_bytes(4, "big"), r10=RT)
    assert vm.step() == Access(DATA)  # the aligned word's address
    assert vm.r(T2) == expected


@pytest.mark.parametrize(
    ("name", "k", "expected"),
    [
        ("swl", 0, 0xAABBCCDD),
        ("swl", 1, 0x11AABBCC),
        ("swl", 2, 0x1122AABB),
        ("swl", 3, 0x112233AA),
        ("swr", 0, 0xDD223344),
        ("swr", 1, 0xCCDD3344),
        ("swr", 2, 0xBBCCDD44),
        ("swr", 3, 0xAABBCCDD),
    ],
)
def test_swl_swr(name: str, k: int, expected: int) -> None:
    vm = mem_vm([asm(name, T2, k, S0)], WORD.to_bytes(4, "big") + b"\x55" * 4, r10=RT)
    assert vm.step() == Access(DATA)
    assert vm.mem.read_u32(DATA) == expected
    assert vm.mem.read_u32(DATA + 4) == 0x55555555  # only the aligned word is touched


def test_unaligned_word_through_lwl_lwr_and_swl_swr() -> None:
    data = bytes(range(0x11, 0x19))
    for a in range(5):
        vm = mem_vm([asm("lwl", T2, a, S0), asm("lwr", T2, a + 3, S0)], data)
        vm.run(2)
        assert vm.r(T2) == int.from_bytes(data[a : a + 4], "big")
        vm = mem_vm([asm("swl", T2, a, S0), asm("swr", T2, a + 3, S0)], data, r10=0xA1B2C3D4)
        vm.run(2)
        expected = bytearray(data)
        expected[a : a + 4] = bytes.fromhex("a1b2c3d4")
        assert vm.mem.read(DATA, 8) == expected


def test_ll_sc() -> None:
    vm = mem_vm([asm("ll", T2, 0, S0), asm("addiu", T2, T2, 1), asm("sc", T2, 0, S0)])
    vm.run(3)
    assert vm.mem.read_u32(DATA) == 0x11121315
    assert vm.r(T2) == 1  # the store always succeeds
    vm = mem_vm([asm("sc", ZERO, 0, S0)])
    vm.step()
    assert vm.r(ZERO) == 0 and vm.mem.read_u32(DATA) == 0


@pytest.mark.parametrize(
    ("name", "offset"),
    [("lw", 1), ("lw", 2), ("lw", 3), ("ll", 2), ("sw", 1), ("sc", 3), ("lh", 1), ("lhu", 3), ("sh", 1)],
)
def test_unaligned_access_faults(name: str, offset: int) -> None:
    vm = mem_vm([asm(name, T2, offset, S0)], r10=0x12345678)
    before = vm.snapshot()
    assert vm.step() == NO_ACCESS
    assert_fault(vm, Fault.UNALIGNED_ACCESS, before)


# --------------------------------------------------------------------------------------------------------
# Branches, jumps and the delay slot (section 4)
# --------------------------------------------------------------------------------------------------------
def branch(insn: int, **regs: int) -> tuple[bool, VM]:
    """Step a branch at BASE with an addiu in its delay slot; (taken, vm after the branch step)."""
    vm = VM([insn, asm("addiu", T2, T2, 1)], {int(k[1:]): v for k, v in regs.items()})
    vm.step()
    s = vm.state
    assert s.pc == BASE + 4 and not s.exited
    vm_after_slot = (s.next_pc, vm)
    taken = s.next_pc != BASE + 8
    if taken:
        assert s.next_pc == (BASE + 4 + 4 * 5) & M  # all tests branch by +5 instructions
    vm.step()  # the delay slot always executes
    assert vm.r(T2) == regs.get("r10", 0) + 1
    assert vm.state.pc == vm_after_slot[0]
    return taken, vm


@pytest.mark.parametrize(
    ("insn", "regs", "taken"),
    [
        (("beq", T0, T1, 5), {"r8": 3, "r9": 3}, True),
        (("beq", T0, T1, 5), {"r8": 3, "r9": 4}, False),
        (("bne", T0, T1, 5), {"r8": 3, "r9": 4}, True),
        (("bne", T0, T1, 5), {"r8": 3, "r9": 3}, False),
        (("blez", T0, 5), {"r8": 0}, True),
        (("blez", T0, 5), {"r8": M}, True),
        (("blez", T0, 5), {"r8": 1}, False),
        (("bgtz", T0, 5), {"r8": 1}, True),
        (("bgtz", T0, 5), {"r8": 0}, False),
        (("bgtz", T0, 5), {"r8": INT_MIN}, False),
        (("bltz", T0, 5), {"r8": INT_MIN}, True),
        (("bltz", T0, 5), {"r8": 0}, False),
        (("bgez", T0, 5), {"r8": 0}, True),
        (("bgez", T0, 5), {"r8": M}, False),
        (("b", 5), {}, True),
    ],
)
def test_branches(insn: tuple, regs: dict[str, int], taken: bool) -> None:
    assert branch(asm(*insn), **regs)[0] == taken


def test_branch_target_is_relative_to_the_delay_slot_and_sign_extended() -> None:
    vm = VM([asm("beq", ZERO, ZERO, -1)])
    vm.step()
    assert vm.state.next_pc == BASE  # delay slot + (-1 << 2)
    vm = VM([asm("beq", ZERO, ZERO, -0x8000)])
    vm.step()
    assert vm.state.next_pc == BASE + 4 - 0x20000


@pytest.mark.parametrize(("name", "value", "taken"), [("bltzal", M, True), ("bltzal", 0, False)])
def test_bltzal_bgezal_link_always(name: str, value: int, taken: bool) -> None:
    for n, t in [(name, taken), ("bgezal" if name == "bltzal" else "bltzal", not taken)]:
        got, vm = branch(asm(n, T0, 5), r8=value)
        assert got == t
        assert vm.r(RA) == BASE + 8  # linked whether taken or not


def test_bal_and_condition_read_before_link() -> None:
    taken, vm = branch(asm("bal", 5))
    assert taken and vm.r(RA) == BASE + 8
    # bltzal $ra: the condition is R[31] before the link overwrites it
    taken, vm = branch(asm("bltzal", RA, 5), r31=INT_MIN)
    assert taken and vm.r(RA) == BASE + 8
    taken, vm = branch(asm("bgezal", RA, 5), r31=INT_MIN)
    assert not taken and vm.r(RA) == BASE + 8


def test_j_jal() -> None:
    vm = VM([asm("jal", BASE + 0x100), asm("nop")])
    vm.step()
    assert (vm.state.pc, vm.state.next_pc, vm.r(RA)) == (BASE + 4, BASE + 0x100, BASE + 8)
    vm.step()
    assert vm.state.pc == BASE + 0x100
    vm = VM([asm("j", 0x0ABCDEF0)])
    vm.step()
    assert (vm.state.next_pc, vm.r(RA)) == (0x0ABCDEF0, 0)


def test_jr_jalr() -> None:
    vm = VM([asm("jr", T0)], {T0: 0x12345678})
    vm.step()
    assert (vm.state.pc, vm.state.next_pc) == (BASE + 4, 0x12345678)
    vm = VM([asm("jalr", T1, T0)], {T0: 0x2000})
    vm.step()
    assert (vm.state.next_pc, vm.r(T1)) == (0x2000, BASE + 8)
    vm = VM([asm("jalr", T0, T0)], {T0: 0x2000})  # rd = rs: the target is read first
    vm.step()
    assert (vm.state.next_pc, vm.r(T0)) == (0x2000, BASE + 8)
    vm = VM([asm("jalr", ZERO, T0)], {T0: 0x2000})  # link to r0 is dropped
    vm.step()
    assert (vm.state.next_pc, vm.r(ZERO)) == (0x2000, 0)


def test_jump_to_unaligned_target_faults_at_the_fetch() -> None:
    vm = VM([asm("jr", T0), asm("nop")], {T0: 0x2002})
    vm.run(2)
    assert vm.state.pc == 0x2002 and not vm.state.exited
    before = vm.snapshot()
    assert vm.step() == NO_ACCESS
    assert_fault(vm, Fault.UNALIGNED_FETCH, before)


def test_pc_wraps_at_the_top_of_memory() -> None:
    vm = VM([asm("addiu", T0, T0, 1)], at=0xFFFFFFFC)
    vm.step()
    assert (vm.state.pc, vm.state.next_pc) == (0, 4)
    vm = VM([asm("bal", 1)], at=0xFFFFFFFC)
    vm.step()
    assert (vm.state.pc, vm.state.next_pc, vm.r(RA)) == (0, 4, 4)


@pytest.mark.parametrize(
    "insn",
    [
        asm("beq", ZERO, ZERO, 3),
        asm("bne", T0, ZERO, 3),
        asm("blez", ZERO, 3),
        asm("bgtz", T0, 3),
        asm("bltz", T0, 3),
        asm("bgez", T0, 3),
        asm("bltzal", T0, 3),
        asm("bgezal", T0, 3),
        asm("j", BASE),
        asm("jal", BASE),
        asm("jr", RA),
        asm("jalr", RA),
    ],
)
def test_branch_in_delay_slot_faults(insn: int) -> None:
    # first as the second step after a jump, then from a state whose nextPC != pc + 4
    vm = VM([asm("j", BASE + 0x40), insn], {T0: 1, RA: 0x3000})
    vm.step()
    before = vm.snapshot()
    vm.step()
    assert_fault(vm, Fault.BRANCH_IN_DELAY_SLOT, before)
    vm = VM([insn], {T0: 1, RA: 0x3000})
    vm.state.next_pc = 0x5000
    before = vm.snapshot()
    vm.step()
    assert_fault(vm, Fault.BRANCH_IN_DELAY_SLOT, before)


def test_non_branches_run_in_delay_slots() -> None:
    vm = VM([asm("addiu", T0, T0, 1), asm("syscall")], {V0: 4045})
    vm.state.next_pc = 0x5000
    vm.step()
    assert (vm.state.pc, vm.state.next_pc, vm.r(T0)) == (0x5000, 0x5004, 1)


# --------------------------------------------------------------------------------------------------------
# Faults (section 7)
# --------------------------------------------------------------------------------------------------------
INVALID = [
    ("COP0 mfc0", 0x40000000),
    ("COP1 (FPU) add.s", 0x46000000),
    ("lwc1", 0xC4000000),
    ("sdc1", 0xF4000000),
    ("COP2", 0x48000000),
    ("COP1X", 0x4C000000),
    ("beql", i_type(0x14, 0, 0, 1)),
    ("bnel", i_type(0x15, 8, 0, 1)),
    ("blezl", i_type(0x16, 8, 0, 1)),
    ("bgtzl", i_type(0x17, 8, 0, 1)),
    ("bltzl", i_type(1, 8, 0x02, 1)),
    ("bgezl", i_type(1, 8, 0x03, 1)),
    ("bltzall", i_type(1, 8, 0x12, 1)),
    ("bgezall", i_type(1, 8, 0x13, 1)),
    ("REGIMM rt=0x0D", i_type(1, 8, 0x0D, 1)),
    ("REGIMM rt=0x0F", i_type(1, 8, 0x0F, 1)),
    ("REGIMM rt=0x18", i_type(1, 8, 0x18, 1)),
    ("synci", i_type(1, 8, 0x1F, 1)),
    ("SPECIAL3 seb/ext/ins", 0x7C000000 | r_type(0, 0, 8, 9, 0x10, 0x20)),
    ("pref", 0xCC000000),
    ("cache", 0xBC000000),
    ("lwu (MIPS64)", 0x9C000000),
    ("sdl", 0xB0000000),
    ("ld", 0xDC000000),
    ("opcode 0x18", 0x60000000),
    ("opcode 0x3F", 0xFC000000),
    ("movci (funct 1)", r_type(0, 8, 0, 9, 0, 0x01)),
    ("SPECIAL funct 5", r_type(0, 8, 9, 10, 0, 0x05)),
    ("SPECIAL funct 0x0E", r_type(0, 8, 9, 10, 0, 0x0E)),
    ("dsllv", r_type(0, 8, 9, 10, 0, 0x14)),
    ("dmult", r_type(0, 8, 9, 0, 0, 0x1C)),
    ("SPECIAL funct 0x28", r_type(0, 8, 9, 10, 0, 0x28)),
    ("SPECIAL funct 0x2C", r_type(0, 8, 9, 10, 0, 0x2C)),
    ("SPECIAL funct 0x35", r_type(0, 8, 9, 0, 0, 0x35)),
    ("SPECIAL funct 0x37", r_type(0, 8, 9, 0, 0, 0x37)),
    ("dsll", r_type(0, 0, 9, 10, 1, 0x38)),
    ("sdbbp", r_type(0x1C, 0, 0, 0, 0, 0x3F)),
    ("SPECIAL2 funct 3", r_type(0x1C, 8, 9, 10, 0, 0x03)),
    # nonzero fields the table marks 0
    ("rotr (srl with rs=1)", r_type(0, 1, 9, 10, 4, 0x02)),
    ("sll rs!=0", r_type(0, 8, 9, 10, 4, 0x00)),
    ("rotrv (srlv with sa=1)", r_type(0, 8, 9, 10, 1, 0x06)),
    ("srav sa!=0", r_type(0, 8, 9, 10, 2, 0x07)),
    ("addu sa!=0", r_type(0, 8, 9, 10, 1, 0x21)),
    ("slt sa!=0", r_type(0, 8, 9, 10, 1, 0x2A)),
    ("add sa!=0", r_type(0, 8, 9, 10, 1, 0x20)),
    ("jr rd!=0", r_type(0, 31, 0, 1, 0, 0x08)),
    ("jr rt!=0", r_type(0, 31, 1, 0, 0, 0x08)),
    ("jr.hb", r_type(0, 31, 0, 0, 0x10, 0x08)),
    ("jalr rt!=0", r_type(0, 8, 1, 31, 0, 0x09)),
    ("jalr.hb", r_type(0, 8, 0, 31, 0x10, 0x09)),
    ("movz sa!=0", r_type(0, 8, 9, 10, 1, 0x0A)),
    ("movn sa!=0", r_type(0, 8, 9, 10, 1, 0x0B)),
    ("sync rs!=0", r_type(0, 1, 0, 0, 0, 0x0F)),
    ("sync rd!=0", r_type(0, 0, 0, 1, 0, 0x0F)),
    ("mfhi rs!=0", r_type(0, 1, 0, 10, 0, 0x10)),
    ("mflo rt!=0", r_type(0, 0, 1, 10, 0, 0x12)),
    ("mflo sa!=0", r_type(0, 0, 0, 10, 1, 0x12)),
    ("mthi rd!=0", r_type(0, 8, 0, 10, 0, 0x11)),
    ("mtlo rt!=0", r_type(0, 8, 1, 0, 0, 0x13)),
    ("mult rd!=0", r_type(0, 8, 9, 10, 0, 0x18)),
    ("divu sa!=0", r_type(0, 8, 9, 0, 1, 0x1B)),
    ("madd rd!=0", r_type(0x1C, 8, 9, 10, 0, 0x00)),
    ("msubu sa!=0", r_type(0x1C, 8, 9, 0, 1, 0x05)),
    ("mul sa!=0", r_type(0x1C, 8, 9, 10, 1, 0x02)),
    ("clz rt!=rd", r_type(0x1C, 8, 9, 10, 0, 0x20)),
    ("clo sa!=0", r_type(0x1C, 8, 10, 10, 1, 0x21)),
    ("blez rt!=0", i_type(0x06, 8, 1, 1)),
    ("bgtz rt!=0", i_type(0x07, 8, 1, 1)),
    ("lui rs!=0", i_type(0x0F, 8, 9, 1)),
]


@pytest.mark.parametrize(("what", "insn"), INVALID, ids=[w for w, _ in INVALID])
def test_invalid_instruction(what: str, insn: int) -> None:
    faults(Fault.INVALID_INSTRUCTION, [insn], r8=4, r9=0, r31=0x3000)


def test_invalid_takes_precedence_over_delay_slot_and_alignment() -> None:
    vm = VM([i_type(0x06, 8, 1, 1)])  # blez with rt != 0, in a delay slot
    vm.state.next_pc = 0x5000
    vm.step()
    assert vm.state.exit_code == Fault.INVALID_INSTRUCTION
    faults(Fault.INVALID_INSTRUCTION, [0x9C000001], r0=0)  # lwu at an unaligned address


def test_unaligned_fetch() -> None:
    for pc in (BASE + 1, BASE + 2, BASE + 3):
        vm = VM([0, 0])
        vm.state.pc, vm.state.next_pc = pc, pc + 4
        before = vm.snapshot()
        vm.step()
        assert_fault(vm, Fault.UNALIGNED_FETCH, before)


@pytest.mark.parametrize(
    ("insn", "rs", "rt", "trapped"),
    [
        ("tge", neg(-1), 1, False),
        ("tge", 1, neg(-1), True),
        ("tge", 5, 5, True),
        ("tgeu", neg(-1), 1, True),
        ("tgeu", 1, neg(-1), False),
        ("tlt", neg(-1), 1, True),
        ("tlt", 5, 5, False),
        ("tltu", neg(-1), 1, False),
        ("tltu", 1, 2, True),
        ("teq", 0, 0, True),
        ("teq", 0, 1, False),
        ("tne", 0, 1, True),
        ("tne", 7, 7, False),
    ],
)
def test_register_traps(insn: str, rs: int, rt: int, trapped: bool) -> None:
    vm = VM([asm(insn, T0, T1)], {T0: rs, T1: rt})
    before = vm.snapshot()
    vm.step()
    if trapped:
        assert_fault(vm, Fault.TRAP, before)
    else:
        advanced(vm)


@pytest.mark.parametrize(
    ("insn", "rs", "imm", "trapped"),
    [
        ("tgei", neg(-1), 1, False),
        ("tgei", 1, -1, True),
        ("tgeiu", 5, -1, False),  # compares with 0xFFFFFFFF
        ("tgeiu", M, -1, True),
        ("tlti", neg(-2), -1, True),
        ("tlti", 0, -1, False),
        ("tltiu", 5, -1, True),
        ("tltiu", 5, 5, False),
        ("teqi", M, -1, True),
        ("teqi", 0xFFFF, -1, False),
        ("tnei", M, -1, False),
        ("tnei", 3, 4, True),
    ],
)
def test_immediate_traps(insn: str, rs: int, imm: int, trapped: bool) -> None:
    vm = VM([asm(insn, T0, imm)], {T0: rs})
    before = vm.snapshot()
    vm.step()
    if trapped:
        assert_fault(vm, Fault.TRAP, before)
    else:
        advanced(vm)


def test_break_traps_and_code_fields_are_ignored() -> None:
    faults(Fault.TRAP, [asm("break")])
    faults(Fault.TRAP, [asm("break", 0xFFFFF)])
    faults(Fault.TRAP, [r_type(0, T0, 0, 0, 7, 0x34)])  # teq t0, zero, 7 (gcc's /0 check)
    vm = VM([asm("syscall", 0xFFFFF)], {V0: 4045})
    vm.step()
    assert vm.r(V0) == BRK_FIXED
    vm = VM([asm("sync") | (5 << 6)])  # sync's stype field is free
    vm.step()
    advanced(vm)


def test_fault_is_terminal_and_counts_one_step() -> None:
    vm = VM([asm("break"), asm("addiu", T0, T0, 1)])
    vm.state.step = 41
    vm.step()
    assert vm.state.step == 42 and vm.state.status == Status.PANIC
    encoded = vm.state.encode()
    for _ in range(3):
        assert vm.step() == NO_ACCESS
    assert vm.state.encode() == encoded


def test_step_counter_wraps_at_64_bits() -> None:
    vm = VM([0])
    vm.state.step = 2**64 - 1
    vm.step()
    assert vm.state.step == 0


# --------------------------------------------------------------------------------------------------------
# Syscalls (section 6)
# --------------------------------------------------------------------------------------------------------
def syscall(num: int, *args: int, heap: int = HEAP_START, oracle: PreimageOracle | None = None) -> VM:
    regs = {V0: num, A3: 0x77, **{A0 + i: a for i, a in enumerate(args)}}
    vm = VM([asm("syscall")], regs, oracle=oracle or PreimageOracle())
    vm.state.heap = heap
    vm.step()
    return vm


def ok(vm: VM, v0: int) -> None:
    advanced(vm)
    assert (vm.r(V0), vm.r(A3)) == (v0, 0)


def err(vm: VM, errno: int) -> None:
    advanced(vm)
    assert (vm.r(V0), vm.r(A3)) == (errno, 1)


def test_exit_and_exit_group() -> None:
    for num in (4001, 4246):
        vm = VM([asm("syscall")], {V0: num, A0: 0x1FF, T0: 5})
        regs = list(vm.state.regs)
        vm.step()
        s = vm.state
        assert s.exited and s.exit_code == 0xFF and s.status == Status.PANIC
        assert (s.pc, s.next_pc, s.regs, s.step) == (BASE, BASE + 4, regs, 1)
    assert syscall(4246, 0).state.status == Status.VALID
    assert syscall(4246, 1).state.status == Status.INVALID
    assert syscall(4001, 0x100).state.status == Status.VALID  # & 0xFF
    assert syscall(4001, 2).state.status == Status.PANIC


def test_exited_state_is_a_fixed_point() -> None:
    vm = syscall(4246, 0)
    encoded = vm.state.encode()
    assert vm.step() == NO_ACCESS
    assert vm.state.encode() == encoded
    assert run(vm.state, vm.mem, vm.oracle, 10) == 0


def test_mmap() -> None:
    vm = syscall(4090, 0, 1)
    ok(vm, HEAP_START)
    assert vm.state.heap == HEAP_START + 4096  # rounded up to 4 KiB
    vm = syscall(4090, 0, 8192, heap=HEAP_START + 4096)
    ok(vm, HEAP_START + 4096)
    assert vm.state.heap == HEAP_START + 3 * 4096


def test_mmap_einval() -> None:
    for args in [(0x1000, 4096), (0, 0), (HEAP_START, 4096)]:
        vm = syscall(4090, *args)
        err(vm, 22)
        assert vm.state.heap == HEAP_START


def test_mmap_enomem_near_heap_end() -> None:
    ok(syscall(4090, 0, 4096, heap=HEAP_END - 4096), HEAP_END - 4096)
    ok(syscall(4090, 0, 4095, heap=HEAP_END - 4096), HEAP_END - 4096)
    for length in (4097, 8192, 0x40000000, 0x7FFFFFFF, M):
        vm = syscall(4090, 0, length, heap=HEAP_END - 4096)
        err(vm, 12)
        assert vm.state.heap == HEAP_END - 4096
    vm = syscall(4090, 0, 1, heap=HEAP_END)
    err(vm, 12)
    ok(syscall(4090, 0, HEAP_END - HEAP_START), HEAP_START)
    err(syscall(4090, 0, HEAP_END - HEAP_START + 1), 12)


def test_brk() -> None:
    ok(syscall(4045, 0), BRK_FIXED)
    ok(syscall(4045, 0x12345678), BRK_FIXED)


def test_read_fd0_and_bad_fds() -> None:
    ok(syscall(4003, 0, DATA, 100), 0)
    for fd in (1, 2, 3, 4, 6, 7, M):
        err(syscall(4003, fd, DATA, 100), 9)
    for fd in (0, 4, 5, 7, M):
        err(syscall(4004, fd, DATA, 100), 9)


def test_write_stdout_stderr_output() -> None:
    for fd in (1, 2, 3):
        vm = VM([asm("syscall")], {V0: 4004, A0: fd, A1: DATA + 3, A2: 5})
        vm.mem.write(DATA, b"abcdefghij")
        pages = vm.snapshot()[1]
        assert vm.step() == NO_ACCESS  # no memory access in the proof
        ok(vm, 5)
        assert vm.writes == [(fd, b"defgh")]
        assert vm.snapshot()[1] == pages
    vm = VM([asm("syscall")], {V0: 4004, A0: 1, A1: DATA, A2: 0})
    vm.step()
    ok(vm, 0)
    assert vm.writes == [(1, b"")]


def test_write_observed_without_read_bytes() -> None:
    """A WordMemory without `read`/`read_bytes` is read word by word for on_write."""
    from mipsvm.step import step

    class Words:
        def __init__(self) -> None:
            self.mem = VM([asm("syscall")]).mem
            self.mem.write(DATA, b"0123456789")

        def read_u32(self, addr: int) -> int:
            assert addr % 4 == 0
            return self.mem.read_u32(addr)

        def write_u32(self, addr: int, value: int) -> None:
            raise AssertionError

    words = Words()
    state = State(pc=BASE, next_pc=BASE + 4, regs=[0] * 32)
    state.regs[V0], state.regs[A0], state.regs[A1], state.regs[A2] = 4004, 2, DATA + 1, 6
    seen: list[tuple[int, bytes]] = []
    step(state, words, PreimageOracle(), lambda fd, b: seen.append((fd, b)))
    assert seen == [(2, b"123456")]


DATA_BYTES = bytes(range(200))


def preimage_vm(words: list[int], **regs: int) -> VM:
    store = PreimageStore()
    key = store.put(DATA_BYTES)
    local = LocalData({1: key})
    vm = VM(words, {int(k[1:]): v for k, v in regs.items()}, oracle=PreimageOracle(store, local))
    vm.mem.write(DATA, key)
    vm.mem.write(DATA + 32, local_key(1))
    return vm


def test_preimage_select() -> None:
    vm = preimage_vm([asm("syscall")], r2=4004, r4=6, r5=DATA, r6=32)
    vm.state.preimage_offset = 99
    assert vm.step() == Access(DATA)
    ok(vm, 32)
    assert vm.state.preimage_key == keccak_key(DATA_BYTES)
    assert vm.state.preimage_offset == 0


@pytest.mark.parametrize(("buf", "n"), [(DATA + 4, 32), (DATA + 1, 32), (DATA, 31), (DATA, 64), (DATA, 0)])
def test_preimage_select_einval(buf: int, n: int) -> None:
    vm = preimage_vm([asm("syscall")], r2=4004, r4=6, r5=buf, r6=n)
    vm.state.preimage_key, vm.state.preimage_offset = b"\x07" * 32, 5
    assert vm.step() == Access(buf)
    err(vm, 22)
    assert (vm.state.preimage_key, vm.state.preimage_offset) == (b"\x07" * 32, 5)


def read_step(vm: VM, buf: int, n: int) -> tuple[int, Access]:
    vm.state.regs[V0], vm.state.regs[A0], vm.state.regs[A1], vm.state.regs[A2] = 4003, 5, buf, n
    vm.state.pc, vm.state.next_pc = BASE, BASE + 4
    access = vm.step()
    assert vm.r(A3) == 0
    return vm.r(V0), access


def test_preimage_reads_whole_stream() -> None:
    vm = preimage_vm([asm("syscall")])
    vm.state.preimage_key = keccak_key(DATA_BYTES)
    stream = len(DATA_BYTES).to_bytes(8, "big") + DATA_BYTES
    got = b""
    buf = 0x10001000
    while True:
        offset = vm.state.preimage_offset
        n, access = read_step(vm, buf + len(got), 1000)
        assert access == Access(buf + len(got), (keccak_key(DATA_BYTES), offset))
        if n == 0:
            break
        assert n == 32 or len(got) + n == len(stream)
        got += vm.mem.read(buf + len(got), n)
    assert got == stream
    assert vm.state.preimage_offset == len(stream)
    assert read_step(vm, buf, 32)[0] == 0  # stays at the end
    assert vm.mem.read(buf + len(stream), 64) == bytes(64)  # nothing written past the stream


def test_preimage_read_partial_leaf_and_short_n() -> None:
    vm = preimage_vm([asm("syscall")])
    vm.state.preimage_key = keccak_key(DATA_BYTES)
    stream = len(DATA_BYTES).to_bytes(8, "big") + DATA_BYTES
    vm.mem.write(DATA + 0x40, b"\xee" * 32)
    n, _ = read_step(vm, DATA + 0x40 + 21, 100)  # 11 bytes left in the leaf
    assert n == 11
    assert vm.mem.read(DATA + 0x40, 32) == b"\xee" * 21 + stream[:11]
    n, _ = read_step(vm, DATA + 0x40 + 1, 3)  # n smaller than the leaf and the stream
    assert n == 3
    assert vm.mem.read(DATA + 0x40, 32) == b"\xee" + stream[11:14] + b"\xee" * 17 + stream[:11]
    assert vm.state.preimage_offset == 14
    n, _ = read_step(vm, DATA + 0x40, 0)
    assert n == 0 and vm.state.preimage_offset == 14
    vm.state.preimage_offset = len(stream) - 5  # the stream ends before the leaf
    n, _ = read_step(vm, DATA + 0x80, 32)
    assert n == 5 and vm.mem.read(DATA + 0x80, 32) == stream[-5:] + bytes(27)


def test_preimage_read_local_key() -> None:
    vm = preimage_vm([asm("syscall")])
    vm.state.preimage_key = local_key(1)
    n, _ = read_step(vm, DATA + 0x100, 32)
    assert n == 32 and vm.mem.read(DATA + 0x100, 32) == (32).to_bytes(8, "big") + keccak_key(DATA_BYTES)[:24]


def test_preimage_read_missing_key_raises_and_leaves_the_state() -> None:
    for key in (bytes(32), keccak_key(b"nobody has this"), local_key(2), b"\x03" + bytes(31)):
        vm = preimage_vm([asm("syscall")], r2=4003, r4=5, r5=DATA, r6=32)
        vm.state.preimage_key = key
        before = vm.snapshot()
        with pytest.raises(PreimageMissing):
            vm.step()
        assert vm.snapshot() == before


def test_unknown_syscall_faults() -> None:
    for num in (0, 4000, 4002, 4005, 4010, 4044, 4091, 4166, 4210, 4247, M):
        vm = VM([asm("syscall")], {V0: num})
        before = vm.snapshot()
        vm.step()
        assert_fault(vm, Fault.UNKNOWN_SYSCALL, before)


# --------------------------------------------------------------------------------------------------------
# Classes of findings from audits of Cannon (Cantina and others): each pinned by a test
# --------------------------------------------------------------------------------------------------------
def test_cantina_mmap_wraparound() -> None:
    """A length near 2^32 must not round up to 0, nor heap + len wrap past 2^32 into 'free' memory."""
    vm = syscall(4090, 0, 0xFFFFF001)  # rounds to 2^32 in 33+ bits, to 0 in 32 bits
    err(vm, 12)
    assert vm.state.heap == HEAP_START
    vm = syscall(4090, 0, 0xA0001000, heap=0x5FFFF000)  # heap + len = 2^32 + 0x1000 wraps in 32 bits
    err(vm, 12)
    assert vm.state.heap == 0x5FFFF000


def test_cantina_unknown_syscall_does_not_succeed() -> None:
    vm = VM([asm("syscall")], {V0: 4005, A3: 0})  # open(): must not return 0 as if done
    vm.step()
    assert vm.state.exited and vm.state.exit_code == Fault.UNKNOWN_SYSCALL


def test_cantina_unaligned_access_not_silently_aligned() -> None:
    vm = mem_vm([asm("lw", T2, 2, S0)])
    vm.step()
    assert vm.state.exit_code == Fault.UNALIGNED_ACCESS and vm.r(T2) == 0
    vm = mem_vm([asm("sw", T2, 1, S0)], r10=0xFFFFFFFF)
    vm.step()
    assert vm.state.exit_code == Fault.UNALIGNED_ACCESS
    assert vm.mem.read(DATA, 8) == bytes(range(0x11, 0x19))


def test_cantina_srav_masks_shift_to_5_bits() -> None:
    assert run1("srav", T2, T0, T1, r8=0x80000000, r9=0xFFFFFFE1).r(T2) == 0xC0000000  # by 1, not by 2^32-31
    assert run1("srav", T2, T0, T1, r8=0x40000000, r9=32).r(T2) == 0x40000000
    assert run1("srav", T2, T0, T1, r8=0x80000000, r9=63).r(T2) == M


def test_cantina_mthi_mtlo_write_no_register() -> None:
    for name in ("mthi", "mtlo"):
        vm = VM([asm(name, T0)], {T0: 0x1234, T1: 5})
        regs = list(vm.state.regs)
        vm.step()
        assert vm.state.regs == regs
        assert (vm.state.hi if name == "mthi" else vm.state.lo) == 0x1234
        faults(Fault.INVALID_INSTRUCTION, [asm(name, T0) | (T1 << 11)], r8=1)  # rd field set


def test_cantina_j_jal_region_bits_from_next_pc() -> None:
    """A jump in the last word of a 256 MiB region takes the region bits of its delay slot's address."""
    for name in ("j", "jal"):
        vm = VM([asm(name, 0x00000100)], at=0x0FFFFFFC)
        vm.step()
        assert vm.state.pc == 0x10000000
        assert vm.state.next_pc == 0x10000100  # not 0x00000100 (region of pc)
        assert vm.r(RA) == (0x10000004 if name == "jal" else 0)


def test_cantina_bgezal_bltzal_present() -> None:
    taken, vm = branch(asm("bgezal", T0, 5), r8=1)
    assert taken and vm.r(RA) == BASE + 8
    taken, vm = branch(asm("bltzal", T0, 5), r8=M)
    assert taken and vm.r(RA) == BASE + 8


def test_cantina_non_boolean_exited_rejected() -> None:
    encoded = bytearray(State().encode())
    encoded[89] = 2
    with pytest.raises(StateError, match="exited"):
        State.decode(bytes(encoded))
    encoded[89] = 1
    assert State.decode(bytes(encoded)).exited is True


def test_cantina_branch_in_delay_slot() -> None:
    vm = VM([asm("beq", ZERO, ZERO, 4), asm("jal", BASE + 0x80)])
    vm.step()
    vm.step()
    assert vm.state.exit_code == Fault.BRANCH_IN_DELAY_SLOT
    assert vm.r(RA) == 0


# --------------------------------------------------------------------------------------------------------
# Whole programs, compared with qemu-mips
# --------------------------------------------------------------------------------------------------------
needs_qemu = pytest.mark.requires("qemu", "mips-cc")


def run_program(path, max_steps: int = 5_000_000) -> tuple[State, list[tuple[int, bytes]]]:
    prog = load_elf(path)
    writes: list[tuple[int, bytes]] = []
    run(prog.state, prog.memory, PreimageOracle(), max_steps, lambda fd, b: writes.append((fd, b)))
    assert prog.state.exited, "the program did not finish"
    return prog.state, writes


def test_hello_program() -> None:
    state, writes = run_program(program("hello.S"))
    assert writes == [(1, b"hello\n")]
    assert state.status == Status.VALID and state.step == 9


@needs_qemu
def test_c_program_runs_to_completion_like_qemu() -> None:
    elf = program("compute.c")
    state, writes = run_program(elf)
    assert state.status == Status.VALID
    stdout = b"".join(b for fd, b in writes if fd == 1)
    assert stdout.startswith(b"primes 550 00000f95 ")
    assert b"read 0 badfd -9" in stdout
    assert [fd for fd, _ in writes] == [1, 3]
    qemu = subprocess.run(["qemu-mips", str(elf)], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert qemu.returncode == 0
    assert qemu.stdout == stdout


def _alu_program(seed: int, n: int) -> tuple[str, list[str]]:
    """Assembly computing `n` random ALU/HI-LO/memory operations, storing every result to `out`, then
    writing `out` to fd 1. Instructions are emitted as .word so the assembler adds nothing."""
    rnd = random.Random(seed)
    special = [0, 1, 2, 0x7FFFFFFF, INT_MIN, M, M - 1, 0x80000001, 0xFFFF, 0x8000, 31, 32, 33]

    def value() -> int:
        return rnd.choice(special) if rnd.random() < 0.4 else rnd.getrandbits(32)

    lines = [".set noreorder", ".set noat", ".text", ".globl __start", "__start:"]
    lines += [
        "lui $16, %hi(out)",
        "addiu $16, $16, %lo(out)",
        "lui $17, %hi(scratch)",
        "addiu $17, $17, %lo(scratch)",
    ]

    def li(reg: int, v: int) -> None:
        lines.append(f".word {asm('lui', reg, v >> 16):#x}, {asm('ori', reg, reg, v & 0xFFFF):#x}")

    def save(reg: int) -> None:
        lines.append(f".word {asm('sw', reg, 0, 16):#x}, {asm('addiu', 16, 16, 4):#x}")

    three = ["addu", "subu", "and", "or", "xor", "nor", "slt", "sltu", "movz", "movn", "mul"]
    shifts = ["sll", "srl", "sra"]
    vshifts = ["sllv", "srlv", "srav"]
    imm_ops = ["addiu", "slti", "sltiu", "andi", "ori", "xori"]
    hilo_ops = ["mult", "multu", "div", "divu", "madd", "maddu", "msub", "msubu"]
    mem_loads = ["lb", "lbu", "lh", "lhu", "lw", "lwl", "lwr"]
    mem_stores = ["sb", "sh", "sw", "swl", "swr"]
    what: list[str] = []  # a description of each stored result
    for _ in range(n):
        kind = rnd.randrange(7)
        regs = [value(), value(), value()]
        for reg, v in zip((8, 9, 10), regs, strict=True):
            li(reg, v)
        start = len(lines)
        if kind == 0:
            lines.append(f".word {asm(rnd.choice(three), 10, 8, 9):#x}")
        elif kind == 1:
            lines.append(
                f".word {asm(rnd.choice(shifts), 10, 8, rnd.choice([0, 1, 31, rnd.randrange(32)])):#x}"
            )
        elif kind == 2:
            lines.append(f".word {asm(rnd.choice(vshifts), 10, 8, 9):#x}")
        elif kind == 3:
            lines.append(f".word {asm(rnd.choice(imm_ops), 10, 8, rnd.getrandbits(16)):#x}")
        elif kind == 4:
            lines.append(f".word {asm(rnd.choice(['clz', 'clo']), 10, 8):#x}")
        elif kind == 5:
            li(11, value())
            li(12, value())
            lines.append(f".word {asm('mthi', 11):#x}, {asm('mtlo', 12):#x}")
            name = rnd.choice(hilo_ops)
            if name.startswith("div") and regs[1] == 0:  # see test_division_by_zero_vs_qemu
                regs[1] = 3
                li(9, 3)
            lines.append(f".word {asm(name, 8, 9):#x}")
            lines.append(f".word {asm('mfhi', 10):#x}")
            save(10)
            lines.append(f".word {asm('mflo', 10):#x}")
            what.append(f"hi of {lines[start:]} with {[hex(v) for v in regs]}")
        else:
            off = rnd.randrange(64)
            li(11, value())
            lines.append(f".word {asm('sw', 11, off & ~3, 17):#x}")
            if rnd.random() < 0.5:
                name = rnd.choice(mem_loads)
                if name in ("lh", "lhu"):
                    off &= ~1
                if name == "lw":
                    off &= ~3
                lines.append(f".word {asm(name, 10, off, 17):#x}")
            else:
                name = rnd.choice(mem_stores)
                if name == "sh":
                    off &= ~1
                if name == "sw":
                    off &= ~3
                lines.append(f".word {asm(name, 8, off, 17):#x}")
                lines.append(f".word {asm('lw', 10, off & ~3, 17):#x}")
        what.append(f"{lines[start:]} with {[hex(v) for v in regs]}")
        save(10)
    lines += [
        "li $2, 4004",
        "li $4, 1",
        "lui $5, %hi(out)",
        "addiu $5, $5, %lo(out)",
        f"li $6, {4 * len(what)}",
        "syscall",
        "li $2, 4246",
        "li $4, 0",
        "syscall",
        ".data",
        ".align 5",
        "scratch: .space 128",
        f"out: .space {4 * len(what)}",
    ]
    return "\n".join(lines) + "\n", what


@needs_qemu
def test_alu_matches_qemu() -> None:
    """Thousands of random operands through every ALU, HI/LO and load/store instruction, vs qemu-mips
    (including division by zero and INT_MIN / -1, whose results the spec defines as QEMU's)."""
    text, what = _alu_program(seed=1, n=1500)
    elf = build_source(text, name="alu")
    _, writes = run_program(elf)
    ours = b"".join(b for fd, b in writes if fd == 1)
    assert len(ours) == 4 * len(what)
    qemu = subprocess.run(["qemu-mips", str(elf)], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert qemu.returncode == 0, qemu.stderr
    if qemu.stdout != ours:
        first = next(i for i in range(0, len(ours), 4) if ours[i : i + 4] != qemu.stdout[i : i + 4])
        theirs = qemu.stdout[first : first + 4].hex()
        pytest.fail(f"{what[first // 4]}: ours {ours[first : first + 4].hex()}, qemu {theirs}")


def test_initial_stack_is_zero() -> None:
    prog = load_elf(program("hello.S"))
    sp = prog.state.regs[SP]
    assert sp == STACK_TOP - 16
    assert prog.memory.read(sp, 16) == bytes(16)


@needs_qemu
def test_division_by_zero_vs_qemu() -> None:
    lines = [".set noreorder", ".set noat", ".text", ".globl __start", "__start:"]
    lines += ["lui $16, %hi(out)", "addiu $16, $16, %lo(out)"]
    for name, x in [("div", 5), ("div", 0xFFFFFFFB), ("divu", 5)]:
        lines += [f"li $8, {x:#x}", f".word {asm(name, 8, 0):#x}", "mfhi $9", "mflo $10", "sw $9, 0($16)"]
        lines += ["sw $10, 4($16)", "addiu $16, $16, 8"]
    lines += ["li $2, 4004", "li $4, 1", "lui $5, %hi(out)", "addiu $5, $5, %lo(out)", "li $6, 24", "syscall"]
    lines += ["li $2, 4246", "li $4, 0", "syscall", ".data", "out: .space 24"]
    elf = build_source("\n".join(lines) + "\n", name="div0")
    _, writes = run_program(elf)
    qemu = subprocess.run(["qemu-mips", str(elf)], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert qemu.stdout == writes[0][1]
