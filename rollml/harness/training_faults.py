"""The fault campaign's training kinds (`make fault-campaign KINDS=training`; docs/security.md, "Training
runs"): a training run on a fresh deployment, worked by the real `trainer` agents, with one party lying in one
of the ways issue 17 names, and the funds checked when the run is over.

- `train-wrong-update`: a worker posts other weights with a forged VALID claim for update `i`; the honest
  fraud-proofer must challenge it and win the game, the update is discarded and the honest worker redoes it;
- `train-stalled-lease`: a worker takes the lease on update `i` and never posts; the lease expires, its
  deposit goes to the creator, the honest worker takes the lease over;
- `train-withheld-weights`: a worker takes the lease and computes update `i` but keeps the weights. Weights
  are only ever posted as calldata with the claim (`TrainingRun.postUpdate`), so unpublished weights
  are an update that was not posted: on chain this is the stalled lease again, and is played as one (the
  lease times out; nothing can be challenged because nothing was claimed);
- `train-lying-proofer`: a fraud-proofer challenges the correct update `i`, playing a trace with a register
  flipped at a random step; the honest worker must win the game and get its bond.

Every fault must end with the run finished, its state the honest training's (the updates re-run natively),
the liar paid nothing, every account credited exactly what the outcomes on chain say
(`training_credits_by_rule`), the contract holding exactly what it owes (`training_invariant`), and every
account's ether moved only by its own transactions and withdrawals.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipsvm.preimage import PreimageStore
from mlkit import native
from mlkit.train import MLPSpec, digits_batches, next_state
from rollml.core.chain import Chain
from rollml.core.dispute import GameStatus, Role
from rollml.core.execution import Tamper, TamperKind
from rollml.core.sdk import game_status
from rollml.core.training import (
    RunPlan,
    TrainingClient,
    compute_update,
    dataset_store,
    plan_run,
    put_batches,
    resolve_batches,
)
from rollml.harness.campaign import (
    TRAIN_MODEL,
    AgentErrors,
    FaultResult,
    FaultSpec,
    TrainingFaultKind,
    eth_flows,
)
from rollml.world import World
from trainer.fraudproofer import FraudProofer
from trainer.worker import TrainingWorker

SPEC = MLPSpec(sizes=(64, 12, 10), batch=16, steps=1, lr=0.2, momentum=0.9)
UPDATES = 3
REWARD, DEPOSIT, BOND = 10**15, 10**17, 10**17
WINDOW, LEASE = 600, 300
MAX_TICKS = 200
# dev accounts: the creator, the liar, the honest worker, the honest fraud-proofer
CREATOR, LIAR, WORKER, PROOFER = 5, 1, 2, 3
ZERO = "0x0000000000000000000000000000000000000000"


LIAR_ROLE = {
    TrainingFaultKind.WRONG_UPDATE: "worker",
    TrainingFaultKind.WITHHELD_WEIGHTS: "worker",
    TrainingFaultKind.STALLED_LEASE: "worker",
    TrainingFaultKind.LYING_PROOFER: "fraud-proofer",
}


class LyingProofer(FraudProofer):
    """A fraud-proofer that challenges the correct update `target` and plays a trace with `tamper` (a
    register flip): the same agent with a lie in its game row."""

    def __init__(self, *args: Any, target: int, tamper: Tamper, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.target, self.tamper = target, tamper
        self.game_id: int | None = None

    def check(self, update_id: int) -> None:
        u = self.client.update(update_id)
        self.checked[update_id] = True
        if u.index != self.target or u.discarded or u.accepted or self.game_id is not None:
            return
        run = self.client.run(u.run_id)
        # a flip can send the guest astray: its trace stops where a liar's must (as the workers' do)
        self.remember_cap(update_id, u.steps, run.cfg.max_steps)
        call = self.training.functions.challenge(update_id)
        receipt = self.responder.send("challenge", call, value=run.cfg.challenger_bond)
        ev = self.training.events.UpdateChallenged().process_receipt(receipt)[0]
        self.game_id = int(ev["args"]["gameId"])
        block = int(receipt["blockNumber"])
        self.store.add_game(self.game_id, Role.CHALLENGER, update_id, u.run_id, block, self.tamper.to_json())
        self.emit("update_disputed", run=u.run_id, update=update_id, game=self.game_id, lie=True)


@dataclass
class TrainingFault:
    """One training fault being played (see the module docstring)."""

    chain: Chain
    spec: FaultSpec
    workdir: Path

    def __post_init__(self) -> None:
        self.kind = TrainingFaultKind(self.spec.kind)
        self.rng = random.Random(self.spec.seed)
        self.index = self.rng.randrange(UPDATES)  # the update the fault hits
        self.data_seed = self.rng.randrange(2**31)
        self.result = FaultResult(self.spec.index, str(self.kind), TRAIN_MODEL, LIAR_ROLE[self.kind], "", "")
        self.errors = AgentErrors()
        self.loggers: list[logging.Logger] = []

    # -- setting up ------------------------------------------------------------------------------------------
    def deploy(self) -> None:
        chunks, *_ = digits_batches(SPEC, UPDATES * SPEC.steps, seed=self.data_seed)
        self.dataset: PreimageStore = dataset_store(self.workdir / "data")
        ids = put_batches(self.dataset, chunks)
        params = SPEC.init_params(self.data_seed)
        self.plan: RunPlan = plan_run(SPEC, params, ids, REWARD, DEPOSIT, BOND, WINDOW, LEASE)
        self.world = World.create(self.chain, self.workdir, {"mlp-train": self.plan.graph})
        self.creator = TrainingClient(self.chain, self.world.deployment, self.world.accounts[CREATOR])
        accounts = self.world.accounts
        self.liar_address = accounts[LIAR].address
        self.before = {a.address: self.chain.balance(a.address) for a in accounts[: CREATOR + 1]}
        self.game_balance = self.chain.balance(self.world.contracts.game.address)
        self.first_block = self.chain.block_number() + 1
        self.run_id = self.creator.create_run(self.plan)
        self.result.input = f"digits seed {self.data_seed}, {UPDATES} updates of {SPEC.steps} SGD step(s)"

    def agent(self, cls: Any, who: int, name: str, **kw: Any) -> Any:
        log = logging.getLogger(f"rollml.harness.training_faults.{name}")
        if self.errors not in log.handlers:
            log.addHandler(self.errors)
        self.loggers.append(log)
        return self.world.agent(cls, who, name, log, dataset=self.dataset, run_ids=[self.run_id], **kw)

    def run_info(self) -> Any:
        return self.creator.run(self.run_id)

    # -- playing ---------------------------------------------------------------------------------------------
    def play(self) -> FaultResult:
        t0 = time.perf_counter()
        try:
            self.deploy()
            self.play_run()
            self.check()
        except Exception as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
            self.result.caught = self.result.honest_won = self.result.funds_conserved = False
        finally:
            for log in self.loggers:
                log.removeHandler(self.errors)
        self.result.agent_errors = dict(self.errors.counts)
        self.result.seconds = round(time.perf_counter() - t0, 2)
        return self.result

    def play_run(self) -> None:
        """The honest worker alone up to update `index`, the fault, then everyone to the run's end."""
        worker = self.agent(TrainingWorker, WORKER, "worker", max_updates=self.index)
        proofer = self.agent(FraudProofer, PROOFER, "proofer")
        agents: list[Any] = [worker, proofer]
        if self.index:
            self.world.play(
                agents,
                lambda: self.run_info().accepted == self.index and not self.run_info().pending_update,
                MAX_TICKS,
            )
        k = self.kind
        if k == TrainingFaultKind.WRONG_UPDATE:
            liar = self.agent(TrainingWorker, LIAR, "liar", wrong_at=[0], max_updates=1)
            liar.tick()  # the lease on update `index` and the wrong post
            agents = [liar, *agents]
            self.result.detail = f"update {self.index}: other weights with a forged VALID claim"
        elif k in (TrainingFaultKind.STALLED_LEASE, TrainingFaultKind.WITHHELD_WEIGHTS):
            staller = TrainingClient(self.chain, self.world.deployment, self.world.accounts[LIAR])
            staller.take_lease(self.run_id)
            self.result.detail = f"update {self.index}: takes the lease, never posts"
            if k == TrainingFaultKind.WITHHELD_WEIGHTS:
                state = staller.state_before(self.run_id, self.index)
                batches = staller.update_batches(self.run_id, self.index, self.dataset)
                work = compute_update(self.plan.graph, state, batches, SPEC.records_end, self.index)
                self.result.detail = (
                    f"update {self.index}: computes it (loss {work.loss:.4f}), keeps the weights, never posts"
                )
        else:
            tamper = Tamper.random(TamperKind.REGISTER, self.rng)
            liar = self.agent(LyingProofer, LIAR, "liar-proofer", target=self.index, tamper=tamper)
            agents = [liar, *agents]
            self.result.detail = (
                f"challenges the correct update {self.index}, playing "
                f"r{tamper.register} ^= 0x{tamper.mask:x} at {tamper.fraction:.0%} of the run"
            )
        worker.max_updates = None
        self.agents = agents
        try:
            self.world.play(agents, lambda: self.run_info().finished, MAX_TICKS)
        finally:
            for a in agents:
                a.close()
                a.store.close()

    # -- checking --------------------------------------------------------------------------------------------
    def evidence(self, what: str, expected: str, got: str, ok: bool) -> bool:
        self.result.evidence.append(f"{what}: expected {expected}, got {got}{'' if ok else '  <-- WRONG'}")
        if not ok:
            self.result.problems.append(f"{what}: expected {expected}, got {got}")
        return ok

    def events(self, name: str, **filters: Any) -> list[Any]:
        return [ev["args"] for ev in self.chain.events(self.training, name, self.first_block, **filters)]

    @property
    def training(self) -> Any:
        return self.world.contracts.training

    def honest_state(self) -> bytes:
        """The run's final state by honest training: every update re-run natively."""
        state, k = self.plan.initial_state, SPEC.steps
        for i in range(UPDATES):
            batches = resolve_batches(self.dataset, self.plan.batch_ids[k * i : k * (i + 1)])
            state, _ = next_state(
                state, native.run(self.plan.graph, state + b"".join(batches)), SPEC.records_end
            )
        return state

    def check(self) -> None:
        run = self.run_info()
        ok = self.evidence("updates accepted", str(UPDATES), str(run.accepted), run.accepted == UPDATES)
        honest = self.creator.state(self.run_id) == self.honest_state()
        ok &= self.evidence("the final state", "honest training's", "it" if honest else "another", honest)
        ok &= self.check_kind()
        self.result.caught = ok
        self.result.winner = "honest" if ok else "liar"
        self.result.ending = {
            TrainingFaultKind.WRONG_UPDATE: "game",
            TrainingFaultKind.LYING_PROOFER: "game",
        }.get(self.kind, "lease expiry")
        problems = self.check_funds()
        self.result.funds_conserved = not problems
        self.result.problems += problems
        liar_paid = self.credited(self.liar_address)
        self.result.honest_won = ok and self.evidence(
            "the liar was paid", "0", str(liar_paid), liar_paid == 0
        )

    def check_kind(self) -> bool:
        k, liar = self.kind, self.liar_address
        if k == TrainingFaultKind.WRONG_UPDATE:
            posted = [a for a in self.events("UpdatePosted") if a["worker"] == liar]
            discarded = {int(a["updateId"]): a["winner"] for a in self.events("UpdateDiscarded")}
            ids = [int(a["updateId"]) for a in posted]
            ok = self.evidence("the liar's posts", "1", str(len(ids)), len(ids) == 1)
            won = bool(ids) and discarded.get(ids[0]) == self.world.accounts[PROOFER].address
            ok &= self.evidence("its update", "discarded, won by the fraud-proofer", str(discarded), won)
            games = [int(a["gameId"]) for a in self.events("UpdateChallenged")]
            status = [game_status(self.chain, self.world.contracts, g) for g in games]
            ok &= self.evidence(
                "the games", "one, challenger won", str(status), status == [GameStatus.CHALLENGER_WON]
            )
            return ok
        if k == TrainingFaultKind.LYING_PROOFER:
            challengers = [a["challenger"] for a in self.events("UpdateChallenged")]
            ok = self.evidence("challenges", "one, by the liar", str(len(challengers)), challengers == [liar])
            settled = [bool(a["proposerWon"]) for a in self.events("ChallengeSettled")]
            ok &= self.evidence("the game", "won by the worker", str(settled), settled == [True])
            ok &= self.evidence(
                "updates discarded",
                "none",
                str(len(self.events("UpdateDiscarded"))),
                not self.events("UpdateDiscarded"),
            )
            return ok
        forfeited = [a["worker"] for a in self.events("LeaseForfeited")]
        ok = self.evidence("leases forfeited", "the liar's", str(forfeited), forfeited == [liar])
        posted = [a for a in self.events("UpdatePosted") if a["worker"] == liar]
        return ok & self.evidence("the liar's posts", "none", str(len(posted)), not posted)

    # -- funds -----------------------------------------------------------------------------------------------
    def withdrawn(self, account: str) -> int:
        return sum(int(a["amount"]) for a in self.events("Withdrawal", account=account))

    def credited(self, account: str) -> int:
        return self.withdrawn(account) + int(self.chain.call(self.training.functions.balanceOf(account)))

    def check_funds(self) -> list[str]:
        problems = training_invariant(self.chain, self.training, self.first_block)
        rule = training_credits_by_rule(self.chain, self.training, self.first_block)
        for account in set(self.before) | set(rule):
            got, want = self.credited(account), rule.get(account, 0)
            if got != want:
                problems.append(f"{account[:10]} was credited {got} wei, the outcomes say {want}")
        flows = eth_flows(self.chain, self.first_block, self.chain.block_number())
        self.result.gas, self.result.txs, self.result.reverted = flows.total_gas, flows.txs, flows.reverted
        for account, start in self.before.items():
            out = flows.sent.get(account, 0) + flows.gas.get(account, 0) - flows.tips.get(account, 0)
            expected = start + self.withdrawn(account) - out
            if self.chain.balance(account) != expected:
                problems.append(
                    f"{account[:10]} holds {self.chain.balance(account)} wei, its txs explain {expected}"
                )
        game = self.chain.balance(self.world.contracts.game.address)
        if game != self.game_balance:
            problems.append(f"the DisputeGame holds {game} wei (before: {self.game_balance})")
        return problems


