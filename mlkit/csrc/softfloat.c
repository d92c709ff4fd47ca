/*
 * softfloat.c - IEEE-754 binary32 arithmetic in plain integer C (rollml).
 * See softfloat.h for the semantics (RNE, subnormals, canonical NaN).
 *
 * Integer operations only: 32-bit ops (including the 32-bit divide),
 * 64-bit add/sub/shift/compare and 32x32->64 multiplies.  No 64-bit
 * division (the freestanding MIPS build has no libgcc, so no __udivdi3):
 * the quotient is formed 8 bits at a time with 32-bit divides, and the
 * square root digit by digit with shifts and subtractions.
 *
 * How rounding works here
 * -----------------------
 * Every operation computes its exact result as a sign, an exponent and an
 * integer significand `sig` that keeps 7 bits below the last bit that fits
 * in a float, with the leading 1 at bit 30:
 *
 *     bit 30      leading (hidden) bit
 *     bits 29-7   the 23 fraction bits that will be stored
 *     bits 6-0    round bits: bit 6 is "one half ulp", bits 5-0 are
 *                 "something below half"
 *
 * If the exact result has more bits than that, the lost bits are OR-ed into
 * bit 0 ("sticky" bit, see shift_right_jam*), which is all round-to-nearest-
 * even needs to know about them: whether the tail is below, exactly at or
 * above one half ulp.  Then round_pack() does the rounding, once.
 *
 * The value of such an intermediate (sign, exp, sig) is
 *
 *     (-1)^sign * sig * 2^(exp - 156)
 *
 * `exp` is the biased exponent of the result MINUS ONE: when the rounded
 * significand (with its leading 1 at bit 23) is added into the packed word
 * the leading 1 carries into the exponent field and adds the missing one.
 * The same carry handles a significand that rounds up to the next power of
 * two, and a subnormal that rounds up to the smallest normal number.
 *
 * Normal operands (nearly all of them, in a model) take quicker inline
 * paths that round the same way without unpack() and round_pack(): see
 * "Normal numbers, quickly".  The dot products of the models (sf_dot) have
 * their own representation and fast path: see "Dot products".
 */
#include "softfloat.h"

/* Inlining hints for the quick paths (gcc and clang; other compilers can
 * ignore them). */
#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define COLD __attribute__((noinline, cold))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define ALWAYS_INLINE inline
#define COLD
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

/* ------------------------------------------------------------------ */
/* Field access                                                        */
/* ------------------------------------------------------------------ */

static inline uint32_t f_sign(uint32_t a) { return a >> 31; }
static inline int32_t f_exp(uint32_t a) { return (int32_t)((a >> 23) & 0xFF); }
static inline uint32_t f_frac(uint32_t a) { return a & 0x007FFFFFu; }

/* Assemble a float.  `frac` may carry into the exponent (see above). */
static inline uint32_t pack(uint32_t sign, int32_t exp, uint32_t frac)
{
    return (sign << 31) + ((uint32_t)exp << 23) + frac;
}

static inline int is_zero(uint32_t a) { return (a << 1) == 0; }
static inline int is_nan(uint32_t a) { return (a & 0x7FFFFFFFu) > 0x7F800000u; }
static inline int is_inf(uint32_t a) { return (a & 0x7FFFFFFFu) == 0x7F800000u; }

/* Number of leading zero bits of a nonzero x.  gcc has a builtin (one
 * `clz` instruction on MIPS32); the portable loop is for other compilers. */
static inline int clz32(uint32_t x)
{
#if defined(__GNUC__)
    return __builtin_clz(x);
#else
    int n = 0;
    if (x <= 0x0000FFFFu) { n += 16; x <<= 16; }
    if (x <= 0x00FFFFFFu) { n += 8; x <<= 8; }
    if (x <= 0x0FFFFFFFu) { n += 4; x <<= 4; }
    if (x <= 0x3FFFFFFFu) { n += 2; x <<= 2; }
    if (x <= 0x7FFFFFFFu) { n += 1; }
    return n;
#endif
}

static int clz64(uint64_t x)
{
    uint32_t hi = (uint32_t)(x >> 32);
    return hi ? clz32(hi) : 32 + clz32((uint32_t)x);
}

/* x >> n, but any 1 bits shifted out are OR-ed into bit 0 (sticky). */
static uint32_t shift_right_jam32(uint32_t x, uint32_t n)
{
    if (n == 0) return x;
    if (n >= 32) return x != 0;
    return (x >> n) | ((x << (32 - n)) != 0);
}

static uint64_t shift_right_jam64(uint64_t x, uint32_t n)
{
    if (n == 0) return x;
    if (n >= 64) return x != 0;
    return (x >> n) | ((x << (64 - n)) != 0);
}

/*
 * Unpack the significand of a finite nonzero float with its leading 1 at
 * bit 23, so that |a| = *sig * 2^(*exp - 150).  Subnormals are normalised
 * here, which gives them an exponent below 1.
 */
static void unpack(uint32_t a, int32_t *exp, uint32_t *sig)
{
    int32_t e = f_exp(a);
    uint32_t m = f_frac(a);
    if (e == 0) {                   /* subnormal: m * 2^-149, no hidden bit */
        int shift = clz32(m) - 8;   /* move the leading 1 up to bit 23 */
        *sig = m << shift;
        *exp = 1 - shift;
    } else {
        *sig = m | 0x00800000u;     /* put back the hidden bit */
        *exp = e;
    }
}

/*
 * Round (sign, exp, sig) to the nearest float, ties to even, and pack it.
 * On entry the leading 1 of sig is at bit 30 and the value is
 * sig * 2^(exp - 156), as described at the top of the file.  exp = 0xFD
 * packs to the largest finite exponent field 0xFE (with the carry of the
 * leading 1), so anything above may overflow and anything below 0 is in
 * the subnormal range.
 */
static uint32_t round_pack(uint32_t sign, int32_t exp, uint32_t sig)
{
    uint32_t round_bits;

    if ((uint32_t)exp >= 0xFD) {
        if (exp < 0) {
            /* Below the normal range: shift the significand right until
             * the exponent is the subnormal one.  The bits that fall off
             * stay in the sticky bit, so the result is rounded once, at
             * the subnormal precision.  It may round up to 2^-126. */
            sig = shift_right_jam32(sig, (uint32_t)-exp);
            exp = 0;
        } else if (exp > 0xFD || sig + 0x40 >= 0x80000000u) {
            /* Too large, or rounds up past the largest finite float:
             * round-to-nearest overflows to infinity. */
            return pack(sign, 0xFF, 0);
        }
    }

    round_bits = sig & 0x7F;
    sig = (sig + 0x40) >> 7;        /* add half an ulp and truncate ...      */
    if (round_bits == 0x40)         /* ... but on an exact tie, clear the    */
        sig &= ~1u;                 /* last bit: round half to even          */
    if (sig == 0)
        exp = 0;                    /* underflowed to (signed) zero          */
    return pack(sign, exp, sig);
}

/* ------------------------------------------------------------------ */
/* Normal numbers, quickly                                             */
/* ------------------------------------------------------------------ */

/*
 * Nearly every operand in a model is a normal number far from the ends of
 * the range.  For those, sf_mul and sf_add take the inline paths of this
 * section: integer arithmetic on the significands with the rounding done
 * in place, instead of the general unpack() / round_pack() path below.
 * They give the same bits (they round the same exact results the same
 * way); anything they do not cover (zeros, subnormals, infinities, NaNs,
 * results out of the normal range) goes to the general code.
 *
 * A value is held unpacked as (sign, exp, sig), the exact value
 *
 *     +-sig * 2^(exp - 149),   sig in [2^23, 2^24]
 *
 * with the exponent as round_pack has it (the biased exponent minus one;
 * a subnormal is normalised and has exp < 0).  sig = 2^24 is a sum that
 * rounded up to the next power of two, left so (the adder below is exact
 * for it too).  The sign is bit 31 of the word `sign`, as in a float.
 * (The dot products keep their accumulator another way: see sf_dot.)
 */
