"""Running a request in the VM and answering trace queries, for honest and (tests, demo) dishonest parties.

A request is "model M on input X". The claim a prover posts binds an output to the guest's final state
(vm-spec section 9): the guest reads local 1 (model id), 2 (input id) and 3 (claimed output hash) and exits
VALID only if keccak256(output) equals local 3. So:

- `execute(model, payload)` is what a prover runs: the output natively first (fast), then the VM run that
  binds it (local 3 = keccak256(output)), giving the final state hash (VALID) and the step count T. It runs
  in a worker process (the fast VM keeps a SIGSEGV handler: a process's main thread only).
- `verify(model, payload, claim)` is what a challenger runs on a posted result: natively first (a wrong
  output hash is caught in milliseconds), else the VM run with local 3 = the claimed hash. A claim (hash h,
  steps n) is true iff the state after n steps has hash h: exited states are fixed points (vm-spec section
  2), so that is "h is the final state hash and n >= T".
- `GameTrace` is what a party plays in a game: the state hashes (and one-step proofs) of the run for *this
  model, this input, this claimed output hash*, the game's local data. For a claim with a wrong output hash
  that run exits INVALID, which is exactly what the honest side must show; the honest output plays no part.
- `TraceHost` and `RemoteTrace` keep an agent's game traces in a process of its own (building one for a big
  model takes minutes): queries never block the agent's tick, an answer not there yet raises `TraceBusy`.

Dishonest parties (`Tamper`) tamper for real inside that run, so a bisection narrows to the tampered step:
their hash at n is the honest one for n < s and that of a genuinely tampered state (a register or memory
word flipped at step s, then run on) for n >= s. A dishonest prover also forges its final claim: the state
at its claimed step count with `exited = 1, exitCode = 0` (a well-formed state no run reaches).
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import queue
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from mipsvm.constants import KEY_TYPE_KECCAK, Status
from mipsvm.elf import Program, load_elf
from mipsvm.fast import FastVM
from mipsvm.hashing import keccak256
from mipsvm.memory import Memory
from mipsvm.preimage import PreimageOracle, PreimageStore, put_blob
from mipsvm.state import State
from mipsvm.trace import Trace
from mipsvm.witness import StepProof
from mlkit.cli import guest_oracle

MIN_SNAPSHOT_INTERVAL = 1 << 16  # steps between trace snapshots, at least
MAX_SNAPSHOT_INTERVAL = 1 << 22  # and at most (mipsvm.trace's default)
SNAPSHOTS_PER_TRACE = 32  # about this many snapshots per trace: a hash query runs at most T / 32 steps
TAMPER_REGISTERS = (*range(2, 26), 28, 29, 30, 31)  # every register but r0, at, k0 and k1


class ExecutionError(RuntimeError):
    """A request that cannot be served: the runtime rejects the model or input, or the VM disagrees."""


# --------------------------------------------------------------------------------------------------------
# The guest and its oracle
# --------------------------------------------------------------------------------------------------------
@functools.cache
def guest_program() -> Program:
    """The mlkit guest (mlkit/guest/mlkit.elf), loaded once per process. Never mutated: FastVM copies it."""
    from mlkit.build import GUEST_ELF

    return load_elf(GUEST_ELF)


def blob_ids(model: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """(model id, input id): the blob ids local 1 and 2 hold, as the registry and the market compute them."""
    store = PreimageStore()
    return put_blob(store, model), put_blob(store, payload)


def native_output(model: bytes, payload: bytes) -> bytes | None:
    """The output payload of the native runtime, or None when it rejects the model or input (the guest
    then exits PANIC: no VALID final state exists for any claim)."""
    from mlkit.cli import run_native
    from mlkit.native import MlkitError

    try:
        return run_native(model, payload).output
    except MlkitError:
        return None


@dataclass(frozen=True)
class VMRun:
    """The end of one VM run: final state hash (status in its top byte), steps, exit code, fd-3 output."""

    final_hash: bytes
    steps: int
    exit_code: int
    output: bytes
    seconds: float

    @property
    def status(self) -> Status:
        return Status(self.final_hash[0])


def run_guest(
    model: bytes, payload: bytes, claimed_output_hash: bytes, max_steps: int | None = None
) -> VMRun:
    """Run the guest to its exit (or `max_steps`) on the fast executor, without snapshots.

    Like `mlkit.cli.run_vm`, but returns the final state hash, which a claim needs.
    """
    oracle = guest_oracle(model, payload, claimed_output_hash)
    with FastVM(guest_program(), oracle) as vm:
        t0 = time.perf_counter()
        final = vm.run(max_steps)
        return VMRun(final.hash(), final.step, final.exit_code, bytes(vm.output), time.perf_counter() - t0)


def forged_valid_hash(state: State, steps: int) -> bytes:
    """The hash of `state` with its step counter set to `steps` and forced to exit 0 (status VALID)."""
    forged = state.copy()
    forged.exited, forged.exit_code, forged.step = True, 0, steps
    return forged.hash()


def wrong_output(output: bytes) -> bytes:
    """Another plausible output: for a classifier, the same logits with the top one moved to the next class
    (so the predicted digit changes); for anything undecodable, the last byte flipped."""
    import numpy as np

    from mlkit.io import PayloadError, decode_payload, encode_payload

    try:
        arrays = decode_payload(output)
    except PayloadError:
        arrays = []
    if arrays and arrays[0].size > 1:
        first = arrays[0].reshape(-1).copy()
        top = int(np.argmax(first))
        other = (top + 1) % first.size
        first[top], first[other] = first[other], first[top]
        if first[top] != first[other]:
            return encode_payload([first.reshape(arrays[0].shape), *arrays[1:]])
    return output[:-1] + bytes([output[-1] ^ 1]) if output else b"\x01"


# --------------------------------------------------------------------------------------------------------
# Tampering
# --------------------------------------------------------------------------------------------------------
class TamperKind(StrEnum):
    OUTPUT = "output"  # prover: a wrong output with a forged VALID final state
    REGISTER = "register"  # a register flipped at step s, then run on
    MEMORY = "memory"  # a memory word flipped at step s, then run on
    STEPS = "steps"  # prover: the true final state claimed at a wrong step count


@dataclass(frozen=True)
class Tamper:
    """How a dishonest party deviates (see the module docstring). Deterministic: the same tamper gives the
    same trace after a restart.

    `at` is the tampered step s (None: `fraction` of the run, within 1..T-1); `register`/`address` and
    `mask` say what is flipped (the default address is the word at the stack pointer); `delta` shifts the
    claimed step count of a STEPS tamper.
    """

    kind: TamperKind
    at: int | None = None
    fraction: float = 0.5
    register: int = 29
    address: int | None = None
    mask: int = 1 << 4
    delta: int = -1000

    def step_in(self, steps: int) -> int:
        """The tampered step s for a run of `steps` steps."""
        s = self.at if self.at is not None else int(steps * self.fraction)
        return max(1, min(s, max(1, steps - 1)))

    @classmethod
    def random(cls, kind: TamperKind, rng: random.Random) -> Tamper:
        """A random register or memory flip somewhere in the run (one random bit)."""
        return cls(
            kind,
            fraction=rng.uniform(0.01, 0.99),
            register=rng.choice(TAMPER_REGISTERS),
            mask=1 << rng.randrange(32),
        )

    def to_json(self) -> str:
        """A JSON object (kept with a job or game, so a restarted party plays the same trace)."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Tamper:
        data = json.loads(text)
        data["kind"] = TamperKind(data["kind"])
        return cls(**data)


