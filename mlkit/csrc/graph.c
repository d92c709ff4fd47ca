/*
 * graph.c - parse and validate a model, then run its nodes in order.
 *
 * Everything read from the model file or the input payload is checked here,
 * once, before any kernel runs: header and counts, every tensor's dtype,
 * rank, shape, element count and data bounds, every node's op, tensor ids,
 * attributes and the shape of its output (docs/model-format.md lists the
 * rules; mlkit/format.py applies the same ones).  After that the kernels in
 * ops.c run without checks.  A failure returns MLK_E_MODEL / MLK_E_INPUT /
 * MLK_E_NOMEM; nothing here can crash or loop forever on bad data.
 */
#include "mlkit.h"

#define REQ(cond)                  \
    do {                           \
        if (!(cond))               \
            return MLK_E_MODEL;    \
    } while (0)

/* Memory charged for descriptors, the same in both builds (>= the guest's
 * sizeof, so the guest heap never runs out before the budget does). */
#define CHARGE_TENSOR 64u
#define CHARGE_NODE 128u
_Static_assert(sizeof(void *) > 4 || sizeof(mlk_tensor) <= CHARGE_TENSOR, "tensor charge");
_Static_assert(sizeof(void *) > 4 || sizeof(mlk_node) <= CHARGE_NODE, "node charge");

/* ---- memory ---------------------------------------------------------------- */

int mlk_charge(mlk_ctx *c, uint32_t n)
{
    if (n > MLK_HEAP_BUDGET)
        return MLK_E_NOMEM;
    uint32_t r = (n + 31u) & ~31u;
    if (r > MLK_HEAP_BUDGET - c->charged)
        return MLK_E_NOMEM;
    c->charged += r;
    return MLK_OK;
}

void *mlk_alloc(mlk_ctx *c, uint32_t n)
{
    if (n == 0)
        n = 1;
    if (mlk_charge(c, n) != MLK_OK)
        return 0;
    return c->get(c, (n + 31u) & ~31u);
}

/* Descriptor arrays: charged at the canonical size, allocated at sizeof. */
static void *alloc_desc(mlk_ctx *c, uint32_t count, uint32_t charge, uint32_t size)
{
    if (count == 0)
        count = 1;
    if (mlk_charge(c, count * charge) != MLK_OK)
        return 0;
    uint32_t n = count * size;
    return c->get(c, (n + 31u) & ~31u);
}

/* Copy n 32-bit big-endian words into native order. */
static void copy_be_words(uint32_t *dst, const uint8_t *src, uint32_t n)
{
#if MLK_HOST_BE
    mlk_memcpy(dst, src, n * 4u);
#else
    for (; n; n--, src += 4)
        *dst++ = rd32(src);
#endif
}

/* ---- validation helpers ---------------------------------------------------- */

static inline uint32_t align16(uint32_t v) { return (v + 15u) & ~15u; }

/* Check a shape (rank dims, each >= 1) and return its element count in *numel;
 * dims past rank are set to 1. */
static int check_shape(const uint32_t *dims, uint32_t rank, uint32_t shape[4], uint32_t *numel)
{
    uint32_t n = 1;
    for (uint32_t d = 0; d < MLK_MAX_RANK; d++) {
        if (d >= rank) {
            shape[d] = 1;
            continue;
        }
        uint32_t v = dims[d];
        if (v == 0 || v > MLK_MAX_ELEMENTS / n)
            return 1;
        n *= v;
        shape[d] = v;
    }
    *numel = n;
    return 0;
}

/* Does tensor o have this dtype, rank and shape? */
static int same(const mlk_tensor *o, uint32_t dtype, uint32_t rank, const uint32_t *shape)
{
    if (o->dtype != dtype || o->rank != rank)
        return 0;
    for (uint32_t d = 0; d < rank; d++)
        if (o->shape[d] != shape[d])
            return 0;
    return 1;
}

static int is_f32(const mlk_tensor *t) { return t->dtype == MLK_DT_F32; }
static int is_vec(const mlk_tensor *t, uint32_t n) { return is_f32(t) && t->rank == 1 && t->shape[0] == n; }

/* The quantized ops (version 2 only). */
static int is_qop(uint32_t op) { return op >= OP_QUANTIZE && op <= OP_QCONV2D; }

/* 8-bit tensors (version 2): bytes per element, and the range of a dtype. */
static int is_q8_dtype(uint32_t dt) { return dt == MLK_DT_I8 || dt == MLK_DT_U8; }
static int is_q8(const mlk_tensor *t) { return is_q8_dtype(t->dtype); }
static uint32_t elem_size(uint32_t dt) { return is_q8_dtype(dt) ? 1u : 4u; }
static int32_t q_lo(uint32_t dt) { return dt == MLK_DT_I8 ? -128 : 0; }
static int32_t q_hi(uint32_t dt) { return dt == MLK_DT_I8 ? 127 : 255; }
static int in_q_range(int32_t v, uint32_t dt) { return v >= q_lo(dt) && v <= q_hi(dt); }

/* A scale: finite and > 0. */
static int is_scale(float f) { return f2u(f) - 1u < 0x7F7FFFFFu; }

/* The requantization of a quantized op (docs: "Quantized models"):
 * multipliers and shifts, constant i32 [n] (one per output channel) or [1],
 * each multiplier in [0, 2^31), each shift in [0, 62]. */
static int check_requant(const mlk_tensor *mult, const mlk_tensor *shift, uint32_t n)
{
    for (uint32_t k = 0; k < 2; k++) {
        const mlk_tensor *t = k ? shift : mult;
        if (t->dtype != MLK_DT_I32 || t->kind != MLK_KIND_CONST || t->rank != 1)
            return 1;
        if (t->shape[0] != n && t->shape[0] != 1)
            return 1;
    }
    if (mult->shape[0] != shift->shape[0])
        return 1;
    const int32_t *m = (const int32_t *)mult->data, *sh = (const int32_t *)shift->data;
    for (uint32_t i = 0; i < mult->numel; i++)
        if (m[i] < 0 || sh[i] < 0 || sh[i] > 62)
            return 1;
    return 0;
}

/* Output size of a convolution / pooling window: (len + 2p - k) / s + 1, or
 * 0 if the window does not fit. */
static uint32_t window_out(uint32_t len, int32_t k, int32_t s, int32_t p)
{
    uint32_t padded = len + 2u * (uint32_t)p; /* len <= 2^27, p <= 65535 */
    if ((uint32_t)k > padded)
        return 0;
    return (padded - (uint32_t)k) / (uint32_t)s + 1u;
}

static int attr_in(int32_t v, int32_t lo, int32_t hi) { return v >= lo && v <= hi; }

/* Tile attributes a[0] = first, a[1] = count of `span` rows or channels:
 * count 0 is all of them (then first is 0), else first + count <= span. */
