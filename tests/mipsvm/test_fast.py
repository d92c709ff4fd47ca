"""The fast executor (mipsvm/fast.py) and trace access (mipsvm/trace.py) against the reference stepper.

Every comparison is with `mipsvm.step.step` on its own copy of the program: the state after every step
(lockstep: `run_to(n)` for each n, so Unicorn stops at every instruction boundary), the state hash at many
points of longer runs (long Unicorn runs that end at syscalls, faults and delay-slot TLB fills), random
instruction streams (hypothesis; ROLLML_FUZZ_SCALE scales them), hand-written edge cases around delay
slots and faults, snapshots of the trace, and qemu-mips for whole C programs.
"""

from __future__ import annotations

import faulthandler
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.env import scaled
from support.mips_asm import A0, A1, A2, RA, T0, T1, T2, T3, T9, V0, asm
from support.mips_build import PROGRAMS, build_source, program
from support.mips_random import BASE, DATA, random_program

from mipsvm.constants import HEAP_START, Fault, Status
from mipsvm.elf import Program, load_elf
from mipsvm.fast import (
    F_BRANCH,
    F_JR,
    F_STOP,
    F_SYSCALL,
    KIND_STOP,
    KIND_SYSCALL,
    FastVM,
    spec_invalid,
    uncounted_run,
    word_kind,
)
from mipsvm.hashing import keccak256
from mipsvm.memory import Memory
from mipsvm.native import build_shared
from mipsvm.preimage import (
    LocalData,
    PreimageMissing,
    PreimageOracle,
    PreimageStore,
    keccak_key,
    local_key,
    stream,
)
from mipsvm.state import State
from mipsvm.step import Access, Oracle, step
from mipsvm.trace import MIN_SNAPSHOTS, Recording, RecordingError, RecordingStore, Trace
from mipsvm.witness import verify_step

PREIMAGE = b"rollml fast executor test preimage " * 5


class TotalOracle:
    """An oracle that knows every key: PREIMAGE for its own key, pseudo-random data for any other."""

    def stream_part(self, key: bytes, offset: int) -> tuple[bytes, int]:
        data = PREIMAGE if key == keccak_key(PREIMAGE) else keccak256(key) * (1 + key[-1] % 4)
        s = stream(data)
        return s[offset : offset + 32].ljust(32, b"\0"), len(s)


class Reference:
    """The reference stepper on its own copy of a program, collecting the output like FastVM."""

    def __init__(self, prog: Program, oracle: Oracle) -> None:
        self.state = prog.state.copy()
        self.mem = prog.memory.copy()
        self.oracle = oracle
        self.out: dict[int, bytearray] = {1: bytearray(), 2: bytearray(), 3: bytearray()}

    def step(self) -> Access:
        return step(self.state, self.mem, self.oracle, lambda fd, b: self.out[fd].extend(b))

    def run_to(self, n: int) -> None:
        while self.state.step < n and not self.state.exited:
            self.step()

    def state_hash(self) -> bytes:
        st = self.state.copy()
        st.mem_root = self.mem.root()
        return st.hash()


def bare(state: State) -> bytes:
    """The encoded state without its memory root."""
    st = state.copy()
    st.mem_root = bytes(32)
    return st.encode()


def lockstep(prog: Program, oracle: Oracle, max_steps: int) -> Reference:
    """Step the reference and `run_to(n)` the fast executor for every n; compare after every step."""
    ref = Reference(prog, oracle)
    with FastVM(prog, oracle) as vm:
        for n in range(1, max_steps + 1):
            if ref.state.exited:
                break
            access = ref.step()
            vm.run_to(n)
            assert bare(vm.cpu_state()) == bare(ref.state), f"state differs after step {n}"
            page = access.data_addr >> 12
            assert vm.guest.page(page) == ref.mem.read(page << 12, 4096), f"memory differs after step {n}"
        assert vm.state_hash() == ref.state_hash()
        assert (vm.stdout, vm.stderr, vm.output) == (ref.out[1], ref.out[2], ref.out[3])
    return ref


def at_points(prog: Program, oracle: Oracle, points: list[int]) -> Reference:
    """Run both to each point (long fast-path runs); compare the state hashes there."""
    ref = Reference(prog, oracle)
    with FastVM(prog, oracle) as vm:
        for n in sorted(points):
            ref.run_to(n)
            vm.run_to(n)
            assert vm.state_hash() == ref.state_hash(), f"state hash differs at step {n}"
        assert (vm.stdout, vm.output) == (ref.out[1], ref.out[3])
    return ref


def words_program(words: list[int], regs: dict[int, int] | None = None, data: bytes = b"") -> Program:
    """A program of `words` at BASE (the executable range), `data` at DATA."""
    mem = Memory()
    for i, w in enumerate(words):
        mem.write_u32(BASE + 4 * i, w)
    mem.write(DATA, data)
    state = State(pc=BASE, next_pc=BASE + 4, heap=HEAP_START)
    for r, v in (regs or {}).items():
        state.regs[r] = v & 0xFFFFFFFF
    state.mem_root = mem.root()
    return Program(state, mem, [(BASE, BASE + 4 * len(words))], BASE)


def li(reg: int, value: int) -> list[int]:
    return [asm("lui", reg, value >> 16), asm("ori", reg, reg, value & 0xFFFF)]


