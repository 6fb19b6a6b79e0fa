; dirty_writer.asm - a guest to migrate while it runs.
;
; It keeps a "connection": numbered lines "seq 1", "seq 2", ... on COM1, one after every WORK
; steps of work. A peer at the other end of the line sees whether a migration lost a line or sent
; one twice. Between two lines it writes memory in the pattern chosen when it is assembled
; (vmkit.migration.workload prepends the %defines):
;
;   PATTERN 0  idle        spins without writing: only the line counter and the stack change
;   PATTERN 1  steady      writes one dword in each page of a writable working set of WWS_PAGES
;                          pages, round and round
;   PATTERN 2  diabolical  the same over every page of DATA (736 pages, 2.9 MiB), as fast as it can:
;                          it dirties memory faster than any link sends it, and never converges
;   PATTERN 3  random      writes a dword at a place chosen by a linear congruential generator
;                          (seeded with SEED) among the first PAGES pages of DATA
;
; PACE > 0 spins that many times after each store: a writer that dirties pages slowly, so that a
; round that takes less time leaves fewer dirty pages behind (the rounds shrink).
;
; Everything it needs lives in RAM or in its registers, so a migration must carry both.
bits 32
org 0x100000

%ifndef PATTERN
%define PATTERN 1
%endif
%ifndef WWS_PAGES
%define WWS_PAGES 32
%endif
%ifndef PAGES
%define PAGES 256
%endif
%ifndef SEED
%define SEED 1
%endif
%ifndef WORK
%define WORK 20000
%endif
%ifndef PACE
%define PACE 0
%endif

COM1      equ 0x3f8
DATA      equ 0x110000                  ; the pages the writers write ...
DATA_END  equ 0x3f0000                  ; ... up to the stack's pages below 0x400000
%if PATTERN == 2
WWS_END   equ DATA_END
%else
WWS_END   equ DATA + WWS_PAGES * 4096
%endif

start:
    mov edi, DATA                       ; the writers' cursor
    mov ebx, SEED                       ; the random writer's generator state
.line:
    mov ecx, WORK
.work:
%if PATTERN == 0
    nop                                 ; idle: nothing written
%elif PATTERN == 1 || PATTERN == 2
    mov [edi], ecx                      ; one store into the page under the cursor
    add edi, 4096
    cmp edi, WWS_END
    jb .next
    mov edi, DATA                       ; wrap around the working set
%else
    imul ebx, ebx, 1103515245           ; the generator of C's rand()
    add ebx, 12345
    mov eax, ebx
    shr eax, 16
    xor edx, edx
    mov esi, PAGES
    div esi                             ; edx = the page
    shl edx, 12
    mov eax, ebx
    and eax, 0xffc                      ; a dword in it
    mov [DATA + edx + eax], ecx
%endif
.next:
%if PACE > 0 && PATTERN != 0
    mov eax, PACE
.pace:
    dec eax
    jnz .pace
%endif
    dec ecx
    jnz .work
    inc dword [seq]
    call print_line
    jmp .line

; print "seq <n>\n" with n = [seq] in decimal; ecx, ebx and edi are kept
print_line:
    push ecx
    mov dx, COM1
    mov esi, prefix
.prefix:
    lodsb
    test al, al
    jz .number
    out dx, al
    jmp .prefix
.number:
    mov eax, [seq]
    mov ecx, 10
    push byte -1                        ; marks the end of the digits on the stack
.divide:
    xor edx, edx
    div ecx
    push edx
    test eax, eax
    jnz .divide
.digit:
    pop eax
    cmp eax, -1
    je .end
    add al, '0'
    mov dx, COM1
    out dx, al
    jmp .digit
.end:
    mov al, 10
    out dx, al
    pop ecx
    ret

prefix: db "seq ", 0
align 4
seq:    dd 0
