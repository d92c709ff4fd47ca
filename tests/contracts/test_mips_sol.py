"""Differential tests: MIPS.sol and PreimageOracle.sol in an in-process EVM against the Python reference.

Every case is a pre-state and its memory; `mipsvm.witness.make_proof` builds the one-step witness with the
reference stepper (`mipsvm/step.py`), `verify_step` re-checks it, and `MIPS.step` must return the same
post-state hash from the same witness; when the witness is malformed (a preimage the oracle does not hold),
both sides must refuse. The EVM is py-evm (eth_tester's chain), with calls applied as raw messages on one
state object: no transactions, no mining, so a step costs only its EVM execution (about 6 ms).

Random cases come from hypothesis, class by class (ALU, HI/LO and traps, branches and jumps, loads and stores,
syscalls, preimage select and read, any 32-bit word), at least 10k steps in total (scaled by
ROLLML_FUZZ_SCALE), plus the steps of real compiled programs (`tests/support/mips_programs`: every step of
preimage.c, the first few hundred steps, every syscall and a sample of the 410k steps of compute.c).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.env import FUZZ_SCALE, ROOT, scaled
from support.mips_asm import OPCODE, asm, i_type, r_type
from support.mips_build import program

from mipsvm.constants import HEAP_END, HEAP_START, KEY_TYPE_KECCAK, KEY_TYPE_LOCAL, MAX_PREIMAGE, Status
from mipsvm.elf import load_elf
from mipsvm.hashing import keccak256
from mipsvm.memory import Memory
from mipsvm.preimage import LocalData, PreimageMissing, PreimageOracle, PreimageStore, local_key
from mipsvm.state import State
from mipsvm.step import step
from mipsvm.witness import StepProof, make_proof, verify_step

pytestmark = pytest.mark.requires("forge")

OUT = ROOT / "contracts" / "out"
M = 0xFFFFFFFF


def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


STEP = selector("step(bytes,bytes,bytes32)")
STATE_HASH = selector("stateHash(bytes)")
READ_PREIMAGE = selector("readPreimage(bytes32,uint256)")
LOAD_KECCAK = selector("loadKeccak256PreimagePart(uint256,bytes)")
LOAD_LOCAL = selector("loadLocalData(uint256,bytes32,bytes32)")
PREIMAGE_NOT_LOADED = selector("PreimageNotLoaded(bytes32,uint256)")


# --------------------------------------------------------------------------------------------------------
# The EVM
# --------------------------------------------------------------------------------------------------------
class Reverted(Exception):
    def __init__(self, data: bytes) -> None:
        self.data = data
        super().__init__(f"reverted with 0x{data.hex()}")


def artifact(name: str) -> dict:
    return json.loads((OUT / f"{name}.sol" / f"{name}.json").read_text())


class Evm:
    """PreimageOracle and MIPS deployed on eth_tester's py-evm chain; calls are raw messages on one state."""

    def __init__(self) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from eth_utils import to_canonical_address

        self.tester = EthereumTester(PyEVMBackend())
        self.account = self.tester.get_accounts()[0]
        self.sender = to_canonical_address(self.account)
        self.oracle = to_canonical_address(self._deploy(artifact("PreimageOracle")["bytecode"]["object"]))
        mips_code = artifact("MIPS")["bytecode"]["object"] + encode(["address"], [self.oracle]).hex()
        self.mips = to_canonical_address(self._deploy(mips_code))
        self.state = self.tester.backend.chain.get_vm().state
        self.calls = 0

    def _deploy(self, bytecode: str) -> str:
        tx = self.tester.send_transaction({"from": self.account, "data": bytecode, "gas": 10_000_000})
        return self.tester.get_transaction_receipt(tx)["contract_address"]

    def call(self, to: bytes, data: bytes, sender: bytes | None = None) -> tuple[bytes, int]:
        """(output, execution gas) of a message call; state changes persist. Raises Reverted."""
        from eth.vm.message import Message
        from eth_typing import Address

        to, sender = Address(to), Address(sender or self.sender)
        state = self.state
        msg = Message(gas=30_000_000, to=to, sender=sender, value=0, data=data, code=state.get_code(to))
        ctx = state.get_transaction_context_class()(gas_price=1, origin=sender)
        computation = state.computation_class.apply_message(state, msg, ctx)
        self.calls += 1
        if computation.is_error:
            raise Reverted(bytes(computation.output))
        return bytes(computation.output), computation.get_gas_used()

    def step(self, pre: bytes, proof: bytes, ctx: bytes = bytes(32), sender: bytes | None = None) -> bytes:
        out, _ = self.call(self.mips, STEP + encode(["bytes", "bytes", "bytes32"], [pre, proof, ctx]), sender)
        return out

    def load_keccak(self, data: bytes, offset: int) -> None:
        self.call(self.oracle, LOAD_KECCAK + encode(["uint256", "bytes"], [offset, data]))

    def load_local(self, ident: int, ctx: bytes, word: bytes, sender: bytes | None = None) -> None:
        self.call(
            self.oracle, LOAD_LOCAL + encode(["uint256", "bytes32", "bytes32"], [ident, ctx, word]), sender
        )

    def read_preimage(self, key: bytes, offset: int) -> tuple[bytes, int]:
        out, _ = self.call(self.oracle, READ_PREIMAGE + encode(["bytes32", "uint256"], [key, offset]))
        return out[:32], int.from_bytes(out[32:], "big")


