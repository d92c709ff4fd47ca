"""`rollml demo`: the whole system on one chain, three scenarios played by real agents.

On an in-process py-evm chain (default) or any JSON-RPC endpoint (`--rpc`, e.g. `rollml devnet`), the demo
deploys every contract, registers the MNIST MLP and the DCGAN-32 generator, and plays:

a. `honest`: a dApp (GanNFT) asks for a DCGAN image; the honest node runs it in the VM and posts it, the
   honest challenger re-executes and agrees, the window passes, the result finalizes, the callback mints
   the NFT carrying the output hash, and the image is written as PNG;
b. `dishonest-prover`: a lying node posts a wrong digit for an MNIST request; the honest challenger
   disputes, the bisection narrows round by round, the one-step proof runs on-chain, the liar's bond goes
   to the challenger, the request reopens and the honest node serves it;
c. `dishonest-challenger`: a challenger disputes the honest node's correct MNIST result with a tampered
   trace and loses its bond to the node.

Everything runs for real: the VM runs of both sides, every transaction, the one-step proof in MIPS.sol.
Time on the chain is moved forward (challenge windows, move deadlines) only while every agent is idle.
Per scenario the demo reports rounds, transactions, gas and wall time; `--json` prints them as one object.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from rich.console import Console
from web3.logs import DISCARD

from mipsvm.hashing import keccak256
from mlkit.format import model_id
from rollml.agent import Agent, ModelStore, TickStats, game_report, play_until
from rollml.chain import Chain
from rollml.deploy import Contracts, deploy, register_model
from rollml.dispute import GameStatus
from rollml.sdk import Client, RequestStatus, game_status, request_status

GAN_SEED = 2026  # the NFT's latent seed
DIGIT_INDEX = {"dishonest-prover": 3, "dishonest-challenger": 11}  # which test digit each scenario classifies
MAX_TICKS = 400


@dataclass
class Scenario:
    """One scenario's outcome, as `--json` prints it."""

    name: str
    winner: str
    honest_won: bool
    rounds: int
    txs: int
    gas: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Actors:
    dapp: LocalAccount
    node: LocalAccount
    challenger: LocalAccount
    liar: LocalAccount
    troll: LocalAccount


SHOWN_EVENTS = {
    "job_running": "runs request {request} in the VM",
    "posted": "posted result {result} for request {request}",
    "verified": "re-executed result {result}: {verdict}",
    "challenged": "challenged: game {game}",
    "game_over": "game {game} over: {status} ({outcome})",
    "finalized": "finalized request {request}",
    "withdrawn": "withdrew {wei} wei",
    "error": "error during {during}: {error}",
    "job_failed": "job {request} failed: {reason}",
}


class Timeline(logging.Handler):
    """Renders the agents' structured events as one readable line each, timed from the scenario start."""

    def __init__(self, console: Console, names: dict[str, str]) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.names = names  # logger name -> actor label
        self.t0 = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        fields: dict[str, Any] = dict(getattr(record, "fields", {}))
        if event == "tx" and fields.get("kind") in ("dissect", "pick", "step", "load_preimage", "timeout"):
            return  # dispute moves are shown by the round tracker, with their interval
        text = SHOWN_EVENTS.get(str(event)) if event != "tx" else "tx {kind}: {gas:,} gas"
        if text is None:
            return
        try:
            line = text.format(**fields)
        except (KeyError, ValueError):
            line = f"{event} {fields}"
        who = self.names.get(record.name, record.name)
        self.console.print(f"  [dim]{time.perf_counter() - self.t0:6.1f}s[/] [bold]{who:<20}[/] {line}")

    def restart(self) -> None:
        self.t0 = time.perf_counter()


class RoundTracker:
    """Prints each narrowing of a game's interval [lo, hi] as it happens (called after every tick)."""

    def __init__(self, console: Console, chain: Chain, contracts: Contracts, timeline: Timeline) -> None:
        self.console, self.chain, self.contracts, self.timeline = console, chain, contracts, timeline
        self.seen: dict[int, tuple[int, int, int]] = {}

    def watch(self, game_ids: Callable[[], list[int]]) -> Callable[[int], None]:
        def on_tick(_: int) -> None:
            for gid in game_ids():
                self.show(gid)

        return on_tick

    def show(self, game_id: int) -> None:
        g = self.chain.call(self.contracts.game.functions.getGame(game_id))
        lo, hi, status, turn = int(g[0]), int(g[1]), int(g[3]), int(g[4])
        if status != GameStatus.ACTIVE or self.seen.get(game_id) == (lo, hi, turn):
            return
        self.seen[game_id] = (lo, hi, turn)
        what = ("proposer dissects", "challenger picks", "one step left: proven on-chain")[turn]
        t = time.perf_counter() - self.timeline.t0
        self.console.print(
            f"  [dim]{t:6.1f}s[/] [bold]{'game ' + str(game_id):<20}[/] "
            f"[cyan][{lo:,} .. {hi:,}][/] ({hi - lo:,} steps): {what}"
        )


