"""Export torch models to the mlkit model format (docs/model-format.md).

Two exporters share one small graph builder (`Graph`):

- `export_module(module, example_input)`: any `nn.Module` that `torch.fx.symbolic_trace` can trace and whose
  modules / functions / methods all map to mlkit ops (Linear, Conv2d, ConvTranspose2d, BatchNorm1d/2d (eval
  statistics), MaxPool2d, AvgPool2d, ReLU, LeakyReLU, Tanh, Sigmoid, GELU (tanh approximation), Softmax over
  the last axis, LayerNorm over the last axis, Embedding, Flatten/reshape/view, transpose/permute, add, mul,
  matmul, argmax, Dropout/Identity as no-ops). Shapes come from running the example input through the traced
  graph (batch included: the exported model takes exactly that shape). Anything else raises `ExportError`
  naming the module (with its path in the model) or the function.
- `export_gpt2(model, ...)`: a `transformers.GPT2LMHeadModel` -> mlkit's embedding, layernorm, linear,
  causal attention (with KV cache), gelu and argmax ops, either in generate mode (greedy generation of N
  tokens from a prompt: the runtime feeds one token per step) or as a plain model returning the logits of a
  fixed-length token sequence. The graph is built from a config and a state dict of numpy arrays
  (`gpt2_spec`, `gpt2_weights_graph`), so a checkpoint read from disk (`mlkit.hf_import`) takes the same path.
- `export_quantized(module, example_input, calibration)`: an int8 model (docs/model-format.md, "Quantized
  models") by post-training static quantization: the module goes to ONNX, onnxruntime's `quantize_static`
  calibrates and quantizes it in the QDQ form (`qdq_onnx`, the calibration is described there), and
  `mlkit.onnx_import` turns that into mlkit's 8-bit ops. The mlkit model computes what onnxruntime computes
  on the same QDQ file, within the requantization rounding (tests/mlkit/test_quantized.py).

Every model they write is planned for the split dispute game (`mlkit.plan.bound_executions`): a node whose
execution would need too many VM steps is split into tiles joined by `concat` nodes, computing the same bits.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlkit import format as fmt


class ExportError(ValueError):
    """The model uses a module, function or setting that mlkit cannot run."""


# --------------------------------------------------------------------------------------------------------
# The graph builder
# --------------------------------------------------------------------------------------------------------


class Graph:
    """A model under construction, on `format.ModelBuilder` (which infers and checks every shape).

    Ops are named as in `format.Op` (lower case); `node` also takes the output shape the caller expects,
    so a lowering mistake shows up as an `ExportError` at export time rather than as a wrong model.
    """

    def __init__(self, mode: str = "plain", gen_eos: int = -1) -> None:
        fmode = fmt.Mode.GENERATE if mode == "generate" else fmt.Mode.PLAIN
        self.builder = fmt.ModelBuilder(mode=fmode, gen_eos=gen_eos)

    @property
    def inputs(self) -> list[int]:
        return self.builder.inputs

    @property
    def outputs(self) -> list[int]:
        return self.builder.outputs

    def shape(self, tid: int) -> tuple[int, ...]:
        return tuple(self.builder.tensors[tid].shape)

    def dtype(self, tid: int) -> str:
        return str(self.builder.tensors[tid].dtype.value)

    def add_input(self, shape: Sequence[int], dtype: str = "f32") -> int:
        try:
            return self.builder.input(tuple(int(d) for d in shape), _DTYPES[dtype])
        except fmt.ModelFormatError as exc:
            raise ExportError(f"model input: {exc}") from None

    def const(self, array: Any, dtype: str = "f32") -> int:
        """A constant tensor (float32, or int32, int8, uint8); a 0-d array becomes shape (1,)."""
        data = np.asarray(array, dtype=np.float32 if dtype == "f32" else np.int64)
        if data.ndim == 0:
            data = data.reshape(1)
        if data.ndim > fmt.MAX_RANK:
            raise ExportError(f"constant of rank {data.ndim}: mlkit tensors have rank <= {fmt.MAX_RANK}")
        try:
            return self.builder.const(data, _DTYPES[dtype])
        except fmt.ModelFormatError as exc:
            raise ExportError(f"constant of shape {data.shape}: {exc}") from None

    def node(
        self,
        op: str,
        inputs: Sequence[int],
        shape: Sequence[int],
        dtype: str = "f32",
        ints: Sequence[int] = (),
        floats: Sequence[float] = (),
    ) -> int:
        """Append a node and return the id of its (new) output tensor."""
        shape = tuple(int(d) for d in shape)
        if len(shape) > fmt.MAX_RANK:
            raise ExportError(f"{op}: output of rank {len(shape)}; mlkit tensors have rank <= {fmt.MAX_RANK}")
        try:
            out = self.builder.node(
                fmt.Op[op.upper()], list(inputs), ints, floats, shape=shape if op == "reshape" else None
            )
        except fmt.ModelFormatError as exc:
            raise ExportError(f"{op}: {exc}") from None
        if self.shape(out) != shape or self.dtype(out) != dtype:
            raise ExportError(
                f"{op}: mlkit computes {self.dtype(out)}{self.shape(out)}, expected {dtype}{shape}"
            )
        return out

    def to_bytes(self) -> bytes:
        """The model file, planned for the split game (mlkit.plan: big nodes split into tiles, the same
        output bits)."""
        from mlkit.plan import bound_executions

        try:
            return fmt.encode_model(bound_executions(self.builder.build()))
        except fmt.ModelFormatError as exc:
            raise ExportError(str(exc)) from None


_DTYPES = {"f32": fmt.DType.F32, "i32": fmt.DType.I32, "i8": fmt.DType.I8, "u8": fmt.DType.U8}


def np_of(t: Any) -> np.ndarray:
    """A torch tensor (or anything array-like) as a float32 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------
