// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {PreimageOracle} from "../src/PreimageOracle.sol";
import {IPreimageOracle, localKey, localizeKey} from "../src/interfaces/IPreimageOracle.sol";

contract PreimageOracleTest is Test {
    PreimageOracle internal oracle;
    bytes32 internal constant CTX = keccak256("game 1");

    function setUp() public {
        oracle = new PreimageOracle();
    }

    // --- references ---------------------------------------------------------------------------------
    function keccakKey(bytes memory data) internal pure returns (bytes32) {
        return bytes32((uint256(keccak256(data)) & type(uint248).max) | (uint256(2) << 248));
    }

    /// @dev The 32 bytes of data's stream (u64be(len) ++ data) at `offset`, zero-padded.
    function streamPart(bytes memory data, uint256 offset) internal pure returns (bytes32 part) {
        bytes memory s = abi.encodePacked(uint64(data.length), data);
        for (uint256 i = 0; i < 32; i++) {
            if (offset + i < s.length) part |= bytes32(s[offset + i]) >> (i * 8);
        }
    }

    function pattern(uint256 n, uint256 seed) internal pure returns (bytes memory data) {
        data = new bytes(n);
        for (uint256 i = 0; i < n; i++) {
            data[i] = bytes1(uint8(uint256(keccak256(abi.encode(seed, i / 32))) >> (8 * (i % 32))));
        }
    }

    // --- keccak256 preimages ------------------------------------------------------------------------
    function test_everyPartOfAKeccakPreimage() public {
        bytes memory data = pattern(77, 1);
        bytes32 key = keccakKey(data);
        for (uint256 offset = 0; offset < 85; offset++) {
            assertEq(oracle.loadKeccak256PreimagePart(offset, data), key);
            (bytes32 dat, uint256 len) = oracle.readPreimage(key, offset);
            assertEq(dat, streamPart(data, offset));
            assertEq(len, 85, "the stream length: 8 + size");
        }
        assertEq(oracle.streamLength(key), 85);
    }

    function test_partsAtOrPastTheEndAreZeroOnceTheLengthIsKnown() public {
        bytes memory data = pattern(40, 2);
        bytes32 key = keccakKey(data);
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PreimageNotLoaded.selector, key, 48));
        oracle.readPreimage(key, 48);
        oracle.loadKeccak256PreimagePart(0, data);
        uint256[4] memory offsets = [uint256(48), 49, 1000, type(uint256).max];
        for (uint256 i = 0; i < 4; i++) {
            (bytes32 dat, uint256 len) = oracle.readPreimage(key, offsets[i]);
            assertEq(dat, bytes32(0));
            assertEq(len, 48);
        }
        // inside the stream, only loaded parts are served
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PreimageNotLoaded.selector, key, 47));
        oracle.readPreimage(key, 47);
    }

    function test_aPartAtOrPastTheEndCannotBeLoaded() public {
        // Cannon's PreimageOracle off-by-one (partOffset == size + 8 was accepted): the bound is strict here
        bytes memory data = pattern(10, 3);
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PartOffsetOOB.selector, 18, 18));
        oracle.loadKeccak256PreimagePart(18, data);
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PartOffsetOOB.selector, 19, 18));
        oracle.loadKeccak256PreimagePart(19, data);
        oracle.loadKeccak256PreimagePart(17, data);
        (bytes32 dat,) = oracle.readPreimage(keccakKey(data), 17);
        assertEq(dat, bytes32(data[9]));
    }

    function test_theEmptyPreimage() public {
        bytes memory empty = "";
        bytes32 key = oracle.loadKeccak256PreimagePart(0, empty);
        assertEq(key, keccakKey(empty));
        (bytes32 dat, uint256 len) = oracle.readPreimage(key, 0);
        assertEq(dat, bytes32(0)); // u64be(0) then zero padding
        assertEq(len, 8);
    }

    function test_theSizeBoundIs16384Bytes() public {
        bytes memory big = pattern(16385, 4);
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PreimageTooLarge.selector, 16385));
        oracle.loadKeccak256PreimagePart(0, big);
    }

    function test_gas_loadingA16384BytePreimageFitsEasily() public {
        // out of gas must be impossible for valid sizes: measure the largest load, at the last part
        bytes memory data = pattern(16384, 5);
        uint256 before = gasleft();
        oracle.loadKeccak256PreimagePart(16384 + 8 - 1, data);
        uint256 used = before - gasleft();
        log("gas: 16384-byte preimage load (forge, call incl. calldata copy)", used);
        assertLt(used, 500_000);
        (bytes32 dat, uint256 len) = oracle.readPreimage(keccakKey(data), 16391);
        assertEq(dat, bytes32(data[16383]));
        assertEq(len, 16392);
    }

    function test_dirtyCalldataPastThePreimageNeverEntersAPart() public {
        // A hand-made encoding: the preimage's padding and the words after it are 0xFF. The part at the end of
        // the stream must be zero past the data (Cannon's loadLocalData read dirty memory at such offsets).
        bytes memory data = hex"0102030405";
        bytes memory cd = abi.encodePacked(
            IPreimageOracle.loadKeccak256PreimagePart.selector,
            uint256(8), // partOffset: the part starts at the data
            uint256(0x60), // a non-standard offset: one junk word before the bytes
            bytes32(type(uint256).max), // junk
            uint256(5), // length
            bytes32(hex"0102030405ffffffffffffffffffffffffffffffffffffffffffffffffffffff"), // dirty padding
            bytes32(type(uint256).max) // junk after
        );
        (bool ok,) = address(oracle).call(cd);
        assertTrue(ok);
        (bytes32 dat,) = oracle.readPreimage(keccakKey(data), 8);
        assertEq(dat, bytes32(hex"0102030405"));
    }

    // --- local data ---------------------------------------------------------------------------------
    function test_localDataIsServedUnderTheWritersKey() public {
        bytes32 word = keccak256("model id");
        bytes32 key = oracle.loadLocalData(1, CTX, word);
        assertEq(key, localizeKey(localKey(1), CTX, address(this)));
        assertEq(uint8(uint256(key) >> 248), 1, "a type-1 key");
        bytes memory data = abi.encodePacked(word);
        for (uint256 offset = 0; offset < 45; offset++) {
            (bytes32 dat, uint256 len) = oracle.readPreimage(key, offset);
            assertEq(dat, streamPart(data, offset));
            assertEq(len, 40);
        }
    }

    function test_nobodyCanWriteAnotherWritersLocalData() public {
        address game = makeAddr("game");
        address attacker = makeAddr("attacker");
        vm.prank(game);
        bytes32 gameKey = oracle.loadLocalData(1, CTX, keccak256("honest"));
        // the same index and context from another address lands under another key
        vm.prank(attacker);
        bytes32 attackerKey = oracle.loadLocalData(1, CTX, keccak256("forged"));
        assertNotEq(gameKey, attackerKey);
        (bytes32 dat,) = oracle.readPreimage(gameKey, 8);
        assertEq(dat, keccak256("honest"));
    }

    function test_localDataIsWriteOnce() public {
        bytes32 key = oracle.loadLocalData(2, CTX, keccak256("input"));
        assertEq(oracle.loadLocalData(2, CTX, keccak256("input")), key); // the same word again: a no-op
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.LocalDataConflict.selector, key));
        oracle.loadLocalData(2, CTX, keccak256("other"));
        // another context is another key
        oracle.loadLocalData(2, keccak256("game 2"), keccak256("other"));
    }

    function test_aLocalIdentMustFit31Bytes() public {
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.InvalidLocalIdent.selector, uint256(1) << 248));
        oracle.loadLocalData(uint256(1) << 248, CTX, bytes32(0));
        oracle.loadLocalData(type(uint248).max, CTX, bytes32(0));
    }

    // --- fuzz ---------------------------------------------------------------------------------------
    function testFuzz_keccakParts(bytes memory data, uint256 offset) public {
        vm.assume(data.length <= 16384);
        offset = bound(offset, 0, data.length + 7);
        bytes32 key = oracle.loadKeccak256PreimagePart(offset, data);
        assertEq(key, keccakKey(data));
        (bytes32 dat, uint256 len) = oracle.readPreimage(key, offset);
        assertEq(dat, streamPart(data, offset));
        assertEq(len, data.length + 8);
    }

    function testFuzz_localParts(uint256 ident, bytes32 ctx, bytes32 word, uint256 offset) public {
        ident = bound(ident, 0, type(uint248).max);
        offset = bound(offset, 0, 100);
        bytes32 key = oracle.loadLocalData(ident, ctx, word);
        (bytes32 dat, uint256 len) = oracle.readPreimage(key, offset);
        assertEq(dat, streamPart(abi.encodePacked(word), offset));
        assertEq(len, 40);
    }

    function testFuzz_unloadedKeysRevert(bytes32 key, uint256 offset) public {
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PreimageNotLoaded.selector, key, offset));
        oracle.readPreimage(key, offset);
    }
}
