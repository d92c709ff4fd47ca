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
- One VM run per party: the VM runs of `execute` and `verify` are trace runs (`recorded_run`) whose
  snapshots go to the machine's recording store (`mipsvm.trace.default_store`, by the run's program and
  local data); a `GameTrace` for the same run starts from that recording instead of running the guest
  again (in any process of this machine), and runs only when there is none.
- `TraceHost` and `RemoteTrace` keep an agent's game traces in a process of its own (building one for a big
  model takes minutes): queries never block the agent's tick, an answer not there yet raises `TraceBusy`.

Dishonest parties (`Tamper`) tamper for real inside that run, so a bisection narrows to the tampered step:
their hash at n is the honest one for n < s and that of a genuinely tampered state (a register or memory
word flipped at step s, then run on) for n >= s. A dishonest prover also forges its final claim: the state
at its claimed step count with `exited = 1, exitCode = 0` (a well-formed state no run reaches).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from mipsvm.constants import KEY_TYPE_KECCAK, LOCAL_INPUT_ID, LOCAL_MODEL_ID, LOCAL_OUTPUT_HASH, Status
from mipsvm.elf import Program
from mipsvm.hashing import keccak256
from mipsvm.memory import Memory
from mipsvm.preimage import PreimageOracle, local_key
from mipsvm.state import State
from mipsvm.trace import Trace, default_store
from mipsvm.witness import StepProof
from mlkit.guest import VMRun, guest_oracle, guest_program, run_native
from mlkit.native import MlkitError

MIN_SNAPSHOT_INTERVAL = 1 << 16  # steps between trace snapshots, at least
MAX_SNAPSHOT_INTERVAL = 1 << 22  # and at most (mipsvm.trace's default)
SNAPSHOTS_PER_TRACE = 32  # about this many snapshots per trace: a hash query runs at most T / 32 steps
TAMPER_REGISTERS = (*range(2, 26), 28, 29, 30, 31)  # every register but r0, at, k0 and k1


class ExecutionError(RuntimeError):
    """A request that cannot be served: the runtime rejects the model or input, or the VM disagrees."""


# --------------------------------------------------------------------------------------------------------
# The guest and its oracle
# --------------------------------------------------------------------------------------------------------
def native_output(model: bytes, payload: bytes) -> bytes | None:
    """The output payload of the native runtime, or None when it rejects the model or input (the guest
    then exits PANIC: no VALID final state exists for any claim)."""
    try:
        return run_native(model, payload).output
    except MlkitError:
        return None


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
    TENSOR = "tensor"  # split claims: the slot of execution `at` (or `fraction` of N) wrong from there on


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
    """A result as posted: `postVMResult(requestId, output, final_hash, steps)`, or read back from the event
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
    run = recorded_run(model, payload, keccak256(output), max_steps)
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
    vm_seconds: float = 0.0  # how long the VM run took (0 when the native run decided)


def verify(model: bytes, payload: bytes, claim: Claim, max_steps: int | None = None) -> Verification:
    """Is `claim` true for this request? Natively first, then the VM run for the claimed output hash."""
    output = native_output(model, payload)
    if output is None:
        return Verification(False, "the runtime rejects the model or input: no VALID final state exists")
    if keccak256(output) != claim.output_hash:
        return Verification(False, f"wrong output: keccak256 is 0x{keccak256(output).hex()}")
    run = recorded_run(model, payload, claim.output_hash, max_steps)
    seen = (run.steps, run.final_hash, run.seconds)
    if run.status != Status.VALID:
        return Verification(False, f"the VM exits {run.status.name} for this output", *seen)
    if run.final_hash != claim.final_hash:
        return Verification(False, f"wrong final state: 0x{run.final_hash.hex()}", *seen)
    if claim.steps < run.steps:
        return Verification(False, f"wrong step count: the run exits after {run.steps}", *seen)
    return Verification(True, "output, final state and step count check out", *seen)


def run_key(oracle: PreimageOracle) -> bytes:
    """What a guest run is: the program hash and the local data (model id, input id, claimed output hash)."""
    locals_ = (oracle.local.get(local_key(i)) for i in (LOCAL_MODEL_ID, LOCAL_INPUT_ID, LOCAL_OUTPUT_HASH))
    return keccak256(guest_program().state.hash() + b"".join(locals_))


def recorded_run(model: bytes, payload: bytes, claim: bytes, max_steps: int | None) -> VMRun:
    """`mlkit.guest.run_vm` as a trace run whose recording goes to the store, for the GameTrace of this
    claim (see the module docstring). Snapshot memory is bounded by `mipsvm.trace`'s caps."""
    oracle = guest_oracle(model, payload, claim)
    t0 = time.perf_counter()
    trace = Trace(guest_program(), oracle, max_steps=max_steps, interval=MIN_SNAPSHOT_INTERVAL)
    seconds = time.perf_counter() - t0
    try:
        default_store().put(run_key(oracle), trace.recording())
    finally:
        trace.close()
    final = trace.final_state
    return VMRun(trace.output, seconds, final.step, final.exit_code, final.hash())


# --------------------------------------------------------------------------------------------------------
# Traces for games
# --------------------------------------------------------------------------------------------------------
def snapshot_interval(steps_hint: int | None) -> int:
    """Snapshot spacing for a run of about `steps_hint` steps: ~32 snapshots, within 64Ki..4Mi steps."""
    if not steps_hint:
        return MAX_SNAPSHOT_INTERVAL
    want = max(1, steps_hint // SNAPSHOTS_PER_TRACE)
    return max(MIN_SNAPSHOT_INTERVAL, min(MAX_SNAPSHOT_INTERVAL, 1 << (want - 1).bit_length()))


def trace_key(
    model_id: bytes,
    input_id: bytes,
    claimed_output_hash: bytes,
    tamper: Tamper | None = None,
    forge: bool = False,
    max_steps: int | None = None,
) -> bytes:
    """What makes two `GameTrace`s the same: games that dispute the same claim (the model and input by
    their blob ids, the claimed output hash, our tamper, the bound of the run) can share one trace."""
    spec = [
        model_id,
        input_id,
        claimed_output_hash,
        (tamper.to_json() if tamper is not None else "").encode(),
        b"forge" if forge else b"",
        (max_steps if max_steps is not None else -1).to_bytes(9, "big", signed=True),
    ]
    return keccak256(b"".join(len(x).to_bytes(4, "big") + x for x in spec))


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
            recording = default_store().get(run_key(self.oracle))
            with contextlib.suppress(ValueError):  # (a recording that stops short of max_steps: a new run)
                if recording is not None:
                    self._base = Trace.from_recording(
                        guest_program(), self.oracle, recording, max_steps=self.max_steps
                    )
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
        """Our state hash after n steps (what `rollml.core.dispute.next_move` compares), cached."""
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
