"""Interrupt and exception delivery, checked against the facts of the Intel SDM vol. 3, ch. 6.

Each test stops the machine at the handler's first instruction and reads what the CPU left there:
the stack, the frame, CS:EIP, SS:ESP, EFLAGS.
"""
import pytest

import vmkit

KSTACK, R1STACK, USTACK = 0x3F0000, 0x3E0000, 0x3D0000
IF = 1 << 9
TO_RING3 = "mov eax, user\nmov ebx, {eflags:#x}\njmp to_ring3\nuser:\n"


def user_mode(code, eflags=0x202):
    """Body that enters ring 3 (via iretd) and runs `code` there."""
    return TO_RING3.format(eflags=eflags) + code


def at_handler(image, label):
    m = vmkit.Machine(image)
    m.run_until(eip=image.symbols[label])
    assert not m.finished, m.result()
    return m


def stack(m, count):
    return [int.from_bytes(m.uc.mem_read(m.cpu["esp"] + 4 * i, 4), "little") for i in range(count)]


def transitions(result):
    return [(e.detail["cause"], e.detail["from_ring"], e.detail["to_ring"])
            for e in result.events if e.kind == "ring-transition"]


def test_int_from_ring3_switches_to_the_tss_ring0_stack(build):
    """int 0x80 in ring 3: does the CPU switch to ss0:esp0 and push SS, ESP, EFLAGS, CS, EIP?"""
    img = build(body=user_mode("int 0x80\nafter:\njmp $"), gates={0x80: ("h80", 0xEE)}, handlers={"h80": "hlt"})
    m = at_handler(img, "h80")
    assert m.cpu.cpl == 0 and m.cpu["cs"] == 0x08
    assert m.cpu["ss"] == 0x10 and m.cpu["esp"] == KSTACK - 20
    assert stack(m, 5) == [img.symbols["after"], 0x2B, 0x202, USTACK, 0x33]
    event = m.events[-1]
    assert event.detail["stack_switch"] and event.detail["frame"] == list(zip(
        ["EIP", "CS", "EFLAGS", "ESP", "SS"], stack(m, 5)))
    assert event.eip == img.symbols["user"]          # where the int instruction is


def test_int_in_the_same_ring_pushes_three_dwords_on_the_current_stack(build):
    """An interrupt that does not change privilege: no stack switch, no SS:ESP in the frame."""
    img = build(body="mov esp, 0x3A0000\nint 0x81\nafter:\njmp $", gates={0x81: ("h81", 0x8E)}, handlers={"h81": "hlt"})
    m = at_handler(img, "h81")
    assert m.cpu["ss"] == 0x10 and m.cpu["esp"] == 0x3A0000 - 12
    assert stack(m, 3) == [img.symbols["after"], 0x08, 0x2]
    assert not m.events[-1].detail["stack_switch"]


@pytest.mark.parametrize("attr, if_in_handler", [(0x8E, False), (0x8F, True)])
def test_interrupt_gates_clear_IF_and_trap_gates_do_not(build, attr, if_in_handler):
    """Interrupt gate vs trap gate: only the interrupt gate clears IF (SDM 6.12.1.3)."""
    img = build(body="sti\nint 0x82\njmp $", gates={0x82: ("h82", attr)}, handlers={"h82": "hlt"})
    m = at_handler(img, "h82")
    assert bool(m.cpu["eflags"] & IF) == if_in_handler
    assert stack(m, 3)[2] & IF                        # the saved EFLAGS still has IF set


def test_int_n_through_a_gate_more_privileged_than_cpl_is_a_gp_naming_the_idt_entry(build):
    """int 0x81 from ring 3 through a DPL-0 gate: #GP with error code vector*8+2 (IDT bit), EIP at the int."""
    img = build(body=user_mode("bad:\nint 0x81\njmp $"), gates={0x81: ("h81", 0x8E), 13: ("gp", 0x8E)},
                handlers={"h81": "hlt", "gp": "hlt"})
    m = at_handler(img, "gp")
    assert stack(m, 6) == [0x81 * 8 + 2, img.symbols["bad"], 0x2B, 0x202, USTACK, 0x33]


