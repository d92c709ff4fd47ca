"""The mlkit side of the split dispute game (docs/model-format.md, "Execution schedule and states"):

- the schedule: mlkit/schedule.py and mlkit/csrc/schedule.c give the same executions (every entry, past the
  end too) on the reference models and on random models;
- the states: executions computed one by one natively (`run_states`) end in the whole run's output; every
  slot value is the blob id of the slot's bytes; one execution recomputed natively from its record equals
  the states;
- the node guest (mlkit-exec.elf in the VM) exits 0 on the honest record of executions of every reference
  model and writes the native value; it exits 1 on a wrong new value, out slot, read set, read value, and
  on anything but a fixed point past the last execution;
- generate mode with gen_eos hit early: the executions after `done` are no-ops, OUTPUT binds the output;
- tiles: a planned (tiled) model computes the same bits.
"""

from __future__ import annotations

import functools
import itertools
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.random_models import generate_models, plain_models

from mipsvm.hashing import keccak256
from mipsvm.preimage import PreimageStore, put_blob
from mlkit import models, native
from mlkit.format import ModelBuilder, ModelFormatError, decode_model, encode_model
from mlkit.guest import States, exec_native, run_exec_vm, run_states
from mlkit.io import decode_payload, encode_payload
from mlkit.plan import MAX_EXEC_STEPS, bound_executions, plan
from mlkit.schedule import ExecKind, Schedule, schedule_of
from mlkit.state import SLOT_CONTROL, SLOT_INPUT, SLOT_OUTPUT, ZERO, ExecRecord, blob_id

pytestmark = pytest.mark.requires("guest")

REFERENCE = ("mnist-mlp", "lenet", "gpt2-tiny", "dcgan32")


@functools.cache
def reference_states(name: str) -> States:
    exp = models.reference(name)
    return run_states(exp.model, models.example_payload(exp))


@functools.cache
def model_store(model: bytes) -> PreimageStore:
    """A preimage store holding the model's blob (shared by the VM runs of one model)."""
    store = PreimageStore()
    put_blob(store, model)
    return store


def c_entries(model: bytes, sched: Schedule, ks: list[int]) -> tuple[int, list[tuple[int, ...]]]:
    return native.schedule_entries(model, ks, sched.prompt_len, sched.new_tokens)


def py_entries(sched: Schedule, ks: list[int]) -> list[tuple[int, ...]]:
    return [(int(e.kind), e.arg, e.step, e.out_slot, *e.reads) for e in map(sched.entry, ks)]


def assert_schedules_equal(model: bytes, payload: bytes) -> Schedule:
    sched = schedule_of(decode_model(model), payload)
    ks = list(range(1, len(sched) + 4))
    n, entries = c_entries(model, sched, ks)
    assert n == len(sched)
    assert entries == py_entries(sched, ks)
    assert list(sched) == [sched.entry(k) for k in range(1, len(sched) + 1)]  # the walk equals entry(k)
    return sched


def vm_check(st_: States, k: int, record: ExecRecord | None = None, reads: list[bytes | None] | None = None):
    record = record if record is not None else st_.record(k)
    reads = reads if reads is not None else st_.read_bytes(min(k, len(st_) + 1))
    return run_exec_vm(st_.model, record, reads, store=model_store(st_.model))


# --------------------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*REFERENCE, "dcgan128"])
def test_schedule_python_equals_c_on_reference_models(name: str) -> None:
    exp = models.reference(name)
    assert_schedules_equal(exp.model, models.example_payload(exp))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(plain_models(), generate_models()))
def test_schedule_python_equals_c_on_random_models(case: tuple[bytes, bytes]) -> None:
    assert_schedules_equal(*case)


