/*
 * mlkit.h - the rollml DNN runtime: model format constants, tensors, ops,
 * the graph interpreter and the platform hooks (guest.c / host.c).
 *
 * One C code base, two builds:
 *   - MIPS32 guest (guest.c): freestanding, -msoft-float, so every `float`
 *     operator below becomes a call to the soft-float ABI (softfloat.c), and
 *     the dot products of ops.c run the integer kernel sf_dot;
 *   - native shared library (host.c): the host FPU, -ffp-contract=off (with
 *     -DMLK_SOFT_DOT its dot products run sf_dot too: the tests compare).
 * Both give the same bits because every basic operation is correctly rounded
 * IEEE binary32 (round to nearest even) in both, no operation is fused or
 * reordered (sf_dot keeps both roundings of each term), `double` is never
 * used, and the transcendental functions come from mathf.c (integer code)
 * in both builds.  NaN payloads may differ
 * between the builds, so NaNs are canonicalized when outputs are written
 * and no code branches on the bits of a NaN.
 *
 * The model file and payload formats are specified in docs/model-format.md;
 * mlkit/format.py is the Python side and must validate exactly as graph.c.
 */
#ifndef ROLLML_MLKIT_H
#define ROLLML_MLKIT_H

#include <stdint.h>
#include "softfloat.h"
#include "mathf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define MLK_HOST_BE 1
#else
#define MLK_HOST_BE 0
#endif

/* ---- result / exit codes (docs/model-format.md, "Exit codes") ---------- */
#define MLK_OK 0          /* success (guest: output hash == claim)          */
#define MLK_MISMATCH 1    /* guest only: output hash != claim               */
#define MLK_E_MODEL 2     /* malformed model (file, blob or graph)          */
#define MLK_E_INPUT 3     /* malformed input (payload, blob, or its values) */
#define MLK_E_NOMEM 4     /* the memory budget is exhausted                 */
#define MLK_E_ORACLE 5    /* guest only: bad local key value / syscall error */
#define MLK_E_OUTCAP 6    /* host only: the output buffer is too small      */

/* ---- format constants ---------------------------------------------------- */
#define MLK_MAGIC 0x524D4C4Du   /* "RMLM" */
#define MLK_PAYLOAD_MAGIC 0x524D4C44u /* "RMLD" */
#define MLK_VERSION 1u           /* models without 8-bit tensors or quantized ops */
#define MLK_VERSION_Q 2u         /* models with them (docs: "Quantized models") */
#define MLK_MODE_PLAIN 0u
#define MLK_MODE_GENERATE 1u

#define MLK_HEADER_SIZE 32u
#define MLK_TENSOR_ENTRY 32u
#define MLK_NODE_ENTRY 80u
#define MLK_DATA_ALIGN 16u

#define MLK_DT_F32 1u
#define MLK_DT_I32 2u
#define MLK_DT_I8 3u        /* 1 byte per element (version 2) */
#define MLK_DT_U8 4u        /* 1 byte per element (version 2) */
#define MLK_KIND_ACT 0u     /* activation: graph input or a node's output */
#define MLK_KIND_CONST 1u   /* constant: data stored in the file */

/* Limits. */
#define MLK_MAX_MODEL_BYTES 0x30000000u  /* 768 MiB */
#define MLK_MAX_INPUT_BYTES 0x04000000u  /* 64 MiB */
#define MLK_MAX_TENSORS 4096u
#define MLK_MAX_NODES 4096u
#define MLK_MAX_IO 16u
#define MLK_MAX_RANK 4u
#define MLK_MAX_ELEMENTS 0x08000000u     /* 2^27 elements (512 MiB) per tensor */
#define MLK_MAX_IN 6u                    /* inputs per node */
#define MLK_N_IATTR 8u
#define MLK_N_FATTR 4u
#define MLK_MAX_ATTR 65535               /* bound of stride/pad/kernel attributes */
#define MLK_MAX_CTX 65536                /* bound of attention max_ctx */
#define MLK_HEAP_BUDGET 0x40000000u      /* 1 GiB = HEAP_END - HEAP_START */

