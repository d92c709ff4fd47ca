// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The forge cheatcodes our tests use (signatures as in forge 1.7.1).
interface Vm {
    // block / tx environment
    function warp(uint256 newTimestamp) external;
    function roll(uint256 newHeight) external;
    function fee(uint256 newBasefee) external;
    function txGasPrice(uint256 newGasPrice) external;
    // callers and balances
    function prank(address msgSender) external;
    function prank(address msgSender, address txOrigin) external;
    function startPrank(address msgSender) external;
    function stopPrank() external;
    function deal(address account, uint256 newBalance) external;
    // expectations
    function expectRevert() external;
    function expectRevert(bytes calldata revertData) external;
    function expectRevert(bytes4 revertSelector) external; // revert data must be exactly the selector
    function expectPartialRevert(bytes4 revertSelector) external; // only the selector must match
    function expectEmit() external;
    function expectEmit(address emitter) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter)
        external;
    // fuzzing and labelling
    function assume(bool condition) external pure;
    function label(address account, string calldata newLabel) external;
    // keys and signatures
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    // code and storage
    function getCode(string calldata artifactPath) external view returns (bytes memory);
    function etch(address target, bytes calldata newRuntimeBytecode) external;
    function store(address target, bytes32 slot, bytes32 value) external;
    function load(address target, bytes32 slot) external view returns (bytes32);
    function record() external;
    function cool(address target) external; // marks the account and its storage slots cold
    function accesses(address target) external returns (bytes32[] memory reads, bytes32[] memory writes);
    // state snapshots
    function snapshotState() external returns (uint256 snapshotId);
    function revertToState(uint256 snapshotId) external returns (bool success);
    // environment
    function envOr(string calldata name, uint256 defaultValue) external view returns (uint256);
    function envOr(string calldata name, bool defaultValue) external view returns (bool);
    function envOr(string calldata name, string calldata defaultValue) external view returns (string memory);
    // formatting (used by the assertions below)
    function toString(uint256 value) external pure returns (string memory);
    function toString(int256 value) external pure returns (string memory);
    function toString(address value) external pure returns (string memory);
    function toString(bytes32 value) external pure returns (string memory);
    function toString(bytes calldata value) external pure returns (string memory);
    function toString(bool value) external pure returns (string memory);
}

