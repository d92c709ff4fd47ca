// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {MIPS} from "../src/MIPS.sol";
import {PreimageOracle} from "../src/PreimageOracle.sol";
import {IMIPS} from "../src/interfaces/IMIPS.sol";
import {IPreimageOracle, localKey, localizeKey} from "../src/interfaces/IPreimageOracle.sol";

/// @notice The VM state as the tests build it (docs/vm-spec.md section 2), encoded and hashed independently of
///         MIPS.sol.
struct VMState {
    bytes32 memRoot;
    bytes32 preimageKey;
    uint32 preimageOffset;
    uint32 pc;
    uint32 nextPC;
    uint32 lo;
    uint32 hi;
    uint32 heap;
    uint8 exitCode;
    uint8 exited;
    uint64 step;
    uint32[32] regs;
}

/// @notice A memory with at most two non-zero 32-byte leaves (zero everywhere else), its Merkle root and the
///         896-byte proof of any address (spec section 3): subtrees without a stored leaf are the zero hashes.
struct Mem {
    uint256[2] index; // leaf indexes (address >> 5)
    bytes32[2] leaf;
    uint256 n;
}

library MemLib {
    function zeroHash(uint256 height) internal pure returns (bytes32 z) {
        for (uint256 h = 0; h < height; h++) {
            z = keccak256(abi.encodePacked(z, z));
        }
    }

    /// @dev The leaf holding `addr`, created (zero) if absent; at most two leaves.
    function slot(Mem memory m, uint256 addr) internal pure returns (uint256) {
        uint256 index = (addr & 0xFFFFFFFF) >> 5;
        for (uint256 i = 0; i < m.n; i++) {
            if (m.index[i] == index) return i;
        }
        require(m.n < 2, "MemLib: at most two non-zero leaves");
        m.index[m.n] = index;
        return m.n++;
    }

    function setLeaf(Mem memory m, uint256 addr, bytes32 value) internal pure {
        m.leaf[slot(m, addr)] = value;
    }

    function leafOf(Mem memory m, uint256 addr) internal pure returns (bytes32) {
        uint256 index = (addr & 0xFFFFFFFF) >> 5;
        for (uint256 i = 0; i < m.n; i++) {
            if (m.index[i] == index) return m.leaf[i];
        }
        return bytes32(0);
    }

    /// @dev Stores the big-endian word `w` at the 4-aligned `addr`.
    function store32(Mem memory m, uint256 addr, uint32 w) internal pure {
        uint256 i = slot(m, addr);
        uint256 shift = 224 - (addr & 31) * 8;
        m.leaf[i] = bytes32((uint256(m.leaf[i]) & ~(uint256(0xFFFFFFFF) << shift)) | (uint256(w) << shift));
    }

    function load32(Mem memory m, uint256 addr) internal pure returns (uint32) {
        return uint32(uint256(leafOf(m, addr)) >> (224 - (addr & 31) * 8));
    }

    /// @dev The hash of the subtree of height `h` and index `i`.
    function node(Mem memory m, uint256 h, uint256 i) internal pure returns (bytes32) {
        bool any = false;
        for (uint256 k = 0; k < m.n; k++) {
            if (m.index[k] >> h == i) any = true;
        }
        if (!any) return zeroHash(h);
        if (h == 0) return leafOf(m, i << 5);
        return keccak256(abi.encodePacked(node(m, h - 1, 2 * i), node(m, h - 1, 2 * i + 1)));
    }

    function root(Mem memory m) internal pure returns (bytes32) {
        return node(m, 27, 0);
    }

    /// @dev The 896-byte proof of the leaf holding `addr`: the leaf, then the 27 siblings bottom-up.
    function proof(Mem memory m, uint256 addr) internal pure returns (bytes memory p) {
        uint256 index = (addr & 0xFFFFFFFF) >> 5;
        p = abi.encodePacked(leafOf(m, addr));
        for (uint256 h = 0; h < 27; h++) {
            p = bytes.concat(p, node(m, h, (index >> h) ^ 1));
        }
    }
}

/// @notice Shared helpers: instruction encoders, state encoding and hashing, running a step.
abstract contract MIPSTestBase is Test {
    using MemLib for Mem;

    MIPS internal mips;
    PreimageOracle internal oracle;

    bytes32 internal constant CTX = keccak256("rollml MIPS test context");
    uint32 internal constant PC = 0x00400000;
    uint32 internal constant DATA = 0x10000000;
    uint32 internal constant HEAP_START = 0x20000000;
    uint32 internal constant HEAP_END = 0x60000000;

    // faults (spec section 7)
    uint8 internal constant INVALID_INSTRUCTION = 0x80;
    uint8 internal constant UNALIGNED_ACCESS = 0x81;
    uint8 internal constant UNALIGNED_FETCH = 0x82;
    uint8 internal constant BRANCH_IN_DELAY_SLOT = 0x83;
    uint8 internal constant TRAP = 0x84;
    uint8 internal constant UNKNOWN_SYSCALL = 0x85;
    uint8 internal constant OVERFLOW = 0x86;

    // registers
    uint8 internal constant V0 = 2;
    uint8 internal constant A0 = 4;
    uint8 internal constant A1 = 5;
    uint8 internal constant A2 = 6;
    uint8 internal constant A3 = 7;
    uint8 internal constant T0 = 8;
    uint8 internal constant T1 = 9;
    uint8 internal constant T2 = 10;
    uint8 internal constant RA = 31;

    function setUp() public virtual {
        oracle = new PreimageOracle();
        mips = new MIPS(oracle);
    }

    // --- encoders -----------------------------------------------------------------------------------
    function rType(uint256 op, uint256 rs, uint256 rt, uint256 rd, uint256 sa, uint256 fn)
        internal
        pure
        returns (uint32)
    {
        return uint32((op << 26) | (rs << 21) | (rt << 16) | (rd << 11) | (sa << 6) | fn);
    }

    function special(uint256 fn, uint256 rd, uint256 rs, uint256 rt) internal pure returns (uint32) {
        return rType(0, rs, rt, rd, 0, fn);
    }

    function iType(uint256 op, uint256 rs, uint256 rt, uint256 imm) internal pure returns (uint32) {
        return uint32((op << 26) | (rs << 21) | (rt << 16) | (imm & 0xFFFF));
    }

    function jType(uint256 op, uint256 target) internal pure returns (uint32) {
        return uint32((op << 26) | ((target >> 2) & 0x03FFFFFF));
    }

    uint32 internal constant SYSCALL = 0x0C;

    // --- states --------------------------------------------------------------------------------------
    function newState() internal pure returns (VMState memory s) {
        s.pc = PC;
        s.nextPC = PC + 4;
        s.heap = HEAP_START;
    }

    function encode(VMState memory s) internal pure returns (bytes memory out) {
        out = abi.encodePacked(
            s.memRoot, s.preimageKey, s.preimageOffset, s.pc, s.nextPC, s.lo, s.hi, s.heap, s.exitCode, s.exited, s.step
        );
        for (uint256 i = 0; i < 32; i++) {
            out = bytes.concat(out, bytes4(s.regs[i]));
        }
    }

    function hashOf(VMState memory s) internal pure returns (bytes32) {
        uint256 status = s.exited == 0 ? 3 : s.exitCode == 0 ? 0 : s.exitCode == 1 ? 1 : 2;
        return bytes32((uint256(keccak256(encode(s))) & type(uint248).max) | (status << 248));
    }

    /// @dev A running state at PC with `insn` there, and the memory that holds it.
    function withInsn(uint32 insn) internal pure returns (VMState memory s, Mem memory m) {
        s = newState();
        m.store32(PC, insn);
    }

    /// @dev Steps `s` on-chain with proofs of `pc` and `dataAddr` from `m`; sets `s.memRoot` to m's root.
    function run(VMState memory s, Mem memory m, uint256 dataAddr) internal returns (bytes32) {
        s.memRoot = m.root();
        return mips.step(encode(s), bytes.concat(m.proof(s.pc), m.proof(dataAddr)), CTX);
    }

    /// @dev Expected effects of an ordinary step: pc, nextPC = nextPC, nextPC + 4; step + 1.
    function advance(VMState memory s) internal pure {
        s.pc = s.nextPC;
        unchecked {
            s.nextPC = s.nextPC + 4;
            s.step = s.step + 1;
        }
    }

    /// @dev Expected effects of a fault (section 7).
    function faulted(VMState memory s, uint8 code) internal pure {
        s.exited = 1;
        s.exitCode = code;
        unchecked {
            s.step = s.step + 1;
        }
    }

    /// @dev Runs a step that touches no data leaf and checks the post-state hash against `expected` (which
    ///      the caller derives from the pre-state).
    function expectStep(VMState memory pre, Mem memory m, VMState memory expected) internal {
        bytes32 post = run(pre, m, 0);
        expected.memRoot = pre.memRoot;
        assertEq(post, hashOf(expected), "post-state hash");
    }

    function copy(VMState memory s) internal pure returns (VMState memory) {
        return abi.decode(abi.encode(s), (VMState));
    }

    /// @dev R[rd] = f(R[rs] = a, R[rt] = b) for an R-type instruction with rs = t0, rt = t1, rd = t2.
    function checkR(uint32 insn, uint32 a, uint32 b, uint32 result) internal {
        (VMState memory s, Mem memory m) = withInsn(insn);
        s.regs[T0] = a;
        s.regs[T1] = b;
        VMState memory e = copy(s);
        e.regs[T2] = result;
        advance(e);
        expectStep(s, m, e);
    }

    /// @dev hi:lo after an instruction with t0 = a, t1 = b and hi:lo = hi0:lo0 before.
    function checkHiLo(uint32 insn, uint32 a, uint32 b, uint32 hi0, uint32 lo0, uint32 hi, uint32 lo) internal {
        (VMState memory s, Mem memory m) = withInsn(insn);
        s.regs[T0] = a;
        s.regs[T1] = b;
        s.hi = hi0;
        s.lo = lo0;
        VMState memory e = copy(s);
        e.hi = hi;
        e.lo = lo;
        advance(e);
        expectStep(s, m, e);
    }

    /// @dev The instruction faults with `code` (registers a, b in t0, t1).
    function checkFault(uint32 insn, uint32 a, uint32 b, uint8 code) internal {
        (VMState memory s, Mem memory m) = withInsn(insn);
        s.regs[T0] = a;
        s.regs[T1] = b;
        VMState memory e = copy(s);
        faulted(e, code);
        expectStep(s, m, e);
    }
}

