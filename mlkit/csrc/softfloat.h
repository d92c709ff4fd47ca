/*
 * softfloat.h - IEEE-754 binary32 arithmetic in plain integer C (rollml).
 *
 * The rollml MIPS32 VM has no FPU, and a fraud proof needs every machine
 * that re-executes a model to get the same bits.  So every float operation
 * the runtime does goes through this file, which uses only uint32_t /
 * uint64_t integer arithmetic (no float or double arithmetic, no libc, no
 * 64-bit division helpers).  It builds freestanding for MIPS and natively
 * on the host, and gives the same bits on both.
 *
 * A float is handled as its raw bit pattern in a uint32_t:
 *
 *     bit 31     sign
 *     bits 30-23 biased exponent (bias 127; 0 = zero/subnormal, 255 = inf/NaN)
 *     bits 22-0  fraction (hidden leading 1 for normal numbers)
 *
 * Semantics (the same as IEEE-754 binary32 with the default environment):
 *   - round to nearest, ties to even, for every operation; no other modes
 *   - subnormals are fully supported, both as inputs and as results
 *     (no flush-to-zero, no denormals-are-zero)
 *   - signed zeros: x - x = +0, (-0) + (-0) = -0, sqrt(-0) = -0, ...
 *   - infinities: overflow rounds to +-inf, x/0 = +-inf for x != 0
 *   - no exception flags are kept
 *
 * NaN policy (this differs from x86 / numpy, which keep NaN payloads):
 *   every arithmetic operation that returns a NaN returns the canonical
 *   quiet NaN SF_QNAN = 0x7FC00000, whatever the NaN inputs were.  So NaN
 *   results carry no payload and no sign, and the outcome never depends on
 *   which operand a NaN came from.  sf_neg and sf_abs are bit operations
 *   (IEEE "quiet-computational" copies) and only flip or clear the sign bit,
 *   even on a NaN.
 *
 * Float -> integer conversions truncate toward zero and saturate (the
 * result is defined for every input, unlike C's (int)f which is undefined
 * out of range):
 *   sf_to_i32: NaN -> 0, x >= 2^31 (incl. +inf) -> INT32_MAX,
 *              x <= -2^31 - 1 (incl. -inf) -> INT32_MIN
 *   sf_to_u32: NaN -> 0, x < 1 (incl. all negatives, -inf) -> 0,
 *              x >= 2^32 (incl. +inf) -> 0xFFFFFFFF
 *
 * The gcc soft-float ABI entry points (__addsf3 & co., called by code built
 * with -msoft-float that uses the C `float` type) are compiled only when
 * SOFTFLOAT_ABI is defined: the MIPS build defines it, the host build (which
 * has a real FPU and its own float ABI) leaves them out.  Only single
 * precision exists here: a MIPS program that uses `double` anywhere fails
 * to link (no __adddf3 etc.), which is intended.
 */
#ifndef ROLLML_SOFTFLOAT_H
#define ROLLML_SOFTFLOAT_H

#include <stdint.h>

/* Some bit patterns. */
#define SF_POS_ZERO 0x00000000u
#define SF_NEG_ZERO 0x80000000u
#define SF_ONE      0x3F800000u
#define SF_POS_INF  0x7F800000u
#define SF_NEG_INF  0xFF800000u
#define SF_QNAN     0x7FC00000u /* the only NaN any operation returns */
#define SF_SIGN_BIT 0x80000000u

/* Arithmetic, correctly rounded (round to nearest, ties to even). */
uint32_t sf_add(uint32_t a, uint32_t b);               /* a + b            */
uint32_t sf_sub(uint32_t a, uint32_t b);               /* a - b            */
uint32_t sf_mul(uint32_t a, uint32_t b);               /* a * b            */
uint32_t sf_div(uint32_t a, uint32_t b);               /* a / b            */
uint32_t sf_sqrt(uint32_t a);                          /* sqrt(a)          */
uint32_t sf_fma(uint32_t a, uint32_t b, uint32_t c);   /* a * b + c, one rounding */

/* a * 2^k with one rounding (only when the result is subnormal or
 * overflows; otherwise it is exact).  Any int k is accepted. */
uint32_t sf_ldexp(uint32_t a, int32_t k);

/* Sign manipulation (bit operations, NaN payloads are not touched). */
uint32_t sf_neg(uint32_t a);                           /* -a               */
uint32_t sf_abs(uint32_t a);                           /* |a|              */

/* Comparisons.  Return 1 or 0.  Any comparison involving a NaN is false
 * (it is "unordered"); +0 and -0 compare equal. */
int sf_eq(uint32_t a, uint32_t b);                     /* a == b           */
int sf_lt(uint32_t a, uint32_t b);                     /* a <  b           */
int sf_le(uint32_t a, uint32_t b);                     /* a <= b           */
int sf_unordered(uint32_t a, uint32_t b);              /* isnan(a) || isnan(b) */
int sf_isnan(uint32_t a);

/* Conversions (see the top of this file for the out-of-range rules). */
uint32_t sf_from_i32(int32_t i);                       /* (float)i, rounded */
uint32_t sf_from_u32(uint32_t u);                      /* (float)u, rounded */
int32_t sf_to_i32(uint32_t a);                         /* trunc, saturating */
uint32_t sf_to_u32(uint32_t a);                        /* trunc, saturating */