static int tile_ok(const int32_t *a, uint32_t span)
{
    if (a[0] < 0 || a[1] < 0)
        return 0;
    return a[1] == 0 ? a[0] == 0 : (uint32_t)a[1] <= span && (uint32_t)a[0] <= span - (uint32_t)a[1];
}

/* ---- per-op validation: checks inputs and attributes and computes the
 * expected output (dtype, rank, shape), then compares with the declared one. */
static int check_node(mlk_ctx *c, mlk_node *nd)
{
    mlk_tensor *in[MLK_MAX_IN] = {0};
    for (uint32_t i = 0; i < nd->n_in; i++)
        in[i] = &c->t[nd->in[i]];
    mlk_tensor *x = in[0], *o = &c->t[nd->out];
    uint32_t dt = MLK_DT_F32, rank = x->rank, shape[4];
    uint32_t n_ia = 0, n_fa = 0; /* attributes used by the op */
    uint32_t lo_in = 1, hi_in = 1;
    for (uint32_t d = 0; d < 4; d++)
        shape[d] = x->shape[d];

    REQ(!is_qop(nd->op) || c->version == MLK_VERSION_Q);
    switch (nd->op) {
    case OP_LINEAR:
    case OP_MATMUL: {
        lo_in = 2, hi_in = 3;
        REQ(nd->n_in >= lo_in && nd->n_in <= hi_in);
        mlk_tensor *w = in[1];
        REQ(is_f32(x) && is_f32(w));
        uint32_t n;
        if (nd->op == OP_LINEAR) { /* x[..., k] . w[n, k]^T */
            REQ(x->rank >= 1 && w->rank == 2 && w->shape[1] == x->shape[x->rank - 1]);
            n = w->shape[0];
        } else { /* a[..., m, k] @ b[..., k, n], b rank 2 or same leading dims */
            REQ(x->rank >= 2 && (w->rank == 2 || w->rank == x->rank));
            REQ(w->shape[w->rank - 2] == x->shape[x->rank - 1]);
            for (uint32_t d = 0; d + 2 < w->rank; d++)
                REQ(w->shape[d] == x->shape[d]);
            n = w->shape[w->rank - 1];
        }
        if (nd->n_in == 3)
            REQ(is_vec(in[2], n));
        /* a tile (the split game's bounded executions, mlkit.plan): ints 0, 1
         * = the first row and the rows (0: all) of w (linear) or of a (matmul) */
        n_ia = 2;
        REQ(tile_ok(nd->ia, nd->op == OP_LINEAR ? n : x->shape[x->rank - 2]));
        if (nd->ia[1] && nd->op == OP_LINEAR)
            n = (uint32_t)nd->ia[1];
        if (nd->ia[1] && nd->op == OP_MATMUL)
            shape[rank - 2] = (uint32_t)nd->ia[1];
        REQ(x->numel / x->shape[x->rank - 1] <= MLK_MAX_ELEMENTS / n);
        shape[rank - 1] = n;
        break;
    }
    case OP_CONV2D:
    case OP_CONV_TRANSPOSE2D: {
        REQ(nd->n_in >= 2 && nd->n_in <= 3);
        lo_in = nd->n_in, hi_in = nd->n_in;
        mlk_tensor *w = in[1];
        REQ(is_f32(x) && x->rank == 4 && is_f32(w) && w->rank == 4);
        const int32_t *a = nd->ia;
        REQ(attr_in(a[0], 1, MLK_MAX_ATTR) && attr_in(a[1], 1, MLK_MAX_ATTR));
        REQ(attr_in(a[2], 0, MLK_MAX_ATTR) && attr_in(a[3], 0, MLK_MAX_ATTR));
        REQ(w->shape[2] <= MLK_MAX_ATTR && w->shape[3] <= MLK_MAX_ATTR);
        uint32_t oc, oh, ow;
        if (nd->op == OP_CONV2D) {
            n_ia = 4;
            REQ(w->shape[1] == x->shape[1]);
            oc = w->shape[0];
            oh = window_out(x->shape[2], (int32_t)w->shape[2], a[0], a[2]);
            ow = window_out(x->shape[3], (int32_t)w->shape[3], a[1], a[3]);
        } else {
            /* (len - 1) * s - 2p + k + output_padding, output_padding < s */
            n_ia = 6;
            REQ(w->shape[0] == x->shape[1]);
            REQ(a[4] >= 0 && a[4] < a[0] && a[5] >= 0 && a[5] < a[1]);
            oc = w->shape[1];
            uint64_t h = (uint64_t)(x->shape[2] - 1u) * (uint32_t)a[0] + w->shape[2] + (uint32_t)a[4];
            uint64_t wd = (uint64_t)(x->shape[3] - 1u) * (uint32_t)a[1] + w->shape[3] + (uint32_t)a[5];
            uint64_t ph2 = 2u * (uint64_t)(uint32_t)a[2], pw2 = 2u * (uint64_t)(uint32_t)a[3];
            REQ(h > ph2 && wd > pw2 && h - ph2 <= MLK_MAX_ELEMENTS && wd - pw2 <= MLK_MAX_ELEMENTS);
            oh = (uint32_t)(h - ph2);
            ow = (uint32_t)(wd - pw2);
        }
        if (nd->n_in == 3)
            REQ(is_vec(in[2], oc));
        /* a tile: 2 more ints, the first output channel and the channels (0: all) */
        REQ(tile_ok(nd->ia + n_ia, oc));
        if (nd->ia[n_ia + 1])
            oc = (uint32_t)nd->ia[n_ia + 1];
        n_ia += 2;
        REQ(oh >= 1 && ow >= 1);
        REQ(oc <= MLK_MAX_ELEMENTS / x->shape[0]);
        REQ(oh <= MLK_MAX_ELEMENTS / (x->shape[0] * oc));
        REQ(ow <= MLK_MAX_ELEMENTS / (x->shape[0] * oc * oh));
        shape[1] = oc, shape[2] = oh, shape[3] = ow;
        break;
    }
    case OP_BATCHNORM:
        lo_in = hi_in = 5, n_fa = 1;
        REQ(nd->n_in == 5 && is_f32(x) && x->rank >= 2);
        for (uint32_t i = 1; i < 5; i++)
            REQ(is_vec(in[i], x->shape[1]));
        break;
    case OP_MAXPOOL2D:
    case OP_AVGPOOL2D: {
        const int32_t *a = nd->ia;
        n_ia = nd->op == OP_MAXPOOL2D ? 6 : 7;
        REQ((is_f32(x) || (nd->op == OP_MAXPOOL2D && is_q8(x))) && x->rank == 4);
        dt = x->dtype;
        REQ(attr_in(a[0], 1, MLK_MAX_ATTR) && attr_in(a[1], 1, MLK_MAX_ATTR));
        REQ(attr_in(a[2], 1, MLK_MAX_ATTR) && attr_in(a[3], 1, MLK_MAX_ATTR));
        REQ(attr_in(a[4], 0, a[0] / 2) && attr_in(a[5], 0, a[1] / 2));
        if (nd->op == OP_AVGPOOL2D)
            REQ(a[6] == 0 || a[6] == 1);
        shape[2] = window_out(x->shape[2], a[0], a[2], a[4]);
        shape[3] = window_out(x->shape[3], a[1], a[3], a[5]);
        REQ(shape[2] >= 1 && shape[3] >= 1);
        break;
    }
    case OP_LEAKY_RELU:
        n_fa = 1;
        /* fall through */
    case OP_RELU:
    case OP_TANH:
    case OP_SIGMOID:
    case OP_GELU:
    case OP_SOFTMAX:
        REQ(is_f32(x));
        break;
    case OP_LAYERNORM:
        lo_in = hi_in = 3, n_fa = 1;
        REQ(nd->n_in == 3 && is_f32(x) && x->rank >= 1);
        REQ(is_vec(in[1], x->shape[x->rank - 1]) && is_vec(in[2], x->shape[x->rank - 1]));
        break;
    case OP_EMBEDDING: {
        lo_in = hi_in = 2;
        mlk_tensor *tab = in[1];
        REQ(nd->n_in == 2 && x->dtype == MLK_DT_I32 && x->rank <= 3);
        REQ(is_f32(tab) && tab->rank == 2);
        REQ(x->numel <= MLK_MAX_ELEMENTS / tab->shape[1]);
        rank = x->rank + 1;
        shape[x->rank] = tab->shape[1];
        if (x->kind == MLK_KIND_CONST && x->data) { /* constant ids: check them now (lazy: exec.c) */
            const int32_t *ids = (const int32_t *)x->data;
            for (uint32_t i = 0; i < x->numel; i++)
                REQ((uint32_t)ids[i] < tab->shape[0]);
        }
        break;
    }
    case OP_ADD:
    case OP_MUL: {
        lo_in = hi_in = 2;
        mlk_tensor *b = in[1];
        REQ(nd->n_in == 2 && is_f32(x) && is_f32(b));
        if (b->numel != 1) { /* b's shape is a suffix of x's */
            REQ(b->rank <= x->rank);
            for (uint32_t d = 0; d < b->rank; d++)
                REQ(b->shape[d] == x->shape[x->rank - b->rank + d]);
        }
        break;
    }
    case OP_RESHAPE:
        /* the output keeps its declared shape; only the size must agree */
        REQ(o->numel == x->numel);
        dt = x->dtype, rank = o->rank;
        for (uint32_t d = 0; d < 4; d++)
            shape[d] = o->shape[d];
        break;
    case OP_TRANSPOSE: {
        uint32_t seen = 0;
        REQ(x->rank >= 1 && !is_q8(x));
        dt = x->dtype, n_ia = x->rank;
        for (uint32_t d = 0; d < x->rank; d++) {
            int32_t p = nd->ia[d];
            REQ(p >= 0 && (uint32_t)p < x->rank && !(seen & (1u << p)));
            seen |= 1u << p;
            shape[d] = x->shape[p];
        }
        break;
    }
    case OP_ATTENTION: {
        const int32_t nh = nd->ia[0], ctx = nd->ia[1];
        n_ia = 2;
        REQ(is_f32(x) && x->rank == 2 && x->shape[1] % 3u == 0);
        uint32_t ch = x->shape[1] / 3u;
        REQ(attr_in(nh, 1, MLK_MAX_ATTR) && ch % (uint32_t)nh == 0);
        REQ(attr_in(ctx, 1, MLK_MAX_CTX) && x->shape[0] <= (uint32_t)ctx);
        if (c->mode == MLK_MODE_GENERATE)
            REQ(x->shape[0] == 1);
        shape[1] = ch;
        break;
    }
    case OP_CONCAT: {
        /* inputs of one dtype and rank, equal but along `axis`: the output
         * sums their sizes along it */
        const int32_t axis = nd->ia[0];
        lo_in = 1, hi_in = MLK_MAX_IN, n_ia = 1;
        dt = x->dtype;
        REQ(x->rank >= 1 && attr_in(axis, 0, (int32_t)x->rank - 1));
        uint32_t sum = 0;
        for (uint32_t i = 0; i < nd->n_in; i++) {
            REQ(in[i]->dtype == x->dtype && in[i]->rank == x->rank);
            for (uint32_t d = 0; d < x->rank; d++)
                REQ((int32_t)d == axis || in[i]->shape[d] == x->shape[d]);
            REQ(in[i]->shape[axis] <= MLK_MAX_ELEMENTS - sum);
            sum += in[i]->shape[axis];
        }
        REQ(x->numel / x->shape[axis] <= MLK_MAX_ELEMENTS / sum);
        shape[axis] = sum;
        break;
    }
    case OP_ARGMAX:
        REQ(is_f32(x) && x->rank >= 1);
        dt = MLK_DT_I32, rank = x->rank - 1;
        break;
    case OP_QUANTIZE: /* ints: zero point, dtype; floats: scale */
        n_ia = 2, n_fa = 1;
        REQ(is_f32(x) && is_q8_dtype((uint32_t)nd->ia[1]) && in_q_range(nd->ia[0], (uint32_t)nd->ia[1]));
        REQ(is_scale(nd->fa[0]));
        dt = (uint32_t)nd->ia[1];
        break;
    case OP_DEQUANTIZE: /* ints: zero point; floats: scale */
        n_ia = 1, n_fa = 1;
        REQ(is_q8(x) ? in_q_range(nd->ia[0], x->dtype) : x->dtype == MLK_DT_I32 && nd->ia[0] == 0);
        REQ(is_scale(nd->fa[0]));
        break;
    case OP_QLINEAR:
    case OP_QCONV2D: { /* x, w, bias, mult, shift; ints: [stride_h, stride_w, pad_h, pad_w,]
                        * x zero point, w zero point, y zero point, y dtype */
        lo_in = hi_in = 5;
        REQ(nd->n_in == 5);
        mlk_tensor *w = in[1], *b = in[2];
        const int32_t *a = nd->ia + (nd->op == OP_QCONV2D ? 4 : 0);
        uint32_t n;
        n_ia = nd->op == OP_QCONV2D ? 8 : 4;
        REQ(is_q8(x) && is_q8(w) && is_q8_dtype((uint32_t)a[3]));
        REQ(in_q_range(a[0], x->dtype) && in_q_range(a[1], w->dtype) && in_q_range(a[2], (uint32_t)a[3]));
        dt = (uint32_t)a[3];
        if (nd->op == OP_QLINEAR) { /* x[..., k] . w[n, k]^T */
            REQ(x->rank >= 1 && w->rank == 2 && w->shape[1] == x->shape[x->rank - 1]);
            n = w->shape[0];
            REQ(x->numel / x->shape[x->rank - 1] <= MLK_MAX_ELEMENTS / n);
            shape[rank - 1] = n;
        } else { /* x[B, C, H, W], w[OC, C, KH, KW] */
            const int32_t *sp = nd->ia;
            REQ(x->rank == 4 && w->rank == 4 && w->shape[1] == x->shape[1]);
            REQ(attr_in(sp[0], 1, MLK_MAX_ATTR) && attr_in(sp[1], 1, MLK_MAX_ATTR));
            REQ(attr_in(sp[2], 0, MLK_MAX_ATTR) && attr_in(sp[3], 0, MLK_MAX_ATTR));
            REQ(w->shape[2] <= MLK_MAX_ATTR && w->shape[3] <= MLK_MAX_ATTR);
            n = w->shape[0];
            uint32_t oh = window_out(x->shape[2], (int32_t)w->shape[2], sp[0], sp[2]);
            uint32_t ow = window_out(x->shape[3], (int32_t)w->shape[3], sp[1], sp[3]);
            REQ(oh >= 1 && ow >= 1);
            REQ(n <= MLK_MAX_ELEMENTS / x->shape[0]);
            REQ(oh <= MLK_MAX_ELEMENTS / (x->shape[0] * n));
            REQ(ow <= MLK_MAX_ELEMENTS / (x->shape[0] * n * oh));
            shape[1] = n, shape[2] = oh, shape[3] = ow;
        }
        REQ(b->dtype == MLK_DT_I32 && b->rank == 1 && b->shape[0] == n);
        REQ(check_requant(in[3], in[4], n) == 0);
        break;
    }
    /* training ops (docs/model-format.md, "Training graphs") */
    case OP_SOFTMAX_XENT:
    case OP_SOFTMAX_XENT_GRAD: { /* logits f32 [m, n], labels i32 [m] */
        lo_in = hi_in = 2;
        REQ(nd->n_in == 2 && is_f32(x) && x->rank == 2);
        REQ(in[1]->dtype == MLK_DT_I32 && in[1]->rank == 1 && in[1]->shape[0] == x->shape[0]);
        if (nd->op == OP_SOFTMAX_XENT)
            rank = 1, shape[0] = 1, shape[1] = 1;
        break;
    }
    case OP_LINEAR_GRAD_X:
    case OP_LINEAR_GRAD_W: { /* dy [m, n] with w [n, k] -> dx [m, k]; with x [m, k] -> dw [n, k] */
        lo_in = hi_in = 2;
        mlk_tensor *b = in[1];
        REQ(nd->n_in == 2 && is_f32(x) && x->rank == 2 && is_f32(b) && b->rank == 2);
        if (nd->op == OP_LINEAR_GRAD_X) {
            REQ(b->shape[0] == x->shape[1]);
            shape[1] = b->shape[1];
        } else {
            REQ(b->shape[0] == x->shape[0]);
            REQ(b->shape[1] <= MLK_MAX_ELEMENTS / x->shape[1]);
            shape[0] = x->shape[1], shape[1] = b->shape[1];
        }
        break;
    }
    case OP_LINEAR_GRAD_B: /* dy [m, n] -> [n] */
        REQ(is_f32(x) && x->rank == 2);
        rank = 1, shape[0] = x->shape[1], shape[1] = 1;
        break;
    case OP_MATMUL_GRAD_A: { /* dy [..., m, n] with b [k, n] or [..., k, n] -> da [..., m, k] */
        lo_in = hi_in = 2;
        mlk_tensor *b = in[1];
        REQ(nd->n_in == 2 && is_f32(x) && x->rank >= 2 && is_f32(b) && (b->rank == 2 || b->rank == x->rank));
        REQ(b->shape[b->rank - 1] == x->shape[x->rank - 1]);
        for (uint32_t d = 0; d + 2 < b->rank; d++)
            REQ(b->shape[d] == x->shape[d]);
        REQ(x->numel / x->shape[x->rank - 1] <= MLK_MAX_ELEMENTS / b->shape[b->rank - 2]);
        shape[rank - 1] = b->shape[b->rank - 2];
        break;
    }
    case OP_MATMUL_GRAD_B: { /* dy [..., m, n] with a [..., m, k] -> db [..., k, n] */
        lo_in = hi_in = 2;
        mlk_tensor *a = in[1];
        REQ(nd->n_in == 2 && is_f32(x) && x->rank >= 2 && is_f32(a) && a->rank == x->rank);
        for (uint32_t d = 0; d + 1 < a->rank; d++)
            REQ(a->shape[d] == x->shape[d]);
        REQ(a->shape[rank - 1] <= MLK_MAX_ELEMENTS / (x->numel / x->shape[rank - 2]));
        shape[rank - 2] = a->shape[rank - 1];
        break;
    }
    case OP_RELU_GRAD:
    case OP_GELU_GRAD:
    case OP_MOMENTUM:
    case OP_SGD: /* two f32 tensors of one shape */
        lo_in = hi_in = 2;
        n_fa = nd->op == OP_RELU_GRAD || nd->op == OP_GELU_GRAD ? 0 : 1;
        REQ(nd->n_in == 2 && is_f32(x) && same(in[1], MLK_DT_F32, x->rank, x->shape));
        break;
    default:
        return MLK_E_MODEL;
    }
    REQ(nd->n_in >= lo_in && nd->n_in <= hi_in);
    for (uint32_t i = n_ia; i < MLK_N_IATTR; i++)
        REQ(nd->ia[i] == 0);
    for (uint32_t i = n_fa; i < MLK_N_FATTR; i++)
        REQ(f2u(nd->fa[i]) == 0);
    REQ(same(o, dt, rank, shape));
    return MLK_OK;
}

