; cmp_kernel.asm - the kernel every workload of the comparison runs in (vmkit.compare).
;
; One binary for every technique, as vmkit/guests/pv_ops.asm is: at boot it asks CPUID leaf
; 0x40000000 who is underneath and fills its pv_ops table with the native operations (ring 0, the
; vmkit PC's IDT, TSS and COM1) or Xen's (ring 1, the trap table, the mask byte, hypercalls). That
; question only works because vmkit's Xen traps every cpuid of a PV guest and answers the leaf; a
; real PV kernel knows Xen from the entry point Xen starts it at, and asks Xen's cpuid through the
; forced-emulation prefix (see the comment at the top of pv_ops.asm). The
; workload (one of vmkit/guests/cmp_*.asm, appended after this file with ROUNDS defined in front)
; provides `workload`: called in the kernel, it returns its result in EAX, which the kernel
; prints as "<title>: <result>" before it powers off. A workload that leaves for ring 3 ends by
; jumping to `finish` from its system call instead of returning.
;
;   operation      native (ring 0)                    Xen (ring 1)
;   irq_disable    cli                                mask byte := 1 (shared_info)
;   irq_enable     sti                                mask byte := 0 (no events are bound: none pend)
;   console_write  out to COM1, byte by byte          console_io hypercall
;   power_off      isa-debug-exit                     SCHEDOP_shutdown(poweroff)
;   traps          IDT gates, TSS esp0 stack          set_trap_table, stack_switch
;   paging         the workload's own tables, CR3,    on from the first instruction, on the domain
;                  CR0.PG                             builder's tables (start_info's pt_base), read-only
;   make_pte       the PTE is the physical address    of its machine frame (start_info's mfn_list)
;   set_pte        a store into the page table        mmu_update: one request, or a batch in lazy mode
;   flush_tlb_one  invlpg                             mmuext_op(MMUEXT_INVLPG_LOCAL)
;   lazy_mmu       nothing                            enter: queue set_pte's requests; leave: send them
;   #PF's address  CR2                                vcpu_info.arch.cr2 in shared_info
;
; make_pte, set_pte, flush_tlb_one and lazy_mmu's enter and leave are pv_mmu_ops, a table of their
; own like Linux's: it starts out native, and only the Xen boot puts Xen's in its place (Linux's
; xen_start_kernel: `pv_mmu_ops = xen_mmu_ops`), so a native run never executes a line of it. Linux's
; Xen port (arch/x86/xen/mmu_pv.c) sets a PTE with one mmu_update of one MMU_NORMAL_PT_UPDATE request
; (__xen_set_pte: "a hypercall is much cheaper" than having Xen trap and emulate the store); in lazy
; MMU mode it appends the request to the mmu_update it has queued instead (xen_batched_set_pte,
; xen_extend_mmu_update), sent as one hypercall when the queue is full or the mode ends; it flushes a
; TLB entry with mmuext_op INVLPG_LOCAL (xen_flush_tlb_one_user). The #PF handler reads CR2 from
; vcpu_info, as Linux's xen_read_cr2 does (arch/x86/xen/xen-asm.S). The two workloads that page
; (cmp_pgfault, cmp_ptemod) build tables and load CR3 natively, which a ring-1 kernel may not do:
; they give Xen a version of their own, `xen_workload` and `xen_page_fault_entry`, that shares their
; loop and handler and goes through pv_mmu_ops where they write a PTE. Every other workload names
; its own for both (`xen_workload equ workload`).
;
; No timer is armed and every PIC line stays masked: nothing but the workload happens, so every
; count a run reports belongs to the workload and is the same run after run.
bits 32
org 0x100000

KERNEL_CS      equ 0x08                ; the kernel's own GDT, on bare hardware
KERNEL_DS      equ 0x10
USER_CS        equ 0x18 | 3
USER_DS        equ 0x20 | 3
TSS_SEL        equ 0x28
COM1           equ 0x3f8
DEBUG_EXIT     equ 0xf4

FLAT_RING1_CS  equ 0xe019              ; Xen's flat segments
FLAT_RING1_SS  equ 0xe021
FLAT_RING3_CS  equ 0xe02b
FLAT_RING3_DS  equ 0xe033
__HYPERVISOR_set_trap_table   equ 0
__HYPERVISOR_mmu_update       equ 1
__HYPERVISOR_stack_switch     equ 3
__HYPERVISOR_console_io       equ 18
__HYPERVISOR_mmuext_op        equ 26
__HYPERVISOR_sched_op         equ 29
CONSOLEIO_write               equ 0
SCHEDOP_shutdown              equ 2
DOMID_SELF                    equ 0x7ff0
MMU_NORMAL_PT_UPDATE          equ 0    ; an mmu_update request's ptr, low two bits
MMUEXT_INVLPG_LOCAL           equ 7
MACH2PHYS_VIRT_START          equ 0xfc000000   ; Xen's machine-to-physical table, read-only to guests
SI_SHARED_INFO                equ 36
SI_PT_BASE                    equ 60
SI_MFN_LIST                   equ 68
UPCALL_MASK                   equ 1
VCPU_CR2                      equ 8    ; vcpu_info[0].arch.cr2, in shared_info
MMU_BATCH                     equ 32   ; lazy mode's queue, in requests: Linux's is its multicall
                                       ; buffer, 512 bytes of arguments (MC_ARGS), which takes 31
                                       ; requests of 16; 32 here, so that a store's share is 1/32
PG_PRESENT                    equ 1

DE_VECTOR      equ 0                   ; divide error
GP_VECTOR      equ 13
PF_VECTOR      equ 14
SYSCALL_VECTOR equ 0x80

%macro hypercall 1
    mov eax, %1
    int 0x82
%endmacro

; ---------------------------------------------------------------- boot: which platform is this?
start:
    mov [boot_esi], esi
    mov eax, 0x40000000
    cpuid
    cmp ebx, "XenV"
    jne native_setup
    cmp ecx, "MMXe"
    jne native_setup
    cmp edx, "nVMM"
    jne native_setup
    jmp xen_setup

; ---------------------------------------------------------------- the kernel proper: one version
kernel_main:
    call workload
finish:                                 ; EAX: the workload's result
    mov esp, kernel_stack_top
    push eax
    mov edx, workload_title
    mov ecx, workload_title_len
    call [pv_ops.console_write]
    pop eax
    call print_decimal
    mov edx, newline
    mov ecx, 1
    call [pv_ops.console_write]
    call [pv_ops.power_off]

unexpected_fault:                       ; #GP, or a fault the workload did not expect
    mov edx, fault_text
    mov ecx, fault_text_len
    call [pv_ops.console_write]
    call [pv_ops.power_off]

print_decimal:                          ; EAX; every register is kept
    pushad
    mov edi, digits_end
    mov ebx, 10
.next:
    xor edx, edx
    div ebx
    add dl, '0'
    dec edi
    mov [edi], dl
    test eax, eax
    jnz .next
    mov edx, edi
    mov ecx, digits_end
    sub ecx, edi
    call [pv_ops.console_write]
    popad
    ret

; ---------------------------------------------------------------- native: ring 0 on the vmkit PC
native_setup:
    lgdt [gdtr]
    jmp KERNEL_CS:.reload
.reload:
    mov ax, KERNEL_DS
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, kernel_stack_top
    mov eax, tss                        ; the TSS: the kernel stack for traps from ring 3
    mov [gdt_tss + 2], ax
    shr eax, 16
    mov [gdt_tss + 4], al
    mov [gdt_tss + 7], ah
    mov dword [tss + 4], kernel_stack_top
    mov dword [tss + 8], KERNEL_DS
    mov word [tss + 102], 104           ; no I/O bitmap
    mov ax, TSS_SEL
    ltr ax
    mov esi, trap_table                 ; the IDT from the same table Xen is given
.gate:
    movzx ebx, byte [esi]
    mov eax, [esi + 4]
    test eax, eax
    jz .gates_done
    mov [idt + ebx * 8], ax
    mov word [idt + ebx * 8 + 2], KERNEL_CS
    mov cl, [esi + 1]                   ; the DPL: who may use `int n` on it
    shl cl, 5
    or cl, 0x8e                         ; present, 32-bit interrupt gate
    mov [idt + ebx * 8 + 5], cl
    shr eax, 16
    mov [idt + ebx * 8 + 6], ax
    add esi, 8
    jmp .gate
.gates_done:
    lidt [idtr]
    mov esi, native_ops
    call install_ops
    mov dword [user_cs], USER_CS
    mov dword [user_ds], USER_DS
    jmp kernel_main

native_irq_disable:
    cli
    ret

native_irq_enable:
    sti
    ret

native_console_write:                   ; ECX bytes at EDX to COM1 (its transmitter is always ready)
    pushad
    mov esi, edx
    mov dx, COM1
    jecxz .done
.byte:
    lodsb
    out dx, al
    loop .byte
.done:
    popad
    ret

native_power_off:
    mov al, 0
    out DEBUG_EXIT, al
    cli
    hlt

native_make_pte:                        ; EAX = a physical address | flags: the PTE is that
    ret

native_set_pte:                         ; EDI = the PTE, EAX = its new value
    mov [edi], eax
    ret

native_flush_tlb_one:                   ; EDI = a virtual address
    invlpg [edi]
    ret

native_lazy_mmu:                        ; nothing to batch: every store is already done
    ret

; ---------------------------------------------------------------- Xen: ring 1, hypercalls
xen_setup:
    mov esp, kernel_stack_top
    mov esi, [boot_esi]
    mov eax, [esi + SI_SHARED_INFO]
    mov [shared_info], eax
    mov dword [trap_table.page_fault + 4], xen_page_fault_entry    ; it reads CR2 from vcpu_info
    mov ebx, trap_table                 ; the workload's handlers: the same ones the IDT gets
    hypercall __HYPERVISOR_set_trap_table
    mov ebx, FLAT_RING1_SS              ; the stack for traps from ring 3: the TSS's job natively
    mov ecx, kernel_stack_top
    hypercall __HYPERVISOR_stack_switch
    mov esi, xen_ops
    call install_ops
    mov esi, [boot_esi]                 ; paging: Xen's operations for it, and the mfn_list they need
    mov eax, [esi + SI_MFN_LIST]
    mov [mfn_list], eax
    mov esi, xen_mmu_ops
    mov edi, pv_mmu_ops
    mov ecx, PV_MMU_OPS_COUNT
    rep movsd
    mov dword [user_cs], FLAT_RING3_CS
    mov dword [user_ds], FLAT_RING3_DS
    call xen_workload                   ; the workload's version for Xen (the same, but for paging's)
    jmp finish

