"""Model cards: what a model is, what it costs and how good it is.

A card has two parts:

- what the model file shows, computed every time (`model_card`): the architecture recognised from the
  graph, parameters, ops, inputs and outputs, and the multiply-adds of one run (`multiply_adds`; for a
  generate-mode model, of one generation of the card's `workload`: a prompt of `prompt_tokens` tokens and
  `new_tokens` new ones, or the `generated` ones when the measured run stopped early at its eos);
- what only the model's maker knows, kept next to the model file as `NAME.card.json` (for `NAME.mlkit`;
  `read_card` / `write_card`): name, description, dataset, metrics (`test_accuracy`, `val_loss`, ...), the
  workload, the VM steps measured on it (`vm_steps`, with `vm_program`, the program hash of the guest that
  ran: another guest build takes other step counts), samples, training settings. The card records the
  model id it describes; a card written for other bytes is ignored (with a warning in the card), and steps
  measured with another guest are replaced by the estimate (with a warning).

Without a measured step count the card gives `vm_steps_estimate`, the multiply-adds times
`STEPS_PER_MAC` (whole runs of the reference models measure 36-52 steps per multiply-add, the dot product
kernel 32-43 of them, bench/mlkit.py). `rollml model info` prints the card with the
dispute cost class of `rollml.core.dispute.dispute_cost`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkit.format import Mode, Model, Op, decode_model, model_id
from mlkit.guest import InputError
from mlkit.plan import tile_of

if TYPE_CHECKING:
    from mlkit.models import Exported

CARD_SUFFIX = ".card.json"
STEPS_PER_MAC = 50
DEFAULT_WORKLOAD = {"prompt_tokens": 8, "new_tokens": 16}  # generate mode, when the card names none
# Card keys computed from the file: a card file cannot override them.
COMPUTED = frozenset(
    ("file", "bytes", "model_id", "mode", "architecture", "params", "nodes", "ops", "inputs", "outputs")
) | {"macs", "vm_steps_estimate"}


def card_path(model_path: Path) -> Path:
    """Where the card of `model_path` lives: `NAME.card.json` next to `NAME.mlkit`."""
    return model_path.with_suffix(CARD_SUFFIX)


def read_card(path: Path) -> dict[str, Any]:
    """The facts of a card file; {} if there is none (InputError if it is not a JSON object)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read model card {path}: {exc}") from None
    try:
        facts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed model card ({exc})") from None
    if not isinstance(facts, dict):
        raise InputError(f"{path}: malformed model card (not a JSON object)")
    return facts


def write_card(path: Path, facts: dict[str, Any], model: bytes | None = None) -> Path:
    """Write a card's facts (with the id of `model`, if given, so a card never describes other bytes)."""
    facts = dict(facts)
    if model is not None:
        facts["model_id"] = "0x" + model_id(model).hex()
    path.write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------
# What the file shows
# --------------------------------------------------------------------------------------------------------


def _taps(length: int, k: int, s: int, p: int, out: int, transposed: bool) -> int:
    """Kernel taps summed over the output positions of one axis (padding clipped, as ops.c does)."""
    if transposed:  # input i and tap t reach output i*s - p + t
        return sum(1 for i in range(length) for t in range(k) if 0 <= i * s - p + t < out)
    return sum(1 for o in range(out) for t in range(k) if 0 <= o * s - p + t < length)