/* ---- loading ------------------------------------------------------------------- */

int mlk_load(mlk_ctx *c, const uint8_t *f, uint32_t len)
{
    REQ(len >= MLK_HEADER_SIZE && len <= MLK_MAX_MODEL_BYTES);
    REQ(rd32(f) == MLK_MAGIC && (rd16(f + 4) == MLK_VERSION || rd16(f + 4) == MLK_VERSION_Q));
    c->file = f;
    c->file_size = len;
    c->version = rd16(f + 4);
    c->mode = rd16(f + 6);
    c->n_tensors = rd32(f + 12);
    c->n_nodes = rd32(f + 16);
    c->n_inputs = rd16(f + 20);
    c->n_outputs = rd16(f + 22);
    c->gen_eos = (int32_t)rd32(f + 24);
    REQ(c->mode == MLK_MODE_PLAIN || c->mode == MLK_MODE_GENERATE);
    REQ(rd32(f + 8) == len && rd32(f + 28) == 0);
    REQ(c->n_tensors >= 1 && c->n_tensors <= MLK_MAX_TENSORS && c->n_nodes <= MLK_MAX_NODES);
    REQ(c->n_inputs <= MLK_MAX_IO && c->n_outputs >= 1 && c->n_outputs <= MLK_MAX_IO);
    REQ(c->mode == MLK_MODE_GENERATE ? c->gen_eos >= -1 : c->gen_eos == -1);

    const uint32_t t_off = MLK_HEADER_SIZE;
    const uint32_t n_off = t_off + c->n_tensors * MLK_TENSOR_ENTRY;
    const uint32_t io_off = n_off + c->n_nodes * MLK_NODE_ENTRY;
    const uint32_t end = io_off + 4u * (c->n_inputs + c->n_outputs); /* < 2^20: no overflow */
    REQ(end <= len);
    const uint32_t data_start = align16(end);

    c->t = (mlk_tensor *)alloc_desc(c, c->n_tensors, CHARGE_TENSOR, sizeof(mlk_tensor));
    c->nodes = (mlk_node *)alloc_desc(c, c->n_nodes, CHARGE_NODE, sizeof(mlk_node));
    if (!c->t || !c->nodes)
        return MLK_E_NOMEM;

    /* tensors */
    for (uint32_t i = 0; i < c->n_tensors; i++) {
        const uint8_t *e = f + t_off + i * MLK_TENSOR_ENTRY;
        mlk_tensor *t = &c->t[i];
        uint32_t dims[4];
        t->dtype = e[0], t->rank = e[1], t->kind = e[2], t->defined = 0;
        t->data = 0;
        REQ(t->dtype == MLK_DT_F32 || t->dtype == MLK_DT_I32 || (is_q8(t) && c->version == MLK_VERSION_Q));
        REQ(t->rank <= MLK_MAX_RANK && e[3] == 0 && t->kind <= MLK_KIND_CONST);
        for (uint32_t d = 0; d < 4; d++) {
            dims[d] = rd32(e + 4 + 4 * d);
            if (d >= t->rank)
                REQ(dims[d] == 0);
        }
        REQ(check_shape(dims, t->rank, t->shape, &t->numel) == 0);
        uint32_t off = rd32(e + 20), size = rd32(e + 24);
        REQ(rd32(e + 28) == 0);
        t->offset = off;
        if (t->kind == MLK_KIND_CONST) {
            REQ(off % MLK_DATA_ALIGN == 0 && off >= data_start && off <= len);
            REQ(size == t->numel * elem_size(t->dtype) && size <= len - off);
            t->defined = 1;
            if (c->lazy) /* the node guest loads the parts it needs (exec.c) */
                continue;
#if MLK_HOST_BE
            if ((((uintptr_t)f + off) & 3u) == 0 || !c->get_raw) {
                t->data = (void *)(uintptr_t)(f + off); /* in place: the guest case */
                continue;
            }
#endif
            if (is_q8(t) && !c->get_raw) { /* bytes have no byte order */
                t->data = (void *)(uintptr_t)(f + off);
                continue;
            }
            if (!c->get_raw || !(t->data = c->get_raw(c, size)))
                return MLK_E_NOMEM;
            if (is_q8(t))
                mlk_memcpy(t->data, f + off, size);
            else
                copy_be_words((uint32_t *)t->data, f + off, t->numel);
        } else {
            REQ(off == 0 && size == 0);
        }
    }

    /* graph inputs: distinct activations */
    for (uint32_t i = 0; i < c->n_inputs; i++) {
        uint32_t id = rd32(f + io_off + 4 * i);
        REQ(id < c->n_tensors && c->t[id].kind == MLK_KIND_ACT && !c->t[id].defined && !is_q8(&c->t[id]));
        c->t[id].defined = 1;
        c->inputs[i] = id;
    }

    /* nodes, in order: inputs defined before use, each output defined once */
    c->max_cap = MLK_MAX_CTX;
    for (uint32_t i = 0; i < c->n_nodes; i++) {
        const uint8_t *e = f + n_off + i * MLK_NODE_ENTRY;
        mlk_node *nd = &c->nodes[i];
        nd->op = rd16(e);
        nd->n_in = e[2];
        REQ(e[3] == 0 && nd->n_in >= 1 && nd->n_in <= MLK_MAX_IN);
        for (uint32_t k = 0; k < MLK_MAX_IN; k++) {
            uint32_t id = rd32(e + 4 + 4 * k);
            if (k < nd->n_in)
                REQ(id < c->n_tensors && c->t[id].defined);
            else
                REQ(id == 0);
            nd->in[k] = id;
        }
        nd->out = rd32(e + 28);
        REQ(nd->out < c->n_tensors && c->t[nd->out].kind == MLK_KIND_ACT && !c->t[nd->out].defined);
        for (uint32_t k = 0; k < MLK_N_IATTR; k++)
            nd->ia[k] = (int32_t)rd32(e + 32 + 4 * k);
        for (uint32_t k = 0; k < MLK_N_FATTR; k++)
            nd->fa[k] = u2f(rd32(e + 64 + 4 * k));
        nd->prefill = 0;
        nd->kcache = nd->vcache = 0;
        nd->cache_len = 0;
        int rc = check_node(c, nd);
        if (rc != MLK_OK)
            return rc;
        c->t[nd->out].defined = 1;
        if (nd->op == OP_ATTENTION && (uint32_t)nd->ia[1] < c->max_cap)
            c->max_cap = (uint32_t)nd->ia[1];
    }

    /* graph outputs */
    for (uint32_t i = 0; i < c->n_outputs; i++) {
        uint32_t id = rd32(f + io_off + 4 * (c->n_inputs + i));
        REQ(id < c->n_tensors && c->t[id].defined && !is_q8(&c->t[id]));
        c->outputs[i] = id;
    }

    /* version 2 exactly when the model has an 8-bit tensor or a quantized op
     * (one encoding per model) */
    uint32_t uses_q = 0;
    for (uint32_t i = 0; i < c->n_tensors; i++)
        uses_q |= (uint32_t)is_q8(&c->t[i]);
    for (uint32_t i = 0; i < c->n_nodes; i++)
        uses_q |= (uint32_t)is_qop(c->nodes[i].op);
    REQ(uses_q == (c->version == MLK_VERSION_Q));

    if (c->mode == MLK_MODE_GENERATE) {
        /* inputs: token, position (i32, one element); output: next token */
        REQ(c->n_inputs == 2 && c->n_outputs == 1);
        for (uint32_t i = 0; i < 2; i++)
            REQ(c->t[c->inputs[i]].dtype == MLK_DT_I32 && c->t[c->inputs[i]].numel == 1);
        REQ(c->t[c->outputs[0]].dtype == MLK_DT_I32 && c->t[c->outputs[0]].numel == 1);
        /* prefill steps run only the nodes the KV caches depend on: mark the
         * ancestors of attention nodes (`defined` is reused as "needed") */
        for (uint32_t i = 0; i < c->n_tensors; i++)
            c->t[i].defined = 0;
        for (uint32_t i = c->n_nodes; i-- > 0;) {
            mlk_node *nd = &c->nodes[i];
            if (nd->op == OP_ATTENTION || c->t[nd->out].defined) {
                nd->prefill = 1;
                for (uint32_t k = 0; k < nd->n_in; k++)
                    c->t[nd->in[k]].defined = 1;
            }
        }
    }
    return MLK_OK;
}