# --------------------------------------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------------------------------------
def actors(chain: Chain) -> Actors:
    accounts = chain.dev_accounts()
    if len(accounts) < 5:
        raise RuntimeError(f"the demo needs 5 funded dev accounts, the chain has {len(accounts)}")
    return Actors(*accounts[:5])


def build_models(console: Console) -> dict[str, bytes]:
    """The MNIST MLP (trained on scikit-learn's digits, cached) and the DCGAN-32 generator (seeded)."""
    from mlkit.models import export_reference

    models = {}
    with console.status("building the reference models (cached after the first run)"):
        for name in ("mnist-mlp", "dcgan32"):
            models[name] = export_reference(name).model
    return models


def digits(index: int) -> tuple[Any, int]:
    """A test digit of scikit-learn's digits at 28x28 and its label."""
    from mlkit.models import load_digits_28

    data = load_digits_28()
    return data.x_test[index : index + 1], int(data.y_test[index])


@contextmanager
def timeline_logging(timeline: Timeline) -> Iterator[None]:
    """Route the agents' loggers to the timeline (and nowhere else) while the scenarios play."""
    loggers = [logging.getLogger(name) for name in timeline.names]
    for lg in loggers:
        lg.addHandler(timeline)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(timeline)


# --------------------------------------------------------------------------------------------------------
# The scenarios
# --------------------------------------------------------------------------------------------------------
class Demo:
    def __init__(self, console: Console, chain: Chain, workdir: Path, out_dir: Path) -> None:
        self.console, self.chain, self.out_dir = console, chain, out_dir
        self.who = actors(chain)
        self.models = build_models(console)
        with console.status("deploying the contracts and registering the models"):
            gan = self.models["dcgan32"]
            self.deployment = deploy(chain, self.who.dapp, model_id(gan), gan_model=gan)
            self.mnist_id = register_model(
                chain, self.deployment, self.who.dapp, self.models["mnist-mlp"], "mnist-mlp"
            )
        self.gan_id = self.deployment.gan_model_id
        self.contracts = self.deployment.contracts(chain)
        self.client = Client(chain, self.deployment, self.who.dapp)
        store = ModelStore()
        for model in self.models.values():
            store.add(model)
        window = self.deployment.params.challenge_window
        self.idle_advance = max(window, self.deployment.move_timeout) + 1

        def agent(cls: type[Agent], account: LocalAccount, name: str, **kw: Any) -> Agent:
            log = logging.getLogger(f"rollml.demo.{name}")
            return cls(chain, self.deployment, account, workdir / f"{name}.sqlite", store, logger=log, **kw)

        from challenger.agent import Challenger
        from node.prover import ProverNode
        from rollml.execution import Tamper, TamperKind

        self.node = agent(ProverNode, self.who.node, "node")
        self.challenger = agent(Challenger, self.who.challenger, "challenger")
        self.liar = agent(ProverNode, self.who.liar, "liar", tamper=Tamper(TamperKind.OUTPUT))
        troll_tamper = Tamper(TamperKind.REGISTER, fraction=0.37, register=16, mask=1 << 9)
        self.troll = agent(Challenger, self.who.troll, "troll", tamper=troll_tamper, challenge_correct=True)
        self.names = {
            "rollml.demo.node": "honest node",
            "rollml.demo.challenger": "honest challenger",
            "rollml.demo.liar": "dishonest prover",
            "rollml.demo.troll": "dishonest challenger",
        }
        self.timeline = Timeline(console, self.names)
        self.tracker = RoundTracker(console, chain, self.contracts, self.timeline)
        self.dissect_seconds: list[float] = []  # of the current scenario
        self.console.print(
            f"  deployed: market {self.deployment.market}, dispute game {self.deployment.game} "
            f"(arity {self.deployment.arity}), MIPS {self.deployment.mips}"
        )
        self.console.print(f"  models: mnist-mlp 0x{self.mnist_id.hex()}, dcgan32 0x{self.gan_id.hex()}")

    # -- helpers ---------------------------------------------------------------------------------------------
    def request_status(self, request_id: int) -> RequestStatus:
        return request_status(self.chain, self.contracts, request_id)

    def join(self, agent: Agent) -> None:
        """A dishonest party enters at its scenario: it reads the chain from the current block on."""
        agent.store.set_cursor(self.chain.block_number())

    def games_of(self, request_id: int, since: int) -> list[int]:
        evs = self.chain.events(self.contracts.market, "ResultChallenged", since, requestId=request_id)
        return [int(ev["args"]["gameId"]) for ev in evs]

    def play(self, agents: list[Agent], done: Callable[[], bool], games: Callable[[], list[int]]) -> None:
        play_until(
            self.chain, agents, done, MAX_TICKS, self.idle_advance, self.tracker.watch(games), self.record
        )

    def record(self, agent: Agent, stats: TickStats) -> None:
        """Keep how long each answer took: the ticks in which a dissection was computed and sent."""
        if "dissect" in stats.moves:
            self.dissect_seconds.append(round(stats.seconds, 3))

    def chain_figures(self, first_block: int) -> tuple[int, int]:
        """Transactions and gas of every block since `first_block` (everything the scenario sent)."""
        txs = gas = 0
        for n in range(first_block, self.chain.block_number() + 1):
            for tx_hash in self.chain.w3.eth.get_block(n)["transactions"]:
                receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                txs += 1
                gas += int(receipt["gasUsed"])
        return txs, gas

    def finish(
        self,
        name: str,
        t0: float,
        first_block: int,
        winner: str,
        honest: bool,
        games: list[int],
        **details: Any,
    ) -> Scenario:
        txs, gas = self.chain_figures(first_block)
        reports = [game_report(self.chain, self.contracts, gid, first_block) for gid in games]
        rounds = sum(r.rounds for r in reports)
        details["dissect_seconds"] = self.dissect_seconds
        self.dissect_seconds = []
        details["games"] = [
            {
                "game": r.game_id,
                "status": r.status.name,
                "rounds": r.rounds,
                "moves": len(r.txs),
                "gas": r.gas,
            }
            for r in reports
        ]
        result = Scenario(name, winner, honest, rounds, txs, gas, round(time.perf_counter() - t0, 2), details)
        mark = "[green]honest side won[/]" if honest else "[red]honest side LOST[/]"
        self.console.print(
            f"  => {mark}: winner {winner}; {rounds} rounds, {txs} transactions, {gas:,} gas, "
            f"{result.seconds:.1f} s"
        )
        return result

    # -- a. honest -------------------------------------------------------------------------------------------
    def honest(self) -> Scenario:
        from mlkit import native
        from mlkit.io import decode_payload
        from mlkit.models import save_png

        t0, first = time.perf_counter(), self.chain.block_number() + 1
        nft = self.contracts.gan_nft
        fee = int(self.chain.call(nft.functions.mintFee()))
        receipt = self.chain.transact(self.who.dapp, nft.functions.mintRequest(GAN_SEED), value=fee)
        market_events = self.contracts.market.events.InferenceRequested().process_receipt(
            receipt, errors=DISCARD
        )
        rid, latent = int(market_events[0]["args"]["requestId"]), bytes(market_events[0]["args"]["input"])
        self.console.print(f"  GanNFT.mintRequest(seed {GAN_SEED}) -> request {rid} (fee {fee:,} wei)")

        def finalized() -> bool:
            return self.request_status(rid) == RequestStatus.FINALIZED

        self.play([self.node, self.challenger], finalized, lambda: self.games_of(rid, first))
        output = self.client.output_bytes(rid)
        owner = self.chain.call(nft.functions.ownerOf(rid))
        minted_hash = bytes(self.chain.call(nft.functions.outputHashOf(rid)))
        png = save_png(decode_payload(output)[0], self.out_dir / f"gan-nft-{rid}.png", scale=8)
        self.console.print(f"  NFT {rid} minted to {owner}, output hash 0x{minted_hash.hex()}")
        self.console.print(f"  image written to {png}")
        ok = (
            owner == self.who.dapp.address
            and minted_hash == keccak256(output)
            and native.run(self.models["dcgan32"], latent) == output  # an independent re-run agrees
            and not self.games_of(rid, first)
        )
        return self.finish("honest", t0, first, "honest node", ok, [], request=rid, png=str(png))

    # -- b. dishonest prover ---------------------------------------------------------------------------------
    def dishonest_prover(self) -> Scenario:
        t0, first = time.perf_counter(), self.chain.block_number() + 1
        image, label = digits(DIGIT_INDEX["dishonest-prover"])
        self.join(self.liar)
        rid = self.client.request(self.mnist_id, [image]).request_id
        self.console.print(f"  dApp requests MNIST on a test digit (label {label}) -> request {rid}")

        def posted() -> bool:
            return self.request_status(rid) == RequestStatus.PROPOSED

        self.play([self.liar], posted, lambda: [])

        def resolved() -> bool:
            games = self.games_of(rid, first)
            return bool(games) and self.game_status(games[0]) != GameStatus.ACTIVE

        self.play([self.challenger, self.liar], resolved, lambda: self.games_of(rid, first))

        def finalized() -> bool:
            return self.request_status(rid) == RequestStatus.FINALIZED

        self.play([self.node, self.challenger, self.liar], finalized, lambda: self.games_of(rid, first))
        games = self.games_of(rid, first)
        (digit,) = self.client.output(rid)
        answer = int(digit.argmax())
        status = self.game_status(games[0])
        won = status == GameStatus.CHALLENGER_WON
        self.console.print(f"  final answer: digit {answer} (label {label})")
        winner = "honest challenger" if won else "dishonest prover"
        return self.finish(
            "dishonest-prover", t0, first, winner, won, games, request=rid, digit=answer, label=label
        )

    # -- c. dishonest challenger -----------------------------------------------------------------------------
    def dishonest_challenger(self) -> Scenario:
        t0, first = time.perf_counter(), self.chain.block_number() + 1
        image, label = digits(DIGIT_INDEX["dishonest-challenger"])
        self.join(self.troll)
        rid = self.client.request(self.mnist_id, [image]).request_id
        self.console.print(f"  dApp requests MNIST on a test digit (label {label}) -> request {rid}")

        def finalized() -> bool:
            return self.request_status(rid) == RequestStatus.FINALIZED

        agents = [self.node, self.troll, self.challenger]
        self.play(agents, finalized, lambda: self.games_of(rid, first))
        games = self.games_of(rid, first)
        won = bool(games) and all(self.game_status(g) == GameStatus.PROPOSER_WON for g in games)
        (digit,) = self.client.output(rid)
        self.console.print(f"  final answer: digit {int(digit.argmax())} (label {label})")
        winner = "honest node" if won else "dishonest challenger"
        return self.finish(
            "dishonest-challenger",
            t0,
            first,
            winner,
            won,
            games,
            request=rid,
            digit=int(digit.argmax()),
            label=label,
        )

    def game_status(self, game_id: int) -> GameStatus:
        return game_status(self.chain, self.contracts, game_id)

    def close(self) -> None:
        for a in (self.node, self.challenger, self.liar, self.troll):
            a.close()


