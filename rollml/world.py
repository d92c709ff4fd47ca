"""One world to play in: a chain with a fresh deployment, its funded accounts, the models the agents serve,
a directory for the agents' stores, and the helpers every driver needs (make agents, send requests, read
events, tick the agents until something happened).

`rollml demo`, the fault campaign, the load test and the tests all build their worlds here, so each of
them sees the protocol the same way:

    world = World.create(Chain.embedded(), workdir, models={"mnist-mlp": mnist}, gan_model=gan)
    node, challenger = world.node(1, "node"), world.challenger(3, "challenger")
    rid = world.request(mnist, payload)
    world.play([node, challenger], lambda: world.request_status(rid) == RequestStatus.FINALIZED)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount

from challenger.agent import Challenger
from mlkit.format import model_id
from node.prover import ProverNode
from rollml.agent.base import Agent, TickStats
from rollml.agent.models import ModelStore
from rollml.core.chain import Chain
from rollml.core.deploy import DEV_MOVE_TIMEOUT, DEV_PARAMS, Contracts, Deployment, MarketParams, deploy
from rollml.core.deploy import register_model as register
from rollml.core.sdk import RequestStatus, request_status

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
REQUESTER = 9  # the dev account that sends requests unless told otherwise (0 deploys)

A = TypeVar("A", bound=Agent)


@dataclass
class World:
    """A deployment on a chain, its accounts, the models agents serve and where their stores live."""

    chain: Chain
    deployment: Deployment
    contracts: Contracts
    accounts: list[LocalAccount]
    models: ModelStore
    workdir: Path
    names: tuple[str, ...] = ()  # the names the models were registered under

    @classmethod
    def create(
        cls,
        chain: Chain,
        workdir: Path,
        models: Mapping[str, bytes] | None = None,
        gan_model: bytes | None = None,
        params: MarketParams = DEV_PARAMS,
        move_timeout: int = DEV_MOVE_TIMEOUT,
        deployer: int = 0,
    ) -> World:
        """Deploy everything from dev account `deployer` and register `models` by name (and `gan_model`,
        which the GanNFT pins; without one the first model stands in for it)."""
        models = dict(models or {})
        accounts = chain.dev_accounts()
        pinned = gan_model if gan_model is not None else next(iter(models.values()), None)
        if pinned is None:
            raise ValueError("a world needs at least one model (or a GAN model)")
        deployment = deploy(
            chain,
            accounts[deployer],
            model_id(pinned),
            params,
            move_timeout=move_timeout,
            gan_model=gan_model if gan_model is not None else pinned,
        )
        for name, model in models.items():
            register(chain, deployment, accounts[deployer], model, name)
        workdir.mkdir(parents=True, exist_ok=True)
        store = ModelStore([*models.values(), *([gan_model] if gan_model is not None else [])])
        return cls(chain, deployment, deployment.contracts(chain), accounts, store, workdir, tuple(models))

    # -- agents ----------------------------------------------------------------------------------------------
    def account(self, who: int | LocalAccount) -> LocalAccount:
        return self.accounts[who] if isinstance(who, int) else who

    def agent(
        self,
        cls: Callable[..., A],
        who: int | LocalAccount,
        name: str,
        logger: logging.Logger | None = None,
        chain: Chain | None = None,
        **kw: Any,
    ) -> A:
        """An agent of class `cls` for account `who`, serving this world's models, with the store
        `<workdir>/<name>.db` and the logger `logger` (default `rollml.world.<name>`); on this world's chain,
        or on `chain` (another endpoint of it)."""
        log = logger or logging.getLogger(f"rollml.world.{name}")
        kw.setdefault("models", self.models)
        db = self.workdir / f"{name}.db"
        return cls(chain or self.chain, self.deployment, self.account(who), db, logger=log, **kw)

    def node(self, who: int | LocalAccount, name: str, **kw: Any) -> ProverNode:
        return self.agent(ProverNode, who, name, **kw)

    def challenger(self, who: int | LocalAccount, name: str, **kw: Any) -> Challenger:
        return self.agent(Challenger, who, name, **kw)

    # -- requests and reads ----------------------------------------------------------------------------------
    def request(self, model: bytes, payload: bytes, sender: int | LocalAccount = REQUESTER) -> int:
        """`requestInference` of `model` (its bytes, or its 32-byte id) on `payload` with the estimated fee,
        no callback; the request id."""
        mid = model if len(model) == 32 else model_id(model)
        market = self.contracts.market
        fee = self.chain.call(market.functions.estimateFee(mid, len(payload), 0))
        call = market.functions.requestInference(mid, payload, ZERO_ADDRESS, 0)
        receipt = self.chain.transact(self.account(sender), call, value=fee)
        return int(market.events.InferenceRequested().process_receipt(receipt)[0]["args"]["requestId"])

    def request_status(self, request_id: int) -> RequestStatus:
        return request_status(self.chain, self.contracts, request_id)

    def events(self, event: str, **filters: Any) -> list[dict[str, Any]]:
        """The market's `event`s since the deployment, as argument dicts (with the block number)."""
        evs = self.chain.events(self.contracts.market, event, self.deployment.block, **filters)
        return [{**ev["args"], "blockNumber": ev["blockNumber"]} for ev in evs]

    def earned(self, account: LocalAccount) -> int:
        """Wei withdrawn from the market by `account`."""
        return sum(int(e["amount"]) for e in self.events("Withdrawal", account=account.address))

    # -- time ------------------------------------------------------------------------------------------------
    @property
    def idle_advance(self) -> int:
        """Seconds the clock jumps when nobody acts: past a challenge window and a move deadline."""
        return max(self.deployment.params.challenge_window, self.deployment.move_timeout) + 1

    def play(
        self,
        agents: Sequence[Agent],
        done: Callable[[], bool],
        max_ticks: int = 80,
        on_tick: Callable[[int], None] | None = None,
        on_stats: Callable[[Agent, TickStats], None] | None = None,
    ) -> int:
        """`play_until` with this world's idle clock jump."""
        return play_until(self.chain, agents, done, max_ticks, self.idle_advance, on_tick, on_stats)


def play_until(
    chain: Chain,
    agents: Sequence[Agent],
    done: Callable[[], bool],
    max_ticks: int = 300,
    idle_advance: int | None = None,
    on_tick: Callable[[int], None] | None = None,
    on_stats: Callable[[Agent, TickStats], None] | None = None,
) -> int:
    """Tick every agent in turn until `done()`; returns the rounds used (AssertionError after `max_ticks`).

    With `idle_advance`, a round in which no agent sent a transaction nor has work in its pool moves the
    chain's clock forward by that many seconds (time passes while everybody waits: challenge windows, move
    deadlines); no sleeping. With worker processes, a round may be idle while runs are in progress: the
    loop then spins on ticks (pass a larger `max_ticks`). `on_tick(round)` runs after each round,
    `on_stats(agent, stats)` after each agent's tick (what it sent and how long it took).
    """
    for n in range(1, max_ticks + 1):
        sent = 0
        for agent in agents:
            stats = agent.tick()
            sent += stats.txs
            if on_stats is not None:
                on_stats(agent, stats)
        if on_tick is not None:
            on_tick(n)
        if done():
            return n
        if sent == 0 and idle_advance and not any(agent.busy() for agent in agents):
            chain.advance_time(idle_advance)
    raise AssertionError(f"not done after {max_ticks} rounds of ticks")
