// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {GanNFT} from "../src/GanNFT.sol";
import {IInferenceMarket} from "../src/interfaces/IInferenceMarket.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IERC721Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

/// @notice A contract minter without onERC721Received: `_mint` (not `_safeMint`) still works.
contract PlainContractMinter {
    function mint(GanNFT nft, uint256 seed) external payable returns (uint256) {
        return nft.mintRequest{value: msg.value}(seed);
    }
}

contract GanNFTTest is MarketFixture {
    GanNFT internal nft;
    address internal minter;
    address internal prover;
    bytes internal constant IMAGE = "64x64 RGB bytes";

    function setUp() public {
        _deployMarket();
        nft = new GanNFT(market, registry, MODEL, honestHash(0));
        minter = makeAddr("minter");
        prover = makeAddr("prover");
        vm.deal(minter, 10 ether);
        vm.deal(prover, 10 ether);
    }

    function _mintRequest(uint256 seed) internal returns (uint256 id) {
        uint256 fee = nft.mintFee();
        vm.prank(minter);
        id = nft.mintRequest{value: fee}(seed);
    }

    function _mintToken(uint256 seed) internal returns (uint256 id) {
        id = _mintRequest(seed);
        _serve(id);
    }

    function _blend(uint256 a, uint256 b, uint256 weight) internal returns (uint256 id) {
        uint256 fee = nft.mintFee();
        vm.prank(minter);
        id = nft.blend{value: fee}(a, b, weight);
    }

    function _serve(uint256 id) internal {
        vm.prank(prover);
        market.postVMResult{value: 1 ether}(id, IMAGE, honestHash(STEPS), STEPS);
        vm.warp(block.timestamp + WINDOW);
        market.finalize(id, IMAGE);
    }

    function test_Constructor_PinsProgramHash() public {
        vm.expectRevert(abi.encodeWithSelector(GanNFT.ProgramHashMismatch.selector, bytes32(uint256(1)), honestHash(0)));
        new GanNFT(market, registry, MODEL, bytes32(uint256(1)));
    }

    function test_LatentInput_IsAnMlkitPayload() public view {
        bytes memory a = nft.latentInput(42);
        assertEq(a.length, 428);
        // "RMLD", 1 tensor, f32 rank 4, dims [1, 100, 1, 1]
        bytes memory header = hex"524d4c44" hex"00000001" hex"01040000" hex"00000001" hex"00000064" hex"00000001"
            hex"00000001";
        for (uint256 i = 0; i < 28; i++) {
            assertEq(uint256(uint8(a[i])), uint256(uint8(header[i])));
        }
        assertEq(a, nft.latentInput(42));
        assertNotEq(a, nft.latentInput(43));
        // z_0, z_1 of seed 42 as computed in Python from the documented rule (decoded by mlkit.io.decode_payload)
        assertEq(bytes.concat(a[28], a[29], a[30], a[31], a[32], a[33], a[34], a[35]), hex"3f18d1403d7e8400");
        uint256 negatives;
        for (uint256 i = 0; i < 100; i++) {
            uint256 bits = uint256(uint8(a[28 + 4 * i])) << 24 | uint256(uint8(a[29 + 4 * i])) << 16;
            if (bits >> 31 == 1) negatives++;
            uint256 exponent = (bits >> 23) & 0xFF;
            assertLe(exponent, 129, "|z| < 4: the sum of four uniforms is bounded by 3.5"); // 2^(129-127)
        }
        assertGt(negatives, 25);
        assertLt(negatives, 75);
    }

    function test_LatentInput_KnownValue() public view {
        // value 0 of seed 0 recomputed here from the documented rule
        uint256 w = uint256(keccak256(abi.encode(uint256(0), uint256(0)))) >> 192;
        int256 s = int256((w & 0xFFFF) + ((w >> 16) & 0xFFFF) + ((w >> 32) & 0xFFFF) + ((w >> 48) & 0xFFFF)) - 131070;
        bytes memory a = nft.latentInput(0);
        uint32 bits = uint32(bytes4(bytes.concat(a[28], a[29], a[30], a[31])));
        // decode the binary32 and compare with 7 s / 2^18 scaled by 2^18
        int256 sign = bits >> 31 == 1 ? int256(-1) : int256(1);
        uint256 exponent = (bits >> 23) & 0xFF;
        uint256 mant = (bits & 0x7FFFFF) | 0x800000;
        // value * 2^18 = mant * 2^(exponent - 127 - 23 + 18)
        int256 scaled = exponent + 18 >= 150 ? int256(mant << (exponent + 18 - 150)) : int256(mant >> (150 - exponent - 18));
        assertEq(sign * scaled, 7 * s);
    }

    function test_MintRequest_CreatesMarketRequest() public {
        uint256 id = _mintRequest(7);
        IInferenceMarket.Request memory r = market.getRequest(id);
        assertEq(r.requester, address(nft));
        assertEq(r.callback, address(nft));
        assertEq(uint256(r.callbackGasLimit), nft.CALLBACK_GAS_LIMIT());
        assertEq(r.inputId, market.blobIdOf(nft.latentInput(7)));
        assertEq(nft.mintFee(), market.estimateFee(MODEL, 428, nft.CALLBACK_GAS_LIMIT()));
        (address who, uint256 seed) = nft.pending(id);
        assertEq(who, minter);
        assertEq(seed, 7);
    }

    function test_MintRequest_FeeTooLow() public {
        uint256 fee = nft.mintFee();
        vm.prank(minter);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.InsufficientFee.selector, fee - 1, fee));
        nft.mintRequest{value: fee - 1}(1);
    }

    function test_FinalizedResultMintsToken() public {
        uint256 id = _mintRequest(7);
        _serve(id);
        assertEq(nft.ownerOf(id), minter);
        assertEq(nft.outputHashOf(id), keccak256(IMAGE));
        assertEq(nft.seedOf(id), 7);
        (address who,) = nft.pending(id);
        assertEq(who, address(0));
        string memory uri = nft.tokenURI(id);
        bytes memory expectedHash = bytes(Strings.toHexString(uint256(keccak256(IMAGE)), 32));
        assertTrue(_contains(bytes(uri), expectedHash), "tokenURI carries the output hash");
    }

    function test_ContractMinterWithoutReceiverHook() public {
        PlainContractMinter c = new PlainContractMinter();
        uint256 fee = nft.mintFee();
        vm.deal(address(c), 1 ether);
        uint256 id = c.mint{value: fee}(nft, 3);
        _serve(id);
        assertEq(nft.ownerOf(id), address(c));
    }

    function test_OnInferenceResult_OnlyMarket() public {
        uint256 id = _mintRequest(1);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.NotMarket.selector, address(this)));
        nft.onInferenceResult(id, IMAGE);
        vm.prank(address(market));
        vm.expectRevert(abi.encodeWithSelector(GanNFT.UnknownRequest.selector, 999));
        nft.onInferenceResult(999, IMAGE);
    }

    function test_CancelMint_RefundsMinter() public {
        uint256 id = _mintRequest(1);
        uint256 fee = nft.mintFee();
        vm.prank(prover);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.NotMinter.selector, prover));
        nft.cancelMint(id);
        vm.warp(block.timestamp + REQUEST_TIMEOUT);
        uint256 before = minter.balance;
        vm.prank(minter);
        nft.cancelMint(id);
        assertEq(minter.balance, before + fee);
        assertEq(address(nft).balance, 0);
        assertEq(address(market).balance, 0);
        vm.prank(minter);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.UnknownRequest.selector, id));
        nft.cancelMint(id);
    }

    function test_RejectsStrayETH() public {
        (bool ok,) = address(nft).call{value: 1}("");
        assertFalse(ok);
    }

    // ---------------------------------------------------------------------------------------------------
    // Blending: vectors computed in Python by rollml.core.gan_nft (the documented rule)
    // ---------------------------------------------------------------------------------------------------

    bytes32 internal constant LATENT_42 = 0x5cba642ceb3eebebae7ac05342b5dfe2e8fd5ec69e4ecd5a3c7075ab9877410d;
    bytes32 internal constant BLEND_42_43_2500 = 0xef52df6a167da6fa08ed4bd9f578aa307d87881961031cd1308fb55ef994a034;
    // blend(blend(42, 43, 2500), 7, 3333)
    bytes32 internal constant BLEND_OF_BLEND = 0xc8094237e7b49f7afe342ac1726f816a4967919a29c88f04e1c9cad713b40f51;

    function test_LatentInput_MatchesPython() public view {
        assertEq(keccak256(nft.latentInput(42)), LATENT_42);
        int24[100] memory t = nft.seedLatent(42);
        assertEq(int256(t[0]), 156485);
        assertEq(int256(t[1]), 16289);
        assertEq(keccak256(nft.latentPayload(t)), LATENT_42);
    }

    function test_BlendLatent_MatchesPython() public view {
        int24[100] memory a = nft.seedLatent(42);
        int24[100] memory b = nft.seedLatent(43);
        int24[100] memory c = nft.blendLatent(a, b, 2500);
        assertEq(int256(c[0]), 216884); // 0.75 * 156485 + 0.25 * 398083 = 216884.5, truncated
        assertEq(int256(c[1]), -3843);
        assertEq(keccak256(nft.latentPayload(c)), BLEND_42_43_2500);
        // -105509824 / 10000 truncates toward zero: -10550 (floor would give -10551)
        assertEq(int256(nft.blendLatent(a, b, 3333)[1]), -10550);
        bytes memory p = nft.latentPayload(c);
        assertEq(bytes.concat(p[28], p[29], p[30], p[31], p[32], p[33], p[34], p[35]), hex"3f53cd00bc703000");
        assertEq(keccak256(nft.latentPayload(nft.blendLatent(c, nft.seedLatent(7), 3333))), BLEND_OF_BLEND);
    }

    function test_BlendLatent_EndsAreTheParents() public view {
        int24[100] memory a = nft.seedLatent(1);
        int24[100] memory b = nft.seedLatent(2);
        assertEq(keccak256(abi.encode(nft.blendLatent(a, b, 0))), keccak256(abi.encode(a)));
        assertEq(keccak256(abi.encode(nft.blendLatent(a, b, 10_000))), keccak256(abi.encode(b)));
    }

    function test_BlendLatent_RejectsWeightAboveOne() public {
        int24[100] memory a = nft.seedLatent(1);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.WeightOutOfRange.selector, 10_001));
        nft.blendLatent(a, a, 10_001);
    }

    /// forge-config: default.fuzz.runs = 64
    function testFuzz_BlendLatent_BoundedAndSymmetric(uint256 seedA, uint256 seedB, uint256 weight) public view {
        weight = bound(weight, 0, 10_000);
        int24[100] memory a = nft.seedLatent(seedA);
        int24[100] memory b = nft.seedLatent(seedB);
        int24[100] memory c = nft.blendLatent(a, b, weight);
        int24[100] memory d = nft.blendLatent(b, a, 10_000 - weight);
        for (uint256 i = 0; i < 100; i++) {
            int256 lo = a[i] < b[i] ? int256(a[i]) : int256(b[i]);
            int256 hi = a[i] < b[i] ? int256(b[i]) : int256(a[i]);
            assertGe(int256(c[i]), lo - 1);
            assertLe(int256(c[i]), hi + 1);
            assertLt(c[i] < 0 ? -int256(c[i]) : int256(c[i]), int256(1) << 20, "exact in binary32");
            assertEq(int256(c[i]), int256(d[i]), "blend(a, b, w) == blend(b, a, 1 - w)");
        }
    }

    function test_Blend_RequestsTheInterpolatedLatent() public {
        uint256 a = _mintToken(42);
        uint256 b = _mintToken(43);
        uint256 fee = nft.mintFee();
        uint256 marketBefore = address(market).balance;
        vm.expectEmit(address(nft));
        emit GanNFT.BlendRequested(3, minter, a, b, 2500);
        uint256 id = _blend(a, b, 2500);
        assertEq(id, 3);
        IInferenceMarket.Request memory r = market.getRequest(id);
        bytes memory input = nft.blendInput(a, b, 2500);
        assertEq(keccak256(input), BLEND_42_43_2500);
        assertEq(r.inputId, market.blobIdOf(input));
        assertEq(r.callback, address(nft));
        assertEq(r.fee, fee);
        assertEq(address(market).balance, marketBefore + fee, "the fee is escrowed in the market");
        (address who,) = nft.pending(id);
        assertEq(who, minter);
        (uint256 pa, uint256 pb, uint256 w) = nft.blendOf(id);
        assertEq(pa, a);
        assertEq(pb, b);
        assertEq(w, 2500);
    }

    function test_Blend_FinalizedChildIsMintedAndCanBeBlendedAgain() public {
        uint256 a = _mintToken(42);
        uint256 b = _mintToken(43);
        uint256 c = _mintToken(7);
        uint256 child = _blend(a, b, 2500);
        _serve(child);
        assertEq(nft.ownerOf(child), minter);
        assertEq(nft.outputHashOf(child), keccak256(IMAGE));
        assertEq(nft.seedOf(child), 0);
        assertEq(keccak256(nft.latentPayload(nft.latentOf(child))), BLEND_42_43_2500);
        string memory uri = nft.tokenURI(child);
        assertTrue(_contains(bytes(uri), bytes("\"parents\":[\"1\",\"2\"],\"weight\":\"2500\"")), uri);
        assertTrue(_contains(bytes(nft.tokenURI(a)), bytes("\"seed\":\"42\"")));
        uint256 grandchild = _blend(child, c, 3333);
        assertEq(keccak256(nft.blendInput(child, c, 3333)), BLEND_OF_BLEND);
        assertEq(market.getRequest(grandchild).inputId, market.blobIdOf(nft.blendInput(child, c, 3333)));
        _serve(grandchild);
        assertEq(nft.ownerOf(grandchild), minter);
    }

    function test_Blend_OnlyTheOwnerOfBothTokens() public {
        uint256 a = _mintToken(1);
        uint256 b = _mintToken(2);
        address other = makeAddr("other");
        vm.deal(other, 1 ether);
        uint256 fee = nft.mintFee();
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.NotOwner.selector, a, other));
        nft.blend{value: fee}(a, b, 5000);
        vm.prank(minter);
        nft.transferFrom(minter, other, b);
        vm.prank(minter);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.NotOwner.selector, b, minter));
        nft.blend{value: fee}(a, b, 5000);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.NotOwner.selector, a, other));
        nft.blend{value: fee}(a, b, 5000);
    }

    function test_Blend_WeightOutOfRange() public {
        uint256 a = _mintToken(1);
        uint256 b = _mintToken(2);
        uint256 fee = nft.mintFee();
        uint256[3] memory bad = [uint256(0), 10_000, 10_001];
        for (uint256 i = 0; i < bad.length; i++) {
            vm.prank(minter);
            vm.expectRevert(abi.encodeWithSelector(GanNFT.WeightOutOfRange.selector, bad[i]));
            nft.blend{value: fee}(a, b, bad[i]);
            vm.expectRevert(abi.encodeWithSelector(GanNFT.WeightOutOfRange.selector, bad[i]));
            nft.blendInput(a, b, bad[i]);
        }
        _blend(a, b, 1);
        _blend(a, b, 9999);
    }

    function test_Blend_UnknownOrUnmintedTokens() public {
        uint256 a = _mintToken(1);
        uint256 unserved = _mintRequest(2); // requested, not minted yet
        uint256 fee = nft.mintFee();
        vm.prank(minter);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 999));
        nft.blend{value: fee}(a, 999, 5000);
        vm.prank(minter);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, unserved));
        nft.blend{value: fee}(unserved, a, 5000);
        vm.prank(minter);
        vm.expectRevert(abi.encodeWithSelector(GanNFT.SameToken.selector, a));
        nft.blend{value: fee}(a, a, 5000);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 999));
        nft.latentOf(999);
    }

    function test_Blend_FeeTooLow() public {
        uint256 a = _mintToken(1);
        uint256 b = _mintToken(2);
        uint256 fee = nft.mintFee();
        vm.prank(minter);
        vm.expectRevert(abi.encodeWithSelector(IInferenceMarket.InsufficientFee.selector, fee - 1, fee));
        nft.blend{value: fee - 1}(a, b, 5000);
    }

    function test_Blend_CancelRefundsAndForgetsTheBlend() public {
        uint256 a = _mintToken(1);
        uint256 b = _mintToken(2);
        uint256 fee = nft.mintFee();
        uint256 id = _blend(a, b, 5000);
        vm.warp(block.timestamp + REQUEST_TIMEOUT);
        uint256 before = minter.balance;
        uint256 marketBefore = address(market).balance;
        vm.prank(minter);
        nft.cancelMint(id);
        assertEq(minter.balance, before + fee);
        assertEq(address(nft).balance, 0);
        assertEq(address(market).balance, marketBefore - fee);
        (,, uint256 w) = nft.blendOf(id);
        assertEq(w, 0);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, id));
        nft.latentOf(id);
    }

    function _contains(bytes memory hay, bytes memory needle) internal pure returns (bool) {
        if (needle.length > hay.length) return false;
        for (uint256 i = 0; i + needle.length <= hay.length; i++) {
            bool ok = true;
            for (uint256 j = 0; j < needle.length; j++) {
                if (hay[i + j] != needle[j]) {
                    ok = false;
                    break;
                }
            }
            if (ok) return true;
        }
        return false;
    }
}
