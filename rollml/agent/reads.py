"""Reading games and requests from the chain into what the solver and the reports need."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from web3.contract.contract import Contract
from web3.logs import DISCARD
from web3.types import EventData, TxReceipt

from mipsvm.hashing import keccak256
from mlkit.state import ExecRecord
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import Contracts
from rollml.core.dispute import GameStatus, GameView, Turn
from rollml.core.sdk import RequestStatus, game_status


def status_name(status: int) -> str:
    """The `RequestStatus` name of a status number ("Open", "Proposed", ...)."""
    try:
        return RequestStatus(status).name.title()
    except ValueError:
        return str(status)


@dataclass(frozen=True)
class OnchainGame:
    """`IDisputeGame.Game` as read, with the solver's view of it."""

    view: GameView
    proposer: str
    challenger: str
    creator: str


def read_game(
    chain: Chain,
    contracts: Contracts,
    game_id: int,
    arity: int,
    from_block: int,
    raw: Any = None,
    posted: tuple[bytes, ...] | None = None,
) -> OnchainGame:
    """The game as the solver needs it; while a pick is due, with the hashes of the last dissection (looked
    up in its event unless given). `raw` is `getGame`'s answer when the caller has it."""
    g = raw if raw is not None else chain.call(contracts.game.functions.getGame(game_id))
    lo, hi, deadline, status, turn, creator, proposer, challenger, agreed, disputed, dissection = g[:11]
    is_split, top = g[11], g[12]
    if status != GameStatus.ACTIVE or turn != Turn.PICK:
        posted = ()
    elif posted is None:
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
        top=bool(top),
        split=bool(is_split),
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

    @property
    def opened(self) -> bool:
        """Did the game reach a split game's bottom level (its `open`)?"""
        return any(t.kind == "open" for t in self.txs)

    @property
    def top_rounds(self) -> int:
        """A split game's dissections before its `open` (all of them for a VM game: one level)."""
        kinds = [t.kind for t in self.txs]
        end = kinds.index("open") if "open" in kinds else len(kinds)
        return kinds[:end].count("dissect")

    @property
    def bottom_rounds(self) -> int:
        """A split game's dissections after its `open` (none for a VM game)."""
        return self.rounds - self.top_rounds if self.opened else 0


def game_report(chain: Chain, contracts: Contracts, game_id: int, from_block: int) -> GameReport:
    """Rounds, moves and gas of game `game_id` from the game's and the market's events since `from_block`."""
    kinds = [
        (contracts.market, "ResultChallenged", "challenge"),
        (contracts.game, "Dissected", "dissect"),
        (contracts.game, "Picked", "pick"),
        (contracts.game, "Opened", "open"),
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


class GameBook:
    """The games an agent plays or watches, as last read, kept fresh by the game contract's events.

    Reading every game every tick costs O(games) calls (two for a pick: the game and its dissection's
    event), so a flood of games through a slow endpoint would make a tick outlast a move deadline. A game is
    read again only when something may have changed: an event of it arrived (`on_event`), we moved in it
    (`invalidate`), or the last read is `max_age` seconds old (a safety net). While the other side is due
    and no event came, nothing can change but the clock, and the solver needs no read to claim a timeout.
    The hashes of a dissection come with its `Dissected` event, the record a split game opened with its
    `Opened` event; after a restart they are looked up once (a log scan from the game's block, which on a
    long chain costs seconds per game).
    """

    EVENTS = ("Dissected", "Picked", "Opened", "Stepped", "GameResolved", "GameCancelled")

    def __init__(self, chain: Chain, contracts: Contracts, arity: int, max_age: float = 30.0) -> None:
        self.chain, self.contracts, self.arity, self.max_age = chain, contracts, arity, max_age
        self._games: dict[int, tuple[float, OnchainGame]] = {}  # game id -> (monotonic read time, game)
        self._posted: dict[int, tuple[int, int, tuple[bytes, ...]]] = {}  # game id -> (lo, hi, hashes)
        self._opened: dict[int, ExecRecord] = {}  # game id -> the record its `open` put at the bottom level
        self.reads = 0  # games read from the chain (statistics)

    def on_event(self, ev: EventData) -> None:
        """An event of the game contract: the game it names must be read again."""
        gid = int(ev["args"]["gameId"])
        if ev["event"] == "Dissected":
            a = ev["args"]
            self._posted[gid] = (int(a["lo"]), int(a["hi"]), tuple(bytes(h) for h in a["hashes"]))
        elif ev["event"] == "Opened":
            self._opened[gid] = ExecRecord.decode(bytes(ev["args"]["record"]))
        self._games.pop(gid, None)

    def invalidate(self, game_id: int) -> None:
        self._games.pop(game_id, None)

    def forget(self, game_id: int) -> None:
        self._games.pop(game_id, None)
        self._posted.pop(game_id, None)
        self._opened.pop(game_id, None)

    def opened(self, game_id: int, from_block: int) -> ExecRecord:
        """The record split game `game_id`'s `open` put at its bottom level: from its `Opened` event, or
        looked up once if that came before we were watching (a restart)."""
        record = self._opened.get(game_id)
        if record is None:
            evs = self.chain.events(self.contracts.game, "Opened", from_block, gameId=game_id)
            if not evs:
                raise RuntimeError(f"game {game_id} is at its bottom level but has no Opened event")
            record = self._opened[game_id] = ExecRecord.decode(bytes(evs[-1]["args"]["record"]))
        return record

    def game(self, game_id: int, from_block: int) -> OnchainGame:
        """The game as last read, or read now if it may have changed (see the class docstring)."""
        cached = self._games.get(game_id)
        if cached is not None and time.monotonic() - cached[0] < self.max_age:
            return cached[1]
        game = self._read(game_id, from_block)
        self._games[game_id] = (time.monotonic(), game)
        return game

    def _read(self, game_id: int, from_block: int) -> OnchainGame:
        g = self.chain.call(self.contracts.game.functions.getGame(game_id))
        self.reads += 1
        lo, hi, _, status, turn, *_ = g
        dissection = g[10]
        posted: tuple[bytes, ...] | None = None
        if status == GameStatus.ACTIVE and turn == Turn.PICK:
            known = self._posted.get(game_id)
            if known is not None and known[:2] == (lo, hi) and keccak256(b"".join(known[2])) == dissection:
                posted = known[2]
        return read_game(self.chain, self.contracts, game_id, self.arity, from_block, g, posted)