@pytest.fixture(scope="session")
def evm() -> Evm:
    build = subprocess.run([str(ROOT / "scripts" / "forge"), "build"], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"scripts/forge build failed:\n{build.stdout}\n{build.stderr}")
    return Evm()


# --------------------------------------------------------------------------------------------------------
# Preimages: the same data off-chain (the Python oracle) and on-chain (loaded on demand)
# --------------------------------------------------------------------------------------------------------
CTX = keccak256(b"rollml differential test context")
STORE = PreimageStore()
PREIMAGES = [
    b"",
    b"\x5a",
    bytes(range(31)),
    bytes(range(32)),
    bytes(range(33)),
    bytes((i * 37 + 11) & 0xFF for i in range(200)),
    bytes((i * 131 + 7) & 0xFF for i in range(MAX_PREIMAGE)),
]
KECCAK_KEYS = [STORE.put(p) for p in PREIMAGES]
LOCALS = {1: KECCAK_KEYS[5], 2: keccak256(b"input"), 3: keccak256(b"claimed output")}
ORACLE = PreimageOracle(STORE, LocalData(LOCALS))
KNOWN_KEYS = [*KECCAK_KEYS, *(local_key(i) for i in LOCALS)]
UNKNOWN_KEYS = [
    bytes(32),  # type 0: never selected
    bytes([KEY_TYPE_KECCAK]) + keccak256(b"never loaded")[1:],
    local_key(9),  # a local index the game never set
    bytes([3]) + bytes(31),
]


@dataclass
class OnChainPreimages:
    """What has been loaded into the EVM's oracle, so each part is loaded once."""

    parts: set[tuple[bytes, int]] = field(default_factory=set)
    locals: set[int] = field(default_factory=set)

    def ensure(self, evm: Evm, key: bytes, offset: int) -> None:
        """Load what a read of `key` at `offset` needs, if the Python oracle knows the key."""
        if key[0] == KEY_TYPE_LOCAL:
            ident = int.from_bytes(key[1:], "big")
            if ident in LOCALS and ident not in self.locals:
                evm.load_local(ident, CTX, LOCALS[ident])
                self.locals.add(ident)
            return
        if key[0] != KEY_TYPE_KECCAK or key not in STORE:
            return
        data = STORE.get(key)
        # a part past the end of the stream is served from the length, which any loaded part sets
        part_offset = offset if offset < 8 + len(data) else 0
        if (key, part_offset) not in self.parts:
            evm.load_keccak(data, part_offset)
            self.parts.add((key, part_offset))


ON_CHAIN = OnChainPreimages()


# --------------------------------------------------------------------------------------------------------
# The differential check
# --------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    state: State
    mem: Memory
    what: str = ""


def compare(evm: Evm, case: Case) -> StepProof | None:
    state, mem = case.state, case.mem
    state.mem_root = mem.root()
    try:
        proof = make_proof(state, mem, ORACLE)
    except PreimageMissing:
        # the Python oracle does not hold the part: MIPS.sol must revert with PreimageNotLoaded
        pre = state.encode()
        with pytest.raises(Reverted) as e:
            evm.step(pre, mem.proof(state.pc) + mem.proof(state.regs[5]), CTX)
        assert e.value.data[:4] == PREIMAGE_NOT_LOADED, case.what
        return None
    assert verify_step(proof.pre_state, proof.proof, proof.part, proof.part_len) == proof.post_state_hash
    OUTCOMES[outcome(state, mem)] += 1
    if proof.part is not None:
        ON_CHAIN.ensure(evm, proof.pre_state[32:64], int.from_bytes(proof.pre_state[64:68], "big"))
    got = evm.step(proof.pre_state, proof.proof, CTX)
    assert got == proof.post_state_hash, (
        f"{case.what}: EVM 0x{got.hex()} != Python 0x{proof.post_state_hash.hex()}"
    )
    return proof


OUTCOMES: Counter[str] = Counter()


def outcome(state: State, mem: Memory) -> str:
    """What the step did, for the coverage check of the campaign."""
    post = state.copy()
    step(post, mem.copy(), ORACLE)
    insn = mem.read_u32(state.pc & ~3)
    if state.exited:
        return "exited fixed point"
    num, fd = state.regs[2], state.regs[4]
    if post.exited:
        exits = insn & 0xFC00003F == 0x0C and num in (4001, 4246)
        return "exit" if exits and state.pc & 3 == 0 else f"fault 0x{post.exit_code:02x}"
    if insn & 0xFC00003F == 0x0C:
        if (num, fd) == (4003, 5):
            return "preimage read" + (" at the end" if post.regs[2] == 0 else "")
        if (num, fd) == (4004, 6):
            return "preimage select" + (" EINVAL" if post.regs[7] else "")
        return f"syscall {num}" + (f" errno {post.regs[2]}" if post.regs[7] else "")
    if insn >> 26 >= 0x20:
        return "store" if insn >> 26 >= 0x28 else "load"
    return "taken branch" if post.next_pc != (post.pc + 4) & M else "ok"


