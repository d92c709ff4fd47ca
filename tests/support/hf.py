"""A small GPT-2 checkpoint as transformers writes it: a randomly initialised GPT2LMHeadModel
(`save_pretrained`) and a GPT-2 BPE tokenizer built from small vocab.json / merges.txt files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

EOT = "<|endoftext|>"
# A few GPT-2 style merges over the byte-level alphabet ("Ġ" is the space byte).
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("Ġ", "s"), ("o", "n")]


def write_tokenizer_files(directory: Path) -> dict[str, int]:
    """vocab.json (the 256 byte symbols, the merges' results, <|endoftext|> last) and merges.txt."""
    from tokenizers import pre_tokenizers

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for a, b in MERGES:
        vocab.setdefault(a + b, len(vocab))
    vocab[EOT] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in MERGES)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab


def write_checkpoint(directory: Path, seed: int = 3, safe: bool = True) -> tuple[Any, Any]:
    """A small random GPT-2 and its tokenizer, saved as transformers saves them (plus vocab/merges);
    `safe=False`: the weights as pytorch_model.bin (`torch.save` of the state dict, as transformers < 5)."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer_files(directory)
    tok = transformers.GPT2Tokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")
    )
    tok.save_pretrained(directory)
    eot = vocab[EOT]
    cfg = transformers.GPT2Config(
        vocab_size=len(vocab),
        n_positions=48,
        n_embd=32,
        n_layer=2,
        n_head=4,
        initializer_range=0.3,  # a spread of logits, so greedy tokens vary
        bos_token_id=eot,
        eos_token_id=eot,
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(directory)
    if not safe:
        (directory / "model.safetensors").unlink()
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return model, tok


def expected_tokens(model: Any, prompt: list[int], n: int, eos: int) -> list[int]:
    """transformers' greedy tokens, cut after the end-of-text token as the mlkit model stops there."""
    from mlkit import models

    out = models.gpt2_greedy(model, np.asarray(prompt), n)
    return out[: out.index(eos) + 1] if eos in out else out
