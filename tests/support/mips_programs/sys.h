/* Minimal syscall wrappers for freestanding guest programs of the rollml VM (Linux O32 numbers). */
#ifndef ROLLML_SYS_H
#define ROLLML_SYS_H

#define SYS_exit 4001
#define SYS_read 4003
#define SYS_write 4004
#define SYS_brk 4045
#define SYS_mmap 4090
#define SYS_exit_group 4246

/* Returns v0 if a3 == 0, else -v0 (the errno negated, as the Linux C library does). */
static inline long sys3(long n, long a, long b, long c) {
    register long v0 __asm__("$2") = n;
    register long a0 __asm__("$4") = a;
    register long a1 __asm__("$5") = b;
    register long a2 __asm__("$6") = c;
    register long a3 __asm__("$7");
    __asm__ volatile("syscall"
                     : "+r"(v0), "=r"(a3)
                     : "r"(a0), "r"(a1), "r"(a2)
                     : "memory", "$1", "$3", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$24",
                       "$25", "hi", "lo");
    return a3 ? -v0 : v0;
}

/* mmap takes six arguments; the last two go on the stack at 16($sp) and 20($sp) in O32. */
static inline long sys_mmap(unsigned long len) {
    register long v0 __asm__("$2") = SYS_mmap;
    register long a0 __asm__("$4") = 0;
    register long a1 __asm__("$5") = (long)len;
    register long a2 __asm__("$6") = 3;    /* PROT_READ | PROT_WRITE */
    register long a3 __asm__("$7") = 0x802; /* MAP_PRIVATE | MAP_ANONYMOUS (MIPS values) */
    __asm__ volatile("addiu $sp, $sp, -32\n\t"
                     "li $8, -1\n\t"
                     "sw $8, 16($sp)\n\t"
                     "sw $0, 20($sp)\n\t"
                     "syscall\n\t"
                     "addiu $sp, $sp, 32"
                     : "+r"(v0), "+r"(a3)
                     : "r"(a0), "r"(a1), "r"(a2)
                     : "memory", "$1", "$3", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$24",
                       "$25", "hi", "lo");
    return a3 ? -v0 : v0;
}

static inline long sys_write(int fd, const void *buf, unsigned long n) { return sys3(SYS_write, fd, (long)buf, (long)n); }
static inline long sys_read(int fd, void *buf, unsigned long n) { return sys3(SYS_read, fd, (long)buf, (long)n); }
static inline __attribute__((noreturn)) void sys_exit_group(int code) {
    sys3(SYS_exit_group, code, 0, 0);
    for (;;) {
    }
}

#endif
