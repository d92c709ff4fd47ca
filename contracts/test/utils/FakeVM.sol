// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IMIPS} from "../../src/interfaces/IMIPS.sol";
import {IPreimageOracle} from "../../src/interfaces/IPreimageOracle.sol";

/// @notice Synthetic traces for tests of the dispute-game logic: state n of trace `traceId` is a well-formed
/// 226-byte state (vm-spec section 2) whose memRoot is the trace id, whose step counter is n, and which exits
/// with `exitCode` at step `exitStep` (a fixed point from then on, as the spec requires).
library FakeTrace {
    uint256 internal constant STATE_SIZE = 226;

    /// @dev Field layout: memRoot = traceId, preimageKey = key, pc = 0x400000 + 4n, heap = exitStep,
    /// lo = exitCode; the step counter stops at exitStep.
    function state(bytes32 traceId, uint64 n, uint32 exitStep, uint8 exitCode, bytes32 key)
        internal
        pure
        returns (bytes memory)
    {
        bool exited = n >= exitStep;
        uint64 s = exited ? exitStep : n;
        return abi.encodePacked(
            traceId,
            key,
            uint32(0), // preimageOffset
            uint32(0x400000 + 4 * (s % 0x100000)), // pc
            uint32(0x400004 + 4 * (s % 0x100000)), // nextPC
            uint32(exitCode), // lo: carries the exit code of the trace
            uint32(0), // hi
            exitStep, // heap: carries the exit step of the trace
            exited ? exitCode : uint8(0),
            exited ? uint8(1) : uint8(0),
            s,
            new bytes(128) // registers
        );
    }

    function hashOf(bytes memory stateData) internal pure returns (bytes32) {
        uint256 h = uint256(keccak256(stateData));
        uint256 status;
        if (stateData[89] == 0) status = 3;
        else if (stateData[88] == 0) status = 0;
        else if (stateData[88] == 0x01) status = 1;
        else status = 2;
        return bytes32((h & type(uint248).max) | (status << 248));
    }

    function hashAt(bytes32 traceId, uint64 n, uint32 exitStep, uint8 exitCode) internal pure returns (bytes32) {
        return hashOf(state(traceId, n, exitStep, exitCode, bytes32(0)));
    }
}

/// @notice Test-only preimage oracle: records local data per (writer, context, ident); nothing else.
contract FakeOracle {
    mapping(address writer => mapping(bytes32 localContext => mapping(uint256 ident => bytes32))) public localData;
    uint256 public localWrites;

    function loadLocalData(uint256 ident, bytes32 localContext, bytes32 word) external returns (bytes32) {
        localData[msg.sender][localContext][ident] = word;
        localWrites++;
        return bytes32(ident);
    }
}

/// @notice TEST-ONLY stand-in for MIPS.sol, for tests of the DISPUTE-GAME LOGIC ONLY (bisection, timing, bonds).
/// It does not execute MIPS: it steps the synthetic traces of `FakeTrace` (state n -> state n+1 of the same
/// trace id, exited states are fixed points). `setOverride` overrides the post-state hash of a given pre-state
/// hash; `setMissingPart` makes `step` revert like the real verifier does when a preimage part is not loaded.
/// Never deploy it; never use it to test anything about the VM.
contract FakeVM {
    error PreimageNotLoaded(bytes32 key, uint256 offset);
    error InvalidStateLength(uint256 length);

    FakeOracle public immutable fakeOracle;
    bool public missingPart;
    mapping(bytes32 preHash => bytes32 postHash) public overrides;

    constructor() {
        fakeOracle = new FakeOracle();
    }

    function oracle() external view returns (IPreimageOracle) {
        return IPreimageOracle(address(fakeOracle));
    }

    function setMissingPart(bool missing) external {
        missingPart = missing;
    }

    function setOverride(bytes32 preHash, bytes32 postHash) external {
        overrides[preHash] = postHash;
    }

    function stateHash(bytes calldata stateData) external pure returns (bytes32) {
        if (stateData.length != FakeTrace.STATE_SIZE) revert InvalidStateLength(stateData.length);
        return FakeTrace.hashOf(stateData);
    }

    function step(bytes calldata stateData, bytes calldata, bytes32) external view returns (bytes32) {
        if (stateData.length != FakeTrace.STATE_SIZE) revert InvalidStateLength(stateData.length);
        if (missingPart) revert PreimageNotLoaded(bytes32(stateData[32:64]), 0);
        bytes32 preHash = FakeTrace.hashOf(stateData);
        bytes32 post = overrides[preHash];
        if (post != bytes32(0)) return post;
        if (stateData[89] != 0) return preHash; // exited: fixed point
        bytes32 traceId = bytes32(stateData[0:32]);
        bytes32 key = bytes32(stateData[32:64]);
        uint8 exitCode = uint8(uint32(bytes4(stateData[76:80])));
        uint32 exitStep = uint32(bytes4(stateData[84:88]));
        uint64 n = uint64(bytes8(stateData[90:98]));
        return FakeTrace.hashOf(FakeTrace.state(traceId, n + 1, exitStep, exitCode, key));
    }
}

// Compile-time check that FakeVM offers what DisputeGame calls (step, stateHash, oracle) with IMIPS's selectors.
abstract contract _FakeVMSelectors {
    bytes4 internal constant _STEP = IMIPS.step.selector;
    bytes4 internal constant _STATE_HASH = IMIPS.stateHash.selector;
    bytes4 internal constant _ORACLE = IMIPS.oracle.selector;
}
