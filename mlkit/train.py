"""Training graphs: one SGD update of an MLP as an mlkit graph, and the chunk layout of its input.

An update is a plain mlkit run (docs/model-format.md, "Training graphs"): the graph takes the training state
(parameters and momentum buffers) and `steps` batches, runs forward, loss, backward and the optimizer update
`steps` times (unrolled), and outputs the new state and the mean loss. Because it is an ordinary guest run,
the dispute game settles a wrong update exactly as it settles a wrong inference.

The input payload is laid out in whole 16384-byte blob chunks (vm-spec section 6) so that a contract can name
it from content ids alone: the *state* fills `state_chunks` chunks (the payload header, the parameter and
momentum records, a zero pad record), and each *batch* fills one chunk (x, labels, a zero pad record). The
input's blob id is then `keccakKey(keccak(u64be(len) ++ state chunk keys ++ batch chunk keys))`, and a
batch id
is the keccak key of its chunk. The output payload is the state's records (same shapes, same order) and the
loss record, so it follows from the next state chunk and the loss (`output_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from mipsvm.constants import CHUNK
from mipsvm.hashing import keccak256
from mipsvm.preimage import keccak_key
from mlkit.format import MAX_IO, DType, ModelBuilder
from mlkit.io import decode_payload

PAYLOAD_MAGIC = b"RMLD"
F32 = npt.NDArray[np.float32]


class TrainingError(ValueError):
    """A training spec, state or batch that does not fit the layout, said in one line."""


def _rec_size(shape: tuple[int, ...]) -> int:
    return 4 + 4 * len(shape) + 4 * int(np.prod(shape, dtype=np.int64))


def _rec(arr: npt.ArrayLike, dtype: DType = DType.F32) -> bytes:
    a = np.asarray(arr, dtype=">f4" if dtype == DType.F32 else ">i4")
    head = bytes([1 if dtype == DType.F32 else 2, a.ndim, 0, 0])
    return head + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()


def _pad_rec(size: int) -> bytes:
    """A zero f32 [n] record of exactly `size` bytes (size >= 12, a multiple of 4)."""
    n = (size - 8) // 4
    if n < 1 or size % 4:
        raise TrainingError(f"no pad record of {size} bytes")
    return _rec(np.zeros(n, np.float32))


@dataclass(frozen=True)
class MLPSpec:
    """An MLP `sizes[0] -> ... -> sizes[-1]` (ReLU between layers) trained by SGD with momentum."""

    sizes: tuple[int, ...] = (64, 16, 10)
    batch: int = 32
    steps: int = 2  # SGD steps per update (unrolled in the graph)
    lr: float = 0.1
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or min(self.sizes) < 1 or self.batch < 1 or self.steps < 1:
            raise TrainingError(f"bad MLP spec {self}")
        if self.n_inputs > MAX_IO:
            raise TrainingError(
                f"{self.n_inputs} graph inputs, {MAX_IO} at most: fewer layers or steps per update"
            )

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def param_shapes(self) -> list[tuple[int, ...]]:
        """W1, b1, W2, b2, ... (nn.Linear layout)."""
        out: list[tuple[int, ...]] = []
        for a, b in zip(self.sizes, self.sizes[1:], strict=False):
            out += [(b, a), (b,)]
        return out

    @property
    def state_shapes(self) -> list[tuple[int, ...]]:
        """The parameters, then their momentum buffers."""
        return self.param_shapes * 2

    @property
    def n_inputs(self) -> int:
        return len(self.state_shapes) + 1 + 3 * self.steps

    @property
    def n_outputs(self) -> int:
        return len(self.state_shapes) + 1

    @cached_property
    def records_end(self) -> int:
        """Offset in the state chunk where the pad record starts (the header and state records before it)."""
        return 8 + sum(_rec_size(s) for s in self.state_shapes)

    @cached_property
    def state_chunks(self) -> int:
        return -(-(self.records_end + 12) // CHUNK)

    @cached_property
    def state_ranges(self) -> list[tuple[int, int]]:
        """(offset, length) of each state record's data in the state bytes: what may change between states
        (everything else, headers and pad, is fixed: the state's template)."""
        out, at = [], 8
        for s in self.state_shapes:
            head = 4 + 4 * len(s)
            n = 4 * int(np.prod(s, dtype=np.int64))
            out.append((at + head, n))
            at += head + n
        return out

    @cached_property
    def batch_pad(self) -> int:
        used = _rec_size((self.batch, self.sizes[0])) + _rec_size((self.batch,))
        if used + 12 > CHUNK:
            raise TrainingError(
                f"a batch of {self.batch} x {self.sizes[0]} does not fit one {CHUNK}-byte chunk"
            )
        return CHUNK - used

    # -- the graph -----------------------------------------------------------------------------------------
    def training_graph(self) -> bytes:
        """The update's mlkit model: `steps` SGD steps, unrolled (docs/model-format.md, "Training graphs")."""
        self.batch_pad  # noqa: B018 - check the batch fits before building
        g = ModelBuilder()
        n = len(self.param_shapes)
        params = [g.input(s) for s in self.param_shapes]
        vel = [g.input(s) for s in self.param_shapes]
        g.input([(self.state_chunks * CHUNK - self.records_end - 8) // 4])  # state pad
        losses = []
        for _ in range(self.steps):
            x = g.input([self.batch, self.sizes[0]])
            y = g.input([self.batch], DType.I32)
            g.input([(self.batch_pad - 8) // 4])  # batch pad
            acts = [x]  # inputs of each layer, then the logits
            for i in range(self.n_layers):
                z = g.linear(acts[-1], params[2 * i], params[2 * i + 1])
                acts.append(g.relu(z) if i + 1 < self.n_layers else z)
            losses.append(g.softmax_xent(acts[-1], y))
            dy = g.softmax_xent_grad(acts[-1], y)
            grads: list[int] = [0] * n
            for i in reversed(range(self.n_layers)):
                grads[2 * i] = g.linear_grad_w(dy, acts[i])
                grads[2 * i + 1] = g.linear_grad_b(dy)
                if i:
                    dy = g.relu_grad(g.linear_grad_x(dy, params[2 * i]), acts[i])
            vel = [g.momentum(v, d, self.momentum) for v, d in zip(vel, grads, strict=True)]
            params = [g.sgd(p, v, self.lr) for p, v in zip(params, vel, strict=True)]
        loss = losses[0]
        for extra in losses[1:]:
            loss = g.add(loss, extra)
        if self.steps > 1:
            loss = g.mul(loss, np.array([1.0 / self.steps], np.float32))
        g.output(*params, *vel, loss)
        return g.to_bytes()

    def inference_model(self, params: list[F32]) -> bytes:
        """The trained MLP as an inference model: x f32 [1, in] -> the predicted class, i32 [1]."""
        g = ModelBuilder()
        h = g.input([1, self.sizes[0]])
        for i in range(self.n_layers):
            h = g.linear(h, np.asarray(params[2 * i], np.float32), np.asarray(params[2 * i + 1], np.float32))
            if i + 1 < self.n_layers:
                h = g.relu(h)
        g.output(g.argmax(h))
        return g.to_bytes()

    def model_ranges(self, model: bytes) -> list[tuple[int, int, int]]:
        """(model offset, state offset, length) of each parameter's data in `inference_model`'s file and in
        the state bytes: the contract checks the registered file against the final state with these."""
        n_params = len(self.param_shapes)
        entries = [model[32 + 32 * i : 64 + 32 * i] for i in range(int.from_bytes(model[12:16], "big"))]
        consts = [e for e in entries if e[2] == 1]
        if len(consts) != n_params:
            raise TrainingError("the inference model does not hold one constant per parameter")
        return [
            (int.from_bytes(e[20:24], "big"), off, ln)
            for e, (off, ln) in zip(consts, self.state_ranges[:n_params], strict=True)
        ]

    # -- state, batches, payloads --------------------------------------------------------------------------
    def init_params(self, seed: int = 0) -> list[F32]:
        """nn.Linear's default initialization (uniform +-1/sqrt(fan_in)), from numpy's generator."""
        rng = np.random.default_rng(seed)
        out = []
        for fan_in, fan_out in zip(self.sizes, self.sizes[1:], strict=False):
            bound = 1.0 / np.sqrt(fan_in)
            out.append(rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32))
            out.append(rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32))
        return out

    def encode_state(self, params: list[F32], velocities: list[F32] | None = None) -> bytes:
        """The state bytes (`state_chunks` whole chunks); momentum buffers zero when not given."""
        if velocities is None:
            velocities = [np.zeros(s, np.float32) for s in self.param_shapes]
        arrays = [*params, *velocities]
        for a, s in zip(arrays, self.state_shapes, strict=True):
            if tuple(np.shape(a)) != s:
                raise TrainingError(
                    f"a state tensor has shape {list(np.shape(a))}, the model expects {list(s)}"
                )
        body = PAYLOAD_MAGIC + self.n_inputs.to_bytes(4, "big") + b"".join(_rec(a) for a in arrays)
        return body + _pad_rec(self.state_chunks * CHUNK - len(body))

    def decode_state(self, state: bytes) -> tuple[list[F32], list[F32]]:
        """(parameters, momentum buffers) of state bytes (TrainingError if they do not fit the layout)."""
        self.check_state(state)
        out = []
        for (off, n), s in zip(self.state_ranges, self.state_shapes, strict=True):
            out.append(np.frombuffer(state[off : off + n], ">f4").astype(np.float32).reshape(s))
        k = len(self.param_shapes)
        return out[:k], out[k:]

    def state_template(self, state: bytes) -> bytes:
        """The state with every record's data zeroed: equal for all states of one layout."""
        t = bytearray(state)
        for off, n in self.state_ranges:
            t[off : off + n] = bytes(n)
        return bytes(t)

    def check_state(self, state: bytes) -> None:
        """Refuse state bytes of another length or layout (wrong shapes, a non-zero pad)."""
        want = self.state_chunks * CHUNK
        if len(state) != want:
            raise TrainingError(f"state of {len(state)} bytes; this architecture's state is {want} bytes")
        ref = self.encode_state([np.zeros(s, np.float32) for s in self.param_shapes])
        if self.state_template(state) != ref:
            raise TrainingError(
                "the state's records do not have this architecture's shapes (or the pad is not 0)"
            )

    def encode_batch(self, x: npt.ArrayLike, y: npt.ArrayLike) -> bytes:
        """One batch chunk: x f32 [batch, in], labels i32 [batch], a zero pad."""
        xa, ya = np.asarray(x, np.float32), np.asarray(y)
        if xa.shape != (self.batch, self.sizes[0]) or ya.shape != (self.batch,):
            raise TrainingError(
                f"a batch is x [{self.batch}, {self.sizes[0]}] and y [{self.batch}], got "
                f"{list(xa.shape)} and {list(ya.shape)}"
            )
        if ya.size and (ya.min() < 0 or ya.max() >= self.sizes[-1]):
            raise TrainingError(f"labels must be 0..{self.sizes[-1] - 1}")
        body = _rec(xa) + _rec(ya, DType.I32)
        return body + _pad_rec(CHUNK - len(body))

    def decode_batch(self, chunk: bytes) -> tuple[F32, npt.NDArray[np.int32]]:
        """(x, labels) of a batch chunk."""
        x, y, _ = decode_payload(PAYLOAD_MAGIC + (3).to_bytes(4, "big") + chunk)
        return np.asarray(x, np.float32), np.asarray(y, np.int32)

    def update_input(self, state: bytes, batches: list[bytes]) -> bytes:
        """The input payload of one update: the state chunks, then `steps` batch chunks."""
        if len(batches) != self.steps or any(len(b) != CHUNK for b in batches):
            raise TrainingError(f"an update takes {self.steps} batch chunks of {CHUNK} bytes")
        return state + b"".join(batches)

    def output_of(self, state: bytes, loss_bits: bytes) -> bytes:
        """The output payload an update yielding `state` and the loss must produce (the contract's rule)."""
        return output_of(state, self.records_end, self.n_outputs, loss_bits)

    def state_of_output(self, output: bytes) -> tuple[bytes, float]:
        """(the next state bytes, the loss) from an update's output payload."""
        arrays = decode_payload(output)
        if len(arrays) != self.n_outputs:
            raise TrainingError(f"an update's output has {self.n_outputs} records, got {len(arrays)}")
        k = len(self.param_shapes)
        params = [np.asarray(a, np.float32) for a in arrays[:k]]
        vel = [np.asarray(a, np.float32) for a in arrays[k : 2 * k]]
        return self.encode_state(params, vel), float(np.asarray(arrays[-1]).reshape(-1)[0])


def output_of(state: bytes, records_end: int, n_outputs: int, loss_bits: bytes) -> bytes:
    """The output payload of an update that yields `state` (whose records end at `records_end`) and the loss
    (f32 bits, big-endian): `TrainingRun._outputOf`."""
    return (
        PAYLOAD_MAGIC
        + n_outputs.to_bytes(4, "big")
        + state[8:records_end]
        + bytes([1, 1, 0, 0])
        + (1).to_bytes(4, "big")
        + loss_bits
    )


def next_state(prev: bytes, output: bytes, records_end: int) -> tuple[bytes, bytes]:
    """(the next state, the loss bits) from the state an update started from and its output payload: the
    output's records in place of the state's (same template), the loss from its last record."""
    if len(output) != records_end + 12 or output[records_end : records_end + 8] != bytes(
        [1, 1, 0, 0, 0, 0, 0, 1]
    ):
        raise TrainingError("the update's output does not fit this run's state layout")
    return prev[:8] + output[8:records_end] + prev[records_end:], output[-4:]


def digits_batches(
    spec: MLPSpec, n_batches: int, seed: int = 0, test_fraction: float = 0.25
) -> tuple[
    list[bytes],
    npt.NDArray[np.float32],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.int64],
]:
    """scikit-learn's digits (pixels / 16), split train/test with `seed`: `n_batches` batch chunks drawn from
    the training split in order (reshuffled per epoch), and the (train x, train y, test x, test y) arrays."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    chunks: list[bytes] = []
    per_epoch = len(train) // spec.batch
    idx = rng.permutation(train)
    for b in range(n_batches):
        if b and b % per_epoch == 0:
            idx = rng.permutation(train)
        sel = idx[(b % per_epoch) * spec.batch : (b % per_epoch + 1) * spec.batch]
        chunks.append(spec.encode_batch(x[sel], y[sel]))
    return chunks, x[train], y[train], x[test], y[test]


def spec_of_state(state: bytes, batch: int, steps: int, lr: float, momentum: float) -> MLPSpec:
    """The MLP spec whose state this is (sizes from the parameter records' shapes), with the run's
    hyperparameters; TrainingError if the state is not an MLP state."""
    n = int.from_bytes(state[4:8], "big") - 3 * steps  # the state records and the pad (the header counts
    if n < 5 or (n - 1) % 4:  # the batches' records too)
        raise TrainingError("not an MLP training state")
    arrays = decode_payload(state[:4] + n.to_bytes(4, "big") + state[8:])
    params = arrays[: (n - 1) // 2]
    sizes = [int(params[0].shape[1])] if params[0].ndim == 2 else []
    for w in params[0::2]:
        if w.ndim != 2:
            raise TrainingError("not an MLP training state")
        sizes.append(int(w.shape[0]))
    spec = MLPSpec(tuple(sizes), batch, steps, lr, momentum)
    spec.check_state(state)
    return spec


def chunk_key(chunk: bytes) -> bytes:
    """The keccak preimage key of one chunk: a batch id, or one key of a state."""
    return keccak_key(chunk)


def state_keys(state: bytes) -> list[bytes]:
    """The chunk keys of state bytes (the weights' content id is the first; all of them name the state)."""
    return [chunk_key(state[i : i + CHUNK]) for i in range(0, len(state), CHUNK)]


def input_id(state_key_list: list[bytes], batch_ids: list[bytes]) -> bytes:
    """The blob id of an update's input, from content ids alone (vm-spec section 6: a flat manifest)."""
    total = CHUNK * (len(state_key_list) + len(batch_ids))
    return keccak_key(total.to_bytes(8, "big") + b"".join(state_key_list) + b"".join(batch_ids))


def state_id(state: bytes) -> bytes:
    """One id for a whole state: keccak256 of its chunk keys (what the run records as the weights' id)."""
    return keccak256(b"".join(state_keys(state)))
