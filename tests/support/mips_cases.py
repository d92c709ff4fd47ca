"""Random VM cases for property tests: a pre-state with every field drawn (registers pointing at data, a
preimage key and offset, a random or a fixed instruction at pc) with its memory, and the preimage oracle they
read. Shared by the one-step proof tests (tests/mipsvm/test_witness.py) and the parser fuzzing
(tests/mlkit/test_fuzz_parsers.py)."""

from __future__ import annotations

from hypothesis import strategies as st

from mipsvm.constants import HEAP_END, HEAP_START
from mipsvm.memory import Memory
from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore, local_key
from mipsvm.state import State
from support.mips_asm import A0, A1, A2, BASE, DATA, OPCODE, SPECIAL_FUNCT, V0, asm, i_type

M = 0xFFFFFFFF

STREAM_DATA = bytes(range(256)) * 3
STORE = PreimageStore()
KECCAK = STORE.put(STREAM_DATA)
ORACLE = PreimageOracle(STORE, LocalData({1: KECCAK, 2: b"local two".ljust(32, b"\0")}))
KEYS = [KECCAK, local_key(1), local_key(2)]

values = st.one_of(
    st.sampled_from([0, 1, 2, 31, 32, 0x7FFFFFFF, 0x80000000, M, DATA, DATA + 0x1F, DATA + 0x3D, BASE]),
    st.integers(0, M),
    st.integers(DATA - 64, DATA + 256),
)
regnum = st.integers(0, 31)
small_imm = st.integers(-40, 300)


@st.composite
def instructions(draw: st.DrawFn) -> tuple[int, dict[int, int]]:
    """An instruction word and registers it needs (syscall arguments)."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.integers(0, M)), {}
    if kind == 1:  # loads and stores
        op = draw(st.sampled_from([v for v in OPCODE.values() if v >= 0x20]))
        return i_type(op, draw(regnum), draw(regnum), draw(small_imm)), {}
    if kind == 2:  # SPECIAL
        fn = draw(st.sampled_from(sorted(SPECIAL_FUNCT.values())))
        return fn | (draw(st.integers(0, 0x3FFFF)) << 11 & 0x03FFF800) | (
            draw(st.sampled_from([0, 0, 1, 31])) << 6
        ), {}
    if kind == 3:  # immediates, branches, jumps
        op = draw(st.sampled_from([v for v in OPCODE.values() if v < 0x20] + [1, 0x1C]))
        return i_type(op, draw(regnum), draw(regnum), draw(st.integers(0, 0xFFFF))), {}
    # syscalls
    num, fd = draw(
        st.one_of(
            st.sampled_from([(4003, 5), (4004, 6)]),  # preimage read and select
            st.tuples(
                st.sampled_from([4001, 4246, 4090, 4045, 4003, 4004, 4005]), st.sampled_from([0, 1, 2, 3, 9])
            ),
        )
    )
    buf = draw(st.one_of(st.sampled_from([DATA, DATA + 32, DATA + 0x41, DATA + 0x5F]), st.integers(0, M)))
    n = draw(st.one_of(st.sampled_from([0, 1, 31, 32, 33, 1000]), st.integers(0, M)))
    if num == 4090:
        buf = draw(st.sampled_from([0, 0, 0x1000]))
    return asm("syscall"), {V0: num, A0: fd, A1: buf, A2: n}


@st.composite
def cases(draw: st.DrawFn) -> tuple[State, Memory]:
    insn, fixed = draw(instructions())
    pc = (
        draw(st.one_of(st.sampled_from([BASE, BASE + 0x1C, DATA + 4, 0xFFFFFFFC, 0]), st.integers(0, M))) & ~3
    )
    if draw(st.integers(0, 19)) == 0:
        pc |= draw(st.integers(1, 3))
    regs = draw(st.lists(values, min_size=32, max_size=32))
    regs[0] = 0
    for r, v in fixed.items():
        regs[r] = v
    state = State(
        pc=pc & M,
        next_pc=(pc + 4) & M if draw(st.integers(0, 5)) else draw(st.integers(0, M)),
        lo=draw(values),
        hi=draw(values),
        heap=draw(st.sampled_from([HEAP_START, HEAP_END - 4096, HEAP_END])),
        exited=draw(st.integers(0, 50)) == 0,
        exit_code=draw(st.integers(0, 255)),
        step=draw(st.integers(0, 2**64 - 1)),
        regs=regs,
        preimage_key=draw(st.sampled_from(KEYS)),
    )
    stream_len = 8 + len(ORACLE.get(state.preimage_key))
    state.preimage_offset = draw(st.one_of(st.integers(0, stream_len + 40), st.sampled_from([0, stream_len])))
    mem = Memory()
    pointers = draw(st.lists(st.sampled_from(regs[1:]), max_size=3))  # data where some registers point
    for addr in {DATA, DATA + 0x40, *(v & ~31 for v in pointers)}:
        mem.write(addr, draw(st.binary(min_size=32, max_size=32)))
    if draw(st.booleans()):
        mem.write(DATA, KECCAK)  # a key to select
    mem.write_u32(pc & ~3 & M, insn)
    return state, mem
