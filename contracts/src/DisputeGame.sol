// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IDisputeGame, IDisputeGameCreator} from "./interfaces/IDisputeGame.sol";
import {IMIPS} from "./interfaces/IMIPS.sol";
import {IPreimageOracle} from "./interfaces/IPreimageOracle.sol";
import {SlotTree} from "./SlotTree.sol";

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
/// Every move names the disputed hash it answers (`disputed`, as the moves of Optimism's fault dispute game
/// carry `_disputed`) and reverts with `DisputedHashMismatch` unless it is the game's current one, so a move
/// replayed by a reorg into a renumbered game, or into a later round, cannot land in a dispute it was not
/// made for.
///
/// A split game (`createSplitGame`, docs/protocol.md "Split game") plays the same dissection first over the
/// executions of a model's schedule, whose hashes are the roots of the states S_k (`SlotTree`). At its leaf
/// (agreed S_{hi-1}, disputed S_hi) the proposer `open`s: it proves that S_hi is S_{hi-1} with one slot
/// changed (the same siblings give both roots) and what execution `hi` reads in S_{hi-1}, and claims the node
/// guest, given that record as local data 4, exits VALID after `bottomSteps` steps. The game then continues
/// as a VM game over [0, bottomSteps] from the node guest's program hash (its bottom level), and its step
/// decides the whole game. One game, one pair of parties, one clock rule across the two levels.
///
/// Games are created by anyone; the creator (the `InferenceMarket`) supplies the local data of the game's
/// context and is told the outcome. The local context of game `gameId` is `bytes32(gameId)`, namespaced by
/// this contract in the oracle. This contract holds no ETH: bonds live with the creator.
contract DisputeGame is IDisputeGame {
    uint256 internal constant STATE_SIZE = 226;
    uint256 internal constant MAX_ARITY = 64;
    uint8 internal constant KEY_TYPE_LOCAL = 1;
    uint256 internal constant LOCAL_EXEC_RECORD = 4;
    uint256 internal constant STATUS_VALID = 0;
    /// @notice The bound of a bottom level (docs/model-format.md, "Execution schedule and states": no execution needs more).
    uint64 public constant MAX_EXEC_STEPS = 1 << 31;

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
        gameId = _create(proposer, challenger, startHash, claimHash, steps);
    }

    function _create(address proposer, address challenger, bytes32 startHash, bytes32 claimHash, uint64 steps)
        internal
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
    /// @dev `executions` must be at least 1, like `steps`.
    function createSplitGame(
        address proposer,
        address challenger,
        bytes32 program,
        bytes32 startRoot,
        bytes32 claimRoot,
        uint64 executions
    ) external returns (uint256 gameId) {
        gameId = _create(proposer, challenger, startRoot, claimRoot, executions);
        Game storage g = _games[gameId];
        g.split = true;
        g.top = true;
        g.program = program;
        if (executions == 1) g.turn = _topLeafTurn();
        emit SplitGameCreated(gameId, program);
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
    /// @param disputed the game's disputed hash the dissection answers (`getGame(gameId).disputedHash`)
    /// @param hashes the proposer's state hashes at `dissectionPoints(lo, hi)[1 .. k-1]`, in order
    function dissect(uint256 gameId, bytes32 disputed, bytes32[] calldata hashes) external {
        Game storage g = _games[gameId];
        _requireMove(gameId, g, Turn.Dissect, disputed);
        if (msg.sender != g.proposer) revert NotProposer(msg.sender);
        uint256 k = _segments(g.lo, g.hi);
        if (hashes.length != k - 1) revert WrongHashCount(k - 1, hashes.length);

        g.dissection = keccak256(abi.encodePacked(hashes));
        g.turn = Turn.Pick;
        g.deadline = uint64(block.timestamp) + moveTimeout;
        emit Dissected(gameId, g.lo, g.hi, hashes);
    }

    /// @inheritdoc IDisputeGame
    /// @param disputed the game's disputed hash (unchanged by the dissection the pick answers)
    /// @param hashes the hashes of the last `dissect`, resubmitted (checked against the stored keccak)
    /// @param index the sub-interval [p_index, p_index+1] chosen: the challenger agrees with the hash at
    /// p_index and disagrees with the one at p_index+1 (index 0 starts at the agreed `lo`, index k-1 ends at
    /// the disputed `hi`)
    function pick(uint256 gameId, bytes32 disputed, bytes32[] calldata hashes, uint256 index) external {
        Game storage g = _games[gameId];
        _requireMove(gameId, g, Turn.Pick, disputed);
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
        g.turn = newHi - newLo == 1 ? (g.top ? _topLeafTurn() : Turn.Step) : Turn.Dissect;
        g.deadline = uint64(block.timestamp) + moveTimeout;
        emit Picked(gameId, index, newLo, newHi);
    }

    /// @inheritdoc IDisputeGame
    /// @dev The proposer only, before its deadline. The record fields are checked against the two roots
    /// (`_checkUpdate`, `_checkReads`) and the interval (`_checkExec`); the node guest checks the rest (that
    /// the slots are those of the schedule's entry `exec`, and the new value). The record bytes go to the
    /// event: anyone loads them into the oracle as a keccak preimage before the bottom level's steps read it.
    function open(
        uint256 gameId,
        bytes32 disputed,
        ExecRecord calldata r,
        bytes32[14] calldata outProof,
        bytes32[14][] calldata readProofs,
        bytes32 bottomClaim,
        uint64 bottomSteps
    ) external {
        Game storage g = _games[gameId];
        _requireOpen(gameId, g, disputed);
        if (msg.sender != g.proposer) revert NotProposer(msg.sender);
        _checkExec(g, r);
        _checkUpdate(g, r, outProof);
        _checkReads(g, r, readProofs);
        _checkBottomClaim(bottomClaim, bottomSteps);

        bytes memory record = SlotTree.encodeRecord(r.exec, r.outSlot, r.oldValue, r.newValue, r.readSlots, r.readValues);
        bytes32 key = SlotTree.keccakKey(record);
        g.recordKey = key;
        g.top = false;
        g.lo = 0;
        g.hi = bottomSteps;
        g.agreedHash = g.program;
        g.disputedHash = bottomClaim;
        g.turn = bottomSteps == 1 ? Turn.Step : Turn.Dissect;
        g.deadline = uint64(block.timestamp) + moveTimeout;
        emit Opened(gameId, r.exec, key, record, bottomClaim, bottomSteps);
    }

    /// @inheritdoc IDisputeGame
    /// @dev Anyone may execute the leaf step, at any time while the game is active (also past the deadline
    /// as long as nobody claimed the timeout: the step is the ground truth). If the pre-state has a local
    /// preimage key selected, its local datum is written to the oracle for this game's context first.
    /// Keccak preimage parts must be loaded into the oracle beforehand (by anyone); until then the
    /// verifier reverts and the deadline keeps running against the challenger.
    /// @param disputed the game's disputed hash: the proposer's hash at `hi` the step is compared with
    /// @param stateData the 226-byte pre-state at `lo`, whose state hash (the verifier's `stateHash`) must be
    /// `agreedHash`
    /// @param proof the one-step proof (vm-spec section 10)
    function step(uint256 gameId, bytes32 disputed, bytes calldata stateData, bytes calldata proof) external {
        Game storage g = _games[gameId];
        if (g.status != Status.Active) revert GameNotActive(gameId);
        if (g.turn != Turn.Step) revert WrongTurn(Turn.Step, g.turn);
        _requireDisputed(g, disputed);
        if (stateData.length != STATE_SIZE) revert BadStateLength(stateData.length);
        bytes32 preHash = mips.stateHash(stateData);
        if (preHash != g.agreedHash) revert PreStateMismatch(g.agreedHash, preHash);

        bytes32 key = bytes32(stateData[32:64]);
        if (uint8(key[0]) == KEY_TYPE_LOCAL) _loadLocalData(gameId, g, uint256(key) & type(uint248).max);

        bytes32 postHash = mips.step(stateData, proof, bytes32(gameId));
        emit Stepped(gameId, g.lo, postHash, msg.sender);
        _resolve(gameId, g, postHash == g.disputedHash, false);
    }

    /// @inheritdoc IDisputeGame
    /// @dev Anyone may call once the deadline passed: the party due to move loses (the proposer at
    /// `Dissect` and `Open`, the challenger at `Pick` and at `Step`).
    function claimTimeout(uint256 gameId) external {
        Game storage g = _games[gameId];
        if (g.status != Status.Active) revert GameNotActive(gameId);
        if (block.timestamp <= g.deadline) revert DeadlineNotPassed(g.deadline);
        _resolve(gameId, g, g.turn != Turn.Dissect && g.turn != Turn.Open, true);
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

    // ------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------

    function _requireMove(uint256 gameId, Game storage g, Turn turn, bytes32 disputed) internal view {
        if (g.status != Status.Active) revert GameNotActive(gameId);
        if (g.turn != turn) revert WrongTurn(turn, g.turn);
        if (block.timestamp > g.deadline) revert DeadlinePassed(g.deadline);
        _requireDisputed(g, disputed);
    }

    // The split game's rules (mirrored by rollml/core/split.py, function for function). Virtual only so that
    // the tests can show each attack landing on a game without the rule (contracts/test/utils/BrokenSplit.sol);
    // nothing here overrides them.

    /// @dev The leaf of a split game's top level: the proposer must open the bottom level.
    function _topLeafTurn() internal view virtual returns (Turn) {
        return Turn.Open;
    }

    /// @dev `open` is a move of the proposer at the top level's leaf, bound to the disputed root S_hi.
    function _requireOpen(uint256 gameId, Game storage g, bytes32 disputed) internal virtual {
        _requireMove(gameId, g, Turn.Open, disputed);
    }

    /// @dev The record is of the disputed execution: `exec == hi` (1-based: it turns S_{hi-1} into S_hi).
    function _checkExec(Game storage g, ExecRecord calldata r) internal view virtual {
        if (r.exec != g.hi) revert WrongExecution(g.hi, r.exec);
    }

    /// @dev S_hi is S_{hi-1} with `outSlot` changed from `oldValue` to `newValue`: one set of siblings gives
    /// the agreed root with the old value and the disputed root with the new one.
    function _checkUpdate(Game storage g, ExecRecord calldata r, bytes32[14] calldata proof) internal view virtual {
        if (r.outSlot >= SlotTree.NUM_SLOTS) revert BadRecord();
        _checkSlot(r.outSlot, r.oldValue, proof, g.agreedHash);
        _checkSlot(r.outSlot, r.newValue, proof, g.disputedHash);
    }

    /// @dev Each read slot holds its value in S_{hi-1}; the slots ascend (so each is read once), at most 8.
    function _checkReads(Game storage g, ExecRecord calldata r, bytes32[14][] calldata proofs) internal view virtual {
        uint256 n = r.readSlots.length;
        if (n > SlotTree.MAX_READS || r.readValues.length != n || proofs.length != n) revert BadRecord();
        for (uint256 i = 0; i < n; i++) {
            uint256 slot = r.readSlots[i];
            if (slot >= SlotTree.NUM_SLOTS || (i > 0 && slot <= r.readSlots[i - 1])) revert BadRecord();
            _checkSlot(slot, r.readValues[i], proofs[i], g.agreedHash);
        }
    }

    /// @dev The proposer claims the node guest accepts the record: a VALID exit within the bound.
    function _checkBottomClaim(bytes32 claim, uint64 steps) internal view virtual {
        if (uint8(claim[0]) != STATUS_VALID || steps == 0 || steps > MAX_EXEC_STEPS) {
            revert BadBottomClaim(claim, steps);
        }
    }

    function _checkSlot(uint256 slot, bytes32 value, bytes32[14] calldata proof, bytes32 root) internal pure {
        bytes32 got = SlotTree.rootFrom(slot, value, proof);
        if (got != root) revert SlotProofMismatch(slot, root, got);
    }

    /// @dev A move answers the game's current disputed hash, or it reverts. Virtual only so that the tests can
    /// replay moves against the old, unbound rule (contracts/test/utils/OldRules.sol); nothing here
    /// overrides it.
    function _requireDisputed(Game storage g, bytes32 disputed) internal view virtual {
        if (disputed != g.disputedHash) revert DisputedHashMismatch(g.disputedHash, disputed);
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

    /// @dev Local 4 of a split game is its record's key (set by `open`); the rest comes from the creator.
    function _loadLocalData(uint256 gameId, Game storage g, uint256 ident) internal {
        if (g.split && ident == LOCAL_EXEC_RECORD) {
            oracle.loadLocalData(ident, bytes32(gameId), g.recordKey);
            return;
        }
        (bool known, bytes32 value) = IDisputeGameCreator(g.creator).gameLocalData(gameId, ident);
        if (known) oracle.loadLocalData(ident, bytes32(gameId), value);
    }

    /// @dev Effects before the interaction: the game is over before the creator hears of it.
    function _resolve(uint256 gameId, Game storage g, bool proposerWon, bool byTimeout) internal {
        g.status = proposerWon ? Status.ProposerWon : Status.ChallengerWon;
        emit GameResolved(gameId, proposerWon, byTimeout);
        IDisputeGameCreator(g.creator).onGameResolved(gameId, proposerWon);
    }
}
