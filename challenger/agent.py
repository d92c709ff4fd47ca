"""The challenger agent: re-executes every posted result, challenges the wrong ones with a bond and plays
each game to the end, and watches the other games to help the truthful side (docs/protocol.md section 5).

Per posted result (`ResultPosted`), in the challenger's SQLite store:

    pending -> correct | wrong | unknown     `rollml.core.execution.verify` in the worker pool: the native
                                             output hash first, then the VM run for the claimed output hash
    wrong -> challenged                      `challenge(requestId)` with the challenger bond, while the window
                                             is open (re-read on-chain first: one challenge per result)

Its own games it plays with `rollml.core.dispute.next_move` as the challenger, on the trace of "this model,
this input, this claimed output hash" (the game's local data), down to the leaf: it loads the keccak preimage
part the step reads into the oracle and calls `step`. A game whose result another game already discarded
is refunded (`refundChallenge`).

**Defending correct results.** Only the prover can dissect, and only a game's own challenger can pick, so
a third party cannot play a game for the prover. What anyone can do is claim a timeout and execute the
leaf step. As a *watcher* of the games it is not a party to (`watch=True`), the challenger therefore uses
`rollml.core.dispute.watch_move`: once a deadline has passed, it claims the timeout when the party due is the
lying one (a dishonest challenger stalling against a correct result, or a wrong result's prover not
dissecting), and it executes the leaf step for a truthful challenger that did not. A correct result's
prover that stops dissecting still loses its game: that is the prover's own job (`rollml node`).

`tamper` and `challenge_correct` make a dishonest challenger for tests and the demo: it challenges correct
results too and plays a tampered trace (`rollml.core.execution.Tamper`, register or memory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract
from web3.types import EventData

from rollml.agent.base import Agent
from rollml.agent.models import ModelStore
from rollml.agent.reads import OnchainGame, receipt_events
from rollml.core.chain import Chain
from rollml.core.deploy import Deployment
from rollml.core.dispute import GameStatus, GameView, Move, Role, Wait, next_move, watch_move
from rollml.core.execution import Claim, GameTrace, Tamper, TamperKind, Verification, trace_key, verify
from rollml.core.sdk import RequestStatus
from rollml.core.split import SplitTrace, split_trace_key, split_verification
from rollml.core.store import GameRow, GameState, RequestRow, ResultRow, Store, Verdict

NO_MODEL, NO_REQUEST = "model not available", "request not seen"
RETRIED_REASONS = (NO_MODEL, NO_REQUEST)  # why a result may be unverifiable for now
WINDOW_CHECK = 30.0  # seconds between looks at an unverifiable result's challenge window


class Challenger(Agent):
    """See the module docstring. Drive it with `tick()` or `run_forever(interval)`."""

    KIND = "challenger"

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
        fetch_models: bool = False,
    ) -> None:
        super().__init__(
            chain,
            deployment,
            account,
            store,
            models,
            workers,
            auto_withdraw,
            logger,
            confirmations,
            fetch_models,
        )
        if tamper is not None and tamper.kind not in (
            TamperKind.REGISTER,
            TamperKind.MEMORY,
            TamperKind.TENSOR,
        ):
            raise ValueError(
                f"a challenger tampers a register, a memory word or a tensor (split), not its {tamper.kind}"
            )
        self.tamper = tamper
        self.challenge_correct = challenge_correct
        self.watch = watch
        self._window_checked: dict[int, float] = {}  # result id -> monotonic time of its last window check
        revived = self.store.retry_unverified(RETRIED_REASONS)  # given up by an older version
        if revived:
            self.emit("unverifiable_retried", results=revived)

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
        role = Role.CHALLENGER if ours else Role.WATCHER
        tamper = self.tamper.to_json() if ours and self.tamper is not None else None
        if self.store.add_game(a["gameId"], role, a["requestId"], a["resultId"], ev["blockNumber"], tamper):
            self.emit("game_seen", game=a["gameId"], role=role, result=a["resultId"])
        if ours:
            self.store.set_handled(a["resultId"], "challenged")

    # -- verification and challenges -------------------------------------------------------------------------
    def advance(self) -> None:
        """Retry the results we could not verify, start verifications while workers are free, collect
        verdicts, challenge what is wrong."""
        for result in self.store.results(Verdict.UNVERIFIABLE):
            self._guard(
                "retry_unverifiable", partial(self.retry_unverifiable, result), result=result.result_id
            )
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
        model = self.model(request.model_id) if request is not None else None
        if request is None or model is None:
            reason = NO_REQUEST if request is None else NO_MODEL
            self.store.set_verdict(result.result_id, Verdict.UNVERIFIABLE, reason)
            self._window_checked[result.result_id] = time.monotonic()
            self.emit(
                "unverifiable",
                logging.WARNING,
                result=result.result_id,
                request=result.request_id,
                model_id=request.model_id if request is not None else None,
                reason=reason,
                retry="while the challenge window is open",
            )
            return
        if self.is_split(result.result_id):  # re-checked natively: every state, no VM
            self.pool.submit(
                result.result_id,
                split_verification,
                model,
                request.input,
                result.final_hash,
                result.steps,
                result.output_hash,
            )
            return
        claim = Claim(result.output_hash, result.final_hash, result.steps)
        self.pool.submit(
            result.result_id, verify, model, request.input, claim, self.deployment.params.max_steps
        )

    def retry_unverifiable(self, result: ResultRow) -> None:
        """A result we could not verify: verify it as soon as its request and model are here (the model
        added to --models or fetched from its uri, the request read from its event); every WINDOW_CHECK
        seconds, give it up once it is settled or its window closed (a warning: it went unchecked)."""
        request = self.store.request(result.request_id) or self.find_request(result.request_id)
        if request is not None and self.model(request.model_id) is not None:
            self.store.set_verdict(result.result_id, Verdict.PENDING, "retried: model and request available")
            self.emit("reverifying", result=result.result_id, request=result.request_id)
            return
        if time.monotonic() - self._window_checked.get(result.result_id, 0.0) < WINDOW_CHECK:
            return
        self._window_checked[result.result_id] = time.monotonic()
        status, current = self.request_status(result.request_id)
        _, posted_at, _, discarded = self.read_result(result.result_id)
        closed = self.chain.now() >= posted_at + self.deployment.params.challenge_window
        if status != RequestStatus.PROPOSED or current != result.result_id or discarded or closed:
            reason = f"never verified: {result.reason}; the result is settled or its window closed"
            self.store.set_verdict(result.result_id, Verdict.UNKNOWN, reason)
            self.store.set_handled(result.result_id)
            self._window_checked.pop(result.result_id, None)
            self.emit(
                "unverified_result_settled", logging.WARNING, result=result.result_id, reason=result.reason
            )

    def find_request(self, request_id: int) -> RequestRow | None:
        """A request we did not see (its event was before our first block): read from its event."""
        events = self.chain.events(
            self.contracts.market, "InferenceRequested", self.deployment.block, requestId=request_id
        )
        for ev in events:
            self.on_InferenceRequested(ev)
        return self.store.request(request_id)

    def verified(self, result_id: int, verification: Verification | None, exc: BaseException | None) -> None:
        if verification is None:
            self.emit("verify_failed", logging.ERROR, result=result_id, error=f"{exc}")
            return  # stays pending: retried next tick
        verdict = Verdict.CORRECT if verification.correct else Verdict.WRONG
        self.store.set_verdict(result_id, verdict, verification.reason)
        level = logging.INFO if verification.correct else logging.WARNING
        self.emit(
            "verified",
            level,
            result=result_id,
            verdict=verdict,
            reason=verification.reason,
            vm_seconds=f"{verification.vm_seconds:.3f}",
        )

    def maybe_challenge(self, result: ResultRow) -> None:
        """Challenge a result once, while it is pending and its window is open (all re-read on-chain)."""
        market = self.contracts.market.functions
        rid = result.result_id
        if any(g.result_id == rid and g.role == Role.CHALLENGER for g in self.store.games()):
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
        receipt = self.responder.send(
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
        if row.role != Role.CHALLENGER or not self.read_result(row.result_id)[3]:
            return False
        self.responder.send(
            "refund",
            self.contracts.market.functions.refundChallenge(row.game_id),
            request_id=row.request_id,
            game_id=row.game_id,
        )
        return True

    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        if row.role == Role.CHALLENGER:
            return next_move(view, Role.CHALLENGER, self.our_hash(row, view, False), now)
        if self.capacity.overloaded:
            return Wait("short of capacity: games between others are left to their parties")
        result = self.store.result(row.result_id)
        if result is None or result.verdict not in (Verdict.CORRECT, Verdict.WRONG):
            return Wait("watching a result we have not verified")
        return watch_move(
            view, result.verdict == Verdict.CORRECT, lambda n: self.our_hash(row, view, False)(n), now
        )

    def _claim(self, row: GameRow) -> tuple[RequestRow, ResultRow, Tamper | None]:
        """The request, the disputed result and our tamper (if we are a dishonest challenger)."""
        request = self.store.request(row.request_id)
        result = self.store.result(row.result_id)
        if request is None or result is None:
            raise RuntimeError(f"game {row.game_id}: request or result not seen")
        return request, result, Tamper.from_json(row.tamper) if row.tamper else None

    def trace_key(self, row: GameRow) -> bytes:
        request, result, tamper = self._claim(row)
        if self.is_split(row.result_id):
            return split_trace_key(request.model_id, request.input_id, tamper)
        return trace_key(request.model_id, request.input_id, result.output_hash, tamper, False, result.steps)

    def build_trace(self, row: GameRow) -> GameTrace | SplitTrace:
        """The game's claim: this model, this input, this claimed output hash (tampered if dishonest); for a
        split claim, our states of the request."""
        request, result, tamper = self._claim(row)
        model = self.model(request.model_id)
        if model is None:
            raise RuntimeError(f"game {row.game_id}: model 0x{request.model_id.hex()} not available")
        if self.is_split(row.result_id):
            return SplitTrace(model, request.input, tamper)
        return GameTrace(
            model, request.input, result.output_hash, tamper, max_steps=result.steps, steps_hint=result.steps
        )

    def outcome(self, row: GameRow, status: GameStatus) -> GameState:
        """A watched game is won when the truthful side won."""
        if row.role != Role.WATCHER or status == GameStatus.CANCELLED:
            return super().outcome(row, status)
        result = self.store.result(row.result_id)
        if result is None or result.verdict not in (Verdict.CORRECT, Verdict.WRONG):
            return GameState.ENDED
        truth_is_proposer = result.verdict == Verdict.CORRECT
        return GameState.WON if (status == GameStatus.PROPOSER_WON) == truth_is_proposer else GameState.LOST
