"""An agent's game traces in a process of their own, as op-challenger keeps its trace providers apart.

Building the trace of a big model takes minutes, and the fast VM's SIGSEGV handler must live in a process's
main thread: so an agent with worker processes keeps its `rollml.core.execution.GameTrace`s in a trace
process (`TraceHost`) and plays them through `RemoteTrace`, which answers from what arrived and raises
`TraceBusy` for the rest: the tick never waits for a VM, every other game, job and deadline goes on.

The process answers the most urgent query first: every query carries the deadline of the game that asked
(`RemoteTrace.deadline`), and the process serves the earliest deadline among everything queued (opening and
closing traces first). Each answer carries the seconds it took, so the agent knows how loaded its trace
process is (`TraceHost.load`) and can warn before it runs out of time.
"""

from __future__ import annotations

import contextlib
import heapq
import multiprocessing
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from mipsvm.witness import StepProof
from rollml.core.execution import GameTrace


def exit_with_parent() -> None:
    """Make this (worker) process die with its parent (Linux `PR_SET_PDEATHSIG`; a no-op elsewhere).

    A worker blocks on its queue forever once its parent is gone: after a kill -9 of an agent, every restart
    would leave its workers (and their VM mappings) behind.
    """
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class TraceBusy(Exception):
    """The answer is being computed in the trace process: ask again later (the agent waits a tick)."""


Request = tuple[int, int, str, Any, Any]  # (priority, ticket, operation, trace key, argument)
Answer = tuple[int, bool, Any, float]  # (ticket, ok, value or "ErrorType: message", seconds)
URGENT = -1  # the priority of opening and closing a trace: before any query


def serve_traces(requests: Queue[Request | None], answers: Queue[Answer]) -> None:
    """The trace process's loop: own the `GameTrace`s of an agent's games and answer queries, the earliest
    deadline first, until a None request (or the agent's death). A process of its own, because the fast VM's
    SIGSEGV handler must live in a process's main thread and a trace of a big model takes minutes to build.
    """
    exit_with_parent()
    traces: dict[Any, GameTrace] = {}
    queued: list[Request] = []
    try:
        while True:
            if not queued:  # nothing to do: wait for a request
                request = requests.get()
                if request is None:
                    return
                heapq.heappush(queued, request)
            while True:  # take in everything that arrived meanwhile, then serve the most urgent
                try:
                    request = requests.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    return
                heapq.heappush(queued, request)
            _, ticket, op, key, arg = heapq.heappop(queued)
            t0 = time.perf_counter()
            try:
                value, ok = _trace_answer(traces, op, key, arg), True
            except Exception as exc:
                value, ok = f"{type(exc).__name__}: {exc}", False
            answers.put((ticket, ok, value, time.perf_counter() - t0))
    finally:
        for trace in traces.values():
            trace.close()


def _trace_answer(traces: dict[Any, GameTrace], op: str, key: Any, arg: Any) -> Any:
    if op == "open":
        traces[key] = arg
        return None
    if op == "close":
        trace = traces.pop(key, None)
        if trace is not None:
            trace.close()
        return None
    trace = traces[key]
    if op == "hashes":
        return {n: trace.hash_at(n) for n in arg}
    if op == "proof":
        return trace.proof_at(arg)
    if op == "preimage":
        return trace.preimage(arg)
    if op == "claim":
        return trace.claim_steps, trace.claim_hash
    raise ValueError(f"unknown trace query {op!r}")


class TraceHost:
    """The agent's end of its trace process: queries go out without blocking (a queue's feeder thread writes
    them, so even a model-sized `open` never waits for a busy process) and answers are collected each time
    someone looks. The process starts on the first query and again after it died (`generation` counts its
    lives, so traces know to reopen)."""

    LOAD_WINDOW = 60.0  # seconds of history behind `load()`

    def __init__(self) -> None:
        self.generation = 0
        self._process: BaseProcess | None = None
        self._requests: Queue[Request | None] | None = None
        self._answers: Queue[Answer] | None = None
        self._waiting: dict[int, tuple[float, Callable[[bool, Any], None]]] = {}
        self._next = 0
        self._served: deque[tuple[float, float]] = deque()  # (when answered, seconds of work)
        self.busy_seconds = 0.0  # work the process did, in all

    def start(self) -> int:
        """Start the process unless it runs; its generation (queries to an older one were lost)."""
        self._ensure_running()
        return self.generation

    def ask(
        self, op: str, key: Any, arg: Any, on_answer: Callable[[bool, Any], None], priority: int = URGENT
    ) -> None:
        """Queue a query (lower `priority` first: a game deadline, or URGENT); `on_answer(ok, value)` runs in
        a later `collect()`."""
        self._ensure_running()
        assert self._requests is not None
        self._next += 1
        self._waiting[self._next] = (time.monotonic(), on_answer)
        self._requests.put((priority, self._next, op, key, arg))

    def collect(self) -> None:
        """Deliver every answer that arrived (never blocks); notice a dead process."""
        if self._answers is None:
            return
        while True:
            try:
                ticket, ok, value, seconds = self._answers.get_nowait()
            except queue.Empty:
                break
            self.busy_seconds += seconds
            self._served.append((time.monotonic(), seconds))
            waiting = self._waiting.pop(ticket, None)
            if waiting is not None:
                waiting[1](ok, value)
        if self._waiting and self._process is not None and not self._process.is_alive():
            self._lost()

    def pending(self) -> int:
        """Queries not answered yet."""
        return len(self._waiting)

    def oldest_wait(self) -> float:
        """Seconds the oldest unanswered query has been waiting (0 when none)."""
        if not self._waiting:
            return 0.0
        return time.monotonic() - min(asked for asked, _ in self._waiting.values())

    def load(self) -> float:
        """The share of the last LOAD_WINDOW seconds the process spent working (1.0: saturated)."""
        now = time.monotonic()
        while self._served and self._served[0][0] < now - self.LOAD_WINDOW:
            self._served.popleft()
        return min(1.0, sum(seconds for _, seconds in self._served) / self.LOAD_WINDOW)

    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _ensure_running(self) -> None:
        if self.running():
            return
        if self._process is not None:
            self._lost()
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked VM mappings
        self._requests, self._answers = context.Queue(), context.Queue()
        self._requests.cancel_join_thread()  # never wait at exit to hand queries to a process that is gone
        self._process = context.Process(
            target=serve_traces, args=(self._requests, self._answers), name="rollml-traces", daemon=True
        )
        self._process.start()

    def _lost(self) -> None:
        """The process died (killed, out of memory): its answers will never come; traces reopen."""
        self._waiting.clear()
        self.generation += 1
        self._process = self._requests = self._answers = None

    def close(self) -> None:
        """Stop the process (it closes its traces), killing it if it does not exit promptly."""
        process, requests = self._process, self._requests
        self._lost()  # a later query starts a new process, and traces reopen there
        if process is None or requests is None:
            return
        with contextlib.suppress(Exception):
            requests.put(None)
        process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join()


