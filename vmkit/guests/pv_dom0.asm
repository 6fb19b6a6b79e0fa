; pv_dom0.asm - dom0: the privileged domain that builds a domU and serves its disk (Xen's blkback).
;
; Xen boots dom0 with a domU kernel as its boot module (start_info mod_start, mod_len). dom0
;  1. binds VIRQ_DOM_EXC, so Xen tells it when a domain shuts down;
;  2. creates the domU with the management hypercall (domctl createdomain: a paused domain with
;     frames and nothing in them), then builds it, the work of Xen's toolstack (libxc's domain
;     builder): it learns the domU's machine frames (getmemlist), maps them one at a time into its
;     own address space (update_va_mapping_otherdomain: a PTE of dom0's that maps a frame of the
;     domU's, which only dom0 may ask for), and writes the kernel, start_info, the mfn_list, the page
;     tables and the store page's grant; it unmaps the last one, has Xen validate and pin the domU's
;     page directory (mmuext_op on the domU's behalf), and gives the vcpu its registers and page
;     directory (setvcpucontext). Then it binds the store event channel it opened and unpauses it;
;  3. waits for the frontend to publish its ring in the store page, maps the ring page the domU
;     granted it, binds the domU's event channel, and says it is connected;
;  4. serves the ring: for each request it maps the data page the request names, copies sectors
;     between it and its RAM disk, unmaps it, and puts a response on the ring;
;  5. when the domU has shut down, reads its shutdown code (getdomaininfo), destroys it, and shuts
;     itself down.
bits 32
org 0x100000

FLAT_RING1_CS  equ 0xe019
__HYPERVISOR_set_callbacks    equ 4
__HYPERVISOR_console_io       equ 18
__HYPERVISOR_update_va_mapping_otherdomain equ 22
__HYPERVISOR_mmuext_op        equ 26
__HYPERVISOR_grant_table_op   equ 20
__HYPERVISOR_sched_op         equ 29
__HYPERVISOR_event_channel_op equ 32
__HYPERVISOR_domctl           equ 36
CONSOLEIO_write               equ 0
SCHEDOP_block                 equ 1
SCHEDOP_shutdown              equ 2
SHUTDOWN_poweroff             equ 0
EVTCHNOP_bind_interdomain     equ 0
EVTCHNOP_bind_virq            equ 1
EVTCHNOP_send                 equ 4
EVTCHNOP_alloc_unbound        equ 6
VIRQ_DOM_EXC                  equ 3
GNTTABOP_map_grant_ref        equ 0
GNTTABOP_unmap_grant_ref      equ 1
GNTMAP_host_map               equ 2
GNTTAB_RESERVED_XENSTORE      equ 1
XEN_DOMCTL_INTERFACE_VERSION  equ 8
XEN_DOMCTL_createdomain       equ 1
XEN_DOMCTL_destroydomain      equ 2
XEN_DOMCTL_unpausedomain      equ 4
XEN_DOMCTL_getdomaininfo      equ 5
XEN_DOMCTL_getmemlist         equ 6
XEN_DOMCTL_setvcpucontext     equ 12
MMUEXT_PIN_L2_TABLE           equ 1
UVMF_INVLPG                   equ 2
GTF_permit_access             equ 1
FLAT_RING1_SS  equ 0xe021
FLAT_RING1_DS  equ 0xe021
XEN_DOMINF_shutdown           equ 1 << 2

SI_SHARED_INFO   equ 36
SI_MOD_START     equ 72
SI_MOD_LEN       equ 76
UPCALL_PENDING   equ 0
UPCALL_MASK      equ 1
PENDING_SEL      equ 4
EVTCHN_PENDING   equ 2048

STORE_RING_REF       equ 0             ; the store page (see pv_domu.asm)
STORE_EVENT_CHANNEL  equ 4
STORE_FRONTEND_STATE equ 8
STORE_BACKEND_STATE  equ 12
XenbusStateInitialised equ 3
XenbusStateConnected   equ 4

SRING_REQ_PROD   equ 0                 ; io/ring.h and io/blkif.h, as in pv_domu.asm
SRING_REQ_EVENT  equ 4
SRING_RSP_PROD   equ 8
SRING_RSP_EVENT  equ 12
SRING_SLOTS      equ 64
RING_SIZE        equ 32
SLOT_SIZE        equ 108
REQ_OPERATION    equ 0
REQ_ID           equ 4
REQ_SECTOR       equ 12
REQ_SEG_GREF     equ 20
REQ_SEG_FIRST    equ 24
REQ_SEG_LAST     equ 25
RSP_ID           equ 0
RSP_OPERATION    equ 8
RSP_STATUS       equ 10
BLKIF_OP_READ    equ 0
BLKIF_OP_WRITE   equ 1
BLKIF_RSP_ERROR  equ -1
SECTOR_SIZE      equ 512

; the domU dom0 builds, in the layout of vmkit's domain builder (its pseudo-physical frames)
DOMU_PAGES     equ 1024                ; 4 MiB
PFN_SHARED     equ 1                   ; shared_info (Xen's: masked, nothing to write)
PFN_START_INFO equ 2
PFN_GRANT      equ 3                   ; its grant table
PFN_STORE      equ 4
PFN_PD         equ 5                   ; the page directory
PFN_PT         equ 6                   ; the page table: 4 MiB
PFN_MFN_LIST   equ 7
PFN_KERNEL     equ 0x100
DOMU_STACK     equ 0x400000
PTE_RW         equ 0x27                ; present, writable, user, accessed
PTE_RO         equ 0x25                ; ... read-only: the page-table frames
PDE            equ 0x67                ; present, writable, user, accessed, dirty
WINDOW_PTE     equ 0x23                ; dom0's mapping of a domU frame: present, writable, accessed
; struct vcpu_guest_context (x86_32): flags at 512, user_regs at 516, kernel_ss/sp at 2708, ctrlreg at 2716
VGC_FLAGS      equ 512
VGC_ESI        equ 516 + 12
VGC_EIP        equ 516 + 32
VGC_CS         equ 516 + 36
VGC_EFLAGS     equ 516 + 40
VGC_ESP        equ 516 + 44
VGC_SS         equ 516 + 48
VGC_ES         equ 516 + 52            ; then ds, fs, gs, 4 bytes apart
VGC_KERNEL_SS  equ 2708
VGC_KERNEL_SP  equ 2712
VGC_CR3        equ 2716 + 3 * 4
VGC_EVENT_CS   equ 2780
VGC_FAILSAFE_CS equ 2788
VGCF_in_kernel equ 1 << 2
VGCF_online    equ 1 << 5

BUILD_WINDOW equ 0x3f0000              ; the page through which dom0 writes the domU's frames
STORE_MAP  equ 0x300000                ; where dom0 maps the domU's pages in its own memory
RING_MAP   equ 0x301000
DATA_MAP   equ 0x302000
RAM_DISK   equ 0x280000
DISK_SECTORS equ 64

%macro print 1+
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

%macro hypercall 1
    mov eax, %1
    int 0x82
%endmacro

%macro domctl 1                         ; the management hypercall, on the domain in [domid]
    mov dword [domctl_op], %1
    mov ax, [domid]
    mov [domctl_op.domain], ax
    mov ebx, domctl_op
    hypercall __HYPERVISOR_domctl
%endmacro

start:
    mov esp, stack_top
    mov eax, [esi + SI_SHARED_INFO]
    mov [shared_info], eax
    mov eax, [esi + SI_MOD_START]
    mov [kernel_start], eax
    mov eax, [esi + SI_MOD_LEN]
    mov [kernel_len], eax

    mov ebx, FLAT_RING1_CS
    mov ecx, event_callback
    mov edx, FLAT_RING1_CS
    mov esi, event_callback
    hypercall __HYPERVISOR_set_callbacks
    call events_on

    ; 1. hear about domains that shut down
    mov dword [bind_virq], VIRQ_DOM_EXC
    mov ebx, EVTCHNOP_bind_virq
    mov ecx, bind_virq
    hypercall __HYPERVISOR_event_channel_op
    mov eax, [bind_virq.port]
    mov [dom_exc_port], eax

    ; the RAM disk: sector 1 holds a message for the domU
    mov esi, disk_message
    mov edi, RAM_DISK + 1 * SECTOR_SIZE
    mov ecx, disk_message_len
    rep movsb

    ; 2. create the domU, paused and empty, then build it from the boot module
    print "dom0: creating a domain from the boot module ("
    mov eax, [kernel_len]
    call print_decimal
    print " bytes)", 10
    mov word [domid], 0                 ; 0: let Xen choose the domain id
    mov eax, [kernel_start]             ; vmkit's fields: the kernel its trace will watch,
    mov [createdomain.kernel], eax
    mov eax, [kernel_len]
    mov [createdomain.kernel_len], eax
    mov dword [createdomain.pages], DOMU_PAGES   ; and the domain's pages
    domctl XEN_DOMCTL_createdomain
    test eax, eax
    jnz fail
    mov ax, [domctl_op.domain]
    mov [domid], ax
    print "dom0: created domain "
    movzx eax, word [domid]
    call print_decimal
    print " (paused): "
    mov eax, DOMU_PAGES
    call print_decimal
    print " pages, nothing in them", 10
    call build_domain
    print "dom0: built it as Xen's toolstack does: its kernel, start_info, mfn_list and page tables", 10
    print "dom0: Xen validated and pinned its page directory, machine frame 0x"
    mov eax, [domu_mfns + PFN_PD * 4]
    call print_hex
    print 10
    mov ax, [domid]                     ; bind the store channel we opened in the domU
    mov [bind_interdomain.remote_dom], ax
    mov eax, [alloc_unbound.port]
    mov [bind_interdomain.remote_port], eax
    call bind
    mov [store_port], eax
    mov dword [map.ref], GNTTAB_RESERVED_XENSTORE
    mov dword [map.host_addr], STORE_MAP
    call map_grant
    jnz fail
    mov eax, [map.handle]
    mov [store_handle], eax
    domctl XEN_DOMCTL_unpausedomain
    print "dom0: unpaused it", 10

    ; 3. wait for the frontend to publish its ring
.wait_frontend:
    mov eax, [store_port]
    call wait_event
    cmp dword [STORE_MAP + STORE_FRONTEND_STATE], XenbusStateInitialised
    jne .wait_frontend
    mov eax, [STORE_MAP + STORE_RING_REF]
    mov [map.ref], eax
    mov dword [map.host_addr], RING_MAP
    call map_grant
    jnz fail
    mov eax, [map.handle]
    mov [ring_handle], eax
    mov eax, [STORE_MAP + STORE_EVENT_CHANNEL]
    mov [bind_interdomain.remote_port], eax
    call bind
    mov [blk_port], eax
    mov dword [RING_MAP + SRING_REQ_EVENT], 1
    mov dword [STORE_MAP + STORE_BACKEND_STATE], XenbusStateConnected
    mov eax, [store_port]
    call notify
    print "dom0: blkback connected: ring-ref "
    mov eax, [STORE_MAP + STORE_RING_REF]
    call print_decimal
    print ", event channel "
    mov eax, [STORE_MAP + STORE_EVENT_CHANNEL]
    call print_decimal
    print 10

    ; 4. serve the ring until the domain shuts down
.serve:
    call serve_requests
    call events_off
    mov eax, [req_cons]                 ; the final check of ring.h: ask to be woken for the next one
    inc eax
    mov [RING_MAP + SRING_REQ_EVENT], eax
    dec eax
    cmp eax, [RING_MAP + SRING_REQ_PROD]
    jne .more
    mov eax, [dom_exc_port]
    btr [fired], eax
    jc .domain_event
    call block
    jmp .serve
.more:
    call events_on
    jmp .serve
.domain_event:
    call events_on
    domctl XEN_DOMCTL_getdomaininfo
    test dword [getdomaininfo + GETDOMAININFO_FLAGS], XEN_DOMINF_shutdown
    jz .serve                           ; some other domain's news

    ; 5. the domU is down: read why, clean up, destroy it
    print "dom0: domain "
    movzx eax, word [domid]
    call print_decimal
    print " shut down with code "
    mov eax, [getdomaininfo + GETDOMAININFO_FLAGS]
    shr eax, 16
    and eax, 0xff
    call print_decimal
    print 10
    mov eax, [ring_handle]
    call unmap_grant
    mov eax, [store_handle]
    call unmap_grant
    domctl XEN_DOMCTL_destroydomain
    test eax, eax
    jnz fail
    print "dom0: destroyed it; shutting down", 10
    mov dword [shutdown_reason], SHUTDOWN_poweroff
    jmp shutdown

fail:
    print "dom0: a hypercall failed", 10
    mov dword [shutdown_reason], 3      ; SHUTDOWN_crash
shutdown:
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_reason
    hypercall __HYPERVISOR_sched_op
    jmp $

; ---------------------------------------------------------------- building the domU (Xen's toolstack)
build_domain:
    ; its machine frames: the domain's page list, 64-bit entries
    mov dword [getmemlist.max_pfns], DOMU_PAGES
    mov dword [getmemlist.buffer], domu_frames
    domctl XEN_DOMCTL_getmemlist
    test eax, eax
    jnz fail
    mov esi, domu_frames                ; to 32-bit entries: the domU's mfn_list
    mov edi, domu_mfns
    mov ecx, DOMU_PAGES
.narrow:
    movsd
    add esi, 4
    loop .narrow
    ; the store channel: a port of the domU's, offered to dom0
    mov ax, [domid]
    mov [alloc_unbound.dom], ax
    mov word [alloc_unbound.remote_dom], 0
    mov ebx, EVTCHNOP_alloc_unbound
    mov ecx, alloc_unbound
    hypercall __HYPERVISOR_event_channel_op
    test eax, eax
    jnz fail
    ; the kernel, from pseudo-physical 0x100000 on, a page at a time through the window
    mov esi, [kernel_start]
    mov edx, [kernel_len]
    mov ebx, PFN_KERNEL
.kernel:
    call map_frame
    mov ecx, 4096
    cmp edx, ecx
    jae .whole
    mov ecx, edx
.whole:
    sub edx, ecx
    mov edi, BUILD_WINDOW
    rep movsb
    inc ebx
    test edx, edx
    jnz .kernel
    ; start_info
    mov ebx, PFN_START_INFO
    call map_frame
    mov esi, magic
    mov edi, BUILD_WINDOW
    mov ecx, magic_len
    rep movsb
    mov dword [BUILD_WINDOW + 32], DOMU_PAGES          ; nr_pages
    mov dword [BUILD_WINDOW + 36], PFN_SHARED << 12    ; shared_info, where the domU finds it
    mov eax, [domu_mfns + PFN_STORE * 4]
    mov [BUILD_WINDOW + 44], eax                       ; store_mfn: a machine frame
    mov eax, [alloc_unbound.port]
    mov [BUILD_WINDOW + 48], eax                       ; store_evtchn
    mov dword [BUILD_WINDOW + 60], PFN_PD << 12        ; pt_base
    mov dword [BUILD_WINDOW + 64], 2                   ; nr_pt_frames
    mov dword [BUILD_WINDOW + 68], PFN_MFN_LIST << 12  ; mfn_list
    ; the mfn_list
    mov ebx, PFN_MFN_LIST
    call map_frame
    mov esi, domu_mfns
    mov edi, BUILD_WINDOW
    mov ecx, DOMU_PAGES
    rep movsd
    ; the page table: every page but the first, the two page-table frames read-only
    mov ebx, PFN_PT
    call map_frame
    mov edi, BUILD_WINDOW
    mov dword [edi], 0
    mov ecx, 1
.pte:
    mov eax, [domu_mfns + ecx * 4]
    shl eax, 12
    or eax, PTE_RW
    cmp ecx, PFN_PD
    je .read_only
    cmp ecx, PFN_PT
    jne .store
.read_only:
    and eax, ~2
.store:
    mov [edi + ecx * 4], eax
    inc ecx
    cmp ecx, DOMU_PAGES
    jne .pte
    ; the page directory: its first entry is the page table
    mov ebx, PFN_PD
    call map_frame
    mov eax, [domu_mfns + PFN_PT * 4]
    shl eax, 12
    or eax, PDE
    mov [BUILD_WINDOW], eax
    ; its grant table: the store page, granted to dom0 (GNTTAB_RESERVED_XENSTORE)
    mov ebx, PFN_GRANT
    call map_frame
    mov word [BUILD_WINDOW + GNTTAB_RESERVED_XENSTORE * 8 + 2], 0
    mov eax, [domu_mfns + PFN_STORE * 4]
    mov [BUILD_WINDOW + GNTTAB_RESERVED_XENSTORE * 8 + 4], eax
    mov word [BUILD_WINDOW + GNTTAB_RESERVED_XENSTORE * 8], GTF_permit_access
    ; no writable mapping of its frames left (a page table must have none), then Xen pins its
    ; page directory, validating every entry of it and of its page table
    mov ebx, BUILD_WINDOW
    xor ecx, ecx
    xor edx, edx
    mov esi, UVMF_INVLPG
    movzx edi, word [domid]
    hypercall __HYPERVISOR_update_va_mapping_otherdomain
    test eax, eax
    jnz fail
    mov eax, [domu_mfns + PFN_PD * 4]
    mov [pin.mfn], eax
    mov ebx, pin
    mov ecx, 1
    xor edx, edx
    movzx esi, word [domid]             ; on the domU's behalf: its frame, its page table
    hypercall __HYPERVISOR_mmuext_op
    test eax, eax
    jnz fail
    ; its vcpu: enter the kernel in ring 1 at 0x100000, ESI = start_info, on that page directory
    mov edi, vcpu_context
    mov dword [edi + VGC_FLAGS], VGCF_in_kernel | VGCF_online
    mov dword [edi + VGC_ESI], PFN_START_INFO << 12
    mov dword [edi + VGC_EIP], 0x100000
    mov dword [edi + VGC_CS], FLAT_RING1_CS
    mov dword [edi + VGC_EFLAGS], 0x200
    mov dword [edi + VGC_ESP], DOMU_STACK
    mov dword [edi + VGC_SS], FLAT_RING1_SS
    mov dword [edi + VGC_ES], FLAT_RING1_DS
    mov dword [edi + VGC_ES + 4], FLAT_RING1_DS
    mov dword [edi + VGC_ES + 8], FLAT_RING1_DS
    mov dword [edi + VGC_ES + 12], FLAT_RING1_DS
    mov dword [edi + VGC_KERNEL_SS], FLAT_RING1_SS
    mov dword [edi + VGC_KERNEL_SP], DOMU_STACK
    mov eax, [domu_mfns + PFN_PD * 4]
    shl eax, 12
    mov [edi + VGC_CR3], eax            ; a machine address
    mov dword [edi + VGC_EVENT_CS], FLAT_RING1_CS
    mov dword [edi + VGC_FAILSAFE_CS], FLAT_RING1_CS
    mov dword [vcpucontext.vcpu], 0
    mov dword [vcpucontext.ctxt], vcpu_context
    domctl XEN_DOMCTL_setvcpucontext
    test eax, eax
    jnz fail
    ret

map_frame:                              ; EBX = a pseudo-physical frame of the domU: map it at BUILD_WINDOW
    pushad
    mov eax, [domu_mfns + ebx * 4]
    shl eax, 12
    or eax, WINDOW_PTE
    mov ecx, eax                        ; the new PTE: the domU's machine frame
    mov ebx, BUILD_WINDOW
    xor edx, edx
    mov esi, UVMF_INVLPG
    movzx edi, word [domid]             ; whose frame it is
    hypercall __HYPERVISOR_update_va_mapping_otherdomain
    mov [map_result], eax
    popad
    cmp dword [map_result], 0
    jne fail
    ret

; serve_requests: every request between req_cons and req_prod gets a response
serve_requests:
    mov eax, [req_cons]
    cmp eax, [RING_MAP + SRING_REQ_PROD]
    je .done
    mov esi, eax
    and esi, RING_SIZE - 1
    imul esi, SLOT_SIZE
    add esi, RING_MAP + SRING_SLOTS
    inc dword [req_cons]
    mov al, [esi + REQ_OPERATION]
    mov [current.operation], al
    mov eax, [esi + REQ_ID]
    mov [current.id], eax
    mov eax, [esi + REQ_SECTOR]
    mov [current.sector], eax
    movzx eax, byte [esi + REQ_SEG_FIRST]
    mov [current.first], eax
    movzx eax, byte [esi + REQ_SEG_LAST]
    sub eax, [current.first]
    inc eax
    mov [current.count], eax
    mov dword [current.status], BLKIF_RSP_ERROR
    mov eax, [current.sector]           ; the sectors must be on the disk
    add eax, [current.count]
    cmp eax, DISK_SECTORS
    ja .respond
    mov eax, [esi + REQ_SEG_GREF]       ; map the page the request's segment names
    mov [map.ref], eax
    mov dword [map.host_addr], DATA_MAP
    call map_grant
    jnz .respond
    mov ecx, [current.count]
    shl ecx, 9                          ; bytes
    mov esi, [current.first]
    shl esi, 9
    add esi, DATA_MAP                   ; the domU's data
    mov edi, [current.sector]
    shl edi, 9
    add edi, RAM_DISK                   ; the disk
    cmp byte [current.operation], BLKIF_OP_WRITE
    je .copy
    xchg esi, edi                       ; a read copies the other way
.copy:
    rep movsb
    mov eax, [map.handle]
    call unmap_grant
    mov dword [current.status], 0
    cmp byte [current.operation], BLKIF_OP_WRITE
    jne .respond
    print "dom0: blkback: domain "
    movzx eax, word [domid]
    call print_decimal
    print " wrote sector "
    mov eax, [current.sector]
    call print_decimal
    print ': "'
    mov edx, [current.sector]
    shl edx, 9
    add edx, RAM_DISK
    call print_string
    print '"', 10
.respond:                               ; the response takes the next slot
    mov edi, [rsp_prod_pvt]
    and edi, RING_SIZE - 1
    imul edi, SLOT_SIZE
    add edi, RING_MAP + SRING_SLOTS
    mov eax, [current.id]
    mov [edi + RSP_ID], eax
    mov dword [edi + RSP_ID + 4], 0
    mov al, [current.operation]
    mov [edi + RSP_OPERATION], al
    mov ax, [current.status]
    mov [edi + RSP_STATUS], ax
    mov edx, [rsp_prod_pvt]             ; RING_PUSH_RESPONSES_AND_CHECK_NOTIFY
    inc edx
    mov [rsp_prod_pvt], edx
    mov ecx, [RING_MAP + SRING_RSP_PROD]
    mov [RING_MAP + SRING_RSP_PROD], edx
    mov eax, edx
    sub eax, [RING_MAP + SRING_RSP_EVENT]
    sub edx, ecx
    cmp eax, edx
    jae serve_requests
    mov eax, [blk_port]
    call notify
    jmp serve_requests
.done:
    ret

; ---------------------------------------------------------------- hypercalls dom0 makes often
bind:                                   ; bind_interdomain to [bind_interdomain.*]; EAX = local port
    mov ebx, EVTCHNOP_bind_interdomain
    mov ecx, bind_interdomain
    hypercall __HYPERVISOR_event_channel_op
    test eax, eax
    jnz fail
    mov eax, [bind_interdomain.local_port]
    ret

map_grant:                              ; map [map.ref] of [domid] at [map.host_addr]; ZF = success
    mov ax, [domid]
    mov [map.dom], ax
    mov dword [map.flags], GNTMAP_host_map
    mov ebx, GNTTABOP_map_grant_ref
    mov ecx, map
    mov edx, 1
    hypercall __HYPERVISOR_grant_table_op
    cmp word [map.status], 0
    ret

unmap_grant:                            ; EAX = the handle map_grant returned
    mov [unmap.handle], eax
    mov dword [unmap.host_addr], 0
    mov ebx, GNTTABOP_unmap_grant_ref
    mov ecx, unmap
    mov edx, 1
    hypercall __HYPERVISOR_grant_table_op
    ret

notify:                                 ; EAX = port
    pushad
    mov [send_port], eax
    mov ebx, EVTCHNOP_send
    mov ecx, send_port
    hypercall __HYPERVISOR_event_channel_op
    popad
    ret

wait_event:                             ; EAX = port: sleep until it has fired, and consume it
    call events_off
    btr [fired], eax
    jc .fired
    call block
    jmp wait_event
.fired:
    jmp events_on

events_off:
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 1
    pop eax
    ret

events_on:
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 0
    pop eax
    ret

block:
    pushad
    mov ebx, SCHEDOP_block
    xor ecx, ecx
    hypercall __HYPERVISOR_sched_op
    popad
    ret

; The callback moves each pending port of the first word (ports 0-31) into `fired`.
event_callback:
    pushad
    mov esi, [shared_info]
    mov byte [esi + UPCALL_PENDING], 0
    xor ebx, ebx
    xchg ebx, [esi + PENDING_SEL]
    test ebx, 1
    jz .done
    xor eax, eax
    xchg eax, [esi + EVTCHN_PENDING]
    or [fired], eax
.done:
    test dword [esp + 32 + 8], 0x200
    jz .return
    mov byte [esi + UPCALL_MASK], 0
.return:
    popad
    iretd

; ---------------------------------------------------------------- console
console_write:
    pushad
    mov ebx, CONSOLEIO_write
    hypercall __HYPERVISOR_console_io
    popad
    ret

print_string:                           ; NUL-terminated, at most one sector
    pushad
    xor ecx, ecx
.length:
    cmp ecx, SECTOR_SIZE
    je .print
    cmp byte [edx + ecx], 0
    je .print
    inc ecx
    jmp .length
.print:
    call console_write
    popad
    ret

print_hex:                              ; EAX in hex, without leading zeros
    pushad
    mov edi, digits_end
.digit:
    mov edx, eax
    and edx, 0xf
    mov dl, [hex_digits + edx]
    dec edi
    mov [edi], dl
    shr eax, 4
    jnz .digit
    mov edx, edi
    mov ecx, digits_end
    sub ecx, edi
    call console_write
    popad
    ret

print_decimal:
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
disk_message: db "dom0's disk says hello back", 0
disk_message_len equ $ - disk_message

align 8
domctl_op:                              ; struct xen_domctl
    dd 0                                ; cmd
    dd XEN_DOMCTL_INTERFACE_VERSION
.domain: dw 0
    times 6 db 0
createdomain:                           ; the union at +16: xen_domctl_createdomain
    dd 0                                ; ssidref
    times 16 db 0                       ; handle
    dd 0                                ; flags
.kernel:     dd 0                       ; vmkit's fields: the kernel its trace watches in the domain,
.kernel_len: dd 0
.pages:      dd 0                       ; and the new domain's pages
    times 128 - 36 db 0
getdomaininfo       equ createdomain    ; the same union read as xen_domctl_getdomaininfo
GETDOMAININFO_FLAGS equ 4
getmemlist:                             ; ... as xen_domctl_getmemlist
.max_pfns equ createdomain
.buffer   equ createdomain + 16
vcpucontext:                            ; ... as xen_domctl_vcpucontext
.vcpu equ createdomain
.ctxt equ createdomain + 8


alloc_unbound:                          ; evtchn_alloc_unbound { dom, remote_dom, port }
.dom:        dw 0
.remote_dom: dw 0
.port:       dd 0
pin:                                    ; mmuext_op { cmd, mfn, arg2 }
    dd MMUEXT_PIN_L2_TABLE
.mfn: dd 0, 0
bind_virq:                              ; evtchn_bind_virq { virq, vcpu, port }
    dd 0, 0
.port: dd 0
bind_interdomain:                       ; evtchn_bind_interdomain { remote_dom, remote_port, local_port }
.remote_dom:  dw 0, 0
.remote_port: dd 0
.local_port:  dd 0
map:                                    ; gnttab_map_grant_ref
.host_addr:    dd 0, 0
.flags:        dd 0
.ref:          dd 0
.dom:          dw 0
.status:       dw 0
.handle:       dd 0
.dev_bus_addr: dd 0, 0
unmap:                                  ; gnttab_unmap_grant_ref
.host_addr:    dd 0, 0
.dev_bus_addr: dd 0, 0
.handle:       dd 0
.status:       dw 0, 0
current:                                ; the request being served
.operation: dd 0
.id:        dd 0
.sector:    dd 0
.first:     dd 0
.count:     dd 0
.status:    dd 0

send_port:       dd 0
shared_info:     dd 0
domid:           dw 0, 0
fired:           dd 0                   ; ports 0-31 that have fired and not been consumed
dom_exc_port:    dd 0
store_port:      dd 0
blk_port:        dd 0
store_handle:    dd 0
ring_handle:     dd 0
req_cons:        dd 0
rsp_prod_pvt:    dd 0
shutdown_reason: dd 0
kernel_start:    dd 0
kernel_len:      dd 0
map_result:      dd 0
magic:           db "xen-3.0-x86_32"
magic_len        equ $ - magic
hex_digits:      db "0123456789abcdef"
digits:          times 10 db 0
digits_end:

align 16
times 2048 db 0
stack_top:

align 8
domu_frames:  times DOMU_PAGES dq 0     ; getmemlist's answer: the domU's machine frames
domu_mfns:    times DOMU_PAGES dd 0     ; the same, as the domU's mfn_list
vcpu_context: times 2800 db 0           ; struct vcpu_guest_context
