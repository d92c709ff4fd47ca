"""Verifiable training: the rules of `TrainingRun.sol` in Python, the work of an update, and the client.

A run trains an mlkit training graph (docs/model-format.md, "Training graphs"; `mlkit.train`) in updates of
`k` SGD steps. An update is the guest run "graph on (state, batches)", so the worker's claim and the
fraud-proofer's check are the inference ones (`rollml.core.execution.execute` / `verify`) and a dispute is an
ordinary VM game. The contract names the run's input from content ids and derives the output from the posted
state; `input_id`, `output_hash` and `state_template_ok` here are those rules (the contract's `inputIdOf`,
`_outputOf`, `_template`), and the tests hold both sides to each other. See docs/protocol.md section 7.

    client = TrainingClient(chain, deployment, account)
    run_id = client.create_run(plan)                 # a `RunPlan`: graph id, initial state, batch ids, terms
    client.take_lease(run_id); client.post_update(run_id, work)   # `work = compute_update(...)`
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract
from web3.types import TxReceipt

from mipsvm.constants import CHUNK
from mipsvm.hashing import keccak256
from mipsvm.preimage import PreimageCorrupt, PreimageMissing, PreimageStore
from mlkit import train
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import Contracts, Deployment
from rollml.core.execution import Claim, Execution, Tamper, Verification, execute, verify

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class TrainingInputError(ValueError):
    """A run, batch or state that cannot be used, said in one line (nothing was sent)."""


# --------------------------------------------------------------------------------------------------------
# The contract's rules
# --------------------------------------------------------------------------------------------------------
def input_id(state: bytes, batch_ids: list[bytes]) -> bytes:
    """`TrainingRun.inputIdOf`: the blob id of an update's input from the state's chunk keys and batch ids."""
    return train.input_id(train.state_keys(state), batch_ids)


def output_hash(state: bytes, records_end: int, n_outputs: int, loss_bits: bytes) -> bytes:
    """keccak256 of `TrainingRun._outputOf`: what the claim of an update posting `state` binds."""
    return keccak256(train.output_of(state, records_end, n_outputs, loss_bits))


def template_hash(state: bytes, ranges: list[tuple[int, int]]) -> bytes:
    """`TrainingRun._template`: keccak256 of `state` with the (offset, length) ranges zeroed."""
    t = bytearray(state)
    for off, n in ranges:
        t[off : off + n] = bytes(n)
    return keccak256(bytes(t))


def loss_of(loss_bits: bytes | int) -> float:
    """The f32 loss from its bits (bytes big-endian, or the contract's uint32)."""
    raw = loss_bits if isinstance(loss_bits, bytes) else int(loss_bits).to_bytes(4, "big")
    return float(struct.unpack(">f", raw)[0])


# --------------------------------------------------------------------------------------------------------
# Datasets: batch chunks by id
# --------------------------------------------------------------------------------------------------------
def put_batches(store: PreimageStore, chunks: list[bytes]) -> list[bytes]:
    """Store batch chunks; their ids (keccak keys)."""
    return [store.put(c) for c in chunks]


def resolve_batches(store: PreimageStore, ids: list[bytes]) -> list[bytes]:
    """The batch chunks of `ids` (TrainingInputError naming the first id that does not resolve)."""
    out = []
    for i, bid in enumerate(ids):
        try:
            chunk = store.get(bid)
        except (PreimageMissing, PreimageCorrupt, OSError):
            raise TrainingInputError(
                f"batch {i} (0x{bid.hex()}) does not resolve in the dataset store"
            ) from None
        if len(chunk) != CHUNK:
            raise TrainingInputError(
                f"batch {i} (0x{bid.hex()}) is {len(chunk)} bytes, not one {CHUNK}-byte chunk"
            )
        out.append(chunk)
    return out


# --------------------------------------------------------------------------------------------------------
# The work of an update
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UpdateWork:
    """A computed update: what is posted (state, loss, claim) and the run that produced it."""

    index: int
    state: bytes  # the new state posted
    loss_bits: bytes
    claim: Claim
    execution: Execution

    @property
    def honest(self) -> bool:
        return self.execution.honest

    @property
    def loss(self) -> float:
        return loss_of(self.loss_bits)


def compute_update(
    graph: bytes,
    state: bytes,
    batches: list[bytes],
    records_end: int,
    index: int,
    tamper: Tamper | None = None,
    max_steps: int | None = None,
) -> UpdateWork:
    """Run update `index` (natively, then the VM run that binds it) from `state` on `batches`; with an
    OUTPUT tamper, the wrong update a dishonest worker posts (other weights, a forged VALID claim)."""
    ex = execute(graph, state + b"".join(batches), tamper, max_steps)
    posted = ex.claim.output if ex.claim.output is not None else ex.output
    new_state, loss_bits = train.next_state(state, posted, records_end)
    return UpdateWork(index, new_state, loss_bits, ex.claim, ex)


def check_update(
    graph: bytes,
    state: bytes,
    batches: list[bytes],
    posted_state: bytes,
    loss_bits: bytes,
    final_hash: bytes,
    steps: int,
    records_end: int,
    n_outputs: int,
    max_steps: int | None = None,
) -> Verification:
    """A fraud-proofer's check of a posted update: the contract's derived claim, verified by re-execution."""
    claim = Claim(output_hash(posted_state, records_end, n_outputs, loss_bits), final_hash, steps)
    return verify(graph, state + b"".join(batches), claim, max_steps)


# --------------------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """`TrainingRun.Config`."""

    architecture: bytes
    steps_per_update: int
    state_records_end: int
    n_outputs: int
    batch_size: int
    lr_bits: int
    momentum_bits: int
    challenge_window: int
    lease_duration: int
    max_steps: int
    reward_per_update: int
    worker_deposit: int
    challenger_bond: int

    def as_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)

    @classmethod
    def from_tuple(cls, t: Any) -> RunConfig:
        return cls(bytes(t[0]), *(int(v) for v in t[1:]))


