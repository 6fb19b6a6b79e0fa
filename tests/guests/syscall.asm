; syscall.asm - syscall and sysret on the vmkit PC, a 32-bit Intel CPU (SDM vol. 2B, SYSCALL and
; SYSRET): outside 64-bit mode both raise #UD, with IA32_EFER.SCE clear or set, in ring 0 and in
; ring 3, and CPUID leaf 80000001H does not report them (EDX bit 11). Each #UD's frame is printed:
; its EIP is the instruction's own (a fault), not the one after it.
%include "platform.inc"

EFER    equ 0xc0000080
EFER_SCE equ 1

main:
    gate 6, reporter_6, IGATE
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb .no_leaf
    mov eax, 0x80000001
    cpuid
    and edx, 1 << 11
    show "cpuid 80000001 edx.syscall", edx
    print 10
.no_leaf:
    print "syscall, EFER.SCE clear", 10
    expect .sce
    syscall
.sce:
    mov ecx, EFER
    rdmsr
    or eax, EFER_SCE
    wrmsr
    print "syscall, EFER.SCE set", 10
    expect .sysret
    mov ecx, .sysret                ; where an AMD CPU's syscall would save its return EIP
    syscall
.sysret:
    print "sysret, EFER.SCE set", 10
    expect .to_user
    mov ecx, .to_user               ; where an AMD CPU's sysret would return
    sysret
.to_user:
    print "to ring 3", 10
    mov dword [user_eflags], 0x2
    mov eax, user
    mov ebx, 0x2
    jmp enter_ring3

user:
    expect .done                    ; the report goes on in ring 0
    syscall
.done:
    exit 0x0c

reporter 6
