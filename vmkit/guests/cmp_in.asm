; cmp_in.asm - port-I/O heavy (Adams & Agesen's in): a kernel loop reading a device register, the
; line status register of COM1, with `in`, counting the times it says the transmitter is empty.
COM1_LSR equ 0x3fd
LSR_THRE equ 0x20                       ; transmitter holding register empty

workload:
    mov ecx, ROUNDS
    xor ebx, ebx
    mov dx, COM1_LSR
.read:
    in al, dx
    test al, LSR_THRE
    jz .busy
    inc ebx
.busy:
    loop .read
    mov eax, ebx
    ret

syscall_entry      equ unexpected_fault
divide_error_entry equ unexpected_fault
page_fault_entry   equ unexpected_fault
xen_workload         equ workload
xen_page_fault_entry equ page_fault_entry
workload_title: db "status reads: "
workload_title_len equ $ - workload_title
