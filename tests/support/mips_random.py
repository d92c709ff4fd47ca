"""Random MIPS32 programs for differential tests of the fast executor against the reference stepper.

`random_program(seed)` returns a `Program` (no ELF): a few hundred random but mostly valid instructions at
BASE with branches and jumps into the program (delay slots filled with loads, stores and ALU work),
HI/LO arithmetic, byte/half/word and unaligned (lwl/lwr/swl/swr) memory traffic through pointer
registers, syscalls, traps, a few stores into the code itself, addresses above 2 GiB, and rarely an
invalid word, a branch in a delay slot or an unaligned access (faults end a run early, so they are rare).
"""

from __future__ import annotations

import random

from mipsvm.constants import HEAP_START, PAGE_SIZE, STACK_TOP
from mipsvm.elf import Program
from mipsvm.fast import KIND_PLAIN, spec_invalid, word_kind
from mipsvm.memory import Memory
from mipsvm.state import State
from support.mips_asm import asm

BASE = 0x00400000
DATA = 0x10000000
DATA_PAGES = 4
HIGH = (0x80000000, 0xA0001000, 0xC0002000, 0xFFFFE000)  # kseg0/1/2/3 on real MIPS: plain memory here
POINTERS = (16, 17, 18, 19)  # s0-s3: data pointers (never an ALU destination)
TEXT_PTR = 20  # s4: points into the code; stores through it rewrite the program
HIGH_PTR = 21  # s5: an address above 2 GiB
# r31 last. v0 is set only before syscalls and t9 only before jr/jalr (so a branch that lands on a syscall
# or a jump finds a valid number or a code address: the runs last longer).
WORK = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 22, 24, 30, 31)
SELF_MOD = 23  # s7: the plain instruction word that stores into the code write
UNTOUCHED = {2, 16, 17, 18, 19, 20, 21, 23, 25, 29}  # registers random words do not write
SPECIAL_VALUES = (0, 1, 2, 3, 31, 32, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE)

ALU_R = (
    "addu",
    "subu",
    "and",
    "or",
    "xor",
    "nor",
    "slt",
    "sltu",
    "sllv",
    "srlv",
    "srav",
    "movz",
    "movn",
    "mul",
)
ALU_I = ("addiu", "slti", "sltiu", "andi", "ori", "xori")
HILO = ("mult", "multu", "div", "divu", "madd", "maddu", "msub", "msubu")
LOADS = {"lb": 1, "lbu": 1, "lh": 2, "lhu": 2, "lw": 4, "ll": 4, "lwl": 1, "lwr": 1}
STORES = {"sb": 1, "sh": 2, "sw": 4, "swl": 1, "swr": 1}
TRAPS = ("teq", "tne", "tge", "tgeu", "tlt", "tltu")
TRAPS_I = ("teqi", "tnei", "tgei", "tgeiu", "tlti", "tltiu")
BRANCHES = ("beq", "bne", "blez", "bgtz", "bltz", "bgez", "bltzal", "bgezal")


