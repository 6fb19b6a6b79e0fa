; ring3.asm - into ring 3 with iretd and back with int 0x80: the CPU switches to the stack the
; TSS names (ESP0/SS0) and pushes the user's SS:ESP. Then the privileged instructions ring 3 may
; not run, each a #GP with its error code: cli, hlt, lgdt, mov from cr0, wbinvd, rdmsr, int n
; through a DPL 0 gate (error code: the IDT entry), loading a DPL 0 data segment into DS or SS,
; a far jump to the kernel's code. popf in ring 3 silently keeps IF and IOPL.
%include "platform.inc"

main:
    gate 13, reporter_13, IGATE
    gate 0x41, reporter_0x41, IGATE     ; DPL 0: not for ring 3
    gate 0x80, reporter_0x80, IGATE3    ; DPL 3: the system call gate
    print "to ring 3", 10
    mov dword [user_eflags], 0x2
    mov eax, user
    mov ebx, 0x2
    jmp enter_ring3

user:                               ; ring 3, IOPL 0: it cannot touch a port, so every line of
                                    ; output comes from the ring-0 reporter
    expect_user .privileged
    mov eax, 0x11111111
    int 0x80                        ; the frame: EIP, CS, EFLAGS, ESP, SS of ring 3
.privileged:
    expect_user .hlt
    cli
.hlt:
    expect_user .lgdt
    hlt
.lgdt:
    expect_user .cr0
    lgdt [gdtr]
.cr0:
    expect_user .wbinvd
    mov eax, cr0
.wbinvd:
    expect_user .rdmsr
    wbinvd
.rdmsr:
    expect_user .int41
    mov ecx, 0x10
    rdmsr
.int41:
    expect_user .ds
    int 0x41
.ds:
    expect_user .ss
    mov ax, KDATA
    mov ds, ax
.ss:
    expect_user .farjmp
    mov ax, KDATA
    mov ss, ax
.farjmp:
    expect_user .popf
    jmp KCODE:kernel_again
.popf:
    push dword 0x3202               ; ask for IF=1 and IOPL 3: popf in ring 3 keeps both as they are
    popfd
    expect_user .done
    mov eax, 0x22222222
    int 0x80                        ; the frame's EFLAGS shows what popf did
.done:
    expect back_in_kernel
    int 0x80

kernel_again:
    print "ring 3 reached kernel code by a far jump", 10
    exit 0x7b

back_in_kernel:
    print "back in ring 0", 10
    exit 0x04

reporter 13
reporter 0x41
reporter 0x80
