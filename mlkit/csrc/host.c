/*
 * host.c - the native build of mlkit: a shared library for the host (used by
 * mlkit/native.py through ctypes).  Same graph.c / ops.c as the guest; the
 * differences are confined to memory (malloc instead of mmap) and the
 * byte order (the host is little-endian: constants and inputs are
 * byte-swapped once when loaded, outputs are written big-endian).
 *
 * The memory budget is enforced exactly as in the guest (the model and input
 * buffers the guest would hold are charged too), so a model that runs out
 * of memory in the VM returns MLK_E_NOMEM here as well.
 */
#include <stdlib.h>
#include <string.h>

#include "mlkit.h"

#if defined(__i386__) && !defined(__SSE2_MATH__)
#error "x87 arithmetic has excess precision: build with -msse2 -mfpmath=sse"
#endif

/* Every allocation of one run, chained so they can be freed together. */
typedef struct block {
    struct block *next;
    uint64_t pad[3]; /* keep the payload 32-byte aligned */
} block;

static void *host_get(mlk_ctx *c, uint32_t n)
{
    block *b = (block *)aligned_alloc(32, sizeof(block) + (((size_t)n + 31u) & ~(size_t)31u));
    if (!b)
        return 0;
    b->next = (block *)c->platform;
    c->platform = b;
    return b + 1;
}

static void host_free_all(mlk_ctx *c)
{
    block *b = (block *)c->platform;
    while (b) {
        block *next = b->next;
        free(b);
        b = next;
    }
    c->platform = 0;
}

/* The run happens with IEEE defaults: round to nearest, no flush-to-zero or
 * denormals-are-zero (a library built with -ffast-math may have set them). */
typedef struct {
#if defined(__x86_64__) || defined(__i386__)
    uint32_t mxcsr;
#elif defined(__aarch64__)
    uint64_t fpcr;
#else
    int unused;
#endif
} fp_env;

static void fp_enter(fp_env *e)
{
#if defined(__x86_64__) || defined(__i386__)
    uint32_t std = 0x1F80u; /* all exceptions masked, RN, FTZ = DAZ = 0 */
    __asm__ volatile("stmxcsr %0" : "=m"(e->mxcsr));
    __asm__ volatile("ldmxcsr %0" : : "m"(std));
#elif defined(__aarch64__)
    uint64_t std = 0; /* RN, FZ = 0, DN = 0 */
    __asm__ volatile("mrs %0, fpcr" : "=r"(e->fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(std));
#else
    (void)e;
#endif
}

static void fp_leave(const fp_env *e)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("ldmxcsr %0" : : "m"(e->mxcsr));
#elif defined(__aarch64__)
    __asm__ volatile("msr fpcr, %0" : : "r"(e->fpcr));
#else
    (void)e;
#endif
}

/* Version of this C API (bump when a signature or a code changes). */
uint32_t mlkit_abi_version(void) { return 2; }

/* One run; on success *res (res_len bytes) lives in c's blocks until host_free_all. */
static int run_in(mlk_ctx *c, const uint8_t *model, size_t n, const uint8_t *input, size_t m, uint8_t **res,
                  uint32_t *res_len)
{
    fp_env env;
    int rc;
    /* the guest's order: model size, model buffer, input size, input buffer */
    if (!model || n > MLK_MAX_MODEL_BYTES)
        return MLK_E_MODEL;
    memset(c, 0, sizeof *c);
    c->get = host_get;
    c->get_raw = host_get;
    if (mlk_charge(c, (uint32_t)n) != MLK_OK)
        return MLK_E_NOMEM;
    if (!input || m > MLK_MAX_INPUT_BYTES)
        return MLK_E_INPUT;
    if (mlk_charge(c, (uint32_t)m) != MLK_OK)
        return MLK_E_NOMEM;
    fp_enter(&env);
    rc = mlk_load(c, model, (uint32_t)n);
    if (rc == MLK_OK)
        rc = mlk_run(c, input, (uint32_t)m, res, res_len);
    fp_leave(&env);
    return rc;
}

/*
 * Run `model` on `input` (both in the big-endian wire formats of
 * docs/model-format.md) and write the output payload to out[0 .. *out_len).
 * Returns MLK_OK, MLK_E_MODEL, MLK_E_INPUT, MLK_E_NOMEM, or MLK_E_OUTCAP
 * when cap is too small (then *out_len is the size needed).
 */