# --------------------------------------------------------------------------------------------------------
# Random cases
# --------------------------------------------------------------------------------------------------------
INTERESTING = [0, 1, 2, 3, 4, 5, 31, 32, 33, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000]
INTERESTING += [0x80000001, 0xFFFF8000, 0xFFFFFFFE, 0xFFFFFFFF, HEAP_START, HEAP_END]
u32 = st.integers(0, M)
values = st.one_of(st.sampled_from(INTERESTING), u32, st.integers(0, 64))
regnum = st.integers(0, 31)
nonzero_reg = st.integers(1, 31)
DATA_AREAS = [0x10000000, 0x00400000, 0x7FFEFFE0, 0xFFFFFFE0, 0x00000000, HEAP_START]


def sx16(v: int) -> int:
    return (v | 0xFFFF0000) if v & 0x8000 else v


def biased(rng: random.Random) -> int:
    """A register value: an interesting one, a small one or any 32-bit value."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(INTERESTING)
    if kind == 1:
        return rng.randrange(65)
    return rng.getrandbits(32)


@st.composite
def base_state(draw: st.DrawFn) -> Case:
    """A running state with random registers and fields, its instruction leaf at `pc` still to be written.

    The bulk (registers, lo, hi, step, unrelated memory) comes from a seeded generator: hypothesis costs about
    0.1 ms per draw, and the registers would be 31 draws per step. The choices that matter to the instruction
    classes are drawn by the class strategies."""
    rng = random.Random(draw(st.integers(0, 2**64 - 1)))
    regs = [0, *(biased(rng) for _ in range(31))]
    pc = draw(st.one_of(st.sampled_from([0x00400000, 0x0040001C, 0x0FFFFFFC, 0xFFFFFFFC, 0]), u32)) & ~3
    delay_slot = draw(st.integers(0, 9)) == 0
    state = State(
        pc=pc,
        next_pc=rng.getrandbits(32) if delay_slot else (pc + 4) & M,
        lo=biased(rng),
        hi=biased(rng),
        heap=rng.choice([HEAP_START, HEAP_START + 0x3000, HEAP_END - 0x1000, HEAP_END]),
        step=rng.choice([rng.randrange(1000), 2**64 - 1, rng.getrandbits(64)]),
        regs=regs,
        preimage_key=rng.choice(KNOWN_KEYS),
        preimage_offset=rng.randrange(65),
    )
    mem = Memory()
    if rng.randrange(2):  # unrelated data elsewhere, so the roots are not trivial
        mem.write(rng.getrandbits(32) & ~31, rng.randbytes(32))
    return Case(state, mem)


def place(case: Case, insn: int) -> Case:
    case.mem.write_u32(case.state.pc & ~3, insn)
    return case


def fields(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """rs, rt, rd, sa: mostly small register numbers, sometimes anything."""
    return draw(regnum), draw(regnum), draw(regnum), draw(st.sampled_from([0, 0, 0, 1, 7, 31]))


@st.composite
def alu_cases(draw: st.DrawFn) -> Case:
    case = draw(base_state())
    kind = draw(st.integers(0, 3))
    if kind == 3:  # add, sub, addi at the signed boundaries: overflow or not
        rs, rt, rd = draw(nonzero_reg), draw(nonzero_reg), draw(regnum)
        name = draw(st.sampled_from(["add", "sub", "addi"]))
        boundary = st.sampled_from([0x7FFFFFFF, 0x80000000, 0x7FFFFFF0, 0x80000010, 0xFFFFFFFF, 1, 0x10])
        case.state.regs[rs] = draw(boundary)
        case.state.regs[rt] = draw(boundary)
        imm = draw(st.sampled_from([0x7FFF, 0x8000, 0xFFFF, 0x0001, 0x0010]))
        insn = asm("addi", rt, rs, sx16(imm)) if name == "addi" else asm(name, rd, rs, rt)
    elif kind == 0:  # SPECIAL shifts and arithmetic
        fn = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, *range(0x20, 0x30)]))
        rs, rt, rd, sa = fields(draw)
        if draw(st.booleans()):  # mostly honour the reserved fields
            rs = 0 if fn in (0, 2, 3) else rs
            sa = sa if fn in (0, 2, 3) else 0
        insn = r_type(0, rs, rt, rd, sa, fn)
    elif kind == 1:  # immediates
        op = draw(st.integers(0x08, 0x0F))
        rs = 0 if op == 0x0F and draw(st.booleans()) else draw(regnum)
        insn = i_type(
            op,
            rs,
            draw(regnum),
            draw(st.one_of(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF]), st.integers(0, 0xFFFF))),
        )
    else:  # SPECIAL2 mul, clz, clo (and holes)
        fn = draw(st.sampled_from([0x02, 0x20, 0x21, 0x03, 0x22, 0x3F]))
        rs, rt, rd, sa = fields(draw)
        if fn in (0x20, 0x21) and draw(st.booleans()):
            rt = rd
        insn = r_type(0x1C, rs, rt, rd, 0 if draw(st.booleans()) else sa, fn)
    case.what = f"alu 0x{insn:08x}"
    return place(case, insn)


@st.composite
def hilo_trap_cases(draw: st.DrawFn) -> Case:
    case = draw(base_state())
    rs, rt, rd, sa = fields(draw)
    kind = draw(st.integers(0, 3))
    if kind == 0:  # mfhi .. divu (0x14..0x17 are holes)
        fn = draw(st.integers(0x10, 0x1B))
        if draw(st.booleans()):  # honour the reserved fields
            rs, rt = (0, 0) if fn in (0x10, 0x12) else (rs, rt)
            rt, rd = (0, 0) if fn in (0x11, 0x13) else (rt, rd)
            rd = 0 if fn >= 0x18 else rd
            sa = 0
        if draw(st.integers(0, 3)) == 0:
            case.state.regs[rt] = draw(st.sampled_from([0, M])) if rt else 0  # division edge cases
        insn = r_type(0, rs, rt, rd, sa, fn)
    elif kind == 1:  # madd, maddu, msub, msubu
        fn = draw(st.sampled_from([0x00, 0x01, 0x04, 0x05]))
        insn = r_type(0x1C, rs, rt, 0 if draw(st.booleans()) else rd, 0 if draw(st.booleans()) else sa, fn)
    elif kind == 2:  # register traps, with a random code field
        fn = draw(st.integers(0x30, 0x37))
        if draw(st.booleans()) and rs and rt:
            case.state.regs[rt] = case.state.regs[rs]
        insn = (rs << 21) | (rt << 16) | (draw(st.integers(0, 0x3FF)) << 6) | fn
    else:  # immediate traps (REGIMM 0x08..0x0F)
        imm = draw(st.integers(0, 0xFFFF))
        if draw(st.booleans()) and rs:
            case.state.regs[rs] = sx16(imm)
        insn = i_type(1, rs, draw(st.integers(0x08, 0x0F)), imm)
    case.what = f"hilo/trap 0x{insn:08x}"
    return place(case, insn)


@st.composite
def branch_cases(draw: st.DrawFn) -> Case:
    case = draw(base_state())
    rs, rt, rd, _ = fields(draw)
    kind = draw(st.integers(0, 3))
    imm = draw(st.one_of(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF]), st.integers(0, 0xFFFF)))
    if kind == 0:  # beq, bne, blez, bgtz
        op = draw(st.integers(4, 7))
        if op >= 6 and draw(st.booleans()):
            rt = 0
        if draw(st.booleans()) and rs and rt:
            case.state.regs[rt] = case.state.regs[rs]
        insn = i_type(op, rs, rt, imm)
    elif kind == 1:  # REGIMM branches (and their holes)
        rt_field = draw(st.one_of(st.sampled_from([0x00, 0x01, 0x10, 0x11]), st.integers(0, 31)))
        insn = i_type(1, rs, rt_field, imm)
    elif kind == 2:  # j, jal
        insn = (draw(st.integers(2, 3)) << 26) | draw(st.integers(0, 0x03FFFFFF))
    else:  # jr, jalr (rd = rs included)
        fn = draw(st.sampled_from([0x08, 0x09]))
        if draw(st.booleans()):
            rd = rs
        insn = r_type(
            0, rs, rt if draw(st.integers(0, 4)) == 0 else 0, rd, draw(st.sampled_from([0, 0, 0, 5])), fn
        )
    case.what = f"branch 0x{insn:08x} pc 0x{case.state.pc:08x} nextPC 0x{case.state.next_pc:08x}"
    return place(case, insn)


@st.composite
def memory_cases(draw: st.DrawFn) -> Case:
    """Loads and stores (every opcode 0x20..0x3F) at addresses with data, all alignments."""
    case = draw(base_state())
    op = draw(
        st.one_of(st.sampled_from(sorted(v for v in OPCODE.values() if v >= 0x20)), st.integers(0x20, 0x3F))
    )
    base, rt = draw(regnum), draw(regnum)
    imm = draw(st.one_of(st.integers(0, 64), st.integers(0xFFC0, 0xFFFF), st.integers(0, 0xFFFF)))
    where = draw(st.integers(0, 3))
    if where == 0:
        target = (case.state.pc & ~31) + draw(st.integers(0, 31))  # the instruction's own leaf
    elif where == 1:
        target = draw(st.sampled_from(DATA_AREAS)) + draw(st.integers(0, 31))
    else:
        target = draw(u32)
    if draw(st.integers(0, 2)) > 0:  # mostly aligned to the access width
        target &= ~3
    if base:
        case.state.regs[base] = (target - sx16(imm)) & M
    a = (case.state.regs[base] + sx16(imm)) & M
    case.mem.write(a & ~31, draw(st.binary(min_size=32, max_size=32)))
    case.what = f"load/store op 0x{op:02x} at 0x{a:08x}"
    return place(case, i_type(op, base, rt, imm))


SYSCALL_NUMBERS = [4001, 4246, 4090, 4045, 4003, 4004]


@st.composite
def syscall_cases(draw: st.DrawFn) -> Case:
    """exit, exit_group, mmap, brk, read, write (not the preimage fds), unknown numbers."""
    case = draw(base_state())
    regs = case.state.regs
    kind = draw(st.integers(0, 9))
    num = draw(
        st.sampled_from(SYSCALL_NUMBERS) if kind < 8 else st.integers(4000, 4400) if kind == 8 else u32
    )
    regs[2] = num
    if num == 4090:  # mmap(addr, len): wrap-around, rounding, the heap limit
        regs[4] = 0 if draw(st.integers(0, 4)) else draw(u32)
        room = HEAP_END - case.state.heap
        regs[5] = draw(
            st.one_of(
                st.sampled_from([0, 1, 4095, 4096, 4097, room, room + 1, M, M - 4095, 0x80000000]),
                st.integers(0, 0x100000),
                u32,
            )
        )
        heaps = [HEAP_START, HEAP_START, HEAP_START + 0x5000, HEAP_END - 0x1000, HEAP_END, 0x5FFFFFFF]
        case.state.heap = draw(st.sampled_from(heaps) if draw(st.integers(0, 4)) else u32)
    elif num in (4003, 4004):
        regs[4] = draw(st.sampled_from([0, 0, 1, 2, 3, 4, 7, 9, 0x80000000]))
        regs[5] = draw(u32)
        regs[6] = draw(values)
    else:
        regs[4] = draw(values)
    insn = (draw(st.integers(0, 0xFFFFF)) << 6) | 0x0C  # the code field is ignored
    case.what = f"syscall {num} a0={regs[4]} a1=0x{regs[5]:08x}"
    return place(case, insn)


@st.composite
def preimage_cases(draw: st.DrawFn) -> Case:
    """Preimage key select (write fd 6) and read (read fd 5): all keys, offsets around the end, buffers."""
    case = draw(base_state())
    regs = case.state.regs
    buf = draw(st.sampled_from(DATA_AREAS)) + draw(st.sampled_from([0, 0, 1, 3, 4, 17, 31]))
    buf = draw(st.one_of(st.just(buf), u32))
    regs[5] = buf & M
    if draw(st.booleans()):  # select
        regs[2], regs[4] = 4004, 6
        regs[6] = draw(st.sampled_from([32, 32, 32, 0, 31, 33, M]))
        key = draw(st.sampled_from(KNOWN_KEYS + UNKNOWN_KEYS))
        case.mem.write(regs[5] & ~31, key)
    else:  # read
        regs[2], regs[4] = 4003, 5
        regs[6] = draw(st.one_of(st.sampled_from([0, 1, 4, 8, 31, 32, 33, 1000, M]), u32))
        key = draw(st.one_of(st.sampled_from(KNOWN_KEYS), st.sampled_from(UNKNOWN_KEYS)))
        case.state.preimage_key = key
        length = 8 + len(ORACLE.get(key)) if key in KNOWN_KEYS else 40
        case.state.preimage_offset = (
            draw(
                st.one_of(
                    st.sampled_from(
                        [0, 1, 7, 8, 32, length - 32, length - 1, length, length + 1, length + 100]
                    ),
                    st.integers(0, length + 40),
                )
            )
            & M
        )
        case.mem.write(regs[5] & ~31, draw(st.binary(min_size=32, max_size=32)))
    key_hex = case.state.preimage_key.hex()
    case.what = f"preimage {regs[2]} fd {regs[4]} buf 0x{regs[5]:08x} n {regs[6]} key 0x{key_hex}"
    return place(case, asm("syscall"))


@st.composite
def any_word_cases(draw: st.DrawFn) -> Case:
    """Any 32-bit word: mostly invalid encodings (COP0/1/2, branch-likely, MIPS32r2, ...); odd states."""
    case = draw(base_state())
    insn = draw(st.one_of(u32, st.integers(0x10, 0x3F).map(lambda op: (op << 26) | 0x12345)))
    kind = draw(st.integers(0, 9))
    if kind == 0:  # unaligned fetch
        case.state.pc |= draw(st.integers(1, 3))
    elif kind == 1:  # exited states are fixed points
        case.state.exited = True
        case.state.exit_code = draw(st.integers(0, 255))
    case.what = f"word 0x{insn:08x} pc 0x{case.state.pc:08x} exited {case.state.exited}"
    return place(case, insn)


def budget(share: float) -> int:
    """Examples for one class: its share of the 10k-step campaign, scaled by ROLLML_FUZZ_SCALE."""
    return max(10, int(10_000 * FUZZ_SCALE * share))


def fuzz(share: float) -> Callable:
    return settings(
        max_examples=budget(share),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


@fuzz(0.20)
@given(case=alu_cases())
def test_alu_matches_the_reference(evm: Evm, case: Case) -> None:
    compare(evm, case)


@fuzz(0.12)
@given(case=hilo_trap_cases())
def test_hilo_and_traps_match_the_reference(evm: Evm, case: Case) -> None:
    compare(evm, case)


@fuzz(0.15)
@given(case=branch_cases())
def test_branches_and_jumps_match_the_reference(evm: Evm, case: Case) -> None:
    compare(evm, case)


@fuzz(0.20)
@given(case=memory_cases())
def test_loads_and_stores_match_the_reference(evm: Evm, case: Case) -> None:
    compare(evm, case)


@fuzz(0.10)
@given(case=syscall_cases())
def test_syscalls_match_the_reference(evm: Evm, case: Case) -> None:
    compare(evm, case)


@fuzz(0.13)
@given(case=preimage_cases())
def test_preimage_select_and_read_match_the_reference(evm: Evm, case: Case) -> None:
    compare(evm, case)


@fuzz(0.10)
@given(case=any_word_cases())
def test_any_word_matches_the_reference(evm: Evm, case: Case) -> None:
    compare(evm, case)


def test_the_campaign_covered_every_outcome() -> None:
    """Runs after the campaign (tests run in file order): every fault, every syscall outcome, preimage reads
    in and at the end of streams were all reached."""
    if sum(OUTCOMES.values()) < 1000:
        pytest.skip("the random campaign did not run in this session")
    expected = {f"fault 0x{code:02x}" for code in range(0x80, 0x87)}
    expected |= {"exit", "exited fixed point", "load", "store", "taken branch", "ok"}
    expected |= {"preimage read", "preimage read at the end", "preimage select", "preimage select EINVAL"}
    expected |= {"syscall 4090", "syscall 4090 errno 12", "syscall 4090 errno 22", "syscall 4045"}
    expected |= {"syscall 4003", "syscall 4003 errno 9", "syscall 4004", "syscall 4004 errno 9"}
    missing = expected - set(OUTCOMES)
    assert not missing, f"never reached: {sorted(missing)}; reached: {dict(OUTCOMES)}"


# --------------------------------------------------------------------------------------------------------
# Real compiled programs, every step (or a window of them) proven on-chain
# --------------------------------------------------------------------------------------------------------
def prove_program(evm: Evm, path: Path, oracle: PreimageOracle, steps: int, window_every: int = 0) -> State:
    """Step the program with the reference stepper; prove the first `steps` steps (and, with
    `window_every`, every syscall and every `window_every`-th step after that) on-chain. The program's
    local data lives in its own context (a fresh one per program: local data is write-once)."""
    ctx = keccak256(str(path).encode() + os.urandom(8))
    prog = load_elf(path)
    state, mem = prog.state, prog.memory
    proven = n = 0
    while not state.exited:
        syscall = mem.read_u32(state.pc) & 0xFC00003F == 0x0C
        if n < steps or (window_every and (syscall or n % window_every == 0)):
            proof = make_proof(state, mem, oracle)
            if proof.part is not None:
                key, offset = proof.pre_state[32:64], int.from_bytes(proof.pre_state[64:68], "big")
                ensure_program_part(evm, oracle, ctx, key, offset)
            assert evm.step(proof.pre_state, proof.proof, ctx) == proof.post_state_hash, f"step {n}"
            proven += 1
        elif not window_every and n >= steps:
            break
        step(state, mem, oracle)
        n += 1
    if state.exited:  # the exited fixed point, too
        state.mem_root = mem.root()
        proof = make_proof(state, mem, oracle)
        assert evm.step(proof.pre_state, proof.proof, ctx) == proof.post_state_hash == state.hash()
    assert proven >= min(steps, n)
    return state


_program_parts: set[tuple[bytes, bytes, int]] = set()


def ensure_program_part(evm: Evm, oracle: PreimageOracle, ctx: bytes, key: bytes, offset: int) -> None:
    if (ctx, key, offset) in _program_parts:
        return
    data = oracle.get(key)
    if key[0] == KEY_TYPE_LOCAL:
        evm.load_local(int.from_bytes(key[1:], "big"), ctx, data)
    else:
        evm.load_keccak(data, offset if offset < 8 + len(data) else 0)
    _program_parts.add((ctx, key, offset))


def test_every_step_of_the_preimage_program_is_proven_on_chain(evm: Evm) -> None:
    """preimage.c: selects local 1, reads it, selects the keccak key it names, reads 1000 bytes into an
    odd-aligned buffer, reads at the end of the stream, selects a misaligned key; exits 0."""
    data = bytes((i * 7 + 3) & 0xFF for i in range(1000))
    store = PreimageStore()
    oracle = PreimageOracle(store, LocalData({1: store.put(data)}))
    state = prove_program(evm, program("preimage.c"), oracle, steps=10**9)
    assert state.status == Status.VALID


def test_a_c_program_is_proven_on_chain(evm: Evm) -> None:
    """compute.c (loops, calls, jump tables, bytes and half-words, mult/div, mmap): its first steps, then
    every syscall and every 20011th step up to its exit."""
    state = prove_program(evm, program("compute.c"), PreimageOracle(), steps=scaled(400), window_every=20011)
    assert state.status == Status.VALID


def instruction_class(word: int) -> tuple[int, int]:
    """The instruction's mnemonic as (opcode, function field): funct for SPECIAL/SPECIAL2, rt for REGIMM."""
    op = word >> 26
    if op in (0x00, 0x1C):
        return op, word & 0x3F
    if op == 0x01:
        return op, (word >> 16) & 0x1F
    return op, 0


