; pv_paging.asm - direct paging: a PV kernel's page tables are its own, read-only to it, and Xen
; validates every change it asks for.
;
; Xen starts the kernel with paging on, on page tables the domain builder made: start_info says where
; the page directory is (pt_base, a virtual address), how many frames the bootstrap tables take
; (nr_pt_frames) and where the phys-to-machine list is (mfn_list: mfn_list[pfn] is the machine frame
; of pseudo-physical frame pfn). Page-table entries hold machine frames, so the kernel translates.
;
;  1. It makes a page directory of its own: copies the builder's, makes its own mapping of the new
;     one read-only, and then, in one mmuext_op, pins it as an L2 table and loads it (NEW_BASEPTR).
;     Pinning it while it is still mapped writable is refused.
;  2. It stores straight into its page directory: a page fault, which Xen bounces to its handler.
;  3. It maps a window page onto another frame with mmu_update (the machine address of the PTE, the
;     new value), then onto a third with update_va_mapping (the virtual address, the new value).
;  4. It asks for what Xen must refuse, and checks that nothing changed: its L1 table mapped writable,
;     a frame it does not own, an entry in Xen's part of the page directory, a 4 MiB page, a data page
;     as page directory, and unpinning a frame that is not pinned.
bits 32
org 0x100000

FLAT_RING1_CS  equ 0xe019
__HYPERVISOR_set_trap_table   equ 0
__HYPERVISOR_mmu_update       equ 1
__HYPERVISOR_console_io       equ 18
__HYPERVISOR_update_va_mapping equ 14
__HYPERVISOR_mmuext_op        equ 26
__HYPERVISOR_sched_op         equ 29
CONSOLEIO_write               equ 0
SCHEDOP_shutdown              equ 2
DOMID_SELF                    equ 0x7ff0
MMU_NORMAL_PT_UPDATE          equ 0    ; ptr's low two bits
MMUEXT_PIN_L2_TABLE           equ 1
MMUEXT_UNPIN_TABLE            equ 4
MMUEXT_NEW_BASEPTR            equ 5
UVMF_INVLPG                   equ 2
HYPERVISOR_VIRT_START         equ 0xfc000000

SI_SHARED_INFO   equ 36                ; start_info
SI_PT_BASE       equ 60
SI_NR_PT_FRAMES  equ 64
SI_MFN_LIST      equ 68
VCPU_CR2         equ 8                 ; shared_info: vcpu_info[0].arch.cr2

PTE_P  equ 1                           ; page-table entry bits
PTE_RW equ 2
PTE_US equ 4
PTE_A  equ 0x20
PTE_PS equ 0x80

WINDOW equ 0x3ff000                    ; a page whose mapping the kernel changes
KERNEL_PFN equ 0x100000 >> 12

%macro print 1+                        ; "text" on the console; every register is kept
    jmp %%over
%%text: db %1
%%over:
    pushad
    mov edx, %%text
    mov ecx, %%over - %%text
    call console_write
    popad
%endmacro

%macro hypercall 1
    mov eax, %1
    int 0x82
%endmacro

%macro refused 1+                      ; print "refused: <text>: <EAX as errno>"
    print "refused: ", %1, ": "
    call print_errno
%endmacro

