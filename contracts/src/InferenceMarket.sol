// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IDisputeGame, IDisputeGameCreator} from "./interfaces/IDisputeGame.sol";
import {IInferenceConsumer} from "./interfaces/IInferenceConsumer.sol";
import {IInferenceMarket} from "./interfaces/IInferenceMarket.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {SlotTree} from "./SlotTree.sol";

/// @title InferenceMarket
/// @notice Optimistic ML inference: a dApp pays a fee for "model M on input X"; a prover posts the output with
/// a bond; during the challenge window anyone may challenge with a bond, which opens a `DisputeGame`; an
/// unchallenged (or successfully defended) result finalizes, the prover is paid and the consumer's callback
/// fires. A result that loses a game is discarded: part of the prover's bond is burned, the rest is shared by
/// the challenges open on it, and the request reopens for another prover until its fixed deadline.
/// @dev Protocol described in docs/protocol.md. No owner or admin: every parameter is fixed at deployment.
/// All payouts are credited to `balanceOf` and pulled with `withdraw`, so no receiver can block a transition.
/// Accounting invariant: `address(this).balance` == fees of open and proposed requests + bonds of pending
/// results + bonds of unsettled challenges + the shares owed to unsettled challenges of discarded results +
/// the sum of `balanceOf` + `burned`.
contract InferenceMarket is IInferenceMarket, IDisputeGameCreator, ReentrancyGuardTransient {
    /// @notice Inputs are one blob chunk at most (vm-spec section 6), so the market computes their blob id.
    uint256 public constant MAX_INPUT_BYTES = 16384;
    uint256 public constant MAX_REASON_BYTES = 256;
    /// @notice Upper bound of a request's callback gas (keeps `finalize` well inside a block).
    uint64 public constant MAX_CALLBACK_GAS_LIMIT = 5_000_000;
    /// @dev Gas kept back for the CALL itself (cold account access, memory) when checking the callback gets
    /// its full limit.
    uint256 internal constant CALL_GAS_RESERVE = 5_000;
    uint256 internal constant STATUS_VALID = 0;
    uint256 internal constant LOCAL_MODEL_ID = 1;
    uint256 internal constant LOCAL_INPUT_ID = 2;
    uint256 internal constant LOCAL_OUTPUT_HASH = 3;
    uint256 internal constant BPS = 10_000;

    IModelRegistry public immutable registry;
    IDisputeGame public immutable disputeGame;
    uint256 public immutable baseFee;
    uint256 public immutable feePerInputByte;
    uint256 public immutable callbackGasPrice;
    uint256 public immutable proverBond;
    uint256 public immutable challengerBond;
    /// @notice Basis points of a losing prover's bond that are burned (see `burned`).
    uint16 public immutable proverBondBurnBps;
    uint64 public immutable challengeWindow;
    uint64 public immutable requestTimeout;
    uint64 public immutable maxSteps;
    /// @notice The node guest's initial state hash: the program of every split game's bottom level.
    bytes32 public immutable execProgramHash;
    /// @notice The largest execution count a split claim may state (a schedule is far shorter; executions
    /// past the schedule's end are no-ops, so a longer claim is still decided by its states).
    uint64 public constant MAX_EXECUTIONS = 1 << 40;

    /// @notice Ids handed out so far: requests 1..requestCount, results 1..resultCount.
    uint256 public requestCount;
    uint256 public resultCount;
    /// @inheritdoc IInferenceMarket
    uint256 public burned;

    mapping(uint256 requestId => Request) internal _requests;
    mapping(uint256 resultId => Result) internal _results;
    mapping(uint256 gameId => Challenge) internal _challenges;
    mapping(uint256 resultId => mapping(address challenger => bool)) public hasChallenged;
    mapping(address account => uint256) internal _balances;

    modifier onlyDisputeGame() {
        if (msg.sender != address(disputeGame)) revert NotDisputeGame(msg.sender);
        _;
    }

    /// @dev The prover bond must fit the uint96 `Result.share` (a share is at most the bond).
    /// @param execProgram_ the node guest's program hash (`execProgramHash`)
    constructor(IModelRegistry registry_, IDisputeGame disputeGame_, Params memory p, bytes32 execProgram_) {
        if (p.proverBondBurnBps > BPS) revert InvalidBurnBps(p.proverBondBurnBps);
        if (p.proverBond > type(uint96).max) revert BondTooLarge(p.proverBond);
        registry = registry_;
        disputeGame = disputeGame_;
        baseFee = p.baseFee;
        feePerInputByte = p.feePerInputByte;
        callbackGasPrice = p.callbackGasPrice;
        proverBond = p.proverBond;
        challengerBond = p.challengerBond;
        proverBondBurnBps = p.proverBondBurnBps;
        challengeWindow = p.challengeWindow;
        requestTimeout = p.requestTimeout;
        maxSteps = p.maxSteps;
        execProgramHash = execProgram_;
    }

    // ------------------------------------------------------------------------------------------------
    // Requests
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IInferenceMarket
    /// @dev The whole `msg.value` (at least `estimateFee`) is escrowed as the fee for whichever prover's
    /// result finalizes. The input bytes go to the event only; the request keeps their blob id.
    /// @param callback a contract implementing `IInferenceConsumer`, or address(0) for no callback
    function requestInference(bytes32 modelId, bytes calldata input, address callback, uint64 callbackGasLimit)
        external
        payable
        returns (uint256 requestId)
    {
        if (!registry.isRegistered(modelId)) revert ModelNotRegistered(modelId);
        if (input.length > MAX_INPUT_BYTES) revert InputTooLarge(input.length, MAX_INPUT_BYTES);
        if (callbackGasLimit > MAX_CALLBACK_GAS_LIMIT) {
            revert CallbackGasTooHigh(callbackGasLimit, MAX_CALLBACK_GAS_LIMIT);
        }
        uint256 required = _fee(input.length, callbackGasLimit);
        if (msg.value < required) revert InsufficientFee(msg.value, required);
        if (msg.value > type(uint96).max) revert FeeTooLarge(msg.value);

        bytes32 inputId = blobIdOf(input);
        requestId = ++requestCount;
        _requests[requestId] = Request({
            requester: msg.sender,
            createdAt: uint64(block.timestamp),
            status: RequestStatus.Open,
            callback: callback,
            fee: uint96(msg.value),
            modelId: modelId,
            inputId: inputId,
            callbackGasLimit: callbackGasLimit,
            resultId: 0
        });
        emit InferenceRequested(
            requestId, msg.sender, modelId, inputId, callback, callbackGasLimit, msg.value, input
        );
    }

    /// @inheritdoc IInferenceMarket
    /// @dev fee = baseFee + feePerInputByte * inputLength + callbackGasPrice * callbackGasLimit (the same for
    /// every model today; `modelId` is in the signature so that pricing can depend on it in a later version).
    function estimateFee(bytes32, uint256 inputLength, uint64 callbackGasLimit) external view returns (uint256) {
        return _fee(inputLength, callbackGasLimit);
    }

    /// @inheritdoc IInferenceMarket
    /// @dev The deadline never moves: a discarded result reopens the request but does not restart its clock,
    /// so results can be posted only until `createdAt + requestTimeout` and from then on the open request can
    /// only be cancelled. Whoever keeps a wrong result pending can delay the requester at most until the
    /// deadline (plus the window and the games of its last result), and loses part of a bond each time.
    function cancelRequest(uint256 requestId) external {
        Request storage req = _requests[requestId];
        if (req.status != RequestStatus.Open) revert WrongStatus(requestId, req.status);
        if (msg.sender != req.requester) revert NotRequester(msg.sender);
        uint256 deadline = _expiresAt(requestId);
        if (block.timestamp < deadline) revert RequestNotExpired(requestId, deadline);

        req.status = RequestStatus.Cancelled;
        _balances[req.requester] += req.fee;
        emit RequestCancelled(requestId);
    }

    /// @inheritdoc IInferenceMarket
    /// @dev An event and nothing else: a prover's word that the request cannot be served, so that the
    /// requester is not left with silence; it can cancel from the deadline on as always.
    function reportUnservable(uint256 requestId, string calldata reason) external {
        Request storage req = _requests[requestId];
        if (req.status != RequestStatus.Open) revert WrongStatus(requestId, req.status);
        if (bytes(reason).length > MAX_REASON_BYTES) revert ReasonTooLong(bytes(reason).length, MAX_REASON_BYTES);
        emit RequestUnservable(requestId, msg.sender, reason);
    }

    // ------------------------------------------------------------------------------------------------
    // Results
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IInferenceMarket
    /// @dev The claim is "the guest run for this request reaches, after `steps` steps, the state with hash
    /// `finalStateHash`", whose status must be VALID: the guest checked keccak256(output) against local 3
    /// (vm-spec section 9).
    function postVMResult(uint256 requestId, bytes calldata output, bytes32 finalStateHash, uint64 steps)
        external
        payable
        returns (uint256 resultId)
    {
        if (uint8(finalStateHash[0]) != STATUS_VALID) revert ClaimNotValid(finalStateHash);
        if (steps == 0 || steps > maxSteps) revert InvalidSteps(steps, maxSteps);
        resultId = _post(requestId, output, keccak256(output), finalStateHash, steps, false);
    }

    /// @inheritdoc IInferenceMarket
    /// @dev The output is bound to the claim: SLOT_OUTPUT of `stateRoot` holds keccak256(output), the value
    /// the schedule's OUTPUT execution writes (and a dispute over it is a dispute over that execution).
    function postResult(
        uint256 requestId,
        bytes calldata output,
        bytes32 stateRoot,
        uint64 executions,
        bytes32[14] calldata outputProof
    ) external payable returns (uint256 resultId) {
        if (executions == 0 || executions > MAX_EXECUTIONS) revert InvalidSteps(executions, MAX_EXECUTIONS);
        bytes32 outputHash = keccak256(output);
        _checkOutputBound(stateRoot, outputHash, outputProof);
        resultId = _post(requestId, output, outputHash, stateRoot, executions, true);
    }

    function _post(
        uint256 requestId,
        bytes calldata output,
        bytes32 outputHash,
        bytes32 finalStateHash,
        uint64 steps,
        bool split
    ) internal returns (uint256 resultId) {
        Request storage req = _requests[requestId];
        if (req.status != RequestStatus.Open) revert WrongStatus(requestId, req.status);
        uint256 deadline = _expiresAt(requestId);
        if (block.timestamp >= deadline) revert RequestExpired(requestId, deadline);
        if (msg.value != proverBond) revert WrongBond(msg.value, proverBond);

        resultId = ++resultCount;
        _results[resultId] = Result({
            prover: msg.sender,
            postedAt: uint64(block.timestamp),
            openGames: 0,
            outputHash: outputHash,
            finalStateHash: finalStateHash,
            steps: steps,
            requestId: uint64(requestId),
            discarded: false,
            share: 0,
            split: split
        });
        req.status = RequestStatus.Proposed;
        req.resultId = uint64(resultId);
        emit ResultPosted(requestId, resultId, msg.sender, outputHash, finalStateHash, steps, output);
    }

    /// @inheritdoc IInferenceMarket
    /// @dev One game per challenger per result, any number of challengers: a prover's accomplice cannot
    /// block an honest challenge by challenging first. Bound to `resultId`, so a challenge can never land
    /// on another result than the one its sender verified (reverts with `ResultNotCurrent`).
    function challenge(uint256 requestId, uint256 resultId) external payable returns (uint256 gameId) {
        Request storage req = _requests[requestId];
        if (req.status != RequestStatus.Proposed) revert WrongStatus(requestId, req.status);
        if (resultId != req.resultId) revert ResultNotCurrent(requestId, resultId, req.resultId);
        Result storage r = _results[resultId];
        uint256 closesAt = uint256(r.postedAt) + challengeWindow;
        if (block.timestamp >= closesAt) revert ChallengeWindowClosed(requestId, closesAt);
        if (msg.value != challengerBond) revert WrongBond(msg.value, challengerBond);
        if (msg.sender == r.prover) revert SelfChallenge();
        if (hasChallenged[resultId][msg.sender]) revert AlreadyChallenged(resultId, msg.sender);

        hasChallenged[resultId][msg.sender] = true;
        r.openGames += 1;
        // The game contract is fixed at deployment and does not call back from createGame.
        if (r.split) {
            gameId = disputeGame.createSplitGame(
                r.prover, msg.sender, execProgramHash, SlotTree.initialRoot(req.inputId), r.finalStateHash, r.steps
            );
        } else {
            bytes32 programHash = registry.programHashOf(req.modelId);
            gameId = disputeGame.createGame(r.prover, msg.sender, programHash, r.finalStateHash, r.steps);
        }
        _challenges[gameId] = Challenge({challenger: msg.sender, resultId: uint64(resultId), settled: false});
        emit ResultChallenged(requestId, resultId, gameId, msg.sender);
    }

    /// @inheritdoc IInferenceMarket
    /// @dev Anyone may finalize once the window closed and no game is open; `output` is the posted output
    /// (from the `ResultPosted` event), checked against its hash, so it need not be kept in storage. Pays
    /// the fee and the bond to the prover, then calls the consumer with exactly its `callbackGasLimit`
    /// (reverting if the caller supplied too little gas for that): the callback can neither revert the
    /// finalization nor make it copy return data.
    function finalize(uint256 requestId, bytes calldata output) external nonReentrant {
        Request storage req = _requests[requestId];
        if (req.status != RequestStatus.Proposed) revert WrongStatus(requestId, req.status);
        uint256 resultId = req.resultId;
        Result storage r = _results[resultId];
        uint256 closesAt = uint256(r.postedAt) + challengeWindow;
        if (block.timestamp < closesAt) revert ChallengeWindowOpen(requestId, closesAt);
        if (r.openGames != 0) revert GamesOpen(resultId, r.openGames);
        bytes32 outputHash = keccak256(output);
        if (outputHash != r.outputHash) revert OutputMismatch(r.outputHash, outputHash);

        req.status = RequestStatus.Finalized;
        uint256 fee = req.fee;
        address prover = r.prover;
        _balances[prover] += fee + proverBond;
        emit ResultFinalized(requestId, resultId, prover, fee);

        address callback = req.callback;
        if (callback != address(0)) {
            bytes memory data = abi.encodeCall(IInferenceConsumer.onInferenceResult, (requestId, output));
            if (_callWithExactGas(callback, req.callbackGasLimit, data)) emit CallbackSucceeded(requestId, callback);
            else emit CallbackFailed(requestId, callback);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Games
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IDisputeGameCreator
    /// @dev Never reverts for a game this market created. A proposer win pays the challenger's bond to the
    /// prover. A challenger win discards the result (`_discard`: part of the prover's bond is burned, the
    /// rest shared by every challenge still open on it) and reopens the request. A game of an already
    /// discarded result settles like `refundChallenge`: its bond and its share. No loop over games.
    function onGameResolved(uint256 gameId, bool proposerWon) external onlyDisputeGame {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0) || c.settled) return; // not ours / already refunded: nothing owed
        c.settled = true;
        uint256 resultId = c.resultId;
        Result storage r = _results[resultId];
        emit ChallengeResolved(gameId, resultId, proposerWon);
        r.openGames -= 1; // >= 1 while a challenge of the result is unsettled

        if (r.discarded) {
            _settleAfterDiscard(gameId, resultId, c.challenger, r.share);
        } else if (proposerWon) {
            _balances[r.prover] += challengerBond;
        } else {
            _discard(gameId, resultId, r, c.challenger);
        }
    }

    /// @inheritdoc IInferenceMarket
    /// @dev For a game whose result another game already discarded: pays the challenger its bond and its
    /// share and cancels the game. Anyone may call.
    function refundChallenge(uint256 gameId) external {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0)) revert UnknownGame(gameId);
        if (c.settled) revert GameAlreadySettled(gameId);
        uint256 resultId = c.resultId;
        Result storage r = _results[resultId];
        if (!r.discarded) revert ResultNotDiscarded(resultId);

        c.settled = true;
        r.openGames -= 1;
        _settleAfterDiscard(gameId, resultId, c.challenger, r.share);
        disputeGame.cancel(gameId);
    }

    /// @inheritdoc IDisputeGameCreator
    function gameLocalData(uint256 gameId, uint256 ident) external view returns (bool known, bytes32 value) {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0)) return (false, bytes32(0));
        Result storage r = _results[c.resultId];
        if (ident == LOCAL_MODEL_ID) return (true, _requests[r.requestId].modelId);
        if (ident == LOCAL_INPUT_ID) return (true, _requests[r.requestId].inputId);
        if (ident == LOCAL_OUTPUT_HASH) return (true, r.outputHash);
        return (false, bytes32(0));
    }

    // ------------------------------------------------------------------------------------------------
    // Payouts
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IInferenceMarket
    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _balances[msg.sender] = 0;
        emit Withdrawal(msg.sender, amount);
        bool ok;
        assembly ("memory-safe") {
            ok := call(gas(), caller(), amount, 0, 0, 0, 0) // no return data copied
        }
        if (!ok) revert WithdrawFailed();
    }

    // ------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IInferenceMarket
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @inheritdoc IInferenceMarket
    function expiresAt(uint256 requestId) external view returns (uint256) {
        if (_requests[requestId].status == RequestStatus.None) return 0;
        return _expiresAt(requestId);
    }

    /// @inheritdoc IInferenceMarket
    function getRequest(uint256 requestId) external view returns (Request memory) {
        return _requests[requestId];
    }

    /// @inheritdoc IInferenceMarket
    function getResult(uint256 resultId) external view returns (Result memory) {
        return _results[resultId];
    }

    /// @inheritdoc IInferenceMarket
    function getChallenge(uint256 gameId) external view returns (Challenge memory) {
        return _challenges[gameId];
    }

    /// @inheritdoc IInferenceMarket
    function initialRoot(uint256 requestId) external view returns (bytes32) {
        return SlotTree.initialRoot(_requests[requestId].inputId);
    }

    /// @notice The blob id (vm-spec section 6) of data of at most one chunk (16384 bytes): the keccak key of
    /// the manifest `u64be(len) ++ keccakKey(data)`. An empty input is one empty chunk.
    function blobIdOf(bytes calldata data) public pure returns (bytes32) {
        if (data.length > MAX_INPUT_BYTES) revert InputTooLarge(data.length, MAX_INPUT_BYTES);
        bytes32 chunkKey = _keccakKey(keccak256(data));
        return _keccakKey(keccak256(abi.encodePacked(uint64(data.length), chunkKey)));
    }

    // ------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------

    /// @dev SLOT_OUTPUT of `stateRoot` holds `outputHash`. Virtual only so that the tests can show an unbound
    /// output landing (contracts/test/utils/BrokenSplit.sol); nothing here overrides it.
    function _checkOutputBound(bytes32 stateRoot, bytes32 outputHash, bytes32[14] calldata proof)
        internal
        pure
        virtual
    {
        bytes32 got = SlotTree.rootFrom(SlotTree.SLOT_OUTPUT, outputHash, proof);
        if (got != stateRoot) revert OutputNotBound(stateRoot, got);
    }

    /// @dev The request's fixed deadline. Virtual only so that the tests can run the censorship attack
    /// against the old rule (contracts/test/utils/OldRules.sol); nothing here overrides it.
    function _expiresAt(uint256 requestId) internal view virtual returns (uint256) {
        return uint256(_requests[requestId].createdAt) + requestTimeout;
    }

    /// @dev Game `gameId` (won by `winner`) discards result `resultId`; `r.openGames` already excludes it.
    /// `proverBondBurnBps` of the prover's bond is burned; the rest is split equally between this game and
    /// the `r.openGames` games still open on the result (the rounding dust is burned too). The winner gets its
    /// bond and its share now; each other game gets the same when it settles (`refundChallenge`, or its own
    /// resolution). An accomplice that concedes for the prover thus recovers at most the unburned part, and
    /// shares it with every honest challenger of the result. The request reopens; its deadline stays.
    /// Never reverts (the bond fits uint96, the bps are at most BPS, there is at least one game). Virtual only
    /// for the tests' old-rules market, like `_expiresAt`.
    function _discard(uint256 gameId, uint256 resultId, Result storage r, address winner) internal virtual {
        uint256 games = uint256(r.openGames) + 1;
        uint256 share = (proverBond - (proverBond * proverBondBurnBps) / BPS) / games;
        uint256 burnt = proverBond - share * games;
        burned += burnt;
        r.share = uint96(share);
        r.discarded = true;
        _balances[winner] += challengerBond + share;
        uint256 requestId = r.requestId;
        _requests[requestId].status = RequestStatus.Open;
        emit ResultDiscarded(requestId, resultId, gameId, share, burnt);
    }

    /// @dev A challenge of a discarded result settles: its bond back and the result's share.
    function _settleAfterDiscard(uint256 gameId, uint256 resultId, address challenger, uint256 share) internal {
        uint256 amount = challengerBond + share;
        _balances[challenger] += amount;
        emit ChallengeRefunded(gameId, resultId, challenger, amount);
    }

    function _fee(uint256 inputLength, uint64 callbackGasLimit) internal view returns (uint256) {
        return baseFee + feePerInputByte * inputLength + callbackGasPrice * callbackGasLimit;
    }

    /// @dev A keccak preimage key: type byte 0x02, then the low 31 bytes of the hash.
    function _keccakKey(bytes32 h) internal pure returns (bytes32) {
        return bytes32((uint256(h) & type(uint248).max) | (uint256(2) << 248));
    }

    /// @dev Calls `target` with exactly `gasAmount` gas, reverting when less than that would reach it (so
    /// a finalizer cannot starve the callback); returns the call's success without copying return data.
    function _callWithExactGas(address target, uint64 gasAmount, bytes memory data) internal returns (bool ok) {
        bytes4 insufficient = InsufficientGasForCallback.selector;
        assembly ("memory-safe") {
            let g := gas()
            if lt(g, CALL_GAS_RESERVE) {
                mstore(0, insufficient)
                revert(0, 4)
            }
            g := sub(g, CALL_GAS_RESERVE)
            // EIP-150: at most g - g/64 is forwarded.
            if lt(sub(g, div(g, 64)), gasAmount) {
                mstore(0, insufficient)
                revert(0, 4)
            }
            ok := call(gasAmount, target, 0, add(data, 0x20), mload(data), 0, 0)
        }
    }
}
