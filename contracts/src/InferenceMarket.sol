// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IDisputeGame, IDisputeGameCreator} from "./interfaces/IDisputeGame.sol";
import {IInferenceConsumer} from "./interfaces/IInferenceConsumer.sol";
import {IInferenceMarket} from "./interfaces/IInferenceMarket.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title InferenceMarket
/// @notice Optimistic ML inference: a dApp pays a fee for "model M on input X"; a prover posts the output with
/// a bond; during the challenge window anyone may challenge with a bond, which opens a `DisputeGame`; an
/// unchallenged (or successfully defended) result finalizes, the prover is paid and the consumer's callback
/// fires. A result that loses a game is discarded and the request reopens for another prover.
/// @dev Protocol described in docs/protocol.md. No owner or admin: every parameter is fixed at deployment.
/// All payouts are credited to `balanceOf` and pulled with `withdraw`, so no receiver can block a transition.
/// Accounting invariant: `address(this).balance` == fees of open and proposed requests + bonds of pending
/// results + bonds of unsettled challenges + the sum of `balanceOf`.
contract InferenceMarket is IInferenceMarket, IDisputeGameCreator, ReentrancyGuardTransient {
    /// @notice Inputs are one blob chunk at most (vm-spec section 6), so the market computes their blob id.
    uint256 public constant MAX_INPUT_BYTES = 16384;
    /// @notice Upper bound of a request's callback gas (keeps `finalize` well inside a block).
    uint64 public constant MAX_CALLBACK_GAS_LIMIT = 5_000_000;
    /// @dev Gas kept back for the CALL itself (cold account access, memory) when checking the callback gets
    /// its full limit.
    uint256 internal constant CALL_GAS_RESERVE = 5_000;
    uint256 internal constant STATUS_VALID = 0;
    uint256 internal constant LOCAL_MODEL_ID = 1;
    uint256 internal constant LOCAL_INPUT_ID = 2;
    uint256 internal constant LOCAL_OUTPUT_HASH = 3;

    IModelRegistry public immutable registry;
    IDisputeGame public immutable disputeGame;
    uint256 public immutable baseFee;
    uint256 public immutable feePerInputByte;
    uint256 public immutable callbackGasPrice;
    uint256 public immutable proverBond;
    uint256 public immutable challengerBond;
    uint64 public immutable challengeWindow;
    uint64 public immutable requestTimeout;
    uint64 public immutable maxSteps;

    /// @notice Ids handed out so far: requests 1..requestCount, results 1..resultCount.
    uint256 public requestCount;
    uint256 public resultCount;

    mapping(uint256 requestId => Request) internal _requests;
    mapping(uint256 resultId => Result) internal _results;
    mapping(uint256 gameId => Challenge) internal _challenges;
    mapping(uint256 resultId => mapping(address challenger => bool)) public hasChallenged;
    mapping(address account => uint256) internal _balances;

    modifier onlyDisputeGame() {
        if (msg.sender != address(disputeGame)) revert NotDisputeGame(msg.sender);
        _;
    }

    constructor(IModelRegistry registry_, IDisputeGame disputeGame_, Params memory p) {
        registry = registry_;
        disputeGame = disputeGame_;
        baseFee = p.baseFee;
        feePerInputByte = p.feePerInputByte;
        callbackGasPrice = p.callbackGasPrice;
        proverBond = p.proverBond;
        challengerBond = p.challengerBond;
        challengeWindow = p.challengeWindow;
        requestTimeout = p.requestTimeout;
        maxSteps = p.maxSteps;
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
            openedAt: uint64(block.timestamp),
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
    /// @dev The requester may take its fee back when no result is pending and none arrived for
    /// `requestTimeout` seconds since the request was made or last reopened.
    function cancelRequest(uint256 requestId) external {
        Request storage req = _requests[requestId];
        if (req.status != RequestStatus.Open) revert WrongStatus(requestId, req.status);
        if (msg.sender != req.requester) revert NotRequester(msg.sender);
        uint256 expiresAt = uint256(req.openedAt) + requestTimeout;
        if (block.timestamp < expiresAt) revert RequestNotExpired(requestId, expiresAt);

        req.status = RequestStatus.Cancelled;
        _balances[req.requester] += req.fee;
        emit RequestCancelled(requestId);
    }

    // ------------------------------------------------------------------------------------------------
    // Results
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IInferenceMarket
    /// @dev The claim is "the guest run for this request reaches, after `steps` steps, the state with hash
    /// `finalStateHash`", whose status must be VALID: the guest checked keccak256(output) against local 3
    /// (vm-spec section 9).
    function postResult(uint256 requestId, bytes calldata output, bytes32 finalStateHash, uint64 steps)
        external
        payable
        returns (uint256 resultId)
    {
        Request storage req = _requests[requestId];
        if (req.status != RequestStatus.Open) revert WrongStatus(requestId, req.status);
        if (msg.value != proverBond) revert WrongBond(msg.value, proverBond);
        if (uint8(finalStateHash[0]) != STATUS_VALID) revert ClaimNotValid(finalStateHash);
        if (steps == 0 || steps > maxSteps) revert InvalidSteps(steps, maxSteps);

        bytes32 outputHash = keccak256(output);
        resultId = ++resultCount;
        _results[resultId] = Result({
            prover: msg.sender,
            postedAt: uint64(block.timestamp),
            openGames: 0,
            outputHash: outputHash,
            finalStateHash: finalStateHash,
            steps: steps,
            requestId: uint64(requestId),
            discarded: false
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
        bytes32 programHash = registry.programHashOf(req.modelId);
        // The game contract is fixed at deployment and does not call back from createGame.
        gameId = disputeGame.createGame(r.prover, msg.sender, programHash, r.finalStateHash, r.steps);
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
    /// @dev Never reverts for a game this market created. The loser's bond goes to the winner. A challenger
    /// win discards the result and reopens the request (the fee stays escrowed); the other games on that
    /// result are refunded through `refundChallenge` (no loop here, so any number of games is fine).
    function onGameResolved(uint256 gameId, bool proposerWon) external onlyDisputeGame {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0) || c.settled) return; // not ours / already refunded: nothing owed
        c.settled = true;
        uint256 resultId = c.resultId;
        Result storage r = _results[resultId];
        emit ChallengeResolved(gameId, resultId, proposerWon);

        if (r.discarded) {
            // Another game already discarded this result: this one only gets its bond back.
            _balances[c.challenger] += challengerBond;
            emit ChallengeRefunded(gameId, resultId, c.challenger);
            return;
        }
        r.openGames -= 1;
        if (proposerWon) {
            _balances[r.prover] += challengerBond;
        } else {
            _balances[c.challenger] += challengerBond + proverBond;
            r.discarded = true;
            Request storage req = _requests[r.requestId];
            req.status = RequestStatus.Open;
            req.openedAt = uint64(block.timestamp);
            emit ResultDiscarded(r.requestId, resultId, gameId);
        }
    }

    /// @inheritdoc IInferenceMarket
    /// @dev For a game whose result another game already discarded: refunds the challenger's bond and
    /// cancels the game. Anyone may call.
    function refundChallenge(uint256 gameId) external {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0)) revert UnknownGame(gameId);
        if (c.settled) revert GameAlreadySettled(gameId);
        uint256 resultId = c.resultId;
        if (!_results[resultId].discarded) revert ResultNotDiscarded(resultId);

        c.settled = true;
        _balances[c.challenger] += challengerBond;
        emit ChallengeRefunded(gameId, resultId, c.challenger);
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
