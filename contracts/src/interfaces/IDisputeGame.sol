// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IDisputeGameCreator
/// @notice Implemented by whoever creates games in a `DisputeGame` (the `InferenceMarket`): the game asks it
/// for the local data of the game's context and tells it the outcome.
interface IDisputeGameCreator {
    /// @notice Called once when game `gameId` ends with a winner (never for a cancelled game). Must not
    /// revert: a revert makes the resolving move revert, and the game can only end by that move.
    function onGameResolved(uint256 gameId, bool proposerWon) external;

    /// @notice The local datum `ident` of the game's context (vm-spec section 6: 1 = model id, 2 = input id,
    /// 3 = claimed output hash); `known = false` when the creator defines no such datum.
    function gameLocalData(uint256 gameId, uint256 ident) external view returns (bool known, bytes32 value);
}

/// @title IDisputeGame
/// @notice N-ary dissection games over the steps of a VM trace, ending in one step executed on-chain.
interface IDisputeGame {
    enum Status {
        None,
        Active,
        ProposerWon,
        ChallengerWon,
        Cancelled
    }

    /// @notice Who is due: the proposer posts a dissection, the challenger picks a sub-interval, or (at a
    /// one-step interval) the challenger executes the step (anyone may).
    enum Turn {
        Dissect,
        Pick,
        Step
    }

    /// @notice The state of a game: `agreedHash` is the state hash at step `lo` that both sides agree on,
    /// `disputedHash` the proposer's state hash at step `hi` that the challenger disputes.
    struct Game {
        uint64 lo;
        uint64 hi;
        uint64 deadline;
        Status status;
        Turn turn;
        address creator;
        address proposer;
        address challenger;
        bytes32 agreedHash;
        bytes32 disputedHash;
        bytes32 dissection; // keccak256 of the posted hashes, valid while turn == Pick
    }

    event GameCreated(
        uint256 indexed gameId,
        address indexed creator,
        address proposer,
        address challenger,
        bytes32 startHash,
        bytes32 claimHash,
        uint64 steps
    );
    /// @notice The proposer's state hashes at the interior points of [lo, hi] (see `dissectionPoints`).
    event Dissected(uint256 indexed gameId, uint64 lo, uint64 hi, bytes32[] hashes);
    event Picked(uint256 indexed gameId, uint256 index, uint64 lo, uint64 hi);
    event Stepped(uint256 indexed gameId, uint64 lo, bytes32 postStateHash, address by);
    event GameResolved(uint256 indexed gameId, bool proposerWon, bool byTimeout);
    event GameCancelled(uint256 indexed gameId);

    error InvalidArity(uint256 arity);
    error InvalidSteps(uint64 steps);
    error InvalidParty();
    error GameNotActive(uint256 gameId);
    error WrongTurn(Turn expected, Turn actual);
    error NotProposer(address caller);
    error NotChallenger(address caller);
    error NotCreator(address caller);
    error DeadlinePassed(uint64 deadline);
    error DeadlineNotPassed(uint64 deadline);
    error WrongHashCount(uint256 expected, uint256 actual);
    error DissectionMismatch();
    error IndexOutOfRange(uint256 index, uint256 segments);
    error BadStateLength(uint256 length);
    error PreStateMismatch(bytes32 expected, bytes32 actual);

    function createGame(address proposer, address challenger, bytes32 startHash, bytes32 claimHash, uint64 steps)
        external
        returns (uint256 gameId);

    function dissect(uint256 gameId, bytes32[] calldata hashes) external;

    function pick(uint256 gameId, bytes32[] calldata hashes, uint256 index) external;

    function step(uint256 gameId, bytes calldata stateData, bytes calldata proof) external;

    function claimTimeout(uint256 gameId) external;

    function cancel(uint256 gameId) external;

    function getGame(uint256 gameId) external view returns (Game memory);

    function dissectionPoints(uint64 lo, uint64 hi) external view returns (uint64[] memory points);

    function arity() external view returns (uint256);

    function moveTimeout() external view returns (uint64);
}
