"""`rollml train`: verifiable training runs (docs/protocol.md section 7).

    rollml train create        --rpc URL --key KEY [--updates N] [--hidden H] [--batch B] [--steps K]
                               [--lr LR] [--momentum MU] [--data DIR] [--models DIR] [--batch-ids FILE]
                               [--json]
    rollml train worker        --rpc URL --key KEY --run ID [--data DIR] [--models DIR] [--once]
    rollml train fraud-proofer --rpc URL --key KEY --run ID [--data DIR] [--models DIR] [--once]
    rollml train status        --rpc URL --run ID [--json]
    rollml train register      --rpc URL --key KEY --run ID [--name NAME] [--models DIR] [--json]

`create` builds an MLP training graph on scikit-learn's digits, stores the batch chunks in `--data` (the
dataset store workers and fraud-proofers read, by batch id) and the graph in `--models`, registers the graph
and creates the funded run. With `--batch-ids FILE` (one 0x id per line) the run uses those batches, each of
which must resolve in `--data`: nothing is sent otherwise. `register` builds the trained model from the
final state and registers it; `rollml node` then serves it like any other model (`--models`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rollml.cli.agents import (
    DbOpt,
    IntervalOpt,
    LogJsonOpt,
    OnceOpt,
    VerboseOpt,
    configure_logging,
    default_db,
    open_store,
    run_agent,
)
from rollml.cli.chain import DeploymentOpt, JsonOpt, KeyOpt, PasswordEnvOpt, RpcOpt, connect, load_key
from rollml.cli.common import CliError, emit, err_console, errors_as_lines, hex0x

app = typer.Typer(
    help="Verifiable training runs: create, work, check, follow, register.", no_args_is_help=True
)

DEFAULT_DEPLOYMENT = Path("out/devnet.json")
DataOpt = Annotated[Path, typer.Option("--data", help="The dataset store: batch chunks named by id.")]
ModelsDirOpt = Annotated[
    Path, typer.Option("--models", help="Where training graphs and trained models live.")
]
RunOpt = Annotated[int, typer.Option("--run", min=1, help="The training run id.")]
DEFAULT_DATA = Path("out/train/data")
DEFAULT_MODELS = Path("out/train/models")


def _client(rpc: str, deployment: Path, key: Path | None = None, password_env: str | None = None) -> Any:
    from eth_account import Account

    from rollml.core.deploy import Deployment
    from rollml.core.training import TrainingClient

    account = load_key(key, password_env) if key is not None else Account.create()
    return TrainingClient(connect(rpc), Deployment.load(deployment), account)


def _save_model(models: Path, model: bytes) -> Path:
    from mlkit.format import model_id

    models.mkdir(parents=True, exist_ok=True)
    path = models / f"{hex0x(model_id(model))}.mlkit"
    path.write_bytes(model)
    return path


@app.command("create")
def create_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    updates: Annotated[int, typer.Option("--updates", min=1, help="Number of updates.")] = 20,
    hidden: Annotated[int, typer.Option("--hidden", min=1, help="Hidden units of the 64-H-10 MLP.")] = 16,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size.")] = 48,
    steps: Annotated[int, typer.Option("--steps", min=1, help="SGD steps per update.")] = 2,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 0.2,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = 0.9,
    seed: Annotated[int, typer.Option("--seed", help="Initial weights and data order.")] = 0,
    reward: Annotated[int, typer.Option("--reward", min=0, help="Wei per accepted update.")] = 10**15,
    deposit: Annotated[int, typer.Option("--deposit", min=1, help="Worker deposit (wei).")] = 10**17,
    bond: Annotated[int, typer.Option("--bond", min=1, help="Challenger bond (wei).")] = 10**17,
    window: Annotated[int, typer.Option("--window", min=1, help="Challenge window (s).")] = 600,
    lease: Annotated[int, typer.Option("--lease", min=1, help="Lease duration (s).")] = 300,
    data: DataOpt = DEFAULT_DATA,
    models: ModelsDirOpt = DEFAULT_MODELS,
    batch_ids: Annotated[
        Path | None, typer.Option("--batch-ids", help="Use these batch ids (one 0x id per line).")
    ] = None,
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create and fund a training run of a small MLP on scikit-learn's digits."""
    from mlkit.train import MLPSpec, digits_batches
    from rollml.core.deploy import register_model
    from rollml.core.training import dataset_store, plan_run, put_batches, resolve_batches

    with errors_as_lines():
        spec = MLPSpec((64, hidden, 10), batch, steps, lr, momentum)
        store = dataset_store(data)
        if batch_ids is not None:
            ids = [bytes.fromhex(line.strip().removeprefix("0x")) for line in batch_ids.read_text().split()]
            if any(len(i) != 32 for i in ids):
                raise CliError(f"{batch_ids}: every line must be a 32-byte 0x id")
            resolve_batches(store, ids)  # every id must resolve before anything is sent
        else:
            with err_console.status("preparing the digits batches"):
                chunks = digits_batches(spec, updates * steps, seed)[0]
                ids = put_batches(store, chunks)
        plan = plan_run(spec, spec.init_params(seed), ids, reward, deposit, bond, window, lease)
        client = _client(rpc, deployment, key, password_env)
        graph_path = _save_model(models, plan.graph)
        with err_console.status("registering the training graph and creating the run"):
            register_model(client.chain, client.deployment, client.account, plan.graph, "mlp-train")
            run_id = client.create_run(plan)
        report = {
            "run": run_id,
            "architecture": hex0x(plan.architecture),
            "graph": str(graph_path),
            "updates": plan.updates,
            "steps_per_update": steps,
            "batches": len(ids),
            "data": str(data),
            "funded_wei": reward * plan.updates,
        }
    emit(report, as_json, f"created training run {run_id}")


