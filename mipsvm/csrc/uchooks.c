/* Native part of the fast executor (mipsvm/fast.py): hooks registered directly with unicorn's C API, the
 * dirty-page tracking of the guest memory and the undo log that rewinds a run to its last checkpoint. No
 * libunicorn symbol is linked: Python passes the addresses of uc_emu_stop, uc_reg_read and uc_reg_write.
 *
 * Block hook: counts executed instructions a whole translation block (TB) at a time. Unicorn calls it at
 * the start of every TB, before the TB's own exit check, so a stop requested here keeps the TB from
 * running at all: the hook lets a TB through only if it fits the target count and holds no STOP word of
 * the text pre-scan, and stops before it otherwise (Python then finishes the last instructions on the
 * reference stepper). A TB ends after a branch's delay slot, except at a page end (or 512 instructions):
 * then the slot is a TB of its own that must run with its branch (unicorn ignores a stop there), so the
 * branch's TB counts the slot too and the slot's TB is not counted again.
 *
 * Unicorn restores the precise CPU state when a TB stops between its instructions, but on an exception it
 * overwrites the pc (with the pc after the last syscall) before any hook sees it. So:
 * - a syscall (the last instruction of its TB, never in a slot) is located by the pc unicorn sets after
 *   it; the interrupt hook performs the preimage syscalls natively (read(5, ...) and write(6, ...) with
 *   exactly the effect of mipsvm/step.py's handle_preimage_read / handle_preimage_select) and stops the run
 *   before any other syscall (uncounting it) for the reference stepper;
 * - a store to a text page (not writable on unicorn) is located by the TLB-fill hook, which runs with the
 *   precise pc of the store before the access fails;
 * - any other exception (a taken trap, an overflow, an unaligned access) is a guest fault somewhere in the
 *   current TB: the hook flags it and stops, and Python rewinds the run to its last checkpoint (the undo
 *   log below) and replays it to the TB's start, then steps the TB on the reference stepper, which
 *   defines the fault.
 *
 * TLB-fill hook: identity mapping with whole-page permissions, the store-to-text location above, and the
 * delay-slot workaround: unicorn restores the CPU state from the TB before a data TLB fill; in a delay slot
 * that sets the in-branch bits of the MIPS hflags and nothing clears them, so the next TB would be looked
 * up as a delay slot, skipping instructions. The hook asks for a stop: unicorn finishes the slot and the
 * branch and stops before the next TB (measured; the hook records where that may be, Python checks it and
 * resets the CPU state).
 *
 * Dirty pages (the 4 KiB guest pages written since the last collect, for the Merkle memory) and the undo
 * log (the contents of the pages written since the last checkpoint, as they were then): a host page is
 * writable only while it is both dirty and saved. The first write to a page that is not (by unicorn's JIT
 * code or by Python) faults, the SIGSEGV handler saves the page's old contents to the undo log if needed,
 * marks it and makes it writable, and the write is retried. No cost per store (a UC_HOOK_MEM_WRITE hook
 * sends every store through unicorn's slow path, ~3x slower, and in unicorn 2.1.4 it also corrupts delay
 * slots the way the TLB fill does).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmabi.h"

#define PAGE_BITS VM_PAGE_BITS
#define PAGE_SIZE (1u << PAGE_BITS)
#define NUM_PAGES (1u << 20)
#define GUEST_SIZE (1ull << 32)
#define MAX_CTX 64 /* fast VMs alive at once in a process (each holds a 4 GiB reservation) */
/* The undo log: host pages saved since the last checkpoint, at most UNDO_PAGES with their contents (4 MiB of
 * address space per VM, committed only as used). At UNDO_STOP saved pages the SIGSEGV handler makes the
 * next TB stop the run (Python takes a checkpoint before the next), so that the rest of a TB (at most
 * ~130 stores) and the reference steps before the next checkpoint always fit. */
