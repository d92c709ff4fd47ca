"""The chain I/O shared by the prover node and the challenger: the responder to `rollml.dispute`'s solver.

As in Optimism's op-challenger, the decisions are pure (`rollml.dispute.next_move`, `watch_move`: a game
view and our trace in, a move out) and this module does the rest: read games and events into
`rollml.dispute.GameView`, send the move (loading the keccak preimage part a leaf `step` reads first),
claim timeouts, refunds, withdrawals, and keep what happened in the agent's SQLite store.

`Agent` is the event-driven state machine both agents derive from. `tick()` does one pass:

1. read the market's and the game's events since the stored cursor and record them (idempotent handlers,
   the cursor is saved only after the whole batch, so a crash replays the batch);
2. advance the agent's own work (the node's jobs, the challenger's verifications and challenges);
3. play every active game once: re-read it from the chain, ask the solver, send the move;
4. withdraw the market balance.

With worker processes (`workers > 0`, the daemons), VM runs go to a process pool and game traces to a trace
process of their own (`rollml.execution.TraceHost`): no phase ever waits for a VM. A game whose trace is
still computing the hashes (or the proof) the solver needs raises `TraceBusy` and is played again on a
later tick; every other game, job and deadline goes on meanwhile.

Every step re-reads the on-chain state before it sends a transaction, so a restart (even a kill -9 between
sending a transaction and recording it) neither repeats a move nor double-posts: the chain, not the
database, says what was done. An RPC error or a revert is logged (one `key=value` line) and the work is
retried on the next tick; it is never fatal. `run_forever(interval)` ticks until stopped.

Tests and `rollml demo` drive agents with `play_until(chain, agents, done)`; `game_report(...)` gives the
rounds, transactions and gas of one game as seen on-chain.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract, ContractFunction
from web3.logs import DISCARD
from web3.types import EventData, TxReceipt

from mipsvm.constants import KEY_TYPE_KECCAK
from mipsvm.hashing import keccak256
from mipsvm.state import State
from rollml.chain import Chain, ChainError, is_transient
from rollml.deploy import Contracts, Deployment
from rollml.dispute import (
    ClaimTimeout,
    Dissect,
    GameStatus,
    GameView,
    Move,
    Pick,
    Step,
    Turn,
    Wait,
    dissection_points,
)
from rollml.execution import GameTrace, RemoteTrace, TraceBusy, TraceHost, exit_with_parent
from rollml.sdk import RequestStatus, game_status
from rollml.store import GameRow, GameState, RequestRow, Store


def status_name(status: int) -> str:
    """The `RequestStatus` name of a status number ("Open", "Proposed", ...)."""
    try:
        return RequestStatus(status).name.title()
    except ValueError:
        return str(status)


# --------------------------------------------------------------------------------------------------------
# Logging: one key=value line per event
# --------------------------------------------------------------------------------------------------------
def _fmt(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value)
    return f'"{text}"' if not text or any(c in text for c in ' ="') else text


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log `event=<event> k=v ...` (bytes as 0x hex, values with spaces quoted): easy to grep and parse."""
    if logger.isEnabledFor(level):
        parts = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        extra = {"event": event, "fields": fields}  # for structured handlers (rollml.agentcli.JsonFormatter)
        logger.log(level, "event=%s%s", event, " " + parts if parts else "", extra=extra)


# --------------------------------------------------------------------------------------------------------
# Models and the worker pool
# --------------------------------------------------------------------------------------------------------
class ModelStore:
    """The model files an agent can run, keyed by model id (the blob id of the bytes, vm-spec section 6)."""

    def __init__(self, models: Iterable[bytes] = ()) -> None:
        self._models: dict[bytes, bytes] = {}
        for model in models:
            self.add(model)

    @classmethod
    def from_dir(cls, directory: str | Path, logger: logging.Logger | None = None) -> ModelStore:
        """Every well-formed `*.mlkit` file of `directory`, keyed by the id computed from its bytes. A file
        named `0x<model id>.mlkit` must hash to that id: a mismatch (or a malformed file) is logged and the
        file skipped, since requests name models by id only."""
        from mlkit.format import ModelFormatError, decode_model, model_id

        store = cls()
        log = logger or logging.getLogger("rollml.models")
        for path in sorted(Path(directory).glob("*.mlkit")):
            try:
                data = path.read_bytes()
            except OSError as exc:  # a directory or an unreadable file: skipped like a malformed one
                log_event(log, "model_rejected", logging.ERROR, file=path, reason=f"unreadable: {exc}")
                continue
            mid, named = model_id(data), _id_in_name(path)
            try:
                decode_model(data)
            except ModelFormatError as exc:
                log_event(log, "model_rejected", logging.ERROR, file=path, reason=f"malformed: {exc}")
                continue
            if named is not None and named != mid:
                log_event(log, "model_rejected", logging.ERROR, file=path, model_id=mid, reason="id mismatch")
                continue
            store._models[mid] = data
            log_event(log, "model_loaded", file=path, model_id=mid, bytes=len(data))
        return store

    def add(self, model: bytes) -> bytes:
        """Serve `model`; returns its id."""
        from mlkit.format import model_id

        mid = model_id(model)
        self._models[mid] = bytes(model)
        return mid

    def get(self, model_id: bytes) -> bytes | None:
        return self._models.get(bytes(model_id))

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, bytes) and model_id in self._models

    def ids(self) -> list[bytes]:
        return list(self._models)