/// @notice One test per instruction, syscall and fault of the spec, and per Cantina finding class on Cannon.
contract MIPSTest is MIPSTestBase {
    using MemLib for Mem;

    // =================================================================================================
    // SPECIAL: shifts and arithmetic (spec section 5)
    // =================================================================================================
    function test_sll_srl_sra() public {
        checkR(rType(0, 0, T1, T2, 4, 0x00), 0, 0x80000001, 0x00000010); // sll
        checkR(rType(0, 0, T1, T2, 4, 0x02), 0, 0x80000010, 0x08000001); // srl
        checkR(rType(0, 0, T1, T2, 4, 0x03), 0, 0x80000010, 0xF8000001); // sra
        checkR(rType(0, 0, T1, T2, 0, 0x03), 0, 0x80000010, 0x80000010); // sra by 0
        checkR(rType(0, 0, T1, T2, 31, 0x03), 0, 0x7FFFFFFF, 0); // sra of a positive
        checkFault(rType(0, T0, T1, T2, 4, 0x00), 1, 1, INVALID_INSTRUCTION); // sll: rs must be 0
    }

    function test_sllv_srlv_srav_maskTheAmountToFiveBits() public {
        // Cantina class: the variable shifts use R[rs] & 31 (33 -> 1), srav included
        checkR(special(0x04, T2, T0, T1), 33, 0x40000001, 0x80000002); // sllv
        checkR(special(0x06, T2, T0, T1), 33, 0x80000002, 0x40000001); // srlv
        checkR(special(0x07, T2, T0, T1), 33, 0x80000002, 0xC0000001); // srav
        checkR(special(0x07, T2, T0, T1), 0xFFFFFFFF, 0x80000000, 0xFFFFFFFF); // srav by 31
        checkR(special(0x07, T2, T0, T1), 32, 0x80000000, 0x80000000); // srav by 32 & 31 = 0
        checkFault(rType(0, T0, T1, T2, 1, 0x07), 1, 1, INVALID_INSTRUCTION); // sa must be 0
    }

    function test_addAndSubFaultOnSignedOverflow() public {
        checkR(special(0x20, T2, T0, T1), 0x7FFFFFFE, 1, 0x7FFFFFFF); // add
        checkFault(special(0x20, T2, T0, T1), 0x7FFFFFFF, 1, OVERFLOW);
        checkFault(special(0x20, T2, T0, T1), 0x80000000, 0xFFFFFFFF, OVERFLOW);
        checkR(special(0x22, T2, T0, T1), 0x80000001, 1, 0x80000000); // sub
        checkFault(special(0x22, T2, T0, T1), 0x80000000, 1, OVERFLOW);
        checkFault(special(0x22, T2, T0, T1), 0x7FFFFFFF, 0xFFFFFFFF, OVERFLOW);
    }

    function test_overflowFaultLeavesTheDestinationUnchanged() public {
        // add t0, t0, t1 overflowing: the fault changes nothing but exited, exitCode and step
        (VMState memory s, Mem memory m) = withInsn(special(0x20, T0, T0, T1));
        s.regs[T0] = 0x7FFFFFFF;
        s.regs[T1] = 0x7FFFFFFF;
        s.lo = 5;
        VMState memory e = copy(s);
        faulted(e, OVERFLOW);
        expectStep(s, m, e);
    }

    function test_adduSubuAndOrXorNorSltSltu() public {
        checkR(special(0x21, T2, T0, T1), 0xFFFFFFFF, 2, 1); // addu wraps
        checkR(special(0x23, T2, T0, T1), 1, 2, 0xFFFFFFFF); // subu wraps
        checkR(special(0x24, T2, T0, T1), 0xF0F0F0F0, 0xFF00FF00, 0xF000F000); // and
        checkR(special(0x25, T2, T0, T1), 0xF0F0F0F0, 0x0F000000, 0xFFF0F0F0); // or
        checkR(special(0x26, T2, T0, T1), 0xF0F0F0F0, 0xFFFFFFFF, 0x0F0F0F0F); // xor
        checkR(special(0x27, T2, T0, T1), 0xF0F0F0F0, 0x00000F0F, 0x0F0F0000); // nor
        checkR(special(0x2A, T2, T0, T1), 0xFFFFFFFF, 1, 1); // slt: -1 < 1
        checkR(special(0x2A, T2, T0, T1), 1, 0xFFFFFFFF, 0);
        checkR(special(0x2B, T2, T0, T1), 0xFFFFFFFF, 1, 0); // sltu
        checkR(special(0x2B, T2, T0, T1), 1, 0xFFFFFFFF, 1);
        checkFault(rType(0, T0, T1, T2, 3, 0x21), 1, 1, INVALID_INSTRUCTION); // addu: sa must be 0
    }

    function test_writesToR0AreDropped() public {
        (VMState memory s, Mem memory m) = withInsn(special(0x21, 0, T0, T1)); // addu zero, t0, t1
        s.regs[T0] = 3;
        s.regs[T1] = 4;
        VMState memory e = copy(s);
        advance(e);
        expectStep(s, m, e);
    }

    function test_movzMovn() public {
        checkR(special(0x0A, T2, T0, T1), 7, 0, 7); // movz: moves when R[rt] == 0
        checkR(special(0x0B, T2, T0, T1), 7, 1, 7); // movn: moves when R[rt] != 0
        // no move: t2 keeps its value (0)
        checkR(special(0x0A, T2, T0, T1), 7, 1, 0);
        checkR(special(0x0B, T2, T0, T1), 7, 0, 0);
        checkFault(rType(0, T0, T1, T2, 1, 0x0A), 1, 1, INVALID_INSTRUCTION);
    }

    function test_syncAndBreak() public {
        checkR(0x0F, 1, 2, 0); // sync: no effect
        checkR(0x0F | (5 << 6), 1, 2, 0); // sync's stype (sa) is free
        checkFault(rType(0, T0, 0, 0, 0, 0x0F), 1, 1, INVALID_INSTRUCTION); // rs must be 0
        checkFault(0x0D, 1, 2, TRAP); // break
        checkFault(0x0D | (0xFFFFF << 6), 1, 2, TRAP); // break's code field is ignored
    }

    function test_invalidSpecialFuncts() public {
        uint8[10] memory holes = [0x01, 0x05, 0x0E, 0x14, 0x15, 0x1C, 0x28, 0x2C, 0x35, 0x3F];
        for (uint256 i = 0; i < holes.length; i++) {
            checkFault(special(holes[i], 0, 0, 0), 0, 0, INVALID_INSTRUCTION);
        }
    }

    // =================================================================================================
    // HI/LO
    // =================================================================================================
    function test_mfhiMflo() public {
        (VMState memory s, Mem memory m) = withInsn(special(0x10, T2, 0, 0)); // mfhi t2
        s.hi = 0xAABBCCDD;
        VMState memory e = copy(s);
        e.regs[T2] = 0xAABBCCDD;
        advance(e);
        expectStep(s, m, e);

        (s, m) = withInsn(special(0x12, T2, 0, 0)); // mflo t2
        s.lo = 0x11223344;
        e = copy(s);
        e.regs[T2] = 0x11223344;
        advance(e);
        expectStep(s, m, e);

        checkFault(special(0x10, T2, T0, 0), 1, 1, INVALID_INSTRUCTION); // rs must be 0
    }

    function test_mthiMtloWriteNoGeneralRegister() public {
        // Cantina class: mthi/mtlo only move to HI/LO; the rd field must be 0 and no register is written
        (VMState memory s, Mem memory m) = withInsn(special(0x11, 0, T0, 0)); // mthi t0
        s.regs[T0] = 0xCAFE;
        VMState memory e = copy(s);
        e.hi = 0xCAFE;
        advance(e);
        expectStep(s, m, e);

        (s, m) = withInsn(special(0x13, 0, T0, 0)); // mtlo t0
        s.regs[T0] = 0xBEEF;
        e = copy(s);
        e.lo = 0xBEEF;
        advance(e);
        expectStep(s, m, e);

        checkFault(special(0x11, T2, T0, 0), 1, 1, INVALID_INSTRUCTION); // mthi with rd != 0
        checkFault(special(0x13, T2, T0, 0), 1, 1, INVALID_INSTRUCTION); // mtlo with rd != 0
    }

    function test_multMultu() public {
        checkHiLo(special(0x18, 0, T0, T1), 0xFFFFFFFF, 2, 0, 0, 0xFFFFFFFF, 0xFFFFFFFE); // mult -1 * 2
        checkHiLo(special(0x19, 0, T0, T1), 0xFFFFFFFF, 2, 0, 0, 1, 0xFFFFFFFE); // multu
        checkHiLo(special(0x18, 0, T0, T1), 0x80000000, 0x80000000, 0, 0, 0x40000000, 0);
        checkFault(special(0x18, T2, T0, T1), 1, 1, INVALID_INSTRUCTION); // rd must be 0
    }

    function test_divDivuAndTheirEdgeCases() public {
        checkHiLo(special(0x1A, 0, T0, T1), uint32(int32(-7)), 2, 0, 0, uint32(int32(-1)), uint32(int32(-3)));
        checkHiLo(special(0x1A, 0, T0, T1), 7, uint32(int32(-2)), 0, 0, 1, uint32(int32(-3)));
        checkHiLo(special(0x1B, 0, T0, T1), 0xFFFFFFFF, 16, 0, 0, 15, 0x0FFFFFFF);
        // division by zero: lo = R[rs], hi = 0 (spec section 5, as QEMU 7.2)
        checkHiLo(special(0x1A, 0, T0, T1), 0x80000005, 0, 9, 9, 0, 0x80000005);
        checkHiLo(special(0x1B, 0, T0, T1), 12345, 0, 9, 9, 0, 12345);
        // 0x80000000 / -1
        checkHiLo(special(0x1A, 0, T0, T1), 0x80000000, 0xFFFFFFFF, 0, 0, 0, 0x80000000);
    }

    function test_maddMadduMsubMsubu() public {
        checkHiLo(rType(0x1C, T0, T1, 0, 0, 0x00), 0xFFFFFFFF, 3, 0, 5, 0, 2); // madd: 5 + (-3)
        checkHiLo(rType(0x1C, T0, T1, 0, 0, 0x01), 0xFFFFFFFF, 2, 0, 2, 2, 0); // maddu: 2 + 0x1FFFFFFFE
        checkHiLo(rType(0x1C, T0, T1, 0, 0, 0x04), 1, 1, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF); // msub: 0 - 1
        checkHiLo(rType(0x1C, T0, T1, 0, 0, 0x05), 0xFFFFFFFF, 0xFFFFFFFF, 0, 0, 1, 0xFFFFFFFF); // msubu wraps
        checkFault(rType(0x1C, T0, T1, T2, 0, 0x00), 1, 1, INVALID_INSTRUCTION); // rd must be 0
    }

    function test_mulClzClo() public {
        checkR(rType(0x1C, T0, T1, T2, 0, 0x02), 0x10001, 0x10001, 0x00020001); // mul: low 32 bits
        checkR(rType(0x1C, T0, T2, T2, 0, 0x20), 0x00010000, 0, 15); // clz (rt = rd)
        checkR(rType(0x1C, T0, T2, T2, 0, 0x20), 0, 0, 32);
        checkR(rType(0x1C, T0, T2, T2, 0, 0x21), 0xFFF00000, 0, 12); // clo
        checkR(rType(0x1C, T0, T2, T2, 0, 0x21), 0xFFFFFFFF, 0, 32);
        checkFault(rType(0x1C, T0, T1, T2, 0, 0x20), 1, 1, INVALID_INSTRUCTION); // clz: rt != rd
        checkFault(rType(0x1C, T0, T1, T2, 0, 0x03), 1, 1, INVALID_INSTRUCTION); // a SPECIAL2 hole
    }

    // =================================================================================================
    // Traps
    // =================================================================================================
    function test_registerTraps() public {
        // (funct, a, b) taken
        checkFault(special(0x30, 0, T0, T1), 0, 0xFFFFFFFF, TRAP); // tge: 0 >= -1
        checkFault(special(0x31, 0, T0, T1), 5, 5, TRAP); // tgeu
        checkFault(special(0x32, 0, T0, T1), 0xFFFFFFFF, 0, TRAP); // tlt: -1 < 0
        checkFault(special(0x33, 0, T0, T1), 0, 0xFFFFFFFF, TRAP); // tltu
        checkFault(special(0x34, 0, T0, T1), 7, 7, TRAP); // teq
        checkFault(special(0x36, 0, T0, T1), 7, 8, TRAP); // tne
        checkFault(special(0x34, 0, T0, T1) | (7 << 6), 0, 0, TRAP); // teq t0, t1, 7 (the code is ignored)
        // not taken: no effect
        checkR(special(0x30, 0, T0, T1), 0xFFFFFFFF, 0, 0);
        checkR(special(0x31, 0, T0, T1), 0, 0xFFFFFFFF, 0);
        checkR(special(0x32, 0, T0, T1), 0, 0xFFFFFFFF, 0);
        checkR(special(0x33, 0, T0, T1), 0xFFFFFFFF, 0, 0);
        checkR(special(0x34, 0, T0, T1), 7, 8, 0);
        checkR(special(0x36, 0, T0, T1), 7, 7, 0);
    }

    function test_immediateTraps() public {
        checkFault(iType(1, T0, 0x08, 0xFFFF), 0, 0, TRAP); // tgei 0 >= -1
        checkFault(iType(1, T0, 0x09, 0xFFFF), 0xFFFFFFFF, 0, TRAP); // tgeiu 0xFFFFFFFF >= 0xFFFFFFFF
        checkFault(iType(1, T0, 0x0A, 0), 0xFFFFFFFF, 0, TRAP); // tlti -1 < 0
        checkFault(iType(1, T0, 0x0B, 0xFFFF), 5, 0, TRAP); // tltiu 5 < 0xFFFFFFFF
        checkFault(iType(1, T0, 0x0C, 0xFFFF), 0xFFFFFFFF, 0, TRAP); // teqi -1
        checkFault(iType(1, T0, 0x0E, 1), 0, 0, TRAP); // tnei
        checkR(iType(1, T0, 0x0C, 1), 0, 0, 0); // teqi not taken
        checkFault(iType(1, T0, 0x0D, 0), 0, 0, INVALID_INSTRUCTION); // REGIMM 0x0D is a hole
        checkFault(iType(1, T0, 0x0F, 0), 0, 0, INVALID_INSTRUCTION);
    }

    // =================================================================================================
    // Immediates
    // =================================================================================================
    function checkI(uint32 insn, uint32 a, uint32 result) internal {
        (VMState memory s, Mem memory m) = withInsn(insn);
        s.regs[T0] = a;
        VMState memory e = copy(s);
        e.regs[T1] = result;
        advance(e);
        expectStep(s, m, e);
    }

    function test_immediateArithmetic() public {
        checkI(iType(0x08, T0, T1, 0xFFFF), 5, 4); // addi -1
        checkFault(iType(0x08, T0, T1, 1), 0x7FFFFFFF, 0, OVERFLOW); // addi overflow
        checkI(iType(0x09, T0, T1, 0x8000), 0x8000, 0); // addiu sign-extends
        checkI(iType(0x0A, T0, T1, 0xFFFF), 0xFFFFFFFE, 1); // slti -2 < -1
        checkI(iType(0x0B, T0, T1, 0xFFFF), 5, 1); // sltiu 5 < 0xFFFFFFFF
        checkI(iType(0x0C, T0, T1, 0xFFFF), 0xABCD1234, 0x1234); // andi zero-extends
        checkI(iType(0x0D, T0, T1, 0x8000), 0x10000, 0x18000); // ori
        checkI(iType(0x0E, T0, T1, 0xFFFF), 0x0000F0F0, 0x00000F0F); // xori
        checkI(iType(0x0F, 0, T1, 0x8001), 0, 0x80010000); // lui
        checkFault(iType(0x0F, T0, T1, 1), 0, 0, INVALID_INSTRUCTION); // lui: rs must be 0
    }

    // =================================================================================================
    // Branches and jumps (spec section 4)
    // =================================================================================================
    /// @dev Runs a branch at PC with t0 = a, t1 = b; checks taken (nextPC = target) or not.
    function checkBranch(uint32 insn, uint32 a, uint32 b, bool taken, bool links) internal {
        (VMState memory s, Mem memory m) = withInsn(insn);
        s.regs[T0] = a;
        s.regs[T1] = b;
        VMState memory e = copy(s);
        uint32 target = uint32(int32(PC + 4) + int32(int16(uint16(insn & 0xFFFF))) * 4);
        e.pc = PC + 4;
        e.nextPC = taken ? target : PC + 8;
        e.step = 1;
        if (links) e.regs[RA] = PC + 8;
        expectStep(s, m, e);
    }

    function test_beqBneBlezBgtz() public {
        checkBranch(iType(0x04, T0, T1, 0x10), 3, 3, true, false); // beq
        checkBranch(iType(0x04, T0, T1, 0x10), 3, 4, false, false);
        checkBranch(iType(0x05, T0, T1, 0xFFF0), 3, 4, true, false); // bne, backwards
        checkBranch(iType(0x05, T0, T1, 0xFFF0), 3, 3, false, false);
        checkBranch(iType(0x06, T0, 0, 5), 0, 0, true, false); // blez 0
        checkBranch(iType(0x06, T0, 0, 5), 0x80000000, 0, true, false); // blez negative
        checkBranch(iType(0x06, T0, 0, 5), 1, 0, false, false);
        checkBranch(iType(0x07, T0, 0, 5), 1, 0, true, false); // bgtz
        checkBranch(iType(0x07, T0, 0, 5), 0, 0, false, false);
        checkBranch(iType(0x07, T0, 0, 5), 0xFFFFFFFF, 0, false, false);
        checkFault(iType(0x06, T0, T1, 5), 0, 0, INVALID_INSTRUCTION); // blez: rt must be 0
        checkFault(iType(0x07, T0, T1, 5), 0, 0, INVALID_INSTRUCTION); // bgtz: rt must be 0
    }

    function test_bltzBgezBltzalBgezal() public {
        checkBranch(iType(1, T0, 0x00, 8), 0x80000000, 0, true, false); // bltz
        checkBranch(iType(1, T0, 0x00, 8), 0, 0, false, false);
        checkBranch(iType(1, T0, 0x01, 8), 0, 0, true, false); // bgez
        checkBranch(iType(1, T0, 0x01, 8), 0xFFFFFFFF, 0, false, false);
        // Cantina class: bltzal/bgezal exist and link always, taken or not
        checkBranch(iType(1, T0, 0x10, 8), 0xFFFFFFFF, 0, true, true); // bltzal
        checkBranch(iType(1, T0, 0x10, 8), 1, 0, false, true);
        checkBranch(iType(1, T0, 0x11, 8), 1, 0, true, true); // bgezal
        checkBranch(iType(1, T0, 0x11, 8), 0x80000000, 0, false, true);
        checkBranch(iType(1, 0, 0x11, 8), 0, 0, true, true); // bal = bgezal zero
    }

    function test_bgezalReadsItsConditionBeforeTheLink() public {
        // bgezal ra, 8 with ra negative: the condition uses the old ra (not taken), then ra = pc + 8
        (VMState memory s, Mem memory m) = withInsn(iType(1, RA, 0x11, 8));
        s.regs[RA] = 0x80000000;
        VMState memory e = copy(s);
        e.regs[RA] = PC + 8;
        e.pc = PC + 4;
        e.nextPC = PC + 8;
        e.step = 1;
        expectStep(s, m, e);
    }

    function test_invalidRegimmBranchesAreFaults() public {
        // branch-likely (bltzl 0x02, bgezl 0x03, bltzall 0x12, bgezall 0x13) and the other holes
        uint8[8] memory holes = [0x02, 0x03, 0x04, 0x12, 0x13, 0x18, 0x1F, 0x07];
        for (uint256 i = 0; i < holes.length; i++) {
            checkFault(iType(1, T0, holes[i], 4), 0, 0, INVALID_INSTRUCTION);
        }
    }

    function test_jAndJalTakeTheRegionBitsFromTheDelaySlot() public {
        // Cantina class: the top 4 bits come from nextPC (the delay slot), not from pc
        (VMState memory s, Mem memory m) = withInsn(jType(0x03, 0x0ABCDEF0)); // jal
        s.pc = 0x0FFFFFFC;
        s.nextPC = 0x10000000;
        m = Mem(m.index, m.leaf, 0);
        m.store32(s.pc, jType(0x03, 0x0ABCDEF0));
        VMState memory e = copy(s);
        e.pc = 0x10000000;
        e.nextPC = 0x1ABCDEF0;
        e.regs[RA] = 0x10000004; // pc + 8
        e.step = 1;
        expectStep(s, m, e);

        (s, m) = withInsn(jType(0x02, 0x00001000)); // j
        e = copy(s);
        e.pc = PC + 4;
        e.nextPC = 0x00001000;
        e.step = 1;
        expectStep(s, m, e);
    }

    function test_jrJalr() public {
        (VMState memory s, Mem memory m) = withInsn(special(0x08, 0, T0, 0)); // jr t0
        s.regs[T0] = 0x12345678;
        VMState memory e = copy(s);
        e.pc = PC + 4;
        e.nextPC = 0x12345678;
        e.step = 1;
        expectStep(s, m, e);

        // jalr t0, t0: the target is read before the link write (rd = rs is defined)
        (s, m) = withInsn(special(0x09, T0, T0, 0));
        s.regs[T0] = 0x00500000;
        e = copy(s);
        e.regs[T0] = PC + 8;
        e.pc = PC + 4;
        e.nextPC = 0x00500000;
        e.step = 1;
        expectStep(s, m, e);

        checkFault(special(0x08, T2, T0, 0), 0, 0, INVALID_INSTRUCTION); // jr: rd must be 0
        checkFault(special(0x09, T2, T0, T1), 0, 0, INVALID_INSTRUCTION); // jalr: rt must be 0
        checkFault(rType(0, T0, 0, RA, 1, 0x09), 0, 0, INVALID_INSTRUCTION); // jalr: sa must be 0
    }

    function test_aBranchOrJumpInADelaySlotFaults() public {
        // Cantina class: nextPC != pc + 4 means the instruction is itself in a delay slot
        uint32[6] memory insns = [
            iType(0x04, 0, 0, 4), // beq (taken)
            iType(0x05, 0, 0, 4), // bne (not taken)
            iType(1, 0, 0x11, 4), // bal (links)
            jType(0x02, 0x1000), // j
            jType(0x03, 0x1000), // jal
            special(0x09, RA, T0, 0) // jalr
        ];
        for (uint256 i = 0; i < insns.length; i++) {
            (VMState memory s, Mem memory m) = withInsn(insns[i]);
            s.nextPC = 0x00800000;
            VMState memory e = copy(s);
            faulted(e, BRANCH_IN_DELAY_SLOT);
            expectStep(s, m, e); // and nothing was linked
        }
        // an invalid branch in a delay slot is INVALID_INSTRUCTION (decoding faults first)
        (VMState memory s2, Mem memory m2) = withInsn(iType(0x06, T0, T1, 4));
        s2.nextPC = 0x00800000;
        VMState memory e2 = copy(s2);
        faulted(e2, INVALID_INSTRUCTION);
        expectStep(s2, m2, e2);
    }

    function test_aDelaySlotInstructionRunsNormally() public {
        (VMState memory s, Mem memory m) = withInsn(special(0x21, T2, T0, T1));
        s.nextPC = 0x00800000; // the target of the branch before
        s.regs[T0] = 1;
        s.regs[T1] = 2;
        VMState memory e = copy(s);
        e.regs[T2] = 3;
        e.pc = 0x00800000;
        e.nextPC = 0x00800004;
        e.step = 1;
        expectStep(s, m, e);
    }

    // =================================================================================================
    // Loads and stores
    // =================================================================================================
    /// @dev Runs a load/store at address `a` (= t0 + 0) with the data leaf `leaf`; returns the post hash and
    ///      the memory (with the instruction) for the expectation.
    function runMem(uint32 insn, uint32 a, bytes32 leaf, uint32 rt)
        internal
        returns (bytes32 post, VMState memory s, Mem memory m)
    {
        (s, m) = withInsn(insn);
        m.setLeaf(a, leaf);
        s.regs[T0] = a;
        s.regs[T1] = rt;
        post = run(s, m, a);
    }

    function checkLoad(uint256 op, uint32 a, bytes32 leaf, uint32 rtBefore, uint32 expected) internal {
        (bytes32 post, VMState memory s,) = runMem(iType(op, T0, T1, 0), a, leaf, rtBefore);
        VMState memory e = copy(s);
        e.regs[T1] = expected;
        advance(e);
        assertEq(post, hashOf(e), "load");
    }

    bytes32 internal constant LEAF = 0x0011223344556677_8899AABBCCDDEEFF_8081828384858687_F8F9FAFBFCFDFEFF;

    function test_lbLbuLhLhuLwLl() public {
        checkLoad(0x20, DATA + 1, LEAF, 0, 0x11); // lb
        checkLoad(0x20, DATA + 16, LEAF, 0, 0xFFFFFF80); // lb sign-extends
        checkLoad(0x24, DATA + 16, LEAF, 0, 0x80); // lbu
        checkLoad(0x21, DATA + 18, LEAF, 0, 0xFFFF8283); // lh
        checkLoad(0x25, DATA + 18, LEAF, 0, 0x8283); // lhu
        checkLoad(0x23, DATA + 28, LEAF, 0, 0xFCFDFEFF); // lw
        checkLoad(0x30, DATA + 4, LEAF, 0, 0x44556677); // ll
    }

    function test_lwlLwrMergeAllOffsets() public {
        // the word at DATA + 8 is 0x8899AABB; rt before = 0x11223344
        uint32[4] memory lwl = [uint32(0x8899AABB), 0x99AABB44, 0xAABB3344, 0xBB223344];
        uint32[4] memory lwr = [uint32(0x11223388), 0x11228899, 0x118899AA, 0x8899AABB];
        for (uint32 k = 0; k < 4; k++) {
            checkLoad(0x22, DATA + 8 + k, LEAF, 0x11223344, lwl[k]);
            checkLoad(0x26, DATA + 8 + k, LEAF, 0x11223344, lwr[k]);
        }
    }

    function test_unalignedLoadsAndStoresFaultAndAreNotSilentlyAligned() public {
        // Cantina class: lh/lhu/lw/ll/sh/sw/sc at an unaligned address fault (no silent alignment)
        uint8[7] memory ops = [0x21, 0x25, 0x23, 0x30, 0x29, 0x2B, 0x38];
        uint8[7] memory misalign = [1, 3, 2, 1, 1, 3, 2];
        for (uint256 i = 0; i < ops.length; i++) {
            (VMState memory s, Mem memory m) = withInsn(iType(ops[i], T0, T1, 0));
            s.regs[T0] = DATA + misalign[i];
            VMState memory e = copy(s);
            faulted(e, UNALIGNED_ACCESS);
            expectStep(s, m, e); // a faulting step's data address is 0
        }
    }

    function checkStore(uint256 op, uint32 a, uint32 rt, bytes32 expectedLeaf, bool scLink) internal {
        (bytes32 post, VMState memory s, Mem memory m) = runMem(iType(op, T0, T1, 0), a, LEAF, rt);
        VMState memory e = copy(s);
        m.setLeaf(a, expectedLeaf);
        e.memRoot = m.root();
        if (scLink) e.regs[T1] = 1;
        advance(e);
        assertEq(post, hashOf(e), "store");
    }

    function test_sbShSwSc() public {
        checkStore(
            0x28, DATA + 2, 0xAABBCCDD, 0x0011DD3344556677_8899AABBCCDDEEFF_8081828384858687_F8F9FAFBFCFDFEFF, false
        );
        checkStore(
            0x29, DATA + 30, 0xAABBCCDD, 0x0011223344556677_8899AABBCCDDEEFF_8081828384858687_F8F9FAFBFCFDCCDD, false
        );
        checkStore(
            0x2B, DATA + 12, 0xAABBCCDD, 0x0011223344556677_8899AABBAABBCCDD_8081828384858687_F8F9FAFBFCFDFEFF, false
        );
        // sc stores like sw, then R[rt] = 1 (the store always succeeds)
        checkStore(0x38, DATA, 0xAABBCCDD, 0xAABBCCDD44556677_8899AABBCCDDEEFF_8081828384858687_F8F9FAFBFCFDFEFF, true);
    }

    function test_swlSwrMergeAllOffsets() public {
        // the word at DATA + 8 is 0x8899AABB; rt = 0x11223344
        uint32[4] memory swl = [uint32(0x11223344), 0x88112233, 0x88991122, 0x8899AA11];
        uint32[4] memory swr = [uint32(0x4499AABB), 0x3344AABB, 0x223344BB, 0x11223344];
        for (uint32 k = 0; k < 4; k++) {
            bytes32 l = bytes32((uint256(LEAF) & ~(uint256(0xFFFFFFFF) << 160)) | (uint256(swl[k]) << 160));
            checkStore(0x2A, DATA + 8 + k, 0x11223344, l, false);
            bytes32 r = bytes32((uint256(LEAF) & ~(uint256(0xFFFFFFFF) << 160)) | (uint256(swr[k]) << 160));
            checkStore(0x2E, DATA + 8 + k, 0x11223344, r, false);
        }
    }

    function test_aStoreIntoTheInstructionsOwnLeaf() public {
        // sw t1, 4(t0) with t0 = PC: the data leaf is the instruction's leaf
        (VMState memory s, Mem memory m) = withInsn(iType(0x2B, T0, T1, 4));
        s.regs[T0] = PC;
        s.regs[T1] = 0xDEADBEEF;
        bytes32 post = run(s, m, PC + 4);
        VMState memory e = copy(s);
        m.store32(PC + 4, 0xDEADBEEF);
        e.memRoot = m.root();
        advance(e);
        assertEq(post, hashOf(e));
    }

    function test_loadAddressWrapsAround() public {
        // lw t1, -4(t0) with t0 = 0: address 0xFFFFFFFC
        (VMState memory s, Mem memory m) = withInsn(iType(0x23, T0, T1, 0xFFFC));
        m.store32(0xFFFFFFFC, 0x01020304);
        bytes32 post = run(s, m, 0xFFFFFFFC);
        VMState memory e = copy(s);
        e.regs[T1] = 0x01020304;
        advance(e);
        assertEq(post, hashOf(e));
    }

    function test_invalidOpcodesAreFaults() public {
        // COP0, COP1 (FPU), COP2, COP1X, beql, SPECIAL3 (seb/ext/ins), lwu, sdl, cache, lwc1, pref, sdc1
        uint8[15] memory ops =
            [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x1F, 0x27, 0x2C, 0x2F, 0x31, 0x33, 0x3D];
        for (uint256 i = 0; i < ops.length; i++) {
            checkFault(iType(ops[i], 0, 0, 0), 0, 0, INVALID_INSTRUCTION);
        }
    }

    // =================================================================================================
    // Faults of the fetch; exited states
    // =================================================================================================
    function test_anUnalignedPcFaults() public {
        (VMState memory s, Mem memory m) = withInsn(special(0x21, T2, T0, T1));
        s.pc = PC + 2;
        s.nextPC = PC + 6;
        VMState memory e = copy(s);
        faulted(e, UNALIGNED_FETCH);
        expectStep(s, m, e);
    }

    function test_exitedStatesAreFixedPoints() public {
        (VMState memory s, Mem memory m) = withInsn(special(0x21, T2, T0, T1));
        s.exited = 1;
        s.exitCode = 0x85;
        s.step = 77;
        bytes32 post = run(s, m, 0);
        assertEq(post, hashOf(s)); // unchanged, step counter included
        assertEq(uint8(uint256(post) >> 248), 2, "PANIC");
        assertEq(post, mips.stateHash(encode(s)));
    }

    function test_theStepCounterWrapsAt2To64() public {
        (VMState memory s, Mem memory m) = withInsn(0);
        s.step = type(uint64).max;
        VMState memory e = copy(s);
        advance(e);
        assertEq(e.step, 0);
        expectStep(s, m, e);
    }

    // =================================================================================================
    // Syscalls (spec section 6)
    // =================================================================================================
    function syscallState(uint32 num, uint32 a0, uint32 a1, uint32 a2)
        internal
        pure
        returns (VMState memory s, Mem memory m)
    {
        (s, m) = withInsn(SYSCALL);
        s.regs[V0] = num;
        s.regs[A0] = a0;
        s.regs[A1] = a1;
        s.regs[A2] = a2;
        s.regs[A3] = 0x5555;
    }

    function checkSyscall(uint32 num, uint32 a0, uint32 a1, uint32 a2, uint32 v0, uint32 a3) internal {
        (VMState memory s, Mem memory m) = syscallState(num, a0, a1, a2);
        VMState memory e = copy(s);
        e.regs[V0] = v0;
        e.regs[A3] = a3;
        advance(e);
        expectStep(s, m, e);
    }

    function test_exitAndExitGroup() public {
        uint32[4] memory codes = [uint32(0), 1, 2, 0x1FF];
        for (uint256 i = 0; i < codes.length; i++) {
            (VMState memory s, Mem memory m) = syscallState(i % 2 == 0 ? 4001 : 4246, codes[i], 0, 0);
            VMState memory e = copy(s);
            e.exited = 1;
            e.exitCode = uint8(codes[i]);
            e.step = 1; // registers and pc untouched
            bytes32 post = run(s, m, 0);
            e.memRoot = s.memRoot;
            assertEq(post, hashOf(e));
            assertEq(uint8(uint256(post) >> 248), codes[i] == 0 ? 0 : codes[i] == 1 ? 1 : 2, "status");
        }
    }

    function checkMmap(uint32 len, uint32 grows) internal {
        (VMState memory s, Mem memory m) = syscallState(4090, 0, len, 0);
        VMState memory e = copy(s);
        e.regs[V0] = HEAP_START;
        e.regs[A3] = 0;
        e.heap = HEAP_START + grows;
        advance(e);
        expectStep(s, m, e);
    }

    function test_mmap() public {
        checkMmap(1, 0x1000); // rounds up to 4 KiB
        checkMmap(4096, 0x1000);
        checkMmap(4097, 0x2000);

        checkSyscall(4090, 0x1000, 4096, 0, 22, 1); // addr != 0: EINVAL
        checkSyscall(4090, 0, 0, 0, 22, 1); // len = 0: EINVAL
        checkSyscall(4090, 0, HEAP_END - HEAP_START + 1, 0, 12, 1); // beyond HEAP_END: ENOMEM
    }

    function test_mmapNeverWrapsAround() public {
        // Cantina class: len = 0xFFFFFFFF rounds to 2^32 (no wrap to 0), heap + len computed without wrapping
        checkSyscall(4090, 0, 0xFFFFFFFF, 0, 12, 1);
        checkSyscall(4090, 0, 0xFFFFF001, 0, 12, 1);
        (VMState memory s, Mem memory m) = syscallState(4090, 0, 0x1000, 0);
        s.heap = 0xFFFFF000; // a heap past HEAP_END (unreachable from a loaded program) still never wraps
        VMState memory e = copy(s);
        e.regs[V0] = 12;
        e.regs[A3] = 1;
        advance(e);
        expectStep(s, m, e);
        // exactly up to HEAP_END succeeds
        (s, m) = syscallState(4090, 0, 0x1000, 0);
        s.heap = HEAP_END - 0x1000;
        e = copy(s);
        e.regs[V0] = HEAP_END - 0x1000;
        e.regs[A3] = 0;
        e.heap = HEAP_END;
        advance(e);
        expectStep(s, m, e);
    }

    function test_brkReadWriteAndBadFds() public {
        checkSyscall(4045, 0x12345, 0, 0, 0x60000000, 0); // brk: BRK_FIXED
        checkSyscall(4003, 0, DATA, 100, 0, 0); // read stdin: end of file
        checkSyscall(4003, 7, DATA, 100, 9, 1); // read other fd: EBADF
        checkSyscall(4004, 1, DATA, 100, 100, 0); // write stdout
        checkSyscall(4004, 2, DATA, 7, 7, 0); // write stderr
        checkSyscall(4004, 3, DATA, 0xFFFFFFFF, 0xFFFFFFFF, 0); // write output
        checkSyscall(4004, 5, DATA, 100, 9, 1); // write other fd: EBADF
    }

    function test_anUnknownSyscallFaults() public {
        uint32[4] memory nums = [uint32(4005), 4000, 0, 0xFFFFFFFF];
        for (uint256 i = 0; i < nums.length; i++) {
            (VMState memory s, Mem memory m) = syscallState(nums[i], 0, 0, 0);
            VMState memory e = copy(s);
            faulted(e, UNKNOWN_SYSCALL);
            expectStep(s, m, e);
        }
    }

    function test_theSyscallCodeFieldIsIgnored() public {
        (VMState memory s, Mem memory m) = syscallState(4045, 0, 0, 0);
        m.store32(PC, SYSCALL | (0xFFFFF << 6));
        VMState memory e = copy(s);
        e.regs[V0] = 0x60000000;
        e.regs[A3] = 0;
        advance(e);
        expectStep(s, m, e);
    }

    // =================================================================================================
    // Preimage select and read
    // =================================================================================================
    function test_preimageSelect() public {
        bytes32 key = keccak256("a key");
        (VMState memory s, Mem memory m) = syscallState(4004, 6, DATA + 32, 32);
        m.setLeaf(DATA + 32, key);
        s.preimageOffset = 99;
        bytes32 post = run(s, m, DATA + 32);
        VMState memory e = copy(s);
        e.preimageKey = key;
        e.preimageOffset = 0;
        e.regs[V0] = 32;
        e.regs[A3] = 0;
        advance(e);
        assertEq(post, hashOf(e));
    }

    function test_preimageSelectNeedsAnAlignedBufferAndLength32() public {
        uint32[3] memory bufs = [DATA + 4, DATA + 32, DATA + 31];
        uint32[3] memory lens = [uint32(32), 31, 32];
        for (uint256 i = 0; i < 3; i++) {
            (VMState memory s, Mem memory m) = syscallState(4004, 6, bufs[i], lens[i]);
            s.preimageOffset = 5;
            bytes32 post = run(s, m, bufs[i]); // the data proof is of buf, whatever the outcome
            VMState memory e = copy(s);
            e.regs[V0] = 22;
            e.regs[A3] = 1;
            advance(e);
            assertEq(post, hashOf(e));
        }
    }

    function loadKeccak(bytes memory data, uint256 offset) internal returns (bytes32 key) {
        key = oracle.loadKeccak256PreimagePart(offset, data);
    }

    /// @dev The 32 bytes of data's stream at `offset`, zero-padded (test-side reference).
    function streamPart(bytes memory data, uint256 offset) internal pure returns (bytes32 part) {
        bytes memory s = abi.encodePacked(uint64(data.length), data);
        for (uint256 i = 0; i < 32; i++) {
            if (offset + i < s.length) part |= bytes32(s[offset + i]) >> (i * 8);
        }
    }

    /// @dev A read(5, buf, n) of `key` at `offset`, stream `stream`; checks count, memory and offset.
    function checkRead(bytes32 key, bytes memory stream, uint32 offset, uint32 buf, uint32 n, uint32 count) internal {
        (VMState memory s, Mem memory m) = syscallState(4003, 5, buf, n);
        s.preimageKey = key;
        s.preimageOffset = offset;
        m.setLeaf(buf, LEAF);
        bytes32 post = run(s, m, buf);
        VMState memory e = copy(s);
        // expected leaf: bytes [buf & 31, +count) from the stream at offset
        bytes32 leaf = LEAF;
        for (uint256 i = 0; i < count; i++) {
            uint256 pos = (buf & 31) + i;
            uint256 shift = 248 - pos * 8;
            uint256 b = offset + i < stream.length ? uint8(stream[offset + i]) : 0;
            leaf = bytes32((uint256(leaf) & ~(uint256(0xFF) << shift)) | (b << shift));
        }
        m.setLeaf(buf, leaf);
        e.memRoot = m.root();
        e.regs[V0] = count;
        e.regs[A3] = 0;
        e.preimageOffset = offset + count;
        advance(e);
        assertEq(post, hashOf(e), "read");
    }

    function test_preimageReadOfAKeccakKey() public {
        bytes memory data = new bytes(100);
        for (uint256 i = 0; i < 100; i++) {
            data[i] = bytes1(uint8(i + 1));
        }
        bytes memory stream = abi.encodePacked(uint64(100), data);
        bytes32 key = loadKeccak(data, 0);
        loadKeccak(data, 8);
        loadKeccak(data, 100);
        checkRead(key, stream, 0, DATA, 32, 32); // aligned: 32 bytes per step
        checkRead(key, stream, 8, DATA + 5, 1000, 27); // up to the end of buf's leaf
        checkRead(key, stream, 8, DATA + 31, 1000, 1);
        checkRead(key, stream, 8, DATA, 3, 3); // n limits
        checkRead(key, stream, 100, DATA, 32, 8); // the end of the stream limits
        checkRead(key, stream, 108, DATA, 32, 0); // at the end: v0 = 0, memory unchanged
        checkRead(key, stream, 200, DATA, 32, 0); // past the end (unreachable): v0 = 0
        checkRead(key, stream, 8, DATA, 0, 0); // n = 0
    }

    function test_preimageReadOfALocalKey() public {
        bytes32 word = keccak256("model id");
        oracle.loadLocalData(1, CTX, word); // this contract is the "game" that calls step
        bytes memory stream = abi.encodePacked(uint64(32), word);
        checkRead(localKey(1), stream, 0, DATA, 32, 32);
        checkRead(localKey(1), stream, 32, DATA + 8, 32, 8);
        checkRead(localKey(1), stream, 40, DATA, 32, 0);
    }

    function test_aReadRevertsWhenThePartIsNotLoaded() public {
        bytes memory data = "not loaded at 32";
        bytes32 key = loadKeccak(abi.encodePacked(data, data, data), 0);
        (VMState memory s, Mem memory m) = syscallState(4003, 5, DATA, 32);
        s.preimageKey = key;
        s.preimageOffset = 32;
        s.memRoot = m.root();
        bytes memory proof = bytes.concat(m.proof(PC), m.proof(DATA));
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PreimageNotLoaded.selector, key, 32));
        mips.step(encode(s), proof, CTX);

        // keys nobody can supply: zero, an unknown type, an unset local index
        bytes32[3] memory keys = [bytes32(0), bytes32(uint256(3) << 248), localKey(7)];
        for (uint256 i = 0; i < 3; i++) {
            s.preimageKey = keys[i];
            s.preimageOffset = 0;
            bytes32 k = i == 2 ? localizeKey(keys[i], CTX, address(this)) : keys[i];
            vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PreimageNotLoaded.selector, k, 0));
            mips.step(encode(s), proof, CTX);
        }
    }

    function test_localDataOfAnotherWriterIsNeverRead() public {
        address attacker = makeAddr("attacker");
        vm.prank(attacker);
        oracle.loadLocalData(1, CTX, keccak256("forged")); // stored under the attacker's own key
        (VMState memory s, Mem memory m) = syscallState(4003, 5, DATA, 32);
        s.preimageKey = localKey(1);
        s.memRoot = m.root();
        bytes memory proof = bytes.concat(m.proof(PC), m.proof(DATA));
        bytes32 ours = localizeKey(localKey(1), CTX, address(this));
        vm.expectRevert(abi.encodeWithSelector(IPreimageOracle.PreimageNotLoaded.selector, ours, 0));
        mips.step(encode(s), proof, CTX);
    }

    // =================================================================================================
    // Malformed witnesses revert (spec section 1)
    // =================================================================================================
    function validStep() internal pure returns (bytes memory state, bytes memory proof) {
        (VMState memory s, Mem memory m) = withInsn(special(0x21, T2, T0, T1));
        s.memRoot = m.root();
        state = encode(s);
        proof = bytes.concat(m.proof(PC), m.proof(0));
    }

    function test_aMalformedStateReverts() public {
        (bytes memory state, bytes memory proof) = validStep();
        mips.step(state, proof, CTX);

        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidStateLength.selector, 225));
        mips.step(slice(state, 0, 225), proof, CTX);
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidStateLength.selector, 227));
        mips.step(bytes.concat(state, hex"00"), proof, CTX);

        // Cantina class: a non-boolean exited flag is rejected, not read as "true"
        bytes memory bad = bytes.concat(state);
        bad[89] = 0x02;
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidExitedFlag.selector, 2));
        mips.step(bad, proof, CTX);
        bad[89] = 0xFF;
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidExitedFlag.selector, 255));
        mips.stateHash(bad);

        bad = bytes.concat(state);
        bad[101] = 0x01; // r0 = 1
        vm.expectRevert(abi.encodeWithSelector(IMIPS.NonZeroR0.selector, 1));
        mips.step(bad, proof, CTX);
    }

    function test_aMalformedProofReverts() public {
        (bytes memory state, bytes memory proof) = validStep();
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidProofLength.selector, 1791));
        mips.step(state, slice(proof, 0, 1791), CTX);

        bytes memory bad = bytes.concat(proof);
        bad[3] ^= 0x01; // the instruction leaf
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidMemoryProof.selector, PC));
        mips.step(state, bad, CTX);

        bad = bytes.concat(proof);
        bad[896 + 32 * 27] ^= 0x01; // the data proof's top sibling
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidMemoryProof.selector, 0));
        mips.step(state, bad, CTX);
    }

    function test_theDataProofMustBeOfTheAccessedAddress() public {
        // lw t1, 0(t0) proven with the proof of another leaf (of zeros: a valid proof of the wrong leaf)
        (VMState memory s, Mem memory m) = withInsn(iType(0x23, T0, T1, 0));
        s.regs[T0] = DATA;
        m.store32(DATA, 0x01020304);
        s.memRoot = m.root();
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidMemoryProof.selector, DATA));
        mips.step(encode(s), bytes.concat(m.proof(PC), m.proof(DATA + 64)), CTX);
        // a step that touches no data must prove address 0
        (s, m) = withInsn(0x0F); // sync
        s.memRoot = m.root();
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidMemoryProof.selector, 0));
        mips.step(encode(s), bytes.concat(m.proof(PC), m.proof(PC)), CTX);
    }

    function test_stateHashMatchesTheSpec() public view {
        (bytes memory state,) = validStep();
        (VMState memory s,) = withInsn(0);
        assertEq(uint8(uint256(mips.stateHash(state)) >> 248), 3, "UNFINISHED");
        assertEq(mips.stateHash(encode(s)), hashOf(s));
    }

    function slice(bytes memory b, uint256 start, uint256 end) internal pure returns (bytes memory out) {
        out = new bytes(end - start);
        for (uint256 i = start; i < end; i++) {
            out[i - start] = b[i];
        }
    }

    // =================================================================================================
    // Gas (forge's figure: the call's execution, as Cannon's ~58.5k anchor)
    // =================================================================================================
    function test_gas_aluStep() public {
        (VMState memory s, Mem memory m) = withInsn(special(0x21, T2, T0, T1));
        for (uint256 i = 1; i < 32; i++) {
            s.regs[i] = uint32(uint256(keccak256(abi.encode(i))));
        }
        s.memRoot = m.root();
        bytes memory state = encode(s);
        bytes memory proof = bytes.concat(m.proof(PC), m.proof(0));
        uint256 before = gasleft();
        mips.step(state, proof, CTX);
        uint256 used = before - gasleft();
        log("gas: ALU step (forge, call incl. calldata copy)", used);
        assertLt(used, 60_000);
    }
}

