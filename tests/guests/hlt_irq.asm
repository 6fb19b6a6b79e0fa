; hlt_irq.asm - one timer interrupt wakes a hlt, and the handler ends the run without returning
; (no iretd: a guest any KVM that can inject an interrupt runs). The PIT at 100 Hz drives IRQ0
; through the PIC to vector 0x20; the guest sleeps in `sti; hlt`. The handler prints where the
; interrupt came in (the frame's EIP: right after the hlt), that the gate cleared IF, and what the
; PIC holds in service, then sends EOI and exits.
%include "platform.inc"

main:
    gate 0x20, tick, IGATE
    mov al, 0xfe                    ; only IRQ0
    call pic_remap
    mov ax, 11932                   ; 100 Hz
    call pit_periodic
    show "hlt at", sleep.hlt
    print 10
sleep:
    sti                             ; the interrupt shadow: nothing can come in before the hlt
.hlt:
    hlt
    cli
    print "hlt went on without an interrupt", 10
    exit 0x79

tick:
    show "woken at", [esp]          ; the interrupted EIP: the instruction after the hlt
    pushfd
    pop eax
    and eax, 0x200
    show "if", eax
    mov al, 0x0b                    ; OCW3: read ISR
    out 0x20, al
    xor eax, eax
    in al, 0x20
    show "isr", eax
    mov al, 0x20                    ; EOI
    out 0x20, al
    print 10
    exit 0x0e
