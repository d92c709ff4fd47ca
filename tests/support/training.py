"""A short verifiable training run played on a world (the demo's `train` scenario, smaller): a worker that
posts its first update wrong, an honest one and a fraud-proofer that wins the game on it, then the trained
model registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlkit.train import MLPSpec, digits_batches, spec_of_state
from rollml.core.deploy import register_model
from rollml.core.training import RunPlan, TrainingClient, dataset_store, plan_run, put_batches
from rollml.world import World
from trainer.fraudproofer import FraudProofer
from trainer.worker import TrainingWorker

SPEC = MLPSpec(sizes=(64, 16, 10), batch=48, steps=2, lr=0.2, momentum=0.9)


@dataclass
class PlayedRun:
    run_id: int
    plan: RunPlan
    liar: str  # the worker whose first update was wrong
    honest: str
    final_model: bytes  # the trained model, registered


def play_training_run(world: World, workdir: Path, updates: int = 2, creator: int = 5) -> PlayedRun:
    """Create a run of `updates` updates on `world` (registering the training graph), play it with a lying
    worker (accounts 6), an honest one (7) and a fraud-proofer (8) to the end, register the trained model."""
    chunks, *_ = digits_batches(SPEC, updates * SPEC.steps, seed=1)
    store = dataset_store(workdir / "dataset")
    ids = put_batches(store, chunks)
    plan = plan_run(SPEC, SPEC.init_params(1), ids, 10**15, 10**17, 10**17, 600, 300)
    register_model(world.chain, world.deployment, world.accounts[creator], plan.graph, "mlp-train")
    world.models.add(plan.graph)
    client = TrainingClient(world.chain, world.deployment, world.accounts[creator])
    run_id = client.create_run(plan)
    kw: dict[str, Any] = {"dataset": store, "run_ids": [run_id]}
    liar = world.agent(TrainingWorker, 6, "train-liar", wrong_at=[0], **kw)
    honest = world.agent(TrainingWorker, 7, "train-honest", **kw)
    proofer = world.agent(FraudProofer, 8, "train-proofer", **kw)
    world.play([liar, honest, proofer], lambda: client.run(run_id).finished, max_ticks=120)
    for agent in (liar, honest, proofer):
        agent.close()
    state = client.state(run_id)
    params, _ = spec_of_state(state, SPEC.batch, SPEC.steps, SPEC.lr, SPEC.momentum).decode_state(state)
    model = SPEC.inference_model(params)
    client.register(run_id, model, "digits-trained")
    return PlayedRun(run_id, plan, liar.address, honest.address, model)
