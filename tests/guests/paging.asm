; paging.asm - 32-bit paging as the CPU does it (Intel SDM vol. 3, chapter 4): page faults with
; CR2 and the error code's P, W and U bits (a page not present, a write to a read-only page with
; CR0.WP, a user access to a supervisor page, a user write to a read-only user page); a remap with
; invlpg; a 4-MByte page with CR4.PSE; accessed and dirty bits read back from the entries; the CPU's
; own accesses through the page tables (the ring-0 stack the TSS names, mapped elsewhere than
; identity; an IDT whose base is a mapped alias); a #PF while delivering a #PF, which is a #DF.
%include "platform.inc"

PD             equ 0x380000        ; the page directory (physical = linear: identity-mapped)
PT             equ 0x381000        ; the page table for the first 4 MiB
PG_P           equ 1
PG_RW          equ 2
PG_US          equ 4
ALIAS_STACK    equ 0x3f0000        ; ESP0: its page (0x3ef000) maps physical 0x330000
ODD_IDT        equ 0x304fa0        ; an IDT base: entry 8 on page 0x304000, entry 14 on 0x305000

main:
    gate 14, pf_handler, IGATE
    gate 0x80, reporter_0x80, IGATE3
    mov edi, PT                     ; identity-map 4 MiB with user, writable 4 KiB pages
    mov eax, PG_P | PG_RW | PG_US
    mov ecx, 1024
.fill:
    stosd
    add eax, 0x1000
    loop .fill
    mov edi, PD
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PD], PT | PG_P | PG_RW | PG_US
    mov dword [PD + 2 * 4], 0x000000 | 0x80 | PG_P | PG_RW   ; 0x800000: a 4 MiB page onto physical 0
    mov dword [PT + 0x300 * 4], 0                           ; 0x300000: not present
    mov dword [PT + 0x301 * 4], 0x301000 | PG_P             ; supervisor, read-only
    mov dword [PT + 0x302 * 4], 0x310000 | PG_P | PG_RW     ; the window, onto 0x310000
    mov dword [PT + 0x303 * 4], 0x303000 | PG_P | PG_RW     ; for the A and D bits
    mov dword [PT + 0x307 * 4], 0x307000 | PG_P | PG_US     ; user, read-only
    mov dword [PT + 0x3ef * 4], 0x330000 | PG_P | PG_RW     ; the ring-0 stack, not identity
    mov dword [0x310000], 0x41414141
    mov dword [0x311000], 0x42424242
    mov dword [tss + 4], ALIAS_STACK
    mov eax, PD
    mov cr3, eax
    mov eax, cr4
    or eax, 0x10                    ; CR4.PSE: PDEs with PS = 1 map 4 MiB
    mov cr4, eax
    mov eax, cr0
    or eax, 0x80010000              ; PG and WP
    mov cr0, eax
    print "paging on", 10

    expect .w_np
    mov eax, [0x300123]             ; not present, read: error 0
.w_np:
    expect .w_ro
    mov dword [0x300456], 1         ; not present, write: error 2
.w_ro:
    expect .remap
    mov dword [0x301789], 1         ; supervisor write to a read-only page with WP = 1: error 3
.remap:
    show "window", [0x302000]
    mov dword [PT + 0x302 * 4], 0x311000 | PG_P | PG_RW
    invlpg [0x302000]
    show "remapped", [0x302000]
    show "big", [0x800000 + 0x310000]
    mov dword [0x800000 + 0x312000], 7
    show "pde2", [PD + 2 * 4]
    show "pte", [PT + 0x303 * 4]
    mov eax, [0x303000]
    show "read", [PT + 0x303 * 4]
    mov dword [0x303004], 5
    show "written", [PT + 0x303 * 4]
    print 10
    mov eax, cr0
    and eax, ~0x10000               ; WP = 0: ring 0 may write a read-only page
    mov cr0, eax
    mov dword [0x301000], 0x600d
    show "wp0", [0x301000]
    show "ro", [PT + 0x301 * 4]
    print 10

    show "stack", [PT + 0x3ef * 4]
    print 10
    mov dword [user_eflags], 0x2
    mov eax, user
    mov ebx, 0x2
    jmp enter_ring3

user:
    expect_user .uw
    mov eax, [0x301000]             ; user read of a supervisor page: error 5
.uw:
    expect_user .uro
    mov dword [0x301000], 1         ; user write to a supervisor page: error 7
.uro:
    expect_user .ok
    mov dword [0x307000], 1         ; user write to a read-only user page: error 7
.ok:
    mov eax, [0x307000]             ; a user read of it is fine
    expect_user .back
    int 0x80                        ; the frame goes to ESP0's page, which is not identity-mapped
.back:
    expect kernel
    int 0x80

kernel:
    show "stack", [PT + 0x3ef * 4]
    show "frame", [0x330000 + 0xffc]  ; the SS the CPU pushed, read at the physical page
    print 10
    mov dword [PT + 0x304 * 4], 0x320000 | PG_P | PG_RW
    mov dword [PT + 0x305 * 4], 0
    invlpg [0x304000]
    invlpg [0x305000]
    mov eax, df_handler             ; gate 8 at ODD_IDT + 0x40, written through the identity map
    mov [0x320fe0], ax
    mov word [0x320fe2], KCODE
    mov byte [0x320fe4], 0
    mov byte [0x320fe5], IGATE
    shr eax, 16
    mov [0x320fe6], ax
    lidt [odd_idtr]
    mov eax, [0x300000]             ; #PF; its IDT entry is on a page not present: #DF
    print "no double fault", 10
    exit 0x7c

df_handler:
    print "double fault "
    mov eax, cr2
    show "cr2", eax
    show "err", [esp]
    show "idt", [PT + 0x304 * 4]
    print 10
    exit 0x0c

pf_handler:
    push eax
    mov ax, KDATA
    mov ds, ax
    mov eax, cr2
    show "cr2", eax
    pop eax
    jmp reporter_14

reporter 14
reporter 0x80

align 4
odd_idtr:
    dw 0x7ff
    dd ODD_IDT
