/*
 * ops.c - the tensor kernels of mlkit.
 *
 * Plain C on `float`.  In the MIPS build every + - * / and comparison is a
 * soft-float call (a few dozen VM steps), so the loops are written to do no
 * float work beyond the math itself: shapes were validated by graph.c, so
 * there are no bounds checks in the loops, pointers are incremented instead
 * of recomputing indices, and padding is handled by clipping loop ranges
 * rather than by testing every tap.
 *
 * The dot products of linear, matmul, the convolutions and attention (nearly
 * all of a model's work) go through dot_run(), which is sf_dot's kernel in
 * the MIPS build: the same roundings as `acc += x * w` term by term, at a
 * fraction of the cost of two soft-float calls (softfloat.c, "Dot
 * products").  The native build runs the plain loop on the FPU (built with
 * -DMLK_SOFT_DOT it runs the kernel too: tests/mlkit/test_mlkit_ops.py checks
 * that both give the same bytes).
 *
 * Summation order is fixed by the code (always the textual order below), so
 * the host build and the MIPS build produce the same bits.  It is not the
 * order torch uses; results agree with torch within rounding (see
 * tests/mlkit/test_mlkit_ops.py for the tolerances).
 */
#include "mlkit.h"

/* Transcendentals on floats, via the integer implementations in mathf.c. */
static inline float f_sqrt(float x) { return u2f(sf_sqrt(f2u(x))); }
static inline float f_exp(float x) { return u2f(sf_exp(f2u(x))); }

/* acc + sum of x[i*dx0 + j*dx1 + k*dx2] * w[i*dw0 + j*dw1 + k*dw2] over
 * i < n0, j < n1, k < n2 (k fastest), rounding each product and each sum:
 * exactly `acc += x * w` in that order (see sf_loop in softfloat.h).  A sum
 * that starts with its first product starts from acc = -0 (-0 + p = p).
 * The FPU build's loop; the soft builds run sf_dot's kernel (dot_run). */
#if !defined(SOFTFLOAT_ABI) && !defined(MLK_SOFT_DOT)
static float dot(float acc, const float *x, const float *w, const sf_loop l[3])
{
    const int32_t n2 = (int32_t)l[2].n, dx = l[2].dx, dw = l[2].dw;
    for (int32_t i = 0; i < (int32_t)l[0].n; i++)
        for (int32_t j = 0; j < (int32_t)l[1].n; j++) {
            const float *xr = x + i * l[0].dx + j * l[1].dx, *wr = w + i * l[0].dw + j * l[1].dw;
            for (int32_t k = 0; k < n2; k++)
                acc += xr[k * dx] * wr[k * dw];
        }
    return acc;
}
#endif

/* Runs of dot products.  dot_run(y, acc, x, i, w, j, l, run) is
 *     y[o * run.out] = dot(acc, x + i + o * run.x, w + j + o * run.w, l)
 * for o < run.count: a row of a linear layer's outputs, of a convolution's,
 * in one kernel call (sf_dot_run), so the setup of a dot product is paid
 * once per run.  Operands used by many dot products (a row of a linear
 * layer's input, a convolution's input image, an attention query) are
 * unpacked once in the soft builds, into buffers on the op's stack, and
 * their runs take a few steps a term fewer:
 *   dot_source(buf, x, n, uses)   x's n elements, each used `uses` times
 *                                 (with few zeros: sf_dot_dense_run);
 *   dot_floats(w)                 w as it is.
 * A convolution's outputs with the same taps (the interior ones, a run
 * along an edge) share them: conv_taps(buf, x, w, l, uses) unpacks the
 * weights of loops l (each with the offset of its term's x, sf_tap), and
 * taps_run(y, acc, x, i, taps, run) runs them in one flat loop, whatever
 * the shape of the kernel's rows.  Operands of more than DOT_PAIRS elements
 * (DOT_TAPS taps), or used fewer than DOT_REUSE times (unpacking costs more
 * than it saves), stay floats; in the FPU build all of them do. */
#define DOT_REUSE 4
typedef struct {
    const sf_pair *pairs; /* the elements unpacked, or 0: f */
    const float *f;
    int dense;            /* pairs with few zeros (sf_dot_dense_run) */
} dot_src;

static inline dot_src dot_floats(const float *w)
{
    dot_src s = {0, w, 0};
    return s;
}

#if defined(SOFTFLOAT_ABI) || defined(MLK_SOFT_DOT)
#define DOT_PAIRS 262144u /* 2 MiB of stack */
#define DOT_TAPS 16384u  /* 192 KiB */
#define DOT_BUFFER(name) sf_pair name[DOT_PAIRS]
#define TAP_BUFFER(name) sf_tap name[DOT_TAPS]
typedef sf_tap *sf_tap_buf;
typedef struct {
    const sf_tap *taps;
    uint32_t n; /* 0: none, the outputs run dot_run */
} dot_taps;

static dot_src dot_source(sf_pair *buf, const float *x, uint32_t n, uint32_t uses)
{
    dot_src s = {0, x, 0};
    if (n <= DOT_PAIRS && uses >= DOT_REUSE) {
        s.dense = sf_unpack(buf, (const uint32_t *)x, n) * DOT_DENSE < n;
        s.pairs = buf;
    }
    return s;
}

/* The taps of the dot products of a class of a convolution's outputs: the
 * terms of loops l over x (strides: from the outputs' first x) and w (the
 * floats), for taps_run; none (n = 0) if x is not unpacked, they do not
 * fit or are used fewer than DOT_REUSE times. */
static dot_taps conv_taps(sf_tap *buf, dot_src x, const float *w, const sf_loop l[3], uint32_t uses)
{
    dot_taps t = {buf, 0};
    if (x.pairs && uses >= DOT_REUSE && l[2].n && l[0].n * l[1].n <= DOT_TAPS / l[2].n) {
        sf_taps(buf, (const uint32_t *)w, l);
        t.n = l[0].n * l[1].n * l[2].n;
    }
    return t;
}

/* y[o * run.out] = the dot product from acc over the taps t of x + i + o * run.x */
static void taps_run(float *y, float acc, dot_src x, int32_t i, dot_taps t, sf_run run)
{
    sf_dot_taps_run((uint32_t *)y, f2u(acc), x.pairs + i, t.taps, t.n, &run);
}

static void dot_run(float *y, float acc, dot_src x, int32_t i, dot_src w, int32_t j, const sf_loop l[3], sf_run run)
{
    uint32_t *out = (uint32_t *)y;
    if (x.dense)
        sf_dot_dense_run(out, f2u(acc), x.pairs + i, (const uint32_t *)(w.f + j), l, &run);
    else if (x.pairs)
        sf_dot_pairs_run(out, f2u(acc), x.pairs + i, (const uint32_t *)(w.f + j), l, &run);
    else
        sf_dot_run(out, f2u(acc), (const uint32_t *)(x.f + i), (const uint32_t *)(w.f + j), l, &run);
}
#else
#define DOT_BUFFER(name) float *const name = 0
#define TAP_BUFFER(name) float *const name = 0
typedef float *sf_tap_buf;
typedef struct {
    uint32_t n;
} dot_taps;

/* (no taps in this build: conv_taps gives none, so taps_run is never called) */
static dot_taps conv_taps(float *buf, dot_src x, const float *w, const sf_loop l[3], uint32_t uses)
{
    dot_taps t = {0};
    return t;
}

static void taps_run(float *y, float acc, dot_src x, int32_t i, dot_taps t, sf_run run) {}

static dot_src dot_source(float *buf, const float *x, uint32_t n, uint32_t uses)
{
    return dot_floats(x);
}