# Shared lowering helpers (also used by the ONNX importer)
# --------------------------------------------------------------------------------------------------------


def conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def tconv_out(n: int, k: int, s: int, p: int, op: int) -> int:
    return (n - 1) * s - 2 * p + k + op


def emit_conv2d(
    g: Graph, x: int, w: np.ndarray, b: np.ndarray | None, stride: Sequence[int], pad: Sequence[int]
) -> int:
    n, _, h, wd = g.shape(x)
    oc, _, kh, kw = w.shape
    shape = (n, oc, conv_out(h, kh, stride[0], pad[0]), conv_out(wd, kw, stride[1], pad[1]))
    ins = [x, g.const(w)] + ([g.const(b)] if b is not None else [])
    return g.node("conv2d", ins, shape, ints=(stride[0], stride[1], pad[0], pad[1]))


def emit_conv_transpose2d(
    g: Graph,
    x: int,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: Sequence[int],
    pad: Sequence[int],
    out_pad: Sequence[int],
) -> int:
    n, _, h, wd = g.shape(x)
    _, oc, kh, kw = w.shape
    shape = (
        n,
        oc,
        tconv_out(h, kh, stride[0], pad[0], out_pad[0]),
        tconv_out(wd, kw, stride[1], pad[1], out_pad[1]),
    )
    ins = [x, g.const(w)] + ([g.const(b)] if b is not None else [])
    ints = (stride[0], stride[1], pad[0], pad[1], out_pad[0], out_pad[1])
    return g.node("conv_transpose2d", ins, shape, ints=ints)


def emit_pool(
    g: Graph,
    op: str,
    x: int,
    kernel: Sequence[int],
    stride: Sequence[int],
    pad: Sequence[int],
    count_include_pad: bool | None = None,
) -> int:
    n, c, h, w = g.shape(x)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ExportError(f"{op}: padding {tuple(pad)} larger than half the kernel {tuple(kernel)}")
    shape = (n, c, conv_out(h, kernel[0], stride[0], pad[0]), conv_out(w, kernel[1], stride[1], pad[1]))
    ints = [kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1]]
    if op == "avgpool2d":
        ints.append(1 if count_include_pad else 0)
    return g.node(op, [x], shape, dtype=g.dtype(x), ints=ints)


def emit_linear(g: Graph, x: int, w: np.ndarray, b: np.ndarray | None) -> int:
    """y = x . w^T + b with w in nn.Linear's [out, in] layout."""
    shape = g.shape(x)
    if not shape or shape[-1] != w.shape[1]:
        raise ExportError(f"linear: input of shape {shape} does not match weight {w.shape}")
    ins = [x, g.const(w)] + ([g.const(b)] if b is not None else [])
    return g.node("linear", ins, (*shape[:-1], w.shape[0]))


def emit_binary(g: Graph, op: str, a: int, b: int) -> int:
    """add / mul where one operand's shape is a suffix of the other's (or a scalar); leading 1s of the
    smaller operand are dropped (torch broadcasting of (1, C) over (T, C))."""
    sa, sb = g.shape(a), g.shape(b)
    if _suffix_of(sb, sa) is None and _suffix_of(sa, sb) is not None:
        a, b, sa, sb = b, a, sb, sa  # commutative: put the larger operand first
    trimmed = _suffix_of(sb, sa)
    if trimmed is None:
        raise ExportError(f"{op}: shapes {sa} and {sb} do not broadcast as a suffix (mlkit's only broadcast)")
    return g.node(op, [a, emit_reshape(g, b, trimmed)], sa)


def _suffix_of(small: tuple[int, ...], big: tuple[int, ...]) -> tuple[int, ...] | None:
    """`small` without its leading 1s if that is a suffix of `big` (or a single element), else None."""
    if int(np.prod(small)) == 1:
        return small
    trimmed = small
    while len(trimmed) > 1 and trimmed[0] == 1:
        trimmed = trimmed[1:]
    if len(trimmed) <= len(big) and tuple(big[len(big) - len(trimmed) :]) == trimmed:
        return trimmed
    return None


