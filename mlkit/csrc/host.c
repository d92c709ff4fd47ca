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
uint32_t mlkit_abi_version(void) { return 1; }

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
