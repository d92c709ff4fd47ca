"""The ELF loader (spec section 8): a static big-endian MIPS32 executable -> the initial state and memory."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

from mipsvm.constants import HEAP_START, PAGE_BITS, STACK_TOP
from mipsvm.memory import Memory
from mipsvm.state import State

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFDATA2MSB = 2
EM_MIPS = 8
ET_EXEC = 2
EHDR32_SIZE = 52
# Resource bounds of the loader (not of the VM): real static executables have a handful of program headers
# and two or three PT_LOAD segments. Without them a small crafted file (thousands of segments that all map
# the same file bytes, or zero-fill gigabytes) keeps the loader busy for hours.
MAX_PROGRAM_HEADERS = 64
MAX_LOAD_SEGMENTS = 16


class ElfError(ValueError):
    """A file the VM cannot load (spec section 8)."""


@dataclass
class Program:
    state: State  # the initial state, `mem_root` set
    memory: Memory
    # [start, end) of the file-backed part of the executable segments: the code the fast executor runs on
    # Unicorn (the zero-filled rest, .bss, is data there; code anywhere runs, on the reference stepper)
    text_ranges: list[tuple[int, int]] = field(default_factory=list)
    entry: int = 0


def load_elf(source: str | os.PathLike[str] | bytes) -> Program:
    """Load a static big-endian MIPS32 ET_EXEC file (a path or its bytes) per spec section 8."""
    data = bytes(source) if isinstance(source, bytes | bytearray) else _read(source)
    _check_header(data)
    try:
        elf = ELFFile(io.BytesIO(data))
        segments = [seg.header for seg in elf.iter_segments()]
        entry = int(elf.header["e_entry"])
    except (_PyElfError, ValueError, KeyError, EOFError, OSError) as e:
        raise ElfError(f"malformed ELF: {e}") from e
    except Exception as e:  # pyelftools reports truncation with struct/construct errors of any kind
        raise ElfError(f"malformed or truncated ELF: {e}") from e

    loads = [h for h in segments if h["p_type"] == "PT_LOAD" and h["p_memsz"] != 0]
    if len(loads) > MAX_LOAD_SEGMENTS:
        raise ElfError(f"{len(loads)} loadable segments; the loader takes at most {MAX_LOAD_SEGMENTS}")
    memory = Memory()
    text_ranges = []
    for h in loads:
        vaddr, memsz, filesz, offset = h["p_vaddr"], h["p_memsz"], h["p_filesz"], h["p_offset"]
        if filesz > memsz:
            raise ElfError(f"segment at 0x{vaddr:08x}: p_filesz {filesz} > p_memsz {memsz}")
        if filesz and offset + filesz > len(data):
            raise ElfError(f"truncated ELF: segment at 0x{vaddr:08x} needs {offset + filesz} file bytes")
        end = vaddr + memsz
        if end > 1 << 32:
            raise ElfError(f"segment at 0x{vaddr:08x} of {memsz} bytes wraps past 2^32")
        if vaddr < STACK_TOP and end > HEAP_START:
            raise ElfError(
                f"segment [0x{vaddr:08x}, 0x{end:08x}) overlaps the heap/stack region "
                f"[0x{HEAP_START:08x}, 0x{STACK_TOP:08x})"
            )
        memory.write(vaddr, data[offset : offset + filesz])
        _zero(memory, vaddr + filesz, end)
        if h["p_flags"] & P_FLAGS.PF_X and filesz:
            text_ranges.append((vaddr, vaddr + filesz))

    state = State(pc=entry, next_pc=(entry + 4) & 0xFFFFFFFF, heap=HEAP_START)
    state.regs[29] = STACK_TOP - 16  # argc, argv, envp, auxv: the zero words at sp
    state.mem_root = memory.root()
    return Program(state, memory, sorted(text_ranges), entry)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ElfError(f"cannot read {path}: {e}") from e


def _check_header(data: bytes) -> None:
    if len(data) < 4 or data[:4] != ELF_MAGIC:
        raise ElfError("not an ELF file")
    if len(data) < EHDR32_SIZE:
        raise ElfError(f"truncated ELF: {len(data)} bytes, shorter than the ELF header")
    if data[4] != ELFCLASS32:
        raise ElfError("not a 32-bit ELF (EI_CLASS is not ELFCLASS32)")
    if data[5] != ELFDATA2MSB:
        raise ElfError("not a big-endian ELF (EI_DATA is not ELFDATA2MSB)")
    e_type = int.from_bytes(data[16:18], "big")
    e_machine = int.from_bytes(data[18:20], "big")
    if e_machine != EM_MIPS:
        raise ElfError(f"not a MIPS ELF (e_machine {e_machine}, expected EM_MIPS = 8)")
    if e_type != ET_EXEC:
        raise ElfError(f"not a static executable (e_type {e_type}, expected ET_EXEC = 2)")
    phoff = int.from_bytes(data[28:32], "big")
    phentsize = int.from_bytes(data[42:44], "big")
    phnum = int.from_bytes(data[44:46], "big")
    if phnum > MAX_PROGRAM_HEADERS:
        raise ElfError(f"{phnum} program headers; the loader takes at most {MAX_PROGRAM_HEADERS}")
    if phnum and phentsize < 32:
        raise ElfError(f"malformed ELF: program header entries of {phentsize} bytes")
    if phoff + phnum * phentsize > len(data):
        raise ElfError("truncated ELF: the program headers extend past the end of the file")
    shoff = int.from_bytes(data[32:36], "big")
    shentsize = int.from_bytes(data[46:48], "big")
    shnum = int.from_bytes(data[48:50], "big")
    if shoff and shoff + shnum * shentsize > len(data):
        raise ElfError("truncated ELF: the section headers extend past the end of the file")


def _zero(memory: Memory, start: int, end: int) -> None:
    """Zero [start, end): only pages that already hold data need it (memory is zero where never written).

    Walks the pages that exist, not the range: a segment's zero fill may span a million pages.
    """
    if start >= end:
        return
    first, last = start >> PAGE_BITS, (end - 1) >> PAGE_BITS
    for page in sorted(p for p in memory.pages if first <= p <= last):
        lo, hi = max(start, page << PAGE_BITS), min(end, (page + 1) << PAGE_BITS)
        memory.write(lo, bytes(hi - lo))