class _Gen:
    def __init__(self, rnd: random.Random, n: int) -> None:
        self.rnd = rnd
        self.n = n  # the program's length in words (branch targets lie in [0, n))
        self.code: list[int] = []

    def reg(self) -> int:
        return self.rnd.randrange(32)

    def work(self) -> int:
        return self.rnd.choice(WORK)

    def value(self) -> int:
        r = self.rnd.random()
        if r < 0.3:
            return self.rnd.choice(SPECIAL_VALUES)
        if r < 0.5:
            return self.rnd.randrange(-64, 64) & 0xFFFFFFFF
        return self.rnd.getrandbits(32)

    def imm(self) -> int:
        return self.rnd.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF, self.rnd.getrandbits(16)))

    # -- one plain (non-control) instruction --------------------------------------------------------------
    def plain(self) -> int:
        rnd = self.rnd
        k = rnd.random()
        if k < 0.25:
            return asm(rnd.choice(ALU_R), self.work(), self.reg(), self.reg())
        if k < 0.35:
            return asm(rnd.choice(("sll", "srl", "sra")), self.work(), self.reg(), rnd.randrange(32))
        if k < 0.47:
            name = rnd.choice(ALU_I)
            return asm(name, self.work(), self.reg(), self.imm())
        if k < 0.50:
            return asm("lui", self.work(), self.imm())
        if k < 0.57:
            return asm(rnd.choice(HILO), self.reg(), self.reg())
        if k < 0.61:
            return asm(rnd.choice(("mfhi", "mflo")), self.work())
        if k < 0.62:
            return asm(rnd.choice(("mthi", "mtlo")), self.reg())
        if k < 0.64:
            return asm(rnd.choice(("clz", "clo")), self.work(), self.reg())
        if k < 0.79:
            return self.load()
        if k < 0.93:
            return self.store()
        if k < 0.96:
            return self.trap()
        if k < 0.985:
            return asm(rnd.choice(("add", "sub", "addi")), self.work(), 0, self.reg())  # never overflows
        if k < 0.99:
            return asm(rnd.choice(("add", "sub", "addi")), self.work(), self.reg(), self.reg())
        if k < 0.993:
            return 0x0000000F  # sync
        if k < 0.996:
            return self.any_plain()
        return asm("sc", self.work(), self.offset(4), self.pointer())

    def any_plain(self) -> int:
        """A random valid non-memory, non-control word (all field combinations the spec accepts)."""
        while True:
            word = self.rnd.getrandbits(32)
            dests = ((word >> 16) & 31, (word >> 11) & 31)  # rt (I-type) or rd (R-type)
            if word >> 26 < 0x20 and word_kind(word) == KIND_PLAIN and not set(dests) & UNTOUCHED:
                return word

    def trap(self) -> int:
        """Mostly traps that are never taken (a taken trap ends the run)."""
        rnd = self.rnd
        r = self.reg()
        if rnd.random() < 0.1:
            return (
                asm(rnd.choice(TRAPS), r, self.reg())
                if rnd.random() < 0.5
                else asm(rnd.choice(TRAPS_I), r, self.imm())
            )
        return rnd.choice(
            (
                asm("tne", r, r),
                asm("tlt", r, r),
                asm("tltu", r, 0),
                asm("teq", 0, rnd.choice(POINTERS)),
                asm("tgeu", 0, rnd.choice(POINTERS)),
                asm("tltiu", r, 0),
                asm("tnei", 0, 0),
            )
        )

    def pointer(self) -> int:
        r = self.rnd.random()
        if r < 0.9:
            return self.rnd.choice(POINTERS)
        return HIGH_PTR if r < 0.97 else 29  # sp

    def offset(self, width: int) -> int:
        off = self.rnd.randrange(-256, 256)
        if self.rnd.random() < 0.995:
            off &= ~(width - 1)
        return off

    def load(self) -> int:
        name = self.rnd.choice(tuple(LOADS))
        base = TEXT_PTR if self.rnd.random() < 0.03 else self.pointer()
        return asm(name, self.work(), self.offset(LOADS[name]), base)

    def store(self) -> int:
        name = self.rnd.choice(tuple(STORES))
        if self.rnd.random() < 0.01:  # self-modifying code: store a plain instruction into the program
            return asm("sw", SELF_MOD, 4 * self.rnd.randrange(-8, 8), TEXT_PTR)
        return asm(name, self.reg(), self.offset(STORES[name]), self.pointer())

    # -- control flow (each appends the instruction and its delay slot) ------------------------------------
    def branch_offset(self) -> int:
        target = self.rnd.randrange(self.n)
        return target - (len(self.code) + 1)

    def slot(self) -> int:
        if self.rnd.random() < 0.01:
            return asm("beq", 0, 0, 1)  # a branch in the delay slot: BRANCH_IN_DELAY_SLOT
        return self.plain()

    def emit_branch(self) -> None:
        rnd = self.rnd
        name = rnd.choice(BRANCHES)
        off = self.branch_offset()
        if name in ("beq", "bne"):
            word = asm(name, self.reg(), self.reg(), off)
        elif name in ("blez", "bgtz"):
            word = asm(name, self.reg(), off)
        else:
            rs = self.reg() if name in ("bltz", "bgez") else rnd.choice(WORK[:-1])  # not r31 (a STOP word)
            word = asm(name, rs, off)
        self.code += [word, self.slot()]

    def emit_jump(self) -> None:
        rnd = self.rnd
        target = BASE + 4 * rnd.randrange(self.n)
        if rnd.random() < 0.5:
            self.code += [asm(rnd.choice(("j", "jal")), target), self.slot()]
            return
        if rnd.random() < 0.02:
            target = rnd.choice((target + 2, DATA + 0x100, BASE + 4 * (self.n + 64)))  # unaligned, data, gap
        self.code += [asm("lui", 25, target >> 16), asm("ori", 25, 25, target & 0xFFFF)]
        if rnd.random() < 0.5:
            self.code += [asm("jr", 25), self.slot()]
        else:
            self.code += [asm("jalr", rnd.choice((31, 24, 0)), 25), self.slot()]

    def emit_syscall(self) -> None:
        rnd = self.rnd
        k = rnd.random()
        if k < 0.4:  # write(1 or 3, pointer, small n)
            self.code += [asm("addiu", 2, 0, 4004), asm("addiu", 4, 0, rnd.choice((1, 3, 2, 7)))]
            self.code += [asm("addu", 5, rnd.choice(POINTERS), 0), asm("addiu", 6, 0, rnd.randrange(40))]
        elif k < 0.6:  # mmap(0, len)
            self.code += [
                asm("addiu", 2, 0, 4090),
                asm("addiu", 4, 0, 0),
                asm("ori", 5, 0, rnd.getrandbits(15)),
            ]
        elif k < 0.7:
            self.code += [asm("addiu", 2, 0, 4045)]
        elif k < 0.8:  # read(0 or 9, pointer, n)
            self.code += [asm("addiu", 2, 0, 4003), asm("addiu", 4, 0, rnd.choice((0, 9)))]
            self.code += [asm("addu", 5, rnd.choice(POINTERS), 0), asm("addiu", 6, 0, 8)]
        elif k < 0.88:  # read(5, pointer + off, n): a preimage read (s0 is 32-aligned)
            self.code += [asm("addiu", 2, 0, 4003), asm("addiu", 4, 0, 5)]
            self.code += [asm("addiu", 5, rnd.choice(POINTERS), rnd.randrange(-64, 64))]
            self.code += [asm("addiu", 6, 0, rnd.choice((32, 7, 100)))]
        elif k < 0.97:  # write(6, s0 or s1, 32): select a preimage key (EINVAL unless 32-aligned)
            self.code += [asm("addiu", 2, 0, 4004), asm("addiu", 4, 0, 6)]
            self.code += [asm("addu", 5, rnd.choice((16, 17)), 0), asm("addiu", 6, 0, 32)]
        elif k < 0.99:
            self.code += [asm("addiu", 2, 0, rnd.choice((4000, 4999, 0)))]  # unknown: a fault
        else:
            self.code += [asm("addiu", 2, 0, 4246), asm("addiu", 4, 0, rnd.randrange(4))]  # exit_group
        self.code += [asm("syscall"), asm("addiu", 2, 0, 4045)]  # v0 = brk again: see WORK

    def emit(self) -> None:
        k = self.rnd.random()
        if k < 0.12:
            self.emit_branch()
        elif k < 0.17:
            self.emit_jump()
        elif k < 0.19:
            self.emit_syscall()
        elif k < 0.191:
            self.code.append(self.invalid())
        else:
            self.code.append(self.plain())

    def invalid(self) -> int:
        while True:
            word = self.rnd.getrandbits(32)
            if spec_invalid(word):
                return word