/* ---- running ---------------------------------------------------------------------- */

/* Rows (product of all dims but the last) and the last dim of a tensor. */
static uint32_t last_dim(const mlk_tensor *t) { return t->rank ? t->shape[t->rank - 1] : 1u; }
static uint32_t rows_of(const mlk_tensor *t) { return t->numel / last_dim(t); }

static int run_node(mlk_ctx *c, mlk_node *nd)
{
    mlk_tensor *x = &c->t[nd->in[0]], *o = &c->t[nd->out];
    mlk_tensor *w = nd->n_in > 1 ? &c->t[nd->in[1]] : 0;
    const float *xf = (const float *)x->data;
    float *y = (float *)o->data;
    const float *bias = nd->n_in > 2 ? (const float *)c->t[nd->in[2]].data : 0;

    switch (nd->op) {
    case OP_LINEAR: { /* rows ia[0] .. ia[0] + ia[1] - 1 of w (a tile), or all */
        const uint32_t k = last_dim(x), r0 = (uint32_t)nd->ia[0];
        op_linear(xf, (const float *)w->data + r0 * k, bias ? bias + r0 : 0, y, rows_of(x), k, last_dim(o));
        break;
    }
    case OP_MATMUL: {
        uint32_t m = x->shape[x->rank - 2], k = x->shape[x->rank - 1], n = w->shape[w->rank - 1];
        uint32_t batch = x->numel / (m * k), b_step = w->rank == 2 ? 0 : k * n;
        if (nd->ia[1]) { /* a tile: rows ia[0] .. of each a matrix */
            const uint32_t r0 = (uint32_t)nd->ia[0], rows = (uint32_t)nd->ia[1];
            for (uint32_t bt = 0; bt < batch; bt++)
                op_matmul(xf + (bt * m + r0) * k, (const float *)w->data + bt * b_step, bias, y + bt * rows * n,
                          1, 0, rows, k, n);
            break;
        }
        op_matmul(xf, (const float *)w->data, bias, y, batch, b_step, m, k, n);
        break;
    }
    case OP_CONV2D: { /* output channels ia[4] .. (a tile), or all */
        const uint32_t oc0 = (uint32_t)nd->ia[4];
        op_conv2d(xf, (const float *)w->data + oc0 * (w->numel / w->shape[0]), bias ? bias + oc0 : 0, y, x->shape,
                  w->shape, o->shape, nd->ia);
        break;
    }
    case OP_CONV_TRANSPOSE2D: { /* output channels ia[6] .. (a tile), or all */
        const uint32_t oc0 = (uint32_t)nd->ia[6];
        op_conv_transpose2d(xf, (const float *)w->data + oc0 * w->shape[2] * w->shape[3], bias ? bias + oc0 : 0, y,
                            x->shape, w->shape, o->shape, nd->ia);
        break;
    }
    case OP_BATCHNORM: {
        uint32_t ch = x->shape[1], outer = x->shape[0];
        op_batchnorm(xf, (const float *)w->data, bias, (const float *)c->t[nd->in[3]].data,
                     (const float *)c->t[nd->in[4]].data, nd->fa[0], y, outer, ch, x->numel / (outer * ch));
        break;
    }
    case OP_MAXPOOL2D:
        if (is_q8(x))
            op_maxpool2d_q(x->data, o->data, x->shape, o->shape, nd->ia, x->dtype == MLK_DT_I8);
        else
            op_maxpool2d(xf, y, x->shape, o->shape, nd->ia);
        break;
    case OP_AVGPOOL2D:
        op_avgpool2d(xf, y, x->shape, o->shape, nd->ia);
        break;
    case OP_RELU:
        op_relu(xf, y, x->numel);
        break;
    case OP_LEAKY_RELU:
        op_leaky_relu(xf, y, x->numel, nd->fa[0]);
        break;
    case OP_TANH:
        op_tanh(xf, y, x->numel);
        break;
    case OP_SIGMOID:
        op_sigmoid(xf, y, x->numel);
        break;
    case OP_GELU:
        op_gelu(xf, y, x->numel);
        break;
    case OP_SOFTMAX:
        op_softmax(xf, y, rows_of(x), last_dim(x));
        break;
    case OP_LAYERNORM:
        op_layernorm(xf, (const float *)w->data, bias, nd->fa[0], y, rows_of(x), last_dim(x));
        break;
    case OP_EMBEDDING:
        if (op_embedding((const int32_t *)x->data, (const float *)w->data, y, x->numel, w->shape[0],
                         w->shape[1]))
            return MLK_E_INPUT;
        break;
    case OP_ADD:
        op_add(xf, (const float *)w->data, y, x->numel, w->numel);
        break;
    case OP_MUL:
        op_mul(xf, (const float *)w->data, y, x->numel, w->numel);
        break;
    case OP_RESHAPE: /* aliases its input: nothing to do */
        break;
    case OP_TRANSPOSE: {
        uint32_t perm[4] = {0, 1, 2, 3};
        for (uint32_t d = 0; d < x->rank; d++)
            perm[d] = (uint32_t)nd->ia[d];
        op_transpose((const uint32_t *)x->data, (uint32_t *)o->data, x->shape, perm);
        break;
    }
    case OP_ATTENTION: {
        uint32_t t = x->shape[0];
        if (nd->cache_len + t > c->cap) /* cannot happen after mlk_run's checks */
            return MLK_E_INPUT;
        op_attention(xf, y, nd->kcache, nd->vcache, c->scratch, nd->cache_len, t, o->shape[1],
                     (uint32_t)nd->ia[0]);
        nd->cache_len += t;
        break;
    }
    case OP_ARGMAX:
        op_argmax(xf, (int32_t *)o->data, rows_of(x), last_dim(x));
        break;
    case OP_QUANTIZE:
        op_quantize(xf, o->data, x->numel, nd->fa[0], nd->ia[0], q_lo(o->dtype), q_hi(o->dtype),
                    o->dtype == MLK_DT_I8);
        break;
    case OP_DEQUANTIZE:
        op_dequantize(x->data, x->dtype, y, x->numel, nd->fa[0], nd->ia[0]);
        break;
    case OP_QLINEAR:
    case OP_QCONV2D: {
        const int32_t *a = nd->ia + (nd->op == OP_QCONV2D ? 4 : 0);
        const mlk_tensor *mult = &c->t[nd->in[3]];
        mlk_qparams q = {a[0], a[1], a[2], q_lo(o->dtype), q_hi(o->dtype), x->dtype == MLK_DT_I8,
                         w->dtype == MLK_DT_I8, (const int32_t *)c->t[nd->in[2]].data,
                         (const int32_t *)mult->data, (const int32_t *)c->t[nd->in[4]].data,
                         mult->numel > 1};
        if (nd->op == OP_QLINEAR)
            op_qlinear(x->data, w->data, o->data, rows_of(x), last_dim(x), w->shape[0], &q);
        else
            op_qconv2d(x->data, w->data, o->data, x->shape, w->shape, o->shape, nd->ia, &q);
        break;
    }
    case OP_SOFTMAX_XENT:
        if (op_softmax_xent(xf, (const int32_t *)w->data, y, x->shape[0], x->shape[1]))
            return MLK_E_INPUT;
        break;
    case OP_SOFTMAX_XENT_GRAD:
        if (op_softmax_xent_grad(xf, (const int32_t *)w->data, y, x->shape[0], x->shape[1]))
            return MLK_E_INPUT;
        break;
    case OP_LINEAR_GRAD_X:
        op_linear_grad_x(xf, (const float *)w->data, y, x->shape[0], w->shape[1], x->shape[1]);
        break;
    case OP_LINEAR_GRAD_W:
        op_linear_grad_w(xf, (const float *)w->data, y, x->shape[0], w->shape[1], x->shape[1]);
        break;
    case OP_LINEAR_GRAD_B:
        op_linear_grad_b(xf, y, x->shape[0], x->shape[1]);
        break;
    case OP_RELU_GRAD:
        op_relu_grad(xf, (const float *)w->data, y, x->numel);
        break;
    case OP_MOMENTUM:
        op_momentum(xf, (const float *)w->data, y, x->numel, nd->fa[0]);
        break;
    case OP_SGD:
        op_sgd(xf, (const float *)w->data, y, x->numel, nd->fa[0]);
        break;
    case OP_CONCAT: {
        const uint32_t axis = (uint32_t)nd->ia[0];
        uint32_t outer = 1, inner = 1, *yw = (uint32_t *)o->data;
        for (uint32_t d = 0; d < axis; d++)
            outer *= x->shape[d];
        for (uint32_t d = axis + 1; d < x->rank; d++)
            inner *= x->shape[d];
        for (uint32_t r = 0; r < outer; r++)
            for (uint32_t i = 0; i < nd->n_in; i++) {
                const mlk_tensor *t = &c->t[nd->in[i]];
                const uint32_t n = t->shape[axis] * inner;
                mlk_memcpy(yw, (const uint32_t *)t->data + r * n, n * 4u);
                yw += n;
            }
        break;
    }
    case OP_MATMUL_GRAD_A: {
        uint32_t m = x->shape[x->rank - 2], n = x->shape[x->rank - 1], k = w->shape[w->rank - 2];
        op_matmul_grad_a(xf, (const float *)w->data, y, x->numel / (m * n), w->rank == 2 ? 0 : k * n, m, k, n);
        break;
    }
    case OP_MATMUL_GRAD_B: {
        uint32_t m = x->shape[x->rank - 2], n = x->shape[x->rank - 1], k = w->shape[w->rank - 1];
        op_matmul_grad_b(xf, (const float *)w->data, y, x->numel / (m * n), m, k, n);
        break;
    }
    case OP_GELU_GRAD:
        op_gelu_grad(xf, (const float *)w->data, y, x->numel);
        break;
    default:
        return MLK_E_MODEL;
    }
    return MLK_OK;
}

