"""Trace access: run a program once on the fast executor and answer "the state at step n" quickly.

The forward run keeps a snapshot about every `interval` steps (and at least every `max_seconds` of
running): the registers, and the pages written since the previous snapshot whose contents changed (copied
once: memory grows with pages written, not with snapshots x memory size). A query restores the nearest
snapshot at or before n into the executor (rewriting only the pages that differ from what it holds now,
so the cached page roots of all other pages stay valid) and runs exactly to n.

Snapshot memory is bounded: when the run has more than `max_snapshots` snapshots, or they hold more than
`max_bytes` of pages (and more than MIN_SNAPSHOTS), every other snapshot is dropped (its pages move into the
next one) and the interval and the time between snapshots double. A run of any length so ends with
max_snapshots / 2 .. max_snapshots snapshots, and a query runs at most about 2 T / max_snapshots steps.
What the snapshots hold: every page the run ever wrote, once (its contents when first written; at least
the program's memory footprint), plus, per snapshot, the pages rewritten in its interval
(`snapshot_bytes`, `Snapshot.nbytes`).

    trace = Trace(load_elf("prog.elf"), oracle)
    trace.steps, trace.final_state              # the whole run
    trace.state_hash_at(n)                      # what a bisection compares
    state, memory = trace.state_at(n)           # a standalone copy
    trace.proof_at(n)                           # the one-step witness of step n -> n + 1

An executor is a 4 GiB reservation and a native context (a process holds at most 64), so traces share a
budget: at most `LIVE_EXECUTORS.limit` traces of a process keep theirs between queries, the least recently
used ones give theirs back (`release`), and a query on a trace without one rebuilds it from its nearest
snapshot. A trace's memory is its snapshots; an agent can hold many traces, few executors.

One run per party: the run that produces or checks a claim can be this trace's forward run, kept as data
(`Trace.recording()`, a `Recording`) and turned back into a trace without running again
(`Trace.from_recording`), also in another process: `Recording.save/load` and `RecordingStore` (a directory
of recordings by key, bounded in bytes).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mipsvm.constants import PAGE_SIZE
from mipsvm.elf import Program
from mipsvm.fast import FastVM
from mipsvm.hashing import keccak256_stream
from mipsvm.memory import Memory
from mipsvm.native import cache_root
from mipsvm.state import STATE_SIZE, State, StateError
from mipsvm.step import Oracle
from mipsvm.witness import StepProof, make_proof

DEFAULT_INTERVAL = 1 << 22  # steps between snapshots (~10-40 ms of fast-path running)
DEFAULT_MAX_SECONDS = 0.1  # wall time between snapshots at most (syscall-heavy code runs slower)
MAX_SNAPSHOTS = 256  # snapshots of a trace at most (then every other one is dropped)
MAX_BYTES = 1 << 30  # page bytes of the snapshots at most (then too, while more than MIN_SNAPSHOTS)
MIN_SNAPSHOTS = 16
CHUNK = 1 << 20  # the forward run checks the clock at least this often (in steps)
STORE_BYTES = 4 << 30  # the default RecordingStore keeps at most this many bytes of recordings


class ExecutorBudget:
    """The traces of a process that hold a live executor, least recently used first: at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._live: OrderedDict[int, Trace] = OrderedDict()

    def use(self, trace: Trace) -> None:
        """`trace` holds an executor now: mark it most recent; release the oldest ones over the limit."""
        self._live[id(trace)] = trace
        self._live.move_to_end(id(trace))
        while len(self._live) > max(1, self.limit):
            _, oldest = self._live.popitem(last=False)
            oldest.release()

    def forget(self, trace: Trace) -> None:
        self._live.pop(id(trace), None)

    def __len__(self) -> int:
        return len(self._live)


LIVE_EXECUTORS = ExecutorBudget(limit=16)