start:
    mov esp, stack_top
    mov eax, [esi + SI_SHARED_INFO]
    mov [shared_info], eax
    mov eax, [esi + SI_PT_BASE]
    mov [pt_base], eax
    mov eax, [esi + SI_NR_PT_FRAMES]
    mov [nr_pt_frames], eax
    mov eax, [esi + SI_MFN_LIST]
    mov [mfn_list], eax
    mov ebx, trap_table
    hypercall __HYPERVISOR_set_trap_table

    print "start of day: paging on, the page directory at virtual 0x"
    mov eax, [pt_base]
    call print_hex
    print " = machine frame 0x"
    mov eax, [pt_base]
    call pfn_to_mfn
    call print_hex
    print ", "
    mov eax, [nr_pt_frames]
    call print_decimal
    print " page-table frames", 10
    print "the kernel's first page: pseudo-physical frame 0x"
    mov eax, KERNEL_PFN
    call print_hex
    print " = machine frame 0x"
    mov eax, KERNEL_PFN << 12
    call pfn_to_mfn
    call print_hex
    print 10

    ; 1. a page directory of our own: the builder's entries, below Xen's part
    mov esi, [pt_base]
    mov edi, new_pd
    mov ecx, HYPERVISOR_VIRT_START >> 22
    rep movsd
    mov eax, new_pd
    call pfn_to_mfn
    mov [new_pd_mfn], eax
    mov [ops + 4], eax                  ; PIN_L2_TABLE new_pd
    mov [ops + 16], eax                 ; NEW_BASEPTR new_pd
    mov ebx, ops                        ; pin it while our own mapping of it is still writable
    mov ecx, 1
    mov edx, done
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmuext_op
    refused "pin a page directory that is mapped writable"
    mov eax, new_pd                     ; our mapping of it read-only: P, A, U/S, and no R/W
    call pfn_to_mfn
    shl eax, 12
    or eax, PTE_P | PTE_A | PTE_US
    mov ebx, new_pd
    mov ecx, eax
    xor edx, edx
    mov esi, UVMF_INVLPG
    hypercall __HYPERVISOR_update_va_mapping
    test eax, eax
    jnz fail
    mov ebx, ops                        ; now pin it and load it: two ops, one hypercall
    mov ecx, 2
    mov edx, done
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmuext_op
    test eax, eax
    jnz fail
    print "mmuext_op: pinned machine frame 0x"
    mov eax, [new_pd_mfn]
    call print_hex
    print " as an L2 table and loaded it (NEW_BASEPTR): "
    mov eax, [done]
    call print_decimal
    print " ops done", 10

    ; 2. a store straight into the page directory
    mov edi, new_pd + 4 * 2
    mov eax, 0x12345007
store_to_pd:
    mov [edi], eax                      ; two bytes: the fault handler skips them
    cmp dword [new_pd + 4 * 2], 0
    jne fail
    print "the page directory is unchanged", 10

    ; 3. the window page onto page_a with mmu_update, then onto page_b with update_va_mapping
    mov eax, [new_pd + (WINDOW >> 22) * 4]
    and eax, 0xfffff000                 ; the machine address of the L1 table that maps the window
    mov [window_l1], eax
    add eax, ((WINDOW >> 12) & 0x3ff) * 4
    or eax, MMU_NORMAL_PT_UPDATE
    mov [request], eax                  ; ptr: the machine address of the PTE
    mov eax, page_a
    call pfn_to_mfn
    shl eax, 12
    or eax, PTE_P | PTE_RW | PTE_A | PTE_US
    mov [request + 8], eax              ; val: the new PTE
    call mmu_update_one
    test eax, eax
    jnz fail
    print "mmu_update: the window shows: "
    call print_window
    mov eax, page_b
    call pfn_to_mfn
    shl eax, 12
    or eax, PTE_P | PTE_RW | PTE_A | PTE_US
    mov ebx, WINDOW
    mov ecx, eax
    xor edx, edx
    mov esi, UVMF_INVLPG
    hypercall __HYPERVISOR_update_va_mapping
    test eax, eax
    jnz fail
    print "update_va_mapping: the window shows: "
    call print_window

    ; 4. what Xen refuses, each with -EINVAL, and nothing changes
    mov eax, [window_l1]                ; the L1 table itself, writable, at the window
    or eax, PTE_P | PTE_RW | PTE_A
    mov [request + 8], eax
    call mmu_update_one
    refused "map the L1 table writable"
    mov ebx, WINDOW                     ; machine frame 1: the machine-to-physical table, Xen's
    mov ecx, (1 << 12) | PTE_P | PTE_A
    xor edx, edx
    mov esi, UVMF_INVLPG
    hypercall __HYPERVISOR_update_va_mapping
    refused "map a frame that is Xen's"
    mov eax, [new_pd_mfn]               ; the PDE for HYPERVISOR_VIRT_START: Xen's slot
    shl eax, 12
    add eax, (HYPERVISOR_VIRT_START >> 22) * 4
    mov [request], eax
    mov dword [request + 8], 0
    call mmu_update_one
    refused "change Xen's part of the page directory"
    mov eax, [new_pd_mfn]               ; a 4 MiB page at 0x400000
    shl eax, 12
    add eax, 4
    mov [request], eax
    mov dword [request + 8], PTE_P | PTE_RW | PTE_PS
    call mmu_update_one
    refused "map a 4 MiB page"
    mov eax, page_a                     ; a page mapped writable as the page directory
    call pfn_to_mfn
    mov [one_op + 4], eax
    mov dword [one_op], MMUEXT_NEW_BASEPTR
    call mmuext_one
    refused "load a writable data page as page directory"
    mov eax, page_b
    call pfn_to_mfn
    mov [one_op + 4], eax
    mov dword [one_op], MMUEXT_UNPIN_TABLE
    call mmuext_one
    refused "unpin a frame that is not pinned"
    print "after all that, the window still shows: "
    call print_window

    mov dword [shutdown_reason], 0
    jmp shutdown
