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
    /// 3 = claimed output hash); `known = false` when the creator defines no such datum. (Local 4, a split
    /// game's execution record, comes from the game itself.)
    function gameLocalData(uint256 gameId, uint256 ident) external view returns (bool known, bytes32 value);
}

/// @title IDisputeGame
/// @notice N-ary dissection games over the steps of a VM trace, ending in one step executed on-chain; and
/// split games: a top level over the states S_0..S_N of a model's execution schedule whose leaf opens the
/// bottom level, the VM game of the node guest on the one disputed execution (docs/protocol.md).
interface IDisputeGame {
    enum Status {
        None,
        Active,
        ProposerWon,
        ChallengerWon,
        Cancelled
    }

    /// @notice Who is due: the proposer posts a dissection, the challenger picks a sub-interval, (at a
    /// one-step interval of the bottom level) the challenger executes the step (anyone may), or (at a
    /// one-execution interval of a split game's top level) the proposer opens the bottom level.
    enum Turn {
        Dissect,
        Pick,
        Step,
        Open
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
        bool split; // a split game (created by `createSplitGame`)
        bool top; // a split game still at its top level: [lo, hi] counts executions, the hashes are S_k roots
        bytes32 program; // a split game's node guest (the bottom level's agreed start)
        bytes32 recordKey; // set by `open`: the record's keccak key, the node guest's local datum 4
    }

    /// @notice An execution record (vm-spec section 9) as `open` takes it: execution `exec` (1-based) writes
    /// `outSlot`, `oldValue` in S_{exec-1}, `newValue` in S_exec, and reads `readSlots` (ascending, at most 8)
    /// whose values in S_{exec-1} are `readValues`.
    struct ExecRecord {
        uint64 exec;
        uint32 outSlot;
        bytes32 oldValue;
        bytes32 newValue;
        uint32[] readSlots;
        bytes32[] readValues;
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
    /// @notice A split game starts (after `GameCreated`, whose steps are the executions): its node guest.
    event SplitGameCreated(uint256 indexed gameId, bytes32 program);
    /// @notice The top level's leaf opened the bottom level: `record` (whose keccak key is `recordKey`) is
    /// what anyone loads into the oracle for the node guest; the bottom game is [0, bottomSteps] from the
    /// game's program to `bottomClaim`.
    event Opened(uint256 indexed gameId, uint64 exec, bytes32 recordKey, bytes record, bytes32 bottomClaim, uint64 bottomSteps);
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
    /// @notice The move names another disputed hash than the game's current one (`expected`).
    error DisputedHashMismatch(bytes32 expected, bytes32 actual);
    /// @notice `open`: the record is not of the disputed execution `hi`.
    error WrongExecution(uint64 expected, uint64 actual);
    /// @notice `open`: a slot number past the tree, or reads not ascending, too many, or of unequal lengths.
    error BadRecord();
    /// @notice `open`: the proof of `slot` does not give the root it must (S_k for the old value and the
    /// reads, S_{k+1} for the new value).
    error SlotProofMismatch(uint256 slot, bytes32 expected, bytes32 actual);
    /// @notice `open`: the bottom claim is not a VALID exit, or its step count is not in 1..MAX_EXEC_STEPS.
    error BadBottomClaim(bytes32 claim, uint64 steps);

    function createGame(address proposer, address challenger, bytes32 startHash, bytes32 claimHash, uint64 steps)
        external
        returns (uint256 gameId);

    /// @notice A split game: the top level over executions [0, executions] from the agreed root `startRoot`
    /// (S_0) to the disputed root `claimRoot` (S_N); `program` is the node guest's initial state hash.
    function createSplitGame(
        address proposer,
        address challenger,
        bytes32 program,
        bytes32 startRoot,
        bytes32 claimRoot,
        uint64 executions
    ) external returns (uint256 gameId);

    /// @notice At the top level's leaf (agreed S_{hi-1}, disputed S_hi) the proposer opens the bottom level:
    /// `r` is execution `hi`'s record, `outProof` the siblings of `r.outSlot` (the same in S_{hi-1} with the
    /// old value and in S_hi with the new one), `readProofs[i]` those of `r.readSlots[i]` in S_{hi-1};
    /// `bottomClaim` (VALID) after `bottomSteps` steps is the proposer's claim on the node guest's run.
    function open(
        uint256 gameId,
        bytes32 disputed,
        ExecRecord calldata r,
        bytes32[14] calldata outProof,
        bytes32[14][] calldata readProofs,
        bytes32 bottomClaim,
        uint64 bottomSteps
    ) external;

    /// @notice The proposer's dissection of the current interval. `disputed` must be the game's current
    /// disputed hash (`DisputedHashMismatch` otherwise): the move is bound to the dispute it answers.
    function dissect(uint256 gameId, bytes32 disputed, bytes32[] calldata hashes) external;

    /// @notice The challenger's pick of a sub-interval of the last dissection; bound to `disputed` like
    /// `dissect`.
    function pick(uint256 gameId, bytes32 disputed, bytes32[] calldata hashes, uint256 index) external;

    /// @notice The leaf step (anyone); bound to `disputed` like `dissect`.
    function step(uint256 gameId, bytes32 disputed, bytes calldata stateData, bytes calldata proof) external;

    function claimTimeout(uint256 gameId) external;

    function cancel(uint256 gameId) external;

    function getGame(uint256 gameId) external view returns (Game memory);

    function dissectionPoints(uint64 lo, uint64 hi) external view returns (uint64[] memory points);

    function arity() external view returns (uint256);

    function moveTimeout() external view returns (uint64);
}
