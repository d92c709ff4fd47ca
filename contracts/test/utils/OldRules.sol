// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {DisputeGame} from "../../src/DisputeGame.sol";
import {InferenceMarket} from "../../src/InferenceMarket.sol";
import {IDisputeGame} from "../../src/interfaces/IDisputeGame.sol";
import {IMIPS} from "../../src/interfaces/IMIPS.sol";
import {IModelRegistry} from "../../src/interfaces/IModelRegistry.sol";

/// @notice TEST-ONLY, DELIBERATELY BROKEN: the market with either or both of the rules before issue 12, so that
/// the attack tests can show they fail against each (Audit.t.sol, "Self-challenge censorship"). `oldClock`: a
/// discard restarts the request's clock (its deadline is `requestTimeout` after the last reopening). `oldPayout`:
/// a discard pays the whole prover bond to the winner; nothing is burned and the other challenges only get
/// their bonds back. Never deploy.
contract OldRulesMarket is InferenceMarket {
    bool public immutable oldClock;
    bool public immutable oldPayout;
    mapping(uint256 requestId => uint256) internal reopenedAt;

    constructor(
        IModelRegistry registry_,
        IDisputeGame disputeGame_,
        Params memory p,
        bytes32 execProgram_,
        bool oldClock_,
        bool oldPayout_
    ) InferenceMarket(registry_, disputeGame_, p, execProgram_) {
        oldClock = oldClock_;
        oldPayout = oldPayout_;
    }

    function _expiresAt(uint256 requestId) internal view override returns (uint256) {
        if (!oldClock || reopenedAt[requestId] == 0) return super._expiresAt(requestId);
        return reopenedAt[requestId] + requestTimeout;
    }

    function _discard(uint256 gameId, uint256 resultId, Result storage r, address winner) internal override {
        if (oldClock) reopenedAt[r.requestId] = block.timestamp;
        if (!oldPayout) return super._discard(gameId, resultId, r, winner);
        r.discarded = true; // share stays 0
        _balances[winner] += challengerBond + proverBond;
        uint256 requestId = r.requestId;
        _requests[requestId].status = RequestStatus.Open;
        emit ResultDiscarded(requestId, resultId, gameId, 0, 0);
    }
}

/// @notice TEST-ONLY, DELIBERATELY BROKEN: the dispute game before issue 12, whose moves are not bound to the
/// disputed hash they answer (the `disputed` argument is ignored), so that the reorg tests can show a replayed
/// move landing in another dispute. Never deploy.
contract OldRulesGame is DisputeGame {
    constructor(IMIPS mips_, uint256 arity_, uint64 moveTimeout_) DisputeGame(mips_, arity_, moveTimeout_) {}

    function _requireDisputed(Game storage, bytes32) internal view override {}
}