fail:
    print "a request failed that should have worked", 10
    mov dword [shutdown_reason], 3
shutdown:
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_reason
    hypercall __HYPERVISOR_sched_op
    jmp $

; the page-fault handler: Xen pushed the error code, EIP, CS, EFLAGS; the address is in vcpu_info
page_fault:
    push eax
    print "page fault at 0x"
    mov eax, [shared_info]
    mov eax, [eax + VCPU_CR2]
    call print_hex
    print ", error code "
    mov eax, [esp + 4]
    call print_decimal
    print " (present, write): page tables are read-only", 10
    pop eax
    add esp, 4                          ; the error code
    cmp dword [esp], store_to_pd
    jne fail
    add dword [esp], 2                  ; skip the store
    iretd

mmu_update_one:                         ; mmu_update(request, 1, done, DOMID_SELF): EAX = the result
    mov ebx, request
    mov ecx, 1
    mov edx, done
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmu_update
    ret

mmuext_one:                             ; mmuext_op(one_op, 1, done, DOMID_SELF)
    mov ebx, one_op
    mov ecx, 1
    mov edx, done
    mov esi, DOMID_SELF
    hypercall __HYPERVISOR_mmuext_op
    ret

pfn_to_mfn:                             ; EAX = a virtual (= pseudo-physical) address -> its machine frame
    push ebx
    shr eax, 12
    mov ebx, [mfn_list]
    mov eax, [ebx + eax * 4]
    pop ebx
    ret

print_window:                           ; the text at the start of the window page, and a newline
    pushad
    mov edx, WINDOW
    mov ecx, 6
    call console_write
    print 10
    popad
    ret

print_errno:                            ; EAX: a hypercall's result, as -N
    pushad
    test eax, eax
    jns .plain
    neg eax
    print "-"
.plain:
    call print_decimal
    print 10
    popad
    ret

console_write:                          ; ECX bytes at EDX
    pushad
    mov ebx, CONSOLEIO_write
    hypercall __HYPERVISOR_console_io
    popad
    ret

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
    call console_write
    popad
    ret

print_hex:                              ; EAX in hex, without leading zeros; every register is kept
    pushad
    mov edi, digits_end
.digit:
    mov edx, eax
    and edx, 0xf
    mov dl, [hex_digits + edx]
    dec edi
    mov [edi], dl
    shr eax, 4
    jnz .digit
    mov edx, edi
    mov ecx, digits_end
    sub ecx, edi
    call console_write
    popad
    ret

align 4
trap_table:                             ; trap_info { vector, flags, cs, address }
    db 14, 0
    dw FLAT_RING1_CS
    dd page_fault
    dd 0, 0
ops:                                    ; mmuext_op { cmd, arg1, arg2 } x 2
    dd MMUEXT_PIN_L2_TABLE, 0, 0
    dd MMUEXT_NEW_BASEPTR, 0, 0
one_op: dd 0, 0, 0
request: dq 0, 0                        ; mmu_update { u64 ptr, u64 val }
done:          dd 0
shared_info:   dd 0
pt_base:       dd 0
nr_pt_frames:  dd 0
mfn_list:      dd 0
new_pd_mfn:    dd 0
window_l1:     dd 0
shutdown_reason: dd 0
hex_digits:    db "0123456789abcdef"
digits:        times 10 db 0
digits_end:
align 16
times 1024 db 0
stack_top:

align 4096
new_pd:  times 4096 db 0                ; the page directory the kernel makes
page_a:  db "page A"
         times 4096 - 6 db 0
page_b:  db "page B"
         times 4096 - 6 db 0
