"""The fault campaign (`make fault-campaign`): random faults injected into real games on a real chain, each
answered by the real honest agents, with a funds-conservation check after every game.

Why: the demo and the agent tests show one fault of each sort on hand-picked steps; the campaign draws many
(which side lies, at which step, which register, bit, memory word, step count, which round a party stalls in,
how a leaf proof is malformed, which preimage read is attacked) from one seed, so a regression that only
shows at some step or in some round has many chances to show, and every run can be replayed from its seed.

A fault is a `FaultSpec` (kind, model, seed). `draw_setup` turns it into a concrete `Setup` (the input, the
tamper, the misbehaviour of the dishonest agent) and `FaultRun` plays it end to end on a fresh deployment:

1. the dApp account requests inference; the first result is posted by the liar (a dishonest prover) or by
   the honest node (when the liar is a challenger);
2. the game is played by the real `node.prover.ProverNode` and `challenger.agent.Challenger` agents; the
   dishonest one is the same agent with a `rollml.core.execution.Tamper` (real VM tampering) plus, for the
   kinds the agents cannot express, a `Misbehaving` hook of this module (stalls, premature timeout claims,
   malformed leaf proofs, fabricated preimage parts): the agents themselves are untouched;
3. after the game and again after the request finalized, the funds are checked (`check_funds`).

A fault is *caught* when the wrong claim or challenge does not stand (the liar's result is discarded, or the
liar's challenge loses its bond) and everything the kind must show happened (a named revert, a timeout
claimed by the honest side, the leaf at the predicted step ...: the `evidence`). It is an *honest win* when
the honest agents end up with exactly what the protocol pays them. The report's last line is
`faults: N injected, N caught, N honest wins, funds conserved: yes|no`.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractFunction

from challenger.agent import Challenger
from mipsvm.constants import KEY_TYPE_KECCAK, MEM_PROOF_SIZE, MEM_TREE_DEPTH
from mipsvm.hashing import keccak256
from mipsvm.state import State
from mipsvm.step import step as reference_step
from mipsvm.witness import PROOF_SIZE, StepProof
from mlkit import models
from mlkit.guest import guest_oracle, guest_program, run_states
from mlkit.models import GPT2_CONFIGS
from mlkit.schedule import ExecKind
from node.prover import ProverNode
from rollml.agent.base import Agent
from rollml.agent.reads import game_report
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import DEV_ARITY, DEV_MOVE_TIMEOUT, DEV_PARAMS, Contracts, Deployment
from rollml.core.dispute import GameStatus, GameView, Move, Pick, Turn, Wait, rounds_needed
from rollml.core.execution import (
    TAMPER_REGISTERS,
    Claim,
    Execution,
    GameTrace,
    Tamper,
    TamperKind,
    execute,
    tampered_claim,
    verify,
)
from rollml.core.sdk import RequestStatus, game_status, request_status
from rollml.core.split import SplitTrace, split_execution
from rollml.core.store import GameRow
from rollml.world import World, play_until

ATTACK_GAS = 3_000_000  # explicit gas for the liar's doomed transactions: mined and reverted, not refused
MAX_TICKS = 300
PREIMAGE_SCAN_STEPS = 100_000  # keccak reads are looked for in this many first steps (all models read early)
OFFLINE_MARGIN = 60  # an offline honest party is back at least this many seconds before its deadline
OFFLINE_CHUNKS = 3  # the outage passes in this many clock jumps, the liar ticking in between
TAMPER_TRIES = 40


class FaultKind(StrEnum):
    """What goes wrong. The prefix says who lies where it is fixed; the others draw the liar's side."""

    PROVER_OUTPUT = "prover-output"  # a wrong output with a forged VALID exit
    PROVER_REGISTER = "prover-register"  # a register flipped at a random step, then run on
    PROVER_MEMORY = "prover-memory"  # a memory word flipped at a random step, then run on
    PROVER_STEPS_SHORT = "prover-steps-short"  # the final state claimed before the run exits
    PROVER_STEPS_LONG = "prover-steps-long"  # a forged step counter past the exit (a lie, see draw_steps)
    CHALLENGER_REGISTER = "challenger-register"  # a correct result challenged with a register flip
    CHALLENGER_MEMORY = "challenger-memory"  # ... with a memory flip
    PROVER_STALLS = "prover-stalls"  # a lying prover stops dissecting mid-game
    CHALLENGER_STALLS = "challenger-stalls"  # a lying challenger stops picking mid-game
    HONEST_OFFLINE = "honest-offline"  # the honest party is away for less than the move timeout
    MALFORMED_PROOF = "malformed-proof"  # the liar steps the leaf with a wrong pre-state / siblings / length
    WRONG_PREIMAGE = "wrong-preimage"  # the liar loads fabricated parts for a leaf that reads a preimage
    # split claims (docs/protocol.md 5b): the top level over node executions, `open`, the bottom VM game
    SPLIT_TENSOR_EARLY = "split-tensor-early"  # a wrong tensor in the first quarter of the schedule
    SPLIT_TENSOR_LATE = "split-tensor-late"  # a wrong tensor in the last quarter, before the output
    SPLIT_KV_CACHE = "split-kv-cache"  # a wrong KV-cache append of a generation (GPT models)
    SPLIT_OUTPUT = "split-output"  # a wrong output payload: the OUTPUT execution's slot
    SPLIT_CHALLENGER = "split-challenger"  # a correct split claim challenged with a wrong tensor


SPLIT_KINDS = frozenset(k for k in FaultKind if k.value.startswith("split-"))
GPT_KINDS = frozenset({FaultKind.SPLIT_KV_CACHE})  # kinds that need a generation (a GPT model)


class TrainingFaultKind(StrEnum):
    """The training kinds (played by `rollml.harness.training_faults` on a training run, docs/security.md)."""

    WRONG_UPDATE = "train-wrong-update"  # a worker posts other weights with a forged VALID claim
    WITHHELD_WEIGHTS = "train-withheld-weights"  # a worker computes an update, keeps it: a stalled lease
    STALLED_LEASE = "train-stalled-lease"  # a worker takes the lease and never posts
    LYING_PROOFER = "train-lying-proofer"  # a fraud-proofer challenges a correct update


TRAIN_MODEL = "digits-mlp-train"  # the model column of a training fault (its run's training graph)


class Side(StrEnum):
    PROVER = "prover"
    CHALLENGER = "challenger"


FIXED_SIDE: dict[FaultKind, Side] = {
    FaultKind.PROVER_OUTPUT: Side.PROVER,
    FaultKind.PROVER_REGISTER: Side.PROVER,
    FaultKind.PROVER_MEMORY: Side.PROVER,
    FaultKind.PROVER_STEPS_SHORT: Side.PROVER,
    FaultKind.PROVER_STEPS_LONG: Side.PROVER,
    FaultKind.CHALLENGER_REGISTER: Side.CHALLENGER,
    FaultKind.CHALLENGER_MEMORY: Side.CHALLENGER,
    FaultKind.PROVER_STALLS: Side.PROVER,
    FaultKind.CHALLENGER_STALLS: Side.CHALLENGER,
    FaultKind.SPLIT_TENSOR_EARLY: Side.PROVER,
    FaultKind.SPLIT_TENSOR_LATE: Side.PROVER,
    FaultKind.SPLIT_KV_CACHE: Side.PROVER,
    FaultKind.SPLIT_OUTPUT: Side.PROVER,
    FaultKind.SPLIT_CHALLENGER: Side.CHALLENGER,
}


