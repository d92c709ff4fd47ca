"""On-chain commands of the `rollml` CLI: a local devnet, deployment, model registration, requests, status.

    rollml devnet [--port 8545] [--out out/devnet.json] [--no-models]
    rollml deploy --rpc URL --key KEYFILE [--out FILE] [--gan-model FILE.mlkit]
    rollml model register MODEL.mlkit --rpc URL --key KEYFILE --deployment FILE [--name N] [--uri U]
    rollml request MODEL_ID_OR_FILE --input X.npy --rpc URL --key KEYFILE --deployment FILE [--wait]
    rollml status REQUEST_ID --rpc URL --deployment FILE

KEYFILE is a file holding one 0x-prefixed hex private key, or an eth-account JSON keystore whose password
is in the environment variable named by `--password-env`. `rollml devnet` writes the key of anvil's first
dev account next to the deployment file (`out/devnet.key`), so the other commands work against it at once.

`--rpc` must be an http(s) URL: an embedded chain would vanish with the command. Every command that reports
figures takes `--json` (one JSON object on stdout); every expected failure prints one line `error: ...` on
stderr and exits 1, with no traceback. Heavy imports (web3, torch) happen inside the commands so that
`rollml --help` stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mlkit.cli import CliError, fail

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from rollml.chain import Chain
    from rollml.deploy import Deployment

console = Console()
DEVNET_MODELS = ("mnist-mlp", "dcgan32")
NO_GAN_MODEL_ID = b"\x02" + bytes(31)  # --no-models: the GanNFT is pinned to this placeholder (unusable)
MAX_JSON_VALUES = 256  # output values printed up to this many elements

RpcOpt = Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of the chain (http://...).")]
KeyOpt = Annotated[Path, typer.Option("--key", help="File with a 0x-hex private key, or a JSON keystore.")]
PasswordEnvOpt = Annotated[
    str | None, typer.Option("--password-env", help="Environment variable holding the keystore's password.")
]
DeploymentOpt = Annotated[Path, typer.Option("--deployment", "-d", help="Deployment JSON (rollml deploy).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


# --------------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------------


@contextmanager
def errors_as_lines() -> Iterator[None]:
    """Turn the expected failures of chain commands into `error: ...` and exit code 1."""
    from mlkit.format import ModelFormatError
    from mlkit.io import PayloadError
    from rollml.chain import ChainError
    from rollml.devnet import DevnetError

    try:
        yield
    except (CliError, ChainError, DevnetError, ModelFormatError, PayloadError, ValueError, OSError) as exc:
        raise fail(" ".join(str(exc).split()) or type(exc).__name__) from None


def connect(rpc: str) -> Chain:
    from rollml.chain import Chain

    if not rpc.startswith(("http://", "https://")):
        raise CliError(
            f"--rpc must be an http(s) URL (got {rpc!r}); an embedded chain would not outlive the command"
        )
    return Chain.connect(rpc)


def load_key(path: Path, password_env: str | None = None) -> LocalAccount:
    """The account of a key file: a 0x-hex private key, or a JSON keystore (password from `password_env`)."""
    from eth_account import Account

    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if text.startswith("{"):
        if not password_env:
            raise CliError(f"{path} is a keystore: pass --password-env VAR with the password in $VAR")
        password = os.environ.get(password_env)
        if password is None:
            raise CliError(f"environment variable {password_env} is not set")
        try:
            return Account.from_key(Account.decrypt(json.loads(text), password))
        except (ValueError, KeyError) as exc:
            raise CliError(f"{path}: cannot decrypt the keystore ({exc})") from None
    if not text.startswith("0x") or len(text) != 66:
        raise CliError(f"{path}: expected a 0x-prefixed 32-byte hex private key (66 characters)")
    try:
        return Account.from_key(text)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path}: not a private key ({exc})") from None


def load_deployment(path: Path) -> Deployment:
    from rollml.deploy import Deployment

    return Deployment.load(path)


def parse_bytes32(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != 32:
        raise CliError(f"{what} must be 32 bytes of 0x-hex, got {text!r}")
    return value


def emit(report: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    """Print a report: one JSON object, or a two-column table."""
    if as_json:
        print(json.dumps(report))
        return
    if title:
        console.print(title, highlight=False)
    rows: list[tuple[str, str]] = []
    for key, value in report.items():
        if isinstance(value, dict):
            rows.extend((f"{key}.{sub}", str(item)) for sub, item in value.items())
        else:
            rows.append((key, json.dumps(value) if isinstance(value, list) else str(value)))
    width = max((len(k) for k, _ in rows), default=0)
    for key, shown in rows:  # plain lines, never folded: addresses and ids stay copyable
        console.print(f"  {key:<{width}}  {shown}", highlight=False, soft_wrap=True)


def reference_model(name: str) -> bytes:
    """A reference model's mlkit bytes, exported once and cached next to the trained weights."""
    from mlkit import models

    path = models.cache_dir() / f"{name}-{models.code_key()}.mlkit"
    if path.is_file():
        return path.read_bytes()
    data = models.export_reference(name).model
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def hex0x(value: bytes) -> str:
    return "0x" + value.hex()


