; serial.asm - COM1 as both machines present it: transmit, the line status the guest polls,
; the other registers a driver reads, the divisor latch, and a port nothing answers.
%include "platform.inc"

main:
    print "hello from the guest", 10
    xor eax, eax
    mov dx, COM1_LSR
    in al, dx
    show "lsr", eax                 ; 0x60: transmitter holding and shift registers empty
    xor eax, eax
    mov dx, COM1 + 2
    in al, dx
    show "iir", eax                 ; 0x01: no interrupt pending
    xor eax, eax
    mov dx, COM1 + 6
    in al, dx
    show "msr", eax                 ; modem status: CTS, DSR, DCD
    mov dx, COM1 + 7                ; the scratch register keeps what was written
    mov al, 0xa5
    out dx, al
    xor eax, eax
    in al, dx
    show "scr", eax
    print 10

    mov dx, COM1 + 3                ; set DLAB, write the divisor 3 (38400 baud), read it back
    mov al, 0x83
    out dx, al
    mov dx, COM1
    mov al, 3
    out dx, al
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    xor ebx, ebx                    ; read the latch back (printing must wait: with DLAB set,
    mov dx, COM1                    ; a write to 0x3f8 sets the divisor instead of sending)
    in al, dx
    mov bl, al
    mov dx, COM1 + 1
    in al, dx
    mov bh, al
    mov dx, COM1 + 3                ; 8N1, DLAB off again: 0x3f8 transmits once more
    mov al, 0x03
    out dx, al
    xor eax, eax
    in al, dx
    show "divisor", ebx
    show "lcr", eax
    print 10

    xor eax, eax                    ; no device at COM2's address (not configured): the bus floats
    mov dx, 0x2f8
    in al, dx
    show "unused port", eax
    print 10, "bye", 10
    exit 0x2a
