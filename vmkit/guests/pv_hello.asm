; pv_hello.asm - the smallest paravirtual guest: it knows it runs on Xen and asks Xen for everything.
;
; Xen starts it in ring 1 with ESI pointing at the start_info page. It has no serial port (an `out`
; would fault): it writes to the console with the console_io hypercall. It asks which Xen it runs
; on, and it ends by asking Xen to shut the domain down; the reason becomes the run's exit code.
; A hypercall is `int 0x82` with the number in EAX and the arguments in EBX, ECX, EDX, ESI, EDI.
bits 32
org 0x100000

__HYPERVISOR_xen_version equ 17
__HYPERVISOR_console_io  equ 18
__HYPERVISOR_sched_op    equ 29
CONSOLEIO_write          equ 0
XENVER_version           equ 0
SCHEDOP_shutdown         equ 2
SHUTDOWN_poweroff        equ 0
SI_NR_PAGES              equ 32        ; start_info: pages of memory this domain owns
SI_FLAGS                 equ 40        ; start_info: SIF_PRIVILEGED, SIF_INITDOMAIN

start:
    mov [start_info], esi

    mov ebx, CONSOLEIO_write
    mov ecx, hello_len
    mov edx, hello
    mov eax, __HYPERVISOR_console_io
    int 0x82

    ; the magic at the start of start_info names the ABI: "xen-3.0-x86_32"
    mov ebx, CONSOLEIO_write
    mov ecx, 14
    mov edx, [start_info]
    mov eax, __HYPERVISOR_console_io
    int 0x82
    call newline

    mov ebx, XENVER_version
    xor ecx, ecx
    mov eax, __HYPERVISOR_xen_version
    int 0x82                            ; EAX = major << 16 | minor
    push eax
    mov edx, version_msg
    mov ecx, version_len
    call print
    pop eax
    push eax
    shr eax, 16
    call print_decimal
    mov edx, dot
    mov ecx, 1
    call print
    pop eax
    and eax, 0xffff
    call print_decimal
    call newline

    mov esi, [start_info]
    mov eax, [esi + SI_NR_PAGES]
    shr eax, 8                          ; pages of 4 KiB -> MiB
    push eax
    mov edx, memory_msg
    mov ecx, memory_len
    call print
    pop eax
    call print_decimal
    mov edx, mib
    mov ecx, mib_len
    call print

    mov dword [shutdown_reason], SHUTDOWN_poweroff
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_reason
    mov eax, __HYPERVISOR_sched_op
    int 0x82
    jmp $                               ; never reached: the domain is gone

; print: ECX bytes at EDX to the console
print:
    push ebx
    mov ebx, CONSOLEIO_write
    mov eax, __HYPERVISOR_console_io
    int 0x82
    pop ebx
    ret

newline:
    mov edx, nl
    mov ecx, 1
    jmp print

; print_decimal: EAX as decimal digits
print_decimal:
    mov edi, digits_end
    mov ebx, 10
.next:
    xor edx, edx
    div ebx
    add dl, '0'
    dec edi
    mov [edi], dl
    test eax, eax
    jnz .next
    mov edx, edi
    mov ecx, digits_end
    sub ecx, edi
    jmp print

hello:        db "hello from a paravirtualized guest", 10, "start_info magic: "
hello_len     equ $ - hello
version_msg:  db "running on Xen "
version_len   equ $ - version_msg
memory_msg:   db "memory: "
memory_len    equ $ - memory_msg
mib:          db " MiB", 10
mib_len       equ $ - mib
dot:          db "."
nl:           db 10
digits:       times 10 db 0
digits_end:
align 4
start_info:      dd 0
shutdown_reason: dd 0                   ; struct sched_shutdown { reason }
