// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IDisputeGame, IDisputeGameCreator} from "./interfaces/IDisputeGame.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title TrainingRun
/// @notice Verifiable training: a public run of SGD updates done by anyone holding the lease, checked by anyone,
/// settled by the same `DisputeGame` as an inference. An update is the guest run "training graph M on input
/// (state, batches)": the architecture is a registered mlkit training graph (docs/model-format.md, "Training
/// graphs"), its input is named from content ids alone (the current state's chunk keys and the run's batch
/// ids), and its output payload follows from the posted next state and loss. So a worker's post is an
/// ordinary claim "the guest reaches, after `steps` steps, the VALID state `finalStateHash`".
/// @dev Protocol in docs/protocol.md ("Training runs"). Flow per update: `takeLease` (deposit, expiry) ->
/// `postUpdate` (the new state in calldata: published by construction) -> challenge window (`challenge`, one
/// game per challenger) -> `finalize` (worker paid) or a lost game (the deposit to the winner, the update
/// discarded, the lease reopens). After the last update `register` puts the trained model into the
/// `ModelRegistry`. No owner; every payout is credited to `balanceOf` and pulled with `withdraw`.
/// Accounting invariant: `address(this).balance` == the unpaid rewards of every run + the deposits of held
/// leases and pending updates + the bonds of unsettled challenges + the sum of `balanceOf`.
contract TrainingRun is IDisputeGameCreator, ReentrancyGuardTransient {
    uint256 public constant CHUNK = 16384;
    /// @notice A state is at most this many chunks (its bytes are calldata of every update).
    uint256 public constant MAX_STATE_CHUNKS = 8;
    /// @notice The registered model file is a flat blob (one manifest level: at most 511 chunks).
    uint256 public constant MAX_MODEL_CHUNKS = 511;
    uint256 internal constant STATUS_VALID = 0;
    uint256 internal constant LOCAL_MODEL_ID = 1;
    uint256 internal constant LOCAL_INPUT_ID = 2;
    uint256 internal constant LOCAL_OUTPUT_HASH = 3;
    uint8 internal constant KEY_TYPE_KECCAK = 2;

    /// @notice What the creator fixes. `lrBits`, `momentumBits` and `batchSize` are informational: the
    /// architecture's graph (its model id) binds the hyperparameters.
    struct Config {
        bytes32 architecture; // model id of the training graph, registered in the ModelRegistry
        uint32 stepsPerUpdate; // k: batches per update
        uint32 stateRecordsEnd; // offset where the state's records end (its pad record starts)
        uint32 nOutputs; // records in an update's output payload (the state's, then the loss)
        uint32 batchSize;
        uint32 lrBits; // f32 bits
        uint32 momentumBits; // f32 bits
        uint64 challengeWindow;
        uint64 leaseDuration;
        uint64 maxSteps;
        uint96 rewardPerUpdate;
        uint96 workerDeposit;
        uint96 challengerBond;
    }

    struct Run {
        address creator;
        bool closed;
        uint32 stateChunks;
        uint64 updates; // N = batches / k
        uint64 accepted; // updates accepted so far: the index of the next one
        address leaseHolder;
        uint64 leaseExpires;
        uint64 pendingUpdate; // the update in its window or games, 0 if none
        bytes32 stateTemplate; // keccak256 of a state with every record's data zeroed
        bytes32 modelTemplate; // keccak256 of the inference model file with its parameters' data zeroed
        bytes32 finalModelId;
        uint256 rewardLeft;
        Config cfg;
    }

    struct Update {
        address worker;
        uint64 runId;
        uint64 index;
        uint64 postedAt;
        uint64 steps;
        uint32 openGames;
        uint32 lossBits;
        bool discarded;
        bool accepted;
        bytes32 inputId;
        bytes32 outputHash;
        bytes32 finalStateHash;
        bytes32 stateId;
    }

    /// @notice Where the data of a state lies, and the inference model the run registers at its end.
    struct Layout {
        uint32[] stateRanges; // (offset, length) of each state record's data: the rest is the state's template
        uint32[] modelRanges; // (model offset, state offset, length) of each parameter, for `register`
        bytes32 modelTemplate; // keccak256 of the inference model file with its parameters' data zeroed
    }

    /// @notice What the registry records of the trained model (informational, as in `ModelRegistry.register`).
    struct ModelInfo {
        string name;
        uint32[] inputShape;
        uint32[] outputShape;
        string uri;
    }

    struct Challenge {
        address challenger;
        uint64 updateId;
        bool settled;
    }

    IModelRegistry public immutable registry;
    IDisputeGame public immutable disputeGame;

    uint256 public runCount;
    uint256 public updateCount;

    mapping(uint256 runId => Run) internal _runs;
    mapping(uint256 runId => bytes32[]) internal _batchIds;
    mapping(uint256 runId => bytes32[]) internal _stateKeys; // the last accepted state's chunk keys
    mapping(uint256 runId => uint32[]) internal _stateRanges; // (offset, length) pairs
    mapping(uint256 runId => uint32[]) internal _modelRanges; // (model offset, state offset, length) triples
    mapping(uint256 updateId => Update) internal _updates;
    mapping(uint256 updateId => bytes32[]) internal _updateKeys;
    mapping(uint256 gameId => Challenge) internal _challenges;
    mapping(uint256 updateId => mapping(address => bool)) public hasChallenged;
    mapping(address account => uint256) internal _balances;

    event RunCreated(
        uint256 indexed runId,
        address indexed creator,
        bytes32 indexed architecture,
        uint64 updates,
        uint32 stepsPerUpdate,
        bytes32 stateId,
        bytes32[] batchIds,
        bytes state
    );
    event LeaseTaken(uint256 indexed runId, address indexed worker, uint64 index, uint64 expires);
    event LeaseForfeited(uint256 indexed runId, address indexed worker, uint256 deposit);
    event UpdatePosted(
        uint256 indexed runId,
        uint256 indexed updateId,
        address indexed worker,
        uint64 index,
        bytes32 stateId,
        uint32 lossBits,
        bytes32 finalStateHash,
        uint64 steps,
        bytes state
    );
    event UpdateChallenged(uint256 indexed runId, uint256 indexed updateId, uint256 gameId, address challenger);
    event UpdateDiscarded(uint256 indexed runId, uint256 indexed updateId, uint256 gameId, address winner);
    event UpdateAccepted(uint256 indexed runId, uint256 indexed updateId, uint64 index, uint32 lossBits);
    event ChallengeSettled(uint256 indexed gameId, uint256 indexed updateId, bool proposerWon);
    event RunRegistered(uint256 indexed runId, bytes32 indexed modelId);
    event RunClosed(uint256 indexed runId, uint256 refund);
    event Withdrawal(address indexed account, uint256 amount);

    error UnknownArchitecture(bytes32 architecture);
    error InvalidBatchId(uint256 index, bytes32 batchId);
    error BadDataset(uint256 batches, uint32 stepsPerUpdate);
    error BadState(uint256 length);
    error BadRanges();
    error BadConfig();
    error WrongFunding(uint256 sent, uint256 required);
    error WrongDeposit(uint256 sent, uint256 required);
    error UnknownRun(uint256 runId);
    error RunFinished(uint256 runId);
    error UpdatePending(uint256 runId, uint256 updateId);
    error LeaseHeld(uint256 runId, address holder, uint64 expires);
    error LeaseNotHeld(uint256 runId, address caller);
    error StepNotNext(uint256 runId, uint64 index, uint64 next);
    error WrongStateLayout(uint256 runId);
    error ClaimNotValid(bytes32 finalStateHash);
    error InvalidSteps(uint64 steps, uint64 maxSteps);
    error UnknownUpdate(uint256 updateId);
    error UpdateSettled(uint256 updateId);
    error ChallengeWindowClosed(uint256 updateId, uint256 closesAt);
    error ChallengeWindowOpen(uint256 updateId, uint256 closesAt);
    error GamesOpen(uint256 updateId, uint32 games);
    error SelfChallenge();
    error AlreadyChallenged(uint256 updateId, address challenger);
    error NotDisputeGame(address caller);
    error UnknownGame(uint256 gameId);
    error GameAlreadySettled(uint256 gameId);
    error UpdateNotDiscarded(uint256 updateId);
    error RunNotComplete(uint256 runId, uint64 accepted, uint64 updates);
    error AlreadyRegistered(uint256 runId, bytes32 modelId);
    error StateMismatch(uint256 runId);
    error ModelMismatch(uint256 runId);
    error NotCreator(address caller);
    error NothingToWithdraw();
    error WithdrawFailed();

    modifier onlyDisputeGame() {
        if (msg.sender != address(disputeGame)) revert NotDisputeGame(msg.sender);
        _;
    }

    constructor(IModelRegistry registry_, IDisputeGame disputeGame_) {
        registry = registry_;
        disputeGame = disputeGame_;
    }

    // ------------------------------------------------------------------------------------------------
    // Runs
    // ------------------------------------------------------------------------------------------------

    /// @notice Create and fund a run: `msg.value` must be `rewardPerUpdate * batchIds.length / k`.
    /// @param initialState the initial weights and momentum buffers (whole chunks; published in the event)
    /// @param batchIds the dataset: the keccak keys of the batch chunks, `k` per update, in order
    function createRun(
        Config calldata cfg,
        Layout calldata spec,
        bytes calldata initialState,
        bytes32[] calldata batchIds
    ) external payable returns (uint256 runId) {
        if (!registry.isRegistered(cfg.architecture)) revert UnknownArchitecture(cfg.architecture);
        uint256 k = cfg.stepsPerUpdate;
        if (k == 0 || batchIds.length == 0 || batchIds.length % k != 0) {
            revert BadDataset(batchIds.length, cfg.stepsPerUpdate);
        }
        for (uint256 i = 0; i < batchIds.length; i++) {
            if (uint8(batchIds[i][0]) != KEY_TYPE_KECCAK) revert InvalidBatchId(i, batchIds[i]);
        }
        uint256 len = initialState.length;
        if (len == 0 || len % CHUNK != 0 || len > MAX_STATE_CHUNKS * CHUNK) revert BadState(len);
        if (
            cfg.challengeWindow == 0 || cfg.leaseDuration == 0 || cfg.maxSteps == 0 || cfg.workerDeposit == 0
                || cfg.challengerBond == 0 || cfg.nOutputs == 0 || cfg.stateRecordsEnd < 8
                || cfg.stateRecordsEnd > len
        ) revert BadConfig();
        _checkRanges(spec.stateRanges, 2, len, 0);
        _checkRanges(spec.modelRanges, 3, len, 1);
        uint256 required = uint256(cfg.rewardPerUpdate) * (batchIds.length / k);
        if (msg.value != required) revert WrongFunding(msg.value, required);

        runId = ++runCount;
        Run storage run = _runs[runId];
        run.creator = msg.sender;
        run.stateChunks = uint32(len / CHUNK);
        run.updates = uint64(batchIds.length / k);
        run.stateTemplate = _template(initialState, spec.stateRanges);
        run.modelTemplate = spec.modelTemplate;
        run.rewardLeft = msg.value;
        run.cfg = cfg;
        _batchIds[runId] = batchIds;
        _stateRanges[runId] = spec.stateRanges;
        _modelRanges[runId] = spec.modelRanges;
        _stateKeys[runId] = _chunkKeys(initialState);
        _emitCreated(runId, run, batchIds, initialState);
    }

    function _emitCreated(uint256 runId, Run storage run, bytes32[] calldata batchIds, bytes calldata state) internal {
        emit RunCreated(
            runId,
            run.creator,
            run.cfg.architecture,
            run.updates,
            run.cfg.stepsPerUpdate,
            _stateId(_stateKeys[runId]),
            batchIds,
            state
        );
    }

    /// @notice Close a run early (its creator; no lease held, no update pending): the unpaid rewards back.
    function closeRun(uint256 runId) external {
        Run storage run = _run(runId);
        if (msg.sender != run.creator) revert NotCreator(msg.sender);
        if (run.closed) revert RunFinished(runId);
        if (run.pendingUpdate != 0) revert UpdatePending(runId, run.pendingUpdate);
        if (run.leaseHolder != address(0) && block.timestamp < run.leaseExpires) {
            revert LeaseHeld(runId, run.leaseHolder, run.leaseExpires);
        }
        _expireLease(runId, run);
        run.closed = true;
        uint256 refund = run.rewardLeft;
        run.rewardLeft = 0;
        _balances[run.creator] += refund;
        emit RunClosed(runId, refund);
    }

    // ------------------------------------------------------------------------------------------------
    // Leases and updates
    // ------------------------------------------------------------------------------------------------

    /// @notice Take the lease on the run's next update with the worker deposit. A lease whose holder let it
    /// expire without posting is forfeited (its deposit to the creator), so a stalled worker cannot block.
    function takeLease(uint256 runId) external payable {
        Run storage run = _run(runId);
        if (run.closed || run.accepted >= run.updates) revert RunFinished(runId);
        if (run.pendingUpdate != 0) revert UpdatePending(runId, run.pendingUpdate);
        if (run.leaseHolder != address(0) && block.timestamp < run.leaseExpires) {
            revert LeaseHeld(runId, run.leaseHolder, run.leaseExpires);
        }
        if (msg.value != run.cfg.workerDeposit) revert WrongDeposit(msg.value, run.cfg.workerDeposit);
        _expireLease(runId, run);
        run.leaseHolder = msg.sender;
        run.leaseExpires = uint64(block.timestamp) + run.cfg.leaseDuration;
        emit LeaseTaken(runId, msg.sender, run.accepted, run.leaseExpires);
    }

    /// @notice Post update `index` (must be the next): the new state (published here, as calldata and in the
    /// event), the loss, and the claim on the guest run that produces them. The lease's deposit becomes the
    /// update's bond.
    function postUpdate(
        uint256 runId,
        uint64 index,
        bytes calldata state,
        uint32 lossBits,
        bytes32 finalStateHash,
        uint64 steps
    ) external returns (uint256 updateId) {
        Run storage run = _run(runId);
        if (run.leaseHolder != msg.sender || block.timestamp >= run.leaseExpires) revert LeaseNotHeld(runId, msg.sender);
        if (index != run.accepted) revert StepNotNext(runId, index, run.accepted);
        if (state.length != uint256(run.stateChunks) * CHUNK) revert WrongStateLayout(runId);
        if (_template(state, _stateRanges[runId]) != run.stateTemplate) revert WrongStateLayout(runId);
        if (uint8(finalStateHash[0]) != STATUS_VALID) revert ClaimNotValid(finalStateHash);
        if (steps == 0 || steps > run.cfg.maxSteps) revert InvalidSteps(steps, run.cfg.maxSteps);

        updateId = ++updateCount;
        Update storage u = _updates[updateId];
        u.worker = msg.sender;
        u.runId = uint64(runId);
        u.index = index;
        u.postedAt = uint64(block.timestamp);
        u.steps = steps;
        u.lossBits = lossBits;
        u.inputId = inputIdOf(runId);
        u.outputHash = keccak256(_outputOf(state, run.cfg.stateRecordsEnd, run.cfg.nOutputs, lossBits));
        u.finalStateHash = finalStateHash;
        _updateKeys[updateId] = _chunkKeys(state);
        u.stateId = _stateId(_updateKeys[updateId]);
        run.pendingUpdate = uint64(updateId);
        run.leaseHolder = address(0);
        run.leaseExpires = 0;
        _emitPosted(updateId, u, state);
    }

    function _emitPosted(uint256 updateId, Update storage u, bytes calldata state) internal {
        emit UpdatePosted(
            u.runId, updateId, u.worker, u.index, u.stateId, u.lossBits, u.finalStateHash, u.steps, state
        );
    }

    /// @notice Challenge a pending update with the challenger bond: opens a game over its guest run.
    function challenge(uint256 updateId) external payable returns (uint256 gameId) {
        Update storage u = _pending(updateId);
        Run storage run = _runs[u.runId];
        uint256 closesAt = uint256(u.postedAt) + run.cfg.challengeWindow;
        if (block.timestamp >= closesAt) revert ChallengeWindowClosed(updateId, closesAt);
        if (msg.value != run.cfg.challengerBond) revert WrongDeposit(msg.value, run.cfg.challengerBond);
        if (msg.sender == u.worker) revert SelfChallenge();
        if (hasChallenged[updateId][msg.sender]) revert AlreadyChallenged(updateId, msg.sender);
        hasChallenged[updateId][msg.sender] = true;
        u.openGames += 1;
        bytes32 programHash = registry.programHashOf(run.cfg.architecture);
        gameId = disputeGame.createGame(u.worker, msg.sender, programHash, u.finalStateHash, u.steps);
        _challenges[gameId] = Challenge({challenger: msg.sender, updateId: uint64(updateId), settled: false});
        emit UpdateChallenged(u.runId, updateId, gameId, msg.sender);
    }

    /// @notice Accept an undisputed (or defended) update after its window: the state advances, the worker is
    /// paid the reward and gets its deposit back.
    function finalize(uint256 updateId) external {
        Update storage u = _pending(updateId);
        Run storage run = _runs[u.runId];
        uint256 closesAt = uint256(u.postedAt) + run.cfg.challengeWindow;
        if (block.timestamp < closesAt) revert ChallengeWindowOpen(updateId, closesAt);
        if (u.openGames != 0) revert GamesOpen(updateId, u.openGames);
        u.accepted = true;
        _stateKeys[u.runId] = _updateKeys[updateId];
        run.accepted += 1;
        run.pendingUpdate = 0;
        uint256 reward = run.cfg.rewardPerUpdate;
        run.rewardLeft -= reward;
        _balances[u.worker] += reward + run.cfg.workerDeposit;
        emit UpdateAccepted(u.runId, updateId, u.index, u.lossBits);
    }

    // ------------------------------------------------------------------------------------------------
    // Games
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IDisputeGameCreator
    /// @dev A proposer win pays the challenger's bond to the worker. A challenger win discards the update: its
    /// bond back and the worker's deposit; the lease reopens. A game of an already discarded update: the bond
    /// back. Never reverts for a game this contract created.
    function onGameResolved(uint256 gameId, bool proposerWon) external onlyDisputeGame {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0) || c.settled) return;
        c.settled = true;
        uint256 updateId = c.updateId;
        Update storage u = _updates[updateId];
        Run storage run = _runs[u.runId];
        u.openGames -= 1;
        emit ChallengeSettled(gameId, updateId, proposerWon);
        uint256 bond = run.cfg.challengerBond;
        if (u.discarded) {
            _balances[c.challenger] += bond;
        } else if (proposerWon) {
            _balances[u.worker] += bond;
        } else {
            u.discarded = true;
            run.pendingUpdate = 0;
            _balances[c.challenger] += bond + run.cfg.workerDeposit;
            emit UpdateDiscarded(u.runId, updateId, gameId, c.challenger);
        }
    }

    /// @notice For a game on an update another game already discarded: the bond back, the game cancelled.
    function refundChallenge(uint256 gameId) external {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0)) revert UnknownGame(gameId);
        if (c.settled) revert GameAlreadySettled(gameId);
        Update storage u = _updates[c.updateId];
        if (!u.discarded) revert UpdateNotDiscarded(c.updateId);
        c.settled = true;
        u.openGames -= 1;
        _balances[c.challenger] += _runs[u.runId].cfg.challengerBond;
        emit ChallengeSettled(gameId, c.updateId, false);
        disputeGame.cancel(gameId);
    }

    /// @inheritdoc IDisputeGameCreator
    function gameLocalData(uint256 gameId, uint256 ident) external view returns (bool known, bytes32 value) {
        Challenge storage c = _challenges[gameId];
        if (c.challenger == address(0)) return (false, bytes32(0));
        Update storage u = _updates[c.updateId];
        if (ident == LOCAL_MODEL_ID) return (true, _runs[u.runId].cfg.architecture);
        if (ident == LOCAL_INPUT_ID) return (true, u.inputId);
        if (ident == LOCAL_OUTPUT_HASH) return (true, u.outputHash);
        return (false, bytes32(0));
    }

    // ------------------------------------------------------------------------------------------------
    // The trained model
    // ------------------------------------------------------------------------------------------------

    /// @notice After the last update: register the trained model in the `ModelRegistry` (anyone may call).
    /// `modelFile` must be the run's inference model (its template) holding the final parameters, which
    /// `finalState` (the last accepted state, checked against its keys) holds at `modelRanges`.
    function register(uint256 runId, bytes calldata modelFile, bytes calldata finalState, ModelInfo calldata info)
        external
        returns (bytes32 modelId)
    {
        Run storage run = _run(runId);
        if (run.accepted < run.updates) revert RunNotComplete(runId, run.accepted, run.updates);
        if (run.finalModelId != bytes32(0)) revert AlreadyRegistered(runId, run.finalModelId);
        _checkModel(runId, run.modelTemplate, modelFile, finalState);
        modelId = blobIdOf(modelFile);
        run.finalModelId = modelId;
        bytes32 programHash = registry.programHashOf(run.cfg.architecture);
        registry.register(modelId, info.name, info.inputShape, info.outputShape, info.uri, programHash);
        emit RunRegistered(runId, modelId);
    }

    /// @dev `finalState` is the run's last accepted state, and `modelFile` its model template holding the final
    /// parameters at the model ranges.
    function _checkModel(uint256 runId, bytes32 modelTemplate, bytes calldata modelFile, bytes calldata finalState)
        internal
        view
    {
        if (keccak256(abi.encodePacked(_chunkKeys(finalState))) != keccak256(abi.encodePacked(_stateKeys[runId]))) {
            revert StateMismatch(runId);
        }
        if (modelFile.length > MAX_MODEL_CHUNKS * CHUNK) revert ModelMismatch(runId);
        uint32[] storage r = _modelRanges[runId];
        bytes memory zeroed = modelFile;
        for (uint256 i = 0; i + 2 < r.length; i += 3) {
            (uint256 mo, uint256 so, uint256 n) = (r[i], r[i + 1], r[i + 2]);
            if (mo + n > modelFile.length) revert ModelMismatch(runId);
            if (keccak256(modelFile[mo:mo + n]) != keccak256(finalState[so:so + n])) revert ModelMismatch(runId);
            _zero(zeroed, mo, n);
        }
        if (keccak256(zeroed) != modelTemplate) revert ModelMismatch(runId);
    }

    // ------------------------------------------------------------------------------------------------
    // Payouts and views
    // ------------------------------------------------------------------------------------------------

    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _balances[msg.sender] = 0;
        emit Withdrawal(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert WithdrawFailed();
    }

    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    function getRun(uint256 runId) external view returns (Run memory) {
        return _runs[runId];
    }

    function getUpdate(uint256 updateId) external view returns (Update memory) {
        return _updates[updateId];
    }

    function getChallenge(uint256 gameId) external view returns (Challenge memory) {
        return _challenges[gameId];
    }

    function batchIdsOf(uint256 runId) external view returns (bytes32[] memory) {
        return _batchIds[runId];
    }

    function stateKeysOf(uint256 runId) external view returns (bytes32[] memory) {
        return _stateKeys[runId];
    }

    /// @notice The blob id of the next update's input: the flat manifest of the current state's chunk keys and
    /// the update's batch ids (docs/model-format.md, "Training graphs"; vm-spec section 6).
    function inputIdOf(uint256 runId) public view returns (bytes32) {
        Run storage run = _runs[runId];
        uint256 k = run.cfg.stepsPerUpdate;
        bytes32[] storage keys = _stateKeys[runId];
        bytes32[] storage batches = _batchIds[runId];
        uint256 first = uint256(run.accepted) * k;
        bytes memory manifest = abi.encodePacked(uint64((keys.length + k) * CHUNK));
        for (uint256 i = 0; i < keys.length; i++) {
            manifest = bytes.concat(manifest, keys[i]);
        }
        for (uint256 i = 0; i < k; i++) {
            manifest = bytes.concat(manifest, batches[first + i]);
        }
        return _keccakKey(keccak256(manifest));
    }

    /// @notice The output payload an update posting `state` and `lossBits` claims (the records of the state,
    /// then the loss as f32 [1]).
    function outputOf(uint256 runId, bytes calldata state, uint32 lossBits) external view returns (bytes memory) {
        Run storage run = _run(runId);
        return _outputOf(state, run.cfg.stateRecordsEnd, run.cfg.nOutputs, lossBits);
    }

    /// @notice The blob id of data of at most 511 chunks (vm-spec section 6: one manifest level).
    function blobIdOf(bytes calldata data) public pure returns (bytes32) {
        bytes32[] memory keys = _chunkKeys(data);
        return _keccakKey(keccak256(abi.encodePacked(uint64(data.length), keys)));
    }

    // ------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------

    function _run(uint256 runId) internal view returns (Run storage run) {
        run = _runs[runId];
        if (run.creator == address(0)) revert UnknownRun(runId);
    }

    function _pending(uint256 updateId) internal view returns (Update storage u) {
        u = _updates[updateId];
        if (u.worker == address(0)) revert UnknownUpdate(updateId);
        if (u.discarded || u.accepted) revert UpdateSettled(updateId);
    }

    /// @dev An expired lease's deposit goes to the creator.
    function _expireLease(uint256 runId, Run storage run) internal {
        address holder = run.leaseHolder;
        if (holder == address(0)) return;
        run.leaseHolder = address(0);
        run.leaseExpires = 0;
        _balances[run.creator] += run.cfg.workerDeposit;
        emit LeaseForfeited(runId, holder, run.cfg.workerDeposit);
    }

    /// @dev `ranges` is a list of `width`-tuples: entry `stateAt` an offset into a `len`-byte state, the last
    /// entry a length; each range must lie in the state.
    function _checkRanges(uint32[] calldata ranges, uint256 width, uint256 len, uint256 stateAt) internal pure {
        if (ranges.length % width != 0) revert BadRanges();
        for (uint256 i = 0; i < ranges.length; i += width) {
            if (uint256(ranges[i + stateAt]) + ranges[i + width - 1] > len) revert BadRanges();
        }
    }

    /// @dev keccak256 of `data` with the (offset, length) ranges zeroed.
    function _template(bytes calldata data, uint32[] memory ranges) internal pure returns (bytes32) {
        bytes memory t = data;
        for (uint256 i = 0; i + 1 < ranges.length; i += 2) {
            _zero(t, ranges[i], ranges[i + 1]);
        }
        return keccak256(t);
    }

    /// @dev Zero `n` bytes of `b` at `off` (in bounds): a copy from past the end of calldata reads zeros.
    function _zero(bytes memory b, uint256 off, uint256 n) internal pure {
        assembly ("memory-safe") {
            calldatacopy(add(add(b, 0x20), off), calldatasize(), n)
        }
    }

    function _outputOf(bytes calldata state, uint256 recordsEnd, uint256 nOutputs, uint32 lossBits)
        internal
        pure
        returns (bytes memory)
    {
        return abi.encodePacked(
            bytes4("RMLD"), uint32(nOutputs), state[8:recordsEnd], bytes4(0x01010000), uint32(1), lossBits
        );
    }

    function _chunkKeys(bytes calldata data) internal pure returns (bytes32[] memory keys) {
        uint256 n = data.length == 0 ? 1 : (data.length + CHUNK - 1) / CHUNK;
        keys = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            uint256 end = (i + 1) * CHUNK;
            if (end > data.length) end = data.length;
            keys[i] = _keccakKey(keccak256(data[i * CHUNK:end]));
        }
    }

    /// @dev The one id of a state: keccak256 of its chunk keys.
    function _stateId(bytes32[] memory keys) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(keys));
    }

    function _keccakKey(bytes32 h) internal pure returns (bytes32) {
        return bytes32((uint256(h) & type(uint248).max) | (uint256(KEY_TYPE_KECCAK) << 248));
    }
}
