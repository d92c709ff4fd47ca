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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mlkit.build import build_native
from mlkit.format import ExitCode
from mlkit.io import decode_payload, encode_payload, generate_payload

ABI_VERSION = 2


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


# mlkit_states' callback: (user, exec, slot, bytes, len)
SLOT_CALLBACK = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t
)
EMIT_ALL = 1  # mlkit_states: the callback after every execution, with the slot it wrote


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
    lib.mlkit_schedule.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.POINTER(ctypes.c_uint64),
    ]
    lib.mlkit_schedule.restype = ctypes.c_int
    lib.mlkit_blob_id.argtypes = [ctypes.c_char_p, ctypes.c_size_t, u8p]
    lib.mlkit_blob_id.restype = ctypes.c_int
    lib.mlkit_exec.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_size_t),
        u8p,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.mlkit_exec.restype = ctypes.c_int
    lib.mlkit_states.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint64,
        ctypes.c_void_p,
        ctypes.c_uint64,
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_uint32,
        SLOT_CALLBACK,
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.POINTER(u8p),
        ctypes.POINTER(ctypes.c_size_t),
        u8p,
    ]
    lib.mlkit_states.restype = ctypes.c_int
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


# --------------------------------------------------------------------------------------------------------
# The split game: the schedule, blob ids, one execution, every state of a request (docs/model-format.md,
# "Execution schedule and states"; mlkit.guest.run_states is the API on top)
# --------------------------------------------------------------------------------------------------------
ENTRY_WORDS = 13  # kind, arg, step, out_slot, n_reads, reads[8]


def schedule_entries(
    model: bytes, ks: Sequence[int], prompt_len: int = 0, new_tokens: int = 0
) -> tuple[int, list[tuple[int, ...]]]:
    """(N_exec, the schedule entries k in `ks` as (kind, arg, step, out_slot, reads...)) as schedule.c
    computes them (mlkit.schedule is the Python mirror)."""
    ks_arr = (ctypes.c_uint64 * max(1, len(ks)))(*ks)
    out = (ctypes.c_uint32 * (ENTRY_WORDS * max(1, len(ks))))()
    n = ctypes.c_uint64(0)
    rc = library().mlkit_schedule(
        model, len(model), prompt_len, new_tokens, ks_arr, len(ks), out, ctypes.byref(n)
    )
    if rc != 0:
        raise MlkitError(rc)
    entries = []
    for i in range(len(ks)):
        w = out[ENTRY_WORDS * i : ENTRY_WORDS * (i + 1)]
        entries.append((w[0], w[1], w[2], w[3], *w[5 : 5 + w[4]]))
    return n.value, entries


def blob_id(data: bytes) -> bytes:
    """The blob id of `data` as the runtime computes it (mipsvm.preimage.put_blob is the definition)."""
    out = (ctypes.c_uint8 * 32)()
    rc = library().mlkit_blob_id(data, len(data), out)
    if rc != 0:
        raise MlkitError(rc)
    return bytes(out)


def exec_record(model: bytes, record: bytes, reads: Sequence[bytes | None]) -> tuple[int, bytes | None]:
    """One execution as the node guest runs it, natively: (exit code, computed value or None). `reads[i]` are
    the bytes of the record's i-th slot read (None: none)."""
    n = len(reads)
    data = (ctypes.c_char_p * max(1, n))(*reads)
    lens = (ctypes.c_size_t * max(1, n))(*(len(r) if r is not None else 0 for r in reads))
    value = (ctypes.c_uint8 * 32)()
    computed = ctypes.c_int(0)
    rc = library().mlkit_exec(
        model, len(model), record, len(record), data, lens, value, ctypes.byref(computed)
    )
    return rc, bytes(value) if computed.value else None


@dataclass(frozen=True)
class StatesRun:
    """What `states` computed: `values[32 (k-1) : 32 k]` is execution k's new slot value (k = 1 .. count),
    the output payload (None if OUTPUT did not run), the bytes of the wanted slots in the last state (None:
    unset) and the root of the last state."""

    values: bytes
    count: int
    output: bytes | None
    slots: dict[int, bytes | None]
    root: bytes

    def value(self, k: int) -> bytes:
        return self.values[32 * (k - 1) : 32 * k]


def states(
    model: bytes,
    payload: bytes,
    n_exec: int,
    stop: int = 0,
    want: Sequence[int] = (),
    emit: Callable[[int, int, bytes], None] | None = None,
) -> StatesRun:
    """Run a request execution by execution (`mlkit_states`): executions 1 .. min(stop, n_exec) (stop 0: all;
    `n_exec` is the schedule's length, mlkit.schedule). `emit(exec, slot, bytes)` is called after every
    execution with the bytes of the slot it wrote. Raises MlkitError."""
    count = min(stop, n_exec) if stop else n_exec
    values = ctypes.create_string_buffer(32 * max(1, count))
    n = ctypes.c_uint64(0)
    want_arr = (ctypes.c_uint32 * max(1, len(want)))(*want)
    got: dict[int, bytes | None] = {}

    def on_slot(_user: object, k: int, slot: int, data: ctypes._Pointer[ctypes.c_uint8], length: int) -> None:
        blob = ctypes.string_at(data, length) if data else None
        if k == 0:  # the want slots, after the last execution
            got[slot] = blob
        elif emit is not None:
            emit(k, slot, blob if blob is not None else b"")

    cb = SLOT_CALLBACK(on_slot) if want or emit is not None else SLOT_CALLBACK()  # NULL: no callback
    out = ctypes.POINTER(ctypes.c_uint8)()
    out_len = ctypes.c_size_t(0)
    root = (ctypes.c_uint8 * 32)()
    lib = library()
    rc = lib.mlkit_states(
        model,
        len(model),
        payload,
        len(payload),
        stop,
        values,
        count,
        ctypes.byref(n),
        want_arr,
        len(want),
        cb,
        None,
        EMIT_ALL if emit is not None else 0,
        ctypes.byref(out),
        ctypes.byref(out_len),
        root,
    )
    try:
        output = ctypes.string_at(out, out_len.value) if rc == 0 and out else None
    finally:
        lib.mlkit_free(out)
    if rc != 0:
        raise MlkitError(rc)
    return StatesRun(values.raw[: 32 * n.value], n.value, output, got, bytes(root))
