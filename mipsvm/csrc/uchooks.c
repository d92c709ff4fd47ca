/* Native part of the fast executor (mipsvm/fast.py): hooks registered directly with unicorn's C API, and
 * the dirty-page tracking of the guest memory. No libunicorn symbol is linked: Python passes the addresses
 * of uc_emu_stop and uc_reg_read.
 *
 * Code hook: counts executed instructions and asks unicorn to stop before an instruction that must not run
 * on unicorn (a STOP word of the text pre-scan, an indirect jump out of the text, an unaligned or non-text
 * pc) or that would exceed the target count. Unicorn ignores a stop requested in a
 * branch delay slot (it runs the slot anyway), so the hook never asks there: it stops before the branch
 * instead when the slot would be the target, and the pre-scan marks a branch STOP unless its slot is plain.
 *
 * Interrupt hook: performs the preimage syscalls natively (read(5, ...) and write(6, ...), spec section 6),
 * with exactly the effect of mipsvm/step.py's handle_preimage_read / handle_preimage_select. The code hook
 * lets such a syscall through only when it can be done here (for a read: Python handed over the selected
 * key's stream and the buffer is not in a text page); unicorn raises EXCP_SYSCALL for it, the hook applies
 * the effect and unicorn continues at pc + 4. Every other syscall is a STOP word for the reference stepper.
 * A successful key select stops the run right after it, so Python can hand over the new key's stream. Any
 * other exception (a taken trap, an overflow, an address error) is a guest fault: the hook stops the run
 * and flags it, and Python resumes before the faulting instruction as for any other fault.
 *
 * TLB-fill hook: identity mapping with whole-page permissions, and the delay-slot workaround (below).
 *
 * Dirty pages (the 4 KiB guest pages written since the last collect, for the Merkle memory): the host pages
 * of the guest memory are read-only after a collect; the first write to a page (by unicorn's JIT code or by
 * Python) faults, the SIGSEGV handler marks the page and makes it writable, and the write is retried. No
 * cost per store (a UC_HOOK_MEM_WRITE hook sends every store through unicorn's slow path, ~3x slower, and
 * in unicorn 2.1.4 it also corrupts delay slots the way the TLB fill does).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE_BITS 12
#define PAGE_SIZE (1u << PAGE_BITS)
#define NUM_PAGES (1u << 20)
#define GUEST_SIZE (1ull << 32)
#define MAX_CTX 64

/* Word flags of the pre-scan. F_JR: jr/jalr (unicorn would fault on fetching an unaligned or non-text
 * target and leave no trace of where it came from). F_SYSCALL: a syscall, run here if it is a preimage
 * syscall this file can perform, else a stop. */
enum { F_STOP = 1, F_BRANCH = 2, F_SYSCALL = 4, F_JR = 8 };
enum {
    STOP_NONE = 0,
    STOP_TARGET = 1,
    STOP_WORD = 2,
    STOP_OUTSIDE = 3,
    STOP_SLOT_FILL = 4,
    STOP_FAULT = 5,   /* a guest fault raised an exception (see `faulted`) */
    STOP_SELECTED = 6 /* after a native key select: Python hands over the new key's stream */
};
enum { MEM_FETCH = 18 };   /* UC_MEM_FETCH */
enum { EXCP_SYSCALL = 17 }; /* qemu's MIPS exception number of `syscall` */
/* Spec section 6: syscall numbers, file descriptors, errno, registers. */
enum { SYS_READ = 4003, SYS_WRITE = 4004, FD_PREIMAGE_READ = 5, FD_PREIMAGE_KEY = 6, EINVAL = 22 };
enum { R_V0 = 2, R_A0 = 4, R_A1 = 5, R_A2 = 6, R_A3 = 7 };
enum { LEAF = 32 };

typedef int (*emu_stop_fn)(void *uc);
typedef int (*reg_read_fn)(void *uc, int regid, void *value);
typedef int (*reg_write_fn)(void *uc, int regid, const void *value);

typedef struct {
    /* counting: read by Python after a run */
    uint64_t count;        /* instructions let through in this run */
    uint64_t target;       /* stop before the instruction that would make count exceed this */
    uint32_t stop_pc;      /* pc at which the stop was requested */
    uint32_t stop_reason;  /* STOP_* */
    uint32_t last_pc;      /* pc of the last instruction let through */
    uint32_t last_in_slot; /* the last instruction let through is in a branch delay slot */
    uint32_t prev_flags;   /* flags of the last instruction let through */
    uint32_t overrun;      /* instructions hooked after a stop request */
    /* text pre-scan */
    uint32_t text_lo;
    uint32_t text_words;
    uint8_t *flags; /* per word of [text_lo, text_lo + 4 * text_words): F_* */
    uint8_t *xmap;  /* per page: 1 = text (executable, not writable on unicorn) */
    emu_stop_fn emu_stop;
    reg_read_fn reg_read;
    int reg0; /* unicorn's id of r0 (r1..r31 follow) */
    /* memory */
    uint8_t *host; /* the 4 GiB guest memory */
    uint8_t *dirty;
    uint32_t *dirty_list;
    uint32_t dirty_n;
    uint64_t faults;     /* write faults taken (statistics) */
    uint64_t slot_fills; /* data TLB fills in a delay slot (statistics) */
    /* native preimage syscalls; Python copies the key and offset in before a run and out after it */
    reg_write_fn reg_write;
    const uint8_t *stream;    /* the selected key's stream, u64be(len) ++ data; NULL: Python has none */
    uint64_t stream_len;      /* its length in bytes */
    uint32_t preimage_offset; /* the state's preimageOffset */
    uint32_t pending;         /* the syscall the code hook let through is one to perform natively */
    uint32_t faulted;         /* an exception other than a native syscall ended the run */
    uint8_t preimage_key[32]; /* the state's preimageKey */
    uint64_t native_syscalls; /* preimage syscalls performed here (statistics) */
} uch_ctx;