@dataclass
class Snapshot:
    state: State  # registers and the other fields; mem_root not set
    pages: dict[int, bytes] = field(default_factory=dict)  # page -> contents, for pages changed since
    outputs: tuple[int, int, int] = (0, 0, 0)  # bytes written to stdout, stderr and the output by then

    @property
    def nbytes(self) -> int:
        """Bytes of page contents this snapshot holds."""
        return len(self.pages) * PAGE_SIZE


class Trace:
    """One run of a program, kept as snapshots for random access (see the module docstring)."""

    _vm: FastVM | None  # the executor, while the trace holds one (see LIVE_EXECUTORS)

    def __init__(
        self,
        program: Program,
        oracle: Oracle,
        *,
        max_steps: int | None = None,
        interval: int = DEFAULT_INTERVAL,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_snapshots: int = MAX_SNAPSHOTS,
        max_bytes: int = MAX_BYTES,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._setup(program, oracle, interval, max_snapshots, max_bytes)
        vm = self._vm = FastVM(program, oracle)
        self._record(program.state.copy(), {p: bytes(b) for p, b in program.memory.pages.items()})
        vm.take_written()
        self._run(vm, max_steps, max_seconds, progress)
        self.final_state = vm.state()
        self.steps = self.final_state.step
        self.stdout = bytes(vm.stdout)
        self.stderr = bytes(vm.stderr)
        self.output = bytes(vm.output)
        self._at = len(self.snapshots) - 1  # the snapshot the executor's memory is based on
        LIVE_EXECUTORS.use(self)

    def _setup(
        self, program: Program, oracle: Oracle, interval: int, max_snapshots: int, max_bytes: int
    ) -> None:
        self.oracle = oracle
        self._text_ranges, self._entry = list(program.text_ranges), program.entry
        self._vm = None
        self._at = 0  # the snapshot the executor's memory is based on
        self._dirty: set[int] = set()  # pages the executor wrote since it was at snapshot self._at
        self.interval = max(1, interval)
        self.max_snapshots = max(2, max_snapshots)
        self.max_bytes = max_bytes
        self.snapshots: list[Snapshot] = []
        self._steps: list[int] = []  # snapshot steps, for bisect
        self._history: dict[int, list[int]] = {}  # page -> indices of the snapshots that hold it
        self._bytes = 0

    # -- the forward run -----------------------------------------------------------------------------------
    def _run(
        self, vm: FastVM, max_steps: int | None, max_seconds: float, progress: Callable[[int], None] | None
    ) -> None:
        limit = (1 << 64) - 1 if max_steps is None else vm.step + max_steps
        last_step, last_time = vm.step, time.monotonic()
        self._max_seconds = max_seconds
        chunk = max(1, min(CHUNK, self.interval))
        while not vm.exited and vm.step < limit:
            t = time.monotonic()
            top = max(1, min(CHUNK, self.interval))
            target = min(vm.step + chunk, last_step + self.interval, limit)
            # a snapshot may come a few steps early: no exact stop there (but at `limit`, and when the
            # interval is tiny), which saves the reference steps of the last translation block
            slack = 0 if target == limit or self.interval <= 4096 else 512
            vm.run_to(target, exact=slack == 0)
            now = time.monotonic()
            # chunks of about max_seconds / 8, so slow (syscall-heavy) stretches still get snapshots
            chunk = max(1024, chunk // 2) if now - t > self._max_seconds / 4 else min(top, chunk * 2)
            if progress is not None:
                progress(vm.step)
            due = vm.step >= last_step + self.interval - slack or now - last_time >= self._max_seconds
            if due or vm.exited:
                self._snapshot(vm)
                last_step, last_time = vm.step, time.monotonic()
        if self._steps[-1] != vm.step:
            self._snapshot(vm)

    def _snapshot(self, vm: FastVM) -> None:
        pages = {}
        for p in sorted(vm.take_written()):
            data = bytes(vm.guest.page(p))
            if data != self._page_at(p, len(self.snapshots) - 1):
                pages[p] = data
        self._record(vm.cpu_state(), pages, (len(vm.stdout), len(vm.stderr), len(vm.output)))
        if len(self.snapshots) > self.max_snapshots or (
            self._bytes > self.max_bytes and len(self.snapshots) > MIN_SNAPSHOTS
        ):
            self._thin()

    def _record(
        self, state: State, pages: dict[int, bytes], outputs: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        index = len(self.snapshots)
        snapshot = Snapshot(state, pages, outputs)
        self.snapshots.append(snapshot)
        self._steps.append(state.step)
        self._bytes += snapshot.nbytes
        for p in pages:
            self._history.setdefault(p, []).append(index)

    def _thin(self) -> None:
        """Drop every other snapshot (never the first or the last), moving its pages into the next kept
        one, and double the snapshot spacing."""
        old, last = self.snapshots, len(self.snapshots) - 1
        self.snapshots, self._steps, self._history, self._bytes = [], [], {}, 0
        carry: dict[int, bytes] = {}
        for i, snapshot in enumerate(old):
            if i % 2 and i != last:
                carry.update(snapshot.pages)  # unchanged until the next kept snapshot unless it holds them
                continue
            self._record(snapshot.state, {**carry, **snapshot.pages}, snapshot.outputs)
            carry = {}
        self.interval *= 2
        self._max_seconds *= 2

    def _page_at(self, p: int, index: int) -> bytes | None:
        """The contents of page p at snapshot `index` (None: zero, never written)."""
        hist = self._history.get(p)
        if not hist:
            return None
        k = bisect.bisect_right(hist, index) - 1
        return self.snapshots[hist[k]].pages[p] if k >= 0 else None

    # -- recordings ------------------------------------------------------------------------------------------
    def recording(self) -> Recording:
        """This trace's run as data (the snapshots are shared, not copied: do not change them)."""
        return Recording(
            list(self.snapshots),
            self.final_state.copy(),
            self.stdout,
            self.stderr,
            self.output,
            self.interval,
        )

    @classmethod
    def from_recording(
        cls, program: Program, oracle: Oracle, recording: Recording, *, max_steps: int | None = None
    ) -> Trace:
        """The trace of a recorded run of `program` on `oracle`, cut at `max_steps` if the recording goes
        further; no run but, when cut, from the last snapshot before the cut to it (the executor is built
        by the first query, from the nearest snapshot). ValueError if the
        recording ends before `max_steps` (or max_steps is None) without the program having exited: that
        run is not recorded. The caller vouches that the recording is of this program on this oracle
        (`Recording.load` checks a key for that)."""
        end = recording.final_state.step
        if not recording.final_state.exited and (max_steps is None or max_steps > end):
            raise ValueError(f"the recording stops at step {end} unfinished; the trace needs {max_steps}")
        if not recording.snapshots or recording.snapshots[0].state.step != program.state.step:
            raise ValueError("the recording does not start at the program's initial state")
        trace = cls.__new__(cls)
        trace._setup(program, oracle, recording.interval, MAX_SNAPSHOTS, MAX_BYTES)
        cut = end if max_steps is None else min(end, max_steps)
        for snapshot in recording.snapshots:
            if snapshot.state.step <= cut:
                trace._record(snapshot.state, snapshot.pages, snapshot.outputs)
        trace.final_state, trace.steps = recording.final_state.copy(), end
        trace.stdout, trace.stderr, trace.output = recording.stdout, recording.stderr, recording.output
        if cut < end:  # the state at the cut, from the last snapshot before it
            last = trace.snapshots[-1]
            vm = trace._goto(last.state.step)
            del vm.stdout[:], vm.stderr[:], vm.output[:]
            vm = trace._goto(cut)
            trace.stdout = recording.stdout[: last.outputs[0]] + bytes(vm.stdout)
            trace.stderr = recording.stderr[: last.outputs[1]] + bytes(vm.stderr)
            trace.output = recording.output[: last.outputs[2]] + bytes(vm.output)
            trace.final_state, trace.steps = vm.state(), cut
            if last.state.step < cut:
                pages = {p: bytes(vm.guest.page(p)) for p in sorted(trace._dirty)}
                trace._record(
                    vm.cpu_state(), pages, (len(trace.stdout), len(trace.stderr), len(trace.output))
                )
                trace._at, trace._dirty = len(trace.snapshots) - 1, set()
        return trace

    # -- the executor --------------------------------------------------------------------------------------
    def release(self) -> None:
        """Give the executor back (the snapshots stay; the next query rebuilds it)."""
        LIVE_EXECUTORS.forget(self)
        if self._vm is not None:
            self._vm.close()
            self._vm = None

    @property
    def live(self) -> bool:
        """Does the trace hold an executor now?"""
        return self._vm is not None

    def _executor(self, i: int) -> FastVM:
        """The executor, rebuilt at snapshot `i` if it was released; marked most recently used."""
        if self._vm is None:
            memory = Memory()
            for p in self._history:
                data = self._page_at(p, i)
                if data is not None:
                    memory.set_page(p, data)
            program = Program(self.snapshots[i].state.copy(), memory, self._text_ranges, self._entry)
            self._vm = FastVM(program, self.oracle)
            self._vm.take_written()
            self._at, self._dirty = i, set()
        LIVE_EXECUTORS.use(self)
        return self._vm

    # -- queries -------------------------------------------------------------------------------------------
    def _goto(self, n: int) -> FastVM:
        """Put the executor at step min(n, steps) and return it."""
        if n > self.steps and not self.final_state.exited:
            raise ValueError(f"step {n} is past the traced {self.steps} steps of an unfinished run")
        n = max(0, min(n, self.steps))  # exited states are fixed points
        i = bisect.bisect_right(self._steps, n) - 1
        vm = self._executor(i)
        self._dirty |= vm.take_written()
        if i == self._at and vm.step <= n and not vm.exited:
            vm.run_to(n)  # forward within the same interval: no restore
            return vm
        lo, hi = sorted((i, self._at))
        changed = set(self._dirty)
        for j in range(lo + 1, hi + 1):
            changed.update(self.snapshots[j].pages)
        vm.write_pages({p: self._page_at(p, i) for p in changed})
        vm.take_written()
        vm.set_state(self.snapshots[i].state)
        self._at, self._dirty = i, set()
        vm.run_to(n)
        self._dirty |= vm.take_written()
        return vm

    def state_hash_at(self, n: int) -> bytes:
        """The state hash after n steps (the final state's for n past the exit: exited states are fixed)."""
        return self._goto(n).state_hash()

    def state_at(self, n: int) -> tuple[State, Memory]:
        """The state after n steps (mem_root set) and a standalone copy of its memory."""
        vm = self._goto(n)
        return vm.state(), vm.export_memory()

    def proof_at(self, n: int) -> StepProof:
        """The one-step witness of the step from state n to state n + 1."""
        vm = self._goto(n)
        return make_proof(vm.state(), vm.memory, self.oracle)

    def page_count(self) -> int:
        """Pages held by the snapshots (the trace's memory, in 4 KiB units)."""
        return sum(len(s.pages) for s in self.snapshots)

    def snapshot_bytes(self) -> int:
        """Bytes of page contents the snapshots hold."""
        return self._bytes

    def close(self) -> None:
        self.release()


# --------------------------------------------------------------------------------------------------------
# Recordings
# --------------------------------------------------------------------------------------------------------
MAGIC = b"rollml-recording 1\n"
_U32, _U64 = struct.Struct(">I"), struct.Struct(">Q")


class RecordingError(ValueError):
    """A recording file that is damaged, truncated or of another run."""


@dataclass
class Recording:
    """A traced run as data: its snapshots, end state (mem_root set) and outputs; see `Trace.recording`."""

    snapshots: list[Snapshot]
    final_state: State
    stdout: bytes
    stderr: bytes
    output: bytes
    interval: int

    @property
    def steps(self) -> int:
        return self.final_state.step

    @property
    def nbytes(self) -> int:
        """Bytes of page contents in the snapshots (a saved file is that plus ~0.1%)."""
        return sum(s.nbytes for s in self.snapshots)

    def save(self, path: Path, key: bytes) -> None:
        """Write the recording to `path` (atomically: a reader sees the old file or the whole new one),
        tagged with `key` (32 bytes: what the run was, see RecordingStore) and a keccak256 checksum."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                out = _HashingWriter(f)
                out.write(MAGIC + key + _U64.pack(self.interval) + self.final_state.encode())
                for data in (self.stdout, self.stderr, self.output):
                    out.write(_U64.pack(len(data)) + data)
                out.write(_U32.pack(len(self.snapshots)))
                for s in self.snapshots:
                    out.write(s.state.encode() + b"".join(_U64.pack(n) for n in s.outputs))
                    out.write(_U32.pack(len(s.pages)))
                    for p, data in sorted(s.pages.items()):
                        out.write(_U32.pack(p) + data)
                f.write(out.digest())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path, key: bytes) -> Recording:
        """Read a recording saved with `key`; RecordingError if it is damaged or saved with another key
        (OSError if it cannot be read)."""
        with path.open("rb") as f:
            r = _HashingReader(f)
            try:
                if r.read(len(MAGIC)) != MAGIC:
                    raise RecordingError(f"{path}: not a recording")
                if r.read(32) != key:
                    raise RecordingError(f"{path}: a recording of another run")
                interval = r.u64()
                final = State.decode(r.read(STATE_SIZE))
                stdout, stderr, output = (r.read(r.u64()) for _ in range(3))
                snapshots = []
                for _ in range(r.u32()):
                    state = State.decode(r.read(STATE_SIZE))
                    outputs = (r.u64(), r.u64(), r.u64())
                    pages = {}
                    for _ in range(r.u32()):
                        page = r.u32()
                        pages[page] = r.read(PAGE_SIZE)
                    snapshots.append(Snapshot(state, pages, outputs))
            except StateError as exc:
                raise RecordingError(f"{path}: {exc}") from None
            if f.read(32) != r.digest() or f.read(1):
                raise RecordingError(f"{path}: damaged (checksum)")
        return cls(snapshots, final, stdout, stderr, output, interval)


class _HashingWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f, self.h = f, keccak256_stream()

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.h.update(data)

    def digest(self) -> bytes:
        return self.h.digest()


class _HashingReader:
    def __init__(self, f: BinaryIO) -> None:
        self.f, self.h = f, keccak256_stream()

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise RecordingError("truncated recording")
        self.h.update(data)
        return data

    def u32(self) -> int:
        return int(_U32.unpack(self.read(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.read(8))[0])

    def digest(self) -> bytes:
        return self.h.digest()


class RecordingStore:
    """Recordings on disk by key (32 bytes naming a run: program and oracle), at most `max_bytes` of files:
    putting one removes the least recently used others beyond that. Safe across processes (files are
    replaced atomically; a damaged or vanished file reads as absent)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def path(self, key: bytes) -> Path:
        return self.directory / f"{key.hex()}.rec"

    def put(self, key: bytes, recording: Recording) -> None:
        recording.save(self.path(key), key)
        self._evict(keep=self.path(key))

    def get(self, key: bytes) -> Recording | None:
        path = self.path(key)
        try:
            recording = Recording.load(path, key)
        except (OSError, RecordingError):
            return None
        with contextlib.suppress(OSError):
            path.touch()  # recently used
        return recording

    def _evict(self, keep: Path) -> None:
        files = []
        for path in self.directory.glob("*.rec"):
            with contextlib.suppress(OSError):
                st = path.stat()
                files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path != keep:
                with contextlib.suppress(OSError):
                    path.unlink()
                    total -= size


def default_store() -> RecordingStore:
    """The recordings of this machine: $ROLLML_CACHE/recordings (default ~/.cache/rollml/recordings), at
    most STORE_BYTES."""
    return RecordingStore(cache_root() / "recordings", STORE_BYTES)
