"""The two builds of the mlkit C runtime.

- `build_mips(out_path)`: the guest program of the rollml VM, a static big-endian MIPS32 ELF built with
  `mips-linux-gnu-gcc`, soft-float (every float operation is a call into softfloat.c), freestanding (no libc,
  no libgcc), and reproducible: no build id, no timestamps, no paths, so a rebuild with the same compiler
  gives the same bytes. `python3 -m mlkit.build` writes the committed artifacts `mlkit/guest/mlkit.elf` and
  `mlkit/guest/mlkit-exec.elf` (the split game's node guest: the same sources with schedule.c and exec.c,
  built with -DMLKIT_EXEC). The guests take the VM's syscall numbers, file descriptors and blob sizes from
  `mipsvm/csrc/vmabi.h`.
- `build_native()`: the host shared library (same graph/ops code, the host FPU) for `mlkit.native`, cached
  by `mipsvm.native.build_shared`.

Also here: the disassembly checks the tests run on the guest (no FPU instruction, no undefined symbol, only
instructions of docs/vm-spec.md section 5).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mipsvm import ABI_HEADER

PACKAGE_DIR = Path(__file__).resolve().parent
CSRC = PACKAGE_DIR / "csrc"
GUEST_ELF = PACKAGE_DIR / "guest" / "mlkit.elf"
EXEC_GUEST_ELF = PACKAGE_DIR / "guest" / "mlkit-exec.elf"  # the node guest of the split game

COMMON_SOURCES = ("graph.c", "ops.c", "keccak.c", "softfloat.c", "mathf.c")
SPLIT_SOURCES = ("schedule.c", "exec.c")  # the split game's executions (the node guest, the native states)
GUEST_SOURCES = ("guest.c", *COMMON_SOURCES)
EXEC_GUEST_SOURCES = ("guest.c", *COMMON_SOURCES, *SPLIT_SOURCES)
NATIVE_SOURCES = ("host.c", *COMMON_SOURCES, *SPLIT_SOURCES)
HEADERS = ("mlkit.h", "softfloat.h", "mathf.h")
LINKER_SCRIPT = "guest.ld"

MIPS_CC = os.environ.get("MIPS_CC", "mips-linux-gnu-gcc")
MIPS_OBJDUMP = os.environ.get("MIPS_OBJDUMP", "mips-linux-gnu-objdump")
MIPS_NM = os.environ.get("MIPS_NM", "mips-linux-gnu-nm")

# Both builds: C11, IEEE floats as written (no contraction into fma, no fast-math), no strict aliasing (the
# kernels view float buffers as words), warnings for any accidental double.
WARNINGS = ("-Wall", "-Wextra", "-Wdouble-promotion", "-Werror=double-promotion", "-Wno-unused-parameter")
COMMON_CFLAGS = ("-std=c11", "-O2", "-ffp-contract=off", "-fno-fast-math", "-fno-strict-aliasing", *WARNINGS)

MIPS_CFLAGS = (
    *COMMON_CFLAGS,
    "-march=mips32",
    "-msoft-float",
    "-DSOFTFLOAT_ABI",
    "-G0",
    "-fno-pic",
    "-mno-abicalls",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-tree-loop-distribute-patterns",  # no memcpy/memset calls synthesized from loops
    "-fno-asynchronous-unwind-tables",
    "-frandom-seed=mlkit",
    "-nostdlib",
    "-static",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,noexecstack",
    "-Wl,--no-warn-rwx-segments",
)

NATIVE_CFLAGS = (*COMMON_CFLAGS, "-shared", "-fPIC")

# COP1 (FPU) instructions, by mnemonic and by opcode: COP1 0x11, COP1X 0x13, lwc1 0x31, ldc1 0x35,
# swc1 0x39, sdc1 0x3D.
FPU_MNEMONIC = re.compile(
    r"^(lwc1|swc1|ldc1|sdc1|lwxc1|swxc1|ldxc1|sdxc1|mtc1|mfc1|mthc1|mfhc1|ctc1|cfc1|bc1[tf]l?|cvt\..*|c\..*"
    r"|[a-z]+\.(s|d|w|l|ps)|movf|movt)$"
)
FPU_OPCODES = {0x11, 0x13, 0x31, 0x35, 0x39, 0x3D}

# Mnemonics objdump may print for the instructions of docs/vm-spec.md section 5 (with its aliases).
_SPEC_TEXT = """
    sll srl sra sllv srlv srav jr jalr movz movn syscall break sync mfhi mthi mflo mtlo mult multu div divu
    add addu sub subu and or xor nor slt sltu tge tgeu tlt tltu teq tne bltz bgez tgei tgeiu tlti tltiu teqi
    tnei bltzal bgezal j jal beq bne blez bgtz addi addiu slti sltiu andi ori xori lui lb lh lwl lw lbu lhu
    lwr sb sh swl sw swr ll sc madd maddu mul msub msubu clz clo
    nop ssnop ehb move b bal beqz bnez li negu neg not
