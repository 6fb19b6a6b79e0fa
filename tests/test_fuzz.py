"""The fuzz tier: garbage in, a result or a vmkit error out.

Whatever bytes a student (or a bug) hands to vmkit as a guest, the run must end in a RunResult or
in an error vmkit raises on purpose (a subclass of vmkit.VmkitError), within its budgets: never
another exception, a crash of the Python process, or a hang.

The corpus is seeded and reproducible: case i of family f with seed s is always the same image.
The cases run in a child process, so a segfault inside the emulator fails one test with the case
that caused it instead of killing the test run. To replay a single case:

    python tests/test_fuzz.py <family> <seed> <index> [technique]

Two families aim at the VMMs' own promises: descriptor_boot boots like the course's kernels (the
GDT, IDT, TSS and an LDT written in random order, every way across the rings in between) under
trap-and-emulate and binary translation, where a state Unicorn cannot continue from once ended the
process with SIGABRT; privileged_rings runs random privileged instruction streams at CPL 0, 1 and 3
under every technique, where a raw Python exception once escaped (invd in ring 3).

The budget tests check the budgets themselves: a guest that spins, one that faults forever and
one drowned in timer interrupts each end in vmkit.GuestTimeout, on time, with the partial result.
"""
import random
import struct
import subprocess
import sys
import time
import traceback

import pytest

import vmkit
from guestkit import PIC_IRQ0_ONLY, idt_gate, kernel

MAX_INSTRUCTIONS = 20_000
TIMEOUT = 2.0                  # seconds per case
SLACK = 1.0                    # seconds a run may take beyond its timeout= (start-up, one slice)
CASES_PER_FAMILY = 80
SEED = 20240601
ORIGIN = 0x100000

# ---------------------------------------------------------------- the corpus

# A prefix that loads an IDT (filled in by the generator) and jumps over it to the fuzzed body.
IDT_PREFIX = """
bits 32
org 0x100000
    lidt [idtr]
    mov esp, 0x3f0000
    jmp body
align 4
idtr:
    dw 256 * 8 - 1
    dd idt
align 8
idt:
    times 256 * 8 db 0
eoi_handler:                    ; a handler that acknowledges the PIC and returns
    push eax
    mov al, 0x20
    out 0xa0, al
    out 0x20, al
    pop eax
    iretd
body:
"""

# The same, then the PIC remapped to 0x20-0x2f with a fuzzed mask and the PIT started with a
# fuzzed mode and divisor (patched in at `pit_mode` and `pit_divisor`), then sti.
TIMER_PREFIX = IDT_PREFIX.replace("body:\n", "") + """
body:
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xa1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1
    out 0x21, al
    out 0xa1, al
pic_mask:
    mov al, 0xfe
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
pit_mode:
    mov al, 0x34
    out 0x43, al
pit_divisor:
    mov ax, 1
    out 0x40, al
    mov al, ah
    out 0x40, al
    sti
fuzz:
"""

# Instructions whose handling is the machine's job rather than plain emulation: privileged and
# I/O instructions, segment and descriptor-table loads, control transfers between rings, and
# the exceptions. `{i32}`, `{i16}`, `{i8}` are filled with random immediates.
MIX = [
    "cli", "sti", "hlt", "pushfd", "popfd", "iretd", "retf", "int3", "into", "ud2", "int {i8}",
    "in al, dx", "out dx, al", "in ax, dx", "out dx, eax", "in al, {i8}", "out {i8}, al",
    "rep outsb", "rep insb", "mov dx, {i16}", "mov dx, 0x3f8", "mov dx, 0x43", "mov dx, 0x20",
    "mov dx, 0xf4",
    "mov ds, ax", "mov es, ax", "mov ss, ax", "mov fs, ax", "pop ds", "pop gs", "mov ax, {i16}",
    "lgdt [eax]", "lidt [eax]", "ltr ax", "lldt ax", "sgdt [esp - 8]", "str ax",
    "mov cr0, eax", "mov eax, cr0", "mov cr3, eax", "mov cr4, eax", "mov eax, cr2", "clts",
    "wbinvd", "invlpg [eax]", "rdmsr", "wrmsr", "rdtsc", "cpuid",
    "mov eax, {i32}", "mov ecx, {i32}", "mov esi, {i32}", "mov esp, {i32}", "mov ebx, {i32}",
    "push {i32}", "push dword {i16}", "jmp {i16}:{i32}", "call {i16}:{i32}",
    "xor ecx, ecx", "div ecx", "add al, 0x7f", "bound eax, [esi]",
    "mov [eax], ecx", "mov eax, [ecx]", "lea esp, [esp - 64]",
]