/* Op codes. */
enum {
    OP_LINEAR = 1,
    OP_MATMUL = 2,
    OP_CONV2D = 3,
    OP_CONV_TRANSPOSE2D = 4,
    OP_BATCHNORM = 5,
    OP_MAXPOOL2D = 6,
    OP_AVGPOOL2D = 7,
    OP_RELU = 8,
    OP_LEAKY_RELU = 9,
    OP_TANH = 10,
    OP_SIGMOID = 11,
    OP_GELU = 12,
    OP_SOFTMAX = 13,
    OP_LAYERNORM = 14,
    OP_EMBEDDING = 15,
    OP_ADD = 16,
    OP_MUL = 17,
    OP_RESHAPE = 18,
    OP_TRANSPOSE = 19,
    OP_ATTENTION = 20,
    OP_ARGMAX = 21,
    OP_QUANTIZE = 22,       /* version 2: the quantized ops */
    OP_DEQUANTIZE = 23,
    OP_QLINEAR = 24,
    OP_QCONV2D = 25,
    /* training: backward ops and optimizer updates (docs/model-format.md, "Training graphs") */
    OP_SOFTMAX_XENT = 26,
    OP_SOFTMAX_XENT_GRAD = 27,
    OP_LINEAR_GRAD_X = 28,
    OP_LINEAR_GRAD_W = 29,
    OP_LINEAR_GRAD_B = 30,
    OP_RELU_GRAD = 31,
    OP_MOMENTUM = 32,
    OP_SGD = 33,
    OP_CONCAT = 34,         /* the split game's tiles */
    OP_MATMUL_GRAD_A = 35,
    OP_MATMUL_GRAD_B = 36,
    OP_GELU_GRAD = 37,
    OP_COUNT = 38
};

/* ---- tensors and nodes ---------------------------------------------------- */
typedef struct {
    uint8_t dtype, rank, kind, defined;
    uint32_t shape[MLK_MAX_RANK]; /* dims past `rank` are 1 here */
    uint32_t numel;
    uint32_t offset;              /* constants: file offset of the data */
    void *data;                   /* float * or int32_t *, native byte order */
} mlk_tensor;

typedef struct {
    uint32_t op, n_in;
    uint32_t in[MLK_MAX_IN];
    uint32_t out;
    int32_t ia[MLK_N_IATTR];
    float fa[MLK_N_FATTR];
    uint8_t prefill;              /* generate mode: needed to fill the KV caches */
    /* attention state (per run) */
    float *kcache, *vcache;       /* [cap, C] each */
    uint32_t cache_len;
} mlk_node;

typedef struct mlk_ctx mlk_ctx;
struct mlk_ctx {
    /* memory: every allocation is charged against MLK_HEAP_BUDGET in
     * 32-byte units, in the same order in both builds (docs: "Memory") */
    uint32_t charged;
    void *(*get)(mlk_ctx *c, uint32_t n); /* platform: n bytes, 32-aligned, or 0 */
    void *(*get_raw)(mlk_ctx *c, uint32_t n); /* host only: uncharged memory */
    void *platform;

    /* model */
    const uint8_t *file;
    uint32_t file_size, version, mode;
    int32_t gen_eos;
    uint32_t n_tensors, n_nodes, n_inputs, n_outputs;
    mlk_tensor *t;
    mlk_node *nodes;
    uint32_t inputs[MLK_MAX_IO], outputs[MLK_MAX_IO];
    uint32_t max_cap;             /* smallest attention max_ctx (generate mode) */

    /* run */
    float *scratch;               /* attention scores, max cache capacity floats */
    uint32_t cap;                 /* KV cache capacity (positions) of this run */

    /* split game (exec.c): the node guest loads the model lazily and reads
     * slots and constants through these hooks */
    uint8_t lazy;                 /* mlk_load leaves constants unloaded (data 0) */
    /* the bytes of slot `slot` holding `value` (at most max bytes, else
     * MLK_E_INPUT), charged like mlk_alloc(len) */
    int (*slot_data)(mlk_ctx *c, uint32_t slot, const uint8_t *value, uint32_t max, const uint8_t **data,
                     uint32_t *len);
    /* elements [lo, hi) of constant t into t->data (allocated here, uncharged) */
    int (*const_data)(mlk_ctx *c, mlk_tensor *t, uint32_t lo, uint32_t hi);
    void *exec_user;
};

/* A record of the payload format (docs/model-format.md section 2). */
typedef struct {
    uint32_t dtype, rank, shape[4], numel;
    const uint8_t *data;
} mlk_rec;

/* ---- graph.c ---------------------------------------------------------------- */
void *mlk_alloc(mlk_ctx *c, uint32_t n);   /* charged; 0 when over budget */
int mlk_charge(mlk_ctx *c, uint32_t n);    /* charge without allocating */
int mlk_check_sizes(mlk_ctx *c, uint32_t model_len, uint32_t input_len);
int mlk_load(mlk_ctx *c, const uint8_t *model, uint32_t len);
int mlk_run(mlk_ctx *c, const uint8_t *input, uint32_t len, uint8_t **out, uint32_t *out_len);
int mlk_parse_input(mlk_ctx *c, const uint8_t *in, uint32_t len, mlk_rec *recs, uint32_t *n_prompt,
                    uint32_t *n_new);
int mlk_output_payload(mlk_ctx *c, uint8_t **out, uint32_t *out_len);
int mlk_tokens_payload(mlk_ctx *c, const int32_t *tokens, uint32_t n_gen, uint8_t **out, uint32_t *out_len);
int mlk_run_node(mlk_ctx *c, mlk_node *nd);

