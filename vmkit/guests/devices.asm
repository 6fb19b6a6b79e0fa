; devices.asm - a guest that meets the exits a hardware-assisted VMM sees: port I/O (COM1), every
; register of the MMIO device at 0xFEB00000, CPUID and a final hlt.
;
; Under "hardware-assist" and "kvm" every `out` to COM1 and every load or store in the device's
; page is a VM exit to the device model; CPUID exits too, but KVM answers it inside the kernel, so
; only the model shows that exit. The emulated PC alone ("native") has no device at 0xFEB00000.
bits 32
org 0x100000

COM1      equ 0x3f8
MMIO      equ 0xfeb00000
ID        equ MMIO + 0x0                    ; read-only: "vmk1"
SCRATCH   equ MMIO + 0x4                    ; keeps what is written
TICKS     equ MMIO + 0x8                    ; each read returns one more
DOORBELL  equ MMIO + 0xc                    ; a write rings it; a read says how often it rang

start:
    mov esi, hello
    call puts

    mov eax, [ID]                           ; an MMIO read: the device model answers
    mov [id_text], eax
    mov esi, id_line
    call puts

    mov dword [SCRATCH], 0x12345678         ; an MMIO write of 4 bytes ...
    mov byte [SCRATCH], 0xab                ; ... and of 1: only that byte changes
    mov esi, scratch_line
    call puts
    mov eax, [SCRATCH]
    call hex32
    call newline

    mov esi, ticks_line                     ; three reads, three different answers: this
    call puts                               ; register could never be plain memory
    mov ecx, 3
.tick:
    mov eax, [TICKS]
    call hex32
    mov al, ' '
    call putc
    loop .tick
    call newline

    mov dword [DOORBELL], 1
    mov dword [DOORBELL], 2
    mov esi, rings_line
    call puts
    mov eax, [DOORBELL]
    call hex32
    call newline

    mov eax, 0x40000000                     ; the hypervisor's leaf: who is running me?
    cpuid
    mov [signature], ebx
    mov [signature + 4], ecx
    mov [signature + 8], edx
    mov esi, cpuid_line
    call puts                               ; up to the signature's first NUL
    mov esi, quote
    call puts

    cli
    hlt                                     ; with IF=0: the end

; ---------------------------------------------------------------- COM1 without polling the LSR
putc:                                       ; al -> COM1
    push edx
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

newline:
    mov al, 10
    jmp putc

hex32:                                      ; eax as 8 hex digits
    push ecx
    push eax
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
    pop eax
    pop ecx
    ret

hello:        db "devices: hello over COM1", 10, 0
id_line:      db "ID reads '"
id_text:      db "????", "'", 10, 0
scratch_line: db "SCRATCH after a dword and a byte write: ", 0
ticks_line:   db "TICKS read three times: ", 0
rings_line:   db "DOORBELL rang: ", 0
cpuid_line:   db "CPUID 0x40000000 says '"
signature:    db "????????????", 0
quote:        db "'", 10, 0