def tamper_state(state: State, memory: Memory, tamper: Tamper) -> None:
    """Flip the register or the memory word of `tamper` in place (state.mem_root becomes stale)."""
    if tamper.kind == TamperKind.REGISTER:
        if not 1 <= tamper.register <= 31:
            raise ValueError(f"register r{tamper.register} cannot be tampered (r0 is always 0)")
        state.regs[tamper.register] ^= tamper.mask & 0xFFFFFFFF
    elif tamper.kind == TamperKind.MEMORY:
        addr = tamper.address if tamper.address is not None else state.regs[29]
        addr &= 0xFFFFFFFC
        memory.write_u32(addr, memory.read_u32(addr) ^ (tamper.mask & 0xFFFFFFFF))
    else:
        raise ValueError(f"a {tamper.kind} tamper changes the claim, not a state")


# --------------------------------------------------------------------------------------------------------
# What provers and challengers run
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """A result as posted: `postResult(requestId, output, final_hash, steps)`, or read back from the event
    (then only the output hash may be known)."""

    output_hash: bytes
    final_hash: bytes
    steps: int
    output: bytes | None = None


@dataclass(frozen=True)
class Execution:
    """What a prover learned from running a request: the honest run, and the claim it posts (the honest one
    unless it tampers). Small and picklable: it crosses the worker pool."""

    output: bytes  # the honest output
    final_hash: bytes  # the honest final state hash (VALID)
    steps: int  # the honest step count T
    claim: Claim  # what is posted
    native_seconds: float
    vm_seconds: float

    @property
    def honest(self) -> bool:
        return self.claim.final_hash == self.final_hash and self.claim.output == self.output


