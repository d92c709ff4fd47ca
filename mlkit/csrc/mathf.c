/*
 * mathf.c - deterministic float math for rollml (see mathf.h).
 *
 * Everything here is sf_* arithmetic (softfloat.c) plus integer handling of
 * exponent bits, so the results are bit-identical on every machine.  The
 * constants are written as bit patterns, with their decimal value in a
 * comment; the polynomial coefficients were fitted for this file (minimax
 * on the stated interval, then rounded to float).
 *
 * Error against the exact result (libm double precision, not rounded), in
 * ulps of the exact result (ulp = float spacing at that magnitude, 2^-149
 * in the subnormal range).  Measured EXHAUSTIVELY, i.e. on every float
 * input in the range given (all others return exactly rounded constants:
 * 0, +-1, inf, ...); tests/mlkit/test_softfloat.py re-checks these bounds on
 * dense samples:
 *
 *   sf_exp      x in [-104, 88.72] (the rest: 0 or inf)   max 0.977 ulp
 *   sf_log      every x > 0, subnormals included           max 0.840 ulp
 *   sf_tanh     every x (odd; |x| >= 9.1 gives +-1)        max 0.991 ulp
 *   sf_sigmoid  x in [-104, 90] (the rest: 0 or 1),
 *               subnormal results included                 max 2.402 ulp
 *   sf_gelu     x >= 0                                     max 2.677 ulp
 *               x <  0: below 2 + 3.5|v| ulp, v = 1.5958 x (1 + 0.044715 x^2)
 *               (worst ratio to that bound: 0.93), e.g.
 *                 [-1, 0] max 3.95, [-2, -1] max 11.4,
 *                 [-3, -2] max 20.0, [-12, -3] max 216 ulp
 *               (the rounding error of v, a few ulps, is amplified by the
 *               slope of e^v; the values there are tiny: |gelu(x)| < 0.004
 *               for x < -3, and below 1e-30 at the 216-ulp point.  A
 *               compensated (double-float) v would fix it at ~20 more ops.)
 *   sf_rsqrt    every x > 0, subnormals included           max 1.490 ulp
 *
 * (If you change a polynomial or a formula, re-measure: the test fails
 * when its samples exceed these bounds, but only an exhaustive sweep gives
 * the maxima.)
 */
#include "mathf.h"

/* Handy constants (bit patterns). */
#define F_HALF      0x3F000000u    /* 0.5 */
#define F_TWO       0x40000000u    /* 2.0 */

/* Horner evaluation c[0] + x*(c[1] + x*(... + x*c[n-1])). */
static uint32_t poly(uint32_t x, const uint32_t *c, int n)
{
    uint32_t p = c[n - 1];
    int i;
    for (i = n - 2; i >= 0; i--)
        p = sf_add(c[i], sf_mul(x, p));
    return p;
}

/* ------------------------------------------------------------------ */
/* exp                                                                 */
/* ------------------------------------------------------------------ */

#define EXP_OVERFLOW  0x42B17218u  /* 88.72283935546875: e^x rounds to inf from here on */
#define EXP_UNDERFLOW 0xC2D00000u  /* -104.0: e^x < 2^-150 rounds to +0 below this      */
#define LOG2E         0x3FB8AA3Bu  /* 1.4426950216293335 = 1/ln 2                      */
/* ln 2 = LN2_HI + LN2_LO.  LN2_HI has only 10 significant bits, so k*LN2_HI
 * is exact for |k| < 2^14 (Cody & Waite range reduction). */
#define LN2_HI        0x3F318000u  /* 0.693359375                                       */
#define LN2_LO        0xB95E8083u  /* -0.00021219444170128554                           */

/* e^r = 1 + r + r^2 * q(r) on |r| <= 0.354, relative error 2^-28 */
static const uint32_t EXP_Q[5] = {
    0x3EFFFFFEu, /* 0.4999999403953552    */
    0x3E2AAA41u, /* 0.16666509211063385   */
    0x3D2AAC9Fu, /* 0.04166853055357933   */
    0x3C0922EAu, /* 0.008370140567421913  */
    0x3AB50836u, /* 0.0013811651151627302 */
};

