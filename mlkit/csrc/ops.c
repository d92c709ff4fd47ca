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
 * all of a model's work) go through dot(), which is sf_dot in the MIPS build:
 * the same roundings as `acc += x * w` term by term, at a fraction of the
 * cost of two soft-float calls (softfloat.c, "Dot products").  The native
 * build runs the plain loop on the FPU (built with -DMLK_SOFT_DOT it runs
 * sf_dot too: tests/test_mlkit_ops.py checks that both give the same bytes).
 *
 * Summation order is fixed by the code (always the textual order below), so
 * the host build and the MIPS build produce the same bits.  It is not the
 * order torch uses; results agree with torch within rounding (see
 * tests/test_mlkit_ops.py for the tolerances).
 */
#include "mlkit.h"

/* Transcendentals on floats, via the integer implementations in mathf.c. */
static inline float f_sqrt(float x) { return u2f(sf_sqrt(f2u(x))); }
static inline float f_exp(float x) { return u2f(sf_exp(f2u(x))); }

/* acc + sum of x[i*dx0 + j*dx1 + k*dx2] * w[i*dw0 + j*dw1 + k*dw2] over
 * i < n0, j < n1, k < n2 (k fastest), rounding each product and each sum:
 * exactly `acc += x * w` in that order (see sf_loop in softfloat.h).  A sum
 * that starts with its first product starts from acc = -0 (-0 + p = p). */
#if defined(SOFTFLOAT_ABI) || defined(MLK_SOFT_DOT)
static inline float dot(float acc, const float *x, const float *w, const sf_loop l[3])
{
    return u2f(sf_dot(f2u(acc), (const uint32_t *)x, (const uint32_t *)w, l));
}
#else
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

/* ---- linear algebra ---------------------------------------------------- */

/* y[m, n] = x[m, k] . w[n, k]^T (+ b[n]): w is in torch's nn.Linear layout,
 * so both operands of each dot product are contiguous. */
void op_linear(const float *x, const float *w, const float *b, float *y, uint32_t m, uint32_t k, uint32_t n)
{
    const sf_loop row[3] = {{1, 0, 0}, {1, 0, 0}, {k, 1, 1}};
    for (uint32_t i = 0; i < m; i++, x += k) {
        const float *wr = w;
        for (uint32_t j = 0; j < n; j++, wr += k) {
            float acc = dot(-0.0f, x, wr, row);
            if (b)
                acc += b[j];
            *y++ = acc;
        }
    }
}

/* y[bt, m, n] = a[bt, m, k] @ b[bt, k, n] (+ bias[n]).  b_step is the size
 * of one b matrix, or 0 when one b is shared by every batch entry. */
