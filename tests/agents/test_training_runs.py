"""Verifiable training end to end on a real chain: the Python rules against TrainingRun.sol, two workers (one
posting a wrong update) and a fraud-proofer that wins the game, the trained model registered and served,
bad input refused with one line and no funds lost, and the `rollml train` commands on anvil."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlkit import native
from mlkit.format import model_id
from mlkit.io import decode_payload, encode_payload
from mlkit.train import MLPSpec, digits_batches, next_state, spec_of_state
from rollml.core.chain import Chain, ChainError
from rollml.core.dispute import GameStatus
from rollml.core.sdk import game_status
from rollml.core.training import (
    TrainingClient,
    TrainingInputError,
    compute_update,
    dataset_store,
    input_id,
    output_hash,
    plan_run,
    put_batches,
    resolve_batches,
    template_hash,
)
from rollml.world import World
from trainer.fraudproofer import FraudProofer
from trainer.worker import TrainingWorker

SPEC = MLPSpec(sizes=(64, 16, 10), batch=48, steps=2, lr=0.2, momentum=0.9)
UPDATES = 3


def world_training(world: World) -> Any:
    assert world.contracts.training is not None
    return world.contracts.training


def _setup(chain: Chain, tmp_path: Path) -> tuple[World, Any, TrainingClient, int, Any]:
    chunks, *_ = digits_batches(SPEC, UPDATES * SPEC.steps, seed=1)
    store = dataset_store(tmp_path / "data")
    ids = put_batches(store, chunks)
    plan = plan_run(SPEC, SPEC.init_params(1), ids, 10**15, 10**17, 10**17, 600, 300)
    world = World.create(chain, tmp_path, {"mlp-train": plan.graph})
    creator = TrainingClient(chain, world.deployment, world.accounts[5])
    return world, store, creator, creator.create_run(plan), plan


def test_a_run_with_a_wrong_update_caught_and_the_model_registered(tmp_path: Path) -> None:
    world, store, creator, run_id, plan = _setup(Chain.embedded(), tmp_path)
    training = world_training(world).functions
    # the contract's rules are the Python ones
    state0 = plan.initial_state
    batches0 = resolve_batches(store, plan.batch_ids[:2])
    assert bytes(world.chain.call(training.inputIdOf(run_id))) == input_id(state0, plan.batch_ids[:2])
    loss_bits = b"\x3f\x80\x00\x00"
    out = world.chain.call(training.outputOf(run_id, state0, int.from_bytes(loss_bits, "big")))
    assert bytes(out) == plan.spec.output_of(state0, loss_bits)
    assert template_hash(state0, SPEC.state_ranges) == template_hash(
        SPEC.encode_state([p + 1 for p in SPEC.init_params(2)]), SPEC.state_ranges
    )

    kw: dict[str, Any] = {"dataset": store, "run_ids": [run_id]}
    liar = world.agent(TrainingWorker, 1, "liar", wrong_at=[0], **kw)
    honest = world.agent(TrainingWorker, 2, "honest", **kw)
    proofer = world.agent(FraudProofer, 3, "proofer", **kw)
    before = {a.address: world.chain.balance(a.address) for a in (liar, honest, proofer)}
    world.play([liar, honest, proofer], lambda: creator.run(run_id).finished, max_ticks=120)

    status = creator.status(run_id)
    assert status["accepted"] == UPDATES and status["wrong_updates_caught"] == 1
    (game,) = [
        int(e["args"]["gameId"]) for e in world.chain.events(world_training(world), "UpdateChallenged", 0)
    ]
    assert game_status(world.chain, world.contracts, game) == GameStatus.CHALLENGER_WON
    assert proofer.caught == 1
    # the liar lost its deposit to the fraud-proofer (minus gas), the honest worker earned rewards
    assert world.chain.balance(proofer.address) > before[proofer.address] + 10**17 // 2
    assert world.chain.balance(liar.address) < before[liar.address] - 10**17 // 2

    # the accepted state is what honest training gives: the same updates re-run natively
    state = state0
    for i in range(UPDATES):
        out_i = native.run(
            plan.graph, state + b"".join(resolve_batches(store, plan.batch_ids[2 * i : 2 * i + 2]))
        )
        state, _ = next_state(state, out_i, SPEC.records_end)
    assert creator.state(run_id) == state
    assert creator.losses(run_id)[0] == pytest.approx(
        compute_update(plan.graph, state0, batches0, SPEC.records_end, 0).loss
    )

    # register the trained model and serve a request with it
    params, _ = spec_of_state(state, 48, 2, 0.2, 0.9).decode_state(state)
    model = SPEC.inference_model(params)
    with pytest.raises(ChainError, match="ModelMismatch"):
        creator.register(run_id, SPEC.inference_model([p * 2 for p in params]), "wrong")
    mid = creator.register(run_id, model, "digits-trained")
    assert mid == model_id(model)
    world.models.add(model)
    x = np.zeros((1, 64), np.float32)
    rid = world.request(model, encode_payload([x]))
    node = world.node(4, "node")
    from rollml.core.sdk import RequestStatus

    world.play([node], lambda: world.request_status(rid) == RequestStatus.FINALIZED)
    posted = world.events("ResultPosted", requestId=rid)[0]["output"]
    assert decode_payload(bytes(posted))[0].shape == (1,)
    for a in (liar, honest, proofer, node):
        a.close()


def test_bad_input_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    world, store, creator, run_id, plan = _setup(Chain.embedded(), tmp_path)
    chain = world.chain
    # a batch id that does not resolve: refused before anything is sent
    with pytest.raises(TrainingInputError, match="does not resolve"):
        resolve_batches(store, [b"\x02" + b"\x11" * 31])
    worker = TrainingClient(chain, world.deployment, world.accounts[1])
    worker.take_lease(run_id)
    held = chain.balance(world_training(world).address)
    graph, state = plan.graph, plan.initial_state
    work = compute_update(graph, state, resolve_batches(store, plan.batch_ids[:2]), SPEC.records_end, 0)
    # weights of the wrong shape: another architecture's state
    other = MLPSpec(sizes=(64, 15, 10), batch=48, steps=2)
    bad = other.encode_state(other.init_params(0))
    from dataclasses import replace

    with pytest.raises(ChainError, match="WrongStateLayout"):
        worker.post_update(run_id, replace(work, state=bad))
    with pytest.raises(ChainError, match="StepNotNext"):
        worker.post_update(run_id, replace(work, index=1))
    # an unknown architecture
    unknown = replace(plan, architecture=b"\x02" + b"\x22" * 31)
    with pytest.raises(ChainError, match="UnknownArchitecture"):
        creator.create_run(unknown)
    assert chain.balance(world_training(world).address) == held
    update_id = worker.post_update(run_id, work)  # the lease is intact
    assert worker.update(update_id).output_hash == output_hash(
        work.state, SPEC.records_end, SPEC.n_outputs, work.loss_bits
    )


def test_train_commands_on_anvil(anvil: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rollml.cli import app

    chain = Chain.connect(anvil.url)
    world = World.create(chain, tmp_path, {"mlp-train": SPEC.training_graph()})
    dep = world.deployment.save(tmp_path / "deployment.json")
    keys = []
    for i in (1, 2, 3):
        keys.append(tmp_path / f"{i}.key")
        keys[-1].write_text("0x" + bytes(world.accounts[i].key).hex())
    data, models = tmp_path / "data", tmp_path / "models"
    common = ["--rpc", anvil.url, "--deployment", str(dep)]
    runner = CliRunner()
    bad = tmp_path / "ids.txt"
    bad.write_text("0x02" + "33" * 31 + "\n0x02" + "44" * 31 + "\n")
    r = runner.invoke(
        app, ["train", "create", "--key", str(keys[0]), "--batch-ids", str(bad), "--data", str(data), *common]
    )
    assert r.exit_code == 1 and "does not resolve" in r.output and "Traceback" not in r.output
    create = ["train", "create", "--key", str(keys[0]), "--updates", "2", "--data", str(data)]
    r = runner.invoke(app, [*create, "--models", str(models), "--json", *common])
    assert r.exit_code == 0, r.output
    created = json.loads(r.output.strip().splitlines()[-1])
    run = str(created["run"])
    assert created["updates"] == 2
    agent_args = ["--run", run, "--data", str(data), "--models", str(models), "--once", *common]
    for _ in range(2):
        r = runner.invoke(
            app, ["train", "worker", "--key", str(keys[1]), "--db", str(tmp_path / "w.db"), *agent_args]
        )
        assert r.exit_code == 0, r.output
        r = runner.invoke(
            app,
            ["train", "fraud-proofer", "--key", str(keys[2]), "--db", str(tmp_path / "f.db"), *agent_args],
        )
        assert r.exit_code == 0, r.output
        chain.advance_time(601)
    r = runner.invoke(
        app, ["train", "worker", "--key", str(keys[1]), "--db", str(tmp_path / "w.db"), *agent_args]
    )
    r = runner.invoke(app, ["train", "status", "--run", run, "--json", *common])
    status = json.loads(r.output.strip().splitlines()[-1])
    assert status["accepted"] == 2 and len(status["losses"]) == 2, status
    r = runner.invoke(
        app,
        [
            "train",
            "register",
            "--key",
            str(keys[0]),
            "--run",
            run,
            "--models",
            str(models),
            "--json",
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    reg = json.loads(r.output.strip().splitlines()[-1])
    assert Path(reg["file"]).is_file() and reg["sizes"] == [64, 16, 10]
    r = runner.invoke(app, ["train", "status", "--run", "99", *common])
    assert r.exit_code == 1 and "no training run 99" in r.output


def test_a_fraud_proofer_that_starts_after_the_post_still_catches_it(tmp_path: Path) -> None:
    """The wrong update was posted before the fraud-proofer's event cursor (a restart, a late start): it
    checks each run's pending update anyway, challenges and wins within the window."""
    world, store, creator, run_id, _ = _setup(Chain.embedded(), tmp_path)
    kw: dict[str, Any] = {"dataset": store, "run_ids": [run_id]}
    liar = world.agent(TrainingWorker, 1, "liar", wrong_at=[0], **kw)
    liar.tick()  # lease + the wrong post
    assert creator.run(run_id).pending_update == 1
    proofer = world.agent(FraudProofer, 3, "late-proofer", **kw)
    proofer.store.set_cursor(world.chain.block_number())  # it never sees the UpdatePosted event
    world.play([proofer, liar], lambda: creator.status(run_id)["wrong_updates_caught"] == 1, max_ticks=60)
    assert proofer.caught == 1 and creator.update(1).discarded
    liar.close()
    proofer.close()
