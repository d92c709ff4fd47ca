"""Crash recovery on a real anvil: the honest daemon is killed with SIGKILL at seeded moments of a dispute and
restarted on the same SQLite file, five times per game; the honest side must still win, send nothing twice
and be paid exactly what the protocol owes it (issue 7, item 4).

Two games, each on its own deployment (challenge window and move timeout 60 s), with the MNIST MLP, each
with two seeds:

- `dishonest prover`: an in-process `ProverNode` with a `Tamper` (a register or memory word flipped at a
  random step, driven by the test's ticks, no eager step) against the honest `rollml challenger` daemon,
  killed around its challenge, its first pick, a pick mid-bisection, its leaf step and its withdrawal;
- `dishonest challenger`: the honest `rollml node` daemon against an in-process `Challenger` playing a
  tampered trace and challenging correct results, killed around its post, a dissection mid-bisection, its
  (eager) leaf step, its `finalize` once the window closed, and its withdrawal.

Two kinds of kill alternate (the seed says which comes first): `timed`, a seeded random delay after the
stage's trigger is seen on-chain (whatever the daemon is doing then); `in flight`, anvil's automine is
stopped and the daemon is killed as soon as its next transaction waits in the pool, which is then mined:
it dies between sending a transaction and recording it, so the restart must learn from the chain what it
did (the test checks that exactly these transactions are missing from its store). After each kill the
daemon stays down for a seeded pause (the liar keeps moving) and restarts on the same file. At the end it
is stopped and run once more with `--once`: that full pass must find nothing to send. Asserted on-chain:
the honest side won; one post per prover and request, one challenge per challenger and result, one
dissection and one pick per round, one step, at most one finalize; no transaction of the honest account
reverted; its market balance plus its withdrawals equal what it is owed (its bond back plus the loser's
bond, plus the fee for the node).

Time: the daemons poll every 0.2 s, the test ticks the dishonest agent every 0.25 s, and anvil's clock
moves forward only when the game is over and the node waits for the challenge window to close. About
25 s per game.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from support.models import mnist
from web3.types import RPCEndpoint

from challenger.agent import Challenger
from node.prover import ProverNode
from rollml.agent.base import Agent
from rollml.agent.models import ModelStore
from rollml.core.deploy import DEV_PARAMS, MarketParams
from rollml.core.devnet import Anvil
from rollml.core.dispute import GameStatus, Turn, rounds_needed
from rollml.core.execution import Tamper, TamperKind, execute
from rollml.core.paths import REPO_ROOT
from rollml.harness import loadtest as load

pytestmark = [pytest.mark.requires("guest", "anvil"), pytest.mark.slow]

WINDOW = 60  # challenge window, seconds of chain time
MOVE_TIMEOUT = 60
NODE, LIAR_PROVER, CHALLENGER, LIAR_CHALLENGER = 1, 2, 3, 4  # dev accounts (0 deploys, 9 requests)
INTERVAL = 0.2  # the daemons' pass interval
POLL = 0.25  # the test's loop period
IN_FLIGHT_PATIENCE = 6.0  # seconds an in-flight kill waits for a transaction (the stage may be over)
GAME_TIMEOUT = 150.0  # seconds for a whole game with its kills (about 25 s on a 2-core machine)


@cache
def request_payload() -> bytes:
    """A test digit's input payload."""
    return bytes(load.digit_payloads(1, seed=3)[0])


def effective_tamper(kind: TamperKind, seed: int) -> Tamper:
    """A random flip whose effect survives to the final state (a flipped dead register would not)."""
    model, payload = mnist()[0], request_payload()
    honest = execute(model, payload).claim.final_hash
    for s in range(seed, seed + 50):
        tamper = Tamper.random(kind, random.Random(s))
        if execute(model, payload, tamper).claim.final_hash != honest:
            return tamper
    raise AssertionError("no effective tamper found")