def execute(
    model: bytes, payload: bytes, tamper: Tamper | None = None, max_steps: int | None = None
) -> Execution:
    """Run a request for posting (see the module docstring); ExecutionError if it cannot be served."""
    t0 = time.perf_counter()
    output = native_output(model, payload)
    native_seconds = time.perf_counter() - t0
    if output is None:
        raise ExecutionError("the runtime rejects this model or input: the guest exits PANIC")
    run = run_guest(model, payload, keccak256(output), max_steps)
    if run.status != Status.VALID or run.output != output:
        raise ExecutionError(
            f"the VM run does not confirm the native output: status {run.status.name} after {run.steps} steps"
        )
    claim = Claim(keccak256(output), run.final_hash, run.steps, output)
    if tamper is not None:
        claim = tampered_claim(model, payload, output, tamper, run.steps, max_steps)
    return Execution(output, run.final_hash, run.steps, claim, native_seconds, run.seconds)


def tampered_claim(
    model: bytes, payload: bytes, output: bytes, tamper: Tamper, steps: int, max_steps: int | None
) -> Claim:
    """The claim a dishonest prover posts: its forged VALID final state at its claimed step count."""
    posted = wrong_output(output) if tamper.kind == TamperKind.OUTPUT else output
    cap = tamper_cap(steps, max_steps)
    with GameTrace(model, payload, keccak256(posted), tamper, forge=True, max_steps=cap) as trace:
        return Claim(keccak256(posted), trace.claim_hash, trace.claim_steps, posted)


def tamper_cap(honest_steps: int, max_steps: int | None = None) -> int:
    """How far a tampered run goes at most (it may never exit): twice the honest run, within `max_steps`."""
    cap = 2 * honest_steps + 1_000_000
    return cap if max_steps is None else min(cap, max_steps)


@dataclass(frozen=True)
class Verification:
    """A challenger's check of a posted claim. `correct` is the truth (up to native = VM, which is tested
    bit for bit); `reason` says why in one line."""

    correct: bool
    reason: str
    steps: int | None = None  # the true step count T, when the VM ran
    final_hash: bytes | None = None  # the true final state hash for the claimed output hash, when the VM ran


def verify(model: bytes, payload: bytes, claim: Claim, max_steps: int | None = None) -> Verification:
    """Is `claim` true for this request? Natively first, then the VM run for the claimed output hash."""
    output = native_output(model, payload)
    if output is None:
        return Verification(False, "the runtime rejects the model or input: no VALID final state exists")
    if keccak256(output) != claim.output_hash:
        return Verification(False, f"wrong output: keccak256 is 0x{keccak256(output).hex()}")
    run = run_guest(model, payload, claim.output_hash, max_steps)
    if run.status != Status.VALID:
        return Verification(
            False, f"the VM exits {run.status.name} for this output", run.steps, run.final_hash
        )
    if run.final_hash != claim.final_hash:
        return Verification(False, f"wrong final state: 0x{run.final_hash.hex()}", run.steps, run.final_hash)
    if claim.steps < run.steps:
        return Verification(
            False, f"wrong step count: the run exits after {run.steps}", run.steps, run.final_hash
        )
    return Verification(True, "output, final state and step count check out", run.steps, run.final_hash)