def _id_in_name(path: Path) -> bytes | None:
    """The model id a file name states (`0x<64 hex>.mlkit`), if it states one."""
    stem = path.stem.lower().removeprefix("0x")
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
        return bytes.fromhex(stem)
    return None


class WorkerPool:
    """A bounded pool for VM runs, keyed by job: worker processes (the fast VM's SIGSEGV handler must live in
    a process's main thread), or inline in the caller when `workers == 0` (tests, one-shot runs)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: cf.ProcessPoolExecutor | None = None
        self._futures: dict[Any, cf.Future[Any]] = {}
        self._inline: dict[Any, tuple[Any, BaseException | None]] = {}

    def free(self) -> int:
        """How many more jobs may be submitted now."""
        if self.workers == 0:
            return 1
        return max(0, self.workers - len(self._futures))

    def busy(self, key: Any) -> bool:
        return key in self._futures

    def pending(self) -> int:
        """Jobs submitted whose outcome was not collected yet."""
        return len(self._futures) + len(self._inline)

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` for `key`; collect the outcome with `finished()`."""
        if self.workers == 0:
            try:
                self._inline[key] = (fn(*args), None)
            except Exception as exc:
                self._inline[key] = (None, exc)
            return
        if self._executor is None:
            context = multiprocessing.get_context("spawn")  # no forked copy of a 4 GiB VM mapping or locks
            self._executor = cf.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=exit_with_parent
            )
        self._futures[key] = self._executor.submit(fn, *args)

    def finished(self) -> list[tuple[Any, Any, BaseException | None]]:
        """(key, result, exception) of every job done since the last call."""
        out = [(k, r, e) for k, (r, e) in self._inline.items()]
        self._inline.clear()
        for key, fut in list(self._futures.items()):
            if fut.done():
                del self._futures[key]
                exc = fut.exception()
                out.append((key, None if exc else fut.result(), exc))
        return out

    def wait(self, timeout: float | None = None) -> None:
        """Block until a submitted job is done (or `timeout` seconds passed)."""
        if self._futures and not self._inline:
            cf.wait(list(self._futures.values()), timeout, return_when=cf.FIRST_COMPLETED)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._futures.clear()


# --------------------------------------------------------------------------------------------------------
# Reading the chain
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnchainGame:
    """`IDisputeGame.Game` as read, with the solver's view of it."""

    view: GameView
    proposer: str
    challenger: str
    creator: str


def read_game(chain: Chain, contracts: Contracts, game_id: int, arity: int, from_block: int) -> OnchainGame:
    """The game as the solver needs it; while a pick is due, with the hashes of the last dissection."""
    g = chain.call(contracts.game.functions.getGame(game_id))
    lo, hi, deadline, status, turn, creator, proposer, challenger, agreed, disputed, dissection = g
    posted: tuple[bytes, ...] = ()
    if status == GameStatus.ACTIVE and turn == Turn.PICK:
        posted = dissection_hashes(chain, contracts, game_id, lo, hi, bytes(dissection), from_block)
    view = GameView(
        lo=lo,
        hi=hi,
        agreed_hash=bytes(agreed),
        disputed_hash=bytes(disputed),
        turn=Turn(turn),
        deadline=deadline,
        arity=arity,
        status=GameStatus(status),
        posted=posted,
    )
    return OnchainGame(view, proposer, challenger, creator)


