; pv_ops.asm - one kernel binary for two platforms: the bare vmkit PC, or Xen.
;
; At boot it asks CPUID leaf 0x40000000 who is underneath. On the bare vmkit PC the leaf reads zeros;
; under vmkit's Xen it reads "XenVMMXenVMM". The kernel then fills its table of low-level operations,
; pv_ops, with the native or the Xen versions, as Linux's paravirt_ops does, and sets up its platform.
;
; Asking CPUID is vmkit's shortcut: its Xen traps every cpuid of a PV guest and answers that leaf.
; On real hardware cpuid does not trap in ring 1 unless the CPU has CPUID faulting and Xen turns it
; on (Xen 4.2 does for domUs, not dom0), so a plain cpuid there returns the bare CPU's values. Real
; PV kernels ask Xen with its forced-emulation prefix, `ud2; .ascii "xen"; cpuid` (XEN_EMULATE_PREFIX
; in Xen's public/arch-x86/xen.h and Linux's arch/x86/include/asm/xen/interface.h): the ud2 faults
; into Xen, which checks the signature and emulates the cpuid after it. And Linux 2.6.23 never had
; to ask: Xen enters a PV kernel at the entry its Xen ELF note names (XEN_ELFNOTE_ENTRY: startup_xen,
; arch/i386/xen/xen-head.S), which calls xen_start_kernel to install the Xen paravirt_ops; a native
; boot comes in through the normal entry and keeps the native ones.
;
;
;   operation      native (ring 0)                    Xen (ring 1)
;   irq_disable    cli                                mask byte := 1 (shared_info)
;   irq_enable     sti                                mask byte := 0; a hypercall only if an event is pending
;   safe_halt      sti; hlt                           SCHEDOP_block
;   console_write  out to COM1, byte by byte          console_io hypercall
;   power_off      isa-debug-exit                     SCHEDOP_shutdown(poweroff)
;   the timer      PIT -> PIC IRQ0 -> IDT vector 0x20 periodic timer -> VIRQ_TIMER -> event callback
;   int 0x80       IDT gate, TSS esp0 stack           trap table entry, stack_switch stack
;   paging         its own page tables, CR3, CR0.PG   on from the start, on the domain builder's tables
;   make_pte       a PTE of the page's address        of its machine frame (start_info's mfn_list)
;   set_pte        a store into the page table, and   update_va_mapping(va, pte, UVMF_INVLPG): the
;                  invlpg                             table is read-only, Xen checks the new entry
;
; Everything above the table (kernel_main, the timer tick, the system calls, the user program, the
; window page it maps onto two pages in turn) is the same code on both, and prints the same lines.
; Under Xen a page-table entry holds a machine frame, not the address the kernel thinks of as
; physical; make_pte is where it translates, as Linux's xen_make_pte does. Linux's Xen port sets a
; PTE of the current address space with update_va_mapping (xen_set_pte_at), as set_pte does here.
bits 32
org 0x100000

KERNEL_CS      equ 0x08                ; the kernel's own GDT, on bare hardware
KERNEL_DS      equ 0x10
USER_CS        equ 0x18 | 3
USER_DS        equ 0x20 | 3
TSS_SEL        equ 0x28
COM1           equ 0x3f8
COM1_LSR       equ 0x3fd
DEBUG_EXIT     equ 0xf4
PIT_DIVISOR    equ 11932               ; 1193182 Hz / 100 Hz

FLAT_RING1_CS  equ 0xe019              ; Xen's flat segments
FLAT_RING1_SS  equ 0xe021
FLAT_RING3_CS  equ 0xe02b
FLAT_RING3_DS  equ 0xe033
__HYPERVISOR_set_trap_table   equ 0
__HYPERVISOR_stack_switch     equ 3
__HYPERVISOR_update_va_mapping equ 14
__HYPERVISOR_set_callbacks    equ 4
__HYPERVISOR_xen_version      equ 17
__HYPERVISOR_console_io       equ 18
__HYPERVISOR_vcpu_op          equ 24
__HYPERVISOR_sched_op         equ 29
__HYPERVISOR_event_channel_op equ 32
CONSOLEIO_write               equ 0
SCHEDOP_block                 equ 1
SCHEDOP_shutdown              equ 2
EVTCHNOP_bind_virq            equ 1
VIRQ_TIMER                    equ 0
VCPUOP_set_periodic_timer     equ 6
SI_SHARED_INFO                equ 36
SI_MFN_LIST                   equ 68
UVMF_INVLPG                   equ 2
UPCALL_PENDING                equ 0
UPCALL_MASK                   equ 1
PENDING_SEL                   equ 4
EVTCHN_PENDING                equ 2048
EVTCHN_MASK                   equ 2176

