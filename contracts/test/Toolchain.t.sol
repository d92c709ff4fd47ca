// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";

/// Tiny contract exercising what the toolchain must handle: time, msg.sender, custom errors, events.
contract Vault {
    error NotOwner(address caller);
    error TooEarly(uint256 now_, uint256 unlockAt);
    error Boom();

    event Unlocked(address indexed by, uint256 time);

    address public immutable owner;
    uint256 public immutable unlockAt;

    constructor(address owner_, uint256 unlockAt_) {
        owner = owner_;
        unlockAt = unlockAt_;
    }

    function unlock() external returns (uint256) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        if (block.timestamp < unlockAt) revert TooEarly(block.timestamp, unlockAt);
        emit Unlocked(msg.sender, block.timestamp);
        return block.timestamp;
    }

    function boom(bool custom) external pure {
        if (custom) revert Boom();
        revert("boom");
    }
}

contract ToolchainTest is Test {
    event Unlocked(address indexed by, uint256 time);

    Vault internal vault;
    address internal alice;

    function setUp() public {
        alice = makeAddr("alice");
        vault = new Vault(alice, 1_000);
    }

    function test_Assertions() public pure {
        assertTrue(true);
        assertFalse(false);
        assertEq(uint256(1 + 1), 2);
        assertEq(int256(-3), -3);
        assertEq(bytes32("x"), bytes32("x"));
        assertEq(bytes("ab"), hex"6162");
        assertEq(string("rollml"), "rollml");
        assertEq(true, true);
        assertNotEq(uint256(1), 2);
        assertGt(uint256(2), 1);
        assertGe(int256(-1), -1);
        assertLt(int256(-2), -1);
        assertLe(uint256(5), 5);
        assertApproxEqAbs(100, 103, 3);
    }

    function test_WarpPrankAndEmit() public {
        vm.warp(1_000);
        vm.expectEmit(true, false, false, true, address(vault));
        emit Unlocked(alice, 1_000);
        vm.prank(alice);
        assertEq(vault.unlock(), 1_000);
    }

    function test_RevertsWithCustomErrorAndString() public {
        vm.warp(999);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Vault.TooEarly.selector, 999, 1_000));
        vault.unlock();

        vm.expectRevert(abi.encodeWithSelector(Vault.NotOwner.selector, address(this)));
        vault.unlock();

        vm.expectRevert(Vault.Boom.selector);
        vault.boom(true);

        vm.expectRevert(bytes("boom"));
        vault.boom(false);

        vm.expectRevert();
        vault.boom(false);
    }

    function test_FailingAssertionMessage() public view {
        // Assertion failures revert with a readable message carrying both values.
        try this.externalAssertEq(1, 2) {
            revert("should have failed");
        } catch Error(string memory reason) {
            assertEq(reason, "assertEq(uint256) failed: left=1 right=2: ctx");
        }
    }

    function externalAssertEq(uint256 a, uint256 b) external pure {
        assertEq(a, b, "ctx");
    }

    function test_StateCheatcodes() public {
        vm.deal(alice, 5 ether);
        assertEq(alice.balance, 5 ether);
        vm.roll(42);
        assertEq(block.number, 42);

        uint256 snap = vm.snapshotState();
        vm.store(address(this), bytes32(uint256(123)), bytes32(uint256(7)));
        assertEq(vm.load(address(this), bytes32(uint256(123))), bytes32(uint256(7)));
        assertTrue(vm.revertToState(snap));
        assertEq(vm.load(address(this), bytes32(uint256(123))), bytes32(0));

        (uint8 v, bytes32 r, bytes32 s) = vm.sign(1, keccak256("msg"));
        assertEq(ecrecover(keccak256("msg"), v, r, s), vm.addr(1));
        assertEq(vm.envOr("ROLLML_UNSET_VAR", uint256(9)), 9);
    }

    function testFuzz_Bound(uint256 x, uint256 lo, uint256 hi) public pure {
        if (lo > hi) (lo, hi) = (hi, lo);
        uint256 y = bound(x, lo, hi);
        assertGe(y, lo);
        assertLe(y, hi);
        if (x >= lo && x <= hi) assertEq(y, x);
    }

    function testFuzz_UnlockAfterDeadline(uint256 t) public {
        t = bound(t, 1_000, type(uint64).max);
        vm.warp(t);
        vm.prank(alice);
        assertEq(vault.unlock(), t);
    }
}
