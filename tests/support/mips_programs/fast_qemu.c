/* Compared with qemu-mips by tests/mipsvm/test_fast.py: integer arithmetic, byte/half-word and unaligned memory
   (packed structures: lwl/lwr/swl/swr, no memcpy), recursion, a switch jump table, function pointers.
   Only write and exit_group; prints a report to fd 1 and exits with EXIT_CODE. */
#include "sys.h"

#ifndef EXIT_CODE
#define EXIT_CODE 0
#endif

typedef unsigned int u32;
typedef unsigned long long u64;

static char out[4096];
static int out_len;

static void put(const char *s) {
    while (*s) out[out_len++] = *s++;
}

static void put_hex(u32 v) {
    for (int i = 28; i >= 0; i -= 4) out[out_len++] = "0123456789abcdef"[(v >> i) & 15];
    out[out_len++] = ' ';
}

struct __attribute__((packed)) rec {
    char tag;
    u32 a;
    unsigned short b;
    u32 c;
};

static volatile unsigned char bytes[64];

static u32 ackermann_ish(u32 m, u32 n) { return m == 0 ? n + 1 : n == 0 ? ackermann_ish(m - 1, 1) : ackermann_ish(m - 1, ackermann_ish(m, n - 1)); }

static u32 collatz(u32 n) { return n <= 1 ? 0 : 1 + collatz(n & 1 ? 3 * n + 1 : n / 2); }

__attribute__((noinline)) static u32 op_table(u32 x, int k) {
    switch (k) {
    case 0: return x + 0x9e3779b9u;
    case 1: return x ^ (x >> 13);
    case 2: return x * 2654435761u;
    case 3: return (x << 7) | (x >> 25);
    case 4: return ~x + k;
    case 5: return x / 10007u;
    case 6: return x % 65521u;
    case 7: return (u32)((int)x >> 3);
    case 8: return x - (x >> 2);
    default: return x + (u32)k;
    }
}

static u32 f_add(u32 a, u32 b) { return a + b; }
static u32 f_mul(u32 a, u32 b) { return a * b; }
static u32 f_xor(u32 a, u32 b) { return a ^ b; }
static u32 f_div(u32 a, u32 b) { return b ? a / b : a; }
static u32 (*const fns[4])(u32, u32) = {f_add, f_mul, f_xor, f_div};

int main(void) {
    /* integer arithmetic: signed/unsigned, 64-bit products, shifts */
    u32 h = 1;
    int s = -12345;
    u64 w = 0x0123456789abcdefull;
    for (int i = 1; i < 300; i++) {
        h = h * 31u + (u32)i;
        s = s * 3 / 2 + (i % 7) - (s >> 4);
        w = w * 0x100000001b3ull + (u64)(h ^ (u32)s);
    }
    put("arith ");
    put_hex(h);
    put_hex((u32)s);
    put_hex((u32)(w >> 32));
    put_hex((u32)w);

    /* bytes, half-words (signed and unsigned) */
    for (int i = 0; i < 64; i++) bytes[i] = (unsigned char)(i * 37 + 11);
    u32 acc = 0;
    for (int i = 0; i < 63; i += 2) {
        acc += (signed char)bytes[i];
        acc = acc * 3 + *(volatile unsigned short *)&bytes[i];
        acc ^= (u32)*(volatile short *)&bytes[i];
    }
    put("bytes ");
    put_hex(acc);

    /* unaligned words through packed structures */
    static struct rec recs[5];
    for (int i = 0; i < 5; i++) {
        recs[i].tag = (char)i;
        recs[i].a = 0x11111111u * (u32)(i + 1);
        recs[i].b = (unsigned short)(0x1234 * i);
        recs[i].c = recs[i].a ^ 0xdeadbeefu;
    }
    u32 un = 0;
    for (int i = 0; i < 5; i++) un = un * 7 + recs[i].a + recs[i].b + recs[i].c;
    put("unaligned ");
    put_hex(un);

    /* recursion */
    put("recursion ");
    put_hex(ackermann_ish(2, 3));
    put_hex(collatz(27));

    /* jump table and function pointers */
    u32 x = 42;
    for (int i = 0; i < 100; i++) x = op_table(x, i % 11);
    for (int i = 0; i < 40; i++) x = fns[i & 3](x, (u32)i + 3);
    put("dispatch ");
    put_hex(x);
    out[out_len++] = '\n';

    sys_write(1, out, out_len);
    return EXIT_CODE;
}

void __start(void) { sys_exit_group(main()); }
