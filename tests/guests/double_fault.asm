; double_fault.asm - faults while the CPU delivers an event (SDM vol. 3, table 6-5). A benign
; event (int3) meeting a not-present gate becomes #NP whose error code names the IDT entry (bit 1
; set: an IDT entry); so do int n past the IDT limit (#GP) and a gate whose selector is a data
; segment (#GP naming the selector). A contributory fault (#GP, #DE) meeting a not-present gate
; is a double fault: #DF with error code 0.
;
; Not here: a benign *exception* (say #UD) meeting a not-present gate. The SDM sets the EXT bit
; in that #NP's error code (the event was external to the program: 6*8+2+1 = 0x33); QEMU's TCG
; never sets EXT for gate faults and pushes 0x32, so the two cannot be compared.
%include "platform.inc"

main:
    gate 8, reporter_8, IGATE
    gate 11, reporter_11, IGATE
    gate 13, reporter_13, IGATE
    gate 3, reporter_3, NOT_PRESENT
    gate 0, reporter_0, NOT_PRESENT
    gate 0x45, reporter_0x45, IGATE
    mov word [idt + 0x45 * 8 + 2], KDATA    ; the gate's selector: a data segment

    print "int3 through a not-present gate", 10
    expect .bad_selector
    int3
.bad_selector:
    print "int 0x45 through a gate that names a data segment", 10
    expect .past_limit
    int 0x45
.past_limit:
    print "int 0x90 past the IDT limit", 10
    lidt [short_idtr]
    expect .gp_df
    int 0x90
.gp_df:
    lidt [idtr]
    print "#GP through a not-present gate", 10
    gate 13, reporter_13, NOT_PRESENT
    expect .de_df
    mov ax, 0x1233
    mov ds, ax
.de_df:
    print "#DE through a not-present gate", 10
    expect .done
    xor ecx, ecx
    div ecx
.done:
    exit 0x07

reporter 0
reporter 3
reporter 8
reporter 11
reporter 13
reporter 0x45

short_idtr:
    dw 0x80 * 8 - 1                 ; vectors 0..0x7f only
    dd idt
