; virtio_console.asm - the same console output through a paravirtual device and through an emulated
; one: REQUESTS lines "NN: hello, console", each a request on virtio-console's transmit queue (a
; chain of two descriptors: the line's number, then its text), or, with EMULATED 1, each byte
; written to COM1.
;
; The driver is the course's own, for the virtio-mmio device at 0xFEB01000 (vmkit.machine.virtio,
; under "hardware-assist" and "kvm"): it checks MagicValue, Version and DeviceID, negotiates the
; features (VIRTIO_F_VERSION_1, and VIRTIO_F_EVENT_IDX when EVENT_IDX is 1) with the status bits of
; the virtio spec's section 3.1.1, sets up queue 1 (transmitq0), then posts the requests. It makes
; BATCH requests available at a time (one write of avail.idx), and writes QueueNotify only when the
; device asked for it: with EVENT_IDX, when vring_need_event(avail_event, new, old) is true.
; It then waits for the device to have used them all: by polling used.idx (INTERRUPTS 0), or by
; taking the used-ring interrupt on IRQ 5 (INTERRUPTS 1; with EVENT_IDX it asks, through used_event,
; for one interrupt only, when its last request is used). The interrupt handler does not return with
; iretd: it drops the frame and jumps back to the wait loop, so the guest also runs on a KVM that
; cannot run iretd (PVM). The run ends with a write to isa-debug-exit: exit code 1 when every
; request was used, 3 when the device is not a virtio console, 5 when it refused the features.
bits 32
org 0x100000

%ifndef REQUESTS
%define REQUESTS 8
%endif
%ifndef BATCH
%define BATCH 1
%endif
%ifndef INTERRUPTS
%define INTERRUPTS 0
%endif
%ifndef EVENT_IDX
%define EVENT_IDX 1
%endif
%ifndef EMULATED
%define EMULATED 0
%endif
%if REQUESTS > 99 || BATCH < 1
%error "REQUESTS is at most 99 (two digits a line) and BATCH at least 1"
%endif

COM1            equ 0x3f8
DEBUG_EXIT      equ 0xf4
VIRTIO          equ 0xfeb01000              ; the virtio-mmio registers (virtio 1.2, 4.2.2)
MAGIC_VALUE     equ VIRTIO + 0x000
VERSION         equ VIRTIO + 0x004
DEVICE_ID       equ VIRTIO + 0x008
DEV_FEATURES    equ VIRTIO + 0x010
DEV_FEAT_SEL    equ VIRTIO + 0x014
DRV_FEATURES    equ VIRTIO + 0x020
DRV_FEAT_SEL    equ VIRTIO + 0x024
QUEUE_SEL       equ VIRTIO + 0x030
QUEUE_NUM_MAX   equ VIRTIO + 0x034
QUEUE_NUM       equ VIRTIO + 0x038
QUEUE_READY     equ VIRTIO + 0x044
QUEUE_NOTIFY    equ VIRTIO + 0x050
INT_STATUS      equ VIRTIO + 0x060
INT_ACK         equ VIRTIO + 0x064
STATUS          equ VIRTIO + 0x070
QUEUE_DESC      equ VIRTIO + 0x080          ; Low; High at + 4
QUEUE_DRIVER    equ VIRTIO + 0x090
QUEUE_DEVICE    equ VIRTIO + 0x0a0

S_ACKNOWLEDGE   equ 1
S_DRIVER        equ 2
S_DRIVER_OK     equ 4
S_FEATURES_OK   equ 8
F_EVENT_IDX     equ 1 << 29                 ; in feature word 0
F_VERSION_1     equ 1 << 0                  ; bit 32: in feature word 1
DESC_F_NEXT     equ 1
AVAIL_F_NO_INTERRUPT equ 1
TRANSMITQ       equ 1                       ; virtio-console: receiveq0 0, transmitq0 1

