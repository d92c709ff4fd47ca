/* An integer kernel for the fast executor's tests and benchmark (bench/vm.py): a sieve, a table walk with
   multiplies, byte and half-word traffic, a division per round. ROUNDS scales the run (about 0.6M steps
   per round); the result hash goes to fd 1 and fd 3. */
#include "sys.h"

#ifndef ROUNDS
#define ROUNDS 2
#endif

typedef unsigned int u32;

#define N 32768
static unsigned char composite[N];
static u32 table[2048];
static unsigned short halves[1024];

static u32 mix(u32 h, u32 v) { return (h ^ v) * 0x01000193u; }

static u32 sieve(u32 salt) {
    u32 count = 0;
    for (u32 i = 0; i < N; i++) composite[i] = 0;
    for (u32 i = 2; i < N; i++) {
        if (composite[i]) continue;
        count++;
        for (u32 j = i * i; j < N; j += i) composite[j] = (unsigned char)salt;
    }
    return count;
}

static u32 walk(u32 h) {
    for (u32 i = 0; i < 2048; i++) {
        u32 v = table[(i * 7 + h) & 2047] * 2654435761u + h + i;
        table[i] = v;
        halves[i & 1023] = (unsigned short)(v >> 7);
        h = mix(h, v ^ halves[(i * 3) & 1023]);
    }
    return h;
}

static void put_hex(char *out, u32 v) {
    for (int i = 0; i < 8; i++) out[i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 15];
}

int main(void) {
    u32 h = 2166136261u;
    for (u32 r = 0; r < ROUNDS; r++) {
        h = mix(h, sieve(r + 1));
        h = walk(h);
        h = mix(h, h / (r + 3) + h % (r + 7));
    }
    char out[9];
    put_hex(out, h);
    out[8] = '\n';
    sys_write(1, out, 9);
    sys_write(3, &h, 4);
    return 0;
}

void __start(void) { sys_exit_group(main()); }