static void dot_run(float *y, float acc, dot_src x, int32_t i, dot_src w, int32_t j, const sf_loop l[3], sf_run run)
{
    for (uint32_t o = 0; o < run.count; o++)
        y[o * run.out] = dot(acc, x.f + i + (int32_t)o * run.x, w.f + j + (int32_t)o * run.w, l);
}
#endif

/* A run of a convolution's outputs (from 0) with the taps of loops l (x from
 * x + i, w from w) of their own: over taps (in buf) if the run is long
 * enough, else by dot_run. */
static void conv_run(float *y, dot_src x, int32_t i, const float *w, const sf_loop l[3], sf_run run, sf_tap_buf buf)
{
    const dot_taps t = conv_taps(buf, x, w, l, run.count);
    if (t.n)
        taps_run(y, 0.0f, x, i, t, run);
    else
        dot_run(y, 0.0f, x, i, dot_floats(w), 0, l, run);
}

/* y[o] += b for the n outputs of a run, o steps apart (a bias after the dot
 * products, as `acc += b`). */
static void add_bias(float *y, float b, uint32_t n, int32_t step)
{
    for (; n; n--, y += step)
        *y = *y + b;
}

/* ---- linear algebra ---------------------------------------------------- */

/* y[m, n] = x[m, k] . w[n, k]^T (+ b[n]): w is in torch's nn.Linear layout,
 * so both operands of each dot product are contiguous. */
void op_linear(const float *x, const float *w, const float *b, float *y, uint32_t m, uint32_t k, uint32_t n)
{
    const sf_loop row[3] = {{1, 0, 0}, {1, 0, 0}, {k, 1, 1}};
    const sf_run outs = {n, 1, 0, (int32_t)k}; /* y[j] = x . w[j] */
    DOT_BUFFER(buf);
    for (uint32_t i = 0; i < m; i++, x += k, y += n) {
        dot_run(y, -0.0f, dot_source(buf, x, k, n), 0, dot_floats(w), 0, row, outs);
        if (b)
            for (uint32_t j = 0; j < n; j++)
                y[j] = y[j] + b[j];
    }
}

/* y[bt, m, n] = a[bt, m, k] @ b[bt, k, n] (+ bias[n]).  b_step is the size
 * of one b matrix, or 0 when one b is shared by every batch entry. */
void op_matmul(const float *a, const float *b, const float *bias, float *y, uint32_t batch, uint32_t b_step,
               uint32_t m, uint32_t k, uint32_t n)
{
    /* a row of a times a column of b */
    const sf_loop rc[3] = {{1, 0, 0}, {1, 0, 0}, {k, 1, (int32_t)n}};
    const sf_run outs = {n, 1, 0, 1};
    DOT_BUFFER(buf);
    for (uint32_t bt = 0; bt < batch; bt++, b += b_step) {
        for (uint32_t i = 0; i < m; i++, a += k, y += n) {
            dot_run(y, -0.0f, dot_source(buf, a, k, n), 0, dot_floats(b), 0, rc, outs);
            if (bias)
                for (uint32_t j = 0; j < n; j++)
                    y[j] = y[j] + bias[j];
        }
    }
}

/* ---- convolutions (NCHW) ------------------------------------------------ */

/* Range of kernel taps [*k0, *k1) for which the input index o*s - p + k lies
 * in [0, len); returns o*s - p (the input index of tap 0). */
static int32_t tap_range(int32_t o, int32_t s, int32_t p, int32_t klen, int32_t len, int32_t *k0, int32_t *k1)
{
    int32_t i0 = o * s - p;
    *k0 = i0 < 0 ? -i0 : 0;
    *k1 = len - i0 < klen ? len - i0 : klen;
    if (*k1 < *k0)
        *k1 = *k0;
    return i0;
}

/* How many outputs o < O have all klen taps inside the input (tap_range). */
static int32_t inner_outputs(int32_t O, int32_t s, int32_t p, int32_t klen, int32_t len)
{
    int32_t n = 0, k0, k1;
    for (int32_t o = 0; o < O; o++) {
        tap_range(o, s, p, klen, len, &k0, &k1);
        n += k0 == 0 && k1 == klen;
    }
    return n;
}

/* x[B, C, H, W], w[OC, C, KH, KW] -> y[B, OC, OH, OW]; a = stride_h,
 * stride_w, pad_h, pad_w.  y = sum over c, ky, kx (in that order) of
 * x[c, oy*sh - ph + ky, ox*sw - pw + kx] * w[oc, c, ky, kx], then + b. */
void op_conv2d(const float *x, const float *w, const float *b, float *y, const uint32_t xs[4],
               const uint32_t ws[4], const uint32_t ys[4], const int32_t *a)
{
    const int32_t C = (int32_t)xs[1], H = (int32_t)xs[2], W = (int32_t)xs[3];
    const int32_t KH = (int32_t)ws[2], KW = (int32_t)ws[3];
    const int32_t OC = (int32_t)ys[1], OH = (int32_t)ys[2], OW = (int32_t)ys[3];
    const int32_t sh = a[0], sw = a[1], ph = a[2], pw = a[3];
    const sf_loop all[3] = {{(uint32_t)C, H * W, KH * KW}, {(uint32_t)KH, W, KW}, {(uint32_t)KW, 1, 1}};
    const uint32_t n_inner = (uint32_t)(inner_outputs(OH, sh, ph, KH, H) * inner_outputs(OW, sw, pw, KW, W));
    const uint32_t x_uses = (uint32_t)(OC * KH * KW / (sh * sw)); /* about: each x meets KH KW / (sh sw) taps */
    DOT_BUFFER(buf);
    TAP_BUFFER(tbuf);
    TAP_BUFFER(ebuf);
    for (uint32_t bi = 0; bi < xs[0]; bi++) {
        const dot_src xb = dot_source(buf, x + bi * (uint32_t)(C * H * W), (uint32_t)(C * H * W), x_uses);
        for (int32_t oc = 0; oc < OC; oc++) {
            const float *wc = w + (uint32_t)(oc * C * KH * KW);
            const dot_taps inner = conv_taps(tbuf, xb, wc, all, n_inner); /* all taps */
            for (int32_t oy = 0; oy < OH; oy++) {
                int32_t ky0, ky1;
                int32_t iy0 = tap_range(oy, sh, ph, KH, H, &ky0, &ky1);
                /* runs of outputs ox .. ox+n-1 with the same columns of taps */
                for (int32_t ox = 0, n; ox < OW; ox += n, y += n) {
                    int32_t kx0, kx1, k0, k1;
                    int32_t ix0 = tap_range(ox, sw, pw, KW, W, &kx0, &kx1);
                    for (n = 1; ox + n < OW; n++) {
                        tap_range(ox + n, sw, pw, KW, W, &k0, &k1);
                        if (k0 != kx0 || k1 != kx1)
                            break;
                    }
                    const sf_run run = {(uint32_t)n, 1, sw, 0};
                    if (inner.n && ky0 == 0 && ky1 == KH && kx0 == 0 && kx1 == KW) {
                        taps_run(y, 0.0f, xb, iy0 * W + ix0, inner, run);
                    } else if (kx1 > kx0 && ky1 > ky0) {
                        /* channels, kernel rows ky0 .. ky1-1, columns kx0 .. kx1-1 */
                        const sf_loop taps[3] = {{(uint32_t)C, H * W, KH * KW},
                                                 {(uint32_t)(ky1 - ky0), W, KW},
                                                 {(uint32_t)(kx1 - kx0), 1, 1}};
                        conv_run(y, xb, (iy0 + ky0) * W + ix0 + kx0, wc + ky0 * KW + kx0, taps, run, ebuf);
                    } else {
                        for (int32_t o = 0; o < n; o++)
                            y[o] = 0.0f;
                    }
                    if (b)
                        add_bias(y, b[oc], (uint32_t)n, 1);
                }
            }
        }
    }
}

