"""Running mlkit models: natively (the host build) and as the MIPS guest in the rollml VM.

The guest (`mlkit/guest/mlkit.elf`, one program for every model) reads everything through the VM's preimage
oracle (docs/vm-spec.md sections 6 and 9): the model and the input as blobs, and three local data (their
indices are the VM's, `mipsvm.constants` and `mipsvm/csrc/vmabi.h`)

    LOCAL_MODEL_ID (1)     the model's blob id
    LOCAL_INPUT_ID (2)     the input payload's blob id
    LOCAL_OUTPUT_HASH (3)  the claimed keccak256 of the output payload

It writes the output payload to fd 3 and exits 0 iff keccak256(output) equals local 3 (the result
convention), so a VALID final state binds the output. `guest_oracle` is the one place that sets this up;
the CLIs, the agents' execution and the tests all use it.

The split game (docs/model-format.md, "Execution schedule and states") runs a request as a sequence of
executions: `run_states` computes every state natively (no VM), and the node guest
(`mlkit/guest/mlkit-exec.elf`, local 1 the model id, local 4 `LOCAL_EXEC_RECORD` the keccak key of an
execution record) checks one execution in the VM: `exec_oracle` sets it up, `run_exec_vm` runs it.

Also here: reading and checking a model file and .npy inputs against a model (`read_model`, `read_npy`,
`input_payload`), with one-line `InputError`s for anything wrong.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mipsvm.constants import LOCAL_EXEC_RECORD, LOCAL_INPUT_ID, LOCAL_MODEL_ID, LOCAL_OUTPUT_HASH, Status
from mipsvm.elf import Program, load_elf
from mipsvm.fast import FastVM
from mipsvm.hashing import keccak256
from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore, put_blob
from mlkit import native
from mlkit.build import EXEC_GUEST_ELF, GUEST_ELF
from mlkit.format import MAX_CTX, DType, Mode, Model, ModelFormatError, decode_model
from mlkit.io import encode_payload, generate_payload
from mlkit.schedule import Exec, ExecKind, Schedule, schedule_of
from mlkit.state import SLOT_INPUT, SLOT_OUTPUT, ZERO, ExecRecord, SlotTree, blob_id, initial_state


class InputError(ValueError):
    """A model file or input that cannot be used, said in one line."""


# --------------------------------------------------------------------------------------------------------
# Files and inputs
# --------------------------------------------------------------------------------------------------------
def read_model(path: Path) -> tuple[bytes, Model]:
    """The model file's bytes and its parsed form (InputError for an unreadable or malformed file)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read model {path}: {exc.strerror or exc}") from None
    try:
        return data, decode_model(data)
    except ModelFormatError as exc:
        raise InputError(f"{path}: malformed model: {exc}") from None