#define UNDO_PAGES 1024
#define UNDO_STOP 512

/* Word flags of the pre-scan. F_JR: jr/jalr. F_SYSCALL: a syscall, run here if it is a preimage syscall
 * this file can perform, else a stop for the reference stepper. F_NOSLOT: a branch that is never taken
 * by its encoding (bne rx, rx; bgtz/bltz $0), which unicorn translates as a plain instruction (so the
 * word after it is no delay slot) but which may not sit in a delay slot. */
enum { F_STOP = 1, F_BRANCH = 2, F_SYSCALL = 4, F_JR = 8, F_NOSLOT = 16 };
enum {
    STOP_NONE = 0,
    STOP_TARGET = 1,     /* before a TB that does not fit the target (stop_arg: its size in steps) */
    STOP_WORD = 2,       /* before a TB with a STOP word (stop_arg: the word's index in the TB) */
    STOP_OUTSIDE = 3,    /* before a TB at an unaligned pc */
    STOP_SLOT_FILL = 4,  /* after a delay slot that filled the TLB (expect: where unicorn may stop) */
    STOP_FAULT = 5,      /* a guest fault raised an exception somewhere in the current TB */
    STOP_SELECTED = 6,   /* after a native key select: Python hands over the new key's stream */
    STOP_SYSCALL = 7,    /* before a syscall for the reference stepper (stop_pc: the syscall) */
    STOP_BROKEN = 8      /* unicorn did something the hooks cannot explain (a bug here) */
};
/* The block hook's mode: the next TB is an ordinary one, or the slot of the last one's final branch
 * (counted with it), or it follows that slot's TB, or it does not run at all (a stop was requested). */
enum { MODE_NEXT = 0, MODE_SLOT_NEXT = 1, MODE_IN_SLOT = 2, MODE_STOPPED = 3 };
enum { MEM_WRITE = 17, MEM_FETCH = 18 }; /* UC_MEM_WRITE, UC_MEM_FETCH */
enum { EXCP_SYSCALL = 17 };              /* qemu's MIPS exception number of `syscall` */
/* Spec section 6: the syscall registers (the numbers, file descriptors and errno values are vmabi.h's). */
enum { R_V0 = 2, R_A0 = 4, R_A1 = 5, R_A2 = 6, R_A3 = 7 };
enum { LEAF = VM_LEAF_SIZE };

typedef int (*emu_stop_fn)(void *uc);
typedef int (*reg_read_fn)(void *uc, int regid, void *value);
typedef int (*reg_write_fn)(void *uc, int regid, const void *value);

