"""Import ONNX models into the mlkit model format.

    model_bytes = import_onnx("net.onnx")

Supported ONNX ops (inference, static shapes; a symbolic batch dimension is fixed to 1): Gemm (alpha = beta
= 1, transA = 0), MatMul (with a constant right operand -> linear; two activations -> matmul), Add, Mul, Sub
and Div by constants, Conv and ConvTranspose (group 1, dilation 1, symmetric padding), BatchNormalization,
Relu, LeakyRelu, Tanh, Sigmoid, Gelu (approximate = tanh), Softmax (last axis), LayerNormalization (last
axis), MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Gather on a
constant table (embedding), ArgMax (last axis, keepdims = 0), Identity, Dropout, Constant. Anything else
raises `OnnxImportError` naming every unsupported op of the model.

Quantized models in the QDQ form (QuantizeLinear / DequantizeLinear pairs, as
`onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)` writes them) run on mlkit's
8-bit ops (docs/model-format.md, "Quantized models"): QuantizeLinear of a float value -> `quantize`; a Gemm,
MatMul (constant weight) or Conv whose activation is a DequantizeLinear of an 8-bit value, whose weight (and
bias) are DequantizeLinear of int8 / uint8 (int32) constants, and whose only consumer is a QuantizeLinear ->
`qlinear` / `qconv2d` with int32 sums and integer requantization to that QuantizeLinear's scale; MaxPool,
Flatten, Reshape, Squeeze, Unsqueeze between a DequantizeLinear and a QuantizeLinear of the same scale and
zero point -> the op on the 8-bit tensor. Any other use of a dequantized value gets a `dequantize` node and
runs in float. Activations are quantized per tensor; weights per tensor or per output channel, with one zero
point (0 for the symmetric int8 weights quantize_static writes by default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlkit.export import (
    ExportError,
    Graph,
    emit_binary,
    emit_conv2d,
    emit_conv_transpose2d,
    emit_dequantize,
    emit_linear,
    emit_pool,
    emit_qop,
    emit_quantize,
    emit_reshape,
    emit_transpose,
    last_axis,
)


class OnnxImportError(ExportError):
    """The ONNX file cannot be read, or uses ops or settings that mlkit cannot run."""


def import_onnx(path: str | Path) -> bytes:
    """Read the ONNX model at `path` and return the equivalent mlkit model bytes."""
    return onnx_graph(path).to_bytes()


def onnx_graph(path: str | Path) -> Graph:
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    return _Importer(proto).run()


Rule = Callable[["_Importer", Any], None]
_RULES: dict[str, Rule] = {}


def _rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            _RULES[op] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(_RULES)


class _Importer:
    def __init__(self, proto: Any) -> None:
        import onnx
        from onnx import numpy_helper

        self.proto = _static_shapes(proto)
        try:
            self.proto = onnx.shape_inference.infer_shapes(self.proto, strict_mode=False)
        except Exception as exc:
            raise OnnxImportError(f"ONNX shape inference failed: {exc}") from None
        self.opset = next((o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        gr = self.proto.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in gr.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in [*gr.input, *gr.value_info, *gr.output]:
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
        self.g = Graph()
        self.env: dict[str, int] = {}
        # QDQ: 8-bit activations (name -> QValue), dequantized views of them (DQ output -> quantized name),
        # DequantizeLinear of constants (DQ output -> QConst), nodes already done by a fused op
        self.qvalues: dict[str, QValue] = {}
        self.dq_views: dict[str, str] = {}
        self.qconsts: dict[str, QConst] = {}
        self.done: set[int] = set()
        self.consumers: dict[str, list[Any]] = {}
        for node in self.proto.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def run(self) -> Graph:
        gr = self.proto.graph
        unsupported = sorted(
            {n.op_type for n in gr.node if n.op_type not in _RULES or n.domain not in ("", "ai.onnx")}
        )
        if unsupported:
            raise OnnxImportError(
                f"unsupported ONNX op(s): {', '.join(unsupported)} (supported: {', '.join(supported_ops())})"
            )
        for vi in gr.input:
            if vi.name in self.consts:
                continue
            self.env[vi.name] = self.g.add_input(
                self.shape_of(vi.name), _dtype(vi.type.tensor_type.elem_type)
            )
        for node in gr.node:
            if id(node) in self.done:
                continue
            try:
                _RULES[node.op_type](self, node)
            except OnnxImportError:
                raise
            except ExportError as exc:
                raise OnnxImportError(f"{node.op_type} node {node.name or node.output[0]!r}: {exc}") from None
        for vi in gr.output:
            if vi.name in self.dq_views or vi.name in self.qvalues:
                self.tensor(vi.name)  # a dequantize node (graph outputs are f32)
            if vi.name not in self.env:
                raise OnnxImportError(
                    f"graph output {vi.name!r} is a constant; mlkit outputs computed tensors"
                )
            self.g.outputs.append(self.env[vi.name])
        return self.g

    # -- helpers for the rules
    def shape_of(self, name: str) -> tuple[int, ...]:
        if name in self.env:
            return self.g.shape(self.env[name])
        if name in self.consts:
            return tuple(self.consts[name].shape)
        if name not in self.shapes:
            raise OnnxImportError(f"tensor {name!r} has no static shape (export with fixed input shapes)")
        return self.shapes[name]

    def out_shape(self, node: Any, i: int = 0) -> tuple[int, ...]:
        return self.shape_of(node.output[i])

    def tensor(self, name: str) -> int:
        """The mlkit tensor for an ONNX value: an activation, or a constant added on first use."""
        if name not in self.env and (name in self.dq_views or name in self.qvalues):
            q = self.qvalues[self.dq_views.get(name, name)]
            self.env[name] = emit_dequantize(self.g, q.tid, q.scale, q.zero_point)
        if name not in self.env:
            if name not in self.consts:
                raise OnnxImportError(f"tensor {name!r} is used before it is defined")
            arr = self.consts[name]
            self.env[name] = self.g.const(arr, "i32" if arr.dtype.kind in "iub" else "f32")
        return self.env[name]

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise OnnxImportError(f"{what} {name!r} must be a constant (initializer)")
        return self.consts[name]

    def is_const(self, name: str) -> bool:
        return name in self.consts and name not in self.env

    def bind(self, node: Any, tid: int) -> None:
        self.env[node.output[0]] = tid


@dataclass(frozen=True)
class QValue:
    """An 8-bit activation: its mlkit tensor, scale and zero point."""

    tid: int
    scale: float
    zero_point: int
    dtype: str  # "u8" or "i8"


@dataclass(frozen=True)
class QConst:
    """A DequantizeLinear of a constant: the integers, scales and zero points (per axis or one)."""

    data: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int


def _static_shapes(proto: Any) -> Any:
    """Fix symbolic (or unknown) input dimensions to 1: mlkit models have static shapes."""
    for vi in proto.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = 1
    return proto


def _dtype(elem_type: int) -> str:
    from onnx import TensorProto

    if elem_type == TensorProto.FLOAT:
        return "f32"
    if elem_type in (TensorProto.INT32, TensorProto.INT64):
        return "i32"
    raise OnnxImportError(
        f"input of ONNX element type {TensorProto.DataType.Name(elem_type)} (float32 / int only)"
    )


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _sym_pads(pads: Sequence[int] | None, node: Any) -> tuple[int, int]:
    if not pads:
        return (0, 0)
    top, left, bottom, right = (int(p) for p in pads)
    if top != bottom or left != right:
        raise OnnxImportError(
            f"{node.op_type} {node.name!r}: asymmetric padding {list(pads)} is not supported"
        )
    return (top, left)


def _check_window(node: Any, a: dict[str, Any]) -> None:
    auto = a.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID"):
        raise OnnxImportError(f"{node.op_type} {node.name!r}: auto_pad={auto!r} is not supported (use pads)")
    if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
        raise OnnxImportError(f"{node.op_type} {node.name!r}: dilations {a['dilations']} are not supported")
    if int(a.get("group", 1)) != 1:
        raise OnnxImportError(f"{node.op_type} {node.name!r}: group={a['group']} is not supported")
    if int(a.get("ceil_mode", 0)):
        raise OnnxImportError(f"{node.op_type} {node.name!r}: ceil_mode=1 is not supported")


# -- rules ------------------------------------------------------------------------------------------------


@_rule("Gemm")
def _gemm(im: _Importer, node: Any) -> None:
    a = _attrs(node)
    if _qgemm(im, node, a):
        return
    if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0 or int(a.get("transA", 0)):
        raise OnnxImportError(f"Gemm {node.name!r}: only alpha = beta = 1 and transA = 0 are supported")
    w = im.const(node.input[1], "Gemm weight")
    if not int(a.get("transB", 0)):
        w = np.ascontiguousarray(w.T)
    bias = im.const(node.input[2], "Gemm bias") if len(node.input) > 2 and node.input[2] else None
    if bias is not None and bias.size != w.shape[0]:
        bias = np.broadcast_to(bias.reshape(-1), (w.shape[0],)).copy()
    im.bind(node, emit_linear(im.g, im.tensor(node.input[0]), w, bias))


@_rule("MatMul")
def _matmul(im: _Importer, node: Any) -> None:
    if _qmatmul(im, node):
        return
    a, b = node.input
    if im.is_const(b) and im.consts[b].ndim == 2:
        im.bind(node, emit_linear(im.g, im.tensor(a), np.ascontiguousarray(im.consts[b].T), None))
        return
    sa, sb = im.shape_of(a), im.shape_of(b)
    if len(sa) < 2 or len(sb) < 2 or (len(sb) != 2 and sb[:-2] != sa[:-2]):
        raise OnnxImportError(f"MatMul {node.name!r} of shapes {sa} and {sb} is not supported")
    im.bind(node, im.g.node("matmul", [im.tensor(a), im.tensor(b)], im.out_shape(node)))


@_rule("Add", "Mul", "Sub", "Div")
def _binary(im: _Importer, node: Any) -> None:
    a, b = node.input
    op = "add" if node.op_type in ("Add", "Sub") else "mul"
    if node.op_type in ("Sub", "Div"):
        if not im.is_const(b):
            raise OnnxImportError(f"{node.op_type} {node.name!r}: the second operand must be a constant")
        c = im.consts[b].astype(np.float32)
        im.consts[b + "#neg"] = -c if node.op_type == "Sub" else (np.float32(1.0) / c)
        b = b + "#neg"
    out = emit_binary(im.g, op, im.tensor(a), im.tensor(b))
    if im.g.shape(out) != im.out_shape(node):
        raise OnnxImportError(
            f"{node.op_type} {node.name!r}: broadcast to {im.out_shape(node)} is not supported"
        )
    im.bind(node, out)


@_rule("Conv")
def _conv(im: _Importer, node: Any) -> None:
    a = _attrs(node)
    _check_window(node, a)
    if _qconv(im, node, a):
        return
    w = im.const(node.input[1], "Conv weight").astype(np.float32)
    b = im.const(node.input[2], "Conv bias") if len(node.input) > 2 and node.input[2] else None
    if w.ndim != 4:
        raise OnnxImportError(f"Conv {node.name!r}: only 2-D convolutions are supported")
    stride = tuple(int(s) for s in a.get("strides", [1, 1]))
    out = emit_conv2d(im.g, im.tensor(node.input[0]), w, b, stride, _sym_pads(a.get("pads"), node))
    im.bind(node, out)


@_rule("ConvTranspose")
def _conv_t(im: _Importer, node: Any) -> None:
    a = _attrs(node)
    _check_window(node, a)
    w = im.const(node.input[1], "ConvTranspose weight").astype(np.float32)
    b = im.const(node.input[2], "ConvTranspose bias") if len(node.input) > 2 and node.input[2] else None
    if w.ndim != 4:
        raise OnnxImportError(f"ConvTranspose {node.name!r}: only 2-D convolutions are supported")
    stride = tuple(int(s) for s in a.get("strides", [1, 1]))
    out_pad = tuple(int(p) for p in a.get("output_padding", [0, 0]))
    x = im.tensor(node.input[0])
    out = emit_conv_transpose2d(im.g, x, w, b, stride, _sym_pads(a.get("pads"), node), out_pad)
    if "output_shape" in a and im.g.shape(out)[2:] != tuple(a["output_shape"])[-2:]:
        raise OnnxImportError(f"ConvTranspose {node.name!r}: output_shape is not supported")
    im.bind(node, out)


@_rule("BatchNormalization")
def _batchnorm(im: _Importer, node: Any) -> None:
    a = _attrs(node)
    if int(a.get("training_mode", 0)) or len([o for o in node.output if o]) > 1:
        raise OnnxImportError(f"BatchNormalization {node.name!r}: training mode is not supported")
    params = [im.const(n, "BatchNormalization parameter").astype(np.float32) for n in node.input[1:5]]
    ins = [im.tensor(node.input[0]), *(im.g.const(p) for p in params)]
    eps = float(a.get("epsilon", 1e-5))
    im.bind(node, im.g.node("batchnorm", ins, im.out_shape(node), floats=(eps,)))


@_rule("Relu", "Tanh", "Sigmoid")
def _unary(im: _Importer, node: Any) -> None:
    x = im.tensor(node.input[0])
    im.bind(node, im.g.node(node.op_type.lower(), [x], im.g.shape(x)))


@_rule("LeakyRelu")
def _leaky(im: _Importer, node: Any) -> None:
    x = im.tensor(node.input[0])
    alpha = float(_attrs(node).get("alpha", 0.01))
    im.bind(node, im.g.node("leaky_relu", [x], im.g.shape(x), floats=(alpha,)))


@_rule("Gelu")
def _gelu(im: _Importer, node: Any) -> None:
    approx = _attrs(node).get("approximate", b"none")
    if (approx.decode() if isinstance(approx, bytes) else approx) != "tanh":
        raise OnnxImportError(f"Gelu {node.name!r}: approximate='none' (mlkit has the tanh approximation)")
    x = im.tensor(node.input[0])
    im.bind(node, im.g.node("gelu", [x], im.g.shape(x)))


@_rule("Softmax")
def _softmax(im: _Importer, node: Any) -> None:
    x = im.tensor(node.input[0])
    rank = len(im.g.shape(x))
    axis = int(_attrs(node).get("axis", -1 if im.opset >= 13 else 1))
    last_axis(axis, rank, "Softmax")
    im.bind(node, im.g.node("softmax", [x], im.g.shape(x)))


@_rule("LayerNormalization")
def _layernorm(im: _Importer, node: Any) -> None:
    a = _attrs(node)
    x = im.tensor(node.input[0])
    shape = im.g.shape(x)
    last_axis(int(a.get("axis", -1)), len(shape), "LayerNormalization")
    gamma = im.const(node.input[1], "LayerNormalization scale").astype(np.float32)
    has_beta = len(node.input) > 2 and node.input[2]
    beta = im.const(node.input[2], "LayerNormalization bias") if has_beta else np.zeros_like(gamma)
    ins = [x, im.g.const(gamma), im.g.const(beta.astype(np.float32))]
    im.bind(node, im.g.node("layernorm", ins, shape, floats=(float(a.get("epsilon", 1e-5)),)))


@_rule("MaxPool", "AveragePool")
def _pool(im: _Importer, node: Any) -> None:
    a = _attrs(node)
    if node.op_type == "MaxPool" and _q_passthrough(im, node):
        return
    _check_window(node, a)
    if len([o for o in node.output if o]) > 1:
        raise OnnxImportError(f"MaxPool {node.name!r}: the Indices output is not supported")
    kernel = tuple(int(k) for k in a["kernel_shape"])
    stride = tuple(int(s) for s in a.get("strides", [1, 1]))
    pad = _sym_pads(a.get("pads"), node)
    x = im.tensor(node.input[0])
    if node.op_type == "MaxPool":
        im.bind(node, emit_pool(im.g, "maxpool2d", x, kernel, stride, pad))
    else:
        cip = bool(int(a.get("count_include_pad", 0)))
        im.bind(node, emit_pool(im.g, "avgpool2d", x, kernel, stride, pad, cip))


@_rule("GlobalAveragePool")
def _gap(im: _Importer, node: Any) -> None:
    x = im.tensor(node.input[0])
    _, _, h, w = im.g.shape(x)
    im.bind(node, emit_pool(im.g, "avgpool2d", x, (h, w), (h, w), (0, 0), True))


@_rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def _reshape(im: _Importer, node: Any) -> None:
    if _q_passthrough(im, node):
        return
    im.bind(node, emit_reshape(im.g, im.tensor(node.input[0]), im.out_shape(node)))


@_rule("Transpose")
def _transpose(im: _Importer, node: Any) -> None:
    x = im.tensor(node.input[0])
    perm = _attrs(node).get("perm") or list(reversed(range(len(im.g.shape(x)))))
    im.bind(node, emit_transpose(im.g, x, perm))


@_rule("Gather")
def _gather(im: _Importer, node: Any) -> None:
    if int(_attrs(node).get("axis", 0)) != 0 or not im.is_const(node.input[0]):
        raise OnnxImportError(f"Gather {node.name!r}: only embedding lookups (constant table, axis 0)")
    table = im.consts[node.input[0]].astype(np.float32)
    if table.ndim != 2:
        raise OnnxImportError(f"Gather {node.name!r}: the table must be 2-D")
    ids = im.tensor(node.input[1])
    if im.g.dtype(ids) != "i32":
        raise OnnxImportError(f"Gather {node.name!r}: ids must be integers")
    im.bind(node, im.g.node("embedding", [ids, im.g.const(table)], im.out_shape(node)))


@_rule("ArgMax")
def _argmax(im: _Importer, node: Any) -> None:
    a = _attrs(node)
    x = im.tensor(node.input[0])
    last_axis(int(a.get("axis", 0)), len(im.g.shape(x)), "ArgMax")
    if int(a.get("keepdims", 1)) or int(a.get("select_last_index", 0)):
        raise OnnxImportError(f"ArgMax {node.name!r}: only keepdims=0 and select_last_index=0")
    im.bind(node, im.g.node("argmax", [x], im.g.shape(x)[:-1], dtype="i32"))


@_rule("Identity", "Dropout")
def _identity(im: _Importer, node: Any) -> None:
    if node.op_type == "Dropout" and len([o for o in node.output if o]) > 1:
        raise OnnxImportError(f"Dropout {node.name!r}: the mask output is not supported")
    if im.is_const(node.input[0]):
        im.consts[node.output[0]] = im.consts[node.input[0]]
        return
    im.bind(node, im.tensor(node.input[0]))


@_rule("Constant")
def _constant(im: _Importer, node: Any) -> None:
    from onnx import numpy_helper

    a = {attr.name: attr for attr in node.attribute}
    if "value" not in a:
        raise OnnxImportError(f"Constant {node.name!r}: only the 'value' form is supported")
    im.consts[node.output[0]] = numpy_helper.to_array(a["value"].t)


# -- QDQ: quantized models ---------------------------------------------------------------------------------

_Q_DTYPES = {np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8"}


def _qparams(im: _Importer, node: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """A QuantizeLinear's or DequantizeLinear's scale, zero point (uint8 0 if absent) and axis."""
    scale = np.asarray(im.const(node.input[1], f"{node.op_type} scale"), dtype=np.float32)
    has_zp = len(node.input) > 2 and node.input[2]
    zp = np.zeros((), np.uint8)
    if has_zp:
        zp = np.asarray(im.const(node.input[2], f"{node.op_type} zero point"))
    return scale, zp, int(_attrs(node).get("axis", 1))


@_rule("QuantizeLinear")
def _quantize(im: _Importer, node: Any) -> None:
    scale, zp, _ = _qparams(im, node)
    dtype = _Q_DTYPES.get(zp.dtype)
    if dtype is None or scale.size != 1 or zp.size != 1:
        raise OnnxImportError(
            f"QuantizeLinear {node.name!r}: activations are quantized per tensor to int8 or uint8, "
            f"got {zp.dtype} with {scale.size} scale(s)"
        )
    x = im.tensor(node.input[0])
    if im.g.dtype(x) != "f32":
        raise OnnxImportError(f"QuantizeLinear {node.name!r}: quantizes float tensors only")
    tid = emit_quantize(im.g, x, float(scale.reshape(())), int(zp.reshape(())), dtype)
    im.qvalues[node.output[0]] = QValue(tid, float(scale.reshape(())), int(zp.reshape(())), dtype)


@_rule("DequantizeLinear")
def _dequantize(im: _Importer, node: Any) -> None:
    x, out = node.input[0], node.output[0]
    scale, zp, axis = _qparams(im, node)
    if im.is_const(x):  # a quantized constant: kept as integers, and as floats for float consumers
        data = np.asarray(im.consts[x])
        axis = axis % max(data.ndim, 1)
        bshape = [1] * data.ndim
        if scale.size > 1:
            bshape[axis] = -1
        z = zp.astype(np.int64).reshape(bshape if zp.size > 1 else ())
        im.qconsts[out] = QConst(data, scale.reshape(-1), zp.reshape(-1).astype(np.int64), axis)
        sc = scale.reshape(bshape if scale.size > 1 else ())
        floats = (data.astype(np.int64) - z).astype(np.float32) * sc
        im.consts[out] = floats.astype(np.float32)
        return
    if x not in im.qvalues:
        raise OnnxImportError(
            f"DequantizeLinear {node.name!r}: {x!r} is not a QuantizeLinear output or a constant"
        )
    if scale.size != 1 or zp.size != 1:
        raise OnnxImportError(f"DequantizeLinear {node.name!r}: activations are dequantized per tensor")
    q = im.qvalues[x]
    im.dq_views[out] = x
    im.qvalues[out] = QValue(q.tid, float(scale.reshape(())), int(zp.reshape(())), q.dtype)


def _only_quantize_of(im: _Importer, name: str) -> Any | None:
    """The QuantizeLinear that is the only consumer of `name` (and name no graph output), or None."""
    users = im.consumers.get(name, [])
    outputs = {vi.name for vi in im.proto.graph.output}
    if len(users) == 1 and users[0].op_type == "QuantizeLinear" and name not in outputs:
        return users[0]
    return None


def _q_out(im: _Importer, node: Any) -> tuple[Any, float, int, str] | None:
    """The QuantizeLinear of node's output, with its (per tensor) scale, zero point and dtype; or None."""
    q = _only_quantize_of(im, node.output[0])
    if q is None:
        return None
    scale, zp, _ = _qparams(im, q)
    dtype = _Q_DTYPES.get(zp.dtype)
    if dtype is None or scale.size != 1 or zp.size != 1:
        return None
    return q, float(scale.reshape(())), int(zp.reshape(())), dtype


