"""The GanNFT's latent rules in Python, function for function as `contracts/src/GanNFT.sol` computes them
(docs/protocol.md section 6), so a client knows the input of a mint or a blend before it sends it and can
render the image natively:

    seed_latent(seed)                 GanNFT.seedLatent: the scaled latent t (z_i = t_i / 2^18)
    blend_latent(a, b, weight)        GanNFT.blendLatent: ((WEIGHT_ONE - weight) a + weight b) / WEIGHT_ONE,
                                      truncated toward zero
    latent_payload(t)                 GanNFT.latentPayload: the mlkit input payload (428 bytes)
    latent_input(seed)                GanNFT.latentInput

A scaled latent is a tuple of 100 Python ints with |t_i| < 2^20, so every z_i is exact in binary32.
`latent_array` gives the float32 array the payload carries, and `blend_sheet` renders a sweep of blends
between two seeds with the native runtime (`rollml model blend-sheet`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mipsvm.hashing import keccak256

LATENT_DIM = 100
WEIGHT_ONE = 10_000  # GanNFT.WEIGHT_ONE: blend weights are in units of 1 / WEIGHT_ONE
LATENT_SHIFT = 18  # z_i = t_i / 2^18
LATENT_BOUND = 1 << 20  # |t_i| < 2^20 (seed latents: <= 7 * 131070)

Latent = tuple[int, ...]


def seed_latent(seed: int) -> Latent:
    """`GanNFT.seedLatent(seed)`: t_i = 7 (u1 + u2 + u3 + u4 - 131070), the u's the four 16-bit parts (high
    first) of the 64-bit word i % 4 of keccak256(abi.encode(seed, i // 4))."""
    if not 0 <= seed < 1 << 256:
        raise ValueError(f"a seed is a uint256, got {seed}")
    out = []
    for i in range(LATENT_DIM):
        if i % 4 == 0:
            r = int.from_bytes(keccak256(seed.to_bytes(32, "big") + (i // 4).to_bytes(32, "big")), "big")
        w = r >> (192 - 64 * (i % 4))
        s = sum((w >> (16 * k)) & 0xFFFF for k in range(4)) - 131070
        out.append(7 * s)
    return tuple(out)


def _div_toward_zero(n: int, d: int) -> int:
    """Solidity's signed `/`: the quotient truncated toward zero (Python's `//` floors)."""
    q = abs(n) // d
    return q if n >= 0 else -q


def blend_latent(a: Sequence[int], b: Sequence[int], weight: int) -> Latent:
    """`GanNFT.blendLatent(a, b, weight)`: c_i = ((WEIGHT_ONE - weight) a_i + weight b_i) / WEIGHT_ONE,
    truncated toward zero; 0 <= weight <= WEIGHT_ONE (0 gives a, WEIGHT_ONE gives b)."""
    if not 0 <= weight <= WEIGHT_ONE:
        raise ValueError(f"a blend weight is 0 .. {WEIGHT_ONE}, got {weight}")
    if len(a) != LATENT_DIM or len(b) != LATENT_DIM:
        raise ValueError(f"latents have {LATENT_DIM} values, got {len(a)} and {len(b)}")
    return tuple(
        _div_toward_zero((WEIGHT_ONE - weight) * x + weight * y, WEIGHT_ONE)
        for x, y in zip(a, b, strict=True)
    )


def latent_array(t: Sequence[int]) -> np.ndarray:
    """The latent z = t / 2^18 as the generator takes it: float32 [1, 100, 1, 1] (exact: |t_i| < 2^20)."""
    if len(t) != LATENT_DIM or any(abs(v) >= LATENT_BOUND for v in t):
        raise ValueError(f"a scaled latent has {LATENT_DIM} integers of magnitude < 2^20")
    z = np.asarray(t, dtype=np.float64) / (1 << LATENT_SHIFT)
    return z.astype(np.float32).reshape(1, LATENT_DIM, 1, 1)


def latent_payload(t: Sequence[int]) -> bytes:
    """`GanNFT.latentPayload(t)`: the mlkit input payload of `latent_array(t)` (428 bytes)."""
    from mlkit.io import encode_payload

    return encode_payload([latent_array(t)])


def latent_input(seed: int) -> bytes:
    """`GanNFT.latentInput(seed)`."""
    return latent_payload(seed_latent(seed))


def sweep_weights(steps: int) -> list[int]:
    """`steps` (>= 2) weights from 0 to WEIGHT_ONE, evenly spaced (rounded to integers)."""
    if steps < 2:
        raise ValueError(f"a blend sweep needs at least 2 steps, got {steps}")
    return [round(k * WEIGHT_ONE / (steps - 1)) for k in range(steps)]


@dataclass(frozen=True)
class BlendSheet:
    """A sweep of blends between two seeds as rendered by the native runtime."""

    weights: list[int]
    images: np.ndarray  # steps x 3 x H x W in [-1, 1]
    output_shas: list[str]  # keccak256 of each output payload, as the market would store it


def blend_sheet(
    model: bytes, seed_a: int, seed_b: int, steps: int, progress: Callable[[int], None] | None = None
) -> BlendSheet:
    """Run the generator `model` natively on `blend_latent(seed_latent(seed_a), seed_latent(seed_b), w)`
    for `sweep_weights(steps)` (the ends are the parents themselves)."""
    from mlkit import native
    from mlkit.io import decode_payload

    a, b = seed_latent(seed_a), seed_latent(seed_b)
    weights = sweep_weights(steps)
    images, shas = [], []
    for i, w in enumerate(weights):
        out = native.run(model, latent_payload(blend_latent(a, b, w)))
        (image,) = decode_payload(out)
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise ValueError(f"the model's output has shape {image.shape}, not an image 1 x 3 x H x W")
        images.append(image[0])
        shas.append("0x" + keccak256(out).hex())
        if progress is not None:
            progress(i + 1)
    return BlendSheet(weights, np.stack(images), shas)
