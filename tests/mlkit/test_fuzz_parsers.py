"""Property-based fuzzing of every parser of untrusted bytes: the model format, the ELF loader, the state and
one-step proof decoders, the payload decoder, and the native mlkit runtime on mutated models and payloads.

Each parser must return a value or raise its documented error (`ModelFormatError`, `ElfError`, `StateError`,
`WitnessError` / `PreimageMissing`, `PayloadError`), never another exception, and within a time bound (a hang
fails the test instead of stalling CI). What a parser accepts must mean something: accepted models and
payloads re-encode to a canonical form, decoded states re-encode to their bytes, a witness with a changed
proof byte is always refused, and the C runtime accepts exactly the models Python accepts. The native runtime
runs in a subprocess, so a crash is a failing test, not a dead test run.

Not repeated here (already covered): fixed malformed models and the 400 table bit flips of
tests/mlkit/test_mlkit_ops.py, the malformed ELF headers of tests/mipsvm/test_elf.py, the proof bit flips
and tampered witnesses of tests/mipsvm/test_witness.py and tests/contracts/test_mips_sol.py. Examples
scale with ROLLML_FUZZ_SCALE (`make fuzz` sets 50); the default keeps this file under a minute.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from support.env import ROOT, scaled
from support.mips_cases import ORACLE, cases

from mipsvm.constants import PAGE_SIZE, STATE_SIZE, Status
from mipsvm.elf import MAX_LOAD_SEGMENTS, ElfError, load_elf
from mipsvm.hashing import keccak256
from mipsvm.memory import Memory
from mipsvm.preimage import PreimageMissing
from mipsvm.state import State, StateError, state_hash
from mipsvm.witness import PROOF_SIZE, WitnessError, make_proof, verify_step
from mlkit.build import GUEST_ELF
from mlkit.format import (
    HEADER_SIZE,
    NODE_ENTRY,
    TENSOR_ENTRY,
    DType,
    Mode,
    Model,
    ModelBuilder,
    ModelFormatError,
    Node,
    Op,
    Tensor,
    decode_model,
    encode_model,
    validate,
)
from mlkit.io import PayloadError, decode_payload, encode_payload, generate_payload

PARSE_SECONDS = 5.0  # one parse of a few KiB takes milliseconds: this much is a hang
NATIVE_BATCH = 40  # (model, payload) runs per subprocess
NATIVE_BATCH_SECONDS = 120.0


def budget(examples: int) -> int:
    """Examples of one property at this ROLLML_FUZZ_SCALE."""
    return scaled(examples)


def fuzz(examples: int) -> Any:
    """Hypothesis settings of one property: `examples` scaled, no deadline (the hang guard is ours), no
    example database (runs stay independent of earlier ones)."""
    return settings(
        max_examples=budget(examples), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


class Hang(Exception):
    """A parser ran past PARSE_SECONDS."""


@contextmanager
def time_limit(seconds: float = PARSE_SECONDS) -> Iterator[None]:
    """Raise Hang in the block after `seconds` (SIGALRM: pytest runs tests in the main thread)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still parsing after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------------------
# Mutations of valid inputs
# --------------------------------------------------------------------------------------------------------
U32_EDGES = (
    *(0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 1 << 20),
    *(1 << 27, (1 << 27) + 1, 0x3FFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF),
)
MUTATIONS = ("bit", "byte", "u16", "u32", "truncate", "extend", "delete", "duplicate")


def _position(draw: st.DrawFn, n: int, hot_end: int) -> int:
    """A byte position in [0, n): anywhere, or in the first `hot_end` bytes (headers and tables)."""
    if hot_end > 0 and draw(st.booleans()):
        return draw(st.integers(0, max(0, min(hot_end, n) - 1)))
    return draw(st.integers(0, n - 1))


