; gates.asm - int n through an interrupt gate and a trap gate: the frame the CPU pushes (no
; privilege change: EIP, CS, EFLAGS), the handler's ESP, and IF inside the handler (an interrupt
; gate clears it, a trap gate keeps it). Every PIC line is masked, so IF=1 lets nothing in.
%include "platform.inc"

main:
    gate 0x40, reporter_0x40, IGATE
    gate 0x41, reporter_0x41, TGATE
    gate 0x42, count_and_return, IGATE

    print "interrupt gate, IF=1", 10
    expect .trap_gate
    mov eax, 0x0000abcd
    sti
    int 0x40
.trap_gate:
    cli
    print "trap gate, IF=1", 10
    expect .trap_gate_if0
    sti
    int 0x41
.trap_gate_if0:
    cli
    print "trap gate, IF=0", 10
    expect .iret
    int 0x41

.iret:                              ; a handler that returns: iretd restores EFLAGS (IF=1 again)
    print "iretd returns", 10
    sti
    mov esi, esp
    int 0x42
    int 0x42
    pushfd
    pop ebx
    cli
    show "count", [count]
    show "if in handler", [flags_in_handler]
    show "after", ebx
    sub esi, esp
    show "esp moved", esi
    print 10
    exit 0x01

count_and_return:
    inc dword [count]
    pushfd
    pop dword [flags_in_handler]
    and dword [flags_in_handler], 0x200
    iretd

reporter 0x40
reporter 0x41

align 4
count:            dd 0
flags_in_handler: dd 0