EXIT = [asm("addiu", V0, 0, 4246), asm("addiu", A0, 0, 0), asm("syscall")]


# --------------------------------------------------------------------------------------------------------
# The pre-scan and the native build
# --------------------------------------------------------------------------------------------------------
def test_word_kinds_follow_the_spec() -> None:
    assert not spec_invalid(asm("addu", T0, T1, T2))
    assert spec_invalid(asm("addu", T0, T1, T2) | (3 << 6))  # sa != 0: Unicorn would run it
    assert spec_invalid(asm("sll", T0, T1, 4) | (5 << 21))  # rs != 0
    assert spec_invalid(0x7C000000 | (T1 << 16) | (T0 << 11) | (0x10 << 6) | 0x20)  # seb (MIPS32r2)
    assert spec_invalid((0x14 << 26) | (T0 << 21) | 4)  # beql
    assert spec_invalid((0x31 << 26) | (T0 << 21))  # lwc1
    assert word_kind(asm("break")) == word_kind(asm("sc", T0, 0, T1)) == KIND_STOP
    assert word_kind(asm("syscall")) == word_kind(asm("syscall") | (123 << 6)) == KIND_SYSCALL  # code ignored
    assert word_kind(asm("jalr", T9, T9)) == KIND_STOP  # the link overwrites the target
    assert word_kind(asm("bltzal", RA, 4)) == KIND_STOP


def test_text_flags() -> None:
    words = [asm("beq", 0, 0, 2), asm("addu", 1, 2, 3), asm("jr", RA), asm("syscall")]
    words += [asm("bne", 1, 2, 5), asm("syscall"), asm("j", DATA), 0, asm("b", -1), asm("b", 0)]
    with FastVM(words_program(words), TotalOracle()) as vm:
        flags = list(vm.text.flags[: len(words)])
    assert flags[:4] == [F_BRANCH, 0, F_STOP, F_SYSCALL]  # jr: its slot holds a syscall
    assert flags[4:6] == [F_STOP, F_SYSCALL]  # a branch whose slot is a syscall
    assert flags[6] == F_STOP  # a jump out of the text
    assert flags[8] == F_STOP  # a branch whose slot is a branch
    assert vm.text.flags[1023] == F_STOP  # the last text word: the next one is not text
    assert len({F_STOP, F_BRANCH, F_SYSCALL, F_JR}) == 4 and F_JR & F_BRANCH == 0


def test_native_build_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLML_CACHE", str(tmp_path))
    src = tmp_path / "f.c"
    src.write_text("int f(void) { return 7; }\n")
    a = build_shared("t", [src])
    assert build_shared("t", [src]) == a
    assert build_shared("t", [src], flags=["-O1", "-shared", "-fPIC"]) != a
    src.write_text("int f(void) { return 8; }\n")
    assert build_shared("t", [src]) != a