SYS_WRITE      equ 1
SYS_EXIT       equ 2
PTE_FLAGS      equ 0x27                ; present, writable, user, accessed
WINDOW         equ 0x3ff000            ; the page the kernel maps onto page_a, then page_b

%macro print 1+                         ; through pv_ops.console_write; every register is kept
    jmp %%over
%%text: db %1
%%over:
    push edx
    push ecx
    mov edx, %%text
    mov ecx, %%over - %%text
    call [pv_ops.console_write]
    pop ecx
    pop edx
%endmacro

%macro hypercall 1
    mov eax, %1
    int 0x82
%endmacro

; ---------------------------------------------------------------- boot: which platform is this?
start:
    mov [boot_esi], esi
    mov eax, 0x40000000
    cpuid
    cmp ebx, "XenV"
    jne native_setup
    cmp ecx, "MMXe"
    jne native_setup
    cmp edx, "nVMM"
    jne native_setup
    jmp xen_setup

; ---------------------------------------------------------------- the kernel proper: one version
kernel_main:
    print "pv_ops kernel: up", 10
    call [pv_ops.irq_enable]
.wait:                                  ; sleep until the timer has ticked three times
    call [pv_ops.irq_disable]
    cmp dword [ticks], 3
    jae .ticked
    call [pv_ops.safe_halt]             ; enables interrupts and sleeps, with no window in between
    jmp .wait
.ticked:
    call [pv_ops.irq_enable]
    print "timer: 3 ticks", 10

    mov ecx, 1000                       ; a thousand short critical sections
.critical:
    call [pv_ops.irq_disable]
    inc dword [counter]
    call [pv_ops.irq_enable]
    loop .critical
    print "critical sections: "
    mov eax, [counter]
    call print_decimal
    print 10

    mov eax, page_a                     ; the window onto page_a, then onto page_b
    call map_window
    mov eax, page_b
    call map_window

    push dword [pv_user_ds]             ; SS: into ring 3, with interrupts on
    push dword user_stack_top           ; ESP
    push dword 0x202                    ; EFLAGS
    push dword [pv_user_cs]             ; CS
    push dword user_program             ; EIP
    mov eax, [pv_user_ds]
    mov ds, ax
    mov es, ax
    iretd

map_window:                             ; EAX = a page of the kernel: map WINDOW onto it, show it
    or eax, PTE_FLAGS
    call [pv_ops.make_pte]
    mov edi, WINDOW
    call [pv_ops.set_pte]
    print "paging: the window shows "
    push edx
    push ecx
    mov edx, WINDOW
    mov ecx, 6
    call [pv_ops.console_write]
    pop ecx
    pop edx
    print 10
    ret

timer_tick:                             ; called by either platform's interrupt path
    inc dword [ticks]
    ret

syscall_entry:                          ; int 0x80 from ring 3, through the IDT or Xen's trap bounce
    cmp eax, SYS_WRITE
    jne .exit
    mov edx, ebx
    call [pv_ops.console_write]
    iretd
.exit:
    print "kernel: the user program exited with "
    mov eax, ebx
    call print_decimal
    print 10
    call [pv_ops.power_off]

fault_entry:                            ; #GP: nothing in this kernel should cause one
    print "kernel: unexpected #GP", 10
    call [pv_ops.power_off]

user_program:                           ; ring 3
    mov eax, SYS_WRITE
    mov ebx, user_message
    mov ecx, user_message_len
    int 0x80
    mov eax, SYS_EXIT
    xor ebx, ebx
    int 0x80
    jmp $
user_message: db "user: hello from ring 3", 10
user_message_len equ $ - user_message

print_decimal:                          ; EAX; every register is kept
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
    call [pv_ops.console_write]
    popad
    ret

; ---------------------------------------------------------------- native: ring 0 on the vmkit PC
native_setup:
    lgdt [gdtr]
    jmp KERNEL_CS:.reload
.reload:
    mov ax, KERNEL_DS
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, kernel_stack_top
    mov eax, tss                        ; the TSS: the stack for interrupts and int 0x80 from ring 3
    mov [gdt_tss + 2], ax
    shr eax, 16
    mov [gdt_tss + 4], al
    mov [gdt_tss + 7], ah
    mov dword [tss + 4], kernel_stack_top
    mov dword [tss + 8], KERNEL_DS
    mov word [tss + 102], 104           ; no I/O bitmap
    mov ax, TSS_SEL
    ltr ax
    mov eax, native_timer_interrupt
    mov ebx, 0x20
    mov cl, 0x8e                        ; interrupt gate, DPL 0
    call set_gate
    mov eax, syscall_entry
    mov ebx, 0x80
    mov cl, 0xee                        ; interrupt gate, DPL 3
    call set_gate
    mov eax, fault_entry
    mov ebx, 13
    mov cl, 0x8e
    call set_gate
    lidt [idtr]
    mov al, 0x11                        ; PIC: IRQ 0-7 at vectors 0x20-0x27, only IRQ0 unmasked
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 4
    out 0x21, al
    mov al, 1
    out 0x21, al
    mov al, 0xfe
    out 0x21, al
    mov al, 0x34                        ; PIT channel 0, rate generator, 100 Hz
    out 0x43, al
    mov ax, PIT_DIVISOR
    out 0x40, al
    mov al, ah
    out 0x40, al
    mov edi, native_l1                  ; paging: the first 4 MiB mapped onto themselves
    mov eax, PTE_FLAGS
