"""mlkit: the ops (native build) against torch/numpy, the model format and its validation (Python and C
agree), the payloads, the MIPS guest build (no FPU, reproducible), and the guest in the VM against the
native build. Also: the guest's integer dot-product kernel (sf_dot) built natively gives the bytes of the
native FPU loops, and pinned output hashes of fixed models catch any change of a result bit.

Tolerances: elementwise ops that are one correctly rounded operation (relu, add, mul, pooling, reshape,
transpose, embedding, argmax) are exact; ops using mathf.c (tanh, sigmoid, gelu, softmax: a few ulps, see
mlkit/csrc/mathf.c) are checked with rtol 1e-5 / atol 1e-6; reductions (linear, matmul, convolutions,
norms, attention), whose summation order differs from torch's, with rtol 1e-4 / atol 1e-5.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F

from mipsvm.hashing import keccak256
from mlkit import native
from mlkit.build import (
    EXEC_GUEST_ELF,
    GUEST_ELF,
    build_mips,
    build_native,
    compiler_ident,
    fpu_instructions,
    non_spec_instructions,
    undefined_symbols,
)
from mlkit.format import (
    HEADER_SIZE,
    MAX_ELEMENTS,
    NODE_ENTRY,
    OP_CODES,
    TENSOR_ENTRY,
    DType,
    ExitCode,
    Mode,
    ModelBuilder,
    ModelFormatError,
    Op,
    decode_model,
    encode_model,
    model_id,
)
from mlkit.io import PayloadError, decode_payload, encode_payload, generate_payload

EXACT = (0.0, 0.0)  # (rtol, atol)
MATHF = (1e-5, 1e-6)
REDUCE = (1e-4, 1e-5)

Array = npt.NDArray[Any]


def rnd(*shape: int, seed: int = 0, scale: float = 1.0) -> Array:
    return (np.random.default_rng(seed + 1000 * len(shape)).standard_normal(shape) * scale).astype(np.float32)


def run_model(b: ModelBuilder, inputs: Sequence[Array]) -> list[Array]:
    return native.run_arrays(b.to_bytes(), inputs)


def single(
    make: Callable[[ModelBuilder, int], int], x: Array, dtype: DType = DType.F32
) -> Array:  # one-op model
    b = ModelBuilder()
    xi = b.input(x.shape, dtype)
    b.output(make(b, xi))
    (y,) = run_model(b, [x])
    return y


def close(got: Array, want: Array, tol: tuple[float, float]) -> None:
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol[0], atol=tol[1])


def t(a: Array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# --------------------------------------------------------------------------------------------------------
# Ops vs torch
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 3, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(shape: tuple[int, ...], bias: bool) -> None:
    x, w, bb = rnd(*shape), rnd(5, 7, seed=1), rnd(5, seed=2)
    y = single(lambda b, xi: b.linear(xi, w, bb if bias else None), x)
    close(y, F.linear(t(x), t(w), t(bb) if bias else None).numpy(), REDUCE)


@pytest.mark.parametrize(
    ("a_shape", "b_shape"), [((4, 6), (6, 3)), ((2, 4, 6), (6, 3)), ((2, 4, 6), (2, 6, 3))]
)
def test_matmul(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    a, bm, bias = rnd(*a_shape), rnd(*b_shape, seed=1), rnd(3, seed=2)
    y = single(lambda b, xi: b.matmul(xi, bm, bias), a)
    close(y, (t(a) @ t(bm) + t(bias)).numpy(), REDUCE)


@pytest.mark.parametrize(("stride", "pad"), [(1, 0), (2, 1), (1, 3), (3, 2), ((2, 1), (0, 1))])
def test_conv2d(stride: Any, pad: Any) -> None:
    x, w, bb = rnd(2, 3, 7, 6), rnd(4, 3, 3, 2, seed=1), rnd(4, seed=2)
    y = single(lambda b, xi: b.conv2d(xi, w, bb, stride=stride, padding=pad), x)
    close(y, F.conv2d(t(x), t(w), t(bb), stride=stride, padding=pad).numpy(), REDUCE)


@pytest.mark.parametrize(
    ("stride", "pad", "out_pad"), [(1, 0, 0), (2, 1, 1), (2, 0, 0), (3, 1, 2), (2, 2, 1)]
)
def test_conv_transpose2d(stride: int, pad: int, out_pad: int) -> None:
    x, w, bb = rnd(2, 3, 4, 5), rnd(3, 4, 3, 3, seed=1), rnd(4, seed=2)
    y = single(
        lambda b, xi: b.conv_transpose2d(xi, w, bb, stride=stride, padding=pad, output_padding=out_pad), x
    )
    want = F.conv_transpose2d(t(x), t(w), t(bb), stride=stride, padding=pad, output_padding=out_pad)
    close(y, want.numpy(), REDUCE)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5)])
def test_batchnorm(shape: tuple[int, ...]) -> None:
    x, g, bb, mean = rnd(*shape), rnd(3, seed=1), rnd(3, seed=2), rnd(3, seed=3)
    var = np.abs(rnd(3, seed=4)) + 0.1
    y = single(lambda b, xi: b.batchnorm(xi, g, bb, mean, var, eps=1e-3), x)
    want = F.batch_norm(t(x), t(mean), t(var), t(g), t(bb), training=False, eps=1e-3)
    close(y, want.numpy(), REDUCE)


@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pools(k: Any, s: Any, p: Any) -> None:
    x = rnd(2, 3, 7, 6)
    b = ModelBuilder()
    xi = b.input(x.shape)
    b.output(
        b.maxpool2d(xi, k, s, p), b.avgpool2d(xi, k, s, p), b.avgpool2d(xi, k, s, p, count_include_pad=False)
    )
    mx, avg, avg_nc = run_model(b, [x])
    close(mx, F.max_pool2d(t(x), k, s, p).numpy(), EXACT)
    np.testing.assert_allclose(avg, F.avg_pool2d(t(x), k, s, p).numpy(), rtol=1e-6, atol=1e-7)
    want = F.avg_pool2d(t(x), k, s, p, count_include_pad=False)
    np.testing.assert_allclose(avg_nc, want.numpy(), rtol=1e-6, atol=1e-7)


def test_elementwise() -> None:
    x = np.concatenate([rnd(200, scale=3.0), np.array([0.0, -0.0, 1e-40, -1e-40, 30.0, -30.0], np.float32)])
    b = ModelBuilder()
    xi = b.input(x.shape)
    b.output(b.relu(xi), b.leaky_relu(xi, 0.1), b.tanh(xi), b.sigmoid(xi), b.gelu(xi))
    relu, leaky, tanh, sig, gelu = run_model(b, [x])
    xt = t(x)
    np.testing.assert_array_equal(relu, F.relu(xt).numpy())
    close(leaky, F.leaky_relu(xt, 0.1).numpy(), EXACT)
    close(tanh, torch.tanh(xt).numpy(), MATHF)
    close(sig, torch.sigmoid(xt).numpy(), MATHF)
    close(gelu, F.gelu(xt, approximate="tanh").numpy(), MATHF)


def test_relu_signs() -> None:
    x = np.array([-0.0, 0.0, -1.0, np.inf, -np.inf, np.nan], np.float32)
    y = single(lambda b, xi: b.relu(xi), x)
    assert y.view(np.uint32).tolist() == [0, 0, 0, 0x7F800000, 0, 0]


@pytest.mark.parametrize("shape", [(10,), (3, 10), (2, 3, 17)])
def test_softmax_layernorm(shape: tuple[int, ...]) -> None:
    x, g, bb = rnd(*shape, scale=4.0), rnd(shape[-1], seed=1), rnd(shape[-1], seed=2)
    b = ModelBuilder()
    xi = b.input(x.shape)
    b.output(b.softmax(xi), b.layernorm(xi, g, bb, eps=1e-5))
    sm, ln = run_model(b, [x])
    close(sm, torch.softmax(t(x), -1).numpy(), MATHF)
    want = F.layer_norm(t(x), (shape[-1],), t(g), t(bb), eps=1e-5)
    close(ln, want.numpy(), REDUCE)


def test_embedding() -> None:
    table = rnd(11, 6)
    ids = np.array([[0, 10, 3], [3, 3, 7]], np.int32)
    y = single(lambda b, xi: b.embedding(xi, table), ids, DType.I32)
    np.testing.assert_array_equal(y, table[ids])


@pytest.mark.parametrize("b_shape", [(2, 3, 4), (3, 4), (4,), (1,), ()])
def test_add_mul_broadcast(b_shape: tuple[int, ...]) -> None:
    a, bv = rnd(2, 3, 4), rnd(*b_shape, seed=1)
    bld = ModelBuilder()
    ai = bld.input(a.shape)
    bld.output(bld.add(ai, bv), bld.mul(ai, bv))
    s, p = run_model(bld, [a])
    np.testing.assert_array_equal(s, a + bv)
    np.testing.assert_array_equal(p, a * bv)


@pytest.mark.parametrize(
    ("shape", "perm"),
    [((3, 5), (1, 0)), ((4, 2, 3), (1, 0, 2)), ((2, 3, 4, 5), (0, 2, 1, 3)), ((2, 3, 4, 5), (3, 1, 0, 2))],
)
def test_transpose(shape: tuple[int, ...], perm: tuple[int, ...]) -> None:
    x = rnd(*shape)
    np.testing.assert_array_equal(single(lambda b, xi: b.transpose(xi, perm), x), x.transpose(perm))


def test_head_split_merge_and_reshape() -> None:
    """[T, C] -> [T, H, D] -> [H, T, D] (split) -> [T, H, D] -> [T, C] (merge), and flatten."""
    x = rnd(5, 12)
    b = ModelBuilder()
    xi = b.input(x.shape)
    heads = b.transpose(b.reshape(xi, (5, 3, 4)), (1, 0, 2))
    merged = b.reshape(b.transpose(heads, (1, 0, 2)), (5, -1))
    b.output(heads, merged, b.flatten(b.reshape(xi, (1, 5, 3, 4))))
    h, m, f = run_model(b, [x])
    np.testing.assert_array_equal(h, x.reshape(5, 3, 4).transpose(1, 0, 2))
    np.testing.assert_array_equal(m, x)
    np.testing.assert_array_equal(f, x.reshape(1, 60))


def test_attention() -> None:
    seq, c, n_head = 6, 12, 3
    qkv = rnd(seq, 3 * c)
    y = single(lambda b, xi: b.attention(xi, n_head, max_ctx=8), qkv)
    q, k, v = (p.view(seq, n_head, c // n_head).transpose(0, 1) for p in t(qkv).split(c, dim=1))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(0, 1).reshape(seq, c)
    close(y, want.numpy(), REDUCE)


def test_argmax() -> None:
    x = rnd(4, 9)
    x[1, 2] = x[1, 5] = 50.0  # a tie: the first wins
    x[2, 4] = np.nan  # the first NaN wins (numpy)
    x[3, :] = np.nan
    y = single(lambda b, xi: b.argmax(xi), x)
    assert y.dtype == np.int32 and y.tolist() == np.argmax(x, axis=-1).tolist()


def test_nan_outputs_are_canonical() -> None:
    x = np.array([np.inf, 1.0, np.float32(np.nan)], np.float32)
    x[2] = np.frombuffer(b"\xff\xc1\x23\x45"[::-1], np.float32)[0]  # a negative NaN with a payload
    b = ModelBuilder()
    xi = b.input(x.shape)
    b.output(b.add(xi, np.float32(-np.inf).reshape(1)))  # inf - inf: x86 gives the NaN 0xFFC00000
    out = native.run(b.to_bytes(), encode_payload([x]))
    words = struct.unpack(">3I", out[-12:])
    assert words == (0x7FC00000, 0xFF800000, 0x7FC00000)


# --------------------------------------------------------------------------------------------------------
# GPT-2: plain logits and greedy generation with the KV cache, against transformers
# --------------------------------------------------------------------------------------------------------
def gpt2_model(hf: Any, generate: bool, seq: int = 0) -> bytes:
    cfg = hf.config
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    b = ModelBuilder(mode=Mode.GENERATE if generate else Mode.PLAIN)
    if generate:
        tok, pos = b.input((1,), DType.I32), b.input((1,), DType.I32)
    else:
        tok, pos = b.input((seq,), DType.I32), b.const(np.arange(seq, dtype=np.int32))
    wte = b.const(sd["transformer.wte.weight"])
    h = b.add(b.embedding(tok, wte), b.embedding(pos, sd["transformer.wpe.weight"]))
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."

        def lin(x: int, name: str, p: str = p) -> int:  # Conv1D: x @ W + b, W [in, out]
            return b.linear(x, sd[p + name + ".weight"].T, sd[p + name + ".bias"])

        def ln(x: int, name: str, p: str = p) -> int:
            return b.layernorm(x, sd[p + name + ".weight"], sd[p + name + ".bias"], cfg.layer_norm_epsilon)

        att = b.attention(lin(ln(h, "ln_1"), "attn.c_attn"), cfg.n_head, cfg.n_positions)
        h = b.add(h, lin(att, "attn.c_proj"))
        h = b.add(h, lin(b.gelu(lin(ln(h, "ln_2"), "mlp.c_fc")), "mlp.c_proj"))
    h = b.layernorm(h, sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], cfg.layer_norm_epsilon)
    logits = b.linear(h, wte)  # lm_head is tied to wte
    b.output(b.argmax(logits) if generate else logits)
    return b.to_bytes()


@pytest.fixture(scope="module")
def tiny_gpt2() -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    cfg = transformers.GPT2Config(  # a wide init: clear argmax margins for the greedy comparison
        vocab_size=61,
        n_positions=24,
        n_embd=16,
        n_layer=2,
        n_head=2,
        activation_function="gelu_new",
        initializer_range=0.5,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_gpt2_logits(tiny_gpt2: Any) -> None:
    ids = np.array([5, 17, 3, 44, 9, 60, 0], np.int32)
    (logits,) = native.run_arrays(gpt2_model(tiny_gpt2, generate=False, seq=len(ids)), [ids])
    with torch.no_grad():
        want = tiny_gpt2(torch.tensor(ids[None].astype(np.int64))).logits[0].numpy()
    close(logits, want, REDUCE)


def test_gpt2_generate(tiny_gpt2: Any) -> None:
    prompt, n_new = [5, 17, 3], 8
    model = gpt2_model(tiny_gpt2, generate=True)
    got = native.generate(model, prompt, n_new)
    ids = list(prompt)
    with torch.no_grad():  # greedy, recomputing the whole sequence each step (no cache)
        for _ in range(n_new):
            logits = tiny_gpt2(torch.tensor([ids])).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            assert float(top2[0] - top2[1]) > 1e-4, "near-tie: pick another seed"
            ids.append(int(logits.argmax()))
    assert got == ids[len(prompt) :]
    # early stop at gen_eos (the generated eos token is included)
    eos = got[3]
    data = bytearray(model)
    struct.pack_into(">i", data, 24, eos)
    assert native.generate(bytes(data), prompt, n_new) == got[: got.index(eos) + 1]
    # the context bound: P + N - 1 <= n_positions
    assert native.run_code(model, generate_payload(prompt, 24 - len(prompt) + 1))[0] == 0
    assert native.run_code(model, generate_payload(prompt, 24 - len(prompt) + 2))[0] == ExitCode.INPUT
    assert native.run_code(model, generate_payload([5, 61], 1))[0] == ExitCode.INPUT  # token id >= vocab


# --------------------------------------------------------------------------------------------------------
# The dot-product kernel: the MIPS build computes every dot product (linear, matmul, convolutions,
# attention) with the integer kernel sf_dot; the native build with MLK_SOFT_DOT does too, and must give the
# bytes of the default native build, which runs the plain loop on the FPU.
# --------------------------------------------------------------------------------------------------------
@functools.cache
def soft_dot_library() -> ctypes.CDLL:
    return native.load_library(build_native(["MLK_SOFT_DOT"]))


def run_soft_dot(model: bytes, payload: bytes) -> tuple[int, bytes]:
    return native.run_code(model, payload, soft_dot_library())


def run_both(model: bytes, payload: bytes) -> bytes:
    """The output of both native builds, which must be the same bytes."""
    fpu = native.run_code(model, payload)
    assert run_soft_dot(model, payload) == fpu, "sf_dot and the FPU loop differ"
    assert fpu[0] == 0, f"exit code {fpu[0]}"
    return fpu[1]


SPECIAL_VALUES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-39, 1e30, -2e-30, 3e38], np.float32)


def mixed(*shape: int, seed: int = 0, zeros: float = 0.2, specials: float = 0.0) -> Array:
    """Normal values with some zeros (ReLU outputs) and, if asked, specials."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < zeros] = 0.0
    pick = rng.random(shape) < specials
    x[pick] = rng.choice(SPECIAL_VALUES, int(pick.sum()))
    return x


