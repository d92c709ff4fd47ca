// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "../utils/Test.sol";
import {MarketFixture, RecordingConsumer, RevertingConsumer} from "../utils/MarketFixture.sol";
import {FakeTrace} from "../utils/FakeVM.sol";
import {MarketBooks} from "../utils/MarketBooks.sol";
import {DisputeGame} from "../../src/DisputeGame.sol";
import {InferenceMarket} from "../../src/InferenceMarket.sol";
import {IInferenceMarket} from "../../src/interfaces/IInferenceMarket.sol";
import {IDisputeGame} from "../../src/interfaces/IDisputeGame.sol";

/// @notice Drives random sequences of request / post / challenge / dissect / pick / step / timeout /
/// refund / finalize / cancel / withdraw by several actors (honest or not) against the market and its game.
contract MarketHandler is MarketFixture {
    bytes internal constant OUT_HONEST = "honest output";
    bytes internal constant OUT_BAD = "tampered output";

    address[] public actors;
    RecordingConsumer public consumer;
    RevertingConsumer public badConsumer;

    uint256 public ghostDeposited;
    uint256 public ghostWithdrawn;
    uint256 public ghostFinalized;
    uint256 public ghostStepsExecuted;
    uint256 public ghostBurned; // the burn rule applied to every discard the handler saw
    uint256 public ghostDiscards;
    mapping(bytes4 => uint256) public calls;

    mapping(uint256 resultId => bool) internal resultHonest;
    mapping(uint256 gameId => bytes32[]) internal posted;

    constructor() {
        _deployMarket();
        // Short traces so that games reach their leaf: both traces exit (VALID) at step 2, the tampered one
        // differs from step 1 on; claims are about T in {2, 3, 17, 300, 5000, 15M}.
        exitStep = 2;
        tamperAt = 1;
        consumer = new RecordingConsumer();
        badConsumer = new RevertingConsumer();
        for (uint256 i = 0; i < 5; i++) {
            address a = makeAddr(string.concat("actor", vm.toString(i)));
            vm.deal(a, 1_000 ether);
            actors.push(a);
        }
    }

    function accounts() public view returns (address[] memory a) {
        a = new address[](actors.length + 2);
        for (uint256 i = 0; i < actors.length; i++) {
            a[i] = actors[i];
        }
        a[actors.length] = address(consumer);
        a[actors.length + 1] = address(badConsumer);
    }

    function owed() external view returns (uint256) {
        return _owed(accounts());
    }

    function totalEth() external view returns (uint256 total) {
        address[] memory a = accounts();
        for (uint256 i = 0; i < a.length; i++) {
            total += a[i].balance;
        }
        total += address(market).balance;
    }

    // --- helpers --------------------------------------------------------------------------------------------
    function _actor(uint256 seed) internal view returns (address) {
        return actors[seed % actors.length];
    }

    function _requestId(uint256 seed) internal view returns (uint256) {
        uint256 n = market.requestCount();
        return n == 0 ? 0 : 1 + seed % n;
    }

    /// @dev An active game if there is one (searching from a random start), else any game (or 0).
    function _gameId(uint256 seed) internal view returns (uint256) {
        uint256 n = game.gameCount();
        if (n == 0) return 0;
        for (uint256 i = 0; i < n; i++) {
            uint256 id = 1 + (seed + i) % n;
            if (game.getGame(id).status == IDisputeGame.Status.Active) return id;
        }
        return 1 + seed % n;
    }

    // --- actions --------------------------------------------------------------------------------------------
    function request(uint256 actorSeed, uint256 inputLen, uint8 callbackKind) external {
        address a = _actor(actorSeed);
        inputLen = bound(inputLen, 0, 64);
        address cb = callbackKind % 3 == 0 ? address(0) : callbackKind % 3 == 1 ? address(consumer) : address(badConsumer);
        uint256 fee = market.estimateFee(MODEL, inputLen, 50_000) + (callbackKind % 5) * 1 gwei;
        vm.prank(a);
        market.requestInference{value: fee}(MODEL, new bytes(inputLen), cb, 50_000);
        ghostDeposited += fee;
        calls[this.request.selector]++;
    }

    function post(uint256 actorSeed, uint256 requestSeed, bool honest, uint8 stepsSeed) external {
        uint256 id = _requestId(requestSeed);
        if (id == 0 || market.getRequest(id).status != IInferenceMarket.RequestStatus.Open) return;
        address a = _actor(actorSeed);
        uint64[6] memory choices = [uint64(2), 3, 17, 300, 5000, STEPS];
        uint64 steps = choices[stepsSeed % 6];
        bytes32 claim = honest ? honestHash(steps) : tamperedHash(steps);
        uint256 deadline = market.expiresAt(id);
        if (block.timestamp >= deadline) {
            // past its fixed deadline an open request takes no result (it can only be cancelled)
            vm.prank(a);
            vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.RequestExpired.selector, id, deadline));
            market.postVMResult{value: 1 ether}(id, OUT_BAD, claim, steps);
            calls[bytes4(keccak256("expired post"))]++;
            return;
        }
        vm.prank(a);
        uint256 resultId = market.postVMResult{value: 1 ether}(id, honest ? OUT_HONEST : OUT_BAD, claim, steps);
        resultHonest[resultId] = honest;
        ghostDeposited += 1 ether;
        calls[this.post.selector]++;
    }

    function challenge(uint256 actorSeed, uint256 requestSeed) external {
        uint256 id = _requestId(requestSeed);
        if (id == 0) return;
        IInferenceMarket.Request memory r = market.getRequest(id);
        if (r.status != IInferenceMarket.RequestStatus.Proposed) return;
        IInferenceMarket.Result memory res = market.getResult(r.resultId);
        address a = _actor(actorSeed);
        if (a == res.prover || market.hasChallenged(r.resultId, a)) return;
        if (block.timestamp >= res.postedAt + WINDOW) return;
        vm.prank(a);
        market.challenge{value: 0.5 ether}(id, r.resultId);
        ghostDeposited += 0.5 ether;
        calls[this.challenge.selector]++;
    }

    /// @dev Makes the move that is due in an active game: a dissection (honest or tampered hashes), a pick
    /// (first disagreement with the honest trace, or random), or the leaf step (by anyone).
    function move(uint256 gameSeed, bool honest, uint256 indexSeed) external {
        uint256 gameId = _gameId(gameSeed);
        if (gameId == 0) return;
        IDisputeGame.Turn turn = game.getGame(gameId).turn;
        if (turn == IDisputeGame.Turn.Dissect) _dissect(gameSeed, honest);
        else if (turn == IDisputeGame.Turn.Pick) _pick(gameSeed, indexSeed, honest);
        else _step(gameSeed, indexSeed);
    }

    function _dissect(uint256 gameSeed, bool honest) internal {
        uint256 gameId = _gameId(gameSeed);
        if (gameId == 0) return;
        IDisputeGame.Game memory g = game.getGame(gameId);
        if (g.status != IDisputeGame.Status.Active || g.turn != IDisputeGame.Turn.Dissect) return;
        if (block.timestamp > g.deadline) return;
        uint64[] memory pts = game.dissectionPoints(g.lo, g.hi);
        bytes32[] memory hs = new bytes32[](pts.length - 2);
        for (uint256 i = 0; i < hs.length; i++) {
            hs[i] = honest ? honestHash(pts[i + 1]) : tamperedHash(pts[i + 1]);
        }
        vm.prank(g.proposer);
        game.dissect(gameId, g.disputedHash, hs);
        posted[gameId] = hs;
        calls[bytes4(keccak256("dissect"))]++;
    }

    function _pick(uint256 gameSeed, uint256 indexSeed, bool honest) internal {
        uint256 gameId = _gameId(gameSeed);
        if (gameId == 0) return;
        IDisputeGame.Game memory g = game.getGame(gameId);
        if (g.status != IDisputeGame.Status.Active || g.turn != IDisputeGame.Turn.Pick) return;
        if (block.timestamp > g.deadline) return;
        bytes32[] memory hs = posted[gameId];
        uint256 k = hs.length + 1;
        uint256 index = indexSeed % k;
        if (honest) {
            uint64[] memory pts = game.dissectionPoints(g.lo, g.hi);
            index = k - 1;
            for (uint256 j = 0; j + 1 < k; j++) {
                if (honestHash(pts[j + 1]) != hs[j]) {
                    index = j;
                    break;
                }
            }
        }
        vm.prank(g.challenger);
        game.pick(gameId, g.disputedHash, hs, index);
        calls[bytes4(keccak256("pick"))]++;
    }

    function _step(uint256 gameSeed, uint256 actorSeed) internal {
        uint256 gameId = _gameId(gameSeed);
        if (gameId == 0) return;
        IDisputeGame.Game memory g = game.getGame(gameId);
        if (g.status != IDisputeGame.Status.Active || g.turn != IDisputeGame.Turn.Step) return;
        bytes memory pre = honestState(g.lo);
        if (FakeTrace.hashOf(pre) != g.agreedHash) pre = FakeTrace.state(BAD, g.lo, exitStep, 0, bytes32(0));
        if (FakeTrace.hashOf(pre) != g.agreedHash) return; // nobody has a matching pre-state
        (uint256 resultId, uint256 openBefore) = _openGamesOf(gameId);
        vm.prank(_actor(actorSeed));
        game.step(gameId, g.disputedHash, pre, hex"");
        _checkDiscard(resultId, openBefore);
        ghostStepsExecuted++;
        calls[bytes4(keccak256("step"))]++;
    }

    function timeout(uint256 gameSeed, bool wait) external {
        uint256 gameId = _gameId(gameSeed);
        if (gameId == 0) return;
        IDisputeGame.Game memory g = game.getGame(gameId);
        if (g.status != IDisputeGame.Status.Active) return;
        if (block.timestamp <= g.deadline) {
            if (!wait || gameSeed % 4 != 0) return; // mostly let games run
            vm.warp(uint256(g.deadline) + 1);
        }
        (uint256 resultId, uint256 openBefore) = _openGamesOf(gameId);
        game.claimTimeout(gameId);
        _checkDiscard(resultId, openBefore);
        calls[this.timeout.selector]++;
    }

    function refund(uint256 gameSeed) external {
        uint256 gameId = _gameId(gameSeed);
        if (gameId == 0) return;
        IInferenceMarket.Challenge memory c = market.getChallenge(gameId);
        if (c.settled || !market.getResult(c.resultId).discarded) return;
        market.refundChallenge(gameId);
        calls[this.refund.selector]++;
    }

    function finalize(uint256 requestSeed) external {
        uint256 id = _requestId(requestSeed);
        if (id == 0) return;
        IInferenceMarket.Request memory r = market.getRequest(id);
        if (r.status != IInferenceMarket.RequestStatus.Proposed) return;
        IInferenceMarket.Result memory res = market.getResult(r.resultId);
        if (res.openGames != 0 || block.timestamp < res.postedAt + WINDOW) return;
        market.finalize(id, resultHonest[r.resultId] ? OUT_HONEST : OUT_BAD);
        ghostFinalized++;
        calls[this.finalize.selector]++;
    }

    function cancel(uint256 requestSeed, bool wait) external {
        uint256 id = _requestId(requestSeed);
        if (id == 0) return;
        IInferenceMarket.Request memory r = market.getRequest(id);
        if (r.status != IInferenceMarket.RequestStatus.Open) return;
        uint256 deadline = uint256(r.createdAt) + REQUEST_TIMEOUT;
        assertEq(market.expiresAt(id), deadline, "the deadline never moves");
        if (block.timestamp < deadline) {
            if (!wait || requestSeed % 4 != 0) return; // mostly leave open requests to the provers
            vm.warp(deadline);
        }
        vm.prank(r.requester);
        market.cancelRequest(id);
        calls[this.cancel.selector]++;
    }

    function withdraw(uint256 actorSeed) external {
        address a = _actor(actorSeed);
        uint256 amount = market.balanceOf(a);
        if (amount == 0) return;
        uint256 before = a.balance;
        vm.prank(a);
        market.withdraw();
        assertEq(a.balance, before + amount, "withdraw pays exactly the balance");
        ghostWithdrawn += amount;
        calls[this.withdraw.selector]++;
    }

    /// @dev (result of game `gameId`, its open games) before a move that may end the game.
    function _openGamesOf(uint256 gameId) internal view returns (uint256 resultId, uint256 open) {
        resultId = market.getChallenge(gameId).resultId;
        IInferenceMarket.Result memory r = market.getResult(resultId);
        open = r.discarded ? 0 : r.openGames;
    }

    /// @dev If the move just discarded `resultId` (then `openBefore` games were open on it, the winner's
    /// included): each got the same share of the unburned part of the prover's bond, the rest was burned.
    function _checkDiscard(uint256 resultId, uint256 openBefore) internal {
        IInferenceMarket.Result memory r = market.getResult(resultId);
        if (openBefore == 0 || !r.discarded) return;
        uint256 bond = market.proverBond();
        uint256 unburned = bond - bond * BURN_BPS / 10_000;
        assertEq(uint256(r.share), unburned / openBefore, "an equal share for every open game");
        ghostBurned += bond - uint256(r.share) * openBefore;
        ghostDiscards++;
    }

    function warp(uint256 secs) external {
        // mostly short waits (moves stay in time), sometimes past a challenge window
        vm.warp(block.timestamp + (uint256(keccak256(abi.encode(secs))) % 8 == 0 ? bound(secs, 1 hours, 2 days) : bound(secs, 1, 20 minutes)));
        calls[this.warp.selector]++;
    }
}