/* Input payload record: u8 dtype, u8 rank, u16 0, u32 dims[rank], data.
 * Parses one at *pos, checks it fits, returns 0 or MLK_E_INPUT. */
static int parse_rec(const uint8_t *p, uint32_t len, uint32_t *pos, mlk_rec *r)
{
    uint32_t at = *pos, dims[4];
    if (len - at < 4)
        return MLK_E_INPUT;
    r->dtype = p[at], r->rank = p[at + 1];
    if ((r->dtype != MLK_DT_F32 && r->dtype != MLK_DT_I32) || r->rank > MLK_MAX_RANK || rd16(p + at + 2))
        return MLK_E_INPUT;
    at += 4;
    if (len - at < 4 * r->rank)
        return MLK_E_INPUT;
    for (uint32_t d = 0; d < r->rank; d++)
        dims[d] = rd32(p + at + 4 * d);
    at += 4 * r->rank;
    if (check_shape(dims, r->rank, r->shape, &r->numel) || (len - at) / 4u < r->numel)
        return MLK_E_INPUT;
    r->data = p + at;
    *pos = at + 4 * r->numel;
    return MLK_OK;
}

static int alloc_tensor(mlk_ctx *c, mlk_tensor *t)
{
    t->data = mlk_alloc(c, t->numel * elem_size(t->dtype));
    return t->data ? MLK_OK : MLK_E_NOMEM;
}