def _agent_cmd(
    kind: str,
    rpc: str,
    key: Path,
    run: int,
    data: Path,
    models: Path,
    deployment: Path,
    db: Path | None,
    interval: float,
    once: bool,
    password_env: str | None,
    log_json: bool,
    verbose: bool,
    **kw: Any,
) -> None:
    from rollml.agent.models import ModelStore
    from rollml.core.deploy import Deployment
    from rollml.core.training import dataset_store

    configure_logging(log_json, verbose)
    with errors_as_lines():
        account = load_key(key, password_env)
        if not models.is_dir():
            raise CliError(
                f"no model directory {models}: pass --models (where `rollml train create` put the graph)"
            )
        chain = connect(rpc)
        dep = Deployment.load(deployment)
        store = open_store(db or default_db(kind, account.address))
        if kind == "worker":
            from trainer.worker import TrainingWorker as cls
        else:
            from trainer.fraudproofer import FraudProofer as cls  # type: ignore[assignment]
        agent = cls(
            chain, dep, account, store, dataset_store(data), ModelStore.from_dir(models), run_ids=[run], **kw
        )
    run_agent(agent, interval, once)


@app.command("worker")
def worker_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    run: RunOpt,
    data: DataOpt = DEFAULT_DATA,
    models: ModelsDirOpt = DEFAULT_MODELS,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    db: DbOpt = None,
    interval: IntervalOpt = 2.0,
    once: OnceOpt = False,
    password_env: PasswordEnvOpt = None,
    log_json: LogJsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Work on a run: take the lease, compute and post updates with a deposit, defend and finalize them."""
    _agent_cmd(
        "worker", rpc, key, run, data, models, deployment, db, interval, once, password_env, log_json, verbose
    )


@app.command("fraud-proofer")
def fraud_proofer_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    run: RunOpt,
    data: DataOpt = DEFAULT_DATA,
    models: ModelsDirOpt = DEFAULT_MODELS,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    db: DbOpt = None,
    interval: IntervalOpt = 2.0,
    once: OnceOpt = False,
    password_env: PasswordEnvOpt = None,
    log_json: LogJsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check every update of a run by re-computing it; challenge wrong ones and win the game."""
    _agent_cmd(
        "fraud-proofer",
        rpc,
        key,
        run,
        data,
        models,
        deployment,
        db,
        interval,
        once,
        password_env,
        log_json,
        verbose,
    )


@app.command("status")
def status_cmd(
    rpc: RpcOpt, run: RunOpt, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT, as_json: JsonOpt = False
) -> None:
    """A run's progress: accepted updates, losses, lease, pending update, wrong updates caught."""
    with errors_as_lines():
        report = _client(rpc, deployment).status(run)
    if not as_json:
        done, total = report["accepted"], report["updates"]
        bar = "#" * int(30 * done / max(total, 1))
        err_console.print(f"  [{bar:<30}] {done}/{total} updates")
    emit(report, as_json, f"training run {run}")


@app.command("register")
def register_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    run: RunOpt,
    name: Annotated[
        str, typer.Option("--name", help="The registry name of the trained model.")
    ] = "mlp-trained",
    models: ModelsDirOpt = DEFAULT_MODELS,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a finished run's trained model in the ModelRegistry (and save it to --models for nodes)."""
    from mlkit.train import spec_of_state
    from rollml.core.training import loss_of

    with errors_as_lines():
        client = _client(rpc, deployment, key, password_env)
        info = client.run(run)
        if info.accepted < info.updates:
            raise CliError(f"run {run} is not finished: {info.accepted}/{info.updates} updates accepted")
        state = client.state(run)
        cfg = info.cfg
        lr, mu = (loss_of(cfg.lr_bits), loss_of(cfg.momentum_bits))
        spec = spec_of_state(state, cfg.batch_size, cfg.steps_per_update, lr, mu)
        from mlkit.format import model_id

        if model_id(spec.training_graph()) != cfg.architecture:
            raise CliError(f"run {run}'s architecture is not an MLP training graph this tool builds")
        params, _ = spec.decode_state(state)
        model = spec.inference_model(params)
        mid = client.register(run, model, name)
        path = _save_model(models, model)
        report = {"run": run, "model_id": hex0x(mid), "file": str(path), "sizes": list(spec.sizes)}
    emit(report, as_json, f"registered the model of run {run}")