int mlkit_run(const uint8_t *model, size_t n, const uint8_t *input, size_t m, uint8_t *out, size_t cap,
              size_t *out_len)
{
    mlk_ctx c;
    uint8_t *res = 0;
    uint32_t res_len = 0;
    int rc = run_in(&c, model, n, input, m, &res, &res_len);
    if (out_len)
        *out_len = rc == MLK_OK ? res_len : 0;
    if (rc == MLK_OK) {
        if (!out || res_len > cap)
            rc = MLK_E_OUTCAP;
        else
            memcpy(out, res, res_len);
    }
    host_free_all(&c);
    return rc;
}

/* As mlkit_run, but the output is returned in *out, a malloc'd buffer of
 * *out_len bytes that the caller releases with mlkit_free (0 on failure). */
int mlkit_run_alloc(const uint8_t *model, size_t n, const uint8_t *input, size_t m, uint8_t **out,
                    size_t *out_len)
{
    mlk_ctx c;
    uint8_t *res = 0;
    uint32_t res_len = 0;
    int rc = run_in(&c, model, n, input, m, &res, &res_len);
    *out = 0;
    *out_len = 0;
    if (rc == MLK_OK) {
        if ((*out = (uint8_t *)malloc(res_len ? res_len : 1)) == 0) {
            rc = MLK_E_NOMEM;
        } else {
            memcpy(*out, res, res_len);
            *out_len = res_len;
        }
    }
    host_free_all(&c);
    return rc;
}

void mlkit_free(void *p) { free(p); }

/* Validate a model only (MLK_OK or MLK_E_MODEL / MLK_E_NOMEM). */
int mlkit_validate(const uint8_t *model, size_t n)
{
    mlk_ctx c;
    int rc;
    if (!model || n > MLK_MAX_MODEL_BYTES)
        return MLK_E_MODEL;
    memset(&c, 0, sizeof c);
    c.get = host_get;
    c.get_raw = host_get;
    rc = mlk_charge(&c, (uint32_t)n);
    if (rc == MLK_OK)
        rc = mlk_load(&c, model, (uint32_t)n);
    host_free_all(&c);
    return rc;
}

void mlkit_keccak256(const uint8_t *data, size_t n, uint8_t *out32)
{
    mlk_keccak256(data, (uint32_t)n, out32);
}

/* ==== the split game (exec.c, schedule.c) ==================================== */

/* Free the blocks allocated after `mark` (one execution's memory). */
static void host_release(mlk_ctx *c, void *mark)
{
    block *b = (block *)c->platform;
    while (b && b != (block *)mark) {
        block *next = b->next;
        free(b);
        b = next;
    }
    c->platform = b;
}

/* Load a model for executions: charge its tables (as the node guest does),
 * then mlk_load (lazy: constants come from const_data). */
static int exec_load(mlk_ctx *c, const uint8_t *model, size_t n, int lazy)
{
    memset(c, 0, sizeof *c);
    c->get = host_get;
    c->get_raw = host_get;
    c->lazy = (uint8_t)lazy;
    if (!model || n > MLK_MAX_MODEL_BYTES)
        return MLK_E_MODEL;
    uint32_t end = n >= MLK_HEADER_SIZE ? mlk_tables_end(model) : 0;
    uint32_t tables = end && end <= n ? end : (uint32_t)(n < MLK_HEADER_SIZE ? n : MLK_HEADER_SIZE);
    if (mlk_charge(c, tables ? tables : 1) != MLK_OK)
        return MLK_E_NOMEM;
    int rc = mlk_load(c, model, (uint32_t)n);
    if (rc == MLK_OK)
        rc = mlk_sched_check(c);
    return rc;
}

/* const_data from the model in memory: the elements [lo, hi), byte-swapped
 * into a zeroed buffer of the whole tensor (the guest's buffer starts zeroed
 * too). */
static int host_const_data(mlk_ctx *c, mlk_tensor *t, uint32_t lo, uint32_t hi)
{
    const uint8_t *f = c->file + t->offset;
    uint32_t *d = (uint32_t *)host_get(c, t->numel * 4u);
    if (!d)
        return MLK_E_NOMEM;
    memset(d, 0, t->numel * 4u);
    for (uint32_t i = lo; i < hi; i++)
        d[i] = rd32(f + 4u * i);
    t->data = d;
    return MLK_OK;
}