/* The taps of a transposed convolution that reach output index o: input
 * index i and kernel index k with i*s - p + k = o, 0 <= i < len,
 * 0 <= k < klen.  They form a progression k = k0, k0+s, ... with i = i0,
 * i0-1, ...; returns the count. */
static int32_t tconv_taps(int32_t o, int32_t s, int32_t p, int32_t klen, int32_t len, int32_t *k0, int32_t *i0)
{
    int32_t t = o + p; /* >= 0 */
    int32_t k = t % s, i = t / s;
    if (i >= len) {    /* skip taps whose input index is past the end */
        k += (i - (len - 1)) * s;
        i = len - 1;
    }
    int32_t n = 0;
    if (k < klen)
        n = (klen - 1 - k) / s + 1;
    if (n > i + 1)
        n = i + 1;
    *k0 = k;
    *i0 = i;
    return n;
}

/* How many outputs o = r, r + s, ... below O have the taps k, k + s, ...
 * (n of them) of their phase, none cut off by the input's edges. */
static int32_t tconv_inner(int32_t r, int32_t O, int32_t s, int32_t p, int32_t klen, int32_t len, int32_t k,
                           int32_t n)
{
    int32_t count = 0, k0, i0;
    for (int32_t o = r; o < O; o += s)
        count += tconv_taps(o, s, p, klen, len, &k0, &i0) == n && k0 == k;
    return count;
}

/* x[B, C, H, W], w[C, OC, KH, KW] (torch layout) -> y[B, OC', OH, OW];
 * a = stride_h, stride_w, pad_h, pad_w, out_pad_h, out_pad_w.  Written as a
 * gather (each output sums its taps, c outer) so outputs are written once.
 * OC' = ys[1] <= OC: a tile of output channels starts at w + oc0 KH KW. */
void op_conv_transpose2d(const float *x, const float *w, const float *b, float *y, const uint32_t xs[4],
                         const uint32_t ws[4], const uint32_t ys[4], const int32_t *a)
{
    const int32_t C = (int32_t)xs[1], H = (int32_t)xs[2], W = (int32_t)xs[3];
    const int32_t KH = (int32_t)ws[2], KW = (int32_t)ws[3];
    const int32_t OC = (int32_t)ys[1], OH = (int32_t)ys[2], OW = (int32_t)ys[3];
    const int32_t sh = a[0], sw = a[1], ph = a[2], pw = a[3];
    const uint32_t x_uses = (uint32_t)(OC * KH * KW / (sh * sw)); /* about: each x meets KH KW / (sh sw) taps */
    DOT_BUFFER(buf);
    TAP_BUFFER(tbuf);
    TAP_BUFFER(ebuf);
    for (uint32_t bi = 0; bi < xs[0]; bi++) {
        const dot_src xb = dot_source(buf, x + bi * (uint32_t)(C * H * W), (uint32_t)(C * H * W), x_uses);
        for (int32_t oc = 0; oc < OC; oc++) {
            const float *wc = w + oc * KH * KW;
            /* the outputs one phase of the stride at a time (oy = ry, ry + sh,
             * ...; ox = rx, rx + sw, ...): the interior ones share their taps
             * (kernel rows ky0, ky0 + sh, ..., columns kx0, kx0 + sw, ...) */
            for (int32_t ry = 0; ry < sh && ry < OH; ry++)
                for (int32_t rx = 0; rx < sw && rx < OW; rx++) {
                    const int32_t cy = (ry + ph) % sh, cx = (rx + pw) % sw;
                    const sf_loop phase[3] = {{(uint32_t)C, H * W, (int32_t)ws[1] * KH * KW},
                                              {(uint32_t)(cy < KH ? (KH - 1 - cy) / sh + 1 : 0), -W, sh * KW},
                                              {(uint32_t)(cx < KW ? (KW - 1 - cx) / sw + 1 : 0), -1, sw}};
                    const int32_t uses = tconv_inner(ry, OH, sh, ph, KH, H, cy, (int32_t)phase[1].n) *
                                         tconv_inner(rx, OW, sw, pw, KW, W, cx, (int32_t)phase[2].n);
                    const dot_taps inner = conv_taps(tbuf, xb, wc + cy * KW + cx, phase, (uint32_t)uses);
                    for (int32_t oy = ry; oy < OH; oy += sh) {
                        int32_t ky0, iy0;
                        int32_t nky = tconv_taps(oy, sh, ph, KH, H, &ky0, &iy0);
                        float *yr = y + oy * OW;
                        /* runs of outputs ox, ox + sw, ... with the same taps: their
                         * inputs step by 1 */
                        for (int32_t ox = rx, n; ox < OW; ox += n * sw) {
                            int32_t kx0, ix0, k0, i0;
                            int32_t nkx = tconv_taps(ox, sw, pw, KW, W, &kx0, &ix0);
                            for (n = 1; ox + n * sw < OW; n++)
                                if (tconv_taps(ox + n * sw, sw, pw, KW, W, &k0, &i0) != nkx || k0 != kx0 ||
                                    i0 != ix0 + n)
                                    break;
                            const sf_run run = {(uint32_t)n, sw, 1, 0};
                            if (inner.n && ky0 == cy && nky == (int32_t)phase[1].n && kx0 == cx &&
                                nkx == (int32_t)phase[2].n) {
                                taps_run(yr + ox, 0.0f, xb, iy0 * W + ix0, inner, run);
                            } else if (nkx > 0 && nky > 0) {
                                /* channels; taps (ky0 + j*sh, kx0 + k*sw) meet input (iy0 - j, ix0 - k) */
                                const sf_loop taps[3] = {{(uint32_t)C, H * W, (int32_t)ws[1] * KH * KW},
                                                         {(uint32_t)nky, -W, sh * KW},
                                                         {(uint32_t)nkx, -1, sw}};
                                conv_run(yr + ox, xb, iy0 * W + ix0, wc + ky0 * KW + kx0, taps, run, ebuf);
                            } else {
                                for (int32_t o = 0; o < n; o++)
                                    yr[ox + o * sw] = 0.0f;
                            }
                            if (b)
                                add_bias(yr + ox, b[oc], (uint32_t)n, sw);
                        }
                    }
                }
            y += OH * OW;
        }
    }
}

/* ---- normalization -------------------------------------------------------- */

/* Inference batchnorm over channel axis 1: x viewed as [outer, ch, inner].
 * y = x * alpha + beta with alpha = g / sqrt(var + eps),
 * beta = b - mean * alpha (the form torch's CPU kernel uses). */
void op_batchnorm(const float *x, const float *g, const float *beta, const float *mean, const float *var,
                  float eps, float *y, uint32_t outer, uint32_t ch, uint32_t inner)
{
    for (uint32_t o = 0; o < outer; o++) {
        for (uint32_t c = 0; c < ch; c++) {
            float alpha = g[c] / f_sqrt(var[c] + eps);
            float shift = beta[c] - mean[c] * alpha;
            for (uint32_t i = inner; i; i--)
                *y++ = *x++ * alpha + shift;
        }
    }
}

/* Layer norm over the last axis (n values per row), biased variance:
 * y = (x - mean) / sqrt(var + eps) * g + b. */
