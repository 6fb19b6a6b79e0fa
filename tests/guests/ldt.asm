; ldt.asm - a local descriptor table (SDM vol. 3A, 3.5.1 and 3.4.2; vol. 2A, LLDT and SLDT): an LDT
; descriptor in the GDT, lldt, sldt, a data segment from the LDT (its own base: a store through ES
; lands at that base), a far jump into a code segment from the LDT and back, the LDT's entry
; changed after lldt and used again (the CPU reads it anew at every segment load), and a #GP
; whose error code is the selector of an LDT entry past the LDT's limit.
%include "platform.inc"

LDT_SEL   equ TSS2_SEL              ; the spare GDT slot holds the LDT's descriptor
LDT_DATA  equ 0x04                  ; LDT entry 0, TI = 1, RPL 0
LDT_CODE  equ 0x0c                  ; LDT entry 1
PAST_END  equ 0x14                  ; LDT entry 2: past the LDT's limit of 15
BUFFER    equ 0x180000

main:
    gate 13, reporter_13, IGATE
    mov eax, ldt                    ; the LDT's descriptor: base ldt, limit 15, type 2, present, DPL 0
    mov word [gdt + LDT_SEL], ldt_end - ldt - 1
    mov [gdt + LDT_SEL + 2], ax
    shr eax, 16
    mov [gdt + LDT_SEL + 4], al
    mov byte [gdt + LDT_SEL + 5], 0x82
    mov byte [gdt + LDT_SEL + 6], 0
    mov [gdt + LDT_SEL + 7], ah
    mov ax, LDT_SEL
    lldt ax
    xor eax, eax
    sldt ax
    show "sldt", eax
    print 10

    mov ax, LDT_DATA                ; a data segment based at BUFFER
    mov es, ax
    mov dword [es:0x10], 0x12345678
    show "at buffer+0x10", [BUFFER + 0x10]
    mov eax, es
    show "es", eax
    print 10

    jmp LDT_CODE:.in_ldt_code       ; a code segment from the LDT (flat, DPL 0)
.in_ldt_code:
    mov eax, cs
    mov [ldt_cs], eax
    jmp KCODE:.back
.back:
    show "cs in the ldt's code", [ldt_cs]
    print 10

    mov byte [ldt + 4], (BUFFER + 0x1000) >> 16 & 0xff    ; the data segment moves by 4 KiB ...
    mov word [ldt + 2], (BUFFER + 0x1000) & 0xffff
    mov ax, LDT_DATA                ; ... and the next load of ES finds it there
    mov es, ax
    mov dword [es:0x10], 0x9abcdef0
    show "at buffer+0x1010", [BUFFER + 0x1010]
    print 10

    print "past the limit", 10
    expect .done
    mov ax, PAST_END
    mov fs, ax
.done:
    mov ax, KDATA
    mov es, ax
    exit 0x0f

reporter 13

align 8
ldt:
    dw 0xffff, BUFFER & 0xffff      ; entry 0: data, base BUFFER, limit 64 KiB, DPL 0
    db BUFFER >> 16 & 0xff, 0x92, 0x00, BUFFER >> 24
    dq 0x00cf9a000000ffff           ; entry 1: flat code, DPL 0
ldt_end:
ldt_cs: dd 0
