// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {FakeVM, FakeOracle, FakeTrace} from "./utils/FakeVM.sol";
import {DisputeGame} from "../src/DisputeGame.sol";
import {IDisputeGame, IDisputeGameCreator} from "../src/interfaces/IDisputeGame.sol";
import {IMIPS} from "../src/interfaces/IMIPS.sol";
import {IPreimageOracle, localKey, localizeKey} from "../src/interfaces/IPreimageOracle.sol";
import {MIPS} from "../src/MIPS.sol";
import {PreimageOracle} from "../src/PreimageOracle.sol";

/// @notice Plays games between scripted parties over synthetic traces (FakeVM: game logic only).
abstract contract GamePlayer is Test {
    bytes32 internal constant HONEST = keccak256("honest trace");
    bytes32 internal constant BAD = keccak256("tampered trace");

    // The honest trace exits (VALID) at `exitStep`; the tampered one equals it before `tamperAt`.
    uint32 internal exitStep;
    uint64 internal tamperAt;

    function honestHash(uint64 n) internal view returns (bytes32) {
        return FakeTrace.hashAt(HONEST, n, exitStep, 0);
    }

    function tamperedHash(uint64 n) internal view returns (bytes32) {
        return n < tamperAt ? honestHash(n) : FakeTrace.hashAt(BAD, n, exitStep, 0);
    }

    function honestState(uint64 n) internal view returns (bytes memory) {
        return FakeTrace.state(HONEST, n, exitStep, 0, bytes32(0));
    }

    /// @dev Gas of the moves of one game: transactions, and their total cost excluding the final step.
    struct GasTally {
        uint256 moves;
        uint256 rounds;
        uint256 cancun; // execution (cold storage) + 21000 + calldata at 4/16 gas per zero/non-zero byte
        uint256 prague; // max(that, EIP-7623 floor 21000 + 10 * tokens)
        uint256 maxMove;
    }

    /// @dev Plays `gameId` to the end: the proposer answers with `proposerHash`, the challenger picks the
    /// first point where `challengerHash` disagrees (or, if `randomPicks`, a pseudo-random index), and the
    /// leaf step is executed with the honest pre-state. Returns the gas tally of the moves.
    function play(
        DisputeGame game,
        uint256 gameId,
        function(uint64) internal view returns (bytes32) proposerHash,
        function(uint64) internal view returns (bytes32) challengerHash,
        bool randomPicks
    ) internal returns (GasTally memory t) {
        IDisputeGame.Game memory g = game.getGame(gameId);
        bytes32[] memory posted;
        uint256 nonce;
        while (g.status == IDisputeGame.Status.Active) {
            if (g.turn == IDisputeGame.Turn.Dissect) {
                uint64[] memory pts = game.dissectionPoints(g.lo, g.hi);
                posted = new bytes32[](pts.length - 2);
                for (uint256 i = 0; i < posted.length; i++) {
                    posted[i] = proposerHash(pts[i + 1]);
                }
                _measure(t, address(game), g.proposer, abi.encodeCall(DisputeGame.dissect, (gameId, g.disputedHash, posted)));
                t.rounds++;
            } else if (g.turn == IDisputeGame.Turn.Pick) {
                uint64[] memory pts = game.dissectionPoints(g.lo, g.hi);
                uint256 k = pts.length - 1;
                uint256 index = k - 1;
                if (randomPicks) {
                    index = uint256(keccak256(abi.encode(gameId, nonce++))) % k;
                } else {
                    for (uint256 j = 0; j + 1 < k; j++) {
                        if (challengerHash(pts[j + 1]) != posted[j]) {
                            index = j;
                            break;
                        }
                    }
                }
                _measure(t, address(game), g.challenger, abi.encodeCall(DisputeGame.pick, (gameId, g.disputedHash, posted, index)));
            } else {
                vm.prank(g.challenger);
                game.step(gameId, g.disputedHash, honestState(g.lo), hex"");
            }
            g = game.getGame(gameId);
        }
    }

    function _measure(GasTally memory t, address target, address from, bytes memory data) internal {
        vm.cool(target);
        vm.prank(from);
        uint256 before = gasleft();
        (bool ok, bytes memory ret) = target.call(data);
        uint256 used = before - gasleft();
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        // The CALL from this test pays the cold account access that a transaction's 21000 already covers.
        used = used > 2600 ? used - 2600 : 0;
        uint256 zeros;
        for (uint256 i = 0; i < data.length; i++) {
            if (data[i] == 0) zeros++;
        }
        uint256 tokens = zeros + 4 * (data.length - zeros);
        uint256 cancun = 21000 + 4 * tokens + used;
        uint256 floor = 21000 + 10 * tokens;
        t.moves++;
        t.cancun += cancun;
        t.prague += cancun > floor ? cancun : floor;
        if (cancun > t.maxMove) t.maxMove = cancun;
    }
}

