; trap_density.asm - a loop that executes one privileged instruction every EVERY instructions.
;
; Natively the cli costs what a nop costs. Under trap-and-emulate every cli is a trap into the
; VMM, so the slowdown grows with the density of privileged instructions, 1/EVERY. A lesson
; sets the two constants, vmkit.guests.image("trap_density", EVERY=5, ROUNDS=4000), and measures.
bits 32
org 0x100000

%ifndef EVERY
%define EVERY 10                            ; instructions per round, the cli included (at least 3)
%endif
%ifndef ROUNDS
%define ROUNDS 2000
%endif
%if EVERY < 3
%error "EVERY must be at least 3: the cli, the dec and the jnz of every round"
%elif ROUNDS < 1
%error "ROUNDS must be at least 1"
%endif

start:
    mov ecx, ROUNDS
.round:
    cli                                     ; privileged: a trap under trap-and-emulate
    times EVERY - 3 nop                     ; innocent: they run at full speed everywhere
    dec ecx
    jnz .round
    mov al, 0
    out 0xf4, al                            ; isa-debug-exit: the end
