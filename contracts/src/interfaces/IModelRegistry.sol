// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IModelRegistry
/// @notice Permissionless, immutable registry of models runnable by the inference market.
interface IModelRegistry {
    /// @notice A registered model. `programHash` is the state hash of the guest program's initial state
    /// (vm-spec section 8); the start state of every dispute about this model.
    struct Model {
        bytes32 programHash;
        address registrant;
        uint64 registeredAt;
        string name;
        uint32[] inputShape;
        uint32[] outputShape;
        string uri;
    }

    event ModelRegistered(
        bytes32 indexed modelId,
        bytes32 indexed programHash,
        address indexed registrant,
        string name,
        uint32[] inputShape,
        uint32[] outputShape,
        string uri
    );

    error ModelAlreadyRegistered(bytes32 modelId);
    error ModelNotRegistered(bytes32 modelId);
    error InvalidModelId(bytes32 modelId);
    error InvalidProgramHash(bytes32 programHash);

    function register(
        bytes32 modelId,
        string calldata name,
        uint32[] calldata inputShape,
        uint32[] calldata outputShape,
        string calldata uri,
        bytes32 programHash
    ) external;

    function isRegistered(bytes32 modelId) external view returns (bool);

    /// @notice The program hash of a registered model; reverts with `ModelNotRegistered` otherwise.
    function programHashOf(bytes32 modelId) external view returns (bytes32);

    function getModel(bytes32 modelId) external view returns (Model memory);
}