/// @notice Fuzz tests: random operands against expectations computed here; malformed proofs always revert.
contract MIPSFuzzTest is MIPSTestBase {
    using MemLib for Mem;

    function expectedAlu(uint256 fn, uint32 a, uint32 b) internal pure returns (bool ok, uint32 r) {
        unchecked {
            if (fn == 0x21) return (true, a + b);
            if (fn == 0x23) return (true, a - b);
            if (fn == 0x24) return (true, a & b);
            if (fn == 0x25) return (true, a | b);
            if (fn == 0x26) return (true, a ^ b);
            if (fn == 0x27) return (true, ~(a | b));
            if (fn == 0x2A) return (true, int32(a) < int32(b) ? 1 : 0);
            if (fn == 0x2B) return (true, a < b ? 1 : 0);
            if (fn == 0x04) return (true, b << (a & 31));
            if (fn == 0x06) return (true, b >> (a & 31));
            if (fn == 0x07) return (true, uint32(int32(b) >> (a & 31)));
            int64 sum = fn == 0x20 ? int64(int32(a)) + int64(int32(b)) : int64(int32(a)) - int64(int32(b));
            if (sum > type(int32).max || sum < type(int32).min) return (false, 0);
            return (true, uint32(uint64(sum)));
        }
    }

    function testFuzz_aluRType(uint32 a, uint32 b, uint8 pick) public {
        uint8[13] memory fns = [0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x04, 0x06, 0x07];
        uint256 fn = fns[pick % fns.length];
        (bool ok, uint32 r) = expectedAlu(fn, a, b);
        if (ok) checkR(special(fn, T2, T0, T1), a, b, r);
        else checkFault(special(fn, T2, T0, T1), a, b, OVERFLOW);
    }

    function testFuzz_multDiv(uint32 a, uint32 b, uint8 pick) public {
        uint256 fn = 0x18 + (pick % 4);
        uint32 hi;
        uint32 lo;
        if (fn == 0x18) {
            uint64 p = uint64(int64(int32(a)) * int64(int32(b)));
            (hi, lo) = (uint32(p >> 32), uint32(p));
        } else if (fn == 0x19) {
            uint64 p = uint64(a) * uint64(b);
            (hi, lo) = (uint32(p >> 32), uint32(p));
        } else if (b == 0) {
            (hi, lo) = (0, a);
        } else if (fn == 0x1A) {
            if (a == 0x80000000 && b == 0xFFFFFFFF) (hi, lo) = (0, 0x80000000);
            else (hi, lo) = (uint32(int32(a) % int32(b)), uint32(int32(a) / int32(b)));
        } else {
            (hi, lo) = (a % b, a / b);
        }
        checkHiLo(special(fn, 0, T0, T1), a, b, 7, 7, hi, lo);
    }

    function testFuzz_branchTarget(uint16 imm, uint32 pc, bool taken) public {
        pc &= ~uint32(3);
        (VMState memory s, Mem memory m) = withInsn(0);
        s.pc = pc;
        unchecked {
            s.nextPC = pc + 4;
        }
        m = Mem(m.index, m.leaf, 0);
        m.store32(pc, iType(taken ? 0x04 : 0x05, 0, 0, imm)); // beq zero, zero (taken) / bne (not)
        VMState memory e = copy(s);
        unchecked {
            e.pc = pc + 4;
            e.nextPC = taken ? uint32(uint256(pc) + 4 + uint256(int256(int16(imm)) * 4)) : pc + 8;
            e.step = 1;
        }
        expectStep(s, m, e);
    }

    function testFuzz_mmap(uint32 heap, uint32 len) public {
        (VMState memory s, Mem memory m) = withInsn(SYSCALL);
        s.regs[V0] = 4090;
        s.regs[A1] = len;
        s.heap = heap;
        VMState memory e = copy(s);
        uint256 rounded = (uint256(len) + 4095) & ~uint256(4095);
        if (len == 0) (e.regs[V0], e.regs[A3]) = (22, 1);
        else if (uint256(heap) + rounded > HEAP_END) (e.regs[V0], e.regs[A3]) = (12, 1);
        else (e.regs[V0], e.regs[A3], e.heap) = (heap, 0, uint32(heap + rounded));
        advance(e);
        expectStep(s, m, e);
    }

    function testFuzz_storeThenTheLeafHoldsTheWord(uint32 addr, uint32 value) public {
        addr &= ~uint32(3);
        vm.assume(addr >> 5 != PC >> 5);
        (VMState memory s, Mem memory m) = withInsn(iType(0x2B, T0, T1, 0));
        s.regs[T0] = addr;
        s.regs[T1] = value;
        bytes32 post = run(s, m, addr);
        VMState memory e = copy(s);
        m.store32(addr, value);
        e.memRoot = m.root();
        advance(e);
        assertEq(post, hashOf(e));
    }

    function testFuzz_aCorruptedProofAlwaysReverts(uint256 position, uint8 flip) public {
        position = bound(position, 0, 1791);
        flip = uint8(bound(flip, 1, 255));
        (VMState memory s, Mem memory m) = withInsn(iType(0x23, T0, T1, 0)); // lw t1, 0(t0)
        s.regs[T0] = DATA;
        m.store32(DATA, 0xA5A5A5A5);
        s.memRoot = m.root();
        bytes memory proof = bytes.concat(m.proof(PC), m.proof(DATA));
        proof[position] ^= bytes1(flip);
        vm.expectPartialRevert(IMIPS.InvalidMemoryProof.selector);
        mips.step(encode(s), proof, CTX);
    }

    function testFuzz_aWrongMemRootAlwaysReverts(bytes32 root) public {
        (VMState memory s, Mem memory m) = withInsn(0);
        vm.assume(root != m.root());
        s.memRoot = root;
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidMemoryProof.selector, PC));
        mips.step(encode(s), bytes.concat(m.proof(PC), m.proof(0)), CTX);
    }

    function testFuzz_exitedFlagAbove1AlwaysReverts(uint8 exited) public {
        exited = uint8(bound(exited, 2, 255));
        (VMState memory s, Mem memory m) = withInsn(0);
        s.exited = exited;
        s.memRoot = m.root();
        vm.expectRevert(abi.encodeWithSelector(IMIPS.InvalidExitedFlag.selector, exited));
        mips.step(encode(s), bytes.concat(m.proof(PC), m.proof(0)), CTX);
    }
}