def _dot_op_models(specials: float) -> list[tuple[str, bytes, Array]]:
    out = []

    def add(name: str, make: Callable[[ModelBuilder, int], int], x: Array) -> None:
        b = ModelBuilder()
        b.output(make(b, b.input(x.shape)))
        out.append((name, b.to_bytes(), x))

    sp = specials
    w = mixed(9, 40, seed=1, zeros=0.05, specials=sp)
    add("linear", lambda b, x: b.linear(x, w, mixed(9, seed=2)), mixed(3, 40, seed=3, specials=sp))
    add("linear 1 row", lambda b, x: b.linear(x, w), mixed(1, 40, seed=4, zeros=0.5, specials=sp))
    add(
        "matmul",
        lambda b, x: b.matmul(x, mixed(2, 7, 5, seed=5, specials=sp)),
        mixed(2, 4, 7, seed=6, specials=sp),
    )
    add("matmul shared", lambda b, x: b.matmul(x, mixed(7, 5, seed=7, specials=sp)), mixed(3, 4, 7, seed=8))
    wc, wt = (
        mixed(4, 3, 5, 3, seed=9, specials=sp),
        {k: mixed(5, 3, k, k, seed=12, specials=sp) for k in (3, 4, 5)},
    )
    for stride, pad in [(1, 0), (1, 2), (2, 1), ((2, 1), (0, 2))]:

        def conv(b: ModelBuilder, x: int, s: Any = stride, p: Any = pad) -> int:
            return b.conv2d(x, wc, mixed(4, seed=10), s, p)

        add(f"conv2d {stride} {pad}", conv, mixed(2, 3, 9, 8, seed=11, specials=sp))
    for stride, pad, opad, k in [(1, 0, 0, 3), (2, 1, 1, 3), (2, 1, 0, 4), (3, 2, 2, 5)]:

        def tconv(b: ModelBuilder, x: int, s: int = stride, p: int = pad, o: int = opad, k: int = k) -> int:
            return b.conv_transpose2d(x, wt[k], mixed(3, seed=13), s, p, o)

        add(f"conv_transpose2d {stride} {pad} {opad} {k}", tconv, mixed(1, 5, 4, 6, seed=14, specials=sp))
    add("attention", lambda b, x: b.attention(x, 3, max_ctx=7), mixed(7, 36, seed=15, zeros=0.0, specials=sp))
    return out


@pytest.mark.parametrize("specials", [0.0, 0.03])
def test_soft_dot_kernel_matches_the_fpu_loops(specials: float) -> None:
    for name, model, x in _dot_op_models(specials):
        payload = encode_payload([x])
        fpu = native.run_code(model, payload)
        assert fpu[0] == 0 and run_soft_dot(model, payload) == fpu, name


def test_soft_dot_kernel_on_large_magnitudes() -> None:
    """Sums that overflow to inf and come back (they must not), cancel to zero, or end in subnormals."""
    rng = np.random.default_rng(21)
    for scale in (2.0**60, 2.0**62.9, 2.0**-62, 2.0**-70, 1.0):
        x = (rng.standard_normal((4, 64)) * scale).astype(np.float32)
        w = (rng.standard_normal((6, 64)) * scale).astype(np.float32)
        w[0] = -x[0]  # x[0] . w[0]: a sum of negative squares, no cancellation (overflows at 2^62.9)
        w[1] = np.where(np.arange(64) % 2 == 0, x[0], -x[0])  # squares of both signs: cancellation
        b = ModelBuilder()
        b.output(b.linear(b.input(x.shape), w))
        run_both(b.to_bytes(), encode_payload([x]))


# --------------------------------------------------------------------------------------------------------
# Pinned outputs: any change to a kernel that alters one result bit changes these hashes. The synthetic
# models are built here from integer-derived (exact) weights, so their bytes are the same on every machine;
# the reference models come from torch (trained or seeded), whose bytes can differ between machines
# (CPU-specific kernels in training and in the random generator), so their pins apply only where the model
# itself matches its pinned hash.
# --------------------------------------------------------------------------------------------------------
class Bits:
    """xorshift32: a fixed stream of integers, independent of numpy's and torch's generators."""

    def __init__(self, seed: int) -> None:
        self.s = seed

    def floats(self, *shape: int, scale_log2: int = -8) -> Array:
        """k * 2^scale_log2 for k in [-1024, 1024): exact float32 values."""
        n, s = int(np.prod(shape)), self.s
        k = np.empty(n, np.float32)
        for i in range(n):
            s ^= (s << 13) & 0xFFFFFFFF
            s ^= s >> 17
            s ^= (s << 5) & 0xFFFFFFFF
            k[i] = s % 2048 - 1024
        self.s = s
        return (k * np.float32(2.0**scale_log2)).reshape(shape)