.pte:
    stosd
    add eax, 0x1000
    cmp edi, native_l1 + 4096
    jne .pte
    mov dword [native_pd], native_l1 + PTE_FLAGS
    mov eax, native_pd
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov esi, native_ops
    call install_ops
    mov dword [pv_user_cs], USER_CS
    mov dword [pv_user_ds], USER_DS
    jmp kernel_main

set_gate:                               ; IDT[ebx] = handler eax, type and DPL in cl
    mov [idt + ebx * 8], ax
    mov word [idt + ebx * 8 + 2], KERNEL_CS
    mov byte [idt + ebx * 8 + 4], 0
    mov [idt + ebx * 8 + 5], cl
    shr eax, 16
    mov [idt + ebx * 8 + 6], ax
    ret

native_irq_disable:
    cli
    ret

native_irq_enable:
    sti
    ret

native_safe_halt:
    sti                                 ; the interrupt shadow: hlt runs before any interrupt
    hlt
    ret

native_console_write:                   ; ECX bytes at EDX to COM1
    pushad
    mov esi, edx
.byte:
    jecxz .done
    mov dx, COM1_LSR
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    lodsb
    mov dx, COM1
    out dx, al
    dec ecx
    jmp .byte
.done:
    popad
    ret

native_power_off:
    mov al, 0
    out DEBUG_EXIT, al
    cli
    hlt

native_make_pte:                        ; EAX = physical address | flags: the PTE is that
    ret

native_set_pte:                         ; EDI = the virtual address, EAX = the new PTE
    push ebx
    mov ebx, edi
    shr ebx, 12
    and ebx, 0x3ff
    mov [native_l1 + ebx * 4], eax
    invlpg [edi]
    pop ebx
    ret

native_timer_interrupt:
    pushad
    call timer_tick
    mov al, 0x20                        ; end of interrupt, at the PIC
    out 0x20, al
    popad
    iretd

; ---------------------------------------------------------------- Xen: ring 1, hypercalls
xen_setup:
    mov esp, kernel_stack_top
    mov esi, [boot_esi]
    mov eax, [esi + SI_SHARED_INFO]
    mov [shared_info], eax
    mov eax, [esi + SI_MFN_LIST]
    mov [mfn_list], eax
    mov ebx, FLAT_RING1_CS              ; the event callback: where the timer's events arrive
    mov ecx, xen_event_callback
    mov edx, FLAT_RING1_CS
    mov esi, xen_event_callback
    hypercall __HYPERVISOR_set_callbacks
    mov ebx, trap_table                 ; int 0x80 and #GP: the same handlers as the IDT's
    hypercall __HYPERVISOR_set_trap_table
    mov ebx, FLAT_RING1_SS              ; the stack for traps from ring 3: the TSS's job natively
    mov ecx, kernel_stack_top
    hypercall __HYPERVISOR_stack_switch
    mov ebx, EVTCHNOP_bind_virq         ; the timer: VIRQ_TIMER on a port, 100 Hz
    mov ecx, bind_virq
    hypercall __HYPERVISOR_event_channel_op
    mov eax, [bind_virq.port]
    mov [timer_port], eax
    mov ebx, VCPUOP_set_periodic_timer
    xor ecx, ecx
    mov edx, timer_period
    hypercall __HYPERVISOR_vcpu_op
    mov esi, xen_ops
    call install_ops
    mov dword [pv_user_cs], FLAT_RING3_CS
    mov dword [pv_user_ds], FLAT_RING3_DS
    jmp kernel_main

xen_irq_disable:                        ; the virtual IF is a byte in shared_info: no trap, no hypercall
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 1
    pop eax
    ret

xen_irq_enable:
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 0
    cmp byte [eax + UPCALL_PENDING], 0  ; anything arrive while masked? then let Xen deliver it
    je .done
    pushad
    xor ebx, ebx
    hypercall __HYPERVISOR_xen_version
    popad
.done:
    pop eax
    ret

xen_safe_halt:
    pushad
    mov ebx, SCHEDOP_block
    xor ecx, ecx
    hypercall __HYPERVISOR_sched_op
    popad
    ret

