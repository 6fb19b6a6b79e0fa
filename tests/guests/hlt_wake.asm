; hlt_wake.asm - hlt with IF=1 sleeps until the next interrupt: three times `sti; hlt` with the
; PIT at 100 Hz wakes exactly three times, each time by one tick, and the frame of the tick that
; wakes the CPU points after the hlt. (The tick count is exact here because every wake-up is
; caused by exactly one tick, not because the machines' clocks agree.)
%include "platform.inc"

main:
    gate 0x20, tick, IGATE
    mov al, 0xfe
    call pic_remap
    mov ax, 11932                   ; 100 Hz
    call pit_periodic
    show "hlt at", sleep.hlt
    print 10
    mov ecx, 3
.again:
    call sleep
    loop .again
    show "ticks", [ticks]
    show "woken at", [woken_at]
    print 10
    exit 0x0a

sleep:
    sti                             ; the interrupt shadow: nothing can come in before the hlt
.hlt:
    hlt
    cli
    ret

tick:
    push eax
    mov eax, [esp + 4]              ; the interrupted EIP
    mov [woken_at], eax
    inc dword [ticks]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd

align 4
ticks:    dd 0
woken_at: dd 0
