"""Input and output payloads of mlkit (docs/model-format.md, "Payloads").

A payload is `"RMLD"`, a u32 count, then per tensor: u8 dtype (1 f32, 2 i32), u8 rank (0..4), u16 0,
u32 dims[rank], then the elements, all big-endian. The same encoding carries a model's inputs (the input
blob) and its outputs (the bytes whose keccak256 is the claimed output hash), so an output has exactly one
byte encoding: the runtime writes every f32 NaN as 0x7FC00000.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mlkit.format import DTYPE_CODES, MAX_CTX, MAX_ELEMENTS, MAX_RANK, NP_DTYPES, DType

PAYLOAD_MAGIC = b"RMLD"
_DTYPE_OF = {DTYPE_CODES[d]: d for d in (DType.F32, DType.I32)}  # payloads: 4-byte elements
MAX_TENSORS = 1 << 16  # a bound for decoding only; the runtime takes at most format.MAX_IO


class PayloadError(ValueError):
    """A malformed payload."""


def _dtype_of(a: npt.NDArray[np.generic]) -> DType:
    if np.issubdtype(a.dtype, np.floating):
        return DType.F32
    if np.issubdtype(a.dtype, np.integer):
        return DType.I32
    raise PayloadError(f"payload tensors are f32 or i32, got {a.dtype}")


def encode_payload(arrays: Sequence[npt.ArrayLike]) -> bytes:
    """Encode arrays (floats as f32, integers as i32; shapes kept) as one payload."""
    out = bytearray(PAYLOAD_MAGIC + struct.pack(">I", len(arrays)))
    for x in arrays:
        a = np.asarray(x)
        dt = _dtype_of(a)
        if a.ndim > MAX_RANK or a.size == 0 or a.size > MAX_ELEMENTS:
            raise PayloadError(
                f"payload tensor of shape {a.shape}: rank <= {MAX_RANK}, 1..{MAX_ELEMENTS} elements"
            )
        if dt == DType.I32 and (a.min() < -(1 << 31) or a.max() >= 1 << 31):
            raise PayloadError("an i32 payload value is out of range")
        out += struct.pack(">BBH", DTYPE_CODES[dt], a.ndim, 0) + struct.pack(f">{a.ndim}I", *a.shape)
        out += np.ascontiguousarray(a, dtype=NP_DTYPES[dt]).tobytes()
    return bytes(out)


def decode_payload(data: bytes | bytearray | memoryview) -> list[npt.NDArray[np.generic]]:
    """Decode a payload into native-order float32 / int32 arrays (raises PayloadError)."""
    buf = memoryview(data).cast("B")
    if len(buf) < 8 or bytes(buf[:4]) != PAYLOAD_MAGIC:
        raise PayloadError("not a payload (bad magic or shorter than 8 bytes)")
    (count,) = struct.unpack_from(">I", buf, 4)
    if count > MAX_TENSORS:
        raise PayloadError(f"{count} tensors is too many")
    pos, arrays = 8, []
    for i in range(count):
        if len(buf) - pos < 4:
            raise PayloadError(f"tensor {i}: truncated header")
        dt, rank, res = struct.unpack_from(">BBH", buf, pos)
        if dt not in _DTYPE_OF or rank > MAX_RANK or res:
            raise PayloadError(f"tensor {i}: bad dtype {dt} or rank {rank}")
        pos += 4
        if len(buf) - pos < 4 * rank:
            raise PayloadError(f"tensor {i}: truncated shape")
        shape = struct.unpack_from(f">{rank}I", buf, pos)
        pos += 4 * rank
        n = 1
        for d in shape:
            if not 1 <= d <= MAX_ELEMENTS or n * d > MAX_ELEMENTS:
                raise PayloadError(f"tensor {i}: bad shape {shape}")
            n *= d
        if len(buf) - pos < 4 * n:
            raise PayloadError(f"tensor {i}: truncated data")
        a = np.frombuffer(buf, dtype=NP_DTYPES[_DTYPE_OF[dt]], count=n, offset=pos).reshape(shape)
        arrays.append(a.astype(a.dtype.newbyteorder("=")))
        pos += 4 * n
    if pos != len(buf):
        raise PayloadError(f"{len(buf) - pos} trailing bytes")
    return arrays


def generate_payload(prompt: Sequence[int], n_new: int) -> bytes:
    """The input of a generate-mode model: the prompt's token ids (i32[P]) and the number of new tokens
    (i32 scalar)."""
    if not 1 <= n_new <= MAX_CTX:
        raise PayloadError(f"n_new must be 1..{MAX_CTX}")
    return encode_payload([np.asarray(prompt, dtype=np.int32).reshape(-1), np.int32(n_new)])
