"""mlkit.state: the slot tree of the split game's states, its proofs and the execution record (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mipsvm.hashing import keccak256
from mlkit.state import (
    NUM_SLOTS,
    SLOT_DEPTH,
    SLOT_INPUT,
    ExecRecord,
    SlotTree,
    StateError,
    initial_state,
    root_from,
    zero_hashes,
)

slots = st.integers(0, NUM_SLOTS - 1)
values = st.binary(min_size=32, max_size=32)


def dense_root(values: dict[int, bytes]) -> bytes:
    """The root computed level by level over every leaf (the definition, not the sparse shortcut)."""
    level = [values.get(i, bytes(32)) for i in range(NUM_SLOTS)]
    while len(level) > 1:
        level = [keccak256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def test_empty_and_initial_roots() -> None:
    assert SlotTree().root() == zero_hashes()[SLOT_DEPTH] == dense_root({})
    input_id = b"\x02" + bytes(range(31))
    assert initial_state(input_id).root() == dense_root({SLOT_INPUT: input_id})


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(slots, values, max_size=6))
def test_sparse_root_is_the_dense_root(vals: dict[int, bytes]) -> None:
    assert SlotTree(vals).root() == dense_root(vals)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(slots, values, max_size=12), slots, values)
def test_a_one_slot_update_shares_its_siblings(vals: dict[int, bytes], slot: int, new: bytes) -> None:
    before = SlotTree(vals)
    after = before.copy()
    after.set(slot, new)
    proof = before.proof(slot)
    assert proof == after.proof(slot)  # same siblings: the two states differ in that slot only
    assert root_from(slot, before.get(slot), proof) == before.root()
    assert root_from(slot, new, proof) == after.root()
    for other, value in vals.items():
        if other != slot:
            assert root_from(other, value, after.proof(other)) == after.root()


def test_setting_zero_empties_a_slot() -> None:
    tree = SlotTree({5: b"\x01" * 32})
    tree.set(5, bytes(32))
    assert tree.root() == SlotTree().root() and tree.values() == {}


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 2**64 - 1),
    slots,
    values,
    values,
    st.lists(st.tuples(slots, values), max_size=8, unique_by=lambda r: r[0]),
)
def test_records_round_trip(exec_: int, out: int, old: bytes, new: bytes, reads: list) -> None:
    rec = ExecRecord(exec_, out, old, new, tuple(sorted(reads)))
    assert ExecRecord.decode(rec.encode()) == rec
    assert rec.key()[0] == 2 and rec.key()[1:] == keccak256(rec.encode())[1:]


def test_malformed_records_and_slots_are_refused() -> None:
    with pytest.raises(StateError):
        ExecRecord(0, 3, bytes(32), bytes(32), ())
    with pytest.raises(StateError):
        ExecRecord(1, 3, bytes(32), bytes(32), ((5, bytes(32)), (4, bytes(32))))
    with pytest.raises(StateError):
        ExecRecord.decode(b"\x00" * 80)
    with pytest.raises(StateError):
        SlotTree().set(NUM_SLOTS, bytes(32))
    with pytest.raises(StateError):
        root_from(3, bytes(32), [bytes(32)] * (SLOT_DEPTH - 1))