contract DisputeGameTest is GamePlayer, IDisputeGameCreator {
    uint64 internal constant TIMEOUT = 1 hours;
    uint256 internal constant K = 16;

    FakeVM internal fakeVm;
    DisputeGame internal game;
    address internal proposer;
    address internal challenger;
    address internal stranger;

    mapping(address game => mapping(uint256 gameId => uint256)) internal outcomes; // 1 proposer, 2 challenger
    mapping(address => bool) internal isGame;
    uint256 internal resolutions;

    function setUp() public {
        fakeVm = new FakeVM();
        game = _deploy(K);
        proposer = makeAddr("proposer");
        challenger = makeAddr("challenger");
        stranger = makeAddr("stranger");
        vm.warp(1_000_000);
        exitStep = 1_000;
        tamperAt = 500;
    }

    // --- IDisputeGameCreator -----------------------------------------------------------------------------
    function onGameResolved(uint256 gameId, bool proposerWon) external {
        assertTrue(isGame[msg.sender], "only a game resolves");
        assertEq(outcomes[msg.sender][gameId], 0, "resolved once");
        outcomes[msg.sender][gameId] = proposerWon ? 1 : 2;
        resolutions++;
    }

    function outcome(uint256 gameId) internal view returns (uint256) {
        return outcomes[address(game)][gameId];
    }

    function gameLocalData(uint256 gameId, uint256 ident) external pure returns (bool, bytes32) {
        if (ident >= 1 && ident <= 3) return (true, keccak256(abi.encode(gameId, ident)));
        return (false, bytes32(0));
    }

    // --- helpers -------------------------------------------------------------------------------------------
    function _create(DisputeGame g, bytes32 claim, uint64 steps) internal returns (uint256) {
        return g.createGame(proposer, challenger, honestHash(0), claim, steps);
    }

    function _deploy(uint256 k) internal returns (DisputeGame) {
        DisputeGame g = new DisputeGame(IMIPS(address(fakeVm)), k, TIMEOUT);
        isGame[address(g)] = true;
        return g;
    }

    // --- creation ----------------------------------------------------------------------------------------
    function test_CreateGame_InitialState() public {
        uint256 id = _create(game, honestHash(2_000), 2_000);
        assertEq(id, 1);
        assertEq(game.gameCount(), 1);
        IDisputeGame.Game memory g = game.getGame(id);
        assertEq(uint256(g.lo), 0);
        assertEq(uint256(g.hi), 2_000);
        assertEq(uint256(g.deadline), block.timestamp + TIMEOUT);
        assertTrue(g.status == IDisputeGame.Status.Active);
        assertTrue(g.turn == IDisputeGame.Turn.Dissect);
        assertEq(g.creator, address(this));
        assertEq(g.proposer, proposer);
        assertEq(g.challenger, challenger);
        assertEq(g.agreedHash, honestHash(0));
        assertEq(g.disputedHash, honestHash(2_000));
        assertEq(address(game.oracle()), address(fakeVm.fakeOracle()));
    }

    function test_CreateGame_Reverts() public {
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.InvalidSteps.selector, uint64(0)));
        game.createGame(proposer, challenger, honestHash(0), honestHash(0), 0);
        vm.expectRevert(IDisputeGame.InvalidParty.selector);
        game.createGame(proposer, proposer, honestHash(0), honestHash(1), 1);
        vm.expectRevert(IDisputeGame.InvalidParty.selector);
        game.createGame(address(0), challenger, honestHash(0), honestHash(1), 1);
    }

    function test_Constructor_RejectsBadArity() public {
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.InvalidArity.selector, uint256(1)));
        _deploy(1);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.InvalidArity.selector, uint256(65)));
        _deploy(65);
    }

    // --- dissection points -------------------------------------------------------------------------------
    function test_DissectionPoints_Even() public view {
        uint64[] memory p = game.dissectionPoints(0, 160);
        assertEq(p.length, 17);
        for (uint256 i = 0; i <= 16; i++) {
            assertEq(uint256(p[i]), 10 * i);
        }
    }

    function test_DissectionPoints_ShortIntervalUsesFewerSegments() public view {
        uint64[] memory p = game.dissectionPoints(7, 12);
        assertEq(p.length, 6); // k = 5: every step is a point
        for (uint256 i = 0; i < p.length; i++) {
            assertEq(uint256(p[i]), 7 + i);
        }
        assertEq(game.dissectionPoints(5, 5).length, 0);
    }

    function testFuzz_DissectionPoints_StrictlyIncreasing(uint64 lo, uint64 span) public view {
        lo = uint64(bound(lo, 0, type(uint64).max - 1));
        span = uint64(bound(span, 1, type(uint64).max - lo));
        uint64 hi = lo + span;
        uint64[] memory p = game.dissectionPoints(lo, hi);
        uint256 k = span < K ? span : K;
        assertEq(p.length, k + 1);
        assertEq(uint256(p[0]), lo);
        assertEq(uint256(p[k]), hi);
        for (uint256 i = 1; i <= k; i++) {
            assertGt(uint256(p[i]), uint256(p[i - 1]));
            // sub-intervals shrink by a factor k (rounded up)
            assertLe(uint256(p[i] - p[i - 1]), (uint256(span) + k - 1) / k);
        }
    }

    // --- whole games ---------------------------------------------------------------------------------------
    function test_HonestChallengerWinsAgainstTamperedClaim() public {
        uint256 id = _create(game, tamperedHash(2_000), 2_000);
        play(game, id, tamperedHash, honestHash, false);
        assertEq(outcome(id), 2);
        assertTrue(game.getGame(id).status == IDisputeGame.Status.ChallengerWon);
    }

    function test_HonestProposerWinsAgainstRandomChallenger() public {
        uint256 id = _create(game, honestHash(2_000), 2_000);
        play(game, id, honestHash, tamperedHash, true);
        assertEq(outcome(id), 1);
        assertTrue(game.getGame(id).status == IDisputeGame.Status.ProposerWon);
    }

    function testFuzz_HonestSideAlwaysWins(uint64 steps, uint64 tamper, uint32 exit_, uint8 k, bool proposerHonest)
        public
    {
        steps = uint64(bound(steps, 1, 1e12));
        exitStep = uint32(bound(exit_, 1, type(uint32).max));
        tamperAt = uint64(bound(tamper, 1, steps)); // the tampered trace differs from step tamperAt on
        DisputeGame g = _deploy(bound(k, 2, 64));
        if (proposerHonest) {
            uint256 id = _create(g, honestHash(steps), steps);
            play(g, id, honestHash, tamperedHash, uint256(keccak256(abi.encode(tamper))) % 2 == 0);
            assertEq(outcomes[address(g)][id], 1, "honest proposer");
        } else {
            uint256 id = _create(g, tamperedHash(steps), steps);
            play(g, id, tamperedHash, honestHash, false);
            assertEq(outcomes[address(g)][id], 2, "honest challenger");
        }
    }

    function test_ClaimAfterExitIsAFixedPoint() public {
        // The program exits at step 1000; the proposer claims the (same) exit state at step 5000.
        exitStep = 1_000;
        uint256 id = _create(game, honestHash(5_000), 5_000);
        assertEq(honestHash(5_000), honestHash(1_000));
        play(game, id, honestHash, tamperedHash, true);
        assertEq(outcome(id), 1);
    }

    function test_OneStepClaimIsALeaf() public {
        exitStep = 1;
        uint256 id = _create(game, honestHash(1), 1);
        IDisputeGame.Game memory g = game.getGame(id);
        assertTrue(g.turn == IDisputeGame.Turn.Step);
        vm.prank(stranger); // anyone may step
        game.step(id, honestHash(1), honestState(0), hex"");
        assertEq(outcome(id), 1);

        uint256 id2 = _create(game, keccak256("wrong"), 1);
        game.step(id2, keccak256("wrong"), honestState(0), hex"");
        assertEq(outcome(id2), 2);
    }

    function test_HugeStepCountHasBoundedRounds() public {
        // log_16(2^64) = 16 rounds at most.
        exitStep = type(uint32).max;
        tamperAt = type(uint64).max - 3;
        uint64 steps = type(uint64).max;
        uint256 id = _create(game, tamperedHash(steps), steps);
        GasTally memory t = play(game, id, tamperedHash, honestHash, false);
        assertEq(outcome(id), 2);
        assertLe(t.rounds, 16);
    }

    // --- timeouts -----------------------------------------------------------------------------------------
    function test_Timeout_ProposerMissesDissection() public {
        uint256 id = _create(game, honestHash(100), 100);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DeadlineNotPassed.selector, uint64(block.timestamp + TIMEOUT)));
        game.claimTimeout(id);
        vm.warp(block.timestamp + TIMEOUT + 1);
        bytes32[] memory hs = new bytes32[](K - 1);
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DeadlinePassed.selector, uint64(block.timestamp - 1)));
        game.dissect(id, honestHash(100), hs);
        vm.prank(stranger);
        game.claimTimeout(id);
        assertEq(outcome(id), 2);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.claimTimeout(id);
    }

    function test_Timeout_ChallengerMissesPick() public {
        uint256 id = _create(game, honestHash(100), 100);
        bytes32[] memory hs = _dissect(id);
        vm.warp(block.timestamp + TIMEOUT); // exactly at the deadline: still in time
        vm.expectRevert();
        game.claimTimeout(id);
        vm.warp(block.timestamp + 1);
        vm.prank(challenger);
        vm.expectRevert();
        game.pick(id, honestHash(100), hs, 0);
        game.claimTimeout(id);
        assertEq(outcome(id), 1);
    }

    function test_Timeout_ChallengerMissesStep() public {
        uint256 id = _create(game, honestHash(1), 1);
        vm.warp(block.timestamp + TIMEOUT + 1);
        game.claimTimeout(id);
        assertEq(outcome(id), 1);
    }

    function test_StepAfterDeadlineWinsIfNoTimeoutClaimed() public {
        uint256 id = _create(game, keccak256("wrong"), 1);
        vm.warp(block.timestamp + TIMEOUT + 100);
        game.step(id, keccak256("wrong"), honestState(0), hex"");
        assertEq(outcome(id), 2);
    }

    function test_DeadlineResetsEachMove() public {
        uint256 id = _create(game, honestHash(100), 100);
        vm.warp(block.timestamp + TIMEOUT);
        bytes32[] memory hs = _dissect(id);
        assertEq(uint256(game.getGame(id).deadline), block.timestamp + TIMEOUT);
        vm.warp(block.timestamp + TIMEOUT);
        vm.prank(challenger);
        game.pick(id, honestHash(100), hs, 3);
        assertEq(uint256(game.getGame(id).deadline), block.timestamp + TIMEOUT);
        assertTrue(game.getGame(id).turn == IDisputeGame.Turn.Dissect);
    }

    // --- move validation ---------------------------------------------------------------------------------
    function _dissect(uint256 id) internal returns (bytes32[] memory hs) {
        IDisputeGame.Game memory g = game.getGame(id);
        uint64[] memory pts = game.dissectionPoints(g.lo, g.hi);
        hs = new bytes32[](pts.length - 2);
        for (uint256 i = 0; i < hs.length; i++) {
            hs[i] = honestHash(pts[i + 1]);
        }
        vm.prank(proposer);
        game.dissect(id, g.disputedHash, hs);
    }

    function test_Dissect_Validation() public {
        bytes32 claim = honestHash(100);
        uint256 id = _create(game, claim, 100);
        bytes32[] memory hs = new bytes32[](K - 1);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.NotProposer.selector, challenger));
        game.dissect(id, claim, hs);
        bytes32[] memory short = new bytes32[](K - 2);
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.WrongHashCount.selector, K - 1, K - 2));
        game.dissect(id, claim, short);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, uint256(99)));
        game.dissect(99, claim, hs);
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputedHashMismatch.selector, claim, honestHash(99)));
        game.dissect(id, honestHash(99), hs);
        _dissect(id);
        vm.prank(proposer);
        vm.expectRevert(
            abi.encodeWithSelector(IDisputeGame.WrongTurn.selector, IDisputeGame.Turn.Dissect, IDisputeGame.Turn.Pick)
        );
        game.dissect(id, claim, hs);
    }

    function test_Pick_Validation() public {
        bytes32 claim = honestHash(100);
        uint256 id = _create(game, claim, 100);
        bytes32[] memory hs = _dissect(id);
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.NotChallenger.selector, proposer));
        game.pick(id, claim, hs, 0);
        bytes32[] memory other = new bytes32[](hs.length);
        vm.prank(challenger);
        vm.expectRevert(IDisputeGame.DissectionMismatch.selector);
        game.pick(id, claim, other, 0);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.IndexOutOfRange.selector, K, K));
        game.pick(id, claim, hs, K);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputedHashMismatch.selector, claim, hs[0]));
        game.pick(id, hs[0], hs, 0);
        vm.prank(challenger);
        vm.expectRevert(
            abi.encodeWithSelector(IDisputeGame.WrongTurn.selector, IDisputeGame.Turn.Step, IDisputeGame.Turn.Pick)
        );
        game.step(id, claim, honestState(0), hex"");
    }

    function test_Pick_UpdatesInterval() public {
        uint256 id = _create(game, keccak256("claim"), 160);
        bytes32[] memory hs = _dissect(id);
        // first sub-interval: agreed stays the start, disputed becomes the hash at 10
        uint256 snap = vm.snapshotState();
        vm.prank(challenger);
        game.pick(id, keccak256("claim"), hs, 0);
        IDisputeGame.Game memory g = game.getGame(id);
        assertEq(uint256(g.lo), 0);
        assertEq(uint256(g.hi), 10);
        assertEq(g.agreedHash, honestHash(0));
        assertEq(g.disputedHash, honestHash(10));
        vm.revertToState(snap);
        // last sub-interval: agreed is the hash at 150, disputed stays the claim
        vm.prank(challenger);
        game.pick(id, keccak256("claim"), hs, K - 1);
        g = game.getGame(id);
        assertEq(uint256(g.lo), 150);
        assertEq(uint256(g.hi), 160);
        assertEq(g.agreedHash, honestHash(150));
        assertEq(g.disputedHash, keccak256("claim"));
        vm.revertToState(snap);
        vm.prank(challenger);
        game.pick(id, keccak256("claim"), hs, 5);
        g = game.getGame(id);
        assertEq(uint256(g.lo), 50);
        assertEq(uint256(g.hi), 60);
        assertEq(g.agreedHash, honestHash(50));
        assertEq(g.disputedHash, honestHash(60));
    }

    function test_Step_Validation() public {
        uint256 id = _create(game, honestHash(1), 1);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.BadStateLength.selector, uint256(10)));
        game.step(id, honestHash(1), new bytes(10), hex"");
        bytes memory wrong = honestState(1);
        vm.expectRevert(
            abi.encodeWithSelector(IDisputeGame.PreStateMismatch.selector, honestHash(0), honestHash(1))
        );
        game.step(id, honestHash(1), wrong, hex"");
        vm.expectRevert(
            abi.encodeWithSelector(IDisputeGame.DisputedHashMismatch.selector, honestHash(1), honestHash(2))
        );
        game.step(id, honestHash(2), honestState(0), hex""); // the right pre-state, another dispute
    }

    function test_Step_RevertsUntilPreimagePartLoaded_DeadlineStillApplies() public {
        uint256 id = _create(game, keccak256("wrong"), 1);
        fakeVm.setMissingPart(true);
        vm.expectRevert(abi.encodeWithSelector(FakeVM.PreimageNotLoaded.selector, bytes32(0), uint256(0)));
        game.step(id, keccak256("wrong"), honestState(0), hex"");
        assertTrue(game.getGame(id).status == IDisputeGame.Status.Active);
        // the challenger did not get the part loaded in time: the proposer wins by timeout
        uint256 snap = vm.snapshotState();
        vm.warp(block.timestamp + TIMEOUT + 1);
        game.claimTimeout(id);
        assertEq(outcome(id), 1);
        vm.revertToState(snap);
        // loaded in time: the step settles it
        fakeVm.setMissingPart(false);
        game.step(id, keccak256("wrong"), honestState(0), hex"");
        assertEq(outcome(id), 2);
    }

    function test_Step_LoadsLocalDataOfTheGameContext() public {
        // a pre-state with local key 2 (input id) selected
        bytes32 key = bytes32((uint256(1) << 248) | 2);
        bytes memory pre = FakeTrace.state(HONEST, 0, exitStep, 0, key);
        bytes32 preHash = FakeTrace.hashOf(pre);
        uint256 id = game.createGame(proposer, challenger, preHash, keccak256("x"), 1);
        game.step(id, keccak256("x"), pre, hex"");
        FakeOracle oracle = fakeVm.fakeOracle();
        assertEq(oracle.localData(address(game), bytes32(id), 2), keccak256(abi.encode(id, uint256(2))));
        assertEq(oracle.localWrites(), 1);
        // an unknown local index is not loaded (the verifier would revert for a read of it)
        bytes32 key9 = bytes32((uint256(1) << 248) | 9);
        bytes memory pre9 = FakeTrace.state(HONEST, 0, exitStep, 0, key9);
        uint256 id9 = game.createGame(proposer, challenger, FakeTrace.hashOf(pre9), keccak256("x"), 1);
        game.step(id9, keccak256("x"), pre9, hex"");
        assertEq(oracle.localWrites(), 1);
    }

    // --- cancellation ---------------------------------------------------------------------------------------
    function test_Cancel() public {
        uint256 id = _create(game, honestHash(100), 100);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.NotCreator.selector, stranger));
        game.cancel(id);
        game.cancel(id);
        assertTrue(game.getGame(id).status == IDisputeGame.Status.Cancelled);
        bytes32[] memory hs = new bytes32[](K - 1);
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.dissect(id, honestHash(100), hs);
        vm.warp(block.timestamp + TIMEOUT + 1);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.claimTimeout(id);
        assertEq(resolutions, 0);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.GameNotActive.selector, id));
        game.cancel(id);
    }

    // --- gas ----------------------------------------------------------------------------------------------------
    /// @dev The gas of a whole 15M-step dispute (every move but the final step) for each arity; run with -vv.
    function test_Gas_15MStepDisputeByArity() public {
        uint256 bestK;
        uint256 bestGas = type(uint256).max;
        for (uint256 k = 2; k <= 64; k *= 2) {
            GasTally memory worst = _gasForArity(k, 15_000_000);
            log(string.concat("K=", vm.toString(k), " rounds"), worst.rounds);
            log(string.concat("K=", vm.toString(k), " moves"), worst.moves);
            log(string.concat("K=", vm.toString(k), " total gas (cancun)"), worst.cancun);
            log(string.concat("K=", vm.toString(k), " total gas (prague, EIP-7623 floor)"), worst.prague);
            log(string.concat("K=", vm.toString(k), " largest move"), worst.maxMove);
            if (worst.prague < bestGas) {
                bestGas = worst.prague;
                bestK = k;
            }
        }
        log("best K (prague)", bestK);
    }

    /// @dev The most expensive of a few games (different tamper points) at arity k.
    function _gasForArity(uint256 k, uint64 steps) internal returns (GasTally memory worst) {
        exitStep = uint32(steps - steps / 16);
        DisputeGame g = _deploy(k);
        for (uint256 r = 0; r < 4; r++) {
            tamperAt = uint64(uint256(keccak256(abi.encode(k, r))) % steps) + 1;
            uint256 id = g.createGame(proposer, challenger, honestHash(0), tamperedHash(steps), steps);
            GasTally memory t = play(g, id, tamperedHash, honestHash, false);
            assertEq(outcomes[address(g)][id], 2);
            if (t.prague > worst.prague) worst = t;
        }
    }
}


