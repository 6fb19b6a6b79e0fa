; cmp_divzero.asm - exception heavy (Adams & Agesen's divzero): a kernel loop of divisions by
; zero. Each raises #DE; the handler finds the faulting instruction in its fixup table (as Linux's
; exception tables do) and resumes at the fixup, which counts the fault.
workload:
    mov ecx, ROUNDS
    xor ebx, ebx
divide_round:
    mov eax, 1
    xor edx, edx
    xor esi, esi
divide:
    div esi                             ; #DE: the divisor is zero
    jmp divide_next                     ; never reached: the handler resumes at divide_fixup
divide_fixup:
    inc ebx
divide_next:
    loop divide_round
    mov eax, ebx
    ret

divide_error_entry:                     ; #DE, from ring 0 (ring 1 under Xen): no error code
    cmp dword [esp], divide             ; the faulting EIP: is it the one the fixup table knows?
    jne unexpected_fault
    mov dword [esp], divide_fixup
    iretd

syscall_entry    equ unexpected_fault
page_fault_entry equ unexpected_fault
xen_workload         equ workload
xen_page_fault_entry equ page_fault_entry
workload_title: db "divide errors fixed up: "
workload_title_len equ $ - workload_title