def emit_reshape(g: Graph, x: int, shape: Sequence[int]) -> int:
    shape = tuple(int(d) for d in shape)
    if shape == g.shape(x):
        return x
    if int(np.prod(shape)) != int(np.prod(g.shape(x))):
        raise ExportError(f"reshape: {g.shape(x)} to {shape} changes the number of elements")
    return g.node("reshape", [x], shape, dtype=g.dtype(x))


def emit_transpose(g: Graph, x: int, perm: Sequence[int]) -> int:
    shape = g.shape(x)
    perm = [int(p) % len(shape) for p in perm]
    if perm == list(range(len(shape))):
        return x
    return g.node("transpose", [x], [shape[p] for p in perm], dtype=g.dtype(x), ints=perm)


def requant_params(m: Any) -> tuple[np.ndarray, np.ndarray]:
    """The integer requantization of real multipliers m (> 0; one per output channel, or one):
    int32 (mult, shift) with m ~= mult * 2^-shift, mult in [2^30, 2^31) (31 significant bits) and shift in
    0..62 (docs/model-format.md, "Quantized models"). Computed from m's float64 value, exactly as written
    there, so every exporter gives the same integers for the same scales."""
    mults, shifts = [], []
    for v in np.atleast_1d(np.asarray(m, dtype=np.float64)).ravel():
        if not np.isfinite(v) or v <= 0:
            raise ExportError(f"requantization multiplier {v} must be finite and > 0")
        frac, exp = np.frexp(v)  # v = frac * 2^exp, frac in [0.5, 1)
        mult, shift = int(np.rint(frac * 2.0**31)), 31 - int(exp)
        if mult == 1 << 31:
            mult, shift = 1 << 30, shift - 1
        if shift > fmt.MAX_SHIFT:  # tiny multipliers: fewer significant bits
            mult, shift = int(np.rint(mult / 2.0 ** (shift - fmt.MAX_SHIFT))), fmt.MAX_SHIFT
        if shift < 0:
            raise ExportError(f"requantization multiplier {v} is too large (>= 2^31)")
        mults.append(mult)
        shifts.append(shift)
    return np.array(mults, np.int32), np.array(shifts, np.int32)


def emit_quantize(g: Graph, x: int, scale: float, zero_point: int, dtype: str) -> int:
    ints = (int(zero_point), fmt.DTYPE_CODES[_DTYPES[dtype]])
    return g.node("quantize", [x], g.shape(x), dtype=dtype, ints=ints, floats=(float(scale),))


def emit_dequantize(g: Graph, x: int, scale: float, zero_point: int) -> int:
    return g.node("dequantize", [x], g.shape(x), ints=(int(zero_point),), floats=(float(scale),))


def emit_qop(
    g: Graph,
    op: str,
    x: int,
    w: np.ndarray,
    w_dtype: str,
    bias: np.ndarray,
    m: Any,
    zero_points: Sequence[int],
    y_dtype: str,
    stride: Sequence[int] = (1, 1),
    pad: Sequence[int] = (0, 0),
) -> int:
    """qlinear (w [n, k]) or qconv2d (w [oc, c, kh, kw]) of the 8-bit x, with int32 bias [n] and the real
    requantization multipliers m (x_scale * w_scale / y_scale, per output channel or one);
    zero_points = (x, w, y)."""
    mult, shift = requant_params(m)
    ins = [x, g.const(w, w_dtype), g.const(np.asarray(bias, np.int64), "i32"), g.const(mult, "i32")]
    ins.append(g.const(shift, "i32"))
    code = fmt.DTYPE_CODES[_DTYPES[y_dtype]]
    zps = tuple(int(z) for z in zero_points)
    n = w.shape[0]
    if op == "qlinear":
        return g.node(op, ins, (*g.shape(x)[:-1], n), dtype=y_dtype, ints=(*zps, code))
    b, _, h, wd = g.shape(x)
    _, _, kh, kw = w.shape
    shape = (b, n, conv_out(h, kh, stride[0], pad[0]), conv_out(wd, kw, stride[1], pad[1]))
    return g.node(op, ins, shape, dtype=y_dtype, ints=(*stride, *pad, *zps, code))


def last_axis(axis: int | None, rank: int, what: str) -> None:
    if axis is None or (axis != -1 and axis != rank - 1):
        raise ExportError(
            f"{what} over axis {axis} of a rank-{rank} tensor: mlkit supports the last axis only"
        )


# --------------------------------------------------------------------------------------------------------
# torch.fx exporter
# --------------------------------------------------------------------------------------------------------


def export_module(module: Any, example_input: Any) -> bytes:
    """Export an `nn.Module` (inference semantics) taking one input shaped like `example_input`."""
    return fx_graph(module, example_input).to_bytes()