xen_irq_disable:                        ; the virtual IF is a byte in shared_info: no trap, no hypercall
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 1
    pop eax
    ret

xen_irq_enable:                         ; no event channel is bound, so nothing can be pending
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 0
    pop eax
    ret

xen_console_write:                      ; ECX bytes at EDX
    pushad
    mov ebx, CONSOLEIO_write
    hypercall __HYPERVISOR_console_io
    popad
    ret

xen_power_off:
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_poweroff
    hypercall __HYPERVISOR_sched_op
    jmp $

xen_make_pte:                           ; EAX = a pseudo-physical address | flags -> its machine frame |
    test eax, PG_PRESENT                ; flags; a PTE that is not present is left as it is (Linux's
    jz .done                            ; pte_pfn_to_mfn)
    push ebx
    push ecx
    mov ecx, eax
    and ecx, 0xfff
    shr eax, 12
    mov ebx, [mfn_list]
    mov eax, [ebx + eax * 4]
    shl eax, 12
    or eax, ecx
    pop ecx
    pop ebx
.done:
    ret

xen_set_pte:                            ; EDI = the PTE (where the kernel sees it), EAX = its new value
    pushad
    mov ebx, edi                        ; the request's ptr: the PTE's machine address (virt_to_machine)
    shr ebx, 12
    mov ecx, [mfn_list]
    mov ebx, [ecx + ebx * 4]
    shl ebx, 12
    and edi, 0xfff
    or ebx, edi                         ; | MMU_NORMAL_PT_UPDATE
    cmp byte [lazy_mmu], 0
    jne .queue
    push dword 0                        ; {u64 ptr, u64 val} on the stack, as Linux builds it
    push eax
    push dword 0
    push ebx
    mov ebx, esp
    mov ecx, 1
    xor edx, edx                        ; no count of the requests done
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmu_update
    add esp, 16
    test eax, eax
    jnz xen_refused
    popad
    ret