/* ---------------------------------------------------------------------------------------------------- */
/* code hook                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */
static inline int in_text(uch_ctx *c, uint32_t addr) {
    return !(addr & 3) && ((addr - c->text_lo) >> 2) < c->text_words && c->xmap[addr >> PAGE_BITS];
}

static uint32_t read_gpr(uch_ctx *c, void *uc, uint32_t r) {
    uint64_t v = 0;
    c->reg_read(uc, c->reg0 + (int)r, &v);
    return (uint32_t)v;
}

/* The dynamic part of a stop decision: an indirect jump out of the text, or to its own delay slot (which
 * would make the two outcomes of a delay-slot TLB fill indistinguishable: see the fill hook). */
static int jumps_out(uch_ctx *c, void *uc, uint32_t pc) {
    const uint8_t *p = c->host + pc;
    uint32_t w = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    uint32_t target = read_gpr(c, uc, (w >> 21) & 31);
    return !in_text(c, target) || target == pc + 4;
}

static void request_stop(uch_ctx *c, void *uc, uint32_t pc, uint32_t reason) {
    c->stop_pc = pc;
    c->stop_reason = reason;
    c->emu_stop(uc);
}

/* Whether the syscall about to run is a preimage select, or a preimage read of a key whose stream Python
 * handed over into a buffer outside the text (a write to text needs a re-scan: the reference stepper's). */
static int native_syscall(uch_ctx *c, void *uc) {
    uint32_t num = read_gpr(c, uc, R_V0), fd = read_gpr(c, uc, R_A0);
    if (num == SYS_WRITE && fd == FD_PREIMAGE_KEY) return 1;
    if (num == SYS_READ && fd == FD_PREIMAGE_READ)
        return c->stream != NULL && !c->xmap[read_gpr(c, uc, R_A1) >> PAGE_BITS];
    return 0;
}

void uch_code_hook(void *uc, uint64_t address, uint32_t size, void *user) {
    uch_ctx *c = user;
    uint32_t pc = (uint32_t)address;
    uint32_t in_slot = c->prev_flags & F_BRANCH;
    if (c->stop_reason != STOP_NONE) { /* unicorn went on past a stop request: Python sorts it out */
        c->overrun++;
        return;
    }
    if (!in_slot) { /* a stop request is honoured here */
        uint32_t i = (pc - c->text_lo) >> 2;
        if ((pc & 3) || size != 4 || i >= c->text_words) {
            request_stop(c, uc, pc, STOP_OUTSIDE);
            return;
        }
        uint32_t f = c->flags[i];
        if (c->count >= c->target || ((f & F_BRANCH) && c->count + 1 >= c->target)) {
            request_stop(c, uc, pc, STOP_TARGET);
            return;
        }
        if ((f & F_STOP) || ((f & F_JR) && jumps_out(c, uc, pc)) ||
            ((f & F_SYSCALL) && !native_syscall(c, uc))) {
            request_stop(c, uc, pc, STOP_WORD);
            return;
        }
        c->pending = (f & F_SYSCALL) != 0;
        c->prev_flags = f;
    } else {
        c->prev_flags = 0; /* the pre-scan never lets a branch sit in a delay slot */
    }
    c->last_in_slot = in_slot;
    c->last_pc = pc;
    c->count++;
}

