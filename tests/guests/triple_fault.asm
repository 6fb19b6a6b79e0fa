; triple_fault.asm - with an empty IDT, int3 cannot be delivered (#GP), nor can that #GP (#DF),
; nor the #DF: the CPU shuts down. (QEMU resets the machine, and -no-reboot makes that an exit.)
%include "platform.inc"

main:
    print "about to triple fault", 10
    lidt [empty_idtr]
    int3
    print "survived", 10
    exit 0x7a

empty_idtr:
    dw 0
    dd 0
