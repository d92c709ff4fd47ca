"""The ELF loader (spec section 8)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from support.mips_build import CC, CFLAGS, PROGRAMS, build_source, program

from mipsvm.constants import HEAP_START, STACK_TOP
from mipsvm.elf import ElfError, load_elf


def compute_elf() -> bytes:
    return program("compute.c").read_bytes()


def first_load_header_offset(data: bytes) -> int:
    """File offset of the first PT_LOAD program header of a 32-bit big-endian ELF."""
    phoff, phentsize, phnum = struct.unpack_from(">I", data, 28)[0], *struct.unpack_from(">HH", data, 42)
    for i in range(phnum):
        off = phoff + i * phentsize
        if struct.unpack_from(">I", data, off)[0] == 1:
            return off
    raise AssertionError("no PT_LOAD")


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_compiled_program_loads() -> None:
    path = program("compute.c")
    prog = load_elf(path)
    assert load_elf(path.read_bytes()).state.encode() == prog.state.encode()  # bytes or path
    elf = ELFFile(io.BytesIO(path.read_bytes()))
    s = prog.state
    assert s.pc == elf.header["e_entry"] == prog.entry and s.next_pc == s.pc + 4
    assert s.regs[29] == STACK_TOP - 16 and sum(s.regs) == STACK_TOP - 16
    assert (s.heap, s.lo, s.hi, s.step, s.exited, s.exit_code) == (HEAP_START, 0, 0, 0, False, 0)
    assert (s.preimage_key, s.preimage_offset) == (bytes(32), 0)
    assert s.mem_root == prog.memory.root()
    for seg in elf.iter_segments():
        h = seg.header
        if h["p_type"] != "PT_LOAD":
            continue
        assert prog.memory.read(h["p_vaddr"], h["p_filesz"]) == seg.data()
        assert prog.memory.read(h["p_vaddr"] + h["p_filesz"], h["p_memsz"] - h["p_filesz"]) == bytes(
            h["p_memsz"] - h["p_filesz"]
        )
    assert len(prog.text_ranges) == 1
    start, end = prog.text_ranges[0]
    assert start <= s.pc < end
    assert prog.state.hash()[0] == 3  # UNFINISHED


def test_not_an_elf() -> None:
    rnd = random.Random(7)
    for data in [b"", b"\x7fEL", b"MZ\x90\x00" + bytes(100), bytes(rnd.getrandbits(8) for _ in range(4096))]:
        with pytest.raises(ElfError, match="not an ELF"):
            load_elf(data)
    with pytest.raises(ElfError, match="cannot read"):
        load_elf("/nonexistent/file.elf")


def test_random_garbage_after_the_magic_is_rejected() -> None:
    rnd = random.Random(8)
    good = compute_elf()
    for _ in range(200):
        data = bytearray(good[:52] if rnd.random() < 0.5 else good)
        for _ in range(rnd.randrange(1, 20)):
            data[rnd.randrange(4, len(data))] = rnd.getrandbits(8)
        with contextlib.suppress(ElfError):  # any other exception fails the test
            load_elf(bytes(data))


def test_truncated_elf() -> None:
    data = compute_elf()
    for n in (4, 5, 20, 51, 52, 60, 100, 200, len(data) // 2, len(data) - 1):
        with pytest.raises(ElfError, match=r"^truncated ELF"):
            load_elf(data[:n])


def test_x86_elf_is_rejected() -> None:
    if not os.path.exists("/bin/true"):
        pytest.skip("no /bin/true")
    with pytest.raises(ElfError, match="not a 32-bit ELF"):
        load_elf("/bin/true")


def test_header_checks() -> None:
    data = compute_elf()
    with pytest.raises(ElfError, match="32-bit"):
        load_elf(patched(data, 4, "B", 2))
    with pytest.raises(ElfError, match="big-endian"):
        load_elf(patched(data, 5, "B", 1))
    with pytest.raises(ElfError, match="MIPS"):
        load_elf(patched(data, 18, ">H", 3))
    with pytest.raises(ElfError, match="ET_EXEC"):
        load_elf(patched(data, 16, ">H", 3))  # ET_DYN


@pytest.mark.requires("mips-cc")
def test_little_endian_mips_is_rejected(tmp_path: Path) -> None:
    out = tmp_path / "le.elf"
    src = PROGRAMS / "hello.S"
    subprocess.run([CC, "-EL", *CFLAGS, "-o", str(out), str(src)], check=True, capture_output=True)
    with pytest.raises(ElfError, match="big-endian"):
        load_elf(out)


def test_segments_in_the_heap_or_stack_region_are_rejected() -> None:
    data = compute_elf()
    ph = first_load_header_offset(data)
    memsz = struct.unpack_from(">I", data, ph + 20)[0]
    for vaddr in (HEAP_START, HEAP_START - 4, 0x40000000, STACK_TOP - 4):
        with pytest.raises(ElfError, match="heap/stack"):
            load_elf(patched(data, ph + 8, ">I", vaddr))
    # touching the region's edges is fine
    load_elf(patched(data, ph + 8, ">I", HEAP_START - memsz))
    load_elf(patched(data, ph + 8, ">I", STACK_TOP))


def test_linked_into_the_heap_is_rejected() -> None:
    elf = build_source(
        ".text\n.globl __start\n__start: nop\n",
        name="high",
        extra_flags=[f"-Wl,-Ttext={HEAP_START + 0x100000:#x}"],
    )
    with pytest.raises(ElfError, match="heap/stack"):
        load_elf(elf)


def test_segment_wrapping_past_2_32_is_rejected() -> None:
    data = compute_elf()
    ph = first_load_header_offset(data)
    wrapped = patched(data, ph + 8, ">I", 0xFFFFF000)
    wrapped = patched(wrapped, ph + 20, ">I", 0x2000)  # p_memsz
    with pytest.raises(ElfError, match="wraps"):
        load_elf(wrapped)
    with pytest.raises(ElfError, match="p_filesz"):
        load_elf(patched(data, ph + 20, ">I", 1))  # p_memsz < p_filesz
    with pytest.raises(ElfError, match="truncated"):
        load_elf(patched(data, ph + 4, ">I", len(data)))  # p_offset past the end


def test_bss_is_zeroed_over_earlier_segments() -> None:
    """Segments are loaded in order; a later one's zero-fill overwrites what an earlier one put there."""
    text = ".text\n.globl __start\n__start: nop\n.data\n.word 0x11111111\n.bss\n.space 64\n"
    prog = load_elf(build_source(text, name="bss"))
    assert prog.state.mem_root == prog.memory.root()