typedef struct {
    /* a run: set by uch_begin, read by Python after it; the first fields are the block hook's */
    uint64_t count;      /* instructions executed in this run */
    uint64_t target;     /* never let a TB through that would make count exceed this */
    uint64_t tb;         /* the last counted TB: its pc | its instructions << 32 */
    uint32_t gate;       /* text_words, or 0 while `mode` is not MODE_NEXT: the block hook's fast-path test */
    uint32_t text_lo;    /* the text pre-scan: [text_lo, text_lo + 4 * text_words) */
    uint16_t *dist;      /* per text word: words to the next STOP word | to the next branch << 8 (capped) */
    uint32_t text_words;
    uint32_t mode;       /* MODE_* */
    uint32_t slot_tb;    /* a stop came in the slot's own TB of the last counted TB (set by request_stop) */
    uint32_t stop_reason; /* STOP_* */
    uint32_t stop_pc;     /* pc at which the stop was requested */
    uint32_t stop_arg;    /* see STOP_* */
    uint32_t expect[2];   /* STOP_SLOT_FILL: the two pcs unicorn may stop at after the slot */
    uint32_t overrun;     /* TBs entered after a stop request (not run: their exit check follows) */
    uint32_t faulted;     /* STOP_FAULT: the exception number */
    uint32_t text_write;  /* a store to a text page failed: 1 + (the store is in a delay slot) */
    uint32_t text_write_pc;
    uint32_t fetch_fault; /* a jump to a non-text page failed at its fetch: the run ended at a TB boundary */
    uint32_t fetch_pc;
    uint32_t counting; /* the block hook is registered (else the run is the uncounted benchmark baseline) */
    uint8_t *flags;    /* per text word: F_* */
    uint8_t *xmap;     /* per page: 1 = text (executable, not writable on unicorn) */
    emu_stop_fn emu_stop;
    reg_read_fn reg_read;
    reg_write_fn reg_write;
    int reg0;  /* unicorn's id of r0 (r1..r31 follow) */
    int reg_pc;
    /* memory */
    uint8_t *host; /* the 4 GiB guest memory */
    uint8_t *dirty;
    uint32_t *dirty_list;
    uint32_t dirty_n;
    uint8_t *saved;       /* per page: saved in the undo log since the last checkpoint */
    uint32_t *undo_list;  /* host-page offsets (in guest pages) of the saved pages, in order */
    uint32_t undo_n;
    uint32_t undo_lost;   /* pages saved without their contents (the log was full): no rewind */
    uint8_t *undo_data;   /* contents of the first UNDO_PAGES saved host pages */
    /* native preimage syscalls; Python copies the key and offset in before a run and out after it */
    const uint8_t *stream;    /* the selected key's stream, u64be(len) ++ data; NULL: Python has none */
    uint64_t stream_len;      /* its length in bytes */
    uint32_t preimage_offset; /* the state's preimageOffset */
    uint8_t preimage_key[32]; /* the state's preimageKey */
    /* statistics */
    uint64_t faults;          /* write faults taken */
    uint64_t slot_fills;      /* data TLB fills in a delay slot */
    uint64_t native_syscalls; /* preimage syscalls performed here */
} uch_ctx;

static size_t host_page = 4096;

/* ---------------------------------------------------------------------------------------------------- */
/* registers and the text                                                                                */
/* ---------------------------------------------------------------------------------------------------- */
static uint32_t read_gpr(uch_ctx *c, void *uc, uint32_t r) {
    uint64_t v = 0;
    c->reg_read(uc, c->reg0 + (int)r, &v);
    return (uint32_t)v;
}

static void write_gpr(uch_ctx *c, void *uc, uint32_t r, uint32_t value) {
    c->reg_write(uc, c->reg0 + (int)r, &value);
}

static uint32_t read_pc(uch_ctx *c, void *uc) {
    uint64_t v = 0;
    c->reg_read(uc, c->reg_pc, &v);
    return (uint32_t)v;
}

