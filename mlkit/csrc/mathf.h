/*
 * mathf.h - deterministic float math for rollml, built only from the
 * softfloat.h operations (sf_add, sf_mul, ...) and integer bit handling,
 * so the host build and the MIPS build return the same bits.
 *
 * All functions take and return raw binary32 bit patterns.  They are NOT
 * correctly rounded; the measured error bounds are at the top of mathf.c
 * (and are checked by tests/mlkit/test_softfloat.py).  NaN in -> SF_QNAN out.
 */
#ifndef ROLLML_MATHF_H
#define ROLLML_MATHF_H

#include <stdint.h>
#include "softfloat.h"

uint32_t sf_exp(uint32_t x);      /* e^x                                   */
uint32_t sf_log(uint32_t x);      /* natural log; log(+-0) = -inf, x<0 NaN  */
uint32_t sf_tanh(uint32_t x);     /* tanh(x)                               */
uint32_t sf_sigmoid(uint32_t x);  /* 1 / (1 + e^-x)                        */
uint32_t sf_gelu(uint32_t x);     /* GPT-2 tanh-approximation GELU:
                                   * 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) */
uint32_t sf_rsqrt(uint32_t x);    /* 1 / sqrt(x)                           */

#endif /* ROLLML_MATHF_H */
