; halt.asm - hlt with interrupts off: the CPU stops for good (only an NMI or a reset would wake
; it). Under hardware assist that is a HLT exit, and the VMM knows the vCPU is idle.
%include "platform.inc"

main:
    print "halting with IF=0", 10
    cli
    hlt
    print "still running after hlt", 10
    exit 0x7b