def test_schedule_layout_of_a_generate_model() -> None:
    """CONTROL_INIT; per step FEED_TOKEN, FEED_POS, the step's nodes (attention: KV_APPEND then ATTEND),
    ADVANCE (prefill steps: only the nodes the KV caches need, ADVANCE reads the control only); OUTPUT."""
    sched = reference_states("gpt2-tiny").schedule
    p, n = sched.prompt_len, sched.new_tokens
    entries = list(sched)
    assert entries[0].kind == ExecKind.CONTROL_INIT and entries[0].reads == (SLOT_INPUT,)
    assert entries[-1].kind == ExecKind.OUTPUT and entries[-1].reads == (SLOT_CONTROL,)
    advances = [e for e in entries if e.kind == ExecKind.ADVANCE]
    assert [e.step for e in advances] == list(range(p + n - 1))
    assert all(len(e.reads) == (1 if e.step < p - 1 else 2) for e in advances)
    kinds = [e.kind for e in entries]
    assert kinds.count(ExecKind.KV_APPEND) == kinds.count(ExecKind.ATTEND) == 2 * (p + n - 1)
    assert all(SLOT_CONTROL in e.reads for e in entries[1:])
    for a, b in itertools.pairwise(entries):
        if b.kind == ExecKind.ATTEND:
            assert a.kind == ExecKind.KV_APPEND and a.out_slot in b.reads
    assert sched.entry(len(sched) + 5).kind == ExecKind.NOOP


def test_plain_model_with_more_than_eight_activation_outputs_is_not_schedulable() -> None:
    b = ModelBuilder()
    x = b.input((2,))
    b.output(*[b.add(x, np.float32([i, i])) for i in range(9)])
    model = b.to_bytes()
    with pytest.raises(ModelFormatError, match="at most 8"):
        Schedule(decode_model(model))
    with pytest.raises(native.MlkitError) as err:
        native.schedule_entries(model, [1])
    assert err.value.code == 2


# --------------------------------------------------------------------------------------------------------
# Blob ids and states
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [0, 1, 135, 16384, 16385, 511 * 16384, 511 * 16384 + 1, 600 * 16384 + 7])
def test_native_blob_id_is_put_blob(length: int) -> None:
    data = random.Random(length).randbytes(length)
    assert native.blob_id(data) == blob_id(data)


@pytest.mark.parametrize("name", REFERENCE)
def test_states_end_in_the_whole_run_output(name: str) -> None:
    exp = models.reference(name)
    payload = models.example_payload(exp)
    st_ = reference_states(name)
    assert st_.output == native.run(exp.model, payload)
    assert st_.value_at(len(st_), SLOT_OUTPUT) == keccak256(st_.output)
    # the root of S_N from C (mlk_slot_root) is SlotTree's, and the last of the roots replayed in Python
    assert st_.final_root == st_.tree(len(st_)).root() == st_.roots()[-1]
    assert st_.root(0) == st_.tree(0).root() and st_.root(len(st_) + 3) == st_.final_root  # past the end


def test_slot_values_are_blob_ids_of_the_slot_bytes() -> None:
    st_ = reference_states("gpt2-tiny")
    for k in (1, 2, 8, 9, 40, len(st_) - 1):
        x = st_.executions[k - 1]
        got = st_.slot_bytes(k, x.out_slot)
        assert got is not None and blob_id(got) == x.value, (k, x.kind)
    control = st_.slot_bytes(len(st_), SLOT_CONTROL)
    words = np.frombuffer(control, ">i4")
    p, n = st_.schedule.prompt_len, st_.schedule.new_tokens
    (tokens,) = decode_payload(st_.output)
    assert list(words[:5]) == [p + n - 1, 1, n, p, n]
    assert list(words[5 + p :]) == list(tokens)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(plain_models(), generate_models()))
def test_states_and_native_executions_agree_on_random_models(case: tuple[bytes, bytes]) -> None:
    """run_states ends in the whole run's output; each execution recomputed from its record (mlkit_exec, as
    the node guest does, constants read in parts) gives the value of the states."""
    model, payload = case
    st_ = run_states(model, payload)
    assert st_.output == native.run(model, payload)
    ks = [*sorted(random.Random(len(st_)).sample(range(1, len(st_) + 1), min(len(st_), 12))), len(st_) + 1]
    for k in ks:
        code, value = exec_native(model, st_.record(k), st_.read_bytes(k))
        assert code == 0 and value == st_.record(k).new_value, (k, st_.entry(k))


