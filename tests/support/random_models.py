"""Random small valid models (hypothesis strategies) for the property tests of the split game: plain models
of mixed ops (several outputs, constants, broadcasts, concat, reshape) and generate-mode decoders (embedding,
attention, argmax, a random gen_eos)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from mlkit.format import DType, ModelBuilder
from mlkit.io import encode_payload, generate_payload


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@st.composite
def plain_models(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(model, input payload): a chain of random ops on an image or a matrix, with some side outputs."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    image = draw(st.booleans())
    outs: list[int] = []
    if image:
        c, h = draw(st.integers(1, 3)), draw(st.integers(3, 6))
        x = b.input((1, c, h, h))
        inputs = [rng.standard_normal((1, c, h, h)).astype(np.float32)]
        for _ in range(draw(st.integers(1, 5))):
            op = draw(st.sampled_from(["conv", "convt", "pool", "bn", "act", "concat", "add"]))
            c = b.shape(x)[1]
            if op == "conv":
                oc = draw(st.integers(1, 4))
                x = b.conv2d(x, _w(rng, oc, c, 3, 3), _w(rng, oc) if draw(st.booleans()) else None, 1, 1)
            elif op == "convt":
                oc = draw(st.integers(1, 3))
                x = b.conv_transpose2d(x, _w(rng, c, oc, 2, 2), _w(rng, oc), 1, 0)
            elif op == "pool" and b.shape(x)[2] >= 2:
                x = (
                    b.maxpool2d(x, 2, 1)
                    if draw(st.booleans())
                    else b.avgpool2d(x, 2, 1, 0, draw(st.booleans()))
                )
            elif op == "bn":
                var = np.abs(_w(rng, c)) + 0.5
                x = b.batchnorm(x, _w(rng, c), _w(rng, c), _w(rng, c), var)
            elif op == "act":
                x = draw(st.sampled_from([b.relu, b.tanh, b.sigmoid, lambda v: b.leaky_relu(v, 0.1)]))(x)
            elif op == "concat":
                x = b.concat([x, b.relu(x)], 1)
            elif op == "add":
                x = b.add(x, _w(rng, *b.shape(x)[1:]))
            if draw(st.integers(0, 4)) == 0:
                outs.append(x)
        outs.append(b.flatten(x))
    else:
        t, f = draw(st.integers(1, 4)), draw(st.integers(2, 8))
        x = b.input((t, f))
        ids = b.input((t,), DType.I32) if draw(st.booleans()) else None
        inputs = [rng.standard_normal((t, f)).astype(np.float32)]
        if ids is not None:
            inputs.append(rng.integers(0, 5, size=(t,)).astype(np.int32))
            x = b.add(x, b.embedding(ids, _w(rng, 5, f)))
        for _ in range(draw(st.integers(1, 6))):
            op = draw(
                st.sampled_from(["linear", "act", "norm", "softmax", "mul", "transpose", "concat", "attn"])
            )
            f = b.shape(x)[-1]
            if op == "linear":
                n = draw(st.integers(1, 9))
                x = b.linear(x, _w(rng, n, f), _w(rng, n) if draw(st.booleans()) else None)
            elif op == "act":
                x = draw(st.sampled_from([b.relu, b.gelu, b.tanh, b.sigmoid]))(x)
            elif op == "norm":
                x = b.layernorm(x, _w(rng, f), _w(rng, f))
            elif op == "softmax":
                x = b.softmax(x)
            elif op == "mul":
                x = b.mul(x, x if draw(st.booleans()) else _w(rng, f))
            elif op == "transpose":
                x = b.reshape(b.transpose(x, [1, 0]), list(b.shape(x)))
            elif op == "concat":
                x = b.concat([x, x, b.relu(x)][: draw(st.integers(1, 3))], 1)
            elif op == "attn" and f % 3 == 0:
                x = b.attention(x, 1, b.shape(x)[0])
            if draw(st.integers(0, 4)) == 0:
                outs.append(x)
        outs.append(x)
        if draw(st.booleans()):
            outs.append(b.argmax(x))
        if draw(st.booleans()):
            outs.append(b.const(_w(rng, 2)))  # a constant graph output
    b.output(*outs[-8:])
    return b.to_bytes(), encode_payload(inputs)


@st.composite
def generate_models(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(model, input payload): a one-layer decoder step in generate mode, a random prompt and token count,
    sometimes an end-of-sequence token that it generates early."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    vocab, c, heads = draw(st.integers(2, 9)), 3 * draw(st.integers(1, 3)), draw(st.sampled_from([1, 3]))
    c = c if c % heads == 0 else 3 * heads
    ctx = draw(st.integers(2, 10))
    b = ModelBuilder(mode="generate", gen_eos=draw(st.integers(-1, vocab - 1)))
    tok, pos = b.input((1,), DType.I32), b.input((1,), DType.I32)
    h = b.add(b.embedding(tok, _w(rng, vocab, c)), b.embedding(pos, _w(rng, ctx, c)))
    for _ in range(draw(st.integers(1, 2))):
        a = b.layernorm(h, _w(rng, c) + 1, _w(rng, c))
        att = b.attention(b.linear(a, _w(rng, 3 * c, c), _w(rng, 3 * c)), heads, ctx)
        h = b.add(h, b.linear(att, _w(rng, c, c)))
    if draw(st.booleans()):  # a node only the full steps run
        h = b.gelu(h)
    b.output(b.argmax(b.linear(h, _w(rng, vocab, c, scale=2.0))))
    p = draw(st.integers(1, ctx))
    n = draw(st.integers(1, ctx - p + 1))
    prompt = [draw(st.integers(0, vocab - 1)) for _ in range(p)]
    return b.to_bytes(), generate_payload(prompt, n)