SCENARIOS = (
    ("honest", "a. honest prover, no challenge: the GAN NFT is minted", Demo.honest),
    ("dishonest-prover", "b. a dishonest prover posts a wrong digit", Demo.dishonest_prover),
    (
        "dishonest-challenger",
        "c. a dishonest challenger disputes a correct result",
        Demo.dishonest_challenger,
    ),
)


def run(
    console: Console, rpc: str | None = None, out_dir: Path = Path("out/demo"), only: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Play the scenarios (all, or the `only` ones) and return the JSON report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    console.rule("[bold]rollml demo")
    chain = Chain.connect(rpc) if rpc else Chain.embedded()
    console.print(
        f"  chain: {'JSON-RPC ' + rpc if rpc else 'embedded py-evm (eth-tester)'}, id {chain.chain_id}"
    )
    with tempfile.TemporaryDirectory(prefix="rollml-demo-") as tmp:
        demo = Demo(console, chain, Path(tmp), out_dir)
        results = []
        try:
            with timeline_logging(demo.timeline):
                for name, title, play in SCENARIOS:
                    if only and name not in only:
                        continue
                    console.rule(title)
                    demo.timeline.restart()
                    results.append(play(demo))
        finally:
            demo.close()
    report = {
        "chain": rpc or "embedded",
        "deployment": demo.deployment.addresses,
        "scenarios": [asdict(r) for r in results],
        "honest_won_all": all(r.honest_won for r in results),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    console.rule(
        "[bold green]all scenarios won by the honest side"
        if report["honest_won_all"]
        else "[bold red]the honest side lost a scenario"
    )
    return report