# --------------------------------------------------------------------------------------------------------
# The node guest in the VM, honest records
# --------------------------------------------------------------------------------------------------------
def sample(st_: States, per_kind: int, max_steps: int, seed: int = 0) -> list[int]:
    """Executions of every kind (at most `per_kind` each) whose estimate is small enough for a test."""
    from mlkit.plan import estimate

    model = decode_model(st_.model)
    rng = random.Random(seed)
    by_kind: dict[ExecKind, list[int]] = {}
    for x in st_.executions:
        if x.kind in (ExecKind.NODE, ExecKind.ATTEND) and estimate(model, x.arg, x.step) > max_steps:
            continue
        by_kind.setdefault(x.kind, []).append(x.index)
    return sorted(k for ks in by_kind.values() for k in rng.sample(ks, min(per_kind, len(ks))))


@pytest.mark.parametrize(
    ("name", "per_kind", "max_steps"),
    [("mnist-mlp", 99, 1 << 40), ("lenet", 99, 1 << 40), ("gpt2-tiny", 3, 1 << 40), ("dcgan32", 2, 1 << 27)],
)
def test_node_guest_accepts_honest_records(name: str, per_kind: int, max_steps: int) -> None:
    st_ = reference_states(name)
    for k in [*sample(st_, per_kind, max_steps), len(st_) + 1]:
        run = vm_check(st_, k)
        assert run.exit_code == 0, (name, k, st_.entry(k))
        assert run.value == st_.record(k).new_value


def test_node_guest_accepts_honest_records_of_dcgan128_tiles() -> None:
    """DCGAN-128 planned with a 2^26-step budget (its exported form needs no tiles): a concat of tiles and a
    sample of executions, each in the VM within the bound."""
    exp = models.reference("dcgan128")
    tiled = encode_model(bound_executions(decode_model(exp.model), 1 << 26))
    st_ = run_states(tiled, models.example_payload(exp))
    model = decode_model(st_.model)
    concats = [
        x.index for x in st_.executions if x.kind == ExecKind.NODE and model.nodes[x.arg].op == "concat"
    ]
    assert concats, "the budget tiles nothing"
    for k in [concats[0], *sample(st_, 1, 1 << 27, seed=1)]:
        run = vm_check(st_, k)
        assert run.exit_code == 0 and run.value == st_.record(k).new_value, k
        assert run.steps < MAX_EXEC_STEPS


@pytest.mark.slow
def test_node_guest_on_gpt2_124m() -> None:
    """GPT-2 124M (seeded): its largest execution, an lm_head tile of the last step, and an attention of
    that step, in the VM within the bound; the guest reads only the parts of the 500 MB model they use."""
    st_ = reference_states("gpt2")
    model = decode_model(st_.model)
    last = [x for x in st_.executions if x.step == st_.schedule.prompt_len + st_.schedule.new_tokens - 2]
    tile = next(
        x
        for x in last
        if x.kind == ExecKind.NODE
        and model.nodes[x.arg].op == "linear"
        and len(model.nodes[x.arg].ints) == 2
        and model.tensors[model.nodes[x.arg].output].shape[-1] > 10000
    )
    attend = next(x for x in last if x.kind == ExecKind.ATTEND)
    for x in (tile, attend):
        run = vm_check(st_, x.index)
        assert run.exit_code == 0 and run.value == x.value, x
        assert run.steps < MAX_EXEC_STEPS


# --------------------------------------------------------------------------------------------------------
# The node guest in the VM, dishonest records
# --------------------------------------------------------------------------------------------------------
def mutated(rec: ExecRecord, **change: object) -> ExecRecord:
    fields = {f: getattr(rec, f) for f in ("exec", "out_slot", "old_value", "new_value", "reads")}
    fields.update(change)
    return ExecRecord(**fields)  # type: ignore[arg-type]