def read_npy(path: Path) -> np.ndarray:
    """A numeric array from a .npy file (InputError for anything else)."""
    try:
        with path.open("rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise InputError(f"{path}: not a .npy file")
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except OSError as exc:
        raise InputError(f"cannot read input {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"{path}: not a numeric .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
        raise InputError(f"{path}: not a numeric array")
    return arr


def input_payload(model: Model, arrays: Sequence[np.ndarray], new_tokens: int) -> bytes:
    """Check the arrays against the model's inputs and encode the input payload."""
    if model.mode == Mode.GENERATE:
        if len(arrays) != 1:
            raise InputError(
                f"a generate-mode model takes one input (the prompt's token ids), got {len(arrays)}"
            )
        prompt = arrays[0]
        if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
            raise InputError(
                f"the prompt must be a non-empty 1-D integer array, got {prompt.dtype}{list(prompt.shape)}"
            )
        if not 1 <= new_tokens <= MAX_CTX:
            raise InputError(f"--new-tokens must be 1..{MAX_CTX}")
        return generate_payload(prompt.tolist(), new_tokens)
    specs = model.input_specs()
    if len(arrays) != len(specs):
        raise InputError(f"the model takes {len(specs)} input(s), got {len(arrays)} (repeat --input)")
    for i, (a, (dtype, shape)) in enumerate(zip(arrays, specs, strict=True)):
        want = "float32" if dtype == DType.F32 else "int32"
        ok_dtype = a.dtype == np.float32 if dtype == DType.F32 else np.issubdtype(a.dtype, np.integer)
        if tuple(a.shape) != tuple(shape) or not ok_dtype:
            raise InputError(
                f"input {i}: the model expects {want}{list(shape)}, got {a.dtype}{list(a.shape)} "
                f"({a.size} values)"
            )
        if dtype == DType.I32 and a.size and (a.min() < -(2**31) or a.max() >= 2**31):
            raise InputError(f"input {i}: values out of the int32 range")
    return encode_payload([np.asarray(a) for a in arrays])


# --------------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NativeRun:
    """A native run of a model: its output payload and how long it took."""

    output: bytes
    seconds: float


@dataclass(frozen=True)
class VMRun:
    """A guest run in the VM: its output payload (fd 3), its end state and how long it took."""

    output: bytes
    seconds: float
    steps: int
    exit_code: int
    final_hash: bytes  # the final state hash, its status in the top byte

    @property
    def status(self) -> Status:
        """The VM's exit status (VALID: exit 0, the claimed output hash matched)."""
        return Status(self.final_hash[0])


def output_sha(payload: bytes) -> str:
    """keccak256 of an output payload as 0x hex (what a claim binds)."""
    return "0x" + keccak256(payload).hex()


def run_native(model: bytes, payload: bytes) -> NativeRun:
    """The model on the input with the native build (MlkitError if the runtime rejects either)."""
    t0 = time.perf_counter()
    out = native.run(model, payload)
    return NativeRun(out, time.perf_counter() - t0)


@functools.cache
def guest_program() -> Program:
    """The mlkit guest, loaded once per process. Never mutated: FastVM and Trace copy it."""
    return load_elf(GUEST_ELF)


def blob_ids(model: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """(model id, input id): the blob ids local 1 and 2 hold, as the registry and the market compute them."""
    store = PreimageStore()
    return put_blob(store, model), put_blob(store, payload)


def guest_oracle(model: bytes, payload: bytes, claim: bytes | None = None) -> PreimageOracle:
    """The preimage oracle of a guest run: the model and input as blobs and the local data 1-3 (see the
    module docstring). Without a claim, the native run supplies it (the true claim)."""
    if claim is None:
        claim = keccak256(run_native(model, payload).output)
    store = PreimageStore()
    local = LocalData(
        {
            LOCAL_MODEL_ID: put_blob(store, model),
            LOCAL_INPUT_ID: put_blob(store, payload),
            LOCAL_OUTPUT_HASH: claim,
        }
    )
    return PreimageOracle(store, local)


def run_vm(
    model: bytes,
    payload: bytes,
    claim: bytes | None = None,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> VMRun:
    """Run the guest on `guest_oracle(model, payload, claim)` with the fast executor, to its exit (or
    `max_steps`). `seconds` covers the VM run only (not storing the blobs)."""
    oracle = guest_oracle(model, payload, claim)
    with FastVM(guest_program(), oracle) as vm:
        t0 = time.perf_counter()
        final = vm.run(max_steps, progress=progress)
        seconds = time.perf_counter() - t0
        return VMRun(bytes(vm.output), seconds, final.step, final.exit_code, final.hash())


# --------------------------------------------------------------------------------------------------------
# The split game: every state natively, one execution in the VM
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Execution:
    """Execution `index` (1-based) of a request's schedule and the value it wrote: `value` is `out_slot`'s
    value in S_index (the old value for a no-op)."""

    index: int
    kind: ExecKind
    arg: int
    step: int
    out_slot: int
    reads: tuple[int, ...]
    value: bytes


class States:
    """Every state S_0 .. S_N of a request (N = `len(self)`, the schedule's length), computed natively.

    A state is known by its slot values (`value_at`, `values_at`); the root of S_N comes with the run, the
    others are computed on demand (`root`, `roots`). The bytes of the slots (for preimages and proofs) are
    not kept: `slot_bytes`/`slots_at` replay executions 1..k natively. States past N equal S_N (executions
    past the end are no-ops)."""

    def __init__(
        self, model: bytes, payload: bytes, schedule: Schedule, run: native.StatesRun, seconds: float
    ) -> None:
        self.model, self.payload, self.schedule = model, payload, schedule
        if run.output is None:
            raise ValueError("the run did not reach OUTPUT")
        self.output: bytes = run.output
        self.seconds = seconds
        self._run = run
        self._roots: list[bytes] | None = None

    def __len__(self) -> int:
        return self._run.count

    @functools.cached_property
    def input_id(self) -> bytes:
        """The input payload's blob id: SLOT_INPUT of every state."""
        return blob_id(self.payload)

    @functools.cached_property
    def executions(self) -> list[Execution]:
        """Execution k is executions[k - 1]."""
        return [
            Execution(k, e.kind, e.arg, e.step, e.out_slot, e.reads, self._run.value(k))
            for k, e in enumerate(self.schedule, start=1)
        ]

    @functools.cached_property
    def _writes(self) -> dict[int, list[int]]:
        """slot -> the executions that write it, ascending."""
        writes: dict[int, list[int]] = {}
        for x in self.executions:
            writes.setdefault(x.out_slot, []).append(x.index)
        return writes

    @property
    def output_hash(self) -> bytes:
        """keccak256(output): SLOT_OUTPUT of S_N, the market's output hash."""
        return keccak256(self.output)

    @property
    def final_root(self) -> bytes:
        """The root of S_N: what a result posts."""
        return self._run.root

    def value_at(self, k: int, slot: int) -> bytes:
        """Slot `slot`'s value in S_k."""
        k = min(max(k, 0), len(self))
        ks = self._writes.get(slot, [])
        i = bisect.bisect_right(ks, k)
        if i:
            return self._run.value(ks[i - 1])
        return self.input_id if slot == SLOT_INPUT else ZERO

    def values_at(self, k: int) -> dict[int, bytes]:
        """Every set slot of S_k and its value."""
        out = {SLOT_INPUT: self.input_id}
        out.update({slot: self.value_at(k, slot) for slot in self._writes})
        return {s: v for s, v in out.items() if v != ZERO}

    def tree(self, k: int) -> SlotTree:
        """S_k as a slot tree (for proofs)."""
        return SlotTree(self.values_at(k))

    def roots(self) -> list[bytes]:
        """The roots of S_0 .. S_N (computed once, one slot update per execution)."""
        if self._roots is None:
            tree = initial_state(self.input_id)
            roots = [tree.root()]
            for x in self.executions:
                tree.set(x.out_slot, x.value)
                roots.append(tree.root())
            self._roots = roots
        return self._roots

    def root(self, k: int) -> bytes:
        """The root of S_k (k > N: S_N)."""
        if k >= len(self):
            return self.final_root
        return self.roots()[max(k, 0)]

    def entry(self, k: int) -> Exec:
        """Schedule entry k (past the end: a no-op)."""
        return self.schedule.entry(k)

    def record(self, k: int) -> ExecRecord:
        """The honest record of execution k (k >= 1): its slots with their values in S_{k-1}, the new value
        in S_k."""
        e = self.entry(k)
        return ExecRecord(
            k,
            e.out_slot,
            self.value_at(k - 1, e.out_slot),
            self.value_at(k, e.out_slot),
            tuple((s, self.value_at(k - 1, s)) for s in e.reads),
        )

    def slots_at(self, k: int, slots: Iterable[int]) -> dict[int, bytes | None]:
        """The bytes of `slots` in S_k (None: unset), by replaying executions 1..k natively. SLOT_INPUT's
        bytes are the input payload, SLOT_OUTPUT's the output payload."""
        k = min(max(k, 0), len(self))
        out: dict[int, bytes | None] = {}
        rest = []
        for s in slots:
            if s == SLOT_INPUT:
                out[s] = self.payload
            elif k == 0 or self.value_at(k, s) == ZERO:
                out[s] = None
            elif s == SLOT_OUTPUT:
                out[s] = self.output
            else:
                rest.append(s)
        if rest:
            out.update(native.states(self.model, self.payload, len(self), stop=k, want=rest).slots)
        return out

    def slot_bytes(self, k: int, slot: int) -> bytes | None:
        """The bytes of `slot` in S_k (see `slots_at`)."""
        return self.slots_at(k, [slot])[slot]

    def read_bytes(self, k: int) -> list[bytes | None]:
        """The bytes of the slots execution k reads, in S_{k-1} (the node guest's inputs)."""
        reads = self.entry(k).reads
        got = self.slots_at(k - 1, reads)
        return [got[s] for s in reads]

    def oracle(
        self, k: int, record: ExecRecord | None = None, store: PreimageStore | None = None
    ) -> PreimageOracle:
        """The node guest's oracle for execution k: `record` (default the honest one; a record from a
        dispute has the reads of S_{k-1}, which these states hold) and the bytes of its reads."""
        record = record if record is not None else self.record(k)
        return exec_oracle(self.model, record, self.read_bytes(k), store)


@functools.lru_cache(maxsize=4)
def parsed_model(model: bytes) -> Model:
    """`decode_model`, remembered for the last few models (a node serves one model many times)."""
    return decode_model(model)


def run_states(model: bytes, payload: bytes) -> States:
    """Every state of `model` on the input payload, natively (MlkitError if the runtime rejects the model or
    the input, as the whole run would: 2, 3, 4; ModelFormatError for a model the split game cannot run)."""
    t0 = time.perf_counter()
    sched = schedule_of(parsed_model(model), payload)
    run = native.states(model, payload, len(sched))
    return States(model, payload, sched, run, time.perf_counter() - t0)


@functools.cache
def exec_program() -> Program:
    """The node guest (mlkit-exec.elf), loaded once per process. Never mutated: FastVM and Trace copy it."""
    return load_elf(EXEC_GUEST_ELF)


def exec_program_hash() -> bytes:
    """The node guest's initial state hash: the split game's program hash (the registry's programHash)."""
    return exec_program().state.hash()


def exec_oracle(
    model: bytes,
    record: ExecRecord,
    reads: Sequence[bytes | None],
    store: PreimageStore | None = None,
) -> PreimageOracle:
    """The preimage oracle of a node guest run: local 1 the model id, local 4 the record's key; the store
    holds the model blob, the record, and the blobs of the slots the record reads (`reads[i]`: the bytes of
    its i-th read; None for none). Pass a store that already holds the model to save storing it again."""
    store = store if store is not None else PreimageStore()
    model_key = put_blob(store, model)
    store.put(record.encode())
    for data in reads:
        if data is not None:
            put_blob(store, data)
    return PreimageOracle(store, LocalData({LOCAL_MODEL_ID: model_key, LOCAL_EXEC_RECORD: record.key()}))


@dataclass(frozen=True)
class ExecVMRun:
    """A node guest run: its exit code (0: the record's new value is right), the value it computed (fd 3;
    None if it exited before), its steps and end state."""

    exit_code: int
    value: bytes | None
    steps: int
    seconds: float
    final_hash: bytes

    @property
    def status(self) -> Status:
        return Status(self.final_hash[0])


def run_exec_vm(
    model: bytes,
    record: ExecRecord,
    reads: Sequence[bytes | None],
    store: PreimageStore | None = None,
    max_steps: int | None = None,
) -> ExecVMRun:
    """Run the node guest on `exec_oracle(model, record, reads, store)` with the fast executor."""
    oracle = exec_oracle(model, record, reads, store)
    with FastVM(exec_program(), oracle) as vm:
        t0 = time.perf_counter()
        final = vm.run(max_steps)
        seconds = time.perf_counter() - t0
        out = bytes(vm.output)
        return ExecVMRun(final.exit_code, out if len(out) == 32 else None, final.step, seconds, final.hash())


def exec_native(model: bytes, record: ExecRecord, reads: Sequence[bytes | None]) -> tuple[int, bytes | None]:
    """The node guest's verdict computed natively (`mlkit_exec`): (exit code, computed value or None)."""
    return native.exec_record(model, record.encode(), reads)


def slot_reads(record: ExecRecord, slots: Mapping[int, bytes | None]) -> list[bytes | None]:
    """The record's reads' bytes, in its order, from a slot -> bytes mapping."""
    return [slots.get(s) for s, _ in record.reads]