uint32_t sf_exp(uint32_t x)
{
    uint32_t t, kf, r, p;
    int32_t k;

    if (sf_isnan(x)) return SF_QNAN;
    if (sf_le(EXP_OVERFLOW, x)) return SF_POS_INF;      /* incl. +inf */
    if (sf_lt(x, EXP_UNDERFLOW)) return SF_POS_ZERO;    /* incl. -inf */

    /* x = k*ln2 + r with k = round(x / ln2), |r| <= ln2/2 (plus a hair). */
    t = sf_mul(x, LOG2E);
    k = sf_to_i32(sf_add(t, (x & SF_SIGN_BIT) | F_HALF));  /* trunc(t +- 0.5) */
    kf = sf_from_i32(k);
    r = sf_sub(x, sf_mul(kf, LN2_HI));  /* exact: k*LN2_HI is exact and close to x */
    r = sf_sub(r, sf_mul(kf, LN2_LO));  /* the one rounding of the reduction */

    /* e^r = 1 + (r + r^2 q(r)): the small part first, 1 added last. */
    p = sf_add(r, sf_mul(sf_mul(r, r), poly(r, EXP_Q, 5)));
    p = sf_add(SF_ONE, p);

    /* e^x = 2^k * e^r.  Exact unless the result is subnormal or overflows,
     * then sf_ldexp rounds once. */
    return sf_ldexp(p, k);
}

/* ------------------------------------------------------------------ */
/* log                                                                 */
/* ------------------------------------------------------------------ */

#define SQRT2_BITS 0x3FB504F3u     /* 1.4142135381698608 */

/* log(1+f) = 2 atanh(s) = 2s + s*R(z),  s = f/(2+f), z = s^2,
 * R(z) = z * (c0 + c1 z + c2 z^2 + c3 z^3) on z <= 0.0295 (|s| <= 0.1716),
 * relative error of log(1+f) from the polynomial below 2^-37. */
static const uint32_t LOG_R[4] = {
    0x3F2AAAAAu, /* 0.6666666269302368  */
    0x3ECCCD3Eu, /* 0.4000033736228943  */
    0x3E921C3Du, /* 0.28537169098854065 */
    0x3E7182A2u, /* 0.23584988713264465 */
};

uint32_t sf_log(uint32_t x)
{
    uint32_t m, f, s, z, R, hfsq, kf, t;
    int32_t k = 0;

    if (sf_isnan(x)) return SF_QNAN;
    if ((x << 1) == 0) return SF_NEG_INF;               /* log(+-0) = -inf */
    if (x & SF_SIGN_BIT) return SF_QNAN;                /* log(negative)   */
    if (x == SF_POS_INF) return SF_POS_INF;

    if ((x >> 23) == 0) {                               /* subnormal: scale */
        x = sf_ldexp(x, 23);                            /* up by 2^23, exact */
        k = -23;
    }

    /* x = 2^k * m with m in [sqrt(2)/2, sqrt(2)): take the exponent from
     * the bits, and give m the exponent of 1 (or of 1/2 if m > sqrt 2). */
    k += (int32_t)(x >> 23) - 127;
    m = (x & 0x007FFFFFu) | SF_ONE;                     /* m in [1, 2) */
    if (m > SQRT2_BITS) {
        m = (x & 0x007FFFFFu) | F_HALF;                 /* m in [0.707, 1) */
        k += 1;
    }
    f = sf_sub(m, SF_ONE);                              /* exact (Sterbenz) */

    s = sf_div(f, sf_add(F_TWO, f));
    z = sf_mul(s, s);
    R = sf_mul(z, poly(z, LOG_R, 4));
    hfsq = sf_mul(F_HALF, sf_mul(f, f));                /* f^2 / 2 */

    /* log(1+f) = 2s + s*R.  Because 2s = f - s*f and s*f = hfsq*(1 - s),
     *     log(1+f) = f - (hfsq - s*(hfsq + R)),
     * where f is exact and the bracket is small.  The tiny k*LN2_LO joins
     * the small terms; f and then k*LN2_HI (exact) are added last, so the
     * rounding errors stay relative to the small terms. */
    kf = sf_from_i32(k);
    t = sf_add(sf_mul(s, sf_add(hfsq, R)), sf_mul(kf, LN2_LO));
    t = sf_sub(sf_sub(hfsq, t), f);
    return sf_sub(sf_mul(kf, LN2_HI), t);
}

/* ------------------------------------------------------------------ */
/* tanh                                                                */
/* ------------------------------------------------------------------ */