def _assemble(source):
    return vmkit.assemble(source)


def _gates(rng, image, body_start, body_end, timer=False):
    """256 IDT entries, mostly plausible (a handler somewhere in the fuzzed body), some garbage."""
    eoi = image.symbols["eoi_handler"]
    out = bytearray()
    for vector in range(256):
        roll = rng.random()
        if timer and 0x20 <= vector < 0x30 and roll < 0.7:
            offset, selector, kind = eoi, 0x08, 0x8E
        elif roll < 0.8:
            offset = rng.randrange(body_start, max(body_end, body_start + 1))
            selector, kind = 0x08, rng.choice((0x8E, 0x8F, 0xEE, 0xEF))
        else:
            offset, selector, kind = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(8)
        out += struct.pack("<HHBBH", offset & 0xFFFF, selector, 0, kind, offset >> 16)
    return bytes(out)


def _mix(rng, count):
    lines = []
    for _ in range(count):
        text = rng.choice(MIX)
        lines.append(text.format(i32=hex(rng.getrandbits(32)), i16=hex(rng.getrandbits(16)),
                                 i8=hex(rng.getrandbits(8))))
    return "\n".join(lines)


def _with_idt(prefix_source, rng, body, timer=False):
    prefix = _assemble(prefix_source)
    start = ORIGIN + len(prefix.code)
    code = bytearray(prefix.code) + body
    idt = prefix.symbols["idt"] - ORIGIN
    code[idt:idt + 256 * 8] = _gates(rng, prefix, start, start + len(body), timer)
    return bytearray(code), prefix


def random_bytes(rng):
    """Pure random bytes, entered at the platform's boot state (no IDT: most end in a triple fault)."""
    return vmkit.Image(code=rng.randbytes(rng.randint(1, 512)))


def random_handlers(rng):
    """An IDT whose gates point at random places in a body of random bytes."""
    code, _ = _with_idt(IDT_PREFIX, rng, rng.randbytes(rng.randint(16, 512)))
    return vmkit.Image(code=bytes(code))


def privileged_mix(rng):
    """Random sequences of privileged, I/O and segment-load instructions with random operands,
    under an IDT whose handlers land somewhere in the same sequence."""
    body = _assemble("bits 32\n" + _mix(rng, rng.randint(10, 80))).code
    code, _ = _with_idt(IDT_PREFIX, rng, body)
    return vmkit.Image(code=bytes(code))


def timer_storm(rng):
    """The PIT programmed with a random mode and divisor (often the fastest), the PIC with a random
    mask, interrupts on, then random bytes or a random mix."""
    body = rng.randbytes(rng.randint(16, 256)) if rng.random() < 0.5 else \
        _assemble("bits 32\n" + _mix(rng, rng.randint(10, 60))).code
    code, prefix = _with_idt(TIMER_PREFIX, rng, body, timer=True)
    at = lambda label, k: prefix.symbols[label] - ORIGIN + k
    code[at("pic_mask", 1)] = rng.choice((0xFE, 0xFE, 0xFA, 0x00, rng.getrandbits(8)))
    code[at("pit_mode", 1)] = rng.choice((0x34, 0x36, 0x30, 0x38, rng.getrandbits(8)))
    divisor = rng.choice((1, 2, 3, 64, rng.getrandbits(16)))
    code[at("pit_divisor", 2):at("pit_divisor", 4)] = divisor.to_bytes(2, "little")
    return vmkit.Image(code=bytes(code))


