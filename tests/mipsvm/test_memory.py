"""Merkle memory (spec section 3) and the state encoding (spec section 2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mipsvm.constants import MEM_TREE_DEPTH, STATE_SIZE, Status
from mipsvm.hashing import keccak256
from mipsvm.memory import ZERO_HASHES, Memory, ProofError, page_root, proof_root
from mipsvm.state import State, StateError, state_hash

addresses = st.integers(0, 2**32 - 1)
writes = st.lists(st.tuples(addresses, st.binary(min_size=1, max_size=64)), max_size=12)


def full_root(mem: Memory) -> bytes:
    """The root recomputed from scratch over every page, with no cache."""
    nodes = {p: page_root(bytes(page)) for p, page in mem.pages.items()}
    for h in range(7, MEM_TREE_DEPTH):
        parents = {}
        for i in {i >> 1 for i in nodes}:
            left = nodes.get(2 * i, ZERO_HASHES[h])
            right = nodes.get(2 * i + 1, ZERO_HASHES[h])
            parents[i] = keccak256(left + right)
        nodes = parents
    return nodes.get(0, ZERO_HASHES[MEM_TREE_DEPTH])


def test_empty_memory_root_is_the_zero_hash_of_height_27() -> None:
    assert Memory().root() == ZERO_HASHES[27]
    assert ZERO_HASHES[1] == keccak256(bytes(64))


@settings(max_examples=60, deadline=None)
@given(writes, writes)
def test_incremental_root_equals_a_full_recompute(first, second) -> None:
    mem = Memory()
    for addr, data in first:
        mem.write(addr, data)
    mem.root()
    for addr, data in second:
        mem.write(addr, data)
    assert mem.root() == full_root(mem)


@settings(max_examples=60, deadline=None)
@given(writes, addresses)
def test_proof_proves_the_leaf_and_a_write_through_it(ws, addr) -> None:
    mem = Memory()
    for a, data in ws:
        mem.write(a, data)
    proof = mem.proof(addr)
    assert len(proof) == 896
    assert proof[:32] == mem.read(addr & ~31, 32)
    assert proof_root(addr, proof) == mem.root()
    new_leaf = keccak256(proof[:32])
    mem.write(addr & ~31, new_leaf)
    assert proof_root(addr, proof, new_leaf) == mem.root()


def test_tampered_proof_gives_another_root() -> None:
    mem = Memory()
    mem.write_u32(0x1000, 0xDEADBEEF)
    proof = bytearray(mem.proof(0x1000))
    proof[40] ^= 1
    assert proof_root(0x1000, bytes(proof)) != mem.root()
    with pytest.raises(ProofError):
        proof_root(0x1000, bytes(proof[:-1]))


def test_reads_and_writes_cross_pages_and_wrap_around() -> None:
    mem = Memory()
    mem.write(0xFFFFFFFE, b"abcd")
    assert mem.read(0xFFFFFFFE, 4) == b"abcd"
    assert mem.read(0, 2) == b"cd"
    mem.write_u32(0x2FFC, 0x01020304)
    assert mem.read(0x2FFC, 4) == bytes([1, 2, 3, 4])
    assert mem.read_u32(0x2FFC) == 0x01020304


def test_copy_is_independent() -> None:
    mem = Memory()
    mem.write_u32(0x100, 1)
    root = mem.root()
    clone = mem.copy()
    clone.write_u32(0x100, 2)
    assert mem.root() == root != clone.root()


def test_state_round_trip_and_status_byte() -> None:
    s = State(pc=0x400000, next_pc=0x400004, step=7, heap=0x20000000)
    s.regs[29] = 0x7FFEFFF0
    encoded = s.encode()
    assert len(encoded) == STATE_SIZE
    assert State.decode(encoded) == s
    assert s.hash()[0] == Status.UNFINISHED
    for code, status in ((0, Status.VALID), (1, Status.INVALID), (2, Status.PANIC), (0x80, Status.PANIC)):
        s.exited, s.exit_code = True, code
        assert s.status == status
        assert s.hash()[0] == status
        assert s.hash()[1:] == keccak256(s.encode())[1:]


def test_malformed_states_are_rejected() -> None:
    good = bytearray(State().encode())
    with pytest.raises(StateError, match="226"):
        State.decode(bytes(good[:-1]))
    bad_exited = bytearray(good)
    bad_exited[89] = 2
    with pytest.raises(StateError, match="exited"):
        state_hash(bytes(bad_exited))
    bad_r0 = bytearray(good)
    bad_r0[98 + 3] = 1
    with pytest.raises(StateError, match="r0"):
        State.decode(bytes(bad_r0))