contract MarketInvariantTest is Test {
    MarketHandler internal handler;
    uint256 internal initialEth;

    function setUp() public {
        handler = new MarketHandler();
        initialEth = handler.totalEth();
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// @dev How many actions really ran (not returned early) in the last run; shown with -vv.
    function afterInvariant() external view {
        log("discards", handler.ghostDiscards());
        log("expired posts refused", handler.calls(bytes4(keccak256("expired post"))));
        bytes4[12] memory sel = [
            MarketHandler.request.selector, MarketHandler.post.selector, MarketHandler.challenge.selector,
            bytes4(keccak256("dissect")), bytes4(keccak256("pick")), bytes4(keccak256("step")),
            MarketHandler.timeout.selector, MarketHandler.refund.selector, MarketHandler.finalize.selector,
            MarketHandler.cancel.selector, MarketHandler.withdraw.selector, MarketHandler.warp.selector
        ];
        string[12] memory name =
            ["request", "post", "challenge", "dissect", "pick", "step", "timeout", "refund", "finalize", "cancel",
             "withdraw", "warp"];
        for (uint256 i = 0; i < sel.length; i++) {
            log(string.concat("effective ", name[i]), handler.calls(sel[i]));
        }
    }

    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 150
    function invariant_EthHeldEqualsSumOwed() public view {
        assertEq(address(handler.market()).balance, handler.owed(), "ETH held == fees + bonds + balances");
    }

    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 150
    function invariant_OnlyWithdrawalsLeaveTheMarket() public view {
        assertEq(
            address(handler.market()).balance,
            handler.ghostDeposited() - handler.ghostWithdrawn(),
            "market balance == deposits - withdrawals"
        );
    }

    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 150
    function invariant_NoEthCreatedOrLost() public view {
        assertEq(handler.totalEth(), initialEth, "actors + market hold all the ETH");
    }

    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 150
    function invariant_GamesAndChallengesAgree() public view {
        InferenceMarket market = handler.market();
        DisputeGame game = handler.game();
        for (uint256 g = 1; g <= game.gameCount(); g++) {
            IInferenceMarket.Challenge memory c = market.getChallenge(g);
            bool active = game.getGame(g).status == IDisputeGame.Status.Active;
            assertEq(c.settled, !active, "a challenge is settled iff its game is over");
        }
        for (uint256 r = 1; r <= market.resultCount(); r++) {
            IInferenceMarket.Result memory res = market.getResult(r);
            uint256 open;
            for (uint256 g = 1; g <= game.gameCount(); g++) {
                IInferenceMarket.Challenge memory c = market.getChallenge(g);
                if (c.resultId == r && !c.settled) open++;
            }
            assertEq(uint256(res.openGames), open, "openGames counts the unsettled challenges, discarded or not");
            if (!res.discarded) assertEq(uint256(res.share), 0, "a share only once discarded");
        }
    }

    /// @dev The burned wei are exactly the burn rule applied to every discard (`MarketHandler._checkDiscard`),
    /// never paid out (they stay in the market: `invariant_EthHeldEqualsSumOwed` counts them), and the shares
    /// still owed are covered: each unsettled challenge of a discarded result is owed its result's share.
    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 150
    function invariant_BurnedIsTheBurnRuleOfEveryDiscard() public view {
        InferenceMarket market = handler.market();
        assertEq(market.burned(), handler.ghostBurned(), "burned == sum of the burn rule over discards");
        uint256 bond = market.proverBond();
        assertLe(market.burned(), handler.ghostDiscards() * bond, "at most a bond per discard");
        assertGe(market.burned(), handler.ghostDiscards() * (bond * market.proverBondBurnBps() / 10_000), "at least the bps");
        assertLe(
            MarketBooks.sharesOwed(market, handler.game()),
            handler.ghostDiscards() * bond,
            "shares owed never exceed the discarded bonds"
        );
    }

    /// @dev A request takes results only before its fixed deadline (`createdAt + requestTimeout`), whatever
    /// was discarded in between.
    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 150
    function invariant_NoResultAtOrAfterTheDeadline() public view {
        InferenceMarket market = handler.market();
        for (uint256 r = 1; r <= market.resultCount(); r++) {
            IInferenceMarket.Result memory res = market.getResult(r);
            IInferenceMarket.Request memory req = market.getRequest(res.requestId);
            assertLt(uint256(res.postedAt), uint256(req.createdAt) + market.requestTimeout(), "posted in time");
        }
    }

    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 150
    function invariant_FinalizedCountMatchesStatuses() public view {
        InferenceMarket market = handler.market();
        uint256 finalized;
        for (uint256 id = 1; id <= market.requestCount(); id++) {
            if (market.getRequest(id).status == IInferenceMarket.RequestStatus.Finalized) finalized++;
        }
        assertEq(finalized, handler.ghostFinalized(), "each request finalizes once");
        assertEq(handler.consumer().calls() <= finalized, true);
    }
}