void op_layernorm(const float *x, const float *g, const float *b, float eps, float *y, uint32_t rows,
                  uint32_t n)
{
    const float fn = (float)n;
    for (uint32_t r = 0; r < rows; r++, x += n) {
        float sum = 0.0f;
        for (uint32_t i = 0; i < n; i++)
            sum += x[i];
        float mean = sum / fn;
        float ss = 0.0f;
        for (uint32_t i = 0; i < n; i++) {
            float d = x[i] - mean;
            ss += d * d;
        }
        float rstd = 1.0f / f_sqrt(ss / fn + eps);
        for (uint32_t i = 0; i < n; i++)
            *y++ = (x[i] - mean) * rstd * g[i] + b[i];
    }
}

/* ---- pooling (NCHW) ----------------------------------------------------------- */

/* a = kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w; padding never
 * wins a max (torch semantics; pad <= kernel/2 so every window has a real
 * element).  A NaN in the window makes the result NaN, as in torch. */
void op_maxpool2d(const float *x, float *y, const uint32_t xs[4], const uint32_t ys[4], const int32_t *a)
{
    const int32_t H = (int32_t)xs[2], W = (int32_t)xs[3], OH = (int32_t)ys[2], OW = (int32_t)ys[3];
    const uint32_t planes = xs[0] * xs[1];
    for (uint32_t pl = 0; pl < planes; pl++, x += H * W) {
        for (int32_t oy = 0; oy < OH; oy++) {
            int32_t ky0, ky1;
            int32_t iy0 = tap_range(oy, a[2], a[4], a[0], H, &ky0, &ky1);
            for (int32_t ox = 0; ox < OW; ox++) {
                int32_t kx0, kx1;
                int32_t ix0 = tap_range(ox, a[3], a[5], a[1], W, &kx0, &kx1);
                const float *row = x + (iy0 + ky0) * W + ix0 + kx0;
                const int32_t nkx = kx1 - kx0;
                float m = row[0];
                for (int32_t ky = ky0; ky < ky1; ky++, row += W) {
                    for (int32_t kx = 0; kx < nkx; kx++) {
                        float v = row[kx];
                        if (v > m || v != v)
                            m = v;
                    }
                }
                *y++ = m;
            }
        }
    }
}

/* a = kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
 * count_include_pad: the sum of the window's real elements divided by
 * kernel_h*kernel_w (count_include_pad = 1, torch's default) or by the
 * number of real elements (0). */
void op_avgpool2d(const float *x, float *y, const uint32_t xs[4], const uint32_t ys[4], const int32_t *a)
{
    const int32_t H = (int32_t)xs[2], W = (int32_t)xs[3], OH = (int32_t)ys[2], OW = (int32_t)ys[3];
    const uint32_t planes = xs[0] * xs[1];
    for (uint32_t pl = 0; pl < planes; pl++, x += H * W) {
        for (int32_t oy = 0; oy < OH; oy++) {
            int32_t ky0, ky1;
            int32_t iy0 = tap_range(oy, a[2], a[4], a[0], H, &ky0, &ky1);
            for (int32_t ox = 0; ox < OW; ox++) {
                int32_t kx0, kx1;
                int32_t ix0 = tap_range(ox, a[3], a[5], a[1], W, &kx0, &kx1);
                const float *row = x + (iy0 + ky0) * W + ix0 + kx0;
                const int32_t nkx = kx1 - kx0;
                float sum = 0.0f;
                for (int32_t ky = ky0; ky < ky1; ky++, row += W)
                    for (int32_t kx = 0; kx < nkx; kx++)
                        sum += row[kx];
                int32_t count = a[6] ? a[0] * a[1] : (ky1 - ky0) * (kx1 - kx0);
                *y++ = sum / (float)count;
            }
        }
    }
}

/* ---- elementwise ------------------------------------------------------------- */

/* max(x, 0) on the bits, no float call: negative numbers, -0 and NaN give +0
 * (NaN > 0 is false, so this equals x > 0 ? x : 0). */
void op_relu(const float *x, float *y, uint32_t n)
{
    const uint32_t *xp = (const uint32_t *)x;
    uint32_t *yp = (uint32_t *)y;
    for (; n; n--) {
        uint32_t v = *xp++;
        *yp++ = (v & 0x80000000u) || v > 0x7F800000u ? 0u : v;
    }
}

void op_leaky_relu(const float *x, float *y, uint32_t n, float slope)
{
    for (; n; n--, x++)
        *y++ = *x > 0.0f ? *x : *x * slope;
}

void op_tanh(const float *x, float *y, uint32_t n)
{
    const uint32_t *xp = (const uint32_t *)x;
    uint32_t *yp = (uint32_t *)y;
    for (; n; n--)
        *yp++ = sf_tanh(*xp++);
}

void op_sigmoid(const float *x, float *y, uint32_t n)
{
    const uint32_t *xp = (const uint32_t *)x;
    uint32_t *yp = (uint32_t *)y;
    for (; n; n--)
        *yp++ = sf_sigmoid(*xp++);
}

/* GPT-2's tanh approximation: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))). */
void op_gelu(const float *x, float *y, uint32_t n)
{
    const uint32_t *xp = (const uint32_t *)x;
    uint32_t *yp = (uint32_t *)y;
    for (; n; n--)
        *yp++ = sf_gelu(*xp++);
}

/* y = a + b, where b (nb values) repeats over a (n values, n % nb == 0). */
void op_add(const float *a, const float *b, float *y, uint32_t n, uint32_t nb)
{
    for (uint32_t r = n / nb; r; r--) {
        const float *bp = b;
        for (uint32_t i = nb; i; i--)
            *y++ = *a++ + *bp++;
    }
}

void op_mul(const float *a, const float *b, float *y, uint32_t n, uint32_t nb)
{
    for (uint32_t r = n / nb; r; r--) {
        const float *bp = b;
        for (uint32_t i = nb; i; i--)
            *y++ = *a++ * *bp++;
    }
}

/* ---- softmax, argmax ------------------------------------------------------------- */

/* Softmax over rows of n: e = exp(x - max), y = e / sum(e). */
void op_softmax(const float *x, float *y, uint32_t rows, uint32_t n)
{
    for (uint32_t r = 0; r < rows; r++, x += n, y += n) {
        float m = x[0];
        for (uint32_t i = 1; i < n; i++)
            if (x[i] > m)
                m = x[i];
        float sum = 0.0f;
        for (uint32_t i = 0; i < n; i++) {
            float e = f_exp(x[i] - m);
            y[i] = e;
            sum += e;
        }
        for (uint32_t i = 0; i < n; i++)
            y[i] = y[i] / sum;
    }
}

/* Index of the first maximum of each row (numpy semantics: the first NaN
 * counts as the maximum). */
void op_argmax(const float *x, int32_t *y, uint32_t rows, uint32_t n)
{
    for (uint32_t r = 0; r < rows; r++, x += n) {
        uint32_t best = 0;
        float m = x[0];
        if (m == m) {
            for (uint32_t i = 1; i < n; i++) {
                float v = x[i];
                if (v > m) {
                    m = v;
                    best = i;
                } else if (v != v) {
                    best = i;
                    break;
                }
            }
        }
        *y++ = (int32_t)best;
    }
}

/* ---- data movement --------------------------------------------------------------- */

/* Rows of `table` ([vocab, dim]) selected by ids; 1 if an id is out of range
 * (ids can come from the input, so this is checked at run time). */
int op_embedding(const int32_t *ids, const float *table, float *y, uint32_t n_ids, uint32_t vocab,
                 uint32_t dim)
{
    for (uint32_t i = 0; i < n_ids; i++) {
        uint32_t id = (uint32_t)ids[i];
        if (id >= vocab)
            return 1;
        mlk_memcpy(y, table + id * dim, dim * 4u);
        y += dim;
    }
    return 0;
}

