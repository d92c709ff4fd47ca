"""The dispute solver: on-chain game state + our trace -> our next move (docs/protocol.md, "Dispute game").

Pure decision logic shared by the prover node (defending its results) and the challenger: no chain I/O.
The caller reads the game from `DisputeGame.getGame` (and the hashes of the last `Dissected` event), asks
`next_move`, and sends the move. The rules mirror contracts/src/DisputeGame.sol:

- the interval [lo, hi] has an agreed state hash at `lo` and the proposer's disputed hash at `hi`;
- `Dissect`: the proposer posts its hashes at the interior points of `dissection_points(lo, hi, arity)`;
- `Pick`: the challenger resubmits them with the index of the first sub-interval whose end it disagrees with;
- `Step` (hi - lo == 1): the pre-state at `lo` is executed on-chain; the proposer wins iff the post-state hash
  equals its hash at `hi`. The challenger is due, anyone may step;
- a party that misses its deadline loses when anyone claims the timeout (moves after the deadline revert,
  except the step, which stays possible until the timeout is claimed);
- every move names the disputed hash it answers (`disputed`: the `disputed_hash` of the view it was decided
  on) and reverts with `DisputedHashMismatch` unless it is still the game's, so a move replayed by a reorg
  into another game, or sent after the game moved on, never lands in a dispute it was not decided for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

MAX_ARITY = 64


class Turn(IntEnum):
    """`IDisputeGame.Turn`: who is due."""

    DISSECT = 0  # the proposer posts a dissection
    PICK = 1  # the challenger picks a sub-interval
    STEP = 2  # one-step interval: the challenger (or anyone) executes the step
    OPEN = 3  # a split game's top-level leaf: the proposer opens the bottom level (rollml/core/split.py)


class GameStatus(IntEnum):
    """`IDisputeGame.Status`."""

    NONE = 0
    ACTIVE = 1
    PROPOSER_WON = 2
    CHALLENGER_WON = 3
    CANCELLED = 4


class Role(StrEnum):
    """Who we are in a game: the one vocabulary of the solver, the agents' stores and the agents."""

    PROPOSER = "proposer"  # posted the claim (the prover); dissects
    CHALLENGER = "challenger"  # disputes the claim; picks and steps
    WATCHER = "watcher"  # a third party helping the truthful side (`watch_move`: timeouts and steps only)


@dataclass(frozen=True)
class GameView:
    """What the solver needs of one game, as read from the chain.

    `posted` holds the hashes of the last dissection (from the `Dissected` event); it is needed only while
    `turn == PICK`.
    """

    lo: int
    hi: int
    agreed_hash: bytes
    disputed_hash: bytes
    turn: Turn
    deadline: int
    arity: int
    status: GameStatus = GameStatus.ACTIVE
    posted: tuple[bytes, ...] = ()
    top: bool = False  # a split game at its top level: the hashes are state roots S_k, lo/hi executions
    split: bool = False  # a split game (at either level)


@dataclass(frozen=True)
class Wait:
    """Nothing to send now (not our turn, the game is over, or only the other side can still act)."""

    reason: str


@dataclass(frozen=True)
class Dissect:
    """`DisputeGame.dissect(gameId, disputed, hashes)`: our hashes at `points[1:-1]`."""

    points: tuple[int, ...]
    hashes: tuple[bytes, ...]
    disputed: bytes  # the game's disputed hash the move answers


@dataclass(frozen=True)
class Pick:
    """`DisputeGame.pick(gameId, disputed, hashes, index)`: the sub-interval [lo, hi] =
    [points[index], points[index + 1]]."""

    hashes: tuple[bytes, ...]
    index: int
    lo: int
    hi: int
    disputed: bytes  # the game's disputed hash the move answers

    @property
    def next_disputed(self) -> bytes:
        """The game's disputed hash after this pick: the posted hash at the sub-interval's end, or the same
        one for the last sub-interval (as `DisputeGame.pick` sets it)."""
        return self.hashes[self.index] if self.index < len(self.hashes) else self.disputed


@dataclass(frozen=True)
class Step:
    """`DisputeGame.step(gameId, disputed, state, proof)` with our state at step `pre_step` and its proof.

    The keccak preimage part the step reads (if any) must be loaded into the oracle first (anyone may).
    """

    pre_step: int
    disputed: bytes  # the game's disputed hash the move answers


