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
        uint64 createdAt; // when the request was made: it expires at createdAt + requestTimeout (fixed)
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
        uint32 openGames; // unsettled challenges of this result (before and after a discard)
        bytes32 outputHash;
        bytes32 finalStateHash;
        uint64 steps;
        uint64 requestId;
        bool discarded;
        // set when the result is discarded: each challenge open on it then gets this part of the prover's
        // bond on top of its own bond (the winner at once, the others when they settle)
        uint96 share;
        // a split claim (`finalStateHash` is the root of S_N, `steps` the executions N) rather than a VM claim
        bool split;
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
        uint16 proverBondBurnBps; // basis points of a losing prover's bond burned (locked in the market forever)
        uint64 challengeWindow; // seconds after a result is posted during which it can be challenged
        uint64 requestTimeout; // seconds after its creation during which a request takes results
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
    /// @notice A challenge of a discarded result settled: `amount` = its bond + the result's share.
    event ChallengeRefunded(uint256 indexed gameId, uint256 indexed resultId, address challenger, uint256 amount);
    /// @notice Game `gameId` discarded the result: of the prover's bond, `share` goes to each of the
    /// challenges open on the result (this one included) and `burnt` is locked in the market forever.
    event ResultDiscarded(
        uint256 indexed requestId, uint256 indexed resultId, uint256 indexed gameId, uint256 share, uint256 burnt
    );
    event ResultFinalized(uint256 indexed requestId, uint256 indexed resultId, address indexed prover, uint256 fee);
    event CallbackFailed(uint256 indexed requestId, address callback);
    event CallbackSucceeded(uint256 indexed requestId, address callback);
    event RequestCancelled(uint256 indexed requestId);
    event RequestUnservable(uint256 indexed requestId, address indexed prover, string reason);
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
    /// @notice A split claim whose SLOT_OUTPUT proof does not give its state root with keccak256(output).
    error OutputNotBound(bytes32 stateRoot, bytes32 provenRoot);
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
    error RequestExpired(uint256 requestId, uint256 expiredAt);
    error InvalidBurnBps(uint256 bps);
    error BondTooLarge(uint256 bond);
    error NotDisputeGame(address caller);
    error UnknownGame(uint256 gameId);
    error GameAlreadySettled(uint256 gameId);
    error ResultNotDiscarded(uint256 resultId);
    error ReasonTooLong(uint256 length, uint256 max);
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

    /// @notice Posts a VM claim (a plain program's whole run: docs/protocol.md) for an open request before its
    /// deadline (`RequestExpired` from `createdAt + requestTimeout` on).
    function postVMResult(uint256 requestId, bytes calldata output, bytes32 finalStateHash, uint64 steps)
        external
        payable
        returns (uint256 resultId);

    /// @notice Posts a split claim (docs/protocol.md, "Split game"): running the model's execution schedule
    /// `executions` times from S_0 gives the state with root `stateRoot`, whose SLOT_OUTPUT holds
    /// keccak256(output) (`outputProof`: that slot's 14 siblings). Same deadline and bond as a VM claim.
    function postResult(
        uint256 requestId,
        bytes calldata output,
        bytes32 stateRoot,
        uint64 executions,
        bytes32[14] calldata outputProof
    ) external payable returns (uint256 resultId);

    /// @notice The root of S_0 of a request's split claims: only SLOT_INPUT set, to the input's blob id.
    function initialRoot(uint256 requestId) external view returns (bytes32);

    /// @notice Challenges result `resultId` of `requestId`; reverts with `ResultNotCurrent` unless it is the
    /// request's current result, so the challenge lands on the claim its sender checked.
    function challenge(uint256 requestId, uint256 resultId) external payable returns (uint256 gameId);

    function finalize(uint256 requestId, bytes calldata output) external;

    function refundChallenge(uint256 gameId) external;

    /// @notice The requester takes its fee back once the request is open (no result pending) and its
    /// deadline `createdAt + requestTimeout` passed.
    function cancelRequest(uint256 requestId) external;

    /// @notice A prover says it cannot serve an open request (the runtime rejects its input, say), with a
    /// reason the requester can read (`RequestUnservable`). Informational only: nothing changes in the
    /// request, no ETH moves, anyone may say it (readers judge the sender).
    function reportUnservable(uint256 requestId, string calldata reason) external;

    function withdraw() external;

    function balanceOf(address account) external view returns (uint256);

    /// @notice Wei of losing provers' bonds burned so far: held by the market forever, owed to nobody.
    function burned() external view returns (uint256);

    /// @notice The request's deadline: `createdAt + requestTimeout` (0 for an unknown request).
    function expiresAt(uint256 requestId) external view returns (uint256);

    function getRequest(uint256 requestId) external view returns (Request memory);

    function getResult(uint256 resultId) external view returns (Result memory);

    function getChallenge(uint256 gameId) external view returns (Challenge memory);

    function blobIdOf(bytes calldata data) external pure returns (bytes32);
}
