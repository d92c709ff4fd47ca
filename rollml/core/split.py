"""The split game's rules and the moves of its two levels (docs/protocol.md, "Split game").

The rules mirror contracts/src/DisputeGame.sol (the split rules: `_topLeafTurn`, `_checkExec`,
`_checkUpdate`, `_checkReads`, `_checkBottomClaim`, `open`'s transition, `claimTimeout`'s verdict),
contracts/src/SlotTree.sol (`rootFrom`, `initialRoot`, `encodeRecord`, `keccakKey`) and
`InferenceMarket._checkOutputBound`, function for function; each raises `SplitRuleError` named as the
Solidity error the contract reverts with. They are pure.

The moves: the top level is played by `rollml.core.dispute.next_move` over the roots of the states S_k
(`States.root`); at the top leaf the proposer's move is `Open`, whose arguments `open_args` builds from its
own states; the bottom level is played by the same solver over an `ExecTrace`: the node guest's run on the
opened record (`mlkit.guest.exec_oracle`), forged VALID at its end for a proposer whose record the guest
rejects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from mipsvm.constants import KEY_TYPE_KECCAK, Status
from mipsvm.hashing import keccak256
from mipsvm.preimage import PreimageOracle
from mipsvm.trace import Trace
from mipsvm.witness import StepProof
from mlkit.guest import exec_oracle, exec_program, run_states
from mlkit.native import MlkitError
from mlkit.plan import MAX_EXEC_STEPS
from mlkit.state import MAX_READS, NUM_SLOTS, SLOT_OUTPUT, ExecRecord, SlotTree, initial_state, root_from
from rollml.core.dispute import GameView, Turn
from rollml.core.execution import (
    Claim,
    Execution,
    ExecutionError,
    Tamper,
    TamperKind,
    Verification,
    forged_valid_hash,
    snapshot_interval,
    wrong_output,
)

MAX_EXECUTIONS = 1 << 40  # InferenceMarket.MAX_EXECUTIONS


class SplitRuleError(ValueError):
    """A split rule refused: `name` is the Solidity error the contract reverts with."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


# ------------------------------------------------------------------------------------------------------------
# SlotTree.sol
# ------------------------------------------------------------------------------------------------------------
def initial_root(input_id: bytes) -> bytes:
    """`SlotTree.initialRoot`: the root of S_0 (only SLOT_INPUT set, to the input's blob id)."""
    return initial_state(input_id).root()


def encode_record(record: ExecRecord) -> bytes:
    """`SlotTree.encodeRecord`: the record bytes (vm-spec section 9)."""
    return record.encode()


def record_key(record: ExecRecord) -> bytes:
    """`SlotTree.keccakKey(encodeRecord(...))`: the node guest's local datum 4."""
    return record.key()


# ------------------------------------------------------------------------------------------------------------
# DisputeGame.sol, the split rules
# ------------------------------------------------------------------------------------------------------------
def top_leaf_turn() -> Turn:
    """`_topLeafTurn`: at the top level's one-execution interval the proposer must open."""
    return Turn.OPEN


