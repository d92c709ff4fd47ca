// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IInferenceMarket
/// @notice Requests for ML inference, optimistic results with bonds, disputes, finalization with a callback.
interface IInferenceMarket {
    enum RequestStatus {
        None,
        Open, // waiting for a result
        Proposed, // a result is pending (challenge window, open games)
        Finalized,
        Cancelled
    }

    struct Request {
        address requester;
        uint64 openedAt; // when the request was made or last reopened
        RequestStatus status;
        address callback;
        uint96 fee;
        bytes32 modelId;
        bytes32 inputId;
        uint64 callbackGasLimit;
        uint64 resultId; // the current (or last) result
    }

    struct Result {
        address prover;
        uint64 postedAt;
        uint32 openGames;
        bytes32 outputHash;
        bytes32 finalStateHash;
        uint64 steps;
        uint64 requestId;
        bool discarded;
    }

    struct Challenge {
        address challenger;
        uint64 resultId;
        bool settled; // the challenger's bond was paid out (game resolved or cancelled)
    }

    /// @notice Constructor parameters (no admin: fixed for the life of the deployment).
    struct Params {
        uint256 baseFee; // wei per request
        uint256 feePerInputByte; // wei per input byte
        uint256 callbackGasPrice; // wei per unit of callback gas the request asks for
        uint256 proverBond; // wei a prover locks with a result
        uint256 challengerBond; // wei a challenger locks with a challenge
        uint64 challengeWindow; // seconds after a result is posted during which it can be challenged
        uint64 requestTimeout; // seconds an open request waits for a result before the requester may cancel
        uint64 maxSteps; // the largest step count a result may claim
    }

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
    event ResultPosted(
        uint256 indexed requestId,
        uint256 indexed resultId,
        address indexed prover,
        bytes32 outputHash,
        bytes32 finalStateHash,
        uint64 steps,
        bytes output
    );
    event ResultChallenged(
        uint256 indexed requestId, uint256 indexed resultId, uint256 indexed gameId, address challenger
    );
    event ChallengeResolved(uint256 indexed gameId, uint256 indexed resultId, bool proposerWon);
    event ChallengeRefunded(uint256 indexed gameId, uint256 indexed resultId, address challenger);
    event ResultDiscarded(uint256 indexed requestId, uint256 indexed resultId, uint256 indexed gameId);
    event ResultFinalized(uint256 indexed requestId, uint256 indexed resultId, address indexed prover, uint256 fee);
    event CallbackFailed(uint256 indexed requestId, address callback);
    event CallbackSucceeded(uint256 indexed requestId, address callback);
    event RequestCancelled(uint256 indexed requestId);
    event Withdrawal(address indexed account, uint256 amount);

    error ModelNotRegistered(bytes32 modelId);
    error InputTooLarge(uint256 length, uint256 max);
    error CallbackGasTooHigh(uint64 callbackGasLimit, uint64 max);
    error InsufficientFee(uint256 paid, uint256 required);
    error FeeTooLarge(uint256 paid);
    error WrongBond(uint256 paid, uint256 required);
    error WrongStatus(uint256 requestId, RequestStatus status);
    error ClaimNotValid(bytes32 finalStateHash);
    error InvalidSteps(uint64 steps, uint64 maxSteps);
    error ChallengeWindowClosed(uint256 requestId, uint256 closedAt);
    error ChallengeWindowOpen(uint256 requestId, uint256 closesAt);
    error AlreadyChallenged(uint256 resultId, address challenger);
    error ResultNotCurrent(uint256 requestId, uint256 resultId, uint256 currentResultId);
    error SelfChallenge();
    error GamesOpen(uint256 resultId, uint32 openGames);
    error OutputMismatch(bytes32 expected, bytes32 actual);
    error InsufficientGasForCallback();
    error NotRequester(address caller);
    error RequestNotExpired(uint256 requestId, uint256 expiresAt);
    error NotDisputeGame(address caller);
    error UnknownGame(uint256 gameId);
    error GameAlreadySettled(uint256 gameId);
    error ResultNotDiscarded(uint256 resultId);
    error NothingToWithdraw();
    error WithdrawFailed();

    function requestInference(bytes32 modelId, bytes calldata input, address callback, uint64 callbackGasLimit)
        external
        payable
        returns (uint256 requestId);

    function estimateFee(bytes32 modelId, uint256 inputLength, uint64 callbackGasLimit)
        external
        view
        returns (uint256);

    function postResult(uint256 requestId, bytes calldata output, bytes32 finalStateHash, uint64 steps)
        external
        payable
        returns (uint256 resultId);

    /// @notice Challenges result `resultId` of `requestId`; reverts with `ResultNotCurrent` unless it is the
    /// request's current result, so the challenge lands on the claim its sender checked.
    function challenge(uint256 requestId, uint256 resultId) external payable returns (uint256 gameId);

    function finalize(uint256 requestId, bytes calldata output) external;

    function refundChallenge(uint256 gameId) external;

    function cancelRequest(uint256 requestId) external;

    function withdraw() external;

    function balanceOf(address account) external view returns (uint256);

    function getRequest(uint256 requestId) external view returns (Request memory);

    function getResult(uint256 resultId) external view returns (Result memory);

    function getChallenge(uint256 gameId) external view returns (Challenge memory);

    function blobIdOf(bytes calldata data) external pure returns (bytes32);
}