/* y = x permuted: y.shape[d] = x.shape[perm[d]].  Works on 32-bit words, so
 * on f32 and i32 alike; shapes are padded to rank 4 with trailing 1s. */
void op_transpose(const uint32_t *x, uint32_t *y, const uint32_t xs[4], const uint32_t perm[4])
{
    uint32_t stride[4], st[4], n[4];
    stride[3] = 1;
    for (int d = 2; d >= 0; d--)
        stride[d] = stride[d + 1] * xs[d + 1];
    for (int d = 0; d < 4; d++) {
        st[d] = stride[perm[d]];
        n[d] = xs[perm[d]];
    }
    for (uint32_t i0 = 0; i0 < n[0]; i0++) {
        const uint32_t *p0 = x + i0 * st[0];
        for (uint32_t i1 = 0; i1 < n[1]; i1++) {
            const uint32_t *p1 = p0 + i1 * st[1];
            for (uint32_t i2 = 0; i2 < n[2]; i2++) {
                const uint32_t *p2 = p1 + i2 * st[2];
                for (uint32_t i3 = n[3]; i3; i3--, p2 += st[3])
                    *y++ = *p2;
            }
        }
    }
}

/* ---- attention ------------------------------------------------------------------------ */

/* GPT-2 causal self-attention with a KV cache.
 *   qkv[t, 3c]: rows of q | k | v (the output of the c_attn linear);
 *   head h uses columns h*d .. h*d+d-1 of each part, d = c / n_head;
 *   kcache, vcache [cap, c]: rows 0..pos-1 hold earlier positions;
 *   scores: cap floats of scratch.
 * Row i of this call is position pos + i: its k and v rows are appended to
 * the caches and its query attends to positions 0..pos+i:
 *   s_j = (q . k_j) / sqrt(d);  w = softmax(s);  y = sum_j w_j v_j. */
void op_attention(const float *qkv, float *y, float *kcache, float *vcache, float *scores, uint32_t pos,
                  uint32_t t, uint32_t c, uint32_t n_head)
{
    const uint32_t d = c / n_head;
    const float sq = f_sqrt((float)d);
    DOT_BUFFER(buf);

    for (uint32_t i = 0; i < t; i++) {
        mlk_memcpy(kcache + (pos + i) * c, qkv + i * 3u * c + c, c * 4u);
        mlk_memcpy(vcache + (pos + i) * c, qkv + i * 3u * c + 2u * c, c * 4u);
    }
    for (uint32_t i = 0; i < t; i++) {
        const uint32_t len = pos + i + 1; /* positions this query sees */
        for (uint32_t h = 0; h < n_head; h++) {
            const dot_src q = dot_source(buf, qkv + i * 3u * c + h * d, d, len);
            const float *kp = kcache + h * d;
            const sf_loop qk[3] = {{1, 0, 0}, {1, 0, 0}, {d, 1, 1}};
            const sf_run keys = {len, 1, 0, (int32_t)c};
            dot_run(scores, -0.0f, q, 0, dot_floats(kp), 0, qk, keys);
            for (uint32_t j = 0; j < len; j++)
                scores[j] = scores[j] / sq;
            op_softmax(scores, scores, 1, len); /* in place: each element is read before it is written */
            /* y_h = sum_j w_j v_j: element e is w . (column e of v), summed
             * over j in order */
            const dot_src wts = dot_source(buf, scores, len, d);
            float *yh = y + i * c + h * d;
            const float *vp = vcache + h * d;
            const sf_loop wv[3] = {{1, 0, 0}, {1, 0, 0}, {len, 1, (int32_t)c}};
            const sf_run cols = {d, 1, 0, 1};
            dot_run(yh, -0.0f, wts, 0, dot_floats(vp), 0, wv, cols);
        }
    }
}

/* ---- quantized ops (docs/model-format.md, "Quantized models") ------------------------------------ */

/* The nearest integer to the float x, ties to even, saturated to
 * [-2^30, 2^30] (far outside any 8-bit range); NaN gives 0.  On the bits. */
static int32_t round_even_i32(uint32_t x)
{
    uint32_t e = (x >> 23) & 0xFF, m, q, rem, half;
    if (e < 126)                              /* |x| < 0.5, or NaN-free zero/subnormal */
        return 0;
    if (e == 0xFF && (x & 0x007FFFFFu))       /* NaN */
        return 0;
    if (e >= 127 + 30)                        /* |x| >= 2^30, or inf */
        return (x >> 31) ? -(1 << 30) : (1 << 30);
    m = (x & 0x007FFFFFu) | 0x00800000u;      /* |x| = m * 2^(e - 150) */
    if (e >= 150) {
        q = m << (e - 150);
    } else {
        uint32_t sh = 150 - e;                /* 1..24 */
        q = m >> sh;
        rem = m & ((1u << sh) - 1u);
        half = 1u << (sh - 1);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
    }
    return (x >> 31) ? -(int32_t)q : (int32_t)q;
}

/*
 * round_even(fl(x / s)) for a normal s, most of the time without dividing.
 * With x = mx 2^(ex - 150), s = ms 2^(es - 150) (24-bit significands) and
 * r = floor((2^55 - 1) / ms) (once per op; < 2^32), the quotient
 * Q = (mx / ms) 2^k, k = ex - es, is at most 2^(k - 31) above
 * A = mx r 2^(k - 55), which the code has with 32 bits below the point.  For
 * k <= 9 (|Q| < 2^10) the binary32 rounding fl(Q) moves Q by at most 2^-14,
 * so when A is 2^-13 or more from every half-integer, fl(Q) rounds to the
 * integer nearest to A; otherwise (about one input in 4096) the code divides.
 * For k >= 10, |Q| >= 2^9 saturates any 8-bit range, and for k <= -2,
 * |Q| < 1/2 rounds to 0, both as round_even_i32 would.
 */
typedef struct {
    uint32_t r;            /* floor((2^55 - 1) / ms) */
    int32_t es;            /* s's exponent field */
} quotient;

static quotient quotient_of(float s)
{
    uint32_t b = f2u(s), ms = (b & 0x007FFFFFu) | 0x00800000u, q = 0, rem = 0;
    quotient out;
    for (int i = 0; i < 55; i++) { /* long division of 55 one bits by ms */
        rem = (rem << 1) | 1u;
        q <<= 1;
        if (rem >= ms) {
            rem -= ms;
            q |= 1u;
        }
    }
    out.r = q;
    out.es = (int32_t)((b >> 23) & 0xFF);
    return out;
}

static int32_t round_quotient(float x, float s, const quotient *d)
{
    uint32_t b = f2u(x), ex = (b >> 23) & 0xFF;
    int32_t k = (int32_t)ex - d->es, n;
    if (ex == 0 || ex == 0xFF || d->es == 0 || k > 9 || k < -1) {
        if (k <= -2 && ex != 0xFF && d->es != 0)
            return 0;                         /* |x / s| < 1/2 (a subnormal x too) */
        return round_even_i32(f2u(x / s));    /* saturation, specials, a subnormal s */
    }
    uint64_t p = (uint64_t)((b & 0x007FFFFFu) | 0x00800000u) * d->r;
    uint32_t hi = (uint32_t)(p >> 32), lo = (uint32_t)p, sh = (uint32_t)(23 - k); /* 14..24 */
    uint32_t ipart = hi >> sh, frac = (lo >> sh) | (hi << (32 - sh));
    uint32_t dist = frac >= 0x80000000u ? frac - 0x80000000u : 0x80000000u - frac;
    if (dist < (1u << 19))                    /* near a half-integer: divide */
        return round_even_i32(f2u(x / s));
    n = (int32_t)(ipart + (frac >> 31));
    return (b >> 31) ? -n : n;
}

