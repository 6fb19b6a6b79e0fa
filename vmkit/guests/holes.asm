; holes.asm - a kernel that reads back state a trap-and-emulate VMM cannot hide.
;
; Each line it prints is something the guest kernel can observe without executing a privileged
; instruction: nothing traps, so a VMM has no chance to show the guest its virtual value.
; Run it natively and under trap-and-emulate and compare the two printouts line by line.
bits 32
org 0x100000

COM1       equ 0x3f8
DEBUG_EXIT equ 0xf4

start:
    lgdt [gdt_descriptor]                   ; privileged: traps, and the VMM emulates it
    mov eax, cr0
    or eax, 1 << 3                          ; set CR0.TS (task switched) in the kernel's CR0
    mov cr0, eax                            ; privileged: the VMM changes the *virtual* CR0
    cli                                     ; privileged: the VMM clears the *virtual* IF

    mov esi, msg_cs                         ; 1. the code segment selector: its RPL is the ring
    mov eax, cs
    call print_line
    mov esi, msg_pushf                      ; 2. pushf: IF and IOPL as the CPU holds them
    pushf
    pop eax
    and eax, (1 << 9) | (3 << 12)
    call print_line
    mov esi, msg_sgdt                       ; 3. sgdt: where the GDT register points
    sgdt [gdtr_seen]
    mov eax, [gdtr_seen + 2]
    call print_line
    mov esi, msg_smsw                       ; 4. smsw: the low half of CR0 (TS is bit 3)
    smsw ax
    movzx eax, ax
    call print_line
    mov esi, msg_popf                       ; 5. sti, then popf with IF clear, then pushf: is IF off?
    sti
    push dword 0x2
    popf
    pushf
    pop eax
    and eax, 1 << 9
    call print_line

    mov al, 0
    out DEBUG_EXIT, al

; print_line: the text at esi, then eax in hex, then a newline
print_line:
    push eax
    mov dx, COM1
.text:
    lodsb
    test al, al
    jz .number
    out dx, al
    jmp .text
.number:
    pop eax
    mov ecx, 8
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
    mov al, 10
    out dx, al
    ret

msg_cs:    db "cs                  = ", 0
msg_pushf: db "after cli, IF|IOPL  = ", 0
msg_sgdt:  db "sgdt base           = ", 0
msg_smsw:  db "smsw (TS is bit 3)  = ", 0
msg_popf:  db "popf IF=0, then IF  = ", 0

align 8
gdt:
    dq 0
    dq 0x00CF9A000000FFFF                   ; 0x08 kernel code
    dq 0x00CF92000000FFFF                   ; 0x10 kernel data
gdt_end:
gdt_descriptor:
    dw gdt_end - gdt - 1
    dd gdt
gdtr_seen:
    dw 0
    dd 0