def test_node_guest_rejects_a_wrong_new_value_and_writes_the_true_one() -> None:
    st_ = reference_states("mnist-mlp")
    rec = st_.record(3)
    run = vm_check(st_, 3, mutated(rec, new_value=rec.old_value))
    assert run.exit_code == 1 and run.value == rec.new_value


def test_node_guest_rejects_records_whose_slots_are_not_the_schedules() -> None:
    st_ = reference_states("mnist-mlp")
    k = 3  # NODE 1 (linear): reads its input's slot
    rec, reads = st_.record(k), st_.read_bytes(k)
    (slot, _), other = rec.reads[0], st_.record(k + 1).out_slot
    extra = SLOT_INPUT
    cases = {
        "wrong out slot": (mutated(rec, out_slot=other, old_value=ZERO), reads),
        "missing read": (mutated(rec, reads=()), []),
        "extra read": (
            mutated(rec, reads=tuple(sorted([*rec.reads, (extra, st_.value_at(k - 1, extra))]))),
            [st_.slot_bytes(k - 1, s) for s in sorted([slot, extra])],
        ),
        "wrong read slot": (mutated(rec, reads=((SLOT_INPUT, st_.input_id),)), [st_.payload]),
        "exec out of order": (mutated(rec, exec=k + 1), reads),
    }
    for what, (record, data) in cases.items():
        run = vm_check(st_, k, record, data)
        assert run.exit_code == 1 and run.value is None, what
        assert exec_native(st_.model, record, data) == (1, None), what


def test_node_guest_rejects_a_wrong_read_value() -> None:
    """The read slot holds other bytes of the right length: the guest computes another value (exit 1)."""
    st_ = reference_states("mnist-mlp")
    k = 3
    rec, (data,) = st_.record(k), st_.read_bytes(k)
    other = data[4:] + data[:4]
    record = mutated(rec, reads=((rec.reads[0][0], blob_id(other)),))
    run = vm_check(st_, k, record, [other])
    assert run.exit_code == 1 and run.value is not None and run.value != rec.new_value
    assert exec_native(st_.model, record, [other]) == (1, run.value)


def test_node_guest_past_the_last_execution_accepts_only_a_fixed_point() -> None:
    st_ = reference_states("mnist-mlp")
    k = len(st_) + 2
    rec = st_.record(k)
    assert rec.out_slot == SLOT_OUTPUT and rec.new_value == rec.old_value == keccak256(st_.output)
    assert vm_check(st_, k).exit_code == 0
    run = vm_check(st_, k, mutated(rec, new_value=bytes(32)))
    assert run.exit_code == 1 and run.value == rec.old_value
    assert (
        vm_check(
            st_, k, mutated(rec, out_slot=3, old_value=st_.value_at(k, 3), new_value=st_.value_at(k, 3))
        ).exit_code
        == 1
    )


def test_node_guest_panics_on_slot_bytes_of_the_wrong_length() -> None:
    st_ = reference_states("mnist-mlp")
    rec, (data,) = st_.record(3), st_.read_bytes(3)
    short = data[:-4]
    run = vm_check(st_, 3, mutated(rec, reads=((rec.reads[0][0], blob_id(short)),)), [short])
    assert run.exit_code == 3


# --------------------------------------------------------------------------------------------------------
# Generate mode: gen_eos early, no-ops after done, the output bound
# --------------------------------------------------------------------------------------------------------
def with_eos(model: bytes, eos: int) -> bytes:
    """The model with header field gen_eos set."""
    return model[:24] + int(eos).to_bytes(4, "big", signed=True) + model[28:]


