"""Training graphs (mlkit/train.py, docs/model-format.md "Training graphs"): the backward ops and the SGD
update against torch autograd, the native runtime against the guest in the VM bit for bit, the input
layout's content ids against the blob scheme, and the format's refusals mirrored by the C runtime."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mlkit import native
from mlkit.format import DType, ModelBuilder, ModelFormatError
from mlkit.guest import blob_ids, run_vm
from mlkit.io import decode_payload, encode_payload
from mlkit.native import MlkitError
from mlkit.train import MLPSpec, TrainingError, input_id, state_keys

TOL = 1e-5


def _batch(rng: np.random.Generator, m: int, k: int, c: int) -> tuple[npt.NDArray[np.float32], np.ndarray]:
    return rng.standard_normal((m, k)).astype(np.float32), rng.integers(0, c, m).astype(np.int32)


def _torch_mlp_grads(
    params: list[np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, list[np.ndarray]]:
    ts = [torch.tensor(p, requires_grad=True) for p in params]
    h = torch.tensor(x)
    n = len(ts) // 2
    for i in range(n):
        h = F.linear(h, ts[2 * i], ts[2 * i + 1])
        if i + 1 < n:
            h = torch.relu(h)
    loss = F.cross_entropy(h, torch.tensor(y, dtype=torch.long))
    loss.backward()
    return float(loss.detach()), [t.grad.numpy() for t in ts]  # type: ignore[union-attr]


def _grad_graph(sizes: tuple[int, ...], m: int) -> bytes:
    """Forward, loss and backward of an MLP: outputs the loss and every parameter's gradient."""
    g = ModelBuilder()
    shapes = []
    for a, b in itertools.pairwise(sizes):
        shapes += [(b, a), (b,)]
    params = [g.input(s) for s in shapes]
    x = g.input([m, sizes[0]])
    y = g.input([m], DType.I32)
    acts = [x]
    n = len(sizes) - 1
    for i in range(n):
        z = g.linear(acts[-1], params[2 * i], params[2 * i + 1])
        acts.append(g.relu(z) if i + 1 < n else z)
    loss = g.softmax_xent(acts[-1], y)
    dy = g.softmax_xent_grad(acts[-1], y)
    grads = [0] * len(params)
    for i in reversed(range(n)):
        grads[2 * i] = g.linear_grad_w(dy, acts[i])
        grads[2 * i + 1] = g.linear_grad_b(dy)
        if i:
            dy = g.relu_grad(g.linear_grad_x(dy, params[2 * i]), acts[i])
    g.output(loss, *grads)
    return g.to_bytes()


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4).map(tuple),
    m=st.integers(1, 9),
)
def test_loss_and_gradients_match_torch_autograd(seed: int, sizes: tuple[int, ...], m: int) -> None:
    rng = np.random.default_rng(seed)
    params = MLPSpec(sizes=sizes, batch=m, steps=1).init_params(seed)
    x, y = _batch(rng, m, sizes[0], sizes[-1])
    out = native.run_arrays(_grad_graph(sizes, m), [*params, x, y])
    loss, grads = _torch_mlp_grads(params, x, y)
    assert abs(float(out[0][0]) - loss) <= TOL * max(1.0, abs(loss))
    for ours, theirs in zip(out[1:], grads, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_update_matches_torch_sgd_with_momentum(seed: int) -> None:
    spec = MLPSpec(sizes=(20, 8, 5), batch=6, steps=2, lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    params = spec.init_params(seed)
    vel = [rng.standard_normal(p.shape).astype(np.float32) * 0.1 for p in params]
    batches = [_batch(rng, spec.batch, 20, 5) for _ in range(spec.steps)]
    state = spec.encode_state(params, vel)
    payload = spec.update_input(state, [spec.encode_batch(x, y) for x, y in batches])
    new_state, loss = spec.state_of_output(native.run(spec.training_graph(), payload))
    new_params, new_vel = spec.decode_state(new_state)

    ts = [torch.tensor(p, requires_grad=True) for p in params]
    opt = torch.optim.SGD(ts, lr=spec.lr, momentum=spec.momentum)
    for t, v in zip(ts, vel, strict=True):
        opt.state[t]["momentum_buffer"] = torch.tensor(v)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        h = torch.relu(F.linear(torch.tensor(x), ts[0], ts[1]))
        out = F.cross_entropy(F.linear(h, ts[2], ts[3]), torch.tensor(y, dtype=torch.long))
        out.backward()
        opt.step()
        losses.append(float(out.detach()))
    assert abs(loss - np.mean(losses)) <= TOL
    for ours, t in zip(new_params, ts, strict=True):
        np.testing.assert_allclose(ours, t.detach().numpy(), rtol=TOL, atol=TOL)
    for ours, t in zip(new_vel, ts, strict=True):
        np.testing.assert_allclose(ours, opt.state[t]["momentum_buffer"].numpy(), rtol=TOL, atol=TOL)


def test_native_equals_the_guest_in_the_vm_bit_for_bit_on_a_training_step() -> None:
    spec = MLPSpec(sizes=(64, 16, 10), batch=32, steps=2)
    rng = np.random.default_rng(7)
    state = spec.encode_state(spec.init_params(7))
    batches = [spec.encode_batch(*_batch(rng, 32, 64, 10)) for _ in range(2)]
    graph, payload = spec.training_graph(), spec.update_input(state, batches)
    out = native.run(graph, payload)
    vm = run_vm(graph, payload)
    assert vm.exit_code == 0 and vm.output == out
    # the output follows from the next state and the loss (the contract's rule), and the input's blob id
    # from the state's and the batches' chunk keys
    new_state, loss = spec.state_of_output(out)
    assert spec.output_of(new_state, struct.pack(">f", loss)) == out
    assert blob_ids(graph, payload)[1] == input_id(state_keys(state), [state_keys(b)[0] for b in batches])


def test_a_label_out_of_range_is_an_input_error() -> None:
    spec = MLPSpec(sizes=(4, 3), batch=2, steps=1)
    state = spec.encode_state(spec.init_params(0))
    batch = spec.encode_batch(np.zeros((2, 4), np.float32), [0, 1])
    bad = bytearray(spec.update_input(state, [batch]))
    off = len(state) + 4 + 8 + 4 * 8 + 8  # the second label's word
    bad[off : off + 4] = (3).to_bytes(4, "big")
    with pytest.raises(MlkitError):
        native.run(spec.training_graph(), bytes(bad))
    with pytest.raises(TrainingError, match="labels"):
        spec.encode_batch(np.zeros((2, 4), np.float32), [0, 3])


def test_wrong_shapes_are_refused_by_python_and_c_alike() -> None:
    g = ModelBuilder()
    x = g.input([3, 4])
    lab = g.input([3])  # f32 labels: refused
    with pytest.raises(ModelFormatError, match="labels"):
        g.softmax_xent(x, lab)
    w = g.input([5, 2])
    with pytest.raises(ModelFormatError):
        g.linear_grad_x(x, w)  # dy [3, 4] needs w [4, k]
    # the C side refuses the same graph when it is written anyway
    good = ModelBuilder()
    dy, w2 = good.input([3, 4]), good.input([4, 2])
    good.output(good.linear_grad_x(dy, w2))
    data = bytearray(good.to_bytes())
    assert native.validate(bytes(data)) == 0
    data[32 + 32 + 4 : 32 + 32 + 8] = (5).to_bytes(4, "big")  # w becomes [5, 2]
    data[32 + 32 * 2 + 4 : 32 + 32 * 2 + 8] = (3).to_bytes(4, "big")
    assert native.validate(bytes(data)) != 0
    with pytest.raises(TrainingError, match="shape"):
        MLPSpec(sizes=(4, 3), batch=2, steps=1).encode_state(
            [np.zeros((3, 5), np.float32), np.zeros(3, np.float32)]
        )


def test_decode_state_refuses_another_layout() -> None:
    spec = MLPSpec(sizes=(4, 3), batch=2, steps=1)
    state = bytearray(spec.encode_state(spec.init_params(0)))
    spec.decode_state(bytes(state))
    state[13] ^= 1  # a dim of the first record
    with pytest.raises(TrainingError, match="shapes"):
        spec.decode_state(bytes(state))
    assert (
        len(
            decode_payload(
                spec.encode_state(spec.init_params(0)) + spec.encode_batch(np.zeros((2, 4)), [0, 1])
            )
        )
        == 8
    )


def test_a_spec_with_too_many_graph_inputs_is_refused() -> None:
    with pytest.raises(TrainingError, match="graph inputs"):
        MLPSpec(sizes=(4, 3, 2), steps=3)


def _matmul_gelu_graph(ash: tuple[int, ...], bsh: tuple[int, ...]) -> bytes:
    """y = gelu(a @ b), loss-free: outputs y and, for an upstream gradient dy, da, db and the gelu's dx."""
    g = ModelBuilder()
    a, b = g.input(ash), g.input(bsh)
    z = g.matmul(a, b)
    dy = g.input([*ash[:-1], bsh[-1]])
    dz = g.gelu_grad(dy, z)
    g.output(g.gelu(z), dz, g.matmul_grad_a(dz, b), g.matmul_grad_b(dz, a))
    return g.to_bytes()


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    m=st.integers(1, 7),
    k=st.integers(1, 9),
    n=st.integers(1, 7),
    shared_b=st.booleans(),
)
def test_matmul_and_gelu_gradients_match_torch_autograd(
    seed: int, batch: tuple[int, ...], m: int, k: int, n: int, shared_b: bool
) -> None:
    rng = np.random.default_rng(seed)
    ash = (*batch, m, k)
    bsh = (k, n) if shared_b or not batch else (*batch, k, n)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (ash, bsh))
    dy = rng.standard_normal((*batch, m, n)).astype(np.float32)
    out = native.run_arrays(_matmul_gelu_graph(ash, bsh), [a, b, dy])

    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    z = ta @ tb
    z.retain_grad()
    y = F.gelu(z, approximate="tanh")
    y.backward(torch.tensor(dy))
    np.testing.assert_allclose(out[0], y.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(out[1], z.grad.numpy(), rtol=TOL, atol=TOL)  # type: ignore[union-attr]
    np.testing.assert_allclose(out[2], ta.grad.numpy(), rtol=TOL, atol=TOL)  # type: ignore[union-attr]
    # matmul_grad_b is per batch entry; a b shared over the batch gets their sum
    db = out[3].reshape(-1, k, n).sum(axis=0) if bsh == (k, n) else out[3]
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=TOL, atol=TOL)  # type: ignore[union-attr]


