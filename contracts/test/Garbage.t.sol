// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {MarketBooks} from "./utils/MarketBooks.sol";
import {DisputeGame} from "../src/DisputeGame.sol";
import {GanNFT} from "../src/GanNFT.sol";
import {InferenceMarket} from "../src/InferenceMarket.sol";
import {MIPS} from "../src/MIPS.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {PreimageOracle} from "../src/PreimageOracle.sol";
import {IDisputeGame} from "../src/interfaces/IDisputeGame.sol";
import {IInferenceMarket} from "../src/interfaces/IInferenceMarket.sol";
import {IMIPS} from "../src/interfaces/IMIPS.sol";
import {localKey, localizeKey} from "../src/interfaces/IPreimageOracle.sol";

/// @notice Garbage calldata, from a stranger with random ETH attached, to every external function of every
/// deployed contract (the real MIPS.sol, oracle, game, registry, market and GanNFT). A call may revert or do
/// what the function specifies, and nothing else: afterwards the market still holds exactly what it owes, no
/// other contract holds ETH, the seeded game and local data are untouched, and every seeded flow (an open
/// request, a pending result, a disputed result, a GanNFT mint) still runs to its end with everyone paid.
contract GarbageTest is Test {
    bytes32 internal constant MODEL = bytes32((uint256(0x02) << 248) | 0xabcdef);
    bytes32 internal constant PROGRAM = bytes32((uint256(0x03) << 248) | 0x1234);
    bytes32 internal constant CLAIM = bytes32(uint256(0xc1a1)); // a VALID state hash (status byte 0)
    uint64 internal constant STEPS = 1_000;
    uint64 internal constant TIMEOUT = 1 hours;
    uint64 internal constant WINDOW = 1 days;
    uint64 internal constant REQUEST_TIMEOUT = 7 days;
    bytes internal constant INPUT = "seeded input";
    bytes internal constant OUTPUT = "seeded output";

    PreimageOracle internal oracle;
    MIPS internal mips;
    DisputeGame internal game;
    ModelRegistry internal registry;
    InferenceMarket internal market;
    GanNFT internal gan;

    address internal dapp;
    address internal prover;
    address internal alice;
    address internal minter;
    address internal junk;

    uint256 internal reqOpen;
    uint256 internal reqProposed;
    uint256 internal reqDisputed;
    uint256 internal reqMint;
    uint256 internal seededGame;
    bytes32 internal seededGameState;

    function setUp() public {
        vm.warp(1_700_000_000);
        oracle = new PreimageOracle();
        mips = new MIPS(oracle);
        game = new DisputeGame(IMIPS(address(mips)), 16, TIMEOUT);
        registry = new ModelRegistry();
        market = new InferenceMarket(registry, game, _params(), bytes32(uint256(0xe8ec)));
        registry.register(MODEL, "m", new uint32[](1), new uint32[](1), "ipfs://m", PROGRAM);
        gan = new GanNFT(market, registry, MODEL, PROGRAM);
        dapp = makeAddr("dapp");
        prover = makeAddr("prover");
        alice = makeAddr("alice");
        minter = makeAddr("minter");
        junk = makeAddr("junk");
        address[5] memory who = [dapp, prover, alice, minter, junk];
        for (uint256 i = 0; i < who.length; i++) {
            vm.deal(who[i], 100 ether);
        }
        _seed();
    }

    function _params() internal pure returns (IInferenceMarket.Params memory) {
        return IInferenceMarket.Params({
            baseFee: 0.001 ether,
            feePerInputByte: 1 gwei,
            callbackGasPrice: 10 gwei,
            proverBond: 1 ether,
            challengerBond: 0.5 ether,
            proverBondBurnBps: 5_000,
            challengeWindow: WINDOW,
            requestTimeout: REQUEST_TIMEOUT,
            maxSteps: 1e12
        });
    }

    /// @dev An open request, a pending result, a result under dispute (proposer due), a GanNFT mint.
    function _seed() internal {
        uint256 fee = market.estimateFee(MODEL, INPUT.length, 0);
        vm.startPrank(dapp);
        reqOpen = market.requestInference{value: fee}(MODEL, INPUT, address(0), 0);
        reqProposed = market.requestInference{value: fee}(MODEL, INPUT, address(0), 0);
        reqDisputed = market.requestInference{value: fee}(MODEL, INPUT, address(0), 0);
        vm.stopPrank();
        vm.startPrank(prover);
        market.postVMResult{value: 1 ether}(reqProposed, OUTPUT, CLAIM, STEPS);
        uint256 rid = market.postVMResult{value: 1 ether}(reqDisputed, OUTPUT, CLAIM, STEPS);
        vm.stopPrank();
        vm.prank(alice);
        seededGame = market.challenge{value: 0.5 ether}(reqDisputed, rid);
        uint256 mintFee = gan.mintFee();
        vm.prank(minter);
        reqMint = gan.mintRequest{value: mintFee}(7);
        seededGameState = keccak256(abi.encode(game.getGame(seededGame)));
    }

    // =========================================================================================================
    // The fuzz tests: one per contract
    // =========================================================================================================

    /// @dev The fuzz arguments of every test below: which function (`pick`), how to build its calldata
    /// (`pick` again: raw bytes, shaped words, or well-typed arguments), the words and tail bytes it is built
    /// from, and the ETH sent.
    /// forge-config: default.fuzz.runs = 512
    function testFuzz_GarbageToTheMarket(uint256 pick, bytes32[5] memory words, bytes memory tail, uint256 value)
        public
    {
        string[22] memory f = [
            "requestInference(bytes32,bytes,address,uint64)", "estimateFee(bytes32,uint256,uint64)",
            "postVMResult(uint256,bytes,bytes32,uint64)", "challenge(uint256,uint256)",
            "finalize(uint256,bytes)", "refundChallenge(uint256)", "cancelRequest(uint256)", "withdraw()",
            "reportUnservable(uint256,string)",
            "onGameResolved(uint256,bool)", "gameLocalData(uint256,uint256)", "blobIdOf(bytes)",
            "balanceOf(address)", "getRequest(uint256)", "getResult(uint256)", "getChallenge(uint256)",
            "hasChallenged(uint256,address)", "requestCount()", "resultCount()", "maxSteps()",
            "burned()", "expiresAt(uint256)"
        ];
        _garbage(address(market), f[pick % f.length], pick / f.length, words, tail, value);
    }

    function testFuzz_GarbageToTheDisputeGame(uint256 pick, bytes32[5] memory words, bytes memory tail, uint256 value)
        public
    {
        string[10] memory f = [
            "createGame(address,address,bytes32,bytes32,uint64)", "cancel(uint256)", "dissect(uint256,bytes32,bytes32[])",
            "pick(uint256,bytes32,bytes32[],uint256)", "step(uint256,bytes32,bytes,bytes)", "claimTimeout(uint256)",
            "getGame(uint256)", "dissectionPoints(uint64,uint64)", "gameCount()", "arity()"
        ];
        _garbage(address(game), f[pick % f.length], pick / f.length, words, tail, value);
    }

    function testFuzz_GarbageToTheVerifier(uint256 pick, bytes32[5] memory words, bytes memory tail, uint256 value)
        public
    {
        string[3] memory f = ["step(bytes,bytes,bytes32)", "stateHash(bytes)", "oracle()"];
        _garbage(address(mips), f[pick % f.length], pick / f.length, words, tail, value);
    }

    function testFuzz_GarbageToTheOracle(uint256 pick, bytes32[5] memory words, bytes memory tail, uint256 value)
        public
    {
        string[7] memory f = [
            "readPreimage(bytes32,uint256)", "loadKeccak256PreimagePart(uint256,bytes)",
            "loadLocalData(uint256,bytes32,bytes32)", "streamLength(bytes32)", "preimageParts(bytes32,uint256)",
            "preimagePartOk(bytes32,uint256)", "localData(bytes32)"
        ];
        _garbage(address(oracle), f[pick % f.length], pick / f.length, words, tail, value);
    }

    function testFuzz_GarbageToTheRegistry(uint256 pick, bytes32[5] memory words, bytes memory tail, uint256 value)
        public
    {
        string[4] memory f = [
            "register(bytes32,string,uint32[],uint32[],string,bytes32)", "isRegistered(bytes32)",
            "programHashOf(bytes32)", "getModel(bytes32)"
        ];
        _garbage(address(registry), f[pick % f.length], pick / f.length, words, tail, value);
    }

    function testFuzz_GarbageToGanNFT(uint256 pick, bytes32[5] memory words, bytes memory tail, uint256 value)
        public
    {
        string[13] memory f = [
            "mintRequest(uint256)", "onInferenceResult(uint256,bytes)", "cancelMint(uint256)", "mintFee()",
            "latentInput(uint256)", "tokenURI(uint256)", "pending(uint256)", "approve(address,uint256)",
            "transferFrom(address,address,uint256)", "setApprovalForAll(address,bool)", "ownerOf(uint256)",
            "balanceOf(address)", "supportsInterface(bytes4)"
        ];
        _garbage(address(gan), f[pick % f.length], pick / f.length, words, tail, value);
    }

    /// @dev Calldata shorter than a selector, with and without ETH: only GanNFT has a `receive`, which takes
    /// ETH from the market alone.
    function test_ShortCalldataAndPlainTransfersAreRefused() public {
        address[6] memory targets =
            [address(market), address(game), address(mips), address(oracle), address(registry), address(gan)];
        bytes[3] memory datas = [bytes(""), bytes(hex"00"), bytes(hex"abcdef")];
        for (uint256 t = 0; t < targets.length; t++) {
            for (uint256 d = 0; d < datas.length; d++) {
                for (uint256 v = 0; v < 2; v++) {
                    vm.prank(junk);
                    (bool ok,) = targets[t].call{value: v * 1 ether}(datas[d]);
                    assertFalse(ok, "refused");
                }
            }
        }
        _assertNothingLocked();
    }

    // =========================================================================================================
    // Building garbage and checking nothing is locked
    // =========================================================================================================

    /// @dev Sends garbage for `signature` from `junk` with some ETH, then checks every property of the
    /// contract docstring. `how % 4` picks the calldata: 0 wholly random bytes (`tail`), 1 the selector and
    /// shaped words then `tail` (a decoder's view of garbage), 2 and 3 well-typed arguments built from the
    /// same material (so the functions' own checks run, and some calls succeed).
    function _garbage(
        address target,
        string memory signature,
        uint256 how,
        bytes32[5] memory words,
        bytes memory tail,
        uint256 value
    ) internal {
        bytes4 selector = bytes4(keccak256(bytes(signature)));
        bytes memory data = tail;
        if (how % 4 == 1) {
            data = abi.encodePacked(selector);
            for (uint256 i = 0; i < words.length; i++) {
                data = bytes.concat(data, _shape(words[i], i));
            }
            data = bytes.concat(data, tail);
        } else if (how % 4 >= 2) {
            data = bytes.concat(selector, _typedArguments(_kinds(signature), words, tail));
        }
        value = _value(value); // before the prank: it reads the market
        vm.prank(junk);
        (bool ok,) = target.call{value: value}(data);
        ok; // either is fine: what matters is the state afterwards
        _assertNothingLocked();
        _assertSeedsUntouched();
        _drainAndAssertEveryonePaid();
    }

    /// @dev One letter per parameter of a signature: "d" a dynamic `bytes`/`string`, "a" an array, "A" an
    /// address, "B" a bool, "q" a uint64, "n" another uint, "x" a fixed-size byte string.
    function _kinds(string memory signature) internal pure returns (bytes memory kinds) {
        bytes memory sig = bytes(signature);
        uint256 i = 0;
        while (sig[i] != "(") i++;
        uint256 start = ++i;
        for (; i < sig.length; i++) {
            if (sig[i] != "," && sig[i] != ")") continue;
            if (i == start) break; // no parameters
            bytes memory t = new bytes(i - start);
            for (uint256 j = 0; j < t.length; j++) {
                t[j] = sig[start + j];
            }
            kinds = bytes.concat(kinds, _kind(keccak256(t), t));
            start = i + 1;
        }
    }

    function _kind(bytes32 h, bytes memory t) internal pure returns (bytes1) {
        if (t[t.length - 1] == "]") return "a";
        if (h == keccak256("bytes") || h == keccak256("string")) return "d";
        if (h == keccak256("address")) return "A";
        if (h == keccak256("bool")) return "B";
        if (h == keccak256("uint64")) return "q";
        if (t[0] == "u") return "n";
        return "x";
    }

    /// @dev The ABI encoding (head, then tails) of parameters of the given kinds: each static word drawn for
    /// its type (known ids, parties, model and claim hashes, or raw words cut to the type's width), byte
    /// strings cut from `tail` at a length that matters somewhere (a state, a proof, the input bound), arrays
    /// of words derived from `tail`.
    function _typedArguments(bytes memory kinds, bytes32[5] memory words, bytes memory tail)
        internal
        view
        returns (bytes memory head)
    {
        bytes memory tails;
        uint256 headSize = 32 * kinds.length;
        for (uint256 i = 0; i < kinds.length; i++) {
            uint256 v = uint256(words[i % words.length]) >> (8 * (i / words.length));
            bytes1 k = kinds[i];
            if (k != "d" && k != "a") {
                head = bytes.concat(head, _typedWord(k, v));
                continue;
            }
            head = bytes.concat(head, bytes32(headSize + tails.length));
            tails = bytes.concat(tails, k == "d" ? _resized(tail, v) : _wordArray(tail, v));
        }
        head = bytes.concat(head, tails);
    }

    function _typedWord(bytes1 kind, uint256 v) internal view returns (bytes32) {
        uint256 r = v >> 16;
        if (kind == "A") {
            address[7] memory parties = [junk, prover, alice, dapp, address(market), address(gan), address(0)];
            return bytes32(uint256(uint160(parties[r % parties.length])));
        }
        if (kind == "B") return bytes32(r % 2);
        if (kind == "q") return bytes32(v % 3 == 0 ? r % 2 ** 64 : v % 3 == 1 ? r % 8 : STEPS);
        if (kind == "n") return v % 3 == 0 ? bytes32(r) : v % 3 == 1 ? bytes32(r % 8) : _known(r);
        return v % 2 == 0 ? bytes32(r) : _known(r);
    }

    /// @dev `length ++ data ++ padding` of `tail` cut (or zero-extended) to a chosen length.
    function _resized(bytes memory tail, uint256 choice) internal pure returns (bytes memory) {
        uint256[8] memory lengths = [tail.length, 0, 1, 32, 226, 1792, 16384, 16385];
        uint256 n = lengths[choice % lengths.length];
        bytes memory data = new bytes(n);
        for (uint256 i = 0; i < n && i < tail.length; i++) {
            data[i] = tail[i];
        }
        return bytes.concat(bytes32(n), data, new bytes((32 - (n % 32)) % 32));
    }

    /// @dev `length ++ elements`: up to 20 words of `tail`, or small numbers (shapes, dissection counts).
    function _wordArray(bytes memory tail, uint256 choice) internal pure returns (bytes memory out) {
        uint256 n = (choice >> 8) % 21;
        out = abi.encodePacked(n);
        for (uint256 i = 0; i < n; i++) {
            uint256 w = i < tail.length ? uint256(keccak256(abi.encode(tail, i))) : i;
            out = bytes.concat(out, bytes32(choice % 2 == 0 ? w : w % 100));
        }
    }

    /// @dev Raw words, small numbers (ids, counts, indexes, flags), plausible ABI offsets or lengths, or values
    /// the deployment knows (the model id, a VALID claim, the parties), so that garbage gets past the ABI
    /// decoder and the first checks often enough to reach the functions' deeper validation.
    function _shape(bytes32 w, uint256 i) internal view returns (bytes32) {
        uint256 v = uint256(w);
        uint256 mode = v % 5;
        if (mode == 0) return w;
        if (mode == 1) return bytes32((v >> 8) % 8);
        if (mode == 2) return bytes32(0x20 * (i + 1 + (v >> 8) % 4));
        if (mode == 3) return bytes32((v >> 8) % 0x400);
        return _known(v >> 8);
    }

    /// @dev A value the deployment knows: ids, the model, a VALID claim, the parties, a step count, 0 and 1.
    function _known(uint256 choice) internal view returns (bytes32) {
        bytes32[12] memory known = [
            MODEL, PROGRAM, CLAIM, bytes32(uint256(uint160(junk))), bytes32(uint256(uint160(prover))),
            bytes32(uint256(STEPS)), bytes32(seededGame), bytes32(reqOpen), bytes32(reqProposed),
            bytes32(reqDisputed), bytes32(0), bytes32(uint256(1))
        ];
        return known[choice % known.length];
    }

    /// @dev Any amount up to 3 ether, or exactly a bond or fee the market accepts.
    function _value(uint256 value) internal view returns (uint256) {
        if (value % 3 != 0) return bound(value, 0, 3 ether);
        uint256[4] memory exact = [uint256(0), 0.5 ether, 1 ether, market.estimateFee(MODEL, 0, 0)];
        return exact[(value / 3) % exact.length];
    }

    function _accounts() internal view returns (address[] memory a) {
        a = new address[](6);
        (a[0], a[1], a[2], a[3], a[4], a[5]) = (dapp, prover, alice, minter, address(gan), junk);
    }

    /// @dev ETH the market owes (`MarketBooks.owed`).
    function _owed() internal view returns (uint256) {
        return MarketBooks.owed(market, game, _accounts());
    }

    function _assertNothingLocked() internal view {
        assertEq(address(market).balance, _owed(), "the market holds exactly what it owes");
        assertEq(address(game).balance + address(mips).balance + address(oracle).balance, 0, "no ETH elsewhere");
        assertEq(address(registry).balance + address(gan).balance, 0, "no ETH elsewhere");
    }

    /// @dev A stranger can neither move the seeded game (it is no party and the deadline is ahead) nor write
    /// the local data of its context, nor change the registered model.
    function _assertSeedsUntouched() internal view {
        assertEq(keccak256(abi.encode(game.getGame(seededGame))), seededGameState, "the seeded game is untouched");
        for (uint256 ident = 1; ident <= 3; ident++) {
            bytes32 key = localizeKey(localKey(ident), bytes32(seededGame), address(game));
            assertEq(oracle.streamLength(key), 0, "no local data of the game's context");
        }
        assertEq(registry.programHashOf(MODEL), PROGRAM);
    }

    /// @dev Runs every seeded flow to its end: time the game out (the proposer never dissected), finalize the
    /// pending result, cancel the open requests and the mint, withdraw everything, and check the totals.
    function _drainAndAssertEveryonePaid() internal {
        uint256 dappStart = dapp.balance;
        uint256 minterStart = minter.balance;
        uint256 fee = market.getRequest(reqOpen).fee;
        uint256 mintFee = market.getRequest(reqMint).fee;
        vm.warp(block.timestamp + REQUEST_TIMEOUT + WINDOW);
        _timeOutMarketGames();
        _finalizeIfSeeded(reqProposed);
        vm.warp(block.timestamp + REQUEST_TIMEOUT); // the disputed request reopened at the timeout claim
        uint256 cancelled;
        uint256[3] memory mine = [reqOpen, reqProposed, reqDisputed];
        for (uint256 i = 0; i < mine.length; i++) {
            if (market.getRequest(mine[i]).status == IInferenceMarket.RequestStatus.Open) {
                vm.prank(dapp);
                market.cancelRequest(mine[i]);
                cancelled++;
            } else {
                _assertTakenOverByJunk(mine[i]);
            }
        }
        if (market.getRequest(reqMint).status == IInferenceMarket.RequestStatus.Open) {
            vm.prank(minter);
            gan.cancelMint(reqMint);
            assertEq(minter.balance - minterStart, mintFee, "the minter got its fee back");
        }
        _withdrawAll();
        assertEq(dapp.balance - dappStart, cancelled * fee, "the dapp got every fee back");
        assertEq(market.balanceOf(alice), 0);
        _assertNothingLocked();
    }

    /// @dev Every active game of the market (the seeded one, and any the stranger opened with its bond) ends by
    /// timeout: the proposer is due and never dissected. Games the stranger created for itself are its own.
    function _timeOutMarketGames() internal {
        for (uint256 g = 1; g <= game.gameCount(); g++) {
            IDisputeGame.Game memory s = game.getGame(g);
            if (s.status == IDisputeGame.Status.Active && s.creator == address(market)) game.claimTimeout(g);
        }
        assertTrue(game.getGame(seededGame).status == IDisputeGame.Status.ChallengerWon, "the seeded game ended");
    }

    function _finalizeIfSeeded(uint256 id) internal {
        IInferenceMarket.Request memory r = market.getRequest(id);
        if (r.status == IInferenceMarket.RequestStatus.Proposed && market.getResult(r.resultId).prover == prover) {
            market.finalize(id, OUTPUT);
        }
    }

    /// @dev A seeded request that is neither open nor finalized by us can only be one the stranger served
    /// itself (a result it posted with its bond): a specified transition, not a lock.
    function _assertTakenOverByJunk(uint256 id) internal view {
        IInferenceMarket.Request memory r = market.getRequest(id);
        if (r.status == IInferenceMarket.RequestStatus.Finalized) return;
        assertTrue(r.status == IInferenceMarket.RequestStatus.Proposed, "proposed");
        assertEq(market.getResult(r.resultId).prover, junk, "by the stranger");
    }

    function _withdrawAll() internal {
        address[] memory a = _accounts();
        for (uint256 i = 0; i < a.length; i++) {
            uint256 owed = market.balanceOf(a[i]);
            if (owed == 0 || a[i] == address(gan)) continue;
            uint256 before = a[i].balance;
            vm.prank(a[i]);
            market.withdraw();
            assertEq(a[i].balance - before, owed, "withdrawn in full");
        }
    }
}
