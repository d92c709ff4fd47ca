// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {FakeTrace} from "./utils/FakeVM.sol";
import {MarketFixture, RecordingConsumer} from "./utils/MarketFixture.sol";
import {MIPSTestBase, VMState, Mem, MemLib} from "./MIPS.t.sol";
import {DisputeGame} from "../src/DisputeGame.sol";
import {InferenceMarket} from "../src/InferenceMarket.sol";
import {IDisputeGame, IDisputeGameCreator} from "../src/interfaces/IDisputeGame.sol";
import {IInferenceConsumer} from "../src/interfaces/IInferenceConsumer.sol";
import {IInferenceMarket} from "../src/interfaces/IInferenceMarket.sol";
import {IMIPS} from "../src/interfaces/IMIPS.sol";
import {localKey, localizeKey} from "../src/interfaces/IPreimageOracle.sol";

/// @notice The finding classes of the 2024 reviews of Optimism's fault-proof contracts (bond theft, bond loss
/// on reorgs, unsafe casts, factory denial of service, out-of-bounds lookups, wrong clock extensions,
/// re-initialisation; out of gas in preimage loading is in `AuditLeafTest`), each attacked on our market and
/// dispute game. docs/security.md maps every class to these tests and to the older ones that already hold it.
contract AuditMarketTest is MarketFixture, IDisputeGameCreator {
    bytes internal constant INPUT = "audit input";
    bytes internal constant OUT_OK = "honest output";
    bytes internal constant OUT_BAD = "wrong output";
    uint64 internal constant CB_GAS = 100_000;

    address internal dapp;
    address internal prover;
    address internal accomplice;
    address internal alice; // an honest challenger
    address internal bob;
    RecordingConsumer internal consumer;

    function setUp() public {
        _deployMarket();
        dapp = makeAddr("dapp");
        prover = makeAddr("prover");
        accomplice = makeAddr("accomplice");
        alice = makeAddr("alice");
        bob = makeAddr("bob");
        consumer = new RecordingConsumer();
        address[5] memory who = [dapp, prover, accomplice, alice, bob];
        for (uint256 i = 0; i < who.length; i++) {
            vm.deal(who[i], 100 ether);
        }
    }

    // --- IDisputeGameCreator (of the games this test creates directly) ------------------------------------------
    function onGameResolved(uint256, bool) external {}

    function gameLocalData(uint256, uint256) external pure returns (bool, bytes32) {
        return (false, bytes32(0));
    }

    // --- helpers --------------------------------------------------------------------------------------------
    function _accounts() internal view returns (address[] memory a) {
        a = new address[](7);
        (a[0], a[1], a[2], a[3], a[4], a[5], a[6]) =
            (dapp, prover, accomplice, alice, bob, address(consumer), address(this));
    }

    function _assertSolvent() internal view {
        assertEq(address(market).balance, _owed(_accounts()), "ETH held == sum owed");
    }

    function _request() internal returns (uint256 id) {
        uint256 fee = market.estimateFee(MODEL, INPUT.length, CB_GAS);
        vm.prank(dapp);
        id = market.requestInference{value: fee}(MODEL, INPUT, address(consumer), CB_GAS);
    }

    function _post(uint256 id, address who, bytes memory output, bytes32 claim, uint64 steps)
        internal
        returns (uint256 resultId)
    {
        vm.prank(who);
        resultId = market.postResult{value: 1 ether}(id, output, claim, steps);
    }

    /// @dev A wrong one-step claim: VALID, but not the state the program reaches after one step.
    function _wrongOneStepClaim() internal pure returns (bytes32) {
        return FakeTrace.hashAt(BAD, 1, 1, 0);
    }

    /// @dev The attack of `test_BondTheft_*`: the prover posts a wrong one-step claim, its accomplice
    /// challenges it and steps the leaf at once (the prover's bond goes to the accomplice: no loss), and the
    /// prover posts the correct result, all in front of an honest challenge of the wrong claim.
    function _swapResultInFrontOfAChallenge(uint256 id) internal returns (uint256 wrongId, uint256 rightId) {
        wrongId = _post(id, prover, OUT_BAD, _wrongOneStepClaim(), 1);
        vm.prank(accomplice);
        uint256 g = market.challenge{value: 0.5 ether}(id, wrongId);
        game.step(g, honestState(0), hex"");
        assertTrue(market.getResult(wrongId).discarded, "the accomplice discarded the wrong result");
        rightId = _post(id, prover, OUT_OK, honestHash(STEPS), STEPS);
    }

    function _hashes(uint256 gameId, function(uint64) internal view returns (bytes32) trace)
        internal
        view
        returns (bytes32[] memory hs)
    {
        IDisputeGame.Game memory g = game.getGame(gameId);
        uint64[] memory pts = game.dissectionPoints(g.lo, g.hi);
        hs = new bytes32[](pts.length - 2);
        for (uint256 i = 0; i < hs.length; i++) {
            hs[i] = trace(pts[i + 1]);
        }
    }

    // =========================================================================================================
    // Bond theft
    // =========================================================================================================

    /// @dev A challenge names the result its sender verified: a prover that swaps its wrong result for a
    /// correct one in front of an honest challenge (to win the challenger's bond) only makes it revert. (An
    /// unbound `challenge(requestId)`, which hit whatever result was current, allowed exactly that; removed.)
    function test_BondTheft_ABoundChallengeRevertsWhenTheResultWasSwapped() public {
        uint256 id = _request();
        uint256 aliceBefore = alice.balance;
        (uint256 wrongId, uint256 rightId) = _swapResultInFrontOfAChallenge(id);
        vm.prank(alice); // alice verified the wrong result and bound her challenge to it
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.ResultNotCurrent.selector, id, wrongId, rightId)
        );
        market.challenge{value: 0.5 ether}(id, wrongId);
        assertEq(alice.balance, aliceBefore, "alice keeps her bond");
        _assertSolvent();
    }

    function test_BondTheft_BoundChallengeValidation() public {
        uint256 id = _request();
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Open)
        );
        market.challenge{value: 0.5 ether}(id, 1);
        uint256 rid = _post(id, prover, OUT_BAD, tamperedHash(STEPS), STEPS);
        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.ResultNotCurrent.selector, id, 0, rid));
        market.challenge{value: 0.5 ether}(id, 0); // 0 is never a result id: no "whatever is current"
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.ResultNotCurrent.selector, id, rid + 1, rid));
        market.challenge{value: 0.5 ether}(id, rid + 1);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.WrongBond.selector, 0.4 ether, 0.5 ether));
        market.challenge{value: 0.4 ether}(id, rid);
        uint256 g = market.challenge{value: 0.5 ether}(id, rid);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.AlreadyChallenged.selector, rid, alice));
        market.challenge{value: 0.5 ether}(id, rid);
        vm.stopPrank();
        assertEq(uint256(market.getChallenge(g).resultId), rid);
        assertEq(game.getGame(g).disputedHash, tamperedHash(STEPS));
        play(game, g, tamperedHash, honestHash, false);
        assertEq(market.balanceOf(alice), 1.5 ether, "the honest challenger wins the bond");
        _assertSolvent();
    }

    /// @dev Anyone may create games in the shared `DisputeGame`; none of them reaches the market's funds.
    function test_BondTheft_ForeignGamesNeverReachTheMarket() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_OK, honestHash(STEPS), STEPS);
        GameSquatter squatter = new GameSquatter(game, market);
        // a foreign game between the market's prover and the squatter, lost by the prover on timeout
        uint256 foreign = squatter.create(prover, honestHash(0), honestHash(STEPS), STEPS);
        vm.warp(block.timestamp + TIMEOUT + 1);
        game.claimTimeout(foreign);
        assertTrue(game.getGame(foreign).status == IDisputeGame.Status.ChallengerWon);
        assertTrue(squatter.forwardFailed(), "the market refused the forwarded resolution");
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.UnknownGame.selector, foreign));
        market.refundChallenge(foreign);
        (bool known,) = market.gameLocalData(foreign, 1);
        assertFalse(known, "no local data for a foreign game");
        // a market game: the squatter can neither cancel nor resolve it
        vm.prank(alice);
        uint256 g = market.challenge{value: 0.5 ether}(id, rid);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.NotCreator.selector, address(squatter)));
        squatter.cancel(g);
        assertEq(market.balanceOf(address(squatter)), 0);
        assertEq(market.balanceOf(prover), 0);
        assertEq(uint256(market.getResult(rid).openGames), 1);
        _assertSolvent();
    }

    /// @dev The market pays a game's outcome once, whatever calls it receives.
    function test_BondTheft_AResolutionIsPaidOnce() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_OK, honestHash(STEPS), STEPS);
        vm.prank(alice);
        uint256 gA = market.challenge{value: 0.5 ether}(id, rid);
        vm.prank(bob);
        uint256 gB = market.challenge{value: 0.5 ether}(id, rid);
        vm.startPrank(address(game)); // as if the game contract resolved games more than once
        market.onGameResolved(gA, true);
        market.onGameResolved(gA, true);
        market.onGameResolved(gA, false);
        market.onGameResolved(gB, false); // bob wins: the result is discarded
        market.onGameResolved(gB, false);
        market.onGameResolved(gB, true);
        market.onGameResolved(777, false); // not a market game
        vm.stopPrank();
        assertEq(market.balanceOf(prover), 0.5 ether, "alice's bond, once");
        assertEq(market.balanceOf(bob), 1.5 ether, "prover's bond + own, once");
        assertEq(market.balanceOf(alice), 0);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.GameAlreadySettled.selector, gA));
        market.refundChallenge(gA);
        _assertSolvent();
    }

    /// @dev A consumer's callback re-enters every market function it can: nothing pays twice.
    function test_BondTheft_AReentrantConsumerGainsNothing() public {
        ReentrantConsumer evil = new ReentrantConsumer(market);
        uint256 fee = market.estimateFee(MODEL, INPUT.length, 1_000_000);
        vm.prank(dapp);
        uint256 id = market.requestInference{value: fee}(MODEL, INPUT, address(evil), 1_000_000);
        uint256 other = _request();
        _post(id, prover, OUT_OK, honestHash(STEPS), STEPS);
        uint256 otherResult = _post(other, prover, OUT_OK, honestHash(STEPS), STEPS);
        evil.arm(id, other, otherResult, OUT_OK);
        vm.deal(address(evil), 10 ether);
        vm.warp(block.timestamp + WINDOW);
        market.finalize(id, OUT_OK);
        assertEq(evil.attempts(), 5);
        assertEq(evil.successes(), 0, "every re-entry reverted");
        assertEq(market.balanceOf(prover), fee + 1 ether, "paid once");
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Finalized);
        market.finalize(other, OUT_OK);
        _assertSolvent();
    }

    /// @dev A receiver that re-enters `withdraw` gets its balance once (the nonReentrant guard and the
    /// balance zeroed before the transfer), whether or not it swallows the failed re-entry.
    function test_BondTheft_AReentrantWithdrawerIsPaidOnce() public {
        for (uint256 swallow = 0; swallow < 2; swallow++) {
            ReentrantProver p = new ReentrantProver(market, swallow == 1);
            vm.deal(address(p), 2 ether);
            uint256 id = _request();
            p.post(id, OUT_OK, honestHash(STEPS), STEPS);
            vm.warp(block.timestamp + WINDOW);
            market.finalize(id, OUT_OK);
            uint256 owedToP = market.balanceOf(address(p));
            uint256 before = address(p).balance;
            if (swallow == 0) {
                vm.expectRevert(IInferenceMarket.WithdrawFailed.selector);
                p.withdraw();
                assertEq(market.balanceOf(address(p)), owedToP, "still owed");
            } else {
                p.withdraw();
                assertEq(address(p).balance - before, owedToP, "paid exactly once");
                assertEq(market.balanceOf(address(p)), 0);
            }
            assertEq(p.reentries(), swallow, "a failed withdrawal rolls its re-entry back too");
        }
    }

    /// @dev KNOWN OPEN ISSUE (docs/protocol.md section 7): a wrong prover's accomplice that challenges and
    /// wins first takes the prover's bond; honest challengers only get theirs back. Safety holds (the result
    /// is discarded), the deterrent does not. This test pins today's behaviour; a fix (burning part of the
    /// losing bond) must change it.
    function test_KnownIssue_SelfChallengeRaceRecyclesTheProversBond() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, _wrongOneStepClaim(), 1);
        vm.prank(alice);
        uint256 gA = market.challenge{value: 0.5 ether}(id, rid);
        vm.prank(accomplice);
        uint256 gX = market.challenge{value: 0.5 ether}(id, rid);
        game.step(gX, honestState(0), hex""); // the accomplice's game resolves first
        assertEq(market.balanceOf(accomplice), 1.5 ether, "the prover's bond goes to its accomplice");
        market.refundChallenge(gA);
        assertEq(market.balanceOf(alice), 0.5 ether, "the honest challenger only gets its bond back");
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Open, "but safety holds");
        _assertSolvent();
    }

    // =========================================================================================================
    // Bond loss on reorgs
    // =========================================================================================================

    /// @dev A reorg that renumbers results: a bound challenge replayed in the new order reverts instead of
    /// hitting the result that now has the id (the unbound one would have hit it).
    function test_Reorg_ABoundChallengeReplayedOverRenumberedResultsReverts() public {
        uint256 x = _request();
        uint256 y = _request();
        uint256 snap = vm.snapshotState();
        uint256 rx = _post(x, prover, OUT_BAD, tamperedHash(STEPS), STEPS); // result 1: wrong, on x
        _post(y, bob, OUT_OK, honestHash(STEPS), STEPS); // result 2, on y
        vm.prank(alice);
        market.challenge{value: 0.5 ether}(x, rx); // fine in this history
        vm.revertToState(snap); // the reorg: the same transactions, the two posts swapped
        uint256 ry = _post(y, bob, OUT_OK, honestHash(STEPS), STEPS); // now result 1
        uint256 rx2 = _post(x, prover, OUT_BAD, tamperedHash(STEPS), STEPS); // now result 2
        assertEq(ry, rx, "the id alice bound to is now another result");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.ResultNotCurrent.selector, x, rx, rx2));
        market.challenge{value: 0.5 ether}(x, rx);
        vm.prank(alice);
        market.challenge{value: 0.5 ether}(x, rx2); // re-sent after re-reading: the right result
        _assertSolvent();
    }

    /// @dev `pick` resubmits the dissection it answers and `step` proves its pre-state against the agreed hash,
    /// so neither can land in a game renumbered by a reorg. `dissect` is bound only to the game id: agents
    /// act on games `confirmations` blocks deep (docs/security.md, "Reorgs"); this test pins that limit.
    function test_Reorg_PickAndStepAreBoundToTheGameButDissectOnlyToItsId() public {
        uint256 x = _request();
        uint256 y = _request();
        uint256 rx = _post(x, prover, OUT_OK, honestHash(STEPS), STEPS);
        uint256 ry = _post(y, prover, OUT_BAD, tamperedHash(STEPS), STEPS);
        vm.prank(alice);
        uint256 gX = market.challenge{value: 0.5 ether}(x, rx);
        vm.prank(bob);
        uint256 gY = market.challenge{value: 0.5 ether}(y, ry);
        // the prover dissects game Y with its tampered trace; a pick of game X's dissection cannot be replayed
        bytes32[] memory hy = _hashes(gY, tamperedHash);
        vm.prank(prover);
        game.dissect(gY, hy);
        bytes32[] memory hx = _hashes(gX, honestHash);
        vm.prank(prover);
        game.dissect(gX, hx);
        vm.prank(bob);
        vm.expectRevert(IDisputeGame.DissectionMismatch.selector);
        game.pick(gY, hx, 0); // bob's pick of the other dissection: refused
        // a leaf step with the pre-state of another game: refused
        uint256 z = _request();
        uint256 rz = _post(z, prover, OUT_BAD, _wrongOneStepClaim(), 1);
        vm.prank(alice);
        uint256 gZ = market.challenge{value: 0.5 ether}(z, rz);
        bytes memory otherPre = FakeTrace.state(BAD, 0, exitStep, 0, bytes32(0));
        vm.expectRevert(
            abi.encodeWithSelector(
                IDisputeGame.PreStateMismatch.selector, honestHash(0), FakeTrace.hashOf(otherPre)
            )
        );
        game.step(gZ, otherPre, hex"");
        // the limit: a dissection is accepted by any game of the proposer whose turn it is with the same count
        uint256 w = _request();
        uint256 rw = _post(w, prover, OUT_OK, honestHash(STEPS), STEPS);
        vm.prank(bob);
        uint256 gW = market.challenge{value: 0.5 ether}(w, rw);
        vm.prank(prover);
        game.dissect(gW, hy); // game Y's hashes accepted by game W
        assertTrue(game.getGame(gW).turn == IDisputeGame.Turn.Pick);
        _assertSolvent();
    }

    // =========================================================================================================
    // Unsafe casts
    // =========================================================================================================

    function test_Casts_AFeeAboveUint96IsRejectedNotTruncated() public {
        vm.deal(dapp, 2 ** 97);
        vm.prank(dapp);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.FeeTooLarge.selector, uint256(2 ** 96)));
        market.requestInference{value: 2 ** 96}(MODEL, INPUT, address(0), 0);
        vm.prank(dapp);
        uint256 id = market.requestInference{value: 2 ** 96 - 1}(MODEL, INPUT, address(0), 0);
        assertEq(uint256(market.getRequest(id).fee), 2 ** 96 - 1, "stored exactly");
        _assertSolvent();
    }

    /// @dev Deadlines are `uint64(now) + moveTimeout` in checked arithmetic: a timeout that would wrap makes
    /// creation revert instead of producing a deadline in the past (which would let anyone time a game out).
    function test_Casts_ADeadlineNeverWraps() public {
        DisputeGame wrapping = new DisputeGame(IMIPS(address(fakeVm)), 16, type(uint64).max);
        vm.expectRevert(abi.encodeWithSignature("Panic(uint256)", uint256(0x11)));
        wrapping.createGame(prover, alice, honestHash(0), honestHash(STEPS), STEPS);
        DisputeGame edge = new DisputeGame(IMIPS(address(fakeVm)), 16, type(uint64).max - uint64(block.timestamp));
        uint256 g = edge.createGame(prover, alice, honestHash(0), honestHash(STEPS), STEPS);
        assertEq(uint256(edge.getGame(g).deadline), type(uint64).max);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DeadlineNotPassed.selector, type(uint64).max));
        edge.claimTimeout(g);
    }

    /// @dev Claims up to 2^64 - 1 steps: every dissection point fits uint64 and the game still ends in at most
    /// 16 rounds; the market's `maxSteps` bounds what can be claimed.
    function testFuzz_Casts_StepCountsUpToUint64Max(uint64 steps) public {
        steps = uint64(bound(steps, 1, type(uint64).max));
        uint256 g = game.createGame(prover, alice, honestHash(0), keccak256("claim"), steps);
        uint256 rounds;
        while (game.getGame(g).turn != IDisputeGame.Turn.Step) {
            IDisputeGame.Game memory s = game.getGame(g);
            uint64[] memory pts = game.dissectionPoints(s.lo, s.hi);
            assertEq(uint256(pts[0]), uint256(s.lo));
            assertEq(uint256(pts[pts.length - 1]), uint256(s.hi));
            bytes32[] memory hs = new bytes32[](pts.length - 2);
            vm.prank(prover);
            game.dissect(g, hs);
            vm.prank(alice);
            game.pick(g, hs, pts.length - 2); // the last (widest-ranged) sub-interval
            rounds++;
        }
        assertLe(rounds, 16);
        assertEq(uint256(game.getGame(g).hi - game.getGame(g).lo), 1);
    }

    // =========================================================================================================
    // Factory denial of service
    // =========================================================================================================

    /// @dev Games are numbered by one counter and every challenger has its own game: spam in the shared game
    /// contract and accomplice challenges neither collide with nor block an honest challenge.
    function test_FactoryDoS_SpamGamesAndAccomplicesCannotBlockAChallenge() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, tamperedHash(STEPS), STEPS);
        vm.startPrank(accomplice);
        for (uint256 i = 0; i < 20; i++) {
            // the same parties and claim as alice's coming game, and many others
            game.createGame(prover, alice, honestHash(0), tamperedHash(STEPS), STEPS);
        }
        market.challenge{value: 0.5 ether}(id, rid);
        vm.stopPrank();
        vm.prank(alice);
        uint256 g = market.challenge{value: 0.5 ether}(id, rid);
        assertEq(g, game.gameCount(), "a fresh id");
        assertEq(game.getGame(g).creator, address(market));
        play(game, g, tamperedHash, honestHash, false);
        assertEq(market.balanceOf(alice), 1.5 ether);
        _assertSolvent();
    }

    /// @dev No loop over games anywhere: refunding the 40th game of a result costs what the 1st did.
    function test_FactoryDoS_ManyGamesOnOneResultCostConstantGas() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, tamperedHash(STEPS), STEPS);
        uint256[] memory games = new uint256[](40);
        address[] memory who = new address[](games.length + 2);
        for (uint256 i = 0; i < games.length; i++) {
            who[i] = makeAddr(string.concat("challenger", vm.toString(i)));
            vm.deal(who[i], 1 ether);
            vm.prank(who[i]);
            games[i] = market.challenge{value: 0.5 ether}(id, rid);
        }
        (who[games.length], who[games.length + 1]) = (prover, dapp);
        play(game, games[0], tamperedHash, honestHash, false);
        market.refundChallenge(games[1]); // the first one also warms the result's and the game's slots
        uint256 least = type(uint256).max;
        uint256 most;
        for (uint256 i = 2; i < games.length; i++) {
            uint256 before = gasleft();
            market.refundChallenge(games[i]);
            uint256 used = before - gasleft();
            if (used < least) least = used;
            if (used > most) most = used;
        }
        assertApproxEqAbs(most, least, 100, "constant refund cost");
        assertEq(address(market).balance, _owed(who), "ETH held == sum owed");
    }

    // =========================================================================================================
    // Out-of-bounds lookups
    // =========================================================================================================

    /// @dev Ids that were never handed out: every mutator reverts with a named error, every view returns zeros.
    function testFuzz_OOB_UnknownIdsRevertCleanly(uint256 id) public {
        uint256 rid = _post(_request(), prover, OUT_OK, honestHash(STEPS), STEPS);
        vm.prank(alice);
        market.challenge{value: 0.5 ether}(1, rid);
        vm.assume(id == 0 || id > 1);
        IInferenceMarket.RequestStatus none = IInferenceMarket.RequestStatus.None;
        vm.startPrank(bob);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, none));
        market.postResult{value: 1 ether}(id, OUT_OK, honestHash(STEPS), STEPS);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, none));
        market.challenge{value: 0.5 ether}(id, rid);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, none));
        market.finalize(id, OUT_OK);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, none));
        market.cancelRequest(id);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.UnknownGame.selector, id));
        market.refundChallenge(id);
        bytes32[] memory hs = new bytes32[](15);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.dissect(id, hs);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.pick(id, hs, 0);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.step(id, honestState(0), hex"");
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.claimTimeout(id);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.cancel(id);
        vm.stopPrank();
        assertEq(market.getRequest(id).requester, address(0));
        assertEq(market.getResult(id).prover, address(0));
        assertEq(market.getChallenge(id).challenger, address(0));
        assertTrue(game.getGame(id).status == IDisputeGame.Status.None);
        (bool known,) = market.gameLocalData(id, 1);
        assertFalse(known);
    }

    function testFuzz_OOB_PickIndexIsBounded(uint256 index) public {
        uint256 g = game.createGame(prover, alice, honestHash(0), tamperedHash(STEPS), STEPS);
        bytes32[] memory hs = _hashes(g, tamperedHash);
        vm.prank(prover);
        game.dissect(g, hs);
        vm.prank(alice);
        if (index >= hs.length + 1) {
            vm.expectRevert(abi.encodeWithSelector(IDisputeGame.IndexOutOfRange.selector, index, hs.length + 1));
            game.pick(g, hs, index);
        } else {
            game.pick(g, hs, index);
            IDisputeGame.Game memory s = game.getGame(g);
            uint64[] memory pts = game.dissectionPoints(0, STEPS);
            assertEq(uint256(s.lo), uint256(pts[index]));
            assertEq(uint256(s.hi), uint256(pts[index + 1]));
        }
    }

    // =========================================================================================================
    // Wrong clock extensions
    // =========================================================================================================

    /// @dev At any time exactly one of "the due party moves" and "anyone claims the timeout" is possible: up to
    /// and including the deadline the move, after it the claim. Each move gives the other party a full
    /// `moveTimeout` from the block it lands in, never more, never less.
    function testFuzz_Clock_AMoveAndATimeoutClaimNeverOverlap(uint256 wait, bool atPick) public {
        wait = bound(wait, 0, 3 * TIMEOUT);
        uint256 g = game.createGame(prover, alice, honestHash(0), tamperedHash(STEPS), STEPS);
        bytes32[] memory hs = _hashes(g, tamperedHash);
        if (atPick) {
            vm.warp(block.timestamp + 17);
            vm.prank(prover);
            game.dissect(g, hs);
        }
        uint64 deadline = game.getGame(g).deadline;
        assertEq(uint256(deadline), block.timestamp + TIMEOUT, "a full timeout from this block");
        vm.warp(block.timestamp + wait);
        uint256 snap = vm.snapshotState();
        bool inTime = block.timestamp <= deadline;
        bytes memory move =
            atPick ? abi.encodeCall(DisputeGame.pick, (g, hs, 0)) : abi.encodeCall(DisputeGame.dissect, (g, hs));
        vm.prank(atPick ? alice : prover);
        (bool moved,) = address(game).call(move);
        assertEq(moved, inTime, "the move is possible iff not past the deadline");
        vm.revertToState(snap);
        (bool claimed,) = address(game).call(abi.encodeCall(DisputeGame.claimTimeout, (g)));
        assertEq(claimed, !inTime, "the timeout is claimable iff past the deadline");
        if (claimed) {
            IDisputeGame.Status want = atPick ? IDisputeGame.Status.ProposerWon : IDisputeGame.Status.ChallengerWon;
            assertTrue(game.getGame(g).status == want, "the party due loses");
        }
    }

    /// @dev Only the due party's move moves the deadline: failed moves, wrong parties, preimage loads, steps
    /// that revert and refunds leave it where it is.
    function test_Clock_OnlyTheDueMoveMovesTheDeadline() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, tamperedHash(STEPS), STEPS);
        vm.prank(alice);
        uint256 g = market.challenge{value: 0.5 ether}(id, rid);
        uint64 deadline = game.getGame(g).deadline;
        vm.warp(block.timestamp + TIMEOUT / 2);
        bytes32[] memory hs = _hashes(g, tamperedHash);
        vm.prank(alice); // not the proposer
        (bool ok,) = address(game).call(abi.encodeCall(DisputeGame.dissect, (g, hs)));
        assertFalse(ok);
        vm.prank(prover); // wrong turn
        (ok,) = address(game).call(abi.encodeCall(DisputeGame.pick, (g, hs, 0)));
        assertFalse(ok);
        (ok,) = address(game).call(abi.encodeCall(DisputeGame.step, (g, honestState(0), hex"")));
        assertFalse(ok);
        (ok,) = address(market).call(abi.encodeCall(InferenceMarket.refundChallenge, (g)));
        assertFalse(ok);
        assertEq(uint256(game.getGame(g).deadline), uint256(deadline), "unchanged");
        vm.prank(prover);
        game.dissect(g, hs);
        assertEq(uint256(game.getGame(g).deadline), block.timestamp + TIMEOUT, "the due move resets it");
    }

    /// @dev The longest legal game (2^64 - 1 steps, every move at the last second) ends within
    /// (2 * rounds + 1) deadlines: nobody can stretch a game past that, so a result finalizes at most that
    /// long after its challenge window.
    function test_Clock_TheSlowestGameIsBounded() public {
        uint64 steps = type(uint64).max;
        uint256 start = block.timestamp;
        uint256 g = game.createGame(prover, alice, honestHash(0), keccak256("claim"), steps);
        uint256 rounds;
        while (game.getGame(g).turn != IDisputeGame.Turn.Step) {
            IDisputeGame.Game memory s = game.getGame(g);
            bytes32[] memory hs = new bytes32[](game.dissectionPoints(s.lo, s.hi).length - 2);
            vm.warp(s.deadline);
            vm.prank(prover);
            game.dissect(g, hs);
            vm.warp(game.getGame(g).deadline);
            vm.prank(alice);
            game.pick(g, hs, 0);
            rounds++;
        }
        vm.warp(game.getGame(g).deadline + 1);
        game.claimTimeout(g);
        assertEq(rounds, 16);
        assertLe(block.timestamp - start, (2 * rounds + 1) * TIMEOUT + 1);
    }

    // =========================================================================================================
    // Re-initialisation
    // =========================================================================================================

    /// @dev Nothing is initialised twice: ids are never reused, an ended game stays ended, a finalized request
    /// cannot take another result, and a discarded result never comes back.
    function test_Reinit_EndedThingsStayEnded() public {
        uint256 id = _request();
        uint256 r1 = _post(id, prover, OUT_BAD, _wrongOneStepClaim(), 1);
        vm.prank(alice);
        uint256 g = market.challenge{value: 0.5 ether}(id, r1);
        game.step(g, honestState(0), hex"");
        uint256 r2 = _post(id, bob, OUT_OK, honestHash(STEPS), STEPS);
        assertEq(r2, r1 + 1, "a new result, the old one stays discarded");
        assertTrue(market.getResult(r1).discarded);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, g));
        game.step(g, honestState(0), hex"");
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, g));
        game.claimTimeout(g);
        vm.prank(address(market));
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, g));
        game.cancel(g);
        vm.warp(block.timestamp + WINDOW);
        market.finalize(id, OUT_OK);
        vm.prank(prover);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Finalized)
        );
        market.postResult{value: 1 ether}(id, OUT_BAD, _wrongOneStepClaim(), 1);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Finalized)
        );
        market.finalize(id, OUT_OK);
        uint256 next = game.createGame(prover, alice, honestHash(0), honestHash(1), 1);
        assertEq(next, g + 1, "ids only grow");
        assertEq(consumer.calls(), 1, "one callback");
        _assertSolvent();
    }

    /// @dev Two markets (creators) on one game contract: neither can cancel, refund or feed local data to the
    /// other's games, and each game's local data comes from its own creator.
    function test_Reinit_ASecondCreatorCannotTouchAnotherCreatorsGames() public {
        InferenceMarket other = new InferenceMarket(registry, game, _params());
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, tamperedHash(STEPS), STEPS);
        vm.prank(alice);
        uint256 g = market.challenge{value: 0.5 ether}(id, rid);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.UnknownGame.selector, g));
        other.refundChallenge(g);
        vm.prank(address(other));
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.NotCreator.selector, address(other)));
        game.cancel(g);
        (bool known,) = other.gameLocalData(g, 3);
        assertFalse(known);
        (, bytes32 outputHash) = market.gameLocalData(g, 3);
        assertEq(outputHash, keccak256(OUT_BAD));
        vm.prank(address(game));
        other.onGameResolved(g, false); // the other market does not know the game: nothing happens
        assertEq(other.balanceOf(alice), 0);
        assertTrue(game.getGame(g).status == IDisputeGame.Status.Active);
        _assertSolvent();
    }

    // =========================================================================================================
    // Out of gas (market side; the verifier side is AuditLeafTest)
    // =========================================================================================================

    /// @dev A timeout claim sent with too little gas either reverts as a whole or settles the game and pays
    /// its bonds: the 63/64 rule can never leave a resolved game with an unsettled challenge.
    function test_OOG_AStarvedTimeoutClaimIsAllOrNothing() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, tamperedHash(STEPS), STEPS);
        vm.prank(alice);
        uint256 g = market.challenge{value: 0.5 ether}(id, rid);
        vm.warp(block.timestamp + TIMEOUT + 1);
        uint256 successes;
        for (uint256 gas = 5_000; gas < 120_000; gas += 997) {
            uint256 snap = vm.snapshotState();
            (bool ok,) = address(game).call{gas: gas}(abi.encodeCall(DisputeGame.claimTimeout, (g)));
            bool over = game.getGame(g).status != IDisputeGame.Status.Active;
            assertEq(over, ok, "the game ends iff the call succeeded");
            assertEq(market.getChallenge(g).settled, ok, "settled together with the game");
            assertEq(market.balanceOf(alice), ok ? 1.5 ether : 0);
            _assertSolvent();
            if (ok) successes++;
            vm.revertToState(snap);
        }
        assertGt(successes, 0);
    }
}

/// @notice Creates games in the shared DisputeGame as their creator, and forwards outcomes to the market.
contract GameSquatter is IDisputeGameCreator {
    DisputeGame internal immutable game;
    InferenceMarket internal immutable market;
    bool public forwardFailed;

    constructor(DisputeGame game_, InferenceMarket market_) {
        game = game_;
        market = market_;
    }

    function create(address proposer, bytes32 start, bytes32 claim, uint64 steps) external returns (uint256) {
        return game.createGame(proposer, address(this), start, claim, steps);
    }

    function cancel(uint256 gameId) external {
        game.cancel(gameId);
    }

    function onGameResolved(uint256 gameId, bool proposerWon) external {
        (bool ok,) = address(market).call(abi.encodeCall(InferenceMarket.onGameResolved, (gameId, proposerWon)));
        forwardFailed = !ok;
    }

    function gameLocalData(uint256, uint256) external pure returns (bool, bytes32) {
        return (false, bytes32(0));
    }
}

/// @notice A consumer whose callback tries to re-enter the market: finalize (itself and another request),
/// withdraw, challenge and refund. It records how many re-entries succeeded.
contract ReentrantConsumer is IInferenceConsumer {
    InferenceMarket internal immutable market;
    uint256 internal otherRequest;
    uint256 internal otherResult;
    uint256 internal self;
    bytes internal output;
    uint256 public attempts;
    uint256 public successes;

    constructor(InferenceMarket market_) {
        market = market_;
    }

    function arm(uint256 self_, uint256 otherRequest_, uint256 otherResult_, bytes calldata output_) external {
        self = self_;
        otherRequest = otherRequest_;
        otherResult = otherResult_;
        output = output_;
    }

    function onInferenceResult(uint256, bytes calldata) external {
        _try(abi.encodeCall(InferenceMarket.finalize, (self, output)), 0);
        _try(abi.encodeCall(InferenceMarket.finalize, (otherRequest, output)), 0);
        _try(abi.encodeCall(InferenceMarket.withdraw, ()), 0);
        _try(abi.encodeWithSignature("challenge(uint256,uint256)", otherRequest, otherResult), 0.5 ether);
        _try(abi.encodeCall(InferenceMarket.refundChallenge, (1)), 0);
    }

    function _try(bytes memory data, uint256 value) internal {
        attempts++;
        (bool ok,) = address(market).call{value: value}(data);
        if (ok) successes++;
    }

    receive() external payable {}
}

