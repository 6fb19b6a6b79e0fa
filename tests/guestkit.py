"""Build small test kernels: a GDT with code and data segments for rings 0, 1 and 3, a TSS, an IDT
whose gates the test chooses, and the test's own code in the middle.

    src = kernel(body="int 0x80", gates={0x80: ("h80", 0xEE)}, handlers={"h80": "hlt"})

Gate attribute bytes (P | DPL | type): 0x8E interrupt gate DPL 0, 0x8F trap gate DPL 0,
0xEE interrupt gate DPL 3, 0x0E not present.
"""

SELECTORS = """
KCODE equ 0x08
KDATA equ 0x10
R1CODE equ 0x19
R1DATA equ 0x21
UCODE equ 0x2b
UDATA equ 0x33
TSS_SEL equ 0x38
KSTACK equ 0x3F0000
R1STACK equ 0x3E0000
USTACK equ 0x3D0000
"""

TEMPLATE = """bits 32
org 0x100000
{selectors}
start:
    lgdt [gdtr]
    jmp KCODE:.cs
.cs:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, KSTACK
    mov dword [tss + 4], KSTACK
    mov dword [tss + 8], KDATA
    mov dword [tss + 12], R1STACK
    mov dword [tss + 16], R1DATA
    mov word [tss + 102], {iomap_base}
    mov eax, tss
    mov [gdt_tss + 2], ax
    shr eax, 16
    mov [gdt_tss + 4], al
    mov [gdt_tss + 7], ah
    mov ax, TSS_SEL
    ltr ax
{gate_setup}
    lidt [idtr]
body:
{body}
{handlers}

; to_ring3: iretd to the label in eax, in ring 3, with IF and IOPL from ebx (EFLAGS)
to_ring3:
    push UDATA
    push USTACK
    push ebx
    push UCODE
    push eax
    iretd

set_gate:                       ; ebx = vector, eax = handler, cl = attributes
    lea edi, [idt + ebx * 8]
    mov [edi], ax
    mov word [edi + 2], {gate_cs}
    mov byte [edi + 4], 0
    mov [edi + 5], cl
    shr eax, 16
    mov [edi + 6], ax
    ret

align 8
gdt:
    dq 0
    dq 0x00CF9A000000FFFF       ; 0x08 ring 0 code
    dq 0x00CF92000000FFFF       ; 0x10 ring 0 data
    dq 0x00CFBA000000FFFF       ; 0x18 ring 1 code
    dq 0x00CFB2000000FFFF       ; 0x20 ring 1 data
    dq 0x00CFFA000000FFFF       ; 0x28 ring 3 code
    dq 0x00CFF2000000FFFF       ; 0x30 ring 3 data
gdt_tss:
    dw tss_limit, 0
    db 0, 0x89, 0, 0
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
align 8
idt:
    times 256 dq 0
idtr:
    dw {idt_limit}
    dd idt
align 16
tss:
    times 104 db 0
{tss_extra}
tss_end:
tss_limit equ tss_end - tss - 1
"""


def kernel(body="", gates=None, handlers=None, iomap_base=104, tss_extra="", idt_limit="256 * 8 - 1",
           gate_cs="KCODE"):
    """NASM source of a test kernel. `gates` maps vector -> (handler label, attribute byte)."""
    setup = []
    for vector, (label, attr) in (gates or {}).items():
        setup += [f"    mov ebx, {vector}", f"    mov eax, {label}", f"    mov cl, {attr:#x}", "    call set_gate"]
    code = []
    for label, text in (handlers or {}).items():
        code += [f"{label}:", _indent(text)]
    return TEMPLATE.format(selectors=SELECTORS, iomap_base=iomap_base, gate_setup="\n".join(setup),
                           body=_indent(body), handlers="\n".join(code), tss_extra=tss_extra,
                           idt_limit=idt_limit, gate_cs=gate_cs)


def _indent(text):
    return "\n".join("    " + line.strip() if line.strip() and not line.strip().endswith(":") else line.strip()
                     for line in text.strip("\n").splitlines())


def idt_gate(vector, handler, attr=0x8E):
    """NASM that fills IDT entry `vector` of a table labelled `idt` with a gate to `handler` in the
    platform's code segment 0x08 (attr 0x8E: present, DPL 0, 32-bit interrupt gate)."""
    return "\n".join([
        f"    mov eax, {handler}",
        f"    mov [idt + {vector} * 8], ax",
        f"    mov word [idt + {vector} * 8 + 2], 0x08",
        f"    mov word [idt + {vector} * 8 + 4], {attr << 8:#06x}",
        "    shr eax, 16",
        f"    mov [idt + {vector} * 8 + 6], ax"])


# the PIC initialised with IRQ 0-7 at vectors 0x20-0x27 and every line but IRQ0 masked
PIC_IRQ0_ONLY = """
    mov al, 0x11
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 4
    out 0x21, al
    mov al, 1
    out 0x21, al
    mov al, 0xFE
    out 0x21, al"""

# the PIT's channel 0 in mode 2 at 1000 Hz (1,193,182 Hz / 1193): IRQ0 every millisecond
PIT_1000_HZ = """
    mov al, 0x34
    out 0x43, al
    mov al, 0xa9
    out 0x40, al
    mov al, 0x04
    out 0x40, al"""
