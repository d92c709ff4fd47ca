"""The reference stepper: one step of the rollml MIPS32 VM, written straight from docs/vm-spec.md.

The Solidity verifier (contracts/src/MIPS.sol) mirrors this file function by function, so the code is plain
integer arithmetic on 32-bit values with shifts and masks, and every function says which section of the spec
it implements. It is also the fallback executor of the fast (Unicorn) executor, so the hot path avoids
allocation: an ordinary step returns the shared `NO_ACCESS`.

Conventions: every register value is an unsigned int in [0, 2^32); a guest error is a *fault* (spec section
7), a defined transition that changes only `exited`, `exitCode` and `step`, so every fault check comes before
the first change of the state. Helpers that can fault return a negative number, `-code`. The fault order of
one instruction is: UNALIGNED_FETCH, then INVALID_INSTRUCTION (decoding), then the instruction's own fault
(BRANCH_IN_DELAY_SLOT, UNALIGNED_ACCESS, TRAP, OVERFLOW or UNKNOWN_SYSCALL; at most one can apply).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mipsvm.constants import (
    BRK_FIXED,
    EBADF,
    EINVAL,
    ENOMEM,
    FD_OUTPUT,
    FD_PREIMAGE_KEY,
    FD_PREIMAGE_READ,
    FD_STDERR,
    FD_STDIN,
    FD_STDOUT,
    HEAP_END,
    PAGE_SIZE,
    SYS_BRK,
    SYS_EXIT,
    SYS_EXIT_GROUP,
    SYS_MMAP,
    SYS_READ,
    SYS_WRITE,
    Fault,
)
from mipsvm.memory import Memory
from mipsvm.state import State

MASK = 0xFFFFFFFF
SIGN = 0x80000000
U64 = (1 << 64) - 1

# Fault codes as plain ints (IntEnum compares are slower on the hot path).
INVALID_INSTRUCTION = int(Fault.INVALID_INSTRUCTION)
UNALIGNED_ACCESS = int(Fault.UNALIGNED_ACCESS)
UNALIGNED_FETCH = int(Fault.UNALIGNED_FETCH)
BRANCH_IN_DELAY_SLOT = int(Fault.BRANCH_IN_DELAY_SLOT)
TRAP = int(Fault.TRAP)
UNKNOWN_SYSCALL = int(Fault.UNKNOWN_SYSCALL)
OVERFLOW = int(Fault.OVERFLOW)


class Oracle(Protocol):
    def stream_part(self, key: bytes, offset: int) -> tuple[bytes, int]:
        """32 bytes of the key's stream (u64be(len) ++ data) from `offset`, zero-padded, and the stream's
        length. Raises PreimageMissing if the key is unknown."""
        ...


class WordMemory(Protocol):
    def read_u32(self, addr: int) -> int: ...  # `addr` is 4-aligned

    def write_u32(self, addr: int, value: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Access:
    """What one step touched besides the instruction fetch (spec section 10)."""

    data_addr: int  # the address of the second proven leaf; 0 when the step touches no data
    preimage: tuple[bytes, int] | None = None  # (key, offset) of the stream part a preimage read used


NO_ACCESS = Access(0, None)

OnWrite = Callable[[int, bytes], None]


# --------------------------------------------------------------------------------------------------------
# Section 4: one step
# --------------------------------------------------------------------------------------------------------
def step(state: State, mem: WordMemory, oracle: Oracle, on_write: OnWrite | None = None) -> Access:
    """Execute one instruction of `state` in place (all fields but `mem_root`; the caller recomputes roots).

    Raises only for a malformed witness: a memory access the proof does not cover (ProofMemory) or a
    preimage the oracle does not hold (PreimageMissing); the state is then unchanged. Every guest error is
    a fault instead.
    """
    if state.exited:
        return NO_ACCESS  # exited states are fixed points (section 2)
    count = state.step
    state.step = (count + 1) & U64  # counted on every step, faults included
    try:
        pc = state.pc
        if pc & 3:
            return fault(state, UNALIGNED_FETCH)
        insn = mem.read_u32(pc)
        op = insn >> 26
        regs = state.regs

        if op == 0:  # SPECIAL
            fn = insn & 0x3F
            rs = regs[(insn >> 21) & 31]
            rt = regs[(insn >> 16) & 31]
            if fn < 0x08 or 0x20 <= fn < 0x30:  # shifts, arithmetic
                value = execute(insn, rs, rt)
                if value < 0:
                    return fault(state, -value)
                return handle_rd(state, (insn >> 11) & 31, value)
            if fn <= 0x09:  # jr, jalr
                if insn & (0x001F07C0 if fn == 0x09 else 0x001FFFC0):  # rt=0, sa=0 (and rd=0 for jr)
                    return fault(state, INVALID_INSTRUCTION)
                return handle_jump(state, rs, (insn >> 11) & 31)  # the target is read before the link write
            if fn <= 0x0B:  # movz, movn
                if insn & 0x7C0:
                    return fault(state, INVALID_INSTRUCTION)
                if (rt == 0) == (fn == 0x0A):
                    return handle_rd(state, (insn >> 11) & 31, rs)
                return handle_rd(state, 0, 0)
            if fn == 0x0C:
                return handle_syscall(state, mem, oracle, on_write)
            if fn == 0x0D:  # break
                return fault(state, TRAP)
            if fn == 0x0F:  # sync
                if insn & 0x03FFF800:
                    return fault(state, INVALID_INSTRUCTION)
                return handle_rd(state, 0, 0)
            if 0x10 <= fn <= 0x1B:
                return handle_hilo(state, insn, rs, rt)
            if fn >= 0x30:
                return handle_trap(state, fn, rs, rt)
            return fault(state, INVALID_INSTRUCTION)

        if op >= 0x20:
            return load_store(state, mem, insn, op)

        if op >= 0x08:
            if op < 0x10:  # ALU with an immediate: andi/ori/xori zero-extend it, the others sign-extend it
                imm = insn & 0xFFFF
                if op < 0x0C and imm & 0x8000:
                    imm |= 0xFFFF0000
                value = execute(insn, regs[(insn >> 21) & 31], imm)
                if value < 0:
                    return fault(state, -value)
                return handle_rd(state, (insn >> 16) & 31, value)
            if op == 0x1C:  # SPECIAL2
                fn = insn & 0x3F
                rs = regs[(insn >> 21) & 31]
                rt = regs[(insn >> 16) & 31]
                if fn == 0x00 or fn == 0x01 or fn == 0x04 or fn == 0x05:  # madd, maddu, msub, msubu
                    return handle_hilo(state, insn, rs, rt)
                value = execute(insn, rs, rt)
                if value < 0:
                    return fault(state, -value)
                return handle_rd(state, (insn >> 11) & 31, value)
            return fault(state, INVALID_INSTRUCTION)  # COP0/1/2, COP1X, branch-likely, ...

        if op >= 0x04 or op == 0x01:
            return handle_branch(state, insn)

        if op >= 0x02:  # j, jal: region bits from the delay slot's address
            target = (state.next_pc & 0xF0000000) | ((insn & 0x03FFFFFF) << 2)
            return handle_jump(state, target, 31 if op == 0x03 else 0)

        return fault(state, INVALID_INSTRUCTION)  # unreachable: op is 0..3 here and 0, 1 are handled
    except BaseException:  # a malformed witness: leave the state as it was
        state.step = count
        raise


def fault(state: State, code: int) -> Access:
    """Section 7: the terminal panic state. `step` already counted this step; nothing else changes."""
    state.exited = True
    state.exit_code = code
    return NO_ACCESS


def handle_rd(state: State, rd: int, value: int) -> Access:
    """Write `value` to register `rd` (dropped for r0) and move on to the next instruction."""
    if rd:
        state.regs[rd] = value
    next_pc = state.next_pc
    state.pc = next_pc
    state.next_pc = (next_pc + 4) & MASK
    return NO_ACCESS


# --------------------------------------------------------------------------------------------------------
# Section 5: the ALU
# --------------------------------------------------------------------------------------------------------
def execute(insn: int, rs: int, rt: int) -> int:
    """The value an ALU instruction writes to its destination register, or `-fault`.

    `rs` is R[rs]; `rt` is R[rt] for SPECIAL/SPECIAL2 and the extended immediate for the immediate opcodes.
    Covers SPECIAL shifts (0x00-0x07) and arithmetic (0x20-0x2B), the immediate opcodes 0x08-0x0F and
    SPECIAL2 mul/clz/clo. Checks the reserved fields of exactly these instructions.
    """
    op = insn >> 26
    if op == 0:
        fn = insn & 0x3F
        if fn >= 0x20:
            if insn & 0x7C0:  # sa=0
                return -INVALID_INSTRUCTION
            if fn == 0x21:  # addu
                return (rs + rt) & MASK
            if fn == 0x23:  # subu
                return (rs - rt) & MASK
            if fn == 0x24:  # and
                return rs & rt
            if fn == 0x25:  # or
                return rs | rt
            if fn == 0x26:  # xor
                return rs ^ rt
            if fn == 0x27:  # nor
                return (rs | rt) ^ MASK
            if fn == 0x2A:  # slt
                return 1 if (rs ^ SIGN) < (rt ^ SIGN) else 0
            if fn == 0x2B:  # sltu
                return 1 if rs < rt else 0
            if fn == 0x20:  # add
                return add_checked(rs, rt)
            if fn == 0x22:  # sub
                return sub_checked(rs, rt)
            return -INVALID_INSTRUCTION
        # fn < 0x08: shifts
        if fn & 4:  # sllv, srlv, srav: sa=0; the amount is R[rs] & 31
            if insn & 0x7C0:
                return -INVALID_INSTRUCTION
            sa = rs & 31
        else:  # sll, srl, sra: rs=0
            if insn & 0x03E00000:
                return -INVALID_INSTRUCTION
            sa = (insn >> 6) & 31
        kind = fn & 3
        if kind == 0:
            return (rt << sa) & MASK
        if kind == 2:
            return rt >> sa
        if kind == 3:
            return sra(rt, sa)
        return -INVALID_INSTRUCTION  # funct 0x01, 0x05 (MOVCI and a hole)

    if op == 0x1C:  # SPECIAL2: mul, clz, clo (madd/msub are handle_hilo's)
        fn = insn & 0x3F
        if insn & 0x7C0:  # sa=0
            return -INVALID_INSTRUCTION
        if fn == 0x02:  # mul
            return (rs * rt) & MASK
        if fn == 0x20 or fn == 0x21:  # clz, clo: rt must equal rd
            if ((insn >> 16) ^ (insn >> 11)) & 31:
                return -INVALID_INSTRUCTION
            return 32 - (rs if fn == 0x20 else rs ^ MASK).bit_length()
        return -INVALID_INSTRUCTION

    # immediates (op 0x08..0x0F), `rt` is the extended immediate
    if op == 0x09:  # addiu
        return (rs + rt) & MASK
    if op == 0x0D:  # ori
        return rs | rt
    if op == 0x0C:  # andi
        return rs & rt
    if op == 0x0F:  # lui: rs=0
        if insn & 0x03E00000:
            return -INVALID_INSTRUCTION
        return (rt << 16) & MASK
    if op == 0x0A:  # slti
        return 1 if (rs ^ SIGN) < (rt ^ SIGN) else 0
    if op == 0x0B:  # sltiu
        return 1 if rs < rt else 0
    if op == 0x0E:  # xori
        return rs ^ rt
    if op == 0x08:  # addi
        return add_checked(rs, rt)
    return -INVALID_INSTRUCTION


def add_checked(a: int, b: int) -> int:
    """a + b, or -OVERFLOW when the signed sum does not fit 32 bits."""
    s = (a + b) & MASK
    if (a ^ s) & (b ^ s) & SIGN:
        return -OVERFLOW
    return s


def sub_checked(a: int, b: int) -> int:
    """a - b, or -OVERFLOW when the signed difference does not fit 32 bits."""
    d = (a - b) & MASK
    if (a ^ b) & (a ^ d) & SIGN:
        return -OVERFLOW
    return d


def sra(v: int, sa: int) -> int:
    """Arithmetic shift right of the 32-bit `v` by `sa` in 0..31."""
    if v & SIGN:
        return ((v >> sa) | (MASK << (32 - sa))) & MASK
    return v >> sa


def signed(v: int) -> int:
    return v - (1 << 32) if v & SIGN else v


# --------------------------------------------------------------------------------------------------------
# Section 4/5: branches and jumps
# --------------------------------------------------------------------------------------------------------
def handle_branch(state: State, insn: int) -> Access:
    """beq, bne, blez, bgtz (op 4..7) and REGIMM (op 1): branches, branch-and-link and immediate traps."""
    regs = state.regs
    op = insn >> 26
    rs = regs[(insn >> 21) & 31]
    rt_field = (insn >> 16) & 31
    link = False
    if op == 0x04:  # beq
        taken = rs == regs[rt_field]
    elif op == 0x05:  # bne
        taken = rs != regs[rt_field]
    elif op == 0x06:  # blez: rt=0
        if rt_field:
            return fault(state, INVALID_INSTRUCTION)
        taken = rs == 0 or rs & SIGN != 0
    elif op == 0x07:  # bgtz: rt=0
        if rt_field:
            return fault(state, INVALID_INSTRUCTION)
        taken = rs != 0 and rs & SIGN == 0
    else:  # REGIMM, by rt
        if rt_field & 0x18 == 0x08:  # 0x08..0x0F: tgei .. tnei
            return handle_trap_imm(state, insn, rs)
        if rt_field & 0x0E:  # everything but 0x00, 0x01, 0x10, 0x11 (bltzl, bgezl, synci, ...)
            return fault(state, INVALID_INSTRUCTION)
        # 0x00 bltz, 0x01 bgez, 0x10 bltzal, 0x11 bgezal
        taken = (rs & SIGN == 0) == (rt_field & 1 == 1)
        link = rt_field >= 0x10

    pc = state.pc
    next_pc = state.next_pc
    if next_pc != (pc + 4) & MASK:
        return fault(state, BRANCH_IN_DELAY_SLOT)
    if link:  # bltzal/bgezal link always, after reading the condition
        regs[31] = (pc + 8) & MASK
    state.pc = next_pc
    if taken:
        imm = insn & 0xFFFF
        offset = ((imm | 0xFFFF0000) if imm & 0x8000 else imm) << 2
        state.next_pc = (next_pc + offset) & MASK
    else:
        state.next_pc = (next_pc + 4) & MASK
    return NO_ACCESS


def handle_jump(state: State, target: int, link_reg: int) -> Access:
    """j/jal/jr/jalr: delay-slot check, link `pc + 8` into `link_reg` (none if 0), then jump to `target`."""
    pc = state.pc
    next_pc = state.next_pc
    if next_pc != (pc + 4) & MASK:
        return fault(state, BRANCH_IN_DELAY_SLOT)
    if link_reg:
        state.regs[link_reg] = (pc + 8) & MASK
    state.pc = next_pc
    state.next_pc = target
    return NO_ACCESS


# --------------------------------------------------------------------------------------------------------
# Section 5: HI/LO and traps
# --------------------------------------------------------------------------------------------------------
def handle_hilo(state: State, insn: int, rs: int, rt: int) -> Access:
    """SPECIAL 0x10..0x1B (mfhi, mthi, mflo, mtlo, mult, multu, div, divu), SPECIAL2 madd/maddu/msub/msubu."""
    fn = insn & 0x3F
    rd = (insn >> 11) & 31
    if insn >> 26 == 0x1C:  # madd, maddu, msub, msubu: rd=0, sa=0
        if insn & 0xFFC0:
            return fault(state, INVALID_INSTRUCTION)
        product = signed(rs) * signed(rt) if fn & 1 == 0 else rs * rt
        acc = (state.hi << 32) | state.lo
        acc = (acc + product if fn < 0x04 else acc - product) & U64
        state.hi = acc >> 32
        state.lo = acc & MASK
        return handle_rd(state, 0, 0)
    if fn == 0x10 or fn == 0x12:  # mfhi, mflo: rs=rt=0, sa=0
        if insn & 0x03FF07C0:
            return fault(state, INVALID_INSTRUCTION)
        return handle_rd(state, rd, state.hi if fn == 0x10 else state.lo)
    if fn == 0x11 or fn == 0x13:  # mthi, mtlo: rt=rd=0, sa=0; no general register is written
        if insn & 0x001FFFC0:
            return fault(state, INVALID_INSTRUCTION)
        if fn == 0x11:
            state.hi = rs
        else:
            state.lo = rs
        return handle_rd(state, 0, 0)
    if fn < 0x18 or insn & 0xFFC0:  # 0x14..0x17 are MIPS64; mult..divu need rd=0, sa=0
        return fault(state, INVALID_INSTRUCTION)
    if fn == 0x18:  # mult
        product = (signed(rs) * signed(rt)) & U64
        state.hi = product >> 32
        state.lo = product & MASK
    elif fn == 0x19:  # multu
        product = rs * rt
        state.hi = product >> 32
        state.lo = product & MASK
    elif fn == 0x1A:  # div
        state.lo, state.hi = div_signed(rs, rt)
    else:  # divu
        state.lo, state.hi = (rs // rt, rs % rt) if rt else (rs, 0)
    return handle_rd(state, 0, 0)


def div_signed(rs: int, rt: int) -> tuple[int, int]:
    """(lo, hi) of `div`, including the defined edge cases of section 5."""
    if rt == 0:
        return rs, 0
    if rs == SIGN and rt == MASK:
        return SIGN, 0
    a, b = signed(rs), signed(rt)
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return q & MASK, (a - q * b) & MASK


def handle_trap(state: State, fn: int, rs: int, rt: int) -> Access:
    """SPECIAL 0x30..0x36: tge, tgeu, tlt, tltu, teq, tne (the code field is ignored)."""
    if fn == 0x30:
        taken = (rs ^ SIGN) >= (rt ^ SIGN)
    elif fn == 0x31:
        taken = rs >= rt
    elif fn == 0x32:
        taken = (rs ^ SIGN) < (rt ^ SIGN)
    elif fn == 0x33:
        taken = rs < rt
    elif fn == 0x34:
        taken = rs == rt
    elif fn == 0x36:
        taken = rs != rt
    else:
        return fault(state, INVALID_INSTRUCTION)
    if taken:
        return fault(state, TRAP)
    return handle_rd(state, 0, 0)


def handle_trap_imm(state: State, insn: int, rs: int) -> Access:
    """REGIMM 0x08..0x0E: tgei, tgeiu, tlti, tltiu, teqi, tnei against the sign-extended immediate."""
    imm = insn & 0xFFFF
    if imm & 0x8000:
        imm |= 0xFFFF0000
    fn = 0x30 + ((insn >> 16) & 7)  # the same conditions as the register traps, in the same order
    if fn == 0x35 or fn == 0x37:
        return fault(state, INVALID_INSTRUCTION)
    return handle_trap(state, fn, rs, imm)


# --------------------------------------------------------------------------------------------------------
# Section 5: loads and stores
# --------------------------------------------------------------------------------------------------------
def load_store(state: State, mem: WordMemory, insn: int, op: int) -> Access:
    """Opcodes 0x20..0x3F. Every access is the one aligned word containing the address."""
    regs = state.regs
    rt_reg = (insn >> 16) & 31
    imm = insn & 0xFFFF
    if imm & 0x8000:
        imm |= 0xFFFF0000
    a = (regs[(insn >> 21) & 31] + imm) & MASK
    w_addr = a & 0xFFFFFFFC

    if op == 0x23 or op == 0x30:  # lw, ll
        if a & 3:
            return fault(state, UNALIGNED_ACCESS)
        handle_rd(state, rt_reg, mem.read_u32(a))
        return Access(a)
    if op == 0x2B or op == 0x38:  # sw, sc
        if a & 3:
            return fault(state, UNALIGNED_ACCESS)
        mem.write_u32(a, regs[rt_reg])
        handle_rd(state, rt_reg if op == 0x38 else 0, 1)  # sc always succeeds
        return Access(a)
    if op < 0x28:  # loads
        if op == 0x20 or op == 0x24:  # lb, lbu
            value = load8(mem.read_u32(w_addr), a)
            if op == 0x20 and value & 0x80:
                value |= 0xFFFFFF00
        elif op == 0x21 or op == 0x25:  # lh, lhu
            if a & 1:
                return fault(state, UNALIGNED_ACCESS)
            value = load16(mem.read_u32(w_addr), a)
            if op == 0x21 and value & 0x8000:
                value |= 0xFFFF0000
        elif op == 0x22:  # lwl
            value = merge_lwl(mem.read_u32(w_addr), a & 3, regs[rt_reg])
        elif op == 0x26:  # lwr
            value = merge_lwr(mem.read_u32(w_addr), a & 3, regs[rt_reg])
        else:
            return fault(state, INVALID_INSTRUCTION)
        handle_rd(state, rt_reg, value)
        return Access(a if op != 0x22 and op != 0x26 else w_addr)
    # stores
    rt = regs[rt_reg]
    if op == 0x28:  # sb
        mem.write_u32(w_addr, store8(mem.read_u32(w_addr), a, rt))
    elif op == 0x29:  # sh
        if a & 1:
            return fault(state, UNALIGNED_ACCESS)
        mem.write_u32(w_addr, store16(mem.read_u32(w_addr), a, rt))
    elif op == 0x2A:  # swl
        mem.write_u32(w_addr, merge_swl(mem.read_u32(w_addr), a & 3, rt))
    elif op == 0x2E:  # swr
        mem.write_u32(w_addr, merge_swr(mem.read_u32(w_addr), a & 3, rt))
    else:
        return fault(state, INVALID_INSTRUCTION)  # 0x2C/0x2D (sdl/sdr), cache, lwc1, sdc1, ...
    handle_rd(state, 0, 0)
    return Access(a if op != 0x2A and op != 0x2E else w_addr)


def load8(w: int, a: int) -> int:
    """The byte at address `a` of the aligned big-endian word `w` that holds it."""
    return (w >> (24 - ((a & 3) << 3))) & 0xFF


def load16(w: int, a: int) -> int:
    """The half-word at the 2-aligned address `a` of the word `w` that holds it."""
    return (w >> (16 - ((a & 2) << 3))) & 0xFFFF


def store8(w: int, a: int, v: int) -> int:
    """`w` with the byte at address `a` replaced by `v & 0xFF`."""
    shift = 24 - ((a & 3) << 3)
    return (w & ~(0xFF << shift) & MASK) | ((v & 0xFF) << shift)


def store16(w: int, a: int, v: int) -> int:
    """`w` with the half-word at the 2-aligned address `a` replaced by `v & 0xFFFF`."""
    shift = 16 - ((a & 2) << 3)
    return (w & ~(0xFFFF << shift) & MASK) | ((v & 0xFFFF) << shift)


def merge_lwl(w: int, k: int, rt: int) -> int:
    """lwl: `(w << 8k) | (R[rt] & ((1 << 8k) - 1))`."""
    return ((w << (k << 3)) & MASK) | (rt & ((1 << (k << 3)) - 1))


def merge_lwr(w: int, k: int, rt: int) -> int:
    """lwr: `(w >> 8(3-k)) | (R[rt] & ~(0xFFFFFFFF >> 8(3-k)))`."""
    s = (3 - k) << 3
    return (w >> s) | (rt & ~(MASK >> s) & MASK)


def merge_swl(w: int, k: int, rt: int) -> int:
    """swl: the new word `(R[rt] >> 8k) | (w & ~(0xFFFFFFFF >> 8k))`."""
    s = k << 3
    return (rt >> s) | (w & ~(MASK >> s) & MASK)


def merge_swr(w: int, k: int, rt: int) -> int:
    """swr: the new word `(R[rt] << 8(3-k)) | (w & ((1 << 8(3-k)) - 1))`."""
    s = (3 - k) << 3
    return ((rt << s) & MASK) | (w & ((1 << s) - 1))


# --------------------------------------------------------------------------------------------------------
# Section 6: syscalls
# --------------------------------------------------------------------------------------------------------
def handle_syscall(state: State, mem: WordMemory, oracle: Oracle, on_write: OnWrite | None) -> Access:
    """Number in v0, arguments in a0..a2; result in v0 and the error flag in a3."""
    regs = state.regs
    num = regs[2]
    a0, a1, a2 = regs[4], regs[5], regs[6]
    access = NO_ACCESS
    err = 0
    if num in (SYS_EXIT, SYS_EXIT_GROUP):
        state.exited = True
        state.exit_code = a0 & 0xFF
        return NO_ACCESS  # registers, pc untouched
    if num == SYS_MMAP:
        v0, err = handle_mmap(state, a0, a1)
    elif num == SYS_BRK:
        v0 = BRK_FIXED
    elif num == SYS_READ:
        if a0 == FD_PREIMAGE_READ:
            access = Access(a1, (state.preimage_key, state.preimage_offset))
            v0 = handle_preimage_read(state, mem, oracle, a1, a2)
        elif a0 == FD_STDIN:
            v0 = 0
        else:
            v0, err = EBADF, 1
    elif num == SYS_WRITE:
        if a0 in (FD_STDOUT, FD_STDERR, FD_OUTPUT):
            v0 = a2
            if on_write is not None:
                on_write(a0, read_bytes(mem, a1, a2))
        elif a0 == FD_PREIMAGE_KEY:
            access = Access(a1)
            v0, err = handle_preimage_select(state, mem, a1, a2)
        else:
            v0, err = EBADF, 1
    else:
        return fault(state, UNKNOWN_SYSCALL)
    regs[2] = v0
    regs[7] = err
    next_pc = state.next_pc
    state.pc = next_pc
    state.next_pc = (next_pc + 4) & MASK
    return access


def handle_mmap(state: State, addr: int, length: int) -> tuple[int, int]:
    """(v0, a3) of mmap(addr, len): anonymous memory from the bump allocator `heap`, never past HEAP_END."""
    if addr != 0 or length == 0:
        return EINVAL, 1
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)  # unbounded ints: no wrap-around
    if state.heap + length > HEAP_END:
        return ENOMEM, 1
    v0 = state.heap
    state.heap = v0 + length
    return v0, 0


def handle_preimage_select(state: State, mem: WordMemory, buf: int, n: int) -> tuple[int, int]:
    """(v0, a3) of write(6, buf, n): select the 32-byte key in the leaf at the 32-aligned `buf`."""
    if buf & 31 or n != 32:
        return EINVAL, 1
    state.preimage_key = b"".join(mem.read_u32(buf + i).to_bytes(4, "big") for i in range(0, 32, 4))
    state.preimage_offset = 0
    return 32, 0


def handle_preimage_read(state: State, mem: WordMemory, oracle: Oracle, buf: int, n: int) -> int:
    """v0 of read(5, buf, n): copy up to the end of `buf`'s leaf from the selected key's stream."""
    part, length = oracle.stream_part(state.preimage_key, state.preimage_offset)
    offset = state.preimage_offset
    available = length - offset if length > offset else 0
    count = min(n, 32 - (buf & 31), available)
    if count == 0:
        return 0
    # rewrite the aligned words of the leaf that [buf, buf + count) covers
    start = buf & 0xFFFFFFFC
    end = (buf + count + 3) & ~3  # buf + count <= the end of buf's leaf <= 2^32: not masked to 32 bits
    words = bytearray()
    for w_addr in range(start, end, 4):
        words += mem.read_u32(w_addr).to_bytes(4, "big")
    words[buf - start : buf - start + count] = part[:count]
    for i, w_addr in enumerate(range(start, end, 4)):
        mem.write_u32(w_addr, int.from_bytes(words[4 * i : 4 * i + 4], "big"))
    state.preimage_offset = (offset + count) & MASK
    return count


def read_bytes(mem: WordMemory, addr: int, n: int) -> bytes:
    """`n` bytes at `addr` (wrapping at 2^32), for off-chain observation of writes to fds 1, 2, 3."""
    if isinstance(mem, Memory):
        return mem.read(addr, n)
    reader = getattr(mem, "read_bytes", None)
    if reader is not None:
        return bytes(reader(addr, n))
    out = bytearray()
    a = addr & 0xFFFFFFFC
    end = addr + n
    while a < end:
        out += mem.read_u32(a & MASK).to_bytes(4, "big")
        a += 4
    skip = addr & 3
    return bytes(out[skip : skip + n])


# --------------------------------------------------------------------------------------------------------
# A loop for callers that just want to run (the fast executor's fallback, tests, benchmarks).
# --------------------------------------------------------------------------------------------------------
def run(
    state: State, mem: WordMemory, oracle: Oracle, max_steps: int, on_write: OnWrite | None = None
) -> int:
    """Step until the state exits or `max_steps` steps ran; returns the number of steps executed."""
    n = 0
    while n < max_steps and not state.exited:
        step(state, mem, oracle, on_write)
        n += 1
    return n
