; rings.asm - a tiny protected-mode kernel and the user program it runs in ring 3.
;
; The kernel (ring 0) builds its own GDT, TSS and IDT, programs the PIC and the PIT, and drops to
; ring 3 with iretd. The user program asks the kernel for services with int 0x80, is preempted by
; timer interrupts while it computes, and finally tries `cli`, which ring 3 may not execute: the
; CPU raises #GP and the kernel's handler reports it and ends the run.
bits 32
org 0x100000

KERNEL_CS  equ 0x08             ; GDT index 1, RPL 0
KERNEL_DS  equ 0x10             ; GDT index 2, RPL 0
USER_CS    equ 0x18 | 3         ; GDT index 3, RPL 3
USER_DS    equ 0x20 | 3         ; GDT index 4, RPL 3
TSS_SEL    equ 0x28             ; GDT index 5

COM1       equ 0x3f8
DEBUG_EXIT equ 0xf4
PIT_HZ     equ 1193182
; two numbers a caller may set: vmkit.guests.image("rings", TIMER_HZ=20000, SPIN=20000)
%ifndef TIMER_HZ
%define TIMER_HZ 1000           ; timer interrupts per second (19 to 596591)
%endif
%ifndef SPIN
%define SPIN 250000             ; the user program's compute loop, in rounds
%endif

SYS_WRITE  equ 1                ; ebx = buffer, ecx = length
SYS_HEX    equ 2                ; ebx = number to print in hex
SYS_TICKS  equ 3                ; returns timer ticks in eax
SYS_EXIT   equ 4                ; ebx = exit value

; ---------------------------------------------------------------- the kernel, ring 0
kernel_start:
    lgdt [gdt_descriptor]
    jmp KERNEL_CS:.reload_cs    ; a far jump loads CS from the new GDT
.reload_cs:
    mov ax, KERNEL_DS
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, kernel_stack_top

    ; The TSS tells the CPU which stack to use when an interrupt arrives in ring 3.
    mov dword [tss + 4], kernel_stack_top       ; esp0
    mov dword [tss + 8], KERNEL_DS              ; ss0
    mov word [tss + 102], tss_end - tss         ; no I/O bitmap: ring 3 may not touch ports
    mov eax, tss                                ; put the TSS's address into its descriptor
    mov [gdt_tss + 2], ax
    shr eax, 16
    mov [gdt_tss + 4], al
    mov [gdt_tss + 7], ah
    mov ax, TSS_SEL
    ltr ax

    ; The IDT: which handler runs for which vector, and who may call it with int n.
    mov eax, gp_handler
    mov ebx, 13
    mov cl, 0x8E                ; present, DPL 0, 32-bit interrupt gate
    call set_gate
    mov eax, timer_handler
    mov ebx, 0x20
    call set_gate
    mov eax, syscall_handler
    mov ebx, 0x80
    mov cl, 0xEE                ; present, DPL 3: ring 3 may use int 0x80
    call set_gate
    lidt [idt_descriptor]

    ; PIC: IRQ 0-7 -> vectors 0x20-0x27, IRQ 8-15 -> 0x28-0x2f; unmask only IRQ0 (the timer).
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xA1, al
    mov al, 1
    out 0x21, al
    out 0xA1, al
    mov al, 0xFE
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al

    ; PIT channel 0, mode 2 (rate generator), TIMER_HZ interrupts per second.
    mov al, 0x34
    out 0x43, al
    mov ax, PIT_HZ / TIMER_HZ
    out 0x40, al
    mov al, ah
    out 0x40, al

    ; Enter ring 3: iretd pops EIP, CS, EFLAGS and, since the ring changes, ESP and SS.
    push USER_DS                ; SS
    push user_stack_top         ; ESP
    push 0x202                  ; EFLAGS: IF=1, so the timer can interrupt the user program
    push USER_CS                ; CS
    push user_main              ; EIP
    iretd

; set_gate: IDT entry ebx -> handler eax in the kernel's code segment, type and DPL in cl
set_gate:
    lea edi, [idt + ebx * 8]
    mov [edi], ax               ; offset 15..0
    mov word [edi + 2], KERNEL_CS
    mov byte [edi + 4], 0
    mov [edi + 5], cl
    shr eax, 16
    mov [edi + 6], ax           ; offset 31..16
    ret