def synthetic_models() -> dict[str, tuple[bytes, bytes]]:
    """name -> (model, input payload): an MLP, a conv net, a generator (transposed convolutions), and a
    transformer block with attention, from exact weights."""
    r, out = Bits(20240601), {}
    b = ModelBuilder()  # MLP 784-32-10 on a digit-like input (a quarter zeros)
    x = b.input((1, 784))
    h = b.relu(b.linear(x, r.floats(32, 784, scale_log2=-14), r.floats(32, scale_log2=-10)))
    b.output(b.linear(h, r.floats(10, 32, scale_log2=-12), r.floats(10, scale_log2=-10)))
    out["mlp"] = (b.to_bytes(), encode_payload([np.maximum(r.floats(1, 784, scale_log2=-10), 0)]))
    b = ModelBuilder()  # conv 5x5 pad 2, relu, maxpool, conv 3x3 stride 2, relu, flatten, linear
    x = b.input((1, 1, 16, 16))
    h = b.relu(b.conv2d(x, r.floats(4, 1, 5, 5, scale_log2=-9), r.floats(4, scale_log2=-10), 1, 2))
    h = b.relu(
        b.conv2d(b.maxpool2d(h, 2), r.floats(6, 4, 3, 3, scale_log2=-10), r.floats(6, scale_log2=-10), 2, 1)
    )
    b.output(b.linear(b.flatten(h), r.floats(10, 96, scale_log2=-10)))
    out["convnet"] = (b.to_bytes(), encode_payload([np.maximum(r.floats(1, 1, 16, 16, scale_log2=-10), 0)]))
    b = ModelBuilder()  # transposed convs 4x4 stride 2 and 3x3 stride 2 (output padding), batchnorm, tanh
    h = b.conv_transpose2d(b.input((1, 8, 3, 3)), r.floats(8, 6, 4, 4, scale_log2=-11), None, 2, 1)
    g, beta, mean = r.floats(6, scale_log2=-10) + 1, r.floats(6, scale_log2=-10), r.floats(6, scale_log2=-10)
    h = b.leaky_relu(b.batchnorm(h, g, beta, mean, np.abs(r.floats(6, scale_log2=-10)) + 1, eps=1e-5), 0.2)
    wt, bt = r.floats(6, 3, 3, 3, scale_log2=-11), r.floats(3, scale_log2=-10)
    b.output(b.tanh(b.conv_transpose2d(h, wt, bt, 2, 1, 1)))
    out["generator"] = (b.to_bytes(), encode_payload([r.floats(1, 8, 3, 3, scale_log2=-9)]))
    c, t, vocab = 16, 6, 40  # a transformer block in plain mode, softmax of the logits
    b = ModelBuilder()
    pos = b.embedding(b.const(np.arange(t, dtype=np.int32)), r.floats(t, c, scale_log2=-10))
    h = b.add(b.embedding(b.input((t,), DType.I32), r.floats(vocab, c, scale_log2=-9)), pos)

    def ln(v: int) -> int:
        return b.layernorm(v, r.floats(c, scale_log2=-10) + 1, r.floats(c, scale_log2=-10), 1e-5)

    qkv = b.linear(ln(h), r.floats(3 * c, c, scale_log2=-8), r.floats(3 * c, scale_log2=-10))
    h = b.add(h, b.linear(b.attention(qkv, 2, t), r.floats(c, c, scale_log2=-8)))
    mlp = b.gelu(b.linear(ln(h), r.floats(4 * c, c, scale_log2=-8)))
    h = b.add(h, b.linear(mlp, r.floats(c, 4 * c, scale_log2=-9)))
    b.output(b.softmax(b.linear(ln(h), r.floats(vocab, c, scale_log2=-10))))
    out["transformer"] = (b.to_bytes(), encode_payload([np.array([3, 1, 4, 1, 5, 9], np.int32)]))
    return out


