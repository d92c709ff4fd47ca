"""`rollml model ...`: export, import, inspect and run mlkit models (natively or in the VM).

    rollml model export lenet -o lenet.mlkit [--example-input x.npy]
    rollml model import-onnx net.onnx -o net.mlkit
    rollml model info lenet.mlkit [--json]
    rollml model run lenet.mlkit --input x.npy [--native | --vm] [--output y.npy] [--json]

Every expected failure (a missing or malformed file, an input of the wrong shape or dtype, a model the
runtime rejects) prints one line `error: ...` on stderr and exits non-zero; no traceback.

The functions `run_native`, `run_vm` and `guest_oracle` are also used by the tests, `bench/mlkit.py` and
`rollml vm` (mipsvm/cli.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from mipsvm.preimage import PreimageOracle

app = typer.Typer(help="Export, import, inspect and run mlkit models.", no_args_is_help=True)
console = Console(stderr=True)

MAX_JSON_VALUES = 256  # --json includes the output values up to this many elements


class CliError(Exception):
    """An expected failure, reported as one line."""


def fail(message: str, code: int = 1) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def errors_as_lines() -> Iterator[None]:
    """Turn the expected exceptions into `error: ...` lines and a non-zero exit."""
    from mlkit.export import ExportError
    from mlkit.format import ModelFormatError
    from mlkit.io import PayloadError
    from mlkit.native import MlkitError

    try:
        yield
    except (CliError, ExportError, ModelFormatError, PayloadError, MlkitError, OSError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise fail(str(msg) or type(exc).__name__) from None


# --------------------------------------------------------------------------------------------------------
# Reusable pieces: reading files, running natively and in the VM
# --------------------------------------------------------------------------------------------------------


def read_model(path: Path) -> tuple[bytes, Any]:
    """The model file's bytes and its parsed form (ModelFormatError on a malformed file)."""
    from mlkit.format import ModelFormatError, decode_model

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read model {path}: {exc.strerror or exc}") from None
    try:
        return data, decode_model(data)
    except ModelFormatError as exc:
        raise CliError(f"{path}: malformed model: {exc}") from None


