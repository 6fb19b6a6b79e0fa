"""A census of x86 instructions, measured live: which are privileged, which are sensitive, and which
of the sensitive ones a trap-and-emulate VMM never gets to see (the holes).

Popek and Goldberg (1974) call an instruction *privileged* if it traps in user mode and not in
supervisor mode, and *sensitive* if it changes or reveals the machine's privileged state. A VMM
built on traps works only if every sensitive instruction is privileged. Robin and Irvine (2000)
listed the x86 instructions for which that fails. Here each instruction is not looked up but run:

    rows = census()              # one CensusRow per instruction in INSTRUCTIONS, cached
    rows = census(["sgdt", "cli"])

For every instruction a small probe kernel sets up known state (its own GDT with an LDT and two
TSS descriptors, an IDT whose every gate reports its vector, CR0.TS set, interrupts off), then
executes the instruction with known inputs

    at CPL 0, 1 and 3 on the bare machine       -> CensusRow.faults: the vector raised, or None
    in the guest kernel under trap-and-emulate  -> trapped_under_vmm: did the VMM get a trap there?
                                                   vmm_fault: the vector the guest's own handler got
                                                   same_under_vmm: is the state it leaves what the
                                                   same kernel leaves at CPL 0 on the bare machine?

On the bare machine each ring runs the probe with its own selectors (code, data and stack segments
whose DPL is that ring, selectors whose RPL is that ring), as a kernel or a program living in that
ring would. Under the VMM the probe is the ring-0 run, unchanged: the guest kernel believes it is in
ring 0 and uses its ring-0 selectors (RPL 0) while the CPU runs it in ring 1. That is why `pop ss`
and `retf` run in all three rings of the bare machine yet fault under the VMM: in ring 1 the CPU
refuses to load SS from a selector whose RPL is not the CPL, and to return to a code selector whose
RPL is below the CPL (Intel SDM, the MOV/POP SS and RET pages), and this VMM emulates neither.

"State" is what the guest kernel can see: its general registers (stored to memory after the
probe), the arithmetic flags with IF and IOPL as the guest's own (virtual) EFLAGS has them, the data
segment registers, CR0, CR3, DR7, GDTR, IDTR, LDTR, TR and one MSR as its own (virtual) CPU has
them, its GDT, a scratch area, the frame an exception handler received, and how the probe ended.
CS and SS are left out: under ring compression their RPL is 1 by design, and the census asks what
an instruction reveals, not what the VMM changed on purpose.
"""
from dataclasses import dataclass, field

from unicorn import x86_const as X

from .asm import assemble
from .machine.platform import LOAD_ADDRESS
from .run import machine
from .vmm.trap_emulate import TrapAndEmulate


@dataclass(frozen=True)
class Probe:
    mnemonic: str          # lower case; the privileged mov forms are named "mov to cr0" and so on
    source: str            # the instruction(s) measured; a trap anywhere in here counts
    setup: str = ""        # known inputs, executed just before, in the same ring
    group: str = "privileged"   # "robin-irvine", "privileged" or "innocent"


def _ri(mnemonic, source, setup=""):
    return Probe(mnemonic, source, setup, "robin-irvine")


