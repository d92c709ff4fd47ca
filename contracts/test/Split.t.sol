// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {FakeVM, FakeTrace} from "./utils/FakeVM.sol";
import {BrokenSplitGame, UnboundOutputMarket} from "./utils/BrokenSplit.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
import {DisputeGame} from "../src/DisputeGame.sol";
import {InferenceMarket} from "../src/InferenceMarket.sol";
import {SlotTree} from "../src/SlotTree.sol";
import {IDisputeGame, IDisputeGameCreator} from "../src/interfaces/IDisputeGame.sol";
import {IInferenceMarket} from "../src/interfaces/IInferenceMarket.sol";
import {IMIPS} from "../src/interfaces/IMIPS.sol";

/// @notice Synthetic split games: a schedule of N executions over slot trees. Execution j < N writes slot 2 + j
/// and reads slot 2 + j - 1 (slot 0, the input, for j = 1); execution N (OUTPUT) writes slot 1 = keccak256(output)
/// and reads slot 1 + N. A lying party's values differ from execution `lieAt` on. The bottom level plays the
/// synthetic VM traces of `GamePlayer`: the truth is the honest trace, a liar claims the tampered one.
abstract contract SplitPlayer is MarketFixture {
    uint64 internal constant N = 20;
    uint64 internal constant BOTTOM = 6_000;
    bytes internal constant OUTPUT = "the honest output";
    bytes internal constant BAD_OUTPUT = "a wrong output";

    bytes32 internal inputId;
    uint64 internal lieAt = 7;
    bool internal proposerLies;
    bool internal challengerLies;

    function _value(uint64 j, bool lies) internal view returns (bytes32) {
        bool bad = lies && j >= lieAt;
        if (j == N) return keccak256(bad ? BAD_OUTPUT : OUTPUT);
        return keccak256(abi.encode(bad ? "bad" : "good", j));
    }

    function _slot(uint64 j) internal pure returns (uint32) {
        return j == N ? uint32(1) : uint32(2 + j);
    }

    function _reads(uint64 j) internal pure returns (uint32[] memory s) {
        s = new uint32[](1);
        s[0] = j == 1 ? 0 : uint32(2 + j - 1);
    }

    /// @dev Slot values of S_k (slots 0 .. 2 + N).
    function _vals(uint64 k, bool lies) internal view returns (bytes32[] memory v) {
        v = new bytes32[](3 + N);
        v[0] = inputId;
        for (uint64 j = 1; j <= k && j <= N; j++) {
            v[_slot(j)] = _value(j, lies);
        }
    }

    function _sub(bytes32[] memory v, uint256 level, uint256 index) internal pure returns (bytes32) {
        if ((index << level) >= v.length) {
            bytes32 z;
            for (uint256 l = 0; l < level; l++) {
                z = keccak256(abi.encodePacked(z, z));
            }
            return z;
        }
        if (level == 0) return v[index];
        return keccak256(abi.encodePacked(_sub(v, level - 1, 2 * index), _sub(v, level - 1, 2 * index + 1)));
    }

    function _root(uint64 k, bool lies) internal view returns (bytes32) {
        return _sub(_vals(k, lies), SlotTree.DEPTH, 0);
    }

    function _proof(bytes32[] memory v, uint256 slot) internal pure returns (bytes32[14] memory p) {
        for (uint256 l = 0; l < SlotTree.DEPTH; l++) {
            p[l] = _sub(v, l, (slot >> l) ^ 1);
        }
    }

    function proposerRoot(uint64 k) internal view returns (bytes32) {
        return _root(k, proposerLies);
    }

    function challengerRoot(uint64 k) internal view returns (bytes32) {
        return _root(k, challengerLies);
    }

    /// @dev Plays the top level to its leaf (or the end).
    function _playTop(DisputeGame g_, uint256 id) internal {
        IDisputeGame.Game memory g = g_.getGame(id);
        bytes32[] memory posted;
        while (g.status == IDisputeGame.Status.Active && g.top && g.turn != IDisputeGame.Turn.Open) {
            uint64[] memory pts = g_.dissectionPoints(g.lo, g.hi);
            if (g.turn == IDisputeGame.Turn.Dissect) {
                posted = new bytes32[](pts.length - 2);
                for (uint256 i = 0; i < posted.length; i++) {
                    posted[i] = proposerRoot(pts[i + 1]);
                }
                vm.prank(g.proposer);
                g_.dissect(id, g.disputedHash, posted);
            } else if (g.turn == IDisputeGame.Turn.Pick) {
                uint256 k = pts.length - 1;
                uint256 index = k - 1;
                for (uint256 j = 0; j + 1 < k; j++) {
                    if (challengerRoot(pts[j + 1]) != posted[j]) {
                        index = j;
                        break;
                    }
                }
                vm.prank(g.challenger);
                g_.pick(id, g.disputedHash, posted, index);
            } else {
                break;
            }
            g = g_.getGame(id);
        }
    }

    /// @dev The proposer's record of execution `j` from its own states, with its proofs.
    function _record(uint64 j, bool lies)
        internal
        view
        returns (IDisputeGame.ExecRecord memory r, bytes32[14] memory outProof, bytes32[14][] memory readProofs)
    {
        bytes32[] memory before = _vals(j - 1, lies);
        uint32[] memory reads = _reads(j);
        bytes32[] memory values = new bytes32[](reads.length);
        readProofs = new bytes32[14][](reads.length);
        for (uint256 i = 0; i < reads.length; i++) {
            values[i] = before[reads[i]];
            readProofs[i] = _proof(before, reads[i]);
        }
        r = IDisputeGame.ExecRecord(j, _slot(j), before[_slot(j)], _value(j, lies), reads, values);
        outProof = _proof(before, _slot(j));
    }

    function _open(DisputeGame g_, uint256 id, bytes32 bottomClaim) internal {
        IDisputeGame.Game memory g = g_.getGame(id);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(g.hi, proposerLies);
        vm.prank(g.proposer);
        g_.open(id, g.disputedHash, r, op, rp, bottomClaim, BOTTOM);
    }

    function bottomTrue(uint64 n) internal view returns (bytes32) {
        return honestHash(n);
    }

    function bottomLie(uint64 n) internal view returns (bytes32) {
        return tamperedHash(n);
    }
}

