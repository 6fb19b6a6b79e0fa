; irq_window.asm - a tick that comes while interrupts are masked waits for them: the guest spins
; with IF=0 until the PIC's IRR shows IRQ0 requested, then `sti; nop`. The CPU takes the interrupt
; after the instruction in sti's shadow, not before: the handler's frame points at the instruction
; after the nop. The handler ends the run without returning (no iretd).
%include "platform.inc"

main:
    gate 0x20, tick, IGATE
    mov al, 0xfe                    ; only IRQ0
    call pic_remap
    mov ax, 1193                    ; 1000 Hz
    call pit_periodic
    show "window at", window
    print 10
    mov al, 0x0a                    ; OCW3: read IRR from now on
    out 0x20, al
    mov ecx, 0x40000000             ; a bound, so a silent timer ends the run instead of hanging
.poll:                              ; IF=0: the tick is requested but cannot come in
    in al, 0x20
    test al, 1
    jnz .requested
    loop .poll
    print "the timer never ticked", 10
    exit 0x79
.requested:
    sti
    nop                             ; in sti's shadow: the interrupt waits one more instruction
window:
    cli
    print "the interrupt never came", 10
    exit 0x78

tick:
    show "taken at", [esp]          ; the interrupted EIP: `window`
    mov al, 0x20                    ; EOI
    out 0x20, al
    print 10
    exit 0x0f
