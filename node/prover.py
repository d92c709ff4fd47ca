"""The prover node: serves inference requests for the models it holds, posts results with a bond, defends
them in every game, and finalizes them after the challenge window (docs/protocol.md sections 3-5).

A job per request, in the node's SQLite store (`rollml.core.store.JobState`):

    queued -> running (worker pool: the native states of a split claim, or native run then VM run) -> ready
    ready/waiting -> posted       when the request is open (re-read on-chain first: never posted twice)
    ready -> waiting              another prover's result is pending: post if it gets discarded
    posted -> finalized           window over, no open game: `finalize(requestId, output)`
    posted -> lost                our result was discarded by a game (never reposted automatically)
    -> closed / failed            finalized for someone else or cancelled / the runtime rejects the request

Games on our results are recorded from `ResultChallenged` and played with `rollml.core.dispute.next_move` as
the proposer; the trace is re-derived from the job's model, input and posted output hash after a restart.

With `split` (the command line's default), a model's result is a split claim (docs/protocol.md, "Split
game"): the job runs every state natively (no VM) and posts `postResult(requestId, output, stateRoot,
executions, outputProof)`; its games are split games (the top level over our states, `open` at its leaf, the
node guest's VM game below). Without it (`--vm-claims`) the claim is the guest's final VM state
(`postVMResult`): a whole VM run before posting, and a game over every VM step.

`tamper` makes a dishonest node for tests and the demo (see `rollml.core.execution.Tamper`): it posts a forged
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

from rollml.agent.base import Agent
from rollml.agent.models import ModelStore
from rollml.agent.reads import receipt_events, status_name
from rollml.core.chain import Chain
from rollml.core.deploy import Deployment
from rollml.core.dispute import GameView, Move, Role, next_move
from rollml.core.execution import (
    Execution,
    ExecutionError,
    GameTrace,
    Tamper,
    TamperKind,
    execute,
    tamper_cap,
    trace_key,
)
from rollml.core.sdk import RequestStatus
from rollml.core.split import SplitTrace, split_execution, split_trace_key
from rollml.core.store import ACTIVE_JOB_STATES, GameRow, JobRow, JobState, RequestRow, Store

MAX_ATTEMPTS = 3  # runs of one request before a crashing job is given up
SKIP_REASON = "model not served"
MAX_REASON_BYTES = 256  # InferenceMarket.MAX_REASON_BYTES


VM_ONLY_TAMPERS = (TamperKind.REGISTER, TamperKind.MEMORY, TamperKind.STEPS)  # a VM state's parts


def check_tamper_fits(tamper: Tamper, split: bool) -> None:
    """A node's lie must exist in the claims it posts: a split claim has no VM state (no register, memory word
    or step count to forge), a VM claim no tensor states."""
    if split and tamper.kind in VM_ONLY_TAMPERS:
        raise ValueError(
            f"a {tamper.kind} tamper needs VM claims (--vm-claims); split claims take tensor or output"
        )
    if not split and tamper.kind == TamperKind.TENSOR:
        raise ValueError("a tensor tamper needs split claims (--split)")


class ProverNode(Agent):
    """See the module docstring. Drive it with `tick()` or `run_forever(interval)`."""

    KIND = "node"

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
        fetch_models: bool = False,
        split: bool = True,
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
        if tamper is not None:
            check_tamper_fits(tamper, split)
        self.tamper = tamper
        self.eager_step = eager_step
        self.split = split
        # request id -> chain time until which a posted, unchallenged result needs no look (its window is
        # open and only a challenge, an event, can change it): without this every tick re-read every posted
        # job (two calls each), which made a tick of a node with 200 pending results take seconds
        self._quiet_until: dict[int, int] = {}
        self._tick_now = 0  # the chain time `advance` read at the start of this tick
        self._claims_checked: set[int] = set()  # games whose trace was checked against our posted claim
        self._deferred: set[int] = set()  # requests whose posting waits for spare capacity (logged once)
        requeued = self.store.requeue_running()
        if requeued:
            self.emit("requeued_after_restart", jobs=requeued)
        for request_id in self.store.requests_without_job():  # skipped by an older version: no record kept
            self.store.skip_job(request_id, SKIP_REASON)

    # -- events ----------------------------------------------------------------------------------------------
    def watched_events(self) -> Sequence[tuple[Contract, str]]:
        market = self.contracts.market
        return [(market, "InferenceRequested"), (market, "ResultPosted"), (market, "ResultChallenged")]

    def on_new_request(self, row: RequestRow) -> None:
        if self.model(row.model_id) is None:
            if self.store.skip_job(row.request_id, SKIP_REASON):
                self.emit(
                    "request_skipped", request=row.request_id, model_id=row.model_id, reason=SKIP_REASON
                )
            return
        tamper = self.tamper.to_json() if self.tamper is not None else None
        if self.store.add_job(row.request_id, tamper):
            self.emit("job_queued", request=row.request_id)

    def take_up_skipped(self) -> None:
        """Queue the skipped requests whose model we serve now (added to --models, or fetched from its uri):
        `start_job` then checks that they still want a result (a request reopens when its result loses)."""
        tamper = self.tamper.to_json() if self.tamper is not None else None
        for mid, request_ids in self.store.skipped_by_model().items():
            if self.model(mid) is None:
                continue
            for request_id in request_ids:
                self.store.update_job(request_id, state=JobState.QUEUED, tamper=tamper, reason=None)
                self.emit("job_queued", request=request_id, reason="model now served")

    def forget_chain_state(self) -> None:
        super().forget_chain_state()
        self._quiet_until.clear()
        self._claims_checked.clear()
        self._deferred.clear()

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
        if self.store.add_game(a["gameId"], Role.PROPOSER, a["requestId"], a["resultId"], ev["blockNumber"]):
            self.emit("challenged", request=a["requestId"], game=a["gameId"], challenger=a["challenger"])

    # -- jobs ------------------------------------------------------------------------------------------------
    def advance(self) -> None:
        """Take up skipped requests whose model arrived, start queued runs while workers are free, collect
        finished runs, move every other job on."""
        self.take_up_skipped()
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
        req = self.chain.call(self.contracts.market.functions.getRequest(job.request_id))
        status, created_at = int(req[2]), int(req[1])
        if status in (RequestStatus.FINALIZED, RequestStatus.CANCELLED):
            self.store.update_job(
                job.request_id, state=JobState.CLOSED, reason="served or cancelled meanwhile"
            )
            return
        if (
            status == RequestStatus.OPEN
            and self.chain.now() >= created_at + self.deployment.params.request_timeout
        ):
            self.store.update_job(job.request_id, state=JobState.CLOSED, reason="request expired")
            return
        request = self.store.request(job.request_id)
        model = self.model(request.model_id) if request is not None else None
        if request is None or model is None:
            self.store.update_job(job.request_id, state=JobState.FAILED, reason="model or request unknown")
            return
        tamper = Tamper.from_json(job.tamper) if job.tamper else None
        self.store.update_job(job.request_id, state=JobState.RUNNING, attempts=job.attempts + 1)
        self.emit("job_running", request=job.request_id)  # before submit: without workers it runs inline
        if self.split:
            self.pool.submit(job.request_id, split_execution, model, request.input, tamper)
            return
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
            if isinstance(exc, ExecutionError):  # the request itself is at fault: tell its requester
                self._guard("report_unservable", partial(self.report_unservable, request_id, str(exc)))
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
            native_seconds=f"{execution.native_seconds:.3f}",
            honest=execution.honest,
        )

    def report_unservable(self, request_id: int, reason: str) -> None:
        """`reportUnservable`: the requester reads why we cannot serve its open request (an event only)."""
        if self.request_status(request_id)[0] != RequestStatus.OPEN:
            return
        text = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        call = self.contracts.market.functions.reportUnservable(request_id, text)
        self.responder.send("report_unservable", call, request_id=request_id)
        self.emit("reported_unservable", request=request_id, reason=text)

    def advance_job(self, job: JobRow) -> None:
        """Re-read the request on-chain and do what its state calls for."""
        status, result_id = self.request_status(job.request_id)
        if job.state == JobState.POSTED:
            self.advance_posted(job, status, result_id)
        elif status == RequestStatus.OPEN:
            if self.capacity.overloaded:  # a new result invites new games: not while we are short of time
                if job.request_id not in self._deferred:
                    self._deferred.add(job.request_id)
                    self.emit(
                        "post_deferred", logging.WARNING, request=job.request_id, **self.capacity.report()
                    )
                return
            self._deferred.discard(job.request_id)
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
        """`postResult` (split) or `postVMResult` with the prover bond (the request was just read as open)."""
        assert job.output is not None and job.final_hash is not None and job.steps is not None
        market = self.contracts.market.functions
        if self.split:  # the output's proof from our states (native, re-derived: the job keeps the root)
            claim = self.split_trace(job.request_id).claim()
            if (claim.state_root, claim.executions) != (job.final_hash, job.steps):
                raise RuntimeError(f"request {job.request_id}: our states no longer give the job's claim")
            call = market.postResult(
                job.request_id, job.output, job.final_hash, job.steps, list(claim.output_proof)
            )
        else:
            call = market.postVMResult(job.request_id, job.output, job.final_hash, job.steps)
        receipt = self.responder.send(
            "post", call, value=self.deployment.params.prover_bond, request_id=job.request_id
        )
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
        self.responder.send("finalize", call, request_id=job.request_id)
        self.store.update_job(job.request_id, state=JobState.FINALIZED)
        self.emit("finalized", request=job.request_id, result=job.result_id)

    # -- games -----------------------------------------------------------------------------------------------
    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        self.check_claim(row, self.trace_for(row))
        return next_move(view, Role.PROPOSER, self.our_hash(row, view, True), now, eager_step=self.eager_step)

    def split_trace(self, request_id: int) -> SplitTrace:
        """Our split claim's states for a request (native; with our tamper)."""
        job = self.store.job(request_id)
        request = self.store.request(request_id)
        model = self.models.get(request.model_id) if request is not None else None
        if job is None or request is None or model is None:
            raise RuntimeError(f"request {request_id}: no job, request or model")
        return SplitTrace(model, request.input, Tamper.from_json(job.tamper) if job.tamper else None)

    def check_claim(self, row: GameRow, trace: GameTrace | SplitTrace) -> None:
        """Once per game: our trace must end in the claim we posted (else we defend a claim that is not
        ours; logged, played anyway). Asked lazily, not in `build_trace`: the answer needs the whole run,
        which takes minutes for a big model and runs in the trace process (`TraceBusy` until then)."""
        if row.game_id in self._claims_checked:
            return
        job = self.store.job(row.request_id)
        if job is not None and (trace.claim_steps, trace.claim_hash) != (job.steps, job.final_hash):
            self.emit("trace_mismatch", logging.ERROR, game=row.game_id, steps=trace.claim_steps)
        self._claims_checked.add(row.game_id)

    def _claim(self, row: GameRow) -> tuple[RequestRow, JobRow, Tamper | None, int]:
        """The request, our job with its posted claim, our tamper and how far our trace runs."""
        job = self.store.job(row.request_id)
        request = self.store.request(row.request_id)
        if job is None or request is None or job.output_hash is None or job.steps is None:
            raise RuntimeError(f"game {row.game_id}: no job with a claim for request {row.request_id}")
        tamper = Tamper.from_json(job.tamper) if job.tamper else None
        max_steps = job.steps
        if tamper is not None:
            max_steps = tamper_cap(job.honest_steps or job.steps, self.deployment.params.max_steps)
        return request, job, tamper, max_steps

    def trace_key(self, row: GameRow) -> bytes:
        request, job, tamper, max_steps = self._claim(row)
        assert job.output_hash is not None
        if self.is_split(row.result_id):
            return split_trace_key(request.model_id, request.input_id, tamper)
        return trace_key(
            request.model_id, request.input_id, job.output_hash, tamper, tamper is not None, max_steps
        )

    def build_trace(self, row: GameRow) -> GameTrace | SplitTrace:
        """Our posted claim's trace, from the job's model, input and output hash (and tamper); a split
        claim's states."""
        if self.is_split(row.result_id):
            return self.split_trace(row.request_id)
        request, job, tamper, max_steps = self._claim(row)
        assert job.output_hash is not None and job.steps is not None
        model = self.model(request.model_id)
        if model is None:
            raise RuntimeError(f"game {row.game_id}: model 0x{request.model_id.hex()} is no longer served")
        return GameTrace(
            model, request.input, job.output_hash, tamper, tamper is not None, max_steps, job.steps
        )