/* ---- ops.c (shapes validated by graph.c before any call) ------------------ */
void op_linear(const float *x, const float *w, const float *b, float *y, uint32_t m, uint32_t k, uint32_t n);
void op_matmul(const float *a, const float *b, const float *bias, float *y, uint32_t batch, uint32_t b_step,
               uint32_t m, uint32_t k, uint32_t n);
void op_conv2d(const float *x, const float *w, const float *b, float *y, const uint32_t xs[4],
               const uint32_t ws[4], const uint32_t ys[4], const int32_t *a);
void op_conv_transpose2d(const float *x, const float *w, const float *b, float *y, const uint32_t xs[4],
                         const uint32_t ws[4], const uint32_t ys[4], const int32_t *a);
void op_batchnorm(const float *x, const float *g, const float *beta, const float *mean, const float *var,
                  float eps, float *y, uint32_t outer, uint32_t ch, uint32_t inner);
void op_maxpool2d(const float *x, float *y, const uint32_t xs[4], const uint32_t ys[4], const int32_t *a);
void op_avgpool2d(const float *x, float *y, const uint32_t xs[4], const uint32_t ys[4], const int32_t *a);
void op_relu(const float *x, float *y, uint32_t n);
void op_leaky_relu(const float *x, float *y, uint32_t n, float slope);
void op_tanh(const float *x, float *y, uint32_t n);
void op_sigmoid(const float *x, float *y, uint32_t n);
void op_gelu(const float *x, float *y, uint32_t n);
void op_softmax(const float *x, float *y, uint32_t rows, uint32_t n);
void op_layernorm(const float *x, const float *g, const float *b, float eps, float *y, uint32_t rows,
                  uint32_t n);
int op_embedding(const int32_t *ids, const float *table, float *y, uint32_t n_ids, uint32_t vocab,
                 uint32_t dim);
void op_add(const float *a, const float *b, float *y, uint32_t n, uint32_t nb);
void op_mul(const float *a, const float *b, float *y, uint32_t n, uint32_t nb);
void op_transpose(const uint32_t *x, uint32_t *y, const uint32_t xs[4], const uint32_t perm[4]);
void op_attention(const float *qkv, float *y, float *kcache, float *vcache, float *scores, uint32_t pos,
                  uint32_t t, uint32_t c, uint32_t n_head);
void op_argmax(const float *x, int32_t *y, uint32_t rows, uint32_t n);
/* training ops: 1 (a label out of range) or 0 for the two cross-entropy ops */
int op_softmax_xent(const float *x, const int32_t *labels, float *loss, uint32_t rows, uint32_t n);
int op_softmax_xent_grad(const float *x, const int32_t *labels, float *dx, uint32_t rows, uint32_t n);
void op_linear_grad_x(const float *dy, const float *w, float *dx, uint32_t m, uint32_t k, uint32_t n);
void op_linear_grad_w(const float *dy, const float *x, float *dw, uint32_t m, uint32_t k, uint32_t n);
void op_linear_grad_b(const float *dy, float *db, uint32_t m, uint32_t n);
void op_relu_grad(const float *dy, const float *y, float *dx, uint32_t n);
void op_momentum(const float *v, const float *g, float *out, uint32_t n, float mu);
void op_sgd(const float *p, const float *d, float *out, uint32_t n, float lr);
void op_matmul_grad_a(const float *dy, const float *b, float *da, uint32_t batch, uint32_t b_step, uint32_t m,
                      uint32_t k, uint32_t n);
void op_matmul_grad_b(const float *dy, const float *a, float *db, uint32_t batch, uint32_t m, uint32_t k,
                      uint32_t n);
void op_gelu_grad(const float *dy, const float *x, float *dx, uint32_t n);

/* quantized ops (docs: "Quantized models"); 8-bit tensors are uint8_t or
 * int8_t arrays, `sx` says which (1: int8) */
typedef struct {
    int32_t zx, zw, zy;           /* zero points of x, w, y */
    int32_t lo, hi;               /* y's range: 0..255 or -128..127 */
    uint32_t sx, sw;              /* x, w signed (int8)? */
    const int32_t *bias, *mult, *shift;
    uint32_t per_channel;         /* mult and shift have one entry per output channel */
} mlk_qparams;
void op_quantize(const float *x, void *y, uint32_t n, float scale, int32_t zp, int32_t lo, int32_t hi,
                 uint32_t is_i8);
void op_dequantize(const void *x, uint32_t dtype, float *y, uint32_t n, float scale, int32_t zp);
void op_qlinear(const void *x, const void *w, void *y, uint32_t m, uint32_t k, uint32_t n,
                const mlk_qparams *q);
void op_qconv2d(const void *x, const void *w, void *y, const uint32_t xs[4], const uint32_t ws[4],
                const uint32_t ys[4], const int32_t *a, const mlk_qparams *q);
