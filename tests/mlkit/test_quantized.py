"""The int8 path (docs/model-format.md, "Quantized models"): 8-bit tensors and the quantize, dequantize,
qlinear and qconv2d ops.

- Semantics: every op against a numpy model of the rules written in the docs (integer sums, requantization
  by multiplier and shift with ties rounded up, saturation), property-based (hypothesis) over shapes,
  dtypes, zero points, strides, paddings and requantization parameters, on both native builds.
- Format: 8-bit models are version 2 and only they are; the Python reader and the C validator accept and
  reject the same files (zero points, scales, multipliers, shifts, dtypes, graph inputs and outputs).
- The VM: a quantized model gives the native bytes in the guest (and a pinned output hash).
- ONNX QDQ (onnxruntime's quantize_static) and the torch exporter: the MNIST MLP and LeNet, per tensor and
  per channel, match onnxruntime on the same QDQ file (measured: bit for bit; the stated tolerance is one
  step of the output's quantization) and keep their accuracy.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.env import scaled

from mipsvm.hashing import keccak256
from mlkit import native
from mlkit.build import build_native
from mlkit.export import ExportError, requant_params
from mlkit.format import (
    DTYPE_CODES,
    NODE_ENTRY,
    TENSOR_ENTRY,
    DType,
    ModelBuilder,
    ModelFormatError,
    decode_model,
)
from mlkit.io import decode_payload, encode_payload

RANGE = {"u8": (0, 255), "i8": (-128, 127)}
NP = {"u8": np.uint8, "i8": np.int8}


# --------------------------------------------------------------------------------------------------------
# numpy model of the rules in docs/model-format.md
# --------------------------------------------------------------------------------------------------------
def ref_quantize(x: np.ndarray, scale: float, zp: int, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        q = np.rint(x.astype(np.float32) / np.float32(scale))  # binary32 division, then ties to even
    q = np.where(np.isnan(q), 0, np.clip(np.nan_to_num(q), -(2**30), 2**30)).astype(np.int64) + zp
    lo, hi = RANGE[dtype]
    return np.clip(q, lo, hi).astype(NP[dtype])


def ref_dequantize(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return (q.astype(np.int64) - zp).astype(np.float32) * np.float32(scale)


def ref_requant(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, zy: int, dtype: str) -> np.ndarray:
    """acc int64 [..., n] (already wrapped to int32), per channel (last axis) or one mult/shift."""
    v = acc.astype(object) * mult.astype(object)
    s = shift.astype(object)
    r = np.vectorize(lambda v, s: (v + (1 << (s - 1))) >> s if s else v, otypes=[object])(v, s)
    lo, hi = RANGE[dtype]
    return np.clip((r + zy).astype(np.int64), lo, hi).astype(NP[dtype])


def wrap32(a: np.ndarray) -> np.ndarray:
    return ((a.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int64)


def ref_qlinear(x, w, bias, mult, shift, zx, zw, zy, ydt):  # type: ignore[no-untyped-def]
    acc = (x.astype(np.int64) - zx) @ (w.astype(np.int64) - zw).T + bias.astype(np.int64)
    return ref_requant(wrap32(acc), mult, shift, zy, ydt)


def ref_qconv2d(x, w, bias, mult, shift, zx, zw, zy, ydt, stride, pad):  # type: ignore[no-untyped-def]
    b, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    xp = np.full((b, c, h + 2 * pad[0], wd + 2 * pad[1]), zx, np.int64)  # padding is the real 0
    xp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + wd] = x
    oh, ow = (h + 2 * pad[0] - kh) // stride[0] + 1, (wd + 2 * pad[1] - kw) // stride[1] + 1
    acc = np.zeros((b, oc, oh, ow), np.int64)
    wz = w.astype(np.int64) - zw
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw] - zx
            acc[:, :, i, j] = np.einsum("bcyx,ocyx->bo", patch, wz)
    acc += bias.astype(np.int64)[None, :, None, None]
    out = ref_requant(wrap32(np.moveaxis(acc, 1, -1)), mult, shift, zy, ydt)
    return np.moveaxis(out, -1, 1)


# --------------------------------------------------------------------------------------------------------
# running models
# --------------------------------------------------------------------------------------------------------
@functools.cache
def soft_dot_library() -> Any:
    return native.load_library(build_native(["MLK_SOFT_DOT"]))


def run(model: bytes, *inputs: np.ndarray) -> list[np.ndarray]:
    """Both native builds (they must agree byte for byte); the outputs."""
    payload = encode_payload(list(inputs))
    rc, out = native.run_code(model, payload)
    assert rc == 0, f"exit code {rc}"
    assert native.run_code(model, payload, soft_dot_library()) == (rc, out)
    return decode_payload(out)


def q_model(build: Callable[[ModelBuilder, int], int], x_shape: tuple[int, ...]) -> bytes:
    """A model: f32 input -> build(builder, input) -> an 8-bit tensor -> dequantize (scale 1, zp 0), so the
    output is the 8-bit values themselves as floats."""
    b = ModelBuilder()
    y = build(b, b.input(x_shape))
    b.output(b.dequantize(y, 1.0, 0))
    return b.to_bytes()


# --------------------------------------------------------------------------------------------------------
# semantics, property-based
# --------------------------------------------------------------------------------------------------------
QSETTINGS = settings(
    max_examples=scaled(60), derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
dtypes = st.sampled_from(["u8", "i8"])


@st.composite
def requant_case(draw: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    per_channel = draw(st.booleans())
    k = n if per_channel else 1
    mult = np.array(draw(st.lists(st.integers(0, 2**31 - 1), min_size=k, max_size=k)), np.int32)
    if draw(st.booleans()):  # realistic: multipliers of 2^30..2^31 with shifts around 30..45
        mult = np.array(draw(st.lists(st.integers(2**30, 2**31 - 1), min_size=k, max_size=k)), np.int32)
        shift = np.array(draw(st.lists(st.integers(28, 45), min_size=k, max_size=k)), np.int32)
    else:
        shift = np.array(draw(st.lists(st.integers(0, 62), min_size=k, max_size=k)), np.int32)
    return mult, shift


def ints(draw: Any, shape: tuple[int, ...], dtype: str, seed_max: int = 2**32 - 1) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, seed_max)))
    lo, hi = RANGE[dtype]
    return rng.integers(lo, hi + 1, size=shape).astype(NP[dtype])


@QSETTINGS
@given(data=st.data(), xdt=dtypes, wdt=dtypes, ydt=dtypes)
def test_qlinear_matches_the_rules(data: Any, xdt: str, wdt: str, ydt: str) -> None:
    m, k, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 6))
    x, w = ints(data.draw, (m, k), xdt), ints(data.draw, (n, k), wdt)
    zx, zy = data.draw(st.integers(*RANGE[xdt])), data.draw(st.integers(*RANGE[ydt]))
    zw = data.draw(st.sampled_from([0, *RANGE[wdt]]) | st.integers(*RANGE[wdt]))
    bias = np.array(data.draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n)), np.int32)
    mult, shift = data.draw(requant_case(n))

    def build(b: ModelBuilder, xin: int) -> int:
        xq = b.quantize(xin, 1.0, 0, xdt)  # the integers themselves
        return b.qlinear(xq, b.const(w, wdt), b.const(bias), b.const(mult), b.const(shift), (zx, zw, zy), ydt)

    (got,) = run(q_model(build, (m, k)), x.astype(np.float32))
    want = ref_qlinear(x, w, bias, mult, shift, zx, zw, zy, ydt)
    assert np.array_equal(got.astype(np.int64), want.astype(np.int64))


def check_qconv2d(
    x: np.ndarray,
    w: np.ndarray,
    xdt: str,
    wdt: str,
    zps: tuple[int, int, int],
    stride: Any,
    pad: Any,
    seed: int,
) -> None:
    rng = np.random.default_rng(abs(seed))
    stride = (stride, stride) if isinstance(stride, int) else stride
    pad = (pad, pad) if isinstance(pad, int) else pad
    oc = w.shape[0]
    bias = rng.integers(-(10**5), 10**5, size=oc).astype(np.int32)
    mult = rng.integers(2**30, 2**31, size=oc if seed % 2 else 1).astype(np.int32)
    shift = rng.integers(30, 40, size=mult.shape).astype(np.int32)

    def build(b: ModelBuilder, xin: int) -> int:
        xq = b.quantize(xin, 1.0, 0, xdt)
        cw, cb, cm, cs = b.const(w, wdt), b.const(bias), b.const(mult), b.const(shift)
        return b.qconv2d(xq, cw, cb, cm, cs, zps, "u8", stride, pad)

    (got,) = run(q_model(build, x.shape), x.astype(np.float32))
    want = ref_qconv2d(x, w, bias, mult, shift, *zps, "u8", stride, pad)
    assert np.array_equal(got.astype(np.int64), want.astype(np.int64))


# the three kernels: u8 x i8 with zw = 0 and zx = 0, with zx != 0, and anything else
KINDS = [
    ("u8", "i8", 0, 0),
    ("u8", "i8", 17, 0),
    ("i8", "i8", -3, 0),
    ("u8", "u8", 9, 130),
    ("u8", "i8", 0, 5),
]


@pytest.mark.parametrize(("xdt", "wdt", "zx", "zw"), KINDS)
@pytest.mark.parametrize(("stride", "pad"), [(1, 0), (1, 2), (2, 1), ((1, 2), (2, 0))])
def test_qconv2d_kernels(xdt: str, wdt: str, zx: int, zw: int, stride: Any, pad: Any) -> None:
    """Every kernel on rows long enough for the four-output interior path, with its borders."""
    rng = np.random.default_rng(abs(zx) + zw + len(xdt + wdt))
    x = rng.integers(*RANGE[xdt], size=(2, 3, 7, 19), endpoint=True).astype(NP[xdt])
    w = rng.integers(*RANGE[wdt], size=(4, 3, 3, 5), endpoint=True).astype(NP[wdt])
    check_qconv2d(x, w, xdt, wdt, (zx, zw, 7), stride, pad, seed=zx + zw)


@QSETTINGS
@given(data=st.data(), kinds=st.sampled_from(KINDS) | st.tuples(dtypes, dtypes, st.just(0), st.just(0)))
def test_qconv2d_matches_the_rules(data: Any, kinds: tuple[str, str, int, int]) -> None:
    xdt, wdt, _, _ = kinds
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    stride = (data.draw(st.integers(1, 2)), data.draw(st.sampled_from([1, 1, 2])))
    pad = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    c, oc = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    h = data.draw(st.integers(max(1, kh - 2 * pad[0]), 9))
    wd = data.draw(st.integers(max(1, kw - 2 * pad[1]), 16))  # wide rows: the four-output interior path
    x, w = ints(data.draw, (1, c, h, wd), xdt), ints(data.draw, (oc, c, kh, kw), wdt)
    zx = data.draw(st.just(0) | st.integers(*RANGE[xdt]))
    zw = data.draw(st.just(0) | st.integers(*RANGE[wdt]))
    zps = (zx, zw, data.draw(st.integers(0, 255)))
    check_qconv2d(x, w, xdt, wdt, zps, stride, pad, data.draw(st.integers(0, 9)))


float_bits = st.integers(0, 2**32 - 1).map(lambda u: np.array([u], np.uint32).view(np.float32)[0])


@QSETTINGS
@given(
    xs=st.lists(float_bits | st.floats(-300, 300, width=32), min_size=1, max_size=30),
    scale=st.floats(2.0**-20, 1024.0, width=32),
    data=st.data(),
    dtype=dtypes,
)
def test_quantize_and_dequantize_match_onnx(xs: list[float], scale: float, data: Any, dtype: str) -> None:
    zp = data.draw(st.integers(*RANGE[dtype]))
    x = np.array(xs, np.float32)
    b = ModelBuilder()
    q = b.quantize(b.input(x.shape), scale, zp, dtype)
    b.output(b.dequantize(q, scale, zp), b.dequantize(q, 1.0, 0))
    deq, raw = run(b.to_bytes(), x)
    want = ref_quantize(x, scale, zp, dtype)
    assert np.array_equal(raw.astype(np.int64), want.astype(np.int64))
    assert np.array_equal(deq.view(np.uint32), ref_dequantize(want, scale, zp).view(np.uint32))


@pytest.mark.parametrize("dtype", ["u8", "i8"])
def test_quantize_near_half_integers(dtype: str) -> None:
    """Quotients at and one ulp around k + 1/2, where the binary32 rounding of x / scale decides (the
    kernel divides only there), for scales of every kind (powers of two too) and zero points."""
    rng = np.random.default_rng(11)
    scales = np.concatenate(
        [rng.uniform(1e-4, 20, 40), 2.0 ** rng.integers(-20, 5, 8), [1 / 255, 1 / 127, 0.1, 3.0]]
    ).astype(np.float32)
    for scale in scales:
        half = ((np.arange(-300, 301) + 0.5) * np.float64(scale)).astype(np.float32)
        x = np.concatenate([half, np.nextafter(half, np.inf), np.nextafter(half, -np.inf)]).astype(np.float32)
        x = np.concatenate([x, rng.standard_normal(200).astype(np.float32) * scale * 100])
        zp = int(rng.integers(*RANGE[dtype], endpoint=True))
        b = ModelBuilder()
        b.output(b.dequantize(b.quantize(b.input(x.shape), float(scale), zp, dtype), 1.0, 0))
        (got,) = run(b.to_bytes(), x)
        assert np.array_equal(got.astype(np.int64), ref_quantize(x, float(scale), zp, dtype).astype(np.int64))


def test_quantize_ties_and_saturation() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1e9, -1e9, np.inf, -np.inf, np.nan, -0.0, 254.5], np.float32)
    b = ModelBuilder()
    b.output(b.dequantize(b.quantize(b.input(x.shape), 1.0, 0, "u8"), 1.0, 0))
    (got,) = run(b.to_bytes(), x)
    assert got.tolist() == [0, 2, 2, 0, 0, 255, 0, 255, 0, 0, 0, 254]


def test_maxpool_on_8bit_values_and_reshape() -> None:
    rng = np.random.default_rng(3)
    for dtype in ("u8", "i8"):
        x = rng.integers(*RANGE[dtype], size=(1, 2, 7, 6), endpoint=True).astype(np.float32)
        b = ModelBuilder()
        q = b.quantize(b.input(x.shape), 1.0, 0, dtype)
        b.output(b.dequantize(b.flatten(b.maxpool2d(q, 3, 2, 1)), 1.0, 0))
        (got,) = run(b.to_bytes(), x)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-1e9)
        want = np.array(
            [
                [
                    [
                        [xp[0, c, i * 2 : i * 2 + 3, j * 2 : j * 2 + 3].max() for j in range(3)]
                        for i in range(4)
                    ]
                    for c in range(2)
                ]
            ]
        ).reshape(1, -1)
        assert np.array_equal(got, want)


# --------------------------------------------------------------------------------------------------------
# format: version 2, and the two validators agree
# --------------------------------------------------------------------------------------------------------
def small_q_model(**kw: Any) -> bytes:
    b = ModelBuilder()
    x = b.quantize(b.input((1, 2, 5, 5)), kw.get("scale", 0.1), kw.get("zp", 3), "u8")
    w = b.const(np.arange(-9, 9, dtype=np.int8).reshape(2, 1, 3, 3).repeat(2, axis=1), "i8")
    mult = kw.get("mult", np.array([1 << 30, 3 << 29], np.int32))
    bias, shift = np.array([7, -9], np.int32), np.array([33, 34], np.int32)
    y = b.qconv2d(x, w, b.const(bias), b.const(mult), b.const(shift), (3, 0, 5), "u8", 1, 1)
    w2, b2 = b.const(np.ones((3, 8), np.int8), "i8"), b.const(np.zeros(3, np.int32))
    m2, s2 = b.const(np.array([1 << 30], np.int32)), b.const(np.array([31], np.int32))
    y = b.qlinear(b.flatten(b.maxpool2d(y, 2)), w2, b2, m2, s2, (5, 0, 0), "i8")
    b.output(b.dequantize(y, 0.25, 0))
    return b.to_bytes()


def test_version_2_exactly_for_quantized_models() -> None:
    model = small_q_model()
    assert struct.unpack_from(">H", model, 4)[0] == 2
    assert native.validate(model) == 0
    assert decode_model(model).nodes[1].op == "qconv2d"
    b = ModelBuilder()
    b.output(b.relu(b.input((3,))))
    plain = b.to_bytes()
    assert struct.unpack_from(">H", plain, 4)[0] == 1
    for data, version in ((model, 1), (plain, 2)):  # the other version: both readers refuse
        bad = bytearray(data)
        struct.pack_into(">H", bad, 4, version)
        assert native.validate(bytes(bad)) == 2
        with pytest.raises(ModelFormatError, match="version"):
            decode_model(bytes(bad))


def _tensor_entry(model: bytes, i: int) -> int:
    return 32 + i * TENSOR_ENTRY


def _node_entry(model: bytes, k: int) -> int:
    nt = struct.unpack_from(">I", model, 12)[0]
    return 32 + nt * TENSOR_ENTRY + k * NODE_ENTRY


MUTATIONS: list[tuple[str, Callable[[bytearray], None]]] = [
    ("quantize zero point out of u8", lambda m: struct.pack_into(">i", m, _node_entry(m, 0) + 32, 256)),
    ("quantize dtype code 2", lambda m: struct.pack_into(">i", m, _node_entry(m, 0) + 36, 2)),
    ("quantize scale 0", lambda m: struct.pack_into(">I", m, _node_entry(m, 0) + 64, 0)),
    ("quantize scale -1", lambda m: struct.pack_into(">f", m, _node_entry(m, 0) + 64, -1.0)),
    ("quantize scale inf", lambda m: struct.pack_into(">I", m, _node_entry(m, 0) + 64, 0x7F800000)),
    ("qconv2d y zero point -1", lambda m: struct.pack_into(">i", m, _node_entry(m, 1) + 32 + 24, -1)),
    ("qconv2d y dtype 1", lambda m: struct.pack_into(">i", m, _node_entry(m, 1) + 32 + 28, 1)),
    ("qconv2d x zero point 300", lambda m: struct.pack_into(">i", m, _node_entry(m, 1) + 32 + 16, 300)),
    ("qlinear w zero point 200 (i8)", lambda m: struct.pack_into(">i", m, _node_entry(m, 4) + 32 + 4, 200)),
    ("the weights' dtype becomes f32", lambda m: struct.pack_into(">B", m, _tensor_entry(m, 3), 1)),
    ("the bias becomes u8", lambda m: struct.pack_into(">B", m, _tensor_entry(m, 4), DTYPE_CODES[DType.U8])),
]


@pytest.mark.parametrize("name", [n for n, _ in MUTATIONS])
def test_both_validators_reject(name: str) -> None:
    model = bytearray(small_q_model())
    dict(MUTATIONS)[name](model)
    assert native.validate(bytes(model)) == 2, name
    with pytest.raises(ModelFormatError):
        decode_model(bytes(model))


@pytest.mark.parametrize(
    ("mult", "shift_ok"),
    [
        (np.array([-1, 5], np.int32), False),
        (np.array([1 << 30], np.int32), False),  # one multiplier, two shifts
        (np.array([5, 5], np.int32), True),
    ],
)
def test_requant_parameters_are_checked_at_load(mult: np.ndarray, shift_ok: bool) -> None:
    if shift_ok:
        assert native.validate(small_q_model(mult=mult)) == 0
        return
    with pytest.raises(ModelFormatError):
        small_q_model(mult=mult)


def test_8bit_graph_inputs_and_outputs_are_refused() -> None:
    b = ModelBuilder()
    b.output(b.quantize(b.input((2,)), 1.0, 0, "u8"))
    with pytest.raises(ModelFormatError, match="outputs are f32 or i32"):
        b.to_bytes()
    b = ModelBuilder()
    with pytest.raises(ModelFormatError, match="inputs are f32 or i32"):
        b.input((2,), DType.U8)
        b.output(b.dequantize(b.tensors.__len__() - 1, 1.0))
        b.to_bytes()


def test_requant_params_are_31_bit_multipliers() -> None:
    mult, shift = requant_params([1.0, 0.0123, 2.0**-40, 3.999])
    assert mult.tolist()[0] == 1 << 30 and shift.tolist()[0] == 30
    for m, s, v in zip(mult.tolist(), shift.tolist(), [1.0, 0.0123, 2.0**-40, 3.999], strict=True):
        assert m < 1 << 31 and 0 <= s <= 62 and abs(m * 2.0**-s - v) <= max(v * 2.0**-30, 2.0**-63)
        assert m >= 1 << 30 or s == 62  # 31 significant bits, unless the shift is at its limit
    with pytest.raises(ExportError):
        requant_params([0.0])


# --------------------------------------------------------------------------------------------------------
# the VM
# --------------------------------------------------------------------------------------------------------
SMALL_Q_PIN = "10d9e2ea3174e0c83ce5e5a9c1b7f0bdcbf7fc653ca408245903bfd97b784548"


@pytest.mark.requires("guest")
def test_vm_runs_a_quantized_model_byte_for_byte() -> None:
    from mlkit.guest import run_native, run_vm

    x = np.linspace(-1, 2, 50, dtype=np.float32).reshape(1, 2, 5, 5)
    model, payload = small_q_model(), encode_payload([x])
    out = run_native(model, payload).output
    vm = run_vm(model, payload, keccak256(out))
    assert vm.exit_code == 0 and vm.output == out
    assert keccak256(out).hex() == SMALL_Q_PIN


# --------------------------------------------------------------------------------------------------------
# ONNX QDQ and the torch exporter on the reference classifiers
# --------------------------------------------------------------------------------------------------------
@functools.cache
def digits() -> Any:
    from mlkit import models

    return models.load_digits_28()


@functools.cache
def qdq_file(name: str, per_channel: bool, tmp: str) -> Path:
    from mlkit import models
    from mlkit.export import qdq_onnx

    module, _ = models.trained_classifier(name)
    d = digits()
    path = Path(tmp) / f"{name}-{'pc' if per_channel else 'pt'}.qdq.onnx"
    return qdq_onnx(module, d.x_test[:1], d.x_train[:256], path, per_channel)


@pytest.fixture(scope="module")
def qdq_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sklearn")
    return str(tmp_path_factory.mktemp("qdq"))


def output_scale(path: Path) -> float:
    """The scale of the QDQ model's last DequantizeLinear (its output's quantization step)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = m.graph.output[0].name
    last = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == out]
    return float(inits[last[0].input[1]])


N_DIGITS = 20  # digits compared with onnxruntime in CI (bench/mlkit.py --int8 runs all 450)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("name", ["mnist-mlp", "lenet"])
def test_qdq_import_matches_onnxruntime(qdq_dir: str, name: str, per_channel: bool) -> None:
    import onnxruntime as ort

    from mlkit.onnx_import import import_onnx

    path = qdq_file(name, per_channel, qdq_dir)
    model = import_onnx(path)
    ops = [n.op for n in decode_model(model).nodes]
    assert "qlinear" in ops and ("qconv2d" in ops) == (name == "lenet") and "linear" not in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    step = output_scale(path)
    x = digits().x_test[:N_DIGITS]
    for i in range(N_DIGITS):
        (ours,) = run(model, x[i : i + 1])
        (ref,) = sess.run(None, {feed: x[i : i + 1]})
        assert np.abs(ours - ref).max() <= step * 1.0001, f"digit {i}: more than one quantization step"
        assert ours.argmax() == ref.argmax()


@pytest.mark.requires("guest")
@pytest.mark.parametrize("name", ["mnist-mlp", "lenet"])
def test_exported_int8_classifier_in_the_vm(qdq_dir: str, name: str) -> None:
    from mlkit import models
    from mlkit.export import export_quantized
    from mlkit.guest import run_native, run_vm

    module, fp32_accuracy = models.trained_classifier(name)
    d = digits()
    model = export_quantized(module, d.x_test[:1], d.x_train[:256])
    assert struct.unpack_from(">H", model, 4)[0] == 2
    preds = np.array([run(model, d.x_test[i : i + 1])[0].argmax() for i in range(len(d.x_test))])
    assert (preds == d.y_test).mean() >= fp32_accuracy - 0.02
    payload = encode_payload([d.x_test[:1]])
    out = run_native(model, payload).output
    vm = run_vm(model, payload, keccak256(out))
    assert vm.exit_code == 0 and vm.output == out


def test_importer_names_what_it_cannot_quantize(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from mlkit.onnx_import import OnnxImportError, import_onnx

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    inits = [
        helper.make_tensor("s", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("z", TensorProto.INT16, [], [0]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    path = tmp_path / "int16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    with pytest.raises(OnnxImportError, match="int8 or uint8"):
        import_onnx(path)
