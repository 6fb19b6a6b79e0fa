; cmp_ptemod.asm - page-table writes (Adams & Agesen's ptemod): a kernel loop whose every round is
; one store to a page-table entry, and nothing else.
;
; Adams & Agesen (ASPLOS 2006), the text beside Figure 4: "Both VMMs use the shadowing technique
; described in Section 2.4 to implement guest paging with trace-based coherency. The traces induce
; significant overheads for PTE writes, causing very high penalties relative to the native single
; cycle store." VMware's software VMM "adaptively discovers the PTE write and translates it into a
; small program that is cheaper than a trap" (391 cycles); their hardware VMM took an exit for
; each store (12,733 cycles).
;
; The kernel identity-maps its 4 MiB with 4 KiB pages and turns paging on. Each round points the
; PTE of a window page at the other of two frames: natively one store. Under a VMM with shadow page
; tables the page table is traced, so the store is a trace fault (trap-and-emulate), or, once
; adaptive binary translation has seen it fault, a call-out. The window is not read in the loop: no
; TLB entry for it, no invlpg, no page fault, just the stores. After the loop one invlpg and one
; read through the window check that the last store took effect (the shadow followed it), and the
; kernel reports the rounds, or 0 if the read found the wrong frame.
;
; On Xen (xen_workload) paging is on from the first instruction, on the page tables the domain
; builder made, and the kernel may not store into them: they are mapped read-only. The round is the
; same xor and a set_pte through pv_mmu_ops (cmp_kernel.asm): make_pte turns the frame into its
; machine frame, and set_pte asks Xen with one mmu_update, which validates the new entry and writes
; it, as Linux's xen_set_pte does (arch/x86/xen/mmu_pv.c). Assembled with LAZY_MMU=1 the loop runs in
; lazy MMU mode instead: set_pte queues each request, and the kernel sends 32 of them in one
; mmu_update (Linux's arch_enter_lazy_mmu_mode, around a loop of PTE writes such as mprotect's).
; After the loop a flush (mmuext_op INVLPG_LOCAL) and the same check through the window.
%ifndef LAZY_MMU
%define LAZY_MMU 0
%endif
PTE_PRESENT   equ 1
PTE_WRITABLE  equ 2
CR0_PG        equ 1 << 31
WINDOW        equ 0x300000              ; the virtual page whose mapping the loop rewrites
FRAME_A       equ 0x301000              ; holds 1
FRAME_B       equ 0x302000              ; holds 2
PAGE_DIR      equ 0x303000
PAGE_TABLE    equ 0x304000              ; maps 0-4 MiB
WINDOW_PTE    equ PAGE_TABLE + (WINDOW >> 12) * 4

workload:
    mov dword [FRAME_A], 1
    mov dword [FRAME_B], 2
    mov edi, PAGE_TABLE                 ; identity: page n -> frame n, present and writable
    mov eax, PTE_PRESENT | PTE_WRITABLE
    mov ecx, 1024
.map:
    stosd
    add eax, 0x1000
    loop .map
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

    mov ecx, ROUNDS
    mov esi, FRAME_A | PTE_PRESENT | PTE_WRITABLE
ptemod_round:
    xor esi, FRAME_A ^ FRAME_B          ; the other frame this time
pte_store:
    mov [WINDOW_PTE], esi               ; the round: one store to a page-table entry
    loop ptemod_round

    invlpg [WINDOW]
ptemod_check:
    mov eax, [WINDOW]                   ; through the PTE the loop wrote last
    and esi, 0xfffff000
    cmp eax, [esi]                      ; the frame it names, through the identity map
    jne .wrong
    mov eax, ROUNDS
    ret
.wrong:
    xor eax, eax
    ret

xen_workload:                           ; on Xen: the builder's page tables, read-only to the kernel
    mov dword [FRAME_A], 1
    mov dword [FRAME_B], 2
    mov edi, WINDOW
    call xen_lookup_pte                 ; EDI: the window's PTE, in the builder's L1 table
    mov ecx, ROUNDS
    mov esi, FRAME_A | PTE_PRESENT | PTE_WRITABLE
%if LAZY_MMU
    call [pv_mmu_ops.lazy_mmu_enter]
%endif
xen_ptemod_round:
    xor esi, FRAME_A ^ FRAME_B          ; the other frame this time
    mov eax, esi
    call [pv_mmu_ops.make_pte]          ; its machine frame
    call [pv_mmu_ops.set_pte]           ; the round: one mmu_update (in lazy mode: one request of one)
    loop xen_ptemod_round
%if LAZY_MMU
    call [pv_mmu_ops.lazy_mmu_leave]
%endif
    mov edi, WINDOW
    call [pv_mmu_ops.flush_tlb_one]
    jmp ptemod_check

syscall_entry        equ unexpected_fault
divide_error_entry   equ unexpected_fault
page_fault_entry     equ unexpected_fault
xen_page_fault_entry equ unexpected_fault
workload_title: db "page-table entry writes: "
workload_title_len equ $ - workload_title