static uint32_t out_record_size(uint32_t rank, uint32_t numel) { return 4u + 4u * rank + 4u * numel; }

/* Write one output record; f32 NaNs become the canonical 0x7FC00000. */
static uint8_t *write_rec(uint8_t *p, uint32_t dtype, uint32_t rank, const uint32_t *shape, const void *data,
                          uint32_t numel)
{
    p[0] = (uint8_t)dtype, p[1] = (uint8_t)rank, p[2] = 0, p[3] = 0;
    p += 4;
    for (uint32_t d = 0; d < rank; d++, p += 4)
        wr32(p, shape[d]);
    const uint32_t *w = (const uint32_t *)data;
    for (uint32_t i = 0; i < numel; i++, p += 4) {
        uint32_t v = w[i];
        if (dtype == MLK_DT_F32 && (v & 0x7FFFFFFFu) > 0x7F800000u)
            v = SF_QNAN;
        wr32(p, v);
    }
    return p;
}

/* Parse and check the input payload: plain mode one record per graph input
 * with its dtype and shape; generate mode the prompt i32[P] and the count
 * N, with P + N - 1 within the KV caches (then c->cap = P + N - 1). */
int mlk_parse_input(mlk_ctx *c, const uint8_t *in, uint32_t len, mlk_rec *recs, uint32_t *n_prompt,
                    uint32_t *n_new)
{
    const int gen = c->mode == MLK_MODE_GENERATE;
    uint32_t pos = 8, n_rec;
    int rc;

    if (len < 8 || rd32(in) != MLK_PAYLOAD_MAGIC)
        return MLK_E_INPUT;
    n_rec = rd32(in + 4);
    if (n_rec != (gen ? 2u : c->n_inputs))
        return MLK_E_INPUT;
    for (uint32_t i = 0; i < n_rec; i++) {
        if ((rc = parse_rec(in, len, &pos, &recs[i])) != MLK_OK)
            return rc;
        if (!gen) {
            const mlk_tensor *t = &c->t[c->inputs[i]];
            if (!same(t, recs[i].dtype, recs[i].rank, recs[i].shape))
                return MLK_E_INPUT;
        }
    }
    if (pos != len)
        return MLK_E_INPUT;
    *n_prompt = *n_new = 0;
    if (gen) {
        /* tokens i32[P], P >= 1; new-token count i32 scalar, N >= 1, and
         * every position 0 .. P+N-2 must fit the KV caches */
        if (recs[0].dtype != MLK_DT_I32 || recs[0].rank != 1 || recs[1].dtype != MLK_DT_I32 || recs[1].rank)
            return MLK_E_INPUT;
        *n_prompt = recs[0].numel;
        *n_new = rd32(recs[1].data);
        if (*n_new < 1 || *n_new > c->max_cap || *n_prompt > c->max_cap - *n_new + 1)
            return MLK_E_INPUT;
        c->cap = *n_prompt + *n_new - 1;
    }
    return MLK_OK;
}

