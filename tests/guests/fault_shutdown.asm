; fault_shutdown.asm - a triple fault from a fault, not from int3: with an IDT of limit 0, ud2's #UD
; cannot be delivered (#GP), nor can that #GP (#DF), nor the #DF: the CPU shuts down.
%include "platform.inc"

main:
    print "an empty IDT, then ud2", 10
    lidt [empty_idtr]
    ud2
    print "still running after the triple fault", 10
    exit 0x7a

empty_idtr:
    dw 0
    dd 0
