"""The agent commands of the `rollml` CLI: run a prover node or a challenger against a chain.

    rollml node --rpc URL --key KEYFILE [--models DIR] [--deployment FILE] [--db FILE] [--workers N]
                [--http [HOST:]PORT] [--config FILE] [--no-fetch-models] [--dishonest KIND]
    rollml challenger --rpc URL --key KEYFILE [--models DIR] [--deployment FILE] [--db FILE] [--workers N]
                [--http [HOST:]PORT] [--config FILE] [--no-fetch-models] [--dishonest KIND]

Both run until Ctrl-C / SIGTERM (or one pass with `--once`), logging one `key=value` line per event on
stderr (`--log-json`: one JSON object per line). The state lives in the SQLite file `--db` (default
`out/<node|challenger>-<address>.db`); restarting with the same file resumes every job and game.

`--models DIR` holds the `*.mlkit` files served (node) or used to verify (challenger), keyed by their model
id, and is watched for new files; by default the reference models `rollml devnet` registered (the model
cache). A model not there is fetched from the `uri` it was registered with (http(s) or file), verified
against its id and saved there (`--no-fetch-models` to never fetch). `--deployment` defaults to
`out/devnet.json`, the file `rollml devnet` writes. `--rpc`, `--key`, `--deployment`, `--models`, `--db`,
`--http` and `--password-env` may also come from environment variables (`ROLLML_RPC`, ...) or a TOML file
(`--config` or `$ROLLML_CONFIG`, `rollml.cli.config`); a flag wins over the environment, which wins over the
file. `--http [HOST:]PORT` serves `/metrics` (Prometheus) and `/healthz` (`rollml.agent.metrics`), and the
explorer of the agent's deployment under `/explorer/` (`rollml.explorer`).

`--dishonest KIND` is fault injection for tests and demos: the agent lies on purpose and loses its bonds.
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

from rollml.cli.chain import connect, load_key
from rollml.cli.common import CliError, errors_as_lines
from rollml.cli.config import Settings

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from rollml.agent.base import Agent
    from rollml.agent.models import ModelStore
    from rollml.core.chain import Chain
    from rollml.core.deploy import Deployment
    from rollml.core.store import Store

DEFAULT_DEPLOYMENT = Path("out/devnet.json")

ModelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--models",
        help="Directory of *.mlkit model files, watched for new ones (or $ROLLML_MODELS; default: the"
        " model cache).",
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="SQLite state file (or $ROLLML_DB; default: out/<role>-<address>.db)."),
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
OptRpc = Annotated[
    str | None, typer.Option("--rpc", help="JSON-RPC URL of the chain (or $ROLLML_RPC, or rpc in --config).")
]
OptKey = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="File with a 0x-hex private key, or a JSON keystore (or $ROLLML_KEY).",
        show_default=False,
    ),
]
OptDeployment = Annotated[
    Path | None,
    typer.Option(
        "--deployment", "-d", help="Deployment JSON (or $ROLLML_DEPLOYMENT; default: out/devnet.json)."
    ),
]
OptPasswordEnv = Annotated[
    str | None, typer.Option("--password-env", help="Environment variable holding the keystore's password.")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML file with rpc, key, deployment, models, db, http (or $ROLLML_CONFIG)."
    ),
]
HttpOpt = Annotated[
    str | None,
    typer.Option("--http", help="Serve /metrics (Prometheus) and /healthz on [HOST:]PORT (or $ROLLML_HTTP)."),
]
FetchOpt = Annotated[
    bool,
    typer.Option(
        "--fetch-models/--no-fetch-models",
        help="Fetch a model not in --models from the uri it was registered with (verified against its id).",
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
    from rollml.agent.models import ModelStore

    path = directory if directory is not None else models.cache_dir()
    if not path.is_dir():
        raise CliError(f"no model directory {path}: pass --models DIR with *.mlkit files")
    store = ModelStore.from_dir(path)
    if not store.ids():  # models may be added later (the directory is watched) or fetched from their uri
        logging.getLogger("rollml.models").warning(
            'event=no_models dir=%s note="no *.mlkit files yet: add some, or let them be fetched"', path
        )
    return store


def run_agent(agent: Agent, interval: float, once: bool, http: str | None = None) -> None:
    """One tick, or ticks until SIGINT/SIGTERM (the pass in progress finishes first); with `http`
    (HOST:PORT), `/metrics`, `/healthz` and the explorer (`/explorer/`) are served meanwhile."""
    server = None
    if http:
        from rollml.agent.metrics import serve
        from rollml.core.http import parse_address
        from rollml.explorer.app import mount as mount_explorer

        with errors_as_lines():
            host, port = parse_address(http)
            try:
                server, _ = serve(agent, host, port, interval)
                mount_explorer(server, agent.chain, agent.deployment)
            except OSError as exc:
                raise CliError(f"cannot serve HTTP on {http}: {exc.strerror or exc}") from None
        logging.getLogger("rollml").info("event=http_serving url=%s", server.url)
    try:
        _run(agent, interval, once)
    finally:
        if server is not None:
            server.stop()


def _run(agent: Agent, interval: float, once: bool) -> None:
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
    from rollml.core.store import Store, StoreError

    try:
        return Store(path)
    except (StoreError, sqlite3.Error) as exc:
        raise CliError(f"{path}: {exc}") from None


def default_db(role: str, address: str) -> Path:
    return Path("out") / f"{role}-{address[:10].lower()}.db"


def node_cmd(
    rpc: OptRpc = None,
    key: OptKey = None,
    models: ModelsOpt = None,
    deployment: OptDeployment = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    http: HttpOpt = None,
    fetch_models: FetchOpt = True,
    workers: WorkersOpt = 1,
    interval: IntervalOpt = 2.0,
    once: OnceOpt = False,
    confirmations: ConfirmationsOpt = 0,
    password_env: OptPasswordEnv = None,
    log_json: LogJsonOpt = False,
    verbose: VerboseOpt = False,
    dishonest: Annotated[
        str | None,
        typer.Option(
            "--dishonest",
            help="FAULT INJECTION, for tests and demos only: post wrong claims and lose their bonds."
            " Split claims: output (a wrong output bound into the final state) or tensor (a wrong tensor in"
            " the states from the middle of the schedule on). With --vm-claims: output (a wrong output with"
            " a forged final state), register / memory (a word flipped at a random step) or steps (the true"
            " final state at a wrong step count).",
            rich_help_panel="Testing",
        ),
    ] = None,
    split: Annotated[
        bool,
        typer.Option(
            "--split/--vm-claims",
            help="--split (the default): post split claims, the states of the model's execution schedule "
            "computed natively (no VM run before posting; a dispute bisects the states, then the VM runs the "
            "one disputed execution). --vm-claims: post the guest's final VM state instead (a whole VM run "
            "before posting; a dispute bisects every VM step).",
        ),
    ] = True,
) -> None:
    """Run a prover node: serve requests for the models in --models (watched for new files; with
    --fetch-models also fetched from the uri a model was registered with, verified against its id), post
    results with a bond, defend them in every dispute, finalize them after the challenge window, withdraw
    the earnings. --rpc, --key, --deployment, --models, --db, --http may come from $ROLLML_RPC, ... or a
    --config TOML file; flags win."""
    from node.prover import ProverNode
    from rollml.core.execution import Tamper, TamperKind

    configure_logging(log_json, verbose)
    with errors_as_lines():
        s = Settings.load(config, "node")
        if dishonest is not None and dishonest not in {k.value for k in TamperKind}:
            raise CliError(f"--dishonest must be one of {', '.join(k.value for k in TamperKind)}")
        account, served, chain, dep = _common(s, rpc, key, models, deployment, password_env)
        tamper = Tamper(TamperKind(dishonest)) if dishonest else None
        path = s.path("db", db) or default_db("node", account.address)
        store = open_store(path)
        agent = ProverNode(
            chain,
            dep,
            account,
            store,
            served,
            workers=workers,
            tamper=tamper,
            confirmations=confirmations,
            fetch_models=fetch_models,
            split=split,
        )
    run_agent(agent, interval, once, s.get("http", http))


def challenger_cmd(
    rpc: OptRpc = None,
    key: OptKey = None,
    models: ModelsOpt = None,
    deployment: OptDeployment = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    http: HttpOpt = None,
    fetch_models: FetchOpt = True,
    workers: WorkersOpt = 1,
    interval: IntervalOpt = 2.0,
    once: OnceOpt = False,
    confirmations: ConfirmationsOpt = 0,
    password_env: OptPasswordEnv = None,
    no_watch: Annotated[bool, typer.Option("--no-watch", help="Do not watch other parties' games.")] = False,
    log_json: LogJsonOpt = False,
    verbose: VerboseOpt = False,
    dishonest: Annotated[
        str | None,
        typer.Option(
            "--dishonest",
            help="FAULT INJECTION, for tests and demos only: challenge correct results too and play a trace"
            " with a word flipped at a random step (register or memory); loses its bonds.",
            rich_help_panel="Testing",
        ),
    ] = None,
) -> None:
    """Run a challenger: verify every posted result (a result whose model is missing is retried while its
    window is open: add the model to --models, or let it be fetched from its uri), challenge wrong ones
    with a bond and play each dispute to the end, and claim the timeouts of stalling liars in other games.
    Settings as for `rollml node`."""
    from challenger.agent import Challenger
    from rollml.core.execution import Tamper, TamperKind

    configure_logging(log_json, verbose)
    with errors_as_lines():
        s = Settings.load(config, "challenger")
        if dishonest is not None and dishonest not in ("register", "memory"):
            raise CliError("--dishonest must be register or memory for a challenger")
        account, known, chain, dep = _common(s, rpc, key, models, deployment, password_env)
        path = s.path("db", db) or default_db("challenger", account.address)
        store = open_store(path)
        agent = Challenger(
            chain,
            dep,
            account,
            store,
            known,
            workers=workers,
            tamper=Tamper(TamperKind(dishonest)) if dishonest else None,
            challenge_correct=dishonest is not None,
            watch=not no_watch,
            confirmations=confirmations,
            fetch_models=fetch_models,
        )
    run_agent(agent, interval, once, s.get("http", http))


def _common(
    s: Settings,
    rpc: str | None,
    key: Path | None,
    models: Path | None,
    deployment: Path | None,
    password_env: str | None,
) -> tuple[LocalAccount, ModelStore, Chain, Deployment]:
    """The account, the models, the chain and the deployment of an agent command, from its settings."""
    from rollml.core.deploy import Deployment

    account = load_key(Path(s.need("key", key)), s.get("password_env", password_env))
    served = load_models(s.path("models", models))
    chain = connect(s.need("rpc", rpc))
    dep = Deployment.load(s.path("deployment", deployment, DEFAULT_DEPLOYMENT) or DEFAULT_DEPLOYMENT)
    return account, served, chain, dep


def attach(app: typer.Typer) -> None:
    """Add `rollml node` and `rollml challenger` to the `rollml` app."""
    app.command("node")(node_cmd)
    app.command("challenger")(challenger_cmd)
