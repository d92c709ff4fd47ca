// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title SlotTree
/// @notice The states S_k of the split game (docs/protocol.md, "Split game"; docs/model-format.md, "Execution schedule and states"):
/// a binary Merkle tree of depth 14 over 16384 slots of 32 bytes. A leaf is the slot's value itself (not
/// hashed again), an interior node keccak256(left ++ right), an unset slot 32 zero bytes. A proof of slot i is
/// its 14 siblings, leaf level first. Mirrors `mlkit/state.py` (`root_from`, `initial_state`,
/// `ExecRecord.encode`, `keccak_key`).
library SlotTree {
    uint256 internal constant DEPTH = 14;
    uint256 internal constant NUM_SLOTS = 1 << DEPTH;
    uint256 internal constant SLOT_INPUT = 0;
    uint256 internal constant SLOT_OUTPUT = 1;
    /// @notice Slots one execution reads, at most.
    uint256 internal constant MAX_READS = 8;

    /// @notice The root implied by `value` at `slot` with `siblings` (the caller checks `slot < NUM_SLOTS`).
    function rootFrom(uint256 slot, bytes32 value, bytes32[DEPTH] calldata siblings) internal pure returns (bytes32) {
        bytes32 node = value;
        for (uint256 level = 0; level < DEPTH; level++) {
            node = (slot >> level) & 1 == 0 ? _hash(node, siblings[level]) : _hash(siblings[level], node);
        }
        return node;
    }

    /// @notice The root of S_0: only SLOT_INPUT set, to the request's input id (every sibling an empty subtree).
    function initialRoot(bytes32 inputId) internal pure returns (bytes32) {
        bytes32 node = inputId;
        bytes32 zero = bytes32(0);
        for (uint256 level = 0; level < DEPTH; level++) {
            node = _hash(node, zero);
            zero = _hash(zero, zero);
        }
        return node;
    }

    /// @notice The record bytes the node guest reads as local 4 (vm-spec section 9): u64 exec, u32 outSlot,
    /// oldValue, newValue, u8 n, n x (u32 slot, value); big-endian, packed.
    function encodeRecord(
        uint64 exec,
        uint32 outSlot,
        bytes32 oldValue,
        bytes32 newValue,
        uint32[] calldata readSlots,
        bytes32[] calldata readValues
    ) internal pure returns (bytes memory record) {
        record = abi.encodePacked(exec, outSlot, oldValue, newValue, uint8(readSlots.length));
        for (uint256 i = 0; i < readSlots.length; i++) {
            record = abi.encodePacked(record, readSlots[i], readValues[i]);
        }
    }

    /// @notice A keccak preimage key (type 2): 0x02 then the low 31 bytes of keccak256(data).
    function keccakKey(bytes memory data) internal pure returns (bytes32) {
        return bytes32((uint256(keccak256(data)) & type(uint248).max) | (uint256(2) << 248));
    }

    function _hash(bytes32 a, bytes32 b) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            mstore(0x00, a)
            mstore(0x20, b)
            h := keccak256(0x00, 0x40)
        }
    }
}