# A kernel that boots like the course's: a GDT of eight descriptors (a TSS whose base is filled in
# at boot, a call gate whose offset is, a spare slot for an LDT), an IDT, a TSS; the boot itself is
# the fuzzed body, random groups of BOOT_GROUPS in a random order, so that traced stores to the
# descriptor tables meet every state the shadow tables can be in. An exception goes on with the next
# group, in ring 0, as long as the gates, the GDT and the TSS still let the CPU deliver it.
BOOT_PREFIX = """
bits 32
org 0x100000
    lgdt [gdtr]
    jmp 0x08:flat
flat:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x3f0000
    xor ecx, ecx
fill:                               ; every vector to the handler (the body may change them)
    mov eax, handler
    mov [idt + ecx * 8], ax
    mov word [idt + ecx * 8 + 2], 0x08
    mov word [idt + ecx * 8 + 4], 0xee00
    shr eax, 16
    mov [idt + ecx * 8 + 6], ax
    inc ecx
    cmp ecx, 256
    jb fill
    lidt [idtr]
    jmp body
align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff           ; 0x08 ring 0 code
    dq 0x00cf92000000ffff           ; 0x10 ring 0 data
    dq 0x00cffa000000ffff           ; 0x18 ring 3 code
    dq 0x00cff2000000ffff           ; 0x20 ring 3 data
    dw 103, 0                       ; 0x28 the TSS, its base filled in at boot
    db 0, 0x89, 0, 0
    dw 0, 0x08                      ; 0x30 a call gate, its offset filled in at boot
    db 0, 0xec
    dw 0
    dq 0                            ; 0x38 a spare slot: an LDT's descriptor
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
idtr:
    dw 256 * 8 - 1
    dd idt
bounds:
    dd 0, 3
align 8
ldt:
    dq 0x00cf92000000ffff, 0x00cf9a000000ffff, 0x00cff2000000ffff
ldt_end:
align 8
tss:
    times 104 db 0
align 8
idt:
    times 256 * 8 db 0
handler:                            ; every gate's handler: on with the next group, in ring 0
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x3f0000
    jmp [resume]
resume:
    dd 0
gate_target:                        ; the call gate's target
    retf 8
body:
"""

BOOT_GROUPS = [
    "mov eax, tss\nmov [gdt + 0x2a], ax\nshr eax, 16\nmov [gdt + 0x2c], al\nmov [gdt + 0x2f], ah",
    "mov ax, 0x28\nltr ax",
    "mov dword [tss + 4], 0x3e0000\nmov dword [tss + 8], 0x10",
    "mov dword [tss + {tss_field}], {i32}",
    "mov word [tss + 102], {i16}",
    "mov eax, gate_target\nmov [gdt + 0x30], ax\nshr eax, 16\nmov [gdt + 0x36], ax",
    "mov byte [gdt + 0x34], {count}",
    "mov byte [gdt + {gdt_byte}], {i8}",
    "mov dword [gdt + {gdt_dword}], {i32}",
    "mov word [gdt + {gdt_word}], {i16}",
    "mov eax, handler\nmov [idt + {vector} * 8], ax\nmov word [idt + {vector} * 8 + 2], {gate_cs}\n"
    "mov word [idt + {vector} * 8 + 4], {gate_type}\nshr eax, 16\nmov [idt + {vector} * 8 + 6], ax",
    "mov dword [idt + {idt_dword}], {i32}",
    "lidt [idtr]",
    "lgdt [gdtr]",
    "mov eax, ldt\nmov word [gdt + 0x38], ldt_end - ldt - 1\nmov [gdt + 0x3a], ax\nshr eax, 16\n"
    "mov [gdt + 0x3c], al\nmov byte [gdt + 0x3d], 0x82\nmov [gdt + 0x3f], ah",
    "mov ax, 0x38\nlldt ax",
    "mov byte [ldt + {ldt_byte}], {i8}",
    "mov ax, {ldt_selector}\nmov es, ax",
    "mov ecx, 0x174\nmov eax, {sysenter_cs}\nxor edx, edx\nwrmsr",
    "mov ecx, 0x175\nmov eax, 0x3c0000\nxor edx, edx\nwrmsr",
    "mov ecx, 0x176\nmov eax, handler\nxor edx, edx\nwrmsr",
    "mov ecx, 0xc0000080\nrdmsr\nor eax, 1\nwrmsr",
    "int3", "into", "mov eax, 5\nbound eax, [bounds]", "sysenter", "syscall", "mov ecx, handler\nsysret",
    "mov ecx, 0x3d0000\nmov edx, handler\nsysexit",
    "call 0x30:0", "mov ax, 0x30\nmov fs, ax",
    "push dword 0x23\npush dword 0x3d0000\npush dword 0x2\npush dword 0x1b\npush dword {ring3}\niretd\n"
    "{ring3}:\n{user}",
]
USER_GROUPS = ["call 0x33:0", "push dword 1\npush dword 2\ncall 0x33:0", "sysenter", "syscall", "sysret", "int3", "into",
               "int 0x80", "mov eax, 5\nbound eax, [bounds]", "mov ax, 0x0f\nmov ds, ax", "cli", "invd",
               "invlpg [0]", "in al, 0x60", "hlt"]


