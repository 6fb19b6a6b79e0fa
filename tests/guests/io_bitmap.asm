; io_bitmap.asm - ring 3 at IOPL 0 with a TSS I/O bitmap that allows exactly COM1's data port
; (0x3f8) and its line status register (0x3fd): the user program polls and prints by itself,
; while every other port, a word access that straddles an allowed and a denied port, and a port
; past the end of the bitmap raise #GP(0).
%include "platform.inc"

main:
    gate 13, reporter_13, IGATE
    gate 0x80, reporter_0x80, IGATE3
    and byte [iomap + COM1 / 8], ~(1 << (COM1 % 8))
    and byte [iomap + COM1_LSR / 8], ~(1 << (COM1_LSR % 8))
    print "ring 3 with a bitmap for 0x3f8 and 0x3fd", 10
    mov dword [user_eflags], 0x0002
    mov eax, user
    mov ebx, [user_eflags]
    jmp enter_ring3

user:
    print "ring 3 prints through the bitmap", 10
    mov esi, message
    mov ecx, message_length
    mov dx, COM1
    rep outsb
    expect_user .word_below
    mov dx, COM1 + 4                ; the modem control register: denied
    mov al, 0
    out dx, al
.word_below:
    expect_user .word_above
    mov dx, COM1 - 1                ; 0x3f7..0x3f8: one denied port is enough
    out dx, ax
.word_above:
    expect_user .debug_exit
    mov dx, COM1                    ; 0x3f8..0x3f9
    in ax, dx
.debug_exit:
    expect_user .past_map
    mov al, 0x11
    out DEBUG_EXIT, al
.past_map:
    expect_user .done
    mov dx, 0x500                   ; beyond the TSS limit
    in al, dx
.done:
    expect back_in_kernel
    int 0x80

back_in_kernel:
    print "done", 10
    exit 0x06

reporter 13
reporter 0x80

message: db "rep outsb through the bitmap", 10
message_length equ $ - message