xen_console_write:                      ; ECX bytes at EDX
    pushad
    mov ebx, CONSOLEIO_write
    hypercall __HYPERVISOR_console_io
    popad
    ret

xen_power_off:
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_poweroff
    hypercall __HYPERVISOR_sched_op
    jmp $

xen_make_pte:                           ; EAX = pseudo-physical address | flags -> machine frame | flags
    push ebx
    push ecx
    mov ecx, eax
    and ecx, 0xfff
    shr eax, 12
    mov ebx, [mfn_list]
    mov eax, [ebx + eax * 4]
    shl eax, 12
    or eax, ecx
    pop ecx
    pop ebx
    ret

xen_set_pte:                            ; EDI = the virtual address, EAX = the new PTE
    pushad
    mov ebx, edi
    mov ecx, eax
    xor edx, edx                        ; the PTE's high word (none without PAE)
    mov esi, UVMF_INVLPG
    hypercall __HYPERVISOR_update_va_mapping
    popad
    ret

xen_event_callback:                     ; every pending port; the timer's calls timer_tick
    pushad
    mov esi, [shared_info]
.again:
    mov byte [esi + UPCALL_PENDING], 0
    xor ebx, ebx
    xchg ebx, [esi + PENDING_SEL]
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
    add edi, eax
    lock btr [esi + EVTCHN_PENDING], edi
    cmp edi, [timer_port]
    jne .port
    call timer_tick
    jmp .port
.done:
    test dword [esp + 32 + 8], 0x200    ; restore the interrupted code's virtual IF
    jz .return
    mov byte [esi + UPCALL_MASK], 0
    cmp byte [esi + UPCALL_PENDING], 0
    je .return
    mov byte [esi + UPCALL_MASK], 1
    jmp .again
.return:
    popad
    iretd

install_ops:                            ; copy the table at ESI into pv_ops
    mov edi, pv_ops
    mov ecx, PV_OPS_COUNT
    rep movsd
    ret

; ---------------------------------------------------------------- data
align 4
pv_ops:
.irq_disable:   dd 0
.irq_enable:    dd 0
.safe_halt:     dd 0
.console_write: dd 0
.power_off:     dd 0
.make_pte:      dd 0
.set_pte:       dd 0
PV_OPS_COUNT equ ($ - pv_ops) / 4
native_ops: dd native_irq_disable, native_irq_enable, native_safe_halt, native_console_write, native_power_off
            dd native_make_pte, native_set_pte
xen_ops:    dd xen_irq_disable, xen_irq_enable, xen_safe_halt, xen_console_write, xen_power_off
            dd xen_make_pte, xen_set_pte

pv_user_cs:  dd 0
pv_user_ds:  dd 0
boot_esi:    dd 0
shared_info: dd 0
mfn_list:    dd 0
timer_port:  dd 0
ticks:       dd 0
counter:     dd 0
shutdown_poweroff: dd 0                 ; struct sched_shutdown { SHUTDOWN_poweroff }
bind_virq:                              ; evtchn_bind_virq { virq, vcpu, port }
    dd VIRQ_TIMER, 0
.port: dd 0
timer_period: dq 10000000               ; 10 ms, in nanoseconds
trap_table:                             ; trap_info { vector, flags, cs, address }
    db 0x80, 3                          ; DPL 3, events left unmasked on entry: on real x86_32 Xen this
                                        ; entry gets a direct trap gate (init_int80_direct_trap) and int
                                        ; 0x80 goes from ring 3 to syscall_entry without entering Xen;
                                        ; vmkit's Xen bounces it, so the path shows in the run's events
    dw FLAT_RING1_CS
    dd syscall_entry
    db 13, 0
    dw FLAT_RING1_CS
    dd fault_entry
    dd 0, 0
digits:      times 10 db 0
digits_end:

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff               ; 0x08 kernel code
    dq 0x00cf92000000ffff               ; 0x10 kernel data
    dq 0x00cffa000000ffff               ; 0x18 user code
    dq 0x00cff2000000ffff               ; 0x20 user data
gdt_tss:
    dw 103, 0
    db 0, 0x89, 0, 0
gdtr:
    dw $ - gdt - 1
    dd gdt
align 8
idt:
    times 256 dq 0
idtr:
    dw 256 * 8 - 1
    dd idt
tss:
    times 104 db 0

align 16
times 2048 db 0
kernel_stack_top:
times 1024 db 0
user_stack_top:

align 4096
native_pd: times 4096 db 0              ; the native kernel's page directory and page table
native_l1: times 4096 db 0
page_a:    db "page A"
           times 4096 - 6 db 0
page_b:    db "page B"
           times 4096 - 6 db 0