.queue:                                 ; lazy mode: one more request for the queued mmu_update
    mov ecx, [mmu_queued]
    shl ecx, 4
    mov [mmu_queue + ecx], ebx
    mov [mmu_queue + ecx + 8], eax
    inc dword [mmu_queued]
    cmp dword [mmu_queued], MMU_BATCH
    jb .queued
    call xen_flush_mmu_queue            ; the queue is full: send it now
.queued:
    popad
    ret

xen_flush_mmu_queue:                    ; the queued requests, in one mmu_update
    pushad
    mov ecx, [mmu_queued]
    jecxz .empty
    mov ebx, mmu_queue
    xor edx, edx
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmu_update
    test eax, eax
    jnz xen_refused
    mov dword [mmu_queued], 0
.empty:
    popad
    ret

xen_lazy_mmu_enter:
    mov byte [lazy_mmu], 1
    ret

xen_lazy_mmu_leave:
    call xen_flush_mmu_queue
    mov byte [lazy_mmu], 0
    ret

xen_flush_tlb_one:                      ; EDI = a virtual address
    pushad
    push dword 0                        ; mmuext_op {cmd, arg1, arg2} on the stack
    push edi
    push dword MMUEXT_INVLPG_LOCAL
    mov ebx, esp
    mov ecx, 1
    xor edx, edx
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmuext_op
    add esp, 12
    test eax, eax
    jnz xen_refused
    popad
    ret

