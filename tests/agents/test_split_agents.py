"""The agents on split claims (docs/protocol.md, "Split game"), end to end on an embedded chain: a node posts
after a native run (no VM), the challenger re-checks natively, both play the top level over the states, the
node opens the leaf and the bottom level is the node guest's VM game; for the MNIST MLP and GPT-2 tiny
(generate mode, the KV cache), with a wrong tensor early, late and in the output encoding, and a lying
challenger."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from mlkit import models
from mlkit.guest import run_states
from mlkit.schedule import ExecKind
from node.prover import ProverNode
from rollml.agent.reads import game_report
from rollml.core.chain import Chain
from rollml.core.dispute import GameStatus
from rollml.core.execution import Tamper, TamperKind
from rollml.core.store import JobRow, JobState
from rollml.world import World


@functools.cache
def reference(name: str) -> tuple[bytes, bytes]:
    exp = models.reference(name)
    return exp.model, models.example_payload(exp)


@functools.cache
def executions(name: str) -> int:
    return len(run_states(*reference(name)))


@functools.cache
def first_kv_append(name: str) -> int:
    st = run_states(*reference(name))
    return next(x.index for x in st.executions if x.kind == ExecKind.KV_APPEND)


def job_of(node: ProverNode, request_id: int) -> JobRow:
    job = node.store.job(request_id)
    assert job is not None
    return job


def split_world(tmp_path: Path, name: str) -> World:
    return World.create(Chain.embedded(), tmp_path, {name: reference(name)[0]})


def tamper_at(name: str, where: str) -> Tamper:
    n = executions(name)
    if where == "output":
        return Tamper(TamperKind.OUTPUT)
    at = {"early": 2, "late": n - 1, "kv": first_kv_append(name) if name.startswith("gpt2") else 2}[where]
    return Tamper(TamperKind.TENSOR, at=at)


def spy_on_scans(world: World, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """The filtered log scans (e.g. `gameId`-filtered eth_getLogs) the world's chain makes from now on, until
    `monkeypatch.undo()`."""
    scans: list[dict[str, object]] = []
    events = world.chain.events

    def spy(contract, event, from_block, to_block=None, **filters):  # type: ignore[no-untyped-def]
        if filters:
            scans.append({"event": event, **filters})
        return events(contract, event, from_block, to_block, **filters)

    monkeypatch.setattr(world.chain, "events", spy)
    return scans


CASES = [
    ("mnist-mlp", "early"),
    ("mnist-mlp", "late"),
    ("mnist-mlp", "output"),
    ("gpt2-tiny", "early"),
    ("gpt2-tiny", "kv"),
    ("gpt2-tiny", "late"),
    ("gpt2-tiny", "output"),
]


@pytest.mark.parametrize(("name", "where"), CASES)
def test_honest_challenger_beats_a_wrong_split_claim(tmp_path: Path, name: str, where: str) -> None:
    world = split_world(tmp_path, name)
    model, payload = reference(name)
    bad = world.node(2, "bad", tamper=tamper_at(name, where), split=True)
    node = world.node(1, "node", split=True)
    challenger = world.challenger(3, "challenger")
    rid = world.request(model, payload)
    bad.tick()  # the dishonest node is the first to see and post
    assert world.events("ResultPosted")[0]["prover"] == world.accounts[2].address
    world.play([bad, challenger, node], lambda: job_of(node, rid).state == JobState.FINALIZED, max_ticks=400)
    (challenged,) = world.events("ResultChallenged")
    report = game_report(world.chain, world.contracts, int(challenged["gameId"]), world.deployment.block)
    assert report.status == GameStatus.CHALLENGER_WON and not report.by_timeout
    kinds = [t.kind for t in report.txs]
    assert "open" in kinds and kinds[-1] == "step", kinds
    assert job_of(bad, rid).state == JobState.LOST
    honest = world.events("ResultPosted", requestId=rid)[-1]
    assert honest["prover"] == world.accounts[1].address
    assert bytes(honest["outputHash"]) == run_states(model, payload).output_hash


@pytest.mark.parametrize("name", ["mnist-mlp", "gpt2-tiny"])
def test_lying_challenger_loses_to_an_honest_split_claim(tmp_path: Path, name: str) -> None:
    world = split_world(tmp_path, name)
    model, payload = reference(name)
    node = world.node(1, "node", split=True)
    liar = world.challenger(3, "liar", tamper=Tamper(TamperKind.TENSOR, at=3), challenge_correct=True)
    rid = world.request(model, payload)
    world.play([node, liar], lambda: job_of(node, rid).state == JobState.FINALIZED, max_ticks=400)
    (challenged,) = world.events("ResultChallenged")
    report = game_report(world.chain, world.contracts, int(challenged["gameId"]), world.deployment.block)
    assert report.status == GameStatus.PROPOSER_WON
    assert "open" in [t.kind for t in report.txs]


def test_the_bottom_level_is_played_without_a_log_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both agents learn the opened record from the `Opened` event their sync reads anyway: looking it up
    per game from the game's block (`gameId`-filtered eth_getLogs) cost seconds a game on a long chain and
    made a 65-game flood miss its move deadlines."""
    world = split_world(tmp_path, "mnist-mlp")
    model, payload = reference("mnist-mlp")
    bad = world.node(2, "bad", tamper=tamper_at("mnist-mlp", "late"), split=True)
    challenger = world.challenger(3, "challenger")
    scans = spy_on_scans(world, monkeypatch)
    rid = world.request(model, payload)
    world.play([bad, challenger], lambda: job_of(bad, rid).state == JobState.LOST, max_ticks=400)
    monkeypatch.undo()
    assert not [s for s in scans if s["event"] == "Opened"], scans
    (challenged,) = world.events("ResultChallenged")
    report = game_report(world.chain, world.contracts, int(challenged["gameId"]), world.deployment.block)
    assert "open" in [t.kind for t in report.txs] and report.txs[-1].kind == "step"