void op_matmul(const float *a, const float *b, const float *bias, float *y, uint32_t batch, uint32_t b_step,
               uint32_t m, uint32_t k, uint32_t n)
{
    /* a row of a times a column of b */
    const sf_loop rc[3] = {{1, 0, 0}, {1, 0, 0}, {k, 1, (int32_t)n}};
    for (uint32_t bt = 0; bt < batch; bt++, b += b_step) {
        for (uint32_t i = 0; i < m; i++, a += k) {
            for (uint32_t j = 0; j < n; j++) {
                float acc = dot(-0.0f, a, b + j, rc);
                if (bias)
                    acc += bias[j];
                *y++ = acc;
            }
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
    for (uint32_t bi = 0; bi < xs[0]; bi++) {
        const float *xb = x + bi * (uint32_t)(C * H * W);
        for (int32_t oc = 0; oc < OC; oc++) {
            const float *wo = w + (uint32_t)(oc * C * KH * KW);
            for (int32_t oy = 0; oy < OH; oy++) {
                int32_t ky0, ky1;
                int32_t iy0 = tap_range(oy, sh, ph, KH, H, &ky0, &ky1);
                for (int32_t ox = 0; ox < OW; ox++) {
                    int32_t kx0, kx1;
                    int32_t ix0 = tap_range(ox, sw, pw, KW, W, &kx0, &kx1);
                    int32_t nkx = kx1 - kx0;
                    float acc = 0.0f;
                    if (nkx > 0 && ky1 > ky0) {
                        /* channels, kernel rows ky0 .. ky1-1, columns kx0 .. kx1-1 */
                        const sf_loop taps[3] = {{(uint32_t)C, H * W, KH * KW},
                                                 {(uint32_t)(ky1 - ky0), W, KW},
                                                 {(uint32_t)nkx, 1, 1}};
                        acc = dot(acc, xb + (iy0 + ky0) * W + ix0 + kx0, wo + ky0 * KW + kx0, taps);
                    }
                    if (b)
                        acc += b[oc];
                    *y++ = acc;
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

/* x[B, C, H, W], w[C, OC, KH, KW] (torch layout) -> y[B, OC, OH, OW];
 * a = stride_h, stride_w, pad_h, pad_w, out_pad_h, out_pad_w.  Written as a
 * gather (each output sums its taps, c outer) so outputs are written once. */
void op_conv_transpose2d(const float *x, const float *w, const float *b, float *y, const uint32_t xs[4],
                         const uint32_t ws[4], const uint32_t ys[4], const int32_t *a)
{
    const int32_t C = (int32_t)xs[1], H = (int32_t)xs[2], W = (int32_t)xs[3];
    const int32_t KH = (int32_t)ws[2], KW = (int32_t)ws[3];
    const int32_t OC = (int32_t)ys[1], OH = (int32_t)ys[2], OW = (int32_t)ys[3];
    const int32_t sh = a[0], sw = a[1], ph = a[2], pw = a[3];
    for (uint32_t bi = 0; bi < xs[0]; bi++) {
        const float *xb = x + bi * (uint32_t)(C * H * W);
        for (int32_t oc = 0; oc < OC; oc++) {
            for (int32_t oy = 0; oy < OH; oy++) {
                int32_t ky0, iy0;
                int32_t nky = tconv_taps(oy, sh, ph, KH, H, &ky0, &iy0);
                for (int32_t ox = 0; ox < OW; ox++) {
                    int32_t kx0, ix0;
                    int32_t nkx = tconv_taps(ox, sw, pw, KW, W, &kx0, &ix0);
                    float acc = 0.0f;
                    if (nkx > 0 && nky > 0) {
                        /* channels; taps (ky0 + j*sh, kx0 + k*sw) meet input (iy0 - j, ix0 - k) */
                        const sf_loop taps[3] = {{(uint32_t)C, H * W, OC * KH * KW},
                                                 {(uint32_t)nky, -W, sh * KW},
                                                 {(uint32_t)nkx, -1, sw}};
                        acc = dot(acc, xb + iy0 * W + ix0, w + oc * KH * KW + ky0 * KW + kx0, taps);
                    }
                    if (b)
                        acc += b[oc];
                    *y++ = acc;
                }
            }
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

    for (uint32_t i = 0; i < t; i++) {
        mlk_memcpy(kcache + (pos + i) * c, qkv + i * 3u * c + c, c * 4u);
        mlk_memcpy(vcache + (pos + i) * c, qkv + i * 3u * c + 2u * c, c * 4u);
    }
    for (uint32_t i = 0; i < t; i++) {
        const uint32_t len = pos + i + 1; /* positions this query sees */
        for (uint32_t h = 0; h < n_head; h++) {
            const float *q = qkv + i * 3u * c + h * d;
            const float *kp = kcache + h * d;
            float m = 0.0f;
            const sf_loop qk[3] = {{1, 0, 0}, {1, 0, 0}, {d, 1, 1}};
            for (uint32_t j = 0; j < len; j++) {
                float acc = dot(-0.0f, q, kp + j * c, qk);
                acc = acc / sq;
                scores[j] = acc;
                if (j == 0 || acc > m)
                    m = acc;
            }
            float sum = 0.0f;
            for (uint32_t j = 0; j < len; j++) {
                float e = f_exp(scores[j] - m);
                scores[j] = e;
                sum += e;
            }
            for (uint32_t j = 0; j < len; j++)
                scores[j] = scores[j] / sum;
            /* y_h = sum_j w_j v_j: element e is w . (column e of v), summed
             * over j in order */
            float *yh = y + i * c + h * d;
            const float *vp = vcache + h * d;
            const sf_loop wv[3] = {{1, 0, 0}, {1, 0, 0}, {len, 1, (int32_t)c}};
            for (uint32_t e = 0; e < d; e++)
                yh[e] = dot(-0.0f, scores, vp + e, wv);
        }
    }
}
