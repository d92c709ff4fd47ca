"""The agents' state in SQLite: requests seen, the node's jobs, posted results, games, transactions and the
event cursor with the hashes of its recent blocks (a reorg or a reset chain is found with them and rewound:
`rewind`).

One file per agent (node or challenger). Every write commits at once (autocommit, WAL), so a kill -9 loses
at most the step in progress; the agents re-read the chain before every transaction, so redoing that step
never double-posts (see rollml/agent/). The file is bound to one deployment (chain id and market address):
opening it for another one raises `StoreError` instead of mixing two chains' ids.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rollml.core.dispute import Role

SCHEMA_VERSION = 1
RECENT_BLOCKS = 256  # cursor positions whose hashes are kept (how deep a reorg is rewound precisely)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id INTEGER PRIMARY KEY,
    model_id BLOB NOT NULL,
    input_id BLOB NOT NULL,
    input BLOB NOT NULL,
    requester TEXT NOT NULL,
    callback_gas INTEGER NOT NULL,
    block INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    request_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    output BLOB,
    output_hash BLOB,
    final_hash BLOB,
    steps INTEGER,
    honest_steps INTEGER,
    result_id INTEGER,
    tamper TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    result_id INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL,
    prover TEXT NOT NULL,
    output_hash BLOB NOT NULL,
    final_hash BLOB NOT NULL,
    steps INTEGER NOT NULL,
    output BLOB NOT NULL,
    block INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT,
    handled INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS games (
    game_id INTEGER PRIMARY KEY,
    role TEXT NOT NULL,
    request_id INTEGER NOT NULL,
    result_id INTEGER NOT NULL,
    block INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_move TEXT,
    moves INTEGER NOT NULL DEFAULT 0,
    gas INTEGER NOT NULL DEFAULT 0,
    tamper TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    request_id INTEGER,
    game_id INTEGER,
    gas_used INTEGER NOT NULL,
    block INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE INDEX IF NOT EXISTS games_by_state ON games(state);
CREATE INDEX IF NOT EXISTS txs_by_game ON txs(game_id);
"""


class StoreError(ValueError):
    """The database belongs to another deployment, or has a schema this code does not know."""


class JobState(StrEnum):
    """A node's job for one request."""

    SKIPPED = "skipped"  # not served for now (model not served): queued when the model arrives
    QUEUED = "queued"  # to execute
    RUNNING = "running"  # in the worker pool (back to queued after a restart)
    READY = "ready"  # executed: the claim is known, to post when the request is open
    WAITING = "waiting"  # another prover's result is pending; we post if it is discarded
    POSTED = "posted"  # our result is pending (window, games)
    FINALIZED = "finalized"  # our result finalized (terminal)
    LOST = "lost"  # our result was discarded by a game (terminal: never reposted automatically)
    CLOSED = "closed"  # finalized for another prover, or cancelled (terminal)
    FAILED = "failed"  # cannot be served: the runtime rejects it, or the VM disagrees (terminal)


ACTIVE_JOB_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.READY, JobState.WAITING, JobState.POSTED)


class Verdict(StrEnum):
    """A challenger's verdict on a posted result."""

    PENDING = "pending"  # not verified yet
    CORRECT = "correct"
    WRONG = "wrong"
    UNVERIFIABLE = "unverifiable"  # not verifiable for now (model or request missing): retried while open
    UNKNOWN = "unknown"  # cannot verify (malformed input, settled, window over unverified): never challenged


class GameState(StrEnum):
    ACTIVE = "active"
    WON = "won"  # the side we play (or, watching, the truthful side) won
    LOST = "lost"
    CANCELLED = "cancelled"  # the result was discarded by another game (bond refunded)
    ENDED = "ended"  # a watched game on a result we could not verify


@dataclass(frozen=True)
class RequestRow:
    request_id: int
    model_id: bytes
    input_id: bytes
    input: bytes
    requester: str
    callback_gas: int
    block: int


@dataclass(frozen=True)
class JobRow:
    request_id: int
    state: JobState
    output: bytes | None
    output_hash: bytes | None
    final_hash: bytes | None
    steps: int | None
    honest_steps: int | None
    result_id: int | None
    tamper: str | None
    reason: str | None
    attempts: int  # runs started (a crashed worker is retried a few times)


@dataclass(frozen=True)
class ResultRow:
    result_id: int
    request_id: int
    prover: str
    output_hash: bytes
    final_hash: bytes
    steps: int
    output: bytes
    block: int
    verdict: Verdict
    reason: str | None
    handled: bool  # the challenger is done with it: challenged, or nothing to do (correct, window closed)


