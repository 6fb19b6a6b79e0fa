; io_bitmap_edge.asm - the CPU reads the I/O bitmap two bytes at a time, so both bytes must lie
; inside the TSS limit (SDM vol. 1, 19.5.2: that is why a bitmap ends with an 0xff byte). With
; the TSS limit ending exactly on the byte that covers 0x3f8..0x3ff, an `out` to 0x3f8 from ring
; 3 raises #GP(0) even though the bit allows it; one byte more and it is allowed.
%include "platform.inc"

IOMAP_BYTE equ iomap - tss + COM1 / 8  ; offset in the TSS of the byte for ports 0x3f8..0x3ff

main:
    gate 13, reporter_13, IGATE
    gate 0x80, reporter_0x80, IGATE3
    mov byte [iomap + COM1 / 8], 0  ; allow all of COM1

    print "limit one past the byte", 10
    mov ebx, TSS_SEL
    mov ecx, IOMAP_BYTE + 1
    call load_tss
    expect limit_on_the_byte
    mov eax, user
    mov ebx, 2
    jmp enter_ring3

limit_on_the_byte:
    print "limit on the byte", 10
    mov ebx, TSS2_SEL
    mov ecx, IOMAP_BYTE
    call load_tss
    expect finish
    mov eax, user
    mov ebx, 2
    jmp enter_ring3

user:                               ; write '*' if the port is allowed, then back to ring 0
    mov dx, COM1
    mov al, '*'
    out dx, al
    int 0x80

load_tss:                           ; descriptor ebx := our TSS with limit ecx, then ltr
    mov eax, tss
    mov [gdt + ebx], cx
    mov [gdt + ebx + 2], ax
    shr eax, 16
    mov [gdt + ebx + 4], al
    mov byte [gdt + ebx + 5], 0x89  ; available 32-bit TSS (ltr marks it busy)
    mov byte [gdt + ebx + 6], 0
    mov [gdt + ebx + 7], ah
    ltr bx
    ret

finish:
    print "done", 10
    exit 0x09

reporter 13
reporter 0x80
