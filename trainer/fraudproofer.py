"""The fraud-proofer (`rollml train fraud-proofer`): re-computes every posted update natively (then, when the
native output agrees, the VM run), challenges a wrong one with its bond and plays the game to the one-step
proof; the loser's deposit comes to it. Withheld weights cannot happen: a post carries them in calldata.
Restart-safe: besides the `UpdatePosted` events it checks each run's pending update it has not checked yet.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from rollml.agent.training import TrainingAgent
from rollml.core.dispute import GameView, Move, Role, next_move
from rollml.core.store import GameRow
from rollml.core.training import check_update


class FraudProofer(TrainingAgent):
    """Checks the updates of the runs it is given (all by default)."""

    KIND = "fraud-proofer"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.to_check: list[int] = []  # updates posted, not yet checked
        self.checked: dict[int, bool] = {}  # update id -> correct
        self.caught = 0

    def on_UpdatePosted(self, ev: Any) -> None:
        a = ev["args"]
        update_id = int(a["updateId"])
        if self.ours(int(a["runId"])) and update_id not in self.checked and update_id not in self.to_check:
            self.to_check.append(update_id)

    def advance(self) -> None:
        # a pending update we have not checked (posted before a restart, past the event cursor)
        for run_id in self.runs():
            pending = self.client.run(run_id).pending_update
            if pending and pending not in self.checked and pending not in self.to_check:
                self.to_check.append(pending)
        while self.to_check:
            update_id = self.to_check[0]
            if not self._guard("check_update", partial(self.check, update_id), update=update_id):
                return
            self.to_check.pop(0)

    def check(self, update_id: int) -> None:
        u = self.client.update(update_id)
        if u.discarded or u.accepted or u.worker == self.address:
            self.checked[update_id] = True
            return
        run = self.client.run(u.run_id)
        graph = self.models.get(run.cfg.architecture)
        if graph is None:
            raise RuntimeError(f"architecture 0x{run.cfg.architecture.hex()} is not in the model store")
        state = self.client.state_before(u.run_id, u.index)
        batches = self.client.update_batches(u.run_id, u.index, self.dataset)
        posted = self.client.posted_state(update_id)
        v = check_update(
            graph,
            state,
            batches,
            posted,
            u.loss_bits.to_bytes(4, "big"),
            u.final_hash,
            u.steps,
            run.cfg.state_records_end,
            run.cfg.n_outputs,
            run.cfg.max_steps,
        )
        self.checked[update_id] = v.correct
        self.emit(
            "update_checked",
            run=u.run_id,
            update=update_id,
            index=u.index,
            correct=v.correct,
            reason=v.reason,
        )
        if v.correct:
            return
        if self.chain.now() >= u.posted_at + run.cfg.challenge_window:
            self.emit("too_late", logging.WARNING, update=update_id)
            return
        call = self.training.functions.challenge(update_id)
        receipt = self.responder.send("challenge", call, value=run.cfg.challenger_bond)
        game_id = int(self.training.events.UpdateChallenged().process_receipt(receipt)[0]["args"]["gameId"])
        self.store.add_game(game_id, Role.CHALLENGER, update_id, u.run_id, int(receipt["blockNumber"]))
        self.caught += 1
        self.emit("update_disputed", run=u.run_id, update=update_id, game=game_id)

    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        return next_move(view, Role.CHALLENGER, self.trace_for(row).hash_at, now)