def training_credits_by_rule(chain: Chain, training: Any, first_block: int) -> dict[str, int]:
    """What `TrainingRun` owes each account from the outcomes on chain (docs/protocol.md, "Training runs"):
    an accepted update pays its worker the reward and the deposit back; a game the worker won pays it the
    challenger's bond; a discarded update pays the winning challenger its bond and the worker's deposit, every
    other challenger of it its bond; a forfeited lease's deposit goes to the creator; a closed run's refund to
    its creator."""
    credit: dict[str, int] = {}

    def pay(account: str, wei: int) -> None:
        credit[account] = credit.get(account, 0) + wei

    def evs(name: str) -> list[Any]:
        return [ev["args"] for ev in chain.events(training, name, first_block)]

    fn = training.functions
    cfg_of: dict[int, Any] = {}
    creators: dict[int, str] = {}
    for a in evs("RunCreated"):
        run = chain.call(fn.getRun(int(a["runId"])))
        creators[int(a["runId"])], cfg_of[int(a["runId"])] = str(run[0]), run[-1]
    # Config: ..., rewardPerUpdate, workerDeposit, challengerBond are its last three fields
    for a in evs("UpdateAccepted"):
        u = chain.call(fn.getUpdate(int(a["updateId"])))
        cfg = cfg_of[int(a["runId"])]
        pay(str(u[0]), int(cfg[-3]) + int(cfg[-2]))
    discards = {int(a["updateId"]): (int(a["gameId"]), int(a["runId"])) for a in evs("UpdateDiscarded")}
    for a in evs("ChallengeSettled"):
        game, update_id = int(a["gameId"]), int(a["updateId"])
        u = chain.call(fn.getUpdate(update_id))
        c = chain.call(fn.getChallenge(game))
        cfg = cfg_of[int(u[1])]
        if a["proposerWon"]:
            pay(str(u[0]), int(cfg[-1]))
        elif update_id in discards and discards[update_id][0] == game:
            pay(str(c[0]), int(cfg[-1]) + int(cfg[-2]))
        else:
            pay(str(c[0]), int(cfg[-1]))
    for a in evs("LeaseForfeited"):
        pay(creators[int(a["runId"])], int(a["deposit"]))
    for a in evs("RunClosed"):
        pay(creators[int(a["runId"])], int(a["refund"]))
    return credit


