; self_modifying.asm - a kernel that rewrites one of its own instructions, then runs it again.
;
; It calls `answer` (mov eax, imm32; ret) and prints the digit, stores a new immediate into that
; mov, and calls `answer` again. A real CPU runs the new bytes. A binary translator translated
; `answer` the first time: it must notice the store and throw that translation away, or the
; guest would run stale code.
bits 32
org 0x100000

COM1       equ 0x3f8
DEBUG_EXIT equ 0xf4

start:
    call answer
    call print_digit                        ; prints 3
    mov dword [answer + 1], 7               ; the imm32 of `mov eax, imm32` (opcode B8, then 4 bytes)
    call answer
    call print_digit                        ; prints 7 on a CPU, and under a coherent translator
    mov al, 0
    out DEBUG_EXIT, al
    cli
    hlt                                     ; never reached: the machine is off

answer:
    mov eax, 3
    ret

; print_digit: al as one decimal digit and a newline
print_digit:
    add al, '0'
    mov dx, COM1
    out dx, al
    mov al, 10
    out dx, al
    ret