def fx_graph(module: Any, example_input: Any) -> Graph:
    """Trace `module` with torch.fx, propagate the example's shapes, and lower every node to mlkit ops."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = module.training
    module.eval()
    try:
        try:
            gm = torch.fx.symbolic_trace(module)
        except Exception as exc:  # fx raises many types; name the cause
            raise ExportError(f"torch.fx cannot trace {type(module).__name__}: {exc}") from exc
        example = torch.as_tensor(example_input)
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
        return _FxLowering(gm).run()
    finally:
        module.train(was_training)


_ModuleRule = Callable[["_FxLowering", Any, str, list[int], tuple[int, ...]], int]
_MODULE_RULES: dict[str, _ModuleRule] = {}


def _module_rule(*names: str) -> Callable[[_ModuleRule], _ModuleRule]:
    def register(fn: _ModuleRule) -> _ModuleRule:
        for name in names:
            _MODULE_RULES[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class _Ref:
    """A tensor argument of an fx node (Python scalars stay plain numbers)."""

    tid: int


class _FxLowering:
    """Lowers a traced graph. The environment maps fx names to `_Ref` (a tensor of the mlkit graph) or to a
    plain Python value (static shape arithmetic such as `x.shape[0]`, evaluated at export time)."""

    def __init__(self, gm: Any) -> None:
        self.gm = gm
        self.g = Graph()
        self.env: dict[str, Any] = {}
        self.modules = dict(gm.named_modules())

    def run(self) -> Graph:
        for node in self.gm.graph.nodes:
            if node.op == "output":
                self._outputs(node.args[0])
                continue
            value = self._lower(node)
            self.env[node.name] = _Ref(value) if isinstance(value, int) and _is_tensor(node) else value
        return self.g

    def _outputs(self, arg: Any) -> None:
        items = list(arg) if isinstance(arg, tuple | list) else [arg]
        for item in items:
            ref = self.env.get(getattr(item, "name", ""))
            if not isinstance(ref, _Ref):
                raise ExportError(f"the model returns {item!r}, not a tensor")
            self.g.outputs.append(ref.tid)

    def _lower(self, node: Any) -> Any:
        shape, dtype = self._meta(node)
        if node.op == "placeholder":
            if len(self.g.inputs) >= 1:
                raise ExportError(f"the model takes more than one input ({node.name}); export supports one")
            return self.g.add_input(shape, dtype)
        if node.op == "get_attr":
            return self.g.const(self._attr(node.target), dtype)
        args = [self._arg(a) for a in node.args]
        kwargs = {k: self._arg(v) for k, v in node.kwargs.items()}
        if node.op == "call_module":
            mod = self.modules[node.target]
            rule = _MODULE_RULES.get(type(mod).__name__)
            if rule is None:
                raise ExportError(
                    f"unsupported module {type(mod).__name__} at '{node.target}' "
                    f"(supported: {', '.join(sorted(_MODULE_RULES))})"
                )
            return rule(self, mod, node.target, [a.tid for a in args if isinstance(a, _Ref)], shape)
        if node.op in ("call_function", "call_method"):
            if not _has_ref(args) and not _has_ref(list(kwargs.values())):
                return _static_call(node, args, kwargs)
            if node.op == "call_function" and node.target is getattr and args[1] == "shape":
                return self.g.shape(args[0].tid)
            if node.op == "call_method" and node.target == "size":
                full = self.g.shape(args[0].tid)
                return full if len(args) < 2 else full[args[1]]
            return self._call(node, args, kwargs, shape)
        raise ExportError(f"unsupported fx node kind {node.op!r} ({node.name})")

    def _meta(self, node: Any) -> tuple[tuple[int, ...], str]:
        import torch

        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            return (), "f32"
        ints = (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)
        if meta.dtype in ints:
            return tuple(int(d) for d in meta.shape), "i32"
        if meta.dtype != torch.float32:
            raise ExportError(f"{node.name}: dtype {meta.dtype} (mlkit runs float32 and int32 only)")
        return tuple(int(d) for d in meta.shape), "f32"

    def _attr(self, target: str) -> np.ndarray:
        obj: Any = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj.detach().cpu().numpy()

    def _arg(self, a: Any) -> Any:
        import torch.fx

        if isinstance(a, torch.fx.Node):
            return self.env[a.name]
        if isinstance(a, tuple | list):
            return type(a)(self._arg(x) for x in a)
        return a

    # -- functions and methods (torch.relu, F.relu, x.relu(), operator.add, ...)
    def _call(self, node: Any, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]) -> int:
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))
        name = name.strip("_") if name.startswith("__") else name.rstrip("_")
        if name in ("add", "iadd", "mul", "imul") and len(args) == 2 and not isinstance(args[0], _Ref):
            args = [args[1], args[0]]  # 2.0 * x
        x = args[0].tid if args and isinstance(args[0], _Ref) else None
        if x is None:
            raise ExportError(
                f"unsupported function {name!r} ({node.name}): its first argument is not a tensor"
            )
        fn = _FUNCTION_RULES.get(name)
        if fn is None:
            raise ExportError(
                f"unsupported function or method {name!r} ({node.name}); "
                f"supported: {', '.join(sorted(_FUNCTION_RULES))}"
            )
        return fn(self, x, args, kwargs, shape)


def _is_tensor(node: Any) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


def _has_ref(values: list[Any]) -> bool:
    return any(isinstance(v, _Ref) or (isinstance(v, tuple | list) and _has_ref(list(v))) for v in values)


def _static_call(node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Python arithmetic on static values (shapes, sizes): evaluated now."""
    try:
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)
    except Exception as exc:
        raise ExportError(f"cannot evaluate {node.name} at export time: {exc}") from None