SYNTHETIC_PINS = {  # name -> keccak256 of the output payload
    "mlp": "86185b62fdb8d99319bf6f9d913606843d507fbd0603c4417c590d64f9106b03",
    "convnet": "9d633bfa94f69393fd9395e124969f44ff0e935d6fe4bc456c1d803af1ffa4ba",
    "generator": "095f9e6f4a66988b3c7e5432d012b425f5d483ba6c5f2ce418a36d11bcab9995",
    "transformer": "10bf7ba483453be7e5ccc75292021b581208b66c2f9fb813f33ac8005d09448e",
}


def test_pinned_outputs_of_synthetic_models() -> None:
    got = {name: keccak256(run_both(*mp)).hex() for name, mp in synthetic_models().items()}
    assert got == SYNTHETIC_PINS


REFERENCE_PINS = {  # name -> (keccak256 of the model file, keccak256 of the example's output payload)
    "mnist-mlp": (
        "8b344ed3cfb7d86105fc647f8163bf39faaa87261bd81151fd52a33ec68838ea",
        "90941b76ff188c117c12949cc0089afc330a90058e81a100a2670c49a8000d1d",
    ),
    "lenet": (
        "a028c519a05b6980e8952751b366c4ed0db4f959f2d87a7b1d6c4b8dbf26d1e6",
        "e9131d462b7ffafd2f15f46af642f612115cce34447b4d163c37ac2e5e02d5fe",
    ),
    "gpt2-tiny": (  # 16 greedy tokens
        "617bc1036047f7a0187c7e8502ad9470ee6254abbc95924d90e00f831e5d408d",
        "37ccdb3cf20d7c59fbed2a6432a4309e2008b0462613312f06c076a9cc5b61f9",
    ),
    "gpt2-tiny logits": (  # the same weights in plain mode: the logits of the example prompt, every bit
        "ce1f208d50ef641358255dab8f7b033ee0462047662d24c7022da169cb8d7283",
        "425945a476202f712d86da81b68544dcc901cae08d569e5f8b49c8e774f2b373",
    ),
}


def reference_case(name: str) -> tuple[bytes, bytes]:
    from mlkit import models

    if name == "gpt2-tiny logits":
        pytest.importorskip("transformers")
        from mlkit.export import export_gpt2

        prompt = models.gpt2_prompt("gpt2-tiny")
        model = export_gpt2(models.gpt2_model("gpt2-tiny"), mode="logits", seq_len=len(prompt))
        return model, encode_payload([prompt])
    pytest.importorskip("transformers" if name.startswith("gpt2") else "sklearn")
    exp = models.export_reference(name)
    return exp.model, models.example_payload(exp)


@pytest.mark.parametrize("name", sorted(REFERENCE_PINS))
def test_pinned_outputs_of_reference_models(name: str) -> None:
    model, payload = reference_case(name)
    out = run_both(model, payload)
    model_hash, output_hash = REFERENCE_PINS[name]
    if keccak256(model).hex() != model_hash:
        pytest.skip(
            f"{name}: torch {torch.__version__} built other weights here; only the synthetic pins apply"
        )
    assert keccak256(out).hex() == output_hash


# --------------------------------------------------------------------------------------------------------
# Format: round trip, model id, payloads
# --------------------------------------------------------------------------------------------------------
def small_model() -> bytes:
    b = ModelBuilder()
    x = b.input((1, 2, 6, 6))
    h = b.relu(b.conv2d(x, rnd(3, 2, 3, 3), rnd(3), stride=1, padding=1))
    h = b.maxpool2d(h, 2)
    h = b.flatten(h)
    b.output(b.softmax(b.linear(h, rnd(4, 27), rnd(4))))
    return b.to_bytes()


def test_round_trip() -> None:
    data = small_model()
    model = decode_model(data)
    assert encode_model(model) == data
    assert [n.op for n in model.nodes] == [
        Op.CONV2D,
        Op.RELU,
        Op.MAXPOOL2D,
        Op.RESHAPE,
        Op.LINEAR,
        Op.SOFTMAX,
    ]
    assert model.nodes[0].ints == (1, 1, 1, 1) and model.nodes[2].ints == (2, 2, 2, 2, 0, 0)
    assert model.input_specs() == [(DType.F32, (1, 2, 6, 6))] and model.output_specs() == [
        (DType.F32, (1, 4))
    ]
    assert Op.CONV2D == "conv2d" and OP_CODES[Op.CONV2D] == 3 and DType.I32 == "i32"
    assert native.validate(data) == 0
    assert data[:4] == b"RMLM" and struct.unpack(">I", data[8:12])[0] == len(data)


