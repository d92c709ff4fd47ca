"""`rollml demo`: the whole system on one chain, its scenarios played by real agents.

On an in-process py-evm chain (default) or any JSON-RPC endpoint (`--rpc`, e.g. `rollml devnet`), the demo
deploys every contract, registers the MNIST MLP, fortune-gpt and the DCGAN-32 generator, and plays:

a. `honest`: a dApp (GanNFT) asks for a DCGAN image; the honest node computes it natively with mlkit and
   posts it with a split claim (the root of its states over the model's node executions), the honest
   challenger re-computes every state and agrees, the window passes, the result finalizes, the callback
   mints the NFT carrying the output hash, and the image is written as PNG;
a2. `blend`: a second NFT is minted the same way, then GanNFT.blend mints their child from the
   interpolation of the two latents computed on-chain (checked against `rollml.core.gan_nft`), served like
   any mint; the parents and the child are written side by side in one PNG;
b. `dishonest-prover`: a lying node posts a wrong digit for an MNIST request; the honest challenger
   disputes, the top game bisects the node executions down to the first wrong one, the node opens its VM
   game (the guest runs that one execution), the bottom game bisects its VM steps, the one-step proof runs
   on-chain, half the liar's bond goes to the challenger (the other half is burned), the request reopens
   and the honest node serves it;
c. `dishonest-challenger`: a challenger disputes the honest node's correct MNIST result with a wrong tensor
   in its states and loses its bond to the node;
d. `text`: a dApp asks fortune-gpt (a small GPT trained on Debian's fortunes) to continue a prompt; the
   honest node generates the text natively, the challenger agrees, the result finalizes and the text is
   decoded with the model's tokenizer;
e. `train`: verifiable training (docs/protocol.md section 7): an MLP is trained on digits in 20 updates by
   two workers through `TrainingRun`; one posts a wrong update, the fraud-proofer re-computes it and wins
   the game (the VM game over the update's guest run), the loss curve is written as PNG, the trained model
   is registered and serves an inference request, and its test accuracy is reported.

Everything runs for real: both sides' native states, the VM runs of a disputed execution, every
transaction, the one-step proof in MIPS.sol.
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
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from rich.console import Console
from web3.logs import DISCARD

from challenger.agent import Challenger
from mipsvm.hashing import keccak256
from mlkit.format import model_id
from node.prover import ProverNode
from rollml.agent.base import Agent, TickStats
from rollml.agent.reads import game_report
from rollml.core.chain import Chain
from rollml.core.deploy import Contracts
from rollml.core.dispute import GameStatus
from rollml.core.sdk import Client, RequestStatus, game_status, request_status
from rollml.world import World

GAN_SEED = 2026  # the NFT's latent seed
BLEND_SEED = 7  # the second parent's seed in the blend step
BLEND_WEIGHT = 5000  # the child's share of the second parent, in 1 / GanNFT.WEIGHT_ONE
DIGIT_INDEX = {"dishonest-prover": 3, "dishonest-challenger": 11}  # which test digit each scenario classifies
MAX_TICKS = 400
TEXT_PROMPT = "The secret of success is"  # the text scenario's prompt and how many tokens it asks for
TEXT_NEW_TOKENS = 24


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
    extra: dict[str, Any] = field(default_factory=dict)  # scenario keys shown at the top level of its entry

    def report(self) -> dict[str, Any]:
        out = asdict(self)
        extra = out.pop("extra")
        return {**out, **extra}


@dataclass
class Actors:
    dapp: LocalAccount
    node: LocalAccount
    challenger: LocalAccount
    liar: LocalAccount
    troll: LocalAccount


SHOWN_EVENTS = {
    "job_running": "runs request {request}",
    "posted": "posted result {result} for request {request}",
    "verified": "re-executed result {result}: {verdict}",
    "challenged": "challenged: game {game}",
    "game_over": "game {game} over: {status} ({outcome})",
    "finalized": "finalized request {request}",
    "withdrawn": "withdrew {wei} wei",
    "error": "error during {during}: {error}",
    "job_failed": "job {request} failed: {reason}",
    "lease_taken": "took the lease on update {index} of run {run}",
    "update_posted": "posted update {index} (loss {loss}, honest {honest}): {steps:,} VM steps in {vm_s} s",
    "update_checked": "re-computed update {index}: {reason}",
    "update_disputed": "challenged update {index}: game {game}",
    "update_challenged": "update {update} challenged: game {game}",
    "update_accepted": "update {index} accepted",
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
        lo, hi, status, turn, top = int(g[0]), int(g[1]), int(g[3]), int(g[4]), bool(g[12])
        if status != GameStatus.ACTIVE or self.seen.get(game_id) == (lo, hi, turn):
            return
        self.seen[game_id] = (lo, hi, turn)
        unit = "node executions" if top else "VM steps"  # a split game's top level, or a VM game's steps
        what = (
            "proposer dissects",
            "challenger picks",
            "one step left: proven on-chain",
            "one execution left: the proposer opens it in the VM",
        )[turn]
        t = time.perf_counter() - self.timeline.t0
        self.console.print(
            f"  [dim]{t:6.1f}s[/] [bold]{'game ' + str(game_id):<20}[/] "
            f"[cyan][{lo:,} .. {hi:,}][/] ({hi - lo:,} {unit}): {what}"
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
    """The MNIST MLP (trained on scikit-learn's digits, cached), the DCGAN-32 generator (seeded) and
    fortune-gpt (trained, committed)."""
    from mlkit.models import reference_model

    models = {}
    with console.status("building the reference models (cached after the first run)"):
        for name in ("mnist-mlp", "dcgan32", "fortune-gpt"):
            models[name] = reference_model(name)
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
        from rollml.core.execution import Tamper, TamperKind

        self.console, self.chain, self.out_dir = console, chain, out_dir
        self.who = actors(chain)
        self.models = build_models(console)
        with console.status("deploying the contracts and registering the models"):
            served = {name: self.models[name] for name in ("mnist-mlp", "fortune-gpt")}
            self.world = World.create(chain, workdir, served, gan_model=self.models["dcgan32"])
        self.deployment = self.world.deployment
        self.mnist_id = model_id(self.models["mnist-mlp"])
        self.text_id = model_id(self.models["fortune-gpt"])
        self.gan_id = self.deployment.gan_model_id
        self.contracts = self.world.contracts
        self.client = Client(chain, self.deployment, self.who.dapp)

        def agent(cls: type[Agent], account: LocalAccount, name: str, **kw: Any) -> Agent:
            return self.world.agent(cls, account, name, logging.getLogger(f"rollml.demo.{name}"), **kw)

        self.node = agent(ProverNode, self.who.node, "node")
        self.challenger = agent(Challenger, self.who.challenger, "challenger")
        self.liar = agent(ProverNode, self.who.liar, "liar", tamper=Tamper(TamperKind.OUTPUT))
        troll_tamper = Tamper(TamperKind.TENSOR, fraction=0.37)  # a wrong tensor in its states of the claim
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
        self.gan_token: int | None = None  # the NFT minted by the honest scenario (a parent of the blend)
        self.console.print(
            f"  deployed: market {self.deployment.market}, dispute game {self.deployment.game} "
            f"(arity {self.deployment.arity}), MIPS {self.deployment.mips}"
        )
        self.console.print(
            f"  models: mnist-mlp 0x{self.mnist_id.hex()}, dcgan32 0x{self.gan_id.hex()}, "
            f"fortune-gpt 0x{self.text_id.hex()}"
        )

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
        self.world.play(agents, done, MAX_TICKS, self.tracker.watch(games), self.record)

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
                "top_rounds": r.top_rounds,  # a split game's levels (a VM game: all rounds on top)
                "bottom_rounds": r.bottom_rounds,
                "opened": r.opened,
                "moves": len(r.txs),
                "gas": r.gas,
            }
            for r in reports
        ]
        result = Scenario(name, winner, honest, rounds, txs, gas, round(time.perf_counter() - t0, 2), details)
        mark = "[green]honest side won[/]" if honest else "[red]honest side LOST[/]"
        if any(r.opened for r in reports):  # a split game: its two levels
            top, bottom = sum(r.top_rounds for r in reports), sum(r.bottom_rounds for r in reports)
            rounds_text = f"{rounds} rounds ({top} over node executions, {bottom} over VM steps)"
        else:
            rounds_text = f"{rounds} rounds"
        self.console.print(
            f"  => {mark}: winner {winner}; {rounds_text}, {txs} transactions, {gas:,} gas, "
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
        rid, latent = self.mint_gan(GAN_SEED)
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
        self.gan_token = rid if ok else None
        return self.finish("honest", t0, first, "honest node", ok, [], request=rid, png=str(png))

    # -- a2. blend -------------------------------------------------------------------------------------------
    def serve_gan(self, call: Any, what: str) -> tuple[int, bytes]:
        """Send a GanNFT call that requests a generation (paying `mintFee`), let the honest node and
        challenger serve it until finalized; returns the token id (the request id) and the input the contract
        requested."""
        nft = self.contracts.gan_nft
        fee = int(self.chain.call(nft.functions.mintFee()))
        first = self.chain.block_number() + 1
        receipt = self.chain.transact(self.who.dapp, call, value=fee)
        (event,) = self.contracts.market.events.InferenceRequested().process_receipt(receipt, errors=DISCARD)
        rid, payload = int(event["args"]["requestId"]), bytes(event["args"]["input"])
        self.console.print(f"  {what} -> request {rid} (fee {fee:,} wei)")

        def finalized() -> bool:
            return self.request_status(rid) == RequestStatus.FINALIZED

        self.play([self.node, self.challenger], finalized, lambda: self.games_of(rid, first))
        return rid, payload

    def mint_gan(self, seed: int) -> tuple[int, bytes]:
        """`GanNFT.mintRequest(seed)` served until finalized (`serve_gan`)."""
        return self.serve_gan(
            self.contracts.gan_nft.functions.mintRequest(seed), f"GanNFT.mintRequest(seed {seed})"
        )

    def blend(self) -> Scenario:
        from mlkit import native
        from mlkit.io import decode_payload
        from mlkit.models import image_grid, save_png
        from rollml.core.gan_nft import blend_latent, latent_payload, seed_latent

        t0, first = time.perf_counter(), self.chain.block_number() + 1
        nft = self.contracts.gan_nft
        if self.gan_token is None:  # played alone (--only blend): mint the first parent here
            self.gan_token, _ = self.mint_gan(GAN_SEED)
        a = self.gan_token
        b, _ = self.mint_gan(BLEND_SEED)
        child, payload = self.serve_gan(
            nft.functions.blend(a, b, BLEND_WEIGHT), f"GanNFT.blend({a}, {b}, weight {BLEND_WEIGHT})"
        )
        seeds = [int(self.chain.call(nft.functions.seedOf(t))) for t in (a, b)]
        expected = latent_payload(blend_latent(seed_latent(seeds[0]), seed_latent(seeds[1]), BLEND_WEIGHT))
        outputs = [self.client.output_bytes(t) for t in (a, child, b)]
        images = [decode_payload(out)[0][0] for out in outputs]
        png = save_png(image_grid(images), self.out_dir / f"gan-blend-{a}-{b}-{child}.png", scale=8)
        owner = self.chain.call(nft.functions.ownerOf(child))
        self.console.print(
            f"  child NFT {child} minted to {owner}: parents {a} and {b}, weight {BLEND_WEIGHT}"
        )
        self.console.print(f"  parents and child (left to right: {a}, {child}, {b}) written to {png}")
        ok = (
            owner == self.who.dapp.address
            and payload == expected  # the latent the contract interpolated is the documented rule's
            and native.run(self.models["dcgan32"], payload) == outputs[1]
            and bytes(self.chain.call(nft.functions.outputHashOf(child))) == keccak256(outputs[1])
        )
        return self.finish(
            "blend", t0, first, "honest node", ok, [], parents=[a, b], child=child, weight=BLEND_WEIGHT,
            png=str(png),
        )  # fmt: skip

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

    # -- d. text ---------------------------------------------------------------------------------------------
    def text(self) -> Scenario:
        from mlkit import native
        from mlkit.format import decode_model
        from mlkit.fortunes import committed
        from mlkit.text import decode_tokens, prompt_payload

        t0, first = time.perf_counter(), self.chain.block_number() + 1
        model, tok, _ = committed()
        payload, prompt_ids = prompt_payload(decode_model(model), tok, TEXT_PROMPT, TEXT_NEW_TOKENS)
        rid = self.client.request(self.text_id, payload).request_id
        self.console.print(
            f'  dApp asks fortune-gpt to continue "{TEXT_PROMPT}" ({len(prompt_ids)} tokens, '
            f"{TEXT_NEW_TOKENS} new) -> request {rid}"
        )

        def finalized() -> bool:
            return self.request_status(rid) == RequestStatus.FINALIZED

        self.play([self.node, self.challenger], finalized, lambda: self.games_of(rid, first))
        output = self.client.output_bytes(rid)
        (ids,) = self.client.output(rid)
        text = decode_tokens(tok, ids.tolist())
        self.console.print(f'  fortune-gpt wrote: "{TEXT_PROMPT}{text}"', highlight=False)
        ok = native.run(model, payload) == output and not self.games_of(rid, first)  # an independent re-run
        steps = self.client.status(rid).steps
        return self.finish(
            "text", t0, first, "honest node", ok, [], request=rid, prompt=TEXT_PROMPT, text=text, steps=steps
        )

    # -- e. verifiable training -----------------------------------------------------------------------------
    def train(self) -> Scenario:
        """Two workers train an MLP on digits in TRAIN_UPDATES updates; one posts a wrong update, the
        fraud-proofer catches it in a game; the trained model is registered and serves a request."""
        from mlkit import native
        from mlkit.format import model_id as mid_of
        from mlkit.io import decode_payload
        from mlkit.train import MLPSpec, digits_batches
        from rollml.core.deploy import register_model
        from rollml.core.training import TrainingClient, dataset_store, plan_run, put_batches
        from trainer.fraudproofer import FraudProofer
        from trainer.worker import TrainingWorker

        t0, first = time.perf_counter(), self.chain.block_number() + 1
        spec = MLPSpec(sizes=(64, 16, 10), batch=48, steps=2, lr=0.2, momentum=0.9)
        chunks, _, _, x_test, y_test = digits_batches(spec, TRAIN_UPDATES * spec.steps, seed=0)
        store = dataset_store(self.world.workdir / "dataset")
        ids = put_batches(store, chunks)
        graph = spec.training_graph()
        register_model(self.chain, self.deployment, self.who.dapp, graph, "digits-mlp-train")
        self.world.models.add(graph)
        creator = TrainingClient(self.chain, self.deployment, self.who.dapp)
        plan = plan_run(spec, spec.init_params(0), ids, 10**15, 10**17, 10**17, 600, 300)
        run_id = creator.create_run(plan)
        self.console.print(
            f"  run {run_id}: MLP 64-16-10 on digits, {plan.updates} updates of {spec.steps} SGD steps "
            f"(batch {spec.batch}, lr {spec.lr}, momentum {spec.momentum}); "
            f"architecture 0x{plan.architecture.hex()[:16]}"
        )

        def agent(cls: type[Agent], account: LocalAccount, name: str, **kw: Any) -> Agent:
            log = logging.getLogger(f"rollml.demo.{name}")
            log.addHandler(self.timeline)
            log.setLevel(logging.INFO)
            log.propagate = False
            return self.world.agent(cls, account, name, log, dataset=store, run_ids=[run_id], **kw)

        self.timeline.names.update(
            {
                "rollml.demo.worker": "honest worker",
                "rollml.demo.lazy-worker": "dishonest worker",
                "rollml.demo.fraud-proofer": "fraud-proofer",
            }
        )
        honest = cast(TrainingWorker, agent(TrainingWorker, self.who.node, "worker", auto_withdraw=False))
        liar = cast(
            TrainingWorker,
            agent(TrainingWorker, self.who.liar, "lazy-worker", wrong_at=[1], auto_withdraw=False),
        )
        proofer = agent(FraudProofer, self.who.challenger, "fraud-proofer")
        agents = [liar, honest, proofer]
        try:
            self.play(agents, lambda: creator.run(run_id).finished, lambda: self.train_games(run_id, first))
        finally:
            for a in agents:
                a.close()
        paid = {"honest": honest.client.withdraw(), "dishonest": liar.client.withdraw()}
        status = creator.status(run_id)
        games = self.train_games(run_id, first)
        caught = status["wrong_updates_caught"]
        png = loss_curve_png(status["losses"], self.out_dir / f"train-run-{run_id}-loss.png")
        self.console.print(
            f"  {status['accepted']} updates accepted, {caught} wrong caught; loss curve {png}"
        )

        params, _ = spec.decode_state(creator.state(run_id))
        model = spec.inference_model(params)
        mid = creator.register(run_id, model, "digits-mlp-trained")
        self.world.models.add(model)
        assert mid == mid_of(model)
        correct = sum(
            int(decode_payload(native.run(model, encode_x(x)))[0][0]) == int(y)
            for x, y in zip(x_test, y_test, strict=True)
        )
        accuracy = round(correct / len(y_test), 4)
        self.console.print(f"  registered the trained model 0x{mid.hex()[:16]}; test accuracy {accuracy:.1%}")
        rid = self.client.request(mid, [x_test[:1]]).request_id

        def finalized() -> bool:
            return self.request_status(rid) == RequestStatus.FINALIZED

        self.play([self.node, self.challenger], finalized, lambda: [])
        (digit,) = self.client.output(rid)
        self.console.print(
            f"  inference request {rid} on the trained model: digit {int(digit[0])} (label {int(y_test[0])})"
        )
        won = (
            status["accepted"] == plan.updates
            and caught >= 1
            and all(self.game_status(g) == GameStatus.CHALLENGER_WON for g in games)
        )
        result = self.finish(
            "train",
            t0,
            first,
            "fraud-proofer" if won else "dishonest worker",
            won,
            games,
            run=run_id,
            losses=[round(v, 5) for v in status["losses"]],
            png=str(png),
            request=rid,
            digit=int(digit[0]),
            label=int(y_test[0]),
            model_id="0x" + mid.hex(),
            paid_wei=paid,
        )
        result.extra = {"updates": status["accepted"], "wrong_updates_caught": caught, "accuracy": accuracy}
        return result

    def world_training(self) -> Any:
        """The TrainingRun contract of the demo's deployment (deployed with everything else)."""
        assert self.contracts.training is not None
        return self.contracts.training

    def train_games(self, run_id: int, since: int) -> list[int]:
        evs = self.chain.events(self.world_training(), "UpdateChallenged", since, runId=run_id)
        return [int(ev["args"]["gameId"]) for ev in evs]

    def game_status(self, game_id: int) -> GameStatus:
        return game_status(self.chain, self.contracts, game_id)

    def close(self) -> None:
        for a in (self.node, self.challenger, self.liar, self.troll):
            a.close()


SCENARIOS = (
    ("honest", "a. honest prover, no challenge: the GAN NFT is minted", Demo.honest),
    ("blend", "a2. two GAN NFTs blended: the child of their latents is minted", Demo.blend),
    ("dishonest-prover", "b. a dishonest prover posts a wrong digit", Demo.dishonest_prover),
    (
        "dishonest-challenger",
        "c. a dishonest challenger disputes a correct result",
        Demo.dishonest_challenger,
    ),
    ("text", "d. a text request: fortune-gpt writes, verified like any result", Demo.text),
    ("train", "e. verifiable training: two workers, one wrong update caught", Demo.train),
)
TRAIN_UPDATES = 20


def encode_x(x: Any) -> bytes:
    """The input payload of the trained digits model for one image (64 pixels)."""
    import numpy as np

    from mlkit.io import encode_payload

    return encode_payload([np.asarray(x, np.float32).reshape(1, -1)])


def loss_curve_png(losses: list[float], path: Path, width: int = 480, height: int = 240) -> Path:
    """The loss of each accepted update as a line chart (PNG), with the first and last values written."""
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, top, right, bottom = 40, 20, width - 10, height - 30
    d.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    if losses:
        lo, hi = min(losses), max(losses)
        span = (hi - lo) or 1.0
        n = max(len(losses) - 1, 1)
        pts = [
            (left + (right - left) * i / n, bottom - (bottom - top) * (v - lo) / span)
            for i, v in enumerate(losses)
        ]
        d.line(pts, fill="royalblue", width=2)
        d.text((left + 4, top - 14), f"loss {losses[0]:.3f} -> {losses[-1]:.3f}", fill="black")
        d.text((left, bottom + 8), f"update 1 .. {len(losses)}", fill="black")
    img.save(path)
    return path


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
        "scenarios": [r.report() for r in results],
        "honest_won_all": all(r.honest_won for r in results),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    console.rule(
        "[bold green]all scenarios won by the honest side"
        if report["honest_won_all"]
        else "[bold red]the honest side lost a scenario"
    )
    return report