def _arg_or(args: list[Any], kwargs: dict[str, Any], i: int, key: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(key, default)


_FnRule = Callable[[_FxLowering, int, list[Any], dict[str, Any], tuple[int, ...]], int]


def _fn_unary(op: str) -> _FnRule:
    return lambda low, x, args, kwargs, shape: low.g.node(op, [x], shape)


def _fn_leaky(
    low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> int:
    return low.g.node(
        "leaky_relu", [x], shape, floats=(float(_arg_or(args, kwargs, 1, "negative_slope", 0.01)),)
    )


def _fn_gelu(
    low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> int:
    if kwargs.get("approximate", "none") != "tanh":
        raise ExportError("unsupported function gelu with approximate='none' (mlkit has approximate='tanh')")
    return low.g.node("gelu", [x], shape)


def _fn_softmax(
    low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> int:
    last_axis(_arg_or(args, kwargs, 1, "dim", None), len(shape), "softmax")
    return low.g.node("softmax", [x], shape)


def _fn_argmax(
    low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> int:
    last_axis(_arg_or(args, kwargs, 1, "dim", None), len(low.g.shape(x)), "argmax")
    if _arg_or(args, kwargs, 2, "keepdim", False):
        raise ExportError("unsupported argmax with keepdim=True")
    return low.g.node("argmax", [x], shape, dtype="i32")


def _fn_reshape(
    low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> int:
    return emit_reshape(low.g, x, shape)


def _fn_identity(
    low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> int:
    return x


def _fn_arith(name: str) -> _FnRule:
    def rule(
        low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
    ) -> int:
        g = low.g
        other = _arg_or(args, kwargs, 1, "other", None)
        op = "mul" if name in ("mul", "truediv", "div") else "add"
        if isinstance(other, _Ref):
            if name not in ("add", "mul"):
                raise ExportError(f"unsupported function {name} between two tensors (only add and mul)")
            return emit_binary(g, op, x, other.tid)
        if not isinstance(other, int | float):
            raise ExportError(f"unsupported {name} with operand {other!r}")
        scalar = {"sub": -float(other), "truediv": 1.0 / float(other), "div": 1.0 / float(other)}.get(
            name, float(other)
        )
        return g.node(op, [x, g.const(np.float32(scalar))], shape)

    return rule


def _fn_matmul(
    low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> int:
    g = low.g
    b = args[1]
    if not isinstance(b, _Ref):
        raise ExportError("unsupported matmul with a non-tensor operand")
    sa, sb = g.shape(x), g.shape(b.tid)
    if len(sa) < 2 or len(sb) < 2:
        raise ExportError(f"unsupported matmul of shapes {sa} and {sb}: both operands need rank >= 2")
    if len(sb) != 2 and sb[:-2] != sa[:-2]:
        raise ExportError(f"unsupported matmul of shapes {sa} and {sb}: batch dims must match (or b rank 2)")
    return g.node("matmul", [x, b.tid], shape)


def _fn_transpose(name: str) -> _FnRule:
    def rule(
        low: _FxLowering, x: int, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
    ) -> int:
        rank = len(low.g.shape(x))
        perm = list(range(rank))
        if name == "permute":
            dims = args[1] if len(args) == 2 and isinstance(args[1], tuple | list) else args[1:]
            perm = [int(d) for d in dims]
        elif name == "t":
            perm[-2:] = perm[-1], perm[-2]
        else:
            i, j = int(args[1]) % rank, int(args[2]) % rank
            perm[i], perm[j] = perm[j], perm[i]
        return emit_transpose(low.g, x, perm)

    return rule


_FUNCTION_RULES: dict[str, _FnRule] = {
    "relu": _fn_unary("relu"),
    "tanh": _fn_unary("tanh"),
    "sigmoid": _fn_unary("sigmoid"),
    "leaky_relu": _fn_leaky,
    "gelu": _fn_gelu,
    "softmax": _fn_softmax,
    "argmax": _fn_argmax,
    "matmul": _fn_matmul,
    "flatten": _fn_reshape,
    "reshape": _fn_reshape,
    "view": _fn_reshape,
    "squeeze": _fn_reshape,
    "unsqueeze": _fn_reshape,
    "contiguous": _fn_identity,
    "dropout": _fn_identity,
    "clone": _fn_identity,
    "detach": _fn_identity,
    "permute": _fn_transpose("permute"),
    "transpose": _fn_transpose("transpose"),
    "t": _fn_transpose("t"),
    **{n: _fn_arith(n) for n in ("add", "iadd", "mul", "imul", "sub", "truediv", "div")},
}


# -- module rules ------------------------------------------------------------------------------------------


@_module_rule("Linear")
def _linear(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    return emit_linear(low.g, args[0], np_of(m.weight), np_of(m.bias) if m.bias is not None else None)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, tuple | list) else (int(v), int(v))


def _check_conv(m: Any, path: str) -> None:
    name = type(m).__name__
    if m.groups != 1:
        raise ExportError(f"unsupported {name} at '{path}': groups={m.groups} (only 1)")
    if _pair(m.dilation) != (1, 1):
        raise ExportError(f"unsupported {name} at '{path}': dilation={m.dilation} (only 1)")
    if m.padding_mode != "zeros":
        raise ExportError(f"unsupported {name} at '{path}': padding_mode={m.padding_mode!r}")


@_module_rule("Conv2d")
def _conv2d(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    _check_conv(m, path)
    pad = m.padding
    if isinstance(pad, str):
        kh, kw = m.kernel_size
        if pad == "valid":
            pad = (0, 0)
        elif kh % 2 == 1 and kw % 2 == 1:  # 'same' with odd kernels is symmetric
            pad = (kh // 2, kw // 2)
        else:
            raise ExportError(
                f"unsupported Conv2d at '{path}': padding='same' with an even kernel (asymmetric)"
            )
    b = np_of(m.bias) if m.bias is not None else None
    return emit_conv2d(low.g, args[0], np_of(m.weight), b, _pair(m.stride), _pair(pad))


@_module_rule("ConvTranspose2d")
def _conv_t(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    _check_conv(m, path)
    if len(args) > 1:
        raise ExportError(f"unsupported ConvTranspose2d at '{path}': an explicit output_size argument")
    b = np_of(m.bias) if m.bias is not None else None
    out_pad = _pair(m.output_padding)
    return emit_conv_transpose2d(
        low.g, args[0], np_of(m.weight), b, _pair(m.stride), _pair(m.padding), out_pad
    )


@_module_rule("BatchNorm1d", "BatchNorm2d")
def _batchnorm(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    if m.running_mean is None or m.running_var is None:
        raise ExportError(f"unsupported {type(m).__name__} at '{path}': no running statistics")
    c = m.num_features
    gamma = np_of(m.weight) if m.weight is not None else np.ones(c, np.float32)
    beta = np_of(m.bias) if m.bias is not None else np.zeros(c, np.float32)
    g = low.g
    ins = [
        args[0],
        g.const(gamma),
        g.const(beta),
        g.const(np_of(m.running_mean)),
        g.const(np_of(m.running_var)),
    ]
    return g.node("batchnorm", ins, shape, floats=(m.eps,))


@_module_rule("MaxPool2d", "AvgPool2d")
def _pool(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    name = type(m).__name__
    if m.ceil_mode:
        raise ExportError(f"unsupported {name} at '{path}': ceil_mode=True")
    if name == "MaxPool2d":
        if _pair(m.dilation) != (1, 1) or m.return_indices:
            raise ExportError(f"unsupported MaxPool2d at '{path}': dilation or return_indices")
        op, cip = "maxpool2d", None
    else:
        if m.divisor_override is not None:
            raise ExportError(f"unsupported AvgPool2d at '{path}': divisor_override")
        op, cip = "avgpool2d", bool(m.count_include_pad)
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride) if m.stride is not None else kernel
    return emit_pool(low.g, op, args[0], kernel, stride, _pair(m.padding), cip)


@_module_rule("ReLU", "Tanh", "Sigmoid")
def _unary(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    return low.g.node(type(m).__name__.lower(), [args[0]], shape)


@_module_rule("LeakyReLU")
def _leaky(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    return low.g.node("leaky_relu", [args[0]], shape, floats=(m.negative_slope,))


@_module_rule("GELU")
def _gelu(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    if m.approximate != "tanh":
        raise ExportError(
            f"unsupported GELU at '{path}': approximate='none' (mlkit has the tanh approximation)"
        )
    return low.g.node("gelu", [args[0]], shape)


@_module_rule("Softmax")
def _softmax(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    try:
        last_axis(m.dim, len(shape), "Softmax")
    except ExportError as exc:
        raise ExportError(f"unsupported Softmax at '{path}': {exc}") from None
    return low.g.node("softmax", [args[0]], shape)


@_module_rule("LayerNorm")
def _layernorm(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    if len(m.normalized_shape) != 1:
        raise ExportError(
            f"unsupported LayerNorm at '{path}': normalized over {m.normalized_shape}, not one axis"
        )
    n = m.normalized_shape[0]
    gamma = np_of(m.weight) if m.weight is not None else np.ones(n, np.float32)
    beta = np_of(m.bias) if getattr(m, "bias", None) is not None else np.zeros(n, np.float32)
    g = low.g
    return g.node("layernorm", [args[0], g.const(gamma), g.const(beta)], shape, floats=(m.eps,))


@_module_rule("Embedding")
def _embedding(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    if m.max_norm is not None:
        raise ExportError(f"unsupported Embedding at '{path}': max_norm")
    g = low.g
    if g.dtype(args[0]) != "i32":
        raise ExportError(f"Embedding at '{path}' takes integer ids")
    return g.node("embedding", [args[0], g.const(np_of(m.weight))], shape)


@_module_rule("Flatten")
def _flatten(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    return emit_reshape(low.g, args[0], shape)


@_module_rule("Dropout", "Identity")
def _identity(low: _FxLowering, m: Any, path: str, args: list[int], shape: tuple[int, ...]) -> int:
    return args[0]


# --------------------------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------------------------


def export_gpt2(model: Any, mode: str = "generate", seq_len: int | None = None, eos: int = -1) -> bytes:
    """Export a `transformers.GPT2LMHeadModel`.

    mode "generate": inputs are the prompt token ids and the number of new tokens (see `format.gen_payload`);
    the output is the greedily generated token ids (stopping early at `eos` if >= 0).
    mode "logits": a plain model from token ids i32[seq_len] to logits f32[seq_len, vocab].
    """
    return gpt2_graph(model, mode, seq_len, eos).to_bytes()


def gpt2_graph(model: Any, mode: str = "generate", seq_len: int | None = None, eos: int = -1) -> Graph:
    if type(model).__name__ != "GPT2LMHeadModel":
        raise ExportError(f"export_gpt2 takes a GPT2LMHeadModel, got {type(model).__name__}")
    weights = {k.removeprefix("transformer."): np_of(v) for k, v in model.state_dict().items()}
    return gpt2_weights_graph(gpt2_spec(model.config.to_dict()), weights, mode, seq_len, eos)


@dataclass(frozen=True)
class Gpt2Spec:
    """The GPT-2 hyper-parameters the graph needs (transformers' `GPT2Config` names)."""

    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    layer_norm_epsilon: float


def gpt2_spec(cfg: Mapping[str, Any]) -> Gpt2Spec:
    """Check a GPT-2 config (a `GPT2Config.to_dict()` or a config.json) for what mlkit can run."""
    act = cfg.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ExportError(f"unsupported GPT-2 activation {act!r} (mlkit has the tanh-approximation GELU)")
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn"):
        raise ExportError("unsupported GPT-2 attention options (scale_attn_by_inverse_layer_idx / reorder)")
    if not cfg.get("scale_attn_weights", True):
        raise ExportError("unsupported GPT-2 option scale_attn_weights=False")
    try:
        spec = Gpt2Spec(
            vocab_size=int(cfg.get("vocab_size", 50257)),
            n_positions=int(cfg.get("n_positions", 1024)),
            n_embd=int(cfg.get("n_embd", 768)),
            n_layer=int(cfg.get("n_layer", 12)),
            n_head=int(cfg.get("n_head", 12)),
            n_inner=int(cfg.get("n_inner") or 4 * int(cfg.get("n_embd", 768))),
            layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-5)),
        )
    except (TypeError, ValueError) as exc:
        raise ExportError(f"malformed GPT-2 config: {exc}") from None
    if min(spec.vocab_size, spec.n_positions, spec.n_embd, spec.n_layer, spec.n_head, spec.n_inner) < 1:
        raise ExportError(f"malformed GPT-2 config: sizes must be positive ({spec})")
    if spec.n_embd % spec.n_head:
        raise ExportError(
            f"malformed GPT-2 config: n_embd {spec.n_embd} is not a multiple of n_head {spec.n_head}"
        )
    return spec


def gpt2_weights_graph(
    spec: Gpt2Spec,
    weights: Mapping[str, np.ndarray],
    mode: str = "generate",
    seq_len: int | None = None,
    eos: int = -1,
) -> Graph:
    """The GPT-2 graph from a state dict in transformers' names without the `transformer.` prefix
    (`wte.weight`, `h.0.attn.c_attn.weight`, ..., `ln_f.bias`, optionally `lm_head.weight`; Conv1D weights in
    their [in, out] layout). Every tensor's shape is checked against `spec` (ExportError naming it)."""
    c, vocab, ctx = spec.n_embd, spec.vocab_size, spec.n_positions

    def w(name: str, *shape: int) -> np.ndarray:
        if name not in weights:
            raise ExportError(f"the checkpoint has no tensor {name!r}")
        a = np.asarray(weights[name], dtype=np.float32)
        if a.shape != shape:
            raise ExportError(f"checkpoint tensor {name!r} has shape {list(a.shape)}, expected {list(shape)}")
        return a

    g = Graph(mode=mode, gen_eos=eos if mode == "generate" else -1)
    if mode == "generate":
        tok = g.add_input((1,), "i32")
        pos = g.add_input((1,), "i32")
        t = 1
    elif mode == "logits":
        if seq_len is None or not 1 <= seq_len <= ctx:
            raise ExportError(f"logits mode needs 1 <= seq_len <= n_positions ({ctx}), got {seq_len}")
        t = seq_len
        tok = g.add_input((t,), "i32")
        pos = g.const(np.arange(t, dtype=np.int32), "i32")
    else:
        raise ExportError(f"unknown GPT-2 export mode {mode!r} (generate or logits)")
    wte = w("wte.weight", vocab, c)
    wte_id = g.const(wte)
    h = g.node("embedding", [tok, wte_id], (t, c))
    p = g.node("embedding", [pos, g.const(w("wpe.weight", ctx, c))], (t, c))
    h = g.node("add", [h, p], (t, c))
    eps = spec.layer_norm_epsilon

    def layernorm(prefix: str, x: int) -> int:
        ins = [x, g.const(w(f"{prefix}.weight", c)), g.const(w(f"{prefix}.bias", c))]
        return g.node("layernorm", ins, (t, c), floats=(eps,))

    def conv1d(prefix: str, x: int, n_in: int, n_out: int) -> int:
        """transformers' Conv1D computes x @ W + b with W [in, out]: mlkit linear takes W^T."""
        weight = np.ascontiguousarray(w(f"{prefix}.weight", n_in, n_out).T)
        return emit_linear(g, x, weight, w(f"{prefix}.bias", n_out))

    for i in range(spec.n_layer):
        b, inner = f"h.{i}", spec.n_inner
        qkv = conv1d(f"{b}.attn.c_attn", layernorm(f"{b}.ln_1", h), c, 3 * c)
        att = g.node("attention", [qkv], (t, c), ints=(spec.n_head, ctx))
        h = g.node("add", [h, conv1d(f"{b}.attn.c_proj", att, c, c)], (t, c))
        m = g.node("gelu", [conv1d(f"{b}.mlp.c_fc", layernorm(f"{b}.ln_2", h), c, inner)], (t, inner))
        h = g.node("add", [h, conv1d(f"{b}.mlp.c_proj", m, inner, c)], (t, c))
    h = layernorm("ln_f", h)
    head = weights.get("lm_head.weight")
    tied = head is None or np.array_equal(np.asarray(head, dtype=np.float32), wte)
    head_id = wte_id if tied else g.const(w("lm_head.weight", vocab, c))  # GPT-2 ties lm_head to wte
    logits = g.node("linear", [h, head_id], (t, vocab))
    g.outputs.append(g.node("argmax", [logits], (t,), dtype="i32") if mode == "generate" else logits)
    return g


# --------------------------------------------------------------------------------------------------------
# int8: post-training static quantization
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer logs advice on the root logger ("consider pre-processing"): not for users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def qdq_onnx(
    module: Any, example_input: Any, calibration: Any, path: str | Path, per_channel: bool = False
) -> Path:
    """Write `module` (inference semantics, one input shaped like `example_input`) to `path` as an ONNX
    model quantized by onnxruntime in the QDQ form, and return the path.

    The calibration, post-training and static: `calibration` is an array of float32 inputs, each shaped like
    `example_input` (or stacked along a first axis, e.g. `load_digits_28().x_train[:256]`); they run one at
    a time through the float model and each quantized tensor's range is the min and max it takes over them
    (onnxruntime's MinMax calibration; ranges always include 0). Activations are uint8 with a zero point
    (asymmetric), weights int8 symmetric (zero point 0, scale max|w| / 127) per tensor or, with
    `per_channel`, per output channel; biases int32 at the scale x_scale * w_scale; a ReLU after a Conv or
    Gemm is folded into that output's range (zero point 0). This is `quantize_static`'s default QDQ
    configuration with `QuantFormat.QDQ`, `QuantType.QUInt8` activations and `QuantType.QInt8` weights.
    """
    import onnx
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    example = np.asarray(example_input.detach().cpu() if hasattr(example_input, "detach") else example_input)
    samples = np.asarray(calibration, dtype=np.float32)
    if samples.shape == example.shape:
        samples = samples[None]
    if samples.shape[1:] != example.shape and samples.shape[1:] != example.shape[1:]:
        raise ExportError(f"calibration inputs {samples.shape[1:]} do not match the input {example.shape}")
    samples = samples.reshape((-1, *example.shape)).astype(np.float32)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="mlkit-qdq-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                args = (torch.from_numpy(example.astype(np.float32)),)
                torch.onnx.export(module, args, str(fp32), dynamo=False)
        finally:
            module.train(was_training)
        input_name = onnx.load(str(fp32)).graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{input_name: x} for x in samples])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.items, None)

        with _quiet_root_logger():
            quantize_static(
                str(fp32),
                str(path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    return path


def export_quantized(module: Any, example_input: Any, calibration: Any, per_channel: bool = False) -> bytes:
    """An int8 mlkit model of `module`: `qdq_onnx` (see there for the calibration), imported."""
    from mlkit.onnx_import import import_onnx

    with tempfile.TemporaryDirectory(prefix="mlkit-qdq-") as tmp:
        path = qdq_onnx(module, example_input, calibration, Path(tmp) / "model.qdq.onnx", per_channel)
        return import_onnx(path)
