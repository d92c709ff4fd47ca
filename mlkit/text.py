"""Text in and out of generate-mode models: the tokenizer that travels with a model, prompts, decoding.

A generate-mode model (docs/model-format.md section 4) maps token ids to token ids; the tokenizer that turns
text into those ids travels next to the model file as `NAME.tokenizer.json` (for `NAME.mlkit`): a file of
the Hugging Face `tokenizers` library (`Tokenizer.to_str()`), which holds the whole pipeline (normaliser,
pre-tokenizer, BPE vocabulary and merges, decoder and the special tokens the post-processor adds, such as
the fortune model's leading `<|endoftext|>`). The mlkit file itself carries no metadata (adding a section
would change the runtime in both builds for bytes it never reads), so the tokenizer is a sidecar, like the
model card (`mlkit.cards`): the model id commits to the weights, and `check_tokenizer` refuses a tokenizer
whose ids do not fit the model's embedding table.

`rollml model run --prompt` and `rollml request --prompt` use `prompt_payload` and `decode_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlkit.format import MAX_CTX, Mode, Model, Op
from mlkit.guest import InputError
from mlkit.io import generate_payload

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_SUFFIX = ".tokenizer.json"


def tokenizer_path(model_path: Path) -> Path:
    """Where the tokenizer of `model_path` lives: `NAME.tokenizer.json` next to `NAME.mlkit`."""
    return model_path.with_suffix(TOKENIZER_SUFFIX)


def load_tokenizer(path: Path) -> Tokenizer:
    """A `tokenizers` JSON file (InputError if it is missing or not a tokenizer)."""
    from tokenizers import Tokenizer

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read tokenizer {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a tokenizer file (not UTF-8 text)") from None
    try:
        return Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises plain Exceptions with a serde message
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a tokenizers JSON file ({first})") from None


def tokenizer_for(model_path: Path | None, override: Path | None = None) -> Tokenizer:
    """The tokenizer given (`override`), else the one next to `model_path` (InputError if there is none)."""
    if override is not None:
        return load_tokenizer(override)
    if model_path is None:
        raise InputError("with a model id, --prompt needs --tokenizer FILE (a tokenizers JSON file)")
    path = tokenizer_path(model_path)
    if not path.is_file():
        raise InputError(f"no tokenizer next to {model_path} ({path.name}); pass --tokenizer FILE")
    return load_tokenizer(path)


def save_tokenizer(tok: Tokenizer, path: Path) -> Path:
    path.write_text(tok.to_str(pretty=False) + "\n", encoding="utf-8")
    return path


def model_vocab(model: Model) -> int | None:
    """The number of token ids a generate-mode model takes: the rows of the embedding table its token input
    (graph input 0) indexes; None if the model is not a generate-mode model with such an embedding."""
    if model.mode != Mode.GENERATE or not model.inputs:
        return None
    token = model.inputs[0]
    for node in model.nodes:
        if node.op == Op.EMBEDDING and node.inputs[0] == token:
            return model.tensors[node.inputs[1]].shape[0]
    return None


def model_context(model: Model) -> int:
    """The positions a model can attend to: the smallest `max_ctx` of its attention nodes."""
    ctx = [node.ints[1] for node in model.nodes if node.op == Op.ATTENTION]
    return min(ctx, default=MAX_CTX)


def check_tokenizer(tok: Tokenizer, model: Model, where: str = "the tokenizer") -> None:
    """InputError unless `model` is a generate-mode model whose embedding takes every id of `tok`."""
    if model.mode != Mode.GENERATE:
        raise InputError("--prompt needs a generate-mode model (a text model); this one is plain")
    vocab = model_vocab(model)
    if vocab is None:
        raise InputError("the model's token input does not feed an embedding: not a text model")
    size = tok.get_vocab_size(with_added_tokens=True)
    if size > vocab:
        raise InputError(
            f"{where} has {size} tokens but the model's embedding has {vocab}: not its tokenizer"
        )


def encode_prompt(tok: Tokenizer, text: str) -> list[int]:
    """The prompt's token ids, with the special tokens the tokenizer adds (e.g. a leading end-of-text)."""
    ids = list(tok.encode(text).ids)
    if not ids:
        raise InputError("the prompt gives no tokens (this tokenizer adds no start token): give some text")
    return ids


def prompt_payload(model: Model, tok: Tokenizer, text: str, new_tokens: int) -> tuple[bytes, list[int]]:
    """The input payload of a generation from `text` (and the prompt's ids), checked against the context."""
    check_tokenizer(tok, model)
    ids = encode_prompt(tok, text)
    ctx = model_context(model)
    if new_tokens < 1 or len(ids) + new_tokens - 1 > ctx:
        room = ctx - len(ids) + 1
        raise InputError(
            f"the prompt is {len(ids)} tokens and the model's context {ctx} positions: "
            f"--new-tokens must be 1..{room}"
            if room >= 1
            else f"the prompt is {len(ids)} tokens, longer than the model's context of {ctx}"
        )
    return generate_payload(ids, new_tokens), ids


def decode_tokens(tok: Tokenizer, ids: Sequence[int]) -> str:
    """Generated ids as text (special tokens such as end-of-text are dropped)."""
    return str(tok.decode([int(i) for i in ids], skip_special_tokens=True))