def multiply_adds(model: Model | bytes, n_prompt: int = 0, n_new: int = 0) -> int:
    """The multiply-adds of one run's dot products: linear, matmul, convolutions (float and quantized) and
    attention (q.k and w.v). Generate mode: `n_prompt` prompt tokens and `n_new` new ones, where the prompt's
    prefill steps run only the nodes the KV caches need (graph.c)."""
    m = decode_model(model) if isinstance(model, bytes | bytearray) else model
    t = m.tensors

    def node_macs(nd: Any, pos: int) -> int:
        x, y = t[nd.inputs[0]].shape, t[nd.output].shape
        if nd.op in (Op.LINEAR, Op.MATMUL, Op.QLINEAR):
            return int(np.prod(y)) * x[-1]
        if nd.op in (Op.CONV2D, Op.CONV_TRANSPOSE2D, Op.QCONV2D):
            w, tr = t[nd.inputs[1]].shape, nd.op == Op.CONV_TRANSPOSE2D
            s, p = nd.ints[:2], nd.ints[2:4]
            taps = [_taps(x[2 + a], w[2 + a], s[a], p[a], y[2 + a], tr) for a in (0, 1)]
            return x[0] * y[1] * x[1] * taps[0] * taps[1]
        if nd.op == Op.ATTENTION:  # query i sees pos + i + 1 positions; q.k and w.v, C each
            return sum(2 * y[1] * (pos + i + 1) for i in range(x[0]))
        return 0

    if m.mode != Mode.GENERATE:
        return sum(node_macs(nd, 0) for nd in m.nodes)
    needed: set[int] = set()
    prefill: set[int] = set()
    for k in reversed(range(len(m.nodes))):
        nd = m.nodes[k]
        if nd.op == Op.ATTENTION or nd.output in needed:
            prefill.add(k)
            needed.update(nd.inputs)
    return sum(
        node_macs(nd, step)
        for step in range(n_prompt + n_new - 1)
        for k, nd in enumerate(m.nodes)
        if step + 1 >= n_prompt or k in prefill
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def architecture(model: Model) -> str:
    """A one-line description recognised from the graph's ops and shapes."""
    # an op the planner split into tiles (joined by concat nodes) is one op of the architecture
    ops = Counter(node.op for node in model.nodes if (tile_of(node) or (0, 0))[0] == 0)
    t = model.tensors
    shape_in = "; ".join(str(list(s)) for _, s in model.input_specs())
    shape_out = "; ".join(str(list(s)) for _, s in model.output_specs())
    if ops[Op.ATTENTION]:
        att = next(n for n in model.nodes if n.op == Op.ATTENTION)
        vocab = next((t[n.inputs[1]].shape[0] for n in model.nodes if n.op == Op.EMBEDDING), 0)
        width = t[att.output].shape[-1]
        how = "greedy generation" if model.mode == Mode.GENERATE else f"logits of {shape_in} tokens"
        return (
            f"GPT decoder (GPT-2 blocks): {ops[Op.ATTENTION]} layers, width {width}, {att.ints[0]} heads, "
            f"context {att.ints[1]}, vocabulary {vocab:,}; {how}"
        )
    if ops[Op.CONV_TRANSPOSE2D]:
        parts = [_n(ops[Op.CONV_TRANSPOSE2D], "transposed convolution")]
        parts += [_n(ops[op], name) for op, name in ((Op.CONV2D, "convolution"), (Op.BATCHNORM, "batchnorm"))]
        return f"transposed-convolution generator (DCGAN): {', '.join(parts)}; {shape_in} -> {shape_out}"
    if ops[Op.CONV2D]:
        pools = ops[Op.MAXPOOL2D] + ops[Op.AVGPOOL2D]
        return (
            f"CNN: {_n(ops[Op.CONV2D], 'convolution')}, {_n(pools, 'pool')}, "
            f"{_n(ops[Op.LINEAR], 'linear layer')}; {shape_in} -> {shape_out}"
        )
    linears = [n for n in model.nodes if n.op == Op.LINEAR]
    if linears:
        widths = [t[linears[0].inputs[1]].shape[1]] + [t[n.inputs[1]].shape[0] for n in linears]
        return f"MLP {'-'.join(map(str, widths))}; {shape_in} -> {shape_out}"
    return f"graph of {_n(len(model.nodes), 'node')}; {shape_in} -> {shape_out}"


def workload_of(model: Model, facts: dict[str, Any]) -> dict[str, int] | None:
    """The generation the card's figures are for (generate mode), from the card or the default."""
    if model.mode != Mode.GENERATE:
        return None
    w = facts.get("workload")
    if isinstance(w, dict) and all(isinstance(w.get(k), int) and w[k] >= 1 for k in DEFAULT_WORKLOAD):
        return {k: int(w[k]) for k in DEFAULT_WORKLOAD}
    return dict(DEFAULT_WORKLOAD)


def model_card(data: bytes, facts: dict[str, Any] | None = None, file: str = "") -> dict[str, Any]:
    """The card of the model `data`: the computed part, then the facts of its card file (`read_card`)."""
    model = decode_model(data)
    facts = dict(facts or {})
    mid = "0x" + model_id(data).hex()
    warning = None
    if facts.get("model_id", mid) != mid:
        warning = f"the card file describes another model ({facts['model_id']}); its facts are ignored"
        facts = {}
    ops: dict[str, int] = {}
    for node in model.nodes:
        ops[node.op.name.lower()] = ops.get(node.op.name.lower(), 0) + 1
    workload = workload_of(model, facts)
    generated = facts.get("vm_new_tokens")
    if workload and isinstance(generated, int) and 1 <= generated < workload["new_tokens"]:
        workload["generated"] = generated  # the run stopped at its eos: the figures are for this run
    n_new = workload.get("generated", workload["new_tokens"]) if workload else 0
    macs = multiply_adds(model, workload["prompt_tokens"], n_new) if workload else None
    card: dict[str, Any] = {
        "file": file,
        "name": facts.get("name"),
        "bytes": len(data),
        "model_id": mid,
        "mode": model.mode.name.lower(),
        "architecture": architecture(model),
        "params": sum(t.numel for t in model.tensors if t.data is not None),
        "nodes": len(model.nodes),
        "ops": ops,
        "inputs": [{"dtype": str(d), "shape": list(s)} for d, s in model.input_specs()],
        "outputs": [{"dtype": str(d), "shape": list(s)} for d, s in model.output_specs()],
        "workload": workload,
        "macs": macs if macs is not None else multiply_adds(model),
        "vm_steps": facts.get("vm_steps") if isinstance(facts.get("vm_steps"), int) else None,
        "dataset": facts.get("dataset"),
        "metrics": facts.get("metrics") if isinstance(facts.get("metrics"), dict) else {},
    }
    program = facts.get("vm_program")
    if card["vm_steps"] is not None and program is not None and program != guest_program_hash():
        card["vm_steps"] = None  # measured with another build of the guest: not this guest's count
        warning = f"the card's VM steps were measured with another guest program ({program}); estimated here"
    if card["vm_steps"] is not None:
        card["vm_program"] = program
    if card["vm_steps"] is None:
        card["vm_steps_estimate"] = card["macs"] * STEPS_PER_MAC
    for key, value in facts.items():
        if key not in card and key not in COMPUTED and key not in ("vm_program", "vm_new_tokens"):
            card[key] = value
    if warning:
        card["card_warning"] = warning
    return card


def guest_program_hash() -> str:
    """The program hash (initial state hash) of the mlkit guest the VM runs: step counts hold for it only."""
    from mlkit.guest import guest_program

    return "0x" + guest_program().state.hash().hex()


def measure_vm_steps(model: bytes, payload: bytes) -> dict[str, Any]:
    """The card facts of a VM run on `payload` (the native output's hash as the claim): `vm_steps`, the
    guest's steps to its exit, `vm_program`, the program hash of the guest that took them, and for a
    generate-mode model `vm_new_tokens`, the tokens it generated (fewer than asked after its eos)."""
    from mipsvm.hashing import keccak256
    from mlkit.guest import run_native, run_vm
    from mlkit.io import decode_payload

    output = run_native(model, payload).output
    res = run_vm(model, payload, keccak256(output))
    if res.exit_code != 0:
        raise InputError(f"the VM run exited with code {res.exit_code} after {res.steps} steps")
    facts: dict[str, Any] = {"vm_steps": res.steps, "vm_program": guest_program_hash()}
    if decode_model(model).mode == Mode.GENERATE:
        facts["vm_new_tokens"] = int(decode_payload(output)[0].size)
    return facts


# --------------------------------------------------------------------------------------------------------
# The reference models' facts
# --------------------------------------------------------------------------------------------------------

DIGITS = (
    "scikit-learn load_digits: 1,797 hand-written 8x8 digits upscaled to 28x28, 75/25 stratified split "
    "(test: 450 digits)"
)
DATASETS = {
    "mnist-mlp": DIGITS,
    "lenet": DIGITS,
    "dcgan32": "scikit-learn load_digits: 1,797 8x8 digits upscaled to 32x32, ink tinted in random colours "
    "(mlkit/gan.py; weights mlkit/weights/dcgan32.npz)",
    "dcgan128": "scikit-learn load_digits: 1,797 8x8 digits upscaled to 128x128, ink tinted in random "
    "colours (mlkit/gan.py; weights mlkit/weights/dcgan128.npz)",
    "gpt2-tiny": "none: seeded random weights",
    "gpt2": "none: seeded random weights in the GPT-2 124M configuration",
}


def reference_facts(exp: Exported, measure: bool = False) -> dict[str, Any]:
    """The card facts of a reference model (`mlkit.models.reference`); measure: run the example in the VM."""
    from mlkit.models import example_payload

    if exp.name == "fortune-gpt":  # its committed card (with the VM steps measured when it was trained)
        from mlkit.fortunes import committed

        return {k: v for k, v in committed()[2].items() if k != "model_id"}
    facts: dict[str, Any] = {"name": exp.name, "dataset": DATASETS.get(exp.name), "metrics": {}}
    if exp.accuracy is not None:
        facts["metrics"]["test_accuracy"] = round(exp.accuracy, 4)
    if exp.new_tokens is not None:
        facts["workload"] = {"prompt_tokens": len(exp.example), "new_tokens": exp.new_tokens}
    if exp.notes:
        facts["notes"] = exp.notes
    if measure:
        facts.update(measure_vm_steps(exp.model, example_payload(exp)))
    return facts


def save_reference(exp: Exported, out: Path, measure: bool = False) -> dict[str, Path]:
    """Write a reference model to `out` with its card (and its tokenizer, for a text model) next to it."""
    from mlkit.text import save_tokenizer, tokenizer_path

    out.write_bytes(exp.model)
    paths = {"model": out}
    if exp.name == "fortune-gpt":
        from mlkit.fortunes import committed

        paths["tokenizer"] = save_tokenizer(committed()[1], tokenizer_path(out))
    paths["card"] = write_card(card_path(out), reference_facts(exp, measure), exp.model)
    return paths


def save_exported(exp: Exported, out: Path, measure: bool = False) -> dict[str, Path]:
    """Write a model exported from the user's own torch module (`mlkit.models.export_user_module`) to `out`
    with its card: its name and where it came from (and, with `measure`, its example's VM steps)."""
    from mlkit.models import example_payload

    facts: dict[str, Any] = {"name": exp.name, "metrics": {}, "notes": exp.notes}
    if measure:
        facts.update(measure_vm_steps(exp.model, example_payload(exp)))
    out.write_bytes(exp.model)
    return {"model": out, "card": write_card(card_path(out), facts, exp.model)}
