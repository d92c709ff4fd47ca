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
#include "vmabi.h" /* the VM's syscall numbers, file descriptors, keys, blob sizes (mipsvm/csrc) */

#define MAX_LEVELS 4u /* blob levels below the manifest: 511 * 512^4 chunks, far past any size limit */

#define STR(x) STR_(x)
#define STR_(x) #x

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
        "    li $v0, " STR(VM_SYS_EXIT_GROUP) "\n"
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
        uint32_t p = sys(VM_SYS_MMAP, 0, need, 3 /* RW */, 0x802 /* PRIVATE|ANON */, &err);
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
static uint8_t manifest[VM_CHUNK] __attribute__((aligned(32)));
static uint8_t level_buf[MAX_LEVELS][VM_CHUNK] __attribute__((aligned(32)));

/* Select a key: write(6, buf, 32) from a 32-byte aligned buffer. */
static int select_key(const uint8_t *key)
{
    uint32_t err;
    mlk_memcpy(key_buf, key, 32);
    uint32_t r = sys(VM_SYS_WRITE, VM_FD_PREIMAGE_KEY, (uint32_t)key_buf, 32, 0, &err);
    return err || r != 32 ? MLK_E_ORACLE : MLK_OK;
}

/* Read exactly n stream bytes to dst.  Each read(5, ...) copies up to the end
 * of the 32-byte leaf holding dst, so an aligned dst takes 32 bytes a step. */