def test_loading_a_bad_selector_is_a_gp_whose_error_code_is_the_selector(build):
    """mov ds with a selector past the GDT limit: #GP(selector with RPL cleared), EIP at the mov."""
    img = build(body="mov ax, 0x1233\nbad:\nmov ds, ax\njmp $", gates={13: ("gp", 0x8E)}, handlers={"gp": "hlt"})
    m = at_handler(img, "gp")
    assert stack(m, 4) == [0x1230, img.symbols["bad"], 0x08, 0x2]


@pytest.mark.parametrize("instruction", ["cli", "hlt", "lgdt [0]", "mov cr0, eax", "wrmsr"])
def test_a_privileged_instruction_in_ring3_is_a_gp_with_error_code_0(build, instruction):
    """Ring 3 runs cli, hlt, lgdt, mov cr0, wrmsr: each raises #GP(0) at that instruction."""
    img = build(body=user_mode(f"bad:\n{instruction}\njmp $"), gates={13: ("gp", 0x8E)}, handlers={"gp": "hlt"})
    m = at_handler(img, "gp")
    assert stack(m, 2) == [0, img.symbols["bad"]]
    assert m.events[-1].detail["cause"] == "#GP" and m.events[-1].detail["from_ring"] == 3


def test_iret_returns_to_ring3_with_the_user_stack(build):
    """The handler's iretd pops EIP, CS, EFLAGS, ESP, SS: back in ring 3 after the int."""
    img = build(body=user_mode("int 0x80\nafter:\nint 0x80\njmp $"), gates={0x80: ("h80", 0xEE)},
                handlers={"h80": "iretd"})
    m = vmkit.Machine(img)
    m.run_until(eip=img.symbols["after"])
    assert m.cpu.cpl == 3 and m.cpu["ss"] == 0x33 and m.cpu["esp"] == USTACK
    assert transitions(m.result()) == [("iret", 0, 3), ("int 0x80", 3, 0), ("iret", 0, 3)]


def test_delivery_into_ring1_uses_ss1_esp1(build):
    """A gate whose code segment has DPL 1, entered from ring 3: the CPU takes ss1:esp1 from the TSS."""
    img = build(body=user_mode("int 0x80\njmp $"), gates={0x80: ("h80", 0xEE)}, handlers={"h80": "jmp $"},
                gate_cs="R1CODE")
    m = at_handler(img, "h80")
    assert m.cpu.cpl == 1 and m.cpu["cs"] == 0x19
    assert m.cpu["ss"] == 0x21 and m.cpu["esp"] == R1STACK - 20