"""
# the last line: objdump's aliases (nop = sll 0, move = addu/or, b = beq $0,$0, bal = bgezal $0,
# beqz/bnez = beq/bne $0, li = addiu/ori, negu = subu $0, not = nor $0)
SPEC_MNEMONICS = frozenset(_SPEC_TEXT.split())


class BuildError(RuntimeError):
    """A compiler or binutils tool is missing or failed."""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise BuildError(f"{cmd[0]} not found (install gcc-mips-linux-gnu binutils-mips-linux-gnu)")
    env = {**os.environ, "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def build_mips(out_path: str | os.PathLike[str], node_guest: bool = False) -> Path:
    """Build the MIPS guest ELF at `out_path` (deterministic: same compiler, same bytes): the whole-run guest,
    or with `node_guest` the split game's node guest (the same sources and schedule.c, exec.c, built with
    -DMLKIT_EXEC)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = EXEC_GUEST_SOURCES if node_guest else GUEST_SOURCES
    name_out = "mlkit-exec.elf" if node_guest else "mlkit.elf"
    with tempfile.TemporaryDirectory(prefix="mlkit-build-") as tmp:
        # compile from a copy in a fixed-name directory with relative names: no path reaches the output
        src = Path(tmp) / "csrc"
        src.mkdir()
        for name in (*sources, *HEADERS, LINKER_SCRIPT):
            shutil.copyfile(CSRC / name, src / name)
        vm_include = Path(tmp) / "mipsvm"  # the VM's ABI header (mipsvm/csrc), an include dir of its own
        vm_include.mkdir()
        shutil.copyfile(ABI_HEADER, vm_include / ABI_HEADER.name)
        cmd = [
            MIPS_CC,
            *MIPS_CFLAGS,
            f"-ffile-prefix-map={src}=.",
            "-I../mipsvm",
            *(["-DMLKIT_EXEC"] if node_guest else []),
            "-T",
            LINKER_SCRIPT,
            "-o",
            name_out,
            *sources,
        ]
        _run(cmd, cwd=src)
        fd, staged = tempfile.mkstemp(prefix=".mlkit-", suffix=".elf", dir=out.parent)
        os.close(fd)
        try:
            shutil.copyfile(src / name_out, staged)
            os.chmod(staged, 0o644)
            os.replace(staged, out)
        finally:
            if os.path.exists(staged):
                os.unlink(staged)
    return out


def build_native(defines: Sequence[str] = ()) -> Path:
    """Build (or reuse from the cache) the host shared library; returns its path. `defines` are extra
    preprocessor macros, e.g. "MLK_SOFT_DOT": the integer dot-product kernel of the MIPS build instead of
    the FPU loop (the tests compare the two)."""
    from mipsvm.native import build_shared

    flags = [*NATIVE_CFLAGS, *(f"-D{d}" for d in defines)]
    if sys.platform != "darwin" and os.uname().machine in ("i386", "i686"):
        flags += ["-msse2", "-mfpmath=sse"]  # no x87 excess precision
    return build_shared(
        "mlkit",
        [CSRC / name for name in NATIVE_SOURCES],
        flags=flags,
        depends=[CSRC / name for name in HEADERS],
    )


# --------------------------------------------------------------------------------------------------------
# Checks on the guest binary
# --------------------------------------------------------------------------------------------------------
def disassemble(elf: str | os.PathLike[str]) -> list[tuple[int, int, str, str]]:
    """(address, word, mnemonic, operands) of every instruction of the ELF's executable sections."""
    text = _run([MIPS_OBJDUMP, "-d", "--no-show-raw-insn", "-z", str(elf)])
    raw = _run([MIPS_OBJDUMP, "-d", "-z", str(elf)])
    words = {}
    for line in raw.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s+([0-9a-f]{8})\s", line)
        if m:
            words[int(m.group(1), 16)] = int(m.group(2), 16)
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if m:
            addr = int(m.group(1), 16)
            out.append((addr, words.get(addr, 0), m.group(2), m.group(3).strip()))
    return out


def fpu_instructions(elf: str | os.PathLike[str]) -> list[str]:
    """Every COP1/FPU instruction of the ELF (there must be none)."""
    bad = []
    for addr, word, mnem, ops in disassemble(elf):
        if FPU_MNEMONIC.match(mnem) or (word >> 26) in FPU_OPCODES:
            bad.append(f"{addr:08x}: {mnem} {ops}")
    return bad


def non_spec_instructions(elf: str | os.PathLike[str]) -> list[str]:
    """Instructions whose mnemonic is not in docs/vm-spec.md section 5 (there must be none)."""
    return [f"{a:08x}: {m} {o}" for a, _, m, o in disassemble(elf) if m not in SPEC_MNEMONICS]


def undefined_symbols(elf: str | os.PathLike[str]) -> list[str]:
    """Undefined symbols, and call targets that are no function of the ELF (there must be none)."""
    bad = [line.split()[-1] for line in _run([MIPS_NM, "-u", str(elf)]).splitlines() if line.strip()]
    funcs = {}
    for line in _run([MIPS_NM, str(elf)]).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            funcs[int(parts[0], 16)] = parts[2]
    for addr, _, mnem, ops in disassemble(elf):
        if mnem in ("jal", "bal"):
            target = int(ops.split()[0].rstrip(","), 16) if mnem == "jal" else None
            if target is not None and target not in funcs:
                bad.append(f"{addr:08x}: {mnem} {ops} (no function at the target)")
    return bad


def compiler_ident() -> str:
    """The MIPS compiler's version line: a reproducible build is reproducible with this compiler."""
    return _run([MIPS_CC, "--version"]).splitlines()[0]


def main() -> None:
    for path, node_guest in ((GUEST_ELF, False), (EXEC_GUEST_ELF, True)):
        out = build_mips(path, node_guest)
        print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
        print(f"  {out.stat().st_size} bytes, {compiler_ident()}")


if __name__ == "__main__":
    main()
