"""Load on a real anvil (issue 7, item 5), and a big model's trace kept off the agents' ticks.

1. 200 MNIST requests queued at once against ONE `rollml node` daemon (with the honest `rollml challenger`
   daemon verifying every result); every request finalizes with the native runtime's output for its digit,
   posted once by the node, none lost. It runs `bench/load.py`'s code with the full 200 requests: about
   100-130 s on a loaded 2-core machine (the node posts about 125 results a minute; each request then
   waits its 10 s challenge window), so it fits the CI budget without scaling down. The figures
   (throughput, latency, gas, peak memory) are printed with `-s`; speed targets live in the benchmark, not
   here: the timeout only catches a stuck node.
2. A dispute over a program long enough that building its trace takes seconds (a seeded conv net, ~600M
   VM steps): agents with worker processes build and query game traces in their trace process, so their
   ticks keep returning in a fraction of the build time while it runs, and the honest side still wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import pytest
from support.models import mnist

from challenger.agent import Challenger
from mipsvm.hashing import keccak256
from mlkit.format import model_id
from mlkit.guest import blob_ids
from node.prover import ProverNode
from rollml.agent.base import Agent, TickStats
from rollml.agent.models import ModelStore
from rollml.agent.traces import RemoteTrace, TraceBusy, TraceHost
from rollml.core.chain import Chain
from rollml.core.deploy import deploy
from rollml.core.devnet import Anvil
from rollml.core.execution import GameTrace, Tamper, TamperKind, execute, wrong_output
from rollml.core.store import GameState
from rollml.harness import loadtest as load
from rollml.world import play_until

pytestmark = [pytest.mark.requires("guest", "anvil"), pytest.mark.slow]

T = TypeVar("T")
REQUESTS = 200
TIMEOUT = 600.0  # seconds for every request to finalize (a stuck node, not a slow one)


def test_200_requests_on_one_node_all_finalize_with_the_right_output(anvil: Anvil, tmp_path: Path) -> None:
    config = load.LoadConfig(requests=REQUESTS, timeout=TIMEOUT)
    result = load.run_load(anvil.url, tmp_path, config, log=lambda _: None)
    print(json.dumps(asdict(result)))
    assert result.lost == [], f"requests not finalized: {result.lost}"
    assert result.finalized == result.correct == REQUESTS
    assert result.txs["requester"] == REQUESTS
    assert result.txs["node"] >= 2 * REQUESTS  # a post and a finalize each (plus withdrawals)
    assert result.peak_rss_kib["daemon"] > 0


def long_model() -> tuple[bytes, bytes]:
    """A seeded conv net (two 3x3 convolutions of 64 channels on a 28x28 digit, then a linear layer) and
    its input: about 1.3G VM steps, a few seconds to run or to build a trace of."""
    import torch
    from torch import nn

    from mlkit.export import export_module
    from mlkit.io import encode_payload
    from mlkit.models import load_digits_28

    torch.manual_seed(7)
    channels = 64
    net = nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * 28 * 28, 10),
    ).eval()
    x = load_digits_28().x_test[:1]
    return export_module(net, torch.from_numpy(x)), encode_payload([x])


def build_seconds(model: bytes, payload: bytes) -> float:
    """How long building the honest challenger's game trace takes in the caller: what a tick used to wait
    for. Its claim is the liar's wrong output, which the challenger caught natively: no VM run of it was
    recorded, so the trace runs the guest (a trace of a claim the party ran itself starts from that run's
    recording)."""
    run = execute(model, payload)
    claimed = keccak256(wrong_output(run.output))
    t0 = time.perf_counter()
    with GameTrace(model, payload, claimed, max_steps=2 * run.steps, steps_hint=run.steps) as trace:
        trace.hash_at(run.steps // 2)
    return time.perf_counter() - t0


def test_a_long_trace_is_built_off_the_tick_and_the_game_is_still_won(anvil: Anvil, tmp_path: Path) -> None:
    model, payload = long_model()
    building = build_seconds(model, payload)
    chain = Chain.connect(anvil.url)
    accounts = chain.dev_accounts()
    deployment = deploy(chain, accounts[0], model_id(model))
    contracts = deployment.contracts(chain)
    models = ModelStore([model])
    liar = ProverNode(
        chain, deployment, accounts[2], tmp_path / "liar.db", models, workers=1,
        tamper=Tamper(TamperKind.OUTPUT), eager_step=False, split=False,
    )  # fmt: skip
    honest = Challenger(chain, deployment, accounts[3], tmp_path / "challenger.db", models, workers=1)
    ticks: list[tuple[float, bool]] = []  # the honest challenger's ticks: (seconds, trace still working)

    def record(agent: Agent, stats: TickStats) -> None:
        if agent is honest:
            assert honest.trace_host is not None
            ticks.append((stats.seconds, honest.trace_host.pending() > 0))

    def resolved() -> bool:
        return bool(chain.events(contracts.market, "ChallengeResolved", deployment.block))

    market = contracts.market.functions
    fee = chain.call(market.estimateFee(model_id(model), len(payload), 0))
    zero = "0x" + "00" * 20
    chain.transact(accounts[9], market.requestInference(model_id(model), payload, zero, 0), value=fee)
    try:
        play_until(chain, [liar, honest], resolved, 5000, on_tick=lambda _: time.sleep(0.05), on_stats=record)
    finally:
        liar.close()
        honest.close()

    (res,) = chain.events(contracts.market, "ChallengeResolved", deployment.block)
    assert res["args"]["proposerWon"] is False
    (game,) = honest.store.games()
    assert game.state == GameState.WON
    slowest = max(seconds for seconds, _ in ticks)
    busy = sum(1 for _, working in ticks if working)
    print(f"trace build {building:.2f} s; honest ticks {len(ticks)}, {busy} with the trace process working, "
          f"slowest {slowest:.2f} s")  # fmt: skip
    assert building > 1.0, "the program is too short to show anything"
    assert busy >= 3, "the ticks did not go on while the trace process worked"
    assert slowest < building / 2, "a tick waited for the trace"


def answered(query: Callable[[], T], timeout: float = 60.0) -> T:
    """Ask until the trace process has answered (what an agent does over several ticks)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return query()
        except TraceBusy:
            assert time.monotonic() < deadline, "the trace process did not answer"
            time.sleep(0.01)


def test_a_remote_trace_answers_as_a_local_one_also_after_its_process_died() -> None:
    model, payload = mnist()[0], load.digit_payloads(1, seed=5)[0]
    run = execute(model, payload)
    tamper = Tamper(TamperKind.REGISTER, fraction=0.4, register=16, mask=1 << 3)

    def spec() -> GameTrace:
        return GameTrace(
            model, payload, keccak256(run.output), tamper, max_steps=run.steps, steps_hint=run.steps
        )

    host = TraceHost()
    remote = RemoteTrace(host, 1, spec())
    points = [0, 1, run.steps // 3, run.steps // 2, run.steps]
    try:
        with spec() as local:
            with pytest.raises(TraceBusy):
                remote.hash_at(points[2])  # asked, not known yet: the caller's tick goes on
            remote.prefetch(points)
            assert [answered(lambda n=n: remote.hash_at(n)) for n in points] == [
                local.hash_at(n) for n in points
            ]
            assert answered(lambda: remote.proof_at(points[2])) == local.proof_at(points[2])
            assert answered(lambda: (remote.claim_steps, remote.claim_hash)) == (
                local.claim_steps,
                local.claim_hash,
            )
            key = blob_ids(model, payload)[0]  # the model's blob id: a keccak key the guest reads
            assert answered(lambda: remote.preimage(key)) == local.preimage(key)
            process = host._process
            assert process is not None
            process.kill()  # the trace process dies (out of memory, say)
            process.join()
            n = run.steps // 4
            assert answered(lambda: remote.hash_at(n)) == local.hash_at(n)  # reopened in a new process
            assert host.generation == 1 and host.pending() == 0
    finally:
        remote.close()
        host.close()