class LeafAttack(StrEnum):
    """How a liar at the leaf tries its luck with a step that should not be accepted."""

    PRE_STATE = "pre-state"  # a pre-state that is not the agreed one -> DisputeGame.PreStateMismatch
    SIBLINGS = "siblings"  # a flipped Merkle sibling of the instruction proof -> MIPS.InvalidMemoryProof
    TRUNCATED = "truncated"  # a proof cut short -> MIPS.InvalidProofLength
    PREIMAGE = "preimage"  # fabricated oracle parts, then a step that reads nothing -> PreimageNotLoaded


MALFORMED_ERRORS = {
    LeafAttack.PRE_STATE: "PreStateMismatch",
    LeafAttack.SIBLINGS: "InvalidMemoryProof",
    LeafAttack.TRUNCATED: "InvalidProofLength",
}


# --------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaultSpec:
    """One planned fault: everything else is drawn from `seed` when it runs (replayable one by one)."""

    index: int
    kind: FaultKind | TrainingFaultKind
    model: str
    seed: int


def plan_faults(
    n: int, seed: int, models: Sequence[str], kinds: Sequence[str] = tuple(FaultKind)
) -> list[FaultSpec]:
    """`n` faults: the kinds in shuffled rounds (every kind appears once `n >= len(kinds)`), the models at
    random, one seed per fault. `kinds` may name the training kinds (`rollml.harness.training_faults`):
    those play a training run, whose model is its training graph (`TRAIN_MODEL`), not one of `models`."""
    training = {str(k) for k in TrainingFaultKind}
    gpt_kinds = {str(k) for k in GPT_KINDS}
    gpts = [m for m in models if m in GPT2_CONFIGS]
    if not gpts and set(kinds) & gpt_kinds:  # a generation's kinds are left out without a GPT model
        if set(kinds) <= gpt_kinds:
            raise ValueError(f"fault kind {', '.join(sorted(gpt_kinds))} needs a GPT model among the models")
        kinds = [k for k in kinds if k not in gpt_kinds]
    if not kinds or (not models and not set(kinds) <= training):
        raise ValueError("a campaign needs at least one model and one fault kind")
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < n:
        batch = list(kinds)
        rng.shuffle(batch)
        order.extend(batch)
    plan = []
    for i in range(n):
        if order[i] in training:
            model = TRAIN_MODEL
        else:
            model = rng.choice(gpts if order[i] in gpt_kinds else list(models))
        kind = TrainingFaultKind(order[i]) if order[i] in training else FaultKind(order[i])
        plan.append(FaultSpec(i + 1, kind, model, rng.randrange(2**32)))
    return plan


# --------------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------------
def random_input(name: str, rng: random.Random) -> tuple[bytes, str]:
    """A random input payload for reference model `name` and a few words saying which."""
    from mlkit import models
    from mlkit.io import encode_payload, generate_payload

    if name in models.CLASSIFIERS:
        digits = models.load_digits_28()
        i = rng.randrange(len(digits.x_test))
        return encode_payload([digits.x_test[i : i + 1]]), f"test digit {i}"
    if name in models.GENERATORS:
        z = rng.randrange(2**31)
        return encode_payload([models.latent(z)]), f"latent seed {z}"
    if name in models.GPT2_CONFIGS:
        prompt_seed, new = rng.randrange(2**31), rng.randint(1, 3)
        prompt = models.gpt2_prompt(name, 8, prompt_seed).tolist()
        return generate_payload(prompt, new), f"prompt seed {prompt_seed}, {new} new tokens"
    raise KeyError(f"no input generator for model {name!r}")


# --------------------------------------------------------------------------------------------------------
# Setups: the concrete fault drawn from a spec
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Misbehaviour:
    """What the dishonest agent does beyond playing its tampered trace (see `Misbehaving`)."""

    stall_after: int | None = None  # stop moving after this many own dissections / picks in the game
    impatient: bool = False  # claim the timeout while the other side is due, before its deadline
    leaf_attacks: tuple[LeafAttack, ...] = ()  # tried in this order at the leaf
    seed: int = 0  # for the details of an attack


@dataclass(frozen=True)
class Setup:
    """A fault made concrete: the request, the honest run, the liar and how it lies."""

    spec: FaultSpec
    payload: bytes
    input_desc: str
    honest: Execution
    liar: Side
    tamper: Tamper
    misbehaviour: Misbehaviour
    detail: str
    expected_leaf: int | None  # the pre-step of the leaf the bisection must reach (None: a timeout ends it)
    claim: Claim | None = None  # the liar prover's posted claim
    outage_after: int | None = None  # honest-offline: the liar's moves before the honest party goes away
    outage_seconds: int | None = None
    split: bool = False  # the node and the liar post split claims (the split kinds)
    lie_exec: int | None = None  # split kinds: the execution the top level must narrow to (its `open`)

    @property
    def honest_side(self) -> Side:
        return Side.CHALLENGER if self.liar == Side.PROVER else Side.PROVER


def draw_setup(spec: FaultSpec, model: bytes, deployment_max_steps: int, move_timeout: int) -> Setup:
    """The concrete fault of `spec` (deterministic in its seed): input, liar side, tamper, misbehaviour."""
    kind = FaultKind(spec.kind)  # the training kinds are played by rollml.harness.training_faults
    rng = random.Random(spec.seed)
    payload, input_desc = random_input(spec.model, rng)
    honest = execute(model, payload, max_steps=deployment_max_steps)
    side = FIXED_SIDE.get(kind) or rng.choice([Side.PROVER, Side.CHALLENGER])
    draw = SETUP_DRAWERS[kind]
    return draw(DrawContext(spec, model, payload, input_desc, honest, side, rng, move_timeout))


@dataclass
class DrawContext:
    """What the per-kind drawers share (kept in one object so each drawer is a few lines)."""

    spec: FaultSpec
    model: bytes
    payload: bytes
    input_desc: str
    honest: Execution
    side: Side
    rng: random.Random
    move_timeout: int

    def setup(
        self,
        tamper: Tamper,
        detail: str,
        claim: Claim | None,
        misbehaviour: Misbehaviour | None = None,
        at_leaf: bool = True,
        outage: tuple[int, int] | None = None,
    ) -> Setup:
        """The Setup of a drawn tamper; `at_leaf=False` when a timeout, not a step, must end the game."""
        leaf = self.leaf_of(tamper, claim) if at_leaf else None
        return Setup(
            spec=self.spec,
            payload=self.payload,
            input_desc=self.input_desc,
            honest=self.honest,
            liar=self.side,
            tamper=tamper,
            misbehaviour=misbehaviour or Misbehaviour(seed=self.rng.randrange(2**32)),
            detail=detail,
            expected_leaf=leaf,
            claim=claim,
            outage_after=outage[0] if outage else None,
            outage_seconds=outage[1] if outage else None,
        )

    def claim_of(self, tamper: Tamper) -> Claim:
        h = self.honest
        return tampered_claim(self.model, self.payload, h.output, tamper, h.steps, None)

    def leaf_of(self, tamper: Tamper, claim: Claim | None) -> int:
        """The leaf's pre-step: the flipped step's predecessor, or (a forged claim) the claimed step's."""
        if tamper.kind in (TamperKind.REGISTER, TamperKind.MEMORY):
            return tamper.step_in(self.honest.steps) - 1
        assert claim is not None
        return claim.steps - 1

    def is_lie(self, tamper: Tamper) -> tuple[bool, Claim | None]:
        """Does this tamper make the liar's side wrong? (A flip of a dead value changes nothing.)"""
        if self.side == Side.PROVER:
            claim = self.claim_of(tamper)
            return not verify(self.model, self.payload, claim).correct, claim
        h = self.honest
        with GameTrace(self.model, self.payload, keccak256(h.output), tamper, max_steps=h.steps) as trace:
            return trace.hash_at(h.steps) != h.final_hash, None

    def flip(self, kinds: Sequence[TamperKind]) -> tuple[Tamper, Claim | None]:
        """A random register or memory flip (or a wrong output, when offered) that really lies."""
        for _ in range(TAMPER_TRIES):
            kind = self.rng.choice(list(kinds))
            tamper = Tamper(kind) if kind == TamperKind.OUTPUT else self.random_flip(kind)
            lie, claim = self.is_lie(tamper)
            if lie:
                return tamper, claim
        raise RuntimeError(f"no effective {'/'.join(kinds)} tamper in {TAMPER_TRIES} draws")

    def random_flip(self, kind: TamperKind) -> Tamper:
        """`Tamper.random` with the step made explicit (`at`), so the report can name it."""
        drawn = Tamper.random(kind, self.rng)
        at = drawn.step_in(self.honest.steps)
        return Tamper(kind, at=at, register=drawn.register, mask=drawn.mask)

    def rounds(self, claim: Claim | None) -> int:
        return rounds_needed(claim.steps if claim is not None else self.honest.steps, DEV_ARITY)

    def liar_kinds(self) -> tuple[TamperKind, ...]:
        flips = (TamperKind.REGISTER, TamperKind.MEMORY)
        return (TamperKind.OUTPUT, *flips) if self.side == Side.PROVER else flips


