; pv_events.asm - a paravirtual kernel's view of interrupts: events, the mask byte, traps bounced by Xen.
;
; 1. It registers its event callback (set_callbacks), its trap table (set_trap_table: #GP and the
;    system call vector 0x80) and the stack Xen switches to when user code traps (stack_switch).
; 2. It opens an event channel to itself (alloc_unbound + bind_interdomain) and sends on it while
;    events are masked: the port becomes pending, the callback does not run.
; 3. Its `sti` is two memory accesses: clear the mask byte, look at the pending byte. Something is
;    pending, so it enters Xen with a cheap hypercall, and Xen delivers the event on the way back.
; 4. It batches three console writes into one multicall: one entry into Xen for three hypercalls.
; 5. It tries `cli` in ring 1: a #GP, which Xen bounces to the kernel's own handler.
; 6. It runs a user program in ring 3 whose `int 0x80` system calls Xen bounces to the kernel, and
;    shuts down with the exit value the user program asked for.
bits 32
org 0x100000

FLAT_RING1_CS  equ 0xe019
FLAT_RING1_DS  equ 0xe021
FLAT_RING3_CS  equ 0xe02b
FLAT_RING3_DS  equ 0xe033

__HYPERVISOR_set_trap_table   equ 0
__HYPERVISOR_stack_switch     equ 3
__HYPERVISOR_set_callbacks    equ 4
__HYPERVISOR_multicall        equ 13
__HYPERVISOR_xen_version      equ 17
__HYPERVISOR_console_io       equ 18
__HYPERVISOR_sched_op         equ 29
__HYPERVISOR_event_channel_op equ 32
CONSOLEIO_write               equ 0
SCHEDOP_shutdown              equ 2
EVTCHNOP_bind_interdomain     equ 0
EVTCHNOP_send                 equ 4
EVTCHNOP_alloc_unbound        equ 6
DOMID_SELF                    equ 0x7ff0

SI_SHARED_INFO        equ 36           ; start_info: where shared_info is
UPCALL_PENDING        equ 0            ; shared_info: vcpu_info[0].evtchn_upcall_pending
UPCALL_MASK           equ 1            ; shared_info: vcpu_info[0].evtchn_upcall_mask, the virtual IF
PENDING_SEL           equ 4            ; shared_info: vcpu_info[0].evtchn_pending_sel
EVTCHN_PENDING        equ 2048         ; shared_info: the pending bit of every port
EVTCHN_MASK           equ 2176         ; shared_info: the mask bit of every port

%macro print 1+                        ; print "text" on Xen's console; every register is kept
    jmp %%over
%%text: db %1
%%over:
    push edx
    push ecx
    mov edx, %%text
    mov ecx, %%over - %%text
    call console_write
    pop ecx
    pop edx
%endmacro

%macro hypercall 1                     ; arguments already in EBX, ECX, EDX, ESI, EDI
    mov eax, %1
    int 0x82
%endmacro

start:
    mov eax, [esi + SI_SHARED_INFO]
    mov [shared_info], eax
    mov esp, kernel_stack_top

    ; 1. the callback for events, the trap table, the kernel stack for traps from ring 3
    mov ebx, FLAT_RING1_CS
    mov ecx, event_callback
    mov edx, FLAT_RING1_CS
    mov esi, failsafe_callback
    hypercall __HYPERVISOR_set_callbacks
    mov ebx, trap_table
    hypercall __HYPERVISOR_set_trap_table
    mov ebx, FLAT_RING1_DS
    mov ecx, kernel_stack_top
    hypercall __HYPERVISOR_stack_switch
    print "callbacks, trap table and kernel stack registered", 10

    ; 2. a channel from this domain to itself: offer a port, then bind a second one to it
    mov word [alloc_unbound.dom], DOMID_SELF
    mov word [alloc_unbound.remote_dom], DOMID_SELF
    mov ebx, EVTCHNOP_alloc_unbound
    mov ecx, alloc_unbound
    hypercall __HYPERVISOR_event_channel_op
    mov eax, [alloc_unbound.port]
    mov word [bind_interdomain.remote_dom], DOMID_SELF
    mov [bind_interdomain.remote_port], eax
    mov ebx, EVTCHNOP_bind_interdomain
    mov ecx, bind_interdomain
    hypercall __HYPERVISOR_event_channel_op
    print "loopback channel: ports "
    mov eax, [alloc_unbound.port]
    call print_decimal
    print " and "
    mov eax, [bind_interdomain.local_port]
    call print_decimal
    print 10

    ; events are still masked (Xen starts a guest that way): send, and nothing is delivered
    mov eax, [bind_interdomain.local_port]
    mov [send.port], eax
    mov ebx, EVTCHNOP_send
    mov ecx, send
    hypercall __HYPERVISOR_event_channel_op
    mov esi, [shared_info]
    print "sent while masked: upcall pending = "
    movzx eax, byte [esi + UPCALL_PENDING]
    call print_decimal
    print ", callbacks so far = "
    mov eax, [upcalls]
    call print_decimal
    print 10

    ; 3. the paravirtual sti: unmask, then look; enter Xen only if something is pending
    mov byte [esi + UPCALL_MASK], 0
    cmp byte [esi + UPCALL_PENDING], 0
    je .nothing_pending
    xor ebx, ebx
    hypercall __HYPERVISOR_xen_version  ; any hypercall will do: Xen delivers events on its way out
