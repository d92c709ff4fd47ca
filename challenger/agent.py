"""The challenger agent: re-executes every posted result, challenges the wrong ones with a bond and plays
each game to the end, and watches the other games to help the truthful side (docs/protocol.md section 5).

Per posted result (`ResultPosted`), in the challenger's SQLite store:

    pending -> correct | wrong | unknown     `rollml.execution.verify` in the worker pool: the native output
                                             hash first, then the VM run for the claimed output hash
    wrong -> challenged                      `challenge(requestId)` with the challenger bond, while the window
                                             is open (re-read on-chain first: one challenge per result)

Its own games it plays with `rollml.dispute.next_move` as the challenger, on the trace of "this model, this
input, this claimed output hash" (the game's local data), down to the leaf: it loads the keccak preimage
part the step reads into the oracle and calls `step`. A game whose result another game already discarded
is refunded (`refundChallenge`).

**Defending correct results.** Only the prover can dissect, and only a game's own challenger can pick, so
a third party cannot play a game for the prover. What anyone can do is claim a timeout and execute the
leaf step. As a *watcher* of the games it is not a party to (`watch=True`), the challenger therefore uses
`rollml.dispute.watch_move`: once a deadline has passed, it claims the timeout when the party due is the
lying one (a dishonest challenger stalling against a correct result, or a wrong result's prover not
dissecting), and it executes the leaf step for a truthful challenger that did not. A correct result's
prover that stops dissecting still loses its game: that is the prover's own job (`rollml node`).

`tamper` and `challenge_correct` make a dishonest challenger for tests and the demo: it challenges correct
results too and plays a tampered trace (`rollml.execution.Tamper`, register or memory).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract
from web3.types import EventData

from rollml.agent import Agent, ModelStore, OnchainGame, receipt_events
from rollml.chain import Chain
from rollml.deploy import Deployment
from rollml.dispute import GameStatus, GameView, Move, Role, Wait, next_move, watch_move
from rollml.execution import Claim, GameTrace, Tamper, TamperKind, Verification, verify
from rollml.sdk import RequestStatus
from rollml.store import GameRole, GameRow, GameState, ResultRow, Store, Verdict


class Challenger(Agent):
    """See the module docstring. Drive it with `tick()` or `run_forever(interval)`."""

    ROLE = "challenger"

    def __init__(
        self,
        chain: Chain,
        deployment: Deployment,
        account: LocalAccount,
        store: Store | str | Path,
        models: ModelStore,
        workers: int = 0,
        tamper: Tamper | None = None,
        challenge_correct: bool = False,
        watch: bool = True,
        auto_withdraw: bool = True,
        logger: logging.Logger | None = None,
        confirmations: int = 0,
    ) -> None:
        super().__init__(
            chain, deployment, account, store, models, workers, auto_withdraw, logger, confirmations
        )
        if tamper is not None and tamper.kind not in (TamperKind.REGISTER, TamperKind.MEMORY):
            raise ValueError(f"a challenger tampers a register or memory word, not its {tamper.kind}")
        self.tamper = tamper
        self.challenge_correct = challenge_correct
        self.watch = watch

    # -- events ----------------------------------------------------------------------------------------------
    def watched_events(self) -> Sequence[tuple[Contract, str]]:
        market = self.contracts.market
        return [(market, "InferenceRequested"), (market, "ResultPosted"), (market, "ResultChallenged")]

    def on_ResultPosted(self, ev: EventData) -> None:
        a = ev["args"]
        row = ResultRow(
            result_id=a["resultId"],
            request_id=a["requestId"],
            prover=a["prover"],
            output_hash=bytes(a["outputHash"]),
            final_hash=bytes(a["finalStateHash"]),
            steps=a["steps"],
            output=bytes(a["output"]),
            block=ev["blockNumber"],
            verdict=Verdict.PENDING,
            reason=None,
            handled=False,
        )
        if self.store.add_result(row):
            self.emit("result_seen", request=row.request_id, result=row.result_id, prover=row.prover)

    def on_ResultChallenged(self, ev: EventData) -> None:
        a = ev["args"]
        ours = a["challenger"] == self.address
        if not ours and not self.watch:
            return
        role = GameRole.CHALLENGER if ours else GameRole.WATCHER
        tamper = self.tamper.to_json() if ours and self.tamper is not None else None
        if self.store.add_game(a["gameId"], role, a["requestId"], a["resultId"], ev["blockNumber"], tamper):
            self.emit("game_seen", game=a["gameId"], role=role, result=a["resultId"])
        if ours:
            self.store.set_handled(a["resultId"], "challenged")

    # -- verification and challenges -------------------------------------------------------------------------
    def advance(self) -> None:
        """Start verifications while workers are free, collect verdicts, challenge what is wrong."""
        for result in self.store.results(Verdict.PENDING, handled=False):
            if self.pool.busy(result.result_id) or self.pool.free() == 0:
                continue
            self._guard("verify", partial(self.start_verification, result), result=result.result_id)
        for result_id, verification, exc in self.pool.finished():
            self.verified(result_id, verification, exc)
        targets = (Verdict.WRONG, Verdict.CORRECT) if self.challenge_correct else (Verdict.WRONG,)
        for result in self.store.results(*targets, handled=False):
            self._guard("challenge", partial(self.maybe_challenge, result), result=result.result_id)
        for result in self.store.results(Verdict.CORRECT, Verdict.UNKNOWN, handled=False):
            if result.verdict == Verdict.UNKNOWN or not self.challenge_correct:
                self.store.set_handled(result.result_id)

    def start_verification(self, result: ResultRow) -> None:
        """Verify a result in the pool, unless it is settled already (history seen on a first start)."""
        status, current = self.request_status(result.request_id)
        if (
            status != RequestStatus.PROPOSED
            or current != result.result_id
            or self.read_result(result.result_id)[3]
        ):
            self.store.set_verdict(result.result_id, Verdict.UNKNOWN, "settled before we verified it")
            return
        request = self.store.request(result.request_id)
        model = self.models.get(request.model_id) if request is not None else None
        if request is None or model is None:
            reason = "request not seen" if request is None else "model not available"
            self.store.set_verdict(result.result_id, Verdict.UNKNOWN, reason)
            self.emit("unverifiable", logging.WARNING, result=result.result_id, reason=reason)
            return
        claim = Claim(result.output_hash, result.final_hash, result.steps)
        self.pool.submit(
            result.result_id, verify, model, request.input, claim, self.deployment.params.max_steps
        )

    def verified(self, result_id: int, verification: Verification | None, exc: BaseException | None) -> None:
        if verification is None:
            self.emit("verify_failed", logging.ERROR, result=result_id, error=f"{exc}")
            return  # stays pending: retried next tick
        verdict = Verdict.CORRECT if verification.correct else Verdict.WRONG
        self.store.set_verdict(result_id, verdict, verification.reason)
        level = logging.INFO if verification.correct else logging.WARNING
        self.emit("verified", level, result=result_id, verdict=verdict, reason=verification.reason)

    def maybe_challenge(self, result: ResultRow) -> None:
        """Challenge a result once, while it is pending and its window is open (all re-read on-chain)."""
        market = self.contracts.market.functions
        rid = result.result_id
        if any(g.result_id == rid and g.role == GameRole.CHALLENGER for g in self.store.games()):
            self.store.set_handled(rid)
            return
        if self.chain.call(market.hasChallenged(rid, self.address)):  # sent before a crash: the event follows
            self.store.set_handled(rid, "challenged")
            return
        status, current = self.request_status(result.request_id)
        _, posted_at, _, discarded = self.read_result(rid)
        if status != RequestStatus.PROPOSED or current != rid or discarded:
            self.store.set_handled(rid, "no longer pending")
            return
        closes = posted_at + self.deployment.params.challenge_window
        if self.chain.now() >= closes:
            self.store.set_handled(rid, "challenge window closed")
            self.emit("window_missed", logging.ERROR, result=rid, closed_at=closes)
            return
        receipt = self.send(
            "challenge",
            market.challenge(result.request_id, rid),
            value=self.deployment.params.challenger_bond,
            request_id=result.request_id,
        )
        (ev,) = receipt_events(self.contracts.market, "ResultChallenged", receipt)
        self.on_ResultChallenged(ev)
        self.store.attach_tx("0x" + bytes(receipt["transactionHash"]).hex(), ev["args"]["gameId"])
        self.emit("challenged", result=rid, game=ev["args"]["gameId"], verdict=result.verdict)

    # -- games -----------------------------------------------------------------------------------------------
    def before_move(self, row: GameRow, game: OnchainGame) -> bool:
        """Our game on a result another game already discarded: take the bond back instead of playing."""
        if row.role != GameRole.CHALLENGER or not self.read_result(row.result_id)[3]:
            return False
        self.send(
            "refund",
            self.contracts.market.functions.refundChallenge(row.game_id),
            request_id=row.request_id,
            game_id=row.game_id,
        )
        return True

    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        if row.role == GameRole.CHALLENGER:
            return next_move(view, Role.CHALLENGER, self.trace_for(row).hash_at, now)
        result = self.store.result(row.result_id)
        if result is None or result.verdict not in (Verdict.CORRECT, Verdict.WRONG):
            return Wait("watching a result we have not verified")
        return watch_move(
            view, result.verdict == Verdict.CORRECT, lambda n: self.trace_for(row).hash_at(n), now
        )

    def build_trace(self, row: GameRow) -> GameTrace:
        """The game's claim: this model, this input, this claimed output hash (tampered if dishonest)."""
        request = self.store.request(row.request_id)
        result = self.store.result(row.result_id)
        if request is None or result is None:
            raise RuntimeError(f"game {row.game_id}: request or result not seen")
        model = self.models.get(request.model_id)
        if model is None:
            raise RuntimeError(f"game {row.game_id}: model 0x{request.model_id.hex()} not available")
        tamper = Tamper.from_json(row.tamper) if row.tamper else None
        return GameTrace(
            model, request.input, result.output_hash, tamper, max_steps=result.steps, steps_hint=result.steps
        )

    def outcome(self, row: GameRow, status: GameStatus) -> GameState:
        """A watched game is won when the truthful side won."""
        if row.role != GameRole.WATCHER or status == GameStatus.CANCELLED:
            return super().outcome(row, status)
        result = self.store.result(row.result_id)
        if result is None or result.verdict not in (Verdict.CORRECT, Verdict.WRONG):
            return GameState.ENDED
        truth_is_proposer = result.verdict == Verdict.CORRECT
        return GameState.WON if (status == GameStatus.PROPOSER_WON) == truth_is_proposer else GameState.LOST
