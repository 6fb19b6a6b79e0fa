; cmp_pgfault.asm - true page faults (Adams & Agesen's pgfault): a kernel loop whose every round
; reads a page that its page tables mark not present, and whose #PF handler resumes after the read.
;
; Adams & Agesen (ASPLOS 2006), the text beside Figure 4: "In both VMMs, the software MMU
; interposes on both true and hidden page faults. This test targets the overheads for true page
; faults." Native: 1,093 cycles; their software VMM 3,927; their hardware VMM 11,242, "due mostly to
; the shorter path whereby the software VMM receives control". Their divzero takes a fault the same
; way "but does not invoke the software MMU", to separate the cost of a fault from the cost of the
; virtual MMU: cmp_divzero.asm is that guest here, and this handler is written like its handler.
;
; The kernel identity-maps its 4 MiB with 4 KiB pages, all present but one, the window page, and
; turns paging on. Each round reads the window: #PF, a true fault, since the guest's own tables
; refuse the access. The handler checks what a page-fault handler reads (CR2, the error code, the
; faulting EIP) and resumes at the fixup its table names for that instruction, as Linux's exception
; tables do; the page stays not present, so the round's only memory-management work is the fault
; itself (no PTE store to trace, nothing for a VMM to fill).
;
; On Xen (xen_workload) paging is on from the first instruction, on the page tables the domain
; builder made, which map the window; the kernel may not store into them (they are mapped
; read-only) nor load CR3. It makes the window not present through pv_mmu_ops, the one page-table
; write of the run: set_pte, one mmu_update, and a flush (mmuext_op INVLPG_LOCAL). Then the same
; loop: each read faults, and Xen bounces the #PF to the kernel's handler with the same frame (the
; error code, EIP, CS, EFLAGS), the address in vcpu_info.arch.cr2, since a ring-1 kernel may not
; read CR2 (Linux's xen_read_cr2 reads it there too). xen_page_fault_entry reads it and goes on
; with the native handler's checks.
PTE_PRESENT   equ 1
PTE_WRITABLE  equ 2
CR0_PG        equ 1 << 31
WINDOW        equ 0x300000              ; the page that stays not present
PAGE_DIR      equ 0x303000
PAGE_TABLE    equ 0x304000              ; maps 0-4 MiB
WINDOW_PTE    equ PAGE_TABLE + (WINDOW >> 12) * 4

workload:
    mov edi, PAGE_TABLE                 ; identity: page n -> frame n, present and writable
    mov eax, PTE_PRESENT | PTE_WRITABLE
    mov ecx, 1024
.map:
    stosd
    add eax, 0x1000
    loop .map
    mov dword [WINDOW_PTE], WINDOW      ; ... but the window: its frame, not present
    mov edi, PAGE_DIR
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PAGE_DIR], PAGE_TABLE | PTE_PRESENT | PTE_WRITABLE
    mov eax, PAGE_DIR
    mov cr3, eax
    mov eax, cr0
    or eax, CR0_PG
    mov cr0, eax

pgfault_loop:
    mov ecx, ROUNDS
    xor ebx, ebx
pgfault_round:
window_read:
    mov eax, [WINDOW]                   ; #PF: the page is not present
    jmp pgfault_next                    ; never reached: the handler resumes at pgfault_fixup
pgfault_fixup:
    inc ebx
pgfault_next:
    loop pgfault_round
    mov eax, ebx
    ret

page_fault_entry:                       ; the error code, then the frame
    push eax
    mov eax, cr2                        ; the address that faulted: the window?
page_fault_check:
    cmp eax, WINDOW
    jne unexpected_fault
    cmp dword [esp + 4], 0              ; the error code: a read (W = 0) of a not-present page
    jne unexpected_fault                ; (P = 0) by the kernel (U = 0)
    cmp dword [esp + 8], window_read    ; the faulting EIP: the one the fixup table knows?
    jne unexpected_fault
    mov dword [esp + 8], pgfault_fixup
    pop eax
    add esp, 4                          ; pop the error code
    iretd

xen_workload:                           ; on Xen: the builder's page tables, read-only to the kernel
    mov edi, WINDOW
    call xen_lookup_pte                 ; EDI: the window's PTE, in the builder's L1 table
    mov eax, WINDOW                     ; the window's frame, not present
    call [pv_mmu_ops.make_pte]
    call [pv_mmu_ops.set_pte]           ; one mmu_update
    mov edi, WINDOW
    call [pv_mmu_ops.flush_tlb_one]
    jmp pgfault_loop

xen_page_fault_entry:                   ; Xen's bounce: the same frame; the address in vcpu_info
    push eax
    mov eax, [shared_info]
    mov eax, [eax + VCPU_CR2]
    jmp page_fault_check

syscall_entry      equ unexpected_fault
divide_error_entry equ unexpected_fault
workload_title: db "true page faults fixed up: "
workload_title_len equ $ - workload_title