@settings(max_examples=30, deadline=None)
@given(x=st.floats(-30, 30, width=32), dy=st.floats(-4, 4, width=32))
def test_gelu_grad_matches_torch_pointwise(x: float, dy: float) -> None:
    g = ModelBuilder()
    dyi, xi = g.input([1]), g.input([1])
    g.output(g.gelu_grad(dyi, xi))
    out = native.run_arrays(g.to_bytes(), [np.array([dy], np.float32), np.array([x], np.float32)])
    t = torch.tensor([x], dtype=torch.float32, requires_grad=True)
    F.gelu(t, approximate="tanh").backward(torch.tensor([dy], dtype=torch.float32))
    np.testing.assert_allclose(out[0], t.grad.numpy(), rtol=TOL, atol=TOL)  # type: ignore[union-attr]


def test_gelu_grad_is_finite_for_huge_inputs() -> None:
    g = ModelBuilder()
    dyi, xi = g.input([4]), g.input([4])
    g.output(g.gelu_grad(dyi, xi))
    x = np.array([1e20, -1e20, 3e38, -3e38], np.float32)
    out = native.run_arrays(g.to_bytes(), [np.ones(4, np.float32), x])
    assert out[0].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_matmul_and_gelu_gradients_native_equal_the_guest_in_the_vm_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    ash, bsh = (2, 5, 6), (2, 6, 4)
    graph = _matmul_gelu_graph(ash, bsh)
    arrays = [rng.standard_normal(s).astype(np.float32) * 2 for s in (ash, bsh, (2, 5, 4))]
    payload = encode_payload(arrays)
    out = native.run(graph, payload)
    vm = run_vm(graph, payload)
    assert vm.exit_code == 0 and vm.output == out
    shared = _matmul_gelu_graph((5, 6), (6, 4))
    payload = encode_payload([arrays[0][0], arrays[1][0], arrays[2][0]])
    vm = run_vm(shared, payload)
    assert vm.exit_code == 0 and vm.output == native.run(shared, payload)


def test_matmul_and_gelu_gradient_shapes_are_refused_by_python_and_c_alike() -> None:
    g = ModelBuilder()
    dy, b, a = g.input([3, 4]), g.input([5, 3]), g.input([2, 6])
    with pytest.raises(ModelFormatError, match="does not match"):
        g.matmul_grad_a(dy, b)  # dy [3, 4] needs b [k, 4]
    with pytest.raises(ModelFormatError, match="does not match"):
        g.matmul_grad_b(dy, a)  # dy [3, 4] needs a [3, k]
    with pytest.raises(ModelFormatError):
        g.gelu_grad(dy, b)
    good = ModelBuilder()
    dy2, b2 = good.input([3, 4]), good.input([5, 4])
    good.output(good.matmul_grad_a(dy2, b2))
    data = bytearray(good.to_bytes())
    assert native.validate(bytes(data)) == 0
    data[32 + 32 + 8 : 32 + 32 + 12] = (3).to_bytes(4, "big")  # b becomes [5, 3]
    assert native.validate(bytes(data)) != 0