def _boot_group(rng, n):
    text = rng.choice(BOOT_GROUPS)
    return text.format(
        tss_field=rng.choice((4, 8, 12, 16, 96, 100)), i32=hex(rng.getrandbits(32)), i16=hex(rng.getrandbits(16)),
        i8=hex(rng.getrandbits(8)), count=rng.randrange(32), gdt_byte=rng.randrange(8, 64),
        gdt_dword=rng.randrange(8, 61), gdt_word=rng.randrange(8, 63), vector=rng.choice((3, 4, 5, 11, 13, 14, 0x80)),
        gate_cs=rng.choice(("0x08", "0x08", "0x18", "0x30", hex(rng.getrandbits(16)))),
        gate_type=rng.choice(("0x8e00", "0x8f00", "0xee00", "0xef00", "0x0e00", hex(rng.getrandbits(16)))),
        idt_dword=rng.randrange(0, 256 * 8 - 3, 4), ldt_byte=rng.randrange(24),
        ldt_selector=rng.choice(("0x04", "0x07", "0x0c", "0x14", "0x1c")),
        sysenter_cs=rng.choice(("0x08", "0x08", "0", "0x30", hex(rng.getrandbits(16)))),
        ring3=f"ring3_{n}", user="\n".join(rng.choice(USER_GROUPS) for _ in range(rng.randint(1, 3))))


def descriptor_boot(rng):
    """A boot like the course's kernel's, its groups of stores to the GDT (TSS base, call gate,
    random bytes of any descriptor), the IDT's gates, the TSS's fields and an LDT, with lgdt, lidt,
    ltr, lldt, the sysenter MSRs, EFER.SCE and every way across the rings in between (syscall and
    sysret too, #UD on this CPU), in a random order."""
    count = rng.randint(4, 24)
    body = "\n".join(f"group_{n}:\nmov dword [resume], group_{n + 1}\n{_boot_group(rng, n)}" for n in range(count))
    return _assemble(BOOT_PREFIX + body + f"\ngroup_{count}:\nmov al, 1\nout 0xf4, al\nhlt\n")


# Random privileged instruction streams (the class invd and invlpg belonged to) at CPL 0, 1 or 3,
# on a kernel with segments for every ring (guestkit): whatever faults, the run must end in a
# result or a vmkit error under every technique.
PRIVILEGED = ["cli", "sti", "hlt", "invd", "wbinvd", "invlpg [eax]", "lgdt [esi]", "lidt [esi]", "ltr ax",
              "lldt ax", "sldt ax", "str ax", "smsw ax", "lmsw ax", "clts", "mov cr0, eax", "mov cr3, eax",
              "mov cr4, eax", "mov eax, cr0", "mov eax, cr2", "mov eax, cr3", "mov dr7, eax", "mov eax, dr6",
              "rdmsr", "wrmsr", "rdpmc", "sysenter", "sysexit", "syscall", "sysret", "in al, dx", "out dx, al", "insb", "outsb",
              "rep insd", "rep outsw", "iretd", "retf", "retf 8", "int {i8}", "int3", "into", "ud2",
              "call 0x38:0", "jmp 0x08:0x100000", "call {i16}:{i32}", "mov ss, ax", "pop ss", "mov ds, ax",
              "lar eax, ebx", "lsl eax, ebx", "verr bx", "verw bx", "pushfd", "popfd", "push cs", "cpuid",
              "mov eax, {i32}", "mov ebx, {i16}", "mov ax, {i16}", "mov ecx, {i8}", "mov edx, {i16}",
              "mov esi, 0x100000", "mov edi, 0x200000", "push dword {i32}"]