/* Start a run of at most `target` instructions. */
void uch_begin(uch_ctx *c, uint64_t target) {
    c->count = 0;
    c->target = target;
    c->stop_pc = 0;
    c->stop_reason = STOP_NONE;
    c->last_pc = 0;
    c->last_in_slot = 0;
    c->prev_flags = 0;
    c->overrun = 0;
    c->pending = 0;
    c->faulted = 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* interrupt hook: the preimage syscalls (spec section 6), exactly as mipsvm/step.py does them            */
/* ---------------------------------------------------------------------------------------------------- */
static void write_gpr(uch_ctx *c, void *uc, uint32_t r, uint32_t value) {
    c->reg_write(uc, c->reg0 + (int)r, &value);
}

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

void uch_intr_hook(void *uc, uint32_t intno, void *user) {
    uch_ctx *c = user;
    if (intno != EXCP_SYSCALL || !c->pending) { /* a guest fault: precise, Python resumes before it */
        c->faulted = 1;
        if (c->stop_reason == STOP_NONE) {
            c->stop_reason = STOP_FAULT;
            c->stop_pc = c->last_pc;
        }
        c->emu_stop(uc);
        return;
    }
    c->pending = 0;
    c->native_syscalls++;
    uint32_t buf = read_gpr(c, uc, R_A1), n = read_gpr(c, uc, R_A2);
    uint32_t v0 = 0, a3 = 0;
    if (read_gpr(c, uc, R_V0) == SYS_READ) {
        v0 = preimage_read(c, buf, n);
    } else if (preimage_select(c, buf, n)) {
        v0 = LEAF;
        request_stop(c, uc, c->last_pc + 4, STOP_SELECTED); /* unicorn goes on at pc + 4 and stops there */
    } else {
        v0 = EINVAL;
        a3 = 1;
    }
    write_gpr(c, uc, R_V0, v0);
    write_gpr(c, uc, R_A3, a3);
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

bool uch_tlb_fill_hook(void *uc, uint64_t vaddr, int type, tlb_entry *result, void *user) {
    uch_ctx *c = user;
    result->paddr = vaddr & 0xFFFFFFFFull;
    result->perms = c->xmap[(uint32_t)vaddr >> PAGE_BITS] ? 1 | 4 : 1 | 2;
    /* Unicorn restores the CPU state from the TB before a data TLB fill. In a delay slot that sets the
     * in-branch bits of the MIPS hflags and nothing clears them: the next TB would be looked up (and
     * chained) as a delay slot, skipping instructions. Ask for a stop so Python can reset the CPU state.
     * Measured outcomes: after a taken branch unicorn runs the slot and stops at the target; after a
     * non-taken one it stops before the slot (pc = the slot, the slot not run). */
    if (type != MEM_FETCH && c->last_in_slot && c->stop_reason == STOP_NONE) {
        c->slot_fills++;
        request_stop(c, uc, c->last_pc, STOP_SLOT_FILL);
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------------- */
/* dirty pages                                                                                           */
/* ---------------------------------------------------------------------------------------------------- */
static uch_ctx *registry[MAX_CTX];
static struct sigaction prev_segv;
static size_t host_page = 4096;

static inline void mark_dirty(uch_ctx *c, uint32_t p) {
    if (!c->dirty[p]) {
        c->dirty[p] = 1;
        c->dirty_list[c->dirty_n++] = p;
    }
}

static void on_segv(int sig, siginfo_t *si, void *uctx) {
    uint8_t *a = si->si_addr;
    if (si->si_code > 0) { /* a real fault, not a signal sent by kill/raise */
        for (int k = 0; k < MAX_CTX; k++) {
            uch_ctx *c = registry[k];
            if (!c || a < c->host || a >= c->host + GUEST_SIZE) continue;
            uint64_t off = (uint64_t)(a - c->host) & ~(uint64_t)(host_page - 1);
            if (c->dirty[off >> PAGE_BITS]) break; /* already writable: not a fault of ours */
            for (uint64_t o = off; o < off + host_page; o += PAGE_SIZE) mark_dirty(c, (uint32_t)(o >> PAGE_BITS));
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
        for (k++; k < n && ((uint64_t)pages[k] << PAGE_BITS) == end; k++) end += PAGE_SIZE;
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
    if (protect_pages(c, out, n) != 0) return -1;
    for (uint32_t k = 0; k < n; k++) c->dirty[out[k]] = 0;
    c->dirty_n = 0;
    return n;
}

/* ---------------------------------------------------------------------------------------------------- */
/* life cycle                                                                                            */
/* ---------------------------------------------------------------------------------------------------- */
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
    for (int k = 0; k < MAX_CTX && slot < 0; k++)
        if (!registry[k]) slot = k;
    if (!c->dirty || !c->dirty_list || slot < 0) goto fail;
    if (mprotect(host, GUEST_SIZE, PROT_READ) != 0) goto fail;
    registry[slot] = c;
    return c;
fail:
    if (c) {
        free(c->dirty);
        free(c->dirty_list);
        free(c);
    }
    return NULL;
}

void uch_free(uch_ctx *c) {
    if (!c) return;
    for (int k = 0; k < MAX_CTX; k++)
        if (registry[k] == c) registry[k] = NULL;
    mprotect(c->host, GUEST_SIZE, PROT_READ | PROT_WRITE); /* plain memory again */
    free(c->dirty);
    free(c->dirty_list);
    free(c);
}

void uch_set_text(uch_ctx *c, uint32_t text_lo, uint32_t text_words, uint8_t *flags, uint8_t *xmap,
                  emu_stop_fn stop, reg_read_fn reg_read, reg_write_fn reg_write, int reg0) {
    c->text_lo = text_lo;
    c->text_words = text_words;
    c->flags = flags;
    c->xmap = xmap;
    c->emu_stop = stop;
    c->reg_read = reg_read;
    c->reg_write = reg_write;
    c->reg0 = reg0;
}
