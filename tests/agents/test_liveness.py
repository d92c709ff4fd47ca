"""A malicious counter-party must not stall an honest agent past a deadline (docs/security.md, "Floods").

On anvil, with the chain's clock following the wall clock and an attacker that answers at once with garbage
(`rollml.harness.flood.Attacker`): a claim of an astronomic step count, many tiny games, and an endpoint
that answers every call late. Every game is won within its deadlines. (The fourth case of the issue, huge
preimages, cannot arise: every preimage is at most one 16 KiB chunk, loaded in one transaction,
`Audit.t.sol::test_OOG_ALargestPreimageLeafFitsABlockEasily`; an agent loads and steps such a leaf in time:
`tests/agents/test_agents.py::test_the_challenger_loads_the_preimage_part_the_leaf_reads`.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from support.slowrpc import SlowRpc

from mlkit import models
from mlkit.guest import run_native
from rollml.agent.base import Agent
from rollml.core.chain import Chain
from rollml.core.deploy import DEV_PARAMS
from rollml.core.devnet import Anvil
from rollml.core.dispute import rounds_needed
from rollml.core.sdk import RequestStatus
from rollml.harness import flood
from rollml.harness.campaign import random_input
from rollml.world import World

pytestmark = [pytest.mark.requires("guest", "anvil"), pytest.mark.slow]

MOVE_TIMEOUT = 120


def world_on(anvil: Anvil, tmp_path: Path) -> World:
    model = models.reference_model("mnist-mlp")
    params = replace(DEV_PARAMS, challenge_window=600)
    return World.create(
        Chain.connect(anvil.url), tmp_path, {"mnist-mlp": model}, params=params, move_timeout=MOVE_TIMEOUT
    )


def wrong_results(world: World, attacker: flood.Attacker, steps: list[int], seed: int) -> list[int]:
    """Requests of the MNIST MLP, each answered by the attacker with the right output and a forged final
    state claimed after `steps[i]` steps."""
    import random

    rng = random.Random(seed)
    model = models.reference_model("mnist-mlp")
    rids = []
    for n in steps:
        payload, _ = random_input("mnist-mlp", rng)
        rid = world.request(model, payload)
        attacker.post_wrong(rid, run_native(model, payload).output, n)
        rids.append(rid)
    return rids


def all_discarded(world: World, attacker: flood.Attacker, rids: list[int]) -> bool:
    attacker.sync()
    return all(world.request_status(r) == RequestStatus.OPEN for r in rids)


def play(world: World, attacker: flood.Attacker, challenger: Agent, rids: list[int]) -> flood.FloodReport:
    usage = flood.Usage()
    seconds = flood.play_flood(
        world, attacker, challenger, lambda: all_discarded(world, attacker, rids), 1800
    )
    games = [int(e["gameId"]) for e in world.events("ResultChallenged")]
    rep = flood.report(world, attacker, games, seconds, usage, challenger.capacity.report())
    print(rep)
    assert rep.games == len(rids) and rep.all_won, rep
    return rep


def test_an_astronomic_step_count_is_played_out_in_time(anvil: Anvil, tmp_path: Path) -> None:
    """A claim at `maxSteps` (2^40): the challenger runs the program once (to its exit; states past it are
    fixed points) and answers every one of the rounds the claim costs."""
    world = world_on(anvil, tmp_path)
    attacker = flood.Attacker(world, 2, seed=31)
    max_steps = world.deployment.params.max_steps
    rids = wrong_results(world, attacker, [max_steps, max_steps], seed=32)
    challenger = world.challenger(3, "challenger")
    play(world, attacker, challenger, rids)
    moves = [t for t in challenger.store.txs() if t.kind == "pick"]
    assert len(moves) >= 2 * (rounds_needed(max_steps, world.deployment.arity) - 1)


def test_many_tiny_games_are_all_answered(anvil: Anvil, tmp_path: Path) -> None:
    """60 claims of 1 to 3 steps: games that start at (or next to) their leaf, each needing a step."""
    world = world_on(anvil, tmp_path)
    attacker = flood.Attacker(world, 6, seed=41, bonds_each=12)
    rids = wrong_results(world, attacker, [1 + i % 3 for i in range(60)], seed=42)
    play(world, attacker, world.challenger(3, "challenger"), rids)


def test_a_slow_endpoint_does_not_make_the_agent_miss_a_deadline(anvil: Anvil, tmp_path: Path) -> None:
    """Every call of the challenger's endpoint answers 50 ms late; 20 games, all won."""
    world = world_on(anvil, tmp_path)
    attacker = flood.Attacker(world, 4, seed=51, bonds_each=6)
    rids = wrong_results(world, attacker, [10**9] * 20, seed=52)
    with SlowRpc(anvil.url, 0.05) as url:
        challenger = world.challenger(3, "challenger", chain=Chain.connect(url))
        play(world, attacker, challenger, rids)