def test_every_instruction_class_of_a_real_model_run_is_proven_on_chain(evm: Evm) -> None:
    """The MNIST MLP in the mlkit guest, stepped by the reference stepper from start to exit: the first step
    of every instruction class it executes (and every preimage read and key selection among the first
    ones) is proven on-chain with the model, input and claim in the oracle."""
    from mipsvm.preimage import put_blob
    from mlkit import native
    from mlkit.build import GUEST_ELF
    from mlkit.io import encode_payload
    from mlkit.models import reference

    exp = reference("mnist-mlp")
    payload = encode_payload([exp.example])
    store = PreimageStore()
    claim = keccak256(native.run(exp.model, payload))
    local = {1: put_blob(store, exp.model), 2: put_blob(store, payload), 3: claim}
    oracle = PreimageOracle(store, LocalData(local))
    ctx = keccak256(b"mnist-mlp" + os.urandom(8))
    prog = load_elf(GUEST_ELF)
    state, mem = prog.state, prog.memory
    proven: Counter[tuple[int, int]] = Counter()
    while not state.exited:
        cls = instruction_class(mem.read_u32(state.pc))
        if proven[cls] < (4 if cls == (0, 0x0C) else 1):  # a few syscalls: selects and reads
            proof = make_proof(state, mem, oracle)
            if proof.part is not None:
                key, offset = proof.pre_state[32:64], int.from_bytes(proof.pre_state[64:68], "big")
                ensure_program_part(evm, oracle, ctx, key, offset)
            post = evm.step(proof.pre_state, proof.proof, ctx)
            assert post == proof.post_state_hash, f"{cls} at step {state.step}"
            proven[cls] += 1
        step(state, mem, oracle)
    assert state.status == Status.VALID
    print(f"{len(proven)} instruction classes proven: {sorted(proven)}")
    assert len(proven) >= 30, f"only {len(proven)} instruction classes in the run: {sorted(proven)}"