def test_a_restart_at_the_bottom_level_finds_the_opened_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent restarted after the `open` never saw the `Opened` event: it looks the record up once (a log
    scan from the game's block) and plays the bottom level to its end."""
    world = split_world(tmp_path, "mnist-mlp")
    model, payload = reference("mnist-mlp")
    bad = world.node(2, "bad", tamper=tamper_at("mnist-mlp", "late"), split=True)
    challenger = world.challenger(3, "challenger")
    rid = world.request(model, payload)
    game, start = world.contracts.game, world.deployment.block
    world.play([bad, challenger], lambda: bool(world.chain.events(game, "Opened", start)), max_ticks=400)
    challenger.close()
    scans = spy_on_scans(world, monkeypatch)
    restarted = world.challenger(3, "challenger")  # the same store
    world.play([bad, restarted], lambda: job_of(bad, rid).state == JobState.LOST, max_ticks=400)
    monkeypatch.undo()
    assert [s["event"] for s in scans].count("Opened") == 1, scans
    (challenged,) = world.events("ResultChallenged")
    report = game_report(world.chain, world.contracts, int(challenged["gameId"]), world.deployment.block)
    assert report.status == GameStatus.CHALLENGER_WON and report.txs[-1].kind == "step"


def test_the_embedded_chain_estimates_the_least_gas_each_move_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded chain estimates gas from one run (rollml.core.chain._gas_from_one_run) instead of
    py-evm's bisection: on every transaction of a split dispute (nested calls that forward 63/64 of the gas
    left included) its estimate runs, and is at most one 64/63 step above the least limit that does."""
    from eth.estimators.gas import binary_gas_search

    from rollml.core import chain as chain_module

    checked: list[tuple[int, int]] = []

    def compared(state, transaction):  # type: ignore[no-untyped-def]
        ours = estimate(state, transaction)
        least = binary_gas_search(state, transaction, tolerance=1)
        checked.append((ours, least))
        return ours

    estimate = chain_module._gas_from_one_run
    monkeypatch.setattr(chain_module, "_gas_from_one_run", compared)
    world = split_world(tmp_path, "mnist-mlp")
    model, payload = reference("mnist-mlp")
    bad = world.node(2, "bad", tamper=tamper_at("mnist-mlp", "early"), split=True)
    challenger = world.challenger(3, "challenger")
    rid = world.request(model, payload)
    world.play([bad, challenger], lambda: job_of(bad, rid).state == JobState.LOST, max_ticks=400)
    assert len(checked) > 15
    assert all(least <= ours <= least * 64 // 63 + 1 for ours, least in checked), checked
