// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IPreimageOracle
/// @notice The on-chain preimage oracle of the rollml VM (docs/vm-spec.md section 6).
/// @dev A key's data *stream* is `u64be(len(data)) ++ data`. The oracle serves 32-byte *parts* of streams:
///      `readPreimage(key, offset)` returns the 32 stream bytes from `offset` (zero-padded past the end)
///      and the stream length (`8 + len(data)`), exactly the `(part, streamLength)` pair of the one-step
///      witness (spec section 10, `mipsvm.preimage.stream_part`).
///
///      Key types (top byte): 1 local (written only by a dispute game for its own context, localized with
///      `localizeKey`), 2 keccak256 (`0x02 ++ low 31 bytes of keccak256(data)`).
interface IPreimageOracle {
    /// @notice The oracle does not hold the part of `key`'s stream at `offset` (nor its length).
    error PreimageNotLoaded(bytes32 key, uint256 offset);
    /// @notice A part offset at or past the end of the stream (`streamLength = 8 + size`). Parts there are
    ///         all zero and served from the length alone, so they are never stored.
    error PartOffsetOOB(uint256 partOffset, uint256 streamLength);
    /// @notice A keccak256 preimage larger than `MAX_PREIMAGE` (16384) bytes.
    error PreimageTooLarge(uint256 size);
    /// @notice A local index that does not fit the 31 bytes of a type-1 key.
    error InvalidLocalIdent(uint256 ident);
    /// @notice The local datum of `key` is already set to a different word (local data is write-once).
    error LocalDataConflict(bytes32 key);

    /// @notice The 32 bytes of `key`'s stream starting at `offset` (zero-padded past the end of the
    ///         stream) and the stream length `8 + len(data)`.
    /// @dev Reverts with `PreimageNotLoaded` unless the part is loaded, or `offset >= streamLength` and the
    ///      length of the key is known (then `dat` is zero: the part at or past the end of the stream).
    function readPreimage(bytes32 key, uint256 offset) external view returns (bytes32 dat, uint256 streamLength);

    /// @notice Loads the part at `partOffset` of the stream of `preimage` under its keccak256 key
    ///         (`0x02 ++ low 31 bytes of keccak256(preimage)`). Anyone may call it.
    /// @param partOffset the stream offset of the part; must be `< 8 + preimage.length`.
    /// @param preimage the whole preimage, at most 16384 bytes (hashed in this transaction).
    /// @return key the keccak256 key the part was stored under.
    function loadKeccak256PreimagePart(uint256 partOffset, bytes calldata preimage) external returns (bytes32 key);

    /// @notice Sets the 32-byte local datum `ident` of the caller's context `localContext`.
    /// @dev The datum is stored under `localizeKey(localKey(ident), localContext, msg.sender)`: the writer's
    ///      address is part of the key, so only the caller (the dispute game) controls its own contexts and
    ///      nobody can write another game's local data. Write-once: rewriting the same word is a no-op,
    ///      a different word reverts with `LocalDataConflict`.
    /// @return key the localized key the datum was stored under.
    function loadLocalData(uint256 ident, bytes32 localContext, bytes32 word) external returns (bytes32 key);

    /// @notice The stream length (`8 + size`) of `key`, or 0 when the oracle knows nothing of it.
    function streamLength(bytes32 key) external view returns (uint256);
}

/// @notice The type-1 key of local datum `ident`, as the guest selects it: `0x01 ++ ident` (31 bytes).
function localKey(uint256 ident) pure returns (bytes32) {
    return bytes32((uint256(1) << 248) | ident);
}

/// @notice The oracle key of the type-1 key `key` in the context `localContext` of the contract `writer`:
///         `0x01 ++ low 31 bytes of keccak256(abi.encode(key, localContext, writer))`.
/// @dev The MIPS verifier localizes with `writer = msg.sender` (the dispute game that calls `step`), the
///      oracle's `loadLocalData` with its own `msg.sender` (the game that writes), so both name the same key.
function localizeKey(bytes32 key, bytes32 localContext, address writer) pure returns (bytes32) {
    uint256 h = uint256(keccak256(abi.encode(key, localContext, writer)));
    return bytes32((h & ~(uint256(0xFF) << 248)) | (uint256(1) << 248));
}