class RemoteTrace(GameTrace):
    """A `GameTrace` that lives in the agent's trace process, with the same queries: an answer that arrived
    is returned (and kept: traces are deterministic); one that did not is asked for and `TraceBusy` is
    raised, so the agent's tick goes on and the solver runs again on a later tick. `prefetch` asks for many
    hashes in one query (a round's points). Only the queries are remote: the runs (`base`, `branch`) would
    build here, and nothing in the agents uses them."""

    def __init__(self, host: TraceHost, key: bytes, trace: GameTrace) -> None:
        spec = (trace.model, trace.payload, trace.claimed_output_hash, trace.tamper, trace.forge)
        super().__init__(*spec, trace.max_steps, trace.steps_hint)
        self.host, self.key = host, key
        self.deadline = URGENT  # the deadline of the game asking now: the priority of its queries
        self.spec = GameTrace(*spec, trace.max_steps, trace.steps_hint)  # what the trace process builds
        self._generation = -1  # the host generation the trace was opened in
        self._hashes: dict[int, bytes] = {}
        self._proofs: dict[int, StepProof] = {}
        self._preimages: dict[bytes, bytes] = {}
        self._remote_claim: tuple[int, bytes] | None = None
        self._asked: set[tuple[str, Any]] = set()
        self._errors: list[str] = []

    # -- the GameTrace queries -------------------------------------------------------------------------------
    def hash_at(self, n: int) -> bytes:
        self._sync()
        if n not in self._hashes:
            self.prefetch([n])
            raise TraceBusy(f"hash at {n}")
        return self._hashes[n]

    def prefetch(self, points: Iterable[int]) -> None:
        """Ask for the hashes at `points` that are neither known nor asked for, in one query."""
        self._sync()
        missing = sorted({n for n in points if n not in self._hashes and ("hash", n) not in self._asked})
        if missing:
            self._ask("hashes", missing, [("hash", n) for n in missing], self._hashes.update)

    def proof_at(self, n: int) -> StepProof:
        self._sync()
        if n not in self._proofs:
            self._ask_once("proof", n, lambda proof: self._proofs.__setitem__(n, proof))
            raise TraceBusy(f"proof at {n}")
        return self._proofs[n]

    def preimage(self, key: bytes) -> bytes:
        self._sync()
        if key not in self._preimages:
            self._ask_once("preimage", key, lambda data: self._preimages.__setitem__(key, data))
            raise TraceBusy(f"preimage 0x{key.hex()}")
        return self._preimages[key]

    @property
    def claim_steps(self) -> int:
        return self._claimed()[0]

    @property
    def claim_hash(self) -> bytes:
        return self._claimed()[1]

    def _claimed(self) -> tuple[int, bytes]:
        self._sync()
        if self._remote_claim is None:
            self._ask_once("claim", None, lambda claim: setattr(self, "_remote_claim", tuple(claim)))
            raise TraceBusy("claim")
        return self._remote_claim

    def close(self) -> None:
        """Free the trace in the trace process (the answers kept here stay valid)."""
        if self._generation == self.host.generation and self.host.running():  # never start one to close
            self.host.ask("close", self.key, None, lambda ok, value: None)
        self._generation = -1

    # -- plumbing --------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Collect the answers that arrived; re-raise a failed query's error (once)."""
        self.host.collect()
        if self._generation != self.host.generation:
            self._asked.clear()  # a new process: what the old one was asked is lost
        if self._errors:
            raise RuntimeError(f"trace process: {self._errors.pop(0)}")

    def _ask_once(self, op: str, arg: Any, store: Callable[[Any], None]) -> None:
        if (op, arg) not in self._asked:
            self._ask(op, arg, [(op, arg)], store)

    def _ask(self, op: str, arg: Any, tags: list[tuple[str, Any]], store: Callable[[Any], None]) -> None:
        if self._generation != self.host.start():  # a new process (or the first): give it the trace
            self.host.ask("open", self.key, self.spec, lambda ok, value: None)
            self._generation = self.host.generation
        self._asked.update(tags)

        def answered(ok: bool, value: Any) -> None:
            self._asked.difference_update(tags)
            if ok:
                store(value)
            else:
                self._errors.append(str(value))

        self.host.ask(op, self.key, arg, answered, self.deadline)