/// @notice The game with the real verifier (MIPS.sol + PreimageOracle.sol): a one-step game whose pre-state
/// reads local datum 3 (the claimed output hash) through the oracle, so the step exercises the lazy local-data
/// load for the game's context. Fixture from the Python reference (mipsvm.witness.make_proof): `syscall` at
/// 0x400000 with v0 = 4003 (read), a0 = 5, a1 = 0x10000000, a2 = 32, preimageKey = local key 3, local 3 =
/// 0x11..11.
contract DisputeGameWithMIPSTest is Test, IDisputeGameCreator {
    bytes32 internal constant OUTPUT_HASH = 0x1111111111111111111111111111111111111111111111111111111111111111;
    bytes32 internal constant POST = 0x03b138d4d5aff89bca4cdee6db8dd486bbda77228d06f85deb648d3cbfcd3f37;

    PreimageOracle internal oracle;
    MIPS internal mips;
    DisputeGame internal game;
    address internal proposer = address(0xA11CE);
    address internal challenger = address(0xB0B);
    bool internal knowsOutput = true;
    mapping(uint256 gameId => uint256) internal outcome; // 1 proposer won, 2 challenger won

    function setUp() public {
        oracle = new PreimageOracle();
        mips = new MIPS(oracle);
        game = new DisputeGame(IMIPS(address(mips)), 16, 1 hours);
    }

    function onGameResolved(uint256 gameId, bool proposerWon) external {
        outcome[gameId] = proposerWon ? 1 : 2;
    }

    function gameLocalData(uint256, uint256 ident) external view returns (bool, bytes32) {
        if (ident == 3 && knowsOutput) return (true, OUTPUT_HASH);
        return (false, bytes32(0));
    }

    function _pre() internal pure returns (bytes memory) {
        return bytes.concat(
            hex"ca1de23f66a2eebdf6eca682a891ddb2eb85c5e32722e6a9a180a60d94ced0d401000000000000000000000000000000"
            hex"000000000000000000000000000000030000000000400000004000040000000000000000200000000000000000000000"
            hex"0000000000000000000000000fa300000000000000051000000000000020000000000000000000000000000000000000"
            hex"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
            hex"00000000000000000000000000000000000000000000000000000000000000000000"
        );
    }

    function _proof() internal pure returns (bytes memory) {
        return bytes.concat(
            hex"0000000c0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
            hex"00000000000000000000000000000000ad3228b676f7d3cd4284a5443f17f1962b36e491b30a40b2405849e597ba5fb5"
            hex"b4c11951957c6f8f642c4af61cd6b24640fec6dc7fc607ee8206a99e92410d3021ddb9a356815c3fac1026b6dec5df31"
            hex"24afbadb485c9ba5a3e3398a04b7ba85e58769b32a1beaf1ea27375a44095a0d1fb664ce2dd358e7fcbfb78c26a19344"
            hex"0eb01ebfc9ed27500cd4dfc979272d1f0913cc9f66540d7e8005811109e1cf2d887c22bd8750d34016ac3c66b5ff102d"
            hex"acdd73f6b014e710b51e8022af9a1968ffd70157e48063fc33c97a050f7f640233bf646cc98d9524c6b92bcf3ab56f83"
            hex"9867cc5f7f196b93bae1e27e6320742445d290f2263827498b54fec539f756afcefad4e508c098b9a7e1d8feb19955fb"
            hex"02ba9675585078710969d3440f5054e0f9dc3e7fe016e050eff260334f18a5d4fe391d82092319f5964f2e2eb7c1c3a5"
            hex"f8b13a49e282f609c317a833fb8d976d11517c571d1221a265d25af778ecf8923490c6ceeb450aecdc82e28293031d10"
            hex"c7d73bf85e57bf041a97360aa2c5d99cc1df82d9c4b87413eae2ef048f94b4d3554cea73d92b0f7af96e0271c691e2bb"
            hex"5c67add7c6caf302256adedf7ab114da0acfe870d449a3a489f781d659e8beccda7bce9f4e8618b6bd2f4132ce798cdc"
            hex"7a60e7e1460a7299e3c6342a579626d22733e50f526ec2fa19a22b31e8ed50f23cd1fdf94c9154ed3a7609a2f1ff981f"
            hex"e1d3b5c807b281e4683cc6d6315cf95b9ade8641defcb32372f1c126e398ef7a5a2dce0a8a7f68bb74560f8f71837c2c"
            hex"2ebbcbf7fffb42ae1896f13f7c7479a0b46a28b6f55540f89444f63de0378e3d121be09e06cc9ded1c20e65876d36aa0"
            hex"c65e9645644786b620e2dd2ad648ddfcbf4a7e5b1a3a4ecfe7f64667a3f0b7e2f4418588ed35a2458cffeb39b93d26f1"
            hex"8d2ab13bdce6aee58e7b99359ec2dfd95a9c16dc00d6ef18b7933a6f8dc65ccb55667138776f7dea101070dc8796e377"
            hex"4df84f40ae0c8229d0d6069e5c8f39a7c299677a09d367fc7b05e3bc380ee652cdc72595f74c7b1043d0e1ffbab73464"
            hex"8c838dfb0527d971b602bc216c9619ef0abf5ac974a1ed57f4050aa510dd9c74f508277b39d7973bb2dfccc5eeb0618d"
            hex"b8cd74046ff337f0a7bf2c8e03e10f642c1886798d71806ab1e888d9e5ee87d000000000000000000000000000000000"
            hex"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
            hex"ad3228b676f7d3cd4284a5443f17f1962b36e491b30a40b2405849e597ba5fb5b4c11951957c6f8f642c4af61cd6b246"
            hex"40fec6dc7fc607ee8206a99e92410d3021ddb9a356815c3fac1026b6dec5df3124afbadb485c9ba5a3e3398a04b7ba85"
            hex"e58769b32a1beaf1ea27375a44095a0d1fb664ce2dd358e7fcbfb78c26a193440eb01ebfc9ed27500cd4dfc979272d1f"
            hex"0913cc9f66540d7e8005811109e1cf2d887c22bd8750d34016ac3c66b5ff102dacdd73f6b014e710b51e8022af9a1968"
            hex"ffd70157e48063fc33c97a050f7f640233bf646cc98d9524c6b92bcf3ab56f839867cc5f7f196b93bae1e27e63207424"
            hex"45d290f2263827498b54fec539f756afcefad4e508c098b9a7e1d8feb19955fb02ba9675585078710969d3440f5054e0"
            hex"f9dc3e7fe016e050eff260334f18a5d4fe391d82092319f5964f2e2eb7c1c3a5f8b13a49e282f609c317a833fb8d976d"
            hex"11517c571d1221a265d25af778ecf8923490c6ceeb450aecdc82e28293031d10c7d73bf85e57bf041a97360aa2c5d99c"
            hex"c1df82d9c4b87413eae2ef048f94b4d3554cea73d92b0f7af96e0271c691e2bb5c67add7c6caf302256adedf7ab114da"
            hex"0acfe870d449a3a489f781d659e8beccda7bce9f4e8618b6bd2f4132ce798cdc7a60e7e1460a7299e3c6342a579626d2"
            hex"2733e50f526ec2fa19a22b31e8ed50f23cd1fdf94c9154ed3a7609a2f1ff981fe1d3b5c807b281e4683cc6d6315cf95b"
            hex"9ade8641defcb32372f1c126e398ef7a5a2dce0a8a7f68bb74560f8f71837c2c2ebbcbf7fffb42ae1896f13f7c7479a0"
            hex"b46a28b6f55540f89444f63de0378e3d121be09e06cc9ded1c20e65876d36aa0c65e9645644786b620e2dd2ad648ddfc"
            hex"bf4a7e5b1a3a4ecfe7f64667a3f0b7e2f4418588ed35a2458cffeb39b93d26f18d2ab13bdce6aee58e7b99359ec2dfd9"
            hex"5a9c16dc00d6ef18b7933a6f8dc65ccb55667138776f7dea101070dc8796e3778efda38e304d09e2da8a815ac9c8cb3a"
            hex"82e7854890a6726d47d30afa7a43b253cdc72595f74c7b1043d0e1ffbab734648c838dfb0527d971b602bc216c9619ef"
            hex"0abf5ac974a1ed57f4050aa510dd9c74f508277b39d7973bb2dfccc5eeb0618db8cd74046ff337f0a7bf2c8e03e10f64"
            hex"2c1886798d71806ab1e888d9e5ee87d0"
        );
    }

    function test_OracleIsTheVerifiers() public view {
        assertEq(address(game.oracle()), address(oracle));
    }

    /// The game has no state hash of its own: the verifier hashes the pre-state, so a malformed one fails
    /// with the verifier's error (not as a mismatch of a hash the game computed its own way).
    function test_Step_TheVerifierHashesThePreState() public {
        bytes memory bad = _pre();
        bad[89] = 0x02; // exited: neither 0 nor 1
        uint256 id = game.createGame(proposer, challenger, keccak256(bad), POST, 1);
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidExitedFlag.selector, 2));
        game.step(id, POST, bad, _proof());
    }

    function test_RealStep_ProposerRight() public {
        uint256 id = game.createGame(proposer, challenger, mips.stateHash(_pre()), POST, 1);
        game.step(id, POST, _pre(), _proof());
        assertEq(outcome[id], 1);
        (bytes32 part, uint256 len) = oracle.readPreimage(localizeKey(localKey(3), bytes32(id), address(game)), 8);
        assertEq(part, OUTPUT_HASH);
        assertEq(len, 40);
    }

    function test_RealStep_ProposerWrong() public {
        uint256 id = game.createGame(proposer, challenger, mips.stateHash(_pre()), keccak256("wrong"), 1);
        game.step(id, keccak256("wrong"), _pre(), _proof());
        assertEq(outcome[id], 2);
    }

    function test_RealStep_RevertsWithoutLocalData() public {
        knowsOutput = false;
        uint256 id = game.createGame(proposer, challenger, mips.stateHash(_pre()), POST, 1);
        vm.expectPartialRevert(IPreimageOracle.PreimageNotLoaded.selector);
        game.step(id, POST, _pre(), _proof());
    }
}