def test_model_id_is_blob_id() -> None:
    from mipsvm.preimage import PreimageStore, get_blob

    data = small_model()
    store = PreimageStore()
    mid = model_id(data, store)
    assert mid[0] == 2 and mid == model_id(data) and get_blob(store, mid) == data


def test_payloads() -> None:
    arrays: list[Any] = [rnd(2, 3), np.array([1, -2, 3], np.int32), np.float32(2.5), np.int32(7)]
    data = encode_payload(arrays)
    assert data[:8] == b"RMLD\x00\x00\x00\x04"
    assert data[8:20] == bytes([1, 2, 0, 0]) + struct.pack(">2I", 2, 3)
    back = decode_payload(data)
    for a, b in zip(arrays, back, strict=True):
        assert np.asarray(a).shape == b.shape and np.asarray(a).dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for bad in [data[:-1], data + b"\0", b"RMLX" + data[4:], data[:8] + b"\x03" + data[9:]]:
        with pytest.raises(PayloadError):
            decode_payload(bad)


# --------------------------------------------------------------------------------------------------------
# Malformed models: Python raises ModelFormatError, C returns 2
# --------------------------------------------------------------------------------------------------------
T0 = HEADER_SIZE  # first tensor entry


def _node_off(data: bytes, k: int) -> int:
    nt = struct.unpack_from(">I", data, 12)[0]
    return HEADER_SIZE + nt * TENSOR_ENTRY + k * NODE_ENTRY


def _io_off(data: bytes) -> int:
    nt, nn = struct.unpack_from(">II", data, 12)
    return HEADER_SIZE + nt * TENSOR_ENTRY + nn * NODE_ENTRY


def _patch(fmt_: str, offset: Callable[[bytes], int], *values: Any) -> Callable[[bytes], bytes]:
    def f(data: bytes) -> bytes:
        out = bytearray(data)
        struct.pack_into(fmt_, out, offset(data), *values)
        return bytes(out)

    return f


def _const_tensor(data: bytes) -> int:  # offset of the first constant's entry
    nt = struct.unpack_from(">I", data, 12)[0]
    return next(T0 + i * TENSOR_ENTRY for i in range(nt) if data[T0 + i * TENSOR_ENTRY + 2] == 1)


def _resize(n: int) -> Callable[[bytes], bytes]:
    def f(data: bytes) -> bytes:
        out = bytearray(data[:n] if n < len(data) else data + bytes(n - len(data)))
        struct.pack_into(">I", out, 8, len(out))  # a consistent header, so the content is what breaks
        return bytes(out)

    return f


def _oversized(data: bytes) -> bytes:
    """The first constant as a consistent [2^13, 2^13] f32 tensor: 256 MiB of data the file does not hold."""
    out = bytearray(data)
    off = _const_tensor(data)
    struct.pack_into(">BB2x4I4xI", out, off, 1, 2, 1 << 13, 1 << 13, 0, 0, 4 << 26)
    return bytes(out)


# small_model()'s tensors: 0 input, 1-2 conv w/b, 3 conv, 4 relu, 5 maxpool, 6 reshape, 7-8 linear w/b,
# 9 linear, 10 softmax; its nodes: conv, relu, maxpool, reshape, linear, softmax.
MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda d: b"",
    "truncated header": lambda d: d[:20],
    "truncated tables": _resize(HEADER_SIZE + 40),
    "truncated data": lambda d: d[:-8],
    "truncated data, size fixed": lambda d: _resize(len(d) - 8)(d),
    "trailing bytes": lambda d: d + b"\0",
    "bad magic": _patch(">4s", lambda d: 0, b"RMLX"),
    "wrong version": _patch(">H", lambda d: 4, 2),
    "unknown mode": _patch(">H", lambda d: 6, 7),
    "reserved header": _patch(">I", lambda d: 28, 1),
    "no tensors": _patch(">I", lambda d: 12, 0),
    "too many tensors": _patch(">I", lambda d: 12, 5000),
    "too many nodes": _patch(">I", lambda d: 16, 5000),
    "no outputs": _patch(">H", lambda d: 22, 0),
    "eos in plain mode": _patch(">i", lambda d: 24, 5),
    "bad dtype": _patch(">B", lambda d: T0, 3),
    "rank 5": _patch(">B", lambda d: T0 + 1, 5),
    "bad kind": _patch(">B", lambda d: T0 + 2, 2),
    "zero dim": _patch(">I", lambda d: T0 + 4, 0),
    "reserved tensor byte": _patch(">B", lambda d: T0 + 3, 1),
    "unused dim set": _patch(">I", lambda d: T0 + 2 * TENSOR_ENTRY + 8, 1),  # tensor 2: conv bias, rank 1
    "data larger than the file": _oversized,
    "shape over 2^27 elements": _patch(">4I", lambda d: T0 + 4, 1 << 14, 1 << 14, 1, 2),
    "const offset past the end": _patch(">I", lambda d: _const_tensor(d) + 20, 1 << 20),
    "const offset unaligned": _patch(">I", lambda d: _const_tensor(d) + 20, 0),
    "const offset in the tables": lambda d: _patch(">I", lambda d2: _const_tensor(d2) + 20, 16)(d),
    "const size mismatch": lambda d: _patch(">I", lambda d2: _const_tensor(d2) + 24, 4)(d),
    "activation with data": _patch(">I", lambda d: T0 + 20, 64),
    "unknown op": _patch(">H", lambda d: _node_off(d, 0), 99),
    "op code 0": _patch(">H", lambda d: _node_off(d, 0), 0),
    "no node inputs": _patch(">B", lambda d: _node_off(d, 0) + 2, 0),
    "7 node inputs": _patch(">B", lambda d: _node_off(d, 0) + 2, 7),
    "node input id out of range": _patch(">I", lambda d: _node_off(d, 0) + 4, 9999),
    "node input used before defined": _patch(">I", lambda d: _node_off(d, 0) + 4, 9),
    "unused input slot set": _patch(">I", lambda d: _node_off(d, 0) + 4 + 20, 1),
    "node output out of range": _patch(">I", lambda d: _node_off(d, 0) + 28, 9999),
    "node output is a constant": _patch(">I", lambda d: _node_off(d, 0) + 28, 1),
    "node output is the graph input": _patch(">I", lambda d: _node_off(d, 0) + 28, 0),
    "node output defined twice": _patch(">I", lambda d: _node_off(d, 1) + 28, 3),
    "stride 0": _patch(">i", lambda d: _node_off(d, 0) + 32, 0),
    "negative padding": _patch(">i", lambda d: _node_off(d, 0) + 40, -1),
    "padding changes the shape": _patch(">i", lambda d: _node_off(d, 0) + 40, 2),
    "unused int attribute": _patch(">i", lambda d: _node_off(d, 0) + 32 + 4 * 7, 1),
    "unused float attribute -0.0": _patch(">I", lambda d: _node_off(d, 0) + 64, 0x80000000),
    "wrong declared shape": _patch(">I", lambda d: T0 + 4 * TENSOR_ENTRY + 8, 5),
    "reshape changes the size": _patch(">I", lambda d: T0 + 6 * TENSOR_ENTRY + 8, 28),
    "graph input is a constant": _patch(">I", lambda d: _io_off(d), 1),
    "graph input out of range": _patch(">I", lambda d: _io_off(d), 77),
    "graph output out of range": _patch(">I", lambda d: _io_off(d) + 4, 77),
    "generate mode without token inputs": _patch(">H", lambda d: 6, 1),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_model(case: str) -> None:
    good = small_model()
    bad = MALFORMED[case](good)
    assert bad != good
    with pytest.raises(ModelFormatError):
        decode_model(bad)
    assert native.validate(bad) == ExitCode.MODEL
    assert native.run_code(bad, encode_payload([rnd(1, 2, 6, 6)]))[0] == ExitCode.MODEL