def describe_tamper(tamper: Tamper, claim: Claim | None, honest_steps: int) -> str:
    if tamper.kind == TamperKind.REGISTER:
        return f"r{tamper.register} ^= 0x{tamper.mask:x} at step {tamper.step_in(honest_steps):,}"
    if tamper.kind == TamperKind.MEMORY:
        return f"mem[sp] ^= 0x{tamper.mask:x} at step {tamper.step_in(honest_steps):,}"
    if tamper.kind == TamperKind.OUTPUT:
        steps = f", exit forged at step {claim.steps:,}" if claim is not None else ""
        return f"wrong output{steps}"
    return f"claims {honest_steps + tamper.delta:,} steps (true {honest_steps:,})"


def draw_flip(ctx: DrawContext, kind: TamperKind) -> Setup:
    tamper, claim = ctx.flip([kind])
    return ctx.setup(tamper, describe_tamper(tamper, claim, ctx.honest.steps), claim)


def draw_output(ctx: DrawContext) -> Setup:
    tamper, claim = ctx.flip([TamperKind.OUTPUT])
    return ctx.setup(tamper, describe_tamper(tamper, claim, ctx.honest.steps), claim)


def draw_steps(ctx: DrawContext, longer: bool) -> Setup:
    """A wrong step count. Shorter: the exit state claimed before the run gets there. Longer: the STEPS
    tamper forges the exit state *with its step counter* at T + d, which no state has (exited states are
    fixed points and keep the counter T), so it is a lie. The claim (true final hash, T + d) would be true
    by the fixed-point rule and is not a fault: it is never drawn."""
    t = ctx.honest.steps
    delta = ctx.rng.randint(1, t) if longer else -ctx.rng.randint(1, t - 1)
    tamper = Tamper(TamperKind.STEPS, delta=delta)
    lie, claim = ctx.is_lie(tamper)
    if not lie:
        raise RuntimeError(f"a step count of {t + delta} is not a lie")
    return ctx.setup(tamper, describe_tamper(tamper, claim, t), claim)


def draw_stall(ctx: DrawContext) -> Setup:
    tamper, claim = ctx.flip(ctx.liar_kinds())
    after = ctx.rng.randint(1, max(1, ctx.rounds(claim) - 2))
    what = "dissections" if ctx.side == Side.PROVER else "picks"
    detail = f"{describe_tamper(tamper, claim, ctx.honest.steps)}; stops after {after} {what}"
    mis = Misbehaviour(stall_after=after, seed=ctx.rng.randrange(2**32))
    return ctx.setup(tamper, detail, claim, mis, at_leaf=False)


