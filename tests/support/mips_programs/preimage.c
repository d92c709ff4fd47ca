/* Reads local key 1 (a keccak key), then that key's preimage through the oracle into an odd-aligned buffer,
   and writes it to fd 1. Also checks the end of the stream and a misaligned select. Exits 0 on success. */
#include "sys.h"

static unsigned char key[32] __attribute__((aligned(32)));
static unsigned char buf[20000] __attribute__((aligned(32)));

static unsigned long read_full(unsigned char *dst, unsigned long n) {
    unsigned long got = 0;
    while (got < n) {
        long r = sys_read(5, dst + got, n - got);
        if (r <= 0) break;
        got += (unsigned long)r;
    }
    return got;
}

static unsigned long read_length(void) {
    unsigned char len[8];
    if (read_full(len, 8) != 8) sys_exit_group(3);
    unsigned long v = 0;
    for (int i = 4; i < 8; i++) v = (v << 8) | len[i];
    return v;
}

void __start(void) {
    key[0] = 1;
    key[31] = 1;
    if (sys_write(6, key, 32) != 32) sys_exit_group(4);
    if (read_length() != 32) sys_exit_group(5);
    if (read_full(key, 32) != 32) sys_exit_group(6);
    if (sys_write(6, key, 32) != 32) sys_exit_group(7);
    unsigned long n = read_length();
    if (n > sizeof buf - 3) sys_exit_group(8);
    if (read_full(buf + 3, n) != n) sys_exit_group(9);
    if (sys_read(5, buf, 32) != 0) sys_exit_group(10);      /* end of stream */
    if (sys_write(6, key + 1, 32) != -22) sys_exit_group(11); /* misaligned select: EINVAL */
    sys_write(1, buf + 3, n);
    sys_exit_group(0);
}