def privileged_rings(rng):
    """A random stream of privileged and sensitive instructions with random operands, at CPL 0,
    1 or 3; an exception goes on with the next instruction, in the same ring."""
    ring = rng.choice((0, 1, 3))
    count = rng.randint(4, 30)
    stream = "\n".join(f"p_{i}:\nmov dword [resume], p_{i + 1}\n" + rng.choice(PRIVILEGED).format(
        i32=hex(rng.getrandbits(32)), i16=hex(rng.getrandbits(16)), i8=hex(rng.getrandbits(8))) for i in range(count))
    enter = {0: "mov ax, KDATA\nmov ds, ax\nmov es, ax\njmp [resume]",
             1: "mov ax, R1DATA\nmov ds, ax\nmov es, ax\n"
                "push R1DATA\npush R1STACK\npush 0x2\npush R1CODE\npush dword [resume]\niretd",
             3: "mov ax, UDATA\nmov ds, ax\nmov es, ax\n"
                "push UDATA\npush USTACK\npush 0x2\npush UCODE\npush dword [resume]\niretd"}[ring]
    gates = {v: ("again", 0xEE) for v in list(range(32)) + [0x80]}
    return _assemble(kernel(body=f"mov dword [resume], p_0\njmp again\n{stream}\n"
                                 f"p_{count}:\nmov dword [resume], finish\njmp finish",
                            gates=gates,
                            handlers={"again": "mov ax, KDATA\nmov ds, ax\nmov ss, ax\nmov esp, KSTACK\n"
                                               f"cmp dword [resume], finish\nje finish\n{enter}",
                                      "finish": "mov al, 1\nout 0xf4, al\nhlt",     # ring 0 only: from
                                      "resume": "dd 0"}))                           # ring 1 or 3 a #GP, then here


FAMILIES = {f.__name__: f for f in (random_bytes, random_handlers, privileged_mix, timer_storm, descriptor_boot,
                                    privileged_rings)}


def case_image(family, seed, index):
    """Case `index` of `family`: the same image for the same (family, seed, index), everywhere."""
    return FAMILIES[family](random.Random(f"{family}:{seed}:{index}"))


def run_case(image, technique="native"):
    """Run one case the way the tier demands; returns a line saying how it ended."""
    t0 = time.perf_counter()
    try:
        result = vmkit.run(image, technique, max_instructions=MAX_INSTRUCTIONS, timeout=TIMEOUT)
        end = f"result {result.summary()}"
    except vmkit.VmkitError as e:
        end = f"{type(e).__name__}"
    elapsed = time.perf_counter() - t0
    if elapsed > TIMEOUT + SLACK:
        raise AssertionError(f"took {elapsed:.2f} s with timeout={TIMEOUT}")
    return f"{elapsed:.3f}s {end}"


def worker(family, seed, indices, technique="native"):
    """The child process: run the cases, saying which one starts before it runs, so the parent
    can name the case if this process dies."""
    for index in indices:
        print(f"start {index}", flush=True)
        try:
            image = case_image(family, seed, index)
            end = run_case(image, technique)
        except vmkit.AsmError:
            end = "the generator made a mix NASM rejects"
        except Exception:
            print(f"bad {index} " + traceback.format_exc().replace("\n", "\n    "), flush=True)
            continue
        print(f"ok {index} {end}", flush=True)
    print("done", flush=True)


# ---------------------------------------------------------------- the corpus tests

def run_corpus(family, indices, technique="native"):
    """Run cases in child processes; a child that dies is replaced, starting after the case that
    killed it. Returns (crashed cases with how they died, lines of cases that went wrong)."""
    crashed, bad, todo = [], [], list(indices)
    while todo:
        command = [sys.executable, __file__, family, str(SEED), ",".join(map(str, todo)), technique]
        proc = subprocess.run(command, capture_output=True, text=True,
                              timeout=len(todo) * (TIMEOUT + SLACK) + 30)
        lines = proc.stdout.splitlines()
        bad += [line for line in lines if line.startswith("bad ")]
        if lines and lines[-1] == "done":
            break
        started = [int(line.split()[1]) for line in lines if line.startswith("start ")]
        last = started[-1] if started else todo[0]
        crashed.append(f"case {last}: the process died with status {proc.returncode}; replay: "
                       f"python tests/test_fuzz.py {family} {SEED} {last} {technique}")
        todo = [i for i in todo if i > last]
    return crashed, bad


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"descriptor_boot", "privileged_rings"}))
def test_fuzzed_guests_end_in_a_result_or_a_vmkit_error(family):
    """Does every fuzzed image of this family end in a RunResult or a VmkitError, within its
    budget, without crashing or hanging the process?"""
    crashed, bad = run_corpus(family, range(CASES_PER_FAMILY))
    assert not crashed, "cases that crashed the process:\n" + "\n".join(crashed)
    assert not bad, "cases that raised something other than a VmkitError:\n" + "\n".join(bad)