def test_generate_mode_stops_at_gen_eos_and_binds_the_output() -> None:
    exp = models.reference("gpt2-tiny")
    payload = models.example_payload(exp)
    tokens = native.generate(exp.model, exp.example.tolist(), exp.new_tokens)
    eos = tokens[2]
    model = with_eos(exp.model, eos)
    st_ = run_states(model, payload)
    assert st_.output == native.run(model, payload)
    (got,) = decode_payload(st_.output)
    assert list(got) == tokens[: tokens.index(eos) + 1] and len(got) < exp.new_tokens
    assert st_.value_at(len(st_), SLOT_OUTPUT) == keccak256(st_.output)
    # the ADVANCE that generated eos set done; every later execution but OUTPUT is a no-op
    done_at = [x.index for x in st_.executions if x.kind == ExecKind.ADVANCE][
        len(exp.example) - 1 + tokens.index(eos)
    ]
    after = st_.executions[done_at : len(st_) - 1]
    assert after and all(x.value == st_.value_at(x.index - 1, x.out_slot) for x in after)
    assert st_.root(done_at) == st_.root(len(st_) - 1) != st_.root(len(st_))
    for k in (done_at, done_at + 1, done_at + 7, len(st_), len(st_) + 1):
        run = vm_check(st_, k)
        assert run.exit_code == 0 and run.value == st_.record(k).new_value, k
    k = done_at + 5  # a no-op claiming a change
    rec = st_.record(k)
    assert vm_check(st_, k, mutated(rec, new_value=keccak256(b"x"))).exit_code == 1


# --------------------------------------------------------------------------------------------------------
# Tiles
# --------------------------------------------------------------------------------------------------------
def test_concat_joins_along_an_axis() -> None:
    b = ModelBuilder()
    x, y = b.input((2, 3, 2)), b.input((2, 1, 2))
    b.output(b.concat([x, y, x], 1), b.concat([x, x], 2))
    a, c = np.arange(12, dtype=np.float32).reshape(2, 3, 2), -np.arange(4, dtype=np.float32).reshape(2, 1, 2)
    got = native.run_arrays(b.to_bytes(), [a, c])
    assert np.array_equal(got[0], np.concatenate([a, c, a], 1))
    assert np.array_equal(got[1], np.concatenate([a, a], 2))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_models(), st.integers(50_000, 400_000))
def test_tiled_models_compute_the_same_bits(case: tuple[bytes, bytes], budget: int) -> None:
    """Planning with a tiny budget tiles most linears and convs; the output does not change by one bit, and
    the states of the tiled model check in the native node guest."""
    model, payload = case
    tiled = encode_model(bound_executions(decode_model(model), budget))
    assert native.run(tiled, payload) == native.run(model, payload)
    st_ = run_states(tiled, payload)
    for k in range(1, len(st_) + 1):
        code, value = exec_native(tiled, st_.record(k), st_.read_bytes(k))
        assert code == 0 and value == st_.executions[k - 1].value


def test_reference_models_are_planned_within_the_bound() -> None:
    for name in (*REFERENCE, "dcgan128"):
        p = plan(decode_model(models.reference(name).model))
        assert not p.tiled and not p.over, name  # exported planned: nothing left to tile


# --------------------------------------------------------------------------------------------------------
# A property: random models, random executions, in the VM
# --------------------------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(plain_models(), generate_models()), st.randoms(use_true_random=False))
def test_node_guest_agrees_with_the_native_states_on_random_models(
    case: tuple[bytes, bytes], rnd: random.Random
) -> None:
    model, payload = case
    st_ = run_states(model, payload)
    for k in rnd.sample(range(1, len(st_) + 2), min(3, len(st_) + 1)):
        run = run_exec_vm(model, st_.record(k), st_.read_bytes(k))
        assert run.exit_code == 0 and run.value == st_.record(k).new_value, (k, st_.entry(k))


def test_payload_with_nan_gives_canonical_slot_bytes() -> None:
    """A NaN in a tensor is written 0x7FC00000 in its slot (the builds' NaN bits may differ)."""
    b = ModelBuilder()
    x = b.input((4,))
    b.output(b.mul(b.relu(x), np.float32([1, 1, 1, 1])))
    model = b.to_bytes()
    payload = encode_payload([np.array([np.nan, -np.nan, 1.0, np.inf], np.float32) * -1])
    st_ = run_states(model, payload)
    data = st_.slot_bytes(1, st_.executions[0].out_slot)
    assert data is not None and data[:8] == bytes.fromhex("7fc000007fc00000")
    for k in range(1, len(st_) + 1):
        assert vm_check(st_, k).exit_code == 0