# Robin & Irvine's eighteen mnemonics (their text announces "seventeen" and does not say why the
# list it prints has eighteen; the census measures every mnemonic of the list), then the privileged
# instructions, then a few that should be innocent everywhere.
INSTRUCTIONS = (
    _ri("sgdt", "sgdt [scratch]"),
    _ri("sidt", "sidt [scratch]"),
    _ri("sldt", "sldt ax"),
    _ri("smsw", "smsw ax"),
    _ri("pushf", "pushf\npop eax"),
    _ri("popf", "popf", "push dword 0x202             ; IF=1, IOPL 0"),
    _ri("lar", "lar eax, ebx", "mov ebx, KCODE"),
    _ri("lsl", "lsl eax, ebx", "mov ebx, KDATA"),
    _ri("verr", "verr bx", "mov ebx, KCODE"),
    _ri("verw", "verw bx", "mov ebx, KDATA"),
    _ri("pop", "pop ss", "push dword [self_ss]          ; the ring's own stack selector"),
    _ri("push", "push cs\npop eax"),
    _ri("call", "call far [far_ptr]\n.back:\npop eax                     ; return EIP\npop ebx                     ; return CS",
        "mov dword [far_ptr], .back\nmov eax, [self_cs]\nmov [far_ptr + 4], ax\nxor eax, eax"),
    _ri("jmp", "jmp far [far_ptr]\n.back:",
        "mov dword [far_ptr], .back\nmov eax, [self_cs]\nmov [far_ptr + 4], ax\nxor eax, eax"),
    _ri("int", "int 0x80"),
    _ri("ret", "retf\n.back:", "push dword [self_cs]\npush dword .back"),
    _ri("str", "str ax"),
    _ri("mov", "mov eax, cs"),

    Probe("cli", "cli"),
    Probe("sti", "sti"),
    Probe("hlt", "hlt"),
    Probe("lgdt", "lgdt [gdtr_other]"),
    Probe("lidt", "lidt [idtr_other]"),
    Probe("ltr", "ltr ax", "mov eax, TSS2_SEL"),
    Probe("lldt", "lldt ax", "mov eax, LDT2_SEL"),
    Probe("lmsw", "lmsw ax", "mov eax, 0x3                 ; PE and MP"),
    Probe("clts", "clts"),
    Probe("mov to cr0", "mov cr0, eax", "mov eax, 0x13                ; PE, MP, ET: TS cleared"),
    Probe("mov from cr0", "mov eax, cr0"),
    Probe("mov to cr3", "mov cr3, eax", "mov eax, 0x200000"),
    Probe("mov from cr3", "mov eax, cr3"),
    Probe("mov to dr7", "mov dr7, eax", "mov eax, 0x400"),
    Probe("invlpg", "invlpg [scratch]"),
    Probe("wbinvd", "wbinvd"),
    Probe("invd", "invd"),
    Probe("rdmsr", "rdmsr", "mov ecx, MSR"),
    Probe("wrmsr", "wrmsr", "mov ecx, MSR\nmov eax, KCODE\nxor edx, edx"),
    Probe("in", "in al, dx", "mov edx, 0x3fd                ; the serial port's line status"),
    Probe("out", "out dx, al", "mov edx, 0x80\nmov al, 0x42   ; port 0x80: no device, the write is dropped"),

    Probe("nop", "nop", group="innocent"),
    Probe("add", "add eax, 5", group="innocent"),
    Probe("cpuid", "cpuid", group="innocent"),
    Probe("rdtsc", "rdtsc", group="innocent"),
)

ROBIN_IRVINE = tuple(p.mnemonic for p in INSTRUCTIONS if p.group == "robin-irvine")


@dataclass(frozen=True)
class CensusRow:
    mnemonic: str
    source: str
    faults: dict                   # ring (0, 1, 3) -> vector raised, or None
    trapped_under_vmm: bool        # a "trap" event at the probe, in the guest kernel under the VMM
    same_under_vmm: bool           # the guest sees the state the bare machine's ring 0 leaves
    group: str = "privileged"
    vmm_fault: int = None          # the vector the guest kernel itself saw under the VMM, or None
    differences: tuple = field(default=(), compare=False)   # names of the state that differed

    @property
    def privileged(self):
        """Traps outside ring 0 and not in it (Popek & Goldberg's privileged instruction)."""
        return self.faults[0] is None and self.faults[1] is not None and self.faults[3] is not None

    @property
    def sensitive(self):
        """Privileged, or measurably different under the VMM (it reads or changes what the VMM owns)."""
        return self.privileged or not self.same_under_vmm

    @property
    def hole(self):
        """Sensitive, yet the VMM never saw it: trap-and-emulate cannot get this one right."""
        return self.sensitive and not self.trapped_under_vmm

    @property
    def robin_irvine(self):
        return self.group == "robin-irvine"


