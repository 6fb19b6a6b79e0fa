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
    mov eax, [WINDOW]                   ; through the PTE the loop wrote last
    and esi, 0xfffff000
    cmp eax, [esi]                      ; the frame it names, through the identity map
    jne .wrong
    mov eax, ROUNDS
    ret
.wrong:
    xor eax, eax
    ret

syscall_entry      equ unexpected_fault
divide_error_entry equ unexpected_fault
page_fault_entry   equ unexpected_fault
workload_title: db "page-table entry writes: "
workload_title_len equ $ - workload_title