# --------------------------------------------------------------------------------------------------------
# Malformed witnesses: both sides refuse them
# --------------------------------------------------------------------------------------------------------
def a_valid_step() -> StepProof:
    st_ = State(pc=0x00400000, next_pc=0x00400004, heap=HEAP_START)
    st_.regs[8] = 0x10000000
    mem = Memory()
    mem.write_u32(0x00400000, asm("lw", 9, 4, 8))
    mem.write(0x10000000, bytes(range(32)))
    return make_proof(st_, mem, ORACLE)


def both_refuse(evm: Evm, pre: bytes, proof: bytes, error: str) -> None:
    from mipsvm.witness import WitnessError

    with pytest.raises(WitnessError):
        verify_step(pre, proof)
    with pytest.raises(Reverted) as e:
        evm.step(pre, proof, CTX)
    assert e.value.data[:4] == selector(error), f"expected {error}, got 0x{e.value.data.hex()}"


def test_malformed_states_are_refused(evm: Evm) -> None:
    p = a_valid_step()
    assert evm.step(p.pre_state, p.proof, CTX) == p.post_state_hash
    both_refuse(evm, p.pre_state[:-1], p.proof, "InvalidStateLength(uint256)")
    both_refuse(evm, p.pre_state + b"\0", p.proof, "InvalidStateLength(uint256)")
    for exited in (2, 0xFF):
        both_refuse(
            evm, p.pre_state[:89] + bytes([exited]) + p.pre_state[90:], p.proof, "InvalidExitedFlag(uint256)"
        )
    both_refuse(evm, p.pre_state[:98] + b"\0\0\0\1" + p.pre_state[102:], p.proof, "NonZeroR0(uint256)")
    both_refuse(evm, p.pre_state, p.proof[:-1], "InvalidProofLength(uint256)")
    both_refuse(evm, p.pre_state, p.proof + bytes(32), "InvalidProofLength(uint256)")