#define TANH_POLY_MAX 0x3F666666u  /* 0.9: polynomial below, exp formula above */
#define TANH_ONE_MIN  0x4111999Au  /* 9.1: tanh(x) rounds to 1 for x >= 9.01   */

/* tanh(x) = x + x^3 P(x^2) on |x| <= 0.9, relative error 2^-29.8 */
static const uint32_t TANH_P[7] = {
    0xBEAAAAA7u, /* -0.33333322405815125    */
    0x3E08879Au, /*  0.13332977890968323    */
    0xBD5CE4F9u, /* -0.05392930284142494    */
    0x3CB177BEu, /*  0.021663542836904526   */
    0xBC076803u, /* -0.008264544419944286   */
    0x3B2941FCu, /*  0.002582668326795101   */
    0xB9EECAD4u, /* -0.00045546016190201044 */
};

uint32_t sf_tanh(uint32_t x)
{
    uint32_t sign = x & SF_SIGN_BIT, ax = x & ~SF_SIGN_BIT, z, e, t;

    if (sf_isnan(x)) return SF_QNAN;
    if (ax >= TANH_ONE_MIN) return sign | SF_ONE;      /* incl. inf */

    if (ax < TANH_POLY_MAX) {
        /* Small |x|: odd polynomial, x + x * (z P(z)) with one fused
         * multiply-add at the end (no cancellation; for tiny x the
         * correction underflows and the result is x; tanh(0) = 0). */
        z = sf_mul(ax, ax);
        t = sf_fma(ax, sf_mul(z, poly(z, TANH_P, 7)), ax);
    } else {
        /* tanh(x) = 1 - 2/(e^2x + 1); here 2/(e^2x+1) < 0.29, so the
         * subtraction loses nothing and the result is > 0.7. */
        e = sf_exp(sf_add(ax, ax));
        t = sf_sub(SF_ONE, sf_div(F_TWO, sf_add(e, SF_ONE)));
    }
    return sign | t;                                    /* tanh is odd */
}

/* ------------------------------------------------------------------ */
/* sigmoid                                                             */
/* ------------------------------------------------------------------ */

uint32_t sf_sigmoid(uint32_t x)
{
    uint32_t e;

    if (sf_isnan(x)) return SF_QNAN;
    if (!(x & SF_SIGN_BIT))                    /* x >= 0: 1/(1 + e^-x), e^-x <= 1 */
        return sf_div(SF_ONE, sf_add(SF_ONE, sf_exp(x ^ SF_SIGN_BIT)));
    /* x < 0: e^x / (1 + e^x), which stays accurate down to the subnormal
     * range (1/(1 + e^-x) would overflow e^-x long before that). */
    e = sf_exp(x);
    return sf_div(e, sf_add(SF_ONE, e));
}

/* ------------------------------------------------------------------ */
/* GELU (GPT-2's tanh approximation)                                   */
/* ------------------------------------------------------------------ */

#define GELU_A  0x3D372713u        /* 0.044715                           */
#define GELU_C2 0x3FCC422Au        /* 1.5957691669464111 = 2*sqrt(2/pi)  */

/*
 * gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).
 * With 1 + tanh(u) = 2 sigmoid(2u) this is the same function as
 *     gelu(x) = x * sigmoid(v),   v = 2u = 2 sqrt(2/pi) x (1 + 0.044715 x^2),
 * which avoids the cancellation in 1 + tanh(u) for negative x (the
 * literal formula has no correct digits left below x = -5 or so).
 */
uint32_t sf_gelu(uint32_t x)
{
    uint32_t v;

    if (sf_isnan(x)) return SF_QNAN;
    if (x == SF_NEG_INF) return SF_NEG_ZERO;            /* -inf * 0 would be NaN */
    v = sf_mul(x, sf_mul(x, GELU_A));                   /* 0.044715 x^2 */
    v = sf_mul(GELU_C2, sf_mul(x, sf_add(SF_ONE, v)));
    return sf_mul(x, sf_sigmoid(v));
}

/* ------------------------------------------------------------------ */
/* rsqrt                                                               */
/* ------------------------------------------------------------------ */

/* 1/sqrt(x): two correctly rounded steps, < 1.5 ulp.  rsqrt(+0) = +inf,
 * rsqrt(-0) = -inf, rsqrt(+inf) = +0, rsqrt(x < 0) = NaN. */
uint32_t sf_rsqrt(uint32_t x)
{
    return sf_div(SF_ONE, sf_sqrt(x));
}