/// @notice A prover contract whose `receive` re-enters `withdraw` (and either swallows the failure or not).
contract ReentrantProver {
    InferenceMarket internal immutable market;
    bool internal immutable swallow;
    uint256 public reentries;

    constructor(InferenceMarket market_, bool swallow_) {
        market = market_;
        swallow = swallow_;
    }

    function post(uint256 id, bytes calldata output, bytes32 claim, uint64 steps) external {
        market.postResult{value: 1 ether}(id, output, claim, steps);
    }

    function withdraw() external {
        market.withdraw();
    }

    receive() external payable {
        reentries++;
        (bool ok, bytes memory ret) = address(market).call(abi.encodeCall(InferenceMarket.withdraw, ()));
        if (!ok && !swallow) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }
}

/// @notice Out of gas around the verifier (the class "out-of-gas in preimage loading"): the worst leaf a rollml
/// game can end in, with the real MIPS.sol and PreimageOracle, fits a block many times over, and a leaf step
/// starved of gas reverts as a whole instead of resolving the game.
contract AuditLeafTest is MIPSTestBase, IDisputeGameCreator {
    using MemLib for Mem;

    bytes32 internal constant OUTPUT_HASH = keccak256("the claimed output");
    DisputeGame internal game;
    mapping(uint256 gameId => uint256) internal outcome; // 1 proposer won, 2 challenger won

    function setUp() public override {
        super.setUp();
        game = new DisputeGame(IMIPS(address(mips)), 16, 1 hours);
    }

    function onGameResolved(uint256 gameId, bool proposerWon) external {
        require(msg.sender == address(game), "only the game");
        outcome[gameId] = proposerWon ? 1 : 2;
    }

    function gameLocalData(uint256, uint256 ident) external pure returns (bool, bytes32) {
        return ident == 3 ? (true, OUTPUT_HASH) : (false, bytes32(0));
    }

    /// @dev A `read(5, DATA, 32)` leaf of `key` at stream offset `offset` whose stream starts with `part` there:
    /// the pre-state, its proof and the post-state hash (computed here, independently of MIPS.sol).
    function _readLeaf(bytes32 key, uint32 offset, bytes32 part, uint32 count)
        internal
        pure
        returns (bytes memory pre, bytes memory proof, bytes32 post)
    {
        VMState memory s = newState();
        Mem memory m;
        m.store32(PC, SYSCALL);
        s.regs[V0] = 4003;
        s.regs[A0] = 5;
        s.regs[A1] = DATA;
        s.regs[A2] = 32;
        s.preimageKey = key;
        s.preimageOffset = offset;
        s.memRoot = m.root();
        pre = encode(s);
        proof = bytes.concat(m.proof(PC), m.proof(DATA));
        VMState memory e = copy(s);
        m.setLeaf(DATA, part);
        e.memRoot = m.root();
        e.regs[V0] = count;
        e.regs[A3] = 0;
        e.preimageOffset = offset + count;
        advance(e);
        post = hashOf(e);
    }

    function _localLeaf() internal pure returns (bytes memory pre, bytes memory proof, bytes32 post) {
        bytes32 first = bytes32(abi.encodePacked(uint64(32), bytes24(OUTPUT_HASH)));
        return _readLeaf(localKey(3), 0, first, 32);
    }

    /// @dev One of the two most expensive leaves: a read of local data (the game writes it to the oracle first).
    function test_OOG_ALocalDataLeafFitsABlockEasily() public {
        (bytes memory pre, bytes memory proof, bytes32 post) = _localLeaf();
        uint256 g = game.createGame(address(0xA), address(0xB), mips.stateHash(pre), post, 1);
        uint256 before = gasleft();
        game.step(g, pre, proof);
        uint256 used = before - gasleft();
        assertEq(outcome[g], 1, "the true post-state: proposer wins");
        log("gas: leaf step reading local data (lazy write + MIPS.step)", used);
        assertLt(used, 250_000);
    }

    /// @dev The other: a read of the last part of a largest (16384-byte) keccak preimage, after its load.
    function test_OOG_ALargestPreimageLeafFitsABlockEasily() public {
        bytes memory big = new bytes(16384);
        for (uint256 i = 0; i < big.length; i++) {
            big[i] = bytes1(uint8(i * 7 + 3));
        }
        uint32 offset = 16384 + 8 - 32;
        uint256 before = gasleft();
        bytes32 key = oracle.loadKeccak256PreimagePart(offset, big);
        uint256 loadGas = before - gasleft();
        bytes32 last;
        assembly {
            last := mload(add(add(big, 32), sub(16384, 32)))
        }
        (bytes memory pre, bytes memory proof,) = _readLeaf(key, offset, last, 32);
        uint256 g = game.createGame(address(0xA), address(0xB), mips.stateHash(pre), keccak256("wrong"), 1);
        before = gasleft();
        game.step(g, pre, proof);
        uint256 stepGas = before - gasleft();
        assertEq(outcome[g], 2, "a wrong claim: challenger wins");
        log("gas: loading the last part of a 16384-byte preimage", loadGas);
        log("gas: leaf step reading it", stepGas);
        assertLt(loadGas + stepGas, 400_000);
    }

    /// @dev Sweeping the gas of a leaf step: it either reverts and the game stays active with nothing written,
    /// or it resolves the game with the true outcome. Every inner call (creator, oracle, verifier) is a
    /// checked call whose failure reverts the step, so a starved verifier can never decide a game.
    function test_OOG_AStarvedLeafStepNeverDecidesAGame() public {
        (bytes memory pre, bytes memory proof, bytes32 post) = _localLeaf();
        uint256 right = game.createGame(address(0xA), address(0xB), mips.stateHash(pre), post, 1);
        uint256 wrong = game.createGame(address(0xA), address(0xB), mips.stateHash(pre), keccak256("x"), 1);
        uint256 successes;
        for (uint256 gas = 20_000; gas < 300_000; gas += 3_001) {
            for (uint256 k = 0; k < 2; k++) {
                uint256 g = k == 0 ? right : wrong;
                uint256 snap = vm.snapshotState();
                (bool ok,) = address(game).call{gas: gas}(abi.encodeCall(DisputeGame.step, (g, pre, proof)));
                if (ok) {
                    successes++;
                    assertEq(outcome[g], k == 0 ? 1 : 2, "the true outcome");
                } else {
                    assertEq(outcome[g], 0);
                    assertTrue(game.getGame(g).status == IDisputeGame.Status.Active, "still active");
                    assertEq(oracle.streamLength(_localized(g)), 0, "nothing written");
                }
                vm.revertToState(snap);
            }
        }
        assertGt(successes, 0);
    }

    function _localized(uint256 gameId) internal view returns (bytes32) {
        return localizeKey(localKey(3), bytes32(gameId), address(game));
    }
}