static inline uint32_t word_at(uch_ctx *c, uint32_t addr) {
    const uint8_t *p = c->host + addr;
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint32_t tb_pc(uch_ctx *c) { return (uint32_t)c->tb; }
static inline uint32_t tb_n(uch_ctx *c) { return (uint32_t)(c->tb >> 32); }

static inline int is_branch(uch_ctx *c, uint32_t addr) {
    uint32_t i = (addr - c->text_lo) >> 2;
    return !(addr & 3) && i < c->text_words && (c->flags[i] & F_BRANCH);
}

static void request_stop(uch_ctx *c, void *uc, uint32_t pc, uint32_t reason, uint32_t arg) {
    c->slot_tb = c->mode == MODE_IN_SLOT;
    c->mode = MODE_STOPPED;
    c->gate = 0;
    c->stop_pc = pc;
    c->stop_reason = reason;
    c->stop_arg = arg;
    c->emu_stop(uc);
}

/* Whether the instruction at pc, which accesses memory now, is a delay slot. Inside a TB, instructions run
 * in address order and a branch is followed by its slot; the first instruction of a TB is a slot only in a
 * slot's own TB. (The uncounted baseline has no TBs to go by: a branch word before pc will do there.) */
static int in_slot(uch_ctx *c, uint32_t pc) {
    if (!c->counting) return is_branch(c, pc - 4);
    if (c->mode == MODE_IN_SLOT) return pc == tb_pc(c) + 4 * tb_n(c);
    return pc != tb_pc(c) && pc - tb_pc(c) < 4 * tb_n(c) && is_branch(c, pc - 4);
}

/* ---------------------------------------------------------------------------------------------------- */
/* block hook                                                                                            */
/* ---------------------------------------------------------------------------------------------------- */
/* The rare cases of the block hook: a stop was requested, a slot's own TB, the TB after it, a TB outside
 * the text, with a STOP word, ending in a branch (whose slot is a TB of its own), or past the target. */
static void block_hook_slow(uch_ctx *c, void *uc, uint32_t pc, uint32_t n, uint32_t i) {
    if (c->mode == MODE_STOPPED) { /* this TB's exit check follows: it does not run */
        c->overrun++;
        return;
    }
    if (c->mode == MODE_SLOT_NEXT) { /* the slot of the last TB's final branch, counted with it */
        if (n != 1 || pc != tb_pc(c) + 4 * tb_n(c)) {
            request_stop(c, uc, pc, STOP_BROKEN, n);
            return;
        }
        c->mode = MODE_IN_SLOT;
        return;
    }
    if (c->mode == MODE_IN_SLOT) { /* the TB after a slot's own TB: an ordinary one */
        c->mode = MODE_NEXT;
        c->gate = c->text_words;
    }
    if (i >= c->text_words) {
        request_stop(c, uc, pc, STOP_OUTSIDE, 0);
        return;
    }
    uint32_t d = c->dist[i];
    if ((d & 0xFF) < n) {
        request_stop(c, uc, pc, STOP_WORD, d & 0xFF);
        return;
    }
    /* Inside a TB a branch is followed only by its slot: the TB ends in a branch iff the next one is last */
    uint32_t ends_in_branch = (d >> 8) == n - 1;
    uint64_t count = c->count + n + ends_in_branch;
    if (count > c->target) {
        request_stop(c, uc, pc, STOP_TARGET, n + ends_in_branch);
        return;
    }
    c->count = count;
    c->tb = pc | (uint64_t)n << 32;
    if (ends_in_branch) {
        c->mode = MODE_SLOT_NEXT;
        c->gate = 0;
    }
}

void uch_block_hook(void *uc, uint64_t address, uint32_t size, void *user) {
    uch_ctx *c = user;
    uint32_t pc = (uint32_t)address, n = size >> 2;
    /* Unicorn translates TBs only in text pages and never at an unaligned pc (its fetch fails first);
     * `gate` is 0 while the mode asks for the slow path, else the text's size in words. */
    uint32_t i = (pc - c->text_lo) >> 2;
    if (__builtin_expect(i >= c->gate, 0)) {
        block_hook_slow(c, uc, pc, n, i);
        return;
    }
    uint32_t d = c->dist[i];
    uint64_t count = c->count + n;
    if (__builtin_expect((d & 0xFF) < n || (d >> 8) == n - 1 || count > c->target, 0)) {
        block_hook_slow(c, uc, pc, n, i);
        return;
    }
    c->count = count;
    c->tb = pc | (uint64_t)n << 32;
}

/* Start a run of at most `target` instructions. */
void uch_begin(uch_ctx *c, uint64_t target) {
    c->count = 0;
    c->target = target;
    c->tb = 0;
    c->mode = MODE_NEXT;
    c->gate = c->text_words;
    c->slot_tb = 0;
    c->stop_reason = STOP_NONE;
    c->stop_pc = c->stop_arg = 0;
    c->expect[0] = c->expect[1] = 0;
    c->overrun = 0;
    c->faulted = 0;
    c->text_write = c->text_write_pc = 0;
    c->fetch_fault = c->fetch_pc = 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* interrupt hook: the preimage syscalls (spec section 6), exactly as mipsvm/step.py does them            */
/* ---------------------------------------------------------------------------------------------------- */
/* read(5, buf, n): copy min(n, the rest of buf's leaf, the rest of the stream) bytes; returns the count.
 * buf + count stays inside buf's leaf, so inside the 4 GiB mapping (no wrap-around). */
static uint32_t preimage_read(uch_ctx *c, uint32_t buf, uint32_t n) {
    uint64_t offset = c->preimage_offset;
    uint64_t available = c->stream_len > offset ? c->stream_len - offset : 0;
    uint32_t count = LEAF - (buf & (LEAF - 1));
    if (n < count) count = n;
    if (available < count) count = (uint32_t)available;
    if (count) {
        memcpy(c->host + buf, c->stream + offset, count);
        c->preimage_offset += count; /* wraps modulo 2^32 as the spec's offset does */
    }
    return count;
}

/* write(6, buf, 32) with a 32-aligned buf: select the key in buf's leaf and rewind; else EINVAL. Returns
 * whether it selected (the stream of the new key is Python's to hand over). */
static int preimage_select(uch_ctx *c, uint32_t buf, uint32_t n) {
    if ((buf & (LEAF - 1)) || n != LEAF) return 0;
    memcpy(c->preimage_key, c->host + buf, LEAF);
    c->preimage_offset = 0;
    c->stream = NULL;
    c->stream_len = 0;
    return 1;
}

/* Whether the syscall about to complete is a preimage select, or a preimage read of a key whose stream
 * Python handed over into a buffer outside the text (a write to text needs a re-scan: the reference
 * stepper's). */
static int native_syscall(uch_ctx *c, void *uc) {
    uint32_t num = read_gpr(c, uc, R_V0), fd = read_gpr(c, uc, R_A0);
    if (num == VM_SYS_WRITE && fd == VM_FD_PREIMAGE_KEY) return 1;
    if (num == VM_SYS_READ && fd == VM_FD_PREIMAGE_READ)
        return c->stream != NULL && !c->xmap[read_gpr(c, uc, R_A1) >> PAGE_BITS];
    return 0;
}

void uch_intr_hook(void *uc, uint32_t intno, void *user) {
    uch_ctx *c = user;
    if (intno == EXCP_SYSCALL && c->stop_reason == STOP_NONE) {
        uint32_t pc = read_pc(c, uc) - 4; /* unicorn has moved past the syscall */
        if (!native_syscall(c, uc)) {
            if (c->counting) c->count--; /* counted with its TB, but it is the reference stepper's */
            request_stop(c, uc, pc, STOP_SYSCALL, 0);
            return;
        }
        c->native_syscalls++;
        uint32_t buf = read_gpr(c, uc, R_A1), n = read_gpr(c, uc, R_A2);
        uint32_t v0 = 0, a3 = 0;
        if (read_gpr(c, uc, R_V0) == VM_SYS_READ) {
            v0 = preimage_read(c, buf, n);
        } else if (preimage_select(c, buf, n)) {
            v0 = LEAF;
            request_stop(c, uc, pc + 4, STOP_SELECTED, 0); /* unicorn goes on at pc + 4 and stops there */
        } else {
            v0 = VM_EINVAL;
            a3 = 1;
        }
        write_gpr(c, uc, R_V0, v0);
        write_gpr(c, uc, R_A3, a3);
        return;
    }
    /* a guest fault somewhere in the current TB (the pc is lost): Python rewinds and replays */
    c->faulted = intno ? intno : 0x100;
    if (c->stop_reason == STOP_NONE) c->stop_reason = STOP_FAULT;
    c->emu_stop(uc);
}

/* ---------------------------------------------------------------------------------------------------- */
/* TLB fill: unicorn's virtual TLB maps all 4 GiB one to one (its CPU TLB would fold MIPS kseg0/kseg1 onto */
/* low memory), but by default grants only the access type that missed, so a load and a store to one page */
/* evict each other's entry. Grant a page's permissions at once: text read+exec, all else read+write.     */
/* ---------------------------------------------------------------------------------------------------- */
typedef struct {
    uint64_t paddr;
    int perms;
} tlb_entry;

/* Where unicorn may stop after the slot at `slot` (the branch is the word before it): a conditional
 * branch's target or fall-through, a jump's target, or a jr/jalr's register (read now: the slot has not
 * written back yet, and the pre-scan keeps jalr's link apart from its target). */
static void slot_exits(uch_ctx *c, void *uc, uint32_t slot) {
    uint32_t w = word_at(c, slot - 4), op = w >> 26;
    if (op == 0) { /* jr, jalr */
        c->expect[0] = c->expect[1] = read_gpr(c, uc, (w >> 21) & 31);
    } else if (op == 2 || op == 3) { /* j, jal */
        c->expect[0] = c->expect[1] = (slot & 0xF0000000u) | ((w & 0x03FFFFFFu) << 2);
    } else {
        c->expect[0] = slot + (uint32_t)((int32_t)(int16_t)(w & 0xFFFF) * 4);
        c->expect[1] = slot + 4;
    }
}

bool uch_tlb_fill_hook(void *uc, uint64_t vaddr, int type, tlb_entry *result, void *user) {
    uch_ctx *c = user;
    uint32_t page = (uint32_t)vaddr >> PAGE_BITS;
    result->paddr = vaddr & 0xFFFFFFFFull;
    result->perms = c->xmap[page] ? 1 | 4 : 1 | 2;
    if (type == MEM_FETCH) { /* a TB at the pc unicorn jumped to; a non-text one cannot run */
        if (!c->xmap[page] && !c->fetch_fault) {
            c->fetch_fault = 1;
            c->fetch_pc = read_pc(c, uc);
        }
        return true;
    }
    uint32_t pc = read_pc(c, uc); /* precise: unicorn restored the state of the accessing instruction */
    if (type == MEM_WRITE && c->xmap[page]) { /* fails after this hook: a store to text */
        if (!c->text_write) {
            c->text_write = 1 + (in_slot(c, pc) ? 1 : 0);
            c->text_write_pc = pc;
            c->slot_tb = c->mode == MODE_IN_SLOT;
        }
        return true;
    }
    if (c->stop_reason == STOP_NONE && in_slot(c, pc)) {
        c->slot_fills++;
        slot_exits(c, uc, pc);
        request_stop(c, uc, pc, STOP_SLOT_FILL, 0);
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------------- */
/* dirty pages and the undo log                                                                          */
/* ---------------------------------------------------------------------------------------------------- */
static uch_ctx *registry[MAX_CTX];
static struct sigaction prev_segv;

/* The host page at guest page p0 (its first guest page) is dirty and saved now; it becomes writable. */
static void note_write(uch_ctx *c, uint32_t p0) {
    uint32_t per = (uint32_t)(host_page >> PAGE_BITS);
    if (!c->saved[p0]) {
        if (c->undo_n < UNDO_PAGES)
            memcpy(c->undo_data + (size_t)c->undo_n * host_page, c->host + ((uint64_t)p0 << PAGE_BITS), host_page);
        else
            c->undo_lost = 1;
        c->undo_list[c->undo_n++] = p0;
        if (c->undo_n >= UNDO_STOP) c->target = 0; /* the next TB stops the run */
        for (uint32_t k = 0; k < per; k++) c->saved[p0 + k] = 1;
    }
    if (!c->dirty[p0]) {
        for (uint32_t k = 0; k < per; k++) {
            c->dirty[p0 + k] = 1;
            c->dirty_list[c->dirty_n++] = p0 + k;
        }
    }
}

static void on_segv(int sig, siginfo_t *si, void *uctx) {
    uint8_t *a = si->si_addr;
    if (si->si_code > 0) { /* a real fault, not a signal sent by kill/raise */
        for (int k = 0; k < MAX_CTX; k++) {
            uch_ctx *c = registry[k];
            if (!c || a < c->host || a >= c->host + GUEST_SIZE) continue;
            uint64_t off = (uint64_t)(a - c->host) & ~(uint64_t)(host_page - 1);
            uint32_t p0 = (uint32_t)(off >> PAGE_BITS);
            if (c->dirty[p0] && c->saved[p0]) break; /* already writable: not a fault of ours */
            note_write(c, p0);
            c->faults++;
            if (mprotect(c->host + off, host_page, PROT_READ | PROT_WRITE) == 0) return;
            break;
        }
    }
    if (prev_segv.sa_flags & SA_SIGINFO) {
        prev_segv.sa_sigaction(sig, si, uctx);
    } else if (prev_segv.sa_handler == SIG_DFL || prev_segv.sa_handler == SIG_IGN) {
        signal(sig, SIG_DFL); /* the access faults again and takes the default action */
    } else {
        prev_segv.sa_handler(sig);
    }
}

/* Make sure on_segv is the SIGSEGV handler (someone, e.g. faulthandler, may have replaced it since). */
int uch_ensure_handler(void) {
    struct sigaction cur, sa;
    if (sigaction(SIGSEGV, NULL, &cur) != 0) return -1;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv) return 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &prev_segv) != 0) return -1;
    return 1;
}

/* Write-protect the given sorted pages, one mprotect call per run of consecutive pages. */
static int protect_pages(uch_ctx *c, const uint32_t *pages, uint32_t n) {
    uint32_t k = 0;
    while (k < n) {
        uint64_t start = (uint64_t)pages[k] << PAGE_BITS;
        uint64_t end = start + PAGE_SIZE;
        for (k++; k < n && ((uint64_t)pages[k] << PAGE_BITS) <= end; k++) {
            uint64_t e = ((uint64_t)pages[k] << PAGE_BITS) + PAGE_SIZE;
            if (e > end) end = e;
        }
        start &= ~(uint64_t)(host_page - 1);
        end = (end + host_page - 1) & ~(uint64_t)(host_page - 1);
        if (mprotect(c->host + start, end - start, PROT_READ) != 0) return -1;
    }
    return 0;
}

static int cmp_u32(const void *x, const void *y) {
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

/* Move the dirty page indices (sorted) to `out` (room for NUM_PAGES) and write-protect those pages again.
 * Returns the count, or -1 if mprotect failed. */
int64_t uch_collect_dirty(uch_ctx *c, uint32_t *out) {
    uint32_t n = c->dirty_n;
    memcpy(out, c->dirty_list, (size_t)n * sizeof(uint32_t));
    qsort(out, n, sizeof(uint32_t), cmp_u32);
    for (uint32_t k = 0; k < n; k++) c->dirty[out[k]] = 0;
    c->dirty_n = 0;
    if (protect_pages(c, out, n) != 0) return -1;
    return n;
}

/* A checkpoint: forget the undo log and write-protect the saved pages again, so that the first write to a
 * page from now on saves it. `scratch` has room for NUM_PAGES entries. Returns 0, or -1 if mprotect
 * failed. */
int uch_checkpoint(uch_ctx *c, uint32_t *scratch) {
    uint32_t n = c->undo_n, per = (uint32_t)(host_page >> PAGE_BITS);
    memcpy(scratch, c->undo_list, (size_t)n * sizeof(uint32_t));
    qsort(scratch, n, sizeof(uint32_t), cmp_u32);
    for (uint32_t k = 0; k < n; k++)
        for (uint32_t j = 0; j < per; j++) c->saved[scratch[k] + j] = 0;
    c->undo_n = 0;
    c->undo_lost = 0;
    return protect_pages(c, scratch, n);
}

/* Put the saved pages back as they were at the last checkpoint (newest first) and take a checkpoint there.
 * Their guest page indices go to `out` (room for NUM_PAGES); returns the count, or -1 if the log lost pages
 * (it was full) or mprotect failed. */
int64_t uch_rewind(uch_ctx *c, uint32_t *out) {
    if (c->undo_lost) return -1;
    uint32_t n = c->undo_n, per = (uint32_t)(host_page >> PAGE_BITS), m = 0;
    for (uint32_t k = n; k-- > 0;) {
        uint32_t p0 = c->undo_list[k];
        uint8_t *dst = c->host + ((uint64_t)p0 << PAGE_BITS);
        if (memcmp(dst, c->undo_data + (size_t)k * host_page, host_page) != 0) {
            memcpy(dst, c->undo_data + (size_t)k * host_page, host_page); /* may fault: the handler marks it */
            for (uint32_t j = 0; j < per; j++) out[m++] = p0 + j;
        }
    }
    /* a restore saves nothing new (each page was saved already), so the log is still this checkpoint's */
    if (uch_checkpoint(c, out + m) != 0) return -1;
    return m;
}

/* ---------------------------------------------------------------------------------------------------- */
/* life cycle                                                                                            */
/* ---------------------------------------------------------------------------------------------------- */
static void free_ctx(uch_ctx *c) {
    if (!c) return;
    free(c->dirty);
    free(c->dirty_list);
    free(c->saved);
    free(c->undo_list);
    if (c->undo_data && c->undo_data != MAP_FAILED) munmap(c->undo_data, (size_t)UNDO_PAGES * host_page);
    free(c);
}

/* Track writes to the 4 GiB at `host` (all of it is write-protected now: load memory afterwards). */
uch_ctx *uch_new(uint8_t *host) {
    uch_ctx *c = calloc(1, sizeof(uch_ctx));
    int slot = -1;
    long hp = sysconf(_SC_PAGESIZE);
    host_page = hp > 0 ? (size_t)hp : 4096;
    if (!c || host_page < PAGE_SIZE || uch_ensure_handler() < 0) goto fail;
    c->host = host;
    c->dirty = calloc(NUM_PAGES, 1);
    c->dirty_list = malloc(NUM_PAGES * sizeof(uint32_t));
    c->saved = calloc(NUM_PAGES, 1);
    c->undo_list = malloc(NUM_PAGES * sizeof(uint32_t));
    c->undo_data = mmap(NULL, (size_t)UNDO_PAGES * host_page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    for (int k = 0; k < MAX_CTX && slot < 0; k++)
        if (!registry[k]) slot = k;
    if (!c->dirty || !c->dirty_list || !c->saved || !c->undo_list || c->undo_data == MAP_FAILED || slot < 0)
        goto fail;
    if (mprotect(host, GUEST_SIZE, PROT_READ) != 0) goto fail;
    registry[slot] = c;
    return c;
fail:
    free_ctx(c);
    return NULL;
}

void uch_free(uch_ctx *c) {
    if (!c) return;
    for (int k = 0; k < MAX_CTX; k++)
        if (registry[k] == c) registry[k] = NULL;
    mprotect(c->host, GUEST_SIZE, PROT_READ | PROT_WRITE); /* plain memory again */
    free_ctx(c);
}

void uch_set_text(uch_ctx *c, uint32_t text_lo, uint32_t text_words, uint8_t *flags, uint16_t *dist,
                  uint8_t *xmap, emu_stop_fn stop, reg_read_fn reg_read, reg_write_fn reg_write, int reg0,
                  int reg_pc, int counting) {
    c->text_lo = text_lo;
    c->text_words = text_words;
    c->flags = flags;
    c->dist = dist;
    c->xmap = xmap;
    c->emu_stop = stop;
    c->reg_read = reg_read;
    c->reg_write = reg_write;
    c->reg0 = reg0;
    c->reg_pc = reg_pc;
    c->counting = counting;
}
