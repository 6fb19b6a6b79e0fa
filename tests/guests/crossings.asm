; crossings.asm - every way across the rings, and the exceptions on the way (SDM vol. 2 and 3A):
; int3 and into from ring 3 through DPL 3 gates (traps: the frame's EIP is after them), bound
; from ring 3 through a DPL 0 gate (a fault: exceptions ignore the gate's DPL), a far call
; through a call gate from ring 3 to ring 0 that copies two parameters onto the new stack (SDM
; vol. 3A, 5.8.5) and `retf 8` back, sysenter into ring 0 with the IA32_SYSENTER_CS/ESP/EIP MSRs
; and sysexit out (SDM vol. 2B, SYSENTER, SYSEXIT), and a #NP whose error code is the selector of
; the data segment that is not present.
%include "platform.inc"

CALL_GATE      equ TSS2_SEL         ; the spare GDT slot holds the call gate
SYSENTER_STACK equ 0x1d0000

main:
    gate 3, reporter_3, IGATE3
    gate 4, reporter_4, IGATE3
    gate 5, reporter_5, IGATE
    gate 11, reporter_11, IGATE
    gate 13, reporter_13, IGATE

    print "#NP", 10                 ; ring 0: a data segment with P = 0
    expect .np_done
    mov ax, NP_DATA
    mov ds, ax
.np_done:
    mov eax, callee                 ; the call gate: callee in KCODE, DPL 3, two parameters
    mov [gdt + CALL_GATE], ax
    shr eax, 16
    mov [gdt + CALL_GATE + 6], ax
    mov word [gdt + CALL_GATE + 2], KCODE
    mov byte [gdt + CALL_GATE + 4], 2
    mov byte [gdt + CALL_GATE + 5], 0xec
    mov ecx, 0x174                  ; IA32_SYSENTER_CS, _ESP, _EIP
    mov eax, KCODE
    xor edx, edx
    wrmsr
    mov ecx, 0x175
    mov eax, SYSENTER_STACK
    wrmsr
    mov ecx, 0x176
    mov eax, sysenter_entry
    wrmsr
    print "to ring 3", 10
    mov dword [user_eflags], 0x2
    mov eax, user
    mov ebx, 0x2
    jmp enter_ring3

user:                               ; ring 3: everything it sees goes to memory for ring 0 to print
    expect_user .into
    int3
.into:
    expect_user .bound
    mov al, 0x7f
    add al, 1                       ; OF = 1
    into
.bound:
    expect_user .call
    mov eax, 5
    bound eax, [bounds]
.call:
    mov [u_esp], esp
    push dword 0x11111111
    push dword 0x22222222
    call CALL_GATE | 3:0            ; the offset is ignored: the gate names the entry point
    mov [u_esp_after_call], esp
    mov [u_cs_after_call], cs
    mov ecx, esp                    ; sysexit's ESP and EIP
    mov edx, .after_sysexit
    mov ebx, 0x5a5a5a5a
    sysenter
    mov dword [u_fell_through], 1   ; sysenter does not return here
.after_sysexit:
    mov [u_esp_after_sysexit], esp
    mov [u_cs_after_sysexit], cs
    mov [u_ss_after_sysexit], ss
    mov [u_eflags_after_sysexit], dword 0
    pushfd
    pop dword [u_eflags_after_sysexit]
    expect report_ring3             ; the next report goes on in ring 0
    int 0x80                        ; no DPL 3 gate: #GP, and ring 0 prints what ring 3 saw

callee:                             ; ring 0 through the call gate, on the TSS's ring-0 stack
    mov [k_callee_cs], cs
    mov [k_callee_ss], ss
    mov [k_callee_esp], esp
    mov eax, [esp]
    mov [k_frame + 0], eax          ; EIP
    mov eax, [esp + 4]
    mov [k_frame + 4], eax          ; CS
    mov eax, [esp + 8]
    mov [k_frame + 8], eax          ; the parameters, in the caller's order
    mov eax, [esp + 12]
    mov [k_frame + 12], eax
    mov eax, [esp + 16]
    mov [k_frame + 16], eax         ; ESP
    mov eax, [esp + 20]
    mov [k_frame + 20], eax         ; SS
    retf 8                          ; back to ring 3, the parameters dropped from both stacks

sysenter_entry:                     ; ring 0 from sysenter: no frame, IF = 0
    mov [k_sys_cs], cs
    mov [k_sys_ss], ss
    mov [k_sys_esp], esp
    mov [k_sys_ebx], ebx
    pushfd
    pop dword [k_sys_eflags]
    sysexit

reporter 3
reporter 4
reporter 5
reporter 11
reporter 13

report_ring3:
    show "call: esp", [u_esp]
    show "after", [u_esp_after_call]
    show "cs", [u_cs_after_call]
    print 10
    show "callee cs", [k_callee_cs]
    show "ss", [k_callee_ss]
    show "esp", [k_callee_esp]
    print 10, "frame:"
    mov ecx, 0
.frame:
    mov al, ' '
    call putc
    mov eax, [k_frame + ecx * 4]
    call hex32
    inc ecx
    cmp ecx, 6
    jb .frame
    print 10
    show "sysenter cs", [k_sys_cs]
    show "ss", [k_sys_ss]
    show "esp", [k_sys_esp]
    show "ebx", [k_sys_ebx]
    show "fl", [k_sys_eflags]
    print 10
    show "sysexit cs", [u_cs_after_sysexit]
    show "ss", [u_ss_after_sysexit]
    show "esp", [u_esp_after_sysexit]
    show "fl", [u_eflags_after_sysexit]
    show "fell through", [u_fell_through]
    print 10
    exit 0x0e

align 4
bounds:                dd 0, 3
u_esp:                 dd 0
u_esp_after_call:      dd 0
u_cs_after_call:       dd 0
u_esp_after_sysexit:   dd 0
u_cs_after_sysexit:    dd 0
u_ss_after_sysexit:    dd 0
u_eflags_after_sysexit: dd 0
u_fell_through:        dd 0
k_callee_cs:           dd 0
k_callee_ss:           dd 0
k_callee_esp:          dd 0
k_frame:               times 6 dd 0
k_sys_cs:              dd 0
k_sys_ss:              dd 0
k_sys_esp:             dd 0
k_sys_ebx:             dd 0
k_sys_eflags:          dd 0