/* Slot bytes of a record, from the caller's arrays (by position in the record). */
typedef struct {
    const mlk_record *rec;
    const uint8_t *const *data;
    const size_t *lens;
} exec_slots;

static int charge_slot(mlk_ctx *c, uint32_t len, uint32_t max)
{
    if (len > max)
        return MLK_E_INPUT;
    return mlk_charge(c, len ? len : 1);
}

static int record_slot_data(mlk_ctx *c, uint32_t slot, const uint8_t *value, uint32_t max, const uint8_t **p,
                            uint32_t *len)
{
    const exec_slots *x = (const exec_slots *)c->exec_user;
    (void)value;
    for (uint32_t i = 0; i < x->rec->n_reads; i++) {
        if (x->rec->slots[i] != slot)
            continue;
        if (!x->data[i] || x->lens[i] > MLK_MAX_MODEL_BYTES)
            return MLK_E_INPUT; /* nothing for this slot: as a value with no blob */
        *p = x->data[i];
        *len = (uint32_t)x->lens[i];
        return charge_slot(c, *len, max);
    }
    return MLK_E_INPUT;
}

/*
 * One execution, as the node guest runs it: the record (ExecRecord bytes)
 * and the bytes of each slot it reads (data[i], lens[i] for the record's
 * read i; data[i] = 0 for none).  Returns the guest's exit code: 0 the
 * computed value equals the record's new_value, 1 it differs or the record
 * is not the schedule's, 2-5 the PANIC codes; *computed = 1 when value32
 * holds the computed value (what the guest writes to fd 3).
 */
int mlkit_exec(const uint8_t *model, size_t n, const uint8_t *record, size_t rlen, const uint8_t *const *data,
               const size_t *lens, uint8_t *value32, int *computed)
{
    mlk_ctx c;
    mlk_record rec;
    exec_slots x;
    fp_env env;
    const uint8_t *bytes;
    uint32_t n_bytes;
    *computed = 0;
    if (!record || rlen > 1024 || mlk_record_parse(record, (uint32_t)rlen, &rec) != MLK_OK)
        return MLK_E_ORACLE;
    fp_enter(&env);
    int rc = exec_load(&c, model, n, 1);
    c.const_data = host_const_data;
    if (rc == MLK_OK)
        rc = mlk_check_const_ids(&c);
    if (rc == MLK_OK) {
        x.rec = &rec, x.data = data, x.lens = lens;
        c.slot_data = record_slot_data;
        c.exec_user = &x;
        rc = mlk_exec(&c, &rec, value32, &bytes, &n_bytes);
        if (rc == MLK_OK) {
            *computed = 1;
            rc = memcmp(value32, rec.new_value, 32) == 0 ? MLK_OK : MLK_MISMATCH;
        }
    }
    fp_leave(&env);
    host_free_all(&c);
    return rc;
}

/* The schedule: N_exec in *len, and the entries k = ks[i] as 13 words each
 * (kind, arg, step, out_slot, n_reads, reads[8]).  Generate mode needs P and
 * N >= 1 with P + N - 1 <= 65536.  Returns 0, 2 (a model the split game
 * cannot run) or 3. */
int mlkit_schedule(const uint8_t *model, size_t n, uint32_t n_prompt, uint32_t n_new, const uint64_t *ks,
                   size_t nk, uint32_t *out, uint64_t *len)
{
    mlk_ctx c;
    int rc = exec_load(&c, model, n, 1);
    if (rc == MLK_OK && c.mode == MLK_MODE_GENERATE &&
        (n_prompt < 1 || n_new < 1 || n_new > MLK_MAX_CTX || n_prompt > MLK_MAX_CTX - n_new + 1))
        rc = MLK_E_INPUT;
    if (rc == MLK_OK) {
        *len = mlk_sched_len(&c, n_prompt, n_new);
        for (size_t i = 0; i < nk; i++) {
            mlk_entry e;
            if (ks[i] == 0)
                memset(&e, 0, sizeof e);
            else
                mlk_sched_entry(&c, n_prompt, n_new, ks[i], &e);
            uint32_t *w = out + 13 * i;
            w[0] = e.kind, w[1] = e.arg, w[2] = e.step, w[3] = e.out_slot, w[4] = e.n_reads;
            for (uint32_t k = 0; k < MLK_MAX_READS; k++)
                w[5 + k] = k < e.n_reads ? e.reads[k] : 0;
        }
    }
    host_free_all(&c);
    return rc;
}