typedef struct {
    uint32_t sign;                  /* bit 31 */
    int32_t exp;
    uint32_t sig;
} acc_t;

/*
 * a*b rounded, for a and b with exponents in [2^-63, 2^63) (the caller
 * checks): then the product is a normal number, *pm * 2^(*pe - 149) with
 * *pm in [2^23, 2^24].
 */
static ALWAYS_INLINE void
mul_normal(uint32_t a, uint32_t b, uint32_t *pm, int32_t *pe)
{
    /* The product of the significands, each moved to the top of a word:
     * a*b = (hi * 2^32 + lo) * 2^(ea + eb - 316), leading 1 at bit 63 or
     * 62.  Only hi is kept, lo as a sticky bit.  (Apart, gcc keeps hi and
     * lo in registers: a multu and a mul.) */
    uint32_t ma = (a << 8) | 0x80000000u, mb = (b << 8) | 0x80000000u;
    uint32_t hi = (uint32_t)(((uint64_t)ma * mb) >> 32), lo = ma * mb;
    uint32_t t = hi | (lo != 0);

    *pe = f_exp(a) + f_exp(b) - 128;
    /* Round to the 24 bits from the leading 1, ties to even: adding half
     * an ulp minus one, plus the last kept bit, then truncating, is exactly
     * that (hi < 2^32 - 2^9: no overflow). */
    if ((int32_t)hi < 0) {
        *pm = (t + 0x7F + ((t >> 8) & 1)) >> 8;
        *pe += 1;
    } else {
        *pm = (t + 0x3F + ((t >> 7) & 1)) >> 7;
    }
}

/*
 * Round an exact sum, +-sum * 2^(exp - 154) with 0 < sum < 2^31,
 * into *acc.  Moving the leading 1 to bit 30 gives round_pack's (exp, sig);
 * in the normal range this does what round_pack does, with the rounding
 * trick of mul_normal.  Outside, it stores round_pack's (sign, exp, sig) in
 * *acc and returns 1: the caller calls round_pack.
 */
static ALWAYS_INLINE int
acc_round_sum(acc_t *acc, uint32_t sign, int32_t exp, uint32_t sum)
{
    int32_t n = clz32(sum);
    acc->sign = sign;
    acc->exp = exp + 3 - n;
    sum <<= n - 1;
    if ((uint32_t)acc->exp >= 0xFD) {
        acc->sig = sum;
        return 1;
    }
    acc->sig = (sum + 0x3F + ((sum >> 7) & 1)) >> 7;
    return 0;
}

/*
 * *acc += +-sig * 2^(exp - 149) (sign in bit 31), for a normal value (sig in
 * [2^23, 2^24]) and an accumulator that is not a NaN, rounded as sf_add.
 * Returns 1 if the sum is out of the normal range: then *acc holds the
 * arguments of round_pack, which rounds it (see acc_round_sum).
 *
 * As sf_add does: shift the operand with the smaller exponent right by d,
 * with 5 guard bits and a sticky bit, then add or subtract.  Bits are only
 * lost when d > 5: then small < 2^23 and big >= 2^28, so a difference keeps
 * its leading 1 at bit 27 or above and the sticky bit stays below the
 * rounding position.  Beyond d = 26 the smaller one is under a quarter ulp
 * of the other: the sum is the other.  The sum takes the sign of the
 * operand with the larger exponent, unless it is negative, which needs
 * equal exponents.
 */
