// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {FakeTrace} from "./utils/FakeVM.sol";
import {MarketFixture, RecordingConsumer} from "./utils/MarketFixture.sol";
import {OldRulesGame, OldRulesMarket} from "./utils/OldRules.sol";
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
        resultId = market.postVMResult{value: 1 ether}(id, output, claim, steps);
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
        game.step(g, _wrongOneStepClaim(), honestState(0), hex"");
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
        assertEq(market.balanceOf(alice), 1 ether, "the honest challenger: its bond + the unburned half");
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
        assertEq(market.balanceOf(bob), 0.5 ether + 0.5 ether, "own bond + the unburned half of the prover's, once");
        assertEq(market.burned(), 0.5 ether, "burned once");
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

    // =========================================================================================================
    // Self-challenge censorship (issue 12, item 2; docs/security.md section 6)
    // =========================================================================================================

    /// @dev Figures of one `_selfChallengeSiege`.
    struct Siege {
        uint256 createdAt; // when the request was made
        uint256 posts; // wrong results the attacker managed to post
        uint256 refusedCancels; // cancellations the requester tried during the siege (all refused)
        uint256 refusedHonestPosts; // posts an honest prover tried during the siege (all refused)
        uint256 cancelledAt; // when the requester got its fee back (0: never)
        int256 attackerNet; // wei the prover and its accomplice gained together, everything withdrawn
        int256 honestNet; // wei alice, the honest challenger, gained
        uint256 burned; // the market's `burned` at the end
    }

    uint256 internal constant SIEGE_CYCLE = 2 hours;

    /// @dev A wrong prover's accomplice challenges and wins first (the prover concedes): half the prover's bond
    /// is burned and the other half is shared by every game open on the result, so the honest challenger that
    /// also challenged gets as much as the accomplice. (Under the old rules the accomplice took the whole bond
    /// and the honest challenger only got its own back: `test_SelfChallenge_TheSiegeTestFailsAgainstEachOldRule`.)
    function test_SelfChallenge_AConcessionBurnsHalfTheBondAndRewardsTheHonestChallenger() public {
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, _wrongOneStepClaim(), 1);
        vm.prank(alice);
        uint256 gA = market.challenge{value: 0.5 ether}(id, rid);
        vm.prank(accomplice);
        uint256 gX = market.challenge{value: 0.5 ether}(id, rid);
        game.step(gX, _wrongOneStepClaim(), honestState(0), hex""); // the accomplice's game resolves first
        assertEq(market.burned(), 0.5 ether, "half the prover's bond is burned");
        assertEq(market.balanceOf(accomplice), 0.5 ether + 0.25 ether, "its bond + one share");
        _assertSolvent(); // alice's bond and share are owed, not yet credited
        market.refundChallenge(gA);
        assertEq(market.balanceOf(alice), 0.5 ether + 0.25 ether, "the honest challenger: its bond + one share");
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Open, "safety holds");
        _assertSolvent();
    }

    /// @dev The self-challenge censorship over 100 cycles, across the request's deadline: each cycle the prover
    /// keeps a wrong one-step result pending (alice challenges it, so does the accomplice), then concedes (the
    /// accomplice steps its own game) and posts the next wrong result in the same block. A wrong result is
    /// pending at every block boundary: an honest prover cannot post and the requester cannot cancel. The
    /// deadline ends it: the 85th post is refused, the requester cancels at once, the attacker paid half a
    /// bond per cycle to the burn and a quarter to alice. `checkSiegeDefeated` holds the verdict, which fails
    /// against each old rule (next test).
    function test_SelfChallenge_A100CycleSiegeEndsAtTheDeadlineAndCostsTheAttacker() public {
        Siege memory s = _selfChallengeSiege(100);
        _logSiege(s);
        this.checkSiegeDefeated(s);
        assertEq(s.posts, REQUEST_TIMEOUT / SIEGE_CYCLE, "84 wrong results, none at or after the deadline");
        assertEq(s.cancelledAt, s.createdAt + REQUEST_TIMEOUT, "the requester cancels at the deadline");
        assertEq(s.burned, 42 ether);
        assertEq(s.honestNet, 21 ether);
        assertEq(s.attackerNet, -63 ether);
    }

    /// @dev The same siege against deliberately broken markets (`OldRulesMarket`) with each old rule and with
    /// both: `checkSiegeDefeated` fails against each. With the old clock (a discard restarts it) the requester
    /// can never cancel; with the old payout (the winner takes the whole bond) nothing is burned and alice earns
    /// nothing. With both, all 100 wrong results are posted and the attack costs the attacker nothing.
    function test_SelfChallenge_TheSiegeTestFailsAgainstEachOldRule() public {
        string[3] memory why = [
            "assertTrue failed: false: the requester got its fee back",
            "assertEq(uint256) failed: left=0 right=42000000000000000000: half of every conceded bond burned",
            "assertTrue failed: false: the requester got its fee back"
        ];
        for (uint256 v = 0; v < 3; v++) {
            uint256 snap = vm.snapshotState();
            (bool oldClock, bool oldPayout) = (v != 1, v != 0);
            market = new OldRulesMarket(registry, game, _params(), execProgram, oldClock, oldPayout);
            Siege memory s = _selfChallengeSiege(100);
            _logSiege(s);
            (bool defeated, bytes memory err) = address(this).call(abi.encodeCall(this.checkSiegeDefeated, (s)));
            assertFalse(defeated, "the siege test fails against this old rule");
            assertEq(err, abi.encodeWithSignature("Error(string)", why[v]));
            if (v == 2) {
                assertEq(s.posts, 100);
                assertEq(s.cancelledAt, 0);
                assertEq(s.attackerNet, 0, "the attack cost nothing");
                assertEq(s.honestNet, 0, "the honest challenger earned nothing");
                assertEq(s.burned, 0);
            }
            vm.revertToState(snap);
        }
    }

    /// @dev The verdict on a siege (external so that the old-rules test can watch it fail): the requester got
    /// its fee back at most one cycle after the deadline, no wrong result was posted at or after it, the
    /// attacker lost exactly what was burned plus what alice earned, and alice earned a share of every
    /// conceded result.
    function checkSiegeDefeated(Siege memory s) external view {
        assertTrue(s.cancelledAt != 0, "the requester got its fee back");
        assertLe(s.cancelledAt, s.createdAt + REQUEST_TIMEOUT + SIEGE_CYCLE, "within a cycle of the deadline");
        assertLe(s.posts * SIEGE_CYCLE, REQUEST_TIMEOUT, "no post at or after the deadline");
        assertEq(s.refusedCancels, s.posts, "no cancellation while a result is pending");
        assertEq(s.refusedHonestPosts, s.posts, "no honest post while a wrong result is pending");
        uint256 bond = market.proverBond();
        assertEq(s.burned, s.posts * bond * BURN_BPS / 10_000, "half of every conceded bond burned");
        assertEq(s.honestNet, int256(s.posts * (bond - bond * BURN_BPS / 10_000) / 2), "alice's share of each");
        assertEq(s.attackerNet, -(int256(s.burned) + s.honestNet), "the attacker pays both");
    }

    /// @dev See `test_SelfChallenge_A100CycleSiegeEndsAtTheDeadlineAndCostsTheAttacker`. Solvency is checked
    /// every 10 cycles and at the end; everyone withdraws everything at the end.
    function _selfChallengeSiege(uint256 cycles) internal returns (Siege memory s) {
        bytes32 wrong = _wrongOneStepClaim();
        vm.deal(prover, 1_000 ether); // enough for every cycle under any rules
        int256 attackerStart = int256(prover.balance + accomplice.balance);
        int256 aliceStart = int256(alice.balance);
        s.createdAt = block.timestamp;
        uint256 id = _request();
        uint256 rid = _post(id, prover, OUT_BAD, wrong, 1);
        s.posts = 1;
        for (uint256 i = 1; i <= cycles; i++) {
            vm.prank(alice); // alice verified the wrong result
            uint256 gA = market.challenge{value: 0.5 ether}(id, rid);
            vm.prank(accomplice);
            uint256 gX = market.challenge{value: 0.5 ether}(id, rid);
            vm.warp(block.timestamp + SIEGE_CYCLE); // block boundaries, with the wrong result pending
            vm.prank(bob);
            (bool ok,) = address(market).call{value: 1 ether}(
                abi.encodeCall(InferenceMarket.postVMResult, (id, OUT_OK, honestHash(STEPS), STEPS))
            );
            if (!ok) s.refusedHonestPosts++;
            vm.prank(dapp);
            (ok,) = address(market).call(abi.encodeCall(InferenceMarket.cancelRequest, (id)));
            if (!ok) s.refusedCancels++;
            // the prover concedes and posts the next wrong result, in one block
            vm.prank(accomplice);
            game.step(gX, wrong, honestState(0), hex"");
            vm.prank(alice);
            market.refundChallenge(gA);
            if (i % 10 == 0) _assertSolvent();
            if (i == cycles) break; // the attacker stops
            vm.prank(prover);
            bytes memory ret;
            (ok, ret) = address(market).call{value: 1 ether}(
                abi.encodeCall(InferenceMarket.postVMResult, (id, OUT_BAD, wrong, 1))
            );
            if (!ok) break; // refused: the deadline passed
            rid = abi.decode(ret, (uint256));
            s.posts++;
        }
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Open, "reopened");
        vm.prank(dapp);
        (bool cancelled,) = address(market).call(abi.encodeCall(InferenceMarket.cancelRequest, (id)));
        if (cancelled) s.cancelledAt = block.timestamp;
        _assertSolvent();
        address[] memory a = _accounts();
        for (uint256 i = 0; i < a.length; i++) {
            if (market.balanceOf(a[i]) == 0) continue;
            vm.prank(a[i]);
            market.withdraw();
        }
        s.attackerNet = int256(prover.balance + accomplice.balance) - attackerStart;
        s.honestNet = int256(alice.balance) - aliceStart;
        s.burned = market.burned();
        assertEq(address(market).balance, s.burned + (cancelled ? 0 : market.getRequest(id).fee), "only the burn stays");
        _assertSolvent();
    }

    function _logSiege(Siege memory s) internal view {
        log("siege: wrong results posted", s.posts);
        log("siege: requester cancelled after (s, 0 = never)", s.cancelledAt == 0 ? 0 : s.cancelledAt - s.createdAt);
        log("siege: burned (wei)", s.burned);
        log("siege: honest challenger earned (wei)", uint256(s.honestNet > 0 ? s.honestNet : int256(0)));
        log("siege: attacker lost (wei)", uint256(s.attackerNet < 0 ? -s.attackerNet : int256(0)));
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

    /// @dev A second honest trace (another model's program): its states differ from `honestHash`'s.
    bytes32 internal constant OTHER = keccak256("another honest trace");

    function _otherHash(uint64 n) internal view returns (bytes32) {
        return FakeTrace.hashAt(OTHER, n, exitStep, 0);
    }

    /// @dev A reorg renumbers two games of an honest prover about two correct results (two models, two
    /// traces). In the first history game 1 disputes its result on x; the prover dissects it. In the second,
    /// the same challenges land in the other order, so game 1 disputes its result on y, and the prover's
    /// dissection transaction is included again as it was (same sender, same calldata). Returns whether that
    /// replay landed, its revert data, and the ids.
    function _replayADissectionAcrossAReorg()
        internal
        returns (bool landed, bytes memory err, uint256 gameOnY, uint256 y)
    {
        exitStep = 2; // two-step programs: one dissection point, then the leaf
        bytes32 modelX = bytes32(uint256(0x02) << 248 | 0x0a);
        bytes32 modelY = bytes32(uint256(0x02) << 248 | 0x0b);
        registry.register(modelX, "x", _shape(1), _shape(1), "", honestHash(0));
        registry.register(modelY, "y", _shape(1), _shape(1), "", _otherHash(0));
        uint256 fee = market.estimateFee(modelX, INPUT.length, 0);
        vm.startPrank(dapp);
        uint256 x = market.requestInference{value: fee}(modelX, INPUT, address(0), 0);
        y = market.requestInference{value: fee}(modelY, INPUT, address(0), 0);
        vm.stopPrank();
        uint256 rx = _post(x, prover, OUT_OK, honestHash(2), 2);
        uint256 ry = _post(y, prover, OUT_OK, _otherHash(2), 2);
        uint256 snap = vm.snapshotState();
        vm.prank(alice);
        uint256 g = market.challenge{value: 0.5 ether}(x, rx);
        vm.prank(bob);
        market.challenge{value: 0.5 ether}(y, ry);
        bytes32[] memory hs = new bytes32[](1);
        hs[0] = honestHash(1);
        bytes memory move = abi.encodeCall(DisputeGame.dissect, (g, honestHash(2), hs)); // its move in game x
        vm.prank(prover);
        (landed,) = address(game).call(move);
        assertTrue(landed, "fine in the first history");
        vm.revertToState(snap); // the reorg: the same challenges, in the other order
        vm.prank(bob);
        gameOnY = market.challenge{value: 0.5 ether}(y, ry);
        vm.prank(alice);
        market.challenge{value: 0.5 ether}(x, rx);
        assertEq(gameOnY, g, "the id of the prover's move is now the game about y");
        vm.prank(prover);
        (landed, err) = address(game).call(move); // the dissection included again, as it was
    }

    /// @dev Every move names the disputed hash it answers, so the prover's dissection replayed into the game
    /// that took its game's id reverts (and the prover, re-reading, dissects the right game). Picks and steps
    /// are bound the same way (and were already by the dissection they resubmit and the agreed pre-state).
    function test_Reorg_AMoveReplayedIntoARenumberedGameReverts() public {
        (bool landed, bytes memory err, uint256 g,) = _replayADissectionAcrossAReorg();
        assertFalse(landed, "the replay reverts");
        assertEq(
            err, abi.encodeWithSelector(IDisputeGame.DisputedHashMismatch.selector, _otherHash(2), honestHash(2))
        );
        assertTrue(game.getGame(g).turn == IDisputeGame.Turn.Dissect, "game y untouched");
        bytes32[] memory hs = new bytes32[](1);
        hs[0] = _otherHash(1);
        vm.prank(prover);
        game.dissect(g, _otherHash(2), hs); // its own move for game y
        vm.prank(bob);
        vm.expectRevert(
            abi.encodeWithSelector(IDisputeGame.DisputedHashMismatch.selector, _otherHash(2), honestHash(2))
        );
        game.pick(g, honestHash(2), hs, 1); // a pick made for another dispute
        vm.prank(bob);
        game.pick(g, _otherHash(2), hs, 1);
        vm.expectRevert(
            abi.encodeWithSelector(IDisputeGame.DisputedHashMismatch.selector, _otherHash(2), honestHash(2))
        );
        game.step(g, honestHash(2), FakeTrace.state(OTHER, 1, exitStep, 0, bytes32(0)), hex"");
        game.step(g, _otherHash(2), FakeTrace.state(OTHER, 1, exitStep, 0, bytes32(0)), hex"");
        assertTrue(game.getGame(g).status == IDisputeGame.Status.ProposerWon, "the honest prover keeps its result");
        _assertSolvent();
    }

    /// @dev The same replay against a deliberately broken game that ignores the disputed hash (`OldRulesGame`):
    /// it lands in the game about y, whose challenger then wins against a correct result, and the honest
    /// prover loses its bond.
    function test_Reorg_TheReplayTestFailsAgainstUnboundMoves() public {
        game = new OldRulesGame(IMIPS(address(fakeVm)), 16, TIMEOUT); // ignores `disputed`
        market = new InferenceMarket(registry, game, _params(), execProgram);
        (bool landed,, uint256 g, uint256 y) = _replayADissectionAcrossAReorg();
        assertTrue(landed, "the replay lands in the other dispute");
        bytes32[] memory hs = new bytes32[](1);
        hs[0] = honestHash(1); // game x's hash at 1, now in game y
        vm.prank(bob); // disagrees with it (its trace is y's): picks [0, 1] and steps
        game.pick(g, bytes32(0), hs, 0);
        game.step(g, bytes32(0), FakeTrace.state(OTHER, 0, exitStep, 0, bytes32(0)), hex"");
        assertTrue(game.getGame(g).status == IDisputeGame.Status.ChallengerWon, "a correct result lost");
        assertTrue(market.getRequest(y).status == IInferenceMarket.RequestStatus.Open, "and was discarded");
        assertEq(market.balanceOf(bob), 1 ether, "bob: its bond and half the honest prover's (the rest burned)");
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
            game.dissect(g, s.disputedHash, hs);
            vm.prank(alice);
            game.pick(g, s.disputedHash, hs, pts.length - 2); // the last (widest-ranged) sub-interval
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
        assertEq(market.balanceOf(alice), 0.5 ether + 0.25 ether, "its bond + a share (the accomplice has the other)");
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
        market.postVMResult{value: 1 ether}(id, OUT_OK, honestHash(STEPS), STEPS);
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
        game.dissect(id, bytes32(0), hs);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.pick(id, bytes32(0), hs, 0);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.step(id, bytes32(0), honestState(0), hex"");
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
        bytes32 claim = tamperedHash(STEPS);
        vm.prank(prover);
        game.dissect(g, claim, hs);
        vm.prank(alice);
        if (index >= hs.length + 1) {
            vm.expectRevert(abi.encodeWithSelector(IDisputeGame.IndexOutOfRange.selector, index, hs.length + 1));
            game.pick(g, claim, hs, index);
        } else {
            game.pick(g, claim, hs, index);
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
        bytes32 claim = tamperedHash(STEPS);
        if (atPick) {
            vm.warp(block.timestamp + 17);
            vm.prank(prover);
            game.dissect(g, claim, hs);
        }
        uint64 deadline = game.getGame(g).deadline;
        assertEq(uint256(deadline), block.timestamp + TIMEOUT, "a full timeout from this block");
        vm.warp(block.timestamp + wait);
        uint256 snap = vm.snapshotState();
        bool inTime = block.timestamp <= deadline;
        bytes memory move = atPick
            ? abi.encodeCall(DisputeGame.pick, (g, claim, hs, 0))
            : abi.encodeCall(DisputeGame.dissect, (g, claim, hs));
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
        bytes32 claim = tamperedHash(STEPS);
        vm.prank(alice); // not the proposer
        (bool ok,) = address(game).call(abi.encodeCall(DisputeGame.dissect, (g, claim, hs)));
        assertFalse(ok);
        vm.prank(prover); // another dispute's hash
        (ok,) = address(game).call(abi.encodeCall(DisputeGame.dissect, (g, honestHash(STEPS), hs)));
        assertFalse(ok);
        vm.prank(prover); // wrong turn
        (ok,) = address(game).call(abi.encodeCall(DisputeGame.pick, (g, claim, hs, 0)));
        assertFalse(ok);
        (ok,) = address(game).call(abi.encodeCall(DisputeGame.step, (g, claim, honestState(0), hex"")));
        assertFalse(ok);
        (ok,) = address(market).call(abi.encodeCall(InferenceMarket.refundChallenge, (g)));
        assertFalse(ok);
        assertEq(uint256(game.getGame(g).deadline), uint256(deadline), "unchanged");
        vm.prank(prover);
        game.dissect(g, claim, hs);
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
            game.dissect(g, s.disputedHash, hs);
            vm.warp(game.getGame(g).deadline);
            vm.prank(alice);
            game.pick(g, s.disputedHash, hs, 0);
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
        game.step(g, _wrongOneStepClaim(), honestState(0), hex"");
        uint256 r2 = _post(id, bob, OUT_OK, honestHash(STEPS), STEPS);
        assertEq(r2, r1 + 1, "a new result, the old one stays discarded");
        assertTrue(market.getResult(r1).discarded);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, g));
        game.step(g, _wrongOneStepClaim(), honestState(0), hex"");
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
        market.postVMResult{value: 1 ether}(id, OUT_BAD, _wrongOneStepClaim(), 1);
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
        InferenceMarket other = new InferenceMarket(registry, game, _params(), execProgram);
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
            assertEq(market.balanceOf(alice), ok ? 1 ether : 0);
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
        market.postVMResult{value: 1 ether}(id, output, claim, steps);
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
        game.step(g, post, pre, proof);
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
        game.step(g, keccak256("wrong"), pre, proof);
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
                bytes32 disputed = k == 0 ? post : keccak256("x");
                uint256 snap = vm.snapshotState();
                (bool ok,) =
                    address(game).call{gas: gas}(abi.encodeCall(DisputeGame.step, (g, disputed, pre, proof)));
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