/* y = clamp(round_even(x / scale) + zp, lo, hi): ONNX QuantizeLinear (the
 * quotient x / scale rounded to binary32 first).  A zero (+0 or -0) gives
 * zp: many inputs (image backgrounds) are zeros. */
void op_quantize(const float *x, void *y, uint32_t n, float scale, int32_t zp, int32_t lo, int32_t hi,
                 uint32_t is_i8)
{
    const uint32_t *xb = (const uint32_t *)x;
    uint8_t *yb = (uint8_t *)y;
    const uint8_t zq = (uint8_t)(zp < lo ? lo : zp > hi ? hi : zp);
    const quotient d = quotient_of(scale);
    for (uint32_t i = 0; i < n; i++) {
        if ((xb[i] << 1) == 0) {
            yb[i] = zq;
            continue;
        }
        int32_t q = round_quotient(x[i], scale, &d) + zp;
        q = q < lo ? lo : q > hi ? hi : q;
        yb[i] = (uint8_t)(is_i8 ? (uint8_t)(int8_t)q : (uint8_t)q);
    }
}

/* y = (float)(x - zp) * scale: ONNX DequantizeLinear (x int8, uint8 or int32;
 * an int32 x has zp 0). */
void op_dequantize(const void *x, uint32_t dtype, float *y, uint32_t n, float scale, int32_t zp)
{
    if (dtype == MLK_DT_I32) {
        const int32_t *xi = (const int32_t *)x;
        for (uint32_t i = 0; i < n; i++)
            y[i] = (float)xi[i] * scale;
    } else if (dtype == MLK_DT_I8) {
        const int8_t *xi = (const int8_t *)x;
        for (uint32_t i = 0; i < n; i++)
            y[i] = (float)((int32_t)xi[i] - zp) * scale;
    } else {
        const uint8_t *xu = (const uint8_t *)x;
        for (uint32_t i = 0; i < n; i++)
            y[i] = (float)((int32_t)xu[i] - zp) * scale;
    }
}

/*
 * The integer sums of the quantized ops: acc + the sum of (x[k] - zx) *
 * (w[k] - zw) over a row of n contiguous terms.  Integer sums do not depend
 * on their order, so the kernels are free to use the fastest one; the sum
 * is kept in 64 bits (gcc accumulates it with one madd a term on MIPS) and
 * its low word is the result (int32, wrapping).  Three kinds, chosen once
 * per op: uint8 activations times int8 weights with zw = 0 (the symmetric
 * weights of ONNX's quantize_static and of mlkit's exporter) and zx = 0
 * (activations after a ReLU, inputs in [0, 1]): QK_U8I8_Z, three
 * instructions a term; the same with zx != 0: QK_U8I8, four; anything else:
 * QK_ANY.  A row runs eight terms a loop, then 4, 2 and 1 as the rest
 * needs (a convolution's rows are a few taps long).
 */
enum { QK_ANY, QK_U8I8, QK_U8I8_Z };

static int qkind(const mlk_qparams *q)
{
    if (q->sx || !q->sw || q->zw != 0)
        return QK_ANY;
    return q->zx == 0 ? QK_U8I8_Z : QK_U8I8;
}

#define QLOAD(p, k, s) ((s) ? (int32_t)((const int8_t *)(p))[k] : (int32_t)((const uint8_t *)(p))[k])
#define QTERM(k) acc += (int64_t)((int32_t)xr[k] - zx) * wr[k]

static inline __attribute__((always_inline)) int64_t
qrow_sum(const uint8_t *x, const uint8_t *w, uint32_t n, const mlk_qparams *q, const int kind)
{
    int64_t acc = 0; /* (from 0 in its own function: gcc keeps it in HI/LO through the loop) */
    if (kind == QK_ANY) {
        for (uint32_t k = 0; k < n; k++)
            acc += (int64_t)(QLOAD(x, k, q->sx) - q->zx) * (QLOAD(w, k, q->sw) - q->zw);
        return acc;
    }
    const int32_t zx = kind == QK_U8I8_Z ? 0 : q->zx;
    const uint8_t *xr = x;
    const int8_t *wr = (const int8_t *)w;
    for (; n >= 8; n -= 8, xr += 8, wr += 8) {
        QTERM(0); QTERM(1); QTERM(2); QTERM(3);
        QTERM(4); QTERM(5); QTERM(6); QTERM(7);
    }
    if (n & 4) { /* the last n < 8 terms: 4, 2, 1 */
        QTERM(0); QTERM(1); QTERM(2); QTERM(3);
        xr += 4, wr += 4;
    }
    if (n & 2) {
        QTERM(0); QTERM(1);
        xr += 2, wr += 2;
    }
    if (n & 1)
        QTERM(0);
    return acc;
}

/* One function per kind, called once per row. */
#define QROW_FN static __attribute__((noinline)) int64_t
QROW_FN qrow_z(const uint8_t *x, const uint8_t *w, uint32_t n, const mlk_qparams *q)
{
    return qrow_sum(x, w, n, q, QK_U8I8_Z);
}

QROW_FN qrow_zx(const uint8_t *x, const uint8_t *w, uint32_t n, const mlk_qparams *q)
{
    return qrow_sum(x, w, n, q, QK_U8I8);
}

QROW_FN qrow_any(const uint8_t *x, const uint8_t *w, uint32_t n, const mlk_qparams *q)
{
    return qrow_sum(x, w, n, q, QK_ANY);
}

static inline __attribute__((always_inline)) int64_t
qrow(const uint8_t *x, const uint8_t *w, uint32_t n, int64_t acc, const mlk_qparams *q, const int kind)
{
    if (kind == QK_U8I8_Z)
        return acc + qrow_z(x, w, n, q);
    if (kind == QK_U8I8)
        return acc + qrow_zx(x, w, n, q);
    return acc + qrow_any(x, w, n, q);
}

/* floor(v / 2^s), s in 0..62, for any int64 v (no reliance on >> of a
 * negative number). */
static inline int64_t floor_shift(int64_t v, uint32_t s)
{
    return v >= 0 ? (int64_t)((uint64_t)v >> s) : -(int64_t)(((uint64_t)(-(v + 1)) >> s) + 1u);
}

/* The requantization of output channel c: clamp(zy + round_half_up(acc *
 * mult / 2^shift), lo, hi), stored as one byte. */
static inline void requant(uint8_t *y, int32_t acc, uint32_t c, const mlk_qparams *q)
{
    uint32_t k = q->per_channel ? c : 0;
    uint32_t s = (uint32_t)q->shift[k];
    int64_t v = (int64_t)acc * q->mult[k];
    int64_t r = s ? floor_shift(v + ((int64_t)1 << (s - 1)), s) : v;
    r += q->zy;
    r = r < q->lo ? q->lo : r > q->hi ? q->hi : r;
    *y = (uint8_t)(int32_t)r;
}

static inline int32_t low32(int64_t acc) { return (int32_t)(uint32_t)(uint64_t)acc; }

/* y[m, n] = requant(bias[n] + (x[m, k] - zx) . (w[n, k] - zw)^T) */
static inline __attribute__((always_inline)) void
qlinear_kind(const uint8_t *x, const uint8_t *w, uint8_t *y, uint32_t m, uint32_t k, uint32_t n,
             const mlk_qparams *q, const int kind)
{
    for (uint32_t i = 0; i < m; i++, x += k) {
        const uint8_t *wr = w;
        for (uint32_t j = 0; j < n; j++, wr += k)
            requant(y++, low32(qrow(x, wr, k, q->bias[j], q, kind)), j, q);
    }
}

