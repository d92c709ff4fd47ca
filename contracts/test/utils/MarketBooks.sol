// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {DisputeGame} from "../../src/DisputeGame.sol";
import {InferenceMarket} from "../../src/InferenceMarket.sol";
import {IInferenceMarket} from "../../src/interfaces/IInferenceMarket.sol";

/// @notice The market's books, recomputed from its public state (docs/protocol.md section 4): what it must
/// hold. One home for every test that checks solvency (fixtures, audit, garbage and invariant tests).
library MarketBooks {
    /// @dev Escrowed fees of open and proposed requests + the bonds of pending results + the bonds of the
    /// unsettled challenges + the shares owed to those of discarded results + the withdrawable balances of
    /// `accounts` (every account that can have one) + the burned wei (held forever, owed to nobody).
    function owed(InferenceMarket market, DisputeGame game, address[] memory accounts)
        internal
        view
        returns (uint256 total)
    {
        for (uint256 id = 1; id <= market.requestCount(); id++) {
            IInferenceMarket.Request memory r = market.getRequest(id);
            if (r.status == IInferenceMarket.RequestStatus.Open) total += r.fee;
            if (r.status == IInferenceMarket.RequestStatus.Proposed) total += r.fee + market.proverBond();
        }
        for (uint256 g = 1; g <= game.gameCount(); g++) {
            IInferenceMarket.Challenge memory c = market.getChallenge(g);
            if (c.challenger != address(0) && !c.settled) total += market.challengerBond();
        }
        total += sharesOwed(market, game);
        for (uint256 i = 0; i < accounts.length; i++) {
            total += market.balanceOf(accounts[i]);
        }
        total += market.burned();
    }

    /// @dev The shares of discarded results' prover bonds still owed to their unsettled challenges.
    function sharesOwed(InferenceMarket market, DisputeGame game) internal view returns (uint256 total) {
        for (uint256 g = 1; g <= game.gameCount(); g++) {
            IInferenceMarket.Challenge memory c = market.getChallenge(g);
            if (c.challenger == address(0) || c.settled) continue;
            IInferenceMarket.Result memory r = market.getResult(c.resultId);
            if (r.discarded) total += r.share;
        }
    }
}
