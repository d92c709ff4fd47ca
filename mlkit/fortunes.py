"""fortune-gpt: a small GPT trained on the fortune cookies that ship in Debian's `fortunes` packages.

- **Corpus**: the English text files of the Debian packages `fortunes` and `fortunes-min` (`apt-get install
  fortunes`; files in /usr/share/games/fortunes; `CORPUS_FILES` lists exactly which, leaving out the
  ASCII art files and `translate-me`). A file is a list of fortunes separated by lines holding `%`; the
  terminal overstrike sequences (`X\\b`) and other control characters except tab and newline are removed.
  Every 20th fortune (in file order) is held out for validation.
- **Tokenizer**: a byte-level BPE (GPT-2's pre-tokenizer and byte alphabet) of `vocab_size` tokens trained
  with the `tokenizers` library on the training fortunes, plus `<|endoftext|>` (id 0), which separates the
  fortunes in the token stream and which the tokenizer adds in front of every prompt (a prompt starts a new
  fortune); generation stops after it (the model's `gen_eos`).
- **Model**: `transformers.GPT2LMHeadModel` (so the same mlkit ops as GPT-2, exported by
  `mlkit.export.export_gpt2`), `TextTrainConfig`: 4 layers, 128 wide, 4 heads, 128 positions, ~0.94M
  parameters. AdamW, 2,400 steps of 32 random windows of the training stream, warmup and cosine decay,
  seeded, with `torch.use_deterministic_algorithms` on one thread.

`scripts/train_fortune_gpt.py` runs it (~20 minutes on 2 cores) and writes the model, its tokenizer and its
card into mlkit/assets/, where the trained files are committed; `reference("fortune-gpt")` loads them.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mlkit.models import Exported

NAME = "fortune-gpt"
FORTUNES_DIR = Path("/usr/share/games/fortunes")
# The English prose of `fortunes` and `fortunes-min` 1:1.99.1 (Debian bookworm): every text file but the
# ASCII art ones (art, ascii-art) and translate-me.
CORPUS_FILES = (
    "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education", "ethnic", "food",
    "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "literature",
    "love", "magic", "medicine", "men-women", "miscellaneous", "news", "paradoxum", "people", "perl", "pets",
    "platitudes", "politics", "pratchett", "riddles", "science", "songs-poems", "sports", "startrek", "tao",
    "wisdom", "work", "zippy",
)  # fmt: skip
VAL_EVERY = 20  # fortune i is held out when i % VAL_EVERY == 0
EOT = "<|endoftext|>"
EOT_ID = 0
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# The example generation (the demo's request, the card's VM steps and MACs): a prompt and 24 new tokens.
EXAMPLE_PROMPT = "The secret of success is"
EXAMPLE_NEW_TOKENS = 24
SAMPLE_PROMPTS = ("", "A computer", "Love is")
SAMPLE_NEW_TOKENS = 48


class CorpusError(RuntimeError):
    """The fortunes corpus is not installed."""


@dataclass(frozen=True)
class Corpus:
    train: list[str]
    val: list[str]
    sha256: str  # of the cleaned fortunes, joined (pins the corpus the model was trained on)

    @property
    def chars(self) -> int:
        return sum(len(f) for f in self.train) + sum(len(f) for f in self.val)


def load_corpus(directory: Path = FORTUNES_DIR) -> Corpus:
    """The cleaned fortunes of `CORPUS_FILES`, split train / validation (every `VAL_EVERY`th)."""
    fortunes: list[str] = []
    for name in CORPUS_FILES:
        path = directory / name
        try:
            raw = path.read_bytes().decode("utf-8", "replace")
        except OSError:
            raise CorpusError(
                f"{path} is missing: install the corpus (`apt-get install fortunes`, scripts/bootstrap.sh)"
            ) from None
        raw = re.sub(r".\x08", "", raw)  # overstrike: "X\bX" (bold), "_\bX" (underline)
        for text in re.split(r"\n%\n", raw):
            text = re.sub(r"[^\t\n\x20-\x7e]", "", text).strip("\n")
            if text.strip() and text.strip() != "%":
                fortunes.append(text)
    digest = hashlib.sha256("\x00".join(fortunes).encode()).hexdigest()
    train = [f for i, f in enumerate(fortunes) if i % VAL_EVERY]
    val = [f for i, f in enumerate(fortunes) if i % VAL_EVERY == 0]
    return Corpus(train, val, digest)


def train_tokenizer(corpus: Corpus, vocab_size: int) -> Tokenizer:
    """Byte-level BPE on the training fortunes; `<|endoftext|>` is id 0 and starts every encoded prompt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus.train, trainer)  # deterministic for the same input
    tok.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", special_tokens=[(EOT, EOT_ID)])
    if tok.token_to_id(EOT) != EOT_ID:
        raise RuntimeError(f"{EOT} is not id {EOT_ID}")
    return tok


