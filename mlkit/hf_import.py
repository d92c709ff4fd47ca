"""GPT-2 checkpoints from disk: a Hugging Face model directory -> an mlkit model, its tokenizer and card.

    rollml model import-hf DIR -o gpt2.mlkit     # writes gpt2.mlkit, gpt2.tokenizer.json, gpt2.card.json

DIR is what `save_pretrained` writes (or a downloaded snapshot of a model repository such as
openai-community/gpt2): `config.json` (`model_type` "gpt2"), the weights in `model.safetensors` (read with
the `safetensors` library) or `pytorch_model.bin` (read with `torch.load(weights_only=True)`), and the
GPT-2 tokenizer files `vocab.json` + `merges.txt` (without them, the `tokenizer.json` that transformers 5
writes instead). Tensor names may carry the `transformer.` prefix
(`GPT2LMHeadModel`) or not (`GPT2Model`, the original checkpoints); `lm_head.weight` is optional (GPT-2 ties
it to the token embedding). The model is exported in generate mode (greedy generation, stopping after the
config's `eos_token_id`) by `mlkit.export.gpt2_weights_graph`, which checks every tensor's shape. The
tokenizer is GPT-2's byte-level BPE rebuilt with the `tokenizers` library from vocab.json and merges.txt (as
transformers' `GPT2TokenizerFast` builds it), with the config's eos/bos token as a special token; it is
saved next to the model (`mlkit.text`).

Anything wrong (a missing file, a config that is not GPT-2, a malformed or incomplete checkpoint, a
tokenizer that does not fit) raises `CheckpointError` with one line saying what and where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkit.export import ExportError, Gpt2Spec, gpt2_spec, gpt2_weights_graph

if TYPE_CHECKING:
    from tokenizers import Tokenizer

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older checkpoints, not weights
DEFAULT_WORKLOAD = {"prompt_tokens": 8, "new_tokens": 16}


class CheckpointError(ValueError):
    """A directory that is not a readable GPT-2 checkpoint, said in one line."""


@dataclass
class ImportedGpt2:
    model: bytes  # the mlkit model (generate mode)
    tokenizer: Tokenizer
    spec: Gpt2Spec
    eos: int  # gen_eos of the model, -1 for none
    facts: dict[str, Any]  # the card facts (mlkit.cards)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_config(directory: Path) -> dict[str, Any]:
    """config.json, checked to be a GPT-2 config."""
    path = directory / "config.json"
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory")
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json: not a Hugging Face model directory")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable config ({_first_line(exc)})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: malformed config (not a JSON object)")
    kind = cfg.get("model_type")
    if kind != "gpt2":
        raise CheckpointError(f"{path}: model_type {kind!r} is not GPT-2 (import-hf reads GPT-2 checkpoints)")
    return cfg


def _tensors_from_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 (a safe_open handle is not a mapping)
                if not key.endswith(BUFFERS):
                    out[key] = f.get_tensor(key)
    except Exception as exc:  # safetensors raises SafetensorError (an Exception) and TypeError for dtypes
        raise CheckpointError(f"{path}: malformed safetensors file ({_first_line(exc)})") from None
    return out


def _tensors_from_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading pytorch_model.bin needs torch (pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors of a broken file
        raise CheckpointError(f"{path}: malformed PyTorch checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: malformed PyTorch checkpoint (not a state dict of tensors)")
    return {
        k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
        for k, v in state.items()
        if not k.endswith(BUFFERS)
    }


def read_weights(directory: Path) -> tuple[dict[str, np.ndarray], str]:
    """The state dict (names without the `transformer.` prefix) and the file it came from."""
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            raw = (
                _tensors_from_safetensors(path)
                if name.endswith(".safetensors")
                else _tensors_from_torch(path)
            )
            weights = {k.removeprefix("transformer."): v for k, v in raw.items()}
            bad = next((k for k, v in weights.items() if not np.issubdtype(v.dtype, np.floating)), None)
            if bad is not None:
                raise CheckpointError(f"{path}: tensor {bad!r} is {weights[bad].dtype}, not floating point")
            return weights, name
    if (directory / "model.safetensors.index.json").is_file():
        raise CheckpointError(
            f"{directory}: sharded checkpoints are not supported (merge into model.safetensors)"
        )
    raise CheckpointError(f"{directory} has no model.safetensors or pytorch_model.bin")


def read_tokenizer(directory: Path, cfg: dict[str, Any]) -> Tokenizer:
    """GPT-2's byte-level BPE from vocab.json + merges.txt (with the config's eos/bos as special tokens)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    if not (vocab_path.is_file() and merges_path.is_file()) and (directory / "tokenizer.json").is_file():
        return _tokenizer_json(directory / "tokenizer.json")  # what transformers >= 5 save_pretrained writes
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise CheckpointError(
                f"{directory} has no {path.name} (GPT-2 tokenizer: vocab.json + merges.txt or tokenizer.json)"
            )
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"unreadable tokenizer file in {directory} ({_first_line(exc)})") from None
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in vocab.items()
    ):
        raise CheckpointError(f"{vocab_path}: malformed vocabulary (expected a JSON object of token -> id)")
    merges: list[tuple[str, str]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if (
            len(parts) != 2
            or parts[0] not in vocab
            or parts[1] not in vocab
            or parts[0] + parts[1] not in vocab
        ):
            raise CheckpointError(f"{merges_path}:{n}: malformed merge {line!r} (two tokens of vocab.json)")
        merges.append((parts[0], parts[1]))
    prefix_space = False
    tok_cfg_path = directory / "tokenizer_config.json"
    if tok_cfg_path.is_file():
        try:
            prefix_space = bool(json.loads(tok_cfg_path.read_text(encoding="utf-8")).get("add_prefix_space"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise CheckpointError(f"{tok_cfg_path}: unreadable ({_first_line(exc)})") from None
    try:
        tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise CheckpointError(
            f"{directory}: vocab.json and merges.txt do not make a BPE ({_first_line(exc)})"
        ) from None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    by_id = {v: k for k, v in vocab.items()}
    specials = {by_id[i] for i in (cfg.get("eos_token_id"), cfg.get("bos_token_id")) if i in by_id}
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in sorted(specials)])
    return tok


def _tokenizer_json(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise CheckpointError(f"{path}: not a tokenizers JSON file ({_first_line(exc)})") from None


def import_gpt2(directory: Path) -> ImportedGpt2:
    """Read a Hugging Face GPT-2 directory into an mlkit model (generate mode) with its tokenizer."""
    directory = Path(directory)
    cfg = read_config(directory)
    try:
        spec = gpt2_spec(cfg)
    except ExportError as exc:
        raise CheckpointError(f"{directory / 'config.json'}: {exc}") from None
    tok = read_tokenizer(directory, cfg)
    size = tok.get_vocab_size(with_added_tokens=True)
    if size > spec.vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {size} tokens but the model's vocab_size is {spec.vocab_size}"
        )
    weights, weights_file = read_weights(directory)
    eos = cfg.get("eos_token_id")
    eos = eos if isinstance(eos, int) and 0 <= eos < spec.vocab_size else -1
    try:
        model = gpt2_weights_graph(spec, weights, "generate", eos=eos).to_bytes()
    except ExportError as exc:
        raise CheckpointError(f"{directory / weights_file}: {exc}") from None
    facts: dict[str, Any] = {
        "name": directory.resolve().name,
        "description": f"GPT-2 checkpoint imported from {directory} ({weights_file})",
        "dataset": "unknown to rollml: see the checkpoint's own model card (OpenAI's GPT-2: WebText)",
        "workload": dict(DEFAULT_WORKLOAD),
        "tokenizer": "GPT-2 byte-level BPE (vocab.json + merges.txt)",
        "source": {"dir": str(directory), "weights": weights_file, "eos_token_id": eos},
    }
    return ImportedGpt2(model, tok, spec, eos, facts)


def write_imported(imported: ImportedGpt2, out: Path) -> dict[str, Path]:
    """Write the model to `out`, its tokenizer and its card next to it."""
    from mlkit.cards import card_path, write_card
    from mlkit.text import save_tokenizer, tokenizer_path

    out.write_bytes(imported.model)
    save_tokenizer(imported.tokenizer, tokenizer_path(out))
    write_card(card_path(out), imported.facts, imported.model)
    return {"model": out, "tokenizer": tokenizer_path(out), "card": card_path(out)}
