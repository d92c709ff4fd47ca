"""Build small C shared libraries on first use, cached by a hash of their sources and flags.

    lib = load_shared("uchooks", [Path("mipsvm/csrc/uchooks.c")], flags=["-O2"])

The library lands in `$ROLLML_CACHE/native` (default `~/.cache/rollml/native`) under a name that includes
the hash, so a changed source, flag or compiler builds a new file and concurrent builders never see a
half-written one (each builds into a temporary file and renames it into place).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

DEFAULT_FLAGS = ("-O2", "-shared", "-fPIC")


class NativeBuildError(RuntimeError):
    """The host C compiler is missing or failed."""


def cache_root() -> Path:
    """rollml's cache directory: $ROLLML_CACHE, default ~/.cache/rollml."""
    root = os.environ.get("ROLLML_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "rollml"


def cache_dir() -> Path:
    return cache_root() / "native"


def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise NativeBuildError(f"C compiler {cc!r} not found (install gcc, or set CC)")
    return cc


def build_key(sources: Sequence[Path], flags: Sequence[str], depends: Sequence[Path] = ()) -> str:
    h = hashlib.sha256()
    h.update(compiler().encode() + b"\0")
    for flag in flags:
        h.update(flag.encode() + b"\0")
    for path in [*sources, *depends]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_shared(
    name: str,
    sources: Sequence[Path],
    flags: Sequence[str] = DEFAULT_FLAGS,
    depends: Sequence[Path] = (),
    libs: Sequence[str] = (),
) -> Path:
    """Compile `sources` into a shared library (cached) and return its path.

    `depends` are extra files (headers) whose contents are part of the cache key; `libs` are linker
    arguments placed after the sources (e.g. "-lm").
    """
    key = build_key(sources, [*flags, *libs], depends)
    out = cache_dir() / f"lib{name}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [compiler(), *flags, "-o", tmp, *map(str, sources), *libs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NativeBuildError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load_shared(
    name: str,
    sources: Sequence[Path],
    flags: Sequence[str] = DEFAULT_FLAGS,
    depends: Sequence[Path] = (),
    libs: Sequence[str] = (),
) -> ctypes.CDLL:
    """build_shared, then load the library with ctypes."""
    return ctypes.CDLL(str(build_shared(name, sources, flags, depends, libs)))