contract SplitGameTest is SplitPlayer, IDisputeGameCreator {
    address internal proposer;
    address internal challenger;
    mapping(uint256 => uint256) internal outcomes; // 1 proposer, 2 challenger

    function setUp() public {
        vm.warp(1_000_000);
        exitStep = 5_000;
        tamperAt = 3_000;
        fakeVm = new FakeVM();
        execProgram = honestHash(0);
        game = new DisputeGame(IMIPS(address(fakeVm)), 16, TIMEOUT);
        proposer = makeAddr("proposer");
        challenger = makeAddr("challenger");
        inputId = keccak256("input blob id");
    }

    function onGameResolved(uint256 gameId, bool proposerWon) external {
        outcomes[gameId] = proposerWon ? 1 : 2;
    }

    function gameLocalData(uint256, uint256 ident) external pure returns (bool, bytes32) {
        if (ident == 1) return (true, keccak256("model id"));
        return (false, bytes32(0));
    }

    function _start(DisputeGame g_) internal returns (uint256) {
        return g_.createSplitGame(proposer, challenger, execProgram, _root(0, false), proposerRoot(N), N);
    }

    function _deployBroken(uint256 flags) internal returns (DisputeGame) {
        return new BrokenSplitGame(IMIPS(address(fakeVm)), 16, TIMEOUT, flags);
    }

    // --- the whole game -----------------------------------------------------------------------------------

    function test_InitialRootIsTheMarketsAndTheTree() public view {
        assertEq(_root(0, false), _sub(_vals(0, false), 14, 0));
        bytes32 node = inputId;
        bytes32 z;
        for (uint256 l = 0; l < 14; l++) {
            node = keccak256(abi.encodePacked(node, z));
            z = keccak256(abi.encodePacked(z, z));
        }
        assertEq(_root(0, false), node);
    }

    function test_HonestChallengerWinsBothLevels() public {
        proposerLies = true;
        uint256 id = _start(game);
        _playTop(game, id);
        IDisputeGame.Game memory g = game.getGame(id);
        assertEq(uint8(g.turn), uint8(IDisputeGame.Turn.Open));
        assertEq(g.hi, lieAt, "the leaf is the first wrong execution");
        _open(game, id, bottomLie(BOTTOM)); // the node guest rejects the record: the proposer must lie again
        g = game.getGame(id);
        assertTrue(!g.top && g.split);
        assertEq(g.agreedHash, execProgram);
        assertEq(g.hi, BOTTOM);
        play(game, id, bottomLie, bottomTrue, false);
        assertEq(outcomes[id], 2);
        assertEq(uint8(game.getGame(id).status), uint8(IDisputeGame.Status.ChallengerWon));
    }

    function test_HonestProposerWinsAgainstALyingChallenger() public {
        challengerLies = true;
        uint256 id = _start(game);
        _playTop(game, id);
        _open(game, id, bottomTrue(BOTTOM));
        play(game, id, bottomTrue, bottomLie, false);
        assertEq(outcomes[id], 1);
    }

    function test_WrongOutputOnlyIsCaughtAtTheOutputExecution() public {
        lieAt = N;
        proposerLies = true;
        uint256 id = _start(game);
        _playTop(game, id);
        assertEq(game.getGame(id).hi, N);
        _open(game, id, bottomLie(BOTTOM));
        play(game, id, bottomLie, bottomTrue, false);
        assertEq(outcomes[id], 2);
    }

    function test_OneExecutionClaimIsATopLeaf() public {
        uint256 id = game.createSplitGame(proposer, challenger, execProgram, _root(0, false), _root(1, false), 1);
        assertEq(uint8(game.getGame(id).turn), uint8(IDisputeGame.Turn.Open));
    }

    function test_ProposerThatCannotOpenLosesByTimeout() public {
        proposerLies = true;
        uint256 id = _start(game);
        _playTop(game, id);
        vm.warp(block.timestamp + TIMEOUT + 1);
        game.claimTimeout(id);
        assertEq(outcomes[id], 2);
    }

    function test_OpenOnlyByTheProposerBeforeItsDeadline() public {
        uint256 id = _start(game);
        challengerLies = true;
        _playTop(game, id);
        IDisputeGame.Game memory g = game.getGame(id);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(g.hi, false);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.NotProposer.selector, challenger));
        game.open(id, g.disputedHash, r, op, rp, bottomTrue(BOTTOM), BOTTOM);
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DisputedHashMismatch.selector, g.disputedHash, g.agreedHash));
        game.open(id, g.agreedHash, r, op, rp, bottomTrue(BOTTOM), BOTTOM);
        vm.warp(block.timestamp + TIMEOUT + 1);
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.DeadlinePassed.selector, g.deadline));
        game.open(id, g.disputedHash, r, op, rp, bottomTrue(BOTTOM), BOTTOM);
    }

    function test_OpenStoresTheRecordKeyOfTheRecordBytes() public {
        challengerLies = true;
        uint256 id = _start(game);
        _playTop(game, id);
        _open(game, id, bottomTrue(BOTTOM));
        IDisputeGame.Game memory g = game.getGame(id);
        (IDisputeGame.ExecRecord memory r,,) = _record(lieAt, false);
        bytes memory rec = abi.encodePacked(r.exec, r.outSlot, r.oldValue, r.newValue, uint8(1), r.readSlots[0], r.readValues[0]);
        assertEq(rec.length, 77 + 36);
        assertEq(g.recordKey, bytes32((uint256(keccak256(rec)) & type(uint248).max) | (uint256(2) << 248)));
    }

    // --- attacks: each is rejected here and lands on a game without the rule (BrokenSplitGame) --------------

    /// @dev A liar whose S_{k+1} changes another slot than the record's (here: also the next one) opens with
    /// the record of its S_k only: the new value's proof does not give its disputed root.
    function _attackWrongSlotProof(DisputeGame g_) internal returns (bool landed) {
        proposerLies = true;
        uint256 id = _start(g_);
        _playTop(g_, id);
        IDisputeGame.Game memory g = g_.getGame(id);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(g.hi, false);
        vm.prank(proposer);
        (landed,) = address(g_).call(
            abi.encodeCall(DisputeGame.open, (id, g.disputedHash, r, op, rp, bottomTrue(BOTTOM), BOTTOM))
        );
        if (landed) {
            play(g_, id, bottomTrue, bottomTrue, false); // the honest record is accepted by the guest
            landed = outcomes[id] == 1;
        }
    }

    function test_Attack_WrongSlotProof_Rejected() public {
        assertTrue(!_attackWrongSlotProof(game));
    }

    function test_Attack_WrongSlotProof_LandsWithoutTheRule() public {
        assertTrue(_attackWrongSlotProof(_deployBroken(1)));
    }

    /// @dev The record of another execution (here the one before, whose values the liar reuses).
    function _attackExecOutOfOrder(DisputeGame g_) internal returns (bool landed) {
        challengerLies = true;
        uint256 id = _start(g_);
        _playTop(g_, id);
        IDisputeGame.Game memory g = g_.getGame(id);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(g.hi, false);
        r.exec = g.hi + 1;
        vm.prank(proposer);
        (landed,) = address(g_).call(
            abi.encodeCall(DisputeGame.open, (id, g.disputedHash, r, op, rp, bottomTrue(BOTTOM), BOTTOM))
        );
    }

    function test_Attack_ExecOutOfOrder_Rejected() public {
        assertTrue(!_attackExecOutOfOrder(game));
    }

    function test_Attack_ExecOutOfOrder_LandsWithoutTheRule() public {
        assertTrue(_attackExecOutOfOrder(_deployBroken(2)));
    }

    /// @dev An input the agreed state does not hold: the read value changed, its proof from another state.
    function _attackReadNotInSk(DisputeGame g_) internal returns (bool landed) {
        challengerLies = true;
        uint256 id = _start(g_);
        _playTop(g_, id);
        IDisputeGame.Game memory g = g_.getGame(id);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(g.hi, false);
        r.readValues[0] = keccak256("a value S_k does not hold");
        vm.prank(proposer);
        (landed,) = address(g_).call(
            abi.encodeCall(DisputeGame.open, (id, g.disputedHash, r, op, rp, bottomTrue(BOTTOM), BOTTOM))
        );
    }

    function test_Attack_ReadNotInSk_Rejected() public {
        assertTrue(!_attackReadNotInSk(game));
    }

    function test_Attack_ReadNotInSk_LandsWithoutTheRule() public {
        assertTrue(_attackReadNotInSk(_deployBroken(4)));
    }

    /// @dev The proposer, about to lose the bottom bisection, opens again to restart it with another claim.
    function _attackOpenTwice(DisputeGame g_) internal returns (bool landed) {
        proposerLies = true;
        uint256 id = _start(g_);
        _playTop(g_, id);
        IDisputeGame.Game memory leaf = g_.getGame(id);
        _open(g_, id, bottomLie(BOTTOM));
        IDisputeGame.Game memory g = g_.getGame(id);
        bytes32[] memory posted = new bytes32[](15);
        uint64[] memory pts = g_.dissectionPoints(g.lo, g.hi);
        for (uint256 i = 0; i < 15; i++) {
            posted[i] = bottomLie(pts[i + 1]);
        }
        vm.prank(proposer);
        g_.dissect(id, g.disputedHash, posted);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(leaf.hi, true);
        vm.prank(proposer);
        (landed,) = address(g_).call(
            abi.encodeCall(DisputeGame.open, (id, leaf.disputedHash, r, op, rp, bottomLie(BOTTOM - 1), BOTTOM - 1))
        );
        if (landed) assertEq(g_.getGame(id).hi, BOTTOM - 1, "the bottom level restarted");
    }

    function test_Attack_OpenTwice_Rejected() public {
        assertTrue(!_attackOpenTwice(game));
    }

    function test_Attack_OpenTwice_LandsWithoutTheRule() public {
        assertTrue(_attackOpenTwice(_deployBroken(8)));
    }

    /// @dev A liar claims the node guest's true verdict, a rejection (INVALID exit): it would win the bottom
    /// bisection with a true claim.
    function _attackInvalidBottomClaim(DisputeGame g_) internal returns (bool landed) {
        proposerLies = true;
        uint256 id = _start(g_);
        _playTop(g_, id);
        bytes32 rejected = FakeTrace.hashAt(HONEST, BOTTOM, exitStep, 1);
        IDisputeGame.Game memory g = g_.getGame(id);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(g.hi, true);
        vm.prank(proposer);
        (landed,) = address(g_).call(abi.encodeCall(DisputeGame.open, (id, g.disputedHash, r, op, rp, rejected, BOTTOM)));
    }

    function test_Attack_BottomClaimNotValid_Rejected() public {
        assertTrue(!_attackInvalidBottomClaim(game));
    }

    function test_Attack_BottomClaimNotValid_LandsWithoutTheRule() public {
        assertTrue(_attackInvalidBottomClaim(_deployBroken(16)));
    }

    function test_BottomStepsBounded() public {
        challengerLies = true;
        uint256 id = _start(game);
        _playTop(game, id);
        IDisputeGame.Game memory g = game.getGame(id);
        (IDisputeGame.ExecRecord memory r, bytes32[14] memory op, bytes32[14][] memory rp) = _record(g.hi, false);
        uint64 tooMany = game.MAX_EXEC_STEPS() + 1;
        vm.prank(proposer);
        vm.expectRevert(abi.encodeWithSelector(IDisputeGame.BadBottomClaim.selector, bottomTrue(BOTTOM), tooMany));
        game.open(id, g.disputedHash, r, op, rp, bottomTrue(BOTTOM), tooMany);
    }

    /// @dev A step before the bottom level is open: a game whose top leaf is a Step turn makes the challenger
    /// due on a state root no VM state hashes to, so a liar that cannot open wins by the challenger's timeout.
    function _attackStepBeforeOpen(DisputeGame g_) internal returns (bool proposerWon) {
        proposerLies = true;
        uint256 id = _start(g_);
        _playTop(g_, id);
        IDisputeGame.Game memory g = g_.getGame(id);
        vm.prank(challenger);
        (bool stepped,) = address(g_).call(abi.encodeCall(DisputeGame.step, (id, g.disputedHash, honestState(0), hex"")));
        assertTrue(!stepped, "no VM state is a slot root");
        vm.warp(block.timestamp + TIMEOUT + 1);
        g_.claimTimeout(id);
        proposerWon = outcomes[id] == 1;
    }

    function test_Attack_StepBeforeOpen_Rejected() public {
        assertTrue(!_attackStepBeforeOpen(game));
    }

    function test_Attack_StepBeforeOpen_LandsWithoutTheRule() public {
        assertTrue(_attackStepBeforeOpen(_deployBroken(32)));
    }
}

