/*
 * keccak.c - keccak256 (the original Keccak padding 0x01, as Ethereum uses,
 * not SHA3-256's 0x06): rate 136 bytes, capacity 512 bits, 24 rounds of
 * Keccak-f[1600] on 25 64-bit lanes.  Lanes are loaded little-endian from
 * the byte stream whatever the host order, so both builds agree.  The split
 * game hashes every tensor an execution writes (its blob id), natively and in
 * the node guest, so the permutation is unrolled.
 */
#include "mlkit.h"

static const uint64_t RC[24] = {
    0x0000000000000001ull, 0x0000000000008082ull, 0x800000000000808Aull, 0x8000000080008000ull,
    0x000000000000808Bull, 0x0000000080000001ull, 0x8000000080008081ull, 0x8000000000008009ull,
    0x000000000000008Aull, 0x0000000000000088ull, 0x0000000080008009ull, 0x000000008000000Aull,
    0x000000008000808Bull, 0x800000000000008Bull, 0x8000000000008089ull, 0x8000000000008003ull,
    0x8000000000008002ull, 0x8000000000000080ull, 0x000000000000800Aull, 0x800000008000000Aull,
    0x8000000080008081ull, 0x8000000000008080ull, 0x0000000080000001ull, 0x8000000080008008ull,
};

#define ROTL(x, n) (((x) << (n)) | ((x) >> (64 - (n))))

/* Keccak-f[1600], unrolled (generated from the spec's rho offsets and pi
 * map: lane (x, y) moves to (y, 2x + 3y), rotated by R[x + 5y]).  Each
 * round computes theta's column parities, then one output row at a time:
 * its five lanes through theta, rho and pi, then chi (and iota) into the
 * other buffer, so a row's lanes stay in registers (the MIPS guest has 32
 * of them for 50 state words).  24 rounds end in the caller's buffer. */
static void keccak_f(uint64_t st[25])
{
    uint64_t other[25], *a = st, *e = other, *t;
    uint64_t b0, b1, b2, b3, b4, c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    for (int round = 0; round < 24; round++) {
        c0 = a[0] ^ a[5] ^ a[10] ^ a[15] ^ a[20];
        c1 = a[1] ^ a[6] ^ a[11] ^ a[16] ^ a[21];
        c2 = a[2] ^ a[7] ^ a[12] ^ a[17] ^ a[22];
        c3 = a[3] ^ a[8] ^ a[13] ^ a[18] ^ a[23];
        c4 = a[4] ^ a[9] ^ a[14] ^ a[19] ^ a[24];
        d0 = c4 ^ ROTL(c1, 1);
        d1 = c0 ^ ROTL(c2, 1);
        d2 = c1 ^ ROTL(c3, 1);
        d3 = c2 ^ ROTL(c4, 1);
        d4 = c3 ^ ROTL(c0, 1);
        /* row 0 */
        b0 = a[0] ^ d0;
        b1 = ROTL(a[6] ^ d1, 44);
        b2 = ROTL(a[12] ^ d2, 43);
        b3 = ROTL(a[18] ^ d3, 21);
        b4 = ROTL(a[24] ^ d4, 14);
        e[0] = b0 ^ (~b1 & b2) ^ RC[round];
        e[1] = b1 ^ (~b2 & b3);
        e[2] = b2 ^ (~b3 & b4);
        e[3] = b3 ^ (~b4 & b0);
        e[4] = b4 ^ (~b0 & b1);
        /* row 1 */
        b0 = ROTL(a[3] ^ d3, 28);
        b1 = ROTL(a[9] ^ d4, 20);
        b2 = ROTL(a[10] ^ d0, 3);
        b3 = ROTL(a[16] ^ d1, 45);
        b4 = ROTL(a[22] ^ d2, 61);
        e[5] = b0 ^ (~b1 & b2);
        e[6] = b1 ^ (~b2 & b3);
        e[7] = b2 ^ (~b3 & b4);
        e[8] = b3 ^ (~b4 & b0);
        e[9] = b4 ^ (~b0 & b1);
        /* row 2 */
        b0 = ROTL(a[1] ^ d1, 1);
        b1 = ROTL(a[7] ^ d2, 6);
        b2 = ROTL(a[13] ^ d3, 25);
        b3 = ROTL(a[19] ^ d4, 8);
        b4 = ROTL(a[20] ^ d0, 18);
        e[10] = b0 ^ (~b1 & b2);
        e[11] = b1 ^ (~b2 & b3);
        e[12] = b2 ^ (~b3 & b4);
        e[13] = b3 ^ (~b4 & b0);
        e[14] = b4 ^ (~b0 & b1);
        /* row 3 */
        b0 = ROTL(a[4] ^ d4, 27);
        b1 = ROTL(a[5] ^ d0, 36);
        b2 = ROTL(a[11] ^ d1, 10);
        b3 = ROTL(a[17] ^ d2, 15);
        b4 = ROTL(a[23] ^ d3, 56);
        e[15] = b0 ^ (~b1 & b2);
        e[16] = b1 ^ (~b2 & b3);
        e[17] = b2 ^ (~b3 & b4);
        e[18] = b3 ^ (~b4 & b0);
        e[19] = b4 ^ (~b0 & b1);
        /* row 4 */
        b0 = ROTL(a[2] ^ d2, 62);
        b1 = ROTL(a[8] ^ d3, 55);
        b2 = ROTL(a[14] ^ d4, 39);
        b3 = ROTL(a[15] ^ d0, 41);
        b4 = ROTL(a[21] ^ d1, 2);
        e[20] = b0 ^ (~b1 & b2);
        e[21] = b1 ^ (~b2 & b3);
        e[22] = b2 ^ (~b3 & b4);
        e[23] = b3 ^ (~b4 & b0);
        e[24] = b4 ^ (~b0 & b1);
        t = a, a = e, e = t;
    }
}

/* XOR one rate-sized block (136 bytes) into the state. */
static void absorb(uint64_t a[25], const uint8_t *p)
{
    for (int i = 0; i < 17; i++, p += 8) {
        uint64_t lane = 0;
#if MLK_HOST_BE
        for (int b = 7; b >= 0; b--)
            lane = (lane << 8) | p[b];
#else
        __builtin_memcpy(&lane, p, 8); /* the lane's little-endian bytes: the host's order */
#endif
        a[i] ^= lane;
    }
}

void mlk_keccak256(const uint8_t *data, uint32_t len, uint8_t out[32])
{
    uint64_t a[25];
    uint8_t last[136];
    for (int i = 0; i < 25; i++)
        a[i] = 0;
    for (; len >= 136; len -= 136, data += 136) {
        absorb(a, data);
        keccak_f(a);
    }
    for (uint32_t i = 0; i < 136; i++)
        last[i] = i < len ? data[i] : 0;
    last[len] ^= 0x01;
    last[135] ^= 0x80;
    absorb(a, last);
    keccak_f(a);
    for (int i = 0; i < 32; i++)
        out[i] = (uint8_t)(a[i / 8] >> (8 * (i % 8)));
}
