# write(1, msg, 6); exit_group(0)
        .text
        .globl __start
        .set noreorder
__start:
        li      $v0, 4004
        li      $a0, 1
        lui     $a1, %hi(msg)
        addiu   $a1, $a1, %lo(msg)
        li      $a2, 6
        syscall
        li      $v0, 4246
        li      $a0, 0
        syscall
        .data
msg:    .ascii  "hello\n"