def test_doctor_checks_the_host_c_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rollml doctor` checks the compiler `mipsvm.native` builds the hooks with, and names the fix."""
    from rollml.cli.doctor import _host_c_compiler

    monkeypatch.delenv("CC", raising=False)
    check = _host_c_compiler()
    assert check.ok and check.name == "host C compiler (cc)" and check.detail
    monkeypatch.setenv("CC", "rollml-no-such-cc")
    check = _host_c_compiler()
    assert not check.ok
    fix = "install rollml-no-such-cc, or unset CC to use cc (apt-get install gcc)"
    assert check.detail == f"not found; fix: {fix}"


# --------------------------------------------------------------------------------------------------------
# Edge cases: delay slots, faults, self-modifying code, division by zero, addresses above 2 GiB
# --------------------------------------------------------------------------------------------------------
def _loop(body: list[int], n: int = 6) -> list[int]:
    """t3 = n; loop: body...; t3 -= 1; bne t3, 0, loop (body's last word is the delay slot)."""
    return [
        asm("addiu", T3, 0, n),
        *body[:-1],
        asm("addiu", T3, T3, -1),
        asm("bne", T3, 0, -len(body) - 1),
        body[-1],
    ]


def seq(*parts: int | list[int]) -> list[int]:
    """Words and lists of words, flattened."""
    return [w for part in parts for w in (part if isinstance(part, list) else [part])]


HIGH = 0xC0001000
SELF = 0x2409002A  # addiu t1, zero, 42: what the self-modifying cases store
EDGE_CASES: dict[str, tuple[list[int], dict[int, int]]] = {
    "trap in slot": (seq(asm("addiu", T0, 0, 1), asm("b", 1), asm("teq", T0, T0), 0, EXIT), {}),
    "unaligned load in slot": (seq(asm("beq", 0, 0, 1), asm("lw", T1, 1, T0), 0, EXIT), {T0: DATA}),
    "unaligned store": (seq(0, asm("sh", T1, 3, T0), EXIT), {T0: DATA}),
    "overflow in slot": (seq(asm("bal", 1), asm("add", T1, T0, T0), 0, EXIT), {T0: 0x7FFF0000}),
    "overflow": (seq(asm("addi", T1, T0, 0x7FFF), EXIT), {T0: 0x7FFFFFFF}),
    "div by zero": (
        seq(asm("div", T0, T1), asm("mfhi", T2), asm("divu", T0, T1), asm("mflo", T3), asm("b", 1))
        + seq(asm("div", T0, T1), 0, asm("mfhi", A1), asm("mflo", A2), EXIT),  # a div in the slot
        {T0: 0xFFFFFFF9, T1: 0},
    ),
    "loads in slots, cold TLB": (
        seq(_loop([asm("lw", T1, 0, T0), asm("addiu", T0, T0, 4096), asm("sw", T1, 8, T0)]), EXIT),
        {T0: DATA},
    ),
    "not-taken branches, cold TLB in slots": (
        seq(
            _loop(
                [asm("bne", 0, 0, 5), asm("lw", T1, 0, T0), asm("addiu", T0, T0, 4096), asm("sw", T0, 0, T0)]
            ),
            EXIT,
        ),
        {T0: DATA},
    ),
    "branch to its own slot": (
        seq(
            asm("beq", 0, 0, 0),
            asm("lw", T0, 0, T0),
            li(T9, BASE + 20),  # the jr's own slot
            asm("jr", T9),
            asm("lw", T1, 4, T1),
            EXIT,
        ),
        {T0: DATA, T1: DATA + 0x3000},
    ),
    "high addresses in slots": (
        seq(_loop([asm("lbu", T1, 3, T0), asm("addiu", T0, T0, 0x1000), asm("sb", T1, 0, T0)], 9), EXIT),
        {T0: HIGH},
    ),
    "store into text in slot": (seq(asm("b", 1), asm("sw", T1, 12, T0), 0, 0, 0, EXIT), {T0: BASE, T1: SELF}),
    "store into the next word": (seq(asm("sw", T1, 8, T0), 0, asm("break"), EXIT), {T0: BASE, T1: SELF}),
    "jump into data": (seq(li(T9, DATA), asm("jr", T9), 0, 0, 0, EXIT), {}),
    # the slot's load fills the TLB (a stop after the jump) and the jump leaves the text (a failed fetch)
    "jump into data, cold TLB in slot": (
        seq(li(T9, DATA), asm("jr", T9), asm("lw", T1, 0, T0), 0, 0, EXIT),
        {T0: DATA + 0x3000},
    ),
    "jump to an odd address": (seq(li(T9, BASE + 2), asm("jalr", RA, T9), 0), {}),
    "branch in slot": (seq(asm("b", 2), asm("b", 2), 0, 0, 0, EXIT), {}),
    "syscall in slot": (seq(asm("addiu", V0, 0, 4045), asm("b", 1), asm("syscall"), 0, EXIT), {}),
    "ll/sc": (
        seq(_loop([asm("ll", T1, 0, T0), asm("addiu", T1, T1, 3), asm("sc", T1, 0, T0)]), EXIT),
        {T0: DATA},
    ),
    "jalr rd = rs": (seq(li(T9, BASE + 16), asm("jalr", T9, T9), 0, 0, asm("addu", T2, T9, 0), EXIT), {}),
    "invalid word Unicorn accepts": (seq(0, asm("addu", T0, T1, T2) | (1 << 6), EXIT), {}),
}


def _page_crossing(branch: int) -> list[int]:
    """A loop whose branch is the last word of the first text page and whose slot (a load from a new page
    each time) is the first word of the next one."""
    words = [asm("addiu", T3, 0, 5), asm("j", BASE + 4 * 1020), 0] + [0] * 1017
    words += [asm("addiu", T3, T3, -1), asm("addiu", T0, T0, 4096), asm("addiu", T2, T2, 1), branch]
    return [*words, asm("lw", T1, 0, T0), asm("bne", T3, 0, 1018 - len(words)), 0, *EXIT]


# 300 straight-line words: Unicorn's TBs end at split points (mipsvm.fast.TextMap), runs stop there
EDGE_CASES["straight stretch past a split point"] = (seq([asm("addiu", T2, T2, 1)] * 300, EXIT), {})
EDGE_CASES["page-crossing slot, taken"] = (_page_crossing(asm("bne", T3, 0, -5)), {T0: DATA})
EDGE_CASES["page-crossing slot, not taken"] = (_page_crossing(asm("beq", T3, 0, 3)), {T0: DATA})
# The data of "jump into data": code that jumps back to the exit at BASE + 24.
DATA_CODE = b"".join(w.to_bytes(4, "big") for w in seq(0, li(T9, BASE + 24), asm("jr", T9), 0))


def edge_program(name: str) -> Program:
    """The edge case `name` as a program, with its data (code for the jumps into data)."""
    words, regs = EDGE_CASES[name]
    data = DATA_CODE if name.startswith("jump into data") else bytes(range(256)) * 16
    return words_program(words, regs, data)


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_case(name: str) -> None:
    prog = edge_program(name)
    ref = lockstep(prog, TotalOracle(), 400)
    assert ref.state.exited, "the edge-case program should finish"
    # the same program in one go: long Unicorn runs that end in the interesting place
    with FastVM(prog, TotalOracle()) as vm:
        assert vm.run().hash() == ref.state_hash()


def test_edge_case_outcomes() -> None:
    """The edge cases do reach what they are named after (else they would test less than they claim)."""

    def final(name: str) -> State:
        words, regs = EDGE_CASES[name]
        with FastVM(words_program(words, regs, bytes(4096)), TotalOracle()) as vm:
            return vm.run()

    assert final("trap in slot").exit_code == Fault.TRAP
    assert final("unaligned load in slot").exit_code == Fault.UNALIGNED_ACCESS
    assert final("overflow in slot").exit_code == Fault.OVERFLOW
    assert final("jump to an odd address").exit_code == Fault.UNALIGNED_FETCH
    assert final("branch in slot").exit_code == Fault.BRANCH_IN_DELAY_SLOT
    assert final("invalid word Unicorn accepts").exit_code == Fault.INVALID_INSTRUCTION
    assert final("store into the next word").status == Status.VALID  # the break was overwritten
    div = final("div by zero")
    assert (div.regs[T2], div.regs[T3], div.regs[A1], div.regs[A2]) == (0, 0xFFFFFFF9, 0, 0xFFFFFFF9)


@pytest.mark.parametrize(
    "name", ["straight stretch past a split point", "page-crossing slot, taken", "loads in slots, cold TLB"]
)
def test_uncounted_baseline_ends_where_the_exact_run_does(name: str) -> None:
    """bench/vm.py's baseline (no counting hook, no TBs to go by) stops at split points too, with the pc
    of the TB that ran into one: it must find where, and end as the exact run does."""
    prog = edge_program(name)
    with FastVM(prog, TotalOracle()) as vm:
        final = vm.run()
    raw = uncounted_run(prog, TotalOracle())
    assert (raw.exit_code, raw.regs) == (final.exit_code, final.regs)


# --------------------------------------------------------------------------------------------------------
# Whole programs
# --------------------------------------------------------------------------------------------------------
def test_hello_lockstep() -> None:
    ref = lockstep(load_elf(program("hello.S")), PreimageOracle(), 100)
    assert ref.out[1] == b"hello\n"


def test_compute_lockstep_and_points() -> None:
    prog = load_elf(program("compute.c"))
    lockstep(prog, PreimageOracle(), 40_000)
    rnd = random.Random(1)
    ref = at_points(prog, PreimageOracle(), [rnd.randrange(420_000) for _ in range(12)] + [10**9])
    assert ref.state.status == Status.VALID


def test_kernel_points() -> None:
    prog = load_elf(program("fast_kernel.c", extra_flags=["-DROUNDS=1"]))
    rnd = random.Random(2)
    ref = at_points(prog, PreimageOracle(), [rnd.randrange(600_000) for _ in range(6)] + [10**9])
    assert ref.state.status == Status.VALID


def test_restore_snapshot_and_export() -> None:
    prog = load_elf(program("compute.c"))
    with FastVM(prog, PreimageOracle()) as vm:
        final = vm.run()
        vm_b = FastVM(prog, PreimageOracle())
        vm_b.run_to(200_000)
        state, memory = vm_b.state(), vm_b.export_memory()
        assert memory.root() == state.mem_root
        vm.restore(state, memory)  # backwards, into a VM that has run to the end
        assert vm.state() == state
        assert vm.run().hash() == final.hash()
        vm_b.close()


def test_survives_a_replaced_sigsegv_handler() -> None:
    prog = load_elf(program("compute.c"))
    with FastVM(prog, PreimageOracle()) as vm:
        vm.run_to(1000)
        was_enabled = faulthandler.is_enabled()
        faulthandler.enable()  # installs its own SIGSEGV handler over ours
        try:
            assert vm.run().status == Status.VALID
        finally:
            if not was_enabled:
                faulthandler.disable()


# --------------------------------------------------------------------------------------------------------
# Random instruction streams
# --------------------------------------------------------------------------------------------------------
FUZZ_EXAMPLES = scaled(120)
FUZZ_STEPS = 600  # per example and mode: 120 examples x (600 lockstep + 600 in long runs) >= 100k steps


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
@example(seed=11780)  # a TLB-filling slot whose jump leaves the text (CI found it)
def test_random_streams(seed: int) -> None:
    prog = random_program(seed)
    lockstep(prog, TotalOracle(), FUZZ_STEPS)
    rnd = random.Random(seed)
    at_points(prog, TotalOracle(), [rnd.randrange(1, FUZZ_STEPS) for _ in range(4)] + [FUZZ_STEPS])


# --------------------------------------------------------------------------------------------------------
# Exact stops inside translation blocks
# --------------------------------------------------------------------------------------------------------
# The fast path counts whole translation blocks; a stop at step n runs on Unicorn up to the last block
# that fits and finishes on the reference stepper. So every n is checked as the end of one run from the
# start (not step by step, which would stop at every instruction boundary anyway), with the steps where
# that is delicate named: in a delay slot, right before or after a syscall, before a trap, at a fault.
SLOT, BEFORE_SYSCALL, AFTER_SYSCALL, BEFORE_TRAP, AFTER_TRAP, FAULT = (
    "in a delay slot",
    "before a syscall",
    "after a syscall",
    "before a trap",
    "after a trap",
    "at a fault",
)
TRAP_WORDS = {asm(name, 1, 2) & 0xFC00003F for name in ("teq", "tne", "tge", "tgeu", "tlt", "tltu")}


def delicate_steps(prog: Program, oracle: Oracle, max_steps: int) -> dict[str, set[int]]:
    """The steps n of the reference run at which a stop is delicate (see above), by kind."""
    ref = Reference(prog, oracle)
    kinds: dict[str, set[int]] = {k: set() for k in (SLOT, BEFORE_SYSCALL, AFTER_SYSCALL, BEFORE_TRAP, FAULT)}
    kinds[AFTER_TRAP] = set()
    while ref.state.step < max_steps and not ref.state.exited:
        st, n = ref.state, ref.state.step
        word = ref.mem.read_u32(st.pc) if st.pc % 4 == 0 else 0
        if st.next_pc != (st.pc + 4) & 0xFFFFFFFF:
            kinds[SLOT].add(n)
        if word & 0xFC00003F == 0x0000000C:
            kinds[BEFORE_SYSCALL].add(n)
            kinds[AFTER_SYSCALL].add(n + 1)
        if word & 0xFC00003F in TRAP_WORDS or (word >> 26 == 1 and 0x08 <= (word >> 16) & 31 <= 0x0E):
            kinds[BEFORE_TRAP].add(n)
            kinds[AFTER_TRAP].add(n + 1)
        ref.step()
        if ref.state.exited and ref.state.exit_code >= Fault.INVALID_INSTRUCTION:
            kinds[FAULT].update((n, n + 1))
    return kinds


def every_stop(prog: Program, oracle: Oracle, max_steps: int) -> Reference:
    """For every n up to `max_steps` (or the exit, and one past it): the fast executor, restored to the
    program and run to n in one go, has the reference stepper's state hash after n steps."""
    ref = Reference(prog, oracle)
    with FastVM(prog, oracle) as vm:
        for n in range(max_steps + 1):
            ref.run_to(n)
            vm.restore(prog.state, prog.memory)
            vm.run_to(n)
            assert vm.state_hash() == ref.state_hash(), f"state hash differs after a run to step {n}"
            if ref.state.exited and n > ref.state.step:
                break
    return ref


STOP_EXAMPLES = scaled(60)


@settings(max_examples=STOP_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_every_stop_of_random_streams(seed: int) -> None:
    every_stop(random_program(seed), TotalOracle(), 300)


@settings(max_examples=STOP_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_delicate_stops_of_random_streams(seed: int, data: st.DataObject) -> None:
    """Random stop points among the delicate ones (any order: each from a restore), in long runs."""
    prog = random_program(seed)
    kinds = delicate_steps(prog, TotalOracle(), FUZZ_STEPS)
    delicate = sorted(set().union(*kinds.values()))
    if not delicate:
        return
    points = data.draw(st.lists(st.sampled_from(delicate), min_size=1, max_size=12))
    ref_hashes = {}
    for n in sorted(set(points)):
        ref = Reference(prog, TotalOracle())
        ref.run_to(n)
        ref_hashes[n] = ref.state_hash()
    with FastVM(prog, TotalOracle()) as vm:
        for n in points:
            vm.restore(prog.state, prog.memory)
            vm.run_to(n)
            assert vm.state_hash() == ref_hashes[n], f"state hash differs after a run to step {n}"


def test_the_random_streams_reach_every_delicate_kind() -> None:
    """The corpus of the two tests above does stop in delay slots, around syscalls and traps and at faults
    (else they would test less than they claim): 20 seeds cover every kind."""
    seen: dict[str, int] = {}
    for seed in range(20):
        for kind, steps in delicate_steps(random_program(seed), TotalOracle(), FUZZ_STEPS).items():
            seen[kind] = seen.get(kind, 0) + len(steps)
    assert all(seen.get(k, 0) >= 3 for k in (SLOT, BEFORE_SYSCALL, AFTER_SYSCALL, BEFORE_TRAP, FAULT)), seen


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_every_stop_of_edge_cases(name: str) -> None:
    assert every_stop(edge_program(name), TotalOracle(), 400).state.exited


def test_every_stop_of_preimage_reads() -> None:
    """Native preimage reads and selects (each ends a TB), syscalls for the reference stepper, a read into
    the text: every stop point of the whole run."""
    prog = preimage_heavy()
    data = random.Random(8).randbytes(300)
    kinds = delicate_steps(prog, blob_oracle(data), 10**6)
    assert len(kinds[BEFORE_SYSCALL]) > 20 and kinds[SLOT]
    ref = every_stop(prog, blob_oracle(data), 10**6)
    assert ref.state.status == Status.VALID


def test_faults_in_blocks_rewind_to_the_exact_step() -> None:
    """A fault inside a long TB (Unicorn does not say where): the executor rewinds to its checkpoint and
    finds the faulting step, whose state equals the reference stepper's; the same for a trap in a loop
    that runs many TBs first, so the checkpoint lies well before the fault."""
    body = [asm("addiu", T0, T0, 1), asm("addiu", T1, T1, 3), asm("sw", T1, 0, A0), asm("lw", T2, 0, A0)]
    fault_at_end = seq(body * 6, asm("lw", T2, 2, A0), body, EXIT)  # an unaligned load mid-TB
    loop_then_trap = seq(_loop([*body, asm("tne", T3, T3), asm("addiu", A1, A1, 1)], 2000), asm("teq", 0, 0))
    # stores into 3000 fresh pages before the fault: the undo log fills and the run stops for checkpoints
    many_pages = seq(_loop([asm("sw", T1, 0, T0), asm("addiu", T0, T0, 4096)], 3000), asm("lw", T2, 2, A0))
    for words in (fault_at_end, [*loop_then_trap, *EXIT], [*many_pages, *EXIT]):
        prog = words_program(words, {A0: DATA, T0: DATA + 0x10000, T1: 0x12345678})
        ref = Reference(prog, TotalOracle())
        ref.run_to(10**6)
        assert ref.state.exited and ref.state.exit_code in (Fault.UNALIGNED_ACCESS, Fault.TRAP)
        with FastVM(prog, TotalOracle()) as vm:
            assert vm.run().hash() == ref.state_hash() and vm.rewinds == 1


# --------------------------------------------------------------------------------------------------------
# Trace access
# --------------------------------------------------------------------------------------------------------
def test_trace_states_and_proofs() -> None:
    prog = load_elf(program("compute.c"))
    trace = Trace(prog, PreimageOracle(), interval=50_000)
    assert len(trace.snapshots) > 5
    assert trace.final_state.status == Status.VALID
    rnd = random.Random(3)
    points = [rnd.randrange(trace.steps) for _ in range(8)] + [0, trace.steps, trace.steps + 5]
    ref = Reference(prog, PreimageOracle())
    for n in sorted(points):  # straight reference run to each n; the trace is queried out of order below
        ref.run_to(n)
        ref_hash = ref.state_hash()
        assert trace.state_hash_at(n) == ref_hash
    for n in reversed(points):
        state, memory = trace.state_at(n)
        assert state.hash() == trace.state_hash_at(n)
        assert memory.root() == state.mem_root
    for n in points[:3]:
        p = trace.proof_at(n)
        assert verify_step(p.pre_state, p.proof, p.part, p.part_len) == trace.state_hash_at(n + 1)
    assert trace.stdout.startswith(b"primes 550")
    trace.close()


def test_traces_share_a_bounded_executor_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traces beyond the budget give their executors back and rebuild them from a snapshot on the next
    query, with the same answers (many games, few native contexts: a flood cannot exhaust them)."""
    from mipsvm import trace as trace_mod

    monkeypatch.setattr(trace_mod, "LIVE_EXECUTORS", trace_mod.ExecutorBudget(limit=2))
    prog = load_elf(program("compute.c"))
    traces = [Trace(prog, PreimageOracle(), interval=50_000) for _ in range(5)]
    assert sum(t.live for t in traces) == 2 and len(trace_mod.LIVE_EXECUTORS) == 2
    ref = Reference(prog, PreimageOracle())
    rnd = random.Random(7)
    points = sorted(rnd.randrange(traces[0].steps) for _ in range(6))
    expected = {}
    for n in points:
        ref.run_to(n)
        expected[n] = ref.state_hash()
    for n in points:  # round robin: every query but the first two finds its trace released
        for t in traces:
            assert t.state_hash_at(n) == expected[n]
            assert sum(u.live for u in traces) <= 2
    p = traces[0].proof_at(points[2])
    assert verify_step(p.pre_state, p.proof, p.part, p.part_len) == traces[3].state_hash_at(points[2] + 1)
    for t in traces:
        t.close()
    assert len(trace_mod.LIVE_EXECUTORS) == 0


def reference_hashes(prog: Program, oracle: Oracle, points: list[int]) -> dict[int, bytes]:
    """The reference stepper's state hash after n steps, for each n of `points`."""
    ref, out = Reference(prog, oracle), {}
    for n in sorted(set(points)):
        ref.run_to(n)
        out[n] = ref.state_hash()
    return out


def test_trace_snapshots_are_capped() -> None:
    """Past `max_snapshots` every other snapshot goes (its pages into the next) and the interval doubles;
    past `max_bytes` too (down to MIN_SNAPSHOTS): the states stay exact, the memory is what is reported."""
    prog = load_elf(program("compute.c"))
    free = Trace(prog, PreimageOracle(), interval=2000, max_seconds=1e9)
    capped = Trace(prog, PreimageOracle(), interval=2000, max_seconds=1e9, max_snapshots=12)
    tight = Trace(prog, PreimageOracle(), interval=2000, max_seconds=1e9, max_bytes=1)
    assert len(free.snapshots) > 100 and free.interval == 2000
    assert 6 <= len(capped.snapshots) <= 12 and capped.interval >= 2000 * 8
    assert MIN_SNAPSHOTS // 2 <= len(tight.snapshots) <= MIN_SNAPSHOTS + 1
    for trace in (free, capped, tight):
        assert trace.snapshot_bytes() == sum(s.nbytes for s in trace.snapshots) == 4096 * trace.page_count()
    assert capped.snapshot_bytes() < free.snapshot_bytes()
    rnd = random.Random(4)
    points = [rnd.randrange(free.steps) for _ in range(10)] + [0, free.steps]
    expected = reference_hashes(prog, PreimageOracle(), points)
    for trace in (capped, tight, free):
        for n in points:
            assert trace.state_hash_at(n) == expected[n]
        trace.close()


def test_recording_round_trip(tmp_path: Path) -> None:
    """A trace rebuilt from its recording (saved and loaded) answers every query as the trace it was
    recorded from, without running the program again."""
    data = random.Random(5).randbytes(3000)
    prog = preimage_heavy()
    trace = Trace(prog, blob_oracle(data), interval=500, max_seconds=1e9)
    key = keccak256(b"this run")
    trace.recording().save(tmp_path / "run.rec", key)
    recording = Recording.load(tmp_path / "run.rec", key)
    assert recording.nbytes == trace.snapshot_bytes() and recording.steps == trace.steps
    again = Trace.from_recording(prog, blob_oracle(data), recording)
    assert not again.live  # nothing ran: the first query builds an executor from a snapshot
    assert (again.steps, again.final_state, again.stdout) == (trace.steps, trace.final_state, trace.stdout)
    rnd = random.Random(6)
    points = [rnd.randrange(trace.steps) for _ in range(12)] + [trace.steps, trace.steps + 3]
    for n in points:
        assert again.state_hash_at(n) == trace.state_hash_at(n)
    p = again.proof_at(points[0])
    assert verify_step(p.pre_state, p.proof, p.part, p.part_len) == trace.state_hash_at(points[0] + 1)
    trace.close()
    again.close()


def test_recording_cut_at_max_steps() -> None:
    """A trace cut from a longer recording ends in the reference state at the cut, with the outputs up to
    it; a recording that stops short (unfinished) cannot make a longer trace."""
    prog = load_elf(program("compute.c"))
    full = Trace(prog, PreimageOracle(), interval=20_000)
    short = Trace(prog, PreimageOracle(), interval=20_000, max_steps=100_000)
    cuts = [1, 20_000, 77_777, full.steps - 1]
    expected = reference_hashes(prog, PreimageOracle(), [*cuts, 50])
    for cut in cuts:
        trace = Trace.from_recording(prog, PreimageOracle(), full.recording(), max_steps=cut)
        assert trace.steps == cut and trace.final_state.hash() == expected[cut]
        ref = Reference(prog, PreimageOracle())
        ref.run_to(cut)
        assert trace.stdout == bytes(ref.out[1])
        assert trace.state_hash_at(min(50, cut)) == expected[min(50, cut)]
        with pytest.raises(ValueError, match="past the traced"):
            trace.state_hash_at(cut + 1)
        trace.close()
    assert Trace.from_recording(prog, PreimageOracle(), short.recording(), max_steps=100_000).steps == 100_000
    for max_steps in (100_001, None):
        with pytest.raises(ValueError, match="unfinished"):
            Trace.from_recording(prog, PreimageOracle(), short.recording(), max_steps=max_steps)
    full.close()
    short.close()


def test_recording_files_and_store(tmp_path: Path) -> None:
    """A recording of another run, a damaged or truncated file is refused with a RecordingError; the store
    reads those as absent and keeps at most its byte budget, dropping the least recently used."""
    prog = load_elf(program("hello.S"))
    recording = Trace(prog, PreimageOracle()).recording()
    path, key = tmp_path / "a.rec", keccak256(b"a")
    recording.save(path, key)
    with pytest.raises(RecordingError, match="another run"):
        Recording.load(path, keccak256(b"b"))
    raw = path.read_bytes()
    for damaged in (raw[:-1], raw[:100], raw[:60] + bytes([raw[60] ^ 1]) + raw[61:], raw + b"x"):
        path.write_bytes(damaged)
        with pytest.raises(RecordingError):
            Recording.load(path, key)
    store = RecordingStore(tmp_path / "store", max_bytes=2 * len(raw) + 10)
    keys = [keccak256(bytes([i])) for i in range(3)]
    store.put(keys[0], recording)
    store.put(keys[1], recording)
    assert store.get(keys[0]) is not None  # used again: now the most recent
    store.put(keys[2], recording)
    assert store.get(keys[1]) is None and store.get(keys[0]) is not None and store.get(keys[2]) is not None
    store.path(keys[2]).write_bytes(b"rollml-recording 1\n")
    assert store.get(keys[2]) is None


# --------------------------------------------------------------------------------------------------------
# Native preimage syscalls
# --------------------------------------------------------------------------------------------------------
# Reads local 1 (a key), then that key's stream with every buffer alignment and read size, re-selects it
# halfway (the offset restarts), reads past the end, tries misaligned and short selects (EINVAL), reads
# into its own code (a text page: the reference stepper's) and writes the data it read to fd 1.
PREIMAGE_HEAVY = r"""
#include "sys.h"

static unsigned char key[32] __attribute__((aligned(32)));
static unsigned char data[17000] __attribute__((aligned(32)));
static const unsigned long sizes[] = {32, 1, 7, 100, 31, 33, 0, 64, 5, 3};

__attribute__((noinline, used)) static void overwritten(void) { sys_exit_group(99); }

static unsigned long read_length(unsigned char *tmp) {
    unsigned long got = 0;
    while (got < 8) {
        long r = sys_read(5, tmp + got, 8 - got);
        if (r <= 0) sys_exit_group(3);
        got += (unsigned long)r;
    }
    unsigned long n = 0;
    for (int i = 4; i < 8; i++) n = (n << 8) | tmp[i];
    return n;
}

static void read_data(unsigned char *dst, unsigned long n) {
    unsigned long got = 0;
    for (unsigned long i = 0; got < n; i++) {
        long r = sys_read(5, dst + got, sizes[i % 10]);
        if (r < 0 || (r == 0 && sizes[i % 10] != 0)) sys_exit_group(9);
        got += (unsigned long)r;
    }
}

void __start(void) {
    key[0] = 1;
    key[31] = 1;
    if (sys_write(6, key, 32) != 32) sys_exit_group(4);
    if (read_length(data) < 32) sys_exit_group(5);
    if (sys_read(5, key, 32) != 32) sys_exit_group(6);
    if (sys_write(6, key, 32) != 32) sys_exit_group(7);
    unsigned long n = read_length(data + 3);
    if (n > sizeof data - 8) sys_exit_group(8);
    read_data(data + 5, n / 2);
    if (sys_write(6, key, 32) != 32) sys_exit_group(7);
    if (read_length(data + 1) != n) sys_exit_group(8);
    read_data(data + 5, n);
    if (sys_read(5, data, 32) != 0) sys_exit_group(10);
    if (sys_write(6, key + 1, 32) != -22 || sys_write(6, key, 31) != -22) sys_exit_group(11);
    if (sys_read(5, data, 0) != 0) sys_exit_group(12);
    key[0] = 1;
    for (int i = 1; i < 32; i++) key[i] = i == 31;
    if (sys_write(6, key, 32) != 32) sys_exit_group(13);
    if (sys_read(5, (unsigned char *)overwritten + 4, 12) != 12) sys_exit_group(14);
    sys_write(1, data + 5, n);
    sys_exit_group(0);
}
"""


def preimage_heavy() -> Program:
    flags, deps = [f"-I{PROGRAMS}"], [PROGRAMS / "sys.h"]
    elf = build_source(PREIMAGE_HEAVY, suffix=".c", name="preimage_heavy", extra_flags=flags, deps=deps)
    return load_elf(elf)


def blob_oracle(data: bytes) -> PreimageOracle:
    store = PreimageStore()
    return PreimageOracle(store, LocalData({1: store.put(data)}))


@pytest.mark.parametrize("size", [16384, 1000, 0])
def test_preimage_reads_match_the_reference(size: int) -> None:
    """Native reads and selects (PreimageOracle: whole streams) give the reference stepper's state hash at
    many steps, and they do run natively."""
    data = random.Random(size).randbytes(size)
    prog = preimage_heavy()
    with FastVM(prog, blob_oracle(data)) as vm:
        final = vm.run()
        assert final.status == Status.VALID and bytes(vm.stdout) == data
        assert vm.native_syscalls > size // 20 and vm.ref_steps < 20
    rnd = random.Random(size + 1)
    at_points(prog, blob_oracle(data), [rnd.randrange(final.step) for _ in range(60)] + [final.step + 1])
    if size == 1000:
        lockstep(prog, blob_oracle(data), final.step + 1)


def test_preimage_reads_of_any_oracle_match_the_reference() -> None:
    """An Oracle that only has `stream_part` (streams assembled from parts): the same as the reference."""
    prog = preimage_heavy()
    ref = lockstep(prog, TotalOracle(), 100_000)
    assert ref.state.status == Status.VALID
    with FastVM(prog, TotalOracle()) as vm:
        assert vm.run().hash() == ref.state_hash() and vm.native_syscalls > 10


def test_missing_preimage_raises_at_the_same_step() -> None:
    """A read of a key the oracle does not hold raises PreimageMissing at that step, the state before it."""
    prog = preimage_heavy()
    store = PreimageStore()
    oracle = PreimageOracle(store, LocalData({1: keccak_key(b"lost")}))
    ref = Reference(prog, oracle)
    with pytest.raises(PreimageMissing):
        ref.run_to(10**6)
    with FastVM(prog, oracle) as vm:
        with pytest.raises(PreimageMissing):
            vm.run()
        assert vm.state_hash() == ref.state_hash() and vm.state().preimage_key == keccak_key(b"lost")
        store.put(b"lost")  # found again: the run goes on, natively
        done = vm.native_syscalls
        assert vm.run().status == Status.VALID and bytes(vm.stdout) == b"lost"
        assert vm.native_syscalls > done + 1


def test_trace_with_native_preimage_syscalls() -> None:
    """Snapshots in the middle of a read-heavy stretch restore the key and offset too."""
    data = random.Random(5).randbytes(16384)
    prog = preimage_heavy()
    trace = Trace(prog, blob_oracle(data), interval=997)
    ref = Reference(prog, blob_oracle(data))
    points = sorted(random.Random(6).sample(range(trace.steps), 25))
    for n in points:
        ref.run_to(n)
        assert trace.state_hash_at(n) == ref.state_hash()
    for n in reversed(points[::5]):
        p = trace.proof_at(n)
        assert verify_step(p.pre_state, p.proof, p.part, p.part_len) == trace.state_hash_at(n + 1)
    assert trace.state_at(points[-1])[0].preimage_key != local_key(1)
    trace.close()


# --------------------------------------------------------------------------------------------------------
# qemu-mips
# --------------------------------------------------------------------------------------------------------
@pytest.mark.requires("qemu")
@pytest.mark.parametrize("exit_code", [0, 42])
def test_same_output_as_qemu(exit_code: int) -> None:
    elf = program("fast_qemu.c", extra_flags=[f"-DEXIT_CODE={exit_code}"])
    with FastVM(load_elf(elf), PreimageOracle()) as vm:
        final = vm.run()
        stdout = bytes(vm.stdout)
    qemu = subprocess.run(["qemu-mips", str(elf)], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert (final.exit_code, stdout) == (qemu.returncode, qemu.stdout)
    assert stdout.startswith(b"arith ") and b"dispatch" in stdout
