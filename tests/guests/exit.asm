; exit.asm - isa-debug-exit: a write of v ends the run with exit status (v << 1) | 1, for byte,
; word and dword writes. EXIT_VALUE and EXIT_SIZE are defined by the test.
%include "platform.inc"

main:
    show "exit write of size", EXIT_SIZE
    show "value", EXIT_VALUE
    print 10
    mov eax, EXIT_VALUE
    mov dx, DEBUG_EXIT
%if EXIT_SIZE == 1
    out dx, al
%elif EXIT_SIZE == 2
    out dx, ax
%else
    out dx, eax
%endif
    print "still running after the exit write", 10
    exit 0x7c
