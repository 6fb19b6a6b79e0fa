; timer.asm - the PIT drives IRQ0 through the PIC to vector 0x20 (1000 Hz). The handler counts
; ticks and sends EOI. Only what both machines agree on is printed: QEMU's PIT follows the wall
; clock while vmkit's follows the instruction count, so the number of ticks during a given loop
; differs; that ticks arrive, that EOI lets the next one in, what the PIC's registers say, and
; IF inside the handler do not.
;
; Then without EOI: after one tick the line stays in service (ISR bit 0), the next tick waits in
; IRR and is not delivered; after EOI the CPU takes it as soon as IF allows: the instruction after
; sti. (EOI is sent with IF=0 on purpose: how soon a CPU notices the PIC's line after an `out` is
; not architectural; QEMU only looks at the end of a translated block.)
%include "platform.inc"

main:
    gate 0x20, tick_with_eoi, IGATE
    mov al, 0xfe                    ; only IRQ0
    call pic_remap
    mov ax, 1193                    ; 1000 Hz
    call pit_periodic

    print "waiting for 5 ticks", 10
    sti
    mov ecx, 0x40000000             ; a bound, so a silent timer ends the run instead of hanging
.wait:
    cmp dword [ticks], 5
    jae .ticked
    loop .wait
    cli
    print "the timer never ticked 5 times", 10
    exit 0x79
.ticked:
    cli
    print "5 ticks arrived", 10
    show "if in handler", [if_in_handler]
    mov al, 0x0b                    ; OCW3: read ISR
    out 0x20, al
    xor eax, eax
    in al, 0x20
    show "isr", eax
    xor eax, eax
    in al, 0x21
    show "imr", eax
    print 10

    print "without EOI", 10
    gate 0x20, tick_without_eoi, IGATE
    mov dword [ticks], 0
    sti
.first:
    cmp dword [ticks], 1
    jb .first
    mov al, 0x0a                    ; OCW3: read IRR from now on
    out 0x20, al
.pending:                           ; the next tick is requested but stays blocked
    in al, 0x20
    test al, 1
    jz .pending
    mov ebx, [ticks]
    mov al, 0x0b
    out 0x20, al
    xor eax, eax
    in al, 0x20
    cli
    show "ticks", ebx
    show "isr", eax
    print 10
    mov al, 0x20                    ; EOI with IF=0: the waiting tick is now offered to the CPU,
    out 0x20, al
    sti                             ; which takes it right after the instruction behind sti
    nop
    cli
    show "ticks after EOI", [ticks]
    print 10
    exit 0x08

tick_with_eoi:
    push eax
    pushfd
    pop eax
    and eax, 0x200
    mov [if_in_handler], eax
    inc dword [ticks]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd

tick_without_eoi:
    inc dword [ticks]
    iretd

align 4
ticks:         dd 0
if_in_handler: dd 0xffffffff
