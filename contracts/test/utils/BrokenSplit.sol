// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {DisputeGame} from "../../src/DisputeGame.sol";
import {InferenceMarket} from "../../src/InferenceMarket.sol";
import {IDisputeGame} from "../../src/interfaces/IDisputeGame.sol";
import {IMIPS} from "../../src/interfaces/IMIPS.sol";
import {IModelRegistry} from "../../src/interfaces/IModelRegistry.sol";

/// @notice TEST-ONLY, DELIBERATELY BROKEN: the split game with some of its rules left out (`broken`, a bit set
/// of the flags below), so that the attack tests of Split.t.sol show each attack landing without the rule
/// that stops it. Never deploy.
contract BrokenSplitGame is DisputeGame {
    uint256 internal constant NO_NEW_PROOF = 1; // the new value is not proved against the disputed root
    uint256 internal constant NO_EXEC_CHECK = 2; // the record's execution index is not checked against hi
    uint256 internal constant NO_READ_PROOFS = 4; // the read slots are not proved against S_k
    uint256 internal constant REOPEN = 8; // open does not require the Open turn: it checks the leaf's roots, kept
    uint256 internal constant ANY_BOTTOM_CLAIM = 16; // the bottom claim's status and steps are not checked
    uint256 internal constant STEP_AT_TOP_LEAF = 32; // the top leaf goes to Step (the challenger due) like a VM leaf

    struct Leaf {
        bytes32 agreed;
        bytes32 disputed;
        uint64 hi;
    }

    uint256 public immutable broken;
    mapping(uint256 gameId => Leaf) internal leaves;

    constructor(IMIPS mips_, uint256 arity_, uint64 moveTimeout_, uint256 broken_) DisputeGame(mips_, arity_, moveTimeout_) {
        broken = broken_;
    }

    function _topLeafTurn() internal view override returns (Turn) {
        return broken & STEP_AT_TOP_LEAF != 0 ? Turn.Step : Turn.Open;
    }

    /// @dev REOPEN: a game that keeps its leaf (roots and execution) for `open` and forgets that the bottom
    /// level already started, so `open` can be called again at the bottom level.
    function _requireOpen(uint256 gameId, Game storage g, bytes32 disputed) internal override {
        if (broken & REOPEN == 0) return super._requireOpen(gameId, g, disputed);
        Leaf storage leaf = leaves[gameId];
        if (leaf.hi == 0) {
            super._requireOpen(gameId, g, disputed);
            leaves[gameId] = Leaf(g.agreedHash, g.disputedHash, g.hi);
        }
        g.agreedHash = leaf.agreed;
        g.disputedHash = leaf.disputed;
        g.hi = leaf.hi;
    }

    function _checkExec(Game storage g, ExecRecord calldata r) internal view override {
        if (broken & NO_EXEC_CHECK == 0) super._checkExec(g, r);
    }

    function _checkUpdate(Game storage g, ExecRecord calldata r, bytes32[14] calldata proof) internal view override {
        if (broken & NO_NEW_PROOF == 0) return super._checkUpdate(g, r, proof);
        _checkSlot(r.outSlot, r.oldValue, proof, g.agreedHash);
    }

    function _checkReads(Game storage g, ExecRecord calldata r, bytes32[14][] calldata proofs) internal view override {
        if (broken & NO_READ_PROOFS == 0) super._checkReads(g, r, proofs);
    }

    function _checkBottomClaim(bytes32 claim, uint64 steps) internal view override {
        if (broken & ANY_BOTTOM_CLAIM == 0) super._checkBottomClaim(claim, steps);
    }
}

/// @notice TEST-ONLY, DELIBERATELY BROKEN: the market without the output binding of split claims. Never deploy.
contract UnboundOutputMarket is InferenceMarket {
    constructor(IModelRegistry registry_, IDisputeGame disputeGame_, Params memory p, bytes32 execProgram_)
        InferenceMarket(registry_, disputeGame_, p, execProgram_)
    {}

    function _checkOutputBound(bytes32, bytes32, bytes32[14] calldata) internal pure override {}
}
