; popf_critical.asm - a critical section that relies on popf to keep interrupts out.
;
; The kernel counts in `shared`; so does its timer handler. Each round of the main loop turns
; interrupts off by restoring a saved flags word with popf (IF clear), updates `shared` slowly
; (read, compute, write back), and turns interrupts on again with sti. Natively no tick can land
; between the read and the write, so no update is lost. Under trap-and-emulate popf cannot change
; the virtual IF: the section is open to the timer, and its handler's increments get overwritten.
; ROUNDS, WORK and PIT_DIVISOR can be set: vmkit.guests.image("popf_critical", WORK=5).
bits 32
org 0x100000

COM1       equ 0x3f8
DEBUG_EXIT equ 0xf4
FLAGS_IF_OFF equ 0x2            ; a flags word saved while interrupts were off
%ifndef ROUNDS
%define ROUNDS 2000             ; critical sections
%endif
%ifndef WORK
%define WORK 60                 ; loops of computing inside each section (at least 1)
%endif
%ifndef PIT_DIVISOR
%define PIT_DIVISOR 1193        ; 1193182 Hz / 1193: a tick every millisecond (2 to 65535)
%endif

start:
    lidt [idt_descriptor]
    mov eax, timer_handler      ; IDT entry 0x20: the timer's interrupt gate
    mov [idt + 0x20 * 8], ax
    mov word [idt + 0x20 * 8 + 2], 0x08
    mov word [idt + 0x20 * 8 + 4], 0x8E00
    shr eax, 16
    mov [idt + 0x20 * 8 + 6], ax
    mov al, 0x11                ; PIC: IRQ0 -> vector 0x20, only IRQ0 unmasked
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 4
    out 0x21, al
    mov al, 1
    out 0x21, al
    mov al, 0xFE
    out 0x21, al
    mov al, 0x34                ; PIT channel 0, rate generator (1000 Hz by default)
    out 0x43, al
    mov ax, PIT_DIVISOR
    out 0x40, al
    mov al, ah
    out 0x40, al
    sti

    mov ecx, ROUNDS
round:
    push FLAGS_IF_OFF
    popf                        ; interrupts off (natively)
    mov eax, [shared]           ; the critical section: read ...
    mov ebx, WORK
.work:
    dec ebx                     ; ... compute for a while ...
    jnz .work
    inc eax
    mov [shared], eax           ; ... write back
    sti                         ; interrupts on
    loop round

    cli
    mov esi, msg_shared
    mov eax, [shared]
    call print_line
    mov esi, msg_expected
    mov eax, [ticks]
    add eax, ROUNDS
    call print_line
    mov esi, msg_lost
    mov eax, [ticks]
    add eax, ROUNDS
    sub eax, [shared]
    call print_line
    mov al, 0
    out DEBUG_EXIT, al

timer_handler:
    inc dword [shared]          ; the handler's update of the same counter
    inc dword [ticks]
    push eax
    mov al, 0x20
    out 0x20, al                ; end of interrupt
    pop eax
    iretd

; print_line: the text at esi, then eax in decimal, then a newline
print_line:
    mov dx, COM1
.text:
    mov bl, [esi]
    inc esi
    test bl, bl
    jz .number
    xchg al, bl
    out dx, al
    xchg al, bl
    jmp .text
.number:
    mov ebx, 10
    xor ecx, ecx
.divide:
    xor edx, edx
    div ebx
    push edx
    inc ecx
    test eax, eax
    jnz .divide
    mov dx, COM1
.digits:
    pop eax
    add al, '0'
    out dx, al
    loop .digits
    mov al, 10
    out dx, al
    ret

msg_shared:   db "shared counter: ", 0
msg_expected: db "expected:       ", 0
msg_lost:     db "lost updates:   ", 0
shared: dd 0
ticks:  dd 0
align 8
idt: times 256 dq 0
idt_descriptor:
    dw 256 * 8 - 1
    dd idt