/// @notice Minimal test base (no forge-std): `vm`, assertions and `bound`.
/// Every assertion reverts with "<name> failed: <values>[: <err>]", which forge prints.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    function _fail(string memory what, string memory values, string memory err) private pure {
        revert(string.concat(what, " failed: ", values, bytes(err).length > 0 ? string.concat(": ", err) : ""));
    }

    function _lr(string memory left, string memory right) private pure returns (string memory) {
        return string.concat("left=", left, " right=", right);
    }

    // --- booleans -----------------------------------------------------------
    function assertTrue(bool c) internal pure { assertTrue(c, ""); }
    function assertTrue(bool c, string memory err) internal pure { if (!c) _fail("assertTrue", "false", err); }
    function assertFalse(bool c) internal pure { assertFalse(c, ""); }
    function assertFalse(bool c, string memory err) internal pure { if (c) _fail("assertFalse", "true", err); }

    // --- equality -----------------------------------------------------------
    function assertEq(uint256 a, uint256 b) internal pure { assertEq(a, b, ""); }
    function assertEq(uint256 a, uint256 b, string memory err) internal pure {
        if (a != b) _fail("assertEq(uint256)", _lr(vm.toString(a), vm.toString(b)), err);
    }
    function assertEq(int256 a, int256 b) internal pure { assertEq(a, b, ""); }
    function assertEq(int256 a, int256 b, string memory err) internal pure {
        if (a != b) _fail("assertEq(int256)", _lr(vm.toString(a), vm.toString(b)), err);
    }
    function assertEq(address a, address b) internal pure { assertEq(a, b, ""); }
    function assertEq(address a, address b, string memory err) internal pure {
        if (a != b) _fail("assertEq(address)", _lr(vm.toString(a), vm.toString(b)), err);
    }
    function assertEq(bytes32 a, bytes32 b) internal pure { assertEq(a, b, ""); }
    function assertEq(bytes32 a, bytes32 b, string memory err) internal pure {
        if (a != b) _fail("assertEq(bytes32)", _lr(vm.toString(a), vm.toString(b)), err);
    }
    function assertEq(bool a, bool b) internal pure { assertEq(a, b, ""); }
    function assertEq(bool a, bool b, string memory err) internal pure {
        if (a != b) _fail("assertEq(bool)", _lr(vm.toString(a), vm.toString(b)), err);
    }
    function assertEq(bytes memory a, bytes memory b) internal pure { assertEq(a, b, ""); }
    function assertEq(bytes memory a, bytes memory b, string memory err) internal pure {
        if (keccak256(a) != keccak256(b)) _fail("assertEq(bytes)", _lr(vm.toString(a), vm.toString(b)), err);
    }
    function assertEq(string memory a, string memory b) internal pure { assertEq(a, b, ""); }
    function assertEq(string memory a, string memory b, string memory err) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) {
            _fail("assertEq(string)", _lr(string.concat('"', a, '"'), string.concat('"', b, '"')), err);
        }
    }

    // --- inequality ---------------------------------------------------------
    function assertNotEq(uint256 a, uint256 b) internal pure { assertNotEq(a, b, ""); }
    function assertNotEq(uint256 a, uint256 b, string memory err) internal pure {
        if (a == b) _fail("assertNotEq(uint256)", string.concat("both=", vm.toString(a)), err);
    }
    function assertNotEq(int256 a, int256 b) internal pure { assertNotEq(a, b, ""); }
    function assertNotEq(int256 a, int256 b, string memory err) internal pure {
        if (a == b) _fail("assertNotEq(int256)", string.concat("both=", vm.toString(a)), err);
    }
    function assertNotEq(address a, address b) internal pure { assertNotEq(a, b, ""); }
    function assertNotEq(address a, address b, string memory err) internal pure {
        if (a == b) _fail("assertNotEq(address)", string.concat("both=", vm.toString(a)), err);
    }
    function assertNotEq(bytes32 a, bytes32 b) internal pure { assertNotEq(a, b, ""); }
    function assertNotEq(bytes32 a, bytes32 b, string memory err) internal pure {
        if (a == b) _fail("assertNotEq(bytes32)", string.concat("both=", vm.toString(a)), err);
    }
    function assertNotEq(bool a, bool b) internal pure { assertNotEq(a, b, ""); }
    function assertNotEq(bool a, bool b, string memory err) internal pure {
        if (a == b) _fail("assertNotEq(bool)", string.concat("both=", vm.toString(a)), err);
    }
    function assertNotEq(bytes memory a, bytes memory b) internal pure { assertNotEq(a, b, ""); }
    function assertNotEq(bytes memory a, bytes memory b, string memory err) internal pure {
        if (keccak256(a) == keccak256(b)) _fail("assertNotEq(bytes)", string.concat("both=", vm.toString(a)), err);
    }
    function assertNotEq(string memory a, string memory b) internal pure { assertNotEq(a, b, ""); }
    function assertNotEq(string memory a, string memory b, string memory err) internal pure {
        if (keccak256(bytes(a)) == keccak256(bytes(b))) _fail("assertNotEq(string)", string.concat('both="', a, '"'), err);
    }

    // --- ordering -----------------------------------------------------------
    function assertGt(uint256 a, uint256 b) internal pure { assertGt(a, b, ""); }
    function assertGt(uint256 a, uint256 b, string memory err) internal pure {
        if (a <= b) _fail("assertGt(uint256)", string.concat(vm.toString(a), " <= ", vm.toString(b)), err);
    }
    function assertGe(uint256 a, uint256 b) internal pure { assertGe(a, b, ""); }
    function assertGe(uint256 a, uint256 b, string memory err) internal pure {
        if (a < b) _fail("assertGe(uint256)", string.concat(vm.toString(a), " < ", vm.toString(b)), err);
    }
    function assertLt(uint256 a, uint256 b) internal pure { assertLt(a, b, ""); }
    function assertLt(uint256 a, uint256 b, string memory err) internal pure {
        if (a >= b) _fail("assertLt(uint256)", string.concat(vm.toString(a), " >= ", vm.toString(b)), err);
    }
    function assertLe(uint256 a, uint256 b) internal pure { assertLe(a, b, ""); }
    function assertLe(uint256 a, uint256 b, string memory err) internal pure {
        if (a > b) _fail("assertLe(uint256)", string.concat(vm.toString(a), " > ", vm.toString(b)), err);
    }
    function assertGt(int256 a, int256 b) internal pure { assertGt(a, b, ""); }
    function assertGt(int256 a, int256 b, string memory err) internal pure {
        if (a <= b) _fail("assertGt(int256)", string.concat(vm.toString(a), " <= ", vm.toString(b)), err);
    }
    function assertGe(int256 a, int256 b) internal pure { assertGe(a, b, ""); }
    function assertGe(int256 a, int256 b, string memory err) internal pure {
        if (a < b) _fail("assertGe(int256)", string.concat(vm.toString(a), " < ", vm.toString(b)), err);
    }
    function assertLt(int256 a, int256 b) internal pure { assertLt(a, b, ""); }
    function assertLt(int256 a, int256 b, string memory err) internal pure {
        if (a >= b) _fail("assertLt(int256)", string.concat(vm.toString(a), " >= ", vm.toString(b)), err);
    }
    function assertLe(int256 a, int256 b) internal pure { assertLe(a, b, ""); }
    function assertLe(int256 a, int256 b, string memory err) internal pure {
        if (a > b) _fail("assertLe(int256)", string.concat(vm.toString(a), " > ", vm.toString(b)), err);
    }

    /// @dev |a - b| <= maxDelta
    function assertApproxEqAbs(uint256 a, uint256 b, uint256 maxDelta) internal pure {
        assertApproxEqAbs(a, b, maxDelta, "");
    }
    function assertApproxEqAbs(uint256 a, uint256 b, uint256 maxDelta, string memory err) internal pure {
        uint256 delta = a > b ? a - b : b - a;
        if (delta > maxDelta) {
            _fail("assertApproxEqAbs(uint256)",
                string.concat(_lr(vm.toString(a), vm.toString(b)), " delta=", vm.toString(delta), " maxDelta=", vm.toString(maxDelta)),
                err);
        }
    }

    // --- helpers ------------------------------------------------------------
    /// @dev Maps x into [min, max] like forge-std's bound: in-range values are kept as is,
    /// values near 0 / type(uint256).max land on the edges, anything else wraps around.
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: max is less than min");
        if (x >= min && x <= max) return x;
        uint256 size = max - min + 1; // cannot overflow: the full range returned above
        if (x <= 3 && size > x) return min + x;
        if (x >= type(uint256).max - 3 && size > type(uint256).max - x) return max - (type(uint256).max - x);
        if (x > max) {
            uint256 rem = (x - max) % size;
            return rem == 0 ? max : min + rem - 1;
        }
        uint256 r = (min - x) % size;
        return r == 0 ? min : max - r + 1;
    }

    /// @dev Prints `label value` in forge's output (`-vv`), through the console address forge-std uses.
    function log(string memory label, uint256 value) internal view {
        address console = 0x000000000000000000636F6e736F6c652e6c6f67;
        (bool ok,) = console.staticcall(abi.encodeWithSignature("log(string,uint256)", label, value));
        ok; // the console address has no code: the call always succeeds and forge records the log
    }

    /// @dev A labelled address derived from a name (as forge-std's makeAddr).
    function makeAddr(string memory name) internal returns (address a) {
        a = vm.addr(uint256(keccak256(bytes(name))));
        vm.label(a, name);
    }
}