def check_slot(slot: int, value: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """`_checkSlot`: `value` at `slot` with `proof` gives `root`."""
    got = root_from(slot, value, proof)
    if got != root:
        raise SplitRuleError("SlotProofMismatch", f"slot {slot}: 0x{got.hex()} is not 0x{root.hex()}")


def check_exec(hi: int, record: ExecRecord) -> None:
    """`_checkExec`: the record is of the disputed execution `hi`."""
    if record.exec != hi:
        raise SplitRuleError("WrongExecution", f"the record is of execution {record.exec}, the leaf is {hi}")


def check_update(agreed: bytes, disputed: bytes, record: ExecRecord, out_proof: Sequence[bytes]) -> None:
    """`_checkUpdate`: S_hi is S_{hi-1} with one slot changed (the same siblings give both roots)."""
    if record.out_slot >= NUM_SLOTS:
        raise SplitRuleError("BadRecord", f"slot {record.out_slot}")
    check_slot(record.out_slot, record.old_value, out_proof, agreed)
    check_slot(record.out_slot, record.new_value, out_proof, disputed)


def check_reads(agreed: bytes, record: ExecRecord, read_proofs: Sequence[Sequence[bytes]]) -> None:
    """`_checkReads`: each read slot holds its value in S_{hi-1}; ascending, at most MAX_READS."""
    n = len(record.reads)
    if n > MAX_READS or len(read_proofs) != n:
        raise SplitRuleError("BadRecord", f"{n} reads, {len(read_proofs)} proofs")
    previous = -1
    for (slot, value), proof in zip(record.reads, read_proofs, strict=True):
        if slot >= NUM_SLOTS or slot <= previous:
            raise SplitRuleError("BadRecord", f"read slot {slot} after {previous}")
        previous = slot
        check_slot(slot, value, proof, agreed)


def check_bottom_claim(claim: bytes, steps: int) -> None:
    """`_checkBottomClaim`: the node guest exits VALID within MAX_EXEC_STEPS steps."""
    if claim[0] != Status.VALID or not 1 <= steps <= MAX_EXEC_STEPS:
        raise SplitRuleError("BadBottomClaim", f"status {claim[0]}, {steps} steps")


def check_open(
    game: GameView,
    record: ExecRecord,
    out_proof: Sequence[bytes],
    read_proofs: Sequence[Sequence[bytes]],
    claim: bytes,
    steps: int,
) -> None:
    """`open`'s checks after the turn, the deadline, the disputed hash and the sender."""
    if not game.top or game.turn != Turn.OPEN:
        raise SplitRuleError("WrongTurn", f"turn {game.turn.name}, top level {game.top}")
    check_exec(game.hi, record)
    check_update(game.agreed_hash, game.disputed_hash, record, out_proof)
    check_reads(game.agreed_hash, record, read_proofs)
    check_bottom_claim(claim, steps)


def opened(game: GameView, program: bytes, claim: bytes, steps: int, deadline: int) -> GameView:
    """The game after `open`: the bottom level [0, steps] from the node guest's program to `claim`."""
    turn = Turn.STEP if steps == 1 else Turn.DISSECT
    return replace(
        game,
        lo=0,
        hi=steps,
        agreed_hash=program,
        disputed_hash=claim,
        turn=turn,
        deadline=deadline,
        top=False,
    )


def timeout_proposer_won(turn: Turn) -> bool:
    """`claimTimeout`: the party due loses (the proposer at Dissect and Open)."""
    return turn not in (Turn.DISSECT, Turn.OPEN)


# ------------------------------------------------------------------------------------------------------------
# InferenceMarket.sol
# ------------------------------------------------------------------------------------------------------------
def check_output_bound(state_root: bytes, output_hash: bytes, proof: Sequence[bytes]) -> None:
    """`_checkOutputBound`: SLOT_OUTPUT of the claimed state holds keccak256(output)."""
    got = root_from(SLOT_OUTPUT, output_hash, proof)
    if got != state_root:
        raise SplitRuleError("OutputNotBound", f"0x{got.hex()} is not 0x{state_root.hex()}")


# ------------------------------------------------------------------------------------------------------------
# Moves
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenArgs:
    """`DisputeGame.open(gameId, disputed, record, outProof, readProofs, bottomClaim, bottomSteps)`."""

    record: ExecRecord
    out_proof: tuple[bytes, ...]
    read_proofs: tuple[tuple[bytes, ...], ...]

    def call_args(self, game_id: int, disputed: bytes, claim: bytes, steps: int) -> tuple[object, ...]:
        r = self.record
        record = (
            r.exec,
            r.out_slot,
            r.old_value,
            r.new_value,
            [s for s, _ in r.reads],
            [v for _, v in r.reads],
        )
        return (
            game_id,
            disputed,
            record,
            list(self.out_proof),
            [list(p) for p in self.read_proofs],
            claim,
            steps,
        )


def open_args(before: SlotTree, after: SlotTree, exec: int, out_slot: int, reads: Sequence[int]) -> OpenArgs:
    """The record of execution `exec` between our states `before` (S_{exec-1}) and `after` (S_exec), with the
    proofs `open` checks (all from `before`: a one-slot update shares its siblings)."""
    record = ExecRecord(
        exec,
        out_slot,
        before.get(out_slot),
        after.get(out_slot),
        tuple((s, before.get(s)) for s in sorted(reads)),
    )
    return OpenArgs(
        record, tuple(before.proof(out_slot)), tuple(tuple(before.proof(s)) for s, _ in record.reads)
    )


@dataclass
class ExecTrace:
    """The bottom level's trace: the node guest's run on `record` (its reads' bytes `reads`, the model).

    `forge` marks a proposer whose record the guest rejects: from the run's end on its hash is the forged
    VALID final state (as `GameTrace` forges a whole run's). Duck-types what the solver and the responder use
    of a `GameTrace`: `hash_at`, `proof_at`, `preimage`, `claim_hash`, `claim_steps`, `close`.
    """

    model: bytes
    record: ExecRecord
    reads: Sequence[bytes | None]
    forge: bool = False
    max_steps: int = MAX_EXEC_STEPS
    _trace: Trace | None = field(default=None, init=False, repr=False)
    _oracle: PreimageOracle | None = field(default=None, init=False, repr=False)

    @property
    def oracle(self) -> PreimageOracle:
        if self._oracle is None:
            self._oracle = exec_oracle(self.model, self.record, self.reads)
        return self._oracle

    @property
    def run(self) -> Trace:
        if self._trace is None:
            self._trace = Trace(
                exec_program(), self.oracle, max_steps=self.max_steps, interval=snapshot_interval(None)
            )
        return self._trace

    @property
    def accepts(self) -> bool:
        """Does the node guest accept the record (exit 0)?"""
        return self.run.final_state.exited and self.run.final_state.exit_code == 0

    @property
    def claim_steps(self) -> int:
        return self.run.steps

    @property
    def claim_hash(self) -> bytes:
        final = self.run.final_state
        return forged_valid_hash(final, self.run.steps) if self.forge else final.hash()

    def hash_at(self, n: int) -> bytes:
        if self.forge and n >= self.run.steps:
            return self.claim_hash
        return self.run.state_hash_at(min(n, self.run.steps))

    def proof_at(self, n: int) -> StepProof:
        return self.run.proof_at(n)

    def preimage(self, key: bytes) -> bytes:
        if not key or key[0] != KEY_TYPE_KECCAK:
            raise ValueError(f"0x{key.hex()} is not a keccak key")
        return self.oracle.get(key)

    def close(self) -> None:
        if self._trace is not None:
            self._trace.close()
            self._trace = None


# ------------------------------------------------------------------------------------------------------------
# One party's split claim: its states (native) and its bottom traces
# ------------------------------------------------------------------------------------------------------------
def lie_execution(tamper: Tamper, executions: int) -> int:
    """The execution from which a dishonest party's states are wrong: OUTPUT for an output tamper, else the
    tamper's `at` or `fraction` of the schedule (1..N)."""
    if tamper.kind == TamperKind.OUTPUT:
        return executions
    t = tamper.at if tamper.at is not None else int(executions * tamper.fraction)
    return max(1, min(t, executions))


@dataclass(frozen=True)
class SplitClaim:
    """What `postResult` takes: the output, the root of S_N, N, and SLOT_OUTPUT's proof."""

    output: bytes
    state_root: bytes
    executions: int
    output_proof: tuple[bytes, ...]

    @property
    def output_hash(self) -> bytes:
        return keccak256(self.output)


class SplitTrace:
    """One party's side of a split claim over `model` on `payload`: every state natively (no VM), wrong from
    execution `lie_at` on when `tamper` is given (its slot's value replaced; the OUTPUT slot's by the hash of
    a wrong output), and the node guest's runs of the records the games open (`bottom`).

    It plays where a `GameTrace` plays: `hashes(view, record)` is the solver's hash function of either level;
    `proof_at`/`preimage` are those of the bottom trace last asked for (the responder's leaf step)."""

    def __init__(self, model: bytes, payload: bytes, tamper: Tamper | None = None) -> None:
        self.model, self.payload, self.tamper = model, payload, tamper
        self.states = run_states(model, payload)
        n = len(self.states)
        self.lie_at = lie_execution(tamper, n) if tamper is not None else None
        self._roots: dict[int, bytes] = {}
        self._bottom: dict[bytes, ExecTrace] = {}
        self._current: ExecTrace | None = None

    def __len__(self) -> int:
        return len(self.states)

    @property
    def lying(self) -> bool:
        return self.lie_at is not None

    def _lie(self, k: int) -> tuple[int, bytes] | None:
        if self.lie_at is None or k < self.lie_at:
            return None
        slot = self.states.entry(self.lie_at).out_slot
        if slot == SLOT_OUTPUT:
            return slot, keccak256(wrong_output(self.states.output))
        return slot, keccak256(b"rollml: a wrong tensor" + self.states.value_at(self.lie_at, slot))

    def tree(self, k: int) -> SlotTree:
        """Our S_k (k > N: S_N)."""
        k = min(max(k, 0), len(self))
        tree = self.states.tree(k)
        lie = self._lie(k)
        if lie is not None:
            tree.set(*lie)
        return tree

    def root(self, k: int) -> bytes:
        k = min(max(k, 0), len(self))
        if k not in self._roots:
            if self.lie_at is None or k < self.lie_at:
                self._roots[k] = self.states.root(k)
            else:
                self._roots[k] = self.tree(k).root()
        return self._roots[k]

    @property
    def output(self) -> bytes:
        """The output we post (a wrong one when our OUTPUT slot lies)."""
        lie = self._lie(len(self))
        return wrong_output(self.states.output) if lie and lie[0] == SLOT_OUTPUT else self.states.output

    def claim(self) -> SplitClaim:
        final = self.tree(len(self))
        return SplitClaim(self.output, final.root(), len(self), tuple(final.proof(SLOT_OUTPUT)))

    @property
    def claim_steps(self) -> int:
        return len(self)

    @property
    def claim_hash(self) -> bytes:
        return self.root(len(self))

    def open(self, k: int) -> tuple[OpenArgs, bytes, int]:
        """`open`'s arguments at the top leaf [k - 1, k]: our record and proofs, our bottom claim, steps."""
        e = self.states.entry(k)
        args = open_args(self.tree(k - 1), self.tree(k), k, e.out_slot, e.reads)
        trace = self.bottom(args.record, proposer=True)
        return args, trace.claim_hash, trace.claim_steps

    def bottom(self, record: ExecRecord, proposer: bool = False) -> ExecTrace:
        """The node guest's run on an opened record (its reads: the agreed S_{k-1}, which we hold); forged
        VALID when we are a lying proposer."""
        key = record.key() + bytes([proposer])
        trace = self._bottom.get(key)
        if trace is None:
            reads = self.states.read_bytes(record.exec) if record.exec <= len(self) else []
            trace = self._bottom[key] = ExecTrace(self.model, record, reads, forge=proposer and self.lying)
        self._current = trace
        return trace

    def hashes(self, view: GameView, record: ExecRecord | None, proposer: bool) -> Callable[[int], bytes]:
        """The solver's hash function for `view`: our roots at the top level, our bottom trace below it (a
        lying challenger disputes every state of the node guest's run but its start)."""
        if view.top:
            return self.root
        if record is None:
            raise ValueError("the bottom level needs the opened record")
        trace = self.bottom(record, proposer)
        if self.lying and not proposer:
            start = trace.hash_at(0)
            return lambda n: start if n == 0 else keccak256(b"rollml: a wrong state" + n.to_bytes(8, "big"))
        return trace.hash_at

    def proof_at(self, n: int) -> StepProof:
        if self._current is None:
            raise ValueError("no bottom level opened")
        return self._current.proof_at(n)

    def preimage(self, key: bytes) -> bytes:
        if self._current is None:
            raise ValueError("no bottom level opened")
        return self._current.preimage(key)

    def hash_at(self, n: int) -> bytes:
        """A whole-run trace's query, which a split claim has not: the top level's roots."""
        return self.root(n)

    def close(self) -> None:
        for trace in self._bottom.values():
            trace.close()
        self._bottom.clear()
        self._current = None


def split_trace_key(model_id: bytes, input_id: bytes, tamper: Tamper | None) -> bytes:
    """The key of a split claim's trace (games on the same claim share it), as `execution.trace_key`."""
    spec = b"split" + model_id + input_id + (tamper.to_json().encode() if tamper is not None else b"")
    return keccak256(spec)


def split_execute(model: bytes, payload: bytes, tamper: Tamper | None = None) -> tuple[SplitClaim, float]:
    """A prover's run (native only, no VM): the claim it posts and the native seconds."""
    t0 = time.perf_counter()
    claim = SplitTrace(model, payload, tamper).claim()
    return claim, time.perf_counter() - t0


def split_execution(model: bytes, payload: bytes, tamper: Tamper | None = None) -> Execution:
    """`split_execute` as a prover's `Execution` (the node's job record): the claim's `final_hash` is the
    root of S_N and its `steps` the executions N; no VM second is spent. ExecutionError if the request
    cannot be served (as `execute`)."""
    t0 = time.perf_counter()
    try:
        honest = SplitTrace(model, payload)
    except MlkitError as exc:  # as `execute`: the request is at fault, not the node
        raise ExecutionError(f"the runtime rejects this model or input ({exc})") from exc
    except ValueError as exc:  # the schedule: a model or generation the split game cannot unroll
        raise ExecutionError(f"the split game cannot run this model or input ({exc})") from exc
    ours = SplitTrace(model, payload, tamper) if tamper is not None else honest
    claim = ours.claim()
    seconds = time.perf_counter() - t0
    return Execution(
        output=honest.output,
        final_hash=honest.claim_hash,
        steps=len(honest),
        claim=Claim(claim.output_hash, claim.state_root, claim.executions, claim.output),
        native_seconds=seconds,
        vm_seconds=0.0,
    )


def split_verification(
    model: bytes, payload: bytes, state_root: bytes, executions: int, output_hash: bytes
) -> Verification:
    """`split_verify` as a challenger's `Verification`."""
    correct, reason = split_verify(model, payload, state_root, executions, output_hash)
    return Verification(correct, reason)


def split_verify(
    model: bytes, payload: bytes, state_root: bytes, executions: int, output_hash: bytes
) -> tuple[bool, str]:
    """A challenger's re-check (native only): (correct, one-line reason)."""
    try:
        states = run_states(model, payload)
    except (MlkitError, ValueError) as exc:
        return False, f"the runtime rejects the model or input ({exc}): no state is right"
    if keccak256(states.output) != output_hash:
        return False, "the output differs from the native run's"
    if states.root(executions) != state_root:
        return False, f"S_{executions} differs from the native run's"
    return True, "the states and the output match the native run"