void op_maxpool2d_q(const void *x, void *y, const uint32_t xs[4], const uint32_t ys[4], const int32_t *a,
                    uint32_t is_i8);

/* ---- keccak.c ----------------------------------------------------------------- */
void mlk_keccak256(const uint8_t *data, uint32_t len, uint8_t out[32]);

/* ---- small helpers -------------------------------------------------------------- */
typedef union {
    float f;
    uint32_t u;
} mlk_bits;

static inline uint32_t f2u(float f) { mlk_bits b; b.f = f; return b.u; }
static inline float u2f(uint32_t u) { mlk_bits b; b.u = u; return b.f; }

static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static inline uint32_t rd16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | (uint32_t)p[1]; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* memcpy for the runtime (the guest has no libc): word copies when both
 * pointers and the size are 4-aligned, else bytes. */
static inline void *mlk_memcpy(void *dst, const void *src, uint32_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if ((((uintptr_t)d | (uintptr_t)s | n) & 3u) == 0) {
        uint32_t *dw = (uint32_t *)dst;
        const uint32_t *sw = (const uint32_t *)src;
        for (n >>= 2; n; n--)
            *dw++ = *sw++;
        return dst;
    }
    for (; n; n--)
        *d++ = *s++;
    return dst;
}

/* ---- the split game: slots, the execution schedule, executions ----------------
 * (docs/model-format.md, "Execution schedule and states"; mlkit/state.py and
 * mlkit/schedule.py are the Python mirrors) */
#define MLK_SLOT_DEPTH 14u
#define MLK_NUM_SLOTS (1u << MLK_SLOT_DEPTH)
#define MLK_SLOT_INPUT 0u    /* the input payload's blob id */
#define MLK_SLOT_OUTPUT 1u   /* keccak256(output payload) */
#define MLK_SLOT_CONTROL 2u  /* generate mode: the control words */
#define MLK_SLOT_TENSOR0 3u  /* 3 + t: activation tensor t; then the KV caches */
#define MLK_MAX_READS 8u     /* slots one execution reads */
#define MLK_CTL_WORDS 5u     /* control: s, done, n_gen, P, N, then prompt[P], generated[N] */

/* Execution kinds (mlkit.schedule.ExecKind). */
enum {
    MLK_X_NOOP = 0,         /* past the last execution: a fixed point */
    MLK_X_INPUT = 1,        /* plain: graph input `arg` from the payload */
    MLK_X_NODE = 2,         /* node `arg` */
    MLK_X_OUTPUT = 3,       /* SLOT_OUTPUT = keccak256(output payload) */
    MLK_X_CONTROL_INIT = 4, /* generate: the control words from the payload */
    MLK_X_FEED_TOKEN = 5,   /* generate: the token of step `step` */
    MLK_X_FEED_POS = 6,     /* generate: the position `step` */
    MLK_X_KV_APPEND = 7,    /* generate: attention node `arg` appends k, v */
    MLK_X_ATTEND = 8,       /* generate: attention node `arg` attends */
    MLK_X_ADVANCE = 9       /* generate: token appended, done, s += 1 */
};

/* One execution of the schedule: reads `reads` (ascending), writes out_slot. */
typedef struct {
    uint32_t kind, arg, step, out_slot, n_reads;
    uint32_t reads[MLK_MAX_READS];
} mlk_entry;

/* An execution record (mlkit.state.ExecRecord; the node guest's local 4). */
typedef struct {
    uint64_t exec;                        /* 1-based */
    uint32_t out_slot, n_reads;
    const uint8_t *old_value, *new_value; /* 32 bytes each */
    uint32_t slots[MLK_MAX_READS];        /* ascending */
    const uint8_t *values[MLK_MAX_READS];
} mlk_record;

/* exec.c */
uint32_t mlk_tables_end(const uint8_t *header);
int mlk_blob_id(mlk_ctx *c, const uint8_t *data, uint32_t len, uint8_t id[32]);
int mlk_record_parse(const uint8_t *p, uint32_t len, mlk_record *r);
void mlk_slot_root(const uint8_t *values, uint32_t n, uint8_t (*nodes)[32], uint8_t root[32]);
int mlk_check_const_ids(mlk_ctx *c);
int mlk_exec(mlk_ctx *c, const mlk_record *r, uint8_t value[32], const uint8_t **bytes, uint32_t *n_bytes);

/* schedule.c */
int mlk_sched_check(const mlk_ctx *c);
uint64_t mlk_sched_len(const mlk_ctx *c, uint32_t n_prompt, uint32_t n_new);
void mlk_sched_entry(const mlk_ctx *c, uint32_t n_prompt, uint32_t n_new, uint64_t k, mlk_entry *e);

#endif /* ROLLML_MLKIT_H */
