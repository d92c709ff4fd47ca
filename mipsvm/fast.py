"""The fast executor: runs a program on Unicorn at JIT speed, step for step equal to the reference stepper.

Design (measured on the development machine; see bench/vm.py):

- Memory is one 4 GiB host mapping (MAP_NORESERVE, zero-filled, committed only where touched) mapped into
  Unicorn in one piece. Unicorn's *virtual* TLB maps all 32-bit addresses one to one (the CPU TLB would
  fold MIPS kseg0/kseg1, 0x80000000..0xBFFFFFFF, onto low memory and fault on kseg2/3); a native TLB-fill
  hook grants each page its permissions at once: text pages read+execute, all others read+write.
- Only the executable ELF segments run on Unicorn. Their words are pre-scanned (`TextMap`): a word that
  Unicorn must not execute is a STOP word (invalid per the spec, which Unicorn is laxer about; break, sc;
  a branch whose delay slot is not plain; a direct branch out of the text; the last word before non-text).
  The reference stepper (`mipsvm.step.step`) executes those: one implementation of their semantics.
- Counting is exact without a hook per instruction (`csrc/uchooks.c`, built on first use by
  `mipsvm.native`): a native block hook counts each translation block (TB) as a whole before it runs, and
  stops the run before a TB that would pass the target count or holds a STOP word. The last instructions
  before an exact stop (fewer than one TB) run on the reference stepper. Unicorn ends a TB after a
  branch's delay slot except at a page end, where the slot is a TB of its own: the branch's TB counts it.
- Syscalls end their TB. The preimage ones (read(5, ...) and write(6, ...); a read loads at most 32 bytes
  of a model) run in the native interrupt hook with the exact effect of `handle_preimage_read/select`
  (spec section 6), on the stream of the selected key, which Python hands over whenever the key changes
  (a select ends the run for that); any other syscall stops the run before it for the reference stepper.
- Faults inside Unicorn: Unicorn overwrites the pc of an exception before any hook sees it, so a fault
  (a taken trap, an overflow, an unaligned access) is known only to lie in the current TB. The executor
  keeps an undo log (the old contents of the pages written since a checkpoint, saved by the native
  SIGSEGV handler of the dirty-page tracking, below) and a copy of the state at the checkpoint; after a
  fault it rewinds to the checkpoint, replays to the start of the TB and steps the TB on the reference
  stepper, which defines the fault. Checkpoints are taken every CHECKPOINT_STEPS steps or
  CHECKPOINT_PAGES saved pages, at the start of a Unicorn run. A store to text is located exactly (the
  TLB-fill hook runs with its precise pc) and runs on the reference stepper, which re-scans the text.
- Unicorn 2.1.4 bug worked around: a data TLB fill in a delay slot leaves the CPU flagged "in a delay
  slot", so the next TB would be looked up (and chained) as one, skipping instructions. The TLB-fill hook
  stops the run; Unicorn finishes the slot and its branch and stops before the next TB; the CPU state is
  reset.
- Dirty pages for the Merkle memory: the guest pages are write-protected after each collect (and each
  checkpoint) and the first write to a page (from JIT code or Python) is caught by a native SIGSEGV
  handler that marks the page (and saves it to the undo log) and unprotects it: no cost per store. (A
  UC_HOOK_MEM_WRITE hook costs ~3x in speed and suffers from the same delay-slot bug on every store.)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from unicorn import UC_ARCH_MIPS, UC_MODE_BIG_ENDIAN, UC_MODE_MIPS32, Uc
from unicorn import mips_const as mc
from unicorn import unicorn_const as ucc
from unicorn.unicorn_py3 import unicorn as _ucmod

from mipsvm import ABI_HEADER
from mipsvm.constants import MAX_PREIMAGE, PAGE_BITS, PAGE_SIZE, Fault
from mipsvm.elf import Program
from mipsvm.memory import Memory
from mipsvm.native import load_shared
from mipsvm.preimage import PreimageMissing, PreimageOracle
from mipsvm.state import State
from mipsvm.step import Oracle, step

MASK = 0xFFFFFFFF
U64 = (1 << 64) - 1
GUEST_SIZE = 1 << 32
NUM_PAGES = 1 << (32 - PAGE_BITS)
CSRC = Path(__file__).resolve().with_name("csrc")
CHUNK = 1 << 24  # instructions per Unicorn run at most (progress callbacks come between runs)

# Word flags of the pre-scan and stop reasons; the same values as csrc/uchooks.c.
F_STOP, F_BRANCH, F_SYSCALL, F_JR, F_NOSLOT = 1, 2, 4, 8, 16
(
    STOP_NONE,
    STOP_TARGET,
    STOP_WORD,
    STOP_OUTSIDE,
    STOP_SLOT_FILL,
    STOP_FAULT,
    STOP_SELECTED,
    STOP_SYSCALL,
    STOP_BROKEN,
) = range(9)
SPLIT_WORDS = 128  # see TextMap
DIST_CAP = 255  # TextMap.dist saturates here (a TB has at most SPLIT_WORDS + 2 instructions)
MAX_NATIVE_STREAM = 8 + MAX_PREIMAGE  # the longest stream handed to the native syscalls (any key's, spec 6)
CHECKPOINT_STEPS = 1 << 24  # a new undo checkpoint at a run start after this many steps...
CHECKPOINT_PAGES = 256  # ...or this many pages saved (csrc/uchooks.c stops a run at 512, holds 1024)

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
    """Mirror of `uch_ctx` in csrc/uchooks.c."""

    _fields_ = [
        ("count", ctypes.c_uint64),
        ("target", ctypes.c_uint64),
        ("tb", ctypes.c_uint64),
        ("gate", ctypes.c_uint32),
        ("text_lo", ctypes.c_uint32),
        ("dist", ctypes.c_void_p),
        ("text_words", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("slot_tb", ctypes.c_uint32),
        ("stop_reason", ctypes.c_uint32),
        ("stop_pc", ctypes.c_uint32),
        ("stop_arg", ctypes.c_uint32),
        ("expect", ctypes.c_uint32 * 2),
        ("overrun", ctypes.c_uint32),
        ("faulted", ctypes.c_uint32),
        ("text_write", ctypes.c_uint32),
        ("text_write_pc", ctypes.c_uint32),
        ("fetch_fault", ctypes.c_uint32),
        ("fetch_pc", ctypes.c_uint32),
        ("counting", ctypes.c_uint32),
        ("flags", ctypes.c_void_p),
        ("xmap", ctypes.c_void_p),
        ("emu_stop", ctypes.c_void_p),
        ("reg_read", ctypes.c_void_p),
        ("reg_write", ctypes.c_void_p),
        ("reg0", ctypes.c_int),
        ("reg_pc", ctypes.c_int),
        ("host", ctypes.c_void_p),
        ("dirty", ctypes.c_void_p),
        ("dirty_list", ctypes.c_void_p),
        ("dirty_n", ctypes.c_uint32),
        ("saved", ctypes.c_void_p),
        ("undo_list", ctypes.c_void_p),
        ("undo_n", ctypes.c_uint32),
        ("undo_lost", ctypes.c_uint32),
        ("undo_data", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
        ("stream_len", ctypes.c_uint64),
        ("preimage_offset", ctypes.c_uint32),
        ("preimage_key", ctypes.c_uint8 * 32),
        ("faults", ctypes.c_uint64),
        ("slot_fills", ctypes.c_uint64),
        ("native_syscalls", ctypes.c_uint64),
    ]


@functools.cache
def native() -> ctypes.CDLL:
    """The hooks library, compiled on first use (cached by source hash)."""
    lib = load_shared(
        "mipsvm_fast",
        [CSRC / "uchooks.c"],
        flags=["-O2", "-shared", "-fPIC", "-fvisibility=default"],
        depends=[ABI_HEADER],  # included from the source's own directory
    )
    p, u32, u64, i32 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int
    sigs: dict[str, tuple[object, list[object]]] = {
        "uch_new": (ctypes.POINTER(_Ctx), [p]),
        "uch_free": (None, [p]),
        "uch_set_text": (None, [p, u32, u32, p, p, p, p, p, p, i32, i32, i32]),
        "uch_begin": (None, [p, u64]),
        "uch_collect_dirty": (ctypes.c_int64, [p, p]),
        "uch_checkpoint": (ctypes.c_int, [p, p]),
        "uch_rewind": (ctypes.c_int64, [p, p]),
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

    def checkpoint(self) -> None:
        """Forget the undo log: from now on it saves the pages as they are at this point."""
        if self.lib.uch_checkpoint(self.ctx_ptr, self._out) != 0:
            raise FastPathError("mprotect failed while taking an undo checkpoint")

    def rewind(self) -> list[int]:
        """Put every page written since the last checkpoint back as it was then; the pages that changed."""
        n = self.lib.uch_rewind(self.ctx_ptr, self._out)
        if n < 0:
            raise FastPathError(
                "cannot rewind to the undo checkpoint (its log overflowed or mprotect failed)"
            )
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


KIND_PLAIN, KIND_STOP, KIND_BRANCH, KIND_JUMP, KIND_JR, KIND_SYSCALL, KIND_NOP_BRANCH = range(7)


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
    if op == 0x30:  # ll: Unicorn translates its address through the MIPS MMU (high addresses fault)
        return KIND_STOP
    if op in (0x02, 0x03):
        return KIND_JUMP
    if (op == 0x05 and rs == rt) or (op == 0x07 and rs == 0) or (op == 0x01 and rt == 0x00 and rs == 0):
        return KIND_NOP_BRANCH  # bne rx, rx; bgtz/bltz $0: never taken, a plain word to Unicorn too
    if 0x04 <= op <= 0x07:
        return KIND_BRANCH
    if op == 0x01 and rt in (0x00, 0x01, 0x10, 0x11):
        if rt >= 0x10 and rs == 31:  # bltzal/bgezal whose link overwrites the tested register
            return KIND_STOP
        return KIND_BRANCH
    return KIND_PLAIN


def _ends_tb(word: int) -> bool:
    """Whether Unicorn ends a translation block at (a branch: after the slot of) this word."""
    op, rs, rt, fn = word >> 26, (word >> 21) & 31, (word >> 16) & 31, word & 0x3F
    if op == 0:
        return fn in (0x08, 0x09, 0x0C, 0x0D)  # jr, jalr, syscall, break
    if op == 0x01:
        return rt in (0x00, 0x01, 0x10, 0x11) and not (rt == 0 and rs == 0)
    return op in (0x02, 0x03, 0x04, 0x06) or (op == 0x05 and rs != rt) or (op == 0x07 and rs != 0)


def _static_target(word: int, pc: int) -> int:
    if word >> 26 in (0x02, 0x03):
        return ((pc + 4) & 0xF0000000) | ((word & 0x03FFFFFF) << 2)
    imm = word & 0xFFFF
    return (pc + 4 + (((imm ^ 0x8000) - 0x8000) << 2)) & MASK


class TextMap:
    """The executable pages, the per-word flags the native hooks read, and the split points.

    Split points: Unicorn 2.1.4 leaks a TCG temporary per translated MIPS instruction and crashes on a
    translation block of ~370 straight-line instructions (its op-count limit ends TBs later than that).
    A word SPLIT_WORDS into a stretch without a TB-ending word (branch, jump, syscall, break) is an exit
    address of Unicorn: a TB ends before it and a run that reaches it stops there (the reference stepper
    runs that one word). Compiled code has no such stretches (the mlkit guest's longest is 56 words).
    """

    def __init__(self, ranges: Iterable[tuple[int, int]], guest: GuestMemory) -> None:
        self.guest = guest
        self.xmap = (ctypes.c_uint8 * NUM_PAGES)()
        pages = sorted(
            {p for lo, hi in ranges if hi > lo for p in range(lo >> PAGE_BITS, (hi - 1 >> PAGE_BITS) + 1)}
        )
        for p in pages:
            self.xmap[p] = 1
        self.pages = pages
        self.lo = pages[0] << PAGE_BITS if pages else 0
        self.words = ((pages[-1] + 1 - pages[0]) << (PAGE_BITS - 2)) if pages else 0
        self.flags = (ctypes.c_uint8 * max(self.words, 1))()
        # per word: words to the next STOP word | words to the next branch << 8 (each at most DIST_CAP)
        self.dist = (ctypes.c_uint16 * max(self.words, 1))()
        for i in range(self.words - 1, -1, -1):
            self.flags[i] = self._flags_of(i)
            self.dist[i] = self._dist_of(i)
        self.ends = bytearray(_ends_tb(guest.read_u32(self.lo + 4 * i)) for i in range(self.words))
        self.splits: set[int] = set()
        for p in pages:
            self.splits |= self._splits_in(p)

    def _splits_in(self, page: int) -> set[int]:
        """The split points of a text page (TBs never cross a page)."""
        out, run = set(), 0
        first = ((page << PAGE_BITS) - self.lo) >> 2
        for i in range(first, first + (PAGE_SIZE >> 2)):
            if self.ends[i]:
                run = -1  # the delay slot (or the next word) is still the same TB's
            else:
                run += 1
                if run >= SPLIT_WORDS:
                    out.add(self.lo + 4 * i)
                    run = 0
        return out

    def rescan_splits(self, lo: int, hi: int) -> bool:
        """Recompute the split points after the text bytes [lo, hi) changed; whether they changed."""
        first = max(0, (lo - self.lo) >> 2)
        last = min(self.words - 1, (hi - 1 - self.lo) >> 2)
        changed = False
        for i in range(first, last + 1):
            new = _ends_tb(self.guest.read_u32(self.lo + 4 * i))
            changed |= new != self.ends[i]
            self.ends[i] = new
        if not changed:
            return False
        pages = range(lo >> PAGE_BITS, (hi - 1 >> PAGE_BITS) + 1)
        splits = set().union(*(self._splits_in(p) for p in pages if self.xmap[p]))
        old = {a for a in self.splits if a >> PAGE_BITS in pages}
        self.splits = (self.splits - old) | splits
        return splits != old

    def split_after(self, addr: int) -> int | None:
        """The split point a TB starting at `addr` runs into (no TB-ending word before it), if any."""
        i = (addr - self.lo) >> 2
        for k in range(i, min(i + SPLIT_WORDS + 1, self.words)):
            if self.lo + 4 * k in self.splits:
                return self.lo + 4 * k
            if self.ends[k]:
                return None
        return None

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
        if kind == KIND_NOP_BRANCH:
            return F_NOSLOT
        if self.flags[i + 1]:  # a branch's delay slot must be a plain word
            return F_STOP
        if kind == KIND_JR:
            return F_BRANCH | F_JR
        target = _static_target(word, addr)
        if not self.is_text(target) or target == addr + 4:
            return F_STOP
        return F_BRANCH

    def _dist_of(self, i: int) -> int:
        """Words from word i to the next STOP word and (<< 8) to the next branch (0: it is one), given the
        distances of word i + 1."""
        after = self.dist[i + 1] if i + 1 < self.words else 0
        stop = 0 if self.flags[i] & F_STOP or i + 1 >= self.words else min(DIST_CAP, (after & 0xFF) + 1)
        branch = 0 if self.flags[i] & F_BRANCH else min(DIST_CAP, (after >> 8) + 1)
        return stop | branch << 8

    def rescan(self, lo: int, hi: int) -> None:
        """Recompute the flags after the text bytes [lo, hi) changed (the branches before them too) and the
        distances."""
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
        changed_from = i + 1
        for i in range(last, -1, -1):  # a word's distances depend on the words after it
            new = self._dist_of(i)
            if i < changed_from and new == self.dist[i]:
                break
            self.dist[i] = new


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


def _text_writer(text: TextMap, engine: list[_Engine]) -> TextWrite:
    """What a write to text [lo, hi) needs: new pre-scan flags, split points and no stale translation.
    (`engine` holds the FastVM's current engine: no reference to the FastVM, so it is freed promptly.)"""

    def on_text_write(lo: int, hi: int) -> None:
        text.rescan(lo, hi)
        if text.rescan_splits(lo, hi):
            engine[0].set_exits()
            engine[0].uc.ctl_flush_tb()  # type: ignore[attr-defined]  # (missing from the stubs)
        else:
            engine[0].uc.ctl_remove_cache(lo, hi)

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


def _close(engine: list[_Engine], guest: GuestMemory) -> None:
    engine[0].close()  # uc_close before the memory it maps goes away
    guest.close()


class _Engine:
    """The Unicorn instance of a FastVM, set up with the native hooks. A FastVM replaces it after a fault
    exception (see FastVM._fault_in_block)."""

    def __init__(self, guest: GuestMemory, text: TextMap, counting: bool) -> None:
        self.text = text
        self.uc = uc = Uc(UC_ARCH_MIPS, UC_MODE_MIPS32 + UC_MODE_BIG_ENDIAN)
        uc.ctl_set_cpu_model(mc.UC_CPU_MIPS32_4KC)  # MIPS32 release 1, no MIPS16 (an odd jr target)
        uc.ctl_set_tlb_mode(ucc.UC_TLB_VIRTUAL)  # type: ignore[attr-defined]  # (missing from the stubs)
        uc.mem_map_ptr(0, GUEST_SIZE, ucc.UC_PROT_ALL, guest.base)
        lib, ctx = guest.lib, guest.ctx_ptr
        uclib = _ucmod.uclib
        lib.uch_set_text(
            ctx,
            text.lo,
            text.words,
            ctypes.addressof(text.flags),
            ctypes.addressof(text.dist),
            ctypes.addressof(text.xmap),
            _fnptr(uclib.uc_emu_stop),
            _fnptr(uclib.uc_reg_read),
            _fnptr(uclib.uc_reg_write),
            mc.UC_MIPS_REG_0,
            mc.UC_MIPS_REG_PC,
            int(counting),
        )
        hooks = [(ucc.UC_HOOK_TLB_FILL, lib.uch_tlb_fill_hook), (ucc.UC_HOOK_INTR, lib.uch_intr_hook)]
        if counting:
            hooks.append((ucc.UC_HOOK_BLOCK, lib.uch_block_hook))
        for kind, fn in hooks:
            handle = _ucmod.uc_hook_h()
            err = uclib.uc_hook_add(
                uc._uch, ctypes.byref(handle), kind, _fnptr(fn), ctypes.c_void_p(ctx), 1, 0
            )
            if err != ucc.UC_ERR_OK:
                raise FastPathError(f"uc_hook_add({kind}) failed: {err}")
        self.uch = uc._uch
        # Runs end by the hooks' stop requests, or at an exit: `until` is unaligned (a pc gets there only by
        # a jump, which the reference stepper then faults on) and in a text page (with a non-executable one,
        # every stop fails with an exception); the split points (see TextMap).
        self.until = text.lo + 2
        uc.ctl_exits_enabled(True)
        self.set_exits()
        self.clean = uc.context_save()

    def set_exits(self) -> None:
        """Unicorn's exits: `until` and the split points. (Unicorn invalidates the TBs before every exit at
        the end of each run: only a few exits are cheap.)"""
        self.uc.ctl_set_exits(sorted({self.until, *self.text.splits}))

    def is_exit(self, addr: int) -> bool:
        return addr == self.until or addr in self.text.splits

    def flush_tlb(self) -> None:
        """Empty Unicorn's softmmu TLB. QEMU's TLB is direct-mapped, starts at 256 entries and resizes only
        when flushed: doubled if more than 70% of it was in use since the last flush. The executor flushes
        at the 1st, 2nd, 4th, 8th, ... and every 256th delay-slot TLB fill (each one costs a stop), so the
        TLB grows to the guest's working set (dcgan32: 89K such stops without it, 3.3K with it)."""
        self.uc.ctl(ucc.UC_CTL_TLB_FLUSH, ucc.UC_CTL_IO_WRITE)

    def reset_cpu(self) -> None:
        """The CPU state of a fresh engine: no pending exception, branch or stale delay-slot flags."""
        self.uc.context_restore(self.clean)

    def close(self) -> None:
        self.uc._Uc__finalizer()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Checkpoint:
    """The state at an undo checkpoint (the memory is the undo log's, in C), and the output lengths then."""

    state: State
    stdout: int
    stderr: int
    output: int


class FastVM:
    """A program running on Unicorn; every state it reports equals the reference stepper's.

    vm = FastVM(load_elf("prog.elf"), oracle)
    final = vm.run()                  # until exit
    vm.run_to(12345)                  # exactly that step (from a snapshot, or earlier: restore first)
    vm.state(), vm.memory_root(), vm.stdout, vm.output, vm.exit_code
    """

    def __init__(self, program: Program, oracle: Oracle, *, _counting: bool = True) -> None:
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
        self.rewinds = 0  # faults located by rewinding to a checkpoint (statistics)
        self.slot_fills = 0  # runs stopped by a TLB fill in a delay slot (see _Engine.flush_tlb)
        self._counting = _counting  # False: the uncounted benchmark baseline (`uncounted_run`)
        self._ckpt: _Checkpoint | None = None  # the undo checkpoint (None: take one before the next run)
        self._near: int | None = None  # run_to(exact=False)'s step
        self._native_key: bytes | None = None  # the key whose stream the native syscalls hold
        self._native_stream: ctypes.Array[ctypes.c_char] | None = None  # that stream (kept alive here)
        self._engine = [_Engine(self.guest, self.text, _counting)]
        self._text_written = _text_writer(self.text, self._engine)
        self._mem = _StepMemory(self.guest, self.text.xmap, self._text_written)
        self._ids = (ctypes.c_int * _NREGS)(*_REG_IDS)
        self._vals = (ctypes.c_uint64 * _NREGS)()
        self._ptrs = (ctypes.c_void_p * _NREGS)(
            *[ctypes.addressof(self._vals) + 8 * i for i in range(_NREGS)]
        )
        self._closer = weakref.finalize(self, _close, self._engine, self.guest)

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
        self._ckpt = None

    def write_pages(self, pages: Mapping[int, bytes | bytearray | memoryview | None]) -> None:
        """Overwrite whole pages (None: zero); text pages are re-scanned."""
        self.guest.ensure_handler()
        self._ckpt = None
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

    def run_to(
        self, step_n: int, progress: Callable[[int], None] | None = None, *, exact: bool = True
    ) -> None:
        """Run until `state.step == step_n` exactly (or the program exits first). With `exact=False` the
        run may end up to one translation block (a few hundred steps at most) before step_n, which saves
        the reference steps of an exact stop: for callers that want some step near step_n (snapshots)."""
        self.guest.ensure_handler()
        last_report = time.monotonic()
        self._near = None if exact else step_n
        while not self._st.exited and self._st.step < step_n:
            if self._advance(step_n):
                break
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

    def _step_reference_until(self, limit: int, steps: int) -> None:
        """At most `steps` reference steps, never past step `limit` or the exit."""
        for _ in range(steps):
            if self._st.exited or self._st.step >= limit:
                return
            self.step_reference()

    def _on_write(self, fd: int, data: bytes) -> None:
        {1: self.stdout, 2: self.stderr, 3: self.output}[fd].extend(data)

    def _advance(self, limit: int) -> bool:
        """Make progress towards step `limit`: one Unicorn run, then what it stopped for. True if the run
        ended before a TB that does not fit `limit` and the caller asked for no exact stop there."""
        st = self._st
        pc = st.pc
        if st.next_pc != (pc + 4) & MASK or not self.text.is_text(pc):
            self.step_reference()
            return False
        if self._counting and (
            self._ckpt is None
            or st.step - self._ckpt.state.step >= CHECKPOINT_STEPS
            or self.guest.ctx.undo_n >= CHECKPOINT_PAGES
        ):
            self._checkpoint()
        start = st.step
        lib, ctx = self.guest.lib, self.guest.ctx
        lib.uch_begin(self.guest.ctx_ptr, min(limit - start, CHUNK))
        self._preimage_to_native()
        _REGS.pack_into(self._vals, 0, *st.regs, st.hi, st.lo, pc)
        uclib = _ucmod.uclib
        eng = self._engine[0]
        uclib.uc_reg_write_batch(eng.uch, self._ids, self._ptrs, _NREGS)
        self.uc_runs += 1
        err = uclib.uc_emu_start(eng.uch, pc, eng.until, 0, 0)
        uclib.uc_reg_read_batch(eng.uch, self._ids, self._ptrs, _NREGS)
        vals = _REGS.unpack_from(self._vals)
        self._preimage_from_native()
        if ctx.stop_reason == STOP_FAULT:
            self._fault_in_block(err, vals, start)
        elif ctx.text_write:
            self._store_to_text(vals, start)
        elif ctx.fetch_fault:
            self._jumped_out(err, vals, start, limit)
        elif err != ucc.UC_ERR_OK:
            raise FastPathError(self._describe("an unexplained error", err, vals))
        else:
            return self._after_stop(vals, start, limit)
        return False

    def _after_stop(self, vals: tuple[int, ...], start: int, limit: int) -> bool:
        """Unicorn stopped where a hook asked (or at an exit): take its registers and do what it stopped for.
        True if it stopped before a TB that does not fit `limit` and no exact stop is asked for there."""
        ctx = self.guest.ctx
        uc_pc, reason, done = vals[34], ctx.stop_reason, start + ctx.count
        if reason == STOP_SLOT_FILL:
            # Unicorn finished the slot and its branch and stopped before the next TB
            if uc_pc not in tuple(ctx.expect):
                raise FastPathError(self._describe("a stop after a slot outside its branch's exits", 0, vals))
            self._engine[0].reset_cpu()  # clear the CPU's stale in-delay-slot flags
            self._take_registers(vals, uc_pc, done)
            self._slot_filled()
            return False
        if reason == STOP_NONE:  # at an exit: jumped to one, or a TB ended before one (then the pc is stale)
            tb_pc, tb_n = self._tb()
            tb_end = (tb_pc + 4 * tb_n) & MASK
            eng = self._engine[0]
            if not self._counting:  # no TB to go by: a TB from uc_pc ran into a split point (or uc_pc is one)
                tb_pc, tb_end = -1, self.text.split_after(uc_pc) or uc_pc
            at = uc_pc if eng.is_exit(uc_pc) and uc_pc != tb_pc else tb_end
            if not eng.is_exit(at) or ((ctx.slot_tb or self._ends_in_branch()) and at == tb_end):
                raise FastPathError(self._describe("a stop without a reason", 0, vals))
            self._take_registers(vals, at, done)
            self._step_reference_until(limit, 1)  # the exit word (`until`: an unaligned pc faults)
            return False
        if reason == STOP_SYSCALL and uc_pc == (ctx.stop_pc + 4) & MASK:
            self._take_registers(vals, ctx.stop_pc, done)  # before the syscall (not counted)
            self._step_reference_until(limit, 1)
            return False
        if reason in (STOP_BROKEN, STOP_SYSCALL) or uc_pc != ctx.stop_pc:
            raise FastPathError(self._describe("an unexpected stop", 0, vals))
        self._take_registers(vals, uc_pc, done)
        if reason == STOP_TARGET and limit - self._st.step < ctx.stop_arg:
            if self._near == limit:
                return True
            # the next TB would pass `limit`: its first instructions on the reference stepper
            self._step_reference_until(limit, ctx.stop_arg)
        elif reason == STOP_WORD:  # the TB up to its STOP word on the reference stepper
            self._step_reference_until(limit, ctx.stop_arg + 1)
        elif reason == STOP_OUTSIDE:  # an unaligned pc: the reference stepper faults
            self._step_reference_until(limit, 1)
        # STOP_SELECTED: the next run hands over the new stream
        return False

    def _store_to_text(self, vals: tuple[int, ...], start: int) -> None:
        """A store to a text page failed on Unicorn (the fill hook located it): run it on the reference
        stepper, which writes the text and re-scans it. The registers are those before the store."""
        ctx = self.guest.ctx
        pc = ctx.text_write_pc
        self._engine[0].reset_cpu()  # drop the exception state and any pending branch
        executed = start
        if self._counting:
            tb_pc, tb_n = self._tb()
            if ctx.slot_tb:  # the slot's own TB (counted with its branch)
                if pc != (tb_pc + 4 * tb_n) & MASK:
                    raise FastPathError(self._describe("a store to text outside its TB", 0, vals))
                executed = start + ctx.count - 1
            else:
                if not 0 <= (pc - tb_pc) & MASK < 4 * tb_n:
                    raise FastPathError(self._describe("a store to text outside its TB", 0, vals))
                executed = start + self._tb_start() + ((pc - tb_pc) & MASK) // 4
        if ctx.text_write == 2:  # in a delay slot: replay the branch (its inputs are intact: see word_kind)
            self._take_registers(vals, (pc - 4) & MASK, executed - 1)
            self.step_reference()
            if self._st.pc != pc or self._st.exited:
                raise FastPathError(f"replaying the branch before the slot at 0x{pc:08x} went astray")
        else:
            self._take_registers(vals, pc, executed)
        self.step_reference()

    def _jumped_out(self, err: int, vals: tuple[int, ...], start: int, limit: int) -> None:
        """Unicorn could not fetch a TB outside the text: every counted TB ran; the reference stepper runs
        (or faults on) the code there."""
        ctx = self.guest.ctx
        # A slot that filled the TLB asks for a stop after its branch; when the branch leaves the text,
        # Unicorn fails to fetch there before it honours the stop: both stand, at one of the slot's exits.
        slot_fill = ctx.stop_reason == STOP_SLOT_FILL and ctx.fetch_pc in tuple(ctx.expect)
        if (ctx.stop_reason != STOP_NONE and not slot_fill) or ctx.faulted:
            raise FastPathError(self._describe("a failed fetch after a stop", err, vals))
        self._engine[0].reset_cpu()
        self._take_registers(vals, ctx.fetch_pc, start + ctx.count)
        if slot_fill:
            self._slot_filled()
        self._step_reference_until(limit, 1)

    def _slot_filled(self) -> None:
        """Count a stop after a TLB-filling slot, and flush the TLB at the counts `flush_tlb` names."""
        self.slot_fills += 1
        if self.slot_fills & (self.slot_fills - 1) == 0 or self.slot_fills % 256 == 0:
            self._engine[0].flush_tlb()

    def _fault_in_block(self, err: int, vals: tuple[int, ...], start: int) -> None:
        """A guest fault raised an exception somewhere in the current TB (Unicorn does not say where):
        rewind to the checkpoint, replay to the TB's start and step the TB on the reference stepper, which
        faults where the spec says (or runs it: the exceptions of the instructions the spec and Unicorn
        disagree about are known, and STOP words, but an unknown one costs only time)."""
        ctx = self.guest.ctx
        if not self._counting or self._ckpt is None:
            raise FastPathError(self._describe("a guest fault without a checkpoint", err, vals))
        tb_start, tb_end = start + self._tb_start(), start + ctx.count
        # A new engine: a fault exception may come from the translator (a jump to an unaligned address in
        # a text page makes Unicorn translate a TB there), which leaves Unicorn's translator state broken.
        self._engine[0].close()
        self._engine[0] = _Engine(self.guest, self.text, self._counting)
        self._rewind()
        self.rewinds += 1
        near, self._near = self._near, None
        self.run_to(tb_start)
        self._near = near
        if self._st.step != tb_start or self._st.exited:
            raise FastPathError(f"replaying to step {tb_start} before a fault ended at {self._st.step}")
        self._step_reference_until(tb_end, tb_end - tb_start)
        # No fault there? Unicorn raised an exception the spec does not have: the reference steps stand.

    # -- undo checkpoints ------------------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        self.guest.checkpoint()
        self._ckpt = _Checkpoint(self._st.copy(), len(self.stdout), len(self.stderr), len(self.output))

    def _rewind(self) -> None:
        """Make the VM what it was at the checkpoint (which stays)."""
        ck = self._ckpt
        assert ck is not None
        for p in self.guest.rewind():
            if self.text.xmap[p]:
                self._text_written(p << PAGE_BITS, (p + 1) << PAGE_BITS)
        self._st = ck.state.copy()
        del self.stdout[ck.stdout :], self.stderr[ck.stderr :], self.output[ck.output :]

    # -- the preimage syscalls ---------------------------------------------------------------------------
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
        if self._counting:
            st.step = step_n

    def _tb(self) -> tuple[int, int]:
        """The last TB the block hook counted: its pc and its instructions."""
        tb = self.guest.ctx.tb
        return tb & MASK, tb >> 32

    def _ends_in_branch(self) -> bool:
        """Whether the last counted TB ends in a branch (its slot is a TB of its own, counted with it)."""
        tb_pc, tb_n = self._tb()
        return tb_n > 0 and bool(self.text.flags[((tb_pc - self.text.lo) >> 2) + tb_n - 1] & F_BRANCH)

    def _tb_start(self) -> int:
        """Steps of this run before the last counted TB."""
        return int(self.guest.ctx.count) - self._tb()[1] - int(self._ends_in_branch())

    def _describe(self, what: str, err: int, vals: tuple[int, ...]) -> str:
        ctx = self.guest.ctx
        return (
            f"fast path: {what} (uc error {err}) at step {self._st.step}: uc pc 0x{vals[34]:08x}, "
            f"count {ctx.count}, stop reason {ctx.stop_reason} at 0x{ctx.stop_pc:08x} ({ctx.stop_arg}), "
            f"TB 0x{ctx.tb & MASK:08x} x{ctx.tb >> 32} (slot {ctx.slot_tb}), overrun {ctx.overrun}, "
            f"fault {ctx.faulted}, text write {ctx.text_write}, fetch fault {ctx.fetch_fault}"
        )


@dataclass(frozen=True)
class UncountedRun:
    """A run of the uncounted baseline: its end state (without a step count) and how long it took (wall
    and CPU seconds)."""

    exit_code: int
    regs: list[int]
    seconds: float
    cpu_seconds: float
    uc_runs: int
    reference_steps: int


def uncounted_run(program: Program, oracle: Oracle) -> UncountedRun:
    """Run `program` to its exit on the same executor without the block hook that counts steps: the
    baseline that bench/vm.py compares the exact fast path with (the TLB-fill, interrupt and fault handling
    are the same; the delay-slot detection of the fill hook falls back to the word before the pc). Its
    registers at the exit can be compared with a counted run's; its step count means nothing."""
    with FastVM(program, oracle, _counting=False) as vm:
        vm.guest.ensure_handler()
        t0, c0 = time.perf_counter(), time.process_time()
        while not vm.exited:
            vm._advance(U64)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return UncountedRun(vm.exit_code, list(vm._st.regs), seconds, cpu, vm.uc_runs, vm.ref_steps)