xen_lookup_pte:                         ; EDI = a virtual address -> EDI = its PTE, where the kernel
    push eax                            ; sees it: the page directory Xen started the kernel on names
    push ebx                            ; the L1 table's machine frame, Xen's machine-to-physical table
    mov eax, [boot_esi]                 ; its pseudo-physical one, and the kernel sees its memory at
    mov eax, [eax + SI_PT_BASE]         ; virtual = pseudo-physical (mapped read-only: a page table)
    mov ebx, edi
    shr ebx, 22
    mov eax, [eax + ebx * 4]
    shr eax, 12
    mov eax, [MACH2PHYS_VIRT_START + eax * 4]
    shl eax, 12
    shr edi, 12
    and edi, 0x3ff
    lea edi, [eax + edi * 4]
    pop ebx
    pop eax
    ret

xen_refused:                            ; Xen refused a page-table request: nothing here should ask
    mov edx, refused_text               ; for one it refuses
    mov ecx, refused_text_len
    call [pv_ops.console_write]
    call [pv_ops.power_off]

install_ops:                            ; copy the table at ESI into pv_ops
    mov edi, pv_ops
    mov ecx, PV_OPS_COUNT
    rep movsd
    ret

; ---------------------------------------------------------------- data
; On pages of their own, apart from the code, as a linker script puts .data apart from .text: a
; binary translator watches every page it translated code from for writes (self-modifying code).
section .data align=4096
pv_ops:
.irq_disable:   dd 0
.irq_enable:    dd 0
.console_write: dd 0
.power_off:     dd 0
PV_OPS_COUNT equ ($ - pv_ops) / 4
native_ops: dd native_irq_disable, native_irq_enable, native_console_write, native_power_off
xen_ops:    dd xen_irq_disable, xen_irq_enable, xen_console_write, xen_power_off
pv_mmu_ops:                             ; native until the Xen boot copies xen_mmu_ops over it
.make_pte:        dd native_make_pte
.set_pte:         dd native_set_pte
.flush_tlb_one:   dd native_flush_tlb_one
.lazy_mmu_enter:  dd native_lazy_mmu
.lazy_mmu_leave:  dd native_lazy_mmu
PV_MMU_OPS_COUNT equ ($ - pv_mmu_ops) / 4
xen_mmu_ops: dd xen_make_pte, xen_set_pte, xen_flush_tlb_one, xen_lazy_mmu_enter, xen_lazy_mmu_leave

user_cs:     dd 0
user_ds:     dd 0
boot_esi:    dd 0
shared_info: dd 0
mfn_list:    dd 0                       ; Xen: start_info's list, pseudo-physical frame -> machine frame
shutdown_poweroff: dd 0                 ; struct sched_shutdown { SHUTDOWN_poweroff }
trap_table:                             ; Xen's trap_info { vector, flags (DPL), cs, address }
    db DE_VECTOR, 0
    dw FLAT_RING1_CS
    dd divide_error_entry
    db GP_VECTOR, 0
    dw FLAT_RING1_CS
    dd unexpected_fault
.page_fault:
    db PF_VECTOR, 0
    dw FLAT_RING1_CS
    dd page_fault_entry
    db SYSCALL_VECTOR, 3                ; DPL 3, events unmasked: real x86_32 Xen would give this a
                                        ; direct gate, vmkit's Xen bounces every int 0x80 (counted)
    dw FLAT_RING1_CS
    dd syscall_entry
    dd 0, 0
newline:     db 10
fault_text:  db "kernel: unexpected fault", 10
fault_text_len equ $ - fault_text
refused_text: db "kernel: Xen refused a page-table request", 10
refused_text_len equ $ - refused_text
digits:      times 10 db 0
digits_end:

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff               ; 0x08 kernel code
    dq 0x00cf92000000ffff               ; 0x10 kernel data
    dq 0x00cffa000000ffff               ; 0x18 user code
    dq 0x00cff2000000ffff               ; 0x20 user data
gdt_tss:
    dw 103, 0
    db 0, 0x89, 0, 0
gdtr:
    dw $ - gdt - 1
    dd gdt
align 8
idt:
    times 256 dq 0
idtr:
    dw 256 * 8 - 1
    dd idt
tss:
    times 104 db 0

align 16
times 2048 db 0
kernel_stack_top:
times 1024 db 0
user_stack_top:

lazy_mmu:    db 0                       ; Xen: set_pte queues its requests (lazy MMU mode)
align 8
mmu_queued:  dd 0
mmu_queue:   times MMU_BATCH * 16 db 0  ; {u64 ptr, u64 val} each

; ---------------------------------------------------------------- the workload
section .text
