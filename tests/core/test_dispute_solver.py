"""The dispute solver (rollml/core/dispute.py) against a Python model of DisputeGame.sol."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from mipsvm.hashing import keccak256
from rollml.core.dispute import (
    ClaimTimeout,
    Dissect,
    GameStatus,
    GameView,
    HashFn,
    Move,
    Pick,
    Role,
    Step,
    Turn,
    Wait,
    dissection_points,
    first_disagreement,
    next_move,
    rounds_needed,
    watch_move,
)

TIMEOUT = 3600


# ---------------------------------------------------------------------------------------------------------
# Traces: states are (trace, n); the honest trace exits at `exit_step` (a fixed point from then on); a
# tampered trace equals it before `tamper_at` and follows trace "bad" from there (self-consistent after the
# one wrong transition tamper_at - 1 -> tamper_at, as a cheating prover's would be).
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trace:
    exit_step: int
    tamper_at: int | None = None  # None: honest

    def hash(self, n: int) -> bytes:
        name = b"bad" if self.tamper_at is not None and n >= self.tamper_at else b"honest"
        return _h(name, min(n, self.exit_step))


def _h(name: bytes, n: int) -> bytes:
    return keccak256(name + n.to_bytes(8, "big"))


def true_step(pre_hash: bytes, n: int, exit_step: int) -> bytes:
    """What MIPS.step returns for the state at step n whose hash is pre_hash (of either trace family)."""
    for name in (b"honest", b"bad"):
        if pre_hash == _h(name, min(n, exit_step)):
            return _h(name, min(n + 1, exit_step))
    raise AssertionError("no state with that hash: the step reverts")


# ---------------------------------------------------------------------------------------------------------
# A model of DisputeGame.sol (same rules, same reverts as assertions)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SimGame:
    arity: int
    start: bytes
    claim: bytes
    steps: int
    exit_step: int
    now: int = 1_000
    lo: int = 0
    hi: int = 0
    agreed: bytes = b""
    disputed: bytes = b""
    turn: Turn = Turn.DISSECT
    status: GameStatus = GameStatus.ACTIVE
    deadline: int = 0
    posted: tuple[bytes, ...] = ()
    moves: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.steps >= 1
        self.hi = self.steps
        self.agreed, self.disputed = self.start, self.claim
        self.turn = Turn.STEP if self.steps == 1 else Turn.DISSECT
        self.deadline = self.now + TIMEOUT

    def view(self) -> GameView:
        return GameView(
            lo=self.lo,
            hi=self.hi,
            agreed_hash=self.agreed,
            disputed_hash=self.disputed,
            turn=self.turn,
            deadline=self.deadline,
            arity=self.arity,
            status=self.status,
            posted=self.posted,
        )

    def apply(self, role: Role, move: Move, trace: Trace) -> None:
        assert self.status == GameStatus.ACTIVE
        if isinstance(move, Dissect | Pick | Step):
            assert move.disputed == self.disputed, "DisputedHashMismatch: the move answers another dispute"
        if isinstance(move, Dissect):
            assert role == Role.PROPOSER and self.turn == Turn.DISSECT and self.now <= self.deadline
            pts = dissection_points(self.lo, self.hi, self.arity)
            assert list(move.points) == pts and len(move.hashes) == len(pts) - 2
            self.posted, self.turn = move.hashes, Turn.PICK
            self.deadline = self.now + TIMEOUT
        elif isinstance(move, Pick):
            assert role == Role.CHALLENGER and self.turn == Turn.PICK and self.now <= self.deadline
            assert move.hashes == self.posted
            pts = dissection_points(self.lo, self.hi, self.arity)
            k, i = len(pts) - 1, move.index
            assert 0 <= i < k
            if i > 0:
                self.agreed = self.posted[i - 1]
            if i < k - 1:
                self.disputed = self.posted[i]
            self.lo, self.hi = pts[i], pts[i + 1]
            assert move.next_disputed == self.disputed
            self.turn = Turn.STEP if self.hi - self.lo == 1 else Turn.DISSECT
            self.deadline = self.now + TIMEOUT
        elif isinstance(move, Step):
            assert self.turn == Turn.STEP and move.pre_step == self.lo
            assert trace.hash(self.lo) == self.agreed, "pre-state mismatch"
            post = true_step(self.agreed, self.lo, self.exit_step)
            self._resolve(post == self.disputed)
        elif isinstance(move, ClaimTimeout):
            assert self.now > self.deadline
            self._resolve(self.turn != Turn.DISSECT)
        self.moves.append(type(move).__name__)

    def _resolve(self, proposer_won: bool) -> None:
        self.status = GameStatus.PROPOSER_WON if proposer_won else GameStatus.CHALLENGER_WON


def play(game: SimGame, proposer: Trace, challenger: Trace, rng: random.Random, max_moves: int = 500) -> None:
    """Both solvers act on each block (in random order) until the game ends; time advances when both wait."""
    parties = [(Role.PROPOSER, proposer), (Role.CHALLENGER, challenger)]
    for _ in range(max_moves):
        if game.status != GameStatus.ACTIVE:
            return
        rng.shuffle(parties)
        acted = False
        for role, trace in parties:
            if game.status != GameStatus.ACTIVE:
                break
            move = next_move(game.view(), role, trace.hash, game.now)
            if not isinstance(move, Wait):
                game.apply(role, move, trace)
                acted = True
        game.now += 12 if acted else TIMEOUT // 2
    raise AssertionError("game did not end")


# ---------------------------------------------------------------------------------------------------------
# Points
# ---------------------------------------------------------------------------------------------------------
def test_dissection_points_even_and_short() -> None:
    assert dissection_points(0, 160, 16) == [10 * i for i in range(17)]
    assert dissection_points(7, 12, 16) == [7, 8, 9, 10, 11, 12]
    assert dissection_points(5, 5, 16) == []
    with pytest.raises(ValueError):
        dissection_points(0, 10, 1)


@pytest.mark.parametrize("arity", [2, 3, 8, 16, 64])
def test_dissection_points_strictly_increasing(arity: int) -> None:
    rng = random.Random(arity)
    for _ in range(300):
        lo = rng.randrange(0, 1 << 64)
        hi = lo + rng.choice([1, 2, arity - 1, arity, arity + 1, rng.randrange(1, 1 << 40)])
        pts = dissection_points(lo, hi, arity)
        assert pts[0] == lo and pts[-1] == hi
        assert len(pts) == min(arity, hi - lo) + 1
        assert all(a < b for a, b in itertools.pairwise(pts))


def test_rounds_needed() -> None:
    assert rounds_needed(1, 16) == 0
    assert rounds_needed(16, 16) == 1
    assert rounds_needed(17, 16) == 2
    assert rounds_needed(15_000_000, 16) == 6
    assert rounds_needed(15_000_000, 2) == 24
    assert rounds_needed((1 << 64) - 1, 16) == 16


# ---------------------------------------------------------------------------------------------------------
# Single decisions
# ---------------------------------------------------------------------------------------------------------
HONEST = Trace(exit_step=900)


def _view(**kw: object) -> GameView:
    base: dict[str, object] = dict(
        lo=0,
        hi=1000,
        agreed_hash=HONEST.hash(0),
        disputed_hash=b"\x01" * 32,
        turn=Turn.DISSECT,
        deadline=5000,
        arity=16,
    )
    base.update(kw)
    return GameView(**base)  # type: ignore[arg-type]


def test_proposer_dissects_with_its_hashes() -> None:
    move = next_move(_view(), Role.PROPOSER, HONEST.hash, now=100)
    assert isinstance(move, Dissect)
    assert move.points == tuple(dissection_points(0, 1000, 16))
    assert move.hashes == tuple(HONEST.hash(p) for p in move.points[1:-1])
    assert isinstance(next_move(_view(), Role.CHALLENGER, HONEST.hash, now=100), Wait)


def test_challenger_picks_first_disagreement() -> None:
    pts = dissection_points(0, 1000, 16)
    bad = Trace(exit_step=900, tamper_at=300)
    posted = tuple(bad.hash(p) for p in pts[1:-1])
    move = next_move(_view(turn=Turn.PICK, posted=posted), Role.CHALLENGER, HONEST.hash, now=100)
    assert isinstance(move, Pick)
    assert move.lo < 300 <= move.hi
    assert move.index == first_disagreement(posted, pts, HONEST.hash)
    # agreeing with every posted hash: the disagreement is in the last sub-interval
    same = tuple(HONEST.hash(p) for p in pts[1:-1])
    move = next_move(_view(turn=Turn.PICK, posted=same), Role.CHALLENGER, HONEST.hash, now=100)
    assert isinstance(move, Pick) and move.index == 15


def test_timeouts() -> None:
    late = 5001
    assert isinstance(next_move(_view(), Role.CHALLENGER, HONEST.hash, now=late), ClaimTimeout)
    assert isinstance(next_move(_view(), Role.PROPOSER, HONEST.hash, now=late), Wait)
    pick = _view(turn=Turn.PICK, posted=(b"\x00" * 32,) * 15)
    assert isinstance(next_move(pick, Role.PROPOSER, HONEST.hash, now=late), ClaimTimeout)
    assert isinstance(next_move(pick, Role.CHALLENGER, HONEST.hash, now=late), Wait)
    assert isinstance(next_move(pick, Role.PROPOSER, HONEST.hash, now=5000), Wait)  # at the deadline: in time


def test_leaf_decisions() -> None:
    leaf = _view(lo=41, hi=42, agreed_hash=HONEST.hash(41), disputed_hash=b"\x02" * 32, turn=Turn.STEP)
    # the proposer's hash at 42 is wrong: the honest challenger steps, also after its deadline
    assert next_move(leaf, Role.CHALLENGER, HONEST.hash, now=100) == Step(pre_step=41, disputed=b"\x02" * 32)
    assert next_move(leaf, Role.CHALLENGER, HONEST.hash, now=9999) == Step(pre_step=41, disputed=b"\x02" * 32)
    assert isinstance(next_move(leaf, Role.PROPOSER, HONEST.hash, now=100), Wait)
    assert isinstance(next_move(leaf, Role.PROPOSER, HONEST.hash, now=9999), ClaimTimeout)
    # the proposer's hash is right: the honest proposer steps at once (or waits, if not eager)
    right = _view(lo=41, hi=42, agreed_hash=HONEST.hash(41), disputed_hash=HONEST.hash(42), turn=Turn.STEP)
    step = Step(pre_step=41, disputed=HONEST.hash(42))
    assert next_move(right, Role.PROPOSER, HONEST.hash, now=100) == step
    assert isinstance(next_move(right, Role.PROPOSER, HONEST.hash, now=100, eager_step=False), Wait)
    assert isinstance(next_move(right, Role.CHALLENGER, HONEST.hash, now=100), Wait)
    # a pre-state we do not have: we cannot step
    foreign = _view(lo=41, hi=42, agreed_hash=b"\x03" * 32, disputed_hash=b"\x02" * 32, turn=Turn.STEP)
    assert isinstance(next_move(foreign, Role.CHALLENGER, HONEST.hash, now=100), Wait)


def test_moves_name_the_disputed_hash_they_answer() -> None:
    """Every move carries the disputed hash of the view it was decided on; the model, like DisputeGame.sol,
    refuses it in a game that disputes another hash: another game (a reorg renumbered them) or the same game
    after it moved on."""
    honest, tampered = Trace(exit_step=900), Trace(exit_step=900, tamper_at=300)
    game = _game(16, 1000, 900, proposer=honest)
    other = SimGame(arity=16, start=HONEST_START, claim=_h(b"other", 900), steps=1000, exit_step=900)
    dissect = next_move(game.view(), Role.PROPOSER, honest.hash, game.now)
    assert isinstance(dissect, Dissect) and dissect.disputed == game.claim
    with pytest.raises(AssertionError, match="DisputedHashMismatch"):
        other.apply(Role.PROPOSER, dissect, honest)
    game.apply(Role.PROPOSER, dissect, honest)
    pick = next_move(game.view(), Role.CHALLENGER, tampered.hash, game.now)
    assert isinstance(pick, Pick) and pick.disputed == game.claim and pick.index < 15
    game.apply(Role.CHALLENGER, pick, tampered)
    assert game.disputed == pick.next_disputed == dissect.hashes[pick.index]
    with pytest.raises(AssertionError, match="DisputedHashMismatch"):
        game.apply(Role.PROPOSER, dissect, honest)  # the first round's dissection, a round later


def test_game_over_means_wait() -> None:
    for status in (GameStatus.PROPOSER_WON, GameStatus.CHALLENGER_WON, GameStatus.CANCELLED):
        assert isinstance(next_move(_view(status=status), Role.CHALLENGER, HONEST.hash, now=0), Wait)


# ---------------------------------------------------------------------------------------------------------
# Whole games: honest vs tampered (at a random step) with both roles, the honest side always wins
# ---------------------------------------------------------------------------------------------------------
HONEST_START = _h(b"honest", 0)


def _game(arity: int, steps: int, exit_step: int, proposer: Trace) -> SimGame:
    claim = proposer.hash(steps)
    return SimGame(arity=arity, start=HONEST_START, claim=claim, steps=steps, exit_step=exit_step)


@pytest.mark.parametrize("seed", range(60))
def test_simulated_game_honest_side_wins(seed: int) -> None:
    rng = random.Random(seed)
    arity = rng.choice([2, 3, 4, 8, 16, 32, 64])
    steps = rng.choice([1, 2, 17, 1000, 15_000_000, rng.randrange(1, 1 << 40), (1 << 64) - 1])
    exit_step = rng.choice([steps, max(1, steps // 2), rng.randrange(1, steps + 1)])
    tamper_at = rng.randrange(1, steps + 1)
    honest = Trace(exit_step=exit_step)
    tampered = Trace(exit_step=exit_step, tamper_at=tamper_at)

    game = _game(arity, steps, exit_step, proposer=honest)
    play(game, proposer=honest, challenger=tampered, rng=rng)
    assert game.status == GameStatus.PROPOSER_WON, game.moves

    game = _game(arity, steps, exit_step, proposer=tampered)
    play(game, proposer=tampered, challenger=honest, rng=rng)
    assert game.status == GameStatus.CHALLENGER_WON, game.moves
    # the dissection took at most the worst-case number of rounds
    assert game.moves.count("Dissect") <= rounds_needed(steps, arity)


def test_offline_opponent_loses_by_timeout() -> None:
    honest, tampered = Trace(exit_step=500), Trace(exit_step=500, tamper_at=77)
    game = _game(16, 1000, 500, proposer=tampered)
    # the tampered proposer never moves: only the honest challenger's solver runs
    for _ in range(10):
        move = next_move(game.view(), Role.CHALLENGER, honest.hash, game.now)
        if isinstance(move, Wait):
            game.now += TIMEOUT
            continue
        game.apply(Role.CHALLENGER, move, honest)
        if game.status != GameStatus.ACTIVE:
            break
    assert game.status == GameStatus.CHALLENGER_WON
    assert game.moves == ["ClaimTimeout"]


def test_hash_fn_type_is_callable() -> None:
    fn: HashFn = HONEST.hash
    assert fn(0) == HONEST_START


# ---------------------------------------------------------------------------------------------------------
# A third party watching a game between others (watch_move)
# ---------------------------------------------------------------------------------------------------------
def test_watcher_waits_while_the_party_due_has_time() -> None:
    for right in (True, False):
        assert isinstance(watch_move(_view(), right, HONEST.hash, now=5000), Wait)
        over = _view(status=GameStatus.PROPOSER_WON)
        assert isinstance(watch_move(over, right, HONEST.hash, now=9999), Wait)


def test_watcher_claims_the_timeout_only_against_the_liar() -> None:
    late = 5001
    dissect, pick = _view(), _view(turn=Turn.PICK, posted=(b"\x00" * 32,) * 15)
    # a wrong claim: the proposer lies, so its missed dissection is claimed; a late challenger is left alone
    assert isinstance(watch_move(dissect, False, HONEST.hash, now=late), ClaimTimeout)
    assert isinstance(watch_move(pick, False, HONEST.hash, now=late), Wait)
    # a right claim: the challenger lies
    assert isinstance(watch_move(pick, True, HONEST.hash, now=late), ClaimTimeout)
    assert isinstance(watch_move(dissect, True, HONEST.hash, now=late), Wait)


def test_watcher_steps_for_a_late_truthful_challenger() -> None:
    late = 5001
    wrong = _view(lo=41, hi=42, agreed_hash=HONEST.hash(41), disputed_hash=b"\x02" * 32, turn=Turn.STEP)
    assert watch_move(wrong, False, HONEST.hash, now=late) == Step(pre_step=41, disputed=b"\x02" * 32)
    assert isinstance(watch_move(wrong, False, HONEST.hash, now=5000), Wait)  # its own time first
    # our trace says the proposer's hash is right after all: no step against our own trace
    right = _view(lo=41, hi=42, agreed_hash=HONEST.hash(41), disputed_hash=HONEST.hash(42), turn=Turn.STEP)
    assert isinstance(watch_move(right, False, HONEST.hash, now=late), Wait)
    # a right claim at the leaf: the lying challenger's timeout is cheaper than the step
    assert isinstance(watch_move(right, True, HONEST.hash, now=late), ClaimTimeout)


@pytest.mark.parametrize("seed", range(40))
def test_watcher_finishes_for_a_passive_honest_party(seed: int) -> None:
    """The honest party bisects but never steps nor claims a timeout (it went offline at the end); the
    liar plays its own solver. The watcher's timeouts and leaf step make the truthful side win every time."""
    rng = random.Random(seed)
    steps = rng.choice([1, 17, 1000, 15_000_000])
    exit_step = rng.randrange(1, steps + 1)
    honest, tampered = Trace(exit_step), Trace(exit_step, tamper_at=rng.randrange(1, steps + 1))
    proposer_is_right = rng.random() < 0.5
    roles = {Role.PROPOSER: honest, Role.CHALLENGER: tampered}
    if not proposer_is_right:
        roles = {Role.PROPOSER: tampered, Role.CHALLENGER: honest}
    game = _game(16, steps, exit_step, proposer=roles[Role.PROPOSER])
    for _ in range(300):
        if game.status != GameStatus.ACTIVE:
            break
        acted = False
        for role, trace in roles.items():
            move = next_move(game.view(), role, trace.hash, game.now)
            passive = trace is honest and isinstance(move, Step | ClaimTimeout)
            if game.status == GameStatus.ACTIVE and not isinstance(move, Wait) and not passive:
                game.apply(role, move, trace)
                acted = True
        watch = watch_move(game.view(), proposer_is_right, honest.hash, game.now)
        if game.status == GameStatus.ACTIVE and not isinstance(watch, Wait):
            game.apply(Role.CHALLENGER, watch, honest)  # step and claimTimeout: anyone
            acted = True
        game.now += 12 if acted else TIMEOUT + 1
    won = GameStatus.PROPOSER_WON if proposer_is_right else GameStatus.CHALLENGER_WON
    assert game.status == won, game.moves