def random_program(seed: int, n: int = 256) -> Program:
    """A random program of about `n` words (see the module docstring), deterministic in `seed`."""
    rnd = random.Random(seed)
    gen = _Gen(rnd, n)
    while len(gen.code) < n - 2:
        gen.emit()
    gen.code += [asm("j", BASE), asm("addiu", 8, 8, 1)]  # loop forever rather than fall off the end
    mem = Memory()
    for i, word in enumerate(gen.code):
        mem.write_u32(BASE + 4 * i, word)
    for p in range(DATA_PAGES):
        mem.write(DATA + p * PAGE_SIZE, rnd.randbytes(PAGE_SIZE))
    for addr in HIGH:
        mem.write(addr, rnd.randbytes(512))
    state = State(pc=BASE, next_pc=BASE + 4, heap=HEAP_START)
    for r in range(1, 32):
        state.regs[r] = gen.value()
    for r in POINTERS:
        state.regs[r] = DATA + rnd.randrange(64, DATA_PAGES * PAGE_SIZE // 4 - 64) * 4
    state.regs[POINTERS[0]] &= ~31  # a key select through s0 succeeds
    state.regs[TEXT_PTR] = BASE + 4 * rnd.randrange(8, len(gen.code) - 8)
    state.regs[HIGH_PTR] = rnd.choice(HIGH) + 256
    state.regs[29] = STACK_TOP - 4096
    state.regs[2] = 4045  # brk
    state.regs[25] = BASE
    state.regs[SELF_MOD] = gen.plain()
    state.mem_root = mem.root()
    return Program(state, mem, [(BASE, BASE + 4 * len(gen.code))], BASE)
