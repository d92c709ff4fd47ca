"""The fast executor: runs a program on Unicorn at JIT speed, step for step equal to the reference stepper.

Design (measured on the development machine; see bench/vm.py):

- Memory is one 4 GiB host mapping (MAP_NORESERVE, zero-filled, committed only where touched) mapped into
  Unicorn in one piece. Unicorn's *virtual* TLB maps all 32-bit addresses one to one (the CPU TLB would
  fold MIPS kseg0/kseg1, 0x80000000..0xBFFFFFFF, onto low memory and fault on kseg2/3); a native TLB-fill
  hook grants each page its permissions at once: text pages read+execute, all others read+write.
- Only the executable ELF segments run on Unicorn. Their words are pre-scanned (`TextMap`): a word that
  Unicorn must not execute is a STOP word (invalid per the spec, which Unicorn is laxer about; syscalls
  but the preimage ones (below), break, sc; a branch whose delay slot is not plain; a direct branch out of
  the text; the last word before non-text). The reference stepper (`mipsvm.step.step`) executes those:
  one implementation of their semantics.
- The preimage syscalls (read(5, ...) and write(6, ...); a read loads at most 32 bytes of a model) run in
  the native interrupt hook with the exact effect of `handle_preimage_read/select` (spec section 6), on
  the stream of the selected key, which Python hands over whenever the key changes (a select ends the
  run for that). ~0.15 us per read instead of ~15 us for a stop, a reference step and a restart: a
  500 MB model loads in seconds, not minutes.
- Counting is exact with a native code hook (`csrc/uchooks.c`, built on first use by `rollml.native`):
  it counts instructions and asks Unicorn to stop before a STOP word or at the target count. Unicorn runs
  a delay slot even when asked to stop before it, so the hook never asks there: it stops before the branch
  instead. It also stops before a `jr`/`jalr` whose target is not aligned text (a fetch fault would leave
  no trace of where it came from).
- Faults inside Unicorn (unaligned access, taken trap, overflow, a store to text; the interrupt hook sees
  the exceptions among them and stops the run) are precise: the registers and memory are those before the
  faulting instruction, which is the last one the hook let through. The fast path resumes from there
  with the reference stepper (for a fault in a delay slot it first replays the branch), so no rollback is
  needed. Anything unexplained raises `FastPathError`.
- Unicorn 2.1.4 bug worked around: a data TLB fill in a delay slot leaves the CPU flagged "in a delay
  slot", so the next translation block is looked up (and chained) as one, skipping instructions. The
  TLB-fill hook stops the run at the next instruction boundary and the CPU state is reset.
- Dirty pages for the Merkle memory: the guest pages are write-protected after each collect and the first
  write to a page (from JIT code or Python) is caught by a native SIGSEGV handler that marks the page and
  unprotects it: no cost per store. (A UC_HOOK_MEM_WRITE hook costs ~3x in speed and suffers from the
  same delay-slot bug on every store.)
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import struct
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from unicorn import UC_ARCH_MIPS, UC_MODE_BIG_ENDIAN, UC_MODE_MIPS32, Uc
from unicorn import mips_const as mc
from unicorn import unicorn_const as ucc
from unicorn.unicorn_py3 import unicorn as _ucmod

from mipsvm.constants import MAX_PREIMAGE, PAGE_BITS, PAGE_SIZE, Fault
from mipsvm.elf import Program
from mipsvm.memory import Memory
from mipsvm.preimage import PreimageMissing, PreimageOracle
from mipsvm.state import State
from mipsvm.step import Oracle, step
from rollml.native import load_shared

MASK = 0xFFFFFFFF
U64 = (1 << 64) - 1
GUEST_SIZE = 1 << 32
NUM_PAGES = 1 << (32 - PAGE_BITS)
CSRC = Path(__file__).resolve().with_name("csrc")
CHUNK = 1 << 24  # instructions per Unicorn run at most (progress callbacks come between runs)

# Word flags of the pre-scan and stop reasons; the same values as csrc/uchooks.c.
F_STOP, F_BRANCH, F_SYSCALL, F_JR = 1, 2, 4, 8
STOP_NONE, STOP_TARGET, STOP_WORD, STOP_OUTSIDE, STOP_SLOT_FILL, STOP_FAULT, STOP_SELECTED = range(7)
MAX_NATIVE_STREAM = 8 + MAX_PREIMAGE  # the longest stream handed to the native syscalls (any key's, spec 6)

# Unicorn errors that are guest faults (resumed on the reference stepper); any other error is ours.
GUEST_FAULTS = frozenset(
    {
        ucc.UC_ERR_READ_UNMAPPED,
        ucc.UC_ERR_WRITE_UNMAPPED,
        ucc.UC_ERR_INSN_INVALID,
        ucc.UC_ERR_WRITE_PROT,
        ucc.UC_ERR_READ_PROT,
        ucc.UC_ERR_READ_UNALIGNED,
        ucc.UC_ERR_WRITE_UNALIGNED,
        ucc.UC_ERR_EXCEPTION,
    }
)

_REG_IDS = [mc.UC_MIPS_REG_0 + i for i in range(32)] + [
    mc.UC_MIPS_REG_HI,
    mc.UC_MIPS_REG_LO,
    mc.UC_MIPS_REG_PC,
]
_NREGS = len(_REG_IDS)
_REGS = struct.Struct("<" + "I4x" * _NREGS)  # 8-byte slots (Unicorn writes 4 on MIPS32); the low halves


class FastPathError(RuntimeError):
    """Unicorn stopped in a way the fast path cannot explain (a bug here, never a guest error)."""


# --------------------------------------------------------------------------------------------------------
# The native library
# --------------------------------------------------------------------------------------------------------
class _Ctx(ctypes.Structure):
    """Mirror of `uch_ctx` in csrc/uchooks.c (the fields Python reads)."""

    _fields_ = [
        ("count", ctypes.c_uint64),
        ("target", ctypes.c_uint64),
        ("stop_pc", ctypes.c_uint32),
        ("stop_reason", ctypes.c_uint32),
        ("last_pc", ctypes.c_uint32),
        ("last_in_slot", ctypes.c_uint32),
        ("prev_flags", ctypes.c_uint32),
        ("overrun", ctypes.c_uint32),
        ("text_lo", ctypes.c_uint32),
        ("text_words", ctypes.c_uint32),
        ("flags", ctypes.c_void_p),
        ("xmap", ctypes.c_void_p),
        ("emu_stop", ctypes.c_void_p),
        ("reg_read", ctypes.c_void_p),
        ("reg0", ctypes.c_int),
        ("host", ctypes.c_void_p),
        ("dirty", ctypes.c_void_p),
        ("dirty_list", ctypes.c_void_p),
        ("dirty_n", ctypes.c_uint32),
        ("faults", ctypes.c_uint64),
        ("slot_fills", ctypes.c_uint64),
        ("reg_write", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
        ("stream_len", ctypes.c_uint64),
        ("preimage_offset", ctypes.c_uint32),
        ("pending", ctypes.c_uint32),
        ("faulted", ctypes.c_uint32),
        ("preimage_key", ctypes.c_uint8 * 32),
        ("native_syscalls", ctypes.c_uint64),
    ]


@functools.cache
def native() -> ctypes.CDLL:
    """The hooks library, compiled on first use (cached by source hash)."""
    lib = load_shared(
        "mipsvm_fast",
        [CSRC / "uchooks.c"],
        flags=["-O2", "-shared", "-fPIC", "-fvisibility=default"],
    )
    p, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
    sigs: dict[str, tuple[object, list[object]]] = {
        "uch_new": (ctypes.POINTER(_Ctx), [p]),
        "uch_free": (None, [p]),
        "uch_set_text": (None, [p, u32, u32, p, p, p, p, p, ctypes.c_int]),
        "uch_begin": (None, [p, u64]),
        "uch_collect_dirty": (ctypes.c_int64, [p, p]),
        "uch_ensure_handler": (ctypes.c_int, []),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def _fnptr(fn: Any) -> int:
    return cast(int, ctypes.cast(fn, ctypes.c_void_p).value)


# --------------------------------------------------------------------------------------------------------
# Guest memory: the whole 4 GiB, zero-filled, tracked by page
# --------------------------------------------------------------------------------------------------------
class GuestMemory:
    """The 2^32-byte guest memory as one host mapping, with native dirty-page tracking."""

    def __init__(self) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
        self.buf = mmap.mmap(-1, GUEST_SIZE, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self.buf)  # keeps the address valid; released in close()
        self.base = ctypes.addressof(self._anchor)
        self.view = memoryview(self.buf)
        self.lib = native()
        ctx = self.lib.uch_new(self.base)
        if not ctx:
            raise FastPathError("cannot set up the native dirty-page tracking")
        self.ctx = ctx.contents
        self.closed = False
        self.ctx_ptr = ctypes.addressof(self.ctx)
        self._out = (ctypes.c_uint32 * NUM_PAGES)()

    def ensure_handler(self) -> None:
        if self.lib.uch_ensure_handler() < 0:
            raise FastPathError("cannot install the SIGSEGV handler of the dirty-page tracking")

    # -- bytes ---------------------------------------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        addr &= MASK
        if addr + n <= GUEST_SIZE:
            return self.buf[addr : addr + n]
        head = GUEST_SIZE - addr
        return self.buf[addr:] + self.read(0, n - head)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        addr &= MASK
        n = len(data)
        if addr + n > GUEST_SIZE:
            head = GUEST_SIZE - addr
            self.write(addr, data[:head])
            self.write(0, data[head:])
            return
        self.buf[addr : addr + n] = data

    def read_u32(self, addr: int) -> int:
        return cast(int, struct.unpack_from(">I", self.buf, addr)[0])

    def write_u32(self, addr: int, value: int) -> None:
        struct.pack_into(">I", self.buf, addr, value)

    def page(self, p: int) -> memoryview:
        return self.view[p << PAGE_BITS : (p + 1) << PAGE_BITS]

    # -- tracking ------------------------------------------------------------------------------------------
    def collect_dirty(self) -> list[int]:
        """The pages written since the last collect (sorted); they are tracked afresh from now."""
        n = self.lib.uch_collect_dirty(self.ctx_ptr, self._out)
        if n < 0:
            raise FastPathError("mprotect failed while re-arming the dirty-page tracking")
        return list(self._out[:n])

    def close(self) -> None:
        """Stop tracking; unmap the memory unless views of it are still alive (then the GC does it)."""
        if self.closed:
            return
        self.closed = True
        self.lib.uch_free(self.ctx_ptr)  # the memory is plain read-write again
        del self._anchor
        self.view.release()
        with contextlib.suppress(BufferError):  # views still alive: the GC unmaps it later
            self.buf.close()


class GuestPages(Memory):
    """`mipsvm.memory.Memory` over a GuestMemory: its pages are views into the guest memory.

    Reads, roots and proofs are Memory's; `sync` (called before every root) brings in the pages written
    since the last call. It is read-only: the guest memory changes by running (and FastVM.write_pages).
    """

    def __init__(self, guest: GuestMemory) -> None:
        super().__init__()
        self.guest = guest
        self.written: set[int] = set()  # pages written since the owner last took this set

    def sync(self) -> None:
        """Bring in the pages written since the last sync (for the root, and for `written`)."""
        pages = self.guest.collect_dirty()
        for p in pages:
            if p not in self.pages:
                self.pages[p] = cast(bytearray, self.guest.page(p))
        self._dirty.update(pages)
        self.written.update(pages)

    def write(self, addr: int, data: bytes) -> None:
        raise TypeError("the fast executor's memory is written by running it, or with FastVM.write_pages")

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, b"")

    def set_page(self, index: int, data: bytes) -> None:
        self.write(index << PAGE_BITS, b"")

    def root(self) -> bytes:
        self.sync()
        return super().root()

    def copy(self) -> Memory:
        """A standalone Memory (bytearray pages) equal to this one, root caches included."""
        self.root()
        m = Memory()
        m.pages = {p: bytearray(v) for p, v in self.pages.items()}
        m._page_roots = dict(self._page_roots)
        m._upper = [dict(level) for level in self._upper]
        return m


# --------------------------------------------------------------------------------------------------------
# The text pre-scan
# --------------------------------------------------------------------------------------------------------
class _ProbeMemory:
    def __init__(self, word: int) -> None:
        self.word = word

    def read_u32(self, addr: int) -> int:
        return self.word if addr == 0 else 0

    def write_u32(self, addr: int, value: int) -> None:
        pass


class _NoOracle:
    def stream_part(self, key: bytes, offset: int) -> tuple[bytes, int]:
        raise LookupError("the pre-scan probe reads no preimage")


@functools.lru_cache(maxsize=1 << 16)
def spec_invalid(word: int) -> bool:
    """True if the spec calls `word` INVALID_INSTRUCTION (asks the reference stepper: one source of truth)."""
    state = State(pc=0, next_pc=4)
    step(state, _ProbeMemory(word), _NoOracle())
    return state.exited and state.exit_code == Fault.INVALID_INSTRUCTION


KIND_PLAIN, KIND_STOP, KIND_BRANCH, KIND_JUMP, KIND_JR, KIND_SYSCALL = range(6)


@functools.lru_cache(maxsize=1 << 16)
def word_kind(word: int) -> int:
    """How the fast path treats an instruction word, independent of its address."""
    if spec_invalid(word):
        return KIND_STOP
    op, rs, rt, rd, fn = word >> 26, (word >> 21) & 31, (word >> 16) & 31, (word >> 11) & 31, word & 0x3F
    if op == 0:
        if fn == 0x0C:
            return KIND_SYSCALL
        if fn == 0x0D:  # break
            return KIND_STOP
        if fn == 0x09 and rd and rd == rs:  # jalr whose link overwrites its target register
            return KIND_STOP
        if fn in (0x08, 0x09):
            return KIND_JR
        return KIND_PLAIN
    if op == 0x38:  # sc: Unicorn's fails without a matching ll; the spec's always succeeds
        return KIND_STOP
    if op in (0x02, 0x03):
        return KIND_JUMP
    if 0x04 <= op <= 0x07:
        return KIND_BRANCH
    if op == 0x01 and rt in (0x00, 0x01, 0x10, 0x11):
        if rt >= 0x10 and rs == 31:  # bltzal/bgezal whose link overwrites the tested register
            return KIND_STOP
        return KIND_BRANCH
    return KIND_PLAIN


def _static_target(word: int, pc: int) -> int:
    if word >> 26 in (0x02, 0x03):
        return ((pc + 4) & 0xF0000000) | ((word & 0x03FFFFFF) << 2)
    imm = word & 0xFFFF
    return (pc + 4 + (((imm ^ 0x8000) - 0x8000) << 2)) & MASK


class TextMap:
    """The executable pages and the per-word flags the native code hook reads."""

    def __init__(self, ranges: Iterable[tuple[int, int]], guest: GuestMemory) -> None:
        self.guest = guest
        self.xmap = (ctypes.c_uint8 * NUM_PAGES)()
        pages = sorted(
            {p for lo, hi in ranges if hi > lo for p in range(lo >> PAGE_BITS, (hi - 1 >> PAGE_BITS) + 1)}
        )
        for p in pages:
            self.xmap[p] = 1
        self.lo = pages[0] << PAGE_BITS if pages else 0
        self.words = ((pages[-1] + 1 - pages[0]) << (PAGE_BITS - 2)) if pages else 0
        self.flags = (ctypes.c_uint8 * max(self.words, 1))()
        for i in range(self.words - 1, -1, -1):
            self.flags[i] = self._flags_of(i)

    def is_text(self, addr: int) -> bool:
        return not addr & 3 and 0 <= addr - self.lo < 4 * self.words and self.xmap[addr >> PAGE_BITS] == 1

    def _flags_of(self, i: int) -> int:
        """Flags of word i, given the flags of word i + 1 (words are scanned from the end)."""
        addr = self.lo + 4 * i
        if not self.xmap[addr >> PAGE_BITS]:
            return F_STOP
        if not self.is_text(addr + 4):  # the last word before non-text: the reference stepper leaves
            return F_STOP
        word = self.guest.read_u32(addr)
        kind = word_kind(word)
        if kind == KIND_PLAIN:
            return 0
        if kind == KIND_STOP:
            return F_STOP
        if kind == KIND_SYSCALL:
            return F_SYSCALL
        if self.flags[i + 1]:  # a branch's delay slot must be a plain word
            return F_STOP
        if kind == KIND_JR:
            return F_BRANCH | F_JR
        target = _static_target(word, addr)
        if not self.is_text(target) or target == addr + 4:  # (see the slot-fill stop in FastVM._after_stop)
            return F_STOP
        return F_BRANCH

    def rescan(self, lo: int, hi: int) -> None:
        """Recompute the flags after the text bytes [lo, hi) changed (the branches before them too)."""
        first = max(0, (lo - self.lo) >> 2)
        last = min(self.words - 1, (hi - 1 - self.lo) >> 2)
        if last < first:
            return
        for i in range(last, first - 1, -1):
            self.flags[i] = self._flags_of(i)
        i = first - 1
        while i >= 0:  # a branch's flags depend on its slot's
            new = self._flags_of(i)
            if new == self.flags[i]:
                break
            self.flags[i] = new
            i -= 1


# --------------------------------------------------------------------------------------------------------
# The executor
# --------------------------------------------------------------------------------------------------------
class _StepMemory:
    """The WordMemory of the reference stepper inside the fast executor: the guest memory itself."""

    def __init__(
        self, guest: GuestMemory, xmap: ctypes.Array[ctypes.c_uint8], on_text_write: TextWrite
    ) -> None:
        self.guest = guest
        self.buf = guest.buf
        self.xmap = xmap
        self.on_text_write = on_text_write

    def read_u32(self, addr: int) -> int:
        return cast(int, struct.unpack_from(">I", self.buf, addr)[0])

    def write_u32(self, addr: int, value: int) -> None:
        self.guest.write_u32(addr, value)
        if self.xmap[addr >> PAGE_BITS]:
            self.on_text_write(addr, addr + 4)

    def read_bytes(self, addr: int, n: int) -> bytes:
        return self.guest.read(addr, n)


TextWrite = Callable[[int, int], None]


def _text_writer(text: TextMap, uc: Uc) -> TextWrite:
    """What a write to text [lo, hi) needs: new pre-scan flags and no stale translation."""

    def on_text_write(lo: int, hi: int) -> None:
        text.rescan(lo, hi)
        uc.ctl_remove_cache(lo, hi)

    return on_text_write


def native_stream(oracle: Oracle, key: bytes) -> bytes | None:
    """The whole stream of `key` (u64be(len) ++ data) for the native preimage reads, or None when the oracle
    cannot supply it or it is longer than any preimage: the reference stepper then runs those reads, and
    raises at the very read that needs a missing preimage (as it would without the native path)."""
    try:
        if isinstance(oracle, PreimageOracle):
            data = oracle.stream(key)
        else:  # any Oracle: the stream from its parts (the protocol's only method)
            first, length = oracle.stream_part(key, 0)
            if length > MAX_NATIVE_STREAM:
                return None
            rest = [oracle.stream_part(key, offset)[0] for offset in range(32, length, 32)]
            data = b"".join([first, *rest])[:length]
    except Exception:  # deferred on purpose: see the docstring
        return None
    return data if len(data) <= MAX_NATIVE_STREAM else None


def _close(uc: Uc, guest: GuestMemory) -> None:
    uc._Uc__finalizer()  # type: ignore[attr-defined]  # uc_close before the memory it maps goes away
    guest.close()


class FastVM:
    """A program running on Unicorn; every state it reports equals the reference stepper's.

    vm = FastVM(load_elf("prog.elf"), oracle)
    final = vm.run()                  # until exit
    vm.run_to(12345)                  # exactly that step (from a snapshot, or earlier: restore first)
    vm.state(), vm.memory_root(), vm.stdout, vm.output, vm.exit_code
    """

    def __init__(self, program: Program, oracle: Oracle) -> None:
        self.oracle = oracle
        self.guest = GuestMemory()
        self.memory = GuestPages(self.guest)
        for p, data in program.memory.pages.items():
            self.guest.write(p << PAGE_BITS, data)
        self.text = TextMap(program.text_ranges, self.guest)
        self._st = program.state.copy()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.output = bytearray()
        self.ref_steps = 0  # steps executed by the reference stepper (statistics)
        self.uc_runs = 0  # Unicorn runs (statistics)
        self._native_key: bytes | None = None  # the key whose stream the native syscalls hold
        self._native_stream: ctypes.Array[ctypes.c_char] | None = None  # that stream (kept alive here)
        self._uc = self._make_unicorn()
        self._text_written = _text_writer(self.text, self._uc)
        self._mem = _StepMemory(self.guest, self.text.xmap, self._text_written)
        self._closer = weakref.finalize(self, _close, self._uc, self.guest)

    # -- set-up --------------------------------------------------------------------------------------------
    def _make_unicorn(self) -> Uc:
        uc = Uc(UC_ARCH_MIPS, UC_MODE_MIPS32 + UC_MODE_BIG_ENDIAN)
        uc.ctl_set_cpu_model(mc.UC_CPU_MIPS32_4KC)  # MIPS32 release 1, no MIPS16 (an odd jr target)
        uc.ctl_set_tlb_mode(ucc.UC_TLB_VIRTUAL)  # type: ignore[attr-defined]  # (missing from the stubs)
        uc.mem_map_ptr(0, GUEST_SIZE, ucc.UC_PROT_ALL, self.guest.base)
        lib, ctx = self.guest.lib, self.guest.ctx_ptr
        uclib = _ucmod.uclib
        lib.uch_set_text(
            ctx,
            self.text.lo,
            self.text.words,
            ctypes.addressof(self.text.flags),
            ctypes.addressof(self.text.xmap),
            _fnptr(uclib.uc_emu_stop),
            _fnptr(uclib.uc_reg_read),
            _fnptr(uclib.uc_reg_write),
            mc.UC_MIPS_REG_0,
        )
        for kind, fn in [
            (ucc.UC_HOOK_TLB_FILL, lib.uch_tlb_fill_hook),
            (ucc.UC_HOOK_CODE, lib.uch_code_hook),
            (ucc.UC_HOOK_INTR, lib.uch_intr_hook),
        ]:
            handle = _ucmod.uc_hook_h()
            err = uclib.uc_hook_add(
                uc._uch, ctypes.byref(handle), kind, _fnptr(fn), ctypes.c_void_p(ctx), 1, 0
            )
            if err != ucc.UC_ERR_OK:
                raise FastPathError(f"uc_hook_add({kind}) failed: {err}")
        self._uch = uc._uch
        # Runs end by the hook's stop requests; `until` is never reached: it is unaligned (no pc gets there
        # on Unicorn), and in a text page (with a non-executable one, every stop fails with an exception).
        self._until = self.text.lo + 2
        self._clean = uc.context_save()
        self._ids = (ctypes.c_int * _NREGS)(*_REG_IDS)
        self._vals = (ctypes.c_uint64 * _NREGS)()
        self._ptrs = (ctypes.c_void_p * _NREGS)(
            *[ctypes.addressof(self._vals) + 8 * i for i in range(_NREGS)]
        )
        return uc

    def close(self) -> None:
        """Release Unicorn and the guest memory now (also done when the object is collected)."""
        self._closer()

    def __enter__(self) -> FastVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self._st.step

    @property
    def exited(self) -> bool:
        return self._st.exited

    @property
    def exit_code(self) -> int:
        return self._st.exit_code

    def state(self) -> State:
        """A copy of the current state, `mem_root` included."""
        st = self._st.copy()
        st.mem_root = self.memory_root()
        return st

    def cpu_state(self) -> State:
        """A copy of the current state without computing the memory root (`mem_root` is stale)."""
        return self._st.copy()

    def state_hash(self) -> bytes:
        return self.state().hash()

    def memory_root(self) -> bytes:
        return self.memory.root()

    def export_memory(self) -> Memory:
        """A standalone copy of the whole memory."""
        return self.memory.copy()

    def take_written(self) -> set[int]:
        """The pages written (by any means) since the last call."""
        self.memory.sync()
        out, self.memory.written = self.memory.written, set()
        return out

    # -- restoring -----------------------------------------------------------------------------------------
    def set_state(self, state: State) -> None:
        """Replace the registers and the other state fields (`mem_root` is ignored; memory is separate)."""
        self._st = state.copy()

    def write_pages(self, pages: Mapping[int, bytes | bytearray | memoryview | None]) -> None:
        """Overwrite whole pages (None: zero); text pages are re-scanned."""
        self.guest.ensure_handler()
        for p, data in pages.items():
            view = self.guest.page(p)
            if data is None:
                if not any(view.cast("Q")):
                    continue
                data = bytes(PAGE_SIZE)
            elif view == data:
                continue
            self.guest.write(p << PAGE_BITS, data)
            if self.text.xmap[p]:
                self._text_written(p << PAGE_BITS, (p + 1) << PAGE_BITS)

    def restore(self, state: State, memory: Memory) -> None:
        """Make the VM equal to (state, memory)."""
        self.memory.sync()
        pages: dict[int, bytes | bytearray | memoryview | None] = dict.fromkeys(self.memory.pages)
        pages.update(memory.pages)
        self.write_pages(pages)
        self.set_state(state)

    # -- running -------------------------------------------------------------------------------------------
    def run(self, max_steps: int | None = None, progress: Callable[[int], None] | None = None) -> State:
        """Run until the program exits or `max_steps` more steps ran; returns the state."""
        limit = U64 if max_steps is None else min(U64, self._st.step + max_steps)
        self.run_to(limit, progress)
        return self.state()

    def run_to(self, step_n: int, progress: Callable[[int], None] | None = None) -> None:
        """Run until `state.step == step_n` exactly (or the program exits first)."""
        self.guest.ensure_handler()
        last_report = time.monotonic()
        while not self._st.exited and self._st.step < step_n:
            self._advance(step_n)
            if progress is not None and time.monotonic() - last_report > 0.2:
                progress(self._st.step)
                self.guest.ensure_handler()  # in case the callback replaced the SIGSEGV handler
                last_report = time.monotonic()
        if progress is not None:
            progress(self._st.step)

    @property
    def native_syscalls(self) -> int:
        """Preimage syscalls performed by the native hooks so far (statistics)."""
        return int(self.guest.ctx.native_syscalls)

    def step_reference(self) -> None:
        """One step on the reference stepper."""
        self.ref_steps += 1
        try:
            step(self._st, self._mem, self.oracle, self._on_write)
        except PreimageMissing:
            self._native_key = None  # the caller may supply the preimage and run again: load it afresh
            raise

    def _on_write(self, fd: int, data: bytes) -> None:
        {1: self.stdout, 2: self.stderr, 3: self.output}[fd].extend(data)

    def _advance(self, limit: int) -> None:
        """Make progress towards step `limit`: one Unicorn run, then the reference step it stopped for."""
        st = self._st
        pc = st.pc
        if st.next_pc != (pc + 4) & MASK or not self.text.is_text(pc):
            self.step_reference()
            return
        budget = min(limit - st.step, CHUNK)
        lib, ctx = self.guest.lib, self.guest.ctx
        lib.uch_begin(self.guest.ctx_ptr, budget)
        self._preimage_to_native()
        regs = st.regs
        _REGS.pack_into(self._vals, 0, *regs, st.hi, st.lo, pc)
        uclib = _ucmod.uclib
        uclib.uc_reg_write_batch(self._uch, self._ids, self._ptrs, _NREGS)
        self.uc_runs += 1
        err = uclib.uc_emu_start(self._uch, pc, self._until, 0, 0)
        uclib.uc_reg_read_batch(self._uch, self._ids, self._ptrs, _NREGS)
        vals = _REGS.unpack_from(self._vals)
        self._preimage_from_native()
        if err == ucc.UC_ERR_OK and not ctx.faulted:
            self._after_stop(vals)
            return
        if not self._explained_fault(err, vals):
            raise FastPathError(self._describe("an unexplained fault", err, vals))
        self._resume_before_last(vals, st.step + ctx.count - 1)

    def _explained_fault(self, err: int, vals: tuple[int, ...]) -> bool:
        """Whether a run that ended in an error or an exception ended at a guest fault of the last instruction
        the hook let through: the interrupt hook saw the exception (Unicorn may also report an error, e.g.
        an unaligned read), or Unicorn reported a guest-fault error with the pc still at that instruction."""
        ctx = self.guest.ctx
        if ctx.count == 0 or err not in GUEST_FAULTS | {ucc.UC_ERR_OK}:
            return False
        if ctx.faulted:
            return True
        stopped_at_it = ctx.stop_reason in (STOP_NONE, STOP_SLOT_FILL) and vals[34] in (0, ctx.last_pc)
        return err != ucc.UC_ERR_OK and stopped_at_it

    def _after_stop(self, vals: tuple[int, ...]) -> None:
        """Unicorn stopped where the hook asked: take its registers, run the reference step it stopped for."""
        ctx = self.guest.ctx
        uc_pc = vals[34]
        reason = ctx.stop_reason
        if reason == STOP_SLOT_FILL:
            # Unicorn stopped before the slot (seen when the branch is not taken), or after it at the branch
            # target; no branch on Unicorn targets its own slot (F_STOP), so the two cannot be confused.
            if uc_pc == ctx.last_pc:
                self._resume_before_last(vals, self._st.step + ctx.count - 1)
                return
            if not self.text.is_text(uc_pc):  # else it ran the slot and stopped at the branch's target
                raise FastPathError(self._describe("a stop after a slot outside the text", 0, vals))
            self._take_registers(vals, uc_pc, self._st.step + ctx.count)
            self._uc.context_restore(self._clean)  # clear the CPU's stale in-delay-slot flags
            return
        if reason == STOP_NONE or ctx.overrun or uc_pc != ctx.stop_pc:
            raise FastPathError(self._describe("an unexpected stop", 0, vals))
        self._take_registers(vals, uc_pc, self._st.step + ctx.count)
        if reason == STOP_SELECTED:  # after a native key select: the next run hands over the new stream
            return
        if reason != STOP_TARGET or ctx.count == 0:  # stopped before a word Unicorn must not run
            self.step_reference()

    def _preimage_to_native(self) -> None:
        """Before a run: give the native syscalls the selected key, its stream (loaded when the key changed
        since the last run) and the read offset."""
        st, ctx = self._st, self.guest.ctx
        if st.preimage_key != self._native_key:
            data = native_stream(self.oracle, st.preimage_key)
            buf = None if data is None else ctypes.create_string_buffer(data, len(data))
            ctx.stream = None if buf is None else ctypes.addressof(buf)
            ctx.stream_len = len(buf) if buf is not None else 0
            ctypes.memmove(ctx.preimage_key, st.preimage_key, 32)
            self._native_key, self._native_stream = st.preimage_key, buf
        ctx.preimage_offset = st.preimage_offset

    def _preimage_from_native(self) -> None:
        """After a run: the read offset, and the key of a native select (whose stream is not loaded yet)."""
        st, ctx = self._st, self.guest.ctx
        st.preimage_offset = ctx.preimage_offset
        if ctx.stop_reason == STOP_SELECTED:
            st.preimage_key = bytes(ctx.preimage_key)
            self._native_key = None

    def _take_registers(self, vals: tuple[int, ...], pc: int, step_n: int) -> None:
        st = self._st
        st.regs = list(vals[:32])
        st.hi = vals[32]
        st.lo = vals[33]
        st.pc = pc
        st.next_pc = (pc + 4) & MASK
        st.step = step_n

    def _resume_before_last(self, vals: tuple[int, ...], executed: int) -> None:
        """Unicorn stopped (a fault, or the delay-slot workaround) before finishing the last instruction the
        hook let through (step `executed + 1`): the registers are those before it. Continue on the reference
        stepper, which also defines any fault."""
        ctx = self.guest.ctx
        fault_pc = ctx.last_pc
        in_slot = bool(ctx.last_in_slot)
        self._uc.context_restore(self._clean)  # drop the exception state and any pending branch
        if in_slot:  # the branch before the slot ran: replay it (its inputs are intact: see word_kind)
            self._take_registers(vals, (fault_pc - 4) & MASK, executed - 1)
            self.step_reference()
            if self._st.pc != fault_pc or self._st.exited:
                raise FastPathError(f"replaying the branch before the slot at 0x{fault_pc:08x} went astray")
        else:
            self._take_registers(vals, fault_pc, executed)
        self.step_reference()

    def _describe(self, what: str, err: int, vals: tuple[int, ...]) -> str:
        ctx = self.guest.ctx
        return (
            f"fast path: {what} (uc error {err}) at step {self._st.step}: uc pc 0x{vals[34]:08x}, "
            f"count {ctx.count}, stop reason {ctx.stop_reason} at 0x{ctx.stop_pc:08x}, "
            f"last pc 0x{ctx.last_pc:08x} (slot {ctx.last_in_slot}), overrun {ctx.overrun}, "
            f"faulted {ctx.faulted}"
        )
