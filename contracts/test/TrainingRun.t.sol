// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {TrainingRun} from "../src/TrainingRun.sol";
import {IDisputeGame} from "../src/interfaces/IDisputeGame.sol";

/// @notice TrainingRun over the FakeVM-backed DisputeGame: leases, updates, games, payouts, registration and
/// every bad input refused with its error and no funds moved.
contract TrainingRunTest is MarketFixture {
    uint256 internal constant CHUNK = 16384;
    uint96 internal constant REWARD = 0.1 ether;
    uint96 internal constant DEPOSIT = 1 ether;
    uint96 internal constant BOND = 0.5 ether;
    uint64 internal constant LEASE = 1 hours;
    uint32 internal constant RECORDS_END = 8 + 12 + 64;

    TrainingRun internal runs;
    address internal creator = address(0xC0);
    address internal worker = address(0xA1);
    address internal worker2 = address(0xA2);
    address internal alice = address(0xB1);

    function setUp() public {
        _deployMarket();
        runs = new TrainingRun(registry, game);
        vm.deal(creator, 100 ether);
        vm.deal(worker, 100 ether);
        vm.deal(worker2, 100 ether);
        vm.deal(alice, 100 ether);
    }

    // -- fixtures -----------------------------------------------------------------------------------------

    /// @dev A one-chunk state: header, one f32 [16] record whose data is filled with `fill`, zero pad.
    function _state(uint8 fill) internal pure returns (bytes memory s) {
        s = new bytes(CHUNK);
        bytes memory head = abi.encodePacked(bytes4("RMLD"), uint32(4), bytes4(0x01010000), uint32(16));
        for (uint256 i = 0; i < head.length; i++) {
            s[i] = head[i];
        }
        for (uint256 i = 0; i < 64; i++) {
            s[20 + i] = bytes1(fill);
        }
    }

    function _model(uint8 fill) internal pure returns (bytes memory m) {
        m = new bytes(96);
        m[0] = 0x52; // a stand-in model file: 32 header bytes, then the parameter's 64 bytes
        for (uint256 i = 0; i < 64; i++) {
            m[32 + i] = bytes1(fill);
        }
    }

    function _cfg(bytes32 arch) internal pure returns (TrainingRun.Config memory) {
        return TrainingRun.Config({
            architecture: arch,
            stepsPerUpdate: 2,
            stateRecordsEnd: RECORDS_END,
            nOutputs: 2,
            batchSize: 32,
            lrBits: 0x3dcccccd,
            momentumBits: 0x3f666666,
            challengeWindow: WINDOW,
            leaseDuration: LEASE,
            maxSteps: MAX_STEPS,
            rewardPerUpdate: REWARD,
            workerDeposit: DEPOSIT,
            challengerBond: BOND
        });
    }

    function _layout() internal pure returns (TrainingRun.Layout memory l) {
        l.stateRanges = new uint32[](2);
        l.stateRanges[0] = 20;
        l.stateRanges[1] = 64;
        l.modelRanges = new uint32[](3);
        l.modelRanges[0] = 32;
        l.modelRanges[1] = 20;
        l.modelRanges[2] = 64;
        l.modelTemplate = keccak256(_model(0));
    }

    function _batches(uint256 n) internal pure returns (bytes32[] memory b) {
        b = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            b[i] = bytes32((uint256(2) << 248) | (i + 1));
        }
    }

    function _create(uint256 updates) internal returns (uint256 runId) {
        vm.prank(creator);
        runId = runs.createRun{value: REWARD * updates}(_cfg(MODEL), _layout(), _state(1), _batches(2 * updates));
    }

    function _post(uint256 runId, address who, uint8 fill, bytes32 claim) internal returns (uint256 updateId) {
        vm.prank(who);
        runs.takeLease{value: DEPOSIT}(runId);
        uint64 index = runs.getRun(runId).accepted;
        vm.prank(who);
        updateId = runs.postUpdate(runId, index, _state(fill), 0x40000000, claim, STEPS);
    }

    function _owed(uint256 runId, address[] memory accounts) internal view returns (uint256 sum) {
        sum = runs.getRun(runId).rewardLeft;
        for (uint256 i = 0; i < accounts.length; i++) {
            sum += runs.balanceOf(accounts[i]);
        }
    }

    function _everyone() internal view returns (address[] memory a) {
        a = new address[](4);
        (a[0], a[1], a[2], a[3]) = (creator, worker, worker2, alice);
    }

    // -- the happy path -----------------------------------------------------------------------------------

    function test_Update_AcceptedAfterWindow_PaysWorker() public {
        uint256 runId = _create(2);
        bytes32 input0 = runs.inputIdOf(runId);
        uint256 u = _post(runId, worker, 7, honestHash(STEPS));
        assertEq(address(runs).balance, 2 * REWARD + DEPOSIT);
        vm.expectRevert(
            abi.encodeWithSelector(TrainingRun.ChallengeWindowOpen.selector, u, uint256(runs.getUpdate(u).postedAt) + WINDOW)
        );
        runs.finalize(u);
        vm.warp(block.timestamp + WINDOW);
        runs.finalize(u);
        assertEq(runs.balanceOf(worker), REWARD + DEPOSIT);
        assertEq(runs.getRun(runId).accepted, 1);
        assertTrue(runs.getUpdate(u).accepted);
        // the next input names the new state and the next two batches
        bytes32[] memory keys = runs.stateKeysOf(runId);
        assertEq(keys[0], _key(_state(7)));
        bytes32 want = _key(abi.encodePacked(uint64(3 * CHUNK), keys[0], _batches(4)[2], _batches(4)[3]));
        assertEq(runs.inputIdOf(runId), want);
        assertTrue(input0 != want);
        assertEq(address(runs).balance, _owed(runId, _everyone()));
    }

    function test_GameLocalData_BindsArchitectureInputAndOutput() public {
        uint256 runId = _create(1);
        bytes32 input = runs.inputIdOf(runId);
        uint256 u = _post(runId, worker, 7, tamperedHash(STEPS));
        vm.prank(alice);
        uint256 g = runs.challenge{value: BOND}(u);
        (bool known, bytes32 v) = runs.gameLocalData(g, 1);
        assertTrue(known);
        assertEq(v, MODEL);
        (, v) = runs.gameLocalData(g, 2);
        assertEq(v, input);
        (, v) = runs.gameLocalData(g, 3);
        bytes memory st = _state(7);
        bytes memory body = new bytes(RECORDS_END - 8);
        for (uint256 i = 0; i < body.length; i++) {
            body[i] = st[8 + i];
        }
        assertEq(v, keccak256(abi.encodePacked(bytes4("RMLD"), uint32(2), body, bytes4(0x01010000), uint32(1), uint32(0x40000000))));
        assertEq(v, keccak256(runs.outputOf(runId, st, 0x40000000)));
        (known,) = runs.gameLocalData(g, 4);
        assertFalse(known);
    }

    // -- disputes -----------------------------------------------------------------------------------------

    function test_WrongUpdate_LosesGame_DepositToChallenger_LeaseReopens() public {
        uint256 runId = _create(1);
        uint256 u = _post(runId, worker, 9, tamperedHash(STEPS));
        vm.prank(alice);
        uint256 g = runs.challenge{value: BOND}(u);
        play(game, g, tamperedHash, honestHash, false);
        assertEq(uint256(game.getGame(g).status), uint256(IDisputeGame.Status.ChallengerWon));
        assertTrue(runs.getUpdate(u).discarded);
        assertEq(runs.balanceOf(alice), BOND + DEPOSIT);
        assertEq(runs.getRun(runId).pendingUpdate, 0);
        assertEq(runs.getRun(runId).accepted, 0);
        // the state did not move; another worker takes the reopened lease and is paid
        assertEq(runs.stateKeysOf(runId)[0], _key(_state(1)));
        uint256 u2 = _post(runId, worker2, 7, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW);
        runs.finalize(u2);
        assertEq(runs.balanceOf(worker2), REWARD + DEPOSIT);
        assertEq(runs.balanceOf(worker), 0);
        assertEq(address(runs).balance, _owed(runId, _everyone()));
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.UpdateSettled.selector, u));
        runs.finalize(u);
    }

    function test_HonestUpdate_DefendsItself_BondToWorker() public {
        uint256 runId = _create(1);
        uint256 u = _post(runId, worker, 7, honestHash(STEPS));
        vm.prank(alice);
        uint256 g = runs.challenge{value: BOND}(u);
        play(game, g, honestHash, tamperedHash, true);
        assertEq(runs.balanceOf(worker), BOND);
        vm.warp(uint256(runs.getUpdate(u).postedAt) + WINDOW);
        runs.finalize(u);
        assertEq(runs.balanceOf(worker), BOND + REWARD + DEPOSIT);
        assertEq(address(runs).balance, _owed(runId, _everyone()));
    }

    function test_Finalize_WaitsForOpenGames() public {
        uint256 runId = _create(1);
        uint256 u = _post(runId, worker, 7, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW - 1);
        vm.prank(alice);
        runs.challenge{value: BOND}(u);
        vm.warp(block.timestamp + 1);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.GamesOpen.selector, u, uint32(1)));
        runs.finalize(u);
        vm.prank(worker2);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.ChallengeWindowClosed.selector, u, block.timestamp));
        runs.challenge{value: BOND}(u);
    }

    function test_SecondChallenge_OfDiscardedUpdate_Refunded() public {
        uint256 runId = _create(1);
        uint256 u = _post(runId, worker, 9, tamperedHash(STEPS));
        vm.prank(alice);
        uint256 g1 = runs.challenge{value: BOND}(u);
        vm.prank(worker2);
        uint256 g2 = runs.challenge{value: BOND}(u);
        play(game, g1, tamperedHash, honestHash, false);
        runs.refundChallenge(g2);
        assertEq(runs.balanceOf(worker2), BOND);
        assertEq(runs.balanceOf(alice), BOND + DEPOSIT);
        assertEq(address(runs).balance, _owed(runId, _everyone()));
    }

    // -- leases -------------------------------------------------------------------------------------------

    function test_StalledLease_ExpiresAndIsForfeited() public {
        uint256 runId = _create(1);
        vm.prank(worker);
        runs.takeLease{value: DEPOSIT}(runId);
        vm.prank(worker2);
        vm.expectRevert(
            abi.encodeWithSelector(TrainingRun.LeaseHeld.selector, runId, worker, uint64(block.timestamp + LEASE))
        );
        runs.takeLease{value: DEPOSIT}(runId);
        vm.warp(block.timestamp + LEASE);
        bytes memory s = _state(7);
        bytes32 claim = honestHash(STEPS);
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.LeaseNotHeld.selector, runId, worker));
        runs.postUpdate(runId, 0, s, 0, claim, STEPS);
        _post(runId, worker2, 7, claim);
        assertEq(runs.balanceOf(creator), DEPOSIT); // the stalled worker's deposit
        assertEq(address(runs).balance, _owed(runId, _everyone()) + DEPOSIT); // + the pending update's
    }

    // -- bad input: clear reverts, nothing moves ----------------------------------------------------------

    function test_Create_RefusesUnknownArchitecture() public {
        bytes32 unknown = bytes32((uint256(2) << 248) | 0x77);
        TrainingRun.Config memory cfg = _cfg(unknown);
        TrainingRun.Layout memory l = _layout();
        bytes memory s = _state(1);
        bytes32[] memory b = _batches(2);
        vm.prank(creator);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.UnknownArchitecture.selector, unknown));
        runs.createRun{value: REWARD}(cfg, l, s, b);
        assertEq(creator.balance, 100 ether);
        assertEq(address(runs).balance, 0);
    }

    function test_Create_RefusesBadDatasetStateAndFunding() public {
        TrainingRun.Config memory cfg = _cfg(MODEL);
        TrainingRun.Layout memory l = _layout();
        bytes memory s = _state(1);
        bytes32[] memory b = _batches(4);
        b[3] = bytes32(uint256(0x01) << 248 | 5); // a local key: not a content id
        vm.startPrank(creator);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.InvalidBatchId.selector, 3, b[3]));
        runs.createRun{value: 2 * REWARD}(cfg, l, s, b);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.BadDataset.selector, 3, uint32(2)));
        runs.createRun{value: 2 * REWARD}(cfg, l, s, _batches(3));
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.WrongFunding.selector, REWARD, 2 * REWARD));
        runs.createRun{value: REWARD}(cfg, l, s, _batches(4));
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.BadState.selector, 100));
        runs.createRun{value: 2 * REWARD}(cfg, l, new bytes(100), _batches(4));
        l.stateRanges[1] = uint32(CHUNK); // past the state's end
        vm.expectRevert(TrainingRun.BadRanges.selector);
        runs.createRun{value: 2 * REWARD}(cfg, l, s, _batches(4));
        vm.stopPrank();
        assertEq(creator.balance, 100 ether);
        assertEq(runs.runCount(), 0);
    }

    function test_Post_RefusesWrongShapeAndStepNotNext() public {
        uint256 runId = _create(2);
        vm.prank(worker);
        runs.takeLease{value: DEPOSIT}(runId);
        bytes memory bad = _state(7);
        bad[19] = 0x20; // the record's dim: f32 [32] instead of [16]
        bytes32 claim = honestHash(STEPS);
        vm.startPrank(worker);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.WrongStateLayout.selector, runId));
        runs.postUpdate(runId, 0, bad, 0, claim, STEPS);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.WrongStateLayout.selector, runId));
        runs.postUpdate(runId, 0, new bytes(2 * CHUNK), 0, claim, STEPS);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.StepNotNext.selector, runId, uint64(1), uint64(0)));
        runs.postUpdate(runId, 1, _state(7), 0, claim, STEPS);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.ClaimNotValid.selector, honestHash(0)));
        runs.postUpdate(runId, 0, _state(7), 0, honestHash(0), STEPS);
        vm.stopPrank();
        // the lease and its deposit are intact: a good post still goes through
        assertEq(runs.getRun(runId).leaseHolder, worker);
        vm.prank(worker);
        runs.postUpdate(runId, 0, _state(7), 0, claim, STEPS);
        assertEq(address(runs).balance, 2 * REWARD + DEPOSIT);
    }

    function test_Lease_RefusedWhileUpdatePendingOrWrongDeposit() public {
        uint256 runId = _create(2);
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.WrongDeposit.selector, 1, DEPOSIT));
        runs.takeLease{value: 1}(runId);
        uint256 u = _post(runId, worker, 7, honestHash(STEPS));
        vm.prank(worker2);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.UpdatePending.selector, runId, u));
        runs.takeLease{value: DEPOSIT}(runId);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.UnknownRun.selector, 99));
        runs.takeLease{value: DEPOSIT}(99);
    }

    // -- the trained model --------------------------------------------------------------------------------

    function test_Register_TrainedModel() public {
        uint256 runId = _create(1);
        TrainingRun.ModelInfo memory info;
        info.name = "digits-mlp";
        info.inputShape = _shape(64);
        info.outputShape = _shape(1);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.RunNotComplete.selector, runId, uint64(0), uint64(1)));
        runs.register(runId, _model(1), _state(1), info);
        uint256 u = _post(runId, worker, 7, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW);
        runs.finalize(u);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.StateMismatch.selector, runId));
        runs.register(runId, _model(7), _state(1), info); // not the final state
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.ModelMismatch.selector, runId));
        runs.register(runId, _model(1), _state(7), info); // not the final parameters
        bytes memory other = _model(7);
        other[3] = 0x01; // another graph
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.ModelMismatch.selector, runId));
        runs.register(runId, other, _state(7), info);
        bytes32 id = runs.register(runId, _model(7), _state(7), info);
        assertEq(id, runs.blobIdOf(_model(7)));
        assertTrue(registry.isRegistered(id));
        assertEq(registry.programHashOf(id), registry.programHashOf(MODEL));
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.AlreadyRegistered.selector, runId, id));
        runs.register(runId, _model(7), _state(7), info);
    }

    function test_CloseRun_RefundsUnpaidRewards() public {
        uint256 runId = _create(3);
        uint256 u = _post(runId, worker, 7, honestHash(STEPS));
        vm.prank(creator);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.UpdatePending.selector, runId, u));
        runs.closeRun(runId);
        vm.warp(block.timestamp + WINDOW);
        runs.finalize(u);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.NotCreator.selector, address(this)));
        runs.closeRun(runId);
        vm.prank(creator);
        runs.closeRun(runId);
        assertEq(runs.balanceOf(creator), 2 * REWARD);
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(TrainingRun.RunFinished.selector, runId));
        runs.takeLease{value: DEPOSIT}(runId);
        vm.prank(creator);
        runs.withdraw();
        assertEq(creator.balance, 100 ether - 3 * REWARD + 2 * REWARD);
    }

    function _key(bytes memory data) internal pure returns (bytes32) {
        return bytes32((uint256(keccak256(data)) & type(uint248).max) | (uint256(2) << 248));
    }
}
