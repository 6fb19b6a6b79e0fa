; higher_half.asm - a kernel laid out as Linux i386 lays itself out: loaded at physical 0x100000,
; linked at 0xC0100000. A stub at the physical address builds one page table, maps it at 0 and at
; 0xC0000000, turns paging on and jumps up; the kernel then drops the identity mapping, so its GDT,
; IDT, TSS and stacks are reachable only at their higher-half addresses. It takes a #PF at the
; address the identity mapping had (CR2, error code 0), enters ring 3 on a user page, takes an
; `int 0x80` there (the stack switch reads the TSS at its higher-half address), and ends on a
; user read of a kernel page (error code 5). Self-contained: platform.inc assumes an identity map.
bits 32
org 0x100000

HIGH           equ 0xC0000000
KCODE          equ 0x08
KDATA          equ 0x10
UCODE          equ 0x18 | 3
UDATA          equ 0x20 | 3
TSS_SEL        equ 0x28
PD             equ 0x380000        ; physical addresses of the page directory and the one table
PT             equ 0x381000
KSTACK_TOP     equ HIGH + 0x200000
TSS_STACK_TOP  equ HIGH + 0x1e0000
USTACK_TOP     equ HIGH + 0x1f0000 ; its page, 0x1ef000, is a user page
COM1           equ 0x3f8
COM1_LSR       equ 0x3fd
DEBUG_EXIT     equ 0xf4

%macro print 1+
    jmp %%over
%%text: db %1, 0
%%over:
    push esi
    mov esi, %%text
    call puts
    pop esi
%endmacro

%macro show 2
    print %1, "="
    mov eax, %2
    call hex32
    push eax
    mov al, ' '
    call putc
    pop eax
%endmacro

%macro exit 1
    mov al, %1
    out DEBUG_EXIT, al
    cli
    hlt
%endmacro

; ---------------------------------------------------------------- at the physical address
boot:
    jmp short start

align 4
multiboot_header:                   ; multiboot 1 with the a.out kludge, as platform.inc
    dd 0x1badb002
    dd 0x00010000
    dd -(0x1badb002 + 0x00010000)
    dd multiboot_header
    dd boot
    dd 0
    dd 0
    dd boot

start:
    cli
    mov edi, PT                     ; physical 0-4 MiB, supervisor, writable
    mov eax, 3
    mov ecx, 1024
.fill:
    stosd
    add eax, 0x1000
    loop .fill
    mov edi, PD
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PD], PT | 7                  ; 0: identity, for the jump
    mov dword [PD + (HIGH >> 22) * 4], PT | 7   ; 0xC0000000: the kernel
    or dword [PT + 0x1ef * 4], 4            ; the user stack's page
    mov eax, PD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000                      ; PG, WP
    mov cr0, eax
    mov eax, high_start
    jmp eax

; ---------------------------------------------------------------- linked at 0xC0100000+
section high start=0x101000 vstart=0xC0101000

high_start:
    mov esp, KSTACK_TOP
    mov dword [HIGH + PD], 0                ; the identity mapping goes
    mov eax, cr3
    mov cr3, eax
    lgdt [gdtr]
    jmp KCODE:.flat
.flat:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    push dword 2
    popfd
    mov al, 0xff
    out 0xa1, al
    out 0x21, al
    mov eax, tss
    mov [gdt + TSS_SEL + 2], ax
    shr eax, 16
    mov [gdt + TSS_SEL + 4], al
    mov [gdt + TSS_SEL + 7], ah
    mov ax, TSS_SEL
    ltr ax
    xor ebx, ebx
.gates:
    mov eax, unexpected
    mov cl, 0x8e
    call set_gate
    inc ebx
    cmp ebx, 256
    jb .gates
    mov ebx, 14
    mov eax, pf_handler
    call set_gate
    mov ebx, 0x80
    mov eax, syscall
    mov cl, 0xee                    ; DPL 3
    call set_gate
    lidt [idtr]
    mov eax, user                   ; the user code's page becomes a user page
    sub eax, HIGH
    shr eax, 12
    or dword [HIGH + PT + eax * 4], 4
    invlpg [user]
    show "gdt", [gdtr + 2]
    show "idt", [idtr + 2]
    show "tss", tss
    print 10
    mov dword [resume], .after_pf
    mov eax, [0x100000]             ; where the kernel was before the jump: not present now
