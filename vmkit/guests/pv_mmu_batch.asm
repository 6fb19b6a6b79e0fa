; pv_mmu_batch.asm - UPDATES page-table updates, one hypercall each or batched.
;
; The kernel remaps the 64 pages of a region at 0x380000 again and again, each time onto one of two
; frames, page_a or page_b. With BATCH 0 it makes one update_va_mapping per update (the virtual
; address and the new PTE). With BATCH n it builds n requests once, {u64 ptr, u64 val} with the
; machine address of each PTE, and hands them to mmu_update UPDATES / n times: one entry into Xen
; validates n updates. With MULTICALL 1 the n updates go as n update_va_mapping entries of one
; multicall instead, as Linux's lazy MMU mode queues them. The kernel touches none of the region's
; pages until the end, so one TLB flush (mmuext_op TLB_FLUSH_LOCAL) after the last update is enough.
; A lesson sets the numbers: vmkit.guests.image("pv_mmu_batch", BATCH=64, UPDATES=1024).
bits 32
org 0x100000

%ifndef UPDATES
%define UPDATES 1024                   ; page-table updates in all
%endif
%ifndef BATCH
%define BATCH 0                        ; 0: one hypercall per update; n: batches of n updates
%endif
%ifndef MULTICALL
%define MULTICALL 0                    ; 1: a batch is a multicall of update_va_mapping entries
%endif
%if BATCH > 0
%if UPDATES % BATCH != 0
%error "UPDATES must be a multiple of BATCH: the kernel makes UPDATES / BATCH batches"
%endif
%elif MULTICALL
%error "MULTICALL needs BATCH > 0: the number of update_va_mapping entries in each multicall"
%endif

__HYPERVISOR_mmu_update        equ 1
__HYPERVISOR_multicall         equ 13
__HYPERVISOR_update_va_mapping equ 14
__HYPERVISOR_console_io        equ 18
__HYPERVISOR_mmuext_op         equ 26
__HYPERVISOR_sched_op          equ 29
CONSOLEIO_write                equ 0
SCHEDOP_shutdown               equ 2
DOMID_SELF                     equ 0x7ff0
MMUEXT_TLB_FLUSH_LOCAL         equ 6
SI_PT_BASE                     equ 60
SI_MFN_LIST                    equ 68
PTE_FLAGS                      equ 0x27    ; present, writable, user, accessed
REGION                         equ 0x380000
PAGES                          equ 64

%macro hypercall 1
    mov eax, %1
    int 0x82
%endmacro

start:
    mov esp, stack_top
    mov eax, [esi + SI_MFN_LIST]
    mov [mfn_list], eax
    mov eax, [esi + SI_PT_BASE]         ; the L1 table that maps the region
    mov eax, [eax + (REGION >> 22) * 4]
    and eax, 0xfffff000
    add eax, ((REGION >> 12) & 0x3ff) * 4
    mov [region_ptes], eax              ; the machine address of the region's first PTE
    mov eax, page_a
    call make_pte
    mov [pte_a], eax
    mov eax, page_b
    call make_pte
    mov [pte_b], eax

%if BATCH == 0
    xor ecx, ecx                        ; update i: page i % 64 onto page_a or page_b, in turn
.update:
    cmp ecx, UPDATES
    je .flush
    mov ebx, ecx
    and ebx, PAGES - 1
    shl ebx, 12
    add ebx, REGION                     ; the virtual address
    mov eax, ecx
    shr eax, 6
    and eax, 1
    mov eax, [pte_a + eax * 4]          ; the new PTE
    push ecx
    mov ecx, eax
    xor edx, edx
    xor esi, esi                        ; no flush here: one at the end
    hypercall __HYPERVISOR_update_va_mapping
    pop ecx
    test eax, eax
    jnz fail
    inc ecx
    jmp .update
%else
    mov esi, batch_a                    ; two batches built once: every page onto page_a, onto page_b
    mov edx, [pte_a]
    call build_batch
    mov esi, batch_b
    mov edx, [pte_b]
    call build_batch
    xor ecx, ecx
.batch:
    cmp ecx, UPDATES / BATCH
    je .flush
    mov ebx, batch_a
    test ecx, 1
    jz .send
    mov ebx, batch_b
.send:
    push ecx
%if MULTICALL
    mov ecx, BATCH
    hypercall __HYPERVISOR_multicall    ; one entry into Xen, BATCH update_va_mapping
%else
    mov ecx, BATCH
    mov edx, done
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmu_update   ; one entry into Xen, BATCH validated updates
%endif
    pop ecx
    test eax, eax
    jnz fail
    inc ecx
    jmp .batch
%endif
.flush:
    mov ebx, flush
    mov ecx, 1
    xor edx, edx
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmuext_op
    mov edx, region_text                ; what the region's first page shows now
    mov ecx, region_text_len
    call console_write
    mov edx, REGION
    mov ecx, 6
    call console_write
    mov edx, newline
    mov ecx, 1
    call console_write
    mov dword [reason], 0
    jmp shutdown
fail:
    mov dword [reason], 3
shutdown:
    mov ebx, SCHEDOP_shutdown
    mov ecx, reason
    hypercall __HYPERVISOR_sched_op
    jmp $

make_pte:                               ; EAX = a page of ours -> a PTE mapping its machine frame
    shr eax, 12
    mov ebx, [mfn_list]
    mov eax, [ebx + eax * 4]
    shl eax, 12
    or eax, PTE_FLAGS
    ret

%if BATCH > 0
build_batch:                            ; BATCH entries at ESI, page i % 64 onto the PTE in EDX
    xor ecx, ecx
.entry:
    mov eax, ecx
    and eax, PAGES - 1
%if MULTICALL                           ; multicall_entry { op, result, args[6] }
    shl eax, 12
    add eax, REGION
    mov dword [esi], __HYPERVISOR_update_va_mapping
    mov [esi + 8], eax                  ; va
    mov [esi + 12], edx                 ; the new PTE, low word
    mov dword [esi + 16], 0             ; high word
    mov dword [esi + 20], 0             ; flags: no flush
    add esi, 32
%else                                   ; mmu_update { u64 ptr, u64 val }
    shl eax, 2
    add eax, [region_ptes]
    mov [esi], eax                      ; ptr: the PTE's machine address (MMU_NORMAL_PT_UPDATE: low bits 0)
    mov [esi + 8], edx                  ; val
    add esi, 16
%endif
    inc ecx
    cmp ecx, BATCH
    jne .entry
    ret
%endif

console_write:                          ; ECX bytes at EDX
    pushad
    mov ebx, CONSOLEIO_write
    hypercall __HYPERVISOR_console_io
    popad
    ret

region_text: db "the region shows: "
region_text_len equ $ - region_text
newline: db 10
align 4
mfn_list:    dd 0
region_ptes: dd 0
pte_a:       dd 0
pte_b:       dd 0
done:        dd 0
reason:      dd 0
flush:       dd MMUEXT_TLB_FLUSH_LOCAL, 0, 0
align 16
times 1024 db 0
stack_top:
%if BATCH > 0
align 8
%if MULTICALL
batch_a: times BATCH * 32 db 0
batch_b: times BATCH * 32 db 0
%else
batch_a: times BATCH * 16 db 0
batch_b: times BATCH * 16 db 0
%endif
%endif
align 4096
page_a: db "page A"
        times 4096 - 6 db 0
page_b: db "page B"
        times 4096 - 6 db 0
