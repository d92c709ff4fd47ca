"""Build guest programs for the VM: a `.S` or `.c` file -> a static big-endian MIPS32 ELF, cached by content.

    from mips_build import build, build_source
    elf = build(Path("tests/support/mips_programs/hello.S"))      # -> Path of the cached ELF
    elf = build_source("...assembly...", suffix=".S")      # from text

The cache lives in `<repo>/.pytest_cache/mips-build/` (or $ROLLML_MIPS_BUILD_CACHE), one file per hash of
(source, extra dependencies, flags, compiler version). Concurrent builds are safe (atomic rename).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from support.env import ROOT

PROGRAMS = Path(__file__).resolve().with_name("mips_programs")
CC = "mips-linux-gnu-gcc"
CFLAGS = (
    *("-march=mips32", "-msoft-float", "-G0", "-fno-pic", "-mno-abicalls"),
    *("-ffreestanding", "-nostdlib", "-static", "-no-pie", "-O2"),
    *("-Wl,-e,__start", "-Wl,--build-id=none"),
)
BUILD_VERSION = b"1"


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    env = os.environ.get("ROLLML_MIPS_BUILD_CACHE")
    return Path(env) if env else ROOT / ".pytest_cache" / "mips-build"


@functools.cache
def _compiler_version() -> bytes:
    return subprocess.run([CC, "--version"], capture_output=True, check=True).stdout


def have_toolchain() -> bool:
    return shutil.which(CC) is not None


def build(
    source: str | os.PathLike[str],
    *,
    extra_flags: Sequence[str] = (),
    deps: Sequence[str | os.PathLike[str]] = (),
    libgcc: bool = False,
) -> Path:
    """Compile or assemble `source` (`.c` or `.S`, plus further sources in `deps` that are compiled too
    if they are `.c`/`.S`, else only hashed, e.g. headers) into a cached ELF and return its path.
    Skips the calling test if the cross compiler is missing."""
    if not have_toolchain():
        pytest.skip(f"{CC} is not installed")
    src = Path(source)
    files = [src, *map(Path, deps)]
    flags = [*CFLAGS, f"-I{src.parent}", *extra_flags]
    h = hashlib.sha256(BUILD_VERSION + _compiler_version())
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update("\0".join(flags).encode() + (b"libgcc" if libgcc else b""))
    out = cache_dir() / f"{src.stem}-{h.hexdigest()[:20]}.elf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = [str(f) for f in files if f.suffix in (".c", ".S", ".s")]
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".elf")
    os.close(fd)
    try:
        cmd = [CC, *flags, "-o", tmp, *inputs, *(["-lgcc"] if libgcc else [])]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed:\n{result.stderr}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build_source(text: str, *, suffix: str = ".S", name: str = "prog", **kwargs: object) -> Path:
    """Build a program given as text (written to a content-named file in the cache directory)."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    src_dir = cache_dir() / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    src = src_dir / f"{name}-{digest}{suffix}"
    if not src.exists():
        fd, tmp = tempfile.mkstemp(dir=src_dir, prefix=".tmp-", suffix=suffix)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, src)
    return build(src, **kwargs)  # type: ignore[arg-type]


def program(name: str, **kwargs: object) -> Path:
    """Build `tests/support/mips_programs/<name>` (e.g. "hello.S")."""
    return build(PROGRAMS / name, **kwargs)  # type: ignore[arg-type]