@dataclass(frozen=True)
class Open:
    """`DisputeGame.open(gameId, disputed, ...)` at a split game's top leaf [hi - 1, hi]: the proposer opens
    the bottom level on execution `exec` = hi (`rollml.core.split.open_args` builds the record and proofs)."""

    exec: int
    disputed: bytes  # the game's disputed hash (the root of S_hi) the move answers


@dataclass(frozen=True)
class ClaimTimeout:
    """`DisputeGame.claimTimeout(gameId)`: the other side missed its deadline."""


Move = Wait | Dissect | Pick | Step | Open | ClaimTimeout
HashFn = Callable[[int], bytes]


def dissection_points(lo: int, hi: int, arity: int) -> list[int]:
    """The k+1 points of a round over [lo, hi]: k = min(arity, hi - lo), p_i = lo + (hi - lo) * i // k.

    Mirrors `DisputeGame.dissectionPoints`: the points are distinct, p_0 = lo and p_k = hi.
    """
    if not 2 <= arity <= MAX_ARITY:
        raise ValueError(f"arity must be in 2..{MAX_ARITY}, got {arity}")
    if hi <= lo:
        return []
    n = hi - lo
    k = min(arity, n)
    return [lo + n * i // k for i in range(k + 1)]


def rounds_needed(steps: int, arity: int) -> int:
    """Dissection rounds from [0, steps] down to a one-step interval (worst case over the picks)."""
    rounds, n = 0, steps
    while n > 1:
        k = min(arity, n)
        n = -(-n // k)  # the widest sub-interval
        rounds += 1
    return rounds


# Dispute cost classes by the steps T of a run: what an honest party re-executes (the whole run, then
# queries of at most T / 32 steps from its snapshots) and how many rounds the game has at arity 16.
COST_CLASSES = (
    (16**7, "light"),  # up to ~268M steps: seconds in the fast VM, <= 7 rounds
    (16**8, "medium"),  # up to ~4.3G steps: under a minute, 8 rounds
    (16**9, "heavy"),  # up to ~69G steps: minutes, 9 rounds
)


@dataclass(frozen=True)
class DisputeCost:
    """What disputing one run of `steps` steps costs: its class, the rounds and moves of the game."""

    steps: int
    arity: int
    rounds: int
    moves: int  # a dissect and a pick per round, then the one-step proof
    cost_class: str  # light, medium, heavy or extreme (beyond 16^9 steps: tens of minutes and more)


def dispute_cost(steps: int, arity: int) -> DisputeCost:
    """The dispute cost class of a run of `steps` steps (at least 1) in a game of `arity`."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rounds = rounds_needed(steps, arity)
    cls = next((name for limit, name in COST_CLASSES if steps <= limit), "extreme")
    return DisputeCost(steps, arity, rounds, 2 * rounds + 1, cls)


def first_disagreement(posted: Sequence[bytes], points: Sequence[int], our_hash: HashFn) -> int:
    """The index of the first sub-interval whose end we disagree with (the challenger's pick).

    `posted[j]` is the proposer's hash at `points[j + 1]`; the last sub-interval ends at the disputed hash.
    When we agree with every posted hash the disagreement is at the end: index k - 1.
    """
    k = len(points) - 1
    if len(posted) != k - 1:
        raise ValueError(f"{k - 1} posted hashes expected for {k} sub-intervals, got {len(posted)}")
    for j, h in enumerate(posted):
        if our_hash(points[j + 1]) != h:
            return j
    return k - 1


def next_move(game: GameView, role: Role, our_hash: HashFn, now: int, eager_step: bool = True) -> Move:
    """Our next move in `game` as `role`, with `our_hash(n)` the state hash after n steps of our trace.

    `now` is the latest block timestamp. With `eager_step`, a proposer whose leaf step would win executes it
    at once instead of waiting for the challenger's deadline (faster finalization, costs the step's gas).
    """
    if game.status != GameStatus.ACTIVE:
        return Wait(f"game over: {game.status.name}")
    due = Role.PROPOSER if game.turn in (Turn.DISSECT, Turn.OPEN) else Role.CHALLENGER
    late = now > game.deadline

    if game.turn == Turn.OPEN:  # a split game's top leaf: the proposer opens or loses by timeout
        if late:
            return (
                ClaimTimeout() if role != Role.PROPOSER else Wait("we missed our deadline: moves revert now")
            )
        if role == Role.PROPOSER:
            return Open(exec=game.hi, disputed=game.disputed_hash)
        return Wait(f"the proposer is due to open until {game.deadline}")
    if game.turn == Turn.STEP:
        return _leaf_move(game, role, our_hash, late, eager_step)
    if late:
        if due != role:
            return ClaimTimeout()
        return Wait("we missed our deadline: moves revert now")
    if due != role:
        return Wait(f"the {due.value} is due until {game.deadline}")

    points = dissection_points(game.lo, game.hi, game.arity)
    if game.turn == Turn.DISSECT:
        hashes = tuple(our_hash(p) for p in points[1:-1])
        return Dissect(points=tuple(points), hashes=hashes, disputed=game.disputed_hash)
    index = first_disagreement(game.posted, points, our_hash)
    return Pick(
        hashes=tuple(game.posted),
        index=index,
        lo=points[index],
        hi=points[index + 1],
        disputed=game.disputed_hash,
    )


def _leaf_move(game: GameView, role: Role, our_hash: HashFn, late: bool, eager_step: bool) -> Move:
    """At a one-step interval the step decides: the proposer wins iff post(lo) == disputed_hash."""
    if game.hi - game.lo != 1:
        raise ValueError(f"a step needs a one-step interval, got [{game.lo}, {game.hi}]")
    can_step = our_hash(game.lo) == game.agreed_hash
    proposer_wins = our_hash(game.hi) == game.disputed_hash  # what the step gives, if our trace is right
    we_win = proposer_wins == (role == Role.PROPOSER)
    if role == Role.PROPOSER:
        if late:
            return ClaimTimeout()  # the challenger was due: cheaper than the step
        if we_win and can_step and eager_step:
            return Step(pre_step=game.lo, disputed=game.disputed_hash)
        return Wait(f"the challenger is due to step until {game.deadline}")
    # challenger: due to step; the step also stays valid past the deadline until a timeout is claimed
    if we_win and can_step:
        return Step(pre_step=game.lo, disputed=game.disputed_hash)
    if not can_step:
        return Wait("our trace does not have the agreed pre-state: we cannot step")
    return Wait("the step would not win: our trace agrees with the proposer's hash here")


def watch_move(game: GameView, proposer_is_right: bool, our_hash: HashFn, now: int) -> Move:
    """A third party's move in a game between others, helping the side that tells the truth.

    A non-party can neither dissect nor pick; it can only `claimTimeout` and `step` (anyone may). So it
    helps only where a party failed to act: once the deadline passed it claims the timeout if the party due
    is the lying one, and it executes the leaf step for a truthful challenger that did not step (a timeout
    claim would make that challenger lose). A truthful party that misses a dissection or pick cannot be
    helped. `proposer_is_right` is our verdict on the claim (verified off-chain).
    """
    if game.status != GameStatus.ACTIVE:
        return Wait(f"game over: {game.status.name}")
    due = Role.PROPOSER if game.turn in (Turn.DISSECT, Turn.OPEN) else Role.CHALLENGER
    if now <= game.deadline:
        return Wait(f"the {due.value} is due until {game.deadline}")
    liar = Role.CHALLENGER if proposer_is_right else Role.PROPOSER
    if due == liar:
        return ClaimTimeout()
    if game.turn == Turn.STEP:  # the truthful challenger did not step: the step still makes it win
        if game.hi - game.lo != 1:
            raise ValueError(f"a step needs a one-step interval, got [{game.lo}, {game.hi}]")
        if our_hash(game.lo) == game.agreed_hash and our_hash(game.hi) != game.disputed_hash:
            return Step(pre_step=game.lo, disputed=game.disputed_hash)
        return Wait("our trace does not confirm the truthful challenger's leaf: not stepping")
    return Wait(f"the truthful {due.value} is late: only it can move, a timeout claim would hurt it")
