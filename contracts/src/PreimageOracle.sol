// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IPreimageOracle, localKey, localizeKey} from "./interfaces/IPreimageOracle.sol";

/// @title PreimageOracle
/// @notice Serves the 32-byte parts of preimage streams (`u64be(len) ++ data`) to the MIPS verifier's read
///         steps (docs/vm-spec.md sections 6 and 10).
///
///         - keccak256 preimages (key type 2): anyone loads the part at one offset by submitting the whole
///           preimage (at most 16384 bytes, hashed in the same transaction); the oracle stores that part and
///           the stream length.
///         - local data (key type 1): a dispute game writes the 32-byte values of its own context. The stored
///           key is `localizeKey(0x01 ++ ident, localContext, msg.sender)`, so the writer's address is part of
///           the key: nobody can write another game's local data, and a game that reuses a `localContext`
///           only ever reaches its own data. The MIPS verifier localizes a type-1 key with its own
///           `msg.sender`, i.e. the game that calls `step`. Local data is write-once.
///
///         Offsets: a part at `offset < streamLength` is served only if it was loaded; every offset at or past
///         the end of the stream is served, as 32 zero bytes, as soon as the stream length is known (any part
///         of the key was loaded). That makes a read at the end of a stream (`v0 = 0`, spec section 6)
///         provable while no part past the end is ever stored: loading one reverts (`PartOffsetOOB`; Cannon's
///         PreimageOracle had an off-by-one there, fixed after audit: it accepted a part at offset `size + 8`,
///         read from memory past the stream). Parts are cut from an exact copy of the stream and masked past
///         its end, so no byte outside the stream (calldata padding, dirty memory) ever enters a part.
contract PreimageOracle is IPreimageOracle {
    /// @notice The largest keccak256 preimage (spec section 6, `MAX_PREIMAGE`).
    uint256 public constant MAX_PREIMAGE = 16384;
    /// @notice The length of a local datum (every local value of a rollml run is 32 bytes).
    uint256 public constant LOCAL_DATA_SIZE = 32;

    uint256 internal constant KEY_TYPE_LOCAL = 1;
    uint256 internal constant KEY_TYPE_KECCAK = 2;

    /// @notice Stream length (`8 + size`) of each known key; 0 means unknown (a stream is never shorter than 8).
    mapping(bytes32 key => uint256) public streamLength;
    /// @notice Loaded parts of keccak256 keys, by stream offset.
    mapping(bytes32 key => mapping(uint256 offset => bytes32)) public preimageParts;
    /// @notice Whether the part of a keccak256 key at a stream offset is loaded.
    mapping(bytes32 key => mapping(uint256 offset => bool)) public preimagePartOk;
    /// @notice The value of each local (type-1, localized) key.
    mapping(bytes32 key => bytes32) public localData;

    /// @inheritdoc IPreimageOracle
    function readPreimage(bytes32 key, uint256 offset) external view returns (bytes32 dat, uint256 length) {
        length = streamLength[key];
        if (length == 0) revert PreimageNotLoaded(key, offset);
        if (offset >= length) return (bytes32(0), length); // at or past the end: all zero
        if (uint256(key) >> 248 == KEY_TYPE_LOCAL) {
            dat = streamPartOf(abi.encodePacked(uint64(LOCAL_DATA_SIZE), localData[key]), offset);
        } else {
            if (!preimagePartOk[key][offset]) revert PreimageNotLoaded(key, offset);
            dat = preimageParts[key][offset];
        }
    }

    /// @inheritdoc IPreimageOracle
    function loadKeccak256PreimagePart(uint256 partOffset, bytes calldata preimage) external returns (bytes32 key) {
        uint256 size = preimage.length;
        if (size > MAX_PREIMAGE) revert PreimageTooLarge(size);
        uint256 length = size + 8;
        if (partOffset >= length) revert PartOffsetOOB(partOffset, length);
        bytes memory s = abi.encodePacked(uint64(size), preimage); // the stream
        bytes32 h;
        assembly ("memory-safe") {
            h := keccak256(add(s, 0x28), size) // the preimage: the stream after its 8-byte length
        }
        key = bytes32((uint256(h) & ~(uint256(0xFF) << 248)) | (KEY_TYPE_KECCAK << 248));
        preimageParts[key][partOffset] = streamPartOf(s, partOffset);
        preimagePartOk[key][partOffset] = true;
        streamLength[key] = length;
    }

    /// @inheritdoc IPreimageOracle
    function loadLocalData(uint256 ident, bytes32 localContext, bytes32 word) external returns (bytes32 key) {
        if (ident >> 248 != 0) revert InvalidLocalIdent(ident);
        key = localizeKey(localKey(ident), localContext, msg.sender);
        if (streamLength[key] != 0) {
            if (localData[key] != word) revert LocalDataConflict(key);
            return key; // already set to this word
        }
        localData[key] = word;
        streamLength[key] = LOCAL_DATA_SIZE + 8;
    }

    /// @notice The 32 bytes of the stream `s` at `offset` (`offset < s.length`), zero-padded past its end.
    /// @dev Reads only inside `s` and masks the bytes past its end: never memory beyond the stream (the
    ///      dirty-memory hazard of Cannon's `loadLocalData` at an out-of-bounds offset).
    function streamPartOf(bytes memory s, uint256 offset) internal pure returns (bytes32 part) {
        uint256 valid = s.length - offset; // >= 1
        assembly ("memory-safe") {
            part := mload(add(add(s, 0x20), offset))
        }
        if (valid < 32) part &= bytes32(type(uint256).max << ((32 - valid) << 3));
    }
}