/// @notice The market's split claims: the output bound by SLOT_OUTPUT, S_0 from the input on-chain, the split game
/// created by a challenge and deciding the result.
contract SplitMarketTest is SplitPlayer {
    bytes internal constant INPUT = "an input";
    address internal requester = makeAddr("requester");
    address internal prover = makeAddr("prover");
    address internal challengerA = makeAddr("challengerA");

    function setUp() public {
        _deployMarket();
        exitStep = 5_000;
        tamperAt = 3_000;
        execProgram = honestHash(0);
        // a market whose node guest is the synthetic trace of these exit and tamper steps
        market = new InferenceMarket(registry, game, _params(), execProgram);
        inputId = market.blobIdOf(INPUT);
        vm.deal(requester, 10 ether);
        vm.deal(prover, 10 ether);
        vm.deal(challengerA, 10 ether);
    }

    function _request(InferenceMarket m) internal returns (uint256 id) {
        vm.prank(requester);
        id = m.requestInference{value: 1 ether}(MODEL, INPUT, address(0), 0);
    }

    function _post(InferenceMarket m, uint256 rid, bytes memory output, uint64 executions) internal returns (bool ok) {
        bytes32[] memory v = _vals(N, proposerLies);
        vm.prank(prover);
        (ok,) = address(m).call{value: 1 ether}(
            abi.encodeWithSignature(
                "postResult(uint256,bytes,bytes32,uint64,bytes32[14])", rid, output, _sub(v, 14, 0), executions, _proof(v, 1)
            )
        );
    }

    function test_InitialRootOnChain() public {
        uint256 rid = _request(market);
        assertEq(market.initialRoot(rid), _root(0, false));
    }

    function test_SplitClaimDisputedAndDiscarded() public {
        proposerLies = true;
        uint256 rid = _request(market);
        assertTrue(_post(market, rid, BAD_OUTPUT, N));
        uint256 resultId = market.getRequest(rid).resultId;
        assertTrue(market.getResult(resultId).split);
        vm.prank(challengerA);
        uint256 id = market.challenge{value: 0.5 ether}(rid, resultId);
        IDisputeGame.Game memory g = game.getGame(id);
        assertTrue(g.split && g.top);
        assertEq(g.agreedHash, _root(0, false));
        assertEq(g.disputedHash, proposerRoot(N));
        assertEq(g.program, execProgram);
        _playTop(game, id);
        _open(game, id, bottomLie(BOTTOM));
        play(game, id, bottomLie, bottomTrue, false);
        assertTrue(market.getResult(resultId).discarded);
        assertEq(uint8(market.getRequest(rid).status), uint8(IInferenceMarket.RequestStatus.Open));
    }

    function test_Attack_OutputNotBound_Rejected() public {
        uint256 rid = _request(market);
        assertTrue(!_post(market, rid, BAD_OUTPUT, N), "honest states with another output");
        assertTrue(_post(market, rid, OUTPUT, N));
    }

    /// @dev Without the binding a prover posts the honest states with a wrong output: every state is right, so no
    /// challenger can win a game over them.
    function test_Attack_OutputNotBound_LandsWithoutTheRule() public {
        InferenceMarket broken = new UnboundOutputMarket(registry, game, _params(), execProgram);
        uint256 rid = _request(broken);
        assertTrue(_post(broken, rid, BAD_OUTPUT, N));
    }

    /// @dev A claim past the last execution is bounded (MAX_EXECUTIONS) and, below the bound, decided by its
    /// states: executions past the schedule's end are no-ops that the node guest accepts only unchanged
    /// (tests/mlkit/test_split.py::test_node_guest_past_the_last_execution_accepts_only_a_fixed_point).
    function test_ClaimPastTheLastExecution() public {
        uint256 rid = _request(market);
        uint64 max = market.MAX_EXECUTIONS();
        assertTrue(!_post(market, rid, OUTPUT, 0));
        assertTrue(!_post(market, rid, OUTPUT, max + 1));
        assertTrue(_post(market, rid, OUTPUT, max));
    }

    function test_VMClaimsKeepTheirPath() public {
        uint256 rid = _request(market);
        vm.prank(prover);
        market.postVMResult{value: 1 ether}(rid, OUTPUT, honestHash(STEPS), STEPS);
        assertTrue(!market.getResult(1).split);
        vm.prank(challengerA);
        uint256 id = market.challenge{value: 0.5 ether}(rid, 1);
        assertTrue(!game.getGame(id).split);
    }
}