def dissection_hashes(
    chain: Chain, contracts: Contracts, game_id: int, lo: int, hi: int, commitment: bytes, from_block: int
) -> tuple[bytes, ...]:
    """The hashes of the dissection of [lo, hi] (from its `Dissected` event), checked against the game's
    stored keccak; ChainError if the event is not found (yet: a lagging node)."""
    for ev in reversed(chain.events(contracts.game, "Dissected", from_block, gameId=game_id)):
        if ev["args"]["lo"] == lo and ev["args"]["hi"] == hi:
            hashes = tuple(bytes(h) for h in ev["args"]["hashes"])
            if keccak256(b"".join(hashes)) == commitment:
                return hashes
    raise ChainError(f"no Dissected event of game {game_id} over [{lo}, {hi}] matches the commitment")


def receipt_events(contract: Contract, event: str, receipt: TxReceipt) -> list[EventData]:
    """The `event` logs of `contract` in a receipt (other logs ignored)."""
    return list(contract.events[event]().process_receipt(receipt, errors=DISCARD))


@dataclass(frozen=True)
class GameTx:
    kind: str  # challenge, dissect, pick, step, timeout
    sender: str
    gas: int
    tx_hash: str


@dataclass(frozen=True)
class GameReport:
    """One game as seen on-chain (every party's transactions, from the events): what the demo prints.

    Keccak preimage loads emit no event and are not included; each agent's store lists its own
    (`Store.txs(game_id=...)`, kind `load_preimage`).
    """

    game_id: int
    status: GameStatus
    by_timeout: bool
    rounds: int  # dissections posted
    txs: tuple[GameTx, ...]

    @property
    def gas(self) -> int:
        return sum(t.gas for t in self.txs)


def game_report(chain: Chain, contracts: Contracts, game_id: int, from_block: int) -> GameReport:
    """Rounds, moves and gas of game `game_id` from the game's and the market's events since `from_block`."""
    kinds = [
        (contracts.market, "ResultChallenged", "challenge"),
        (contracts.game, "Dissected", "dissect"),
        (contracts.game, "Picked", "pick"),
        (contracts.game, "Stepped", "step"),
        (contracts.game, "GameResolved", "timeout"),
    ]
    found: list[tuple[tuple[int, int], str, EventData]] = []
    by_timeout = False
    for contract, event, kind in kinds:
        for ev in chain.events(contract, event, from_block, gameId=game_id):
            if event == "GameResolved":
                by_timeout = bool(ev["args"]["byTimeout"])
                if not by_timeout:
                    continue  # resolved by the step: that transaction is already counted
            found.append(((ev["blockNumber"], ev["logIndex"]), kind, ev))
    txs = []
    for _, kind, ev in sorted(found, key=lambda f: f[0]):
        receipt = chain.w3.eth.get_transaction_receipt(ev["transactionHash"])
        txs.append(
            GameTx(kind, str(receipt["from"]), int(receipt["gasUsed"]), "0x" + ev["transactionHash"].hex())
        )
    status = game_status(chain, contracts, game_id)
    rounds = sum(1 for t in txs if t.kind == "dissect")
    return GameReport(game_id, status, by_timeout, rounds, tuple(txs))


# --------------------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------------------
def unreachable(exc: BaseException) -> bool:
    """The chain endpoint did not answer (the Chain already retried): a transport failure, not a revert."""
    cause = exc.__cause__
    return isinstance(exc, ChainError) and cause is not None and is_transient(cause)


@dataclass
class TickStats:
    """What one tick did (for logs, tests and the demo)."""

    txs: int = 0
    errors: int = 0
    seconds: float = 0.0
    moves: list[str] = field(default_factory=list)


