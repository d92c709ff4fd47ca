"""The mlkit model file format (docs/model-format.md): write, parse and validate models, and build them.

A model is a versioned big-endian binary file: a 32-byte header, a tensor table, a node list, the graph's
input and output tensor ids, then the constant tensors' data (16-byte aligned). `encode_model` writes one,
`decode_model` parses one; both validate the whole model with exactly the rules the C runtime applies
(`mlkit/csrc/graph.c`), so a model this module accepts is one the runtime accepts, and a model it rejects
(with `ModelFormatError`) the runtime rejects with exit code 2.

    b = ModelBuilder()
    x = b.input((1, 784))
    h = b.relu(b.linear(x, w1, b1))
    b.output(b.linear(h, w2, b2))
    data = b.to_bytes()
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

MAGIC = b"RMLM"
VERSION = 1  # models without 8-bit tensors or quantized ops
VERSION_Q = 2  # models with them (docs/model-format.md, "Quantized models"): one version per model
HEADER_SIZE = 32
TENSOR_ENTRY = 32
NODE_ENTRY = 80
DATA_ALIGN = 16

# Limits (the same numbers as mlkit.h).
MAX_MODEL_BYTES = 0x30000000  # 768 MiB
MAX_INPUT_BYTES = 0x04000000  # 64 MiB
MAX_TENSORS = 4096
MAX_NODES = 4096
MAX_IO = 16
MAX_RANK = 4
MAX_ELEMENTS = 1 << 27  # per tensor
MAX_IN = 6  # inputs per node
N_IATTR = 8
N_FATTR = 4
MAX_ATTR = 65535  # strides, paddings, kernel sizes, n_head
MAX_CTX = 65536  # attention max_ctx, and generated positions
HEAP_BUDGET = 1 << 30  # bytes of the guest heap (docs/model-format.md, "Memory")

_HEADER = struct.Struct(">4sHHIIIHHiI")
_TENSOR = struct.Struct(">BBBB4IIII")
_NODE = struct.Struct(">HBB6II8i4I")
assert _HEADER.size == HEADER_SIZE and _TENSOR.size == TENSOR_ENTRY and _NODE.size == NODE_ENTRY


class DType(StrEnum):
    """Element types (compare equal to their names: DType.F32 == "f32")."""

    F32 = "f32"
    I32 = "i32"
    I8 = "i8"  # 1 byte per element (version 2)
    U8 = "u8"


class Kind(IntEnum):
    ACT = 0  # activation: a graph input or a node's output
    CONST = 1  # constant: data stored in the file


class Mode(StrEnum):
    PLAIN = "plain"  # one pass: graph inputs from the input payload, graph outputs to the output payload
    GENERATE = "generate"  # greedy token generation, the graph being one decoder step (docs: "Generate mode")


class Op(StrEnum):
    """The ops (docs/model-format.md, "Ops"); compare equal to their names: Op.CONV2D == "conv2d"."""

    LINEAR = "linear"
    MATMUL = "matmul"
    CONV2D = "conv2d"
    CONV_TRANSPOSE2D = "conv_transpose2d"
    BATCHNORM = "batchnorm"
    MAXPOOL2D = "maxpool2d"
    AVGPOOL2D = "avgpool2d"
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    GELU = "gelu"
    SOFTMAX = "softmax"
    LAYERNORM = "layernorm"
    EMBEDDING = "embedding"
    ADD = "add"
    MUL = "mul"
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    ATTENTION = "attention"
    ARGMAX = "argmax"
    QUANTIZE = "quantize"  # version 2: the quantized ops
    DEQUANTIZE = "dequantize"
    QLINEAR = "qlinear"
    QCONV2D = "qconv2d"
    # training (docs/model-format.md, "Training graphs")
    SOFTMAX_XENT = "softmax_xent"
    SOFTMAX_XENT_GRAD = "softmax_xent_grad"
    LINEAR_GRAD_X = "linear_grad_x"
    LINEAR_GRAD_W = "linear_grad_w"
    LINEAR_GRAD_B = "linear_grad_b"
    RELU_GRAD = "relu_grad"
    MOMENTUM = "momentum"
    SGD = "sgd"
    CONCAT = "concat"
    MATMUL_GRAD_A = "matmul_grad_a"
    MATMUL_GRAD_B = "matmul_grad_b"
    GELU_GRAD = "gelu_grad"


# Codes in the file (the same as mlkit.h).
DTYPE_CODES = {DType.F32: 1, DType.I32: 2, DType.I8: 3, DType.U8: 4}
MODE_CODES = {Mode.PLAIN: 0, Mode.GENERATE: 1}
OP_CODES = {op: i + 1 for i, op in enumerate(Op)}
_DTYPE_OF = {v: k for k, v in DTYPE_CODES.items()}
_MODE_OF = {v: k for k, v in MODE_CODES.items()}
_OP_OF = {v: k for k, v in OP_CODES.items()}


class ExitCode(IntEnum):
    """Exit codes of the guest and return codes of the native `mlkit_run` (docs: "Exit codes")."""

    OK = 0  # guest: keccak256(output) equals the claim
    MISMATCH = 1  # guest only: it does not
    MODEL = 2  # malformed model
    INPUT = 3  # malformed input
    NOMEM = 4  # memory budget exhausted
    ORACLE = 5  # guest only: a local key's value is not 32 bytes, or a syscall failed
    OUTCAP = 6  # native only: the output buffer is too small


NP_DTYPES: dict[DType, np.dtype[Any]] = {
    DType.F32: np.dtype(">f4"),
    DType.I32: np.dtype(">i4"),
    DType.I8: np.dtype("i1"),
    DType.U8: np.dtype("u1"),
}
_F32_UNARY = (Op.RELU, Op.LEAKY_RELU, Op.TANH, Op.SIGMOID, Op.GELU, Op.SOFTMAX)
Q8_DTYPES = (DType.I8, DType.U8)
Q_OPS = (Op.QUANTIZE, Op.DEQUANTIZE, Op.QLINEAR, Op.QCONV2D)
Q_RANGE = {DType.I8: (-128, 127), DType.U8: (0, 255)}
MAX_SHIFT = 62  # requantization shifts are 0..62, multipliers 0 .. 2^31 - 1


def elem_size(dtype: DType) -> int:
    """Bytes per element: 1 for the 8-bit dtypes, 4 for f32 and i32."""
    return 1 if dtype in Q8_DTYPES else 4


def model_version(model: Model) -> int:
    """The version a model is written with: 2 exactly when it has an 8-bit tensor or a quantized op."""
    quantized = any(t.dtype in Q8_DTYPES for t in model.tensors) or any(n.op in Q_OPS for n in model.nodes)
    return VERSION_Q if quantized else VERSION


class ModelFormatError(ValueError):
    """A malformed, truncated, oversized or inconsistent model."""


@dataclass
class Tensor:
    """A tensor of the graph: a constant when `data` is set, else an activation."""

    dtype: DType
    shape: tuple[int, ...]
    data: npt.NDArray[np.generic] | None = None

    def __post_init__(self) -> None:
        self.dtype = _parse(DType, self.dtype, "dtype")
        self.shape = tuple(int(d) for d in self.shape)

    @property
    def kind(self) -> Kind:
        return Kind.CONST if self.data is not None else Kind.ACT

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class Node:
    """One op. `ints`/`floats` are its attributes (docs: "Ops"); missing trailing ones are 0."""

    op: Op
    inputs: tuple[int, ...]
    output: int
    ints: tuple[int, ...] = ()
    floats: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.op = _parse(Op, self.op, "op")
        self.inputs = tuple(int(i) for i in self.inputs)
        self.ints = tuple(int(v) for v in self.ints)
        self.floats = tuple(float(v) for v in self.floats)


@dataclass
class Model:
    tensors: list[Tensor]
    nodes: list[Node]
    inputs: list[int]
    outputs: list[int]
    mode: Mode = Mode.PLAIN
    gen_eos: int = -1  # generate mode: stop after this token (-1: never)

    def __post_init__(self) -> None:
        self.mode = _parse(Mode, self.mode, "mode")

    def input_specs(self) -> list[tuple[DType, tuple[int, ...]]]:
        return [(self.tensors[i].dtype, self.tensors[i].shape) for i in self.inputs]

    def output_specs(self) -> list[tuple[DType, tuple[int, ...]]]:
        return [(self.tensors[i].dtype, self.tensors[i].shape) for i in self.outputs]


_E = TypeVar("_E", DType, Op, Mode)


def _parse(enum: type[_E], value: object, what: str) -> _E:
    """An enum member from itself or its name ("f32", "conv2d", "generate"); ModelFormatError otherwise."""
    try:
        if isinstance(value, str):
            return enum(value)
    except ValueError:
        pass
    raise ModelFormatError(f"unknown {what} {value!r} (one of {', '.join(m.value for m in enum)})") from None


# --------------------------------------------------------------------------------------------------------
# Validation (mirrors graph.c: check_shape, check_node, mlk_load)
# --------------------------------------------------------------------------------------------------------
def _check_shape(shape: Sequence[int], what: str) -> int:
    if len(shape) > MAX_RANK:
        raise ModelFormatError(f"{what}: rank {len(shape)} > {MAX_RANK}")
    n = 1
    for d in shape:
        if not 1 <= d <= MAX_ELEMENTS or d > MAX_ELEMENTS // n:
            raise ModelFormatError(
                f"{what}: shape {tuple(shape)} has a zero dim or over {MAX_ELEMENTS} elements"
            )
        n *= d
    return n


def _f32_bits(v: float) -> int:
    return int(struct.unpack(">I", struct.pack(">f", v))[0])


def _fits_f32(v: float) -> bool:
    """Whether `v` has a binary32 encoding (NaN and infinities do; a finite value beyond FLT_MAX does not)."""
    try:
        struct.pack(">f", v)
    except OverflowError:
        return False
    return True


def _window_out(length: int, k: int, s: int, p: int) -> int:
    padded = length + 2 * p
    return 0 if k > padded else (padded - k) // s + 1


def _n_attrs(op: Op, rank: int) -> tuple[int, int]:
    """Number of (int, float) attributes `op` uses (`rank`: of its first input, for TRANSPOSE)."""
    if op in (Op.LINEAR, Op.MATMUL):
        return 2, 0  # a tile: first row, rows (0: all)
    if op == Op.CONV2D:
        return 6, 0  # stride, padding, then a tile: first output channel, channels (0: all)
    if op == Op.CONV_TRANSPOSE2D:
        return 8, 0
    if op == Op.MAXPOOL2D:
        return 6, 0
    if op == Op.AVGPOOL2D:
        return 7, 0
    if op == Op.TRANSPOSE:
        return rank, 0
    if op == Op.ATTENTION:
        return 2, 0
    if op == Op.CONCAT:
        return 1, 0
    if op in (Op.BATCHNORM, Op.LAYERNORM, Op.LEAKY_RELU, Op.MOMENTUM, Op.SGD):
        return 0, 1
    if op == Op.QUANTIZE:
        return 2, 1
    if op == Op.DEQUANTIZE:
        return 1, 1
    if op == Op.QLINEAR:
        return 4, 0
    if op == Op.QCONV2D:
        return 8, 0
    return 0, 0


_N_INPUTS = {
    Op.LINEAR: (2, 3),
    Op.MATMUL: (2, 3),
    Op.CONV2D: (2, 3),
    Op.CONV_TRANSPOSE2D: (2, 3),
    Op.BATCHNORM: (5, 5),
    Op.LAYERNORM: (3, 3),
    Op.EMBEDDING: (2, 2),
    Op.ADD: (2, 2),
    Op.MUL: (2, 2),
    Op.QLINEAR: (5, 5),
    Op.QCONV2D: (5, 5),
    Op.SOFTMAX_XENT: (2, 2),
    Op.SOFTMAX_XENT_GRAD: (2, 2),
    Op.LINEAR_GRAD_X: (2, 2),
    Op.LINEAR_GRAD_W: (2, 2),
    Op.RELU_GRAD: (2, 2),
    Op.GELU_GRAD: (2, 2),
    Op.MATMUL_GRAD_A: (2, 2),
    Op.MATMUL_GRAD_B: (2, 2),
    Op.MOMENTUM: (2, 2),
    Op.SGD: (2, 2),
    Op.CONCAT: (1, MAX_IN),
}

# Ops whose last two int attributes are a tile (first, count; (0, 0) is the whole op): mlkit.plan splits
# big executions with them. Builders and the decoder leave a whole op's (0, 0) out of `Node.ints`.
TILE_OPS = (Op.LINEAR, Op.MATMUL, Op.CONV2D, Op.CONV_TRANSPOSE2D)


def _tile_ok(first: int, count: int, span: int) -> bool:
    """Tile attributes of `span` rows or channels (graph.c tile_ok): count 0 is all (then first is 0)."""
    if first < 0 or count < 0:
        return False
    return first == 0 if count == 0 else count <= span and first <= span - count


def used_ints(op: Op, ints: Sequence[int], rank: int) -> tuple[int, ...]:
    """The int attributes `op` uses, as Node.ints holds them (a whole tiled op without its (0, 0))."""
    n_ia, _ = _n_attrs(op, rank)
    out = tuple(int(v) for v in ints[:n_ia])
    if op in TILE_OPS and len(out) == n_ia and out[-2:] == (0, 0):
        out = out[:-2]
    return out


def _q8_dtype(code: int) -> DType | None:
    """The 8-bit dtype of a dtype code attribute (3 i8, 4 u8), or None."""
    dt = _DTYPE_OF.get(code)
    return dt if dt in Q8_DTYPES else None


def _in_q_range(v: int, dtype: DType) -> bool:
    lo, hi = Q_RANGE[dtype]
    return lo <= v <= hi


def _is_scale(v: float) -> bool:
    """A scale attribute: finite and > 0 (as binary32)."""
    return 0 < _f32_bits(v) <= 0x7F7FFFFF


def _check_requant(mult: Tensor, shift: Tensor, n: int) -> str | None:
    """Mirror of graph.c check_requant: what is wrong with an op's multipliers and shifts, or None."""
    for name, t in (("mult", mult), ("shift", shift)):
        if t.dtype != DType.I32 or t.data is None or len(t.shape) != 1 or t.shape[0] not in (n, 1):
            return f"{name} must be a constant i32 [{n}] or [1]"
    if mult.shape != shift.shape:
        return "mult and shift must have the same shape"
    m, sh = np.asarray(mult.data).astype(np.int64), np.asarray(shift.data).astype(np.int64)
    if np.any(m < 0) or np.any(sh < 0) or np.any(sh > MAX_SHIFT):
        return f"multipliers must be >= 0 and shifts 0..{MAX_SHIFT}"
    return None


