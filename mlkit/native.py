"""Run mlkit models natively (the host build of the C runtime, through ctypes).

The native build runs the same graph and op code as the MIPS guest and produces the same output bytes (the
tests check this against the VM), so it is how a prover computes an output and its claimed hash before
running, or instead of running, the VM.

    out = run(model_bytes, encode_payload([x]))        # bytes in, bytes out
    (y,) = run_arrays(model_bytes, [x])                # numpy in, numpy out
    tokens = generate(model_bytes, prompt, n_new=8)    # generate-mode models
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mlkit.build import build_native
from mlkit.format import ExitCode
from mlkit.io import decode_payload, encode_payload, generate_payload

ABI_VERSION = 1


_MESSAGES: dict[int, str] = {
    ExitCode.MODEL: "malformed model",
    ExitCode.INPUT: "malformed input",
    ExitCode.NOMEM: "out of memory (the 1 GiB budget)",
}


class MlkitError(RuntimeError):
    """The runtime rejected a run; `code` is the exit code the guest would exit with (2, 3 or 4)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"mlkit error {code}: {_MESSAGES.get(code, 'unexpected return code')}")


@functools.cache
def library() -> ctypes.CDLL:
    """The native library (built on first use, cached on disk)."""
    return load_library(build_native())


def load_library(path: str | os.PathLike[str]) -> ctypes.CDLL:
    """A build of the runtime at `path` with its C signatures declared and its ABI version checked."""
    lib = ctypes.CDLL(str(path))
    u8p = ctypes.POINTER(ctypes.c_uint8)
    lib.mlkit_run.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        u8p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.mlkit_run.restype = ctypes.c_int
    lib.mlkit_run_alloc.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(u8p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.mlkit_run_alloc.restype = ctypes.c_int
    lib.mlkit_free.argtypes = [ctypes.c_void_p]
    lib.mlkit_free.restype = None
    lib.mlkit_validate.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.mlkit_validate.restype = ctypes.c_int
    lib.mlkit_keccak256.argtypes = [ctypes.c_char_p, ctypes.c_size_t, u8p]
    lib.mlkit_keccak256.restype = None
    lib.mlkit_abi_version.restype = ctypes.c_uint32
    if lib.mlkit_abi_version() != ABI_VERSION:
        raise RuntimeError(f"mlkit library ABI {lib.mlkit_abi_version()} != {ABI_VERSION}")
    return lib


def run_code(model: bytes, payload: bytes, lib: ctypes.CDLL | None = None) -> tuple[int, bytes]:
    """(return code, output bytes) of a run (on `library()` unless another build is given); the output is
    empty unless the code is 0."""
    lib = lib or library()
    out = ctypes.POINTER(ctypes.c_uint8)()
    out_len = ctypes.c_size_t(0)
    rc = lib.mlkit_run_alloc(
        model, len(model), payload, len(payload), ctypes.byref(out), ctypes.byref(out_len)
    )
    try:
        return rc, ctypes.string_at(out, out_len.value) if rc == 0 else b""
    finally:
        lib.mlkit_free(out)


def run(model: bytes, payload: bytes) -> bytes:
    """The output payload of `model` on the input payload; raises MlkitError on a rejected run."""
    rc, out = run_code(model, payload)
    if rc != 0:
        raise MlkitError(rc)
    return out


def run_arrays(model: bytes, inputs: Sequence[npt.ArrayLike]) -> list[npt.NDArray[np.generic]]:
    """Run on numpy inputs (one per graph input, in order); returns the outputs as numpy arrays."""
    return decode_payload(run(model, encode_payload(inputs)))


def generate(model: bytes, prompt: Sequence[int], n_new: int) -> list[int]:
    """Greedy generation with a generate-mode model: the new token ids."""
    (tokens,) = decode_payload(run(model, generate_payload(prompt, n_new)))
    return [int(t) for t in tokens]


def validate(model: bytes) -> int:
    """The C validator's verdict on a model: 0, or the exit code (2 malformed, 4 out of memory)."""
    return int(library().mlkit_validate(model, len(model)))


def keccak256(data: bytes) -> bytes:
    """keccak256 as computed by the runtime's own implementation (keccak.c)."""
    out = (ctypes.c_uint8 * 32)()
    library().mlkit_keccak256(data, len(data), out)
    return bytes(out)
