"""The states of a model's execution, as the split dispute game commits to them (docs/protocol.md, "Split
game"; docs/model-format.md, "Execution schedule and states").

A state is a binary Merkle tree of `SLOT_DEPTH` levels over `NUM_SLOTS` 32-byte leaves, the **slots**: a leaf
is its value as is, an interior node is `keccak256(left ++ right)`, an empty leaf is 32 zero bytes. A slot
holds the blob id (vm-spec section 6) of a tensor's bytes, except `SLOT_OUTPUT`, which holds keccak256 of the
output payload (the market's output hash). Two states that differ in one slot only have the same siblings on
that slot's path: the split game checks an execution's one-slot update with one proof against both roots.

`ExecRecord` is what the top level of a game hands to the bottom level (the node guest's local datum 4, by
its keccak key): the disputed execution, the slot it writes with its old and new value, and the slots it reads
with their values in the agreed state. `contracts/src/lib/SlotTree.sol` (and the split game's `open`)
mirror `root_from` and `ExecRecord.encode` bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mipsvm.hashing import keccak256
from mipsvm.preimage import PreimageStore, put_blob

SLOT_DEPTH = 14
NUM_SLOTS = 1 << SLOT_DEPTH
SLOT_INPUT = 0  # the input payload's blob id
SLOT_OUTPUT = 1  # keccak256(output payload): the market's output hash
SLOT_CONTROL = 2  # generate mode's loop state
SLOT_TENSOR0 = 3  # slot 3 + t: activation tensor t; then the attention KV caches
MAX_READS = 8  # slots one execution reads, at most
ZERO = bytes(32)


class StateError(ValueError):
    """A slot index out of range, a value that is not 32 bytes, a malformed record or proof."""


@functools.cache
def zero_hashes() -> tuple[bytes, ...]:
    """zero_hashes()[h]: the root of an empty subtree of height h (h = 0: an empty leaf)."""
    out = [ZERO]
    for _ in range(SLOT_DEPTH):
        out.append(keccak256(out[-1] + out[-1]))
    return tuple(out)


def blob_id(data: bytes) -> bytes:
    """The blob id of `data` (vm-spec section 6): what a tensor's slot holds."""
    return put_blob(PreimageStore(), data)


def _check(slot: int, value: bytes | None = None) -> None:
    if not 0 <= slot < NUM_SLOTS:
        raise StateError(f"slot {slot} is out of range 0..{NUM_SLOTS - 1}")
    if value is not None and len(value) != 32:
        raise StateError(f"a slot value is 32 bytes, got {len(value)}")


class SlotTree:
    """A state: a sparse Merkle tree of `NUM_SLOTS` slots (only set slots and their paths are stored)."""

    def __init__(self, values: Mapping[int, bytes] | None = None) -> None:
        self._nodes: list[dict[int, bytes]] = [{} for _ in range(SLOT_DEPTH + 1)]  # level -> index -> hash
        for slot, value in (values or {}).items():
            self.set(slot, value)

    def get(self, slot: int) -> bytes:
        _check(slot)
        return self._nodes[0].get(slot, ZERO)

    def set(self, slot: int, value: bytes) -> None:
        """Set one slot (32 zero bytes empties it) and update its path."""
        _check(slot, value)
        zeros = zero_hashes()
        node, index = bytes(value), slot
        for level in range(SLOT_DEPTH + 1):
            if node == zeros[level]:
                self._nodes[level].pop(index, None)
            else:
                self._nodes[level][index] = node
            if level == SLOT_DEPTH:
                break
            sibling = self._nodes[level].get(index ^ 1, zeros[level])
            node = keccak256(node + sibling if index % 2 == 0 else sibling + node)
            index //= 2

    def root(self) -> bytes:
        return self._nodes[SLOT_DEPTH].get(0, zero_hashes()[SLOT_DEPTH])

    def proof(self, slot: int) -> list[bytes]:
        """The `SLOT_DEPTH` siblings of `slot`'s path, leaf level first."""
        _check(slot)
        zeros = zero_hashes()
        return [self._nodes[level].get((slot >> level) ^ 1, zeros[level]) for level in range(SLOT_DEPTH)]

    def values(self) -> dict[int, bytes]:
        """Every set slot and its value."""
        return dict(self._nodes[0])

    def copy(self) -> SlotTree:
        twin = SlotTree()
        twin._nodes = [dict(level) for level in self._nodes]
        return twin


def root_from(slot: int, value: bytes, siblings: Sequence[bytes]) -> bytes:
    """The root a proof implies: `value` at `slot` with these siblings (leaf level first)."""
    _check(slot, value)
    if len(siblings) != SLOT_DEPTH or any(len(s) != 32 for s in siblings):
        raise StateError(f"a slot proof is {SLOT_DEPTH} siblings of 32 bytes")
    node = bytes(value)
    for level, sibling in enumerate(siblings):
        node = keccak256(node + sibling if (slot >> level) % 2 == 0 else sibling + node)
    return node


def initial_state(input_id: bytes) -> SlotTree:
    """S_0: only the input slot is set, to the request's input id (the market computes its root on-chain)."""
    return SlotTree({SLOT_INPUT: input_id})


@dataclass(frozen=True)
class ExecRecord:
    """Execution `exec` (1-based) writes `out_slot`: `old_value` in S_{exec-1}, `new_value` claimed in S_exec;
    it reads `reads` ((slot, value) in S_{exec-1}, ascending slots)."""

    exec: int
    out_slot: int
    old_value: bytes
    new_value: bytes
    reads: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        if not 1 <= self.exec < 1 << 64:
            raise StateError(f"execution index {self.exec} is not in 1..2^64-1")
        _check(self.out_slot, self.old_value)
        _check(self.out_slot, self.new_value)
        if len(self.reads) > MAX_READS:
            raise StateError(f"an execution reads at most {MAX_READS} slots, got {len(self.reads)}")
        slots = [s for s, _ in self.reads]
        if slots != sorted(set(slots)):
            raise StateError("the slots read must be distinct and in ascending order")
        for slot, value in self.reads:
            _check(slot, value)

    def encode(self) -> bytes:
        """u64 exec, u32 out_slot, old_value, new_value, u8 n_in, n_in x (u32 slot, value): big-endian."""
        out = [
            self.exec.to_bytes(8, "big"),
            self.out_slot.to_bytes(4, "big"),
            self.old_value,
            self.new_value,
            bytes([len(self.reads)]),
        ]
        for slot, value in self.reads:
            out += [slot.to_bytes(4, "big"), value]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> ExecRecord:
        if len(data) < 77 or (len(data) - 77) % 36:
            raise StateError(f"an execution record of {len(data)} bytes is malformed")
        n = data[76]
        if len(data) != 77 + 36 * n:
            raise StateError(f"the record says {n} reads, it holds {(len(data) - 77) // 36}")
        reads = tuple(
            (int.from_bytes(data[77 + 36 * i : 81 + 36 * i], "big"), data[81 + 36 * i : 113 + 36 * i])
            for i in range(n)
        )
        return cls(
            int.from_bytes(data[:8], "big"),
            int.from_bytes(data[8:12], "big"),
            data[12:44],
            data[44:76],
            reads,
        )

    def key(self) -> bytes:
        """The keccak preimage key of the encoded record (the node guest's local datum 4)."""
        return keccak_key(self.encode())


def keccak_key(data: bytes) -> bytes:
    """A type-2 preimage key (vm-spec section 6): 0x02 ++ keccak256(data)[1:]."""
    return b"\x02" + keccak256(data)[1:]


def record_for(
    before: SlotTree, after_value: bytes, exec: int, out_slot: int, reads: Iterable[int]
) -> ExecRecord:
    """The record of execution `exec` from the agreed state `before` and the claimed new value."""
    return ExecRecord(
        exec, out_slot, before.get(out_slot), after_value, tuple((s, before.get(s)) for s in sorted(reads))
    )
