; trap_density.asm - a loop that executes one privileged instruction every EVERY instructions.
;
; Natively the cli costs what a nop costs. Under trap-and-emulate every cli is a trap into the
; VMM, so the slowdown grows with the density of privileged instructions, 1/EVERY. A lesson
; edits the two constants and measures.
bits 32
org 0x100000

EVERY  equ 10                               ; instructions per round, the cli included (at least 3)
ROUNDS equ 2000

start:
    mov ecx, ROUNDS
.round:
    cli                                     ; privileged: a trap under trap-and-emulate
    times EVERY - 3 nop                     ; innocent: they run at full speed everywhere
    dec ecx
    jnz .round
    mov al, 0
    out 0xf4, al                            ; isa-debug-exit: the end
