; vmexits.asm - one unmodified guest kernel that meets each thing a VMM can make VT-x exit on:
; port I/O (a polled serial driver: an `in` and an `out` per byte), an MMIO load, CPUID, a fault
; the guest handles itself (#UD), and a final hlt.
;
; Which of these leave the guest is the VMM's choice, written in the VMCS: the I/O bitmap, the
; exception bitmap and HLT exiting (try them with vmkit.vtx.VmcsControls under "hardware-assist").
; The #UD handler does not return with iretd: it drops the frame and jumps on, so the guest also
; runs on a KVM that cannot run iretd (PVM).
bits 32
org 0x100000

COM1      equ 0x3f8
LSR       equ COM1 + 5                      ; line status: bit 5 set = ready to send
MMIO_ID   equ 0xfeb00000                    ; the MMIO device's ID register: "vmk1"
UD        equ 6                             ; #UD, invalid opcode

start:
    mov eax, on_ud                          ; the guest's own IDT, with a #UD gate
    mov [idt + UD * 8], ax
    mov word [idt + UD * 8 + 2], 0x08
    mov word [idt + UD * 8 + 4], 0x8e00     ; present, DPL 0, 32-bit interrupt gate
    shr eax, 16
    mov [idt + UD * 8 + 6], ax
    lidt [idtr]

    mov esi, hello                          ; port I/O
    call puts

    mov eax, [MMIO_ID]                      ; MMIO: no RAM behind this address
    mov [id_text], eax
    mov esi, id_line
    call puts

    mov eax, 0x40000000                     ; CPUID: who runs me?
    cpuid
    mov [signature], ebx
    mov [signature + 4], ecx
    mov [signature + 8], edx
    mov esi, cpuid_line
    call puts
    mov esi, quote
    call puts

fault:
    ud2                                     ; an exception: the guest's handler deals with it
after_fault:
    mov esi, ud_line
    call puts

    cli
    hlt                                     ; with IF=0: the end

on_ud:                                      ; #UD: frame = EIP, CS, EFLAGS
    add esp, 12                             ; drop it: carry on after the ud2
    jmp after_fault

; ---------------------------------------------------------------- a polled 16550 driver
putc:                                       ; al -> COM1, once the transmitter is ready
    push edx
    push eax
    mov dx, LSR
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop eax
    mov dx, COM1
    out dx, al
    pop edx
    ret

puts:                                       ; esi -> NUL-terminated string
    push eax
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    pop eax
    ret

hello:        db "vmexits: hello over COM1", 10, 0
id_line:      db "MMIO ID register: '"
id_text:      db "????", "'", 10, 0
cpuid_line:   db "CPUID 0x40000000: '"
signature:    db "????????????", 0
quote:        db "'", 10, 0
ud_line:      db "#UD handled by the guest itself", 10, 0

align 8
idt:          times 8 dq 0
idtr:         dw 8 * 8 - 1
              dd idt
