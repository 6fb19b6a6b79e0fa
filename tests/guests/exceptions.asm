; exceptions.asm - the CPU's own exceptions in ring 0: #DE (div by zero), #BP (int3), #OF (into),
; #BR (bound), #UD (ud2), and `int 0x0d`, which reaches the #GP handler without an error code.
; Faults push the address of the faulting instruction, traps the address after it.
%include "platform.inc"

main:
    gate 0, reporter_0, IGATE
    gate 3, reporter_3, IGATE
    gate 4, reporter_4, IGATE
    gate 5, reporter_5, IGATE
    gate 6, reporter_6, IGATE
    gate 13, reporter_13, IGATE

    show "#DE at", .div
    print 10
    expect .int3
    mov eax, 0x1234
    xor edx, edx
    xor ecx, ecx
.div:
    div ecx
.int3:
    show "#BP at", .bp
    print 10
    expect .into
.bp:
    int3
.into:
    show "#OF at", .of
    print 10
    expect .bound
    mov al, 0x7f
    add al, 1                       ; OF = 1
.of:
    into
.bound:
    show "#BR at", .br
    print 10
    expect .ud2
    mov eax, 5
.br:
    bound eax, [bounds]             ; 5 is outside [0, 3]
.ud2:
    show "#UD at", .ud
    print 10
    expect .int13
.ud:
    ud2
.int13:
    show "int 0x0d at", .soft
    print 10
    expect .done
.soft:
    int 0x0d
.done:
    exit 0x02

reporter 0
reporter 3
reporter 4
reporter 5
reporter 6
reporter 13

align 4
bounds: dd 0, 3
