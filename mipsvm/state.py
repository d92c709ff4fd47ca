"""The VM state: its fields, its 226-byte encoding and its hash (spec section 2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from mipsvm.constants import STATE_SIZE, Status
from mipsvm.hashing import keccak256

_LAYOUT = struct.Struct(">32s32sIIIIIIBBQ32I")
assert _LAYOUT.size == STATE_SIZE


class StateError(ValueError):
    """A state encoding that the spec calls malformed."""


@dataclass
class State:
    mem_root: bytes = bytes(32)
    preimage_key: bytes = bytes(32)
    preimage_offset: int = 0
    pc: int = 0
    next_pc: int = 4
    lo: int = 0
    hi: int = 0
    heap: int = 0
    exit_code: int = 0
    exited: bool = False
    step: int = 0
    regs: list[int] = field(default_factory=lambda: [0] * 32)

    def encode(self) -> bytes:
        return _LAYOUT.pack(
            self.mem_root,
            self.preimage_key,
            self.preimage_offset,
            self.pc,
            self.next_pc,
            self.lo,
            self.hi,
            self.heap,
            self.exit_code,
            int(self.exited),
            self.step,
            *self.regs,
        )

    @classmethod
    def decode(cls, data: bytes) -> State:
        if len(data) != STATE_SIZE:
            raise StateError(f"a state is {STATE_SIZE} bytes, got {len(data)}")
        f = _LAYOUT.unpack(data)
        if f[9] > 1:
            raise StateError(f"exited must be 0 or 1, got {f[9]}")
        if f[11] != 0:
            raise StateError("register r0 must be 0")
        return cls(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], bool(f[9]), f[10], list(f[11:]))

    def copy(self) -> State:
        return State(**{**self.__dict__, "regs": list(self.regs)})

    @property
    def status(self) -> Status:
        return status_of(self.exited, self.exit_code)

    def hash(self) -> bytes:
        return state_hash(self.encode())


def status_of(exited: bool, exit_code: int) -> Status:
    if not exited:
        return Status.UNFINISHED
    if exit_code == 0:
        return Status.VALID
    if exit_code == 1:
        return Status.INVALID
    return Status.PANIC


def state_hash(encoded: bytes) -> bytes:
    """keccak256 of the encoded state with the top byte replaced by the status."""
    state = State.decode(encoded)
    return bytes([state.status]) + keccak256(encoded)[1:]