QNUM            equ 16                      ; the queue's size
INFLIGHT        equ 8                       ; requests in flight at most: two descriptors each
DESC            equ 0x200000                ; descriptor table: 16 bytes a descriptor
AVAIL           equ 0x200100                ; flags, idx, ring[QNUM], used_event
USED            equ 0x200200                ; flags, idx, {id, len}[QNUM], avail_event
USED_EVENT      equ AVAIL + 4 + 2 * QNUM
AVAIL_EVENT     equ USED + 4 + 8 * QNUM
BUFFERS         equ 0x201000                ; each request's "NN: ", 16 bytes a slot
VIRTIO_VECTOR   equ 0x25                    ; IRQ 5, the PIC's master remapped to 0x20

start:
%if EMULATED
    xor ebx, ebx
.line:
    cmp ebx, REQUESTS
    je finish
    mov eax, ebx
    mov edi, number
    call prefix                             ; "NN: " for line ebx
    mov esi, number
    mov ecx, 4
    call com1_write
    mov esi, body
    mov ecx, BODY_LEN
    call com1_write
    inc ebx
    jmp .line
%else
    call virtio_init
%if INTERRUPTS
    call irq_init
%endif
    xor ebx, ebx                            ; requests made available so far
.post:
    cmp ebx, REQUESTS
    je drain
.room:
    movzx eax, word [USED + 2]              ; a slot is free once the device used its request
    mov ecx, ebx
    sub ecx, eax
    and ecx, 0xffff
    cmp ecx, INFLIGHT
    jae .room
    call post
    inc ebx
    mov eax, ebx
    xor edx, edx
    mov ecx, BATCH
    div ecx
    test edx, edx
    jz .publish                             ; a full batch
    cmp ebx, REQUESTS
    jne .post
.publish:
    call publish
    jmp .post

drain:                                      ; until the device used every request
    cli
%if INTERRUPTS
    cmp dword [seen], REQUESTS              ; what the interrupt handler found used
    je finish
    sti
    hlt                                     ; the handler comes back to `drain`
%else
    movzx eax, word [USED + 2]
    cmp eax, REQUESTS
    je finish
%endif
    jmp drain
%endif

finish:
    mov al, 0
    out DEBUG_EXIT, al
    hlt

%if EMULATED == 0
; ---------------------------------------------------------------- the driver
virtio_init:
    cmp dword [MAGIC_VALUE], 0x74726976     ; "virt"
    jne not_virtio
    cmp dword [VERSION], 2
    jne not_virtio
    cmp dword [DEVICE_ID], 3                ; a console
    jne not_virtio
    mov dword [STATUS], 0                   ; reset
    mov dword [STATUS], S_ACKNOWLEDGE
    mov dword [STATUS], S_ACKNOWLEDGE | S_DRIVER
    mov dword [DEV_FEAT_SEL], 0
    mov eax, [DEV_FEATURES]
    and eax, F_EVENT_IDX * EVENT_IDX        ; what the driver takes of word 0
    mov dword [DRV_FEAT_SEL], 0
    mov [DRV_FEATURES], eax
    mov dword [DRV_FEAT_SEL], 1
    mov dword [DRV_FEATURES], F_VERSION_1
    mov dword [STATUS], S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK
    test dword [STATUS], S_FEATURES_OK      ; the device keeps it only if it agrees
    jz refused
    mov dword [QUEUE_SEL], TRANSMITQ
    cmp dword [QUEUE_NUM_MAX], QNUM
    jb refused
    mov dword [QUEUE_NUM], QNUM
    mov dword [QUEUE_DESC], DESC
    mov dword [QUEUE_DESC + 4], 0
    mov dword [QUEUE_DRIVER], AVAIL
    mov dword [QUEUE_DRIVER + 4], 0
    mov dword [QUEUE_DEVICE], USED
    mov dword [QUEUE_DEVICE + 4], 0
%if EVENT_IDX && INTERRUPTS
    mov word [USED_EVENT], REQUESTS - 1     ; interrupt me once: when the last request is used
%elif EVENT_IDX
    mov word [USED_EVENT], 0x8000           ; a polling driver: an index the run never passes
%elif INTERRUPTS == 0
    mov word [AVAIL], AVAIL_F_NO_INTERRUPT
%endif
    mov dword [QUEUE_READY], 1
    mov dword [STATUS], S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK
    ret

not_virtio:
    mov al, 1
    out DEBUG_EXIT, al
    hlt
