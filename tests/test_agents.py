"""The prover node and the challenger agent on a real chain (in-process py-evm, the deployed contracts), with
the mnist-mlp reference model (~2.75M VM steps): honest runs, dishonest provers and challengers (a wrong
output, a register or memory word flipped at a random step), restarts, and a watcher's timeout claim.

Agents are driven by `rollml.agent.play_until` (ticks; the clock moves only when everybody waits).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("unicorn")

from eth_account.signers.local import LocalAccount

from challenger.agent import Challenger
from mipsvm.constants import KEY_TYPE_KECCAK
from mipsvm.hashing import keccak256
from mipsvm.step import step
from mlkit import models
from mlkit.build import GUEST_ELF
from mlkit.format import model_id
from node.prover import ProverNode
from rollml.agent import Agent, ModelStore, game_report, play_until
from rollml.chain import Chain
from rollml.deploy import Contracts, Deployment, deploy
from rollml.devnet import Anvil
from rollml.dispute import GameStatus, rounds_needed
from rollml.execution import Tamper, TamperKind, execute, guest_oracle, guest_program
from rollml.store import GameRole, GameState, JobRow, JobState, Verdict

pytestmark = pytest.mark.skipif(not GUEST_ELF.is_file(), reason="mlkit/guest/mlkit.elf is not built")

ZERO = "0x0000000000000000000000000000000000000000"


@cache
def mnist() -> tuple[bytes, bytes]:
    exp = models.export_reference("mnist-mlp")
    return exp.model, models.example_payload(exp)


@cache
def honest_steps() -> int:
    return execute(*mnist()).steps


@dataclass
class World:
    """A fresh chain and deployment, its accounts, and the model the agents serve."""

    chain: Chain
    deployment: Deployment
    contracts: Contracts
    accounts: list[LocalAccount]
    models: ModelStore
    tmp: Path

    def node(self, i: int, name: str, **kw: Any) -> ProverNode:
        return ProverNode(
            self.chain, self.deployment, self.accounts[i], self.tmp / f"{name}.db", self.models, **kw
        )

    def challenger(self, i: int, name: str, **kw: Any) -> Challenger:
        return Challenger(
            self.chain, self.deployment, self.accounts[i], self.tmp / f"{name}.db", self.models, **kw
        )

    def request(self) -> int:
        model, payload = mnist()
        mid = model_id(model)
        market = self.contracts.market.functions
        fee = self.chain.call(market.estimateFee(mid, len(payload), 0))
        receipt = self.chain.transact(
            self.accounts[9], market.requestInference(mid, payload, ZERO, 0), value=fee
        )
        return int(
            self.contracts.market.events.InferenceRequested().process_receipt(receipt)[0]["args"]["requestId"]
        )

    def play(self, agents: list[Agent], done: Callable[[], bool], max_ticks: int = 80) -> int:
        return play_until(self.chain, agents, done, max_ticks, idle_advance=self.deployment.move_timeout + 1)

    def events(self, event: str, **filters: Any) -> list[dict[str, Any]]:
        evs = self.chain.events(self.contracts.market, event, self.deployment.block, **filters)
        return [dict(ev["args"]) for ev in evs]

    def earned(self, account: LocalAccount) -> int:
        """Wei withdrawn from the market by `account`."""
        return sum(int(e["amount"]) for e in self.events("Withdrawal", account=account.address))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    model, _ = mnist()
    chain = Chain.embedded()
    accounts = chain.dev_accounts()
    deployment = deploy(chain, accounts[0], model_id(model))
    yield World(chain, deployment, deployment.contracts(chain), accounts, ModelStore([model]), tmp_path)


def job_of(node: ProverNode, request_id: int) -> JobRow:
    job = node.store.job(request_id)
    assert job is not None, f"no job for request {request_id}"
    return job


def game_state(agent: Agent, game_id: int) -> GameState:
    game = agent.store.game(game_id)
    assert game is not None, f"game {game_id} unknown"
    return game.state


def finalized(node: ProverNode, request_id: int) -> Callable[[], bool]:
    return lambda: (job := node.store.job(request_id)) is not None and job.state == JobState.FINALIZED


def resolved(world: World) -> list[dict[str, object]]:
    return world.events("ChallengeResolved")


def wrong_tamper(kind: TamperKind, seed: int) -> Tamper:
    """A random flip whose effect survives to the prover's claim (a flipped dead register would not)."""
    honest = execute(*mnist()).claim
    for s in range(seed, seed + 50):
        tamper = Tamper.random(kind, random.Random(s))
        if execute(*mnist(), tamper).claim.final_hash != honest.final_hash:
            return tamper
    raise AssertionError("no effective tamper found")


def test_honest_results_unchallenged_finalize(world: World) -> None:
    node, watcher = world.node(1, "node"), world.challenger(3, "challenger")
    rids = [world.request() for _ in range(3)]
    world.play([node, watcher], lambda: all(finalized(node, rid)() for rid in rids))
    for rid in rids:
        (posted,) = world.events("ResultPosted", requestId=rid)
        assert posted["prover"] == world.accounts[1].address and posted["steps"] == honest_steps()
        assert world.events("ResultFinalized", requestId=rid)
    assert not world.events("ResultChallenged")
    assert len(watcher.store.results(Verdict.CORRECT)) == 3
    fees = sum(int(e["fee"]) for e in world.events("InferenceRequested"))
    assert world.earned(world.accounts[1]) == 3 * world.deployment.params.prover_bond + fees
    assert [t.kind for t in node.store.txs()].count("post") == 3


def test_wrong_output_loses_to_the_challenger_and_the_honest_node_serves_it(world: World) -> None:
    bad = world.node(2, "bad", tamper=Tamper(TamperKind.OUTPUT))
    node = world.node(1, "node")
    first, second = world.challenger(3, "first"), world.challenger(4, "second")
    rid = world.request()
    bad.tick()  # the dishonest node is the first to see and post
    world.play([bad, first, second], lambda: len(world.events("ResultChallenged")) == 2)
    # the first challenger's game ends while the second one's is paused mid-way
    world.play([first, bad], lambda: bool(resolved(world)))
    world.play([second, bad, node, first], finalized(node, rid))

    (won,) = resolved(world)
    assert won["proposerWon"] is False
    (game1, game2) = sorted(int(e["gameId"]) for e in world.events("ResultChallenged"))
    assert game_state(first, game1) == GameState.WON
    assert game_state(second, game2) == GameState.CANCELLED
    assert [t.kind for t in second.store.txs(game_id=game2)][-1] == "refund"
    assert job_of(bad, rid).state == JobState.LOST
    bonds = world.deployment.params
    assert world.earned(world.accounts[3]) == bonds.challenger_bond + bonds.prover_bond
    assert world.earned(world.accounts[4]) == bonds.challenger_bond
    (_, honest_post) = world.events("ResultPosted", requestId=rid)
    assert honest_post["prover"] == world.accounts[1].address
    # the game ended at the leaf: the step of the exit syscall, after at most ceil(log16 T) rounds
    report = game_report(world.chain, world.contracts, game1, world.deployment.block)
    assert report.status == GameStatus.CHALLENGER_WON and not report.by_timeout
    assert report.rounds <= rounds_needed(honest_steps(), world.deployment.arity)
    assert [t.kind for t in report.txs][-1] == "step"


def test_dishonest_challenger_loses_its_bond_to_the_honest_prover(world: World) -> None:
    node = world.node(1, "node")
    liar = world.challenger(3, "liar", tamper=wrong_tamper(TamperKind.REGISTER, 0), challenge_correct=True)
    rid = world.request()
    world.play([node, liar], finalized(node, rid))
    (res,) = resolved(world)
    assert res["proposerWon"] is True
    bonds = world.deployment.params
    fee = int(world.events("InferenceRequested")[0]["fee"])
    assert world.earned(world.accounts[1]) == bonds.prover_bond + bonds.challenger_bond + fee
    assert world.earned(world.accounts[3]) == 0


@pytest.mark.parametrize("liar_role", ["prover", "challenger"])
@pytest.mark.parametrize("kind", [TamperKind.REGISTER, TamperKind.MEMORY])
def test_a_flip_at_a_random_step_is_caught_at_that_step(
    world: World, kind: TamperKind, liar_role: str
) -> None:
    seed = {TamperKind.REGISTER: 11, TamperKind.MEMORY: 23}[kind] + (liar_role == "challenger")
    tamper = wrong_tamper(kind, seed)
    s = tamper.step_in(honest_steps())
    if liar_role == "prover":
        agents: list[Agent] = [world.node(2, "bad", tamper=tamper), world.challenger(3, "challenger")]
        honest_wins = False
    else:
        agents = [world.node(1, "node"), world.challenger(3, "liar", tamper=tamper, challenge_correct=True)]
        honest_wins = True
    world.request()
    world.play(agents, lambda: bool(resolved(world)))
    (res,) = resolved(world)
    assert res["proposerWon"] is honest_wins, f"{kind} flip at step {s}: {tamper}"
    # the bisection narrowed to the tampered step: the leaf executed step s - 1 -> s
    stepped = world.chain.events(world.contracts.game, "Stepped", world.deployment.block)
    assert [ev["args"]["lo"] for ev in stepped] == [s - 1], tamper


def test_the_challenger_loads_the_preimage_part_the_leaf_reads(world: World) -> None:
    """A flip right after the first keccak preimage read: the leaf executes that read, so the challenger
    must load the part into the oracle before its `step` (the dishonest prover does not step eagerly)."""
    model, payload = mnist()
    read = first_keccak_read(model, payload, keccak256(execute(model, payload).output))
    tamper = Tamper(TamperKind.REGISTER, at=read + 1, register=2, mask=1)
    bad = world.node(2, "bad", tamper=tamper, eager_step=False)
    honest = world.challenger(3, "challenger")
    world.request()
    world.play([bad, honest], lambda: bool(resolved(world)))
    assert resolved(world)[0]["proposerWon"] is False
    (game,) = honest.store.games()
    assert [t.kind for t in honest.store.txs(game_id=game.game_id)][-2:] == ["load_preimage", "step"]


def first_keccak_read(model: bytes, payload: bytes, output_hash: bytes) -> int:
    program = guest_program()
    state, memory = program.state.copy(), program.memory.copy()
    oracle = guest_oracle(model, payload, output_hash)
    for n in range(100_000):
        access = step(state, memory, oracle)
        if access.preimage is not None and access.preimage[0][0] == KEY_TYPE_KECCAK:
            return n
    raise AssertionError("no keccak read in the first 100k steps")


class Killed(BaseException):
    """kill -9 in the middle of a tick: after a transaction is mined, before the node records it."""


def kill_after(node: ProverNode, kind: str, times: int = 1) -> None:
    real = node.store.add_tx
    left = [times]

    def add_tx(tx_hash: str, tx_kind: str, *args: Any, **kw: Any) -> None:
        if tx_kind == kind and left[0] > 0:
            left[0] -= 1
            raise Killed(tx_kind)
        real(tx_hash, tx_kind, *args, **kw)

    node.store.add_tx = add_tx  # type: ignore[method-assign,assignment]


def test_node_restarts_after_kill_minus_9_without_double_posting_and_wins(world: World) -> None:
    liar = world.challenger(3, "liar", tamper=wrong_tamper(TamperKind.MEMORY, 5), challenge_correct=True)
    node = world.node(1, "node")
    rid = world.request()

    def restart(old: ProverNode) -> ProverNode:
        old.close()
        old.store.close()
        return world.node(1, "node")  # a new process: same key, same SQLite file, nothing in memory

    kill_after(node, "post")  # killed after postResult is mined, before the job says "posted"
    with pytest.raises(Killed):
        world.play([node, liar], lambda: False)
    node = restart(node)
    world.play([node, liar], lambda: len(world.chain.events(world.contracts.game, "Dissected", 0)) >= 2)
    kill_after(node, "dissect")  # killed mid-dispute, after a dissection is mined
    with pytest.raises(Killed):
        world.play([node, liar], lambda: False)
    node = restart(node)
    world.play([node, liar], finalized(node, rid))

    assert len(world.events("ResultPosted", requestId=rid)) == 1  # posted once
    (res,) = resolved(world)
    assert res["proposerWon"] is True
    dissected = world.chain.events(world.contracts.game, "Dissected", 0)
    assert len({(ev["args"]["lo"], ev["args"]["hi"]) for ev in dissected}) == len(dissected)  # none resent
    assert job_of(node, rid).result_id == 1
    (game,) = node.store.games()
    assert game.role == GameRole.PROPOSER and game.state == GameState.WON


def test_watcher_claims_the_timeout_of_a_stalling_dishonest_challenger(world: World) -> None:
    """The honest prover dissects once and goes offline; the dishonest challenger stalls instead of picking.
    A third party (an honest challenger agent) claims the timeout: the correct result stands."""
    node = world.node(1, "node")
    liar = world.challenger(3, "liar", tamper=wrong_tamper(TamperKind.REGISTER, 0), challenge_correct=True)
    watcher = world.challenger(4, "watcher")
    rid = world.request()
    dissected = lambda: bool(world.chain.events(world.contracts.game, "Dissected", 0))  # noqa: E731
    world.play([liar, node, watcher], dissected)  # the liar ticks first: it has not picked yet
    world.play([watcher], lambda: bool(resolved(world)))  # only the watcher is online
    assert resolved(world)[0]["proposerWon"] is True
    (game,) = watcher.store.games()
    assert game.role == GameRole.WATCHER and game.state == GameState.WON
    assert [t.kind for t in watcher.store.txs(game_id=game.game_id)] == ["timeout"]
    world.play([node], finalized(node, rid))  # the prover, back online, is paid


def test_cli_node_and_challenger_one_pass_each(anvil: Anvil, tmp_path: Path) -> None:
    """`rollml node --once` posts a result on a real anvil; `rollml challenger --once` checks it."""
    from typer.testing import CliRunner

    from rollml.cli import app
    from rollml.deploy import register_model

    model, _ = mnist()
    chain = Chain.connect(anvil.url)
    accounts = chain.dev_accounts()
    deployment = deploy(chain, accounts[0], model_id(model))
    register_model(chain, deployment, accounts[0], model, "mnist-mlp")
    world = World(chain, deployment, deployment.contracts(chain), accounts, ModelStore([model]), tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mnist.mlkit").write_bytes(model)
    dep_file = deployment.save(tmp_path / "deployment.json")
    common = ["--rpc", anvil.url, "--models", str(tmp_path / "models"), "--deployment", str(dep_file)]
    common += ["--workers", "0", "--once"]
    for i, role in ((1, "node"), (3, "challenger")):
        (tmp_path / f"{role}.key").write_text("0x" + bytes(accounts[i].key).hex())
    rid = world.request()
    runner = CliRunner()
    node_args = ["node", "--key", str(tmp_path / "node.key"), "--db", str(tmp_path / "node.db"), *common]
    result = runner.invoke(app, node_args)
    assert result.exit_code == 0, result.output
    assert world.events("ResultPosted", requestId=rid)[0]["prover"] == accounts[1].address
    ch_args = [
        "challenger",
        "--key",
        str(tmp_path / "challenger.key"),
        "--db",
        str(tmp_path / "ch.db"),
        *common,
    ]
    result = runner.invoke(app, [*ch_args, "--log-json"])
    assert result.exit_code == 0, result.output
    from rollml.store import Store

    assert Store(tmp_path / "ch.db").results(Verdict.CORRECT)
    # the same database for another account is refused with one line
    result = runner.invoke(
        app, ["node", "--key", str(tmp_path / "challenger.key"), "--db", str(tmp_path / "node.db"), *common]
    )
    assert result.exit_code == 1 and "belongs to" in result.output


def test_worker_pool_runs_requests_in_processes() -> None:
    """The node's pool with worker processes (the fast VM needs a process's main thread): same result."""
    from rollml.agent import WorkerPool

    pool = WorkerPool(1)
    try:
        pool.submit(7, execute, *mnist())
        assert pool.busy(7) and pool.free() == 0 and pool.pending() == 1
        pool.wait(timeout=120)
        ((key, ex, exc),) = pool.finished()
        assert key == 7 and exc is None and ex.steps == honest_steps()
        assert ex.claim == execute(*mnist()).claim
    finally:
        pool.close()


def test_model_directory_keys_files_by_id_and_rejects_mismatches(tmp_path: Path) -> None:
    model, _ = mnist()
    mid = model_id(model)
    (tmp_path / "mnist.mlkit").write_bytes(model)
    (tmp_path / f"0x{'11' * 32}.mlkit").write_bytes(model)  # named after another id
    (tmp_path / "junk.mlkit").write_bytes(b"junk")
    store = ModelStore.from_dir(tmp_path)
    assert store.ids() == [mid] and store.get(mid) == model and mid in store
