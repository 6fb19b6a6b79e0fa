; iopl.asm - port I/O from ring 3 is decided by IOPL (and, failing that, the TSS bitmap, which
; here denies every port): with IOPL 0, out, in and rep outsb each raise #GP(0); with IOPL 3 the
; same code prints by itself, and cli/sti are allowed too.
%include "platform.inc"

main:
    gate 13, reporter_13, IGATE
    gate 0x80, reporter_0x80, IGATE3
    print "ring 3 with IOPL 0", 10
    mov dword [user_eflags], 0x0002
    mov eax, iopl0
    mov ebx, [user_eflags]
    jmp enter_ring3

iopl0:
    expect_user .in
    mov al, '!'
    mov dx, COM1
    out dx, al
.in:
    expect_user .outsb
    mov dx, COM1_LSR
    in al, dx
.outsb:
    expect_user .done
    mov esi, message
    mov ecx, message_length
    mov dx, COM1
    rep outsb
.done:
    expect iopl3_kernel
    int 0x80

iopl3_kernel:
    print "ring 3 with IOPL 3", 10
    mov dword [user_eflags], 0x3002
    mov eax, iopl3
    mov ebx, [user_eflags]
    jmp enter_ring3

iopl3:
    print "ring 3 prints by itself", 10
    mov esi, message
    mov ecx, message_length
    mov dx, COM1
    rep outsb
    cli                             ; IOPL 3 lets ring 3 change IF
    pushfd
    sti
    pushfd
    cli
    pop ebx
    pop eax
    show "after cli", eax
    show "after sti", ebx
    xor eax, eax
    in al, 0x21                     ; the PIC's mask register
    show "imr", eax
    print 10
    expect back_in_kernel
    int 0x80

back_in_kernel:
    exit 0x05

reporter 13
reporter 0x80

message: db "rep outsb from ring 3", 10
message_length equ $ - message
