"""What the training worker and the fraud-proofer share: the `TrainingRun` events they follow, the trace of a
game on an update (re-derived from the chain and the dataset store), and the withdrawals.

A game on update `u` of run `r` is recorded in the agent's store with `request_id = u` and `result_id = r`
(the store's game table is the market's; the ids are the training contract's). Its trace is the one of an
inference game: the training graph (the run's architecture, from the model store) on the update's input
(the state it started from, read from the chain's events, and its batches, from the dataset store), for the
output hash the contract derived from the posted state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract

from mipsvm.preimage import PreimageStore
from rollml.agent.base import Agent
from rollml.agent.models import ModelStore
from rollml.core.chain import Chain
from rollml.core.deploy import Deployment
from rollml.core.execution import GameTrace, Tamper, tamper_cap, trace_key
from rollml.core.store import GameRow, Store
from rollml.core.training import TrainingClient, UpdateInfo


class TrainingAgent(Agent):
    """An agent of the training runs (`run_ids`: the runs it works on; empty: every run)."""

    KIND = "training"

    def __init__(
        self,
        chain: Chain,
        deployment: Deployment,
        account: LocalAccount,
        store: Store | str | Path,
        dataset: PreimageStore,
        models: ModelStore | None = None,
        run_ids: Sequence[int] = (),
        logger: logging.Logger | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(chain, deployment, account, store, models, logger=logger, **kw)
        self.client = TrainingClient(chain, deployment, account)
        self.training = self.client.training
        self.dataset = dataset
        self.run_ids = tuple(run_ids)
        self._caps: dict[int, int] = {}  # update id -> how far our tampered trace runs (dishonest workers)

    def watched_events(self) -> Sequence[tuple[Contract, str]]:
        return [(self.training, "UpdatePosted"), (self.training, "UpdateChallenged")]

    def ours(self, run_id: int) -> bool:
        return not self.run_ids or run_id in self.run_ids

    def runs(self) -> list[int]:
        return list(self.run_ids) or list(range(1, self.client.run_count() + 1))

    # -- events: subclasses act on them ---------------------------------------------------------------------
    def on_UpdatePosted(self, ev: Any) -> None:
        """An update was posted (the fraud-proofer checks it)."""

    def on_UpdateChallenged(self, ev: Any) -> None:
        """An update was challenged (the worker defends its own)."""

    # -- games ----------------------------------------------------------------------------------------------
    def _game_inputs(self, row: GameRow) -> tuple[bytes, bytes, UpdateInfo]:
        """(the training graph, the update's input payload, the update) of game `row`."""
        u = self.client.update(row.request_id)
        run = self.client.run(u.run_id)
        graph = self.models.get(run.cfg.architecture)
        if graph is None:
            raise RuntimeError(
                f"game {row.game_id}: architecture 0x{run.cfg.architecture.hex()} is not in the model store"
            )
        state = self.client.state_before(u.run_id, u.index)
        batches = self.client.update_batches(u.run_id, u.index, self.dataset)
        return graph, state + b"".join(batches), u

    def _tamper(self, row: GameRow) -> tuple[Tamper | None, int | None]:
        if not row.tamper:
            return None, None
        return Tamper.from_json(row.tamper), self._caps.get(row.request_id)

    def trace_key(self, row: GameRow) -> bytes:
        u = self.client.update(row.request_id)
        tamper, cap = self._tamper(row)
        return trace_key(
            self.client.run(u.run_id).cfg.architecture,
            u.input_id,
            u.output_hash,
            tamper,
            tamper is not None,
            cap,
        )

    def build_trace(self, row: GameRow) -> GameTrace:
        graph, payload, u = self._game_inputs(row)
        tamper, cap = self._tamper(row)
        return GameTrace(graph, payload, u.output_hash, tamper, tamper is not None, cap, u.steps)

    def remember_cap(self, update_id: int, honest_steps: int, max_steps: int) -> None:
        self._caps[update_id] = tamper_cap(honest_steps, max_steps)

    # -- payouts --------------------------------------------------------------------------------------------
    def withdraw(self) -> None:
        if not self.auto_withdraw:
            return
        balance = self.client.balance()
        if balance > 0:
            self.responder.send("withdraw", self.training.functions.withdraw())
            self.emit("withdrawn", wei=balance)