/*
 * Dot products, bit for bit the loop of separate operations
 *     for each term, in order:  acc = sf_add(acc, sf_mul(x, w))
 * but several times cheaper (see softfloat.c).  The terms are
 *     x[i*dx0 + j*dx1 + k*dx2] * w[i*dw0 + j*dw1 + k*dw2]
 * for i < n0, j < n1, k < n2, k fastest: loop[0] = {n0, dx0, dw0}, ...
 * Strides count elements and may be negative or zero.  Start from
 * acc = -0 (SF_NEG_ZERO) for a sum that begins with its first product:
 * -0 + p = p for every p, +-0 included.  With no terms (a loop of 0
 * iterations) the result is acc itself, NaN payload and all.
 */
typedef struct {
    uint32_t n;        /* iterations of this loop */
    int32_t dx, dw;    /* strides of x and w, in elements */
} sf_loop;

uint32_t sf_dot(uint32_t acc, const uint32_t *x, const uint32_t *w, const sf_loop loop[3]);

/*
 * The same dot product with x unpacked: an op that uses each element of x
 * in many dot products unpacks it once (sf_unpack: the significand, and the
 * sign and exponent as the kernel wants them, see softfloat.c) and saves a
 * few instructions a term.  x's inner stride (loop[2].dx) should not be 0
 * unless loop[2].n is 1 (such a loop runs the plain way).  sf_unpack
 * returns the number of zeros in x.
 */
typedef struct {
    uint32_t sig, ew;
} sf_pair;

uint32_t sf_unpack(sf_pair *dst, const uint32_t *x, uint32_t n);

/*
 * Runs of dot products of one shape: out[o * run->out] = the dot product
 * from acc of x + o * run->x and w + o * run->w (strides in elements) for
 * o < run->count, with the setup paid once (a linear layer's row, a row of
 * a convolution's outputs).
 */
typedef struct {
    uint32_t count;
    int32_t out, x, w;
} sf_run;

void sf_dot_run(uint32_t *out, uint32_t acc, const uint32_t *x, const uint32_t *w, const sf_loop loop[3],
                const sf_run *run);
void sf_dot_pairs_run(uint32_t *out, uint32_t acc, const sf_pair *x, const uint32_t *w, const sf_loop loop[3],
                      const sf_run *run);
/* The same for an x with few zeros (fewer than one in DOT_DENSE, after a
 * GELU or a layer norm): the same bits, one instruction a term fewer, but
 * ~25 more for each zero term (its product is not skipped). */
#define DOT_DENSE 24
void sf_dot_dense_run(uint32_t *out, uint32_t acc, const sf_pair *x, const uint32_t *w, const sf_loop loop[3],
                      const sf_run *run);

/*
 * Taps: w unpacked (softfloat.c) with, in each, the offset of its x from
 * the output's first x.  sf_taps(dst, w, loop) writes the taps of the terms
 * of `loop` (its n0 n1 n2 taps, x's strides from the first x).  Then
 * sf_dot_taps_run: out[o * run->out] = acc + the terms x[o * run->x +
 * tap's x] * tap's w in the order of the n taps (run->w is not used).  A
 * convolution's interior outputs share their taps; a dot product over them
 * is one flat loop.
 */
typedef struct {
    uint32_t sig, ew;
    int32_t x; /* bytes of unpacked x */
} sf_tap;

void sf_taps(sf_tap *dst, const uint32_t *w, const sf_loop loop[3]);
void sf_dot_taps_run(uint32_t *out, uint32_t acc, const sf_pair *x, const sf_tap *w, uint32_t n, const sf_run *run);
uint32_t sf_mac(uint32_t acc, uint32_t a, uint32_t b);  /* sf_add(acc, sf_mul(a, b)) */

#ifdef SOFTFLOAT_ABI
/*
 * gcc/libgcc soft-float ABI (single precision only).  With -msoft-float a
 * float travels in an integer register, so these are just sf_* on the bits.
 * Return conventions are libgcc's:
 *   __eqsf2, __nesf2  : 0 iff a == b (ordered), else nonzero (1 if unordered)
 *   __ltsf2, __lesf2  : -1 if a < b, 0 if a == b, 1 if a > b, 2 if unordered
 *   __gtsf2, __gesf2  : -1 if a < b, 0 if a == b, 1 if a > b, -2 if unordered
 *   __unordsf2        : nonzero iff a or b is a NaN
 * so the compiler's tests `__ltsf2(a,b) < 0`, `__lesf2(a,b) <= 0`,
 * `__gtsf2(a,b) > 0`, `__gesf2(a,b) >= 0` are all false on NaN.
 * __fixsfsi / __fixunssfsi use the saturating sf_to_i32 / sf_to_u32.
 */
float __addsf3(float a, float b);
float __subsf3(float a, float b);
float __mulsf3(float a, float b);
float __divsf3(float a, float b);
float __negsf2(float a);
int __eqsf2(float a, float b);
int __nesf2(float a, float b);
int __ltsf2(float a, float b);
int __lesf2(float a, float b);
int __gtsf2(float a, float b);
int __gesf2(float a, float b);
int __unordsf2(float a, float b);
float __floatsisf(int i);
float __floatunsisf(unsigned int u);
int __fixsfsi(float a);
unsigned int __fixunssfsi(float a);
#endif /* SOFTFLOAT_ABI */

#endif /* ROLLML_SOFTFLOAT_H */
