// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {
    MarketFixture,
    RecordingConsumer,
    RevertingConsumer,
    GasBurningConsumer,
    ReturnBombConsumer,
    GasProbeConsumer,
    RejectingReceiver
} from "./utils/MarketFixture.sol";
import {FakeTrace, FakeOracle} from "./utils/FakeVM.sol";
import {MarketBooks} from "./utils/MarketBooks.sol";
import {InferenceMarket} from "../src/InferenceMarket.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {IInferenceMarket} from "../src/interfaces/IInferenceMarket.sol";
import {IModelRegistry} from "../src/interfaces/IModelRegistry.sol";
import {IDisputeGame} from "../src/interfaces/IDisputeGame.sol";

contract ModelRegistryTest is MarketFixture {
    function setUp() public {
        _deployMarket();
    }

    function test_Register_StoresModel() public view {
        assertTrue(registry.isRegistered(MODEL));
        assertEq(registry.programHashOf(MODEL), honestHash(0));
        IModelRegistry.Model memory m = registry.getModel(MODEL);
        assertEq(m.name, "dcgan");
        assertEq(m.uri, "ipfs://model");
        assertEq(m.registrant, address(this));
        assertEq(uint256(m.inputShape[0]), 100);
        assertEq(uint256(m.outputShape[0]), 3 * 64 * 64);
    }

    function test_Register_IsImmutable() public {
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelAlreadyRegistered.selector, MODEL));
        registry.register(MODEL, "other", _shape(1), _shape(1), "", honestHash(0));
    }

    function test_Register_ValidatesIds() public {
        bytes32 notBlob = bytes32(uint256(0x01) << 248 | 5);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.InvalidModelId.selector, notBlob));
        registry.register(notBlob, "x", _shape(1), _shape(1), "", honestHash(0));
        bytes32 other = bytes32(uint256(0x02) << 248 | 5);
        bytes32 exitedHash = honestHash(STEPS); // status VALID: not an initial state
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.InvalidProgramHash.selector, exitedHash));
        registry.register(other, "x", _shape(1), _shape(1), "", exitedHash);
    }

    function test_UnknownModel() public {
        bytes32 unknown = bytes32(uint256(0x02) << 248 | 7);
        assertFalse(registry.isRegistered(unknown));
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelNotRegistered.selector, unknown));
        registry.programHashOf(unknown);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelNotRegistered.selector, unknown));
        registry.getModel(unknown);
    }
}

