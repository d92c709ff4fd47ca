// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IDisputeGame, IDisputeGameCreator} from "./interfaces/IDisputeGame.sol";
import {IMIPS} from "./interfaces/IMIPS.sol";
import {IPreimageOracle} from "./interfaces/IPreimageOracle.sol";

/// @title DisputeGame
/// @notice One singleton holding every dispute: an N-ary dissection over the steps of a VM trace, down to one
/// step that `MIPS.step` executes on-chain (docs/protocol.md, "Dispute game").
/// @dev A game disputes the claim "the state after `steps` steps from `startHash` has hash `claimHash`".
/// The interval [lo, hi] always has an agreed hash at `lo` and the proposer's disputed hash at `hi`. Each
/// round the proposer posts its hashes at the k-1 interior points of `dissectionPoints(lo, hi)` (only their
/// keccak is stored), then the challenger resubmits them and picks the first sub-interval whose end it
/// disagrees with. At `hi - lo == 1` the step settles the game: the post-state hash of the agreed pre-state
/// either equals the proposer's hash at `hi` (proposer wins) or not (challenger wins).
///
/// Games are created by anyone; the creator (the `InferenceMarket`) supplies the local data of the game's
/// context and is told the outcome. The local context of game `gameId` is `bytes32(gameId)`, namespaced by
/// this contract in the oracle. This contract holds no ETH: bonds live with the creator.
contract DisputeGame is IDisputeGame {
    uint256 internal constant STATE_SIZE = 226;
    uint256 internal constant MAX_ARITY = 64;
    uint8 internal constant KEY_TYPE_LOCAL = 1;
    uint256 internal constant STATUS_VALID = 0;
    uint256 internal constant STATUS_INVALID = 1;
    uint256 internal constant STATUS_PANIC = 2;
    uint256 internal constant STATUS_UNFINISHED = 3;

    /// @notice The one-step verifier.
    IMIPS public immutable mips;
    /// @notice The preimage oracle the verifier reads (local data is written here for a game's context).
    IPreimageOracle public immutable oracle;
    /// @inheritdoc IDisputeGame
    uint256 public immutable arity;
    /// @inheritdoc IDisputeGame
    uint64 public immutable moveTimeout;

    /// @notice Number of games created; ids are 1..gameCount.
    uint256 public gameCount;

    mapping(uint256 gameId => Game) internal _games;

    /// @param mips_ the one-step verifier (the oracle is the one it reads: `mips_.oracle()`)
    /// @param arity_ K, the number of sub-intervals per round (2..64)
    /// @param moveTimeout_ seconds each party has for each move
    constructor(IMIPS mips_, uint256 arity_, uint64 moveTimeout_) {
        if (arity_ < 2 || arity_ > MAX_ARITY) revert InvalidArity(arity_);
        mips = mips_;
        oracle = mips_.oracle();
        arity = arity_;
        moveTimeout = moveTimeout_;
    }

    // ------------------------------------------------------------------------------------------------
    // Creation and cancellation (by the creator)
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IDisputeGame
    /// @dev `steps` must be at least 1: the claim at step 0 would be `startHash` itself (nothing to dispute;
    /// the market rejects such claims anyway since a start state is never VALID).
    function createGame(address proposer, address challenger, bytes32 startHash, bytes32 claimHash, uint64 steps)
        external
        returns (uint256 gameId)
    {
        if (steps == 0) revert InvalidSteps(steps);
        if (proposer == address(0) || challenger == address(0) || proposer == challenger) revert InvalidParty();
        gameId = ++gameCount;
        Game storage g = _games[gameId];
        g.hi = steps;
        g.deadline = uint64(block.timestamp) + moveTimeout;
        g.status = Status.Active;
        g.turn = steps == 1 ? Turn.Step : Turn.Dissect;
        g.creator = msg.sender;
        g.proposer = proposer;
        g.challenger = challenger;
        g.agreedHash = startHash;
        g.disputedHash = claimHash;
        emit GameCreated(gameId, msg.sender, proposer, challenger, startHash, claimHash, steps);
    }

    /// @inheritdoc IDisputeGame
    /// @dev Used by the market when the result a game disputes was already discarded by another game.
    function cancel(uint256 gameId) external {
        Game storage g = _games[gameId];
        if (g.status != Status.Active) revert GameNotActive(gameId);
        if (msg.sender != g.creator) revert NotCreator(msg.sender);
        g.status = Status.Cancelled;
        emit GameCancelled(gameId);
    }

    // ------------------------------------------------------------------------------------------------
    // Moves
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IDisputeGame
    /// @param hashes the proposer's state hashes at `dissectionPoints(lo, hi)[1 .. k-1]`, in order
    function dissect(uint256 gameId, bytes32[] calldata hashes) external {
        Game storage g = _games[gameId];
        _requireMove(gameId, g, Turn.Dissect);
        if (msg.sender != g.proposer) revert NotProposer(msg.sender);
        uint256 k = _segments(g.lo, g.hi);
        if (hashes.length != k - 1) revert WrongHashCount(k - 1, hashes.length);

        g.dissection = keccak256(abi.encodePacked(hashes));
        g.turn = Turn.Pick;
        g.deadline = uint64(block.timestamp) + moveTimeout;
        emit Dissected(gameId, g.lo, g.hi, hashes);
    }

    /// @inheritdoc IDisputeGame
    /// @param hashes the hashes of the last `dissect`, resubmitted (checked against the stored keccak)
    /// @param index the sub-interval [p_index, p_index+1] chosen: the challenger agrees with the hash at
    /// p_index and disagrees with the one at p_index+1 (index 0 starts at the agreed `lo`, index k-1 ends at
    /// the disputed `hi`)
    function pick(uint256 gameId, bytes32[] calldata hashes, uint256 index) external {
        Game storage g = _games[gameId];
        _requireMove(gameId, g, Turn.Pick);
        if (msg.sender != g.challenger) revert NotChallenger(msg.sender);
        if (keccak256(abi.encodePacked(hashes)) != g.dissection) revert DissectionMismatch();
        uint64 lo = g.lo;
        uint64 hi = g.hi;
        uint256 k = hashes.length + 1; // == _segments(lo, hi): the commitment fixed the count
        if (index >= k) revert IndexOutOfRange(index, k);

        uint64 newLo = _point(lo, hi, k, index);
        uint64 newHi = _point(lo, hi, k, index + 1);
        if (index > 0) g.agreedHash = hashes[index - 1];
        if (index < k - 1) g.disputedHash = hashes[index];
        g.lo = newLo;
        g.hi = newHi;
        g.turn = newHi - newLo == 1 ? Turn.Step : Turn.Dissect;
        g.deadline = uint64(block.timestamp) + moveTimeout;
        emit Picked(gameId, index, newLo, newHi);
    }

    /// @inheritdoc IDisputeGame
    /// @dev Anyone may execute the leaf step, at any time while the game is active (also past the deadline
    /// as long as nobody claimed the timeout: the step is the ground truth). If the pre-state has a local
    /// preimage key selected, its local datum is written to the oracle for this game's context first.
    /// Keccak preimage parts must be loaded into the oracle beforehand (by anyone); until then the
    /// verifier reverts and the deadline keeps running against the challenger.
    /// @param stateData the 226-byte pre-state at `lo`, whose state hash must be `agreedHash`
    /// @param proof the one-step proof (vm-spec section 10)
    function step(uint256 gameId, bytes calldata stateData, bytes calldata proof) external {
        Game storage g = _games[gameId];
        if (g.status != Status.Active) revert GameNotActive(gameId);
        if (g.turn != Turn.Step) revert WrongTurn(Turn.Step, g.turn);
        if (stateData.length != STATE_SIZE) revert BadStateLength(stateData.length);
        bytes32 preHash = stateHash(stateData);
        if (preHash != g.agreedHash) revert PreStateMismatch(g.agreedHash, preHash);

        bytes32 key = bytes32(stateData[32:64]);
        if (uint8(key[0]) == KEY_TYPE_LOCAL) _loadLocalData(gameId, g.creator, uint256(key) & type(uint248).max);

        bytes32 postHash = mips.step(stateData, proof, bytes32(gameId));
        emit Stepped(gameId, g.lo, postHash, msg.sender);
        _resolve(gameId, g, postHash == g.disputedHash, false);
    }

    /// @inheritdoc IDisputeGame
    /// @dev Anyone may call once the deadline passed: the party due to move loses (the proposer at
    /// `Dissect`, the challenger at `Pick` and at `Step`).
    function claimTimeout(uint256 gameId) external {
        Game storage g = _games[gameId];
        if (g.status != Status.Active) revert GameNotActive(gameId);
        if (block.timestamp <= g.deadline) revert DeadlineNotPassed(g.deadline);
        _resolve(gameId, g, g.turn != Turn.Dissect, true);
    }

    // ------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IDisputeGame
    function getGame(uint256 gameId) external view returns (Game memory) {
        return _games[gameId];
    }

    /// @inheritdoc IDisputeGame
    /// @notice The k+1 points lo = p_0 < p_1 < ... < p_k = hi of one round, k = min(arity, hi - lo),
    /// p_i = lo + floor((hi - lo) * i / k). A dissection posts the hashes at p_1 .. p_{k-1}.
    function dissectionPoints(uint64 lo, uint64 hi) external view returns (uint64[] memory points) {
        if (hi <= lo) return points;
        uint256 k = _segments(lo, hi);
        points = new uint64[](k + 1);
        for (uint256 i = 0; i <= k; i++) {
            points[i] = _point(lo, hi, k, i);
        }
    }

    /// @notice The state hash of a 226-byte state (vm-spec section 2): keccak256 with the top byte replaced
    /// by the status (0 VALID, 1 INVALID, 2 PANIC, 3 UNFINISHED).
    function stateHash(bytes calldata stateData) public pure returns (bytes32) {
        uint256 h = uint256(keccak256(stateData));
        uint8 exitCode = uint8(stateData[88]);
        uint8 exited = uint8(stateData[89]);
        uint256 status;
        if (exited == 0) status = STATUS_UNFINISHED;
        else if (exitCode == 0) status = STATUS_VALID;
        else if (exitCode == 1) status = STATUS_INVALID;
        else status = STATUS_PANIC;
        return bytes32((h & type(uint248).max) | (status << 248));
    }

    // ------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------

    function _requireMove(uint256 gameId, Game storage g, Turn turn) internal view {
        if (g.status != Status.Active) revert GameNotActive(gameId);
        if (g.turn != turn) revert WrongTurn(turn, g.turn);
        if (block.timestamp > g.deadline) revert DeadlinePassed(g.deadline);
    }

    /// @dev Number of sub-intervals of a round over [lo, hi] (hi > lo): min(arity, hi - lo), so all points are
    /// distinct.
    function _segments(uint64 lo, uint64 hi) internal view returns (uint256) {
        uint256 n = hi - lo;
        return n < arity ? n : arity;
    }

    function _point(uint64 lo, uint64 hi, uint256 k, uint256 i) internal pure returns (uint64) {
        return lo + uint64((uint256(hi - lo) * i) / k);
    }

    function _loadLocalData(uint256 gameId, address creator, uint256 ident) internal {
        (bool known, bytes32 value) = IDisputeGameCreator(creator).gameLocalData(gameId, ident);
        if (known) oracle.loadLocalData(ident, bytes32(gameId), value);
    }

    /// @dev Effects before the interaction: the game is over before the creator hears of it.
    function _resolve(uint256 gameId, Game storage g, bool proposerWon, bool byTimeout) internal {
        g.status = proposerWon ? Status.ProposerWon : Status.ChallengerWon;
        emit GameResolved(gameId, proposerWon, byTimeout);
        IDisputeGameCreator(g.creator).onGameResolved(gameId, proposerWon);
    }
}