@dataclass(frozen=True)
class GameRow:
    game_id: int
    role: Role
    request_id: int
    result_id: int
    block: int
    state: GameState
    last_move: str | None
    moves: int
    gas: int
    tamper: str | None


@dataclass(frozen=True)
class TxRow:
    tx_hash: str
    kind: str
    request_id: int | None
    game_id: int | None
    gas_used: int
    block: int


class Store:
    """SQLite state of one agent (see the module docstring). `path=":memory:"` for throwaway use."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: schema version {version}, this code knows {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several writes that land together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta and the cursor ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def bind(self, chain_id: int, market: str, role: str, account: str) -> None:
        """Tie the file to one deployment, agent kind and account; StoreError when it belongs to another."""
        want = {"chain_id": str(chain_id), "market": market.lower(), "role": role, "account": account.lower()}
        for key, value in want.items():
            have = self.get_meta(key)
            if have is None:
                self.set_meta(key, value)
            elif have != value:
                raise StoreError(
                    f"{self.path} belongs to {key} {have}, not {value}: use another --db for this deployment"
                )

    def cursor(self, default: int) -> int:
        """The last block whose events were fully processed (`default` before the first pass)."""
        value = self.get_meta("cursor")
        return default if value is None else int(value)

    def set_cursor(self, block: int, block_hash: bytes | None = None) -> None:
        """Move the cursor to `block`, remembering its hash (the last RECENT_BLOCKS of them: what a reorg
        is detected and rewound with)."""
        with self.transaction():
            self.set_meta("cursor", str(block))
            if block_hash is not None:
                self.db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?)", (block, block_hash))
                self.db.execute("DELETE FROM blocks WHERE number <= ?", (block - RECENT_BLOCKS,))

    def block_hashes(self) -> list[tuple[int, bytes]]:
        """(number, hash) of the cursor positions remembered, the newest first."""
        rows = self.db.execute("SELECT number, hash FROM blocks ORDER BY number DESC").fetchall()
        return [(int(r["number"]), bytes(r["hash"])) for r in rows]

    def rewind(self, block: int) -> dict[str, int]:
        """Forget everything the chain said after `block` (a reorg or a reset chain replaced it): requests,
        results and games seen in later blocks and our transactions mined in them; a job whose posting was
        mined later is ready to post again. The cursor goes back to `block`. Returns what was dropped."""
        later = (block,)
        with self.transaction():
            reposts = self.db.execute(
                "UPDATE jobs SET state = ?, result_id = NULL, updated_at = ? WHERE request_id IN"
                " (SELECT request_id FROM txs WHERE kind = 'post' AND block > ?) AND output IS NOT NULL",
                (JobState.READY, time.time(), block),
            ).rowcount
            dropped = {
                "jobs": self.db.execute(
                    "DELETE FROM jobs WHERE request_id IN (SELECT request_id FROM requests WHERE block > ?)",
                    later,
                ).rowcount,
                "requests": self.db.execute("DELETE FROM requests WHERE block > ?", later).rowcount,
                "results": self.db.execute("DELETE FROM results WHERE block > ?", later).rowcount,
                "games": self.db.execute("DELETE FROM games WHERE block > ?", later).rowcount,
                "txs": self.db.execute("DELETE FROM txs WHERE block > ?", later).rowcount,
                "reposts": reposts,
            }
            self.db.execute("DELETE FROM blocks WHERE number > ?", later)
            self.set_meta("cursor", str(block))
        return dropped

    # -- requests --------------------------------------------------------------------------------------------
    def add_request(self, row: RequestRow) -> bool:
        """Record a request (idempotent); True if it is new."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.request_id,
                row.model_id,
                row.input_id,
                row.input,
                row.requester,
                row.callback_gas,
                row.block,
            ),
        )
        return cur.rowcount == 1

    def request(self, request_id: int) -> RequestRow | None:
        row = self.db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else RequestRow(**dict(row))

    # -- jobs (node) -----------------------------------------------------------------------------------------
    def add_job(self, request_id: int, tamper: str | None = None) -> bool:
        """Queue a job for a request (idempotent); True if it is new."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO jobs (request_id, state, tamper, updated_at) VALUES (?, ?, ?, ?)",
            (request_id, JobState.QUEUED, tamper, time.time()),
        )
        return cur.rowcount == 1

    def skip_job(self, request_id: int, reason: str) -> bool:
        """Record a request we do not serve for now (idempotent); True if it is new."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO jobs (request_id, state, reason, updated_at) VALUES (?, ?, ?, ?)",
            (request_id, JobState.SKIPPED, reason, time.time()),
        )
        return cur.rowcount == 1

    def skipped_by_model(self) -> dict[bytes, list[int]]:
        """The skipped jobs' request ids by model id."""
        rows = self.db.execute(
            "SELECT r.model_id AS model_id, j.request_id AS request_id FROM jobs j JOIN requests r"
            " ON r.request_id = j.request_id WHERE j.state = ? ORDER BY j.request_id",
            (JobState.SKIPPED,),
        ).fetchall()
        out: dict[bytes, list[int]] = {}
        for r in rows:
            out.setdefault(bytes(r["model_id"]), []).append(int(r["request_id"]))
        return out

    def requests_without_job(self) -> list[int]:
        """Requests seen with no job (skipped by a node of an older version, which kept no record)."""
        rows = self.db.execute(
            "SELECT request_id FROM requests WHERE request_id NOT IN (SELECT request_id FROM jobs)"
            " ORDER BY request_id"
        ).fetchall()
        return [int(r["request_id"]) for r in rows]

    def job(self, request_id: int) -> JobRow | None:
        row = self.db.execute("SELECT * FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else _job(row)

    def jobs(self, *states: JobState) -> list[JobRow]:
        """Jobs in any of `states` (all jobs without states), oldest request first."""
        if not states:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY request_id").fetchall()
        else:
            marks = ",".join("?" * len(states))
            rows = self.db.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY request_id", [str(s) for s in states]
            ).fetchall()
        return [_job(r) for r in rows]

    def job_by_result(self, result_id: int) -> JobRow | None:
        row = self.db.execute("SELECT * FROM jobs WHERE result_id = ?", (result_id,)).fetchone()
        return None if row is None else _job(row)

    def update_job(self, request_id: int, **fields: Any) -> None:
        """Set columns of a job (state, output, output_hash, final_hash, steps, result_id, reason, ...)."""
        _update(self.db, "jobs", "request_id", request_id, fields)

    def requeue_running(self) -> int:
        """After a restart the pool is gone: running jobs run again. Returns how many."""
        cur = self.db.execute(
            "UPDATE jobs SET state = ?, updated_at = ? WHERE state = ?",
            (JobState.QUEUED, time.time(), JobState.RUNNING),
        )
        return cur.rowcount

    # -- results (challenger) --------------------------------------------------------------------------------
    def add_result(self, row: ResultRow) -> bool:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO results (result_id, request_id, prover, output_hash, final_hash, steps,"
            " output, block, verdict, reason, handled, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (
                row.result_id,
                row.request_id,
                row.prover,
                row.output_hash,
                row.final_hash,
                row.steps,
                row.output,
                row.block,
                row.verdict,
                row.reason,
                time.time(),
            ),
        )
        return cur.rowcount == 1

    def result(self, result_id: int) -> ResultRow | None:
        row = self.db.execute("SELECT * FROM results WHERE result_id = ?", (result_id,)).fetchone()
        return None if row is None else _result(row)

    def results(self, *verdicts: Verdict, handled: bool | None = None) -> list[ResultRow]:
        """Results with any of `verdicts`, optionally only (un)handled ones, oldest first."""
        marks = ",".join("?" * len(verdicts))
        query, args = f"SELECT * FROM results WHERE verdict IN ({marks})", [str(v) for v in verdicts]
        if handled is not None:
            query, args = query + " AND handled = ?", [*args, str(int(handled))]
        return [_result(r) for r in self.db.execute(query + " ORDER BY result_id", args).fetchall()]

    def retry_unverified(self, reasons: tuple[str, ...]) -> int:
        """Results an older version gave up as unknown for one of `reasons` (a model or request missing)
        become unverifiable again, to be retried while their window is open. Returns how many."""
        marks = ",".join("?" * len(reasons))
        cur = self.db.execute(
            "UPDATE results SET verdict = ?, handled = 0, updated_at = ?"
            f" WHERE verdict = ? AND reason IN ({marks})",
            (Verdict.UNVERIFIABLE, time.time(), Verdict.UNKNOWN, *reasons),
        )
        return cur.rowcount

    def counts(self, table: str, column: str) -> dict[str, int]:
        """How many rows of `table` (jobs, results, games) have each value of `column` (state, verdict)."""
        if (table, column) not in (("jobs", "state"), ("results", "verdict"), ("games", "state")):
            raise ValueError(f"no counts of {table}.{column}")
        rows = self.db.execute(f"SELECT {column} AS k, COUNT(*) AS n FROM {table} GROUP BY {column}")
        return {str(r["k"]): int(r["n"]) for r in rows.fetchall()}

    def set_verdict(self, result_id: int, verdict: Verdict, reason: str) -> None:
        _update(self.db, "results", "result_id", result_id, {"verdict": verdict, "reason": reason})

    def set_handled(self, result_id: int, reason: str | None = None) -> None:
        fields: dict[str, Any] = {"handled": 1}
        if reason is not None:
            fields["reason"] = reason
        _update(self.db, "results", "result_id", result_id, fields)

    # -- games -----------------------------------------------------------------------------------------------
    def add_game(
        self,
        game_id: int,
        role: Role,
        request_id: int,
        result_id: int,
        block: int,
        tamper: str | None = None,
    ) -> bool:
        """Record a game we play or watch (idempotent); True if it is new."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO games (game_id, role, request_id, result_id, block, state, tamper,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (game_id, role, request_id, result_id, block, GameState.ACTIVE, tamper, time.time()),
        )
        return cur.rowcount == 1

    def game(self, game_id: int) -> GameRow | None:
        row = self.db.execute("SELECT * FROM games WHERE game_id = ?", (game_id,)).fetchone()
        return None if row is None else _game(row)

    def games(self, *states: GameState) -> list[GameRow]:
        """Games in any of `states` (all games without states), oldest first."""
        if not states:
            rows = self.db.execute("SELECT * FROM games ORDER BY game_id").fetchall()
        else:
            marks = ",".join("?" * len(states))
            rows = self.db.execute(
                f"SELECT * FROM games WHERE state IN ({marks}) ORDER BY game_id", [str(s) for s in states]
            ).fetchall()
        return [_game(r) for r in rows]

    def update_game(self, game_id: int, **fields: Any) -> None:
        _update(self.db, "games", "game_id", game_id, fields)

    # -- transactions ----------------------------------------------------------------------------------------
    def add_tx(
        self, tx_hash: str, kind: str, gas_used: int, block: int, request_id: int | None, game_id: int | None
    ) -> None:
        """Record a mined transaction of ours; a game's move count and gas are kept up to date with it."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO txs (tx_hash, kind, request_id, game_id, gas_used, block, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tx_hash, kind, request_id, game_id, gas_used, block, time.time()),
            )
            if game_id is not None:
                self.db.execute(
                    "UPDATE games SET moves = moves + 1, gas = gas + ?, last_move = ?, updated_at = ?"
                    " WHERE game_id = ?",
                    (gas_used, kind, time.time(), game_id),
                )

    def attach_tx(self, tx_hash: str, game_id: int) -> None:
        """Count a recorded transaction towards the game it created (a challenge learns its game id after)."""
        with self.transaction():
            row = self.db.execute(
                "SELECT gas_used, game_id FROM txs WHERE tx_hash = ?", (tx_hash,)
            ).fetchone()
            if row is None or row["game_id"] is not None:
                return
            self.db.execute("UPDATE txs SET game_id = ? WHERE tx_hash = ?", (game_id, tx_hash))
            self.db.execute(
                "UPDATE games SET moves = moves + 1, gas = gas + ?, updated_at = ? WHERE game_id = ?",
                (row["gas_used"], time.time(), game_id),
            )

    def txs(self, game_id: int | None = None, request_id: int | None = None) -> list[TxRow]:
        """Our transactions, of one game or one request (all without arguments), in order."""
        query, args = "SELECT tx_hash, kind, request_id, game_id, gas_used, block FROM txs", []
        if game_id is not None:
            query, args = query + " WHERE game_id = ?", [game_id]
        elif request_id is not None:
            query, args = query + " WHERE request_id = ?", [request_id]
        return [TxRow(**dict(r)) for r in self.db.execute(query + " ORDER BY id", args).fetchall()]


def _update(db: sqlite3.Connection, table: str, key: str, value: int, fields: dict[str, Any]) -> None:
    if not fields:
        return
    fields = {**fields, "updated_at": time.time()}
    columns = ", ".join(f"{name} = ?" for name in fields)
    db.execute(f"UPDATE {table} SET {columns} WHERE {key} = ?", [*fields.values(), value])


def _job(row: sqlite3.Row) -> JobRow:
    data = dict(row)
    data.pop("updated_at")
    data["state"] = JobState(data["state"])
    return JobRow(**data)


def _result(row: sqlite3.Row) -> ResultRow:
    data = dict(row)
    data.pop("updated_at")
    data["verdict"] = Verdict(data["verdict"])
    data["handled"] = bool(data["handled"])
    return ResultRow(**data)


def _game(row: sqlite3.Row) -> GameRow:
    data = dict(row)
    data.pop("updated_at")
    data["role"] = Role(data["role"])
    data["state"] = GameState(data["state"])
    return GameRow(**data)
