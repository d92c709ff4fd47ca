"""The fault campaign's training kinds, bounded for CI: one fault of each (a wrong update, withheld weights, a
stalled lease, a lying fraud-proofer) on a training run on the embedded chain, each of which must end with the
honest side winning and the funds conserved; the funds checks themselves see a wei the outcomes do not
explain; and `scripts/fault_campaign.py --kinds training` runs them (`make fault-campaign KINDS=training`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.env import ROOT

from rollml.core.chain import Chain
from rollml.core.training import TrainingClient
from rollml.harness.campaign import (
    TRAIN_MODEL,
    CampaignReport,
    FaultSpec,
    TrainingFaultKind,
    plan_faults,
    run_campaign,
)
from rollml.harness.training_faults import (
    DEPOSIT,
    LEASE,
    TrainingFault,
    training_credits_by_rule,
    training_invariant,
)

pytestmark = pytest.mark.requires("guest")

SCRIPT = ROOT / "scripts" / "fault_campaign.py"
CI_SEED = 20261205


@pytest.fixture(scope="module")
def report() -> CampaignReport:
    plan = [FaultSpec(i + 1, kind, TRAIN_MODEL, CI_SEED + i) for i, kind in enumerate(TrainingFaultKind)]
    return run_campaign(Chain.embedded(), plan, seed=CI_SEED)


def test_every_training_fault_is_caught_won_by_the_honest_side_with_funds_conserved(
    report: CampaignReport,
) -> None:
    assert sorted(r.kind for r in report.results) == sorted(TrainingFaultKind)
    for r in report.results:
        assert r.error is None, (r.kind, r.error)
        assert r.caught and r.honest_won and r.funds_conserved, (r.kind, r.problems, r.evidence)
        assert not r.agent_errors, (r.kind, r.agent_errors)
    assert report.ok
    assert report.summary() == "faults: 4 injected, 4 caught, 4 honest wins, funds conserved: yes"


def test_each_training_kind_shows_what_it_must(report: CampaignReport) -> None:
    by = {r.kind: r for r in report.results}
    wrong = by[TrainingFaultKind.WRONG_UPDATE]
    assert wrong.ending == "game" and any("challenger won" in e for e in wrong.evidence)
    assert any("discarded, won by the fraud-proofer" in e for e in wrong.evidence)
    for kind in (TrainingFaultKind.STALLED_LEASE, TrainingFaultKind.WITHHELD_WEIGHTS):
        r = by[kind]
        assert r.ending == "lease expiry" and any(e.startswith("leases forfeited") for e in r.evidence)
    assert "keeps the weights" in by[TrainingFaultKind.WITHHELD_WEIGHTS].detail
    lying = by[TrainingFaultKind.LYING_PROOFER]
    assert lying.liar == "fraud-proofer" and any("won by the worker" in e for e in lying.evidence)
    for r in report.results:
        assert any(e.startswith("the final state: expected honest training's, got it") for e in r.evidence)


def test_the_training_funds_checks_see_an_unexplained_wei(tmp_path: Path) -> None:
    """The checks are not vacuous: a held lease's deposit is owed by the contract, a forfeited one is the
    creator's by the rules, and one wei nobody's transactions explain is reported."""
    chain = Chain.embedded()
    fault = TrainingFault(chain, FaultSpec(1, TrainingFaultKind.STALLED_LEASE, TRAIN_MODEL, 1), tmp_path)
    fault.deploy()
    training, first = fault.training, fault.first_block
    assert training_invariant(chain, training, first) == []
    staller = TrainingClient(chain, fault.world.deployment, fault.world.accounts[1])
    staller.take_lease(fault.run_id)
    assert training_invariant(chain, training, first) == []  # the deposit is owed while the lease is held
    assert training_credits_by_rule(chain, training, first) == {}
    chain.advance_time(LEASE + 1)
    TrainingClient(chain, fault.world.deployment, fault.world.accounts[2]).take_lease(fault.run_id)
    creator = fault.world.accounts[5].address
    assert training_credits_by_rule(chain, training, first) == {creator: DEPOSIT}
    assert fault.check_funds() == []
    fault.before[creator] += 1
    (problem,) = fault.check_funds()
    assert problem.startswith(creator[:10]) and "its txs explain" in problem


def test_the_plan_and_the_command_line_name_the_training_kinds() -> None:
    plan = plan_faults(4, 1, [], [TrainingFaultKind.STALLED_LEASE, TrainingFaultKind.WRONG_UPDATE])
    assert {s.kind for s in plan} == {TrainingFaultKind.STALLED_LEASE, TrainingFaultKind.WRONG_UPDATE}
    assert {s.model for s in plan} == {TRAIN_MODEL}
    cmd = [sys.executable, str(SCRIPT), "--faults", "1", "--seed", "3", "--kinds", "train-stalled-lease"]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["ok"] and data["faults"][0]["kind"] == "train-stalled-lease"
    assert proc.stderr.rstrip("\n").splitlines()[-1] == data["summary"]
    bad = subprocess.run([*cmd[:-1], "train-nonsense"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "unknown fault kind 'train-nonsense'" in bad.stderr