@pytest.mark.parametrize("family", ["privileged_mix", "timer_storm", "random_handlers"])
@pytest.mark.parametrize("technique", ["trap-and-emulate", "binary-translation"])
def test_fuzzed_guests_under_a_vmm_end_in_a_result_or_a_vmkit_error(technique, family):
    """The same promise with a VMM in front: its traps, call-outs and translations must not turn
    garbage into a crash or a hang either (a share of the corpus: the VMMs are slower)."""
    crashed, bad = run_corpus(family, range(0, CASES_PER_FAMILY, 4), technique)
    assert not crashed, "cases that crashed the process:\n" + "\n".join(crashed)
    assert not bad, "cases that raised something other than a VmkitError:\n" + "\n".join(bad)


BOOT_CASES = 24                # per technique: seconds, not minutes


@pytest.mark.parametrize("technique", ["native", "trap-and-emulate", "binary-translation"])
def test_fuzzed_boots_writing_the_descriptor_tables_never_kill_the_process(technique):
    """Random boots that write the GDT, the IDT, the TSS and an LDT and cross the rings every way:
    under the VMMs every traced store must complete once, and no state may end in a signal
    (Unicorn's SIGABRT) instead of a result or a vmkit error."""
    crashed, bad = run_corpus("descriptor_boot", range(BOOT_CASES), technique)
    assert not crashed, "cases that killed the process:\n" + "\n".join(crashed)
    assert not bad, "cases that raised something other than a VmkitError:\n" + "\n".join(bad)


@pytest.mark.parametrize("technique", ["native", "trap-and-emulate", "binary-translation", "hardware-assist"])
def test_privileged_streams_in_every_ring_end_in_a_result_or_a_vmkit_error(technique):
    """Random privileged instruction streams at CPL 0, 1 and 3 under every technique vmkit models
    on Unicorn: a vmkit error or a normal end, never a raw Python exception (invd and invlpg in
    ring 3 were an IndexError once) and never a dead process."""
    crashed, bad = run_corpus("privileged_rings", range(BOOT_CASES), technique)
    assert not crashed, "cases that killed the process:\n" + "\n".join(crashed)
    assert not bad, "cases that raised something other than a VmkitError:\n" + "\n".join(bad)


def test_the_corpus_is_reproducible():
    """Is case i of a family the same image every time it is generated?"""
    for family in FAMILIES:
        assert case_image(family, SEED, 7).code == case_image(family, SEED, 7).code
        assert case_image(family, SEED, 7).code != case_image(family, SEED, 8).code


# ---------------------------------------------------------------- the budgets

SPIN = "jmp $"

FAULT_LOOP = idt_gate(13, "gp_handler") + """
    lidt [idtr]
    mov ax, 0x1233
again:
    mov ds, ax                      ; #GP(0x1230), and the handler returns right here
    jmp again
gp_handler:
    add esp, 4                      ; drop the error code
    iretd
align 4
idtr:
    dw 14 * 8 - 1
    dd idt
align 8
idt:
    times 14 dq 0
"""

INTERRUPT_STORM = idt_gate(0x20, "tick") + """
    lidt [idtr]""" + PIC_IRQ0_ONLY + """
    mov al, 0x34                    ; PIT: mode 2, divisor 1, the fastest it goes
    out 0x43, al
    mov al, 1
    out 0x40, al
    xor al, al
    out 0x40, al
    sti
    jmp $
tick:                               ; does nothing but acknowledge
    push eax
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd
align 4
idtr:
    dw 0x21 * 8 - 1
    dd idt
align 8
idt:
    times 0x21 dq 0
"""

ENDLESS = {"spin": SPIN, "fault loop": FAULT_LOOP, "interrupt storm": INTERRUPT_STORM}


@pytest.fixture(params=sorted(ENDLESS))
def endless_guest(request):
    """A guest that never ends by itself: a spin, a fault loop, an interrupt storm."""
    return vmkit.assemble(ENDLESS[request.param])


@pytest.mark.parametrize("budget", [1, 777, 20_000])
def test_instruction_budget_is_exact(endless_guest, budget):
    """Does max_instructions stop an endless guest after exactly that many instructions, with
    GuestTimeout carrying the partial result?"""
    with pytest.raises(vmkit.GuestTimeout) as caught:
        vmkit.run(endless_guest, max_instructions=budget, timeout=30)
    result = caught.value.result
    assert isinstance(result, vmkit.RunResult)
    assert result.stats["instructions"] == budget
    assert not (result.halted or result.shutdown) and result.exit_code is None


