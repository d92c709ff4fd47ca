"""Constants of the VM spec (docs/vm-spec.md). The C definition of the guest ABI among them is
`mipsvm/csrc/vmabi.h` (checked against this file by tests/mipsvm/test_vmabi.py); the Solidity verifier
declares the same values."""

from __future__ import annotations

from enum import IntEnum

# Memory layout (spec section 6 and 8).
HEAP_START = 0x20000000
HEAP_END = 0x60000000
BRK_FIXED = 0x60000000
STACK_TOP = 0x7FFF0000
PAGE_BITS = 12
PAGE_SIZE = 1 << PAGE_BITS
LEAF_SIZE = 32
MEM_TREE_DEPTH = 27  # levels above the 32-byte leaves; 2^27 leaves cover 2^32 bytes
MEM_PROOF_SIZE = (MEM_TREE_DEPTH + 1) * 32

# State encoding (spec section 2).
STATE_SIZE = 226


class Status(IntEnum):
    VALID = 0
    INVALID = 1
    PANIC = 2
    UNFINISHED = 3


class Fault(IntEnum):
    """Exit codes of the defined faults (spec section 7); every one has status PANIC."""

    INVALID_INSTRUCTION = 0x80
    UNALIGNED_ACCESS = 0x81
    UNALIGNED_FETCH = 0x82
    BRANCH_IN_DELAY_SLOT = 0x83
    TRAP = 0x84
    UNKNOWN_SYSCALL = 0x85
    OVERFLOW = 0x86


# Syscalls (Linux O32 numbers) and errno values (spec section 6).
SYS_EXIT = 4001
SYS_READ = 4003
SYS_WRITE = 4004
SYS_BRK = 4045
SYS_MMAP = 4090
SYS_EXIT_GROUP = 4246
EBADF = 9
ENOMEM = 12
EINVAL = 22

FD_STDIN = 0
FD_STDOUT = 1
FD_STDERR = 2
FD_OUTPUT = 3
FD_PREIMAGE_READ = 5
FD_PREIMAGE_KEY = 6

# Preimage oracle (spec section 6).
KEY_TYPE_LOCAL = 1
KEY_TYPE_KECCAK = 2
MAX_PREIMAGE = 16384
LOCAL_VALUE_SIZE = 32  # every local datum is 32 bytes
LOCAL_MODEL_ID = 1
LOCAL_INPUT_ID = 2
LOCAL_OUTPUT_HASH = 3
LOCAL_EXEC_RECORD = 4  # the node guest (split game): the keccak key of the execution record

# Blobs (spec section 6, "Blobs").
CHUNK = 16384  # a data chunk holds at most this many bytes
KEYS_PER_NODE = 512  # a level k+1 node holds up to 512 keys (16384 bytes)
MAX_MANIFEST_KEYS = 511  # the top level has at most 511 nodes, so the manifest fits 16384 bytes