@dataclass(frozen=True)
class RunInfo:
    """`TrainingRun.Run`."""

    run_id: int
    creator: str
    closed: bool
    state_chunks: int
    updates: int
    accepted: int
    lease_holder: str
    lease_expires: int
    pending_update: int
    final_model_id: bytes
    reward_left: int
    cfg: RunConfig

    @property
    def finished(self) -> bool:
        return self.closed or self.accepted >= self.updates


@dataclass(frozen=True)
class UpdateInfo:
    """`TrainingRun.Update`."""

    update_id: int
    worker: str
    run_id: int
    index: int
    posted_at: int
    steps: int
    open_games: int
    loss_bits: int
    discarded: bool
    accepted: bool
    input_id: bytes
    output_hash: bytes
    final_hash: bytes
    state_id: bytes


@dataclass(frozen=True)
class RunPlan:
    """Everything `createRun` takes, prepared off-chain (`plan_run`)."""

    spec: train.MLPSpec
    graph: bytes
    architecture: bytes
    initial_state: bytes
    batch_ids: list[bytes]
    model_template: bytes
    model_ranges: list[tuple[int, int, int]]
    reward_per_update: int
    worker_deposit: int
    challenger_bond: int
    challenge_window: int
    lease_duration: int
    max_steps: int = 2**40

    @property
    def updates(self) -> int:
        return len(self.batch_ids) // self.spec.steps

    def config(self) -> RunConfig:
        s = self.spec
        return RunConfig(
            self.architecture,
            s.steps,
            s.records_end,
            s.n_outputs,
            s.batch,
            int.from_bytes(struct.pack(">f", s.lr), "big"),
            int.from_bytes(struct.pack(">f", s.momentum), "big"),
            self.challenge_window,
            self.lease_duration,
            self.max_steps,
            self.reward_per_update,
            self.worker_deposit,
            self.challenger_bond,
        )

    def layout(self) -> tuple[list[int], list[int], bytes]:
        flat_state = [v for r in self.spec.state_ranges for v in r]
        flat_model = [v for r in self.model_ranges for v in r]
        return flat_state, flat_model, self.model_template


