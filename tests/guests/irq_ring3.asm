; irq_ring3.asm - a timer interrupt that arrives while ring 3 runs: the CPU switches to the TSS's
; ring-0 stack and pushes SS:ESP, EFLAGS, CS:EIP of ring 3. Which instruction the tick interrupts
; depends on the clock, so the handler records only what cannot differ: CS, SS, ESP of ring 3,
; IF and IOPL in the pushed EFLAGS, and where the CPU put the handler's stack.
%include "platform.inc"

main:
    gate 0x20, tick, IGATE
    gate 0x80, reporter_0x80, IGATE3
    mov al, 0xfe
    call pic_remap
    mov ax, 1193                    ; 1000 Hz
    call pit_periodic
    print "ring 3 spins with IF=1", 10
    expect back_in_kernel
    mov eax, user
    mov ebx, 0x202
    jmp enter_ring3

user:
    cmp dword [ticks], 3
    jb user
    int 0x80

back_in_kernel:
    show "ticks>=3", 1
    show "cs", [seen_cs]
    show "ss", [seen_ss]
    show "user esp", [seen_esp]
    show "eflags&0x3200", [seen_flags]
    show "handler esp", [handler_esp]
    print 10
    exit 0x0b

tick:
    mov [ss:handler_esp], esp
    push eax
    mov eax, [esp + 8]
    mov [ss:seen_cs], eax
    mov eax, [esp + 12]
    and eax, 0x3200
    mov [ss:seen_flags], eax
    mov eax, [esp + 16]
    mov [ss:seen_esp], eax
    mov eax, [esp + 20]
    mov [ss:seen_ss], eax
    inc dword [ss:ticks]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd

reporter 0x80

align 4
ticks:       dd 0
seen_cs:     dd 0
seen_ss:     dd 0
seen_esp:    dd 0
seen_flags:  dd 0
handler_esp: dd 0