def draw_offline(ctx: DrawContext) -> Setup:
    tamper, claim = ctx.flip(ctx.liar_kinds())
    after = ctx.rng.randint(1, max(1, ctx.rounds(claim) - 2))
    seconds = ctx.rng.randint(ctx.move_timeout // 4, ctx.move_timeout - OFFLINE_MARGIN)
    honest = "challenger" if ctx.side == Side.PROVER else "node"
    detail = (
        f"{describe_tamper(tamper, claim, ctx.honest.steps)}; honest {honest} offline "
        f"{seconds} s (timeout {ctx.move_timeout} s) after move {after}"
    )
    mis = Misbehaviour(impatient=True, seed=ctx.rng.randrange(2**32))
    return ctx.setup(tamper, detail, claim, mis, outage=(after, seconds))


def draw_malformed(ctx: DrawContext) -> Setup:
    tamper, claim = ctx.flip((TamperKind.REGISTER, TamperKind.MEMORY))
    attacks = [LeafAttack.PRE_STATE, LeafAttack.SIBLINGS, LeafAttack.TRUNCATED]
    ctx.rng.shuffle(attacks)
    detail = f"{describe_tamper(tamper, claim, ctx.honest.steps)}; malformed leaf steps: {', '.join(attacks)}"
    mis = Misbehaviour(leaf_attacks=tuple(attacks), seed=ctx.rng.randrange(2**32))
    return ctx.setup(tamper, detail, claim, mis)


def draw_preimage(ctx: DrawContext) -> Setup:
    """v0 flipped right after a random keccak preimage read: the leaf is that read step."""
    reads = keccak_reads(ctx.model, ctx.payload, keccak256(ctx.honest.output))
    ctx.rng.shuffle(reads)
    for read in reads[:TAMPER_TRIES]:
        tamper = Tamper(TamperKind.REGISTER, at=read + 1, register=2, mask=1 << ctx.rng.randrange(4))
        lie, claim = ctx.is_lie(tamper)
        if lie:
            detail = f"v0 ^= 0x{tamper.mask:x} after the keccak read at step {read:,}"
            mis = Misbehaviour(leaf_attacks=(LeafAttack.PREIMAGE,), seed=ctx.rng.randrange(2**32))
            return ctx.setup(tamper, detail, claim, mis)
    raise RuntimeError("no keccak read whose flipped result makes a lie")


def split_setup(ctx: DrawContext, tamper: Tamper, detail: str, lie_exec: int) -> Setup:
    """A split kind's Setup: the liar prover's split claim (None for a liar challenger); no VM leaf is
    predicted, the top level must open `lie_exec`."""
    claim = split_execution(ctx.model, ctx.payload, tamper).claim if ctx.side == Side.PROVER else None
    return replace(ctx.setup(tamper, detail, claim, at_leaf=False), split=True, lie_exec=lie_exec)


def draw_split_tensor(ctx: DrawContext, where: str) -> Setup:
    """A wrong tensor (its slot's value replaced) from a drawn execution on: `early` (first quarter),
    `late` (last quarter, before the output), `kv` (a KV-cache append), `any`."""
    states = run_states(ctx.model, ctx.payload)
    n = len(states)
    if where == "early":
        candidates = list(range(1, n // 4 + 2))
    elif where == "late":
        candidates = list(range(max(1, 3 * n // 4), n))
    elif where == "kv":
        candidates = [k for k in range(1, n + 1) if states.entry(k).kind == ExecKind.KV_APPEND]
    else:
        candidates = list(range(1, n + 1))
    if not candidates:
        raise RuntimeError(f"no {where} execution to lie in ({n} executions)")
    k = ctx.rng.choice(candidates)
    e = states.entry(k)
    detail = f"a wrong {e.kind.name} tensor (slot {e.out_slot}) at execution {k:,} of {n:,}"
    return split_setup(ctx, Tamper(TamperKind.TENSOR, at=k), detail, k)


def draw_split_output(ctx: DrawContext) -> Setup:
    n = len(run_states(ctx.model, ctx.payload))
    return split_setup(ctx, Tamper(TamperKind.OUTPUT), f"a wrong output (execution {n:,}, OUTPUT)", n)


SETUP_DRAWERS: dict[FaultKind, Callable[[DrawContext], Setup]] = {
    FaultKind.PROVER_OUTPUT: draw_output,
    FaultKind.PROVER_REGISTER: lambda ctx: draw_flip(ctx, TamperKind.REGISTER),
    FaultKind.PROVER_MEMORY: lambda ctx: draw_flip(ctx, TamperKind.MEMORY),
    FaultKind.PROVER_STEPS_SHORT: lambda ctx: draw_steps(ctx, longer=False),
    FaultKind.PROVER_STEPS_LONG: lambda ctx: draw_steps(ctx, longer=True),
    FaultKind.CHALLENGER_REGISTER: lambda ctx: draw_flip(ctx, TamperKind.REGISTER),
    FaultKind.CHALLENGER_MEMORY: lambda ctx: draw_flip(ctx, TamperKind.MEMORY),
    FaultKind.PROVER_STALLS: draw_stall,
    FaultKind.CHALLENGER_STALLS: draw_stall,
    FaultKind.HONEST_OFFLINE: draw_offline,
    FaultKind.MALFORMED_PROOF: draw_malformed,
    FaultKind.WRONG_PREIMAGE: draw_preimage,
    FaultKind.SPLIT_TENSOR_EARLY: lambda ctx: draw_split_tensor(ctx, "early"),
    FaultKind.SPLIT_TENSOR_LATE: lambda ctx: draw_split_tensor(ctx, "late"),
    FaultKind.SPLIT_KV_CACHE: lambda ctx: draw_split_tensor(ctx, "kv"),
    FaultKind.SPLIT_OUTPUT: draw_split_output,
    FaultKind.SPLIT_CHALLENGER: lambda ctx: draw_split_tensor(ctx, "any"),
}


def keccak_reads(model: bytes, payload: bytes, output_hash: bytes) -> list[int]:
    """Steps (among the first PREIMAGE_SCAN_STEPS) that read a keccak preimage part inside its stream."""
    program = guest_program()
    state, memory = program.state.copy(), program.memory.copy()
    oracle = guest_oracle(model, payload, output_hash)
    reads = []
    for n in range(PREIMAGE_SCAN_STEPS):
        access = reference_step(state, memory, oracle)
        if state.exited:
            break
        if access.preimage is not None and access.preimage[0][0] == KEY_TYPE_KECCAK:
            key, offset = access.preimage
            if offset < 8 + len(oracle.get(key)):
                reads.append(n)
    return reads


# --------------------------------------------------------------------------------------------------------
# The dishonest agents
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """One thing a fault must show, and whether it did."""

    what: str
    expected: str
    got: str
    ok: bool

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'}: {self.what}: expected {self.expected}, got {self.got}"


class Misbehaving(Agent):
    """The smallest hook for what `Tamper` cannot express; mixed into the real agents (`LiarNode`,
    `LiarChallenger`), which otherwise play their tampered trace exactly as in production.

    - `stall_after`: the agent stops moving in its game after that many dissections / picks;
    - `impatient`: while the other side is due it claims the timeout before the deadline (must revert);
    - `leaf_attacks`: at the leaf it sends malformed steps, or fabricated preimage parts and a step, as
      mined transactions (explicit gas, so they revert on-chain rather than being refused at estimation),
      then stays silent. A challenger attacks right after the pick that reaches the leaf, in the same tick:
      otherwise the honest proposer's eager step would end the game before the attack.
    Every outcome is kept in `evidence`.
    """

    def __init__(self, *args: Any, misbehaviour: Misbehaviour, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.misbehaviour = misbehaviour
        self.evidence: list[Evidence] = []
        self.attacked: set[int] = set()

    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        m = self.misbehaviour
        if m.stall_after is not None and self.moves_in(row.game_id) >= m.stall_after:
            return Wait("stalled on purpose")
        if row.game_id in self.attacked:
            return Wait("silent after its leaf attack")
        if m.impatient and view.turn != Turn.STEP and self.other_side_due(row, view) and now <= view.deadline:
            self.claim_early(row)
        if m.leaf_attacks and view.turn == Turn.STEP:
            self.attack_leaf(row, view.lo, view.disputed_hash)
            return Wait("attacked the leaf")
        return super().decide(row, view, now)  # type: ignore[safe-super]  # the MRO gives the agent's own decide

    def send_move(self, row: GameRow, move: Move) -> None:
        super().send_move(row, move)
        if isinstance(move, Pick) and move.hi - move.lo == 1 and self.misbehaviour.leaf_attacks:
            self.attack_leaf(row, move.lo, move.next_disputed)

    def moves_in(self, game_id: int) -> int:
        return sum(1 for t in self.store.txs(game_id=game_id) if t.kind in ("dissect", "pick"))

    @staticmethod
    def other_side_due(row: GameRow, view: GameView) -> bool:
        due = "proposer" if view.turn == Turn.DISSECT else "challenger"
        return due != str(row.role)

    # -- attacks ---------------------------------------------------------------------------------------------
    def try_tx(self, what: str, call: ContractFunction, expected_error: str | None) -> None:
        """Send `call` with explicit gas; record whether it failed with `expected_error` (None: must pass)."""
        try:
            self.chain.transact(self.account, call, gas=ATTACK_GAS)
            got = "success"
        except ChainError as exc:
            got = exc.error_name or str(exc)
        self.evidence.append(
            Evidence(what, expected_error or "success", got, got == (expected_error or "success"))
        )

    def claim_early(self, row: GameRow) -> None:
        call = self.contracts.game.functions.claimTimeout(row.game_id)
        self.try_tx("a timeout claimed before the deadline", call, "DeadlineNotPassed")

    def attack_leaf(self, row: GameRow, pre_step: int, disputed: bytes) -> None:
        """The leaf attacks, each bound to the game's current `disputed` hash (so that each is refused for
        what it attacks, not for naming another dispute)."""
        self.attacked.add(row.game_id)
        trace = self.trace_for(row)
        proof = trace.proof_at(pre_step)
        rng = random.Random(self.misbehaviour.seed)
        step = self.contracts.game.functions.step
        for attack in self.misbehaviour.leaf_attacks:
            if attack == LeafAttack.PREIMAGE:
                self.fabricate_preimages(row, proof, trace, rng)
                what = "the liar's own step before the right part is loaded"
                call = step(row.game_id, disputed, proof.pre_state, proof.proof)
                self.try_tx(what, call, "PreimageNotLoaded")
                continue
            state, witness = malformed_step(attack, proof, rng)
            call = step(row.game_id, disputed, state, witness)
            self.try_tx(f"a step with a {attack} witness", call, MALFORMED_ERRORS[attack])

    def fabricate_preimages(
        self, row: GameRow, proof: StepProof, trace: GameTrace | SplitTrace, rng: random.Random
    ) -> None:
        """Fabricated parts for the key and offset the leaf reads: wrong bytes (lands under another keccak
        key), the right bytes at another offset (another slot), an offset past the stream (reverts). None
        of them may make the leaf's part readable."""
        pre = State.decode(proof.pre_state)
        key, offset = pre.preimage_key, pre.preimage_offset
        if key[0] != KEY_TYPE_KECCAK:
            self.evidence.append(
                Evidence("the leaf reads a keccak part", "a keccak key", f"0x{key.hex()}", False)
            )
            return
        data = trace.preimage(key)
        load = self.contracts.oracle.functions.loadKeccak256PreimagePart
        fake = flip_byte(data, rng)
        self.try_tx(f"load fabricated bytes at offset {offset}", load(offset, fake), None)
        self.check_unreadable(key, offset, "after the fabricated bytes")
        length = 8 + len(data)
        other = rng.randrange(length - 1)
        other += other >= offset  # any offset in the stream but the leaf's
        self.try_tx(f"load the right bytes at offset {other} instead of {offset}", load(other, data), None)
        self.check_unreadable(key, offset, "after a part at another offset")
        past = length + rng.randrange(64)
        self.try_tx(f"load a part at offset {past}, past the stream", load(past, data), "PartOffsetOOB")
        self.check_unreadable(key, offset, "after every fabricated load")

    def check_unreadable(self, key: bytes, offset: int, when: str) -> None:
        loaded = self.responder.part_loaded(key, offset)
        what = f"the leaf's part (offset {offset}) {when}"
        self.evidence.append(Evidence(what, "not loaded", "loaded" if loaded else "not loaded", not loaded))


def flip_byte(data: bytes, rng: random.Random) -> bytes:
    """`data` with one random byte changed (an empty preimage gets a byte instead)."""
    if not data:
        return b"\x01"
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


def malformed_step(attack: LeafAttack, proof: StepProof, rng: random.Random) -> tuple[bytes, bytes]:
    """(pre-state, witness) of the leaf with one thing wrong, as `attack` says."""
    if attack == LeafAttack.PRE_STATE:
        state = State.decode(proof.pre_state)
        state.regs[rng.choice(TAMPER_REGISTERS)] ^= 1 << rng.randrange(32)
        return state.encode(), proof.proof
    if attack == LeafAttack.SIBLINGS:
        level = rng.randint(1, MEM_TREE_DEPTH)  # index 0 is the leaf itself; 1.. are the siblings
        at = 32 * level + rng.randrange(32)
        assert at < MEM_PROOF_SIZE
        return proof.pre_state, proof.proof[:at] + bytes([proof.proof[at] ^ 0x01]) + proof.proof[at + 1 :]
    if attack == LeafAttack.TRUNCATED:
        return proof.pre_state, proof.proof[: PROOF_SIZE - rng.randint(1, PROOF_SIZE - 1)]
    raise ValueError(f"{attack} is not a malformed step")


class LiarNode(Misbehaving, ProverNode):
    """A dishonest prover: `ProverNode` with a tamper, plus the campaign's misbehaviour."""


class LiarChallenger(Misbehaving, Challenger):
    """A dishonest challenger: `Challenger(challenge_correct=True)` with a tamper, plus the misbehaviour."""


# --------------------------------------------------------------------------------------------------------
# Funds
# --------------------------------------------------------------------------------------------------------
def market_invariant(
    chain: Chain, contracts: Contracts, deployment: Deployment, first_block: int
) -> list[str]:
    """docs/protocol.md section 4: the market holds exactly what it owes (fees, bonds of pending results and
    of unsettled challenges, the shares owed to those of discarded results, balances) plus what it burned,
    and it burned exactly what the burn rule says (`burned_by_rule`); the DisputeGame holds nothing."""
    market, params = contracts.market.functions, deployment.params
    owed = 0
    accounts: set[str] = set()
    for ev in chain.events(contracts.market, "InferenceRequested", first_block):
        req = chain.call(market.getRequest(ev["args"]["requestId"]))
        accounts.add(str(req[0]))
        if int(req[2]) in (RequestStatus.OPEN, RequestStatus.PROPOSED):
            owed += int(req[4])
        if int(req[2]) == RequestStatus.PROPOSED:
            owed += params.prover_bond
    for ev in chain.events(contracts.market, "ResultChallenged", first_block):
        accounts.add(str(ev["args"]["challenger"]))
        if not chain.call(market.getChallenge(ev["args"]["gameId"]))[2]:
            owed += params.challenger_bond
            result = chain.call(market.getResult(ev["args"]["resultId"]))
            if result[7]:  # discarded: its share is owed too
                owed += int(result[8])
    accounts |= participants(chain, contracts, first_block)
    owed += sum(int(chain.call(market.balanceOf(a))) for a in accounts)
    burned = int(chain.call(market.burned()))
    problems = []
    held = chain.balance(deployment.market)
    if held != owed + burned:
        problems.append(f"the market holds {held} wei but owes {owed} and burned {burned}")
    by_rule = burned_by_rule(chain, contracts, deployment, first_block)
    if burned != by_rule:
        problems.append(f"the market burned {burned} wei, the burn rule says {by_rule}")
    if chain.balance(deployment.game) != 0:
        problems.append(f"the DisputeGame holds {chain.balance(deployment.game)} wei")
    return problems


def participants(chain: Chain, contracts: Contracts, first_block: int) -> set[str]:
    """Every account that took part in the market since `first_block` (from its events)."""
    found: set[str] = set()
    for event, arg in (
        ("InferenceRequested", "requester"),
        ("ResultPosted", "prover"),
        ("ResultChallenged", "challenger"),
        ("Withdrawal", "account"),
    ):
        found |= {str(ev["args"][arg]) for ev in chain.events(contracts.market, event, first_block)}
    return found


@dataclass(frozen=True)
class Discards:
    """The discards since a block, by the rules (section 4): per discarded result the games open on it when
    it was discarded and the (share, burnt) split of its prover's bond (`MarketParams.discard_split`)."""

    split: dict[int, tuple[int, int]]  # result id -> (share per open game, burnt)
    refunded: set[int]  # games settled after their result's discard (bond + share)


def discards_by_rule(
    chain: Chain, contracts: Contracts, deployment: Deployment, first_block: int
) -> Discards:
    """Before its discard a result's games settle only by a proposer win (a challenger win discards it), so
    the games open at the discard are its challenges minus those the proposer won before it."""
    m = contracts.market
    challenges: dict[int, int] = {}
    for ev in chain.events(m, "ResultChallenged", first_block):
        rid = ev["args"]["resultId"]
        challenges[rid] = challenges.get(rid, 0) + 1
    refunded = {ev["args"]["gameId"] for ev in chain.events(m, "ChallengeRefunded", first_block)}
    proposer_wins: dict[int, int] = {}
    for ev in chain.events(m, "ChallengeResolved", first_block):
        a = ev["args"]
        if a["proposerWon"] and a["gameId"] not in refunded:
            proposer_wins[a["resultId"]] = proposer_wins.get(a["resultId"], 0) + 1
    split = {}
    for ev in chain.events(m, "ResultDiscarded", first_block):
        rid = ev["args"]["resultId"]
        split[rid] = deployment.params.discard_split(challenges[rid] - proposer_wins.get(rid, 0))
    return Discards(split, refunded)


def burned_by_rule(chain: Chain, contracts: Contracts, deployment: Deployment, first_block: int) -> int:
    """Wei the market must have burned since `first_block`: the burnt part of every discard."""
    discards = discards_by_rule(chain, contracts, deployment, first_block)
    return sum(burnt for _, burnt in discards.split.values())


def credits_by_rule(
    chain: Chain, contracts: Contracts, deployment: Deployment, first_block: int
) -> dict[str, int]:
    """What the protocol owes each account from the outcomes on-chain (section 4): finalized results pay
    fee + prover bond to the prover; a proposer win pays the challenger's bond to the prover; a challenger win
    discards the result and pays the challenger its bond and a share of the prover's (`discards_by_rule`:
    the rest is burned); every other challenge of a discarded result gets its bond and the same share when it
    settles; cancelled requests get their fee."""
    params, m = deployment.params, contracts.market
    credit: dict[str, int] = {}

    def pay(account: str, wei: int) -> None:
        credit[account] = credit.get(account, 0) + wei

    provers = {
        ev["args"]["resultId"]: str(ev["args"]["prover"])
        for ev in chain.events(m, "ResultPosted", first_block)
    }
    challengers = {
        ev["args"]["gameId"]: (str(ev["args"]["challenger"]), ev["args"]["resultId"])
        for ev in chain.events(m, "ResultChallenged", first_block)
    }
    discards = discards_by_rule(chain, contracts, deployment, first_block)
    for ev in chain.events(m, "ResultFinalized", first_block):
        pay(str(ev["args"]["prover"]), int(ev["args"]["fee"]) + params.prover_bond)
    for gid in discards.refunded:
        challenger, rid = challengers[gid]
        pay(challenger, params.challenger_bond + discards.split[rid][0])
    for ev in chain.events(m, "ChallengeResolved", first_block):
        a = ev["args"]
        if a["gameId"] in discards.refunded:
            continue
        if a["proposerWon"]:
            pay(provers[a["resultId"]], params.challenger_bond)
        else:
            share, _ = discards.split[a["resultId"]]
            pay(challengers[a["gameId"]][0], params.challenger_bond + share)
    for ev in chain.events(m, "RequestCancelled", first_block):
        req = chain.call(m.functions.getRequest(ev["args"]["requestId"]))
        pay(str(req[0]), int(req[4]))
    return credit


def withdrawn(chain: Chain, contracts: Contracts, account: str, first_block: int) -> int:
    """Wei `account` withdrew from the market since `first_block`."""
    evs = chain.events(contracts.market, "Withdrawal", first_block, account=account)
    return sum(int(ev["args"]["amount"]) for ev in evs)


def credited(chain: Chain, contracts: Contracts, account: str, first_block: int) -> int:
    """What the market paid `account` so far: its withdrawals plus its balance still in the market."""
    balance = int(chain.call(contracts.market.functions.balanceOf(account)))
    return withdrawn(chain, contracts, account, first_block) + balance


@dataclass
class EthFlows:
    """Per account, over a block range: wei sent with successful transactions, gas paid, tips received."""

    sent: dict[str, int] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)
    tips: dict[str, int] = field(default_factory=dict)
    total_gas: int = 0
    txs: int = 0
    reverted: int = 0


def eth_flows(chain: Chain, first_block: int, last_block: int) -> EthFlows:
    """Scan every transaction of the blocks (what each party paid in value and gas; the block's miner gets
    the priority fees)."""
    flows = EthFlows()
    for n in range(first_block, last_block + 1):
        block = chain.w3.eth.get_block(n, full_transactions=True)
        base_fee = int(block.get("baseFeePerGas") or 0)
        for tx in block["transactions"]:
            assert not isinstance(tx, bytes)
            receipt = chain.w3.eth.get_transaction_receipt(tx["hash"])
            sender, used, price = str(tx["from"]), int(receipt["gasUsed"]), int(receipt["effectiveGasPrice"])
            flows.gas[sender] = flows.gas.get(sender, 0) + used * price
            miner = str(block["miner"])
            flows.tips[miner] = flows.tips.get(miner, 0) + used * (price - base_fee)
            if receipt["status"] == 1:
                flows.sent[sender] = flows.sent.get(sender, 0) + int(tx["value"])
            else:
                flows.reverted += 1
            flows.total_gas += used
            flows.txs += 1
    return flows


def eth_problems(
    chain: Chain, contracts: Contracts, flows: EthFlows, before: dict[str, int], first_block: int
) -> list[str]:
    """Each account's ether moved exactly by: withdrawals in - value out - gas (+ tips if it mined)."""
    problems = []
    for account, start in before.items():
        paid_out = flows.sent.get(account, 0) + flows.gas.get(account, 0) - flows.tips.get(account, 0)
        expected = start + withdrawn(chain, contracts, account, first_block) - paid_out
        actual = chain.balance(account)
        if actual != expected:
            problems.append(f"{account[:10]} holds {actual} wei, its transactions explain {expected}")
    return problems


# --------------------------------------------------------------------------------------------------------
# One fault, end to end
# --------------------------------------------------------------------------------------------------------
@dataclass
class FaultResult:
    """One fault's outcome: the report's row, and the JSON of `--json`."""

    index: int
    kind: str
    model: str
    liar: str
    detail: str
    input: str
    caught: bool = False
    honest_won: bool = False
    funds_conserved: bool = False
    winner: str = ""
    ending: str = ""  # "step at N" or "timeout"
    rounds: int = 0
    game_gas: int = 0
    gas: int = 0  # every transaction of the fault after the deployment
    txs: int = 0
    reverted: int = 0  # mined transactions that reverted (the liar's attacks)
    seconds: float = 0.0
    evidence: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    agent_errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.caught and self.honest_won and self.funds_conserved


@dataclass(frozen=True)
class Actors:
    """The accounts of every fault: the dApp (also the deployer), two provers and two challengers."""

    dapp: LocalAccount
    node: LocalAccount
    liar_node: LocalAccount
    challenger: LocalAccount
    liar_challenger: LocalAccount

    @classmethod
    def of(cls, chain: Chain) -> Actors:
        accounts = chain.dev_accounts()
        if len(accounts) < 5:
            raise RuntimeError(f"the campaign needs 5 funded dev accounts, the chain has {len(accounts)}")
        return cls(*accounts[:5])

    def all(self) -> list[LocalAccount]:
        return [self.dapp, self.node, self.liar_node, self.challenger, self.liar_challenger]


class AgentErrors(logging.Handler):
    """Counts the `error` events each agent logs (kept out of the console; reported per fault)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "error":
            name = record.name.rsplit(".", 1)[-1]
            self.counts[name] = self.counts.get(name, 0) + 1


class FaultRun:
    """Plays one `Setup` on a fresh deployment and checks it (see the module docstring).

    The agents tick honest first, liar last, so that after each round of `play_until` the honest party is
    the one due (the outage of `honest-offline` starts there).
    """

    def __init__(self, chain: Chain, actors: Actors, setup: Setup, model: bytes, workdir: Path) -> None:
        self.chain, self.actors, self.setup, self.model = chain, actors, setup, model
        self.world = World.create(chain, workdir / f"fault-{setup.spec.index:04d}", {setup.spec.model: model})
        self.deployment = self.world.deployment
        self.contracts = self.world.contracts
        self.params = self.deployment.params
        self.first_block = chain.block_number() + 1
        self.before = {str(a.address): chain.balance(a.address) for a in actors.all()}
        self.errors = AgentErrors()
        spec = setup.spec
        self.result = FaultResult(
            spec.index, spec.kind, spec.model, setup.liar, setup.detail, setup.input_desc
        )
        self.request_id = 0
        self.evidence_ok = True  # every Evidence of the fault as expected so far
        # split claims for the split kinds, else VM claims (a forged VM state, step count, leaf proof ...)
        self.node: ProverNode = self.agent(ProverNode, actors.node, "node", split=setup.split)
        self.challenger: Challenger = self.agent(Challenger, actors.challenger, "challenger")
        self.liar: LiarNode | LiarChallenger = self.make_liar()

    def agent(self, cls: Callable[..., Any], account: LocalAccount, name: str, **kw: Any) -> Any:
        """An agent on this fault's deployment, with its own store and a quiet logger."""
        log = logging.getLogger(f"rollml.harness.campaign.{name}")
        log.propagate = False
        log.setLevel(logging.WARNING)
        return self.world.agent(cls, account, name, log, **kw)

    def make_liar(self) -> LiarNode | LiarChallenger:
        s = self.setup
        if s.liar == Side.PROVER:
            return self.agent(
                LiarNode,
                self.actors.liar_node,
                "liar",
                tamper=s.tamper,
                misbehaviour=s.misbehaviour,
                split=s.split,
            )
        return self.agent(
            LiarChallenger,
            self.actors.liar_challenger,
            "liar",
            tamper=s.tamper,
            challenge_correct=True,
            misbehaviour=s.misbehaviour,
        )

    @property
    def agents(self) -> list[Agent]:
        honest: list[Agent] = [self.challenger, self.node] if self.setup.liar == Side.PROVER else [self.node]
        return [*honest, self.liar]

    @property
    def honest_party(self) -> Agent:
        """The honest agent in the game."""
        return self.challenger if self.setup.liar == Side.PROVER else self.node

    # -- reading the chain -----------------------------------------------------------------------------------
    def request_status(self) -> int:
        return request_status(self.chain, self.contracts, self.request_id)

    def game_id(self) -> int | None:
        evs = self.chain.events(self.contracts.market, "ResultChallenged", self.first_block)
        return int(evs[0]["args"]["gameId"]) if evs else None

    def game_status(self, gid: int) -> GameStatus:
        return game_status(self.chain, self.contracts, gid)

    def game_over(self) -> bool:
        gid = self.game_id()
        return gid is not None and self.game_status(gid) != GameStatus.ACTIVE

    def honest_due_after(self, liar_moves: int) -> bool:
        """Mid-game, the honest party due to dissect or pick, after `liar_moves` moves of the liar (or the
        game is over: nothing to wait for)."""
        gid = self.game_id()
        if gid is None:
            return False
        g = self.chain.call(self.contracts.game.functions.getGame(gid))
        status, turn = GameStatus(int(g[3])), Turn(int(g[4]))
        if status != GameStatus.ACTIVE:
            return True
        due = Side.PROVER if turn == Turn.DISSECT else Side.CHALLENGER
        return due == self.setup.honest_side and turn != Turn.STEP and self.liar.moves_in(gid) >= liar_moves

    # -- playing ---------------------------------------------------------------------------------------------
    def play(self, agents: Sequence[Agent], done: Callable[[], bool], idle: bool = True) -> None:
        play_until(self.chain, agents, done, MAX_TICKS, self.world.idle_advance if idle else None)

    def run(self) -> FaultResult:
        """Request, first post, the game, the funds after it, finalization, the checks."""
        t0 = time.perf_counter()
        loggers = [logging.getLogger(f"rollml.harness.campaign.{n}") for n in ("node", "challenger", "liar")]
        for lg in loggers:
            lg.addHandler(self.errors)
        try:
            self.request()
            self.post_first()
            self.play_game()
            self.result.problems += [f"after the game: {p}" for p in self.funds_now()]
            self.play(self.agents, lambda: self.request_status() == RequestStatus.FINALIZED)
            self.check()
        except Exception as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
            self.result.caught = self.result.honest_won = self.result.funds_conserved = False
        finally:
            for lg in loggers:
                lg.removeHandler(self.errors)
            for a in (self.node, self.challenger, self.liar):
                a.close()
                a.store.close()
        self.result.agent_errors = dict(self.errors.counts)
        self.result.seconds = round(time.perf_counter() - t0, 2)
        return self.result

    def request(self) -> None:
        """The dApp account asks for the fault's model on the fault's input."""
        self.request_id = self.world.request(self.model, self.setup.payload, self.actors.dapp)

    def post_first(self) -> None:
        """The liar prover posts first (its wrong result is the fault); else the honest node does."""
        poster: Agent = self.liar if self.setup.liar == Side.PROVER else self.node
        self.play([poster], lambda: self.request_status() == RequestStatus.PROPOSED, idle=False)

    def play_game(self) -> None:
        if self.setup.outage_after is not None:
            after = self.setup.outage_after
            self.play(self.agents, lambda: self.honest_due_after(after))
            self.outage()
        self.play(self.agents, self.game_over)

    def outage(self) -> None:
        """The honest party is away for `outage_seconds` (< the move timeout): only the liar ticks while
        the clock jumps; the game must still be on, its deadline ahead, when the honest party is back."""
        seconds = self.setup.outage_seconds or 0
        gid = self.game_id()
        assert gid is not None
        for i in range(OFFLINE_CHUNKS):
            self.chain.advance_time(seconds // OFFLINE_CHUNKS + (seconds % OFFLINE_CHUNKS if i == 0 else 0))
            self.liar.tick()
        deadline = int(self.chain.call(self.contracts.game.functions.getGame(gid))[2])
        on = self.game_status(gid) == GameStatus.ACTIVE and self.chain.now() <= deadline
        self.evidence(f"back after {seconds} s", "game on, deadline ahead", "yes" if on else "no", on)

    # -- checking --------------------------------------------------------------------------------------------
    def evidence(self, what: str, expected: str, got: str, ok: bool) -> None:
        self.result.evidence.append(Evidence(what, expected, got, ok).line())
        if not ok:
            self.evidence_ok = False
            self.result.problems.append(f"{what}: expected {expected}, got {got}")

    def funds_now(self) -> list[str]:
        return market_invariant(self.chain, self.contracts, self.deployment, self.first_block)

    def check(self) -> None:
        """Caught, honest win, funds conserved (see the module docstring)."""
        gid = self.game_id()
        if gid is None:
            raise RuntimeError("no game was played")
        report = game_report(self.chain, self.contracts, gid, self.first_block)
        r = self.result
        r.rounds, r.game_gas = report.rounds, report.gas
        r.ending = "timeout" if report.by_timeout else f"step at {self.leaf_stepped(gid):,}"
        honest_won_game = (report.status == GameStatus.PROPOSER_WON) == (self.setup.liar == Side.CHALLENGER)
        r.winner = f"honest {self.honest_name}" if honest_won_game else "liar"
        for ev in self.liar.evidence:
            self.evidence(ev.what, ev.expected, ev.got, ev.ok)
        self.check_kind(gid, report.by_timeout, [t.sender for t in report.txs if t.kind == "timeout"])
        r.caught = self.liar_lost(gid) and self.evidence_ok
        r.honest_won = honest_won_game and self.check_payouts()
        funds = self.check_funds()
        r.funds_conserved = not funds and not any(p.startswith("after the game") for p in r.problems)
        r.problems += funds

    @property
    def honest_name(self) -> str:
        return "challenger" if self.setup.liar == Side.PROVER else "node"

    def leaf_stepped(self, gid: int) -> int:
        evs = self.chain.events(self.contracts.game, "Stepped", self.first_block, gameId=gid)
        return int(evs[-1]["args"]["lo"]) if evs else -1

    def liar_lost(self, gid: int) -> bool:
        """The wrong claim does not stand: the liar's result was discarded, or the liar's challenge lost;
        and the request finalized with the honest output."""
        m = self.contracts.market
        if self.setup.liar == Side.PROVER:
            posted = self.chain.events(m, "ResultPosted", self.first_block, prover=self.liar.address)
            ids = [ev["args"]["resultId"] for ev in posted]
            lost = bool(ids) and all(self.chain.call(m.functions.getResult(i))[7] for i in ids)
        else:
            lost = self.game_status(gid) == GameStatus.PROPOSER_WON
        (final,) = self.chain.events(m, "ResultFinalized", self.first_block, requestId=self.request_id)
        output_hash = bytes(self.chain.call(m.functions.getResult(final["args"]["resultId"]))[3])
        honest = output_hash == keccak256(self.setup.honest.output)
        self.evidence("the request finalized", "the honest output", "honest" if honest else "wrong", honest)
        return lost and honest

    def check_kind(self, gid: int, by_timeout: bool, timeout_senders: list[str]) -> None:
        """What the fault's kind must show beyond the outcome."""
        s = self.setup
        if s.claim is not None:
            self.check_posted_claim(s.claim)
        stall = s.misbehaviour.stall_after
        if stall is not None:
            made = self.liar.moves_in(gid)
            self.evidence("the liar's moves before it stopped", str(stall), str(made), made == stall)
            honest_claim = by_timeout and timeout_senders == [self.honest_party.address]
            ended = f"a timeout claimed by {timeout_senders}" if by_timeout else "a step"
            self.evidence("the game ended by", "a timeout the honest side claimed", ended, honest_claim)
        elif s.expected_leaf is not None:
            leaf = self.leaf_stepped(gid)
            got = f"step {leaf:,}" if leaf >= 0 else "no step"
            ok = leaf == s.expected_leaf and not by_timeout
            self.evidence("the leaf executed", f"step {s.expected_leaf:,}", got, ok)
        if s.lie_exec is not None:
            opened = self.chain.events(self.contracts.game, "Opened", self.first_block, gameId=gid)
            at = int(opened[0]["args"]["exec"]) if opened else -1
            got = f"execution {at:,}" if opened else "no open"
            ok = at == s.lie_exec and not by_timeout
            self.evidence("the top level opened", f"execution {s.lie_exec:,}", got, ok)
        if s.outage_after is not None:
            early = sum("before the deadline" in e.what for e in self.liar.evidence)
            self.evidence("timeout claims during the outage", "at least one", str(early), early > 0)
        if s.misbehaviour.leaf_attacks and not self.liar.attacked:
            self.evidence("the liar's leaf attack", "attempted", "never reached the leaf", False)
        if LeafAttack.PREIMAGE in s.misbehaviour.leaf_attacks:
            last = [t.kind for t in self.honest_party.store.txs(game_id=gid)][-2:]
            ok = last == ["load_preimage", "step"]
            self.evidence("the honest side's last moves", "load_preimage, step", ", ".join(last), ok)

    def check_posted_claim(self, claim: Claim) -> None:
        """The liar node posted the very claim the setup drew (the fault injected is the one reported)."""
        evs = self.chain.events(
            self.contracts.market, "ResultPosted", self.first_block, prover=self.liar.address
        )
        posted = [(bytes(ev["args"]["finalStateHash"]), int(ev["args"]["steps"])) for ev in evs]
        ok = posted == [(claim.final_hash, claim.steps)]
        got = ", ".join(f"{n:,} steps" for _, n in posted) or "nothing"
        self.evidence("the liar's posted claim", f"the drawn one ({claim.steps:,} steps)", got, ok)

    def check_payouts(self) -> bool:
        """The honest agents got exactly the protocol's pay, the liar and the dApp nothing."""
        p = self.params
        fee = int(self.chain.call(self.contracts.market.functions.getRequest(self.request_id))[4])
        expected = {self.liar.address: 0, self.actors.dapp.address: 0}
        if self.setup.liar == Side.PROVER:  # one game on the liar's result: the whole unburned part
            expected[self.node.address] = fee + p.prover_bond
            expected[self.challenger.address] = p.challenger_bond + p.discard_split(1)[0]
        else:
            expected[self.node.address] = fee + p.prover_bond + p.challenger_bond
        ok = True
        for account, wei in expected.items():
            got = credited(self.chain, self.contracts, account, self.first_block)
            if got != wei:
                ok = False
                self.result.problems.append(f"{account[:10]} was paid {got} wei, the protocol says {wei}")
        return ok

    def check_funds(self) -> list[str]:
        """The invariant, the rule-derived credits of every party, and every ether movement explained."""
        problems = self.funds_now()
        rule = credits_by_rule(self.chain, self.contracts, self.deployment, self.first_block)
        for account in participants(self.chain, self.contracts, self.first_block) | set(rule):
            got = credited(self.chain, self.contracts, account, self.first_block)
            if got != rule.get(account, 0):
                problems.append(
                    f"{account[:10]} was credited {got} wei, the outcomes say {rule.get(account, 0)}"
                )
        flows = eth_flows(self.chain, self.first_block, self.chain.block_number())
        self.result.gas, self.result.txs, self.result.reverted = flows.total_gas, flows.txs, flows.reverted
        problems += eth_problems(self.chain, self.contracts, flows, self.before, self.first_block)
        return problems


# --------------------------------------------------------------------------------------------------------
# The campaign
# --------------------------------------------------------------------------------------------------------
@dataclass
class CampaignReport:
    results: list[FaultResult]
    seconds: float
    chain: str
    seed: int | None = None

    @property
    def injected(self) -> int:
        return len(self.results)

    @property
    def caught(self) -> int:
        return sum(r.caught for r in self.results)

    @property
    def honest_wins(self) -> int:
        return sum(r.honest_won for r in self.results)

    @property
    def funds_conserved(self) -> bool:
        return all(r.funds_conserved for r in self.results)

    @property
    def ok(self) -> bool:
        """Every fault caught, won by the honest side, funds conserved: the CLI's exit status."""
        return bool(self.results) and all(r.ok for r in self.results)

    def summary(self) -> str:
        """The report's last line."""
        return (
            f"faults: {self.injected} injected, {self.caught} caught, {self.honest_wins} honest wins, "
            f"funds conserved: {'yes' if self.funds_conserved else 'no'}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "seed": self.seed,
            "faults": [asdict(r) for r in self.results],
            "injected": self.injected,
            "caught": self.caught,
            "honest_wins": self.honest_wins,
            "funds_conserved": self.funds_conserved,
            "gas": sum(r.gas for r in self.results),
            "seconds": self.seconds,
            "ok": self.ok,
            "summary": self.summary(),
        }


def run_fault(chain: Chain, actors: Actors, spec: FaultSpec, workdir: Path) -> FaultResult:
    """Draw and play one fault; a failure to even set it up is reported as a fault not caught."""
    if isinstance(spec.kind, TrainingFaultKind):
        from rollml.harness.training_faults import run_training_fault  # it builds on this module

        return run_training_fault(chain, spec, workdir)
    t0 = time.perf_counter()
    try:
        model = models.reference_model(spec.model)
        setup = draw_setup(spec, model, DEV_PARAMS.max_steps, DEV_MOVE_TIMEOUT)
        return FaultRun(chain, actors, setup, model, workdir).run()
    except Exception as exc:
        result = FaultResult(spec.index, str(spec.kind), spec.model, FIXED_SIDE.get(spec.kind, "?"), "", "")
        result.error = f"setup failed: {type(exc).__name__}: {exc}"
        result.seconds = round(time.perf_counter() - t0, 2)
        return result


def run_campaign(
    chain: Chain,
    plan: Iterable[FaultSpec],
    on_start: Callable[[FaultSpec], None] | None = None,
    on_result: Callable[[FaultResult], None] | None = None,
    seed: int | None = None,
) -> CampaignReport:
    """Play every fault of `plan` in turn (each on its own deployment of the same chain)."""
    t0 = time.perf_counter()
    actors = Actors.of(chain)
    results = []
    with tempfile.TemporaryDirectory(prefix="rollml-campaign-") as tmp:
        for spec in plan:
            if on_start is not None:
                on_start(spec)
            result = run_fault(chain, actors, spec, Path(tmp))
            results.append(result)
            if on_result is not None:
                on_result(result)
    return CampaignReport(results, round(time.perf_counter() - t0, 2), chain.url, seed)
