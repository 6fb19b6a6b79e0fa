; segments.asm - bad segment loads in ring 0 and the error code (the selector) each one pushes:
; past the GDT limit, a system descriptor, a code segment into SS, null SS, not present
; (#NP, or #SS for SS), RPL != CPL for SS, a far jump through a bad selector, ltr of a data
; segment and pop into GS.
%include "platform.inc"

%macro try 2-3                      ; try "what", one or two instructions: expect a fault
    print %1, 10
    expect %%next
    %2
%if %0 >= 3
    %3
%endif
%%next:
%endmacro

main:
    gate 11, reporter_11, IGATE
    gate 12, reporter_12, IGATE
    gate 13, reporter_13, IGATE

    try "ds past the GDT limit", {mov ax, 0x1233}, {mov ds, ax}
    try "es = the TSS", {mov ax, TSS_SEL}, {mov es, ax}
    try "ss = a code segment", {mov ax, KCODE}, {mov ss, ax}
    try "ss = null", {xor eax, eax}, {mov ss, ax}
    try "fs not present", {mov ax, NP_DATA}, {mov fs, ax}
    try "ss not present", {mov ax, NP_DATA}, {mov ss, ax}
    try "ss with RPL 3", {mov ax, KDATA | 3}, {mov ss, ax}
    try "far jump past the GDT limit", {jmp 0x1230:0}
    try "ltr of a data segment", {mov ax, KDATA}, {ltr ax}
    try "pop gs past the limit", {push dword 0x2001}, {pop gs}
    print "done", 10
    exit 0x03

reporter 11
reporter 12
reporter 13
