; paging_kernel.asm - a small kernel that pages the way Linux i386 does, with two user processes.
;
; It is loaded at physical 0x100000 and linked at 0xC0100000: a stub at the physical address maps
; the first 4 MiB at 0 and at 0xC0000000, turns paging on and jumps up; the kernel then drops the
; identity mapping. Each process has a page directory of its own (so a switch between them is a
; CR3 load) in which the kernel's 4 MiB are shared, supervisor-only, at 0xC0000000, and its own
; page table maps, all user pages:
;
;   0x08048000  the program's code, one page shared by both processes, read-only
;   0x08100000  the heap, HEAP_PAGES pages, not present at first: demand-zero
;   0x083ff000  the stack, a page of its own
;
; Both run the same program. Process A writes every heap page (a read-modify-write), process B only
; reads them; each reports the sum it read and yields (int 0x80), ROUNDS times. The first touch of
; each heap page is a #PF that the kernel serves by taking a frame from its pool, zeroing it, and
; writing the PTE (demand-zero paging). Process B ends by reading a kernel address: a #PF with
; error code 5 (a user read of a supervisor page) that kills it. When both have ended, the kernel
; reads the accessed and dirty bits of each heap PTE (as a page-out daemon would), prints them,
; unmaps the heap pages (a PTE store and an invlpg each) and exits with 0x21.
;
; The system calls, int 0x80 with EAX: 1 report (EBX the process's letter, ECX a number), 2 yield,
; 3 exit (EBX the exit code).
bits 32
org 0x100000

%ifndef HEAP_PAGES
%define HEAP_PAGES 8
%endif
%ifndef ROUNDS
%define ROUNDS 3
%endif

HIGH           equ 0xC0000000
KCODE          equ 0x08
KDATA          equ 0x10
UCODE          equ 0x18 | 3
UDATA          equ 0x20 | 3
TSS_SEL        equ 0x28
KSTACK_TOP     equ HIGH + 0x1f0000
POOL           equ 0x200000        ; physical frames the kernel hands out for heap pages
KPD            equ 0x380000        ; the boot page directory
KPT            equ 0x381000        ; the page table of the kernel's 4 MiB (physical 0-4 MiB)
PD_A           equ 0x382000        ; process A: its page directory and its user page table
PT_A           equ 0x383000
PD_B           equ 0x384000
PT_B           equ 0x385000
STACK_A        equ 0x3a0000        ; the frames of the two user stacks
STACK_B        equ 0x3a1000
USER_CODE      equ 0x08048000
HEAP           equ 0x08100000
USER_STACK     equ 0x083ff000
PG_P           equ 1
PG_RW          equ 2
PG_US          equ 4
PG_A           equ 0x20
PG_D           equ 0x40
SYS_REPORT     equ 1
SYS_YIELD      equ 2
SYS_EXIT       equ 3
COM1           equ 0x3f8
COM1_LSR       equ 0x3fd
DEBUG_EXIT     equ 0xf4

; a process: its saved registers (pushad order) and interrupt frame, then the rest
P_REGS         equ 0               ; 8 dwords: edi esi ebp esp ebx edx ecx eax
P_FRAME        equ 32              ; 5 dwords: eip cs eflags esp ss
P_CR3          equ 52
P_PT           equ 56
P_LETTER       equ 60
P_DONE         equ 64
P_FAULTS       equ 68
P_OTHER        equ 72              ; the other process

%macro print 1+
    jmp %%over
%%text: db %1, 0
%%over:
    push esi
    mov esi, %%text
    call puts
    pop esi
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
multiboot_header:                   ; multiboot 1 with the a.out kludge: QEMU's -kernel boots it too
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
    mov edi, KPD                    ; clear every directory and table
    xor eax, eax
    mov ecx, 1024 * 6
    rep stosd
    mov edi, KPT                    ; physical 0-4 MiB, supervisor, writable
    mov eax, PG_P | PG_RW
    mov ecx, 1024
.kernel:
    stosd
    add eax, 0x1000
    loop .kernel
    mov dword [KPD], KPT | PG_P | PG_RW                   ; 0: identity, for the jump
    mov dword [KPD + (HIGH >> 22) * 4], KPT | PG_P | PG_RW
    mov ebx, PD_A
    mov edx, PT_A
    mov esi, STACK_A
    call user_space
    mov ebx, PD_B
    mov edx, PT_B
    mov esi, STACK_B
    call user_space
    mov eax, KPD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000              ; PG, WP
    mov cr0, eax
    mov eax, high_start
    jmp eax

user_space:                         ; directory ebx, user page table edx, stack frame esi
    mov dword [ebx + (HIGH >> 22) * 4], KPT | PG_P | PG_RW    ; the kernel, shared
    lea eax, [edx + (PG_P | PG_RW | PG_US)]
    mov [ebx + (USER_CODE >> 22) * 4], eax
    mov dword [edx + ((USER_CODE >> 12) & 0x3ff) * 4], user_code_frame | PG_P | PG_US   ; read-only
    lea eax, [esi + (PG_P | PG_RW | PG_US)]
    mov [edx + ((USER_STACK >> 12) & 0x3ff) * 4], eax
    ret

; ---------------------------------------------------------------- linked at 0xC0101000
section high start=0x101000 vstart=0xC0101000

high_start:
    mov esp, KSTACK_TOP
    mov dword [HIGH + KPD], 0       ; the identity mapping goes
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
    mov al, 0xff                    ; no interrupts from the PIC
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
    mov eax, page_fault
    call set_gate
    mov ebx, 0x80
    mov eax, system_call
    mov cl, 0xee                    ; DPL 3: user code may int 0x80
    call set_gate
    lidt [idtr]
    print "paging kernel: two processes, heap pages each: "
    mov eax, HEAP_PAGES
    call hex32
    print 10
    mov dword [current], proc_a
    jmp dispatch

; ---------------------------------------------------------------- switching processes
dispatch:                           ; run the process [current]: its CR3, registers and frame
    mov esi, [current]
    mov eax, [esi + P_CR3]
    mov cr3, eax
    mov esp, KSTACK_TOP - 52
    mov edi, esp
    mov ecx, 13
    rep movsd
    mov ax, UDATA
    mov ds, ax
    mov es, ax
    popad
    iretd

switch:                             ; to the other process if it still runs; else the end
    mov esi, [current]
    mov edi, [esi + P_OTHER]
    cmp dword [edi + P_DONE], 0
    jne .same
    mov [current], edi
    jmp dispatch
.same:
    cmp dword [esi + P_DONE], 0
    je dispatch
    jmp the_end

save:                               ; the current process's registers and frame, from the stack
    push ecx
    push esi
    push edi
    lea esi, [esp + 16]             ; above our return address and the three pushes
    mov edi, [current]
    mov ecx, 13
    rep movsd
    pop edi
    pop esi
    pop ecx
    ret

; ---------------------------------------------------------------- int 0x80
system_call:
    pushad
    mov bx, KDATA
    mov ds, bx
    mov es, bx
    mov ebx, [esp + 16]             ; the caller's EBX, as pushad saved it
    cmp eax, SYS_REPORT
    je .report
    cmp eax, SYS_YIELD
    je .yield
    cmp eax, SYS_EXIT
    je .exit
    print "bad system call", 10
    exit 0x7d
.report:
    mov eax, ebx
    call putc
    print ": sum "
    mov eax, [esp + 24]             ; the caller's ECX
    call hex32
    print 10
    jmp return_to_user
.yield:
    call save
    jmp switch
.exit:
    mov esi, [current]
    mov eax, [esi + P_LETTER]
    call putc
    print ": exit", 10
    mov dword [esi + P_DONE], 1
    jmp switch

return_to_user:
    mov ax, UDATA
    mov ds, ax
    mov es, ax
    popad
    iretd

; ---------------------------------------------------------------- #PF
page_fault:
    pushad
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov eax, cr2
    mov edx, [esp + 32]             ; the error code
    test edx, PG_P
    jnz .kill                       ; a protection fault: no demand paging can help
    cmp eax, HEAP
    jb .kill
    cmp eax, HEAP + HEAP_PAGES * 4096
    jae .kill
    mov edi, [next_frame]           ; demand-zero: a frame from the pool ...
    add dword [next_frame], 4096
    push eax
    push edi
    add edi, HIGH                   ; ... zeroed through the kernel's mapping of all memory ...
    xor eax, eax
    mov ecx, 1024
    rep stosd
    pop edi
    pop eax
    shr eax, 12                     ; ... and mapped: a store to the process's page table
    and eax, 0x3ff
    mov esi, [current]
    mov ebx, [esi + P_PT]
    or edi, PG_P | PG_RW | PG_US
    mov [HIGH + ebx + eax * 4], edi
    inc dword [esi + P_FAULTS]
    popad
    add esp, 4                      ; the error code; iretd retries the access
    push eax
    mov ax, UDATA
    mov ds, ax
    mov es, ax
    pop eax
    iretd
.kill:
    mov esi, [current]
    push eax
    mov eax, [esi + P_LETTER]
    call putc
    print ": killed, #PF at "
    pop eax
    call hex32
    print " error "
    mov eax, edx
    call hex32
    print 10
    mov dword [esi + P_DONE], 1
    jmp switch

; ---------------------------------------------------------------- the end: accessed and dirty bits
the_end:
    mov esi, proc_a
    call scan
    mov esi, proc_b
    call scan
    mov esi, proc_a
    call unmap
    mov esi, proc_b
    call unmap
    print "heap pages unmapped", 10
    exit 0x21

scan:                               ; print how many heap PTEs of process esi are P, A and D
    mov eax, [esi + P_LETTER]
    call putc
    mov ebx, [esi + P_PT]
    xor ecx, ecx                    ; page
    xor edx, edx                    ; dl present, dh accessed, bits 16-23 dirty
.next:
    mov eax, [HIGH + ebx + ((HEAP >> 12) & 0x3ff) * 4 + ecx * 4]
    test eax, PG_P
    jz .skip
    inc dl
    test eax, PG_A
    jz .clean
    inc dh
.clean:
    test eax, PG_D
    jz .skip
    add edx, 0x10000
.skip:
    inc ecx
    cmp ecx, HEAP_PAGES
    jb .next
    print ": "
    movzx eax, dl
    call hex32
    print " present, "
    movzx eax, dh
    call hex32
    print " accessed, "
    mov eax, edx
    shr eax, 16
    call hex32
    print " dirty; "
    mov eax, [esi + P_FAULTS]
    call hex32
    print " page faults served", 10
    ret

unmap:                              ; clear process esi's heap PTEs, in its own address space
    mov eax, [esi + P_CR3]
    mov cr3, eax
    mov ebx, [esi + P_PT]
    xor ecx, ecx
.next:
    mov dword [HIGH + ebx + ((HEAP >> 12) & 0x3ff) * 4 + ecx * 4], 0
    mov eax, ecx
    shl eax, 12
    invlpg [HEAP + eax]
    inc ecx
    cmp ecx, HEAP_PAGES
    jb .next
    ret

; ---------------------------------------------------------------- helpers
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

; ---------------------------------------------------------------- data
align 4
current:    dd 0
next_frame: dd POOL

proc_a:
    dd 0, 1, 0, 0, 0, 0, 0, 'A'     ; edi esi(1: it writes) ebp esp ebx edx ecx eax(its letter)
    dd USER_CODE, UCODE, 0x2, USER_STACK + 4096, UDATA
    dd PD_A, PT_A, 'A', 0, 0
    dd proc_b
proc_b:
    dd 0, 0, 0, 0, 0, 0, 0, 'B'     ; esi 0: it only reads
    dd USER_CODE, UCODE, 0x2, USER_STACK + 4096, UDATA
    dd PD_B, PT_B, 'B', 0, 0
    dd proc_a

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff           ; 0x08 kernel code
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
    dd KSTACK_TOP                   ; esp0
    dd KDATA                        ; ss0
    times 22 dd 0
    dw 0
    dw tss_end - tss
tss_end:

; ---------------------------------------------------------------- the user program, at 0x08048000
section user start=0x108000 vstart=USER_CODE
user_code_frame equ 0x108000

user_main:                          ; EAX: the process's letter; ESI: 1 = it writes its heap
    mov edi, eax
    mov ebp, ROUNDS
.round:
    xor ebx, ebx                    ; page
    xor edx, edx                    ; sum
.page:
    mov ecx, ebx
    shl ecx, 12
    add ecx, HEAP
    test esi, esi
    jz .read
    lea eax, [ebx + 1]
    add [ecx], eax                  ; page n gains n + 1 each round
.read:
    add edx, [ecx]
    inc ebx
    cmp ebx, HEAP_PAGES
    jb .page
    mov eax, SYS_REPORT
    mov ebx, edi
    mov ecx, edx
    int 0x80
    mov eax, SYS_YIELD
    int 0x80
    dec ebp
    jnz .round
    test esi, esi
    jnz .done
    mov eax, [HIGH + 0x100000]      ; the reader reads the kernel: #PF, error code 5, killed
.done:
    mov eax, SYS_EXIT
    xor ebx, ebx
    int 0x80
