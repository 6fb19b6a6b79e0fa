; cmp_call_ret.asm - Adams & Agesen's call/ret: a kernel loop that calls a small subroutine.
; Natively a call and a ret cost a few cycles; under binary translation the return address on the
; stack is a guest address, so every ret is looked up in the translation cache.
workload:
    mov ecx, ROUNDS
    xor eax, eax
.call:
    call add_one
    loop .call
    ret

add_one:
    inc eax
    ret

syscall_entry      equ unexpected_fault
divide_error_entry equ unexpected_fault
page_fault_entry   equ unexpected_fault
xen_workload         equ workload
xen_page_fault_entry equ page_fault_entry
workload_title: db "calls: "
workload_title_len equ $ - workload_title
