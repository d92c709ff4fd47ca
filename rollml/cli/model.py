"""`rollml model ...`: export, import, inspect and run mlkit models (natively or in the VM).

    rollml model export lenet -o lenet.mlkit [--example-input x.npy] [--measure]
    rollml model export --module net.py[:model] [-o net.mlkit]   # your own torch nn.Module (docs/models.md)
    rollml model import-onnx net.onnx -o net.mlkit
    rollml model import-hf DIR -o gpt2.mlkit             # a Hugging Face GPT-2 directory
    rollml model info lenet.mlkit [--json]               # the model card
    rollml model run lenet.mlkit --input x.npy [--native | --vm] [--output y.npy] [--json]
    rollml model run fortune-gpt.mlkit --prompt "Love is" [--new-tokens 24]
    rollml model blend-sheet [dcgan32 | GEN.mlkit] --seed-a 1 --seed-b 2 --steps 9 -o sheet.png [--json]

A model's tokenizer (`NAME.tokenizer.json`) and card (`NAME.card.json`) live next to `NAME.mlkit`
(`mlkit.text`, `mlkit.cards`); `export` and `import-hf` write them.

Every expected failure (a missing or malformed file, an input of the wrong shape or dtype, a model the
runtime rejects) prints one line `error: ...` on stderr and exits non-zero; no traceback.

The library behind it is `mlkit.guest` (reading models and inputs, native and VM runs), `mlkit.text`
(prompts and tokenizers), `mlkit.cards` (model cards) and `mlkit.hf_import` (GPT-2 checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from rollml.cli.common import CliError, errors_as_lines, fail, progress_bar

if TYPE_CHECKING:
    from mlkit.guest import NativeRun, VMRun

app = typer.Typer(help="Export, import, inspect and run mlkit models.", no_args_is_help=True)
console = Console(stderr=True)

MAX_JSON_VALUES = 256  # --json includes the output values up to this many elements


# --------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------


@app.command("export")
def export_cmd(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A reference model: mnist-mlp, lenet, dcgan32, dcgan128, gpt2-tiny, gpt2 or fortune-gpt. "
            "With --module: the name of your model (default: the file's name)."
        ),
    ] = None,
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            help="FILE.py[:FACTORY]: export your own torch model. FACTORY (default 'model') is a function of "
            "FILE.py that takes no arguments and returns (module, example_input): a torch nn.Module and one "
            "input tensor (or numpy array) of exactly the shape and dtype the model takes, batch included.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Model file to write (default: NAME.mlkit).")
    ] = None,
    example_input: Annotated[
        Path | None, typer.Option("--example-input", help="Also write the example input.")
    ] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Run the example in the VM and put its steps on the card.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Build a reference model (train or seed it), or export your own torch module (--module), to the mlkit
    format, with its card (NAME.card.json next to the model file)."""
    from mlkit import models
    from mlkit.cards import save_exported, save_reference

    with errors_as_lines():
        if module is None:
            if name is None:
                raise CliError(
                    f"give a reference model ({', '.join(models.REFERENCE_MODELS)}) or --module FILE.py"
                )
            if name not in models.REFERENCE_MODELS:
                raise CliError(
                    f"unknown model {name!r}; expected one of {', '.join(models.REFERENCE_MODELS)}"
                )
        with progress_bar(as_json) as bar:
            bar.add_task(f"building {name or module}", total=None, info="")
            exp = models.reference(name) if module is None else models.export_user_module(module, name)
            output = output or Path(f"{exp.name}.mlkit")
            if measure:
                bar.add_task(f"running {exp.name}'s example in the VM", total=None, info="")
            paths = (save_reference if module is None else save_exported)(exp, output, measure)
        input_file = ""
        if example_input is not None:
            np.save(example_input, exp.example)
            input_file = str(example_input)
        entry = models.manifest_entry(exp, str(output), input_file)
        entry.update({f"{what}_file": str(path) for what, path in paths.items() if what != "model"})
    if as_json:
        print(json.dumps(entry))
    else:
        acc = f", test accuracy {exp.accuracy:.4f}" if exp.accuracy is not None else ""
        extra = "".join(f", {what} {path}" for what, path in paths.items() if what != "model")
        console.print(
            f"wrote {output}: {entry['params']} parameters, model id {entry['model_id']}{acc}{extra}",
            highlight=False,
        )


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


