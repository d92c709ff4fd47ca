"""The agent loop shared by the prover node and the challenger.

As in Optimism's op-challenger, the decisions are pure (`rollml.core.dispute.next_move`, `watch_move`: a game
view and our trace in, a move out), the responder (`rollml.agent.responder`) sends them, and this module is
the event-driven state machine around both. `tick()` does one pass:

1. read the market's and the game's events since the stored cursor and record them (idempotent handlers,
   the cursor is saved only after the whole batch, so a crash replays the batch);
2. advance the agent's own work (the node's jobs, the challenger's verifications and challenges);
3. play every active game once: re-read it from the chain, ask the solver, hand the move to the responder;
4. withdraw the market balance.

With worker processes (`workers > 0`, the daemons), VM runs go to a process pool and game traces to a trace
process of their own (`rollml.agent.traces`): no phase ever waits for a VM. A game whose trace is still
computing the hashes (or the proof) the solver needs raises `TraceBusy` and is played again on a later tick;
every other game, job and deadline goes on meanwhile.

Every step re-reads the on-chain state before it sends a transaction, so a restart (even a kill -9 between
sending a transaction and recording it) neither repeats a move nor double-posts: the chain, not the
database, says what was done. An RPC error or a revert is logged (one `key=value` line) and the work is
retried on the next tick; it is never fatal. `run_forever(interval)` ticks until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract
from web3.types import EventData

from rollml.agent.capacity import Capacity
from rollml.agent.logs import log_event
from rollml.agent.models import ModelFetchError, ModelStore, fetch_model
from rollml.agent.pool import WorkerPool
from rollml.agent.reads import GameBook, OnchainGame
from rollml.agent.responder import Responder
from rollml.agent.traces import URGENT, RemoteTrace, TraceBusy, TraceHost
from rollml.core.chain import Chain, ChainError, is_transient
from rollml.core.deploy import Deployment
from rollml.core.dispute import ClaimTimeout, GameStatus, GameView, Move, Step, Wait, dissection_points
from rollml.core.execution import GameTrace
from rollml.core.sdk import game_status
from rollml.core.split import SplitTrace
from rollml.core.store import GameRow, GameState, RequestRow, Store


def unreachable(exc: BaseException) -> bool:
    """The chain endpoint did not answer (the Chain already retried): a transport failure, not a revert."""
    cause = exc.__cause__
    return isinstance(exc, ChainError) and cause is not None and is_transient(cause)


GAME_MOVES = ("dissect", "pick", "step", "timeout", "load_preimage")
MODEL_SCAN_EVERY = 5.0  # seconds between looks at the model directory for new files
FETCH_RETRY = 300.0  # seconds before a model that could not be fetched from its uri is tried again
CAPACITY_LOG_EVERY = 60.0  # seconds between `capacity` lines while games are active


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

    KIND = "agent"

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
        fetch_models: bool = False,
    ) -> None:
        self.chain = chain
        self.fetch_models = fetch_models  # fetch a model not served from its registered uri (verified)
        self._models_scanned = 0.0
        self._fetch_after: dict[bytes, float] = {}  # model id -> monotonic time of the next fetch attempt
        self._fetching: dict[bytes, threading.Thread] = {}  # fetches in progress
        self.last_tick: float | None = None  # wall time the last tick ended (health)
        self.last_tick_ok = False  # it reached the chain
        self.listeners: list[Callable[[str, dict[str, object]], None]] = []  # see `emit`
        self.tick_listeners: list[Callable[[TickStats], None]] = []  # called after every tick
        self.confirmations = confirmations  # events are handled this many blocks behind the head (reorgs)
        self.deployment = deployment
        self.contracts = deployment.contracts(chain)
        self.account = account
        self.address = account.address
        self.store = store if isinstance(store, Store) else Store(store)
        self.store.bind(deployment.chain_id, deployment.market, self.KIND, account.address)
        self.models = models if models is not None else ModelStore()
        self.pool = WorkerPool(workers)
        self.auto_withdraw = auto_withdraw
        self.log = logger or logging.getLogger(f"rollml.{self.KIND}")
        # traces by claim (`rollml.core.execution.trace_key`): games that dispute the same claim share one
        self.traces: dict[bytes, GameTrace | SplitTrace] = {}
        self._trace_of: dict[int, bytes] = {}  # game id -> trace key
        # with worker processes, game traces live in a process of their own too: building one for a big
        # model takes minutes, and the tick (every other game's moves and deadlines) must not wait for it
        self.trace_host = TraceHost() if workers > 0 else None
        self.book = GameBook(chain, self.contracts, deployment.arity)
        self._urgency = URGENT  # the deadline of the game being played: its trace queries' priority
        self.capacity = Capacity(move_timeout=deployment.move_timeout)
        self._busy_seen = 0.0  # the trace process's busy seconds already counted
        self._games_started = 0.0
        self._stock_logged = 0.0
        self._stats = TickStats()
        self._unreachable = False
        self._split_results: dict[int, bool] = {}  # result id -> posted as a split claim
        self.responder = Responder(chain, self.contracts, account, self.store, self.emit, self._count_tx)

    # -- the loop --------------------------------------------------------------------------------------------
    def tick(self) -> TickStats:
        """One pass (see the module docstring). Errors are logged per phase and retried next tick."""
        self._stats = TickStats()
        t0 = time.perf_counter()
        reached = True
        for phase in (self.refresh_models, self.sync_events, self.advance, self.play_games, self.withdraw):
            if not self._guard(phase.__name__, phase) and self._unreachable:
                reached = False
                break  # the endpoint is down: the other phases would only wait out their retries too
        self._stats.seconds = time.perf_counter() - t0
        self.last_tick, self.last_tick_ok = time.time(), reached
        for listener in self.tick_listeners:
            listener(self._stats)
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
        self._trace_of.clear()
        if self.trace_host is not None:
            self.trace_host.close()

    def _count_tx(self, kind: str) -> None:
        self._stats.txs += 1
        self._stats.moves.append(kind)

    def emit(self, event: str, level: int = logging.INFO, **fields: object) -> None:
        """Log one event of this agent (`agent=<address prefix>` first: several agents may share a log) and
        hand it to the listeners (the metrics)."""
        log_event(self.log, event, level, agent=self.address[:10], **fields)
        for listener in self.listeners:
            listener(event, fields)

    def busy(self) -> bool:
        """Work in progress that will lead to transactions without any clock moving (runs in the pool or
        the trace process)."""
        return (
            self.pool.pending() > 0
            or (self.trace_host is not None and self.trace_host.pending() > 0)
            or bool(self._fetching)
        )

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
        """Handle the events of the blocks after the cursor, in chain order, then move the cursor (with the
        hash of its block: a chain reset or reorg under us is found and rewound first, `check_fork`)."""
        head = self.chain.block_number() - self.confirmations
        self.check_fork(head)
        start = self.store.cursor(self.deployment.block - 1) + 1
        if head < start:
            return
        batch: list[EventData] = []
        for contract, name in self.watched_events():
            batch.extend(self.chain.events(contract, name, start, head))
        for name in GameBook.EVENTS:  # what keeps the game book fresh without reading every game
            for ev in self.chain.events(self.contracts.game, name, start, head):
                self.book.on_event(ev)
        batch.sort(key=lambda ev: (ev["blockNumber"], ev["logIndex"]))
        for ev in batch:
            getattr(self, f"on_{ev['event']}")(ev)
        self.store.set_cursor(head, self.chain.block_hash(head))

    def check_fork(self, head: int) -> None:
        """The chain under us must still hold the blocks we read: when its head fell below our cursor (a
        reset devnet) or the cursor's block has another hash now (a reorg), say so and rewind the store to
        the newest block we remember that the chain still has (the deployment's block when none is left),
        so the events after it are read again. A reset chain without our market is a clear error."""
        cursor = self.store.cursor(self.deployment.block - 1)
        if cursor < self.deployment.block:
            return
        remembered = self.store.block_hashes()
        if head >= cursor and (not remembered or remembered[0][0] != cursor):
            return  # a store of an older version: no hash to compare (the next cursor has one)
        if head >= cursor and self.chain.block_hash(cursor) == remembered[0][1]:
            return
        fork = self.deployment.block - 1
        for number, block_hash in remembered:
            if number <= head and self.chain.block_hash(number) == block_hash:
                fork = number
                break
        why = "reset" if head < cursor else "reorg"
        self.emit("chain_reset", logging.WARNING, kind=why, cursor=cursor, head=head, resync_from=fork + 1)
        if not self.chain.code_at(self.deployment.market):
            raise ChainError(
                f"the chain was {why} and has no market at {self.deployment.market}: redeploy, or pass the"
                " new --deployment"
            )
        dropped = self.store.rewind(fork)
        self.forget_chain_state()
        self.emit("resynced", from_block=fork + 1, **dropped)

    def forget_chain_state(self) -> None:
        """Drop what this process cached from the chain (games, traces, nonces): after a rewind it may be
        gone."""
        self.chain.forget_nonces()
        self.book = GameBook(self.chain, self.contracts, self.deployment.arity)
        for trace in self.traces.values():
            trace.close()
        self.traces.clear()
        self._trace_of.clear()

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

    # -- models ----------------------------------------------------------------------------------------------
    def refresh_models(self, force: bool = False) -> None:
        """Load the model files added to the model directory since the last look (every MODEL_SCAN_EVERY
        seconds): requests skipped and results left unverified for want of them are taken up again."""
        if not force and time.monotonic() - self._models_scanned < MODEL_SCAN_EVERY:
            return
        self._models_scanned = time.monotonic()
        for mid in self.models.refresh():
            self._fetch_after.pop(mid, None)
            self.emit("model_added", model_id=mid)

    def model(self, model_id: bytes) -> bytes | None:
        """The model file of `model_id` if we serve it. Otherwise, with `fetch_models`, a fetch from the uri
        it was registered with starts in a thread of its own (a slow or huge download must not hold up the
        tick: games have deadlines); the bytes, verified against the id, are served and kept in the model
        directory once there, and the skipped work is taken up on a later tick. A failed fetch is logged and
        tried again after FETCH_RETRY seconds."""
        data = self.models.get(model_id)
        if data is not None or not self.fetch_models or model_id in self._fetching:
            return data
        if time.monotonic() < self._fetch_after.get(model_id, 0.0):
            return None
        self._fetch_after[model_id] = time.monotonic() + FETCH_RETRY
        registry = self.contracts.registry.functions
        if not self.chain.call(registry.isRegistered(model_id)):
            return None
        uri = str(self.chain.call(registry.getModel(model_id))[6])
        if not uri:
            return None
        thread = threading.Thread(
            target=self._fetch, args=(model_id, uri), name=f"fetch-{model_id.hex()[:8]}", daemon=True
        )
        self._fetching[model_id] = thread
        thread.start()
        return None

    def _fetch(self, model_id: bytes, uri: str) -> None:
        try:
            data = fetch_model(uri, model_id)
            self.models.save(data)
            self.emit("model_fetched", model_id=model_id, uri=uri, bytes=len(data))
        except (ModelFetchError, OSError) as exc:
            self.emit("model_fetch_failed", logging.WARNING, model_id=model_id, uri=uri, reason=str(exc))
        finally:
            self._fetching.pop(model_id, None)

    def on_new_request(self, row: RequestRow) -> None:  # noqa: B027 (an optional hook: only the node acts)
        """A request seen for the first time (the node queues a job)."""

    # -- own work --------------------------------------------------------------------------------------------
    @abstractmethod
    def advance(self) -> None:
        """Advance the agent's own work (the node's jobs, the challenger's verifications)."""

    # -- chain reads -----------------------------------------------------------------------------------------
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
            self.responder.send("withdraw", self.contracts.market.functions.withdraw())
            self.emit("withdrawn", wei=balance)

    # -- games -----------------------------------------------------------------------------------------------
    def play_games(self) -> None:
        """Play every active game once (one move at most each), the earliest deadline first, then take stock
        of our capacity."""
        now = self.chain.now()
        self._games_started = time.perf_counter()
        games: list[tuple[GameRow, OnchainGame]] = []
        for row in self.store.games(GameState.ACTIVE):

            def read(row: GameRow = row) -> None:
                games.append((row, self.book.game(row.game_id, row.block)))

            self._guard("read_game", read, game=row.game_id)
        games.sort(key=lambda g: (g[1].view.deadline, g[0].game_id))
        for row, game in games:
            self._guard("play_game", partial(self.play_game, row, game, now), game=row.game_id)
        self.take_stock(len(games))

    def play_game(self, row: GameRow, game: OnchainGame, now: int) -> None:
        """Record the game's end, or ask the solver and send its move."""
        if game.view.status != GameStatus.ACTIVE:
            self.close_game(row, game.view.status)
            return
        if self.before_move(row, game):
            self.book.invalidate(row.game_id)
            return
        self._urgency = game.view.deadline
        try:
            move = self.decide(row, game.view, now)
            self.send_move(row, move)  # a step asks the trace for its proof before sending anything
        except TraceBusy:
            self.trace_busy(row, game.view)
            return
        except Exception:
            self.book.invalidate(row.game_id)  # a revert: the game may not be what we read
            raise
        finally:
            self._urgency = URGENT
        if isinstance(move, Wait):
            return
        self.book.invalidate(row.game_id)
        if isinstance(move, Step | ClaimTimeout):  # moves that end the game: record the end at once
            status = game_status(self.chain, self.contracts, row.game_id)
            if status != GameStatus.ACTIVE:
                self.close_game(row, status)

    def take_stock(self, games: int) -> None:
        """Measure this tick's dispute work and say when capacity runs low (see `rollml.agent.capacity`)."""
        cap = self.capacity
        was_overloaded = cap.overloaded
        if self.trace_host is not None:
            self.trace_host.collect()
            work = self.trace_host.busy_seconds - self._busy_seen
            self._busy_seen = self.trace_host.busy_seconds
            cap.oldest_wait = self.trace_host.oldest_wait()
        else:  # traces run inline: the tick's game phase is the work
            work = time.perf_counter() - self._games_started
        moves = sum(1 for kind in self._stats.moves if kind in GAME_MOVES)
        cap.record(work, moves)
        cap.games, cap.traces = games, len(self.traces)
        if cap.overloaded and not was_overloaded:
            self.emit("capacity_low", logging.WARNING, **cap.report())
        elif was_overloaded and not cap.overloaded:
            self.emit("capacity_ok", logging.INFO, **cap.report())
        elif time.monotonic() - self._stock_logged > CAPACITY_LOG_EVERY and games:
            self.emit("capacity", logging.INFO, **cap.report())
        else:
            return
        self._stock_logged = time.monotonic()

    def before_move(self, row: GameRow, game: OnchainGame) -> bool:
        """A hook before deciding (the challenger's refunds); True if it acted instead of moving."""
        return False

    @abstractmethod
    def decide(self, row: GameRow, view: GameView, now: int) -> Move:
        """Our next move in a game (each agent asks `rollml.core.dispute` in its own role)."""

    def trace_busy(self, row: GameRow, view: GameView) -> None:
        """Our trace process is still computing what the solver needs (the first query builds the trace):
        ask at once for every hash of this round, so the next tick can answer in one go."""
        trace = self.traces.get(self._trace_of.get(row.game_id, b""))
        if isinstance(trace, RemoteTrace):
            n = view.hi - view.lo
            trace.deadline = view.deadline
            trace.prefetch(dissection_points(view.lo, view.hi, view.arity) if n > 1 else [view.lo, view.hi])
        self.emit("trace_busy", logging.DEBUG, game=row.game_id)

    def is_split(self, result_id: int) -> bool:
        """Was result `result_id` posted as a split claim (`Result.split`; fixed once posted)."""
        known = self._split_results.get(result_id)
        if known is None:
            r = self.chain.call(self.contracts.market.functions.getResult(result_id))
            known = self._split_results[result_id] = bool(r[9])
        return known

    def our_hash(self, row: GameRow, view: GameView, proposer: bool) -> Callable[[int], bytes]:
        """The solver's hash function in game `row`: a whole-run trace's, or a split claim's at the game's
        level (the roots of our states at the top, the node guest's run of the opened record below)."""
        trace = self.trace_for(row)
        if isinstance(trace, SplitTrace):
            record = None if view.top else self.book.opened(row.game_id, row.block)
            return trace.hashes(view, record, proposer)
        return trace.hash_at

    def trace_for(self, row: GameRow) -> GameTrace | SplitTrace:
        """The trace we play in game `row`, shared with every game of ours on the same claim (re-derived
        after a restart). It is lazy: its first query builds it, in the trace process when the agent has one
        (`TraceBusy` until the answer is there); queries carry the deadline of the game being played."""
        key = self._trace_of.get(row.game_id)
        if key is None:
            key = self._trace_of[row.game_id] = self.trace_key(row)
        trace = self.traces.get(key)
        if trace is None:
            trace = self.build_trace(row)
            if self.trace_host is not None and isinstance(trace, GameTrace):  # split traces run no VM run
                trace = RemoteTrace(self.trace_host, key, trace)
            self.traces[key] = trace
            self.emit("trace_ready", game=row.game_id, role=row.role, trace=key[:8])
        if isinstance(trace, RemoteTrace):
            trace.deadline = self._urgency
        return trace

    @abstractmethod
    def trace_key(self, row: GameRow) -> bytes:
        """The claim a game disputes, as `rollml.core.execution.trace_key` (games with equal keys share a
        trace)."""

    @abstractmethod
    def build_trace(self, row: GameRow) -> GameTrace | SplitTrace:
        """The trace we play in a game: its model, input and claimed output hash, with our tamper if any."""

    def send_move(self, row: GameRow, move: Move) -> None:
        """Hand the solver's move to the responder (a hook: the fault campaign's liars add to it)."""
        self.responder.respond(row, move, lambda: self.trace_for(row))

    def close_game(self, row: GameRow, status: GameStatus) -> None:
        """Record how a game ended and free its trace."""
        state = self.outcome(row, status)
        self.store.update_game(row.game_id, state=state)
        self.book.forget(row.game_id)
        key = self._trace_of.pop(row.game_id, None)
        if key is not None and key not in self._trace_of.values():  # the last game on that claim
            trace = self.traces.pop(key, None)
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
