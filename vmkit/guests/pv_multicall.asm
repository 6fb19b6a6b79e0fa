; pv_multicall.asm - CALLS null hypercalls, made one `int 0x82` each or batched into multicalls.
;
; xen_version(XENVER_version) does almost nothing in the hypervisor, so its cost is the cost of
; entering and leaving Xen. With BATCH 0 the kernel makes CALLS of them one by one; with BATCH n
; it fills an array of n multicall_entry {op, result, args[6]} once and hands it to Xen CALLS / n
; times: one entry into Xen runs the whole batch. A lesson sets the two numbers:
; vmkit.guests.image("pv_multicall", BATCH=8, CALLS=1024).
bits 32
org 0x100000

%ifndef CALLS
%define CALLS 1024                     ; hypercalls in all
%endif
%ifndef BATCH
%define BATCH 0                        ; 0: one int 0x82 each; n: multicalls of n entries
%endif
%if BATCH > 0
%if CALLS % BATCH != 0
%error "CALLS must be a multiple of BATCH: the kernel makes CALLS / BATCH multicalls"
%endif
%endif

__HYPERVISOR_multicall        equ 13
__HYPERVISOR_xen_version      equ 17
__HYPERVISOR_sched_op         equ 29
XENVER_version                equ 0
SCHEDOP_shutdown              equ 2
SHUTDOWN_poweroff             equ 0

start:
%if BATCH == 0
    mov ecx, CALLS
    jecxz done
one_by_one:
    push ecx
    mov ebx, XENVER_version
    mov eax, __HYPERVISOR_xen_version
    int 0x82                           ; one entry into Xen for one hypercall
    pop ecx
    loop one_by_one
%else
    mov ecx, CALLS / BATCH
    jecxz done
batched:
    push ecx
    mov ebx, batch
    mov ecx, BATCH
    mov eax, __HYPERVISOR_multicall
    int 0x82                           ; one entry into Xen for BATCH hypercalls
    pop ecx
    loop batched
%endif
done:
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_reason
    mov eax, __HYPERVISOR_sched_op
    int 0x82

align 4
shutdown_reason: dd SHUTDOWN_poweroff
%if BATCH > 0
batch: times BATCH dd __HYPERVISOR_xen_version, 0, XENVER_version, 0, 0, 0, 0, 0
%endif