def token_stream(tok: Tokenizer, fortunes: list[str]) -> np.ndarray:
    """`<eot> f1 <eot> f2 ... <eot>` as int64 ids."""
    ids: list[int] = []
    for enc in tok.encode_batch(fortunes, add_special_tokens=False):
        ids.append(EOT_ID)
        ids.extend(enc.ids)
    ids.append(EOT_ID)
    return np.asarray(ids, dtype=np.int64)


# --------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextTrainConfig:
    vocab_size: int = 1024
    n_ctx: int = 128
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    dropout: float = 0.1
    steps: int = 2400
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 400
    seed: int = 20260116
    threads: int = 1  # one thread: the fastest under load, and deterministic anywhere


@dataclass
class TrainedText:
    """A trained model with its tokenizer and what the training measured."""

    model: Any  # transformers.GPT2LMHeadModel, eval mode
    tokenizer: Tokenizer
    config: TextTrainConfig
    corpus: Corpus
    val_loss: float  # mean cross-entropy per token (nats) on the validation fortunes
    val_bits_per_char: float
    train_loss: float  # mean of the last 100 steps' batch losses
    seconds: float  # wall clock
    cpu_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def gpt_config(cfg: TextTrainConfig) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.n_ctx,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
    )


def learning_rate(cfg: TextTrainConfig, step: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, frac)))


