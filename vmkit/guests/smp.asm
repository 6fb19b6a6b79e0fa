; smp.asm - every vCPU runs this same code at the same time, each on its own stack.
;
; Each asks CPUID who it is (leaf 1, EBX bits 31-24: the initial APIC ID, which the VMM set to the
; vCPU's number), says so on COM1 under a spinlock, then waits for the host's go: the MMIO
; device's SCRATCH register turning non-zero. Then it counts itself done and halts. Run it with
; vmkit.machine(image, "kvm", vcpus=2): while the vCPUs wait, each is a thread of this process.
bits 32
org 0x100000

COM1      equ 0x3f8
SCRATCH   equ 0xfeb00004

start:
    mov eax, 1
    cpuid
    shr ebx, 24                             ; my vCPU number
    add bl, '0'

    call acquire
    mov esi, up
    call say
    call release

.wait:                                      ; every read of SCRATCH is a VM exit to user space
    pause
    cmp dword [SCRATCH], 0
    je .wait

    lock inc dword [done]
    call acquire
    mov esi, finished
    call say
    call release
    cli
    hlt

acquire:                                     ; a spinlock: xchg with memory is atomic
    mov eax, 1
.spin:
    xchg eax, [serial_lock]
    test eax, eax
    jz .got
    pause
    jmp .spin
.got:
    ret

release:
    mov dword [serial_lock], 0
    ret

say:                                        ; "vCPU <bl> " then the string at esi
    push esi
    mov esi, vcpu
    call puts
    mov al, bl
    out dx, al
    pop esi
puts:
    mov dx, COM1
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    ret

vcpu:        db "vCPU ", 0
up:          db " up, waiting for the go", 10, 0
finished:    db " done", 10, 0
align 4
serial_lock: dd 0
done:        dd 0
