/*
 * guest.c - the MIPS32 guest program of the rollml VM (docs/vm-spec.md).
 *
 * Result convention (spec section 9): read local keys 1 (model id), 2 (input
 * id) and 3 (claimed output hash); load the model and input blobs through the
 * preimage oracle; run the model; write the output payload to fd 3; exit 0
 * if keccak256(output) equals the claim, else 1.  Errors exit with the codes
 * of mlkit.h (2 model, 3 input, 4 memory, 5 oracle), all PANIC status.
 *
 * Freestanding: no libc, no libgcc.  Syscalls are inline `syscall`
 * instructions (number in v0, arguments in a0..a3, error flag in a3).
 */
#include "mlkit.h"

#define SYS_EXIT_GROUP 4246u
#define SYS_READ 4003u
#define SYS_WRITE 4004u
#define SYS_MMAP 4090u
#define FD_OUTPUT 3u
#define FD_PREIMAGE_READ 5u
#define FD_PREIMAGE_KEY 6u
#define CHUNK 16384u          /* blob chunk and node size (spec "Blobs") */
#define FANOUT 512u           /* keys per interior node */
#define MAX_TOP 511u          /* keys in a manifest */
#define MAX_LEVELS 4u

/* ---- entry ------------------------------------------------------------------ */

int guest_main(void) __attribute__((used, noinline));

/* sp = STACK_TOP - 16 at entry (spec section 8); keep 16 bytes of argument
 * space for the callee, call guest_main, exit_group with its result.  The
 * `break` after exit is never reached (an exited state is a fixed point). */
__asm__(".section .text.start,\"ax\",@progbits\n"
        ".globl __start\n"
        ".type __start, @function\n"
        ".set push\n"
        ".set noreorder\n"
        "__start:\n"
        "    addiu $sp, $sp, -32\n"
        "    jal guest_main\n"
        "    nop\n"
        "    move $a0, $v0\n"
        "    li $v0, 4246\n"
        "    syscall\n"
        "    break\n"
        ".set pop\n"
        ".size __start, .-__start\n"
        ".previous\n");

/* ---- syscalls ----------------------------------------------------------------- */

/* One syscall; *err = the a3 error flag.  The clobber list is Linux's (the
 * VM only writes v0 and a3, but this keeps the binary runnable elsewhere). */
static inline uint32_t sys(uint32_t n, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t *err)
{
    register uint32_t v0 __asm__("$2") = n;
    register uint32_t r4 __asm__("$4") = a0;
    register uint32_t r5 __asm__("$5") = a1;
    register uint32_t r6 __asm__("$6") = a2;
    register uint32_t r7 __asm__("$7") = a3;
    __asm__ volatile("syscall"
                     : "+r"(v0), "+r"(r7)
                     : "r"(r4), "r"(r5), "r"(r6)
                     : "$1", "$3", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$24", "$25", "hi",
                       "lo", "memory");
    *err = r7;
    return v0;
}

/* ---- the C library functions gcc may call ---------------------------------------- */

typedef __SIZE_TYPE__ size_t;

void *memcpy(void *dst, const void *src, size_t n) { return mlk_memcpy(dst, src, n); }