def read_npy(path: Path) -> np.ndarray:
    """A numeric array from a .npy file (CliError for anything else)."""
    try:
        with path.open("rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise CliError(f"{path}: not a .npy file")
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except OSError as exc:
        raise CliError(f"cannot read input {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"{path}: not a numeric .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
        raise CliError(f"{path}: not a numeric array")
    return arr


def input_payload(model: Any, arrays: Sequence[np.ndarray], new_tokens: int) -> bytes:
    """Check the arrays against the model's inputs and encode the input payload."""
    from mlkit.format import MAX_CTX, DType, Mode
    from mlkit.io import encode_payload, generate_payload

    if model.mode == Mode.GENERATE:
        if len(arrays) != 1:
            raise CliError(
                f"a generate-mode model takes one input (the prompt's token ids), got {len(arrays)}"
            )
        prompt = arrays[0]
        if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
            raise CliError(
                f"the prompt must be a non-empty 1-D integer array, got {prompt.dtype}{list(prompt.shape)}"
            )
        if not 1 <= new_tokens <= MAX_CTX:
            raise CliError(f"--new-tokens must be 1..{MAX_CTX}")
        return generate_payload(prompt.tolist(), new_tokens)
    specs = model.input_specs()
    if len(arrays) != len(specs):
        raise CliError(f"the model takes {len(specs)} input(s), got {len(arrays)} (repeat --input)")
    for i, (a, (dtype, shape)) in enumerate(zip(arrays, specs, strict=True)):
        want = "float32" if dtype == DType.F32 else "int32"
        ok_dtype = a.dtype == np.float32 if dtype == DType.F32 else np.issubdtype(a.dtype, np.integer)
        if tuple(a.shape) != tuple(shape) or not ok_dtype:
            raise CliError(
                f"input {i}: the model expects {want}{list(shape)}, got {a.dtype}{list(a.shape)} "
                f"({a.size} values)"
            )
        if dtype == DType.I32 and a.size and (a.min() < -(2**31) or a.max() >= 2**31):
            raise CliError(f"input {i}: values out of the int32 range")
    return encode_payload([np.asarray(a) for a in arrays])


@dataclass
class RunResult:
    output: bytes  # the output payload
    seconds: float
    steps: int | None = None  # VM only
    exit_code: int | None = None  # VM only


def run_native(model: bytes, payload: bytes) -> RunResult:
    from mlkit import native

    t0 = time.perf_counter()
    out = native.run(model, payload)
    return RunResult(out, time.perf_counter() - t0)


def guest_oracle(model: bytes, payload: bytes, claim: bytes | None = None) -> PreimageOracle:
    """The preimage oracle of a guest run (vm-spec sections 6 and 9): the model and input as blobs and the
    local keys 1 (model id), 2 (input id) and 3 (claimed output hash). Without a claim, the native run
    supplies it (the true claim). Shared by `run_vm` and `rollml vm ... --model --input`."""
    from mipsvm.hashing import keccak256
    from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore, put_blob

    if claim is None:
        claim = keccak256(run_native(model, payload).output)
    store = PreimageStore()
    local = LocalData({1: put_blob(store, model), 2: put_blob(store, payload), 3: claim})
    return PreimageOracle(store, local)


def run_vm(
    model: bytes,
    payload: bytes,
    claim: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Run the mlkit guest in the VM (fast executor) on `guest_oracle(model, payload, claim)`.
    `seconds` covers the VM run only (not loading the ELF or storing the blobs)."""
    from mipsvm.elf import load_elf
    from mipsvm.fast import FastVM
    from mlkit.build import GUEST_ELF

    oracle = guest_oracle(model, payload, claim)
    program = load_elf(GUEST_ELF)
    with FastVM(program, oracle) as vm:
        t0 = time.perf_counter()
        final = vm.run(progress=progress)
        seconds = time.perf_counter() - t0
        return RunResult(bytes(vm.output), seconds, final.step, final.exit_code)


def output_sha(payload: bytes) -> str:
    from mipsvm.hashing import keccak256

    return "0x" + keccak256(payload).hex()


def _progress(disabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=disabled,
        transient=True,
    )


# --------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------


@app.command("export")
def export_cmd(
    name: Annotated[str, typer.Argument(help="mnist-mlp, lenet, dcgan32, dcgan128, gpt2-tiny or gpt2.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write.")],
    example_input: Annotated[
        Path | None, typer.Option("--example-input", help="Also write the example input.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Build a reference model (train or seed it) and export it to the mlkit format."""
    from mlkit import models

    with errors_as_lines():
        if name not in models.REFERENCE_MODELS:
            raise CliError(f"unknown model {name!r}; expected one of {', '.join(models.REFERENCE_MODELS)}")
        with _progress(as_json) as bar:
            bar.add_task(f"building {name}", total=None, info="")
            exp = models.export_reference(name)
        output.write_bytes(exp.model)
        input_file = ""
        if example_input is not None:
            np.save(example_input, exp.example)
            input_file = str(example_input)
        entry = models.manifest_entry(exp, str(output), input_file)
    if as_json:
        print(json.dumps(entry))
    else:
        acc = f", test accuracy {exp.accuracy:.4f}" if exp.accuracy is not None else ""
        console.print(f"wrote {output}: {entry['params']} parameters, model id {entry['model_id']}{acc}")


@app.command("import-onnx")
def import_onnx_cmd(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX model (static shapes).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Convert an ONNX model to the mlkit format (unsupported ops are named)."""
    from mlkit.format import model_id
    from mlkit.onnx_import import import_onnx

    with errors_as_lines():
        if not onnx_file.is_file():
            raise CliError(f"no such file: {onnx_file}")
        data = import_onnx(onnx_file)
        output.write_bytes(data)
    mid = "0x" + model_id(data).hex()
    if as_json:
        print(json.dumps({"file": str(output), "bytes": len(data), "model_id": mid}))
    else:
        console.print(f"wrote {output}: {len(data)} bytes, model id {mid}")


@app.command("info")
def info_cmd(
    model_file: Annotated[Path, typer.Argument(help="mlkit model file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a model's ops, parameters, input/output shapes and model id."""
    from mlkit.format import model_id

    with errors_as_lines():
        data, model = read_model(model_file)
    ops: dict[str, int] = {}
    for node in model.nodes:
        ops[node.op.name.lower()] = ops.get(node.op.name.lower(), 0) + 1
    ins = [{"dtype": str(d), "shape": list(s)} for d, s in model.input_specs()]
    outs = [{"dtype": str(d), "shape": list(s)} for d, s in model.output_specs()]
    info: dict[str, Any] = {
        "file": str(model_file),
        "bytes": len(data),
        "model_id": "0x" + model_id(data).hex(),
        "mode": model.mode.name.lower(),
        "params": sum(t.numel for t in model.tensors if t.data is not None),
        "nodes": len(model.nodes),
        "ops": ops,
        "inputs": ins,
        "outputs": outs,
    }
    if as_json:
        print(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    for key in ("file", "bytes", "model_id", "mode", "params", "nodes"):
        table.add_row(key, str(info[key]))
    table.add_row("ops", ", ".join(f"{k} x{v}" for k, v in ops.items()))
    table.add_row("inputs", "; ".join(f"{i['dtype']}{i['shape']}" for i in ins))
    table.add_row("outputs", "; ".join(f"{o['dtype']}{o['shape']}" for o in outs))
    Console().print(table)


@app.command("run")
def run_cmd(
    model_file: Annotated[Path, typer.Argument(help="mlkit model file.")],
    inputs: Annotated[
        list[Path], typer.Option("--input", "-i", help="Input .npy (repeat for several inputs).")
    ],
    vm: Annotated[bool, typer.Option("--vm", help="Run the MIPS guest in the VM (default: native).")] = False,
    native: Annotated[bool, typer.Option("--native", help="Run the native build (the default).")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the (first) output as .npy.")
    ] = None,
    new_tokens: Annotated[
        int, typer.Option("--new-tokens", help="Generate mode: number of tokens to generate.")
    ] = 16,
    png: Annotated[
        Path | None, typer.Option("--png", help="Save an image output (N x 3 x H x W) as PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run a model on .npy inputs, natively or in the VM, and print the output and its keccak256."""
    from mlkit.io import decode_payload

    if vm and native:
        raise fail("--vm and --native are exclusive")
    with errors_as_lines():
        data, model = read_model(model_file)
        payload = input_payload(model, [read_npy(p) for p in inputs], new_tokens)
        result = _run(data, payload, vm, as_json)
        arrays = decode_payload(result.output)
        if output is not None:
            np.save(output, arrays[0])
        if png is not None:
            from mlkit.models import save_png

            try:
                save_png(arrays[0], png)
            except ValueError as exc:
                raise CliError(str(exc)) from None
    report: dict[str, Any] = {
        "backend": "vm" if vm else "native",
        "output_sha": output_sha(result.output),
        "shapes": [list(a.shape) for a in arrays],
        "seconds": round(result.seconds, 6),
    }
    if sum(a.size for a in arrays) <= MAX_JSON_VALUES:
        report["output"] = [a.tolist() for a in arrays] if len(arrays) > 1 else arrays[0].tolist()
    if vm:
        report["steps"] = result.steps
        report["exit_code"] = result.exit_code
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        console.print(f"{key}: {value}", highlight=False, soft_wrap=True)


def _run(data: bytes, payload: bytes, vm: bool, quiet: bool) -> RunResult:
    from mipsvm.hashing import keccak256

    native_result = run_native(data, payload)
    if not vm:
        return native_result
    with _progress(quiet) as bar:
        task = bar.add_task("VM", total=None, info="")

        def tick(step: int) -> None:
            bar.update(task, info=f"{step:,} steps")

        result = run_vm(data, payload, keccak256(native_result.output), progress=tick)
    if result.exit_code != 0:
        raise CliError(f"the VM run exited with code {result.exit_code} after {result.steps} steps")
    if result.output != native_result.output:
        raise CliError("the VM output differs from the native output")
    return result
