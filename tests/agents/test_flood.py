"""A flood of dispute games must not beat an honest agent (docs/security.md, "Floods").

The attacker (`rollml.harness.flood.Attacker`) pays a bond per game and answers every move at once with
garbage; the chain's clock follows the wall clock, so a defender slower than the move timeout really loses
its game. Before the fix, the 65th concurrent game of one process failed to get a VM executor (64 native
contexts at most): a wrong result finalized, or a correct one was lost with its bond.

- on the embedded chain, 65 games (one past the old limit) against a node and against a challenger;
- on anvil, 300 games against one node and against one challenger (mixed models), as in-process agents and
  as the `rollml node` / `rollml challenger` daemons (`make flood`: tens of minutes, not in CI).
Every honest move is on time: every game is won, every wrong result discarded, every correct result kept.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mipsvm import trace
from rollml.agent.base import Agent
from rollml.core.chain import Chain
from rollml.core.deploy import DEV_PARAMS
from rollml.core.devnet import Anvil
from rollml.core.sdk import RequestStatus
from rollml.harness import flood
from rollml.harness.loadtest import make_setup
from rollml.world import World

pytestmark = [pytest.mark.requires("guest"), pytest.mark.slow]

MIXED = ("mnist-mlp", "lenet", "gpt2-tiny")
MOVE_TIMEOUT = 240  # seconds of (wall-clock) chain time per move
WINDOW = 900  # the challenge window: the node's requests are posted and challenged well inside it
PARAMS = replace(DEV_PARAMS, challenge_window=WINDOW)


def models_of(names: tuple[str, ...]) -> dict[str, bytes]:
    from mlkit.models import reference_model

    return {name: reference_model(name) for name in names}


def defend_node(world: World, node: Agent | None, requests: int, per_result: int, usage: flood.Usage) -> None:
    """Every game on the node's correct results is won on time; every result then finalizes."""
    rep, rids = flood.node_flood(world, node, requests, per_result, usage)
    print(rep)
    assert rep.games == requests * per_result and rep.all_won, rep
    world.chain.advance_time(WINDOW + 1)  # the window passes: every correct result is kept and paid

    def finalized() -> bool:
        return all(world.request_status(r) == RequestStatus.FINALIZED for r in rids)

    flood.wait_until(world, node, finalized, 300, "the node to finalize its results")


def defend_challenger(world: World, challenger: Agent | None, results: int, usage: flood.Usage) -> None:
    """Every wrong result is challenged and discarded; every game is won on time."""
    rep, _ = flood.challenger_flood(world, challenger, results, usage)
    print(rep)
    assert len(world.events("ResultDiscarded")) == results
    assert rep.games == results and rep.all_won, rep


def make_world(chain: Chain, tmp_path: Path, names: tuple[str, ...]) -> World:
    return World.create(chain, tmp_path, models_of(names), params=PARAMS, move_timeout=MOVE_TIMEOUT)


# --------------------------------------------------------------------------------------------------------
# One past the old limit, on the embedded chain
# --------------------------------------------------------------------------------------------------------
def test_65_games_against_one_node(tmp_path: Path) -> None:
    assert trace.LIVE_EXECUTORS.limit < 64  # the budget keeps the process far from the native limit
    world = make_world(Chain.embedded(), tmp_path, ("mnist-mlp",))
    defend_node(world, world.node(1, "node"), requests=5, per_result=13, usage=flood.Usage())


def test_65_wrong_results_against_one_challenger(tmp_path: Path) -> None:
    world = make_world(Chain.embedded(), tmp_path, ("mnist-mlp",))
    defend_challenger(world, world.challenger(3, "challenger"), results=65, usage=flood.Usage())


# --------------------------------------------------------------------------------------------------------
# 300 games, mixed models, on anvil
# --------------------------------------------------------------------------------------------------------
@pytest.mark.campaign
def test_300_games_against_one_node_on_anvil(anvil: Anvil, tmp_path: Path) -> None:
    world = make_world(Chain.connect(anvil.url), tmp_path, MIXED)
    defend_node(world, world.node(1, "node"), requests=20, per_result=15, usage=flood.Usage())


@pytest.mark.campaign
def test_300_wrong_results_against_one_challenger_on_anvil(anvil: Anvil, tmp_path: Path) -> None:
    world = make_world(Chain.connect(anvil.url), tmp_path, MIXED)
    defend_challenger(world, world.challenger(3, "challenger"), results=300, usage=flood.Usage())


@pytest.mark.campaign
def test_300_games_against_the_node_daemon(anvil: Anvil, tmp_path: Path) -> None:
    setup = make_setup(anvil.url, tmp_path, PARAMS, move_timeout=MOVE_TIMEOUT, models=MIXED)
    with setup.daemon("node", 1, "node", workers=2, interval=0.2).running() as daemon:
        defend_node(setup.world, None, requests=20, per_result=15, usage=flood.Usage(daemon.pid))


@pytest.mark.campaign
def test_300_wrong_results_against_the_challenger_daemon(anvil: Anvil, tmp_path: Path) -> None:
    setup = make_setup(anvil.url, tmp_path, PARAMS, move_timeout=MOVE_TIMEOUT, models=MIXED)
    with setup.daemon("challenger", 3, "challenger", workers=2, interval=0.2).running() as daemon:
        defend_challenger(setup.world, None, results=300, usage=flood.Usage(daemon.pid))