refused:
    mov al, 2
    out DEBUG_EXIT, al
    hlt

post:                                       ; request ebx into the ring, not yet available
    mov eax, ebx
    and eax, INFLIGHT - 1                   ; its slot
    mov esi, eax
    shl esi, 4
    lea edi, [BUFFERS + esi]
    push eax
    mov eax, ebx
    push edi
    call prefix
    pop edi
    pop eax
    shl eax, 1                              ; descriptors 2 * slot, 2 * slot + 1
    mov edx, eax
    shl edx, 4
    mov [DESC + edx], edi                   ; the number: 4 bytes, then the next descriptor
    mov dword [DESC + edx + 4], 0
    mov dword [DESC + edx + 8], 4
    mov word [DESC + edx + 12], DESC_F_NEXT
    lea ecx, [eax + 1]
    mov [DESC + edx + 14], cx
    mov dword [DESC + edx + 16], body       ; the text, the chain's end
    mov dword [DESC + edx + 20], 0
    mov dword [DESC + edx + 24], BODY_LEN
    mov dword [DESC + edx + 28], 0
    mov ecx, ebx
    and ecx, QNUM - 1
    mov [AVAIL + 4 + 2 * ecx], ax           ; the chain's head in the available ring
    ret

publish:                                    ; avail.idx = ebx, and notify if the device asks
    mov [AVAIL + 2], bx
    mfence                                  ; the index out before avail_event is read
%if EVENT_IDX
    mov eax, ebx                            ; vring_need_event(avail_event, new, old):
    sub ax, [AVAIL_EVENT]                   ;   (u16)(new - event - 1) < (u16)(new - old)
    dec ax
    mov ecx, ebx
    sub cx, [published]
    mov [published], bx
    cmp ax, cx
    jae .quiet
%endif
    mov dword [QUEUE_NOTIFY], TRANSMITQ
.quiet:
    ret

%if INTERRUPTS
irq_init:                                   ; IRQ 5 at vector 0x25, every other line masked
    mov eax, on_virtio
    mov [idt + VIRTIO_VECTOR * 8], ax
    mov word [idt + VIRTIO_VECTOR * 8 + 2], 0x08
    mov word [idt + VIRTIO_VECTOR * 8 + 4], 0x8e00    ; present, DPL 0, 32-bit interrupt gate
    shr eax, 16
    mov [idt + VIRTIO_VECTOR * 8 + 6], ax
    lidt [idtr]
    mov al, 0x11                            ; ICW1: edge, cascade, ICW4
    out 0x20, al
    mov al, 0x20                            ; ICW2: vectors from 0x20
    out 0x21, al
    mov al, 0x04                            ; ICW3: the slave on line 2
    out 0x21, al
    mov al, 0x01                            ; ICW4: 8086 mode
    out 0x21, al
    mov al, 0xff & ~(1 << 5)                ; OCW1: only IRQ 5
    out 0x21, al
    ret

on_virtio:                                  ; the used-ring interrupt
    mov eax, [INT_STATUS]
    mov [INT_ACK], eax
    movzx eax, word [USED + 2]
    mov [seen], eax
    mov al, 0x20                            ; EOI
    out 0x20, al
    add esp, 12                             ; drop the frame (no iretd) and look again
    jmp drain
%endif
%endif

; ---------------------------------------------------------------- helpers
prefix:                                     ; eax -> "NN: " at edi
    push edx
    push ecx
    xor edx, edx
    mov ecx, 10
    div ecx
    add al, '0'
    add dl, '0'
    mov [edi], al
    mov [edi + 1], dl
    mov word [edi + 2], ': '
    pop ecx
    pop edx
    ret

%if EMULATED
com1_write:                                 ; ecx bytes at esi -> COM1, one out each
    mov dx, COM1
.next:
    lodsb
    out dx, al
    loop .next
    ret
%endif

body:       db "hello, console", 10
BODY_LEN    equ $ - body
number:     dd 0
published:  dd 0
seen:       dd 0
%if INTERRUPTS
align 8
idt:        times VIRTIO_VECTOR + 1 dq 0
idtr:       dw (VIRTIO_VECTOR + 1) * 8 - 1
            dd idt
%endif