def _q_passthrough(im: _Importer, node: Any) -> bool:
    """MaxPool and reshapes between a dequantize and a quantize of the same parameters: on the 8-bit tensor
    (they move or compare values, so Q(op(DQ(q))) = op(q))."""
    x = node.input[0]
    out = _q_out(im, node)
    if x not in im.dq_views or out is None:
        return False
    qx, (q, scale, zp, dtype) = im.qvalues[x], out
    if (qx.scale, qx.zero_point, qx.dtype) != (scale, zp, dtype):
        return False
    if node.op_type == "MaxPool":
        a = _attrs(node)
        kernel = tuple(int(k) for k in a["kernel_shape"])
        stride = tuple(int(s) for s in a.get("strides", [1, 1]))
        if len([o for o in node.output if o]) > 1 or len(kernel) != 2:
            return False
        tid = emit_pool(im.g, "maxpool2d", qx.tid, kernel, stride, _sym_pads(a.get("pads"), node))
    else:
        tid = emit_reshape(im.g, qx.tid, im.out_shape(node))
    im.qvalues[q.output[0]] = QValue(tid, scale, zp, dtype)
    im.done.add(id(q))
    return True


def _qop(
    im: _Importer,
    node: Any,
    op: str,
    x: str,
    w: np.ndarray,
    wq: QConst,
    w_axis: int,
    bias: str | None,
    **conv: Any,
) -> bool:
    """Emit qlinear / qconv2d for node (w in mlkit's layout, its output channels on axis 0; w_axis: the axis
    of wq's per-channel scales in that layout) if its activation is a dequantized 8-bit value, its weight an
    8-bit constant with one zero point, and its only consumer a QuantizeLinear."""
    out = _q_out(im, node)
    wdtype = _Q_DTYPES.get(w.dtype)
    if x not in im.dq_views or out is None or wdtype is None or np.unique(wq.zero_point).size != 1:
        return False
    if wq.scale.size > 1 and w_axis != 0:
        return False
    qx, (q, y_scale, y_zp, y_dtype) = im.qvalues[x], out
    n = w.shape[0]
    acc_scale = np.float32(qx.scale) * np.broadcast_to(wq.scale, (n,)).astype(np.float32)  # float32, as ORT
    if not bias:
        bias_int = np.zeros(n, np.int64)
    elif (
        bias in im.qconsts
        and im.qconsts[bias].data.dtype == np.int32
        and np.array_equal(np.broadcast_to(im.qconsts[bias].scale, (n,)), acc_scale)
        and not im.qconsts[bias].zero_point.any()
    ):
        bias_int = im.qconsts[bias].data.astype(np.int64).reshape(n)
    else:  # a float bias, or another scale: rounded to the sums' scale
        b = np.asarray(im.const(bias, f"{node.op_type} bias"), np.float64).reshape(n)
        bias_int = np.clip(np.rint(b / acc_scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int64)
    m = acc_scale.astype(np.float64) / np.float64(np.float32(y_scale))
    if wq.scale.size == 1:
        m = m[:1]
    zps = (qx.zero_point, int(wq.zero_point.reshape(-1)[0]), y_zp)
    tid = emit_qop(im.g, op, qx.tid, w, wdtype, bias_int, m, zps, y_dtype, **conv)
    im.qvalues[q.output[0]] = QValue(tid, y_scale, y_zp, y_dtype)
    im.done.add(id(q))
    return True


def _qgemm(im: _Importer, node: Any, a: dict[str, Any]) -> bool:
    w = node.input[1]
    if w not in im.qconsts or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        return False
    if int(a.get("transA", 0)):
        return False
    wq = im.qconsts[w]
    trans_b = int(a.get("transB", 0))
    data = wq.data if trans_b else np.ascontiguousarray(wq.data.T)
    axis = wq.axis if trans_b else 1 - wq.axis
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return _qop(im, node, "qlinear", node.input[0], data, wq, axis, bias)


def _qmatmul(im: _Importer, node: Any) -> bool:
    w = node.input[1]
    if w not in im.qconsts or im.qconsts[w].data.ndim != 2:
        return False
    wq = im.qconsts[w]
    return _qop(im, node, "qlinear", node.input[0], np.ascontiguousarray(wq.data.T), wq, 1 - wq.axis, None)


def _qconv(im: _Importer, node: Any, a: dict[str, Any]) -> bool:
    w = node.input[1]
    if w not in im.qconsts or im.qconsts[w].data.ndim != 4:
        return False
    wq = im.qconsts[w]
    stride = tuple(int(s) for s in a.get("strides", [1, 1]))
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    pad = _sym_pads(a.get("pads"), node)
    return _qop(im, node, "qconv2d", node.input[0], wq.data, wq, wq.axis, bias, stride=stride, pad=pad)