def training_invariant(chain: Chain, training: Any, first_block: int) -> list[str]:
    """`TrainingRun`'s accounting invariant (its contract comment): its balance is the unpaid rewards of
    every run + the deposits of held leases and pending updates + the bonds of unsettled challenges + the sum
    of `balanceOf`."""
    fn = training.functions
    owed, accounts = 0, set()
    for ev in chain.events(training, "RunCreated", first_block):
        run = chain.call(fn.getRun(int(ev["args"]["runId"])))
        cfg = run[-1]
        owed += int(run[-2])  # rewardLeft
        accounts.add(str(run[0]))
        if str(run[5]) != ZERO:  # a lease held (or expired, not yet forfeited)
            owed += int(cfg[-2])
    for ev in chain.events(training, "UpdatePosted", first_block):
        u = chain.call(fn.getUpdate(int(ev["args"]["updateId"])))
        accounts.add(str(u[0]))
        if not u[7] and not u[8]:  # neither discarded nor accepted
            owed += int(chain.call(fn.getRun(int(u[1])))[-1][-2])
    for ev in chain.events(training, "UpdateChallenged", first_block):
        c = chain.call(fn.getChallenge(int(ev["args"]["gameId"])))
        accounts.add(str(c[0]))
        if not c[2]:
            u = chain.call(fn.getUpdate(int(c[1])))
            owed += int(chain.call(fn.getRun(int(u[1])))[-1][-1])
    accounts |= {str(ev["args"]["worker"]) for ev in chain.events(training, "LeaseTaken", first_block)}
    owed += sum(int(chain.call(fn.balanceOf(a))) for a in accounts)
    held = chain.balance(training.address)
    return [] if held == owed else [f"TrainingRun holds {held} wei, it owes {owed}"]


def run_training_fault(chain: Chain, spec: FaultSpec, workdir: Path) -> FaultResult:
    """Play one training fault on a fresh deployment (in `workdir/fault-<index>`)."""
    return TrainingFault(chain, spec, workdir / f"train-fault-{spec.index}").play()