def _mutate_once(draw: st.DrawFn, data: bytearray, hot_end: int) -> bytearray:
    kind = draw(st.sampled_from(MUTATIONS))
    if not data or kind == "extend":
        return data + draw(st.binary(min_size=1, max_size=64))
    pos = _position(draw, len(data), hot_end)
    if kind == "bit":
        data[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "byte":
        data[pos] = draw(st.integers(0, 255))
    elif kind in ("u16", "u32") and pos + 4 <= len(data):
        value = draw(st.one_of(st.sampled_from(U32_EDGES), st.integers(0, 0xFFFFFFFF)))
        if kind == "u16":
            struct.pack_into(">H", data, pos & ~1, value & 0xFFFF)
        else:
            struct.pack_into(">I", data, pos & ~3, value)
    elif kind == "truncate":
        del data[pos:]
    elif kind == "delete":
        del data[pos : pos + draw(st.integers(1, 64))]
    elif kind == "duplicate":
        chunk = data[pos : pos + draw(st.integers(1, 64))]
        at = draw(st.integers(0, len(data)))
        data[at:at] = chunk
    return data


@st.composite
def mutated(draw: st.DrawFn, base: bytes, hot_end: int = 0, size_field: int | None = None) -> bytes:
    """`base` after 1-3 mutations (bit and byte flips, 16/32-bit fields set to edge values, truncation,
    extension, deletion, duplication), biased towards its first `hot_end` bytes. With `size_field`, the
    big-endian u32 there is often set to the new length, so that a size check does not stop every mutant."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        data = _mutate_once(draw, data, hot_end)
    if size_field is not None and len(data) >= size_field + 4 and draw(st.booleans()):
        struct.pack_into(">I", data, size_field, len(data))
    return bytes(data)


# --------------------------------------------------------------------------------------------------------
# Valid inputs to mutate: two small models (plain and generate mode) with their inputs, the guest ELF
# --------------------------------------------------------------------------------------------------------
def _weights(seed: int, *shape: int) -> npt.NDArray[np.float32]:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.5).astype(np.float32)


def plain_model() -> bytes:
    """conv, relu, maxpool, reshape, linear, softmax on a [1, 2, 6, 6] input."""
    b = ModelBuilder()
    x = b.input((1, 2, 6, 6))
    y = b.maxpool2d(b.relu(b.conv2d(x, _weights(1, 3, 2, 3, 3), _weights(2, 3), padding=1)), 2)
    b.output(b.softmax(b.linear(b.flatten(y), _weights(3, 4, 27), _weights(4, 4))))
    return b.to_bytes()


def generate_model() -> bytes:
    """A one-block decoder in generate mode: embeddings, layernorm, attention, gelu, argmax."""
    b = ModelBuilder(mode=Mode.GENERATE)
    tok, pos = b.input((1,), DType.I32), b.input((1,), DType.I32)
    h = b.add(b.embedding(tok, _weights(5, 16, 12)), b.embedding(pos, _weights(6, 8, 12)))
    h = b.layernorm(h, _weights(7, 12), _weights(8, 12))
    h = b.add(h, b.attention(b.linear(h, _weights(9, 36, 12), _weights(10, 36)), 3, 8))
    logits = b.linear(b.gelu(b.linear(h, _weights(11, 12, 12))), _weights(12, 16, 12))
    b.output(b.reshape(b.argmax(logits), (1,)))
    return b.to_bytes()


def tables_end(model: bytes) -> int:
    """Where a model's tables end (header, tensors, nodes, graph inputs and outputs): mutations' hot spot."""
    nt, nn, ni, no = struct.unpack_from(">IIHH", model, 12)
    return HEADER_SIZE + nt * TENSOR_ENTRY + nn * NODE_ENTRY + 4 * (ni + no)


PLAIN = plain_model()
GENERATE = generate_model()
BASES: tuple[tuple[bytes, bytes], ...] = (
    (PLAIN, encode_payload([_weights(13, 1, 2, 6, 6)])),
    (GENERATE, generate_payload([1, 2, 3], 4)),
)
GUEST = GUEST_ELF.read_bytes()


def model_mutants() -> st.SearchStrategy[bytes]:
    return st.one_of(*(mutated(m, tables_end(m), size_field=8) for m, _ in BASES))


def payload_mutants() -> st.SearchStrategy[bytes]:
    return st.one_of(*(mutated(p, 32) for _, p in BASES))


# --------------------------------------------------------------------------------------------------------
# The model format
# --------------------------------------------------------------------------------------------------------
def header_prefixed(tail: bytes) -> bytes:
    """A plausible header (magic, version, plain mode, the right size) in front of random bytes."""
    data = bytearray(b"RMLM" + struct.pack(">HH", 1, 0) + bytes(HEADER_SIZE - 8) + tail)
    struct.pack_into(">I", data, 8, len(data))
    return bytes(data)


def decode_or_none(data: bytes) -> Model | None:
    """The decoded model, or None for a ModelFormatError; anything else (or a hang) fails the test."""
    with time_limit():
        try:
            return decode_model(data)
        except ModelFormatError:
            return None


def assert_canonical(model: Model) -> None:
    """An accepted model encodes to a canonical file that decodes back to the same encoding."""
    canonical = encode_model(model)
    again = decode_or_none(canonical)
    assert again is not None, "a model this module accepted does not survive its own encoding"
    assert encode_model(again) == canonical


@fuzz(300)
@given(st.one_of(st.binary(max_size=2048), st.binary(max_size=2048).map(header_prefixed)))
def test_decode_model_of_arbitrary_bytes_raises_only_its_error(data: bytes) -> None:
    model = decode_or_none(data)
    if model is not None:
        assert_canonical(model)


@fuzz(300)
@given(model_mutants())
def test_decode_model_of_mutated_models_raises_only_its_error(data: bytes) -> None:
    model = decode_or_none(data)
    if model is not None:
        assert_canonical(model)


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e39, 3.5e38]))
INTS = st.one_of(st.integers(-3, 70), st.sampled_from([-(1 << 31) - 1, 1 << 31, 1 << 40, 1 << 64]))


# (numpy dtype, value) of i32 constants: in range, and beyond int32 in wider integer types
I32_CONSTANTS = (
    (np.int8, -5),
    (np.int32, (1 << 31) - 1),
    (np.int64, -(1 << 31)),
    (np.int64, 1 << 31),
    (np.int64, -(1 << 31) - 1),
    (np.int64, 1 << 40),
    (np.uint64, (1 << 64) - 1),
)


@st.composite
def model_objects(draw: st.DrawFn) -> Model:
    """A mutation of a valid model object: one field of a tensor, a node, the graph or the mode replaced by an
    arbitrary value (the cases a hand-built `Model` can have that a decoded file cannot)."""
    model = decode_model(draw(st.sampled_from([PLAIN, GENERATE])))
    what = draw(
        st.sampled_from(
            ["node ints", "node floats", "node io", "tensor shape", "tensor data", "eos", "i32 constant"]
        )
    )
    k = draw(st.integers(0, len(model.nodes) - 1))
    t = draw(st.integers(0, len(model.tensors) - 1))
    if what == "node ints":
        model.nodes[k].ints = tuple(draw(st.lists(INTS, max_size=9)))
    elif what == "node floats":
        model.nodes[k].floats = tuple(draw(st.lists(FLOATS, max_size=5)))
    elif what == "node io":
        model.nodes[k].inputs = tuple(draw(st.lists(INTS, max_size=7)))
        model.nodes[k].output = draw(INTS)
    elif what == "tensor shape":
        model.tensors[t].shape = tuple(draw(st.lists(INTS, max_size=5)))
    elif what == "tensor data" and model.tensors[t].data is not None:
        dtype = draw(st.sampled_from([np.float64, np.int64, np.int8, np.bool_, np.float32, np.int32]))
        value = draw(st.one_of(st.integers(-3, 70), st.sampled_from([-(1 << 31) - 1, 1 << 31, 1 << 40])))
        model.tensors[t].data = np.full(model.tensors[t].shape, value, dtype=np.int64).astype(dtype)
    elif what == "i32 constant":  # an i32 constant reshaped into a new graph output
        dtype, value = draw(st.sampled_from(I32_CONSTANTS))
        data = np.array([value, 5], dtype=dtype)
        model.tensors += [Tensor(DType.I32, (2,), data), Tensor(DType.I32, (2,))]
        model.nodes.append(Node(Op.RESHAPE, (len(model.tensors) - 2,), len(model.tensors) - 1))
        model.outputs.append(len(model.tensors) - 1)
    else:
        model.gen_eos = draw(INTS)
    return model


@fuzz(300)
@given(model_objects())
def test_validate_and_encode_of_model_objects_raise_only_model_format_error(model: Model) -> None:
    """`validate` and `encode_model` of a hand-built model: ModelFormatError or a file that decodes again."""
    try:
        with time_limit():
            validate(model)
            data = encode_model(model)
    except ModelFormatError:
        return
    decoded = decode_or_none(data)
    assert decoded is not None, "encode_model wrote a file that decode_model rejects"
    assert encode_model(decoded) == data
    assert_constants_kept(model, decoded)


def assert_constants_kept(model: Model, decoded: Model) -> None:
    """Encoding keeps every constant's value: i32 exactly, f32 as binary32 rounds it (never a wrap)."""
    for t, d in zip(model.tensors, decoded.tensors, strict=True):
        if t.data is None:
            continue
        if t.dtype == DType.I32:
            assert np.array_equal(np.asarray(t.data).astype(np.int64), np.asarray(d.data).astype(np.int64))
        else:
            with np.errstate(over="ignore"):
                want = np.asarray(t.data).astype(np.float32)
            assert np.array_equal(want, np.asarray(d.data).astype(np.float32), equal_nan=True)


# --------------------------------------------------------------------------------------------------------
# The native runtime, in a subprocess
# --------------------------------------------------------------------------------------------------------
NATIVE_RUNNER = """
import struct, sys
from mlkit import native
data, pos, i = sys.stdin.buffer.read(), 0, 0
while pos < len(data):
    (n,) = struct.unpack_from(">I", data, pos); model = data[pos + 4 : pos + 4 + n]; pos += 4 + n
    (n,) = struct.unpack_from(">I", data, pos); payload = data[pos + 4 : pos + 4 + n]; pos += 4 + n
    print(i, native.validate(model), native.run_code(model, payload)[0], flush=True)
    i += 1
"""


def run_native(pairs: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """(validate code, run code) of each (model, payload), from a child process; a crash or a hang of the
    runtime fails the test and names the run."""
    blob = b"".join(struct.pack(">I", len(m)) + m + struct.pack(">I", len(p)) + p for m, p in pairs)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", NATIVE_RUNNER],
            input=blob,
            capture_output=True,
            timeout=NATIVE_BATCH_SECONDS,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        done = len((exc.stdout or b"").splitlines())
        pytest.fail(f"the native runtime hung on run {done}: model 0x{pairs[done][0][:64].hex()}...")
    lines = proc.stdout.decode().splitlines()
    if proc.returncode != 0:
        bad = pairs[len(lines)]
        pytest.fail(
            f"the native runtime crashed (exit {proc.returncode}) on run {len(lines)}: "
            f"model {len(bad[0])} bytes 0x{bad[0].hex()}, payload 0x{bad[1].hex()}\n"
            f"{proc.stderr.decode()[-2000:]}"
        )
    return [(int(v), int(r)) for _, v, r in (line.split() for line in lines)]


@st.composite
def native_cases(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A base model with a mutated payload, or a mutated model with its base payload."""
    model, payload = draw(st.sampled_from(BASES))
    if draw(st.booleans()):
        return draw(mutated(model, tables_end(model), size_field=8)), payload
    return model, draw(mutated(payload, 32))


def payload_fits(model: Model, payload: bytes) -> bool | None:
    """Whether a plain-mode model with f32 inputs only must run `payload` (its arrays match the inputs'
    dtypes and shapes); None when Python cannot tell (generate mode, i32 inputs: values matter too)."""
    if model.mode != Mode.PLAIN or any(dt != DType.F32 for dt, _ in model.input_specs()):
        return None
    try:
        arrays = decode_payload(payload)
    except PayloadError:
        return False
    specs = [(DType.F32 if a.dtype.kind == "f" else DType.I32, tuple(a.shape)) for a in arrays]
    return specs == model.input_specs()


@fuzz(3)
@given(st.lists(native_cases(), min_size=NATIVE_BATCH, max_size=NATIVE_BATCH))
def test_the_native_runtime_never_crashes_and_agrees_with_python(pairs: list[tuple[bytes, bytes]]) -> None:
    for (model_bytes, payload), (valid, ran) in zip(pairs, run_native(pairs), strict=True):
        model = decode_or_none(model_bytes)
        assert valid in (0, 2, 4) and ran in (0, 2, 3, 4), (valid, ran)
        assert (model is not None) == (valid != 2), f"Python and C disagree on 0x{model_bytes.hex()}"
        if model is None or valid != 0:
            assert ran == valid or valid == 0, (valid, ran)
            continue
        fits = payload_fits(model, payload)
        if fits is not None:
            assert (ran in (0, 4)) == fits, f"run code {ran} for payload 0x{payload.hex()}"


# --------------------------------------------------------------------------------------------------------
# The ELF loader
# --------------------------------------------------------------------------------------------------------
def load_or_none(data: bytes) -> Any:
    with time_limit():
        try:
            return load_elf(data)
        except ElfError:
            return None


def elf_prefixed(tail: bytes) -> bytes:
    """The guest's own ELF header (32-bit, big-endian, MIPS, ET_EXEC) in front of random bytes."""
    return GUEST[:52] + tail


def assert_loaded_sanely(program: Any) -> None:
    """A loaded program starts unfinished, its state's memory root is its memory's, text is in 32 bits."""
    assert program.state.status == Status.UNFINISHED
    assert program.state.mem_root == program.memory.root()
    assert all(0 <= lo < hi <= 1 << 32 for lo, hi in program.text_ranges)


@fuzz(200)
@given(st.one_of(st.binary(max_size=1024), st.binary(max_size=1024).map(elf_prefixed)))
def test_load_elf_of_arbitrary_bytes_raises_only_elf_error(data: bytes) -> None:
    program = load_or_none(data)
    if program is not None:
        assert_loaded_sanely(program)


@fuzz(300)
@given(mutated(GUEST, hot_end=52 + 32 * struct.unpack_from(">H", GUEST, 44)[0]))
def test_load_elf_of_mutated_guests_raises_only_elf_error(data: bytes) -> None:
    program = load_or_none(data)
    if program is not None:
        assert_loaded_sanely(program)


def with_segments(count: int) -> bytes:
    """The guest with a program header table of `count` PT_LOAD segments appended, each zero-filling
    256 MiB - 64 KiB below the heap (the same file bytes mapped again and again)."""
    table = b"".join(
        struct.pack(">8I", 1, 0, 0x10000000 - PAGE_SIZE * i, 0, 0, 0x0FFF0000, 6, PAGE_SIZE)
        for i in range(count)
    )
    data = bytearray(GUEST + table)
    struct.pack_into(">I", data, 28, len(GUEST))
    struct.pack_into(">H", data, 44, count)
    return bytes(data)


def test_an_elf_of_many_huge_segments_is_refused_or_loaded_quickly() -> None:
    """The loader's work is bounded (a fix: it walked every page of every segment's zero fill, so a 2 MiB
    file of 65535 such segments took hours): the most segments it takes load at once, more are refused."""
    program = load_or_none(with_segments(MAX_LOAD_SEGMENTS))
    assert program is not None
    with pytest.raises(ElfError, match="loadable segments"):
        load_elf(with_segments(MAX_LOAD_SEGMENTS + 1))
    with pytest.raises(ElfError, match="program headers"):
        load_elf(with_segments(0xFFFF))


# --------------------------------------------------------------------------------------------------------
# States and one-step proofs
# --------------------------------------------------------------------------------------------------------
@fuzz(300)
@given(st.one_of(st.binary(max_size=2 * STATE_SIZE), st.binary(min_size=STATE_SIZE, max_size=STATE_SIZE)))
def test_state_decode_round_trips_or_raises_state_error(data: bytes) -> None:
    try:
        state = State.decode(data)
    except StateError:
        return
    assert state.encode() == data
    assert state_hash(data) == bytes([state.status]) + keccak256(data)[1:]


WITNESS_ERRORS = (WitnessError, PreimageMissing)


def verify_or_none(pre: bytes, proof: bytes, part: bytes | None, part_len: int) -> bytes | None:
    with time_limit():
        try:
            return verify_step(pre, proof, part, part_len)
        except WITNESS_ERRORS:
            return None


@fuzz(200)
@given(
    pre=st.one_of(st.binary(max_size=300), st.binary(min_size=STATE_SIZE, max_size=STATE_SIZE)),
    proof=st.one_of(st.binary(max_size=2000), st.binary(min_size=PROOF_SIZE, max_size=PROOF_SIZE)),
    part=st.one_of(st.none(), st.binary(max_size=40)),
    part_len=st.one_of(st.integers(-5, 100), st.sampled_from([2**64 - 1, 2**64, -(2**64)])),
)
def test_verify_step_of_garbage_raises_only_witness_errors(
    pre: bytes, proof: bytes, part: bytes | None, part_len: int
) -> None:
    post = verify_or_none(pre, proof, part, part_len)
    assert post is None or len(post) == 32


@fuzz(150)
@given(case=cases(), target=st.sampled_from(["proof", "state", "part"]), data=st.data())
def test_verify_step_of_mutated_witnesses(
    case: tuple[State, Memory], target: str, data: st.DataObject
) -> None:
    """Every changed proof byte is refused; a changed state or part gives an error or some hash, never a
    crash. (Single bit flips of proofs: test_witness.py and test_mips_sol.py.)"""
    state, mem = case
    try:
        good = make_proof(state, mem, ORACLE)
    except PreimageMissing:
        assume(False)
    pre, proof, part, part_len = good.pre_state, good.proof, good.part, good.part_len
    if target == "proof":
        proof = data.draw(mutated(proof, 64))
        assume(proof != good.proof)
        assert verify_or_none(pre, proof, part, part_len) is None, "a changed proof was accepted"
        return
    if target == "state":
        pre = data.draw(mutated(pre, STATE_SIZE))
    else:
        part = data.draw(st.one_of(st.none(), mutated(part or bytes(32))))
        part_len = data.draw(st.one_of(st.just(part_len), st.integers(-1, 2**64)))
    post = verify_or_none(pre, proof, part, part_len)
    assert post is None or len(post) == 32


# --------------------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------------------
def decode_payload_or_none(data: bytes) -> list[npt.NDArray[Any]] | None:
    with time_limit():
        try:
            return decode_payload(data)
        except PayloadError:
            return None


def assert_payload_canonical(data: bytes, arrays: list[npt.NDArray[Any]]) -> None:
    """An accepted payload is the one encoding of its arrays (outputs are hashed: one byte string each)."""
    assert encode_payload(arrays) == data


def payload_prefixed(tail: bytes) -> bytes:
    return b"RMLD" + tail


@fuzz(300)
@given(st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(payload_prefixed)))
def test_decode_payload_of_arbitrary_bytes_raises_only_payload_error(data: bytes) -> None:
    arrays = decode_payload_or_none(data)
    if arrays is not None:
        assert_payload_canonical(data, arrays)


@fuzz(300)
@given(payload_mutants())
def test_decode_payload_of_mutated_payloads_raises_only_payload_error(data: bytes) -> None:
    arrays = decode_payload_or_none(data)
    if arrays is not None:
        assert_payload_canonical(data, arrays)


ARRAYS = st.lists(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype("<f4"), np.dtype(">f4"), np.dtype("<i4"), np.dtype(">i4")]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5),
    ),
    min_size=0,
    max_size=4,
)


@fuzz(200)
@given(ARRAYS)
def test_payloads_round_trip_bit_exactly(arrays: list[npt.NDArray[Any]]) -> None:
    data = encode_payload(arrays)
    back = decode_payload(data)
    assert len(back) == len(arrays)
    for a, b in zip(arrays, back, strict=True):
        assert b.shape == a.shape and b.dtype.kind == a.dtype.kind
        assert a.astype(a.dtype.newbyteorder(">")).tobytes() == b.astype(b.dtype.newbyteorder(">")).tobytes()
    assert encode_payload(back) == data


def test_time_limit_turns_a_hang_into_a_failure() -> None:
    """The hang guard itself works (a parser that loops forever fails instead of stalling CI)."""
    with pytest.raises(Hang), time_limit(0.05):
        while True:
            pass