def infer_output(
    op: Op,
    ins: Sequence[Tensor],
    ia: Sequence[int],
    fa: Sequence[float],
    mode: Mode = Mode.PLAIN,
    out: Tensor | None = None,
) -> tuple[DType, tuple[int, ...]]:
    """Check a node's inputs and attributes and return its output's (dtype, shape), or raise.

    `ia`/`fa` are the full N_IATTR/N_FATTR attribute vectors. For RESHAPE the output shape is `out`'s.
    """
    lo, hi = _N_INPUTS.get(op, (1, 1))
    if not lo <= len(ins) <= hi:
        raise ModelFormatError(f"{op.value} takes {lo}..{hi} inputs, got {len(ins)}")
    x = ins[0]

    def req(cond: bool, msg: str) -> None:
        if not cond:
            raise ModelFormatError(f"{op.value}: {msg}")

    def vec(t: Tensor, n: int) -> bool:
        return t.dtype == DType.F32 and t.shape == (n,)

    def attr_in(v: int, lo: int, hi: int) -> bool:
        return lo <= v <= hi

    f32 = DType.F32
    dt, shape = f32, list(x.shape)
    if op in (Op.LINEAR, Op.MATMUL):
        w = ins[1]
        req(x.dtype == f32 and w.dtype == f32, "inputs must be f32")
        if op == Op.LINEAR:
            req(len(x.shape) >= 1 and len(w.shape) == 2, "x must have rank >= 1 and w rank 2 ([n, k])")
            req(w.shape[1] == x.shape[-1], f"w {w.shape} does not match x {x.shape} (w is [n, k])")
            n = w.shape[0]
        else:
            req(
                len(x.shape) >= 2 and len(w.shape) in (2, len(x.shape)),
                "a must have rank >= 2, b rank 2 or a's",
            )
            req(w.shape[-2] == x.shape[-1], f"inner dims differ: {x.shape} @ {w.shape}")
            req(all(w.shape[d] == x.shape[d] for d in range(len(w.shape) - 2)), "batch dims differ")
            n = w.shape[-1]
        if len(ins) == 3:
            req(vec(ins[2], n), f"bias must be f32 [{n}]")
        span = n if op == Op.LINEAR else x.shape[-2]
        req(_tile_ok(ia[0], ia[1], span), f"tile rows {ia[0]} + {ia[1]} must lie in {span}")
        if ia[1] and op == Op.LINEAR:
            n = ia[1]
        if ia[1] and op == Op.MATMUL:
            shape[-2] = ia[1]
        req(x.numel // x.shape[-1] <= MAX_ELEMENTS // n, "output too large")
        shape[-1] = n
    elif op in (Op.CONV2D, Op.CONV_TRANSPOSE2D):
        w = ins[1]
        req(x.dtype == f32 and len(x.shape) == 4 and w.dtype == f32 and len(w.shape) == 4, "x, w: f32 rank 4")
        req(attr_in(ia[0], 1, MAX_ATTR) and attr_in(ia[1], 1, MAX_ATTR), f"stride must be 1..{MAX_ATTR}")
        req(attr_in(ia[2], 0, MAX_ATTR) and attr_in(ia[3], 0, MAX_ATTR), f"padding must be 0..{MAX_ATTR}")
        req(w.shape[2] <= MAX_ATTR and w.shape[3] <= MAX_ATTR, "kernel too large")
        if op == Op.CONV2D:
            req(w.shape[1] == x.shape[1], f"w {w.shape} ([oc, c, kh, kw]) does not match x {x.shape}")
            oc = w.shape[0]
            oh = _window_out(x.shape[2], w.shape[2], ia[0], ia[2])
            ow = _window_out(x.shape[3], w.shape[3], ia[1], ia[3])
        else:
            req(w.shape[0] == x.shape[1], f"w {w.shape} ([c, oc, kh, kw]) does not match x {x.shape}")
            req(0 <= ia[4] < ia[0] and 0 <= ia[5] < ia[1], "output_padding must be < stride")
            oc = w.shape[1]
            h = (x.shape[2] - 1) * ia[0] + w.shape[2] + ia[4]
            wd = (x.shape[3] - 1) * ia[1] + w.shape[3] + ia[5]
            req(2 * ia[2] < h <= MAX_ELEMENTS + 2 * ia[2], "bad output height")
            req(2 * ia[3] < wd <= MAX_ELEMENTS + 2 * ia[3], "bad output width")
            oh, ow = h - 2 * ia[2], wd - 2 * ia[3]
        if len(ins) == 3:
            req(vec(ins[2], oc), f"bias must be f32 [{oc}]")
        t0 = 4 if op == Op.CONV2D else 6
        req(_tile_ok(ia[t0], ia[t0 + 1], oc), f"tile channels {ia[t0]} + {ia[t0 + 1]} must lie in {oc}")
        if ia[t0 + 1]:
            oc = ia[t0 + 1]
        req(oh >= 1 and ow >= 1, "the kernel does not fit the padded input")
        req(x.shape[0] * oc * oh * ow <= MAX_ELEMENTS, "output too large")
        shape[1:] = [oc, oh, ow]
    elif op == Op.BATCHNORM:
        req(x.dtype == f32 and len(x.shape) >= 2, "x must be f32 with rank >= 2 ([n, c, ...])")
        req(all(vec(t, x.shape[1]) for t in ins[1:]), f"weight, bias, mean, var must be f32 [{x.shape[1]}]")
    elif op in (Op.MAXPOOL2D, Op.AVGPOOL2D):
        ok_dtype = x.dtype == f32 or (op == Op.MAXPOOL2D and x.dtype in Q8_DTYPES)
        req(ok_dtype and len(x.shape) == 4, "x must be f32 rank 4 (maxpool2d: or i8/u8)")
        dt = x.dtype
        req(attr_in(ia[0], 1, MAX_ATTR) and attr_in(ia[1], 1, MAX_ATTR), f"kernel must be 1..{MAX_ATTR}")
        req(attr_in(ia[2], 1, MAX_ATTR) and attr_in(ia[3], 1, MAX_ATTR), f"stride must be 1..{MAX_ATTR}")
        req(attr_in(ia[4], 0, ia[0] // 2) and attr_in(ia[5], 0, ia[1] // 2), "padding must be <= kernel / 2")
        if op == Op.AVGPOOL2D:
            req(ia[6] in (0, 1), "count_include_pad must be 0 or 1")
        shape[2] = _window_out(x.shape[2], ia[0], ia[2], ia[4])
        shape[3] = _window_out(x.shape[3], ia[1], ia[3], ia[5])
        req(shape[2] >= 1 and shape[3] >= 1, "the window does not fit the padded input")
    elif op in _F32_UNARY:
        req(x.dtype == f32, "x must be f32")
    elif op == Op.LAYERNORM:
        req(x.dtype == f32 and len(x.shape) >= 1, "x must be f32 with rank >= 1")
        req(
            vec(ins[1], x.shape[-1]) and vec(ins[2], x.shape[-1]), f"weight, bias must be f32 [{x.shape[-1]}]"
        )
    elif op == Op.EMBEDDING:
        tab = ins[1]
        req(x.dtype == DType.I32 and len(x.shape) <= 3, "ids must be i32 with rank <= 3")
        req(tab.dtype == f32 and len(tab.shape) == 2, "table must be f32 [vocab, dim]")
        req(x.numel <= MAX_ELEMENTS // tab.shape[1], "output too large")
        if x.data is not None:
            ids = np.asarray(x.data).astype(np.int64)
            req(bool(np.all((ids >= 0) & (ids < tab.shape[0]))), "a constant id is out of range")
        shape.append(tab.shape[1])
    elif op in (Op.ADD, Op.MUL):
        b = ins[1]
        req(x.dtype == f32 and b.dtype == f32, "inputs must be f32")
        if b.numel != 1:
            req(
                len(b.shape) <= len(x.shape) and tuple(x.shape[len(x.shape) - len(b.shape) :]) == b.shape,
                f"b {b.shape} must be a trailing part of a {x.shape} (or one element)",
            )
    elif op == Op.RESHAPE:
        req(out is not None, "needs its output shape")
        assert out is not None
        req(out.numel == x.numel, f"cannot reshape {x.shape} to {out.shape}")
        dt, shape = x.dtype, list(out.shape)
    elif op == Op.TRANSPOSE:
        r = len(x.shape)
        req(r >= 1 and x.dtype not in Q8_DTYPES, "x must be f32 or i32 with rank >= 1")
        perm = list(ia[:r])
        req(sorted(perm) == list(range(r)), f"perm {perm} is not a permutation of 0..{r - 1}")
        dt, shape = x.dtype, [x.shape[p] for p in perm]
    elif op == Op.ATTENTION:
        req(x.dtype == f32 and len(x.shape) == 2 and x.shape[1] % 3 == 0, "qkv must be f32 [t, 3c]")
        c = x.shape[1] // 3
        req(attr_in(ia[0], 1, MAX_ATTR) and c % ia[0] == 0, f"n_head must divide c = {c}")
        req(attr_in(ia[1], 1, MAX_CTX) and x.shape[0] <= ia[1], f"max_ctx must be {x.shape[0]}..{MAX_CTX}")
        if mode == Mode.GENERATE:
            req(x.shape[0] == 1, "in generate mode attention takes one row")
        shape[1] = c
    elif op == Op.ARGMAX:
        req(x.dtype == f32 and len(x.shape) >= 1, "x must be f32 with rank >= 1")
        dt, shape = DType.I32, shape[:-1]
    elif op == Op.QUANTIZE:
        qdt = _q8_dtype(ia[1])
        req(x.dtype == f32, "x must be f32")
        req(qdt is not None, "dtype must be 3 (i8) or 4 (u8)")
        assert qdt is not None
        req(_in_q_range(ia[0], qdt), f"zero point {ia[0]} is outside {qdt.value}")
        req(_is_scale(fa[0]), "scale must be finite and > 0")
        dt = qdt
    elif op == Op.DEQUANTIZE:
        if x.dtype in Q8_DTYPES:
            req(_in_q_range(ia[0], x.dtype), f"zero point {ia[0]} is outside {x.dtype.value}")
        else:
            req(x.dtype == DType.I32 and ia[0] == 0, "x must be i8, u8, or i32 with zero point 0")
        req(_is_scale(fa[0]), "scale must be finite and > 0")
    elif op in (Op.QLINEAR, Op.QCONV2D):
        w, bias = ins[1], ins[2]
        zx, zw, zy, code = ia[4:8] if op == Op.QCONV2D else ia[0:4]
        qdt = _q8_dtype(code)
        req(x.dtype in Q8_DTYPES and w.dtype in Q8_DTYPES, "x and w must be i8 or u8")
        req(qdt is not None, "the output dtype must be 3 (i8) or 4 (u8)")
        assert qdt is not None
        req(
            _in_q_range(zx, x.dtype) and _in_q_range(zw, w.dtype) and _in_q_range(zy, qdt),
            "a zero point is outside its dtype",
        )
        dt = qdt
        if op == Op.QLINEAR:
            req(len(x.shape) >= 1 and len(w.shape) == 2, "x must have rank >= 1 and w rank 2 ([n, k])")
            req(w.shape[1] == x.shape[-1], f"w {w.shape} does not match x {x.shape} (w is [n, k])")
            n = w.shape[0]
            req(x.numel // x.shape[-1] <= MAX_ELEMENTS // n, "output too large")
            shape[-1] = n
        else:
            req(len(x.shape) == 4 and len(w.shape) == 4, "x, w: rank 4")
            req(attr_in(ia[0], 1, MAX_ATTR) and attr_in(ia[1], 1, MAX_ATTR), f"stride must be 1..{MAX_ATTR}")
            req(attr_in(ia[2], 0, MAX_ATTR) and attr_in(ia[3], 0, MAX_ATTR), f"padding must be 0..{MAX_ATTR}")
            req(w.shape[2] <= MAX_ATTR and w.shape[3] <= MAX_ATTR, "kernel too large")
            req(w.shape[1] == x.shape[1], f"w {w.shape} ([oc, c, kh, kw]) does not match x {x.shape}")
            n = w.shape[0]
            oh = _window_out(x.shape[2], w.shape[2], ia[0], ia[2])
            ow = _window_out(x.shape[3], w.shape[3], ia[1], ia[3])
            req(oh >= 1 and ow >= 1, "the kernel does not fit the padded input")
            req(x.shape[0] * n * oh * ow <= MAX_ELEMENTS, "output too large")
            shape[1:] = [n, oh, ow]
        req(bias.dtype == DType.I32 and bias.shape == (n,), f"bias must be i32 [{n}]")
        problem = _check_requant(ins[3], ins[4], n)
        req(problem is None, problem or "")
    elif op in (Op.SOFTMAX_XENT, Op.SOFTMAX_XENT_GRAD):
        lab = ins[1]
        req(x.dtype == f32 and len(x.shape) == 2, "logits must be f32 [m, n]")
        req(lab.dtype == DType.I32 and lab.shape == (x.shape[0],), f"labels must be i32 [{x.shape[0]}]")
        if op == Op.SOFTMAX_XENT:
            shape = [1]
    elif op in (Op.LINEAR_GRAD_X, Op.LINEAR_GRAD_W):
        b = ins[1]
        req(
            x.dtype == f32 and len(x.shape) == 2 and b.dtype == f32 and len(b.shape) == 2, "f32 rank 2 inputs"
        )
        if op == Op.LINEAR_GRAD_X:
            req(b.shape[0] == x.shape[1], f"w {b.shape} ([n, k]) does not match dy {x.shape} ([m, n])")
            shape = [x.shape[0], b.shape[1]]
        else:
            req(b.shape[0] == x.shape[0], f"x {b.shape} ([m, k]) does not match dy {x.shape} ([m, n])")
            req(b.shape[1] <= MAX_ELEMENTS // x.shape[1], "output too large")
            shape = [x.shape[1], b.shape[1]]
    elif op == Op.LINEAR_GRAD_B:
        req(x.dtype == f32 and len(x.shape) == 2, "dy must be f32 [m, n]")
        shape = [x.shape[1]]
    elif op == Op.MATMUL_GRAD_A:
        b = ins[1]
        req(
            x.dtype == f32 and len(x.shape) >= 2 and b.dtype == f32 and len(b.shape) in (2, len(x.shape)),
            "dy must be f32 rank >= 2, b f32 rank 2 or dy's",
        )
        req(b.shape[-1] == x.shape[-1], f"b {b.shape} ([.., k, n]) does not match dy {x.shape}")
        req(all(b.shape[d] == x.shape[d] for d in range(len(b.shape) - 2)), "batch dims differ")
        req(x.numel // x.shape[-1] <= MAX_ELEMENTS // b.shape[-2], "output too large")
        shape[-1] = b.shape[-2]
    elif op == Op.MATMUL_GRAD_B:
        a = ins[1]
        req(
            x.dtype == f32 and len(x.shape) >= 2 and a.dtype == f32 and len(a.shape) == len(x.shape),
            "dy and a must be f32 of one rank >= 2",
        )
        req(a.shape[:-1] == x.shape[:-1], f"a {a.shape} ([.., m, k]) does not match dy {x.shape}")
        req(a.shape[-1] <= MAX_ELEMENTS // (x.numel // x.shape[-2]), "output too large")
        shape[-2] = a.shape[-1]
    elif op in (Op.RELU_GRAD, Op.GELU_GRAD, Op.MOMENTUM, Op.SGD):
        b = ins[1]
        req(x.dtype == f32 and b.dtype == f32 and b.shape == x.shape, "two f32 tensors of one shape")
    elif op == Op.CONCAT:
        axis, r = ia[0], len(x.shape)
        req(r >= 1 and 0 <= axis < r, f"axis {axis} is not an axis of a rank-{r} tensor")
        for t in ins:
            req(t.dtype == x.dtype and len(t.shape) == r, "inputs must have one dtype and rank")
            req(
                all(d == axis or t.shape[d] == x.shape[d] for d in range(r)),
                f"shapes {t.shape} and {x.shape} differ off axis {axis}",
            )
        total = sum(t.shape[axis] for t in ins)
        req(total <= MAX_ELEMENTS and x.numel // x.shape[axis] <= MAX_ELEMENTS // total, "output too large")
        dt, shape[axis] = x.dtype, total
    else:  # pragma: no cover - Op is exhaustive
        raise ModelFormatError(f"unknown op {op}")
    n_ia, n_fa = _n_attrs(op, len(x.shape))
    if any(ia[n_ia:]) or any(_f32_bits(v) for v in fa[n_fa:]):
        raise ModelFormatError(f"{op.value}: uses {n_ia} int and {n_fa} float attributes, the rest must be 0")
    return dt, tuple(shape)


def _pad(values: Sequence[float], n: int, what: str) -> list[float]:
    if len(values) > n:
        raise ModelFormatError(f"at most {n} {what}, got {len(values)}")
    return [*values, *([0] * (n - len(values)))]


def validate(model: Model) -> None:
    """Check a model against every rule of docs/model-format.md (raises ModelFormatError)."""
    nt = len(model.tensors)
    if not 1 <= nt <= MAX_TENSORS:
        raise ModelFormatError(f"{nt} tensors; a model has 1..{MAX_TENSORS}")
    if len(model.nodes) > MAX_NODES:
        raise ModelFormatError(f"{len(model.nodes)} nodes > {MAX_NODES}")
    if len(model.inputs) > MAX_IO or not 1 <= len(model.outputs) <= MAX_IO:
        raise ModelFormatError(f"a model has 0..{MAX_IO} inputs and 1..{MAX_IO} outputs")
    mode = _parse(Mode, model.mode, "mode")
    if mode == Mode.GENERATE and not -1 <= model.gen_eos < 1 << 31:
        raise ModelFormatError("gen_eos must be a token id (an int32) or -1")
    if mode == Mode.PLAIN and model.gen_eos != -1:
        raise ModelFormatError("gen_eos must be -1 in plain mode")
    for i, t in enumerate(model.tensors):
        _parse(DType, t.dtype, f"tensor {i}: dtype")
        _check_shape(t.shape, f"tensor {i}")
        if t.data is not None:
            if tuple(np.shape(t.data)) != tuple(t.shape):
                raise ModelFormatError(f"tensor {i}: data shape {np.shape(t.data)} != {t.shape}")
            data = np.asarray(t.data)
            if data.dtype.kind not in ("f" if t.dtype == DType.F32 else "iu"):
                raise ModelFormatError(f"tensor {i}: {data.dtype} data in a {t.dtype} tensor")
            lo, hi = Q_RANGE.get(t.dtype, (-(1 << 31), (1 << 31) - 1))
            if data.dtype.kind in "iu" and data.size and (data.min() < lo or data.max() > hi):
                raise ModelFormatError(f"tensor {i}: {t.dtype} data out of range (encoding would wrap it)")
    defined = [t.data is not None for t in model.tensors]
    for tid in model.inputs:
        if not 0 <= tid < nt or model.tensors[tid].data is not None or defined[tid]:
            raise ModelFormatError(f"graph input {tid}: must be a distinct activation tensor id")
        if model.tensors[tid].dtype in Q8_DTYPES:
            raise ModelFormatError(f"graph input {tid}: inputs are f32 or i32 (quantize inside the graph)")
        defined[tid] = True
    for k, node in enumerate(model.nodes):
        where = f"node {k} ({node.op})"
        op = _parse(Op, node.op, f"{where}: op")
        if not 1 <= len(node.inputs) <= MAX_IN:
            raise ModelFormatError(f"{where}: has {len(node.inputs)} inputs (1..{MAX_IN})")
        for tid in node.inputs:
            if not 0 <= tid < nt or not defined[tid]:
                raise ModelFormatError(f"{where}: input {tid} is not a tensor defined before this node")
        out = node.output
        if not 0 <= out < nt or model.tensors[out].data is not None or defined[out]:
            raise ModelFormatError(f"{where}: output {out} must be an activation not defined before")
        ia = [int(v) for v in _pad(node.ints, N_IATTR, "int attributes")]
        fa = _pad(node.floats, N_FATTR, "float attributes")
        if any(not -(1 << 31) <= v < 1 << 31 for v in ia):
            raise ModelFormatError(f"{where}: an int attribute does not fit int32")
        if not all(_fits_f32(v) for v in fa):
            raise ModelFormatError(f"{where}: a float attribute does not fit binary32")
        ins = [model.tensors[t] for t in node.inputs]
        ot = model.tensors[out]
        try:
            dt, shape = infer_output(op, ins, ia, fa, mode, ot)
        except ModelFormatError as e:
            raise ModelFormatError(f"{where}: {e}") from None
        if (dt, shape) != (ot.dtype, ot.shape):
            raise ModelFormatError(
                f"{where}: output tensor {out} is declared {ot.dtype}{list(ot.shape)}, "
                f"the op gives {dt}{list(shape)}"
            )
        defined[out] = True
    for tid in model.outputs:
        if not 0 <= tid < nt or not defined[tid]:
            raise ModelFormatError(f"graph output {tid}: not a defined tensor")
        if model.tensors[tid].dtype in Q8_DTYPES:
            raise ModelFormatError(f"graph output {tid}: outputs are f32 or i32 (dequantize in the graph)")
    if mode == Mode.GENERATE:
        if len(model.inputs) != 2 or len(model.outputs) != 1:
            raise ModelFormatError("generate mode: inputs (token, position) and one output (next token)")
        for tid in [*model.inputs, *model.outputs]:
            t = model.tensors[tid]
            if t.dtype != DType.I32 or t.numel != 1:
                raise ModelFormatError(f"generate mode: tensor {tid} must be i32 with one element")


# --------------------------------------------------------------------------------------------------------
# Encoding and decoding
# --------------------------------------------------------------------------------------------------------
def _align(v: int) -> int:
    return (v + DATA_ALIGN - 1) & ~(DATA_ALIGN - 1)


def _as_const(array: npt.ArrayLike, dtype: DType | None = None) -> tuple[DType, npt.NDArray[np.generic]]:
    a = np.asarray(array)
    if dtype is None:
        if np.issubdtype(a.dtype, np.floating):
            dtype = DType.F32
        elif np.issubdtype(a.dtype, np.integer):
            dtype = DType.I32
        else:
            raise ModelFormatError(f"constants are f32 or i32, got {a.dtype}")
    if dtype in (DType.I32, *Q8_DTYPES):
        if not np.issubdtype(a.dtype, np.integer):
            raise ModelFormatError(f"an {dtype.value} constant needs integer data, got {a.dtype}")
        lo, hi = Q_RANGE.get(dtype, (-(1 << 31), (1 << 31) - 1))
        if a.size and (a.min() < lo or a.max() > hi):
            raise ModelFormatError(f"an {dtype.value} constant is out of range")
        return dtype, a.astype(NP_DTYPES[dtype].newbyteorder("="))
    return dtype, a.astype(np.float32)


def encode_model(model: Model) -> bytes:
    """Validate and serialize a model."""
    validate(model)
    nt, nn = len(model.tensors), len(model.nodes)
    end = HEADER_SIZE + nt * TENSOR_ENTRY + nn * NODE_ENTRY + 4 * (len(model.inputs) + len(model.outputs))
    offsets: list[int] = []
    pos = _align(end)
    for t in model.tensors:
        if t.data is not None:
            offsets.append(pos)
            pos = _align(pos + elem_size(t.dtype) * t.numel)
        else:
            offsets.append(0)
    size = pos if any(t.data is not None for t in model.tensors) else end
    if size > MAX_MODEL_BYTES:
        raise ModelFormatError(f"the model would be {size} bytes > {MAX_MODEL_BYTES}")
    out = bytearray(size)
    _HEADER.pack_into(
        out,
        0,
        MAGIC,
        model_version(model),
        MODE_CODES[model.mode],
        size,
        nt,
        nn,
        len(model.inputs),
        len(model.outputs),
        model.gen_eos,
        0,
    )
    for i, t in enumerate(model.tensors):
        dims = [*t.shape, *([0] * (MAX_RANK - len(t.shape)))]
        nbytes = elem_size(t.dtype) * t.numel if t.data is not None else 0
        _TENSOR.pack_into(
            out,
            HEADER_SIZE + i * TENSOR_ENTRY,
            DTYPE_CODES[t.dtype],
            len(t.shape),
            int(t.kind),
            0,
            *dims,
            offsets[i],
            nbytes,
            0,
        )
        if t.data is not None:
            data = np.ascontiguousarray(t.data, dtype=NP_DTYPES[t.dtype]).tobytes()
            out[offsets[i] : offsets[i] + nbytes] = data
    base = HEADER_SIZE + nt * TENSOR_ENTRY
    for k, node in enumerate(model.nodes):
        ins = [*node.inputs, *([0] * (MAX_IN - len(node.inputs)))]
        ia = [int(v) for v in _pad(node.ints, N_IATTR, "int attributes")]
        fa = [_f32_bits(v) for v in _pad(node.floats, N_FATTR, "float attributes")]
        _NODE.pack_into(
            out, base + k * NODE_ENTRY, OP_CODES[node.op], len(node.inputs), 0, *ins, node.output, *ia, *fa
        )
    io = [*model.inputs, *model.outputs]
    struct.pack_into(f">{len(io)}I", out, base + nn * NODE_ENTRY, *io)
    return bytes(out)


def decode_model(data: bytes | bytearray | memoryview) -> Model:
    """Parse and validate a model file (raises ModelFormatError). Constants are big-endian numpy views."""
    buf = memoryview(data).cast("B")
    n = len(buf)
    if n > MAX_MODEL_BYTES:
        raise ModelFormatError(f"model of {n} bytes > the limit of {MAX_MODEL_BYTES}")
    if n < HEADER_SIZE:
        raise ModelFormatError(f"truncated: {n} bytes, the header alone is {HEADER_SIZE}")
    magic, version, mode, size, nt, nn, ni, no, eos, reserved = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ModelFormatError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version not in (VERSION, VERSION_Q):
        raise ModelFormatError(f"unsupported version {version} (this reader knows {VERSION} and {VERSION_Q})")
    if mode not in _MODE_OF:
        raise ModelFormatError(f"unknown mode {mode}")
    if size != n:
        raise ModelFormatError(f"the header says {size} bytes, the file has {n} (truncated or padded)")
    if reserved:
        raise ModelFormatError("reserved header field is not 0")
    if not 1 <= nt <= MAX_TENSORS or nn > MAX_NODES or ni > MAX_IO or not 1 <= no <= MAX_IO:
        raise ModelFormatError(f"counts out of range: {nt} tensors, {nn} nodes, {ni} inputs, {no} outputs")
    end = HEADER_SIZE + nt * TENSOR_ENTRY + nn * NODE_ENTRY + 4 * (ni + no)
    if end > n:
        raise ModelFormatError(f"truncated: the tables need {end} bytes, the file has {n}")
    data_start = _align(end)
    tensors: list[Tensor] = []
    for i in range(nt):
        dt, rank, kind, res, d0, d1, d2, d3, off, nbytes, res2 = _TENSOR.unpack_from(
            buf, HEADER_SIZE + i * TENSOR_ENTRY
        )
        dims = (d0, d1, d2, d3)
        if dt not in _DTYPE_OF or rank > MAX_RANK or kind not in (Kind.ACT, Kind.CONST):
            raise ModelFormatError(f"tensor {i}: bad dtype {dt}, rank {rank} or kind {kind}")
        if _DTYPE_OF[dt] in Q8_DTYPES and version != VERSION_Q:
            raise ModelFormatError(f"tensor {i}: 8-bit tensors need version {VERSION_Q}")
        if res or res2 or any(dims[rank:]):
            raise ModelFormatError(f"tensor {i}: reserved fields and unused dims must be 0")
        shape = tuple(dims[:rank])
        numel = _check_shape(shape, f"tensor {i}")
        arr = None
        if kind == Kind.CONST:
            esize = elem_size(_DTYPE_OF[dt])
            if off % DATA_ALIGN or off < data_start or off > n or nbytes != esize * numel or nbytes > n - off:
                raise ModelFormatError(
                    f"tensor {i}: data at {off} (+{nbytes}) must be {DATA_ALIGN}-aligned, hold "
                    f"{esize * numel} bytes and lie in [{data_start}, {n})"
                )
            arr = np.frombuffer(buf, dtype=NP_DTYPES[_DTYPE_OF[dt]], count=numel, offset=off).reshape(shape)
        elif off or nbytes:
            raise ModelFormatError(f"tensor {i}: an activation has no data (offset and size must be 0)")
        tensors.append(Tensor(_DTYPE_OF[dt], shape, arr))
    base = HEADER_SIZE + nt * TENSOR_ENTRY
    nodes: list[Node] = []
    for k in range(nn):
        fields = _NODE.unpack_from(buf, base + k * NODE_ENTRY)
        op, n_in, res = fields[0], fields[1], fields[2]
        ins, out, ia, fa_bits = fields[3:9], fields[9], fields[10:18], fields[18:22]
        if res or not 1 <= n_in <= MAX_IN or any(ins[n_in:]):
            raise ModelFormatError(f"node {k}: bad input count {n_in} or nonzero reserved/unused fields")
        if op not in _OP_OF:
            raise ModelFormatError(f"node {k}: unknown op code {op}")
        opc = _OP_OF[op]
        if opc in Q_OPS and version != VERSION_Q:
            raise ModelFormatError(f"node {k}: op {opc.value} needs version {VERSION_Q}")
        fa = tuple(float(struct.unpack(">f", struct.pack(">I", b))[0]) for b in fa_bits)
        nodes.append(Node(opc, tuple(ins[:n_in]), out, tuple(ia), fa))
    io = struct.unpack_from(f">{ni + no}I", buf, base + nn * NODE_ENTRY)
    model = Model(tensors, nodes, list(io[:ni]), list(io[ni:]), _MODE_OF[mode], eos)
    # unused attribute bits must be exactly 0 (a float -0.0 is not): check on the raw bits
    for k, node in enumerate(nodes):
        fa_bits = _NODE.unpack_from(buf, base + k * NODE_ENTRY)[18:22]
        _, n_fa = _n_attrs(node.op, 0)
        if any(fa_bits[n_fa:]):
            raise ModelFormatError(f"node {k} ({node.op}): unused float attributes must be 0")
    validate(model)
    if version != model_version(model):
        raise ModelFormatError(f"version {version}: only models with 8-bit tensors or quantized ops are 2")
    for node in nodes:  # trim to the attributes the op uses
        rank = len(tensors[node.inputs[0]].shape)
        node.ints, node.floats = (
            used_ints(node.op, node.ints, rank),
            node.floats[: _n_attrs(node.op, rank)[1]],
        )
    return model


# --------------------------------------------------------------------------------------------------------
# Model id
# --------------------------------------------------------------------------------------------------------
def model_id(data: bytes, store: object | None = None) -> bytes:
    """The model id: the blob id of the file (docs/vm-spec.md section 6, "Blobs").

    With a `mipsvm.preimage.PreimageStore` as `store` the blob's preimages are stored there too.
    """
    from mipsvm.preimage import PreimageStore, put_blob

    target = store if isinstance(store, PreimageStore) else PreimageStore()
    return put_blob(target, data)


# --------------------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------------------
TensorRef = int | npt.ArrayLike


@dataclass
class ModelBuilder:
    """Build a model op by op; output shapes are inferred (and checked) as nodes are added."""

    mode: Mode = Mode.PLAIN
    gen_eos: int = -1
    tensors: list[Tensor] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def const(self, array: npt.ArrayLike, dtype: DType | None = None) -> int:
        dt, a = _as_const(array, dtype)
        _check_shape(a.shape, "constant")
        self.tensors.append(Tensor(dt, tuple(a.shape), a))
        return len(self.tensors) - 1

    def input(self, shape: Sequence[int], dtype: DType = DType.F32) -> int:
        _check_shape(tuple(shape), "input")
        self.tensors.append(Tensor(DType(dtype), tuple(int(d) for d in shape)))
        self.inputs.append(len(self.tensors) - 1)
        return len(self.tensors) - 1

    def output(self, *ids: int) -> None:
        self.outputs.extend(ids)

    def shape(self, tid: int) -> tuple[int, ...]:
        return self.tensors[tid].shape

    def _ref(self, x: TensorRef) -> int:
        if isinstance(x, int | np.integer) and not isinstance(x, bool):
            return int(x)
        return self.const(x)

    def node(
        self,
        op: Op | str,
        inputs: Sequence[TensorRef],
        ints: Sequence[int] = (),
        floats: Sequence[float] = (),
        shape: Sequence[int] | None = None,
    ) -> int:
        """Append a node; returns the id of its (new) output tensor. `shape` only for RESHAPE."""
        ids = tuple(self._ref(x) for x in inputs)
        ins = [self.tensors[i] for i in ids]
        op = _parse(Op, op, "op")
        ia = [int(v) for v in _pad(ints, N_IATTR, "int attributes")]
        fa = [float(np.float32(v)) for v in _pad(floats, N_FATTR, "float attributes")]
        target = Tensor(ins[0].dtype, tuple(shape)) if shape is not None else None
        dt, out_shape = infer_output(op, ins, ia, fa, _parse(Mode, self.mode, "mode"), target)
        self.tensors.append(Tensor(dt, out_shape))
        out = len(self.tensors) - 1
        rank = len(ins[0].shape)
        self.nodes.append(Node(op, ids, out, used_ints(op, ia, rank), tuple(fa[: _n_attrs(op, rank)[1]])))
        return out

    # -- one helper per op (torch argument conventions) --
    def linear(self, x: TensorRef, w: TensorRef, b: TensorRef | None = None) -> int:
        """y = x @ w.T + b, w in nn.Linear layout [out, in]."""
        return self.node(Op.LINEAR, [x, w] + ([b] if b is not None else []))

    def matmul(self, a: TensorRef, b: TensorRef, bias: TensorRef | None = None) -> int:
        return self.node(Op.MATMUL, [a, b] + ([bias] if bias is not None else []))

    def conv2d(
        self,
        x: TensorRef,
        w: TensorRef,
        b: TensorRef | None = None,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
    ) -> int:
        s, p = _pair(stride), _pair(padding)
        return self.node(Op.CONV2D, [x, w] + ([b] if b is not None else []), [*s, *p])

    def conv_transpose2d(
        self,
        x: TensorRef,
        w: TensorRef,
        b: TensorRef | None = None,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
    ) -> int:
        s, p, op = _pair(stride), _pair(padding), _pair(output_padding)
        return self.node(Op.CONV_TRANSPOSE2D, [x, w] + ([b] if b is not None else []), [*s, *p, *op])

    def batchnorm(
        self,
        x: TensorRef,
        weight: TensorRef,
        bias: TensorRef,
        mean: TensorRef,
        var: TensorRef,
        eps: float = 1e-5,
    ) -> int:
        return self.node(Op.BATCHNORM, [x, weight, bias, mean, var], floats=[eps])

    def maxpool2d(
        self,
        x: TensorRef,
        kernel: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
    ) -> int:
        k = _pair(kernel)
        return self.node(
            Op.MAXPOOL2D, [x], [*k, *_pair(stride if stride is not None else kernel), *_pair(padding)]
        )

    def avgpool2d(
        self,
        x: TensorRef,
        kernel: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        count_include_pad: bool = True,
    ) -> int:
        k = _pair(kernel)
        s = _pair(stride if stride is not None else kernel)
        return self.node(Op.AVGPOOL2D, [x], [*k, *s, *_pair(padding), int(count_include_pad)])

    def relu(self, x: TensorRef) -> int:
        return self.node(Op.RELU, [x])

    def leaky_relu(self, x: TensorRef, slope: float = 0.01) -> int:
        return self.node(Op.LEAKY_RELU, [x], floats=[slope])

    def tanh(self, x: TensorRef) -> int:
        return self.node(Op.TANH, [x])

    def sigmoid(self, x: TensorRef) -> int:
        return self.node(Op.SIGMOID, [x])

    def gelu(self, x: TensorRef) -> int:
        """GELU, GPT-2's tanh approximation."""
        return self.node(Op.GELU, [x])

    def softmax(self, x: TensorRef) -> int:
        """Softmax over the last axis."""
        return self.node(Op.SOFTMAX, [x])

    def layernorm(self, x: TensorRef, weight: TensorRef, bias: TensorRef, eps: float = 1e-5) -> int:
        return self.node(Op.LAYERNORM, [x, weight, bias], floats=[eps])

    def embedding(self, ids: TensorRef, table: TensorRef) -> int:
        return self.node(Op.EMBEDDING, [ids, table])

    def add(self, a: TensorRef, b: TensorRef) -> int:
        return self.node(Op.ADD, [a, b])

    def mul(self, a: TensorRef, b: TensorRef) -> int:
        return self.node(Op.MUL, [a, b])

    def reshape(self, x: TensorRef, shape: Sequence[int]) -> int:
        """Reshape (one dim may be -1); also the flatten op."""
        xid = self._ref(x)
        shape = list(shape)
        if shape.count(-1) == 1:
            rest = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
            shape[shape.index(-1)] = self.tensors[xid].numel // max(rest, 1)
        return self.node(Op.RESHAPE, [xid], shape=shape)

    def flatten(self, x: TensorRef, start_dim: int = 1) -> int:
        xid = self._ref(x)
        s = self.tensors[xid].shape
        return self.reshape(xid, [*s[:start_dim], int(np.prod(s[start_dim:], dtype=np.int64))])

    def transpose(self, x: TensorRef, perm: Sequence[int]) -> int:
        return self.node(Op.TRANSPOSE, [x], list(perm))

    def attention(self, qkv: TensorRef, n_head: int, max_ctx: int) -> int:
        """GPT-2 causal self-attention with a KV cache; qkv = [t, 3c] (q | k | v)."""
        return self.node(Op.ATTENTION, [qkv], [n_head, max_ctx])

    def argmax(self, x: TensorRef) -> int:
        return self.node(Op.ARGMAX, [x])

    # -- quantized ops (docs/model-format.md, "Quantized models") --
    def quantize(self, x: TensorRef, scale: float, zero_point: int, dtype: DType | str = DType.U8) -> int:
        """clamp(round_half_even(x / scale) + zero_point) as i8 or u8 (ONNX QuantizeLinear)."""
        code = DTYPE_CODES[_parse(DType, dtype, "dtype")]
        return self.node(Op.QUANTIZE, [x], [zero_point, code], [scale])

    def dequantize(self, x: TensorRef, scale: float, zero_point: int = 0) -> int:
        """(x - zero_point) * scale as f32 (ONNX DequantizeLinear)."""
        return self.node(Op.DEQUANTIZE, [x], [zero_point], [scale])

    def qlinear(
        self,
        x: TensorRef,
        w: TensorRef,
        bias: TensorRef,
        mult: TensorRef,
        shift: TensorRef,
        zero_points: Sequence[int],
        dtype: DType | str = DType.U8,
    ) -> int:
        """requant(bias + (x - zx) . (w - zw)^T) with w [n, k]; zero_points = (zx, zw, zy)."""
        code = DTYPE_CODES[_parse(DType, dtype, "dtype")]
        return self.node(Op.QLINEAR, [x, w, bias, mult, shift], [*zero_points, code])

    def qconv2d(
        self,
        x: TensorRef,
        w: TensorRef,
        bias: TensorRef,
        mult: TensorRef,
        shift: TensorRef,
        zero_points: Sequence[int],
        dtype: DType | str = DType.U8,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
    ) -> int:
        """conv2d on 8-bit tensors with int32 sums, requantized; zero_points = (zx, zw, zy)."""
        code = DTYPE_CODES[_parse(DType, dtype, "dtype")]
        ints = [*_pair(stride), *_pair(padding), *zero_points, code]
        return self.node(Op.QCONV2D, [x, w, bias, mult, shift], ints)

    # -- training ops (docs/model-format.md, "Training graphs") --
    def softmax_xent(self, logits: TensorRef, labels: TensorRef) -> int:
        """Mean cross-entropy of softmax(logits) [m, n] against i32 labels [m]: f32 [1]."""
        return self.node(Op.SOFTMAX_XENT, [logits, labels])

    def softmax_xent_grad(self, logits: TensorRef, labels: TensorRef) -> int:
        """The gradient of `softmax_xent` with respect to the logits: (softmax - onehot) / m."""
        return self.node(Op.SOFTMAX_XENT_GRAD, [logits, labels])

    def linear_grad_x(self, dy: TensorRef, w: TensorRef) -> int:
        """dx = dy @ w for y = x @ w.T + b."""
        return self.node(Op.LINEAR_GRAD_X, [dy, w])

    def linear_grad_w(self, dy: TensorRef, x: TensorRef) -> int:
        """dw = dy.T @ x for y = x @ w.T + b."""
        return self.node(Op.LINEAR_GRAD_W, [dy, x])

    def linear_grad_b(self, dy: TensorRef) -> int:
        """db = dy summed over rows."""
        return self.node(Op.LINEAR_GRAD_B, [dy])

    def relu_grad(self, dy: TensorRef, y: TensorRef) -> int:
        """dx = dy where the relu's output y > 0, else 0."""
        return self.node(Op.RELU_GRAD, [dy, y])

    def matmul_grad_a(self, dy: TensorRef, b: TensorRef) -> int:
        """da = dy @ b^T (per batch entry) for y = a @ b."""
        return self.node(Op.MATMUL_GRAD_A, [dy, b])

    def matmul_grad_b(self, dy: TensorRef, a: TensorRef) -> int:
        """db = a^T @ dy per batch entry for y = a @ b (a shared b's: reshape a and dy to rank 2 first)."""
        return self.node(Op.MATMUL_GRAD_B, [dy, a])

    def gelu_grad(self, dy: TensorRef, x: TensorRef) -> int:
        """dx = dy * gelu'(x), x the gelu's input (GPT-2's tanh form, as `gelu`)."""
        return self.node(Op.GELU_GRAD, [dy, x])

    def momentum(self, v: TensorRef, g: TensorRef, mu: float) -> int:
        """v' = mu * v + g (torch SGD's momentum buffer, dampening 0)."""
        return self.node(Op.MOMENTUM, [v, g], floats=[mu])

    def sgd(self, p: TensorRef, d: TensorRef, lr: float) -> int:
        """p' = p - lr * d."""
        return self.node(Op.SGD, [p, d], floats=[lr])

    def concat(self, xs: Sequence[TensorRef], axis: int) -> int:
        """Concatenation along `axis` (1 to 6 inputs of one dtype and rank)."""
        return self.node(Op.CONCAT, list(xs), [axis])

    def build(self) -> Model:
        model = Model(
            list(self.tensors),
            list(self.nodes),
            list(self.inputs),
            list(self.outputs),
            self.mode,
            self.gen_eos,
        )
        validate(model)
        return model

    def to_bytes(self) -> bytes:
        return encode_model(self.build())


# Aliases: the exporter's names.
write_model = encode_model
read_model = decode_model


def gen_payload(prompt: Sequence[int], n_new: int) -> bytes:
    """The input payload of a generate-mode model (see mlkit.io.generate_payload)."""
    from mlkit.io import generate_payload

    return generate_payload(prompt, n_new)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)
