/*
 * keccak.c - keccak256 (the original Keccak padding 0x01, as Ethereum uses,
 * not SHA3-256's 0x06): rate 136 bytes, capacity 512 bits, 24 rounds of
 * Keccak-f[1600] on 25 64-bit lanes.  Lanes are loaded little-endian from
 * the byte stream whatever the host order, so both builds agree.  The guest
 * hashes only its output, so this is written for clarity, not speed.
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

/* rho rotation offsets and pi lane order, walked along the pi cycle */
static const uint8_t ROT[24] = {1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 2, 14,
                                27, 41, 56, 8, 25, 43, 62, 18, 39, 61, 20, 44};
static const uint8_t PI[24] = {10, 7, 11, 17, 18, 3, 5, 16, 8, 21, 24, 4,
                               15, 23, 19, 13, 12, 2, 20, 14, 22, 9, 6, 1};

static inline uint64_t rotl64(uint64_t x, uint32_t n) { return (x << n) | (x >> (64u - n)); }

static void keccak_f(uint64_t a[25])
{
    uint64_t bc[5];
    for (int round = 0; round < 24; round++) {
        /* theta */
        for (int i = 0; i < 5; i++)
            bc[i] = a[i] ^ a[i + 5] ^ a[i + 10] ^ a[i + 15] ^ a[i + 20];
        for (int i = 0; i < 5; i++) {
            uint64_t t = bc[(i + 4) % 5] ^ rotl64(bc[(i + 1) % 5], 1);
            for (int j = 0; j < 25; j += 5)
                a[j + i] ^= t;
        }
        /* rho and pi */
        uint64_t t = a[1];
        for (int i = 0; i < 24; i++) {
            int j = PI[i];
            uint64_t tmp = a[j];
            a[j] = rotl64(t, ROT[i]);
            t = tmp;
        }
        /* chi */
        for (int j = 0; j < 25; j += 5) {
            for (int i = 0; i < 5; i++)
                bc[i] = a[j + i];
            for (int i = 0; i < 5; i++)
                a[j + i] ^= (~bc[(i + 1) % 5]) & bc[(i + 2) % 5];
        }
        /* iota */
        a[0] ^= RC[round];
    }
}

/* XOR one rate-sized block (136 bytes) into the state. */
static void absorb(uint64_t a[25], const uint8_t *p)
{
    for (int i = 0; i < 17; i++, p += 8) {
        uint64_t lane = 0;
        for (int b = 7; b >= 0; b--)
            lane = (lane << 8) | p[b];
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
