/*
 * vmabi.h - the ABI of the rollml VM as a guest program sees it (docs/vm-spec.md): syscall numbers, errno
 * values and file descriptors (section 6), the memory layout (sections 3, 6, 8), the preimage oracle's keys
 * and the blob structure (section 6).
 *
 * The C definition of these constants, included by the guest (mlkit/csrc/guest.c) and by the native hooks
 * of the fast executor (csrc/uchooks.c). The Python definition is mipsvm/constants.py, under the same names
 * without the VM_ prefix; tests/mipsvm/test_vmabi.py checks every value here against it. (The Solidity
 * verifier, contracts/src/MIPS.sol, declares its own, checked by the differential tests against
 * mipsvm/step.py.)
 *
 * Every value is a plain decimal or hex literal: usable in C, in a stringified asm operand, and by the test.
 */
#ifndef ROLLML_VMABI_H
#define ROLLML_VMABI_H

/* ---- syscalls (section 6): Linux O32 numbers in v0, arguments in a0..a3, result in v0, error flag in a3 */
#define VM_SYS_EXIT 4001
#define VM_SYS_READ 4003
#define VM_SYS_WRITE 4004
#define VM_SYS_BRK 4045
#define VM_SYS_MMAP 4090
#define VM_SYS_EXIT_GROUP 4246

/* errno values: v0 of a failed syscall (a3 = 1) */
#define VM_EBADF 9
#define VM_ENOMEM 12
#define VM_EINVAL 22

/* file descriptors */
#define VM_FD_STDIN 0          /* read: end of file */
#define VM_FD_STDOUT 1         /* write: observed off-chain */
#define VM_FD_STDERR 2         /* write: observed off-chain */
#define VM_FD_OUTPUT 3         /* write: the output bytes (section 9), observed off-chain */
#define VM_FD_PREIMAGE_READ 5  /* read: the selected key's stream */
#define VM_FD_PREIMAGE_KEY 6   /* write: select a key (32 bytes from a 32-aligned buffer) */

/* ---- memory (sections 3, 6, 8) ------------------------------------------------------------------------ */
#define VM_HEAP_START 0x20000000 /* mmap hands out [HEAP_START, HEAP_END) */
#define VM_HEAP_END 0x60000000
#define VM_BRK_FIXED 0x60000000  /* brk always returns this */
#define VM_STACK_TOP 0x7FFF0000  /* sp = STACK_TOP - 16 at entry */
#define VM_LEAF_SIZE 32          /* a Merkle leaf; one preimage read copies at most up to its end */
#define VM_PAGE_BITS 12          /* the off-chain memory pages */
#define VM_PAGE_SIZE 4096

/* ---- preimage oracle (section 6) ---------------------------------------------------------------------- */
#define VM_KEY_TYPE_LOCAL 1     /* key = 0x01 ++ the local index (31 bytes, big-endian) */
#define VM_KEY_TYPE_KECCAK 2    /* key = 0x02 ++ the low 31 bytes of keccak256(data) */
#define VM_MAX_PREIMAGE 16384   /* the longest keccak preimage */
#define VM_LOCAL_VALUE_SIZE 32  /* every local value */
#define VM_LOCAL_MODEL_ID 1     /* local indices of a rollml run: the model's blob id */
#define VM_LOCAL_INPUT_ID 2     /* the input's blob id */
#define VM_LOCAL_OUTPUT_HASH 3  /* the claimed keccak256 of the output */
#define VM_LOCAL_EXEC_RECORD 4  /* the node guest: the keccak key of the execution record (split game) */

/* blobs: chunks of at most CHUNK bytes, nodes of up to KEYS_PER_NODE keys, a manifest of at most
 * MAX_MANIFEST_KEYS keys */
#define VM_CHUNK 16384
#define VM_KEYS_PER_NODE 512
#define VM_MAX_MANIFEST_KEYS 511

#endif /* ROLLML_VMABI_H */