static int read_exact(uint8_t *dst, uint32_t n)
{
    while (n) {
        uint32_t err, got = sys(VM_SYS_READ, VM_FD_PREIMAGE_READ, (uint32_t)dst, n, 0, &err);
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
    key[0] = VM_KEY_TYPE_LOCAL;
    wr32(key + 28, index);
    int rc = open_key(key, VM_LOCAL_VALUE_SIZE, MLK_E_ORACLE, &len);
    if (rc == MLK_OK && len != VM_LOCAL_VALUE_SIZE)
        rc = MLK_E_ORACLE;
    return rc != MLK_OK ? rc : read_exact(out, VM_LOCAL_VALUE_SIZE);
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
    int rc = open_key(key, VM_CHUNK, b->bad, &len);
    if (rc != MLK_OK)
        return rc;
    if (level == 0) {
        uint32_t off = idx * VM_CHUNK, want = b->len - off < VM_CHUNK ? b->len - off : VM_CHUNK;
        return len != want ? b->bad : read_exact(b->data + off, len);
    }
    uint32_t first = idx * VM_KEYS_PER_NODE, n = b->count[level - 1] - first;
    if (n > VM_KEYS_PER_NODE)
        n = VM_KEYS_PER_NODE;
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

/* Open blob `id`: read its manifest (u64 total length ++ the top-level
 * keys) into man and check it against the length; *top is the level of its
 * keys.  Lengths over `max` give `bad` (MLK_E_MODEL or MLK_E_INPUT). */
static int open_blob(blob *b, const uint8_t *id, uint32_t max, int bad, uint8_t *man, uint32_t *top)
{
    uint32_t mlen;
    int rc;
    b->bad = bad;
    *top = 0;
    if (id[0] != VM_KEY_TYPE_KECCAK) /* a blob id is a keccak key */
        return bad;
    if ((rc = open_key(id, VM_CHUNK, bad, &mlen)) != MLK_OK)
        return rc;
    if (mlen < 8 || (mlen - 8u) % 32u != 0)
        return bad;
    if ((rc = read_exact(man, mlen)) != MLK_OK)
        return rc;
    if (rd32(man) != 0 || rd32(man + 4) > max)
        return bad;
    b->len = rd32(man + 4);
    /* level sizes: chunks, then groups of 512, up to the first level with
     * at most 511 nodes (the manifest's keys) */
    b->count[0] = b->len / VM_CHUNK + (b->len % VM_CHUNK != 0);
    if (b->count[0] == 0) /* an empty blob is one empty chunk (mipsvm.preimage) */
        b->count[0] = 1;
    while (b->count[*top] > VM_MAX_MANIFEST_KEYS) {
        if (*top + 1 > MAX_LEVELS)
            return bad;
        b->count[*top + 1] = (b->count[*top] + VM_KEYS_PER_NODE - 1) / VM_KEYS_PER_NODE;
        (*top)++;
    }
    if ((mlen - 8u) / 32u != b->count[*top])
        return bad;
    return MLK_OK;
}

/* Load blob `id` whole (see open_blob). */
static int load_blob(mlk_ctx *c, const uint8_t *id, uint32_t max, int bad, uint8_t **data, uint32_t *len)
{
    blob b;
    uint32_t top;
    int rc;
    if ((rc = open_blob(&b, id, max, bad, manifest, &top)) != MLK_OK)
        return rc;
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

#ifndef MLKIT_EXEC
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
    if ((rc = read_local(VM_LOCAL_MODEL_ID, model_id)) != MLK_OK ||
        (rc = read_local(VM_LOCAL_INPUT_ID, input_id)) != MLK_OK ||
        (rc = read_local(VM_LOCAL_OUTPUT_HASH, claim)) != MLK_OK)
        return rc;
    if ((rc = load_blob(&c, model_id, MLK_MAX_MODEL_BYTES, MLK_E_MODEL, &model, &model_len)) != MLK_OK)
        return rc;
    if ((rc = load_blob(&c, input_id, MLK_MAX_INPUT_BYTES, MLK_E_INPUT, &input, &input_len)) != MLK_OK)
        return rc;
    if ((rc = mlk_load(&c, model, model_len)) != MLK_OK)
        return rc;
    if ((rc = mlk_run(&c, input, input_len, &out, &out_len)) != MLK_OK)
        return rc;

    uint32_t w = sys(VM_SYS_WRITE, VM_FD_OUTPUT, (uint32_t)out, out_len, 0, &err);
    if (err || w != out_len)
        return MLK_E_ORACLE;
    mlk_keccak256(out, out_len, hash);
    return memcmp(hash, claim, 32) == 0 ? MLK_OK : MLK_MISMATCH;
}
#endif /* !MLKIT_EXEC */

#ifdef MLKIT_EXEC
/* ==== the node guest of the split game (mlkit-exec.elf) ======================================
 *
 * Local 1 is the model id, local 4 the keccak key of an execution record
 * (mlkit.state.ExecRecord).  It reads the model's header and tables and only
 * the parts of its constants the execution uses (random access into the
 * model blob), the slots the record reads by their blob ids, runs execution
 * `exec` of the schedule (exec.c), writes the computed value to fd 3 and
 * exits 0 iff it equals the record's new value; 1 if it differs or the
 * record's slots are not the schedule's; 2-5 as the whole-run guest. */

_Static_assert(VM_CHUNK == 16384 && VM_KEYS_PER_NODE == 512 && VM_MAX_MANIFEST_KEYS == 511,
               "exec.c's blob constants are the VM's");
_Static_assert(VM_KEY_TYPE_KECCAK == 2, "exec.c's key type is the VM's");

#define RECORD_MAX (77u + 36u * MLK_MAX_READS)

static uint8_t header[32] __attribute__((aligned(32)));
static uint8_t record_key[32] __attribute__((aligned(32)));
static uint8_t record[RECORD_MAX + 3] __attribute__((aligned(32)));
static uint8_t value[32] __attribute__((aligned(32)));
static uint8_t model_manifest[VM_CHUNK] __attribute__((aligned(32)));
static uint8_t model_node[MAX_LEVELS][VM_CHUNK] __attribute__((aligned(32)));
static uint8_t discard[VM_CHUNK] __attribute__((aligned(32)));

/* The model blob, read at random: one cached node per level. */
static struct {
    blob b;
    uint32_t top;
    uint32_t cached[MAX_LEVELS]; /* index + 1 of the node of level l + 1 in model_node[l] */
} model;

/* The key of node idx of `level` into key (a pointer into the manifest or a
 * cached node). */
static int model_key(uint32_t level, uint32_t idx, const uint8_t **key)
{
    if (level == model.top) {
        *key = model_manifest + 8 + 32u * idx;
        return MLK_OK;
    }
    uint32_t parent = idx / VM_KEYS_PER_NODE;
    uint8_t *node = model_node[level];
    if (model.cached[level] != parent + 1u) {
        const uint8_t *pkey;
        uint32_t len, n = model.b.count[level] - parent * VM_KEYS_PER_NODE;
        int rc = model_key(level + 1, parent, &pkey);
        if (rc == MLK_OK)
            rc = open_key(pkey, VM_CHUNK, MLK_E_MODEL, &len);
        if (n > VM_KEYS_PER_NODE)
            n = VM_KEYS_PER_NODE;
        if (rc == MLK_OK && len != 32u * n)
            rc = MLK_E_MODEL;
        if (rc == MLK_OK)
            rc = read_exact(node, len);
        if (rc != MLK_OK) {
            model.cached[level] = 0;
            return rc;
        }
        model.cached[level] = parent + 1u;
    }
    *key = node + 32u * (idx % VM_KEYS_PER_NODE);
    return MLK_OK;
}

/* Bytes [off, off + n) of the model into dst. */
static int model_read(uint32_t off, uint32_t n, uint8_t *dst)
{
    while (n) {
        uint32_t ci = off / VM_CHUNK, a = off % VM_CHUNK, len;
        uint32_t want = model.b.len - ci * VM_CHUNK < VM_CHUNK ? model.b.len - ci * VM_CHUNK : VM_CHUNK;
        uint32_t b = a + n < want ? a + n : want;
        const uint8_t *key;
        int rc = model_key(0, ci, &key);
        if (rc == MLK_OK)
            rc = open_key(key, VM_CHUNK, MLK_E_MODEL, &len);
        if (rc == MLK_OK && len != want)
            rc = MLK_E_MODEL;
        if (rc == MLK_OK && a) /* the stream is read from its start */
            rc = read_exact(discard, a);
        if (rc == MLK_OK)
            rc = read_exact(dst, b - a);
        if (rc != MLK_OK)
            return rc;
        dst += b - a;
        off += b - a;
        n -= b - a;
    }
    return MLK_OK;
}

/* c->const_data: a buffer for the whole tensor (fresh heap: zeros), the
 * elements [lo, hi) read from the model blob. */
static int exec_const_data(mlk_ctx *c, mlk_tensor *t, uint32_t lo, uint32_t hi)
{
    uint8_t *d = (uint8_t *)c->get(c, (t->numel * 4u + 31u) & ~31u);
    if (!d)
        return MLK_E_NOMEM;
    t->data = d;
    return hi > lo ? model_read(t->offset + 4u * lo, 4u * (hi - lo), d + 4u * lo) : MLK_OK;
}

/* c->slot_data: the blob of the slot's value. */
static int exec_slot_data(mlk_ctx *c, uint32_t slot, const uint8_t *id, uint32_t max, const uint8_t **data,
                          uint32_t *len)
{
    uint8_t *p = 0;
    int rc = load_blob(c, id, max, MLK_E_INPUT, &p, len);
    *data = p;
    return rc;
}

int guest_main(void)
{
    mlk_ctx c;
    mlk_record rec;
    const uint8_t *bytes;
    uint8_t *tables;
    uint32_t len, n_bytes, err;
    int rc;

    memset(&c, 0, sizeof c);
    c.get = guest_get;
    c.lazy = 1;
    c.slot_data = exec_slot_data;
    c.const_data = exec_const_data;
    if ((rc = read_local(VM_LOCAL_MODEL_ID, model_id)) != MLK_OK ||
        (rc = read_local(VM_LOCAL_EXEC_RECORD, record_key)) != MLK_OK)
        return rc;
    /* the record: a keccak preimage of at most RECORD_MAX bytes */
    if (record_key[0] != VM_KEY_TYPE_KECCAK)
        return MLK_E_ORACLE;
    if ((rc = open_key(record_key, RECORD_MAX, MLK_E_ORACLE, &len)) != MLK_OK ||
        (rc = read_exact(record, len)) != MLK_OK || (rc = mlk_record_parse(record, len, &rec)) != MLK_OK)
        return rc;
    /* the model's header and tables */
    if ((rc = open_blob(&model.b, model_id, MLK_MAX_MODEL_BYTES, MLK_E_MODEL, model_manifest, &model.top)) !=
        MLK_OK)
        return rc;
    uint32_t n = model.b.len < MLK_HEADER_SIZE ? model.b.len : MLK_HEADER_SIZE;
    if ((rc = model_read(0, n, header)) != MLK_OK)
        return rc;
    uint32_t end = n == MLK_HEADER_SIZE ? mlk_tables_end(header) : 0;
    if (end && end <= model.b.len)
        n = end;
    if (!(tables = (uint8_t *)mlk_alloc(&c, n)))
        return MLK_E_NOMEM;
    if ((rc = model_read(0, n, tables)) != MLK_OK)
        return rc;
    if ((rc = mlk_load(&c, tables, model.b.len)) != MLK_OK || (rc = mlk_sched_check(&c)) != MLK_OK ||
        (rc = mlk_check_const_ids(&c)) != MLK_OK)
        return rc;
    /* the execution */
    rc = mlk_exec(&c, &rec, value, &bytes, &n_bytes);
    if (rc != MLK_OK)
        return rc;
    uint32_t w = sys(VM_SYS_WRITE, VM_FD_OUTPUT, (uint32_t)value, 32, 0, &err);
    if (err || w != 32)
        return MLK_E_ORACLE;
    return memcmp(value, rec.new_value, 32) == 0 ? MLK_OK : MLK_MISMATCH;
}
#endif /* MLKIT_EXEC */