void op_qlinear(const void *x, const void *w, void *y, uint32_t m, uint32_t k, uint32_t n,
                const mlk_qparams *q)
{
    const uint8_t *xb = (const uint8_t *)x, *wb = (const uint8_t *)w;
    uint8_t *yb = (uint8_t *)y;
    switch (qkind(q)) {
    case QK_U8I8_Z: qlinear_kind(xb, wb, yb, m, k, n, q, QK_U8I8_Z); break;
    case QK_U8I8: qlinear_kind(xb, wb, yb, m, k, n, q, QK_U8I8); break;
    default: qlinear_kind(xb, wb, yb, m, k, n, q, QK_ANY); break;
    }
}

/*
 * Four adjacent outputs ox .. ox+3 of a convolution with stride_w 1 whose
 * taps are all inside the input row (the interior): each weight is loaded
 * once for four terms, and the four sums live in registers (32-bit,
 * wrapping like the others).  x points at the input of output ox's tap
 * (c 0, ky0, kx 0), w at that tap's weight.
 */
static inline __attribute__((always_inline)) void
qconv4(const uint8_t *x, const int8_t *w, int32_t C, uint32_t nky, int32_t KW, int32_t HW, int32_t W,
       int32_t KHKW, int32_t zx, uint32_t acc[4])
{
    uint32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int32_t c = 0; c < C; c++, x += HW, w += KHKW) {
        const uint8_t *xr = x;
        const int8_t *wr = w;
        for (uint32_t ky = 0; ky < nky; ky++, xr += W, wr += KW) {
            const uint8_t *xp = xr;
            const int8_t *wp = wr, *we = wr + KW;
            do {
                const int32_t wv = *wp++;
                a0 += (uint32_t)(((int32_t)xp[0] - zx) * wv);
                a1 += (uint32_t)(((int32_t)xp[1] - zx) * wv);
                a2 += (uint32_t)(((int32_t)xp[2] - zx) * wv);
                a3 += (uint32_t)(((int32_t)xp[3] - zx) * wv);
                xp++;
            } while (wp != we);
        }
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* As op_conv2d, on 8-bit tensors: y = requant(bias[oc] + the sum over the
 * taps of (x - zx) * (w - zw)); padding contributes nothing (it is the real
 * 0, x = zx).  a = stride_h, stride_w, pad_h, pad_w. */
static inline __attribute__((always_inline)) void
qconv_kind(const uint8_t *x, const uint8_t *w, uint8_t *y, const uint32_t xs[4], const uint32_t ws[4],
           const uint32_t ys[4], const int32_t *a, const mlk_qparams *q, const int kind)
{
    const int32_t C = (int32_t)xs[1], H = (int32_t)xs[2], W = (int32_t)xs[3];
    const int32_t KH = (int32_t)ws[2], KW = (int32_t)ws[3];
    const int32_t OC = (int32_t)ys[1], OH = (int32_t)ys[2], OW = (int32_t)ys[3];
    const int32_t sh = a[0], sw = a[1], ph = a[2], pw = a[3];
    /* the outputs whose taps are all inside the row: ox*sw - pw >= 0 and
     * ox*sw - pw + KW <= W; in blocks of four when sw = 1 */
    const int32_t ox_in = (pw + sw - 1) / sw, ox_end = W - KW + pw >= 0 ? (W - KW + pw) / sw + 1 : 0;
    const int quad = kind != QK_ANY && sw == 1;
    for (uint32_t bi = 0; bi < xs[0]; bi++) {
        const uint8_t *xb = x + bi * (uint32_t)(C * H * W);
        for (int32_t oc = 0; oc < OC; oc++) {
            const uint8_t *wo = w + (uint32_t)(oc * C * KH * KW);
            for (int32_t oy = 0; oy < OH; oy++) {
                int32_t ky0, ky1;
                int32_t iy0 = tap_range(oy, sh, ph, KH, H, &ky0, &ky1);
                for (int32_t ox = 0; ox < OW; ox++) {
                    if (quad && ox >= ox_in && ox + 4 <= ox_end && ky1 > ky0) {
                        uint32_t acc[4];
                        acc[0] = acc[1] = acc[2] = acc[3] = (uint32_t)q->bias[oc];
                        qconv4(xb + (iy0 + ky0) * W + ox - pw, (const int8_t *)wo + ky0 * KW, C,
                               (uint32_t)(ky1 - ky0), KW, H * W, W, KH * KW, kind == QK_U8I8_Z ? 0 : q->zx,
                               acc);
                        for (int32_t i = 0; i < 4; i++)
                            requant(y++, (int32_t)acc[i], (uint32_t)oc, q);
                        ox += 3;
                        continue;
                    }
                    int32_t kx0, kx1;
                    int32_t ix0 = tap_range(ox, sw, pw, KW, W, &kx0, &kx1);
                    int64_t acc = q->bias[oc];
                    if (kx1 > kx0 && ky1 > ky0) {
                        const uint32_t nk = (uint32_t)(kx1 - kx0);
                        const uint8_t *xc = xb + (iy0 + ky0) * W + ix0 + kx0, *wc = wo + ky0 * KW + kx0;
                        for (int32_t c = 0; c < C; c++, xc += H * W, wc += KH * KW) {
                            const uint8_t *xr = xc, *wr = wc;
                            for (int32_t ky = ky0; ky < ky1; ky++, xr += W, wr += KW)
                                acc = qrow(xr, wr, nk, acc, q, kind);
                        }
                    }
                    requant(y++, low32(acc), (uint32_t)oc, q);
                }
            }
        }
    }
}

void op_qconv2d(const void *x, const void *w, void *y, const uint32_t xs[4], const uint32_t ws[4],
                const uint32_t ys[4], const int32_t *a, const mlk_qparams *q)
{
    const uint8_t *xb = (const uint8_t *)x, *wb = (const uint8_t *)w;
    uint8_t *yb = (uint8_t *)y;
    switch (qkind(q)) {
    case QK_U8I8_Z: qconv_kind(xb, wb, yb, xs, ws, ys, a, q, QK_U8I8_Z); break;
    case QK_U8I8: qconv_kind(xb, wb, yb, xs, ws, ys, a, q, QK_U8I8); break;
    default: qconv_kind(xb, wb, yb, xs, ws, ys, a, q, QK_ANY); break;
    }
}

/* op_maxpool2d on 8-bit values (the same windows; integers: no NaN). */
void op_maxpool2d_q(const void *x, void *y, const uint32_t xs[4], const uint32_t ys[4], const int32_t *a,
                    uint32_t is_i8)
{
    const int32_t H = (int32_t)xs[2], W = (int32_t)xs[3], OH = (int32_t)ys[2], OW = (int32_t)ys[3];
    const uint32_t planes = xs[0] * xs[1];
    const uint8_t *xp = (const uint8_t *)x;
    uint8_t *yp = (uint8_t *)y;
    for (uint32_t pl = 0; pl < planes; pl++, xp += H * W) {
        for (int32_t oy = 0; oy < OH; oy++) {
            int32_t ky0, ky1;
            int32_t iy0 = tap_range(oy, a[2], a[4], a[0], H, &ky0, &ky1);
            for (int32_t ox = 0; ox < OW; ox++) {
                int32_t kx0, kx1;
                int32_t ix0 = tap_range(ox, a[3], a[5], a[1], W, &kx0, &kx1);
                const uint8_t *row = xp + (iy0 + ky0) * W + ix0 + kx0;
                int32_t m = QLOAD(row, 0, is_i8);
                for (int32_t ky = ky0; ky < ky1; ky++, row += W)
                    for (int32_t kx = 0; kx < kx1 - kx0; kx++)
                        if (QLOAD(row, kx, is_i8) > m)
                            m = QLOAD(row, kx, is_i8);
                *yp++ = (uint8_t)m;
            }
        }
    }
}

/* ---- training: loss, backward ops, optimizer updates -------------------------
 *
 * A training graph (docs/model-format.md, "Training graphs") is a plain graph:
 * the forward ops above, then these.  Shapes: x/logits [m, n], labels i32 [m],
 * linear weights [n, k] (nn.Linear layout), dy [m, n].  The same conventions
 * as torch: the loss is the mean over rows of -log softmax(x)[label], its
 * gradient (softmax(x) - onehot(label)) / m; SGD with momentum (dampening 0,
 * no Nesterov) is v' = mu * v + g, p' = p - lr * v'. */

/* mean over rows of log(sum_j e^(x_j - max)) - (x_label - max) */
int op_softmax_xent(const float *x, const int32_t *labels, float *loss, uint32_t rows, uint32_t n)
{
    float total = 0.0f;
    for (uint32_t r = 0; r < rows; r++, x += n) {
        uint32_t lab = (uint32_t)labels[r];
        if (lab >= n)
            return 1;
        float m = x[0];
        for (uint32_t i = 1; i < n; i++)
            if (x[i] > m)
                m = x[i];
        float sum = 0.0f;
        for (uint32_t i = 0; i < n; i++)
            sum += f_exp(x[i] - m);
        total += u2f(sf_log(f2u(sum))) - (x[lab] - m);
    }
    *loss = total / (float)rows;
    return 0;
}

/* dx = (softmax(x) - onehot(label)) / rows */
int op_softmax_xent_grad(const float *x, const int32_t *labels, float *dx, uint32_t rows, uint32_t n)
{
    const float inv = (float)rows;
    op_softmax(x, dx, rows, n);
    for (uint32_t r = 0; r < rows; r++, dx += n) {
        uint32_t lab = (uint32_t)labels[r];
        if (lab >= n)
            return 1;
        dx[lab] = dx[lab] - 1.0f;
        for (uint32_t i = 0; i < n; i++)
            dx[i] = dx[i] / inv;
    }
    return 0;
}

/* dx[m, k] = dy[m, n] @ w[n, k]: row i of dy times column j of w */
void op_linear_grad_x(const float *dy, const float *w, float *dx, uint32_t m, uint32_t k, uint32_t n)
{
    const sf_loop rc[3] = {{1, 0, 0}, {1, 0, 0}, {n, 1, (int32_t)k}};
    const sf_run cols = {k, 1, 0, 1};
    DOT_BUFFER(buf);
    for (uint32_t i = 0; i < m; i++, dy += n, dx += k)
        dot_run(dx, -0.0f, dot_source(buf, dy, n, k), 0, dot_floats(w), 0, rc, cols);
}

/* dw[n, k] = dy[m, n]^T @ x[m, k]: column i of dy times column j of x */
void op_linear_grad_w(const float *dy, const float *x, float *dw, uint32_t m, uint32_t k, uint32_t n)
{
    const sf_loop cc[3] = {{1, 0, 0}, {1, 0, 0}, {m, (int32_t)n, (int32_t)k}};
    const sf_run cols = {k, 1, 0, 1};
    for (uint32_t i = 0; i < n; i++, dw += k)
        dot_run(dw, -0.0f, dot_floats(dy), (int32_t)i, dot_floats(x), 0, cc, cols);
}

/* db[n] = sum over the m rows of dy */
void op_linear_grad_b(const float *dy, float *db, uint32_t m, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        const float *p = dy + j;
        float acc = *p;
        for (uint32_t i = 1; i < m; i++)
            acc += *(p += n);
        db[j] = acc;
    }
}