static ALWAYS_INLINE int
acc_add(acc_t *acc, uint32_t sign, int32_t exp, uint32_t sig)
{
    uint32_t small, sum;
    int32_t d = acc->exp - exp;

    if (LIKELY(d > 0)) {                       /* |acc| > |value|, mostly */
        if (d > 26) return 0;
        small = sig << 5;
        sum = small >> d;
        small = sum | ((sum << d) != small);
        if (sign == acc->sign) {
            sum = (acc->sig << 5) + small;
        } else {                                            /* > 0 but for ties */
            sum = (acc->sig << 5) - small;
            if (sum == 0) goto zero;
        }
        return acc_round_sum(acc, acc->sign, acc->exp, sum);
    }
    d = -d;                                                 /* |value| >= |acc|/2 */
    if (d > 26) {
        acc->sign = sign, acc->exp = exp, acc->sig = sig;
        return 0;
    }
    small = acc->sig << 5;
    sum = small >> d;
    small = sum | ((sum << d) != small);
    if (sign == acc->sign) {
        sum = (sig << 5) + small;
    } else {
        sum = (sig << 5) - small;                           /* < 0 needs d = 0 */
        if ((int32_t)sum <= 0) {
            if (sum == 0) goto zero;
            sum = 0u - sum;
            sign ^= SF_SIGN_BIT;
        }
    }
    return acc_round_sum(acc, sign, exp, sum);
zero:                                                       /* x - x = +0 */
    acc->sign = 0, acc->exp = 0, acc->sig = 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Addition and subtraction                                            */
/* ------------------------------------------------------------------ */

uint32_t sf_add(uint32_t a, uint32_t b)
{
    uint32_t sign, siga, sigb, sig, t;
    int32_t expa, expb, shift;

    /* Two normal numbers: the quick path.  Its result is normal or +0, or
     * round_pack rounds it. */
    if ((uint32_t)f_exp(a) - 1 < 254 && (uint32_t)f_exp(b) - 1 < 254) {
        acc_t acc = {a & SF_SIGN_BIT, f_exp(a) - 1, f_frac(a) | 0x00800000u};
        if (acc_add(&acc, b & SF_SIGN_BIT, f_exp(b) - 1, f_frac(b) | 0x00800000u))
            return round_pack(acc.sign >> 31, acc.exp, acc.sig);
        return acc.sig ? pack(acc.sign >> 31, acc.exp, acc.sig) : SF_POS_ZERO;
    }

    /* Infinities and NaNs. */
    if (f_exp(a) == 0xFF || f_exp(b) == 0xFF) {
        if (is_nan(a) || is_nan(b)) return SF_QNAN;
        if (is_inf(a) && is_inf(b) && f_sign(a) != f_sign(b))
            return SF_QNAN;                         /* inf - inf */
        return is_inf(a) ? a : b;
    }
    /* Zeros: x + 0 = x exactly; +0 + -0 = +0, -0 + -0 = -0. */
    if (is_zero(a)) return is_zero(b) ? (a & b) : b;
    if (is_zero(b)) return a;

    /* Make |a| >= |b|; the result has the sign of a (or is +0). */
    if ((a & 0x7FFFFFFFu) < (b & 0x7FFFFFFFu)) { t = a; a = b; b = t; }
    sign = f_sign(a);
    unpack(a, &expa, &siga);
    unpack(b, &expb, &sigb);

    /* Leading 1 at bit 29: six bits of headroom below for guard bits, and
     * bit 30 free for the carry of an addition. */
    siga <<= 6;
    sigb <<= 6;
    /* Align b with a.  Bits shifted out of b go to its sticky bit.  Bits
     * are only lost when the shift is more than 6; then sigb < 2^23 and a
     * difference below still has its leading 1 at bit 28 or 29, so the
     * normalising left shift is at most 2 and the sticky bit stays far
     * below the rounding position.  Smaller shifts are exact, so even a
     * massive cancellation leaves an exact result. */
    sigb = shift_right_jam32(sigb, (uint32_t)(expa - expb));

    if (f_sign(a) == f_sign(b)) {
        sig = siga + sigb;
    } else {
        sig = siga - sigb;
        if (sig == 0) return SF_POS_ZERO;           /* x - x = +0 */
    }

    /* Here the value is sig * 2^(expa - 156) (siga<<6 had that scale).
     * Normalise: move the leading 1 to bit 30, lowering the exponent by
     * one for each bit of left shift (shift is 0 after a carry). */
    shift = clz32(sig) - 1;
    return round_pack(sign, expa - shift, sig << shift);
}

uint32_t sf_sub(uint32_t a, uint32_t b)
{
    return sf_add(a, b ^ SF_SIGN_BIT);
}

/* ------------------------------------------------------------------ */
/* Multiplication                                                      */
/* ------------------------------------------------------------------ */

uint32_t sf_mul(uint32_t a, uint32_t b)
{
    uint32_t sign = f_sign(a) ^ f_sign(b);
    uint32_t siga, sigb, sig;
    int32_t expa, expb, exp;
    uint64_t prod;

    /* 2^-63 <= |a|, |b| < 2^63: the product is normal, the quick path. */
    if ((uint32_t)f_exp(a) - 64 < 126 && (uint32_t)f_exp(b) - 64 < 126) {
        mul_normal(a, b, &sig, &exp);
        return pack(sign, exp, sig);
    }

    if (is_nan(a) || is_nan(b)) return SF_QNAN;
    if (is_inf(a) || is_inf(b)) {
        if (is_zero(a) || is_zero(b)) return SF_QNAN;   /* 0 * inf */
        return pack(sign, 0xFF, 0);
    }
    if (is_zero(a) || is_zero(b)) return sign << 31;

    unpack(a, &expa, &siga);
    unpack(b, &expb, &sigb);

    /* Exact product of two 24-bit significands: 47 or 48 bits. */
    prod = (uint64_t)siga * sigb;
    exp = expa + expb - 127;
    if (prod < ((uint64_t)1 << 47)) {               /* normalise to bit 47 */
        prod <<= 1;
        exp -= 1;
    }
    /* Keep the top 31 bits (leading 1 at bit 30); the other 17 bits only
     * matter through the sticky bit. */
    sig = (uint32_t)(prod >> 17) | ((prod & 0x1FFFF) != 0);
    return round_pack(sign, exp, sig);
}

/* ------------------------------------------------------------------ */
/* Division                                                            */
/* ------------------------------------------------------------------ */

uint32_t sf_div(uint32_t a, uint32_t b)
{
    uint32_t sign = f_sign(a) ^ f_sign(b);
    uint32_t siga, sigb, q, rem;
    int32_t expa, expb, exp, bits, n;

    if (is_nan(a) || is_nan(b)) return SF_QNAN;
    if (is_inf(a)) return is_inf(b) ? SF_QNAN : pack(sign, 0xFF, 0);
    if (is_inf(b)) return sign << 31;                        /* x / inf = 0 */
    if (is_zero(b)) return is_zero(a) ? SF_QNAN : pack(sign, 0xFF, 0);
    if (is_zero(a)) return sign << 31;

    unpack(a, &expa, &siga);
    unpack(b, &expb, &sigb);

    /* Make the quotient of the significands lie in [1, 2). */
    exp = expa - expb + 126;
    if (siga < sigb) {
        siga <<= 1;
        exp -= 1;
    }

    /* Schoolbook long division with the 32-bit divide instruction, up to
     * 8 quotient bits per step (rem < sigb < 2^24, so rem << 8 fits):
     *   q = floor(siga * 2^30 / sigb), in [2^30, 2^31). */
    q = 1;                          /* siga / sigb is in [1, 2) */
    rem = siga - sigb;
    for (bits = 30; bits > 0; bits -= n) {
        n = bits < 8 ? bits : 8;
        rem <<= n;
        q = (q << n) | (rem / sigb);
        rem %= sigb;
    }
    q |= (rem != 0);                /* inexact: set the sticky bit */
    return round_pack(sign, exp, q);
}

/* ------------------------------------------------------------------ */
/* Square root                                                         */
/* ------------------------------------------------------------------ */

uint32_t sf_sqrt(uint32_t a)
{
    uint32_t sig, x, root, rem, trial;
    int32_t exp, e, i;

    if (is_nan(a)) return SF_QNAN;
    if (is_zero(a)) return a;                       /* sqrt(-0) = -0 */
    if (f_sign(a)) return SF_QNAN;                  /* sqrt(negative) */
    if (is_inf(a)) return a;

    unpack(a, &exp, &sig);                          /* a = sig * 2^(e - 23) */
    e = exp - 127;
    if (e & 1) {                                    /* make e even */
        sig <<= 1;
        e -= 1;
    }

    /* root = floor(sqrt(sig * 2^27)), in [2^25, 2^26): 24 result bits, a
     * guard bit and one more.  Digit-by-digit square root: bring down the
     * radicand two bits at a time (from x, which holds the bits of sig
     * left-aligned, then zeros) and add one bit to the root per step.
     * rem = radicand so far - root^2 <= 2 root, so it stays below 2^29. */
    x = sig << 7;
    root = 0;
    rem = 0;
    for (i = 0; i < 26; i++) {
        rem = (rem << 2) | (x >> 30);
        x <<= 2;
        trial = (root << 2) | 1;                    /* (2r+1)^2 - (2r)^2 = 4r+1 */
        root <<= 1;
        if (rem >= trial) {
            rem -= trial;
            root |= 1;
        }
    }
    /* sqrt(a) = root * 2^(e/2 - 25).  An exact tie is impossible for a
     * square root, but the sticky bit still says "above the truncation". */
    return round_pack(0, e / 2 + 126, (root << 5) | (rem != 0));
}

/* ------------------------------------------------------------------ */
/* Fused multiply-add                                                  */
/* ------------------------------------------------------------------ */

/*
 * a * b + c with a single rounding.  Both the exact product and c are put
 * into 64-bit significands with the leading 1 at bit 61, the value of
 * (exp, sig64) being sig64 * 2^(exp - 188), then added like in sf_add.
 */
uint32_t sf_fma(uint32_t a, uint32_t b, uint32_t c)
{
    uint32_t signp = f_sign(a) ^ f_sign(b), signc = f_sign(c), t;
    uint32_t siga, sigb, sigc;
    int32_t expa, expb, expc, expp, exp, shift;
    uint64_t p, s, t64;

    if (is_nan(a) || is_nan(b) || is_nan(c)) return SF_QNAN;
    if (is_inf(a) || is_inf(b)) {
        if (is_zero(a) || is_zero(b)) return SF_QNAN;       /* 0 * inf */
        if (is_inf(c) && signc != signp) return SF_QNAN;    /* inf - inf */
        return pack(signp, 0xFF, 0);
    }
    if (is_inf(c)) return c;
    if (is_zero(a) || is_zero(b)) {
        /* exact zero product: +-0 + c; zero signs follow sf_add */
        return is_zero(c) ? ((signp & signc) << 31) : c;
    }
    if (is_zero(c)) return sf_mul(a, b);    /* product is nonzero: one rounding */

    unpack(a, &expa, &siga);
    unpack(b, &expb, &sigb);
    unpack(c, &expc, &sigc);

    /* Exact product, normalised to [2^47, 2^48), then leading 1 to bit 61,
     * so that a*b = p * 2^(expp - 188) and c = s * 2^(expc - 188). */
    p = (uint64_t)siga * sigb;
    expp = expa + expb - 126;
    if (p < ((uint64_t)1 << 47)) {
        p <<= 1;
        expp -= 1;
    }
    p <<= 14;
    s = (uint64_t)sigc << 38;

    /* Swap so that (signp, expp, p) is the operand with the larger
     * magnitude (both have their leading 1 at bit 61); the result takes
     * its sign.  Then align the smaller one, keeping a sticky bit. */
    if (expc > expp || (expc == expp && s > p)) {
        t64 = p; p = s; s = t64;
        exp = expp; expp = expc; expc = exp;
        t = signp; signp = signc; signc = t;
    }
    s = shift_right_jam64(s, (uint32_t)(expp - expc));
    if (signp == signc) {
        s = p + s;                      /* < 2^63 */
    } else {
        s = p - s;
        if (s == 0) return SF_POS_ZERO; /* exact cancellation */
    }

    /* Leading 1 to bit 62, then keep the top 32 bits with a sticky bit:
     * that is the usual 31-bit significand with the leading 1 at bit 30. */
    shift = clz64(s) - 1;
    s <<= shift;
    exp = expp - shift;
    return round_pack(signp, exp,
                      (uint32_t)(s >> 32) | ((s & 0xFFFFFFFFu) != 0));
}

/* ------------------------------------------------------------------ */
/* Scaling by a power of two                                           */
/* ------------------------------------------------------------------ */

uint32_t sf_ldexp(uint32_t a, int32_t k)
{
    uint32_t sig;
    int32_t exp;

    if (is_nan(a)) return SF_QNAN;
    if (is_inf(a) || is_zero(a)) return a;
    /* Beyond +-400 the result is 0 or inf anyway; clamping keeps the
     * exponent arithmetic far from int overflow. */
    if (k > 400) k = 400;
    if (k < -400) k = -400;
    unpack(a, &exp, &sig);          /* |a| = sig * 2^(exp - 150) */
    /* leading 1 to bit 30: |a| = (sig << 7) * 2^((exp - 1) - 156) */
    return round_pack(f_sign(a), exp - 1 + k, sig << 7);
}

/* ------------------------------------------------------------------ */
/* Sign operations and comparisons                                     */
/* ------------------------------------------------------------------ */

uint32_t sf_neg(uint32_t a) { return a ^ SF_SIGN_BIT; }
uint32_t sf_abs(uint32_t a) { return a & ~SF_SIGN_BIT; }

int sf_isnan(uint32_t a) { return is_nan(a); }

int sf_unordered(uint32_t a, uint32_t b) { return is_nan(a) || is_nan(b); }

int sf_eq(uint32_t a, uint32_t b)
{
    if (is_nan(a) || is_nan(b)) return 0;
    return a == b || is_zero(a | b);                /* +0 == -0 */
}

/* Ordering on the raw bits: for two non-NaN floats of the same sign, the
 * magnitudes order like the unsigned bit patterns. */
int sf_lt(uint32_t a, uint32_t b)
{
    if (is_nan(a) || is_nan(b)) return 0;
    if (f_sign(a) != f_sign(b))                     /* -x < +y unless both 0 */
        return f_sign(a) && !is_zero(a | b);
    return a != b && ((a < b) ^ f_sign(a));
}

int sf_le(uint32_t a, uint32_t b)
{
    if (is_nan(a) || is_nan(b)) return 0;
    if (f_sign(a) != f_sign(b))
        return f_sign(a) || is_zero(a | b);
    return a == b || ((a < b) ^ f_sign(a));
}

/* ------------------------------------------------------------------ */
/* Integer conversions                                                 */
/* ------------------------------------------------------------------ */

/* (-1)^sign * mag, rounded to a float.  mag can use all 32 bits. */
static uint32_t from_magnitude(uint32_t sign, uint32_t mag)
{
    int n;
    if (mag == 0) return SF_POS_ZERO;
    n = clz32(mag);
    /* Leading 1 at bit 31 - n; move it to bit 30.  The value is
     * mag = sig * 2^(exp - 156) with exp = 157 - n. */
    if (n == 0)
        return round_pack(sign, 157, shift_right_jam32(mag, 1));
    return round_pack(sign, 157 - n, mag << (n - 1));
}

uint32_t sf_from_i32(int32_t i)
{
    /* 0u - x is the magnitude also for INT32_MIN (2^31). */
    return i < 0 ? from_magnitude(1, 0u - (uint32_t)i)
                 : from_magnitude(0, (uint32_t)i);
}

uint32_t sf_from_u32(uint32_t u) { return from_magnitude(0, u); }

int32_t sf_to_i32(uint32_t a)
{
    int32_t exp = f_exp(a);
    uint32_t sig, mag;

    if (is_nan(a)) return 0;
    if (exp < 127) return 0;                        /* |a| < 1 truncates to 0 */
    if (exp >= 127 + 31)                            /* |a| >= 2^31, or inf */
        return f_sign(a) ? (int32_t)0x80000000u : 0x7FFFFFFF;

    sig = f_frac(a) | 0x00800000u;                  /* |a| = sig * 2^(exp-150) */
    mag = exp >= 150 ? sig << (exp - 150) : sig >> (150 - exp);
    return f_sign(a) ? (int32_t)(0u - mag) : (int32_t)mag;
}

uint32_t sf_to_u32(uint32_t a)
{
    int32_t exp = f_exp(a);
    uint32_t sig;

    if (is_nan(a) || f_sign(a)) return 0;           /* NaN, negatives -> 0 */
    if (exp < 127) return 0;
    if (exp >= 127 + 32) return 0xFFFFFFFFu;        /* a >= 2^32, or +inf */
    sig = f_frac(a) | 0x00800000u;
    return exp >= 150 ? sig << (exp - 150) : sig >> (150 - exp);
}

/* ------------------------------------------------------------------ */
/* Dot products                                                        */
/* ------------------------------------------------------------------ */

/*
 * sf_dot computes, term by term, acc = sf_add(acc, sf_mul(x, w)): the same
 * two roundings per term, the same bits.  It is the hot loop of every
 * model, so its common path is short: 42 MIPS instructions a term from
 * floats, 35 with x unpacked (sf_dot_pairs_run; 34 with no zero test:
 * sf_dot_dense_run), 31 over taps (x and w unpacked, sf_dot_taps_run).
 *
 * The accumulator stays unpacked between terms, in two registers: a
 * significand A and a word aw holding its sign (bit 31) and its exponent ae
 * (the bits below, plus DOT_OFF so that they stay positive), the value
 *
 *     acc = (-1)^sign * A * 2^(ae - DOT_BIAS),
 *
 * A in [2^30, 2^31] with its low 7 bits 0: 24 significant bits with the
 * leading 1 at bit 30 (A = 2^31 is a sum that rounded up to the next power
 * of two, left so).  ae is the float's biased exponent plus 255; a
 * subnormal is normalised (its ae is below 256).  A zero is A = 0 with
 * ae = DOT_ZERO_EXP, far below any product.  An accumulator that does not
 * fit (2^127 or more, infinite) leaves the fast loop: the rest of the dot
 * product is done by sf_add and sf_mul (dot_slow); a NaN ends it.
 *
 * x's elements come as floats (sf_dot) or unpacked (sf_dot_pairs_run: an op
 * that uses each x many times unpacks it once with sf_unpack): a pair of
 * sig, the significand with its hidden bit at bit 31, and ew, the sign and
 * exponent word as aw's; w's as floats or unpacked too (taps).  A term
 * whose operands are both in [2^-63, 2^65) (the window) has a normal
 * product, of exponent pe: its word pw (the sign in bit 31, or x's sign
 * when w is a float; pe + DOT_OFF) is one add of ew and w's exponent.  The
 * high word hi of the significands' product (one multu) has its leading 1
 * at bit 30 or 31; rounded at bit 7 (or 8) it is P, a significand at A's
 * place with P in [2^30, 2^31).  The rounding: add half an ulp, clear the
 * bits below; only if those bits were exactly half an ulp (a tie, or just
 * above one through the bits below hi: the low word) does the code look
 * further, ties to even.
 *
 * The sum: d = aw - pw has the exponent difference in its low bits and, in
 * bit 31 (xor a float w's sign), whether the signs differ.  The operand with the
 * smaller exponent is shifted right by the difference (up to 31; beyond
 * that it is below 2^-7 ulp of the other, and the other is the rounded
 * sum).  Shifts of up to 7 lose no bits (the low 7 bits are 0).  Bits lost
 * by a larger shift matter only when what is left is exactly a tie, and
 * after a cancellation that moves the leading 1: both are looked at there
 * (rare).  Then add or subtract and round as the product (at bit 8 after a
 * carry; after a cancellation, normalised first).  Results outside
 * [2^-126, 2^127) go the general way: the term is done by
 * sf_add(acc, sf_mul(x, w)) out of line (dot_general), as are operands
 * outside the window (an unpacked one has ew = DOT_OUT: its products look
 * too large); zero x operands (ReLU outputs, image borders) add a signed
 * zero inline, or with no test for them (sf_dot_dense_run) nothing.
 */
#define DOT_BIAS 412                /* ae = float exponent + 255 */
#define DOT_MIN_EXP 256             /* the smallest normal exponent */
#define DOT_MAX_EXP (253 + 255)     /* the largest exponent kept: below 2^127 */
#define DOT_ZERO_EXP (-(1 << 20))   /* a zero accumulator */
#define DOT_OFF 0x10000000          /* added to the exponents of aw, ew, pw */
#define DOT_LOW7 0x7Fu              /* the bits below a significand at A's place */
#define DOT_SIG (~DOT_LOW7)

/* The exponent of a sign and exponent word, and the word of a sign (bit
 * 31) and an exponent. */
static ALWAYS_INLINE int32_t dot_exp(uint32_t w) { return (int32_t)(w & ~SF_SIGN_BIT) - DOT_OFF; }
static ALWAYS_INLINE uint32_t dot_word(uint32_t sign, int32_t e) { return sign | (uint32_t)(e + DOT_OFF); }

/*
 * Unpacked operands.  An x operand (sf_unpack) in the window is its
 * significand sig and ew = sign | (field + 64 + DOT_OFF), a zero is sig = 0
 * and ew = its sign, anything else is the float itself in sig and
 * ew = sign | (DOT_OFF + DOT_OUT).  A w operand (of a tap, sf_taps) is the
 * same without DOT_OFF, so that the product's word is ew(x) + ew(w), its
 * sign bit the xor of theirs, but a zero w has ew = sign | DOT_ZERO_W.
 *
 * The products of a zero (sig 0) land far below any accumulator, which
 * they leave as it is, as they should (acc + (+-0) = acc, and +0 + (+-0) =
 * +0; the add may carry into bit 31, which is not looked at for a product
 * that small): aw - pw is between 2^21 and 2^29 for every accumulator and
 * every other operand in the window.  So a loop need not test for zeros
 * (the taps' do not test w; dot_fast's test x where zeros are common).
 * But -0 + (+0) is +0: from an accumulator at -0 such a product leaves -0
 * where +0 should be, and the dot product comes out -0 where it should be
 * +0 (and in no other case): the runs that skip zeros this way (taps,
 * X_DENSE) do a -0 result again the plain way (dot_redo_neg_zero).
 */
#define DOT_OUT (1 << 24)          /* added to ew outside the window: products look too large */
#define DOT_ZERO_W 0x7FC00000u     /* ew of a zero w: -2^22 as far as the exponents go */

static ALWAYS_INLINE sf_pair dot_operand(uint32_t a, const uint32_t off, const uint32_t zero_ew)
{
    uint32_t ta = (a << 1) + 0x40000000u, sign = a & SF_SIGN_BIT;
    sf_pair p;
    if ((int32_t)ta < 0) {                                  /* exponent field 64..191: the window */
        p.sig = (a << 8) | SF_SIGN_BIT;
        p.ew = sign | ((ta >> 24) + off);                   /* field + 64 */
    } else if ((a << 1) == 0) {                             /* +-0 */
        p.sig = 0;
        p.ew = sign | zero_ew;
    } else {                                                /* the general way: the float itself */
        p.sig = a;
        p.ew = sign | (off + DOT_OUT);
    }
    return p;
}

static ALWAYS_INLINE uint32_t dot_operand_float(sf_pair p, const uint32_t off)
{
    uint32_t e = p.ew & ~SF_SIGN_BIT;
    if (e == off + DOT_OUT) return p.sig;
    if (p.sig == 0) return p.ew;                            /* an x's +-0 (a tap's: dot_tap_w) */
    return (p.ew & SF_SIGN_BIT) | ((e - off - 64) << 23) | ((p.sig << 1) >> 9);
}

uint32_t sf_unpack(sf_pair *dst, const uint32_t *x, uint32_t n)
{
    uint32_t zeros = 0;
    for (; n; n--, dst++) {
        *dst = dot_operand(*x++, DOT_OFF, 0);
        zeros += dst->sig == 0;
    }
    return zeros;
}

/* The accumulator state of a float; 0 if it does not fit (>= 2^127, inf,
 * NaN). */
static ALWAYS_INLINE int dot_unpack(uint32_t f, uint32_t *aw, uint32_t *A)
{
    uint32_t e = (f >> 23) & 0xFF, m = f & 0x007FFFFFu, sign = f & SF_SIGN_BIT;
    if (e - 1 < 253) {                                      /* normal: the hidden bit */
        *A = (m | 0x00800000u) << 7;
        *aw = dot_word(sign, (int32_t)e + 255);
    } else if (e == 0) {
        if (m == 0) {
            *A = 0;
            *aw = dot_word(sign, DOT_ZERO_EXP);
        } else {                                            /* subnormal: m * 2^-149 */
            int32_t n = clz32(m) - 1;
            *A = m << n;
            *aw = dot_word(sign, 263 - n);
        }
    } else {
        return 0;
    }
    return 1;
}

/* The float of an accumulator state (exact: it holds a float's value). */
static ALWAYS_INLINE uint32_t dot_pack(uint32_t aw, uint32_t A)
{
    uint32_t sign = aw & SF_SIGN_BIT;
    int32_t ae = dot_exp(aw);
    if (A == 0) return sign;
    if (ae >= DOT_MIN_EXP)                                  /* the leading 1 carries */
        return sign | ((((uint32_t)ae - DOT_MIN_EXP) << 23) + (A >> 7));
    return sign | (A >> (263 - ae));                        /* subnormal */
}

/*
 * Rounding at bit 7: t is a significand plus half an ulp (0x40); t & DOT_SIG
 * is the value rounded half up.  If the bits below 7 of t came out 0, the
 * part below the rounding position was exactly half an ulp as far as the
 * kept bits say: a tie, to even (clear bit 7), unless bits that were not
 * kept put the exact value above the tie (round up: t) or below it (down).
 * Exact ties are common in sums (a product shifted by d <= 7 has only 7 - d
 * bits below the rounding position), so they stay inline and short.
 */
#define DOT_EVEN(t) ((t) & ~0xFFu)

/* The rounded product of a term whose rounding looked like a tie: the low
 * word of the significands' product (and, for a product rounded at bit 8,
 * bit 0 of the high word) say whether it was one. */
static COLD uint32_t dot_product_tie(uint32_t t, uint32_t sa, uint32_t sb, uint32_t hi, uint32_t at8)
{
    uint32_t lo = sa * sb;
    return lo != 0 || (at8 && (hi & 1)) ? t & DOT_SIG : DOT_EVEN(t);
}

/*
 * (*aw, *A) = big + small, rounded, where big (sign and exponent word wbig,
 * significand at A's place) is the operand with the larger exponent and
 * small's significand is shifted right by sh & 31 (sh's other bits are
 * ignored, as srlv does) to align it; bit 31 of `differ` says whether their
 * signs differ.  The result's sign is big's
 * unless a difference is negative (then sh = 0).  Returns 1 if the sum is
 * not for the fast loop (out of range, or a cancellation after losing
 * bits): the caller does the term the general way.
 */
static ALWAYS_INLINE int
dot_sum(uint32_t big, uint32_t wbig, uint32_t small, uint32_t sh, uint32_t differ, uint32_t *aw, uint32_t *A)
{
    uint32_t q, s, t, low, r;

    sh &= 31;
    q = small >> sh;
    if ((int32_t)differ >= 0) {                             /* same signs: add */
        s = big + q;                                        /* < 2^32 */
        if (LIKELY((int32_t)s >= 0)) {                      /* leading 1 at bit 30 */
            t = s + 0x40;
            low = t & DOT_LOW7;
            r = t - low;
            if (UNLIKELY(low == 0) && (sh < 8 || (q << sh) == small)) r = DOT_EVEN(t);
        } else {                                            /* a carry: at bit 31 */
            t = (s >> 1) + 0x40;
            low = t & DOT_LOW7;
            r = t - low;
            if (UNLIKELY(low == 0) && !(s & 1) && (sh < 8 || (q << sh) == small)) r = DOT_EVEN(t);
            if (dot_exp(++wbig) > DOT_MAX_EXP) return 1;
        }
    } else {                                                /* different signs: subtract */
        s = big - q;
        if (LIKELY((int32_t)s >= 0x40000000)) {             /* leading 1 at bit 30 */
        round_down_ties:                                    /* the exact value is s or a bit below */
            t = s + 0x40;
            low = t & DOT_LOW7;
            r = t - low;
            if (UNLIKELY(low == 0)) r = sh < 8 || (q << sh) == small ? DOT_EVEN(t) : t - 0x80;
        } else if ((int32_t)s >= 0x20000000) {              /* at bit 29: one place left */
            s <<= 1;
            if (dot_exp(--wbig) < DOT_MIN_EXP) return 1;
            goto round_down_ties;                           /* (lost bits are below bit 1) */
        } else if (s == 0x80000000u) {                      /* 2^31 - (below 2^-7 ulp) */
            r = s;
        } else {                                            /* a cancellation: exact */
            int32_t n;
            if (s == 0) {                                   /* x - x = +0 */
                *aw = dot_word(0, DOT_ZERO_EXP), *A = 0;
                return 0;
            }
            if ((int32_t)s < 0) {                           /* sh = 0, small > big */
                s = 0u - s;
                wbig ^= SF_SIGN_BIT;
            }
            n = clz32(s) - 1;
            s <<= n;
            wbig -= (uint32_t)n;
            if (dot_exp(wbig) < DOT_MIN_EXP) return 1;
            t = s + 0x40;
            r = t & DOT_SIG;
            if ((t & DOT_LOW7) == 0) r = DOT_EVEN(t);
        }
    }
    *aw = wbig, *A = r;
    return 0;
}

/* Loops as sf_dot runs them: byte strides, and the steps from the end of a
 * row to the start of the next, from the end of a block of rows to the next
 * block. */
typedef struct {
    uint32_t n0, n1, n2;
    intptr_t dx, dw, dx_row, dw_row, dx_block, dw_block, row_bytes;
} dot_loops;

/* The forms of x in a dot product: floats (sf_dot_run), unpacked
 * (sf_dot_pairs_run), unpacked with few zeros (sf_dot_dense_run). */
enum { X_FLOATS, X_PAIRS, X_DENSE };

/* The x element at byte address xa, as a float (xf: x's form). */
static ALWAYS_INLINE uint32_t dot_x(uintptr_t xa, int xf)
{
    return xf != X_FLOATS ? dot_operand_float(*(const sf_pair *)xa, DOT_OFF) : *(const uint32_t *)xa;
}


/* The rest of a dot product the plain way, from the term at (xa, wa) with k
 * terms left in its row, j rows left in its block (this one included) and
 * i blocks left (this one included). */
static COLD uint32_t dot_slow(uint32_t acc, uintptr_t xa, uintptr_t wa, uint32_t k, uint32_t j, uint32_t i,
                              const dot_loops *L, int xf)
{
    for (;;) {
        for (; k; k--, xa += L->dx, wa += L->dw)
            acc = sf_add(acc, sf_mul(dot_x(xa, xf), *(const uint32_t *)wa));
        if (is_nan(acc)) return SF_QNAN;                    /* NaN + anything = NaN */
        xa += L->dx_row, wa += L->dw_row;
        if (--j == 0) {
            if (--i == 0) return acc;
            j = L->n1;
            xa += L->dx_block, wa += L->dw_block;
        }
        k = L->n2;
    }
}

/* acc + a*b by the separate operations, for what the fast loop leaves. */
static COLD uint32_t dot_general(uint32_t acc, uint32_t a, uint32_t b)
{
    return sf_add(acc, sf_mul(a, b));
}

/* acc + the product of the significands sa and sb (pw: the product's word;
 * bit 31 of sgn xor pw's is its sign), on the fast path, into the state
 * (*aw, *A).  Returns 1, the state untouched, if the term must go the
 * general way. */
static ALWAYS_INLINE int dot_add_product(uint32_t sa, uint32_t sb, uint32_t pw, uint32_t sgn, uint32_t *aw,
                                         uint32_t *A)
{
    uint32_t hi = (uint32_t)(((uint64_t)sa * sb) >> 32), t = hi + 0x40, p, d;

    if (LIKELY((int32_t)t >= 0)) {                          /* leading 1 at bit 30 */
        uint32_t low = t & DOT_LOW7;
        p = t - low;
        if (UNLIKELY(low == 0)) p = dot_product_tie(t, sa, sb, hi, 0);
    } else {                                                /* at bit 31 (or rounds up to it) */
        uint32_t low;
        t = (hi >> 1) + 0x40;
        pw += 1;
        low = t & DOT_LOW7;
        p = t - low;
        if (UNLIKELY(low == 0)) p = dot_product_tie(t, sa, sb, hi, 1);
    }
    d = *aw - pw;                                           /* bits 0..30: ae - pe, when >= 0 */
    if (LIKELY((d & ~(SF_SIGN_BIT | 31)) == 0))             /* 0 <= ae - pe < 32: |acc| >= |p| / 2 */
        return dot_sum(*A, *aw, p, d, d ^ sgn, aw, A);
    if ((int32_t)(d << 1) < 0) {                            /* |acc| < |p| / 2, or 0 */
        uint32_t wp = pw ^ (sgn & SF_SIGN_BIT), sh = ((pw - *aw) << 1) >> 1;
        if (dot_exp(wp) > DOT_MAX_EXP) return 1;
        if (sh < 32) return dot_sum(p, wp, *A, sh, wp ^ *aw, aw, A);
        *aw = wp, *A = p;                                   /* acc below 2^-7 ulp of p */
    }                                                       /* else p is below 2^-7 ulp of acc */
    return 0;
}

/* acc + (+-0) (bit 31 of sgn: the zero's sign): acc, and +0 + -0 = +0. */
static ALWAYS_INLINE void dot_add_zero(uint32_t sgn, uint32_t *aw, uint32_t A)
{
    if (A == 0) *aw &= sgn | ~SF_SIGN_BIT;
}

/* Whether a fast loop's result must be done again the plain way: a -0 from
 * a loop that lets zero products pass far below the accumulator (see
 * DOT_ZERO_W). */
static ALWAYS_INLINE int dot_redo_neg_zero(uint32_t r) { return r == SF_NEG_ZERO; }

/* One dot product on the fast path: from the accumulator state (aw, A) at
 * (xa, wa), the loops L, of floats (xf = X_FLOATS) or of x unpacked and w
 * floats (X_PAIRS; X_DENSE: x has few zeros, so the loop does not test for
 * them).
 *
 * A zero x costs the test (one instruction) in every term, and saves the
 * ~25 instructions of a product when it is zero: worth it for ReLU outputs
 * and images, not for an x with no zeros (after a GELU, a layer norm, in
 * attention).  Without the test, a zero x (sig 0, ew its sign) is a product
 * like any other (0), far below any accumulator, so it leaves the
 * accumulator as it is: right, except for an accumulator at -0 meeting a
 * +0 product (see DOT_ZERO_W).  A zero x times a w outside the window
 * (inf: NaN) takes the general way before the product.
 */
static ALWAYS_INLINE uint32_t dot_fast(const dot_loops *L, uint32_t aw, uint32_t A, uintptr_t xa, uintptr_t wa,
                                       const int xf)
{
    const intptr_t dx = L->dx, dw = L->dw;
    uintptr_t xend;
    uint32_t j = L->n1, i = L->n0, acc;

    for (;;) {
        xend = xa + L->row_bytes;
        do {
            uint32_t sa, sb, pw, sgn;

            /* the significands sa, sb; the product's word pw and sgn, whose
             * bit 31 xor pw's is the product's sign */
            if (xf == X_FLOATS) {
                uint32_t a = *(const uint32_t *)xa, b = *(const uint32_t *)wa, ta, tb;
                sgn = a ^ b;
                if ((a << 1) == 0) {                        /* +-0 * w = +-0 */
                    if ((b << 1) >= 0xFF000000u) goto general;  /* w is inf or NaN */
                    goto zero;
                }
                ta = (a << 1) + 0x40000000u, tb = (b << 1) + 0x40000000u;
                if ((int32_t)(ta & tb) >= 0) goto general;  /* field 64..191: the sign bit of field + 64 */
                sa = (a << 8) | SF_SIGN_BIT, sb = (b << 8) | SF_SIGN_BIT;
                pw = (ta >> 24) + (tb >> 24) + DOT_OFF;
            } else {
                const sf_pair *xp = (const sf_pair *)xa;
                uint32_t b = *(const uint32_t *)wa, tb;
                sa = xp->sig, sgn = b;
                if (xf == X_PAIRS && sa == 0) {
                    sgn ^= xp->ew;
                    if ((b << 1) >= 0xFF000000u) goto general;
                    goto zero;
                }
                tb = (b << 1) + 0x40000000u;
                if ((int32_t)tb >= 0) goto general;
                sb = (b << 8) | SF_SIGN_BIT;
                pw = xp->ew + (tb >> 24);
            }
            if (dot_add_product(sa, sb, pw, sgn, &aw, &A)) goto general;
            if (0) {
            zero:
                dot_add_zero(sgn, &aw, A);
            }
        next:
            xa += dx, wa += dw;
        } while (xa != xend);
        xa += L->dx_row, wa += L->dw_row;
        if (--j == 0) {
            if (--i == 0) return dot_pack(aw, A);
            j = L->n1;
            xa += L->dx_block, wa += L->dw_block;
        }
    }

general:                                                    /* the term at (xa, wa), the plain way */
    acc = dot_general(dot_pack(aw, A), dot_x(xa, xf), *(const uint32_t *)wa);
    if (dot_unpack(acc, &aw, &A)) goto next;
    if (is_nan(acc)) return SF_QNAN;
    xa += dx, wa += dw;
    return dot_slow(acc, xa, wa, (uint32_t)((intptr_t)(xend - xa) / dx), j, i, L, xf);
}

/* (one copy of the loop per kind of operands, each a function of its own:
 * the run around it keeps its registers free) */
static __attribute__((noinline)) uint32_t dot_fast_floats(const dot_loops *L, uint32_t aw, uint32_t A,
                                                         uintptr_t xa, uintptr_t wa)
{
    return dot_fast(L, aw, A, xa, wa, X_FLOATS);
}

static __attribute__((noinline)) uint32_t dot_fast_pairs(const dot_loops *L, uint32_t aw, uint32_t A,
                                                        uintptr_t xa, uintptr_t wa)
{
    return dot_fast(L, aw, A, xa, wa, X_PAIRS);
}

static __attribute__((noinline)) uint32_t dot_fast_dense(const dot_loops *L, uint32_t aw, uint32_t A,
                                                        uintptr_t xa, uintptr_t wa)
{
    return dot_fast(L, aw, A, xa, wa, X_DENSE);
}


/* A run of dot products (sf_run) with x of the form xf (see dot_fast) and w
 * floats: each output starts from acc, with x and w stepped along by the
 * run. */
static ALWAYS_INLINE void dot_kernel(uint32_t *out, uint32_t acc, uintptr_t xa, uintptr_t wa, const sf_loop loop[3],
                                     const sf_run *run, const int xf)
{
    const intptr_t xsize = xf != X_FLOATS ? (intptr_t)sizeof(sf_pair) : 4, wsize = 4;
    sf_loop l0 = loop[0], l1 = loop[1], l2 = loop[2];
    dot_loops L;
    intptr_t x_step = xsize * run->x, w_step = wsize * run->w;
    uint32_t aw0, A0, n;
    int fast;

    /* A loop of one iteration is dropped and the loops outside it move in,
     * so that the inner loops are as long as can be (a transposed
     * convolution has rows of 1 or 2 taps). */
    if (l2.n == 1) l2 = l1, l1.n = 1;
    if (l2.n == 1) l2 = l0, l0.n = 1;
    if (l1.n == 1) l1 = l0, l0.n = 1;
    /* A row ends when x's address reaches its end: x needs a stride.  A
     * product is the same either way round, so floats x and w may swap. */
    if (l2.n == 1) l2.dx = 1;                               /* one term: any stride */
    if (xf == X_FLOATS && l2.dx == 0 && l2.dw != 0) {
        uintptr_t t = xa;
        intptr_t st = x_step;
        int32_t s;
        xa = wa, wa = t;
        x_step = w_step, w_step = st;
        s = l0.dx, l0.dx = l0.dw, l0.dw = s;
        s = l1.dx, l1.dx = l1.dw, l1.dw = s;
        s = l2.dx, l2.dx = l2.dw, l2.dw = s;
    }
    /* Byte addresses as integers, and the steps between terms, from the
     * end of a row to the start of the next one, and from the end of a
     * block of rows to the next block (the addresses may step outside the
     * arrays after their last use). */
    L.n0 = l0.n, L.n1 = l1.n, L.n2 = l2.n;
    L.dx = xsize * l2.dx, L.dw = wsize * l2.dw;
    L.dx_row = xsize * l1.dx - (intptr_t)l2.n * L.dx;
    L.dw_row = wsize * l1.dw - (intptr_t)l2.n * L.dw;
    L.dx_block = xsize * ((intptr_t)l0.dx - (intptr_t)l1.n * l1.dx);
    L.dw_block = wsize * ((intptr_t)l0.dw - (intptr_t)l1.n * l1.dw);
    L.row_bytes = (intptr_t)l2.n * L.dx;
    /* the fast loop needs terms, a stride of x and an acc in its range */
    fast = l0.n && l1.n && l2.n && l2.dx && dot_unpack(acc, &aw0, &A0);

    for (n = run->count; n; n--, out += run->out, xa += x_step, wa += w_step) {
        if (fast) {
            *out = xf == X_DENSE ? dot_fast_dense(&L, aw0, A0, xa, wa)
                 : xf == X_PAIRS ? dot_fast_pairs(&L, aw0, A0, xa, wa) : dot_fast_floats(&L, aw0, A0, xa, wa);
            if (xf != X_DENSE || !dot_redo_neg_zero(*out)) continue;
        }
        if (!(l0.n && l1.n && l2.n))
            *out = acc;                                     /* no terms: acc, NaN payload and all */
        else
            *out = is_nan(acc) ? SF_QNAN : dot_slow(acc, xa, wa, l2.n, l1.n, l0.n, &L, xf);
    }
}

/*
 * Taps: the weights of a convolution's dot products for one class of its
 * outputs (those with the same taps), unpacked (dot_operand without
 * DOT_OFF), in the order of the terms, each with the offset of its x from
 * the output's first x (sf_tap.x: bytes of unpacked x).  A dot product over
 * taps is one flat loop, however short the rows of its taps are (a
 * transposed convolution of stride 2 has rows of 1 or 2).
 */
void sf_taps(sf_tap *dst, const uint32_t *w, const sf_loop l[3])
{
    for (uint32_t i = 0; i < l[0].n; i++)
        for (uint32_t j = 0; j < l[1].n; j++) {
            const uint32_t *wr = w + (int32_t)i * l[0].dw + (int32_t)j * l[1].dw;
            int32_t x = ((int32_t)i * l[0].dx + (int32_t)j * l[1].dx) * (int32_t)sizeof(sf_pair);
            for (uint32_t k = 0; k < l[2].n; k++, dst++, wr += l[2].dw, x += l[2].dx * (int32_t)sizeof(sf_pair)) {
                sf_pair p = dot_operand(*wr, 0, DOT_ZERO_W);
                dst->sig = p.sig, dst->ew = p.ew, dst->x = x;
            }
        }
}

static ALWAYS_INLINE uint32_t dot_tap_x(uintptr_t xo, const sf_tap *w)
{
    return dot_operand_float(*(const sf_pair *)(xo + (intptr_t)w->x), DOT_OFF);
}

static ALWAYS_INLINE uint32_t dot_tap_w(const sf_tap *w)
{
    sf_pair p = {w->sig, w->ew};
    return w->sig == 0 ? w->ew & SF_SIGN_BIT : dot_operand_float(p, 0);
}

/* The rest of a dot product over taps the plain way, from the tap w. */
static COLD uint32_t dot_taps_slow(uint32_t acc, uintptr_t xo, const sf_tap *w, const sf_tap *wend)
{
    for (; w != wend && !is_nan(acc); w++)
        acc = sf_add(acc, sf_mul(dot_tap_x(xo, w), dot_tap_w(w)));
    return is_nan(acc) ? SF_QNAN : acc;
}

/* One dot product over the taps w .. wend-1 on the fast path, from the
 * accumulator state (aw, A), x's first element at xo. */
static __attribute__((noinline)) uint32_t dot_fast_taps(uint32_t aw, uint32_t A, uintptr_t xo, const sf_tap *w,
                                                       const sf_tap *wend)
{
    for (; w != wend; w++) {
        const sf_pair *xp = (const sf_pair *)(xo + (intptr_t)w->x);
        uint32_t acc;
        if (xp->sig == 0) {                                 /* +-0 * w: unless w is inf or NaN */
            if (!((w->ew & DOT_OUT) && (w->sig << 1) >= 0xFF000000u)) {
                dot_add_zero(xp->ew ^ w->ew, &aw, A);
                continue;
            }
        } else if (!dot_add_product(xp->sig, w->sig, xp->ew + w->ew, 0, &aw, &A)) {
            continue;
        }
        acc = dot_general(dot_pack(aw, A), dot_tap_x(xo, w), dot_tap_w(w));    /* the plain way */
        if (!dot_unpack(acc, &aw, &A)) return dot_taps_slow(acc, xo, w + 1, wend);
    }
    return dot_pack(aw, A);
}

void sf_dot_taps_run(uint32_t *out, uint32_t acc, const sf_pair *x, const sf_tap *w, uint32_t n, const sf_run *run)
{
    uintptr_t xo = (uintptr_t)x;
    const intptr_t x_step = (intptr_t)sizeof(sf_pair) * run->x;
    uint32_t aw0, A0, o;
    const int fast = dot_unpack(acc, &aw0, &A0);

    for (o = run->count; o; o--, out += run->out, xo += x_step) {
        if (fast && !dot_redo_neg_zero(*out = dot_fast_taps(aw0, A0, xo, w, w + n))) continue;
        if (n == 0) *out = acc;                             /* no terms: acc, NaN payload and all */
        else *out = is_nan(acc) ? SF_QNAN : dot_taps_slow(acc, xo, w, w + n);
    }
}

void sf_dot_run(uint32_t *out, uint32_t acc, const uint32_t *x, const uint32_t *w, const sf_loop loop[3],
                const sf_run *run)
{
    dot_kernel(out, acc, (uintptr_t)x, (uintptr_t)w, loop, run, X_FLOATS);
}

void sf_dot_pairs_run(uint32_t *out, uint32_t acc, const sf_pair *x, const uint32_t *w, const sf_loop loop[3],
                      const sf_run *run)
{
    dot_kernel(out, acc, (uintptr_t)x, (uintptr_t)w, loop, run, X_PAIRS);
}

void sf_dot_dense_run(uint32_t *out, uint32_t acc, const sf_pair *x, const uint32_t *w, const sf_loop loop[3],
                      const sf_run *run)
{
    dot_kernel(out, acc, (uintptr_t)x, (uintptr_t)w, loop, run, X_DENSE);
}


static const sf_run dot_one = {1, 0, 0, 0};

uint32_t sf_dot(uint32_t acc, const uint32_t *x, const uint32_t *w, const sf_loop loop[3])
{
    uint32_t r;
    sf_dot_run(&r, acc, x, w, loop, &dot_one);
    return r;
}


uint32_t sf_mac(uint32_t acc, uint32_t a, uint32_t b)
{
    static const sf_loop one[3] = {{1, 0, 0}, {1, 0, 0}, {1, 0, 0}};
    return sf_dot(acc, &a, &b, one);
}

/* ------------------------------------------------------------------ */
/* gcc soft-float ABI                                                  */
/* ------------------------------------------------------------------ */

#ifdef SOFTFLOAT_ABI

/* Reinterpret the bits (no conversion, no float arithmetic). */
typedef union { float f; uint32_t u; } sf_bits;

static inline uint32_t bits_of(float f) { sf_bits x; x.f = f; return x.u; }
static inline float float_of(uint32_t u) { sf_bits x; x.u = u; return x.f; }

float __addsf3(float a, float b) { return float_of(sf_add(bits_of(a), bits_of(b))); }
float __subsf3(float a, float b) { return float_of(sf_sub(bits_of(a), bits_of(b))); }
float __mulsf3(float a, float b) { return float_of(sf_mul(bits_of(a), bits_of(b))); }
float __divsf3(float a, float b) { return float_of(sf_div(bits_of(a), bits_of(b))); }
float __negsf2(float a) { return float_of(sf_neg(bits_of(a))); }

/* Three-way compare: -1, 0, 1, or `unordered` when a NaN is involved. */
static int compare(uint32_t a, uint32_t b, int unordered)
{
    if (is_nan(a) || is_nan(b)) return unordered;
    if (sf_lt(a, b)) return -1;
    if (sf_eq(a, b)) return 0;
    return 1;
}

int __eqsf2(float a, float b) { return compare(bits_of(a), bits_of(b), 1) != 0; }
int __nesf2(float a, float b) { return compare(bits_of(a), bits_of(b), 1) != 0; }
int __ltsf2(float a, float b) { return compare(bits_of(a), bits_of(b), 2); }
int __lesf2(float a, float b) { return compare(bits_of(a), bits_of(b), 2); }
int __gtsf2(float a, float b) { return compare(bits_of(a), bits_of(b), -2); }
int __gesf2(float a, float b) { return compare(bits_of(a), bits_of(b), -2); }
int __unordsf2(float a, float b) { return sf_unordered(bits_of(a), bits_of(b)); }

float __floatsisf(int i) { return float_of(sf_from_i32(i)); }
float __floatunsisf(unsigned int u) { return float_of(sf_from_u32(u)); }
int __fixsfsi(float a) { return sf_to_i32(bits_of(a)); }
unsigned int __fixunssfsi(float a) { return sf_to_u32(bits_of(a)); }

#endif /* SOFTFLOAT_ABI */