int mlk_run(mlk_ctx *c, const uint8_t *in, uint32_t len, uint8_t **out, uint32_t *out_len)
{
    const int gen = c->mode == MLK_MODE_GENERATE;
    mlk_rec recs[MLK_MAX_IO];
    uint32_t n_prompt, n_new;
    int rc;

    /* -- parse and check the input payload */
    if ((rc = mlk_parse_input(c, in, len, recs, &n_prompt, &n_new)) != MLK_OK)
        return rc;

    /* -- allocate: graph inputs, node outputs, KV caches, scratch */
    for (uint32_t i = 0; i < c->n_inputs; i++) {
        mlk_tensor *t = &c->t[c->inputs[i]];
        if ((rc = alloc_tensor(c, t)) != MLK_OK)
            return rc;
        if (!gen)
            copy_be_words((uint32_t *)t->data, recs[i].data, t->numel);
    }
    uint32_t max_cap = 0;
    for (uint32_t i = 0; i < c->n_nodes; i++) {
        mlk_node *nd = &c->nodes[i];
        mlk_tensor *o = &c->t[nd->out];
        if (nd->op == OP_RESHAPE)
            o->data = c->t[nd->in[0]].data;
        else if ((rc = alloc_tensor(c, o)) != MLK_OK)
            return rc;
    }
    for (uint32_t i = 0; i < c->n_nodes; i++) {
        mlk_node *nd = &c->nodes[i];
        if (nd->op != OP_ATTENTION)
            continue;
        uint32_t cap = gen ? c->cap : c->t[nd->in[0]].shape[0];
        uint32_t ch = c->t[nd->out].shape[1];
        if (cap > MLK_MAX_ELEMENTS / ch)
            return MLK_E_NOMEM;
        nd->kcache = (float *)mlk_alloc(c, cap * ch * 4u);
        nd->vcache = (float *)mlk_alloc(c, cap * ch * 4u);
        if (!nd->kcache || !nd->vcache)
            return MLK_E_NOMEM;
        nd->cache_len = 0;
        if (cap > max_cap)
            max_cap = cap;
    }
    if (!gen)
        c->cap = max_cap;
    if (max_cap && !(c->scratch = (float *)mlk_alloc(c, max_cap * 4u)))
        return MLK_E_NOMEM;

    if (!gen) {
        /* -- one pass */
        for (uint32_t i = 0; i < c->n_nodes; i++)
            if ((rc = run_node(c, &c->nodes[i])) != MLK_OK)
                return rc;
        return mlk_output_payload(c, out, out_len);
    }

    /* -- greedy generation: feed the prompt one token per step (prefill steps
     * only fill the KV caches), then feed back each argmax token */
    int32_t *gen_tok = (int32_t *)mlk_alloc(c, n_new * 4u);
    if (!gen_tok)
        return MLK_E_NOMEM;
    int32_t *tok = (int32_t *)c->t[c->inputs[0]].data, *posn = (int32_t *)c->t[c->inputs[1]].data;
    const int32_t *next = (const int32_t *)c->t[c->outputs[0]].data;
    uint32_t n_gen = 0;
    for (uint32_t step = 0; n_gen < n_new; step++) {
        *tok = step < n_prompt ? (int32_t)rd32(recs[0].data + 4 * step) : gen_tok[step - n_prompt];
        *posn = (int32_t)step;
        const int full = step + 1 >= n_prompt;
        for (uint32_t i = 0; i < c->n_nodes; i++)
            if (full || c->nodes[i].prefill)
                if ((rc = run_node(c, &c->nodes[i])) != MLK_OK)
                    return rc;
        if (full) {
            gen_tok[n_gen++] = *next;
            if (c->gen_eos >= 0 && *next == c->gen_eos)
                break;
        }
    }
    return mlk_tokens_payload(c, gen_tok, n_gen, out, out_len);
}

