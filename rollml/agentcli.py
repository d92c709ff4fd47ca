"""The agent commands of the `rollml` CLI: run a prover node or a challenger against a chain.

    rollml node --rpc URL --key KEYFILE [--models DIR] [--deployment FILE] [--db FILE] [--workers N]
    rollml challenger --rpc URL --key KEYFILE [--models DIR] [--deployment FILE] [--db FILE] [--workers N]

Both run until Ctrl-C / SIGTERM (or one pass with `--once`), logging one `key=value` line per event on
stderr (`--log-json`: one JSON object per line). The state lives in the SQLite file `--db` (default
`out/<node|challenger>-<address>.db`); restarting with the same file resumes every job and game.

`--models DIR` holds the `*.mlkit` files served (node) or used to verify (challenger), keyed by their model
id; by default the reference models `rollml devnet` registered (the model cache). `--deployment` defaults to
`out/devnet.json`, the file `rollml devnet` writes.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlkit.cli import CliError
from rollml.chaincli import DeploymentOpt, KeyOpt, PasswordEnvOpt, RpcOpt, connect, errors_as_lines, load_key

if TYPE_CHECKING:
    from rollml.agent import Agent, ModelStore
    from rollml.store import Store

DEFAULT_DEPLOYMENT = Path("out/devnet.json")

ModelsOpt = Annotated[
    Path | None, typer.Option("--models", help="Directory of *.mlkit model files (default: the model cache).")
]
DbOpt = Annotated[
    Path | None, typer.Option("--db", help="SQLite state file (default: out/<role>-<address>.db).")
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers", min=0, help="VM worker processes, plus one process for dispute traces (0: all inline)."
    ),
]
IntervalOpt = Annotated[float, typer.Option("--interval", min=0.0, help="Seconds between passes.")]
OnceOpt = Annotated[bool, typer.Option("--once", help="Do one pass and exit.")]
LogJsonOpt = Annotated[bool, typer.Option("--log-json", help="Log one JSON object per line.")]
ConfirmationsOpt = Annotated[
    int, typer.Option("--confirmations", min=0, help="Handle events this many blocks behind the head.")
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also log debug lines (waits, tracebacks).")
]
TamperOpt = Annotated[
    str | None,
    typer.Option(
        "--dishonest", hidden=True, help="Testing only: output|register|memory|steps (see execution)."
    ),
]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, and the event's fields when it has them."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data["event"] = getattr(record, "event", None)
            data.update({k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in fields.items()})
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(as_json: bool, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(fmt))
    root = logging.getLogger("rollml")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def load_models(directory: Path | None) -> ModelStore:
    from mlkit import models
    from rollml.agent import ModelStore

    path = directory if directory is not None else models.cache_dir()
    if not path.is_dir():
        raise CliError(f"no model directory {path}: pass --models DIR with *.mlkit files")
    store = ModelStore.from_dir(path)
    if not store.ids():
        raise CliError(f"no *.mlkit files in {path}")
    return store


def run_agent(agent: Agent, interval: float, once: bool) -> None:
    """One tick, or ticks until SIGINT/SIGTERM (the pass in progress finishes first)."""
    if once:
        try:
            stats = agent.tick()
        finally:
            agent.close()
        print(json.dumps({"txs": stats.txs, "errors": stats.errors, "moves": stats.moves}))
        return
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run_forever(interval, stop)


def open_store(path: Path) -> Store:
    from rollml.store import Store, StoreError

    try:
        return Store(path)
    except (StoreError, sqlite3.Error) as exc:
        raise CliError(f"{path}: {exc}") from None


def default_db(role: str, address: str) -> Path:
    return Path("out") / f"{role}-{address[:10].lower()}.db"


def node_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    models: ModelsOpt = None,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    db: DbOpt = None,
    workers: WorkersOpt = 1,
    interval: IntervalOpt = 2.0,
    once: OnceOpt = False,
    confirmations: ConfirmationsOpt = 0,
    password_env: PasswordEnvOpt = None,
    log_json: LogJsonOpt = False,
    verbose: VerboseOpt = False,
    dishonest: TamperOpt = None,
) -> None:
    """Run a prover node: serve requests for the models in --models, post results with a bond, defend them
    in every dispute, finalize them after the challenge window, withdraw the earnings."""
    from node.prover import ProverNode
    from rollml.deploy import Deployment
    from rollml.execution import Tamper, TamperKind

    configure_logging(log_json, verbose)
    with errors_as_lines():
        account = load_key(key, password_env)
        served = load_models(models)
        chain = connect(rpc)
        dep = Deployment.load(deployment)
        tamper = Tamper(TamperKind(dishonest)) if dishonest else None
        path = db or default_db("node", account.address)
        store = open_store(path)
        agent = ProverNode(
            chain, dep, account, store, served, workers=workers, tamper=tamper, confirmations=confirmations
        )
    run_agent(agent, interval, once)


def challenger_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    models: ModelsOpt = None,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    db: DbOpt = None,
    workers: WorkersOpt = 1,
    interval: IntervalOpt = 2.0,
    once: OnceOpt = False,
    confirmations: ConfirmationsOpt = 0,
    password_env: PasswordEnvOpt = None,
    no_watch: Annotated[bool, typer.Option("--no-watch", help="Do not watch other parties' games.")] = False,
    log_json: LogJsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a challenger: verify every posted result, challenge wrong ones with a bond and play each dispute
    to the end, and claim the timeouts of stalling liars in other games."""
    from challenger.agent import Challenger
    from rollml.deploy import Deployment

    configure_logging(log_json, verbose)
    with errors_as_lines():
        account = load_key(key, password_env)
        known = load_models(models)
        chain = connect(rpc)
        dep = Deployment.load(deployment)
        path = db or default_db("challenger", account.address)
        store = open_store(path)
        agent = Challenger(
            chain,
            dep,
            account,
            store,
            known,
            workers=workers,
            watch=not no_watch,
            confirmations=confirmations,
        )
    run_agent(agent, interval, once)


def attach(app: typer.Typer) -> None:
    """Add `rollml node` and `rollml challenger` to the `rollml` app."""
    app.command("node")(node_cmd)
    app.command("challenger")(challenger_cmd)