void *memmove(void *dst, const void *src, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if (d <= s || d >= s + n)
        return mlk_memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

void *memset(void *dst, int v, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    while (n--)
        *d++ = (uint8_t)v;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *p = (const uint8_t *)a, *q = (const uint8_t *)b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p < *q ? -1 : 1;
    return 0;
}

/* ---- memory: a bump allocator over mmap ------------------------------------------ */

/* mmap hands out consecutive addresses from HEAP_START, and this program is
 * its only user, so the heap is one growing region [start, heap_end). */
static uint32_t heap_cur, heap_end;

static void *guest_get(mlk_ctx *c, uint32_t n)
{
    (void)c;
    if (n > heap_end - heap_cur) {
        uint32_t err, need = (n - (heap_end - heap_cur) + 4095u) & ~4095u;
        if (need < n - (heap_end - heap_cur)) /* wrapped */
            return 0;
        uint32_t p = sys(SYS_MMAP, 0, need, 3 /* RW */, 0x802 /* PRIVATE|ANON */, &err);
        if (err)
            return 0;
        if (heap_end == 0)
            heap_cur = p;
        else if (p != heap_end)
            return 0;
        heap_end = p + need;
    }
    void *r = (void *)heap_cur;
    heap_cur += n;
    return r;
}

/* ---- preimage oracle (spec section 6) ---------------------------------------------- */

static uint8_t key_buf[32] __attribute__((aligned(32)));
static uint8_t word_buf[32] __attribute__((aligned(32)));
static uint8_t manifest[CHUNK] __attribute__((aligned(32)));
static uint8_t level_buf[MAX_LEVELS][CHUNK] __attribute__((aligned(32)));

/* Select a key: write(6, buf, 32) from a 32-byte aligned buffer. */
static int select_key(const uint8_t *key)
{
    uint32_t err;
    mlk_memcpy(key_buf, key, 32);
    uint32_t r = sys(SYS_WRITE, FD_PREIMAGE_KEY, (uint32_t)key_buf, 32, 0, &err);
    return err || r != 32 ? MLK_E_ORACLE : MLK_OK;
}

/* Read exactly n stream bytes to dst.  Each read(5, ...) copies up to the end
 * of the 32-byte leaf holding dst, so an aligned dst takes 32 bytes a step. */
static int read_exact(uint8_t *dst, uint32_t n)
{
    while (n) {
        uint32_t err, got = sys(SYS_READ, FD_PREIMAGE_READ, (uint32_t)dst, n, 0, &err);
        if (err || got == 0 || got > n)
            return MLK_E_ORACLE;
        dst += got;
        n -= got;
    }
    return MLK_OK;
}

/* Select key and read its stream's u64 length prefix; lengths past 2^32 or
 * past `max` are reported as `bad`. */
static int open_key(const uint8_t *key, uint32_t max, int bad, uint32_t *len)
{
    int rc = select_key(key);
    if (rc == MLK_OK)
        rc = read_exact(word_buf, 8);
    if (rc != MLK_OK)
        return rc;
    if (rd32(word_buf) != 0 || rd32(word_buf + 4) > max)
        return bad;
    *len = rd32(word_buf + 4);
    return MLK_OK;
}

/* A local key value: 32 bytes. */
static int read_local(uint32_t index, uint8_t *out)
{
    uint8_t key[32];
    uint32_t len;
    for (int i = 0; i < 32; i++)
        key[i] = 0;
    key[0] = 1;
    wr32(key + 28, index);
    int rc = open_key(key, 32, MLK_E_ORACLE, &len);
    if (rc == MLK_OK && len != 32)
        rc = MLK_E_ORACLE;
    return rc != MLK_OK ? rc : read_exact(out, 32);
}

/* ---- blobs (spec section 6, "Blobs") ------------------------------------------------ */

typedef struct {
    uint8_t *data;
    uint32_t len;
    uint32_t count[MAX_LEVELS + 1]; /* nodes per level */
    int bad;                        /* the exit code of a malformed blob */
} blob;

/* Fetch node `idx` of `level` into the blob: a data chunk at level 0, else
 * the keys of its children (exactly the canonical count, checked). */
static int fetch(blob *b, const uint8_t *key, uint32_t level, uint32_t idx)
{
    uint32_t len;
    int rc = open_key(key, CHUNK, b->bad, &len);
    if (rc != MLK_OK)
        return rc;
    if (level == 0) {
        uint32_t off = idx * CHUNK, want = b->len - off < CHUNK ? b->len - off : CHUNK;
        return len != want ? b->bad : read_exact(b->data + off, len);
    }
    uint32_t first = idx * FANOUT, n = b->count[level - 1] - first;
    if (n > FANOUT)
        n = FANOUT;
    if (len != 32u * n)
        return b->bad;
    uint8_t *keys = level_buf[level - 1];
    if ((rc = read_exact(keys, len)) != MLK_OK)
        return rc;
    for (uint32_t i = 0; i < n; i++)
        if ((rc = fetch(b, keys + 32u * i, level - 1, first + i)) != MLK_OK)
            return rc;
    return MLK_OK;
}

/* Load blob `id`: its manifest is u64 total length ++ the top-level keys.
 * Lengths over `max` give `bad` (MLK_E_MODEL or MLK_E_INPUT). */
static int load_blob(mlk_ctx *c, const uint8_t *id, uint32_t max, int bad, uint8_t **data, uint32_t *len)
{
    blob b;
    uint32_t mlen, top = 0;
    int rc;
    b.bad = bad;
    if (id[0] != 2) /* a blob id is a keccak key */
        return bad;
    if ((rc = open_key(id, CHUNK, bad, &mlen)) != MLK_OK)
        return rc;
    if (mlen < 8 || (mlen - 8u) % 32u != 0)
        return bad;
    if ((rc = read_exact(manifest, mlen)) != MLK_OK)
        return rc;
    if (rd32(manifest) != 0 || rd32(manifest + 4) > max)
        return bad;
    b.len = rd32(manifest + 4);
    /* level sizes: chunks, then groups of 512, up to the first level with
     * at most 511 nodes (the manifest's keys) */
    b.count[0] = b.len / CHUNK + (b.len % CHUNK != 0);
    if (b.count[0] == 0) /* an empty blob is one empty chunk (mipsvm.preimage) */
        b.count[0] = 1;
    while (b.count[top] > MAX_TOP) {
        if (top + 1 > MAX_LEVELS)
            return bad;
        b.count[top + 1] = (b.count[top] + FANOUT - 1) / FANOUT;
        top++;
    }
    if ((mlen - 8u) / 32u != b.count[top])
        return bad;
    if (!(b.data = (uint8_t *)mlk_alloc(c, b.len)))
        return MLK_E_NOMEM;
    for (uint32_t i = 0; i < b.count[top]; i++)
        if ((rc = fetch(&b, manifest + 8 + 32u * i, top, i)) != MLK_OK)
            return rc;
    *data = b.data;
    *len = b.len;
    return MLK_OK;
}

/* ---- main ---------------------------------------------------------------------------- */

static uint8_t model_id[32] __attribute__((aligned(32)));
static uint8_t input_id[32] __attribute__((aligned(32)));
static uint8_t claim[32] __attribute__((aligned(32)));

int guest_main(void)
{
    mlk_ctx c;
    uint8_t *model, *input, *out = 0, hash[32];
    uint32_t model_len, input_len, out_len = 0, err;
    int rc;

    memset(&c, 0, sizeof c);
    c.get = guest_get;
    if ((rc = read_local(1, model_id)) != MLK_OK || (rc = read_local(2, input_id)) != MLK_OK ||
        (rc = read_local(3, claim)) != MLK_OK)
        return rc;
    if ((rc = load_blob(&c, model_id, MLK_MAX_MODEL_BYTES, MLK_E_MODEL, &model, &model_len)) != MLK_OK)
        return rc;
    if ((rc = load_blob(&c, input_id, MLK_MAX_INPUT_BYTES, MLK_E_INPUT, &input, &input_len)) != MLK_OK)
        return rc;
    if ((rc = mlk_load(&c, model, model_len)) != MLK_OK)
        return rc;
    if ((rc = mlk_run(&c, input, input_len, &out, &out_len)) != MLK_OK)
        return rc;

    uint32_t w = sys(SYS_WRITE, FD_OUTPUT, (uint32_t)out, out_len, 0, &err);
    if (err || w != out_len)
        return MLK_E_ORACLE;
    mlk_keccak256(out, out_len, hash);
    return memcmp(hash, claim, 32) == 0 ? MLK_OK : MLK_MISMATCH;
}
