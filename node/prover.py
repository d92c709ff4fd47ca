"""The prover node: serves inference requests for the models it holds, posts results with a bond, defends
them in every game, and finalizes them after the challenge window (docs/protocol.md sections 3-5).

A job per request, in the node's SQLite store (`rollml.store.JobState`):

    queued -> running (worker pool: native run, then the VM run that binds the output) -> ready
    ready/waiting -> posted       when the request is open (re-read on-chain first: never posted twice)
    ready -> waiting              another prover's result is pending: post if it gets discarded
    posted -> finalized           window over, no open game: `finalize(requestId, output)`
    posted -> lost                our result was discarded by a game (never reposted automatically)
    -> closed / failed            finalized for someone else or cancelled / the runtime rejects the request

Games on our results are recorded from `ResultChallenged` and played with `rollml.dispute.next_move` as the
proposer; the trace is re-derived from the job's model, input and posted output hash after a restart.

`tamper` makes a dishonest node for tests and the demo (see `rollml.execution.Tamper`): it posts a forged
claim and plays the matching tampered trace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract
from web3.types import EventData

from rollml.agent import (
    Agent,
    ModelStore,
    receipt_events,
    status_name,
)
from rollml.chain import Chain
from rollml.deploy import Deployment
from rollml.dispute import GameView, Move, Role, next_move
from rollml.execution import Execution, ExecutionError, GameTrace, Tamper, execute, tamper_cap
from rollml.sdk import RequestStatus
from rollml.store import ACTIVE_JOB_STATES, GameRole, GameRow, JobRow, JobState, RequestRow, Store

MAX_ATTEMPTS = 3  # runs of one request before a crashing job is given up


class ProverNode(Agent):
    """See the module docstring. Drive it with `tick()` or `run_forever(interval)`."""

    ROLE = "node"

    def __init__(
        self,
        chain: Chain,
        deployment: Deployment,
        account: LocalAccount,
        store: Store | str | Path,
        models: ModelStore,
        workers: int = 0,
        tamper: Tamper | None = None,
        eager_step: bool = True,
        auto_withdraw: bool = True,
        logger: logging.Logger | None = None,
        confirmations: int = 0,
    ) -> None:
        super().__init__(
            chain, deployment, account, store, models, workers, auto_withdraw, logger, confirmations
        )
        self.tamper = tamper
        self.eager_step = eager_step
        # request id -> chain time until which a posted, unchallenged result needs no look (its window is
        # open and only a challenge, an event, can change it): without this every tick re-read every posted
        # job (two calls each), which made a tick of a node with 200 pending results take seconds
        self._quiet_until: dict[int, int] = {}
        self._tick_now = 0  # the chain time `advance` read at the start of this tick
        self._claims_checked: set[int] = set()  # games whose trace was checked against our posted claim
        requeued = self.store.requeue_running()
        if requeued:
            self.emit("requeued_after_restart", jobs=requeued)

    # -- events ----------------------------------------------------------------------------------------------
    def watched_events(self) -> Sequence[tuple[Contract, str]]:
        market = self.contracts.market
        return [(market, "InferenceRequested"), (market, "ResultPosted"), (market, "ResultChallenged")]

    def on_new_request(self, row: RequestRow) -> None:
        if row.model_id not in self.models:
            self.emit("request_skipped", request=row.request_id, reason="model not served")
            return
        tamper = self.tamper.to_json() if self.tamper is not None else None
        if self.store.add_job(row.request_id, tamper):
            self.emit("job_queued", request=row.request_id)

    def on_ResultPosted(self, ev: EventData) -> None:
        """Adopt our own result (also one posted just before a crash, before we recorded it)."""
        a = ev["args"]
        if a["prover"] != self.address:
            return
        job = self.store.job(a["requestId"])
        if job is not None and job.result_id != a["resultId"] and job.state in ACTIVE_JOB_STATES:
            self.store.update_job(job.request_id, state=JobState.POSTED, result_id=a["resultId"])

    def on_ResultChallenged(self, ev: EventData) -> None:
        a = ev["args"]
        job = self.store.job_by_result(a["resultId"])
        if job is None:
            return
        self._quiet_until.pop(job.request_id, None)  # look at it again every tick until its games end
        if self.store.add_game(
            a["gameId"], GameRole.PROPOSER, a["requestId"], a["resultId"], ev["blockNumber"]
        ):
            self.emit("challenged", request=a["requestId"], game=a["gameId"], challenger=a["challenger"])

    # -- jobs ------------------------------------------------------------------------------------------------
    def advance(self) -> None:
        """Start queued runs while workers are free, collect finished runs, move every other job on."""
        for job in self.store.jobs(JobState.QUEUED):
            if self.pool.free() == 0:
                break
            self._guard("start_job", partial(self.start_job, job), request=job.request_id)
        for request_id, execution, exc in self.pool.finished():
            self.job_executed(request_id, execution, exc)
        now = self._tick_now = self.chain.now()
        for job in self.store.jobs(JobState.READY, JobState.WAITING, JobState.POSTED):
            if job.state == JobState.POSTED and now < self._quiet_until.get(job.request_id, 0):
                continue
            self._guard("advance_job", partial(self.advance_job, job), request=job.request_id)

    def start_job(self, job: JobRow) -> None:
        """Run a queued request in the pool unless it no longer needs a result."""
        status, _ = self.request_status(job.request_id)
        if status in (RequestStatus.FINALIZED, RequestStatus.CANCELLED):
            self.store.update_job(
                job.request_id, state=JobState.CLOSED, reason="served or cancelled meanwhile"
            )
            return
        request = self.store.request(job.request_id)
        model = self.models.get(request.model_id) if request is not None else None
        if request is None or model is None:
            self.store.update_job(job.request_id, state=JobState.FAILED, reason="model or request unknown")
            return
        tamper = Tamper.from_json(job.tamper) if job.tamper else None
        self.store.update_job(job.request_id, state=JobState.RUNNING, attempts=job.attempts + 1)
        self.emit("job_running", request=job.request_id)  # before submit: without workers it runs inline
        self.pool.submit(
            job.request_id, execute, model, request.input, tamper, self.deployment.params.max_steps
        )

    def job_executed(self, request_id: int, execution: Execution | None, exc: BaseException | None) -> None:
        if execution is None:
            reason = f"{type(exc).__name__}: {exc}"
            job = self.store.job(request_id)
            retry = not isinstance(exc, ExecutionError) and job is not None and job.attempts < MAX_ATTEMPTS
            state = JobState.QUEUED if retry else JobState.FAILED  # a crashed worker is retried
            self.store.update_job(request_id, state=state, reason=reason)
            self.emit("job_failed", logging.ERROR, request=request_id, reason=reason, retry=state)
            return
        claim = execution.claim
        self.store.update_job(
            request_id,
            state=JobState.READY,
            output=claim.output,
            output_hash=claim.output_hash,
            final_hash=claim.final_hash,
            steps=claim.steps,
            honest_steps=execution.steps,
        )
        self.emit(
            "job_executed",
            request=request_id,
            steps=claim.steps,
            final_hash=claim.final_hash,
            vm_seconds=f"{execution.vm_seconds:.3f}",
            honest=execution.honest,
        )

    def advance_job(self, job: JobRow) -> None:
        """Re-read the request on-chain and do what its state calls for."""
        status, result_id = self.request_status(job.request_id)
        if job.state == JobState.POSTED:
            self.advance_posted(job, status, result_id)
        elif status == RequestStatus.OPEN:
            self.post(job)
        elif status == RequestStatus.PROPOSED:
            prover = self.read_result(result_id)[0]
            if prover == self.address:  # posted before a crash: adopt it, never post twice
                self.store.update_job(job.request_id, state=JobState.POSTED, result_id=result_id)
            elif job.state != JobState.WAITING:
                self.store.update_job(job.request_id, state=JobState.WAITING)
                self.emit("job_waiting", request=job.request_id, result=result_id, prover=prover)
        else:
            self.store.update_job(
                job.request_id, state=JobState.CLOSED, reason=f"request {status_name(status)}"
            )

    def post(self, job: JobRow) -> None:
        """`postResult` with the prover bond (the request was just read as open)."""
        assert job.output is not None and job.final_hash is not None and job.steps is not None
        call = self.contracts.market.functions.postResult(
            job.request_id, job.output, job.final_hash, job.steps
        )
        receipt = self.send("post", call, value=self.deployment.params.prover_bond, request_id=job.request_id)
        (posted,) = receipt_events(self.contracts.market, "ResultPosted", receipt)
        self.store.update_job(job.request_id, state=JobState.POSTED, result_id=posted["args"]["resultId"])
        # postedAt >= the tick's chain time: no need to look before the window closes (a lower bound)
        self._quiet_until[job.request_id] = self._tick_now + self.deployment.params.challenge_window
        self.emit("posted", request=job.request_id, result=posted["args"]["resultId"])

    def advance_posted(self, job: JobRow, status: int, result_id: int) -> None:
        """Our result: finalize it after the window, or notice it was discarded."""
        if job.result_id != result_id or status == RequestStatus.OPEN:
            self.store.update_job(job.request_id, state=JobState.LOST, reason="our result was discarded")
            self.emit("result_lost", logging.WARNING, request=job.request_id, result=job.result_id)
            return
        if status == RequestStatus.FINALIZED:
            self.store.update_job(job.request_id, state=JobState.FINALIZED)
            return
        if status != RequestStatus.PROPOSED:
            self.store.update_job(
                job.request_id, state=JobState.CLOSED, reason=f"request {status_name(status)}"
            )
            return
        _, posted_at, open_games, discarded = self.read_result(result_id)
        if discarded:
            self.store.update_job(job.request_id, state=JobState.LOST, reason="our result was discarded")
            return
        closes = posted_at + self.deployment.params.challenge_window
        if open_games == 0 and self.chain.now() >= closes:
            self.finalize(job)
        elif open_games == 0:
            self._quiet_until[job.request_id] = closes

    def finalize(self, job: JobRow) -> None:
        assert job.output is not None
        call = self.contracts.market.functions.finalize(job.request_id, job.output)
        self.send("finalize", call, request_id=job.request_id)
        self.store.update_job(job.request_id, state=JobState.FINALIZED)
        self.emit("finalized", request=job.request_id, result=job.result_id)

    # -- games -----------------------------------------------------------------------------------------------
    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        trace = self.trace_for(row)
        self.check_claim(row, trace)
        return next_move(view, Role.PROPOSER, trace.hash_at, now, eager_step=self.eager_step)

    def check_claim(self, row: GameRow, trace: GameTrace) -> None:
        """Once per game: our trace must end in the claim we posted (else we defend a claim that is not
        ours; logged, played anyway). Asked lazily, not in `build_trace`: the answer needs the whole run,
        which takes minutes for a big model and runs in the trace process (`TraceBusy` until then)."""
        if row.game_id in self._claims_checked:
            return
        job = self.store.job(row.request_id)
        if job is not None and (trace.claim_steps, trace.claim_hash) != (job.steps, job.final_hash):
            self.emit("trace_mismatch", logging.ERROR, game=row.game_id, steps=trace.claim_steps)
        self._claims_checked.add(row.game_id)

    def build_trace(self, row: GameRow) -> GameTrace:
        """Our posted claim's trace, from the job's model, input and output hash (and tamper)."""
        job = self.store.job(row.request_id)
        request = self.store.request(row.request_id)
        if job is None or request is None or job.output_hash is None or job.steps is None:
            raise RuntimeError(f"game {row.game_id}: no job with a claim for request {row.request_id}")
        model = self.models.get(request.model_id)
        if model is None:
            raise RuntimeError(f"game {row.game_id}: model 0x{request.model_id.hex()} is no longer served")
        tamper = Tamper.from_json(job.tamper) if job.tamper else None
        if tamper is None:
            trace = GameTrace(
                model, request.input, job.output_hash, max_steps=job.steps, steps_hint=job.steps
            )
        else:
            cap = tamper_cap(job.honest_steps or job.steps, self.deployment.params.max_steps)
            trace = GameTrace(model, request.input, job.output_hash, tamper, True, cap, job.steps)
        return trace