/* dx = dy where the relu's output y > 0, else +0 (torch's threshold_backward) */
void op_relu_grad(const float *dy, const float *y, float *dx, uint32_t n)
{
    const uint32_t *yp = (const uint32_t *)y, *dp = (const uint32_t *)dy;
    uint32_t *op = (uint32_t *)dx;
    for (; n; n--, dp++) {
        uint32_t v = *yp++;
        *op++ = (v & 0x80000000u) || v == 0u || v > 0x7F800000u ? 0u : *dp;
    }
}

void op_momentum(const float *v, const float *g, float *out, uint32_t n, float mu)
{
    for (; n; n--)
        *out++ = mu * *v++ + *g++;
}

void op_sgd(const float *p, const float *d, float *out, uint32_t n, float lr)
{
    for (; n; n--)
        *out++ = *p++ - lr * *d++;
}

/* da[bt, m, k] = dy[bt, m, n] @ b[bt, k, n]^T (a `matmul`'s first operand's
 * gradient): row i of dy times row j of b.  b_step as in op_matmul. */
void op_matmul_grad_a(const float *dy, const float *b, float *da, uint32_t batch, uint32_t b_step, uint32_t m,
                      uint32_t k, uint32_t n)
{
    const sf_loop rr[3] = {{1, 0, 0}, {1, 0, 0}, {n, 1, 1}};
    const sf_run rows = {k, 1, 0, (int32_t)n};
    DOT_BUFFER(buf);
    for (uint32_t bt = 0; bt < batch; bt++, b += b_step)
        for (uint32_t i = 0; i < m; i++, dy += n, da += k)
            dot_run(da, -0.0f, dot_source(buf, dy, n, k), 0, dot_floats(b), 0, rr, rows);
}

/* db[bt, k, n] = a[bt, m, k]^T @ dy[bt, m, n] (its second operand's
 * gradient, one per batch entry): column i of a times column j of dy. */
void op_matmul_grad_b(const float *dy, const float *a, float *db, uint32_t batch, uint32_t m, uint32_t k,
                      uint32_t n)
{
    const sf_loop cc[3] = {{1, 0, 0}, {1, 0, 0}, {m, (int32_t)k, (int32_t)n}};
    const sf_run cols = {n, 1, 0, 1};
    for (uint32_t bt = 0; bt < batch; bt++, a += m * k, dy += m * n)
        for (uint32_t i = 0; i < k; i++, db += n)
            dot_run(db, -0.0f, dot_floats(a), (int32_t)i, dot_floats(dy), 0, cc, cols);
}

/* dx = dy * gelu'(x) for op_gelu's function, written as sf_gelu writes it:
 * gelu(x) = x s(v), s the sigmoid, v = c x (1 + a x^2), c = 2 sqrt(2/pi),
 * a = 0.044715, so gelu'(x) = s(v) + x s(v) (1 - s(v)) c (1 + 3a x^2)
 * (3a: 0.134145 rounded to float).  Where s(v) (1 - s(v)) is 0 (|v| large)
 * the second term is 0: skipping it keeps x * 0 * inf from making a NaN for
 * huge |x|. */
void op_gelu_grad(const float *dy, const float *x, float *dx, uint32_t n)
{
    const float c = 1.5957691216057308f, a = 0.044715f, a3 = 0.134145f;
    for (; n; n--) {
        float xv = *x++, x2 = xv * xv;
        float s = u2f(sf_sigmoid(f2u(c * (xv * (1.0f + xv * (xv * a))))));
        float t = s * (1.0f - s), d = s;
        if (t != 0.0f)
            d = d + xv * t * c * (1.0f + a3 * x2);
        *dx++ = *dy++ * d;
    }
}
