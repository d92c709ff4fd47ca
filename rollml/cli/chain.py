"""On-chain commands of the `rollml` CLI: a local devnet, deployment, model registration, requests, status.

    rollml devnet [--port 8545] [--out out/devnet.json] [--no-models] [--block-time 1]
    rollml deploy --rpc URL --key KEYFILE [--out FILE] [--gan-model FILE.mlkit]
    rollml model register MODEL.mlkit --rpc URL --key KEYFILE --deployment FILE [--name N] [--uri U]
    rollml request MODEL_ID_OR_FILE --input X.npy --rpc URL --key KEYFILE --deployment FILE [--wait]
    rollml request fortune-gpt.mlkit --prompt "Love is" ... [--wait]    # a text model: prints the text
    rollml status REQUEST_ID --rpc URL --deployment FILE
    rollml cancel REQUEST_ID --rpc URL --key KEYFILE --deployment FILE
    rollml withdraw --rpc URL --key KEYFILE --deployment FILE

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
import stat
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollml.cli.common import CliError, console, emit, err_console, errors_as_lines, fail, hex0x

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from rollml.core.chain import Chain
    from rollml.core.deploy import Deployment

DEVNET_MODELS = ("mnist-mlp", "dcgan32", "fortune-gpt")
NO_GAN_MODEL_ID = b"\x02" + bytes(31)  # --no-models: the GanNFT is pinned to this placeholder (unusable)
DEVNET_BLOCK_TIME = 1  # seconds between the devnet's blocks when nobody sends a transaction
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


def connect(rpc: str) -> Chain:
    from rollml.core.chain import Chain

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
    warn_if_readable_by_others(path)
    if not text.startswith("0x") or len(text) != 66:
        raise CliError(f"{path}: expected a 0x-prefixed 32-byte hex private key (66 characters)")
    try:
        return Account.from_key(text)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path}: not a private key ({exc})") from None


def warn_if_readable_by_others(path: Path) -> None:
    """A plain private key that the group or others may read gets a warning line (with the fix)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        err_console.print(
            f"warning: key file {path} is readable by others (mode {stat.S_IMODE(mode):04o}):"
            f" chmod 600 {path}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def load_deployment(path: Path) -> Deployment:
    from rollml.core.deploy import Deployment

    return Deployment.load(path)


def parse_bytes32(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != 32:
        raise CliError(f"{what} must be 32 bytes of 0x-hex, got {text!r}")
    return value


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
    block_time: Annotated[
        int,
        typer.Option(
            "--block-time",
            min=1,
            help="Mine a block every this many seconds even without transactions (the clock moves).",
        ),
    ] = DEVNET_BLOCK_TIME,
    as_json: JsonOpt = False,
) -> None:
    """Start anvil (a block every --block-time seconds, transactions mined at once), deploy everything,
    register mnist-mlp, dcgan32 and fortune-gpt, and run until Ctrl-C."""
    from rollml.core.devnet import Anvil

    with errors_as_lines():
        anvil = Anvil(port, log=out.with_suffix(".anvil.log"), block_time=block_time)
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
    from mlkit.models import reference_model
    from rollml.core.deploy import deploy, register_model

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
    key_file.touch(mode=0o600)
    key_file.chmod(0o600)  # a private key: the owner's only
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


def _param(flag: str, help_text: str) -> Any:
    return typer.Option(flag, min=0, help=help_text)


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
    base_fee: Annotated[int | None, _param("--base-fee", "Fee per request, wei.")] = None,
    fee_per_input_byte: Annotated[
        int | None, _param("--fee-per-input-byte", "Fee per input byte, wei.")
    ] = None,
    callback_gas_price: Annotated[
        int | None, _param("--callback-gas-price", "Wei per gas of callback limit a requester pays.")
    ] = None,
    prover_bond: Annotated[int | None, _param("--prover-bond", "Bond posted with a result, wei.")] = None,
    challenger_bond: Annotated[
        int | None, _param("--challenger-bond", "Bond posted with a challenge, wei.")
    ] = None,
    burn_bps: Annotated[
        int | None,
        typer.Option(
            "--burn-bps", min=0, max=10_000, help="Basis points of a losing prover's bond that are burned."
        ),
    ] = None,
    challenge_window: Annotated[
        int | None, _param("--challenge-window", "Seconds a result can be challenged.")
    ] = None,
    request_timeout: Annotated[
        int | None, _param("--request-timeout", "Seconds a request takes results; cancellable from then on.")
    ] = None,
    max_steps: Annotated[
        int | None,
        _param(
            "--max-steps", "Largest step count a result may claim (default: the safe maximum for the window)."
        ),
    ] = None,
    move_timeout: Annotated[
        int, typer.Option("--move-timeout", min=1, help="Seconds per dispute move.")
    ] = 300,
    gas_price: Annotated[
        int | None,
        _param(
            "--gas-price", "Worst gas price (wei) expected during a game: checks that bonds pay the winner."
        ),
    ] = None,
    allow_unsafe: Annotated[
        bool, typer.Option("--allow-unsafe", help="Deploy even if the parameters break docs/security.md.")
    ] = False,
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy the six contracts, registering the GanNFT's model. Every market parameter is a flag (default:
    the dev parameters); they are checked against the safe-parameter rules of docs/security.md (A1: the
    challenge window covers re-running maxSteps at 1.1e8 steps/s plus a 60 s margin; A4 with --gas-price:
    bonds pay the winner's gas) and refused when they break them, unless --allow-unsafe."""
    from dataclasses import replace

    from mlkit.guest import read_model
    from mlkit.models import reference_model
    from rollml.core.deploy import DEV_PARAMS, deploy, safe_max_steps, safety_problems

    with errors_as_lines():
        given = {
            "base_fee": base_fee,
            "fee_per_input_byte": fee_per_input_byte,
            "callback_gas_price": callback_gas_price,
            "prover_bond": prover_bond,
            "challenger_bond": challenger_bond,
            "prover_bond_burn_bps": burn_bps,
            "challenge_window": challenge_window,
            "request_timeout": request_timeout,
            "max_steps": max_steps,
        }
        params = replace(DEV_PARAMS, **{k: v for k, v in given.items() if v is not None})
        if max_steps is None:
            params = replace(
                params, max_steps=min(DEV_PARAMS.max_steps, safe_max_steps(params.challenge_window))
            )
        problems = safety_problems(params, gas_price=gas_price)
        if problems and not allow_unsafe:
            raise CliError("unsafe parameters: " + "; ".join(problems) + " (--allow-unsafe to deploy anyway)")
        for problem in problems:
            err_console.print(f"warning: {problem}", highlight=False, markup=False)
        account = load_key(key, password_env)
        chain = connect(rpc)
        gan = read_model(gan_model)[0] if gan_model is not None else reference_model("dcgan32")
        start = chain.balance(account.address)
        dep = deploy(chain, account, _model_id(gan), params, move_timeout=move_timeout, gan_model=gan)
        dep.save(out)
        spent = start - chain.balance(account.address)
    report = {"deployment": str(out), "chain_id": dep.chain_id, "block": dep.block, **dep.addresses}
    report.update({"gan_model_id": hex0x(dep.gan_model_id), "program_hash": hex0x(dep.program_hash)})
    report["params"] = {**asdict(params), "move_timeout": move_timeout}
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
    from mlkit.guest import read_model
    from rollml.core.deploy import register_model

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
    rpc: RpcOpt,
    key: KeyOpt,
    deployment: DeploymentOpt,
    inputs: Annotated[
        list[Path] | None, typer.Option("--input", "-i", help="Input .npy (repeat for several).")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Text model: generate from this text (instead of --input).")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            "--tokenizer", help="With --prompt: tokenizer (default: the model file's NAME.tokenizer.json)."
        ),
    ] = None,
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
    """Request an inference (paying estimateFee) after checking the input against the registry (size,
    shape; with a model file every input's shape and dtype): nothing is paid for a request no prover could
    serve. Prints the request id at once; with --wait, shows the progress and prints the verified output
    (or text)."""
    from mlkit.text import decode_tokens
    from rollml.core.sdk import Client

    if (prompt is None) == (not inputs):
        raise fail("give the input as --input X.npy or, for a text model, as --prompt TEXT (one of them)")
    with errors_as_lines():
        if prompt is not None:
            mid, payload, tok, model_bytes = _model_and_prompt(model, prompt, tokenizer, new_tokens)
        else:
            mid, payload, model_bytes = _model_and_payload(model, inputs or [], new_tokens)
        account = load_key(key, password_env)
        dep = load_deployment(deployment)
        client = Client(connect(rpc), dep, account)
        handle = client.request(mid, payload, callback, callback_gas, model=model_bytes)
        info = handle.status()
        report: dict[str, Any] = {
            "request_id": handle.request_id,
            "model_id": hex0x(mid),
            "input_bytes": len(payload),
            "fee_wei": info.fee,
            "status": info.status,
        }
        if prompt is not None:
            report["prompt"] = prompt
        if not as_json:
            console.print(
                f"[green]requested[/] inference {handle.request_id} (fee {info.fee} wei)", highlight=False
            )
            sys.stdout.flush()
        if wait:
            info = _wait_with_progress(handle, timeout, quiet=as_json)
            report.update(_output_report(handle.output_bytes()))
            report.update(
                {"status": info.status, "prover": info.prover, "steps": info.steps, "split": info.split}
            )
            if prompt is not None:
                report["text"] = decode_tokens(tok, handle.output()[0].tolist())
    if as_json or "text" not in report:
        emit(report, as_json)
        return
    emit({k: v for k, v in report.items() if k != "text"}, False)
    print(f"{prompt}{report['text']}")  # the prompt and the verified generated text


def _wait_with_progress(handle: Any, timeout: float, quiet: bool) -> Any:
    """`handle.wait` with a progress line on stderr: the request's stage and what it waits for."""
    from rollml.cli.common import progress_bar
    from rollml.core.sdk import DEFAULT_POLL, RequestCancelled, RequestTimeout

    deadline = time.monotonic() + timeout
    with progress_bar(quiet) as progress:
        task = progress.add_task(f"request {handle.request_id}", total=None, info="")
        while True:
            info = handle.status()
            if info.status == "finalized":
                return info
            if info.status == "cancelled":
                raise RequestCancelled(f"request {handle.request_id} was cancelled: it will have no output")
            progress.update(task, info=_stage(info, handle.client.chain.now()))
            if time.monotonic() >= deadline:
                raise RequestTimeout(handle._timeout_message(info, timeout))
            time.sleep(min(DEFAULT_POLL, max(deadline - time.monotonic(), 0.0)))


def _stage(info: Any, now: int) -> str:
    """One line: where a request stands and what it waits for."""
    if info.status == "open":
        lost = sum(1 for r in info.results if r["discarded"])
        what = f"open, waiting for a prover (expires {_date(info.expires_at)})"
        if info.unservable:
            last = info.unservable[-1]
            what += f"; {str(last['prover'])[:10]} cannot serve it: {last['reason']}"
        return what + (f"; {lost} result(s) discarded" if lost else "")
    games = f", {info.open_games} open game(s)" if info.open_games else ""
    end = info.challenge_window_end or 0
    left = f"window closes in {end - now} s" if now < end else "window closed, finalizing"
    return f"proposed by {str(info.prover)[:10]}, {left}{games}"


def _date(timestamp: int | None) -> str:
    """A chain timestamp as an ISO date (UTC)."""
    from datetime import UTC, datetime

    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _model_and_payload(model: str, inputs: list[Path], new_tokens: int) -> tuple[bytes, bytes, bytes | None]:
    """The model id, the input payload and the model file's bytes (None for an id); with a model file, the
    inputs are checked against it."""
    from mlkit.guest import input_payload, read_model, read_npy
    from mlkit.io import encode_payload

    arrays = [read_npy(p) for p in inputs]
    if model.startswith("0x") and not Path(model).exists():
        return parse_bytes32(model, "the model id"), encode_payload(arrays), None
    data, parsed = read_model(Path(model))
    return _model_id(data), input_payload(parsed, arrays, new_tokens), data


def _model_and_prompt(
    model: str, prompt: str, tokenizer: Path | None, new_tokens: int
) -> tuple[bytes, bytes, Any, bytes | None]:
    """The model id, the input payload of `prompt`, the tokenizer (checked against a model file) and the
    model file's bytes (None for an id)."""
    from mlkit.guest import read_model
    from mlkit.io import generate_payload
    from mlkit.text import encode_prompt, prompt_payload, tokenizer_for

    if model.startswith("0x") and not Path(model).exists():
        tok = tokenizer_for(None, tokenizer)
        return (
            parse_bytes32(model, "the model id"),
            generate_payload(encode_prompt(tok, prompt), new_tokens),
            tok,
            None,
        )
    data, parsed = read_model(Path(model))
    tok = tokenizer_for(Path(model), tokenizer)
    return _model_id(data), prompt_payload(parsed, tok, prompt, new_tokens)[0], tok, data


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
    """Show a request: status, model, prover, output hash, steps, every result (discarded ones marked),
    times (as dates; seconds since 1970 with --json) and games."""
    from rollml.core.sdk import Client

    with errors_as_lines():
        dep = load_deployment(deployment)
        info = Client(connect(rpc), dep).status(request_id)
    report = info.to_json_dict()
    if as_json:
        emit(report, True)
        return
    for name in TIME_FIELDS:
        if report.get(name) is not None:
            report[name] = _date(report[name])
    results = report.pop("results")
    games = report.pop("games")
    unservable = report.pop("unservable")
    emit(report, False)
    for u in unservable:
        console.print(
            f"  UNSERVABLE  prover {u['prover']} says: {u['reason']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    for r in results:
        mark = "DISCARDED" if r["discarded"] else ("current" if r["result_id"] == info.result_id else "")
        console.print(
            f"  result {r['result_id']}  {mark:<9}  prover {r['prover']}  posted {_date(r['posted_at'])}"
            f"  {r['steps']} {'node executions (split claim)' if r['split'] else 'VM steps'}",
            highlight=False,
            soft_wrap=True,
        )
    for g in games:
        console.print(
            f"  game {g['game_id']}  on result {g['result_id']}  {g['status']}  challenger {g['challenger']}",
            highlight=False,
            soft_wrap=True,
        )


TIME_FIELDS = ("created_at", "expires_at", "posted_at", "challenge_window_end", "finalized_at")


# --------------------------------------------------------------------------------------------------------
# rollml cancel / withdraw
# --------------------------------------------------------------------------------------------------------


def cancel_cmd(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    rpc: RpcOpt,
    key: KeyOpt,
    deployment: DeploymentOpt,
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel an open request of yours from its deadline (created + requestTimeout) on; the fee is credited
    to you (take it with `rollml withdraw`)."""
    from rollml.core.sdk import Client

    with errors_as_lines():
        account = load_key(key, password_env)
        client = Client(connect(rpc), load_deployment(deployment), account)
        info = client.status(request_id)
        if info.status != "open":
            raise CliError(f"request {request_id} is {info.status}: only an open request can be cancelled")
        now = client.chain.now()
        if now < info.expires_at:
            raise CliError(
                f"request {request_id} can be cancelled from {_date(info.expires_at)}"
                f" ({info.expires_at - now} s from now): until then a prover may still serve it"
            )
        receipt = client.cancel(request_id)
        credited = client.chain.call(client.contracts.market.functions.balanceOf(account.address))
    report = {
        "request_id": request_id,
        "status": "cancelled",
        "refund_wei": info.fee,
        "balance_wei": int(credited),
        "tx": hex0x(bytes(receipt["transactionHash"])),
    }
    emit(report, as_json, None if as_json else f"[green]cancelled[/] request {request_id}")


def withdraw_cmd(
    rpc: RpcOpt,
    key: KeyOpt,
    deployment: DeploymentOpt,
    password_env: PasswordEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw everything the market credited to your account (refunds, earnings, bonds won)."""
    from rollml.core.sdk import Client

    with errors_as_lines():
        account = load_key(key, password_env)
        client = Client(connect(rpc), load_deployment(deployment), account)
        balance = int(client.chain.call(client.contracts.market.functions.balanceOf(account.address)))
        tx = None
        if balance > 0:
            tx = hex0x(bytes(client.withdraw()["transactionHash"]))
    report = {"account": account.address, "withdrawn_wei": balance, "tx": tx}
    title = f"[green]withdrew[/] {balance} wei" if balance else "nothing to withdraw"
    emit(report, as_json, None if as_json else title)


# --------------------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------------------


def attach(app: typer.Typer, model_app: typer.Typer) -> None:
    """Add the chain commands to the `rollml` app and `register` to its `model` sub-app."""
    app.command("devnet")(devnet_cmd)
    app.command("deploy")(deploy_cmd)
    app.command("request")(request_cmd)
    app.command("status")(status_cmd)
    app.command("cancel")(cancel_cmd)
    app.command("withdraw")(withdraw_cmd)
    model_app.command("register")(register_cmd)