def plan_run(
    spec: train.MLPSpec,
    params: list[Any],
    batch_ids: list[bytes],
    reward_per_update: int,
    worker_deposit: int,
    challenger_bond: int,
    challenge_window: int,
    lease_duration: int,
) -> RunPlan:
    """A run of `spec` from `params` over `batch_ids` (`spec.steps` per update)."""
    if not batch_ids or len(batch_ids) % spec.steps:
        raise TrainingInputError(f"the dataset must be a positive multiple of {spec.steps} batches")
    from mlkit.format import model_id

    graph = spec.training_graph()
    model = spec.inference_model(params)  # any parameters: the template zeroes them
    ranges = spec.model_ranges(model)
    return RunPlan(
        spec,
        graph,
        model_id(graph),
        spec.encode_state(params),
        list(batch_ids),
        template_hash(model, [(mo, n) for mo, _, n in ranges]),
        ranges,
        reward_per_update,
        worker_deposit,
        challenger_bond,
        challenge_window,
        lease_duration,
    )


# --------------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------------
@dataclass
class TrainingClient:
    """Transactions and reads of the `TrainingRun` contract for one account."""

    chain: Chain
    deployment: Deployment
    account: LocalAccount
    contracts: Contracts = field(init=False)
    training: Contract = field(init=False)

    def __post_init__(self) -> None:
        self.contracts = self.deployment.contracts(self.chain)
        if self.contracts.training is None:
            raise ChainError(
                "this deployment has no TrainingRun contract (it predates training runs): deploy again"
            )
        self.training = self.contracts.training

    @property
    def fn(self) -> Any:
        return self.training.functions

    def _send(self, call: Any, value: int = 0) -> TxReceipt:
        return self.chain.transact(self.account, call, value=value)

    # -- transactions ------------------------------------------------------------------------------------
    def create_run(self, plan: RunPlan) -> int:
        """`createRun` funded with `reward * updates`; the run id."""
        value = plan.reward_per_update * plan.updates
        call = self.fn.createRun(plan.config().as_tuple(), plan.layout(), plan.initial_state, plan.batch_ids)
        receipt = self._send(call, value)
        ev = self.training.events.RunCreated().process_receipt(receipt)
        return int(ev[0]["args"]["runId"])

    def take_lease(self, run_id: int) -> TxReceipt:
        return self._send(self.fn.takeLease(run_id), self.run(run_id).cfg.worker_deposit)

    def post_update(self, run_id: int, work: UpdateWork) -> int:
        c = work.claim
        call = self.fn.postUpdate(
            run_id, work.index, work.state, int.from_bytes(work.loss_bits, "big"), c.final_hash, c.steps
        )
        receipt = self._send(call)
        return int(self.training.events.UpdatePosted().process_receipt(receipt)[0]["args"]["updateId"])

    def challenge(self, update_id: int) -> int:
        run = self.run(self.update(update_id).run_id)
        receipt = self._send(self.fn.challenge(update_id), run.cfg.challenger_bond)
        return int(self.training.events.UpdateChallenged().process_receipt(receipt)[0]["args"]["gameId"])

    def finalize(self, update_id: int) -> TxReceipt:
        return self._send(self.fn.finalize(update_id))

    def register(self, run_id: int, model: bytes, name: str, uri: str = "") -> bytes:
        """Register the run's trained model (`model`: `spec.inference_model(final params)`); its model id."""
        from rollml.core.deploy import _shapes

        ins, outs = _shapes(model)
        receipt = self._send(self.fn.register(run_id, model, self.state(run_id), (name, ins, outs, uri)))
        ev = self.training.events.RunRegistered().process_receipt(receipt)
        return bytes(ev[0]["args"]["modelId"])

    def withdraw(self) -> int:
        amount = self.balance()
        if amount:
            self._send(self.fn.withdraw())
        return amount

    # -- reads -------------------------------------------------------------------------------------------
    def balance(self, address: str | None = None) -> int:
        return int(self.chain.call(self.fn.balanceOf(address or self.account.address)))

    def run_count(self) -> int:
        return int(self.chain.call(self.fn.runCount()))

    def run(self, run_id: int) -> RunInfo:
        r = self.chain.call(self.fn.getRun(run_id))
        if r[0] == ZERO_ADDRESS:
            raise TrainingInputError(f"no training run {run_id}")
        return RunInfo(
            run_id,
            r[0],
            bool(r[1]),
            int(r[2]),
            int(r[3]),
            int(r[4]),
            r[5],
            int(r[6]),
            int(r[7]),
            bytes(r[10]),
            int(r[11]),
            RunConfig.from_tuple(r[12]),
        )

    def update(self, update_id: int) -> UpdateInfo:
        u = self.chain.call(self.fn.getUpdate(update_id))
        if u[0] == ZERO_ADDRESS:
            raise TrainingInputError(f"no update {update_id}")
        return UpdateInfo(
            update_id,
            u[0],
            int(u[1]),
            int(u[2]),
            int(u[3]),
            int(u[4]),
            int(u[5]),
            int(u[6]),
            bool(u[7]),
            bool(u[8]),
            bytes(u[9]),
            bytes(u[10]),
            bytes(u[11]),
            bytes(u[12]),
        )

    def batch_ids(self, run_id: int) -> list[bytes]:
        return [bytes(b) for b in self.chain.call(self.fn.batchIdsOf(run_id))]

    def _events(self, name: str, **filters: Any) -> list[Any]:
        return self.chain.events(self.training, name, self.deployment.block, **filters)

    def posted_state(self, update_id: int) -> bytes:
        """The state an update posted (from its `UpdatePosted` event)."""
        evs = self._events("UpdatePosted", updateId=update_id)
        if not evs:
            raise TrainingInputError(f"no UpdatePosted event for update {update_id}")
        return bytes(evs[0]["args"]["state"])

    def state_before(self, run_id: int, index: int) -> bytes:
        """The state update `index` starts from: the initial state, or the accepted update `index - 1`'s."""
        if index == 0:
            evs = self._events("RunCreated", runId=run_id)
            if not evs:
                raise TrainingInputError(f"no RunCreated event for run {run_id}")
            return bytes(evs[0]["args"]["state"])
        for ev in self._events("UpdateAccepted", runId=run_id):
            if int(ev["args"]["index"]) == index - 1:
                return self.posted_state(int(ev["args"]["updateId"]))
        raise TrainingInputError(f"run {run_id}: update {index - 1} is not accepted")

    def state(self, run_id: int) -> bytes:
        """The run's current (last accepted) state."""
        return self.state_before(run_id, self.run(run_id).accepted)

    def update_batches(self, run_id: int, index: int, store: PreimageStore) -> list[bytes]:
        k = self.run(run_id).cfg.steps_per_update
        return resolve_batches(store, self.batch_ids(run_id)[index * k : (index + 1) * k])

    def losses(self, run_id: int) -> list[float]:
        """The loss of every accepted update, in order."""
        return [loss_of(ev["args"]["lossBits"]) for ev in self._events("UpdateAccepted", runId=run_id)]

    def status(self, run_id: int) -> dict[str, Any]:
        """A report of a run: progress, lease, pending update, losses, games, payouts."""
        run = self.run(run_id)
        now = self.chain.now()
        discarded = self._events("UpdateDiscarded", runId=run_id)
        losses = self.losses(run_id)
        return {
            "run": run_id,
            "architecture": "0x" + run.cfg.architecture.hex(),
            "updates": run.updates,
            "accepted": run.accepted,
            "wrong_updates_caught": len(discarded),
            "lease": (
                {"holder": run.lease_holder, "expires_in": max(0, run.lease_expires - now)}
                if run.lease_holder != ZERO_ADDRESS
                else None
            ),
            "pending_update": run.pending_update or None,
            "last_loss": losses[-1] if losses else None,
            "losses": losses,
            "reward_left_wei": run.reward_left,
            "closed": run.closed,
            "final_model_id": "0x" + run.final_model_id.hex() if any(run.final_model_id) else None,
        }


def dataset_store(path: str | Path) -> PreimageStore:
    """The directory store of batch chunks (a `PreimageStore`: files named by key)."""
    return PreimageStore(path)
