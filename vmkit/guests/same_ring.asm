; same_ring.asm - an interrupt that does not change rings.
;
; This kernel stays in ring 0 and raises int 0x80 itself. The handler's code segment is as
; privileged as the caller, so the CPU keeps the current stack: it pushes only EFLAGS, CS and EIP.
; There is not even a TSS: the CPU only reads one when it has to switch to a more privileged stack.
bits 32
org 0x100000

KERNEL_CS  equ 0x08             ; the platform's boot GDT: flat code, DPL 0
DEBUG_EXIT equ 0xf4

kernel_start:
    mov eax, handler            ; IDT entry 0x80 -> handler, present, DPL 0, 32-bit interrupt gate
    mov [idt + 0x80 * 8], ax
    mov word [idt + 0x80 * 8 + 2], KERNEL_CS
    mov byte [idt + 0x80 * 8 + 5], 0x8E
    shr eax, 16
    mov [idt + 0x80 * 8 + 6], ax
    lidt [idt_descriptor]

    mov esp, stack_top
    int 0x80                    ; ring 0 -> ring 0: same stack, three dwords pushed
    mov al, 0
    out DEBUG_EXIT, al          ; exit code (0 << 1) | 1 = 1

handler:
    mov ebx, [esp]              ; the saved EIP: the instruction after int 0x80
    iretd

align 8
idt:
    times 256 dq 0
idt_descriptor:
    dw 256 * 8 - 1
    dd idt

align 16
    times 256 db 0
stack_top:
