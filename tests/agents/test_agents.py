"""The prover node and the challenger agent on a real chain (in-process py-evm, the deployed contracts), with
the mnist-mlp reference model (0.57M VM steps): honest runs, dishonest provers and challengers (a wrong
output, a register or memory word flipped at a random step), restarts, and a watcher's timeout claim.

Agents are driven by `rollml.world.play_until` (ticks; the clock moves only when everybody waits).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from support.models import first_keccak_read, mnist

from mipsvm.hashing import keccak256
from mlkit.format import model_id
from node.prover import ProverNode
from rollml.agent.base import Agent
from rollml.agent.models import ModelStore
from rollml.agent.reads import game_report
from rollml.core.chain import Chain
from rollml.core.devnet import Anvil
from rollml.core.dispute import GameStatus, Role, rounds_needed
from rollml.core.execution import Tamper, TamperKind, execute
from rollml.core.split import split_execute
from rollml.core.store import GameState, JobRow, JobState, Verdict
from rollml.world import World

pytestmark = pytest.mark.requires("guest")

ZERO = "0x0000000000000000000000000000000000000000"


@cache
def honest_steps() -> int:
    return execute(*mnist()).steps


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


@pytest.mark.parametrize("split", [True, False], ids=["split-claims", "vm-claims"])
def test_honest_results_unchallenged_finalize(world: World, split: bool) -> None:
    node, watcher = world.node(1, "node", split=split), world.challenger(3, "challenger")
    rids = [world.request(*mnist()) for _ in range(3)]
    world.play([node, watcher], lambda: all(finalized(node, rid)() for rid in rids))
    # a split claim's `steps` are the node executions N of the model's schedule, a VM claim's the VM steps
    claimed = split_execute(*mnist())[0].executions if split else honest_steps()
    for rid in rids:
        (posted,) = world.events("ResultPosted", requestId=rid)
        assert posted["prover"] == world.accounts[1].address and posted["steps"] == claimed
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
    rid = world.request(*mnist())
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
    # two games were open on the wrong result: each gets its bond and half the unburned part of the liar's
    bonds = world.deployment.params
    share, burnt = bonds.discard_split(2)
    assert world.earned(world.accounts[3]) == bonds.challenger_bond + share
    assert world.earned(world.accounts[4]) == bonds.challenger_bond + share
    assert int(world.chain.call(world.contracts.market.functions.burned())) == burnt
    (_, honest_post) = world.events("ResultPosted", requestId=rid)
    assert honest_post["prover"] == world.accounts[1].address
    # the game ended at the leaf: the step of the exit syscall, after at most ceil(log16 T) rounds
    report = game_report(world.chain, world.contracts, game1, world.deployment.block)
    assert report.status == GameStatus.CHALLENGER_WON and not report.by_timeout
    assert report.rounds <= rounds_needed(honest_steps(), world.deployment.arity)
    assert [t.kind for t in report.txs][-1] == "step"


def test_dishonest_challenger_loses_its_bond_to_the_honest_prover(world: World) -> None:
    node = world.node(1, "node", split=False)  # a VM claim: the liar flips a register of the guest
    liar = world.challenger(3, "liar", tamper=wrong_tamper(TamperKind.REGISTER, 0), challenge_correct=True)
    rid = world.request(*mnist())
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
        bad = world.node(2, "bad", tamper=tamper, split=False)
        agents: list[Agent] = [bad, world.challenger(3, "challenger")]
        honest_wins = False
    else:
        node = world.node(1, "node", split=False)  # VM claims: the flip is in the guest's run
        agents = [node, world.challenger(3, "liar", tamper=tamper, challenge_correct=True)]
        honest_wins = True
    world.request(*mnist())
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
    bad = world.node(2, "bad", tamper=tamper, eager_step=False, split=False)
    honest = world.challenger(3, "challenger")
    world.request(*mnist())
    world.play([bad, honest], lambda: bool(resolved(world)))
    assert resolved(world)[0]["proposerWon"] is False
    (game,) = honest.store.games()
    assert [t.kind for t in honest.store.txs(game_id=game.game_id)][-2:] == ["load_preimage", "step"]


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
    rid = world.request(*mnist())

    def restart(old: ProverNode) -> ProverNode:
        old.close()
        old.store.close()
        return world.node(1, "node")  # a new process: same key, same SQLite file, nothing in memory

    kill_after(node, "post")  # killed after postVMResult is mined, before the job says "posted"
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
    assert game.role == Role.PROPOSER and game.state == GameState.WON


def test_watcher_claims_the_timeout_of_a_stalling_dishonest_challenger(world: World) -> None:
    """The honest prover dissects once and goes offline; the dishonest challenger stalls instead of picking.
    A third party (an honest challenger agent) claims the timeout: the correct result stands."""
    node = world.node(1, "node")
    liar = world.challenger(3, "liar", tamper=wrong_tamper(TamperKind.REGISTER, 0), challenge_correct=True)
    watcher = world.challenger(4, "watcher")
    rid = world.request(*mnist())
    dissected = lambda: bool(world.chain.events(world.contracts.game, "Dissected", 0))  # noqa: E731
    world.play([liar, node, watcher], dissected)  # the liar ticks first: it has not picked yet
    world.play([watcher], lambda: bool(resolved(world)))  # only the watcher is online
    assert resolved(world)[0]["proposerWon"] is True
    (game,) = watcher.store.games()
    assert game.role == Role.WATCHER and game.state == GameState.WON
    assert [t.kind for t in watcher.store.txs(game_id=game.game_id)] == ["timeout"]
    world.play([node], finalized(node, rid))  # the prover, back online, is paid


def test_cli_node_and_challenger_one_pass_each(anvil: Anvil, tmp_path: Path) -> None:
    """`rollml node --once` posts a result on a real anvil; `rollml challenger --once` checks it."""
    from typer.testing import CliRunner

    from rollml.cli import app

    model, _ = mnist()
    world = World.create(Chain.connect(anvil.url), tmp_path, {"mnist-mlp": model})
    accounts, deployment = world.accounts, world.deployment
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mnist.mlkit").write_bytes(model)
    dep_file = deployment.save(tmp_path / "deployment.json")
    common = ["--rpc", anvil.url, "--models", str(tmp_path / "models"), "--deployment", str(dep_file)]
    common += ["--workers", "0", "--once"]
    for i, role in ((1, "node"), (3, "challenger")):
        (tmp_path / f"{role}.key").write_text("0x" + bytes(accounts[i].key).hex())
    rid = world.request(*mnist())
    runner = CliRunner()
    node_args = ["node", "--key", str(tmp_path / "node.key"), "--db", str(tmp_path / "node.db"), *common]
    result = runner.invoke(app, node_args)
    assert result.exit_code == 0, result.output
    (posted,) = world.events("ResultPosted", requestId=rid)
    assert posted["prover"] == accounts[1].address
    market = world.contracts.market.functions
    assert world.chain.call(market.getResult(posted["resultId"]))[9], "the default is a split claim"
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
    from rollml.core.store import Store

    assert Store(tmp_path / "ch.db").results(Verdict.CORRECT)
    # the same database for another account is refused with one line
    result = runner.invoke(
        app, ["node", "--key", str(tmp_path / "challenger.key"), "--db", str(tmp_path / "node.db"), *common]
    )
    assert result.exit_code == 1 and "belongs to" in result.output
    # --vm-claims posts the guest's final VM state; a lie the chosen claims cannot hold is one line
    rid2 = world.request(*mnist())
    result = runner.invoke(app, [*node_args, "--vm-claims"])
    assert result.exit_code == 0, result.output
    (posted,) = world.events("ResultPosted", requestId=rid2)
    assert not world.chain.call(market.getResult(posted["resultId"]))[9], "--vm-claims posts a VM claim"
    for lie, claims in (("register", "--split"), ("tensor", "--vm-claims")):
        result = runner.invoke(app, [*node_args, claims, "--dishonest", lie])
        assert result.exit_code == 1 and f"a {lie} tamper needs" in result.output, result.output


def test_worker_pool_runs_requests_in_processes() -> None:
    """The node's pool with worker processes (the fast VM needs a process's main thread): same result."""
    from rollml.agent.pool import WorkerPool

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