@app.command("import-hf")
def import_hf_cmd(
    directory: Annotated[
        Path,
        typer.Argument(help="Hugging Face GPT-2 directory: config.json, weights, vocab.json, merges.txt."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Import a GPT-2 checkpoint from disk: the model, its tokenizer and its card (next to the model)."""
    from mlkit.format import model_id
    from mlkit.hf_import import import_gpt2, write_imported

    with errors_as_lines(), progress_bar(as_json) as bar:
        bar.add_task(f"importing {directory}", total=None, info="")
        imported = import_gpt2(directory)
        paths = write_imported(imported, output)
    spec = imported.spec
    report = {
        "file": str(output),
        "bytes": len(imported.model),
        "model_id": "0x" + model_id(imported.model).hex(),
        "layers": spec.n_layer,
        "width": spec.n_embd,
        "heads": spec.n_head,
        "context": spec.n_positions,
        "vocab": spec.vocab_size,
        "eos": imported.eos,
        "tokenizer_file": str(paths["tokenizer"]),
        "card_file": str(paths["card"]),
    }
    if as_json:
        print(json.dumps(report))
        return
    console.print(
        f"wrote {output}: GPT-2 with {spec.n_layer} layers, width {spec.n_embd}, {spec.n_head} heads, "
        f"context {spec.n_positions}, vocabulary {spec.vocab_size:,}; {len(imported.model):,} bytes, "
        f"model id {report['model_id']}; tokenizer {paths['tokenizer']}, card {paths['card']}",
        highlight=False,
    )


@app.command("info")
def info_cmd(
    model_file: Annotated[Path, typer.Argument(help="mlkit model file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a model's card: architecture, parameters, MACs, VM steps, data and metrics, dispute cost."""
    from dataclasses import asdict

    from mlkit.cards import card_path, model_card, read_card
    from mlkit.guest import read_model
    from mlkit.text import tokenizer_path
    from rollml.core.deploy import DEV_ARITY
    from rollml.core.dispute import dispute_cost

    with errors_as_lines():
        data, _ = read_model(model_file)
        card = model_card(data, read_card(card_path(model_file)), str(model_file))
        steps = card["vm_steps"] if card["vm_steps"] is not None else card["vm_steps_estimate"]
        cost = asdict(dispute_cost(max(1, steps), DEV_ARITY))
    card["dispute"] = {**cost, "steps_measured": card["vm_steps"] is not None}
    tok = tokenizer_path(model_file)
    card["tokenizer_file"] = str(tok) if tok.is_file() else None
    if as_json:
        print(json.dumps(card))
        return
    _print_card(card)


def _print_card(card: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # ids and paths stay whole
    rows: list[tuple[str, Any]] = [
        ("name", card["name"]),
        ("description", card.get("description")),
        ("file", card["file"]),
        ("architecture", card["architecture"]),
        ("mode", card["mode"]),
        ("params", f"{card['params']:,}"),
    ]
    w = card["workload"]
    per = " (one run)"
    if w:
        new = f"{w['new_tokens']} new" if "generated" not in w else f"{w['generated']} new (stopped at eos)"
        per = f" (a prompt of {w['prompt_tokens']} tokens, {new})"
    rows.append(("MACs", f"{card['macs']:,}{per}"))
    if card["vm_steps"] is not None:
        rows.append(("VM steps", f"{card['vm_steps']:,} (measured)"))
    else:
        rows.append(("VM steps", f"~{card['vm_steps_estimate']:,} (estimated from the MACs, not measured)"))
    d = card["dispute"]
    rows.append(
        ("dispute cost", f"{d['cost_class']}: {d['rounds']} rounds, {d['moves']} moves (arity {d['arity']})")
    )
    rows.append(("dataset", card["dataset"] or "unknown (no card file)"))
    if card["metrics"]:
        rows.append(("metrics", ", ".join(f"{k} {v}" for k, v in card["metrics"].items())))
    rows += [("model_id", card["model_id"]), ("bytes", f"{card['bytes']:,}"), ("nodes", card["nodes"])]
    rows.append(("ops", ", ".join(f"{k} x{v}" for k, v in card["ops"].items())))
    rows.append(("inputs", "; ".join(f"{i['dtype']}{i['shape']}" for i in card["inputs"])))
    rows.append(("outputs", "; ".join(f"{o['dtype']}{o['shape']}" for o in card["outputs"])))
    if card["tokenizer_file"]:
        rows.append(("tokenizer", card["tokenizer_file"]))
    for sample in card.get("samples") or []:
        if isinstance(sample, dict):
            rows.append(("sample", json.dumps(f"{sample.get('prompt', '')}{sample.get('text', '')}")))
    if card.get("card_warning"):
        rows.append(("warning", card["card_warning"]))
    for key, value in rows:
        if value is not None:
            table.add_row(key, str(value))
    Console().print(table, highlight=False)


@app.command("run")
def run_cmd(
    model_file: Annotated[Path, typer.Argument(help="mlkit model file.")],
    inputs: Annotated[
        list[Path] | None, typer.Option("--input", "-i", help="Input .npy (repeat for several inputs).")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Text model: generate from this text (instead of --input).")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="With --prompt: tokenizer (default: NAME.tokenizer.json)."),
    ] = None,
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
    """Run a model on .npy inputs (or a text model on --prompt), natively or in the VM, and print the output
    (the generated text) and its keccak256."""
    from mlkit.guest import VMRun, input_payload, output_sha, read_model, read_npy
    from mlkit.io import decode_payload
    from mlkit.text import decode_tokens, prompt_payload, tokenizer_for

    if vm and native:
        raise fail("--vm and --native are exclusive")
    if (prompt is None) == (not inputs):
        raise fail("give the input as --input X.npy or, for a text model, as --prompt TEXT (one of them)")
    with errors_as_lines():
        data, model = read_model(model_file)
        if prompt is not None:
            tok = tokenizer_for(model_file, tokenizer)
            payload, prompt_ids = prompt_payload(model, tok, prompt, new_tokens)
        else:
            payload = input_payload(model, [read_npy(p) for p in inputs or []], new_tokens)
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
    if isinstance(result, VMRun):
        report["steps"] = result.steps
        report["exit_code"] = result.exit_code
    if prompt is not None:
        report.update(prompt=prompt, prompt_tokens=prompt_ids, text=decode_tokens(tok, arrays[0].tolist()))
    if as_json:
        print(json.dumps(report))
        return
    if prompt is not None:
        print(prompt + report["text"], flush=True)  # the text on stdout, the figures on stderr
    for key, value in report.items():
        if key not in ("prompt", "text"):
            console.print(f"{key}: {value}", highlight=False, soft_wrap=True)


@app.command("blend-sheet")
def blend_sheet_cmd(
    model: Annotated[
        str, typer.Argument(help="The generator: a model file, or a reference name (dcgan32, dcgan128).")
    ] = "dcgan32",
    seed_a: Annotated[int, typer.Option("--seed-a", help="The first parent's GanNFT seed.")] = 1,
    seed_b: Annotated[int, typer.Option("--seed-b", help="The second parent's GanNFT seed.")] = 2,
    steps: Annotated[int, typer.Option("--steps", help="Images from weight 0 to 1 (at least 2).")] = 9,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")] = Path("blend-sheet.png"),
    scale: Annotated[int, typer.Option("--scale", help="Pixels per image pixel (1-16).")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write a contact sheet of a blend sweep: the generator's images (run natively) for GanNFT blend
    weights 0 .. 1 between the latents of two seeds, in one PNG row (the ends are the parents)."""
    import time

    from mlkit.format import model_id
    from mlkit.models import image_grid, save_png
    from rollml.core.gan_nft import WEIGHT_ONE, blend_sheet

    with errors_as_lines():
        if not 1 <= scale <= 16:
            raise CliError(f"--scale is 1 .. 16, got {scale}")
        for flag, seed in (("--seed-a", seed_a), ("--seed-b", seed_b)):
            if not 0 <= seed < 1 << 256:
                raise CliError(f"{flag} is a uint256, got {seed}")
        data = _generator_model(model, as_json)
        t0 = time.perf_counter()
        with progress_bar(as_json) as bar:
            task = bar.add_task("blending", total=max(steps, 2), info="")
            sheet = blend_sheet(data, seed_a, seed_b, steps, lambda done: bar.update(task, completed=done))
        png = save_png(image_grid(sheet.images), output, scale=scale)
    report = {
        "file": str(png),
        "model_id": "0x" + model_id(data).hex(),
        "seed_a": seed_a,
        "seed_b": seed_b,
        "weights": sheet.weights,
        "weight_one": WEIGHT_ONE,
        "output_shas": sheet.output_shas,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        print(json.dumps(report))
    else:
        console.print(f"wrote {png}: {len(sheet.weights)} images, weights {sheet.weights}", highlight=False)


def _generator_model(model: str, quiet: bool) -> bytes:
    """A model file's bytes, or a reference generator built (cached) by name."""
    from mlkit.guest import read_model
    from mlkit.models import GENERATORS, reference_model

    path = Path(model)
    if path.is_file():
        return read_model(path)[0]
    if model not in GENERATORS:
        raise CliError(f"no such file and no reference generator: {model!r} (try {', '.join(GENERATORS)})")
    with progress_bar(quiet) as bar:
        bar.add_task(f"building {model}", total=None, info="")
        return reference_model(model)


def _run(data: bytes, payload: bytes, vm: bool, quiet: bool) -> NativeRun | VMRun:
    from mipsvm.hashing import keccak256
    from mlkit.guest import run_native, run_vm

    native_result = run_native(data, payload)
    if not vm:
        return native_result
    with progress_bar(quiet) as bar:
        task = bar.add_task("VM", total=None, info="")

        def tick(step: int) -> None:
            bar.update(task, info=f"{step:,} steps")

        result = run_vm(data, payload, keccak256(native_result.output), progress=tick)
    if result.exit_code != 0:
        raise CliError(f"the VM run exited with code {result.exit_code} after {result.steps} steps")
    if result.output != native_result.output:
        raise CliError("the VM output differs from the native output")
    return result