# --- the probe kernel --------------------------------------------------------------------------------
TSS_BASE, TSS2_BASE, IDT_BASE, LDT_BASE = 0x300000, 0x300100, 0x301000, 0x302000
SAVE, SAVED_REGS = 0x303000, ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp")
FRAME = SAVE + 0x20            # the top of the stack an exception handler found
SCRATCH = SAVE + 0x40
STATE_SIZE = 0x60
NO_FAULT = 0xFF                # exit value for "the probe ran to its end"
VECTORS = tuple(range(32)) + (0x80,)
SELECTORS = {0: (0x08, 0x10, 0x3F0000), 1: (0x19, 0x21, 0x3E0000), 3: (0x2B, 0x33, 0x3D0000)}
MSR = 0x174                    # IA32_SYSENTER_CS: an MSR every 32-bit x86 has


def _descriptor(base, limit, access, flags):
    return (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40 | (limit >> 16 & 0xF) << 48 \
        | flags << 52 | (base >> 24) << 56


def _probe_kernel(probes):
    """One image holding every probe; the run picks a probe and a ring by two words in memory."""
    gdt = [0, _descriptor(0, 0xFFFFF, 0x9A, 0xC), _descriptor(0, 0xFFFFF, 0x92, 0xC),
           _descriptor(0, 0xFFFFF, 0xBA, 0xC), _descriptor(0, 0xFFFFF, 0xB2, 0xC),
           _descriptor(0, 0xFFFFF, 0xFA, 0xC), _descriptor(0, 0xFFFFF, 0xF2, 0xC),
           _descriptor(TSS_BASE, 0x67, 0x89, 0), _descriptor(TSS2_BASE, 0x67, 0x89, 0),
           _descriptor(LDT_BASE, 0xF, 0x82, 0), _descriptor(LDT_BASE + 0x10, 0xF, 0x82, 0)]
    body = []
    for i, p in enumerate(probes):
        body += [f"probe_{i}:", p.setup, ".start:", p.source, ".end:", "    jmp [exit_path]"]
    stubs = [f"vector_{v}:\n    mov byte [vector], {v}\n    jmp fault" for v in VECTORS]
    return f"""bits 32
org {LOAD_ADDRESS:#x}
KCODE equ 0x08
KDATA equ 0x10
TSS_SEL equ 0x38
TSS2_SEL equ 0x40
LDT_SEL equ 0x48
LDT2_SEL equ 0x50
MSR equ {MSR:#x}
scratch equ {SCRATCH:#x}
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
    mov esp, {SELECTORS[0][2]:#x}
    mov dword [{TSS_BASE + 4:#x}], {SELECTORS[0][2]:#x}     ; esp0, ss0 of the TSS
    mov dword [{TSS_BASE + 8:#x}], KDATA
    mov word [{TSS_BASE + 102:#x}], 104                      ; no I/O bitmap
    mov ax, TSS_SEL
    ltr ax
    mov ax, LDT_SEL
    lldt ax
    xor ebx, ebx                                              ; the IDT: every vector reports itself
.gate:
    mov eax, [handlers + ebx * 4]
    mov [{IDT_BASE:#x} + ebx * 8], ax
    mov word [{IDT_BASE + 2:#x} + ebx * 8], KCODE
    mov word [{IDT_BASE + 4:#x} + ebx * 8], 0x8E00            ; interrupt gate, DPL 0
    shr eax, 16
    mov [{IDT_BASE + 6:#x} + ebx * 8], ax
    inc ebx
    cmp ebx, 256
    jb .gate
    mov byte [{IDT_BASE + 0x80 * 8 + 5:#x}], 0xEE              ; int 0x80 and 0x81 from any ring
    mov byte [{IDT_BASE + 0x81 * 8 + 5:#x}], 0xEE
    lidt [idtr]
    mov eax, cr0
    or eax, 1 << 3                                            ; CR0.TS, as after a lazy FPU switch
    mov cr0, eax
    mov eax, [probe_index]
    mov eax, [probes + eax * 4]
    mov [entry], eax
    cmp dword [probe_ring], 0
    jne .outer
    mov dword [exit_path], finish
    jmp .enter
.outer:
    mov dword [exit_path], leave
    mov eax, [self_ds]
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    push dword [self_ss]
    push dword [self_esp]
    push dword 0x2
    push dword [self_cs]
    push dword .enter
    iretd
.enter:
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    jmp [entry]

finish:                                 ; ring 0: keep what the probe left, then end the run
""" + "\n".join(f"    mov [{SAVE + 4 * i:#x}], {r}" for i, r in enumerate(SAVED_REGS)) + f"""
    mov al, {NO_FAULT}
    out 0xf4, al
leave:                                  ; rings 1 and 3 cannot write the exit port themselves
    int 0x81
fault:
    mov eax, [esp]
    mov [{FRAME:#x}], eax
    mov eax, [esp + 4]
    mov [{FRAME + 4:#x}], eax
    mov eax, [esp + 8]
    mov [{FRAME + 8:#x}], eax
    mov eax, [esp + 12]
    mov [{FRAME + 12:#x}], eax
    mov al, [vector]
    out 0xf4, al
vector_129:
    mov al, {NO_FAULT}
    out 0xf4, al
{chr(10).join(stubs)}
unexpected:
    mov byte [vector], 0xFE
    jmp fault

{chr(10).join(body)}

align 8
gdt:
{chr(10).join(f"    dq {d:#018x}" for d in gdt)}
gdt_end:
gdtr:       dw gdt_end - gdt - 1
            dd gdt
gdtr_other: dw gdt_end - gdt - 9
            dd gdt
idtr:       dw 256 * 8 - 1
            dd {IDT_BASE:#x}
idtr_other: dw 0x82 * 8 - 1
            dd {IDT_BASE:#x}
align 4
handlers:   dd {", ".join("vector_%d" % v if v in VECTORS or v == 0x81 else "unexpected" for v in range(256))}
probes:     dd {", ".join(f"probe_{i}" for i in range(len(probes)))}
probe_index: dd 0
probe_ring:  dd 0
self_cs:    dd 0
self_ds:    dd 0
self_ss:    dd 0
self_esp:   dd 0
entry:      dd 0
exit_path:  dd 0
far_ptr:    dd 0, 0
vector:     db 0
"""


def _run_probe(image, index, ring, technique):
    m = machine(image, technique, max_instructions=200_000)
    code, data, stack = SELECTORS[ring]
    words = {"probe_index": index, "probe_ring": ring, "self_cs": code, "self_ds": data,
             "self_ss": data, "self_esp": stack}
    for name, value in words.items():
        m.cpu.write(image.symbols[name], value.to_bytes(4, "little"))
    result = m.run()
    return m, result


def _outcome(result):
    """The vector the probe raised (None: it ran to its end), or what else ended the run."""
    if result.exit_code is not None:
        vector = result.exit_code >> 1
        return None if vector == NO_FAULT else vector
    return "halted" if result.halted else "shutdown" if result.shutdown else "running"


# Two bits that differ from the first instruction on, whatever the probe does, are left out:
# - a descriptor's accessed bit: the CPU sets it in the table it really uses, which under the VMM
#   is the shadow GDT, so the guest's own GDT never shows it (a difference of its own, but not the
#   instruction's);
# - DR7 bit 10, which reads as 1 on the CPU and starts as 0 in the virtual CPU's DR7.
DR7_FIXED = 1 << 10


def _without_accessed_bits(table):
    table = bytearray(table)
    for offset in range(5, len(table), 8):
        table[offset] &= ~1
    return bytes(table)


_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x200 | 0x3000   # arithmetic, DF, IF, IOPL


def _guest_view(m, image, result):
    """What the guest kernel can observe: under the VMM, its virtual CPU stands in for the real one."""
    vmm = isinstance(m, TrapAndEmulate)
    cpu = m.cpu
    gdt = image.symbols["gdt"]
    view = {"outcome": _outcome(result),
            "frame": bytes(cpu.read(FRAME, 16)), "scratch": bytes(cpu.read(SCRATCH, STATE_SIZE - 0x40)),
            "gdt": _without_accessed_bits(cpu.read(gdt, image.symbols["gdt_end"] - gdt))}
    view.update({r: cpu.u32(SAVE + 4 * i) for i, r in enumerate(SAVED_REGS)})     # stored by `finish`
    view.update({s: cpu[s] for s in ("ds", "es", "fs", "gs")})
    eflags = cpu["eflags"]
    if vmm:
        v = m.vcpu
        view.update(eflags=v.flags_view(eflags) & _FLAGS, cr0=v.cr0, cr3=v.cr3, dr7=v.dr[7] & ~DR7_FIXED,
                    gdtr=v.gdtr, idtr=v.idtr, ldtr=v.ldtr, tr=v.tr, msr=v.msr.get(MSR, 0))
    else:
        uc = m.uc
        view.update(eflags=eflags & _FLAGS, cr0=cpu["cr0"], cr3=uc.reg_read(X.UC_X86_REG_CR3),
                    dr7=uc.reg_read(X.UC_X86_REG_DR7) & ~DR7_FIXED,
                    gdtr=cpu.table(X.UC_X86_REG_GDTR), idtr=cpu.table(X.UC_X86_REG_IDTR),
                    ldtr=cpu.table_register(X.UC_X86_REG_LDTR)[0], tr=cpu.tss()[0], msr=uc.msr_read(MSR))
    return view


def _measure(image, index, probe):
    faults = {}
    for ring in (0, 1, 3):
        m, result = _run_probe(image, index, ring, "native")
        outcome = _outcome(result)
        faults[ring] = outcome if isinstance(outcome, int) else None     # hlt ends the run: no vector
        if ring == 0:
            native = _guest_view(m, image, result)
    m, result = _run_probe(image, index, 0, "trap-and-emulate")
    start, end = image.symbols[f"probe_{index}.start"], image.symbols[f"probe_{index}.end"]
    trapped = any(e.kind == "trap" and start <= e.eip < end for e in result.events)
    under_vmm = _guest_view(m, image, result)
    differences = tuple(k for k in native if native[k] != under_vmm[k])
    return CensusRow(probe.mnemonic, probe.source, faults, trapped, not differences, probe.group,
                     under_vmm["outcome"], differences)


_IMAGE = None
_ROWS = {}


def probe_kernel():
    """The assembled probe kernel (one image for the whole census), and its NASM source."""
    global _IMAGE
    if _IMAGE is None:
        source = _probe_kernel(INSTRUCTIONS)
        _IMAGE = (assemble(source), source)
    return _IMAGE


def census(names=None):
    """Measure each instruction in INSTRUCTIONS (or only those named) and return CensusRows."""
    by_name = {p.mnemonic: (i, p) for i, p in enumerate(INSTRUCTIONS)}
    names = list(by_name) if names is None else [n.lower() for n in names]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"no probe for {', '.join(unknown)}; the census knows {', '.join(by_name)}")
    image, _ = probe_kernel()
    for name in names:
        if name not in _ROWS:
            _ROWS[name] = _measure(image, *by_name[name])
    return [_ROWS[n] for n in names]