/* The output payload of a plain run: the graph outputs in order. */
int mlk_output_payload(mlk_ctx *c, uint8_t **out, uint32_t *out_len)
{
    uint32_t size = 8;
    for (uint32_t i = 0; i < c->n_outputs; i++) {
        const mlk_tensor *t = &c->t[c->outputs[i]];
        uint32_t r = out_record_size(t->rank, t->numel); /* <= 20 + 2^29 */
        if (r > MLK_HEAP_BUDGET - size)
            return MLK_E_NOMEM;
        size += r;
    }
    uint8_t *buf = (uint8_t *)mlk_alloc(c, size), *p = buf;
    if (!buf)
        return MLK_E_NOMEM;
    wr32(p, MLK_PAYLOAD_MAGIC);
    wr32(p + 4, c->n_outputs);
    p += 8;
    for (uint32_t i = 0; i < c->n_outputs; i++) {
        const mlk_tensor *t = &c->t[c->outputs[i]];
        p = write_rec(p, t->dtype, t->rank, t->shape, t->data, t->numel);
    }
    *out = buf;
    *out_len = size;
    return MLK_OK;
}

/* The output payload of a generation: one i32 record of the n_gen tokens. */
int mlk_tokens_payload(mlk_ctx *c, const int32_t *tokens, uint32_t n_gen, uint8_t **out, uint32_t *out_len)
{
    uint32_t size = 8 + out_record_size(1, n_gen);
    uint8_t *buf = (uint8_t *)mlk_alloc(c, size);
    if (!buf)
        return MLK_E_NOMEM;
    wr32(buf, MLK_PAYLOAD_MAGIC);
    wr32(buf + 4, 1);
    write_rec(buf + 8, MLK_DT_I32, 1, &n_gen, tokens, n_gen);
    *out = buf;
    *out_len = size;
    return MLK_OK;
}

/* One node on the tensors' current data (exec.c runs the split game's
 * executions with it). */
int mlk_run_node(mlk_ctx *c, mlk_node *nd) { return run_node(c, nd); }
