"""The training worker (`rollml train worker`): takes the lease on a run's next update, computes it (k SGD
steps natively, then the VM run that binds the claim), posts the new weights with the claim, defends the
update in every game, finalizes it after the window and withdraws its pay.

Its decisions read the chain every tick (lease, pending update, accepted count), so a restart resumes: a lease
we hold is used, an update of ours is finalized or defended. `wrong_at` (testing and the demo only) makes it
post a wrong update as its n-th post for each n in it: other weights with a forged VALID claim (an OUTPUT
tamper), which the
fraud-proofer catches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from rollml.agent.training import TrainingAgent
from rollml.core.dispute import GameView, Move, Role, next_move
from rollml.core.execution import Tamper, TamperKind
from rollml.core.store import GameRow
from rollml.core.training import UpdateWork, compute_update

POST_UPDATE_GAS_BASE = 500_000  # plus 64 gas per state byte: calldata, copies, hashing (measured ~37/byte)


class TrainingWorker(TrainingAgent):
    """Works on the runs it is given (all by default); `wrong_at`: which of its posts (0 = its first) it gets
    wrong on purpose."""

    KIND = "worker"

    def __init__(
        self, *args: Any, wrong_at: Iterable[int] = (), max_updates: int | None = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.wrong_at = set(wrong_at)
        self.max_updates = max_updates  # stop taking leases after posting this many updates (None: no bound)
        self.posted: list[UpdateWork] = []

    def on_UpdateChallenged(self, ev: Any) -> None:
        a = ev["args"]
        u = self.client.update(int(a["updateId"]))
        if u.worker != self.address:
            return
        work = next(
            (w for w in self.posted if w.index == u.index and w.claim.final_hash == u.final_hash), None
        )
        tamper = None if work is None or work.honest else Tamper(TamperKind.OUTPUT).to_json()
        if self.store.add_game(
            int(a["gameId"]), Role.PROPOSER, u.update_id, u.run_id, ev["blockNumber"], tamper
        ):
            self.emit(
                "update_challenged",
                run=u.run_id,
                update=u.update_id,
                game=int(a["gameId"]),
                challenger=a["challenger"],
            )

    def advance(self) -> None:
        for run_id in self.runs():
            self._guard("advance_run", partial(self.advance_run, run_id), run=run_id)

    def advance_run(self, run_id: int) -> None:
        run = self.client.run(run_id)
        now = self.chain.now()
        if run.pending_update:
            u = self.client.update(run.pending_update)
            if u.worker != self.address or now < u.posted_at + run.cfg.challenge_window or u.open_games:
                return
            self.responder.send("finalize", self.training.functions.finalize(u.update_id))
            self.emit("update_accepted", run=run_id, update=u.update_id, index=u.index)
            run = self.client.run(run_id)
        if run.finished:
            return
        held = run.lease_holder == self.address and now < run.lease_expires
        if not held:
            if run.lease_holder != "0x0000000000000000000000000000000000000000" and now < run.lease_expires:
                return  # someone else's live lease
            if self.max_updates is not None and len(self.posted) >= self.max_updates:
                return
            self.responder.send(
                "take_lease", self.training.functions.takeLease(run_id), value=run.cfg.worker_deposit
            )
            self.emit("lease_taken", run=run_id, index=run.accepted)
        self.work(run_id, run.accepted)

    def work(self, run_id: int, index: int) -> None:
        """Compute update `index` from the current state and post it."""
        run = self.client.run(run_id)
        graph = self.models.get(run.cfg.architecture)
        if graph is None:
            raise RuntimeError(f"architecture 0x{run.cfg.architecture.hex()} is not in the model store")
        state = self.client.state_before(run_id, index)
        batches = self.client.update_batches(run_id, index, self.dataset)
        tamper = Tamper(TamperKind.OUTPUT) if len(self.posted) in self.wrong_at else None
        w = compute_update(graph, state, batches, run.cfg.state_records_end, index, tamper, run.cfg.max_steps)
        c = w.claim
        call = self.training.functions.postUpdate(
            run_id, index, w.state, int.from_bytes(w.loss_bits, "big"), c.final_hash, c.steps
        )
        # a fixed limit: estimating re-executes the post's hashing of the state many times (slow on
        # py-evm); only the gas used is paid. The lease and the index were read just before.
        receipt = self.responder.send("post_update", call, gas=POST_UPDATE_GAS_BASE + 64 * len(w.state))
        update_id = int(self.training.events.UpdatePosted().process_receipt(receipt)[0]["args"]["updateId"])
        if tamper is not None:
            self.remember_cap(update_id, w.execution.steps, run.cfg.max_steps)
        self.posted.append(w)
        level = logging.INFO if w.honest else logging.WARNING
        self.emit(
            "update_posted",
            level,
            run=run_id,
            update=update_id,
            index=index,
            loss=round(w.loss, 5),
            honest=w.honest,
            steps=c.steps,
            vm_s=round(w.execution.vm_seconds, 3),
            native_s=round(w.execution.native_seconds, 4),
        )

    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        return next_move(view, Role.PROPOSER, self.trace_for(row).hash_at, now)