.nothing_pending:
    print "after sti: callbacks = "
    mov eax, [upcalls]
    call print_decimal
    print 10

    ; 4. three hypercalls for the price of one entry into Xen
    mov ebx, batch
    mov ecx, 3
    hypercall __HYPERVISOR_multicall

    ; 5. cli is privileged: in ring 1 it faults, and Xen hands the #GP to our handler
    cli
    print "back after the #GP", 10

    ; 6. user code in ring 3: iret there, with the virtual IF on
    push dword FLAT_RING3_DS            ; SS
    push dword user_stack_top           ; ESP
    push dword 0x202                    ; EFLAGS
    push dword FLAT_RING3_CS            ; CS
    push dword user_program             ; EIP
    iretd

; ---------------------------------------------------------------- the kernel's handlers, ring 1
; The event callback: Xen pushed EFLAGS (its IF is the virtual IF of the interrupted code), CS and
; EIP, and masked events. Walk the two-level bitmap the way Linux's xen_evtchn_do_upcall does.
event_callback:
    pushad
    inc dword [upcalls]
    mov esi, [shared_info]
.again:
    mov byte [esi + UPCALL_PENDING], 0  ; clear first, then look: nothing is missed
    xor ebx, ebx
    xchg ebx, [esi + PENDING_SEL]       ; take the selector: which words have pending ports
.word:
    bsf ecx, ebx
    jz .done
    btr ebx, ecx
    mov edx, [esi + EVTCHN_PENDING + ecx * 4]
    mov eax, [esi + EVTCHN_MASK + ecx * 4]
    not eax
    and edx, eax
.port:
    bsf eax, edx
    jz .word
    btr edx, eax
    mov edi, ecx
    shl edi, 5
    add edi, eax                        ; port = word * 32 + bit
    lock btr [esi + EVTCHN_PENDING], edi
    print "event on port "
    mov eax, edi
    call print_decimal
    print 10
    jmp .port
.done:
    test dword [esp + 32 + 8], 0x200    ; the frame's EFLAGS: was the virtual IF on where we interrupted?
    jz .return
    mov byte [esi + UPCALL_MASK], 0     ; then turn it back on, and look again before leaving
    cmp byte [esi + UPCALL_PENDING], 0
    je .return
    mov byte [esi + UPCALL_MASK], 1
    jmp .again
.return:
    popad
    iretd

failsafe_callback:
    print "failsafe callback", 10
    jmp $

gp_handler:                             ; [esp] = error code, [esp + 4] = EIP of the cli
    print "#GP bounced to the kernel: cli is privileged in ring 1", 10
    add dword [esp + 4], 1              ; skip the one-byte cli
    add esp, 4
    iretd

syscall_handler:                        ; int 0x80 from ring 3; Xen switched to kernel_stack_top
    cmp eax, 1
    je .write
    mov [shutdown_reason], ebx          ; eax = 2: exit(ebx)
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_reason
    hypercall __HYPERVISOR_sched_op
.write:                                 ; eax = 1: write(ebx = buffer, ecx = length)
    mov edx, ebx
    call console_write
    iretd

; ---------------------------------------------------------------- the user program, ring 3
user_program:
    mov eax, 1
    mov ebx, user_message
    mov ecx, user_message_len
    int 0x80
    mov eax, 2
    mov ebx, 7                          ; exit(7)
    int 0x80
    jmp $

user_message: db "hello from ring 3, through int 0x80 and Xen's trap bounce", 10
user_message_len equ $ - user_message

; ---------------------------------------------------------------- routines
console_write:                          ; ECX bytes at EDX; keeps every register
    pushad
    mov ebx, CONSOLEIO_write
    hypercall __HYPERVISOR_console_io
    popad
    ret

print_decimal:                          ; EAX as decimal; keeps every register
    pushad
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
    call console_write
    popad
    ret

; ---------------------------------------------------------------- data
align 4
trap_table:                             ; trap_info { vector, flags, cs, address }
    db 13, 0                            ; DPL 0: only a fault, never `int 13`
    dw FLAT_RING1_CS
    dd gp_handler
    db 0x80, 3                          ; DPL 3: user code may use int 0x80
    dw FLAT_RING1_CS
    dd syscall_handler
    dd 0, 0                             ; address 0 ends the table

batch:                                  ; multicall_entry { op, result, args[6] }
    dd __HYPERVISOR_console_io, 0, CONSOLEIO_write, batch_1_len, batch_1, 0, 0, 0
    dd __HYPERVISOR_console_io, 0, CONSOLEIO_write, batch_2_len, batch_2, 0, 0, 0
    dd __HYPERVISOR_console_io, 0, CONSOLEIO_write, batch_3_len, batch_3, 0, 0, 0
batch_1: db "multicall: one "
batch_1_len equ $ - batch_1
batch_2: db "entry into Xen, "
batch_2_len equ $ - batch_2
batch_3: db "three console writes", 10
batch_3_len equ $ - batch_3

alloc_unbound:                          ; evtchn_alloc_unbound { dom, remote_dom, port }
.dom:        dw 0
.remote_dom: dw 0
.port:       dd 0
bind_interdomain:                       ; evtchn_bind_interdomain { remote_dom, remote_port, local_port }
.remote_dom:  dw 0, 0
.remote_port: dd 0
.local_port:  dd 0
send:                                   ; evtchn_send { port }
.port: dd 0

shared_info:     dd 0
upcalls:         dd 0
shutdown_reason: dd 0
digits:          times 10 db 0
digits_end:

align 16
times 1024 db 0
kernel_stack_top:
times 1024 db 0
user_stack_top:
