// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IPreimageOracle} from "./IPreimageOracle.sol";

/// @title IMIPS
/// @notice The one-step verifier of the rollml MIPS32 VM (docs/vm-spec.md): executes one instruction of a
///         226-byte pre-state against its memory proofs and returns the post-state hash.
interface IMIPS {
    /// @notice The encoded state is not 226 bytes.
    error InvalidStateLength(uint256 length);
    /// @notice The state's `exited` byte is neither 0 nor 1.
    error InvalidExitedFlag(uint256 exited);
    /// @notice The state's register r0 is not zero.
    error NonZeroR0(uint256 r0);
    /// @notice The proof is not 2 x 896 bytes.
    error InvalidProofLength(uint256 length);
    /// @notice A memory proof (of the leaf holding `addr`) does not match the state's memory root.
    error InvalidMemoryProof(uint256 addr);
    /// @notice The step accessed `addr`, outside the two proven leaves.
    error AccessOutsideProvenLeaves(uint256 addr);

    /// @notice Executes one step (spec sections 4-7) and returns the post-state hash (spec section 2).
    /// @dev Reverts only for a malformed witness: a malformed state, a memory proof that does not match, or a
    ///      preimage part that the oracle does not hold (`IPreimageOracle.PreimageNotLoaded`). Guest errors are
    ///      faults: a defined post-state with status PANIC.
    /// @param stateData the 226-byte encoded pre-state (spec section 2).
    /// @param proof memProof(pc) ++ memProof(data address), 2 x 896 bytes (spec sections 3, 10).
    /// @param localContext the caller's context for local preimage keys (type 1); the keys are localized with
    ///        `localizeKey(key, localContext, msg.sender)`.
    /// @return postStateHash the hash of the post-state, its top byte replaced by the status.
    function step(bytes calldata stateData, bytes calldata proof, bytes32 localContext)
        external
        view
        returns (bytes32 postStateHash);

    /// @notice The state hash of an encoded state: keccak256 with the top byte replaced by the status.
    /// @dev Reverts like `step` for a malformed state encoding.
    function stateHash(bytes calldata stateData) external pure returns (bytes32);

    /// @notice The preimage oracle the verifier reads stream parts from.
    function oracle() external view returns (IPreimageOracle);
}