def test_malformed_graphs_from_python() -> None:
    """Models built as objects are checked the same way before they are written."""
    b = ModelBuilder()
    x = b.input((2, 3))
    with pytest.raises(ModelFormatError, match="does not match"):
        b.linear(x, rnd(4, 5))
    with pytest.raises(ModelFormatError, match="constant id is out of range"):
        b.embedding(b.const(np.array([3], np.int32)), rnd(3, 2))
    with pytest.raises(ModelFormatError, match="n_head"):
        b.attention(b.input((2, 12)), 3, 8)
    with pytest.raises(ModelFormatError, match="unknown op"):
        b.node("softplus", [x])
    model = decode_model(small_model())
    model.nodes[4].inputs = (model.nodes[4].inputs[0], 99)
    with pytest.raises(ModelFormatError, match="not a tensor defined"):
        encode_model(model)


def test_random_corruption_agrees() -> None:
    """Python and C accept exactly the same models: flip bytes of the tables at random."""
    good = small_model()
    tables = _io_off(good) + 8
    rng = np.random.default_rng(5)
    accepted = 0
    for _ in range(400):
        bad = bytearray(good)
        for _ in range(int(rng.integers(1, 3))):
            bad[int(rng.integers(0, tables))] ^= 1 << int(rng.integers(0, 8))
        try:
            decode_model(bytes(bad))
            py_ok = True
        except ModelFormatError:
            py_ok = False
        assert py_ok == (native.validate(bytes(bad)) == 0), bytes(bad).hex()
        accepted += py_ok
    assert accepted < 400


def test_malformed_inputs() -> None:
    model = small_model()
    good = encode_payload([rnd(1, 2, 6, 6)])
    assert native.run_code(model, good)[0] == 0
    cases = {
        "empty": b"",
        "bad magic": b"RMLX" + good[4:],
        "two tensors": encode_payload([rnd(1, 2, 6, 6), rnd(1)]),
        "no tensors": encode_payload([]),
        "wrong shape": encode_payload([rnd(1, 2, 6, 5)]),
        "wrong rank": encode_payload([rnd(2, 6, 6)]),
        "wrong dtype": encode_payload([np.zeros((1, 2, 6, 6), np.int32)]),
        "truncated": good[:-4],
        "trailing bytes": good + b"\0\0\0\0",
        "zero dim": good[:12] + b"\0\0\0\0" + good[16:],
    }
    for name, payload in cases.items():
        assert native.run_code(model, payload)[0] == ExitCode.INPUT, name
    ids_model = ModelBuilder()
    ids_model.output(ids_model.embedding(ids_model.input((2,), DType.I32), rnd(4, 3)))
    data = ids_model.to_bytes()
    assert native.run_code(data, encode_payload([np.array([0, 3], np.int32)]))[0] == 0
    assert native.run_code(data, encode_payload([np.array([0, 4], np.int32)]))[0] == ExitCode.INPUT
    assert native.run_code(data, encode_payload([np.array([-1, 0], np.int32)]))[0] == ExitCode.INPUT


def oom_model() -> bytes:
    """Two embedding outputs of 2^27 floats (512 MiB each): over the 1 GiB budget before anything runs."""
    b = ModelBuilder()
    ids = b.input((1 << 7, 1 << 7), DType.I32)
    table = b.const(rnd(2, 1 << 13))
    b.output(b.embedding(ids, table), b.embedding(ids, table))
    return b.to_bytes()


def test_out_of_memory() -> None:
    payload = encode_payload([np.zeros((1 << 7, 1 << 7), np.int32)])
    assert native.run_code(oom_model(), payload)[0] == ExitCode.NOMEM


def test_keccak() -> None:
    for n in (0, 1, 31, 135, 136, 137, 272, 1000):
        data = bytes(range(256)) * 4
        assert native.keccak256(data[:n]) == keccak256(data[:n]), n


# --------------------------------------------------------------------------------------------------------
# The MIPS guest build
# --------------------------------------------------------------------------------------------------------
GUESTS = pytest.mark.parametrize("elf", [GUEST_ELF, EXEC_GUEST_ELF], ids=["mlkit.elf", "mlkit-exec.elf"])


@GUESTS
def test_guest_has_no_fpu_instructions(elf: Path) -> None:
    assert fpu_instructions(elf) == []