def evaluate(model: Any, stream: np.ndarray, n_ctx: int, batch_size: int = 32) -> tuple[float, int]:
    """Total cross-entropy (nats) over `stream` in non-overlapping windows of n_ctx + 1 tokens (each token
    but the first is predicted once, the last partial window included), and how many tokens were predicted."""
    import torch

    full = (len(stream) - 1) // n_ctx  # windows of n_ctx + 1 tokens, overlapping by one
    windows = [stream[i * n_ctx : i * n_ctx + n_ctx + 1] for i in range(full)]
    if full * n_ctx < len(stream) - 1:
        windows.append(stream[full * n_ctx :])  # the ragged last window
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            group = windows[i : i + batch_size]
            for size in sorted({len(w) for w in group}):
                ids = torch.from_numpy(np.stack([w for w in group if len(w) == size]))
                logits = model(input_ids=ids[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
                )
                total += float(loss)
                count += ids.shape[0] * (size - 1)
    return total, count


def train(
    cfg: TextTrainConfig = TextTrainConfig(),
    corpus: Corpus | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainedText:
    """Train fortune-gpt (deterministic for a given torch build and `cfg.threads`)."""
    import torch
    from transformers import GPT2LMHeadModel

    t0, c0 = time.perf_counter(), time.process_time()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)
    corpus = corpus or load_corpus()
    tok = train_tokenizer(corpus, cfg.vocab_size)
    train_ids = torch.from_numpy(token_stream(tok, corpus.train))
    val_ids = token_stream(tok, corpus.val)
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(gpt_config(cfg))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    offsets = torch.arange(cfg.n_ctx + 1)
    history: list[dict[str, float]] = []
    recent: list[float] = []
    for step in range(cfg.steps):
        model.train()
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        starts = torch.randint(0, len(train_ids) - cfg.n_ctx - 1, (cfg.batch_size,), generator=gen)
        batch = train_ids[starts[:, None] + offsets]
        logits = model(input_ids=batch[:, :-1]).logits  # position t predicts token t + 1
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        recent = [*recent[-99:], float(loss.detach())]
        if progress is not None:
            progress(step + 1, cfg.steps, recent[-1])
        if (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            nats, n = evaluate(model, val_ids, cfg.n_ctx)
            history.append({"step": step + 1, "train_loss": sum(recent) / len(recent), "val_loss": nats / n})
    nats, n = evaluate(model, val_ids, cfg.n_ctx)
    val_chars = sum(len(f) for f in corpus.val) + len(corpus.val)  # each <eot> counts as one character
    train_loss = sum(recent) / max(1, len(recent))
    history.append({"step": cfg.steps, "train_loss": train_loss, "val_loss": nats / n})
    model.eval()
    return TrainedText(
        model=model,
        tokenizer=tok,
        config=cfg,
        corpus=corpus,
        val_loss=nats / n,
        val_bits_per_char=nats / math.log(2) / val_chars,
        train_loss=train_loss,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
        history=history,
    )


# --------------------------------------------------------------------------------------------------------
# Packaging: the mlkit model, its tokenizer and its card
# --------------------------------------------------------------------------------------------------------


def export(trained: TrainedText) -> bytes:
    """The generate-mode mlkit model, stopping at `<|endoftext|>`."""
    from mlkit.export import export_gpt2

    return export_gpt2(trained.model, eos=EOT_ID)


def generate_text(model: bytes, tok: Tokenizer, prompt: str, new_tokens: int) -> str:
    """Greedy generation with the native runtime, decoded."""
    from mlkit import native
    from mlkit.format import decode_model
    from mlkit.io import decode_payload
    from mlkit.text import decode_tokens, prompt_payload

    payload, _ = prompt_payload(decode_model(model), tok, prompt, new_tokens)
    (ids,) = decode_payload(native.run(model, payload))
    return decode_tokens(tok, ids.tolist())


def card_facts(trained: TrainedText, model: bytes, measure_vm: bool = True) -> dict[str, Any]:
    """What the card says beyond what the file shows: data, losses, training, samples, measured VM steps."""
    import torch

    from mlkit.cards import measure_vm_steps

    tok, cfg, corpus = trained.tokenizer, trained.config, trained.corpus
    example_ids = tok.encode(EXAMPLE_PROMPT).ids
    facts: dict[str, Any] = {
        "name": NAME,
        "description": "a small GPT (GPT-2 architecture) that writes fortune cookies",
        "dataset": (
            f"Debian fortunes + fortunes-min (/usr/share/games/fortunes, {len(CORPUS_FILES)} files): "
            f"{len(corpus.train) + len(corpus.val):,} fortunes, {corpus.chars:,} characters; every "
            f"{VAL_EVERY}th fortune held out ({len(corpus.val):,}); byte-level BPE of {cfg.vocab_size} tokens"
        ),
        "metrics": {
            "val_loss": round(trained.val_loss, 4),
            "val_bits_per_char": round(trained.val_bits_per_char, 4),
            "train_loss": round(trained.train_loss, 4),
        },
        "workload": {"prompt_tokens": len(example_ids), "new_tokens": EXAMPLE_NEW_TOKENS},
        "example_prompt": EXAMPLE_PROMPT,
        "tokenizer": "byte-level BPE (tokenizers); <|endoftext|> (0) starts every prompt and ends generation",
        "training": {
            **asdict(cfg),
            "seconds": round(trained.seconds, 1),
            "cpu_seconds": round(trained.cpu_seconds, 1),
            "torch": torch.__version__,
            "corpus_sha256": corpus.sha256,
            "history": [{k: round(v, 4) for k, v in h.items()} for h in trained.history],
        },
        "samples": [
            {
                "prompt": p,
                "new_tokens": SAMPLE_NEW_TOKENS,
                "text": generate_text(model, tok, p, SAMPLE_NEW_TOKENS),
            }
            for p in SAMPLE_PROMPTS
        ],
    }
    if measure_vm:
        from mlkit.io import generate_payload

        facts.update(measure_vm_steps(model, generate_payload(example_ids, EXAMPLE_NEW_TOKENS)))
    return facts


def write(trained: TrainedText, out_dir: Path = ASSETS_DIR, measure_vm: bool = True) -> dict[str, Path]:
    """Write NAME.mlkit, NAME.tokenizer.json and NAME.card.json into `out_dir`."""
    from mlkit.cards import card_path, write_card
    from mlkit.text import save_tokenizer, tokenizer_path

    out_dir.mkdir(parents=True, exist_ok=True)
    model = export(trained)
    path = out_dir / f"{NAME}.mlkit"
    path.write_bytes(model)
    save_tokenizer(trained.tokenizer, tokenizer_path(path))
    write_card(card_path(path), card_facts(trained, model, measure_vm), model)
    return {"model": path, "tokenizer": tokenizer_path(path), "card": card_path(path)}


def remeasure(out_dir: Path = ASSETS_DIR) -> dict[str, Any]:
    """Measure again the VM steps of the model in `out_dir` (after a change of the guest program changed the
    step counts) and update its card; returns the card's facts."""
    from mlkit.cards import card_path, measure_vm_steps, read_card, write_card
    from mlkit.io import generate_payload
    from mlkit.text import load_tokenizer, tokenizer_path

    path = out_dir / f"{NAME}.mlkit"
    model, tok, facts = path.read_bytes(), load_tokenizer(tokenizer_path(path)), read_card(card_path(path))
    facts.update(
        measure_vm_steps(model, generate_payload(tok.encode(EXAMPLE_PROMPT).ids, EXAMPLE_NEW_TOKENS))
    )
    write_card(card_path(path), facts, model)
    return facts


def committed_path() -> Path:
    return ASSETS_DIR / f"{NAME}.mlkit"


def committed() -> tuple[bytes, Tokenizer, dict[str, Any]]:
    """The committed fortune-gpt: model bytes, tokenizer and card facts (from mlkit/assets)."""
    from mlkit.cards import card_path, read_card
    from mlkit.text import load_tokenizer, tokenizer_path

    path = committed_path()
    return path.read_bytes(), load_tokenizer(tokenizer_path(path)), read_card(card_path(path))


def exported() -> Exported:
    """The committed fortune-gpt as a reference model, its example the tokens of `EXAMPLE_PROMPT`."""
    from mlkit.models import Exported

    model, tok, facts = committed()
    example = np.asarray(tok.encode(EXAMPLE_PROMPT).ids, dtype=np.int32)
    notes = f"trained on Debian fortunes, validation loss {facts['metrics']['val_loss']} nats/token"
    return Exported(NAME, model, example, new_tokens=EXAMPLE_NEW_TOKENS, notes=notes)