# --------------------------------------------------------------------------------------------------------
# Traces for games
# --------------------------------------------------------------------------------------------------------
def snapshot_interval(steps_hint: int | None) -> int:
    """Snapshot spacing for a run of about `steps_hint` steps: ~32 snapshots, within 64Ki..4Mi steps."""
    if not steps_hint:
        return MAX_SNAPSHOT_INTERVAL
    want = max(1, steps_hint // SNAPSHOTS_PER_TRACE)
    return max(MIN_SNAPSHOT_INTERVAL, min(MAX_SNAPSHOT_INTERVAL, 1 << (want - 1).bit_length()))


@dataclass
class GameTrace:
    """The state hashes one party plays in one game (see the module docstring); built lazily.

    `forge` marks a dishonest prover: its hash from `claim_steps` on is its forged VALID final state. The
    run is bounded by `max_steps` (a game never needs hashes past its `hi`; a tampered run may never exit).
    """

    model: bytes
    payload: bytes
    claimed_output_hash: bytes
    tamper: Tamper | None = None
    forge: bool = False
    max_steps: int | None = None
    steps_hint: int | None = None
    _oracle: PreimageOracle | None = field(default=None, init=False, repr=False)
    _base: Trace | None = field(default=None, init=False, repr=False)
    _branch: Trace | None = field(default=None, init=False, repr=False)
    _claim: tuple[int, bytes] | None = field(default=None, init=False, repr=False)
    _hashes: dict[int, bytes] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if (
            self.tamper is not None
            and not self.forge
            and self.tamper.kind in (TamperKind.OUTPUT, TamperKind.STEPS)
        ):
            raise ValueError(f"a {self.tamper.kind} tamper is a prover's: it changes the claim, not the run")

    def __enter__(self) -> GameTrace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the runs --------------------------------------------------------------------------------------------
    @property
    def base(self) -> Trace:
        """The run for this claim's local data (honest up to any tamper)."""
        if self._base is None:
            interval = snapshot_interval(self.steps_hint or self.max_steps)
            self._base = Trace(guest_program(), self.oracle, max_steps=self.max_steps, interval=interval)
        return self._base

    @property
    def oracle(self) -> PreimageOracle:
        """The preimages of this game: the model and input blobs, local data 1, 2, 3."""
        if self._oracle is None:
            self._oracle = guest_oracle(self.model, self.payload, self.claimed_output_hash)
        return self._oracle

    @property
    def tamper_step(self) -> int | None:
        """The step s from which the hashes are of tampered states (register and memory tampers)."""
        if self.tamper is None or self.tamper.kind not in (TamperKind.REGISTER, TamperKind.MEMORY):
            return None
        return self.tamper.step_in(self.base.steps)

    @property
    def branch(self) -> Trace:
        """The run on from the tampered state at step s."""
        s = self.tamper_step
        if s is None or self.tamper is None:
            raise ValueError("no register or memory tamper")
        if self._branch is None:
            state, memory = self.base.state_at(s)
            tamper_state(state, memory, self.tamper)
            state.mem_root = memory.root()
            program = Program(state, memory, list(guest_program().text_ranges), guest_program().entry)
            limit = None if self.max_steps is None else max(0, self.max_steps - s)
            interval = snapshot_interval(self.steps_hint or self.max_steps)
            self._branch = Trace(program, self.oracle, max_steps=limit, interval=interval)
        return self._branch

    @property
    def last(self) -> Trace:
        """The run that holds the final state of this trace: the branch if tampered, else the base."""
        return self.branch if self.tamper_step is not None else self.base

    # -- what a prover claims --------------------------------------------------------------------------------
    def _forged_claim(self) -> tuple[int, bytes]:
        if self._claim is None:
            last = self.last
            steps = last.steps
            if self.tamper is not None and self.tamper.kind == TamperKind.STEPS:
                steps = max(1, last.steps + self.tamper.delta)
            self._claim = (steps, forged_valid_hash(last.final_state, steps))
        return self._claim

    @property
    def claim_steps(self) -> int:
        """The step count this trace's owner claims: its run's end (shifted by a STEPS tamper)."""
        return self._forged_claim()[0] if self.forge else self.last.steps

    @property
    def claim_hash(self) -> bytes:
        """The final state hash this trace's owner claims (forged VALID for a dishonest prover)."""
        return self._forged_claim()[1] if self.forge else self.last.final_state.hash()

    # -- queries ---------------------------------------------------------------------------------------------
    def hash_at(self, n: int) -> bytes:
        """Our state hash after n steps (what `rollml.dispute.next_move` compares), cached."""
        h = self._hashes.get(n)
        if h is None:
            h = self._hashes[n] = self._compute_hash(n)
        return h

    def _compute_hash(self, n: int) -> bytes:
        if self.forge:
            steps, forged = self._forged_claim()
            if n >= steps:
                return forged
        s = self.tamper_step
        if s is not None and n >= s:
            return self.branch.state_hash_at(n)
        return self.base.state_hash_at(n)

    def _run_at(self, n: int) -> Trace:
        s = self.tamper_step
        return self.branch if s is not None and n >= s else self.base

    def proof_at(self, n: int) -> StepProof:
        """The one-step witness of step n -> n + 1 of our run (for the leaf `step`)."""
        return self._run_at(n).proof_at(n)

    def preimage(self, key: bytes) -> bytes:
        """The keccak preimage of `key` (a part of it must be loaded into the oracle before a read step)."""
        if not key or key[0] != KEY_TYPE_KECCAK:
            raise ValueError(f"0x{key.hex()} is not a keccak key")
        return self.oracle.get(key)

    def close(self) -> None:
        """Release the executors (4 GiB reservations each); the trace rebuilds them if queried again."""
        for trace in (self._branch, self._base):
            if trace is not None:
                trace.close()
        self._base = self._branch = None


# --------------------------------------------------------------------------------------------------------
# Traces in a process of their own
# --------------------------------------------------------------------------------------------------------
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


Request = tuple[int, str, int, Any]  # (ticket, operation, trace key, argument)
Answer = tuple[int, bool, Any]  # (ticket, ok, value or "ErrorType: message")


def serve_traces(requests: Queue[Request | None], answers: Queue[Answer]) -> None:
    """The trace process's loop: own the `GameTrace`s of an agent's games and answer queries in order, until
    a None request (or the agent's death). A process of its own, because the fast VM's SIGSEGV handler
    must live in a process's main thread and a trace of a big model takes minutes to build."""
    exit_with_parent()
    traces: dict[int, GameTrace] = {}
    try:
        while (request := requests.get()) is not None:
            ticket, op, key, arg = request
            try:
                answers.put((ticket, True, _trace_answer(traces, op, key, arg)))
            except Exception as exc:
                answers.put((ticket, False, f"{type(exc).__name__}: {exc}"))
    finally:
        for trace in traces.values():
            trace.close()


def _trace_answer(traces: dict[int, GameTrace], op: str, key: int, arg: Any) -> Any:
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

    def __init__(self) -> None:
        self.generation = 0
        self._process: BaseProcess | None = None
        self._requests: Queue[Request | None] | None = None
        self._answers: Queue[Answer] | None = None
        self._waiting: dict[int, Callable[[bool, Any], None]] = {}
        self._next = 0

    def start(self) -> int:
        """Start the process unless it runs; its generation (queries to an older one were lost)."""
        self._ensure_running()
        return self.generation

    def ask(self, op: str, key: int, arg: Any, on_answer: Callable[[bool, Any], None]) -> None:
        """Queue a query; `on_answer(ok, value)` runs in a later `collect()`."""
        self._ensure_running()
        assert self._requests is not None
        self._next += 1
        self._waiting[self._next] = on_answer
        self._requests.put((self._next, op, key, arg))

    def collect(self) -> None:
        """Deliver every answer that arrived (never blocks); notice a dead process."""
        if self._answers is None:
            return
        while True:
            try:
                ticket, ok, value = self._answers.get_nowait()
            except queue.Empty:
                break
            callback = self._waiting.pop(ticket, None)
            if callback is not None:
                callback(ok, value)
        if self._waiting and self._process is not None and not self._process.is_alive():
            self._lost()

    def pending(self) -> int:
        """Queries not answered yet."""
        return len(self._waiting)

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

    def __init__(self, host: TraceHost, key: int, trace: GameTrace) -> None:
        spec = (trace.model, trace.payload, trace.claimed_output_hash, trace.tamper, trace.forge)
        super().__init__(*spec, trace.max_steps, trace.steps_hint)
        self.host, self.key = host, key
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

        self.host.ask(op, self.key, arg, answered)
