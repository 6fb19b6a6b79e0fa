; cmp_compute.asm - CPU bound: ROUNDS passes of the sieve of Eratosthenes below LIMIT. Nothing in
; it is privileged or sensitive, so no technique takes a trap, exit or hypercall for a round. Per
; round each runs it close to native speed, binary translation a little slower (a translated
; branch adds a jmp to the translation of its target: about a third more instructions); a whole
; run adds each technique's fixed part, largest under binary translation, which translates the
; kernel's code before it first runs.
LIMIT equ 256

workload:
    mov ebp, ROUNDS
.pass:
    mov edi, sieve                      ; every number starts out a candidate
    mov ecx, LIMIT / 4
    xor eax, eax
    rep stosd
    mov ebx, 2
.outer:
    mov eax, ebx
    imul eax, ebx
    cmp eax, LIMIT
    jae .count
    cmp byte [sieve + ebx], 0
    jne .next
.mark:                                  ; cross out the multiples of a prime from its square on
    mov byte [sieve + eax], 1
    add eax, ebx
    cmp eax, LIMIT
    jb .mark
.next:
    inc ebx
    jmp .outer
.count:
    xor eax, eax                        ; the primes are what is left, from 2 on
    mov ebx, 2
.tally:
    cmp byte [sieve + ebx], 0
    jne .composite
    inc eax
.composite:
    inc ebx
    cmp ebx, LIMIT
    jb .tally
    dec ebp
    jnz .pass
    ret

syscall_entry      equ unexpected_fault
divide_error_entry equ unexpected_fault
page_fault_entry   equ unexpected_fault
xen_workload         equ workload
xen_page_fault_entry equ page_fault_entry
workload_title: db "primes below 256: "
workload_title_len equ $ - workload_title
section .data
align 4
sieve: times LIMIT db 0
