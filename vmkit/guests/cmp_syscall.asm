; cmp_syscall.asm - system-call heavy (Adams & Agesen's syscall): a ring-3 loop of int 0x80 round
; trips. Each system call enters the kernel through its gate (natively the IDT and the TSS stack;
; under Xen the trap table and the stack_switch stack) and returns with iretd.
SYS_GETPID equ 1
SYS_EXIT   equ 2

workload:                               ; into ring 3, with interrupts on
    push dword [user_ds]                ; SS
    push dword user_stack_top           ; ESP
    push dword 0x202                    ; EFLAGS
    push dword [user_cs]                ; CS
    push dword user_program             ; EIP
    mov eax, [user_ds]
    mov ds, ax
    mov es, ax
    iretd

user_program:                           ; ring 3: ROUNDS system calls, then exit with their sum
    mov esi, ROUNDS
    xor edi, edi
.call:
    mov eax, SYS_GETPID
    int 0x80
    add edi, eax
    dec esi
    jnz .call
    mov eax, SYS_EXIT
    mov ebx, edi
    int 0x80
    jmp $

syscall_entry:                          ; from ring 3
    cmp eax, SYS_EXIT
    je .exit
    mov eax, 1                          ; getpid: this is process 1
    iretd
.exit:
    mov eax, ebx
    jmp finish

divide_error_entry equ unexpected_fault
page_fault_entry   equ unexpected_fault
xen_workload         equ workload
xen_page_fault_entry equ page_fault_entry
workload_title: db "system calls: "
workload_title_len equ $ - workload_title