/* The blob id of data (docs/vm-spec.md section 6), as the guest computes it. */
int mlkit_blob_id(const uint8_t *data, size_t n, uint8_t *id32)
{
    mlk_ctx c;
    memset(&c, 0, sizeof c);
    c.get = host_get;
    c.get_raw = host_get;
    int rc = n > MLK_HEAP_BUDGET ? MLK_E_NOMEM : mlk_blob_id(&c, data, (uint32_t)n, id32);
    host_free_all(&c);
    return rc;
}

/* ---- every state of a request ---------------------------------------------------- */

typedef void (*mlkit_slot_cb)(void *user, uint64_t exec, uint32_t slot, const uint8_t *bytes, size_t len);

#define MLKIT_EMIT_ALL 1u /* mlkit_states: the callback after every execution */

typedef struct {
    uint8_t (*value)[32]; /* per slot: its value in the current state */
    uint8_t **bytes;      /* its bytes (malloc'd; the input's: the caller's) */
    uint32_t *len;
    uint32_t n_slots;
    const uint8_t *input;
} slot_map;

static int map_slot_data(mlk_ctx *c, uint32_t slot, const uint8_t *value, uint32_t max, const uint8_t **p,
                         uint32_t *len)
{
    const slot_map *m = (const slot_map *)c->exec_user;
    (void)value;
    if (slot >= m->n_slots || !m->bytes[slot])
        return MLK_E_INPUT;
    *p = m->bytes[slot];
    *len = m->len[slot];
    return charge_slot(c, *len, max);
}

static void map_free(slot_map *m)
{
    if (m->bytes)
        for (uint32_t i = 0; i < m->n_slots; i++)
            if (m->bytes[i] != m->input)
                free(m->bytes[i]);
    free(m->value);
    free(m->bytes);
    free(m->len);
}

/*
 * Run a request execution by execution, as the split game sees it, without
 * the VM: executions 1 .. min(stop, N_exec) (stop 0: all), each computed as
 * the node guest computes it (mlk_exec).  values[k-1] (32 bytes) is the new
 * value of execution k's slot; *count the number of executions run, or
 * N_exec when cap is too small (then the return is MLK_E_OUTCAP and nothing
 * ran).  Then cb(user, 0, slot, bytes, len) for each slot of want[] with
 * its bytes in the last state (0, 0 for an unset slot; the input payload for
 * SLOT_INPUT; the output payload for SLOT_OUTPUT), and with MLKIT_EMIT_ALL
 * also after each execution k for the slot it wrote.  *out (mlkit_free) is
 * the output payload if OUTPUT ran, root32 the root of the last state.
 * Returns 0 or the first execution's error (2, 3, 4), *count executions
 * having completed.
 */
