; pv_domu.asm - a domU with the frontend half of a split block driver (Xen's blkfront, in miniature).
;
; The domU has no disk. dom0 has one, and runs the backend half of the driver (pv_dom0.asm). The
; two halves share one page, a ring of requests and responses in the layout of Xen's io/ring.h and
; io/blkif.h, which the frontend grants to dom0; they nudge each other through an event channel.
;
;  1. grant the ring page and a data page to dom0 (grant table entries 8 and 9). A grant names a
;     machine frame: the domU looks its pages up in its phys-to-machine list (start_info mfn_list),
;     and the machine frames Xen gives it (the grant table's, the store page's) up in Xen's
;     machine-to-physical table, mapped read-only at MACH2PHYS_VIRT_START in every domain;
;  2. offer dom0 an event channel (alloc_unbound);
;  3. tell the backend where both are: in Xen, through XenStore; here, through the store page the
;     domain builder shared with dom0 (start_info store_mfn), then an event on store_evtchn;
;  4. wait until the backend says it is connected;
;  5. write sector 0 (data goes domU -> dom0), then read sector 1 (data comes dom0 -> domU);
;  6. shut down. dom0 learns of it through VIRQ_DOM_EXC, and destroys the domain.
bits 32
org 0x100000

FLAT_RING1_CS  equ 0xe019
__HYPERVISOR_set_callbacks    equ 4
__HYPERVISOR_console_io       equ 18
__HYPERVISOR_grant_table_op   equ 20
__HYPERVISOR_sched_op         equ 29
__HYPERVISOR_event_channel_op equ 32
CONSOLEIO_write               equ 0
SCHEDOP_block                 equ 1
SCHEDOP_shutdown              equ 2
SHUTDOWN_poweroff             equ 0
EVTCHNOP_send                 equ 4
EVTCHNOP_alloc_unbound        equ 6
GNTTABOP_setup_table          equ 2
GTF_permit_access             equ 1
DOMID_SELF                    equ 0x7ff0
DOM0                          equ 0
MACH2PHYS_VIRT_START          equ 0xfc000000   ; machine_to_phys_mapping[mfn] = pfn, read-only

SI_SHARED_INFO   equ 36                ; start_info fields
SI_STORE_MFN     equ 44
SI_STORE_EVTCHN  equ 48
SI_MFN_LIST      equ 68                ; the phys-to-machine list: mfn_list[pfn] = mfn
UPCALL_PENDING   equ 0                 ; shared_info fields
UPCALL_MASK      equ 1
PENDING_SEL      equ 4
EVTCHN_PENDING   equ 2048

; the store page: where this frontend publishes its ring (XenStore's role, in four words)
STORE_RING_REF       equ 0
STORE_EVENT_CHANNEL  equ 4
STORE_FRONTEND_STATE equ 8
STORE_BACKEND_STATE  equ 12
XenbusStateInitialised equ 3
XenbusStateConnected   equ 4

; io/ring.h: the shared ring's header, then its slots
SRING_REQ_PROD   equ 0
SRING_REQ_EVENT  equ 4
SRING_RSP_PROD   equ 8
SRING_RSP_EVENT  equ 12
SRING_SLOTS      equ 64
RING_SIZE        equ 32                ; slots: (4096 - 64) / 108, rounded down to a power of 2
SLOT_SIZE        equ 108               ; sizeof(blkif_request) for x86_32
; io/blkif.h: a request and a response (they share a slot)
REQ_OPERATION    equ 0
REQ_NR_SEGMENTS  equ 1
REQ_HANDLE       equ 2
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

RING_PAGE  equ 0x200000                ; this domain's pages it shares with dom0
DATA_PAGE  equ 0x201000
RING_REF   equ 8                       ; grant references 0-7 are reserved, as in Xen
DATA_REF   equ 9

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

start:
    mov esp, stack_top
    mov eax, [esi + SI_SHARED_INFO]
    mov [shared_info], eax
    mov eax, [esi + SI_MFN_LIST]
    mov [mfn_list], eax
    mov eax, [esi + SI_STORE_MFN]       ; a machine frame: which of our pages is it?
    mov eax, [MACH2PHYS_VIRT_START + eax * 4]
    shl eax, 12                         ; our pages are mapped at virtual = pseudo-physical
    mov [store], eax
    mov eax, [esi + SI_STORE_EVTCHN]
    mov [store_port], eax

    mov ebx, FLAT_RING1_CS
    mov ecx, event_callback
    mov edx, FLAT_RING1_CS
    mov esi, event_callback
    hypercall __HYPERVISOR_set_callbacks

    ; where is our grant table?
    mov ebx, GNTTABOP_setup_table
    mov ecx, setup_table
    mov edx, 1
    hypercall __HYPERVISOR_grant_table_op
    mov eax, [grant_frame]              ; a machine frame too
    mov eax, [MACH2PHYS_VIRT_START + eax * 4]
    shl eax, 12
    mov [grant_table], eax

    ; 1. an empty ring, then grant it and the data page to dom0: domid and frame first, flags last
    mov dword [RING_PAGE + SRING_REQ_PROD], 0
    mov dword [RING_PAGE + SRING_REQ_EVENT], 1
    mov dword [RING_PAGE + SRING_RSP_PROD], 0
    mov dword [RING_PAGE + SRING_RSP_EVENT], 1
    mov edi, [grant_table]
    mov esi, [mfn_list]
    mov word [edi + RING_REF * 8 + 2], DOM0
    mov eax, [esi + (RING_PAGE >> 12) * 4]             ; the ring's machine frame
    mov [edi + RING_REF * 8 + 4], eax
    mov word [edi + DATA_REF * 8 + 2], DOM0
    mov eax, [esi + (DATA_PAGE >> 12) * 4]
    mov [edi + DATA_REF * 8 + 4], eax
    mov word [edi + RING_REF * 8], GTF_permit_access
    mov word [edi + DATA_REF * 8], GTF_permit_access
    print "blkfront: granted the ring (ref 8) and a data page (ref 9) to dom0", 10

    ; 2. an event channel for dom0 to bind
    mov ebx, EVTCHNOP_alloc_unbound
    mov ecx, alloc_unbound
    hypercall __HYPERVISOR_event_channel_op
    mov eax, [alloc_unbound.port]
    mov [port], eax

    ; 3. publish both, then tell dom0 to look
    mov edi, [store]
    mov dword [edi + STORE_RING_REF], RING_REF
    mov eax, [port]
    mov [edi + STORE_EVENT_CHANNEL], eax
    mov dword [edi + STORE_FRONTEND_STATE], XenbusStateInitialised
    mov eax, [store_port]
    call notify

    ; 4. wait for the backend
.wait_backend:
    call events_off
    mov edi, [store]
    cmp dword [edi + STORE_BACKEND_STATE], XenbusStateConnected
    je .connected
    call block
    jmp .wait_backend
.connected:
    call events_on
    print "blkfront: the backend is connected", 10

    ; 5. write sector 0: our message goes into the data page dom0 may map
    mov esi, message
    mov edi, DATA_PAGE
    mov ecx, message_len
    rep movsb
    mov al, BLKIF_OP_WRITE
    mov ebx, 0
    call request
    print "blkfront: wrote sector 0, status "
    call print_status

    ; ... and read sector 1 back into the data page
    mov byte [DATA_PAGE], 0
    mov al, BLKIF_OP_READ
    mov ebx, 1
    call request
    print "blkfront: read sector 1, status "
    call print_status
    print "blkfront: sector 1 says: "
    mov edx, DATA_PAGE
    call print_string
    print 10

    ; 6. done
    mov dword [shutdown_reason], SHUTDOWN_poweroff
    mov ebx, SCHEDOP_shutdown
    mov ecx, shutdown_reason
    hypercall __HYPERVISOR_sched_op
    jmp $

; request: AL = operation, EBX = sector; one segment, the whole first sector of the data page.
; Puts the request on the ring, notifies dom0 if it asked to be, and waits for the response.
request:
    mov edx, [req_prod_pvt]
    mov edi, edx
    and edi, RING_SIZE - 1
    imul edi, SLOT_SIZE
    add edi, RING_PAGE + SRING_SLOTS
    mov [edi + REQ_OPERATION], al
    mov byte [edi + REQ_NR_SEGMENTS], 1
    mov word [edi + REQ_HANDLE], 0
    inc dword [next_id]
    mov eax, [next_id]
    mov [edi + REQ_ID], eax
    mov dword [edi + REQ_ID + 4], 0
    mov [edi + REQ_SECTOR], ebx
    mov dword [edi + REQ_SECTOR + 4], 0
    mov dword [edi + REQ_SEG_GREF], DATA_REF
    mov byte [edi + REQ_SEG_FIRST], 0
    mov byte [edi + REQ_SEG_LAST], 0
    inc edx
    mov [req_prod_pvt], edx
    ; RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish, then notify only if the backend is waiting
    mov ecx, [RING_PAGE + SRING_REQ_PROD]          ; old
    mov [RING_PAGE + SRING_REQ_PROD], edx          ; new
    mov eax, edx
    sub eax, [RING_PAGE + SRING_REQ_EVENT]         ; new - req_event
    sub edx, ecx                                   ; new - old
    cmp eax, edx
    jae .wait
    mov eax, [port]
    call notify
.wait:                                             ; the response, with the final check of ring.h
    call events_off
    mov eax, [rsp_cons]
    cmp eax, [RING_PAGE + SRING_RSP_PROD]
    jne .response
    inc eax
    mov [RING_PAGE + SRING_RSP_EVENT], eax         ; wake me when response rsp_cons + 1 is there
    dec eax
    cmp eax, [RING_PAGE + SRING_RSP_PROD]
    jne .response
    call block
    jmp .wait
.response:
    call events_on
    mov edi, eax
    and edi, RING_SIZE - 1
    imul edi, SLOT_SIZE
    add edi, RING_PAGE + SRING_SLOTS
    movsx eax, word [edi + RSP_STATUS]
    mov [last_status], eax
    inc dword [rsp_cons]
    ret

; ---------------------------------------------------------------- events
events_off:                             ; the paravirtual cli: one byte in shared_info
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 1
    pop eax
    ret

events_on:                              ; the paravirtual sti (nothing is left to deliver here)
    push eax
    mov eax, [shared_info]
    mov byte [eax + UPCALL_MASK], 0
    pop eax
    ret

block:                                  ; sleep until an event: Xen turns events back on first
    pushad
    mov ebx, SCHEDOP_block
    xor ecx, ecx
    hypercall __HYPERVISOR_sched_op
    popad
    ret

notify:                                 ; EAX = port: send an event to the other end
    pushad
    mov [send_port], eax
    mov ebx, EVTCHNOP_send
    mov ecx, send_port
    hypercall __HYPERVISOR_event_channel_op
    popad
    ret

; The callback only acknowledges the events: the ring and the store page say what happened.
event_callback:
    pushad
    mov esi, [shared_info]
    mov byte [esi + UPCALL_PENDING], 0
    xor ebx, ebx
    xchg ebx, [esi + PENDING_SEL]
.word:
    bsf ecx, ebx
    jz .done
    btr ebx, ecx
    xor eax, eax
    xchg eax, [esi + EVTCHN_PENDING + ecx * 4]      ; every port of this word: handled
    jmp .word
.done:
    test dword [esp + 32 + 8], 0x200
    jz .return
    mov byte [esi + UPCALL_MASK], 0
.return:
    popad
    iretd

; ---------------------------------------------------------------- console
console_write:                          ; ECX bytes at EDX
    pushad
    mov ebx, CONSOLEIO_write
    hypercall __HYPERVISOR_console_io
    popad
    ret

print_string:                           ; the NUL-terminated string at EDX
    pushad
    mov edi, edx
    xor ecx, ecx
.length:
    cmp byte [edi + ecx], 0
    je .print
    inc ecx
    jmp .length
.print:
    call console_write
    popad
    ret

print_status:                           ; "0" for BLKIF_RSP_OKAY, "-1" for an error
    cmp dword [last_status], 0
    je .ok
    print "-1", 10
    ret
.ok:
    print "0", 10
    ret

; ---------------------------------------------------------------- data
message: db "hello, disk, from domain 1", 0
message_len equ $ - message

align 4
setup_table:                            ; gnttab_setup_table { dom, nr_frames, status, frame_list }
    dw DOMID_SELF, 0
    dd 1
    dw 0, 0
    dd grant_frame
grant_frame:  dd 0
alloc_unbound:                          ; evtchn_alloc_unbound { dom, remote_dom, port }
    dw DOMID_SELF, DOM0
.port: dd 0
send_port:        dd 0
shared_info:      dd 0
grant_table:      dd 0
mfn_list:         dd 0
store:            dd 0
store_port:       dd 0
port:             dd 0
req_prod_pvt:     dd 0
rsp_cons:         dd 0
next_id:          dd 0
last_status:      dd 0
shutdown_reason:  dd 0

align 16
times 2048 db 0
stack_top:
