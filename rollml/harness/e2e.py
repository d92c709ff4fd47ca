"""Large models end to end through the daemons (issue 13): `make e2e-large`, `scripts/e2e_large.py`.

On a fresh anvil, with every party a real `rollml node` / `rollml challenger` process on split claims (the
default), for one reference model (GPT-2 124M with an 8-token prompt and 16 new tokens, DCGAN-128):

1. a dishonest node (`rollml node --dishonest output|tensor`) is the only prover when the request arrives and
   posts its wrong claim;
2. the honest challenger daemon re-checks it natively, challenges, and plays the split game: the top level
   over the node executions, the liar's `open`, the bottom VM game of the one disputed execution, the
   one-step proof; the liar loses;
3. the honest node daemon (started with the challenger) serves the reopened request; once the challenger
   has re-checked that result, the chain's clock is moved past the window (the only jump: the game itself
   runs on the chain's own time) and the node finalizes; the output is compared with mlkit's native run.

`run` returns the figures (`E2EResult`): the game's rounds at each level, the bottom game's VM steps,
transactions and gas, the wall time of each phase, and each daemon's peak memory (the daemon and its largest
worker process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlkit import models, native
from mlkit.io import generate_payload
from rollml.agent.reads import game_report
from rollml.core.deploy import DEV_PARAMS
from rollml.core.devnet import Anvil
from rollml.core.dispute import GameStatus
from rollml.core.sdk import game_status
from rollml.core.store import Store, Verdict
from rollml.harness.loadtest import Daemon, Setup, make_setup, wait_for

PROMPT_TOKENS, NEW_TOKENS = 8, 16  # a generation of the text models: 8 prompt tokens, 16 new ones
FAULTS = ("output", "tensor")  # `rollml node --dishonest` kinds of a split claim
WINDOW = 600  # challenge window (s of chain time): passed by one jump once the honest result is checked
MOVE_TIMEOUT = 900  # s of chain time per move: a slow machine never loses a move by time here
NODE, LIAR, CHALLENGER = 1, 2, 3  # dev account indices
Log = Callable[[str], None]


@dataclass
class E2EResult:
    model: str
    fault: str
    payload_bytes: int
    honest_won: bool = False
    served_correctly: bool = False
    top_rounds: int = 0
    bottom_rounds: int = 0
    bottom_steps: int = 0
    game_txs: int = 0
    game_gas: int = 0
    post_s: float = 0.0  # request -> the liar's result posted
    dispute_s: float = 0.0  # challenge -> game resolved
    reserve_s: float = 0.0  # resolved -> the honest node's result posted
    total_s: float = 0.0  # request -> finalized (less the window's clock jump)
    peak_rss_mib: dict[str, dict[str, float]] = field(default_factory=dict)  # daemon -> {daemon, worker}

    def report(self) -> dict[str, Any]:
        return asdict(self)


def example_payload(name: str) -> bytes:
    """The request's input: a text model's example prompt cut to `PROMPT_TOKENS` with `NEW_TOKENS` to
    generate; any other model's example input."""
    exp = models.reference(name)
    if exp.new_tokens is not None:
        ids = [int(t) for t in exp.example.reshape(-1).tolist()][:PROMPT_TOKENS]
        return generate_payload(ids, NEW_TOKENS)
    return models.example_payload(exp)


def peak_mib(daemon: Daemon) -> dict[str, float]:
    return {k: round(v / 1024, 1) for k, v in daemon.peak_rss_kib().items()}


def run(name: str, fault: str, workdir: Path, log: Log = print, timeout: float = 3600) -> E2EResult:
    """One model's dispute and re-service through the daemons on a fresh anvil (see the module docstring);
    TimeoutError when a phase takes more than `timeout` seconds, RuntimeError when a daemon dies."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
    payload = example_payload(name)
    result = E2EResult(name, fault, len(payload))
    params = replace(DEV_PARAMS, challenge_window=WINDOW)
    with Anvil() as anvil:
        log(f"{name}: building and registering the model, deploying on anvil {anvil.url}")
        setup = make_setup(anvil.url, workdir, params, move_timeout=MOVE_TIMEOUT, models=(name,))
        liar = setup.daemon("node", LIAR, "liar", 1, 0.5, ["--dishonest", fault])
        node = setup.daemon("node", NODE, "node", 1, 0.5)
        challenger = setup.daemon("challenger", CHALLENGER, "challenger", 1, 0.5)
        try:
            play(setup, result, liar, node, challenger, payload, log, timeout)
        finally:
            for d in (liar, node, challenger):
                if d.alive():
                    result.peak_rss_mib[d.log.stem] = peak_mib(d)
                d.stop()
    return result


def alive(*daemons: Daemon) -> Callable[[], None]:
    """A `wait_for` hook: RuntimeError with the end of its log when a started daemon has died."""

    def check() -> None:
        for d in daemons:
            if d.starts and not d.alive():
                tail = " | ".join(d.log_text().strip().splitlines()[-3:])
                raise RuntimeError(f"the {d.log.stem} daemon exited: {tail}")

    return check


def play(
    setup: Setup,
    result: E2EResult,
    liar: Daemon,
    node: Daemon,
    challenger: Daemon,
    payload: bytes,
    log: Log,
    timeout: float,
) -> None:
    world = setup.world
    every = alive(liar, node, challenger)

    def wait(what: str, done: Callable[[], bool], limit: float = timeout) -> None:
        wait_for(what, done, limit, every)

    liar.start()
    wait("the liar daemon starts", liar.started, 120)
    t0 = time.perf_counter()
    rid = setup.request(payload)
    log(f"request {rid}: {len(payload)} bytes of input; the dishonest node computes its claim")
    wait("the liar's post", lambda: bool(world.events("ResultPosted", requestId=rid)))
    result.post_s = time.perf_counter() - t0
    log(f"  liar posted after {result.post_s:.1f} s; starting the honest challenger and node daemons")
    challenger.start()
    node.start()
    wait("a challenge", lambda: bool(world.events("ResultChallenged", requestId=rid)))
    (challenged,) = world.events("ResultChallenged", requestId=rid)
    gid, t1 = int(challenged["gameId"]), time.perf_counter()
    log(f"  game {gid} opened; playing it")

    def resolved() -> bool:
        return game_status(world.chain, world.contracts, gid) != GameStatus.ACTIVE

    wait(f"game {gid} to resolve", resolved)
    result.dispute_s = time.perf_counter() - t1
    report = game_report(world.chain, world.contracts, gid, world.deployment.block)
    opened = world.chain.events(world.contracts.game, "Opened", world.deployment.block, gameId=gid)
    result.honest_won = report.status == GameStatus.CHALLENGER_WON and not report.by_timeout
    result.top_rounds, result.bottom_rounds = report.top_rounds, report.bottom_rounds
    result.bottom_steps = int(opened[0]["args"]["bottomSteps"]) if opened else 0
    result.game_txs, result.game_gas = len(report.txs), report.gas
    log(
        f"  game {gid}: {report.status.name} after {result.dispute_s:.1f} s; {result.top_rounds} top + "
        f"{result.bottom_rounds} bottom rounds ({result.bottom_steps:,} VM steps), {result.game_txs} txs, "
        f"{result.game_gas:,} gas"
    )
    honest = setup.accounts[NODE].address

    def honest_posted() -> dict[str, Any] | None:
        return next((p for p in world.events("ResultPosted", requestId=rid) if p["prover"] == honest), None)

    wait("the honest node's post", lambda: honest_posted() is not None)
    result.reserve_s = time.perf_counter() - t1 - result.dispute_s
    posted = honest_posted()
    assert posted is not None
    checked = Store(setup.workdir / "challenger.db")
    wait(
        "the challenger's check of the honest result",
        lambda: any(r.result_id == posted["resultId"] for r in checked.results(Verdict.CORRECT)),
    )
    world.chain.advance_time(WINDOW + 1)  # the window passes: nobody disputes a correct result
    wait("finalization", lambda: bool(world.events("ResultFinalized", requestId=rid)), min(timeout, 600))
    result.total_s = time.perf_counter() - t0
    (final,) = world.events("ResultFinalized", requestId=rid)
    expected = native.run(setup.model, payload)
    result.served_correctly = final["prover"] == honest and bytes(posted["output"]) == expected
    log(
        f"  request {rid} finalized by the honest node after {result.total_s:.1f} s "
        f"(output {'matches' if result.served_correctly else 'DOES NOT match'} mlkit's native run)"
    )
