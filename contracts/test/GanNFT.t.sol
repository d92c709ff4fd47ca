// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {GanNFT} from "../src/GanNFT.sol";
import {IInferenceMarket} from "../src/interfaces/IInferenceMarket.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

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

    function _serve(uint256 id) internal {
        vm.prank(prover);
        market.postResult{value: 1 ether}(id, IMAGE, honestHash(STEPS), STEPS);
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