class TestIOPermission:
    """The protected-mode I/O check (SDM vol. 1, 19.5): CPL <= IOPL, or the TSS bitmap allows the port."""

    def test_ring3_with_iopl0_faults_before_the_access(self, build):
        img = build(body=user_mode("mov al, 5\nbad:\nout 0xf4, al\njmp $"), gates={13: ("gp", 0x8E)},
                    handlers={"gp": "hlt"})
        m = at_handler(img, "gp")
        assert stack(m, 2) == [0, img.symbols["bad"]]
        assert m.debug_exit.exit_code is None and not m.result().of_kind("io")

    def test_ring3_with_iopl3_may_use_ports(self, build):
        img = build(body=user_mode("mov al, 5\nout 0xf4, al\njmp $", eflags=0x3202))
        assert vmkit.run(img).exit_code == 11

    def test_ring1_with_iopl0_faults_too(self, build):
        """A guest kernel moved to ring 1 cannot reach the devices: every out traps (lesson 02)."""
        body = ("push R1DATA\npush R1STACK\npush 0x2\npush R1CODE\npush ring1\niretd\n"
                "ring1:\nmov al, 5\nbad:\nout 0xf4, al\njmp $")
        img = build(body=body, gates={13: ("gp", 0x8E)}, handlers={"gp": "hlt"})
        m = at_handler(img, "gp")
        assert stack(m, 3) == [0, img.symbols["bad"], 0x19]

    def test_the_tss_bitmap_opens_single_ports(self, build):
        bitmap = ["0xFF"] * 33
        bitmap[0xF4 // 8] = "0xEF"                       # clear the bit of port 0xf4 only
        extra = "iomap:\n    db " + ", ".join(bitmap)
        img = build(body=user_mode("mov al, 5\nout 0xf4, al\njmp $"), iomap_base=104, tss_extra=extra)
        assert vmkit.run(img).exit_code == 11
        img = build(body=user_mode("mov dx, 0x3f8\nbad:\nout dx, al\njmp $"), iomap_base=104, tss_extra=extra,
                    gates={13: ("gp", 0x8E)}, handlers={"gp": "hlt"})
        assert stack(at_handler(img, "gp"), 2) == [0, img.symbols["bad"]]

    def test_a_refused_in_leaves_eax_alone(self, build):
        img = build(body=user_mode("mov eax, 0x11223344\nin al, 0x40\njmp $"), gates={13: ("gp", 0x8E)},
                    handlers={"gp": "hlt"})
        assert at_handler(img, "gp").cpu["eax"] == 0x11223344


class TestFaultsDuringDelivery:
    """SDM table 6-5: benign then contributory is handled serially; contributory twice is #DF;
    a fault while delivering #DF is a triple fault, which shuts the processor down."""

    def test_a_fault_while_delivering_a_gp_is_a_double_fault(self, build):
        img = build(body=user_mode("cli\njmp $"), gates={13: ("gp", 0x0E), 8: ("df", 0x8E)},
                    handlers={"gp": "hlt", "df": "hlt"})
        m = at_handler(img, "df")
        assert stack(m, 1) == [0]                            # #DF's error code is always 0
        last = m.events[-1].detail
        assert last["vector"] == 8 and last["cause"].startswith("#DF")

    def test_a_benign_exception_then_a_fault_is_handled_serially(self, build):
        """ud2 (#UD, benign) through a not-present gate: the #NP is delivered as itself."""
        img = build(body="ud2\njmp $", gates={6: ("ud", 0x0E), 11: ("np", 0x8E)}, handlers={"ud": "hlt", "np": "hlt"})
        m = at_handler(img, "np")
        assert stack(m, 1) == [6 * 8 + 2 + 1]               # IDT entry 6, EXT set

    def test_no_usable_gates_at_all_is_a_triple_fault(self, build):
        result = vmkit.run(build(body="ud2"))
        assert result.shutdown and not result.halted and result.exit_code is None
        assert result.events[-1].kind == "shutdown"

    def test_an_exception_before_any_idt_is_loaded_is_a_triple_fault(self):
        result = vmkit.run("int 0x80")
        assert result.shutdown


# --- every way across the rings is recorded ------------------------------------------------------
@pytest.mark.parametrize("technique", ["native", "trap-and-emulate", "binary-translation", "hardware-assist"])
def test_call_gates_sysenter_and_sysexit_are_ring_transitions_under_every_technique(technique):
    """The crossings guest calls through a call gate from ring 3 (and returns with retf 8), then
    enters its kernel with sysenter and leaves with sysexit: each crossing is one ring-transition
    event, with the guest kernel's ring as the technique runs it (1 under ring compression)."""
    from test_qemu_differential import guest_source
    result = vmkit.run(guest_source("crossings"), technique)
    kernel = 1 if technique in ("trap-and-emulate", "binary-translation") else 0
    crossings = [(e.detail["cause"], e.detail["from_ring"], e.detail["to_ring"]) for e in result.of_kind("ring-transition")
                 if e.detail["cause"] in ("call gate", "retf", "sysenter", "sysexit")]
    assert crossings == [("call gate", 3, kernel), ("retf", kernel, 3), ("sysenter", 3, kernel), ("sysexit", kernel, 3)]
    gate = [e for e in result.of_kind("ring-transition") if e.detail["cause"] == "call gate"][0]
    assert gate.detail["parameters"] == 2 and gate.cpl == 3
    assert result.exit_code == 0x1d


def test_sysenter_with_no_sysenter_cs_is_a_gp_at_the_instruction():
    """SYSENTER raises #GP(0) when IA32_SYSENTER_CS[15:2] is 0 (SDM vol. 2B, SYSENTER)."""
    from guestkit import kernel
    source = kernel(body="bad:\nsysenter\nmov al, 1\nout 0xf4, al", gates={13: ("gp", 0x8E)},
                    handlers={"gp": "cmp dword [esp + 4], bad\njne .no\ncmp dword [esp], 0\njne .no\n"
                                    "mov al, 2\nout 0xf4, al\n.no:\nmov al, 3\nout 0xf4, al"})
    for technique in ("native", "trap-and-emulate", "binary-translation"):
        assert vmkit.run(source, technique).exit_code == 5, technique


def test_a_call_gate_into_ring_0_with_no_tss_is_a_guest_error_not_an_abort():
    """Unicorn takes a call gate's new stack from TR's TSS and aborts the process when TR holds
    none (get_ss_esp_from_tss): vmkit stops the guest in front of the call with a GuestError. Run in
    a child process, so that a regression is a failed test, not a dead test run."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    source = """
    lgdt [gdtr]
    jmp 0x08:.cs
.cs:
    push dword 0x23
    push dword 0x1f0000
    push dword 0x2
    push dword 0x1b
    push dword user
    iretd
user:
    call 0x2b:0
callee:
    hlt
align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff
    dq 0x00cf92000000ffff
    dq 0x00cffa000000ffff
    dq 0x00cff2000000ffff
    dw callee, 0x08
    db 0, 0xec
    dw 0x10
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
"""
    child = ("import sys, vmkit\n"
             "try:\n    vmkit.run(sys.stdin.read())\nexcept vmkit.GuestError as e:\n    print('GuestError:', e)\n")
    home = str(Path(vmkit.__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", child], input=source, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": home})
    assert done.returncode == 0, f"the process died (status {done.returncode}): {done.stderr[-500:]}"
    assert "GuestError:" in done.stdout and "call gate" in done.stdout and "no TSS" in done.stdout


@pytest.mark.parametrize("technique", ["native", "trap-and-emulate", "binary-translation"])
def test_a_call_through_a_gate_by_a_far_pointer_in_memory_is_recorded_before_any_delivery(technique):
    """`call far [m16:32]` (FF /3) through a call gate with one parameter, from ring 3, as the first
    crossing after the kernel's iret: recorded as a call gate; under trap-and-emulate the CPU finds
    the ring-1 stack in the VMM's TSS although no interrupt was delivered yet."""
    from guestkit import kernel
    body = """
    mov eax, callee
    mov [gdt_end], ax
    shr eax, 16
    mov [gdt_end + 6], ax
    mov word [gdt_end + 2], KCODE
    mov byte [gdt_end + 4], 1
    mov byte [gdt_end + 5], 0xec
    mov word [gdtr], 0x47
    lgdt [gdtr]
    mov eax, user
    mov ebx, 0x2
    jmp to_ring3
user:
    mov dword [pointer + 4], 0x43
    push dword 7
    call far [pointer]
    mov eax, ebx
    int 0x80
"""
    source = kernel(body=body, gates={0x80: ("h80", 0xEE), 13: ("h80", 0x8E)},
                    handlers={"callee": "mov ebx, [esp + 8]\nretf 4", "h80": "mov al, bl\nout 0xf4, al",
                              "pointer": "dd 0, 0"})
    source = source.replace("gdt_end:\ngdtr:", "gdt_end:\n    dq 0\ngdtr:")      # room for the gate
    result = vmkit.run(source, technique, max_instructions=10_000)
    kernel_ring = 0 if technique == "native" else 1
    crossings = [(e.detail["cause"], e.detail["from_ring"], e.detail["to_ring"]) for e in result.of_kind("ring-transition")]
    assert crossings[1:3] == [("call gate", 3, kernel_ring), ("retf", kernel_ring, 3)]
    assert result.exit_code == (7 << 1) | 1                     # the parameter the callee found


# --- syscall and sysret: #UD on a 32-bit Intel CPU ---------------------------------------------------
SYSCALL_BODIES = {
    "syscall": "bad:\nsyscall\nmov al, 1\nout 0xf4, al",
    "syscall with EFER.SCE set": "mov ecx, 0xc0000080\nrdmsr\nor eax, 1\nwrmsr\nbad:\nsyscall\nmov al, 1\nout 0xf4, al",
    "sysret with EFER.SCE set": "mov ecx, 0xc0000080\nrdmsr\nor eax, 1\nwrmsr\nmov ecx, bad\nbad:\nsysret\n"
                                "mov al, 1\nout 0xf4, al",
    "syscall in ring 3": user_mode("bad:\nsyscall\nmov al, 1\nout 0xf4, al"),
}
UD_AT_BAD = "cmp dword [esp], bad\njne .no\nmov al, 2\nout 0xf4, al\n.no:\nmov al, 3\nout 0xf4, al"


@pytest.mark.parametrize("technique", ["native", "trap-and-emulate", "binary-translation", "hardware-assist"])
@pytest.mark.parametrize("case", sorted(SYSCALL_BODIES))
def test_syscall_and_sysret_are_invalid_outside_64_bit_mode(case, technique):
    """The vmkit PC is an Intel CPU outside 64-bit mode: syscall and sysret raise #UD whatever
    IA32_EFER.SCE says, with EIP at the instruction (SDM vol. 2B, SYSCALL and SYSRET, Operation).
    Unicorn alone would step over syscall, and run AMD's legacy-mode sysret once SCE is set."""
    from guestkit import kernel
    source = kernel(body=SYSCALL_BODIES[case], gates={6: ("ud", 0x8E)}, handlers={"ud": UD_AT_BAD})
    result = vmkit.run(source, technique)
    assert result.exit_code == 5, (case, technique, result.serial)
    ud = [e for e in result.of_kind("ring-transition") if e.detail.get("vector") == 6]
    assert len(ud) == 1 and ud[0].detail["cause"] == "#UD"


def test_syscall_costs_what_an_undefined_opcode_costs():
    """syscall's #UD is counted like ud2's: the same instructions, the event at the same count."""
    from guestkit import kernel
    runs = {}
    for instruction in ("syscall", "ud2"):
        source = kernel(body=f"bad:\n{instruction}\nmov al, 1\nout 0xf4, al", gates={6: ("ud", 0x8E)},
                        handlers={"ud": UD_AT_BAD})
        result = vmkit.run(source)
        ud = [e for e in result.of_kind("ring-transition") if e.detail.get("vector") == 6][0]
        runs[instruction] = (result.exit_code, result.stats["instructions"], ud.icount, ud.eip)
    assert runs["syscall"] == runs["ud2"]


def test_cpuid_does_not_report_syscall():
    """CPUID.80000001H:EDX[11] (SYSCALL/SYSRET) reads 0, as QEMU reports for an Intel CPU outside
    long mode; the other bits are Unicorn's CPU model's (long mode and NX stay set)."""
    from vmkit.machine.cpuid import EDX_SYSCALL, emulated_cpuid
    source = "mov eax, 0x80000001\ncpuid\nmov [edx_of], edx\nhlt\nedx_of: dd 0"
    for technique in ("native", "trap-and-emulate", "binary-translation", "hardware-assist"):
        m = vmkit.machine(source, technique)
        m.run()
        edx = int.from_bytes(m.uc.mem_read(m.image.symbols["edx_of"], 4), "little")
        assert edx == emulated_cpuid(0x80000001)[3] & ~EDX_SYSCALL, technique
        assert emulated_cpuid(0x80000001)[3] & EDX_SYSCALL       # Unicorn's own answer has it


def test_a_gate_a_tss_stack_and_a_descriptor_the_guest_rewrites_after_using_them_are_read_anew(build):
    """vmkit keeps what it decoded from the guest's tables (Cpu.u64, decode_gate, decode_descriptor)
    only by content: an IDT gate, the TSS's ring-0 stack and a GDT descriptor that the kernel
    rewrites after a delivery used them are what the next delivery uses, with the exception handled
    inside the slice or at its end alike."""
    handlers = {
        "h1": """mov eax, h2
                 mov [idt + 0x80 * 8], ax
                 shr eax, 16
                 mov [idt + 0x80 * 8 + 6], ax
                 mov dword [tss + 4], KSTACK - 0x1000
                 iretd""",
        "h2": """mov byte [gdt + KDATA + 5], 0x12
                 iretd""",                      # ring 0 data, not present: the next stack switch faults
    }
    img = build(body=user_mode("int 0x80\nint 0x80\nint 0x80\njmp $"), gates={0x80: ("h1", 0xEE)}, handlers=handlers)
    runs = []
    for resumes_in_hook in (True, False):
        m = vmkit.Machine(img)
        m.resumes_in_hook = resumes_in_hook
        runs.append(m.run())
    inside, at_the_end = runs
    calls = [e for e in inside.events if e.kind == "ring-transition" and e.detail["cause"] == "int 0x80"]
    assert [e.detail["handler"] for e in calls] == [img.symbols["h1"], img.symbols["h2"]]
    assert [e.detail["esp"] for e in calls] == [KSTACK - 20, KSTACK - 0x1000 - 20]
    assert inside.shutdown and "triple fault" in inside.events[-1].detail["why"]
    assert [(e.kind, e.eip, e.cpl, e.icount, e.detail) for e in inside.events] == \
        [(e.kind, e.eip, e.cpl, e.icount, e.detail) for e in at_the_end.events]
    assert inside.stats == at_the_end.stats
