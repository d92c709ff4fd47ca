// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IMIPS} from "./interfaces/IMIPS.sol";
import {IPreimageOracle, localizeKey} from "./interfaces/IPreimageOracle.sol";

/// @title MIPS
/// @notice The one-step verifier of the rollml MIPS32 VM: executes one instruction of a pre-state on-chain
///         and returns the post-state hash. It implements docs/vm-spec.md (the normative spec) and mirrors the
///         Python reference stepper `mipsvm/step.py` function by function: the same functions, in camelCase,
///         in the same order and with the same decomposition, so the two can be read side by side.
///         `step(bytes, bytes, bytes32)` and the "ProofMemory" section mirror `mipsvm/witness.py`.
/// @dev Conventions, as in step.py: every register value is a uint256 in [0, 2^32), every arithmetic result is
///      masked explicitly (the code is `unchecked`: uint256 wrap-around followed by a mask gives the same
///      value as Python's unbounded integers followed by the same mask). A guest error is a *fault* (spec
///      section 7): a defined transition that changes only `exited`, `exitCode` and `step`, so every fault
///      check comes before the first change of the state. Where step.py returns `-fault` from a helper, the
///      helper here returns `(value, faultCode)` with `faultCode = 0` for "no fault". Where step.py returns an
///      `Access`, the function here returns its `data_addr` (the address of the second proven leaf).
///      Only a malformed witness reverts (spec section 1).
contract MIPS is IMIPS {
    // ----------------------------------------------------------------------------------------------------
    // Constants (mipsvm/constants.py)
    // ----------------------------------------------------------------------------------------------------
    uint256 internal constant HEAP_END = 0x60000000;
    uint256 internal constant BRK_FIXED = 0x60000000;
    uint256 internal constant PAGE_SIZE = 4096;
    uint256 internal constant STATE_SIZE = 226;
    uint256 internal constant MEM_TREE_DEPTH = 27; // levels above the leaves (proofRoot unrolls them)
    uint256 internal constant MEM_PROOF_SIZE = 896; // (MEM_TREE_DEPTH + 1) * 32, a literal: no runtime math
    uint256 internal constant PROOF_SIZE = 1792; // instruction proof ++ data proof

    // Status (top byte of a state hash, spec section 2).
    uint256 internal constant STATUS_VALID = 0;
    uint256 internal constant STATUS_INVALID = 1;
    uint256 internal constant STATUS_PANIC = 2;
    uint256 internal constant STATUS_UNFINISHED = 3;

    // Faults (exit codes, spec section 7).
    uint256 internal constant INVALID_INSTRUCTION = 0x80;
    uint256 internal constant UNALIGNED_ACCESS = 0x81;
    uint256 internal constant UNALIGNED_FETCH = 0x82;
    uint256 internal constant BRANCH_IN_DELAY_SLOT = 0x83;
    uint256 internal constant TRAP = 0x84;
    uint256 internal constant UNKNOWN_SYSCALL = 0x85;
    uint256 internal constant OVERFLOW = 0x86;

    // Syscalls (Linux O32 numbers), errno values and file descriptors (spec section 6).
    uint256 internal constant SYS_EXIT = 4001;
    uint256 internal constant SYS_READ = 4003;
    uint256 internal constant SYS_WRITE = 4004;
    uint256 internal constant SYS_BRK = 4045;
    uint256 internal constant SYS_MMAP = 4090;
    uint256 internal constant SYS_EXIT_GROUP = 4246;
    uint256 internal constant EBADF = 9;
    uint256 internal constant ENOMEM = 12;
    uint256 internal constant EINVAL = 22;
    uint256 internal constant FD_STDIN = 0;
    uint256 internal constant FD_STDOUT = 1;
    uint256 internal constant FD_STDERR = 2;
    uint256 internal constant FD_OUTPUT = 3;
    uint256 internal constant FD_PREIMAGE_READ = 5;
    uint256 internal constant FD_PREIMAGE_KEY = 6;
    uint256 internal constant KEY_TYPE_LOCAL = 1;

    uint256 internal constant MASK = 0xFFFFFFFF;
    uint256 internal constant SIGN = 0x80000000;
    uint256 internal constant U64 = 0xFFFFFFFFFFFFFFFF;

    /// @dev step.py's `NO_ACCESS`: a step that touches no data leaf reports address 0.
    uint256 internal constant NO_ACCESS = 0;

    /// @notice The oracle that serves preimage stream parts to read steps.
    IPreimageOracle public immutable oracle;

    /// @notice The VM state (spec section 2), decoded. Every field is a uint256 holding a value of the
    ///         field's width (32 bits unless noted).
    struct State {
        bytes32 memRoot;
        bytes32 preimageKey;
        uint256 preimageOffset;
        uint256 pc;
        uint256 nextPC;
        uint256 lo;
        uint256 hi;
        uint256 heap;
        uint256 exitCode; // 8 bits
        bool exited;
        uint256 step; // 64 bits
        bytes regs; // r0..r31 as encoded: 4 bytes big-endian each (see `reg`, `setReg`)
    }

    /// @notice witness.py's `ProofMemory`: the (at most) two leaves a step may touch, each checked against
    ///         `memRoot`. The data proof is bound lazily to the leaf of the first access outside the
    ///         instruction's leaf, and finally to the address the step reports.
    struct ProofMemory {
        bytes32 memRoot;
        uint256 insnIndex; // leaf index of pc
        bytes32 insnLeaf;
        uint256 dataProof; // calldata offset of the data proof
        bool dataBound; // step.py: `data_index is not None`
        uint256 dataIndex;
        bytes32 dataLeaf;
        bool written;
    }

    constructor(IPreimageOracle oracle_) {
        oracle = oracle_;
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 10: the one-step proof (witness.py: verify_step)
    // ----------------------------------------------------------------------------------------------------

    /// @inheritdoc IMIPS
    function step(bytes calldata stateData, bytes calldata proof, bytes32 localContext)
        external
        view
        returns (bytes32 postStateHash)
    {
        State memory state = decodeState(stateData);
        if (proof.length != PROOF_SIZE) revert InvalidProofLength(proof.length);
        uint256 proofOffset;
        assembly ("memory-safe") {
            proofOffset := proof.offset
        }
        ProofMemory memory mem = newProofMemory(state.memRoot, state.pc, proofOffset);
        uint256 dataAddr = step(state, mem, localContext);
        bindData(mem, dataAddr); // checks the data proof also when the step did not use it
        state.memRoot = newRoot(mem);
        return hashState(state);
    }

    /// @inheritdoc IMIPS
    function stateHash(bytes calldata stateData) external pure returns (bytes32) {
        return hashState(decodeState(stateData));
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 4: one step (step.py: step)
    // ----------------------------------------------------------------------------------------------------

    /// @notice Executes one instruction of `state` in place (all fields but `memRoot`; the caller recomputes
    ///         the root). Returns the address of the data leaf the step touched (0 if none).
    function step(State memory state, ProofMemory memory mem, bytes32 localContext) internal view returns (uint256) {
        unchecked {
            if (state.exited) return NO_ACCESS; // exited states are fixed points (section 2)
            state.step = (state.step + 1) & U64; // counted on every step, faults included
            uint256 pc = state.pc;
            if (pc & 3 != 0) return fault(state, UNALIGNED_FETCH);
            uint256 insn = readU32(mem, pc);
            uint256 op = insn >> 26;
            bytes memory regs = state.regs;

            if (op == 0) {
                // SPECIAL
                uint256 fn = insn & 0x3F;
                uint256 rs = reg(regs, (insn >> 21) & 31);
                uint256 rt = reg(regs, (insn >> 16) & 31);
                if (fn < 0x08 || (0x20 <= fn && fn < 0x30)) {
                    // shifts, arithmetic
                    (uint256 value, uint256 code) = execute(insn, rs, rt);
                    if (code != 0) return fault(state, code);
                    return handleRd(state, (insn >> 11) & 31, value);
                }
                if (fn <= 0x09) {
                    // jr, jalr: rt=0, sa=0 (and rd=0 for jr)
                    if (insn & (fn == 0x09 ? 0x001F07C0 : 0x001FFFC0) != 0) return fault(state, INVALID_INSTRUCTION);
                    return handleJump(state, rs, (insn >> 11) & 31); // the target is read before the link write
                }
                if (fn <= 0x0B) {
                    // movz, movn
                    if (insn & 0x7C0 != 0) return fault(state, INVALID_INSTRUCTION);
                    if ((rt == 0) == (fn == 0x0A)) return handleRd(state, (insn >> 11) & 31, rs);
                    return handleRd(state, 0, 0);
                }
                if (fn == 0x0C) return handleSyscall(state, mem, localContext);
                if (fn == 0x0D) return fault(state, TRAP); // break
                if (fn == 0x0F) {
                    // sync
                    if (insn & 0x03FFF800 != 0) return fault(state, INVALID_INSTRUCTION);
                    return handleRd(state, 0, 0);
                }
                if (0x10 <= fn && fn <= 0x1B) return handleHilo(state, insn, rs, rt);
                if (fn >= 0x30) return handleTrap(state, fn, rs, rt);
                return fault(state, INVALID_INSTRUCTION);
            }

            if (op >= 0x20) return loadStore(state, mem, insn, op);

            if (op >= 0x08) {
                if (op < 0x10) {
                    // ALU with an immediate: andi/ori/xori zero-extend it, the others sign-extend it
                    uint256 imm = insn & 0xFFFF;
                    if (op < 0x0C && imm & 0x8000 != 0) imm |= 0xFFFF0000;
                    (uint256 value, uint256 code) = execute(insn, reg(regs, (insn >> 21) & 31), imm);
                    if (code != 0) return fault(state, code);
                    return handleRd(state, (insn >> 16) & 31, value);
                }
                if (op == 0x1C) {
                    // SPECIAL2
                    uint256 fn = insn & 0x3F;
                    uint256 rs = reg(regs, (insn >> 21) & 31);
                    uint256 rt = reg(regs, (insn >> 16) & 31);
                    if (fn == 0x00 || fn == 0x01 || fn == 0x04 || fn == 0x05) {
                        return handleHilo(state, insn, rs, rt); // madd, maddu, msub, msubu
                    }
                    (uint256 value, uint256 code) = execute(insn, rs, rt);
                    if (code != 0) return fault(state, code);
                    return handleRd(state, (insn >> 11) & 31, value);
                }
                return fault(state, INVALID_INSTRUCTION); // COP0/1/2, COP1X, branch-likely, ...
            }

            if (op >= 0x04 || op == 0x01) return handleBranch(state, insn);

            if (op >= 0x02) {
                // j, jal: region bits from the delay slot's address
                uint256 target = (state.nextPC & 0xF0000000) | ((insn & 0x03FFFFFF) << 2);
                return handleJump(state, target, op == 0x03 ? 31 : 0);
            }

            return fault(state, INVALID_INSTRUCTION); // unreachable: op is 0..3 here and 0, 1 are handled
        }
    }

    /// @notice Section 7: the terminal panic state. `step` already counted this step; nothing else changes.
    function fault(State memory state, uint256 code) internal pure returns (uint256) {
        state.exited = true;
        state.exitCode = code;
        return NO_ACCESS;
    }

    /// @notice Writes `value` to register `rd` (dropped for r0) and moves on to the next instruction.
    function handleRd(State memory state, uint256 rd, uint256 value) internal pure returns (uint256) {
        unchecked {
            if (rd != 0) setReg(state.regs, rd, value);
            uint256 nextPC = state.nextPC;
            state.pc = nextPC;
            state.nextPC = (nextPC + 4) & MASK;
            return NO_ACCESS;
        }
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 5: the ALU
    // ----------------------------------------------------------------------------------------------------

    /// @notice The value an ALU instruction writes to its destination register, or a fault code.
    /// @dev `rs` is R[rs]; `rt` is R[rt] for SPECIAL/SPECIAL2 and the extended immediate for the immediate
    ///      opcodes. Covers SPECIAL shifts (0x00-0x07) and arithmetic (0x20-0x2B), the immediate opcodes
    ///      0x08-0x0F and SPECIAL2 mul/clz/clo. Checks the reserved fields of exactly these instructions.
    function execute(uint256 insn, uint256 rs, uint256 rt) internal pure returns (uint256 value, uint256 faultCode) {
        unchecked {
            uint256 op = insn >> 26;
            if (op == 0) {
                uint256 fn = insn & 0x3F;
                if (fn >= 0x20) {
                    if (insn & 0x7C0 != 0) return (0, INVALID_INSTRUCTION); // sa=0
                    if (fn == 0x21) return ((rs + rt) & MASK, 0); // addu
                    if (fn == 0x23) return ((rs - rt) & MASK, 0); // subu
                    if (fn == 0x24) return (rs & rt, 0); // and
                    if (fn == 0x25) return (rs | rt, 0); // or
                    if (fn == 0x26) return (rs ^ rt, 0); // xor
                    if (fn == 0x27) return ((rs | rt) ^ MASK, 0); // nor
                    if (fn == 0x2A) return ((rs ^ SIGN) < (rt ^ SIGN) ? 1 : 0, 0); // slt
                    if (fn == 0x2B) return (rs < rt ? 1 : 0, 0); // sltu
                    if (fn == 0x20) return addChecked(rs, rt); // add
                    if (fn == 0x22) return subChecked(rs, rt); // sub
                    return (0, INVALID_INSTRUCTION);
                }
                // fn < 0x08: shifts
                uint256 sa;
                if (fn & 4 != 0) {
                    // sllv, srlv, srav: sa=0; the amount is R[rs] & 31
                    if (insn & 0x7C0 != 0) return (0, INVALID_INSTRUCTION);
                    sa = rs & 31;
                } else {
                    // sll, srl, sra: rs=0
                    if (insn & 0x03E00000 != 0) return (0, INVALID_INSTRUCTION);
                    sa = (insn >> 6) & 31;
                }
                uint256 kind = fn & 3;
                if (kind == 0) return ((rt << sa) & MASK, 0);
                if (kind == 2) return (rt >> sa, 0);
                if (kind == 3) return (sra(rt, sa), 0);
                return (0, INVALID_INSTRUCTION); // funct 0x01, 0x05 (MOVCI and a hole)
            }

            if (op == 0x1C) {
                // SPECIAL2: mul, clz, clo (madd/msub are handleHilo's)
                uint256 fn = insn & 0x3F;
                if (insn & 0x7C0 != 0) return (0, INVALID_INSTRUCTION); // sa=0
                if (fn == 0x02) return ((rs * rt) & MASK, 0); // mul
                if (fn == 0x20 || fn == 0x21) {
                    // clz, clo: rt must equal rd
                    if (((insn >> 16) ^ (insn >> 11)) & 31 != 0) return (0, INVALID_INSTRUCTION);
                    return (32 - bitLength(fn == 0x20 ? rs : rs ^ MASK), 0);
                }
                return (0, INVALID_INSTRUCTION);
            }

            // immediates (op 0x08..0x0F), `rt` is the extended immediate
            if (op == 0x09) return ((rs + rt) & MASK, 0); // addiu
            if (op == 0x0D) return (rs | rt, 0); // ori
            if (op == 0x0C) return (rs & rt, 0); // andi
            if (op == 0x0F) {
                // lui: rs=0
                if (insn & 0x03E00000 != 0) return (0, INVALID_INSTRUCTION);
                return ((rt << 16) & MASK, 0);
            }
            if (op == 0x0A) return ((rs ^ SIGN) < (rt ^ SIGN) ? 1 : 0, 0); // slti
            if (op == 0x0B) return (rs < rt ? 1 : 0, 0); // sltiu
            if (op == 0x0E) return (rs ^ rt, 0); // xori
            if (op == 0x08) return addChecked(rs, rt); // addi
            return (0, INVALID_INSTRUCTION);
        }
    }

    /// @notice a + b, or OVERFLOW when the signed sum does not fit 32 bits.
    function addChecked(uint256 a, uint256 b) internal pure returns (uint256, uint256) {
        unchecked {
            uint256 s = (a + b) & MASK;
            if ((a ^ s) & (b ^ s) & SIGN != 0) return (0, OVERFLOW);
            return (s, 0);
        }
    }

    /// @notice a - b, or OVERFLOW when the signed difference does not fit 32 bits.
    function subChecked(uint256 a, uint256 b) internal pure returns (uint256, uint256) {
        unchecked {
            uint256 d = (a - b) & MASK;
            if ((a ^ b) & (a ^ d) & SIGN != 0) return (0, OVERFLOW);
            return (d, 0);
        }
    }

    /// @notice Arithmetic shift right of the 32-bit `v` by `sa` in 0..31.
    function sra(uint256 v, uint256 sa) internal pure returns (uint256) {
        if (v & SIGN != 0) return ((v >> sa) | (MASK << (32 - sa))) & MASK;
        return v >> sa;
    }

    /// @notice The 32-bit `v` as a signed integer.
    function signed(uint256 v) internal pure returns (int256) {
        return int256(int32(uint32(v)));
    }

    /// @notice The number of significant bits of `v` < 2^32 (Python's `int.bit_length`), for clz/clo.
    function bitLength(uint256 v) internal pure returns (uint256 n) {
        unchecked {
            if (v >> 16 != 0) (v, n) = (v >> 16, n + 16);
            if (v >> 8 != 0) (v, n) = (v >> 8, n + 8);
            if (v >> 4 != 0) (v, n) = (v >> 4, n + 4);
            if (v >> 2 != 0) (v, n) = (v >> 2, n + 2);
            if (v >> 1 != 0) (v, n) = (v >> 1, n + 1);
            return n + v; // v is 0 or 1 here
        }
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 4/5: branches and jumps
    // ----------------------------------------------------------------------------------------------------

    /// @notice beq, bne, blez, bgtz (op 4..7) and REGIMM (op 1): branches, branch-and-link and immediate traps.
    function handleBranch(State memory state, uint256 insn) internal pure returns (uint256) {
        unchecked {
            bytes memory regs = state.regs;
            uint256 op = insn >> 26;
            uint256 rs = reg(regs, (insn >> 21) & 31);
            uint256 rtField = (insn >> 16) & 31;
            bool link = false;
            bool taken;
            if (op == 0x04) {
                taken = rs == reg(regs, rtField); // beq
            } else if (op == 0x05) {
                taken = rs != reg(regs, rtField); // bne
            } else if (op == 0x06) {
                // blez: rt=0
                if (rtField != 0) return fault(state, INVALID_INSTRUCTION);
                taken = rs == 0 || rs & SIGN != 0;
            } else if (op == 0x07) {
                // bgtz: rt=0
                if (rtField != 0) return fault(state, INVALID_INSTRUCTION);
                taken = rs != 0 && rs & SIGN == 0;
            } else {
                // REGIMM, by rt
                if (rtField & 0x18 == 0x08) return handleTrapImm(state, insn, rs); // 0x08..0x0F: tgei .. tnei
                // everything but 0x00, 0x01, 0x10, 0x11 (bltzl, bgezl, synci, ...)
                if (rtField & 0x0E != 0) return fault(state, INVALID_INSTRUCTION);
                // 0x00 bltz, 0x01 bgez, 0x10 bltzal, 0x11 bgezal
                taken = (rs & SIGN == 0) == (rtField & 1 == 1);
                link = rtField >= 0x10;
            }

            uint256 pc = state.pc;
            uint256 nextPC = state.nextPC;
            if (nextPC != (pc + 4) & MASK) return fault(state, BRANCH_IN_DELAY_SLOT);
            if (link) setReg(regs, 31, (pc + 8) & MASK); // bltzal/bgezal link always, after reading the condition
            state.pc = nextPC;
            if (taken) {
                uint256 imm = insn & 0xFFFF;
                uint256 offset = (imm & 0x8000 != 0 ? imm | 0xFFFF0000 : imm) << 2;
                state.nextPC = (nextPC + offset) & MASK;
            } else {
                state.nextPC = (nextPC + 4) & MASK;
            }
            return NO_ACCESS;
        }
    }

    /// @notice j/jal/jr/jalr: delay-slot check, link `pc + 8` into `linkReg` (none if 0), then jump to
    ///         `target`.
    function handleJump(State memory state, uint256 target, uint256 linkReg) internal pure returns (uint256) {
        unchecked {
            uint256 pc = state.pc;
            uint256 nextPC = state.nextPC;
            if (nextPC != (pc + 4) & MASK) return fault(state, BRANCH_IN_DELAY_SLOT);
            if (linkReg != 0) setReg(state.regs, linkReg, (pc + 8) & MASK);
            state.pc = nextPC;
            state.nextPC = target;
            return NO_ACCESS;
        }
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 5: HI/LO and traps
    // ----------------------------------------------------------------------------------------------------

    /// @notice SPECIAL 0x10..0x1B (mfhi, mthi, mflo, mtlo, mult, multu, div, divu), SPECIAL2
    ///         madd/maddu/msub/msubu.
    function handleHilo(State memory state, uint256 insn, uint256 rs, uint256 rt) internal pure returns (uint256) {
        unchecked {
            uint256 fn = insn & 0x3F;
            uint256 rd = (insn >> 11) & 31;
            if (insn >> 26 == 0x1C) {
                // madd, maddu, msub, msubu: rd=0, sa=0
                if (insn & 0xFFC0 != 0) return fault(state, INVALID_INSTRUCTION);
                // the product as a 256-bit two's complement value: wrapping sums, masked to 64 bits, are exact
                uint256 product = fn & 1 == 0 ? uint256(signed(rs) * signed(rt)) : rs * rt;
                uint256 acc = (state.hi << 32) | state.lo;
                acc = (fn < 0x04 ? acc + product : acc - product) & U64;
                state.hi = acc >> 32;
                state.lo = acc & MASK;
                return handleRd(state, 0, 0);
            }
            if (fn == 0x10 || fn == 0x12) {
                // mfhi, mflo: rs=rt=0, sa=0
                if (insn & 0x03FF07C0 != 0) return fault(state, INVALID_INSTRUCTION);
                return handleRd(state, rd, fn == 0x10 ? state.hi : state.lo);
            }
            if (fn == 0x11 || fn == 0x13) {
                // mthi, mtlo: rt=rd=0, sa=0; no general register is written
                if (insn & 0x001FFFC0 != 0) return fault(state, INVALID_INSTRUCTION);
                if (fn == 0x11) state.hi = rs;
                else state.lo = rs;
                return handleRd(state, 0, 0);
            }
            // 0x14..0x17 are MIPS64; mult..divu need rd=0, sa=0
            if (fn < 0x18 || insn & 0xFFC0 != 0) return fault(state, INVALID_INSTRUCTION);
            if (fn == 0x18) {
                // mult
                uint256 product = uint256(signed(rs) * signed(rt)) & U64;
                state.hi = product >> 32;
                state.lo = product & MASK;
            } else if (fn == 0x19) {
                // multu
                uint256 product = rs * rt;
                state.hi = product >> 32;
                state.lo = product & MASK;
            } else if (fn == 0x1A) {
                // div
                (state.lo, state.hi) = divSigned(rs, rt);
            } else {
                // divu
                (state.lo, state.hi) = rt != 0 ? (rs / rt, rs % rt) : (rs, 0);
            }
            return handleRd(state, 0, 0);
        }
    }

    /// @notice (lo, hi) of `div`, including the defined edge cases of section 5.
    function divSigned(uint256 rs, uint256 rt) internal pure returns (uint256, uint256) {
        unchecked {
            if (rt == 0) return (rs, 0);
            if (rs == SIGN && rt == MASK) return (SIGN, 0);
            int256 a = signed(rs);
            int256 b = signed(rt);
            int256 q = a / b; // truncated toward zero, as step.py's abs(a) // abs(b) with the sign applied
            return (uint256(q) & MASK, uint256(a - q * b) & MASK);
        }
    }

    /// @notice SPECIAL 0x30..0x36: tge, tgeu, tlt, tltu, teq, tne (the code field is ignored).
    function handleTrap(State memory state, uint256 fn, uint256 rs, uint256 rt) internal pure returns (uint256) {
        bool taken;
        if (fn == 0x30) taken = (rs ^ SIGN) >= (rt ^ SIGN);
        else if (fn == 0x31) taken = rs >= rt;
        else if (fn == 0x32) taken = (rs ^ SIGN) < (rt ^ SIGN);
        else if (fn == 0x33) taken = rs < rt;
        else if (fn == 0x34) taken = rs == rt;
        else if (fn == 0x36) taken = rs != rt;
        else return fault(state, INVALID_INSTRUCTION);
        if (taken) return fault(state, TRAP);
        return handleRd(state, 0, 0);
    }

    /// @notice REGIMM 0x08..0x0E: tgei, tgeiu, tlti, tltiu, teqi, tnei against the sign-extended immediate.
    function handleTrapImm(State memory state, uint256 insn, uint256 rs) internal pure returns (uint256) {
        uint256 imm = insn & 0xFFFF;
        if (imm & 0x8000 != 0) imm |= 0xFFFF0000;
        uint256 fn = 0x30 + ((insn >> 16) & 7); // the same conditions as the register traps, in the same order
        if (fn == 0x35 || fn == 0x37) return fault(state, INVALID_INSTRUCTION);
        return handleTrap(state, fn, rs, imm);
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 5: loads and stores
    // ----------------------------------------------------------------------------------------------------

    /// @notice Opcodes 0x20..0x3F. Every access is the one aligned word containing the address.
    function loadStore(State memory state, ProofMemory memory mem, uint256 insn, uint256 op)
        internal
        pure
        returns (uint256)
    {
        unchecked {
            bytes memory regs = state.regs;
            uint256 rtReg = (insn >> 16) & 31;
            uint256 imm = insn & 0xFFFF;
            if (imm & 0x8000 != 0) imm |= 0xFFFF0000;
            uint256 a = (reg(regs, (insn >> 21) & 31) + imm) & MASK;
            uint256 wAddr = a & 0xFFFFFFFC;

            if (op == 0x23 || op == 0x30) {
                // lw, ll
                if (a & 3 != 0) return fault(state, UNALIGNED_ACCESS);
                handleRd(state, rtReg, readU32(mem, a));
                return a;
            }
            if (op == 0x2B || op == 0x38) {
                // sw, sc
                if (a & 3 != 0) return fault(state, UNALIGNED_ACCESS);
                writeU32(mem, a, reg(regs, rtReg));
                handleRd(state, op == 0x38 ? rtReg : 0, 1); // sc always succeeds
                return a;
            }
            if (op < 0x28) {
                // loads
                uint256 value;
                if (op == 0x20 || op == 0x24) {
                    // lb, lbu
                    value = load8(readU32(mem, wAddr), a);
                    if (op == 0x20 && value & 0x80 != 0) value |= 0xFFFFFF00;
                } else if (op == 0x21 || op == 0x25) {
                    // lh, lhu
                    if (a & 1 != 0) return fault(state, UNALIGNED_ACCESS);
                    value = load16(readU32(mem, wAddr), a);
                    if (op == 0x21 && value & 0x8000 != 0) value |= 0xFFFF0000;
                } else if (op == 0x22) {
                    value = mergeLwl(readU32(mem, wAddr), a & 3, reg(regs, rtReg)); // lwl
                } else if (op == 0x26) {
                    value = mergeLwr(readU32(mem, wAddr), a & 3, reg(regs, rtReg)); // lwr
                } else {
                    return fault(state, INVALID_INSTRUCTION);
                }
                handleRd(state, rtReg, value);
                return op != 0x22 && op != 0x26 ? a : wAddr;
            }
            // stores
            uint256 rt = reg(regs, rtReg);
            if (op == 0x28) {
                writeU32(mem, wAddr, store8(readU32(mem, wAddr), a, rt)); // sb
            } else if (op == 0x29) {
                // sh
                if (a & 1 != 0) return fault(state, UNALIGNED_ACCESS);
                writeU32(mem, wAddr, store16(readU32(mem, wAddr), a, rt));
            } else if (op == 0x2A) {
                writeU32(mem, wAddr, mergeSwl(readU32(mem, wAddr), a & 3, rt)); // swl
            } else if (op == 0x2E) {
                writeU32(mem, wAddr, mergeSwr(readU32(mem, wAddr), a & 3, rt)); // swr
            } else {
                return fault(state, INVALID_INSTRUCTION); // 0x2C/0x2D (sdl/sdr), cache, lwc1, sdc1, ...
            }
            handleRd(state, 0, 0);
            return op != 0x2A && op != 0x2E ? a : wAddr;
        }
    }

    /// @notice The byte at address `a` of the aligned big-endian word `w` that holds it.
    function load8(uint256 w, uint256 a) internal pure returns (uint256) {
        return (w >> (24 - ((a & 3) << 3))) & 0xFF;
    }

    /// @notice The half-word at the 2-aligned address `a` of the word `w` that holds it.
    function load16(uint256 w, uint256 a) internal pure returns (uint256) {
        return (w >> (16 - ((a & 2) << 3))) & 0xFFFF;
    }

    /// @notice `w` with the byte at address `a` replaced by `v & 0xFF`.
    function store8(uint256 w, uint256 a, uint256 v) internal pure returns (uint256) {
        uint256 shift = 24 - ((a & 3) << 3);
        return (w & ~(0xFF << shift) & MASK) | ((v & 0xFF) << shift);
    }

    /// @notice `w` with the half-word at the 2-aligned address `a` replaced by `v & 0xFFFF`.
    function store16(uint256 w, uint256 a, uint256 v) internal pure returns (uint256) {
        uint256 shift = 16 - ((a & 2) << 3);
        return (w & ~(0xFFFF << shift) & MASK) | ((v & 0xFFFF) << shift);
    }

    /// @notice lwl: `(w << 8k) | (R[rt] & ((1 << 8k) - 1))`.
    function mergeLwl(uint256 w, uint256 k, uint256 rt) internal pure returns (uint256) {
        return ((w << (k << 3)) & MASK) | (rt & ((1 << (k << 3)) - 1));
    }

    /// @notice lwr: `(w >> 8(3-k)) | (R[rt] & ~(0xFFFFFFFF >> 8(3-k)))`.
    function mergeLwr(uint256 w, uint256 k, uint256 rt) internal pure returns (uint256) {
        uint256 s = (3 - k) << 3;
        return (w >> s) | (rt & ~(MASK >> s) & MASK);
    }

    /// @notice swl: the new word `(R[rt] >> 8k) | (w & ~(0xFFFFFFFF >> 8k))`.
    function mergeSwl(uint256 w, uint256 k, uint256 rt) internal pure returns (uint256) {
        uint256 s = k << 3;
        return (rt >> s) | (w & ~(MASK >> s) & MASK);
    }

    /// @notice swr: the new word `(R[rt] << 8(3-k)) | (w & ((1 << 8(3-k)) - 1))`.
    function mergeSwr(uint256 w, uint256 k, uint256 rt) internal pure returns (uint256) {
        uint256 s = (3 - k) << 3;
        return ((rt << s) & MASK) | (w & ((1 << s) - 1));
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 6: syscalls
    // ----------------------------------------------------------------------------------------------------

    /// @notice Number in v0, arguments in a0..a2; result in v0 and the error flag in a3.
    function handleSyscall(State memory state, ProofMemory memory mem, bytes32 localContext)
        internal
        view
        returns (uint256 access)
    {
        unchecked {
            bytes memory regs = state.regs;
            uint256 num = reg(regs, 2);
            (uint256 a0, uint256 a1, uint256 a2) = (reg(regs, 4), reg(regs, 5), reg(regs, 6));
            access = NO_ACCESS;
            uint256 v0;
            uint256 err = 0;
            if (num == SYS_EXIT || num == SYS_EXIT_GROUP) {
                state.exited = true;
                state.exitCode = a0 & 0xFF;
                return NO_ACCESS; // registers, pc untouched
            }
            if (num == SYS_MMAP) {
                (v0, err) = handleMmap(state, a0, a1);
            } else if (num == SYS_BRK) {
                v0 = BRK_FIXED;
            } else if (num == SYS_READ) {
                if (a0 == FD_PREIMAGE_READ) {
                    access = a1;
                    v0 = handlePreimageRead(state, mem, localContext, a1, a2);
                } else if (a0 == FD_STDIN) {
                    v0 = 0;
                } else {
                    (v0, err) = (EBADF, 1);
                }
            } else if (num == SYS_WRITE) {
                if (a0 == FD_STDOUT || a0 == FD_STDERR || a0 == FD_OUTPUT) {
                    v0 = a2; // the bytes are observed off-chain
                } else if (a0 == FD_PREIMAGE_KEY) {
                    access = a1;
                    (v0, err) = handlePreimageSelect(state, mem, a1, a2);
                } else {
                    (v0, err) = (EBADF, 1);
                }
            } else {
                return fault(state, UNKNOWN_SYSCALL);
            }
            setReg(regs, 2, v0);
            setReg(regs, 7, err);
            uint256 nextPC = state.nextPC;
            state.pc = nextPC;
            state.nextPC = (nextPC + 4) & MASK;
            return access;
        }
    }

    /// @notice (v0, a3) of mmap(addr, len): anonymous memory from the bump allocator `heap`, never past
    ///         HEAP_END.
    function handleMmap(State memory state, uint256 addr, uint256 length) internal pure returns (uint256, uint256) {
        if (addr != 0 || length == 0) return (EINVAL, 1);
        length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1); // 256-bit arithmetic: no wrap-around
        if (state.heap + length > HEAP_END) return (ENOMEM, 1);
        uint256 v0 = state.heap;
        state.heap = v0 + length;
        return (v0, 0);
    }

    /// @notice (v0, a3) of write(6, buf, n): selects the 32-byte key in the leaf at the 32-aligned `buf`.
    function handlePreimageSelect(State memory state, ProofMemory memory mem, uint256 buf, uint256 n)
        internal
        pure
        returns (uint256, uint256)
    {
        if (buf & 31 != 0 || n != 32) return (EINVAL, 1);
        uint256 key;
        for (uint256 i = 0; i < 32; i += 4) {
            key = (key << 32) | readU32(mem, buf + i);
        }
        state.preimageKey = bytes32(key);
        state.preimageOffset = 0;
        return (32, 0);
    }

    /// @notice v0 of read(5, buf, n): copies up to the end of `buf`'s leaf from the selected key's stream.
    function handlePreimageRead(
        State memory state,
        ProofMemory memory mem,
        bytes32 localContext,
        uint256 buf,
        uint256 n
    ) internal view returns (uint256) {
        unchecked {
            (bytes32 part, uint256 length) = streamPart(state.preimageKey, state.preimageOffset, localContext);
            uint256 offset = state.preimageOffset;
            uint256 available = length > offset ? length - offset : 0;
            uint256 count = min(n, min(32 - (buf & 31), available));
            if (count == 0) return 0;
            copyToLeaf(mem, buf, count, part);
            state.preimageOffset = (offset + count) & MASK;
            return count;
        }
    }

    /// @notice The part of handlePreimageRead that rewrites the aligned words of the leaf that
    ///         [buf, buf + count) covers (step.py does it inline; split out here for the stack).
    function copyToLeaf(ProofMemory memory mem, uint256 buf, uint256 count, bytes32 part) internal pure {
        unchecked {
            uint256 start = buf & 0xFFFFFFFC;
            // buf + count <= the end of buf's leaf <= 2^32: computed in 256 bits (no wrap-around at 2^32)
            uint256 end = (buf + count + 3) & ~uint256(3);
            // the part's first `count` bytes, placed at buf's offset in a 32-byte leaf, and their byte mask
            uint256 shift = (buf & 31) << 3;
            uint256 bytesInLeaf = uint256(part) >> shift;
            uint256 maskInLeaf = (type(uint256).max << (256 - (count << 3))) >> shift;
            for (uint256 wAddr = start; wAddr < end; wAddr += 4) {
                uint256 wordShift = 224 - ((wAddr & 31) << 3);
                uint256 wordMask = (maskInLeaf >> wordShift) & MASK;
                uint256 word = (readU32(mem, wAddr) & ~wordMask) | ((bytesInLeaf >> wordShift) & wordMask);
                writeU32(mem, wAddr, word & MASK);
            }
        }
    }

    /// @notice step.py's `Oracle.stream_part`: 32 bytes of the key's stream from `offset` (zero-padded) and
    ///         the stream's length, from the on-chain oracle. Local keys (type 1) are localized to the
    ///         caller's context; the oracle reverts (`PreimageNotLoaded`) when it does not hold the part.
    function streamPart(bytes32 key, uint256 offset, bytes32 localContext)
        internal
        view
        returns (bytes32 part, uint256 length)
    {
        if (uint256(key) >> 248 == KEY_TYPE_LOCAL) key = localizeKey(key, localContext, msg.sender);
        return oracle.readPreimage(key, offset);
    }

    function min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }

    // ----------------------------------------------------------------------------------------------------
    // ProofMemory (witness.py): the two proven leaves (spec section 3)
    // ----------------------------------------------------------------------------------------------------

    /// @notice A ProofMemory whose instruction proof (the first 896 bytes at calldata offset `proof`) is
    ///         checked as the proof of the leaf holding `pc`.
    function newProofMemory(bytes32 memRoot, uint256 pc, uint256 proof) internal pure returns (ProofMemory memory mem) {
        mem.memRoot = memRoot;
        mem.insnIndex = pc >> 5;
        bytes32 insnLeaf = proofLeaf(proof);
        if (proofRoot(pc, proof, insnLeaf) != memRoot) revert InvalidMemoryProof(pc);
        mem.insnLeaf = insnLeaf;
        unchecked {
            mem.dataProof = proof + MEM_PROOF_SIZE; // a calldata offset: no overflow
        }
    }

    /// @notice Checks the data proof as the proof of the leaf holding `addr` (once; later calls must name the
    ///         same leaf).
    function bindData(ProofMemory memory mem, uint256 addr) internal pure {
        if (mem.dataBound) {
            if (addr >> 5 != mem.dataIndex) revert AccessOutsideProvenLeaves(addr);
            return;
        }
        bytes32 leaf = proofLeaf(mem.dataProof);
        if (proofRoot(addr, mem.dataProof, leaf) != mem.memRoot) revert InvalidMemoryProof(addr);
        mem.dataBound = true;
        mem.dataIndex = addr >> 5;
        mem.dataLeaf = leaf;
    }

    /// @notice The aligned word at `addr` from the data leaf, else the instruction leaf, else binds the data
    ///         proof to `addr`'s leaf.
    function readU32(ProofMemory memory mem, uint256 addr) internal pure returns (uint256) {
        uint256 index = addr >> 5;
        uint256 off = addr & 31;
        if (mem.dataBound && index == mem.dataIndex) return leafWord(mem.dataLeaf, off);
        if (index == mem.insnIndex) return leafWord(mem.insnLeaf, off); // same value as the data leaf's
        bindFor(mem, addr);
        return leafWord(mem.dataLeaf, off);
    }

    /// @notice Writes the aligned word at `addr` into the data leaf (binding the data proof to its leaf).
    function writeU32(ProofMemory memory mem, uint256 addr, uint256 value) internal pure {
        if (!mem.dataBound || addr >> 5 != mem.dataIndex) bindFor(mem, addr);
        uint256 shift = 224 - ((addr & 31) << 3);
        mem.dataLeaf = bytes32((uint256(mem.dataLeaf) & ~(MASK << shift)) | (value << shift));
        mem.written = true;
    }

    function bindFor(ProofMemory memory mem, uint256 addr) internal pure {
        if (mem.dataBound) revert AccessOutsideProvenLeaves(addr);
        bindData(mem, addr);
    }

    /// @notice The memory root after the step: the data proof's siblings with the (possibly written) leaf.
    function newRoot(ProofMemory memory mem) internal pure returns (bytes32) {
        if (!mem.written) return mem.memRoot;
        return proofRoot(mem.dataIndex << 5, mem.dataProof, mem.dataLeaf);
    }

    /// @notice The 4 bytes at offset `off` (4-aligned) of a leaf, as a big-endian word.
    function leafWord(bytes32 leaf, uint256 off) internal pure returns (uint256) {
        return (uint256(leaf) >> (224 - (off << 3))) & MASK;
    }

    /// @notice The leaf value of the 896-byte memory proof at calldata offset `proof`.
    function proofLeaf(uint256 proof) internal pure returns (bytes32 leaf) {
        assembly ("memory-safe") {
            leaf := calldataload(proof)
        }
    }

    /// @notice memory.py's `proof_root`: the root that the proof at calldata offset `proof`, with its leaf
    ///         replaced by `leaf`, proves for the leaf holding `addr` (spec section 3: at level i the sibling is
    ///         on the left when bit i of the leaf index is 1).
    function proofRoot(uint256 addr, uint256 proof, bytes32 leaf) internal pure returns (bytes32 node) {
        assembly ("memory-safe") {
            // One level of the tree: hash (node, sibling), or (sibling, node) when the node is a right child,
            // i.e. when bit i of the leaf index (bit 5 + i of the address) is 1; in the scratch space [0, 0x40).
            function level(n, a, siblingPtr, i) -> parent {
                let nodePos := and(shr(i, a), 0x20)
                mstore(nodePos, n)
                mstore(xor(nodePos, 0x20), calldataload(siblingPtr))
                parent := keccak256(0x00, 0x40)
            }
            // the 27 levels, unrolled (a loop costs half as much again in gas)
            node := level(leaf, addr, add(proof, 0x020), 0)
            node := level(node, addr, add(proof, 0x040), 1)
            node := level(node, addr, add(proof, 0x060), 2)
            node := level(node, addr, add(proof, 0x080), 3)
            node := level(node, addr, add(proof, 0x0a0), 4)
            node := level(node, addr, add(proof, 0x0c0), 5)
            node := level(node, addr, add(proof, 0x0e0), 6)
            node := level(node, addr, add(proof, 0x100), 7)
            node := level(node, addr, add(proof, 0x120), 8)
            node := level(node, addr, add(proof, 0x140), 9)
            node := level(node, addr, add(proof, 0x160), 10)
            node := level(node, addr, add(proof, 0x180), 11)
            node := level(node, addr, add(proof, 0x1a0), 12)
            node := level(node, addr, add(proof, 0x1c0), 13)
            node := level(node, addr, add(proof, 0x1e0), 14)
            node := level(node, addr, add(proof, 0x200), 15)
            node := level(node, addr, add(proof, 0x220), 16)
            node := level(node, addr, add(proof, 0x240), 17)
            node := level(node, addr, add(proof, 0x260), 18)
            node := level(node, addr, add(proof, 0x280), 19)
            node := level(node, addr, add(proof, 0x2a0), 20)
            node := level(node, addr, add(proof, 0x2c0), 21)
            node := level(node, addr, add(proof, 0x2e0), 22)
            node := level(node, addr, add(proof, 0x300), 23)
            node := level(node, addr, add(proof, 0x320), 24)
            node := level(node, addr, add(proof, 0x340), 25)
            node := level(node, addr, add(proof, 0x360), 26)
        }
    }

    // ----------------------------------------------------------------------------------------------------
    // Section 2: the state encoding and hash (state.py)
    // ----------------------------------------------------------------------------------------------------

    /// @notice state.py's `State.decode`: the 226-byte big-endian encoding, checked (length, `exited` 0 or 1,
    ///         r0 zero). The registers stay packed as encoded (`regs`, 128 bytes).
    function decodeState(bytes calldata stateData) internal pure returns (State memory state) {
        if (stateData.length != STATE_SIZE) revert InvalidStateLength(stateData.length);
        uint256 exited;
        assembly ("memory-safe") {
            let p := stateData.offset
            // the registers stay packed: a 128-byte `bytes` copied from the encoding
            let regs := mload(0x40)
            mstore(regs, 128)
            calldatacopy(add(regs, 0x20), add(p, 98), 128)
            mstore(0x40, add(regs, 0xa0))
            mstore(add(state, 0x160), regs)
            mstore(state, calldataload(p)) // memRoot
            mstore(add(state, 0x20), calldataload(add(p, 32))) // preimageKey
            mstore(add(state, 0x40), shr(224, calldataload(add(p, 64)))) // preimageOffset
            mstore(add(state, 0x60), shr(224, calldataload(add(p, 68)))) // pc
            mstore(add(state, 0x80), shr(224, calldataload(add(p, 72)))) // nextPC
            mstore(add(state, 0xa0), shr(224, calldataload(add(p, 76)))) // lo
            mstore(add(state, 0xc0), shr(224, calldataload(add(p, 80)))) // hi
            mstore(add(state, 0xe0), shr(224, calldataload(add(p, 84)))) // heap
            mstore(add(state, 0x100), shr(248, calldataload(add(p, 88)))) // exitCode
            exited := shr(248, calldataload(add(p, 89)))
            mstore(add(state, 0x140), shr(192, calldataload(add(p, 90)))) // step
        }
        if (exited > 1) revert InvalidExitedFlag(exited);
        uint256 r0 = reg(state.regs, 0);
        if (r0 != 0) revert NonZeroR0(r0);
        state.exited = exited == 1;
    }

    /// @notice state.py's `State.hash`: keccak256 of the 226-byte encoding with its top byte replaced by the
    ///         status.
    function hashState(State memory state) internal pure returns (bytes32 h) {
        bytes memory regs = state.regs;
        bool exited = state.exited;
        assembly ("memory-safe") {
            // Encode at the free memory pointer without allocating: each mstore writes 32 bytes, the fields
            // are written in increasing order, so every store overwrites the previous one's spill.
            let p := mload(0x40)
            mstore(p, mload(state)) // memRoot
            mstore(add(p, 32), mload(add(state, 0x20))) // preimageKey
            mstore(add(p, 64), shl(224, mload(add(state, 0x40)))) // preimageOffset
            mstore(add(p, 68), shl(224, mload(add(state, 0x60)))) // pc
            mstore(add(p, 72), shl(224, mload(add(state, 0x80)))) // nextPC
            mstore(add(p, 76), shl(224, mload(add(state, 0xa0)))) // lo
            mstore(add(p, 80), shl(224, mload(add(state, 0xc0)))) // hi
            mstore(add(p, 84), shl(224, mload(add(state, 0xe0)))) // heap
            mstore(add(p, 88), shl(248, mload(add(state, 0x100)))) // exitCode
            mstore(add(p, 89), shl(248, exited))
            mstore(add(p, 90), shl(192, mload(add(state, 0x140)))) // step
            mcopy(add(p, 98), add(regs, 0x20), 128) // registers
            h := keccak256(p, 226)
        }
        uint256 status = !exited
            ? STATUS_UNFINISHED
            : state.exitCode == 0 ? STATUS_VALID : state.exitCode == 1 ? STATUS_INVALID : STATUS_PANIC;
        h = bytes32((uint256(h) & ~(uint256(0xFF) << 248)) | (status << 248));
    }

    /// @notice Register `i` (state.py's `regs[i]`) of the packed register file.
    function reg(bytes memory regs, uint256 i) internal pure returns (uint256 value) {
        assembly ("memory-safe") {
            value := shr(224, mload(add(add(regs, 0x20), shl(2, i))))
        }
    }

    /// @notice Sets register `i` of the packed register file to the 32-bit `value` (the other 28 bytes of the
    ///         32-byte word written are stored back unchanged).
    function setReg(bytes memory regs, uint256 i, uint256 value) internal pure {
        assembly ("memory-safe") {
            let p := add(add(regs, 0x20), shl(2, i))
            mstore(p, or(shl(224, value), shr(32, shl(32, mload(p)))))
        }
    }
}
