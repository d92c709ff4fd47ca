"""A tiny MIPS32 encoder for tests: `asm("addiu", 8, 8, -1)` -> the instruction word.

Operands are in assembly order: registers as numbers, immediates as ints (branch offsets in instructions,
relative to the delay slot as the `imm` field; `j/jal` take the target address). `VM` places words in a
Memory and steps them with the reference stepper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mipsvm.memory import Memory
from mipsvm.preimage import PreimageOracle
from mipsvm.state import State
from mipsvm.step import Access, Oracle, step

ZERO, AT, V0, V1, A0, A1, A2, A3 = range(8)
T0, T1, T2, T3, T4, T5, T6, T7 = range(8, 16)
S0, S1, S2, S3, S4, S5, S6, S7 = range(16, 24)
T8, T9, K0, K1, GP, SP, FP, RA = range(24, 32)

SPECIAL_FUNCT = {
    "sll": 0x00, "srl": 0x02, "sra": 0x03, "sllv": 0x04, "srlv": 0x06, "srav": 0x07,
    "jr": 0x08, "jalr": 0x09, "movz": 0x0A, "movn": 0x0B, "syscall": 0x0C, "break": 0x0D, "sync": 0x0F,
    "mfhi": 0x10, "mthi": 0x11, "mflo": 0x12, "mtlo": 0x13,
    "mult": 0x18, "multu": 0x19, "div": 0x1A, "divu": 0x1B,
    "add": 0x20, "addu": 0x21, "sub": 0x22, "subu": 0x23, "and": 0x24, "or": 0x25, "xor": 0x26, "nor": 0x27,
    "slt": 0x2A, "sltu": 0x2B,
    "tge": 0x30, "tgeu": 0x31, "tlt": 0x32, "tltu": 0x33, "teq": 0x34, "tne": 0x36,
}  # fmt: skip
SPECIAL2_FUNCT = {
    "madd": 0x00,
    "maddu": 0x01,
    "mul": 0x02,
    "msub": 0x04,
    "msubu": 0x05,
    "clz": 0x20,
    "clo": 0x21,
}
REGIMM_RT = {
    "bltz": 0x00, "bgez": 0x01, "tgei": 0x08, "tgeiu": 0x09, "tlti": 0x0A, "tltiu": 0x0B, "teqi": 0x0C,
    "tnei": 0x0E, "bltzal": 0x10, "bgezal": 0x11,
}  # fmt: skip
OPCODE = {
    "j": 0x02, "jal": 0x03, "beq": 0x04, "bne": 0x05, "blez": 0x06, "bgtz": 0x07,
    "addi": 0x08, "addiu": 0x09, "slti": 0x0A, "sltiu": 0x0B, "andi": 0x0C, "ori": 0x0D, "xori": 0x0E,
    "lui": 0x0F, "lb": 0x20, "lh": 0x21, "lwl": 0x22, "lw": 0x23, "lbu": 0x24, "lhu": 0x25, "lwr": 0x26,
    "sb": 0x28, "sh": 0x29, "swl": 0x2A, "sw": 0x2B, "swr": 0x2E, "ll": 0x30, "sc": 0x38,
}  # fmt: skip
LOADS_STORES = {k for k, v in OPCODE.items() if v >= 0x20}


def r_type(op: int, rs: int, rt: int, rd: int, sa: int, fn: int) -> int:
    return (op << 26) | (rs << 21) | (rt << 16) | (rd << 11) | (sa << 6) | fn


def i_type(op: int, rs: int, rt: int, imm: int) -> int:
    return (op << 26) | (rs << 21) | (rt << 16) | (imm & 0xFFFF)


def asm(name: str, *ops: int) -> int:
    """Encode one instruction; operands in assembly order."""
    if name == "nop":
        return 0
    if name in SPECIAL_FUNCT:
        fn = SPECIAL_FUNCT[name]
        if name in ("sll", "srl", "sra"):
            rd, rt, sa = ops
            return r_type(0, 0, rt, rd, sa, fn)
        if name in ("sllv", "srlv", "srav"):
            rd, rt, rs = ops
            return r_type(0, rs, rt, rd, 0, fn)
        if name == "jr":
            return r_type(0, ops[0], 0, 0, 0, fn)
        if name == "jalr":
            rd, rs = ops if len(ops) == 2 else (RA, ops[0])
            return r_type(0, rs, 0, rd, 0, fn)
        if name in ("syscall", "break"):
            return ((ops[0] if ops else 0) << 6) | fn
        if name == "sync":
            return fn
        if name in ("mfhi", "mflo"):
            return r_type(0, 0, 0, ops[0], 0, fn)
        if name in ("mthi", "mtlo"):
            return r_type(0, ops[0], 0, 0, 0, fn)
        if name in ("mult", "multu", "div", "divu") or name.startswith("t"):
            rs, rt = ops[:2]
            return r_type(0, rs, rt, 0, 0, fn)
        rd, rs, rt = ops
        return r_type(0, rs, rt, rd, 0, fn)
    if name in SPECIAL2_FUNCT:
        fn = SPECIAL2_FUNCT[name]
        if name == "mul":
            rd, rs, rt = ops
            return r_type(0x1C, rs, rt, rd, 0, fn)
        if name in ("clz", "clo"):
            rd, rs = ops
            return r_type(0x1C, rs, rd, rd, 0, fn)
        rs, rt = ops
        return r_type(0x1C, rs, rt, 0, 0, fn)
    if name in REGIMM_RT:
        rs, imm = ops
        return i_type(1, rs, REGIMM_RT[name], imm)
    if name == "bal":
        return i_type(1, 0, 0x11, ops[0])
    if name == "b":
        return i_type(4, 0, 0, ops[0])
    op = OPCODE[name]
    if name in ("j", "jal"):
        return (op << 26) | ((ops[0] >> 2) & 0x03FFFFFF)
    if name in ("beq", "bne"):
        rs, rt, imm = ops
        return i_type(op, rs, rt, imm)
    if name in ("blez", "bgtz"):
        rs, imm = ops
        return i_type(op, rs, 0, imm)
    if name == "lui":
        rt, imm = ops
        return i_type(op, 0, rt, imm)
    if name in LOADS_STORES:
        rt, offset, base = ops
        return i_type(op, base, rt, offset)
    rt, rs, imm = ops
    return i_type(op, rs, rt, imm)


BASE = 0x00400000  # where VM places code
DATA = 0x10000000  # a data area for loads and stores


@dataclass
class VM:
    """A state and a Memory with `code` at BASE, plus the oracle and the writes seen."""

    code: list[int] = field(default_factory=list)
    regs: dict[int, int] = field(default_factory=dict)
    at: int = BASE
    oracle: Oracle = field(default_factory=PreimageOracle)
    state: State = field(init=False)
    mem: Memory = field(init=False)
    writes: list[tuple[int, bytes]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.mem = Memory()
        for i, word in enumerate(self.code):
            self.mem.write_u32(self.at + 4 * i, word)
        self.state = State(pc=self.at, next_pc=(self.at + 4) & 0xFFFFFFFF, heap=0x20000000)
        for r, v in self.regs.items():
            self.state.regs[r] = v & 0xFFFFFFFF
        self.state.mem_root = self.mem.root()

    def step(self) -> Access:
        return step(self.state, self.mem, self.oracle, lambda fd, data: self.writes.append((fd, data)))

    def run(self, n: int) -> None:
        for _ in range(n):
            self.step()

    def r(self, reg: int) -> int:
        return self.state.regs[reg]

    def snapshot(self) -> tuple[bytes, dict[int, bytes]]:
        """Everything a step may change: the encoded state (with its old root) and the memory pages."""
        return self.state.encode(), {p: bytes(b) for p, b in self.mem.pages.items()}


def run1(name: str, *ops: int, **regs: int) -> VM:
    """Run one instruction with registers given as r8=..., and return the VM after the step."""
    vm = VM([asm(name, *ops)], {int(k[1:]): v for k, v in regs.items()})
    vm.step()
    return vm
