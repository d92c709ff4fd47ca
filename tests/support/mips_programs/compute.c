/* A guest program exercising the compiler's common output: loops, calls, recursion, jump tables, byte and
   half-word memory, multiply/divide, 64-bit products, mmap'ed memory. It prints a report to fd 1, the same
   report's checksum to fd 3, and exits 0. Its output is compared with qemu-mips in tests/mipsvm/test_step.py. */
#include "sys.h"

typedef unsigned int u32;
typedef unsigned long long u64;

void *memset(void *d, int c, unsigned long n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--) *p++ = *q++;
    return d;
}

static char out[2048];
static int out_len;

static void put(const char *s) {
    while (*s) out[out_len++] = *s++;
}

static void put_hex(u32 v) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 28; i >= 0; i -= 4) out[out_len++] = digits[(v >> i) & 15];
    out[out_len++] = ' ';
}

static void put_dec(int v) {
    char tmp[12];
    int n = 0;
    u32 u = v < 0 ? -(u32)v : (u32)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[out_len++] = '-';
    while (n) out[out_len++] = tmp[--n];
    out[out_len++] = ' ';
}

static u32 crc32(const unsigned char *p, int n) {
    u32 crc = 0xFFFFFFFFu;
    for (int i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
    }
    return ~crc;
}

static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

__attribute__((noinline)) static int classify(int x) {
    switch (x & 7) {
    case 0: return x * 3;
    case 1: return x ^ 0x55;
    case 2: return x - 1000;
    case 3: return x << 3;
    case 4: return x >> 2;
    case 5: return ~x;
    case 6: return x / 7;
    default: return x % 11;
    }
}

volatile int vol_divisors[4] = {7, -3, 1000, -1};

int main(void) {
    /* sieve */
    static unsigned char composite[4000];
    int primes = 0;
    u32 last = 0;
    for (int i = 2; i < 4000; i++) {
        if (composite[i]) continue;
        primes++;
        last = (u32)i;
        for (int j = i * i; j < 4000; j += i) composite[j] = 1;
    }
    put("primes ");
    put_dec(primes);
    put_hex(last);

    /* mmap'ed memory, half-words and bytes */
    unsigned short *h = (unsigned short *)sys_mmap(5000);
    for (int i = 0; i < 2500; i++) h[i] = (unsigned short)(i * 40503u);
    put("crc ");
    put_hex(crc32((const unsigned char *)h, 5000));

    /* signed/unsigned division and 64-bit products */
    int acc = 0;
    u64 wide = 1;
    for (int i = 1; i < 200; i++) {
        int d = vol_divisors[i & 3];
        acc += (i * 7919 - 500000) / d + (i * 31 - 3000) % d;
        wide = wide * (u64)(0x9E3779B9u + (u32)i) + (u64)(u32)(acc * acc);
    }
    put("div ");
    put_dec(acc);
    put_hex((u32)(wide >> 32));
    put_hex((u32)wide);

    /* recursion, jump table */
    put("fib ");
    put_dec(fib(14));
    int c = 0;
    for (int i = -50; i < 50; i++) c = c * 3 + classify(i * 37);
    put("switch ");
    put_dec(c);

    /* structure copies, unaligned-looking byte work */
    struct {
        char name[13];
        int v;
    } a = {"rollml-guest", 42}, b;
    b = a;
    b.name[0] = 'R';
    put(b.name);
    out[out_len++] = '\n';

    char in[4];
    long r = sys_read(0, in, 4);
    put("read ");
    put_dec((int)r);
    put("badfd ");
    put_dec((int)sys_write(9, in, 1));
    out[out_len++] = '\n';

    sys_write(1, out, out_len);
    u32 sum = crc32((const unsigned char *)out, out_len);
    sys_write(3, &sum, 4);
    return 0;
}

void __start(void) { sys_exit_group(main()); }