class Agent(ABC):
    """The base of `node.prover.ProverNode` and `challenger.agent.Challenger` (see the module docstring).

    Subclasses name the events they watch (`watched_events`), handle them (`on_<EventName>`), advance their
    own work (`advance`), say which trace they play in a game (`trace_for`) and what they decide in it
    (`decide`).
    """

    ROLE = "agent"

    def __init__(
        self,
        chain: Chain,
        deployment: Deployment,
        account: LocalAccount,
        store: Store | str | Path,
        models: ModelStore | None = None,
        workers: int = 0,
        auto_withdraw: bool = True,
        logger: logging.Logger | None = None,
        confirmations: int = 0,
    ) -> None:
        self.chain = chain
        self.confirmations = confirmations  # events are handled this many blocks behind the head (reorgs)
        self.deployment = deployment
        self.contracts = deployment.contracts(chain)
        self.account = account
        self.address = account.address
        self.store = store if isinstance(store, Store) else Store(store)
        self.store.bind(deployment.chain_id, deployment.market, self.ROLE, account.address)
        self.models = models if models is not None else ModelStore()
        self.pool = WorkerPool(workers)
        self.auto_withdraw = auto_withdraw
        self.log = logger or logging.getLogger(f"rollml.{self.ROLE}")
        self.traces: dict[int, GameTrace] = {}
        # with worker processes, game traces live in a process of their own too: building one for a big
        # model takes minutes, and the tick (every other game's moves and deadlines) must not wait for it
        self.trace_host = TraceHost() if workers > 0 else None
        self._stats = TickStats()
        self._unreachable = False

    # -- the loop --------------------------------------------------------------------------------------------
    def tick(self) -> TickStats:
        """One pass (see the module docstring). Errors are logged per phase and retried next tick."""
        self._stats = TickStats()
        t0 = time.perf_counter()
        for phase in (self.sync_events, self.advance, self.play_games, self.withdraw):
            if not self._guard(phase.__name__, phase) and self._unreachable:
                break  # the endpoint is down: the other phases would only wait out their retries too
        self._stats.seconds = time.perf_counter() - t0
        return self._stats

    def run_forever(self, interval: float = 2.0, stop: threading.Event | None = None) -> None:
        """Tick every `interval` seconds until `stop` is set (or KeyboardInterrupt)."""
        stop = stop or threading.Event()
        self.emit("started", address=self.address, market=self.deployment.market, db=self.store.path)
        try:
            while not stop.is_set():
                self.tick()
                stop.wait(interval)
        except KeyboardInterrupt:
            self.emit("interrupted")
        finally:
            self.close()
            self.emit("stopped")

    def close(self) -> None:
        """Stop the worker pool and the trace process and free the traces (the store stays usable)."""
        self.pool.close()
        for trace in self.traces.values():
            trace.close()
        self.traces.clear()
        if self.trace_host is not None:
            self.trace_host.close()

    def emit(self, event: str, level: int = logging.INFO, **fields: object) -> None:
        """Log one event of this agent (`agent=<address prefix>` first: several agents may share a log)."""
        log_event(self.log, event, level, agent=self.address[:10], **fields)

    def busy(self) -> bool:
        """Work in progress that will lead to transactions without any clock moving (runs in the pool or
        the trace process)."""
        return self.pool.pending() > 0 or (self.trace_host is not None and self.trace_host.pending() > 0)

    def _guard(self, what: str, fn: Callable[[], Any], **context: object) -> bool:
        """Run `fn`; log and swallow any error (retried next tick). True if it succeeded."""
        self._unreachable = False
        try:
            fn()
            return True
        except Exception as exc:
            self._stats.errors += 1
            self._unreachable = unreachable(exc)
            level = logging.WARNING if isinstance(exc, ChainError) else logging.ERROR
            self.emit("error", level, during=what, error=f"{type(exc).__name__}: {exc}", **context)
            self.log.debug("traceback", exc_info=True)
            return False

    # -- events ----------------------------------------------------------------------------------------------
    def watched_events(self) -> Sequence[tuple[Contract, str]]:
        """(contract, event name) pairs this agent reacts to, handled by `on_<event name>`."""
        return [(self.contracts.market, "InferenceRequested")]

    def sync_events(self) -> None:
        """Handle the events of the blocks after the cursor, in chain order, then move the cursor."""
        start = self.store.cursor(self.deployment.block - 1) + 1
        head = self.chain.block_number() - self.confirmations
        if head < start:
            return
        batch: list[EventData] = []
        for contract, name in self.watched_events():
            batch.extend(self.chain.events(contract, name, start, head))
        batch.sort(key=lambda ev: (ev["blockNumber"], ev["logIndex"]))
        for ev in batch:
            getattr(self, f"on_{ev['event']}")(ev)
        self.store.set_cursor(head)

    def on_InferenceRequested(self, ev: EventData) -> None:
        a = ev["args"]
        row = RequestRow(
            request_id=a["requestId"],
            model_id=bytes(a["modelId"]),
            input_id=bytes(a["inputId"]),
            input=bytes(a["input"]),
            requester=a["requester"],
            callback_gas=a["callbackGasLimit"],
            block=ev["blockNumber"],
        )
        if self.store.add_request(row):
            self.emit("request_seen", request=row.request_id, model_id=row.model_id, bytes=len(row.input))
            self.on_new_request(row)

    def on_new_request(self, row: RequestRow) -> None:  # noqa: B027 (an optional hook: only the node acts)
        """A request seen for the first time (the node queues a job)."""

    # -- own work --------------------------------------------------------------------------------------------
    @abstractmethod
    def advance(self) -> None:
        """Advance the agent's own work (the node's jobs, the challenger's verifications)."""

    # -- transactions ----------------------------------------------------------------------------------------
    def send(
        self,
        kind: str,
        call: ContractFunction,
        value: int = 0,
        request_id: int | None = None,
        game_id: int | None = None,
    ) -> TxReceipt:
        """Send a transaction, record it (kind, gas; a game's move count) and log it."""
        receipt = self.chain.transact(self.account, call, value=value)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        gas = int(receipt["gasUsed"])
        self.store.add_tx(tx_hash, kind, gas, int(receipt["blockNumber"]), request_id, game_id)
        self._stats.txs += 1
        self._stats.moves.append(kind)
        fields: dict[str, object] = {"kind": kind, "tx": tx_hash, "gas": gas}
        if request_id is not None:
            fields["request"] = request_id
        if game_id is not None:
            fields["game"] = game_id
        self.emit("tx", logging.INFO, **fields)
        return receipt

    def request_status(self, request_id: int) -> tuple[int, int]:
        """(status, current result id) of a request on-chain."""
        req = self.chain.call(self.contracts.market.functions.getRequest(request_id))
        return int(req[2]), int(req[8])

    def read_result(self, result_id: int) -> tuple[str, int, int, bool]:
        """(prover, postedAt, openGames, discarded) of a result on-chain."""
        r = self.chain.call(self.contracts.market.functions.getResult(result_id))
        return str(r[0]), int(r[1]), int(r[2]), bool(r[7])

    def withdraw(self) -> None:
        """Withdraw our market balance (payouts are pull payments)."""
        if not self.auto_withdraw:
            return
        balance = int(self.chain.call(self.contracts.market.functions.balanceOf(self.address)))
        if balance > 0:
            self.send("withdraw", self.contracts.market.functions.withdraw())
            self.emit("withdrawn", wei=balance)

    # -- games -----------------------------------------------------------------------------------------------
    def play_games(self) -> None:
        """Play every active game once (one move at most each)."""
        now = self.chain.now()
        for row in self.store.games(GameState.ACTIVE):
            self._guard("play_game", partial(self.play_game, row, now), game=row.game_id)

    def play_game(self, row: GameRow, now: int) -> None:
        """Re-read the game, record its end, or ask the solver and send its move."""
        game = read_game(self.chain, self.contracts, row.game_id, self.deployment.arity, row.block)
        if game.view.status != GameStatus.ACTIVE:
            self.close_game(row, game.view.status)
            return
        if self.before_move(row, game):
            return
        try:
            move = self.decide(row, game.view, now)
            self.send_move(row, move)  # a step asks the trace for its proof before sending anything
        except TraceBusy:
            self.trace_busy(row, game.view)
            return
        if isinstance(move, Step | ClaimTimeout):  # moves that end the game: record the end at once
            status = game_status(self.chain, self.contracts, row.game_id)
            if status != GameStatus.ACTIVE:
                self.close_game(row, status)

    def before_move(self, row: GameRow, game: OnchainGame) -> bool:
        """A hook before deciding (the challenger's refunds); True if it acted instead of moving."""
        return False

    @abstractmethod
    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        """Our next move in a game (each agent asks `rollml.dispute` in its own role)."""

    def trace_busy(self, row: GameRow, view: GameView) -> None:
        """Our trace process is still computing what the solver needs (the first query builds the trace):
        ask at once for every hash of this round, so the next tick can answer in one go."""
        trace = self.traces.get(row.game_id)
        if isinstance(trace, RemoteTrace):
            n = view.hi - view.lo
            trace.prefetch(dissection_points(view.lo, view.hi, view.arity) if n > 1 else [view.lo, view.hi])
        self.emit("trace_busy", logging.DEBUG, game=row.game_id)

    def trace_for(self, row: GameRow) -> GameTrace:
        """The trace we play in game `row` (one per game and process, re-derived after a restart). It is
        lazy: its first query builds it, in the trace process when the agent has one (`TraceBusy` until
        the answer is there)."""
        trace = self.traces.get(row.game_id)
        if trace is None:
            trace = self.build_trace(row)
            if self.trace_host is not None:
                trace = RemoteTrace(self.trace_host, row.game_id, trace)
            self.traces[row.game_id] = trace
            self.emit("trace_ready", game=row.game_id, role=row.role)
        return trace

    @abstractmethod
    def build_trace(self, row: GameRow) -> GameTrace:
        """The trace we play in a game: its model, input and claimed output hash, with our tamper if any."""

    def send_move(self, row: GameRow, move: Move) -> None:
        """Send what the solver decided (nothing for `Wait`)."""
        gid, rid = row.game_id, row.request_id
        game = self.contracts.game.functions
        if isinstance(move, Wait):
            if row.last_move != "wait":
                self.emit("waiting", logging.DEBUG, game=gid, reason=move.reason)
            return
        if isinstance(move, Dissect):
            self.send("dissect", game.dissect(gid, list(move.hashes)), request_id=rid, game_id=gid)
        elif isinstance(move, Pick):
            self.send("pick", game.pick(gid, list(move.hashes), move.index), request_id=rid, game_id=gid)
        elif isinstance(move, Step):
            self.step_leaf(row, move.pre_step)
        elif isinstance(move, ClaimTimeout):
            self.send("timeout", game.claimTimeout(gid), request_id=rid, game_id=gid)

    def step_leaf(self, row: GameRow, pre_step: int) -> None:
        """Execute the leaf on-chain: load the keccak preimage part the step reads (if any), then `step`."""
        trace = self.trace_for(row)
        proof = trace.proof_at(pre_step)
        if proof.part is not None:
            self.ensure_preimage_part(row, State.decode(proof.pre_state), trace)
        call = self.contracts.game.functions.step(row.game_id, proof.pre_state, proof.proof)
        self.send("step", call, request_id=row.request_id, game_id=row.game_id)

    def ensure_preimage_part(self, row: GameRow, pre: State, trace: GameTrace) -> None:
        """Load the part of the selected keccak key's stream that a read step needs, unless the oracle has
        it. Local keys need nothing: the game writes its own local data when it steps."""
        key = pre.preimage_key
        if key[0] != KEY_TYPE_KECCAK or self.part_loaded(key, pre.preimage_offset):
            return
        data = trace.preimage(key)
        offset = pre.preimage_offset if pre.preimage_offset < 8 + len(data) else 0  # past the end: the length
        call = self.contracts.oracle.functions.loadKeccak256PreimagePart(offset, data)
        self.send("load_preimage", call, request_id=row.request_id, game_id=row.game_id)

    def part_loaded(self, key: bytes, offset: int) -> bool:
        try:
            self.chain.call(self.contracts.oracle.functions.readPreimage(key, offset))
            return True
        except ChainError as exc:
            if exc.error_name == "PreimageNotLoaded":
                return False
            raise

    def close_game(self, row: GameRow, status: GameStatus) -> None:
        """Record how a game ended and free its trace."""
        state = self.outcome(row, status)
        self.store.update_game(row.game_id, state=state)
        trace = self.traces.pop(row.game_id, None)
        if trace is not None:
            trace.close()
        level = logging.INFO if state != GameState.LOST else logging.WARNING
        self.emit("game_over", level, game=row.game_id, role=row.role, status=status.name, outcome=state)

    def outcome(self, row: GameRow, status: GameStatus) -> GameState:
        """Won or lost, from our side (a watcher's side is the truth's; overridden)."""
        if status == GameStatus.CANCELLED:
            return GameState.CANCELLED
        proposer_won = status == GameStatus.PROPOSER_WON
        return GameState.WON if proposer_won == (row.role == "proposer") else GameState.LOST

    def game_summary(self, game_id: int) -> dict[str, object]:
        """Our side of one game: role, outcome, our moves and gas (for the demo and the logs)."""
        row = self.store.game(game_id)
        if row is None:
            raise KeyError(f"game {game_id} is not ours")
        txs = self.store.txs(game_id=game_id)
        return {
            "game": game_id,
            "role": str(row.role),
            "state": str(row.state),
            "moves": row.moves,
            "gas": row.gas,
            "txs": [{"kind": t.kind, "gas": t.gas_used, "tx": t.tx_hash} for t in txs],
        }


# --------------------------------------------------------------------------------------------------------
# Driving agents (tests, `rollml demo`)
# --------------------------------------------------------------------------------------------------------
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