int mlkit_states(const uint8_t *model, size_t n, const uint8_t *input, size_t m, uint64_t stop,
                 uint8_t *values, uint64_t cap, uint64_t *count, const uint32_t *want, uint32_t n_want,
                 mlkit_slot_cb cb, void *user, uint32_t flags, uint8_t **out, size_t *out_len, uint8_t *root32)
{
    mlk_ctx c;
    slot_map map;
    fp_env env;
    uint64_t total = 0;
    int rc;

    *count = 0;
    *out = 0;
    *out_len = 0;
    memset(&map, 0, sizeof map);
    fp_enter(&env);
    rc = exec_load(&c, model, n, 0);
    if (rc == MLK_OK && (!input || m > MLK_MAX_INPUT_BYTES))
        rc = MLK_E_INPUT;
    if (rc == MLK_OK) {
        uint32_t n_attn = 0;
        for (uint32_t j = 0; j < c.n_nodes; j++)
            n_attn += c.nodes[j].op == OP_ATTENTION;
        map.n_slots = MLK_SLOT_TENSOR0 + c.n_tensors + n_attn;
        map.value = calloc(map.n_slots, 32);
        map.bytes = calloc(map.n_slots, sizeof(uint8_t *));
        map.len = calloc(map.n_slots, sizeof(uint32_t));
        map.input = input;
        if (!map.value || !map.bytes || !map.len)
            rc = MLK_E_NOMEM;
    }
    if (rc == MLK_OK) { /* S_0: the input's blob id */
        void *mark = c.platform;
        uint32_t base = c.charged;
        rc = mlk_blob_id(&c, input, (uint32_t)m, map.value[MLK_SLOT_INPUT]);
        map.bytes[MLK_SLOT_INPUT] = (uint8_t *)(uintptr_t)input;
        map.len[MLK_SLOT_INPUT] = (uint32_t)m;
        host_release(&c, mark);
        c.charged = base;
    }
    c.slot_data = map_slot_data;
    c.const_data = host_const_data;
    c.exec_user = &map;
    total = c.mode == MLK_MODE_GENERATE ? 1 : (rc == MLK_OK ? mlk_sched_len(&c, 0, 0) : 0);
    const uint32_t base = c.charged;
    void *mark = c.platform;
    uint32_t n_prompt = 0, n_new = 0;
    for (uint64_t k = 1; rc == MLK_OK && k <= total && (stop == 0 || k <= stop); k++) {
        mlk_entry e;
        mlk_record rec;
        uint8_t zero[32] = {0}, v[32];
        const uint8_t *bytes;
        uint32_t n_bytes;
        mlk_sched_entry(&c, n_prompt, n_new, k, &e);
        rec.exec = k, rec.out_slot = e.out_slot, rec.n_reads = e.n_reads;
        rec.old_value = map.value[e.out_slot], rec.new_value = zero;
        for (uint32_t i = 0; i < e.n_reads; i++)
            rec.slots[i] = e.reads[i], rec.values[i] = map.value[e.reads[i]];
        c.charged = base;
        rc = mlk_exec(&c, &rec, v, &bytes, &n_bytes);
        if (rc == MLK_OK && bytes) { /* keep the slot's bytes */
            uint8_t *copy = (uint8_t *)malloc(n_bytes ? n_bytes : 1);
            if (!copy) {
                rc = MLK_E_NOMEM;
            } else {
                memcpy(copy, bytes, n_bytes);
                if (map.bytes[e.out_slot] != map.input)
                    free(map.bytes[e.out_slot]);
                map.bytes[e.out_slot] = copy;
                map.len[e.out_slot] = n_bytes;
            }
        }
        host_release(&c, mark);
        if (rc != MLK_OK)
            break;
        if (k == 1 && c.mode == MLK_MODE_GENERATE) { /* P and N from the control */
            n_prompt = rd32(map.bytes[MLK_SLOT_CONTROL] + 12);
            n_new = rd32(map.bytes[MLK_SLOT_CONTROL] + 16);
            total = mlk_sched_len(&c, n_prompt, n_new);
        }
        if (k == 1 && (stop == 0 || stop > total ? total : stop) > cap) {
            rc = MLK_E_OUTCAP;
            *count = total;
            break;
        }
        memcpy(map.value[e.out_slot], v, 32);
        memcpy(values + 32 * (k - 1), v, 32);
        *count = k;
        if ((flags & MLKIT_EMIT_ALL) && cb)
            cb(user, k, e.out_slot, map.bytes[e.out_slot], map.len[e.out_slot]);
    }
    if (rc == MLK_OK && cb)
        for (uint32_t i = 0; i < n_want; i++) {
            uint32_t slot = want[i];
            int set = slot < map.n_slots && map.bytes[slot];
            cb(user, 0, slot, set ? map.bytes[slot] : 0, set ? map.len[slot] : 0);
        }
    if (rc == MLK_OK) {
        uint8_t(*nodes)[32] = malloc(32u * (map.n_slots + 1u));
        if (!nodes)
            rc = MLK_E_NOMEM;
        else
            mlk_slot_root(&map.value[0][0], map.n_slots, nodes, root32);
        free(nodes);
    }
    if (rc == MLK_OK && map.bytes[MLK_SLOT_OUTPUT]) {
        *out_len = map.len[MLK_SLOT_OUTPUT];
        *out = (uint8_t *)malloc(*out_len ? *out_len : 1);
        if (*out)
            memcpy(*out, map.bytes[MLK_SLOT_OUTPUT], *out_len);
        else
            rc = MLK_E_NOMEM;
    }
    fp_leave(&env);
    map_free(&map);
    host_free_all(&c);
    return rc;
}
