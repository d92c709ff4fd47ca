// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title ModelRegistry
/// @notice Permissionless registry of models: anyone registers a model once, nobody can change it after.
/// @dev The model id is the blob id of the model file (vm-spec section 6): a keccak preimage key (top byte
/// 0x02) that commits to every byte of the file, so the id alone tells provers what to fetch and lets them
/// verify what they fetched. The program hash is the state hash of the guest's initial state (vm-spec
/// section 8): one mlkit guest ELF serves every model, so it is normally the same for all entries. Both are
/// what a dispute starts from, so neither party of a dispute chooses them.
///
/// Registrations are first come, first served and immutable (no owner, no admin). A front-runner could bind a
/// model id to a program of its own choice: consumers therefore pin the program hash they trust and check it
/// (`GanNFT` does), and nodes only serve models whose program hash is a guest they can run. The name, shapes
/// and uri are informational (the uri is where provers may fetch the blob; the blob id is what binds).
contract ModelRegistry is IModelRegistry {
    uint8 internal constant KEY_TYPE_KECCAK = 2;
    uint8 internal constant STATUS_UNFINISHED = 3;

    mapping(bytes32 modelId => Model) internal _models;

    /// @inheritdoc IModelRegistry
    function register(
        bytes32 modelId,
        string calldata name,
        uint32[] calldata inputShape,
        uint32[] calldata outputShape,
        string calldata uri,
        bytes32 programHash
    ) external {
        // A blob id is a keccak key: type byte 2.
        if (uint8(modelId[0]) != KEY_TYPE_KECCAK) revert InvalidModelId(modelId);
        // An initial state has not exited: its status byte is UNFINISHED (vm-spec section 2).
        if (uint8(programHash[0]) != STATUS_UNFINISHED) revert InvalidProgramHash(programHash);
        Model storage m = _models[modelId];
        if (m.programHash != bytes32(0)) revert ModelAlreadyRegistered(modelId);

        m.programHash = programHash;
        m.registrant = msg.sender;
        m.registeredAt = uint64(block.timestamp);
        m.name = name;
        m.inputShape = inputShape;
        m.outputShape = outputShape;
        m.uri = uri;
        emit ModelRegistered(modelId, programHash, msg.sender, name, inputShape, outputShape, uri);
    }

    /// @inheritdoc IModelRegistry
    function isRegistered(bytes32 modelId) external view returns (bool) {
        return _models[modelId].programHash != bytes32(0);
    }

    /// @inheritdoc IModelRegistry
    function programHashOf(bytes32 modelId) external view returns (bytes32 programHash) {
        programHash = _models[modelId].programHash;
        if (programHash == bytes32(0)) revert ModelNotRegistered(modelId);
    }

    /// @inheritdoc IModelRegistry
    function getModel(bytes32 modelId) external view returns (Model memory) {
        Model memory m = _models[modelId];
        if (m.programHash == bytes32(0)) revert ModelNotRegistered(modelId);
        return m;
    }
}
