; call_ret.asm - a kernel loop that calls a small subroutine: what a call and its return cost.
;
; Natively call and ret are a few cycles each. Under binary translation the return address on
; the stack is a guest address, while the CPU runs translated code at other addresses, so every
; ret is looked up: the translated ret jumps through the translator's lookup code. Compare the
; instructions the CPU executes per round natively and under binary translation.
bits 32
org 0x100000

ROUNDS equ 1000

start:
    mov ecx, ROUNDS
.round:
    call add_one                            ; a direct call: its target is known when translated
    loop .round
    mov al, 0
    out 0xf4, al                            ; isa-debug-exit: the end
    cli
    hlt                                     ; never reached: the machine is off

add_one:
    inc eax
    ret                                     ; an indirect jump: its target is on the stack