contract MarketTest is MarketFixture {
    event InferenceRequested(
        uint256 indexed requestId,
        address indexed requester,
        bytes32 indexed modelId,
        bytes32 inputId,
        address callback,
        uint64 callbackGasLimit,
        uint256 fee,
        bytes input
    );
    event CallbackFailed(uint256 indexed requestId, address callback);
    event CallbackSucceeded(uint256 indexed requestId, address callback);

    address internal dapp;
    address internal prover;
    address internal prover2;
    address internal alice; // challengers
    address internal bob;
    address internal carol;
    RecordingConsumer internal consumer;

    bytes internal constant INPUT = "latent vector";
    bytes internal constant OUTPUT = "generated image";
    uint64 internal constant CB_GAS = 100_000;

    function setUp() public {
        _deployMarket();
        dapp = makeAddr("dapp");
        prover = makeAddr("prover");
        prover2 = makeAddr("prover2");
        alice = makeAddr("alice");
        bob = makeAddr("bob");
        carol = makeAddr("carol");
        consumer = new RecordingConsumer();
        address[6] memory who = [dapp, prover, prover2, alice, bob, carol];
        for (uint256 i = 0; i < who.length; i++) {
            vm.deal(who[i], 100 ether);
        }
    }

    // --- helpers --------------------------------------------------------------------------------------------
    function _accounts() internal view returns (address[] memory a) {
        a = new address[](8);
        (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]) =
            (dapp, prover, prover2, alice, bob, carol, address(consumer), address(this));
    }

    function _assertSolvent() internal view {
        assertEq(address(market).balance, _owed(_accounts()), "ETH held == sum owed");
    }

    function _fee() internal view returns (uint256) {
        return market.estimateFee(MODEL, INPUT.length, CB_GAS);
    }

    function _request(address callback) internal returns (uint256 id) {
        uint256 fee = _fee();
        vm.prank(dapp);
        id = market.requestInference{value: fee}(MODEL, INPUT, callback, CB_GAS);
    }

    function _post(uint256 id, address who, bytes32 finalHash) internal returns (uint256 resultId) {
        vm.prank(who);
        resultId = market.postVMResult{value: 1 ether}(id, OUTPUT, finalHash, STEPS);
    }

    function _challenge(uint256 id, address who) internal returns (uint256 gameId) {
        uint256 resultId = market.getRequest(id).resultId;
        vm.prank(who);
        gameId = market.challenge{value: 0.5 ether}(id, resultId);
    }

    // --- blob ids -------------------------------------------------------------------------------------------
    /// @dev Vectors from mipsvm.preimage.put_blob (the Python blob scheme).
    function test_BlobIdMatchesPythonVectors() public view {
        assertEq(market.blobIdOf(""), 0x02e7c96742a4205f0554db786277188ab3971e8dbe689b8daf4077d1912e6a23);
        assertEq(market.blobIdOf("rollml"), 0x02791d778b8e90c8c0fbc19b29603a49138966ff4aa7bfea79897209d7006cf4);
        bytes memory big = new bytes(16384);
        for (uint256 i = 0; i < big.length; i++) {
            big[i] = bytes1(uint8(i));
        }
        assertEq(market.blobIdOf(big), 0x0244abcd6782e9560072bb2ee1a2dd2aad3d247dbd2bc4261d50518c240a9096);
    }

    // --- requests -------------------------------------------------------------------------------------------
    function test_EstimateFee() public view {
        assertEq(market.estimateFee(MODEL, 400, 200_000), 0.001 ether + 400 gwei + 200_000 * 10 gwei);
    }

    function test_Request_StoresAndEmits() public {
        uint256 fee = _fee();
        bytes32 inputId = market.blobIdOf(INPUT);
        vm.expectEmit(address(market));
        emit InferenceRequested(1, dapp, MODEL, inputId, address(consumer), CB_GAS, fee + 1, INPUT);
        vm.prank(dapp);
        uint256 id = market.requestInference{value: fee + 1}(MODEL, INPUT, address(consumer), CB_GAS);
        assertEq(id, 1);
        IInferenceMarket.Request memory r = market.getRequest(id);
        assertEq(r.requester, dapp);
        assertEq(uint256(r.fee), fee + 1); // everything sent is the fee
        assertEq(r.modelId, MODEL);
        assertEq(r.inputId, inputId);
        assertEq(r.callback, address(consumer));
        assertEq(uint256(r.callbackGasLimit), CB_GAS);
        assertTrue(r.status == IInferenceMarket.RequestStatus.Open);
        _assertSolvent();
    }

    function test_Request_Validation() public {
        uint256 fee = _fee();
        vm.startPrank(dapp);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.InsufficientFee.selector, fee - 1, fee));
        market.requestInference{value: fee - 1}(MODEL, INPUT, address(0), CB_GAS);
        bytes32 unknown = bytes32(uint256(0x02) << 248 | 1);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.ModelNotRegistered.selector, unknown));
        market.requestInference{value: fee}(unknown, INPUT, address(0), CB_GAS);
        bytes memory tooBig = new bytes(16385);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.InputTooLarge.selector, 16385, 16384));
        market.requestInference{value: 1 ether}(MODEL, tooBig, address(0), CB_GAS);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.CallbackGasTooHigh.selector, uint64(5_000_001), uint64(5_000_000))
        );
        market.requestInference{value: 1 ether}(MODEL, INPUT, address(0), 5_000_001);
        vm.stopPrank();
        // the largest input is accepted
        vm.prank(dapp);
        market.requestInference{value: 1 ether}(MODEL, new bytes(16384), address(0), CB_GAS);
    }

    function test_CancelRequest() public {
        uint256 id = _request(address(consumer));
        vm.prank(dapp);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.RequestNotExpired.selector, id, block.timestamp + REQUEST_TIMEOUT)
        );
        market.cancelRequest(id);
        vm.warp(block.timestamp + REQUEST_TIMEOUT);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.NotRequester.selector, alice));
        market.cancelRequest(id);
        vm.prank(dapp);
        market.cancelRequest(id);
        assertEq(market.balanceOf(dapp), _fee());
        _assertSolvent();
        // nothing more can happen to it
        vm.prank(prover);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Cancelled)
        );
        market.postVMResult{value: 1 ether}(id, OUTPUT, honestHash(STEPS), STEPS);
        vm.prank(dapp);
        vm.expectRevert();
        market.cancelRequest(id);
    }

    function test_ReportUnservable_IsAnEventOnAnOpenRequestOnly() public {
        uint256 id = _request(address(consumer));
        uint256 balance = address(market).balance;
        vm.expectEmit(true, true, false, true, address(market));
        emit IInferenceMarket.RequestUnservable(id, prover, "the runtime rejects the input");
        vm.prank(prover);
        market.reportUnservable(id, "the runtime rejects the input");
        assertEq(uint8(market.getRequest(id).status), uint8(IInferenceMarket.RequestStatus.Open));
        assertEq(address(market).balance, balance);
        vm.prank(prover);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.ReasonTooLong.selector, 257, 256));
        market.reportUnservable(id, string(new bytes(257)));
        vm.prank(prover);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id + 1, IInferenceMarket.RequestStatus.None)
        );
        market.reportUnservable(id + 1, "no such request");
        _post(id, prover, honestHash(STEPS));
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Proposed)
        );
        market.reportUnservable(id, "too late");
        _assertSolvent();
    }

    function test_CancelRequest_NotWhileProposed() public {
        uint256 id = _request(address(consumer));
        _post(id, prover, honestHash(STEPS));
        vm.warp(block.timestamp + REQUEST_TIMEOUT);
        vm.prank(dapp);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Proposed)
        );
        market.cancelRequest(id);
    }

    /// @dev The deadline is fixed at creation: a discard reopens the request without restarting its clock, so
    /// the requester may cancel at `createdAt + requestTimeout` however many results were discarded.
    function test_CancelRequest_TheDeadlineDoesNotMoveOnADiscard() public {
        uint256 id = _request(address(consumer));
        uint256 deadline = block.timestamp + REQUEST_TIMEOUT;
        assertEq(market.expiresAt(id), deadline);
        assertEq(market.expiresAt(id + 1), 0, "unknown request");
        vm.warp(deadline - 10 minutes);
        _post(id, prover, tamperedHash(STEPS));
        uint256 g = _challenge(id, alice);
        vm.warp(deadline + 10 minutes);
        vm.prank(dapp);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Proposed)
        );
        market.cancelRequest(id); // a result is pending: its games decide first
        play(game, g, tamperedHash, honestHash, false); // discarded after the deadline: reopened
        assertEq(market.expiresAt(id), deadline, "unchanged by the discard");
        vm.prank(dapp);
        market.cancelRequest(id); // at once
        assertEq(market.balanceOf(dapp), _fee());
        _assertSolvent();
    }

    /// @dev Results are taken strictly before the deadline: `RequestExpired` at it and after it, also for a
    /// request reopened by a discard.
    function test_PostResult_RefusedFromTheDeadline() public {
        uint256 id = _request(address(consumer));
        uint256 deadline = block.timestamp + REQUEST_TIMEOUT;
        vm.warp(deadline);
        vm.prank(prover);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.RequestExpired.selector, id, deadline));
        market.postVMResult{value: 1 ether}(id, OUTPUT, honestHash(STEPS), STEPS);
        uint256 other = _request(address(consumer));
        deadline = block.timestamp + REQUEST_TIMEOUT;
        vm.warp(deadline - 1);
        _post(other, prover, tamperedHash(STEPS)); // the last second: taken
        play(game, _challenge(other, alice), tamperedHash, honestHash, false);
        assertTrue(market.getRequest(other).status == IInferenceMarket.RequestStatus.Open, "reopened");
        vm.warp(deadline);
        vm.prank(prover2);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.RequestExpired.selector, other, deadline));
        market.postVMResult{value: 1 ether}(other, OUTPUT, honestHash(STEPS), STEPS);
        _assertSolvent();
    }

    function test_Constructor_ValidatesTheBurnAndTheBond() public {
        IInferenceMarket.Params memory p = _params();
        p.proverBondBurnBps = 10_001;
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.InvalidBurnBps.selector, uint256(10_001)));
        new InferenceMarket(registry, game, p, execProgram);
        p.proverBondBurnBps = 10_000;
        p.proverBond = uint256(type(uint96).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.BondTooLarge.selector, p.proverBond));
        new InferenceMarket(registry, game, p, execProgram);
        p.proverBond = type(uint96).max; // the largest bond, everything burned: fine
        InferenceMarket m = new InferenceMarket(registry, game, p, execProgram);
        assertEq(uint256(m.proverBondBurnBps()), 10_000);
        assertEq(uint256(market.proverBondBurnBps()), BURN_BPS);
        assertEq(market.burned(), 0);
    }

    /// @dev Any burn rate, any number of games open on a discarded result, any winner among them, the others
    /// settled by refund or by their own timeout: every game gets its bond and the same share, the burn is at
    /// least the rate and at most the rate plus games - 1 wei of dust, and nothing else moves.
    function testFuzz_Discard_SplitsTheProversBondExactly(uint16 bps, uint8 games, uint8 winner, uint256 seed)
        public
    {
        bps = uint16(bound(bps, 0, 10_000));
        games = uint8(bound(games, 1, 12));
        winner = uint8(bound(winner, 0, games - 1));
        IInferenceMarket.Params memory p = _params();
        p.proverBondBurnBps = bps;
        p.proverBond = 1 ether + (seed % 1e9); // an odd bond, so that the shares have dust
        market = new InferenceMarket(registry, game, p, execProgram);
        uint256 id = _request(address(consumer));
        vm.prank(prover);
        uint256 rid = market.postVMResult{value: p.proverBond}(id, OUTPUT, tamperedHash(STEPS), STEPS);
        address[] memory who = new address[](games + 2);
        uint256[] memory ids = new uint256[](games);
        for (uint256 i = 0; i < games; i++) {
            who[i] = makeAddr(string.concat("c", vm.toString(i)));
            vm.deal(who[i], 1 ether);
            vm.prank(who[i]);
            ids[i] = market.challenge{value: 0.5 ether}(id, rid);
        }
        (who[games], who[games + 1]) = (prover, dapp);
        play(game, ids[winner], tamperedHash, honestHash, false);
        uint256 share = market.getResult(rid).share;
        uint256 burnt = market.burned();
        assertEq(share * games + burnt, p.proverBond, "shares + burn == the bond");
        assertGe(burnt, p.proverBond * bps / 10_000, "at least the burn rate");
        assertLt(burnt - p.proverBond * bps / 10_000, games, "dust < one wei per game");
        assertEq(market.balanceOf(who[winner]), 0.5 ether + share, "the winner at once");
        assertEq(address(market).balance, MarketBooks.owed(market, game, who), "solvent before the others settle");
        vm.warp(block.timestamp + TIMEOUT + 1);
        for (uint256 i = 0; i < games; i++) {
            if (i == winner) continue;
            if ((seed >> i) & 1 == 0) market.refundChallenge(ids[i]);
            else game.claimTimeout(ids[i]); // its own resolution, after the discard
            assertEq(market.balanceOf(who[i]), 0.5 ether + share, "every other game: bond + share");
        }
        assertEq(uint256(market.getResult(rid).openGames), 0);
        assertEq(market.balanceOf(prover), 0);
        assertEq(market.burned(), burnt, "burned once");
        assertEq(address(market).balance, MarketBooks.owed(market, game, who), "solvent");
    }

    // --- results --------------------------------------------------------------------------------------------
    function test_PostResult_Validation() public {
        uint256 id = _request(address(consumer));
        vm.startPrank(prover);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.WrongBond.selector, 0.9 ether, 1 ether));
        market.postVMResult{value: 0.9 ether}(id, OUTPUT, honestHash(STEPS), STEPS);
        bytes32 unfinished = honestHash(5);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.ClaimNotValid.selector, unfinished));
        market.postVMResult{value: 1 ether}(id, OUTPUT, unfinished, 5);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.InvalidSteps.selector, uint64(0), MAX_STEPS));
        market.postVMResult{value: 1 ether}(id, OUTPUT, honestHash(STEPS), 0);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.InvalidSteps.selector, MAX_STEPS + 1, MAX_STEPS));
        market.postVMResult{value: 1 ether}(id, OUTPUT, honestHash(STEPS), MAX_STEPS + 1);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, 99, IInferenceMarket.RequestStatus.None)
        );
        market.postVMResult{value: 1 ether}(99, OUTPUT, honestHash(STEPS), STEPS);
        uint256 resultId = market.postVMResult{value: 1 ether}(id, OUTPUT, honestHash(STEPS), STEPS);
        vm.stopPrank();
        IInferenceMarket.Result memory r = market.getResult(resultId);
        assertEq(r.prover, prover);
        assertEq(r.outputHash, keccak256(OUTPUT));
        assertEq(r.finalStateHash, honestHash(STEPS));
        assertEq(uint256(r.steps), STEPS);
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Proposed);
        vm.prank(prover2);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Proposed)
        );
        market.postVMResult{value: 1 ether}(id, OUTPUT, honestHash(STEPS), STEPS);
        _assertSolvent();
    }

    // --- finalize --------------------------------------------------------------------------------------------
    function test_Finalize_PaysProverAndCallsBack() public {
        uint256 id = _request(address(consumer));
        _post(id, prover, honestHash(STEPS));
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.ChallengeWindowOpen.selector, id, block.timestamp + WINDOW)
        );
        market.finalize(id, OUTPUT);
        vm.warp(block.timestamp + WINDOW);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.OutputMismatch.selector, keccak256(OUTPUT), keccak256("other"))
        );
        market.finalize(id, "other");
        vm.expectEmit(address(market));
        emit CallbackSucceeded(id, address(consumer));
        vm.prank(carol); // anyone finalizes
        market.finalize(id, OUTPUT);
        assertEq(consumer.calls(), 1);
        assertEq(consumer.lastRequestId(), id);
        assertEq(consumer.lastOutput(), OUTPUT);
        assertEq(consumer.lastSender(), address(market));
        assertEq(market.balanceOf(prover), _fee() + 1 ether);
        _assertSolvent();
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Finalized)
        );
        market.finalize(id, OUTPUT);

        uint256 before = prover.balance;
        vm.prank(prover);
        market.withdraw();
        assertEq(prover.balance, before + _fee() + 1 ether);
        assertEq(market.balanceOf(prover), 0);
        vm.prank(prover);
        vm.expectRevert(IInferenceMarket.NothingToWithdraw.selector);
        market.withdraw();
        _assertSolvent();
    }

    function test_Finalize_RevertingCallbackIsRecorded() public {
        RevertingConsumer bad = new RevertingConsumer();
        uint256 id = _request(address(bad));
        _post(id, prover, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW);
        vm.expectEmit(address(market));
        emit CallbackFailed(id, address(bad));
        market.finalize(id, OUTPUT);
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Finalized);
        assertEq(market.balanceOf(prover), _fee() + 1 ether);
    }

    function test_Finalize_GasBurningCallbackGetsOnlyItsLimit() public {
        GasBurningConsumer burner = new GasBurningConsumer();
        uint256 id = _request(address(burner));
        _post(id, prover, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW);
        uint256 before = gasleft();
        market.finalize{gas: 1_000_000}(id, OUTPUT);
        assertLt(before - gasleft(), 250_000);
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Finalized);
    }

    function test_Finalize_ReturnBombIsNotCopied() public {
        ReturnBombConsumer bomb = new ReturnBombConsumer();
        uint256 fee = market.estimateFee(MODEL, INPUT.length, 3_000_000);
        vm.prank(dapp);
        uint256 id = market.requestInference{value: fee}(MODEL, INPUT, address(bomb), 3_000_000);
        _post(id, prover, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW);
        vm.expectEmit(address(market));
        emit CallbackFailed(id, address(bomb));
        uint256 before = gasleft();
        market.finalize{gas: 4_000_000}(id, OUTPUT);
        uint256 used = before - gasleft();
        // the bomb pays for its own memory; copying 200 KB back would cost the caller much more than this
        assertLt(used, 3_000_000 + 150_000);
    }

    function test_Finalize_CallbackGetsItsFullLimitOrReverts() public {
        GasProbeConsumer probe = new GasProbeConsumer();
        uint256 id = _request(address(probe));
        _post(id, prover, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW);
        // too little gas for the callback's limit: finalize reverts instead of starving the callback
        vm.expectRevert(IInferenceMarket.InsufficientGasForCallback.selector);
        market.finalize{gas: 90_000}(id, OUTPUT);
        market.finalize{gas: 500_000}(id, OUTPUT);
        assertGt(probe.gasSeen(), CB_GAS - 5_000);
        assertLe(probe.gasSeen(), CB_GAS);
    }

    function test_Finalize_NoCallback() public {
        uint256 id = _request(address(0));
        _post(id, prover, honestHash(STEPS));
        vm.warp(block.timestamp + WINDOW);
        market.finalize(id, OUTPUT);
        assertEq(market.balanceOf(prover), _fee() + 1 ether);
    }

    // --- challenges -------------------------------------------------------------------------------------------
    function test_Challenge_Validation() public {
        uint256 id = _request(address(consumer));
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.WrongStatus.selector, id, IInferenceMarket.RequestStatus.Open)
        );
        market.challenge{value: 0.5 ether}(id, 0);
        _post(id, prover, honestHash(STEPS));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.WrongBond.selector, 0.4 ether, 0.5 ether));
        market.challenge{value: 0.4 ether}(id, 1);
        vm.prank(prover);
        vm.expectRevert(IInferenceMarket.SelfChallenge.selector);
        market.challenge{value: 0.5 ether}(id, 1);
        _challenge(id, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.AlreadyChallenged.selector, 1, alice));
        market.challenge{value: 0.5 ether}(id, 1);
        vm.warp(block.timestamp + WINDOW);
        vm.prank(bob);
        vm.expectRevert(
            abi.encodeWithSelector(IInferenceMarket.ChallengeWindowClosed.selector, id, block.timestamp)
        );
        market.challenge{value: 0.5 ether}(id, 1);
        _assertSolvent();
    }

    function test_Challenge_CreatesGameFromRegistryAndResult() public {
        uint256 id = _request(address(consumer));
        _post(id, prover, tamperedHash(STEPS));
        uint256 gameId = _challenge(id, alice);
        IDisputeGame.Game memory g = game.getGame(gameId);
        assertEq(g.creator, address(market));
        assertEq(g.proposer, prover);
        assertEq(g.challenger, alice);
        assertEq(g.agreedHash, registry.programHashOf(MODEL)); // start = program hash, chosen by no party
        assertEq(g.disputedHash, tamperedHash(STEPS));
        assertEq(uint256(g.hi), STEPS);
        assertEq(uint256(market.getResult(1).openGames), 1);
        (bool known, bytes32 v) = market.gameLocalData(gameId, 1);
        assertTrue(known);
        assertEq(v, MODEL);
        (, v) = market.gameLocalData(gameId, 2);
        assertEq(v, market.blobIdOf(INPUT));
        (, v) = market.gameLocalData(gameId, 3);
        assertEq(v, keccak256(OUTPUT));
        (known,) = market.gameLocalData(gameId, 4);
        assertFalse(known);
        (known,) = market.gameLocalData(999, 1);
        assertFalse(known);
    }

    function test_Game_ProposerWins_ChallengerBondToProver_ThenFinalize() public {
        uint256 id = _request(address(consumer));
        _post(id, prover, honestHash(STEPS));
        uint256 gameId = _challenge(id, alice);
        play(game, gameId, honestHash, tamperedHash, true);
        assertTrue(game.getGame(gameId).status == IDisputeGame.Status.ProposerWon);
        assertEq(market.balanceOf(prover), 0.5 ether);
        assertTrue(market.getChallenge(gameId).settled);
        _assertSolvent();
        vm.warp(block.timestamp + WINDOW);
        market.finalize(id, OUTPUT);
        assertEq(market.balanceOf(prover), 0.5 ether + 1 ether + _fee());
        assertEq(market.balanceOf(alice), 0);
        assertEq(consumer.calls(), 1);
        _assertSolvent();
    }

    function test_Game_ChallengerWins_DiscardsAndReopens() public {
        uint256 createdAt = block.timestamp;
        uint256 id = _request(address(consumer));
        vm.warp(block.timestamp + 1 days);
        _post(id, prover, tamperedHash(STEPS));
        uint256 gameId = _challenge(id, alice);
        play(game, gameId, tamperedHash, honestHash, false);
        assertTrue(game.getGame(gameId).status == IDisputeGame.Status.ChallengerWon);
        // half the prover's bond is burned, the other half is the only challenger's share
        assertEq(market.balanceOf(alice), 0.5 ether + 0.5 ether, "own bond + share");
        assertEq(market.burned(), 0.5 ether);
        assertEq(market.balanceOf(prover), 0);
        IInferenceMarket.Request memory r = market.getRequest(id);
        assertTrue(r.status == IInferenceMarket.RequestStatus.Open);
        assertEq(uint256(r.createdAt), createdAt, "the clock does not restart");
        assertEq(market.expiresAt(id), createdAt + REQUEST_TIMEOUT);
        IInferenceMarket.Result memory res = market.getResult(1);
        assertTrue(res.discarded);
        assertEq(uint256(res.share), 0.5 ether);
        assertEq(uint256(res.openGames), 0);
        _assertSolvent();
        // the fee stays escrowed for the next prover
        uint256 resultId = _post(id, prover2, honestHash(STEPS));
        assertEq(resultId, 2);
        vm.warp(block.timestamp + WINDOW);
        market.finalize(id, OUTPUT);
        assertEq(market.balanceOf(prover2), 1 ether + _fee());
        assertEq(consumer.calls(), 1);
        _assertSolvent();
    }

    function test_Game_TimeoutLossesPayTheOtherSide() public {
        uint256 id = _request(address(consumer));
        _post(id, prover, honestHash(STEPS));
        uint256 gameId = _challenge(id, alice);
        vm.warp(block.timestamp + WINDOW); // window over but a game is open
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.GamesOpen.selector, 1, uint32(1)));
        market.finalize(id, OUTPUT);
        // the proposer did not dissect: the challenger wins even against a correct result
        game.claimTimeout(gameId);
        assertEq(market.balanceOf(alice), 1 ether, "own bond + the unburned half of the prover's");
        assertTrue(market.getRequest(id).status == IInferenceMarket.RequestStatus.Open);
        _assertSolvent();
    }

    function test_ManyChallengers_OneWins_OthersRefunded() public {
        uint256 id = _request(address(consumer));
        _post(id, prover, tamperedHash(STEPS));
        uint256 gA = _challenge(id, alice);
        uint256 gB = _challenge(id, bob); // e.g. the prover's accomplice
        uint256 gC = _challenge(id, carol);
        assertEq(uint256(market.getResult(1).openGames), 3);
        // bob (accomplice) would like to stall; alice plays honestly and wins
        play(game, gA, tamperedHash, honestHash, false);
        // half the prover's bond is burned; the other half is split between the three games open on it, and
        // the rounding dust (2 wei) is burned too
        uint256 share = uint256(0.5 ether) / 3;
        assertEq(uint256(market.getResult(1).share), share);
        assertEq(market.burned(), 1 ether - 3 * share);
        assertEq(market.balanceOf(alice), 0.5 ether + share, "the winner: own bond + share, at once");
        assertEq(uint256(market.getResult(1).openGames), 2, "bob's and carol's games are still owed");
        _assertSolvent();
        // bob's game: refunded by anyone (its bond + share), and cancelled in the game contract
        vm.prank(dapp);
        market.refundChallenge(gB);
        assertEq(market.balanceOf(bob), 0.5 ether + share);
        assertTrue(game.getGame(gB).status == IDisputeGame.Status.Cancelled);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.GameAlreadySettled.selector, gB));
        market.refundChallenge(gB);
        _assertSolvent();
        // carol's game ends on its own (timeout) before anyone refunds it: the same bond + share
        vm.warp(block.timestamp + TIMEOUT + 1);
        game.claimTimeout(gC);
        assertEq(market.balanceOf(carol), 0.5 ether + share);
        assertEq(market.balanceOf(prover), 0);
        assertEq(uint256(market.getResult(1).openGames), 0);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.GameAlreadySettled.selector, gC));
        market.refundChallenge(gC);
        _assertSolvent();
    }

    function test_RefundChallenge_Validation() public {
        uint256 id = _request(address(consumer));
        _post(id, prover, tamperedHash(STEPS));
        uint256 gA = _challenge(id, alice);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.ResultNotDiscarded.selector, 1));
        market.refundChallenge(gA);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.UnknownGame.selector, 77));
        market.refundChallenge(77);
    }

    function test_OnGameResolved_OnlyFromDisputeGame() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.NotDisputeGame.selector, alice));
        market.onGameResolved(1, false);
    }

    function test_Step_LoadsRequestLocalDataIntoOracle() public {
        // A model whose program's start state has local key 3 (the claimed output hash) selected, a one-step
        // trace, and a wrong one-step claim: the leaf step reads local 3 of the game's context.
        bytes32 key3 = bytes32((uint256(1) << 248) | 3);
        bytes32 traceId = keccak256("local trace");
        bytes memory pre = FakeTrace.state(traceId, 0, 1, 0, key3);
        bytes32 model2 = bytes32(uint256(0x02) << 248 | 0x55);
        registry.register(model2, "m2", _shape(1), _shape(1), "", FakeTrace.hashOf(pre));
        vm.prank(dapp);
        uint256 id = market.requestInference{value: _fee()}(model2, INPUT, address(0), CB_GAS);
        bytes32 wrong = FakeTrace.hashOf(FakeTrace.state(keccak256("other"), 1, 1, 0, key3)); // VALID, wrong
        vm.prank(prover);
        market.postVMResult{value: 1 ether}(id, OUTPUT, wrong, 1);
        uint256 gameId = _challenge(id, alice);
        vm.prank(alice);
        game.step(gameId, wrong, pre, hex"");
        FakeOracle oracle = fakeVm.fakeOracle();
        assertEq(oracle.localData(address(game), bytes32(gameId), 3), keccak256(OUTPUT));
        assertEq(market.balanceOf(alice), 1 ether);
        _assertSolvent();
    }

    // --- payouts -----------------------------------------------------------------------------------------------
    function test_RejectingReceiverCannotBlockOthers() public {
        RejectingReceiver rr = new RejectingReceiver();
        vm.deal(address(rr), 10 ether);
        uint256 id = _request(address(consumer));
        // the rejecting contract proves (correctly) and is challenged unsuccessfully
        rr.call(
            address(market), 1 ether, abi.encodeCall(InferenceMarket.postVMResult, (id, OUTPUT, honestHash(STEPS), STEPS))
        );
        uint256 gameId = _challenge(id, alice);
        vm.warp(block.timestamp + 1);
        // the rejecting contract dissects; alice does not pick in time
        IDisputeGame.Game memory g = game.getGame(gameId);
        uint64[] memory pts = game.dissectionPoints(g.lo, g.hi);
        bytes32[] memory hs = new bytes32[](pts.length - 2);
        for (uint256 i = 0; i < hs.length; i++) {
            hs[i] = honestHash(pts[i + 1]);
        }
        rr.call(address(game), 0, abi.encodeCall(IDisputeGame.dissect, (gameId, g.disputedHash, hs)));
        vm.warp(block.timestamp + TIMEOUT + 1);
        game.claimTimeout(gameId);
        vm.warp(block.timestamp + WINDOW);
        market.finalize(id, OUTPUT); // paying a rejecting receiver does not block finalization
        assertEq(market.balanceOf(address(rr)), 0.5 ether + 1 ether + _fee());
        vm.expectRevert(IInferenceMarket.WithdrawFailed.selector);
        rr.call(address(market), 0, abi.encodeCall(InferenceMarket.withdraw, ()));
        assertEq(market.balanceOf(address(rr)), 0.5 ether + 1 ether + _fee()); // still owed
        assertEq(address(market).balance, market.balanceOf(address(rr)));
    }
}