@GUESTS
def test_guest_has_no_undefined_calls(elf: Path) -> None:
    assert undefined_symbols(elf) == []


@GUESTS
def test_guest_uses_only_spec_instructions(elf: Path) -> None:
    assert non_spec_instructions(elf) == []


@GUESTS
def test_guest_build_is_reproducible(tmp_path: Path, elf: Path) -> None:
    from elftools.elf.elffile import ELFFile

    with elf.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".comment")
        built_with = section.data().rstrip(b"\0").decode() if section is not None else ""
    ident = compiler_ident()  # "mips-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0"
    if built_with != "GCC: " + ident[ident.find("(") :]:
        pytest.skip(f"{elf.name} was built by {built_with!r}, this machine has {ident!r}")
    # no path of the build reaches the ELF
    rebuilt = build_mips(tmp_path / "another dir" / elf.name, node_guest=elf == EXEC_GUEST_ELF)
    assert rebuilt.read_bytes() == elf.read_bytes(), (
        f"mlkit/guest/{elf.name} is stale: python3 -m mlkit.build"
    )


# --------------------------------------------------------------------------------------------------------
# The guest in the VM: the real preimage flow, byte-identical to native
# --------------------------------------------------------------------------------------------------------
def vm_run(
    model: bytes,
    payload: bytes,
    claim: bytes,
    max_steps: int = 50_000_000,
    fast: bool = True,
    local_override: dict[int, bytes] | None = None,
) -> tuple[int, bytes, int, bytes]:
    """(exit code, bytes written to fd 3, steps, final state hash) of the guest on this model, input and
    claim, with the real preimage flow: local keys 1-3, the model and input as blobs in the store. On the
    Unicorn executor (mipsvm.fast) when `fast` and it is available, else on the reference stepper."""
    elf = pytest.importorskip("mipsvm.elf")
    preimage = pytest.importorskip("mipsvm.preimage")
    store = preimage.PreimageStore()
    values = {1: preimage.put_blob(store, model), 2: preimage.put_blob(store, payload), 3: claim}
    local = preimage.LocalData({**values, **(local_override or {})})
    oracle = preimage.PreimageOracle(store, local)
    program = elf.load_elf(GUEST_ELF)
    if fast:
        try:
            from mipsvm.fast import FastVM
        except ImportError:
            fast = False
    if fast:
        with FastVM(program, oracle) as vm:
            state = vm.run(max_steps)
            out = bytes(vm.output)
    else:
        from mipsvm.step import run

        written = bytearray()

        def on_write(fd: int, data: bytes) -> None:
            if fd == 3:
                written.extend(data)

        run(program.state, program.memory, oracle, max_steps, on_write)
        state, out = program.state, bytes(written)
        state.mem_root = program.memory.root()
    assert state.exited, f"the guest did not exit within {max_steps} steps"
    return state.exit_code, out, state.step, state.hash()


def test_vm_matches_native() -> None:
    model = small_model()
    payload = encode_payload([rnd(1, 2, 6, 6, seed=9)])
    want = native.run(model, payload)
    code, out, steps, final = vm_run(model, payload, keccak256(want), fast=False)  # the reference stepper
    assert (code, out) == (0, want)
    assert vm_run(model, payload, keccak256(want))[1:] == (want, steps, final)  # the fast executor agrees
    code, out, _, _ = vm_run(model, payload, bytes(32))
    assert (code, out) == (1, want)


def test_vm_gpt2_generation(tiny_gpt2: Any) -> None:
    model = gpt2_model(tiny_gpt2, generate=True)
    payload = generate_payload([5, 17, 3], 6)
    want = native.run(model, payload)
    code, out, _, _ = vm_run(model, payload, keccak256(want))
    assert (code, out) == (0, want)


def test_vm_error_codes() -> None:
    model = small_model()
    payload = encode_payload([rnd(1, 2, 6, 6)])
    bad_model = MALFORMED["wrong declared shape"](model)
    assert vm_run(bad_model, payload, bytes(32))[0] == ExitCode.MODEL
    assert vm_run(model, payload[:-4], bytes(32))[0] == ExitCode.INPUT
    oom_payload = encode_payload([np.zeros((1 << 7, 1 << 7), np.int32)])
    assert vm_run(oom_model(), oom_payload, bytes(32))[0] == ExitCode.NOMEM
    assert MAX_ELEMENTS == 1 << 27


def test_caller_buffer_api() -> None:
    """mlkit_run with a caller's buffer: code 6 and the size needed when it is too small."""
    import ctypes

    lib = native.library()
    model, payload = small_model(), encode_payload([rnd(1, 2, 6, 6)])
    want = native.run(model, payload)
    need = ctypes.c_size_t(0)
    small = (ctypes.c_uint8 * 8)()
    assert (
        lib.mlkit_run(model, len(model), payload, len(payload), small, 8, ctypes.byref(need))
        == ExitCode.OUTCAP
    )
    assert need.value == len(want)
    buf = (ctypes.c_uint8 * need.value)()
    assert lib.mlkit_run(model, len(model), payload, len(payload), buf, need.value, ctypes.byref(need)) == 0
    assert bytes(buf) == want


def test_vm_blobs_and_locals() -> None:
    # a model of 513 chunks: the manifest holds level-1 nodes (spec section 6, "Blobs"); each 32-byte
    # preimage read is a syscall, so this is the slowest test here
    b = ModelBuilder()
    b.output(b.embedding(b.input((3,), DType.I32), rnd(512 * 16384 // 4 // 8, 8)))
    big = b.to_bytes()
    assert 512 * 16384 < len(big) <= 513 * 16384
    payload = encode_payload([np.array([0, 7, 131_071], np.int32)])
    want = native.run(big, payload)
    assert vm_run(big, payload, keccak256(want))[:2] == (0, want)
    model = small_model()
    # an empty input blob (one empty chunk) is not a payload
    assert vm_run(model, b"", bytes(32))[0] == ExitCode.INPUT
    # a model id that is not a keccak key
    assert vm_run(model, b"", bytes(32), local_override={1: bytes([1]) + bytes(31)})[0] == ExitCode.MODEL
