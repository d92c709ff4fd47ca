"""Trace access: run a program once on the fast executor and answer "the state at step n" quickly.

The forward run keeps a snapshot about every `interval` steps (and at least every `max_seconds` of
running): the registers, and the pages written since the previous snapshot whose contents changed (copied
once: memory grows with pages written, not with snapshots x memory size). A query restores the nearest
snapshot at or before n into the executor (rewriting only the pages that differ from what it holds now,
so the cached page roots of all other pages stay valid) and runs exactly to n.

    trace = Trace(load_elf("prog.elf"), oracle)
    trace.steps, trace.final_state              # the whole run
    trace.state_hash_at(n)                      # what a bisection compares
    state, memory = trace.state_at(n)           # a standalone copy
    trace.proof_at(n)                           # the one-step witness of step n -> n + 1
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mipsvm.elf import Program
from mipsvm.fast import FastVM
from mipsvm.memory import Memory
from mipsvm.state import State
from mipsvm.step import Oracle
from mipsvm.witness import StepProof, make_proof

DEFAULT_INTERVAL = 1 << 22  # steps between snapshots (~20-40 ms of fast-path running)
DEFAULT_MAX_SECONDS = 0.1  # wall time between snapshots at most (syscall-heavy code runs slower)
CHUNK = 1 << 18  # the forward run checks the clock at least this often (in steps)


@dataclass
class Snapshot:
    state: State  # registers and the other fields; mem_root not set
    pages: dict[int, bytes] = field(default_factory=dict)  # page -> contents, for pages changed since


class Trace:
    """One run of a program, kept as snapshots for random access (see the module docstring)."""

    def __init__(
        self,
        program: Program,
        oracle: Oracle,
        *,
        max_steps: int | None = None,
        interval: int = DEFAULT_INTERVAL,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.oracle = oracle
        self.vm = FastVM(program, oracle)
        self.snapshots: list[Snapshot] = []
        self._steps: list[int] = []  # snapshot steps, for bisect
        self._history: dict[int, list[int]] = {}  # page -> indices of the snapshots that hold it
        self._record(program.state.copy(), {p: bytes(b) for p, b in program.memory.pages.items()})
        self.vm.take_written()
        self._run(max_steps, interval, max_seconds, progress)
        self.final_state = self.vm.state()
        self.steps = self.final_state.step
        self.stdout = bytes(self.vm.stdout)
        self.stderr = bytes(self.vm.stderr)
        self.output = bytes(self.vm.output)
        self._at = len(self.snapshots) - 1  # the snapshot the executor's memory is based on
        self._dirty: set[int] = set()  # pages the executor wrote since it was at snapshot self._at

    # -- the forward run -----------------------------------------------------------------------------------
    def _run(
        self, max_steps: int | None, interval: int, max_seconds: float, progress: Callable[[int], None] | None
    ) -> None:
        vm = self.vm
        limit = (1 << 64) - 1 if max_steps is None else vm.step + max_steps
        last_step, last_time = vm.step, time.monotonic()
        top = max(1, min(CHUNK, interval))
        chunk = top
        while not vm.exited and vm.step < limit:
            t = time.monotonic()
            vm.run_to(min(vm.step + chunk, limit))
            now = time.monotonic()
            # chunks of about max_seconds / 8, so slow (syscall-heavy) stretches still get snapshots
            chunk = max(1024, chunk // 2) if now - t > max_seconds / 4 else min(top, chunk * 2)
            if progress is not None:
                progress(vm.step)
            if vm.step - last_step >= interval or now - last_time >= max_seconds or vm.exited:
                self._snapshot()
                last_step, last_time = vm.step, time.monotonic()
        if self._steps[-1] != vm.step:
            self._snapshot()

    def _snapshot(self) -> None:
        pages = {}
        for p in sorted(self.vm.take_written()):
            data = bytes(self.vm.guest.page(p))
            if data != self._page_at(p, len(self.snapshots) - 1):
                pages[p] = data
        self._record(self.vm.cpu_state(), pages)

    def _record(self, state: State, pages: dict[int, bytes]) -> None:
        index = len(self.snapshots)
        self.snapshots.append(Snapshot(state, pages))
        self._steps.append(state.step)
        for p in pages:
            self._history.setdefault(p, []).append(index)

    def _page_at(self, p: int, index: int) -> bytes | None:
        """The contents of page p at snapshot `index` (None: zero, never written)."""
        hist = self._history.get(p)
        if not hist:
            return None
        k = bisect.bisect_right(hist, index) - 1
        return self.snapshots[hist[k]].pages[p] if k >= 0 else None

    # -- queries -------------------------------------------------------------------------------------------
    def _goto(self, n: int) -> FastVM:
        """Put the executor at step min(n, steps) and return it."""
        vm = self.vm
        if n > self.steps and not self.final_state.exited:
            raise ValueError(f"step {n} is past the traced {self.steps} steps of an unfinished run")
        n = max(0, min(n, self.steps))  # exited states are fixed points
        i = bisect.bisect_right(self._steps, n) - 1
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

    def close(self) -> None:
        self.vm.close()