# --------------------------------------------------------------------------------------------------------
# rollml devnet
# --------------------------------------------------------------------------------------------------------


def devnet_cmd(
    port: Annotated[int, typer.Option("--port", help="Port of anvil on 127.0.0.1.")] = 8545,
    out: Annotated[Path, typer.Option("--out", "-o", help="Deployment JSON to write.")] = Path(
        "out/devnet.json"
    ),
    no_models: Annotated[
        bool,
        typer.Option("--no-models", help="Skip building and registering the reference models (no torch)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start anvil, deploy everything, register mnist-mlp and dcgan32, and run until Ctrl-C."""
    from rollml.devnet import Anvil

    with errors_as_lines():
        anvil = Anvil(port, log=out.with_suffix(".anvil.log"))
        out.parent.mkdir(parents=True, exist_ok=True)
        anvil.start()
    try:
        with errors_as_lines():
            report = _deploy_devnet(anvil.url, out, no_models, quiet=as_json)
        emit(report, as_json, None if as_json else "[green]devnet running[/] (Ctrl-C to stop)")
        sys.stdout.flush()
        _wait_until_interrupted(anvil)
    finally:
        anvil.stop()
    if not as_json:
        console.print("anvil stopped")


def _deploy_devnet(url: str, out: Path, no_models: bool, quiet: bool) -> dict[str, Any]:
    from rollml.deploy import deploy, register_model

    chain = connect(url)
    deployer = chain.dev_accounts()[0]
    models: dict[str, bytes] = {}
    if not no_models:
        for name in DEVNET_MODELS:
            if not quiet:
                console.print(f"building {name} ...", highlight=False)
            models[name] = reference_model(name)
    gan = models.get("dcgan32")
    gan_id = _model_id(gan) if gan is not None else NO_GAN_MODEL_ID
    dep = deploy(chain, deployer, gan_id, gan_model=gan)
    registered = {
        name: hex0x(register_model(chain, dep, deployer, data, name)) for name, data in models.items()
    }
    dep.save(out)
    key_file = out.with_suffix(".key")
    key_file.write_text(hex0x(bytes(deployer.key)) + "\n")
    return {
        "rpc": url,
        "chain_id": dep.chain_id,
        "deployment": str(out),
        "key": str(key_file),
        "account": deployer.address,
        **dep.addresses,
        "models": registered,
    }


def _model_id(model: bytes) -> bytes:
    from mlkit.format import model_id

    return model_id(model)


def _wait_until_interrupted(anvil: Any) -> None:
    """Sleep until Ctrl-C or SIGTERM; CliError if anvil dies on its own."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while anvil.process is not None and anvil.process.poll() is None:
            time.sleep(0.2)
        raise fail("anvil exited unexpectedly")
    except KeyboardInterrupt:
        return
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------------------
# rollml deploy
# --------------------------------------------------------------------------------------------------------


def deploy_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Deployment JSON to write.")] = Path(
        "out/deployment.json"
    ),
    gan_model: Annotated[
        Path | None,
        typer.Option(
            "--gan-model", help="The GanNFT's model file (default: the dcgan32 reference, needs torch)."
        ),
    ] = None,
    challenge_window: Annotated[
        int | None, typer.Option("--challenge-window", help="Seconds a result can be challenged.")
    ] = None,
    move_timeout: Annotated[int, typer.Option("--move-timeout", help="Seconds per dispute move.")] = 300,
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy the six contracts with the dev parameters, registering the GanNFT's model."""
    from dataclasses import replace

    from mlkit.cli import read_model
    from rollml.deploy import DEV_PARAMS, deploy

    with errors_as_lines():
        account = load_key(key, password_env)
        chain = connect(rpc)
        gan = read_model(gan_model)[0] if gan_model is not None else reference_model("dcgan32")
        params = (
            DEV_PARAMS if challenge_window is None else replace(DEV_PARAMS, challenge_window=challenge_window)
        )
        start = chain.balance(account.address)
        dep = deploy(chain, account, _model_id(gan), params, move_timeout=move_timeout, gan_model=gan)
        dep.save(out)
        spent = start - chain.balance(account.address)
    report = {"deployment": str(out), "chain_id": dep.chain_id, "block": dep.block, **dep.addresses}
    report.update({"gan_model_id": hex0x(dep.gan_model_id), "program_hash": hex0x(dep.program_hash)})
    report["spent_wei"] = spent
    emit(report, as_json, None if as_json else f"[green]deployed[/] to chain {dep.chain_id}, wrote {out}")


# --------------------------------------------------------------------------------------------------------
# rollml model register
# --------------------------------------------------------------------------------------------------------


def register_cmd(
    model_file: Annotated[Path, typer.Argument(help="mlkit model file.")],
    rpc: RpcOpt,
    key: KeyOpt,
    deployment: DeploymentOpt,
    name: Annotated[
        str | None, typer.Option("--name", help="Name in the registry (default: file stem).")
    ] = None,
    uri: Annotated[str, typer.Option("--uri", help="Where provers can fetch the model file.")] = "",
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model in the on-chain registry under its model id (idempotent)."""
    from mlkit.cli import read_model
    from rollml.deploy import register_model

    with errors_as_lines():
        data, _ = read_model(model_file)
        account = load_key(key, password_env)
        dep = load_deployment(deployment)
        chain = connect(rpc)
        registry = dep.contracts(chain).registry
        mid = _model_id(data)
        existed = bool(chain.call(registry.functions.isRegistered(mid)))
        register_model(chain, dep, account, data, name or model_file.stem, uri)
        model = chain.call(registry.functions.getModel(mid))
    report = {
        "model_id": hex0x(mid),
        "name": model[3],
        "program_hash": hex0x(bytes(model[0])),
        "registrant": model[1],
        "input_shape": list(model[4]),
        "output_shape": list(model[5]),
        "uri": model[6],
        "already_registered": existed,
    }
    emit(report, as_json, None if as_json else f"[green]registered[/] {model_file}")


# --------------------------------------------------------------------------------------------------------
# rollml request / status
# --------------------------------------------------------------------------------------------------------


def request_cmd(
    model: Annotated[str, typer.Argument(help="Model id (0x...) or mlkit model file.")],
    inputs: Annotated[list[Path], typer.Option("--input", "-i", help="Input .npy (repeat for several).")],
    rpc: RpcOpt,
    key: KeyOpt,
    deployment: DeploymentOpt,
    callback: Annotated[
        str | None, typer.Option("--callback", help="IInferenceConsumer contract to call back.")
    ] = None,
    callback_gas: Annotated[int, typer.Option("--callback-gas", help="Gas for the callback.")] = 0,
    new_tokens: Annotated[int, typer.Option("--new-tokens", help="Generate mode: tokens to generate.")] = 16,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the result is finalized.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 900.0,
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Request an inference (paying estimateFee); with --wait, print the verified output."""
    from rollml.sdk import Client

    with errors_as_lines():
        mid, payload = _model_and_payload(model, inputs, new_tokens)
        account = load_key(key, password_env)
        dep = load_deployment(deployment)
        client = Client(connect(rpc), dep, account)
        handle = client.request(mid, payload, callback, callback_gas)
        info = handle.status()
        report: dict[str, Any] = {
            "request_id": handle.request_id,
            "model_id": hex0x(mid),
            "input_bytes": len(payload),
            "fee_wei": info.fee,
            "status": info.status,
        }
        if wait:
            info = handle.wait(timeout)
            report.update(_output_report(handle.output_bytes()))
            report.update({"status": info.status, "prover": info.prover, "steps": info.steps})
    emit(report, as_json, None if as_json else f"[green]requested[/] inference {handle.request_id}")


def _model_and_payload(model: str, inputs: list[Path], new_tokens: int) -> tuple[bytes, bytes]:
    """The model id and the input payload; with a model file, the inputs are checked against it."""
    from mlkit.cli import input_payload, read_model, read_npy
    from mlkit.io import encode_payload

    arrays = [read_npy(p) for p in inputs]
    if model.startswith("0x") and not Path(model).exists():
        return parse_bytes32(model, "the model id"), encode_payload(arrays)
    data, parsed = read_model(Path(model))
    return _model_id(data), input_payload(parsed, arrays, new_tokens)


def _output_report(output: bytes) -> dict[str, Any]:
    from mipsvm.hashing import keccak256
    from mlkit.io import decode_payload

    arrays = decode_payload(output)
    report: dict[str, Any] = {
        "output_hash": hex0x(keccak256(output)),
        "shapes": [list(a.shape) for a in arrays],
    }
    if sum(a.size for a in arrays) <= MAX_JSON_VALUES:
        report["output"] = [a.tolist() for a in arrays] if len(arrays) > 1 else arrays[0].tolist()
    return report


def status_cmd(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    rpc: RpcOpt,
    deployment: DeploymentOpt,
    as_json: JsonOpt = False,
) -> None:
    """Show a request: status, model, prover, output hash, steps, times and games."""
    from rollml.sdk import Client

    with errors_as_lines():
        dep = load_deployment(deployment)
        info = Client(connect(rpc), dep).status(request_id)
    emit(info.to_json_dict(), as_json)


# --------------------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------------------


def attach(app: typer.Typer, model_app: typer.Typer) -> None:
    """Add the chain commands to the `rollml` app and `register` to its `model` sub-app."""
    app.command("devnet")(devnet_cmd)
    app.command("deploy")(deploy_cmd)
    app.command("request")(request_cmd)
    app.command("status")(status_cmd)
    model_app.command("register")(register_cmd)
