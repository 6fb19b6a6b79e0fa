; cmp_cli_sti.asm - cli/sti heavy: a kernel loop of short critical sections, each bracketed by
; pv_ops.irq_disable and irq_enable (natively cli and sti; under Xen the mask byte).
workload:
    mov ecx, ROUNDS
    xor eax, eax
.critical:
    call [pv_ops.irq_disable]
    inc dword [counter]
    call [pv_ops.irq_enable]
    loop .critical
    mov eax, [counter]
    ret

section .data
counter: dd 0
section .text
syscall_entry      equ unexpected_fault
divide_error_entry equ unexpected_fault
page_fault_entry   equ unexpected_fault
xen_workload         equ workload
xen_page_fault_entry equ page_fault_entry
workload_title: db "critical sections: "
workload_title_len equ $ - workload_title