; ---------------------------------------------------------------- interrupt handlers, ring 0
syscall_handler:                ; int 0x80 from ring 3: the CPU switched to the TSS's stack
    push ds
    push edx
    mov dx, KERNEL_DS
    mov ds, dx
    cmp eax, SYS_WRITE
    je .write
    cmp eax, SYS_HEX
    je .hex
    cmp eax, SYS_TICKS
    je .ticks
    cmp eax, SYS_EXIT
    je .exit
    mov eax, -1                 ; unknown system call
    jmp .done
.write:
    mov esi, ebx
    call serial_write
    xor eax, eax
    jmp .done
.hex:
    mov eax, ebx
    call serial_hex
    xor eax, eax
    jmp .done
.ticks:
    mov eax, [ticks]
    jmp .done
.exit:
    mov eax, ebx
    out DEBUG_EXIT, al
.done:
    pop edx
    pop ds
    iretd

timer_handler:                  ; IRQ0: count the tick, acknowledge it at the PIC
    push eax
    inc dword [ss:ticks]
    mov al, 0x20                ; non-specific end of interrupt
    out 0x20, al
    pop eax
    iretd

gp_handler:                     ; #GP: the CPU pushed an error code, then EIP, CS, EFLAGS, ESP, SS
    mov ax, KERNEL_DS
    mov ds, ax
    mov esi, gp_msg
    mov ecx, gp_msg_len
    call serial_write
    mov eax, [esp + 4]          ; the saved EIP: the instruction that faulted
    call serial_hex
    mov esi, newline
    mov ecx, 1
    call serial_write
    mov al, 1
    out DEBUG_EXIT, al          ; end the run: exit code (1 << 1) | 1 = 3

; serial_write: ecx bytes from esi to COM1
serial_write:
    push edx
    mov dx, COM1
.next:
    jecxz .done
    lodsb
    out dx, al
    dec ecx
    jmp .next
.done:
    pop edx
    ret

; serial_hex: eax as 8 hex digits
serial_hex:
    push ecx
    push edx
    mov ecx, 8
    mov dx, COM1
.digit:
    rol eax, 4
    push eax
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '0' - 10
.out:
    out dx, al
    pop eax
    loop .digit
    pop edx
    pop ecx
    ret

; ---------------------------------------------------------------- the user program, ring 3
user_main:
    mov eax, SYS_WRITE
    mov ebx, hello_msg
    mov ecx, hello_len
    int 0x80                    ; ring 3 -> ring 0 -> ring 3

    mov ecx, SPIN               ; compute for a while; the timer will interrupt us
.spin:
    add edx, ecx
    loop .spin

    mov eax, SYS_WRITE
    mov ebx, ticks_msg
    mov ecx, ticks_len
    int 0x80
    mov eax, SYS_TICKS
    int 0x80
    mov ebx, eax
    mov eax, SYS_HEX
    int 0x80
    mov eax, SYS_WRITE
    mov ebx, newline
    mov ecx, 1
    int 0x80

    cli                         ; privileged: #GP in ring 3
    jmp $

; ---------------------------------------------------------------- data
hello_msg:  db "hello from ring 3", 10
hello_len   equ $ - hello_msg
ticks_msg:  db "timer ticks while computing: 0x"
ticks_len   equ $ - ticks_msg
gp_msg:     db "#GP: ring 3 tried a privileged instruction at eip 0x"
gp_msg_len  equ $ - gp_msg
newline:    db 10

align 8
gdt:
    dq 0                                        ; the null descriptor
    dq 0x00CF9A000000FFFF                       ; 0x08 kernel code: base 0, 4 GiB, DPL 0
    dq 0x00CF92000000FFFF                       ; 0x10 kernel data
    dq 0x00CFFA000000FFFF                       ; 0x18 user code: DPL 3
    dq 0x00CFF2000000FFFF                       ; 0x20 user data: DPL 3
gdt_tss:
    dw tss_end - tss - 1, 0                     ; 0x28 the TSS (base filled in at boot)
    db 0, 0x89, 0, 0                            ; present, DPL 0, 32-bit TSS (available)
gdt_end:
gdt_descriptor:
    dw gdt_end - gdt - 1
    dd gdt

align 8
idt:
    times 256 dq 0
idt_descriptor:
    dw 256 * 8 - 1
    dd idt

ticks:      dd 0

align 16
tss:
    times 104 db 0
tss_end:

align 16
    times 1024 db 0
user_stack_top:
    times 1024 db 0
kernel_stack_top:
