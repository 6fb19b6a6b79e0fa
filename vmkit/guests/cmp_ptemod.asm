; cmp_ptemod.asm - a kernel that rewrites its page tables (Adams & Agesen's ptemod and pgfault).
; It identity-maps its 4 MiB with 4 KiB pages and turns paging on. Then, each round, it points
; the PTE of a window page at one of two frames and invalidates the TLB entry with invlpg, and
; once every round the PTE is marked not present first: the read of the window takes a #PF, whose
; handler makes the page present again and returns to retry the read (a true page fault).
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
    xor ebx, ebx
    mov esi, FRAME_A
ptemod_round:
    xor esi, FRAME_A ^ FRAME_B          ; the other frame this time
    mov dword [WINDOW_PTE], esi         ; not present yet: the next read faults
    invlpg [WINDOW]
    add ebx, [WINDOW]                   ; #PF; the handler maps it and the read is retried
    loop ptemod_round
    mov eax, ebx
    ret

page_fault_entry:                       ; the error code, then the frame; iretd retries the read
    push eax
    mov eax, cr2                        ; the address that faulted
    cmp eax, WINDOW
    jne unexpected_fault
    or dword [WINDOW_PTE], PTE_PRESENT | PTE_WRITABLE
    invlpg [WINDOW]
    inc dword [page_faults]
    pop eax
    add esp, 4                          ; pop the error code
    iretd

section .data
page_faults: dd 0
section .text
syscall_entry      equ unexpected_fault
divide_error_entry equ unexpected_fault
workload_title: db "window reads after PTE rewrites: "
workload_title_len equ $ - workload_title