@dataclass
class Kill:
    """Once `trigger()` holds, kill the daemon: `timed`, `delay` s later (whatever it is doing then), or
    `in flight`, as soon as it has sent its next transaction and before that transaction is mined, so it
    dies without learning the receipt. It restarts `pause` s later."""

    stage: str
    trigger: Callable[[], bool]
    mode: str  # "timed" or "in flight"
    delay: float
    pause: float
    armed: float | None = None  # when the trigger first held
    missed: bool = False  # an in-flight kill that saw no transaction in IN_FLIGHT_PATIENCE s: killed anyway

    @property
    def label(self) -> str:
        return f"{self.stage} ({self.mode}{', missed' if self.missed else ''})"


@dataclass
class Game:
    """One dispute on a fresh deployment: the honest daemon, the in-process liar, and what the chain says."""

    setup: Any  # bench/load.py's Setup
    daemon: Any  # bench/load.py's Daemon
    liar: Agent
    honest: str  # the honest daemon's address
    seed: int
    kills_done: list[str] = field(default_factory=list)
    in_flight_kills: int = 0  # kills that caught a transaction of the daemon in the pool
    rng: random.Random = field(init=False)  # the kills' delays, pauses and modes

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed * 1000)

    # -- reading the chain -----------------------------------------------------------------------------------
    def market(self, event: str, **filters: Any) -> list[dict[str, Any]]:
        return [dict(e) for e in self.setup.events(event, **filters)]

    def disputes(self, event: str) -> list[dict[str, Any]]:
        evs = self.setup.chain.events(self.setup.contracts.game, event, self.setup.deployment.block)
        return [dict(ev["args"]) for ev in evs]

    def game_id(self) -> int | None:
        challenged = self.market("ResultChallenged")
        return int(challenged[0]["gameId"]) if challenged else None

    def game_state(self) -> tuple[GameStatus, Turn] | None:
        gid = self.game_id()
        if gid is None:
            return None
        g = self.setup.chain.call(self.setup.contracts.game.functions.getGame(gid))
        return GameStatus(g[3]), Turn(g[4])

    def at_leaf(self) -> bool:
        """The game reached its one-step interval (or is over already: triggers must be monotone)."""
        state = self.game_state()
        return state is not None and (state[0] != GameStatus.ACTIVE or state[1] == Turn.STEP)

    def resolved(self) -> bool:
        return bool(self.market("ChallengeResolved"))

    def balance(self, address: str) -> int:
        return int(self.setup.chain.call(self.setup.contracts.market.functions.balanceOf(address)))

    def withdrawn(self, address: str) -> int:
        return sum(int(e["amount"]) for e in self.market("Withdrawal", account=address))

    def paid_out(self) -> bool:
        """The honest side withdrew and holds nothing more in the market."""
        return self.withdrawn(self.honest) > 0 and self.balance(self.honest) == 0

    def window_closed(self) -> bool:
        posted = self.market("ResultPosted")
        if not posted:
            return False
        result = self.setup.chain.call(
            self.setup.contracts.market.functions.getResult(posted[-1]["resultId"])
        )
        return self.setup.chain.now() >= int(result[1]) + WINDOW

    def advance_when_waiting(self) -> None:
        """Once the game is over, nothing but the window stands between the node and `finalize`."""
        if self.resolved() and not self.window_closed():
            self.setup.chain.advance_time(WINDOW)

    # -- playing with kills ----------------------------------------------------------------------------------
    def kill(self, index: int, stage: str, trigger: Callable[[], bool], max_delay: float) -> Kill:
        """A kill in mode slot `index`: timed and in-flight slots alternate, the seed says which first. The
        withdrawal shares the previous kill's slot: it follows the step (finalize) in the same pass, so it
        is still to come after a restart only when that kill caught the step (finalize) in flight."""
        mode = "in flight" if (index + self.seed) % 2 == 0 else "timed"
        return Kill(stage, trigger, mode, self.rng.uniform(0, max_delay), self.rng.uniform(0, 2.0))

    def play(self, kills: list[Kill], done: Callable[[], bool], advance: bool = False) -> None:
        """Tick the liar, fire the kills in order, restart the daemon after each pause, until `done()` holds
        with every kill fired and the daemon back up. A trigger is looked at only once the (re)started
        daemon is running its passes: a kill during its start-up would test nothing of the game."""
        pending = list(kills)
        down_until: float | None = None
        deadline = time.monotonic() + GAME_TIMEOUT
        while True:
            self.liar.tick()
            if down_until is not None and time.monotonic() >= down_until:
                self.daemon.start()
                down_until = None
            if advance and down_until is None:
                self.advance_when_waiting()  # before the triggers: a kill at finalize is armed at once
            up = down_until is None and self.daemon.started()
            armed = self.armed(pending, down_until is None, up)
            if armed and self.fire(pending[0]):
                fired = pending.pop(0)
                self.kills_done.append(fired.label)
                down_until = time.monotonic() + fired.pause
                armed = False
            if up and down_until is None and not pending and done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not done after {GAME_TIMEOUT:.0f} s; kills {self.kills_done}, pending "
                    f"{[k.label for k in pending]}\n{self.daemon.log_text()[-4000:]}"
                )
            if not armed:  # an armed in-flight kill just watched the pool for a while: no need to wait more
                time.sleep(POLL)

    @staticmethod
    def armed(pending: list[Kill], running: bool, up: bool) -> bool:
        """The next kill's trigger holds. A timed kill waits until the daemon is up (a kill during its
        start-up would test nothing of the game); an in-flight one may be armed while it starts (it kills
        only at a transaction, and the first one after a restart may follow at once)."""
        if not pending or not running:
            return False
        kill = pending[0]
        if kill.armed is None and (up or kill.mode == "in flight") and kill.trigger():
            kill.armed = time.monotonic()
        return kill.armed is not None and (up or kill.mode == "in flight")

    def fire(self, kill: Kill) -> bool:
        """Kill the daemon as `kill` says; False when an in-flight kill found no transaction to catch yet."""
        if kill.mode == "in flight":
            if self.kill_in_flight():
                return True
            assert kill.armed is not None
            if time.monotonic() - kill.armed < IN_FLIGHT_PATIENCE:
                return False
            kill.missed = True  # the stage went by before the kill was armed: kill now, timed
        time.sleep(kill.delay)
        self.daemon.kill()
        return True

    def kill_in_flight(self, window: float = 1.5) -> bool:
        """Stop anvil's automine for up to `window` s; if the honest daemon sends a transaction meanwhile,
        kill it while the transaction waits in the pool, then mine it: the daemon dies between sending a
        transaction and recording it. The liar does not tick meanwhile (its own sends would wait too)."""
        self.dev("evm_setAutomine", [False])
        try:
            end = time.monotonic() + window
            while time.monotonic() < end:
                if self.in_pool(self.honest):
                    self.daemon.kill()
                    self.in_flight_kills += 1
                    return True
                time.sleep(0.005)
            return False
        finally:
            self.dev("evm_setAutomine", [True])  # first: a send racing with this is then mined at once
            if self.in_pool(self.honest):
                self.dev("evm_mine", [])

    def dev(self, method: str, params: list[Any]) -> None:
        response = self.setup.chain.w3.provider.make_request(RPCEndpoint(method), params)
        assert "error" not in response, response

    def in_pool(self, address: str) -> bool:
        eth = self.setup.chain.w3.eth
        return eth.get_transaction_count(address, "pending") > eth.get_transaction_count(address, "latest")

    def play_kills(
        self, kills: list[Kill], done: Callable[[], bool], advance: bool = False
    ) -> tuple[dict[str, Any], int]:
        """`play`, then the final pass: (its figures, the transactions mined but never recorded)."""
        self.play(kills, done, advance)
        last = self.final_pass()
        unrecorded = self.unrecorded_txs()
        print(f"kills: {self.kills_done}; mined but unrecorded: {unrecorded}")
        return last, unrecorded

    def assert_recovered(self, kills: list[Kill], last: dict[str, Any], unrecorded: int) -> None:
        """Every kill fired and the daemon came back each time; nothing left to send, nothing sent twice,
        no transaction reverted."""
        assert len(self.kills_done) == len(kills) and self.daemon.starts == len(kills) + 1
        # each in-flight kill hit between sending and recording; a timed kill may land there too (under load)
        assert unrecorded >= self.in_flight_kills > 0
        assert last["txs"] == 0 and last["errors"] == 0, last
        game_id = self.game_id()
        assert game_id is not None
        self.assert_nothing_twice(game_id)
        self.assert_no_reverts()

    def unrecorded_txs(self) -> int:
        """Transactions of the honest account mined but missing from its store: kills that landed between
        sending a transaction and recording it (at least one per in-flight kill; timed kills are random)."""
        from rollml.core.store import Store

        chain, first = self.setup.chain, self.setup.deployment.block
        mined = sum(
            1
            for number in range(first, chain.block_number() + 1)
            for receipt in chain.w3.eth.get_block_receipts(number)
            if str(receipt["from"]).lower() == self.honest.lower()
        )
        store = Store(self.setup.workdir / f"{self.daemon.role}.db")
        try:
            return mined - len(store.txs())
        finally:
            store.close()

    def final_pass(self) -> dict[str, Any]:
        """Stop the daemon and run one more full pass (`--once`): what it still finds to do."""
        self.daemon.stop()
        cmd = [sys.executable, "-m", "rollml", self.daemon.role, *self.daemon.args, "--once"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    # -- the checks ------------------------------------------------------------------------------------------
    def assert_nothing_twice(self, game_id: int) -> None:
        posts = [(e["requestId"], e["prover"]) for e in self.market("ResultPosted")]
        assert len(posts) == len(set(posts)), f"a result was posted twice: {posts}"
        challenges = [(e["resultId"], e["challenger"]) for e in self.market("ResultChallenged")]
        assert len(challenges) == len(set(challenges)) == 1, challenges
        rounds = rounds_needed(int(self.market("ResultPosted")[0]["steps"]), self.setup.deployment.arity)
        for event in ("Dissected", "Picked"):
            moves = [(e["gameId"], e["lo"], e["hi"]) for e in self.disputes(event) if e["gameId"] == game_id]
            assert len(moves) == len(set(moves)) and len(moves) <= rounds, f"{event}: {moves}"
        assert len(self.disputes("Stepped")) == 1
        assert len(self.market("ResultFinalized")) <= 1

    def assert_no_reverts(self) -> None:
        """Every transaction the honest account sent was mined successfully (none was resent and failed)."""
        chain, first = self.setup.chain, self.setup.deployment.block
        for number in range(first, chain.block_number() + 1):
            for receipt in chain.w3.eth.get_block_receipts(number):
                if str(receipt["from"]).lower() == self.honest.lower():
                    assert receipt["status"] == 1, f"reverted: 0x{bytes(receipt['transactionHash']).hex()}"


@pytest.fixture
def params() -> MarketParams:
    return MarketParams(**{**asdict(DEV_PARAMS), "challenge_window": WINDOW})


def new_game(anvil: Anvil, tmp_path: Path, params: MarketParams, role: str, liar: str, seed: int) -> Game:
    """A fresh deployment, the honest `role` daemon (started) and the dishonest in-process agent."""
    setup = load.make_setup(anvil.url, tmp_path, params, move_timeout=MOVE_TIMEOUT)
    models = ModelStore([setup.model])
    rng = random.Random(seed)  # the liar's tamper
    db = tmp_path / "liar.db"
    liar_agent: Agent
    if liar == "prover":
        tamper = effective_tamper(rng.choice([TamperKind.REGISTER, TamperKind.MEMORY]), seed)
        liar_agent = ProverNode(
            setup.chain, setup.deployment, setup.accounts[LIAR_PROVER], db, models, tamper=tamper,
            eager_step=False, split=False,
        )  # fmt: skip
    else:
        tamper = Tamper.random(rng.choice([TamperKind.REGISTER, TamperKind.MEMORY]), rng)
        liar_agent = Challenger(
            setup.chain, setup.deployment, setup.accounts[LIAR_CHALLENGER], db, models, tamper=tamper,
            challenge_correct=True,
        )  # fmt: skip
    index = NODE if role == "node" else CHALLENGER
    extra = ["--vm-claims"] if role == "node" else []  # the kill points are those of a VM game
    daemon = setup.daemon(role, index, role, workers=1, interval=INTERVAL, extra=extra).start()
    load.wait_for(f"the {role} daemon starts", daemon.started, 60)
    return Game(setup, daemon, liar_agent, setup.accounts[index].address, seed)


@pytest.mark.parametrize("seed", [1, 2])
def test_honest_challenger_daemon_survives_kills_and_wins(
    anvil: Anvil, tmp_path: Path, params: MarketParams, seed: int
) -> None:
    game = new_game(anvil, tmp_path, params, "challenger", "prover", seed)
    try:
        game.setup.request(request_payload())
        k = game.rng.randint(2, 4)
        kills = [
            game.kill(0, "challenge", lambda: bool(game.market("ResultPosted")), 2.0),
            game.kill(1, "first pick", lambda: bool(game.market("ResultChallenged")), 0.5),
            game.kill(2, f"pick {k}", lambda: len(game.disputes("Picked")) >= k - 1, 0.5),
            game.kill(3, "step", game.at_leaf, 0.2),
            game.kill(3, "withdrawal", lambda: bool(game.disputes("Stepped")), 0.3),
        ]
        last, unrecorded = game.play_kills(kills, lambda: game.resolved() and game.paid_out())
    finally:
        game.daemon.stop()
        game.liar.close()

    game.assert_recovered(kills, last, unrecorded)
    (res,) = game.market("ChallengeResolved")
    assert res["proposerWon"] is False, "the honest challenger lost"
    owed = params.challenger_bond + params.discard_split(1)[0]  # its bond back and the liar's unburned part
    assert game.withdrawn(game.honest) + game.balance(game.honest) == owed


@pytest.mark.parametrize("seed", [1, 2])
def test_honest_node_daemon_survives_kills_wins_and_finalizes(
    anvil: Anvil, tmp_path: Path, params: MarketParams, seed: int
) -> None:
    game = new_game(anvil, tmp_path, params, "node", "challenger", seed)
    try:
        rid = game.setup.request(request_payload())
        k = game.rng.randint(2, 4)
        kills = [
            game.kill(0, "post", lambda: True, 3.0),
            game.kill(1, f"dissection {k}", lambda: len(game.disputes("Dissected")) >= k - 1, 0.5),
            game.kill(2, "step", game.at_leaf, 0.2),
            game.kill(3, "finalize", lambda: game.resolved() and game.window_closed(), 1.0),
            game.kill(3, "withdrawal", lambda: bool(game.market("ResultFinalized")), 0.3),
        ]
        last, unrecorded = game.play_kills(
            kills, lambda: bool(game.market("ResultFinalized")) and game.paid_out(), advance=True
        )
    finally:
        game.daemon.stop()
        game.liar.close()

    game.assert_recovered(kills, last, unrecorded)
    (res,) = game.market("ChallengeResolved")
    assert res["proposerWon"] is True, "the honest node lost"
    (posted,) = game.market("ResultPosted", requestId=rid)
    assert posted["prover"] == game.honest
    (final,) = game.market("ResultFinalized", requestId=rid)
    assert final["prover"] == game.honest
    fee = int(game.market("InferenceRequested")[0]["fee"])
    owed = fee + params.prover_bond + params.challenger_bond  # the fee, its bond back and the liar's
    assert game.withdrawn(game.honest) + game.balance(game.honest) == owed