@settings(max_examples=budget(0.01), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(position=st.integers(0, 1792 - 1), flip=st.integers(1, 255))
def test_a_corrupted_proof_byte_is_refused(evm: Evm, position: int, flip: int) -> None:
    p = a_valid_step()
    proof = bytearray(p.proof)
    proof[position] ^= flip
    both_refuse(evm, p.pre_state, bytes(proof), "InvalidMemoryProof(uint256)")


@settings(max_examples=budget(0.005), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(case=any_word_cases(), exited=st.integers(0, 1), exit_code=st.integers(0, 255))
def test_state_hash_matches_the_python_encoding(evm: Evm, case: Case, exited: int, exit_code: int) -> None:
    state = case.state
    state.exited, state.exit_code = bool(exited), exit_code
    out, _ = evm.call(evm.mips, STATE_HASH + encode(["bytes"], [state.encode()]))
    assert out == state.hash()


def test_a_proof_of_the_wrong_data_leaf_is_refused(evm: Evm) -> None:
    st_ = State(pc=0x00400000, next_pc=0x00400004, heap=HEAP_START)
    st_.regs[8] = 0x10000000
    mem = Memory()
    mem.write_u32(0x00400000, asm("addu", 9, 8, 8))  # touches no data: the data proof must be of address 0
    root = mem.root()
    st_.mem_root = root
    both_refuse(
        evm, st_.encode(), mem.proof(0x00400000) + mem.proof(0x10000000), "InvalidMemoryProof(uint256)"
    )
    assert (
        evm.step(st_.encode(), mem.proof(0x00400000) + mem.proof(0), CTX)
        == make_proof(st_, mem, ORACLE).post_state_hash
    )


# --------------------------------------------------------------------------------------------------------
# The oracle: the same stream parts as the Python oracle, and its bounds
# --------------------------------------------------------------------------------------------------------
def test_read_preimage_serves_the_parts_of_the_python_oracle(evm: Evm) -> None:
    for data in PREIMAGES[:6]:
        key = STORE.put(data)
        length = 8 + len(data)
        for offset in sorted({0, 1, 7, 8, 9, 31, 32, 33, length - 1, length, length + 1, length + 1000}):
            ON_CHAIN.ensure(evm, key, offset)
            assert evm.read_preimage(key, offset) == ORACLE.stream_part(key, offset), (len(data), offset)
    for ident in LOCALS:
        ON_CHAIN.ensure(evm, local_key(ident), 0)
        localized = local_key_on_chain(ident, CTX, evm.sender)
        for offset in range(0, 45):
            assert evm.read_preimage(localized, offset) == ORACLE.stream_part(local_key(ident), offset)


def local_key_on_chain(ident: int, ctx: bytes, writer: bytes) -> bytes:
    """localizeKey(0x01 ++ ident, ctx, writer) of IPreimageOracle.sol."""
    h = keccak256(local_key(ident) + ctx + bytes(12) + writer)
    return bytes([KEY_TYPE_LOCAL]) + h[1:]


def test_a_part_past_the_end_of_the_stream_cannot_be_loaded(evm: Evm) -> None:
    data = b"past the end"
    with pytest.raises(Reverted) as e:
        evm.load_keccak(data, 8 + len(data))
    assert e.value.data[:4] == selector("PartOffsetOOB(uint256,uint256)")
    with pytest.raises(Reverted) as e:
        evm.load_keccak(bytes(MAX_PREIMAGE + 1), 0)
    assert e.value.data[:4] == selector("PreimageTooLarge(uint256)")


def test_local_data_of_another_writer_is_invisible(evm: Evm) -> None:
    """A step localizes type-1 keys with its caller: data written by anyone else, for the same context and
    index, is never read."""
    attacker = b"\xaa" * 20
    ctx = keccak256(b"isolated context")
    evm.load_local(1, ctx, keccak256(b"forged"), sender=attacker)
    st_ = State(pc=0x00400000, next_pc=0x00400004, heap=HEAP_START, preimage_key=local_key(1))
    st_.regs[2], st_.regs[4], st_.regs[5], st_.regs[6] = 4003, 5, 0x10000000, 32
    mem = Memory()
    mem.write_u32(0x00400000, asm("syscall"))
    st_.mem_root = mem.root()
    with pytest.raises(Reverted) as e:
        evm.step(st_.encode(), mem.proof(0x00400000) + mem.proof(0x10000000), ctx)
    assert e.value.data[:4] == PREIMAGE_NOT_LOADED
    # once the caller itself (the game) writes it, the step reads the caller's word
    evm.load_local(1, ctx, LOCALS[1])
    expected = make_proof(st_, mem, ORACLE).post_state_hash
    assert evm.step(st_.encode(), mem.proof(0x00400000) + mem.proof(0x10000000), ctx) == expected


def test_a_read_into_the_last_leaf_of_memory_copies_the_bytes(evm: Evm) -> None:
    st_ = State(pc=0x00400000, next_pc=0x00400004, heap=HEAP_START, preimage_key=KECCAK_KEYS[5])
    st_.regs[2], st_.regs[4], st_.regs[5], st_.regs[6] = 4003, 5, 0xFFFFFFE4, 1000
    mem = Memory()
    mem.write_u32(0x00400000, asm("syscall"))
    post = st_.copy()
    post_mem = mem.copy()
    step(post, post_mem, ORACLE)
    assert post.regs[2] == 28
    assert post_mem.read(0xFFFFFFE4, 28) == ORACLE.stream_part(KECCAK_KEYS[5], 0)[0][:28], (
        "step.py wrote nothing"
    )
    case = Case(st_, mem)
    compare(evm, case)