@pytest.mark.parametrize("max_instructions", [None, 10**12], ids=["uncounted", "counted"])
def test_time_budget_is_kept(endless_guest, max_instructions):
    """Does timeout= stop an endless guest on time (not much beyond the timeout), with
    GuestTimeout carrying the partial result, whether or not instructions are counted?"""
    timeout = 0.5
    t0 = time.perf_counter()
    with pytest.raises(vmkit.GuestTimeout) as caught:
        vmkit.run(endless_guest, max_instructions=max_instructions, timeout=timeout)
    elapsed = time.perf_counter() - t0
    assert isinstance(caught.value.result, vmkit.RunResult)
    assert elapsed < timeout + SLACK, f"GuestTimeout came after {elapsed:.2f} s with timeout={timeout}"


@pytest.mark.parametrize("technique", ["trap-and-emulate", "binary-translation"])
def test_time_and_instruction_budgets_hold_under_a_vmm(endless_guest, technique):
    """Do the budgets stop an endless guest when a VMM runs it, on time and exactly?"""
    t0 = time.perf_counter()
    with pytest.raises(vmkit.GuestTimeout):
        vmkit.run(endless_guest, technique, max_instructions=10**12, timeout=0.5)
    assert time.perf_counter() - t0 < 0.5 + SLACK
    with pytest.raises(vmkit.GuestTimeout) as caught:
        vmkit.run(endless_guest, technique, max_instructions=5_000, timeout=30)
    assert caught.value.result.stats["instructions"] == 5_000


def test_the_storm_really_storms():
    """Does the storm guest take an interrupt every few dozen instructions (so the budget tests
    above test what they claim)?"""
    with pytest.raises(vmkit.GuestTimeout) as caught:
        vmkit.run(INTERRUPT_STORM, max_instructions=20_000, timeout=30)
    assert caught.value.result.stats["irqs"] > 100


# ---------------------------------------------------------------- what the fuzzing found

PAGING_WITHOUT_PAGE_TABLES = """
    mov eax, handler                ; IDT entry 14 (#PF): an interrupt gate to handler
    mov [idt + 14 * 8], ax
    mov word [idt + 14 * 8 + 2], 0x08
    mov word [idt + 14 * 8 + 4], 0x8e00
    shr eax, 16
    mov [idt + 14 * 8 + 6], ax
    lidt [idtr]
    mov eax, 0x80000011             ; paging on, CR3 = 0: a page directory of zeros
    mov cr0, eax
    nop                             ; fetching this faults: #PF, and the IDT is not mapped either
handler:
    hlt
align 4
idtr:
    dw 15 * 8 - 1
    dd idt
align 8
idt:
    times 15 dq 0
"""


def test_paging_without_page_tables_ends_in_a_result_or_an_error():
    """Does a guest that turns paging on without page tables end in a RunResult or a VmkitError
    (a triple fault, or GuestError: paging not modelled) rather than killing the process?"""
    code = ("import vmkit\n"
            "try:\n    vmkit.run(%r, max_instructions=20000, timeout=2)\n"
            "except vmkit.VmkitError:\n    pass\n" % PAGING_WITHOUT_PAGE_TABLES)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"the process died (status {proc.returncode}):\n{proc.stderr[-2000:]}"


def test_rdtsc_follows_the_virtual_clock():
    """Is rdtsc part of the deterministic clock, so that two runs of the same guest agree?"""
    guest = "rdtsc\nhlt"
    first, second = (vmkit.run(guest, max_instructions=100).regs for _ in range(2))
    assert (first["edx"], first["eax"]) == (second["edx"], second["eax"]) == (0, 0)
    later = vmkit.run("mov ecx, 10\nspin: loop spin\nrdtsc\nhlt", max_instructions=100).regs
    assert later["eax"] == 1 + 10                      # one cycle per instruction before it: mov, 10 loops


if __name__ == "__main__":
    _family, _seed, _which = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    _technique = sys.argv[4] if len(sys.argv) > 4 else "native"
    _first, _, _last = _which.partition("-")
    _indices = range(int(_first), int(_last)) if _last else [int(i) for i in _which.split(",")]
    worker(_family, _seed, _indices, _technique)