.after_pf:
    show "pte", [HIGH + PT + 0x100 * 4]   ; the kernel's first page: accessed
    print 10
    mov ax, UDATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    push dword UDATA
    push dword USTACK_TOP
    push dword 2
    push dword UCODE
    push dword user
    iretd

syscall:                            ; int 0x80 from ring 3: the frame on the TSS's stack
    push eax
    mov ax, KDATA
    mov ds, ax
    print "int 0x80 "
    pop eax
    show "eax", eax
    lea eax, [esp]
    show "esp", eax
    call frame
    iretd

pf_handler:
    push eax
    mov ax, KDATA
    mov ds, ax
    print "#PF "
    mov eax, cr2
    show "cr2", eax
    pop eax
    lea eax, [esp]
    show "esp", eax
    call frame
    cmp dword [esp + 8], UCODE
    je .user
    add esp, 4                      ; the error code
    mov eax, [resume]
    mov [esp], eax
    iretd
.user:
    mov eax, user                   ; the user page's PTE: accessed, not dirty
    sub eax, HIGH
    shr eax, 12
    show "user", [HIGH + PT + eax * 4]
    show "stack", [HIGH + PT + 0x1df * 4]   ; the TSS stack's page: the CPU pushed frames there
    print 10
    exit 0x0d

frame:                              ; the five dwords above the caller's return address
    push ecx
    print ":"
    mov ecx, 0
.word:
    mov al, ' '
    call putc
    mov eax, [esp + 8 + ecx * 4]
    call hex32
    inc ecx
    cmp ecx, 5
    jb .word
    print 10
    pop ecx
    ret

unexpected:
    mov ax, KDATA
    mov ds, ax
    print "unexpected interrupt", 10
    exit 0x7e

putc:
    push edx
    push eax
    mov dx, COM1_LSR
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop eax
    mov dx, COM1
    out dx, al
    pop edx
    ret

puts:
    push eax
    push esi
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    pop esi
    pop eax
    ret

hex32:
    push eax
    push ecx
    mov ecx, 8
.digit:
    rol eax, 4
    push eax
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '0' - 10
.out:
    call putc
    pop eax
    loop .digit
    pop ecx
    pop eax
    ret

set_gate:                           ; IDT[ebx] = handler eax in KCODE, type byte cl
    push eax
    mov [idt + ebx * 8], ax
    mov word [idt + ebx * 8 + 2], KCODE
    mov byte [idt + ebx * 8 + 4], 0
    mov [idt + ebx * 8 + 5], cl
    shr eax, 16
    mov [idt + ebx * 8 + 6], ax
    pop eax
    ret

align 4
resume: dd 0

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff           ; 0x08 kernel code (accessed bit clear)
    dq 0x00cf92000000ffff           ; 0x10 kernel data
    dq 0x00cffa000000ffff           ; 0x18 user code
    dq 0x00cff2000000ffff           ; 0x20 user data
    dw tss_end - tss - 1, 0         ; 0x28 the TSS
    db 0, 0x89, 0, 0
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt

align 8
idt:
    times 256 * 8 db 0
idtr:
    dw 256 * 8 - 1
    dd idt

align 8
tss:
    dd 0
    dd TSS_STACK_TOP                ; esp0, a higher-half address
    dd KDATA                        ; ss0
    times 22 dd 0
    dw 0
    dw tss_end - tss
tss_end:

align 4096
user:                               ; ring 3, on a page of its own marked user
    mov eax, 0x11111111
    int 0x80
    mov eax, [gdt]                  ; a kernel page: #PF, error code 5
    exit 0x7b
align 4096