def table(rows=None):
    """The census as text, one line per instruction: the vector raised in each ring of the bare
    machine (each ring with its own selectors), then, under the VMM, whether it trapped, the vector
    the guest kernel's own handler received (`guest saw`), and whether the guest saw the native state."""
    rows = census() if rows is None else rows
    ring = lambda v: "-" if v is None else v if isinstance(v, str) else str(v)
    vector = lambda outcome: outcome if isinstance(outcome, int) else None     # a halt is no vector, as natively
    lines = [f"{'instruction':<13} {'ring 0':>7} {'ring 1':>7} {'ring 3':>7}  {'trapped':<8} {'guest saw':>9}  "
             f"{'same':<6} {'privileged':<11} {'sensitive':<10} hole"]
    for r in rows:
        f = r.faults
        lines.append(f"{r.mnemonic:<13} {ring(f[0]):>7} {ring(f[1]):>7} {ring(f[3]):>7}  "
                     f"{'yes' if r.trapped_under_vmm else 'no':<8} {ring(vector(r.vmm_fault)):>9}  "
                     f"{'yes' if r.same_under_vmm else 'no':<6} "
                     f"{'yes' if r.privileged else '':<11} {'yes' if r.sensitive else '':<10} "
                     f"{'HOLE' if r.hole else ''}")
    return "\n".join(lines)
