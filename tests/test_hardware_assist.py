"""Hardware assist, vmkit's model of VT-x: the guest unmodified at CPL 0, the exits its controls
ask for (IO, MMIO, HLT, CPUID, EXCEPTION, SHUTDOWN) recorded as KVM reports them, and the controls
a lesson toggles."""
import pytest

import vmkit
import vmkit.guests
from vmkit.machine.devices import MMIO_BASE
from vmkit.vtx import HardwareAssist, VmcsControls
from vmkit.vtx.hardware_assist import KERNEL_HANDLED, KVM_SIGNATURE
from guestkit import PIC_IRQ0_ONLY, PIT_1000_HZ, idt_gate      # tests/guestkit.py

HA = "hardware-assist"


def exits(result, *reasons):
    return [e for e in result.of_kind("vmexit") if not reasons or e.detail["reason"] in reasons]


def test_the_guest_runs_unmodified_at_cpl_0_with_the_same_output_as_native():
    from test_qemu_differential import guest_source
    source = guest_source("serial")
    native, ha = vmkit.run(source), vmkit.run(source, HA)
    assert (ha.serial, ha.exit_code) == (native.serial, native.exit_code)
    assert ha.stats["instructions"] == native.stats["instructions"]          # nothing is rewritten
    assert {e.cpl for e in ha.events} == {0}
    assert ha.stats["traps"] == 0 and ha.stats["vmexits"] == ha.stats["vmexit_IO"] == ha.stats["io"]


def test_every_kind_of_exit_in_one_guest():
    image = vmkit.guests.image("devices")
    result = vmkit.run(image, HA)
    s = result.stats
    assert s["vmexits"] == sum(v for k, v in s.items() if k.startswith("vmexit_"))
    assert (s["vmexit_MMIO"], s["vmexit_CPUID"], s["vmexit_HLT"]) == (10, 1, 1)
    assert s["vmexit_IO"] == len(result.serial_bytes)                  # one exit per byte sent to COM1
    mmio = [e.detail for e in exits(result, "MMIO")]
    assert mmio[0] == {"reason": "MMIO", "address": MMIO_BASE, "size": 4, "direction": "read",
                       "value": int.from_bytes(b"vmk1", "little"), "register": "ID"}
    assert mmio[2] == {"reason": "MMIO", "address": MMIO_BASE + 4, "size": 1, "direction": "write",
                       "value": 0xAB, "register": "SCRATCH"}
    assert [m["value"] for m in mmio if m["register"] == "TICKS"] == [1, 2, 3]
    cpuid = exits(result, "CPUID")[0]
    assert cpuid.detail["leaf"] == 0x40000000
    assert "CPUID 0x40000000 says 'KVMKVMKVM'" in result.serial
    last = result.events[-2:]
    assert last[0].detail["reason"] == "HLT" and last[1].kind == "halt" and result.halted


def test_an_io_exit_carries_the_access_and_the_device_answers_after_it():
    source = "mov dx, 0x3fd\nin al, dx\nmov al, 0x41\nmov dx, 0x3f8\nout dx, al\nmov ax, 0x1234\nout 0xf4, ax"
    result = vmkit.run(source, HA)
    io = [e.detail for e in exits(result, "IO")]
    assert io == [{"reason": "IO", "port": 0x3FD, "size": 1, "direction": "in", "value": 0x60},
                  {"reason": "IO", "port": 0x3F8, "size": 1, "direction": "out", "value": 0x41},
                  {"reason": "IO", "port": 0xF4, "size": 2, "direction": "out", "value": 0x1234}]
    kinds = [e.kind for e in result.events]
    assert kinds == ["vmexit", "io", "vmexit", "io", "vmexit", "io", "exit"]
    assert result.serial == "A" and result.exit_code == (0x1234 << 1) | 1


def test_exit_events_name_the_exiting_instruction():
    image = vmkit.assemble(f"a: out 0x80, al\nb: mov [{MMIO_BASE + 4:#x}], eax\nc: cpuid\nd: hlt")
    result = vmkit.run(image, HA)
    assert [e.eip for e in exits(result)] == [image.symbols[n] for n in "abcd"]


def test_without_hlt_exiting_the_vmm_is_never_told():
    image = vmkit.assemble("out 0x80, al\ncli\nhlt")
    told, untold = vmkit.run(image, HA), vmkit.run(image, HA, controls=VmcsControls(hlt_exiting=False))
    assert [e.detail["reason"] for e in exits(told)] == ["IO", "HLT"]
    assert [e.detail["reason"] for e in exits(untold)] == ["IO"]
    assert untold.halted and "HLT exiting is off" in untold.of_kind("halt")[0].detail["vmm"]


def test_a_port_left_out_of_the_io_bitmap_is_not_intercepted():
    """With only isa-debug-exit in the bitmap, COM1 is reached without an exit. (The model's devices
    still answer it: the model has no physical port behind it. This is not device passthrough.)"""
    from test_qemu_differential import guest_source
    source = guest_source("serial")
    full = vmkit.run(source, HA)
    unintercepted = vmkit.run(source, HA, controls=VmcsControls(io_bitmap={0xF4}))
    assert unintercepted.serial == full.serial and unintercepted.exit_code == full.exit_code
    assert [e.detail["port"] for e in exits(unintercepted)] == [0xF4]
    assert unintercepted.stats["io"] == full.stats["io"]               # the devices saw every access
    assert VmcsControls(io_bitmap={0x3F9}).io_exits(0x3F8, 2)          # a word access touches 0x3f9 too
    assert not VmcsControls(io_bitmap={0x3F9}).io_exits(0x3F8, 1)


UD_GUEST = """
    lidt [idtr]
    mov eax, handler
    mov [idt + 6 * 8], ax
    mov word [idt + 6 * 8 + 2], 0x08
    mov word [idt + 6 * 8 + 4], 0x8e00
    shr eax, 16
    mov [idt + 6 * 8 + 6], ax
fault:
    ud2
handler:
    mov al, 6
    out 0xf4, al
align 8
idt: times 8 dq 0
idtr: dw 8 * 8 - 1
    dd idt
"""


def test_the_exception_bitmap_makes_a_fault_exit_before_the_guest_handles_it():
    image = vmkit.assemble(UD_GUEST)
    plain = vmkit.run(image, HA)
    caught = vmkit.run(image, HA, controls=VmcsControls(exception_bitmap=1 << 6))
    assert exits(plain, "EXCEPTION") == []
    (exit,) = exits(caught, "EXCEPTION")
    assert exit.detail == {"reason": "EXCEPTION", "vector": 6, "name": "#UD", "error_code": None}
    assert exit.eip == image.symbols["fault"]
    after = caught.events[caught.events.index(exit) + 1]
    assert after.kind == "ring-transition" and after.detail["vector"] == 6         # handed back to the guest
    assert caught.exit_code == plain.exit_code == 13
    assert exits(vmkit.run(image, HA, controls=VmcsControls(exception_bitmap=1 << 13)), "EXCEPTION") == []


def test_int3_counts_as_an_exception_but_int_n_does_not():
    source = UD_GUEST.replace("ud2", "int3").replace("6 * 8", "3 * 8")
    result = vmkit.run(source, HA, controls=VmcsControls(exception_bitmap=1 << 3))
    assert [e.detail["vector"] for e in exits(result, "EXCEPTION")] == [3]
    soft = UD_GUEST.replace("ud2", "int 3").replace("6 * 8", "3 * 8")
    assert exits(vmkit.run(soft, HA, controls=VmcsControls(exception_bitmap=1 << 3)), "EXCEPTION") == []


def test_a_triple_fault_is_a_shutdown_exit():
    image = vmkit.assemble("lidt [empty]\nboom: ud2\nempty: dw 0\n dd 0")
    result = vmkit.run(image, HA)
    assert result.shutdown
    assert [(e.kind, e.detail.get("reason")) for e in result.events[-2:]] == [("vmexit", "SHUTDOWN"), ("shutdown", None)]
    assert result.events[-2].eip == image.symbols["boom"]


def test_cpuid_is_answered_by_the_vmm():
    m = HardwareAssist(vmkit.assemble("mov eax, 1\ncpuid\nhlt"))
    result = m.run()
    assert exits(result, "CPUID")[0].detail == {"reason": "CPUID", "leaf": 1, "subleaf": 0}
    assert result.regs["ecx"] & (1 << 31)                               # the hypervisor-present bit
    assert m.cpuid(0x40000000)[1:] == tuple(int.from_bytes(KVM_SIGNATURE[i:i + 4], "little") for i in (0, 4, 8))


@pytest.mark.parametrize("name", ["devices", "holes"])
def test_stepping_from_exit_to_exit_gives_the_events_of_running(name):
    image = vmkit.guests.image(name)
    ran = [(e.kind, e.eip, e.detail) for e in exits(vmkit.run(image, HA))]
    m = vmkit.machine(image, HA)
    stepped = []
    while not m.finished:
        stepped += [(e.kind, e.eip, e.detail) for e in m.run_until(event="vmexit") if e.kind == "vmexit"]
    assert stepped == ran


PAGING_GUEST = """
    mov dword [pd], 0x83                 ; 0-4 MiB: identity, one 4 MiB page
    mov dword [pd + 4], 0x83             ; 4-8 MiB: the same memory again
    mov eax, pd
    mov cr3, eax
    mov eax, cr4
    or eax, 0x10                         ; CR4.PSE
    mov cr4, eax
    mov eax, cr0
    or eax, 0x80000000                   ; CR0.PG
    mov cr0, eax
    mov dword [0x600000], 0x12345678     ; a store through the alias ...
    mov ebx, [0x200000]                  ; ... is in the memory the identity mapping shows
    mov dword [pd + 4], 0                ; a page-table write: the alias is gone
    invlpg [0x600000]
    mov al, 1
    out 0xf4, al
align 4096
pd: times 1024 dd 0
"""


def test_the_guests_page_tables_map_straight_onto_the_models_memory():
    """The model has no second stage (no EPT): the guest's own tables drive the MMU onto the model's
    memory, and loading CR3, writing a page-table entry and invlpg take no exit."""
    result = vmkit.machine(vmkit.assemble(PAGING_GUEST), HA).run()
    assert result.regs["ebx"] == 0x12345678 and result.exit_code == 3
    assert [e.detail["reason"] for e in exits(result)] == ["IO"]            # only the debug exit


def test_without_ept_the_vmm_shadows_the_guests_page_tables_and_exits_for_them():
    """First-generation VT-x (KVM with EPT off): mov to CR0/CR3/CR4 are CR-access exits, invlpg an
    INVLPG exit, and each #PF an EXCEPTION exit: here the 4-MiB page is splintered into shadow
    4-KiB pages, each touched page a hidden fault, the page-table store a trace."""
    first_gen = VmcsControls(enable_ept=False)
    m = vmkit.machine(vmkit.assemble(PAGING_GUEST), HA, controls=first_gen)
    result = m.run()
    assert result.regs["ebx"] == 0x12345678 and result.exit_code == 3
    reasons = [e.detail["reason"] for e in exits(result)]
    assert reasons.count("CR_ACCESS") == 3 and reasons.count("INVLPG") == 1 and reasons[-1] == "IO"
    faults = [e for e in exits(result) if e.detail["reason"] == "EXCEPTION"]
    assert all(e.detail["vector"] == 14 for e in faults)
    stats = result.stats
    assert (stats["trace_faults"], stats["true_faults"]) == (1, 0)
    assert len(faults) == stats["hidden_faults"] + stats["trace_faults"]
    cr3 = next(e for e in exits(result) if e.detail["reason"] == "CR_ACCESS" and e.detail["cr"] == 3)
    assert cr3.detail["value"] == vmkit.assemble(PAGING_GUEST).symbols["pd"]
    assert m.cpu["cr3"] != cr3.detail["value"]           # the real CR3 names the shadow, not the guest's


def test_without_ept_the_guest_reads_its_own_control_registers():
    source = PAGING_GUEST.replace("    mov al, 1\n", "    mov esi, cr3\n    mov edi, cr0\n    mov edx, cr4\n    mov al, 1\n")
    native = vmkit.run(source)
    first_gen = vmkit.run(source, HA, controls=VmcsControls(enable_ept=False))
    for register in ("esi", "edi", "edx"):
        assert first_gen.regs[register] == native.regs[register]
    reads = [e for e in exits(first_gen) if e.detail["reason"] == "CR_ACCESS" and e.detail["access"] == "mov from cr"]
    assert [e.detail["cr"] for e in reads] == [3]        # CR0 and CR4 come from read shadows: no exit


def test_ptemod_exits_on_every_page_table_store_without_ept_and_never_with_it():
    source = vmkit.guests.source("paging_kernel")
    with_ept = vmkit.run(source, HA)
    without = vmkit.run(source, HA, controls=VmcsControls(enable_ept=False))
    assert with_ept.serial == without.serial == vmkit.run(source).serial
    assert "vmexit_EXCEPTION" not in with_ept.stats and "vmexit_CR_ACCESS" not in with_ept.stats
    assert without.stats["trace_faults"] == 33 and without.stats["true_faults"] == 17
    assert without.stats["vmexit_EXCEPTION"] == sum(without.stats[k] for k in ("hidden_faults", "true_faults", "trace_faults"))
    assert without.stats["vmexit_INVLPG"] == 16


ON_DEMAND = VmcsControls(ept_on_demand=True)


def test_with_ept_filled_on_demand_each_guest_frame_is_one_ept_violation_and_paging_takes_no_exit():
    result = vmkit.run(PAGING_GUEST, HA, controls=ON_DEMAND)
    assert result.regs["ebx"] == 0x12345678 and result.exit_code == 3
    violations = [e for e in exits(result) if e.detail["reason"] == "EPT_VIOLATION"]
    frames = [e.detail["gpa"] for e in violations]
    assert len(frames) == len(set(frames)) == result.stats["vmexit_EPT_VIOLATION"]
    image = vmkit.assemble(PAGING_GUEST)
    assert {image.origin, image.symbols["pd"], 0x200000} <= set(frames)   # code, the directory, the data
    assert not {"CR_ACCESS", "INVLPG"} & {e.detail["reason"] for e in exits(result)}
    assert "vmexit_EXCEPTION" not in result.stats
    # what user space sees is what KVM would report: the EPT violations stay in the kernel
    assert [e.detail for e in exits(result) if e.detail["reason"] not in KERNEL_HANDLED] == \
        [e.detail for e in exits(vmkit.run(PAGING_GUEST, HA)) if e.detail["reason"] not in KERNEL_HANDLED]


def test_a_tlb_miss_under_ept_is_a_two_dimensional_walk():
    """Each reference of the guest's walk is a guest-physical address the 4-level EPT translates
    first: a 4-KiB page costs 2 x (4 + 1) + 4 = 14 references, a 4-MiB page 1 x 5 + 4 = 9, and with
    the guest's paging off only the EPT's 4."""
    m = vmkit.machine(vmkit.guests.source("paging_kernel"), HA, controls=ON_DEMAND)
    assert len(m.two_dimensional_walk(0x100000)) == 4                  # paging still off
    m.run()
    walk = m.two_dimensional_walk(0xC0101000)
    assert len(walk) == 14 and [what for what, _ in walk].count("the guest's PDE") == 1
    assert [what for what, _ in walk][4] == "the guest's PDE" and [what for what, _ in walk][9] == "the guest's PTE"
    assert walk[-1] == ("EPT level 1 for the page", 0x101000)
    big = vmkit.machine(PAGING_GUEST, HA, controls=ON_DEMAND)
    big.run()
    assert len(big.two_dimensional_walk(0x200000)) == 9                 # a 4-MiB page: no PTE
    assert len(big.two_dimensional_walk(0x600000)) == 5                 # its PDE is gone: the walk stops there
    stats = big.result().stats
    assert stats["walk_references"] <= 14 * stats["tlb_misses"]


def test_with_ept_a_guest_page_fault_is_delivered_without_an_exit():
    source = vmkit.guests.source("paging_kernel")
    result = vmkit.run(source, HA, controls=ON_DEMAND)
    assert result.serial == vmkit.run(source).serial
    faults = [e for e in result.of_kind("ring-transition") if e.detail.get("cause") == "#PF"]
    assert len(faults) == 17 and "vmexit_EXCEPTION" not in result.stats


# --- interrupts: external-interrupt exiting, event injection and the interrupt window --------------
IRQ_EXITS = ("INTR", "IRQ_WINDOW_OPEN")
KVM_WITHOUT_IRQCHIP = VmcsControls(external_interrupt_exiting=True)
TIMER_GUESTS = ["hlt_wake", "irq_ring3", "timer", "popf_critical", "rings", "hlt_irq", "irq_window"]


def timer_guest(name):
    from test_qemu_differential import guest_source
    return vmkit.guests.image(name) if name in ("popf_critical", "rings") else vmkit.assemble(guest_source(name))


def interrupts_and_irq_exits(result):
    return [(e.kind, e.eip, e.icount, e.detail.get("reason"), e.detail.get("vector")) for e in result.events
            if e.kind == "interrupt" or (e.kind == "vmexit" and e.detail["reason"] in IRQ_EXITS)]


@pytest.mark.parametrize("name", TIMER_GUESTS)
def test_external_interrupt_exiting_changes_when_the_vmm_is_told_not_when_the_guest_is_interrupted(name):
    image = timer_guest(name)
    quiet, told = vmkit.run(image, HA), vmkit.run(image, HA, controls=KVM_WITHOUT_IRQCHIP)
    assert (told.serial, told.exit_code, told.stats["instructions"]) == (quiet.serial, quiet.exit_code,
                                                                          quiet.stats["instructions"])
    where = lambda r: [(e.eip, e.icount, e.detail["vector"]) for e in r.of_kind("interrupt")]
    assert where(told) == where(quiet) and where(told)
    others = lambda r: [(e.eip, e.detail) for e in exits(r) if e.detail["reason"] not in IRQ_EXITS]
    assert others(told) == others(quiet)
    assert not exits(quiet, *IRQ_EXITS)                        # the default: the in-kernel PIC's silence
    for event in told.of_kind("interrupt"):
        assert event.detail["injected"] == "VM-entry interruption-information"
        assert event.detail["entry_interruption_info"] == 0x80000000 | event.detail["vector"]   # valid, type 0
    s = told.stats
    assert s["vmexits"] == quiet.stats["vmexits"] + s.get("vmexit_INTR", 0) + s.get("vmexit_IRQ_WINDOW_OPEN", 0)


# (INTR exits, IRQ_WINDOW_OPEN exits, injections) of each timer guest, and where each window opened:
# its label, or the source line's instruction
IRQ_EXITS_OF = {
    "hlt_wake": (0, 0, 3, []),              # every tick wakes a HLT exit: the vCPU was not in the guest
    "irq_ring3": (3, 0, 3, []),             # ticks in ring 3 with IF=1: injected at once
    "timer": (6, 1, 7, ["cli"]),            # the tick after EOI waits for `sti; nop`, taken before the cli
    "popf_critical": (2, 2, 2, ["round"]),  # ticks in the popf critical section wait for `sti; loop round`
    "rings": (5, 0, 5, []),
    "hlt_irq": (0, 0, 1, []),
    "irq_window": (1, 1, 1, ["window"]),
}


@pytest.mark.parametrize("name", TIMER_GUESTS)
def test_each_timer_guest_exits_and_is_injected_exactly(name):
    image = timer_guest(name)
    result = vmkit.run(image, HA, controls=KVM_WITHOUT_IRQCHIP)
    s = result.stats
    intr, window, injected, where = IRQ_EXITS_OF[name]
    assert (s.get("vmexit_INTR", 0), s.get("vmexit_IRQ_WINDOW_OPEN", 0), s["irqs"]) == (intr, window, injected)
    lines = image.source.splitlines()
    for event in exits(result, "IRQ_WINDOW_OPEN"):
        label = next((k for k, v in image.symbols.items() if v == event.eip), None)
        text = lines[image.lines[event.eip] - 1].split(";")[0].strip()
        assert label in where or text in where, f"a window opened at {event.eip:#x} ({label}: {text})"
        after = [e for e in result.events if e.icount == event.icount and e.kind == "interrupt"]
        assert after and after[0].eip == event.eip                  # injected at the entry that follows


def test_a_tick_with_interrupts_masked_exits_then_waits_for_the_window_after_sti():
    image = timer_guest("irq_window")
    result = vmkit.run(image, HA, controls=KVM_WITHOUT_IRQCHIP)
    window, poll = image.symbols["window"], image.symbols["main.poll"]
    got = interrupts_and_irq_exits(result)
    assert [g[0:2] + g[3:] for g in got] == [
        ("vmexit", got[0][1], "INTR", None),                    # the tick, while IF=0
        ("vmexit", window, "IRQ_WINDOW_OPEN", None),            # the instruction after sti's shadow
        ("interrupt", window, None, 0x20)]                      # injected at the entry that follows
    assert poll <= got[0][1] < window - 2                       # the tick came while the guest polled
    assert got[1][2] == got[2][2]                               # no instruction between exit and injection
    assert result.serial.splitlines()[1] == f"taken at={window:08x} "
    intr = exits(result, "INTR")[0]
    assert intr.detail["hardware"] == "EXTERNAL_INTERRUPT" and intr.detail["irq"] == 0
    assert exits(result, "IRQ_WINDOW_OPEN")[0].detail["hardware"] == "INTERRUPT_WINDOW"
    # the VMM had control again at the `in` that saw the request in IRR, and asked for the window again
    ios = [e for e in exits(result, "IO") if got[0][2] <= e.icount < got[1][2]]
    assert ios and all(e.detail["port"] == 0x20 for e in ios)


def test_a_tick_that_wakes_a_halted_vcpu_is_no_exit_it_is_injected_at_the_next_entry():
    image = timer_guest("hlt_irq")
    result = vmkit.run(image, HA, controls=KVM_WITHOUT_IRQCHIP)
    after = image.symbols["sleep.hlt"] + 1
    got = interrupts_and_irq_exits(result)
    assert [g[:2] + g[3:] for g in got] == [("interrupt", after, None, 0x20)]
    hlt = exits(result, "HLT")[-1]
    assert hlt.eip == after - 1 and hlt.icount == got[0][2]   # the HLT exit, then the injection
    # with HLT exiting off the vCPU sleeps in the guest: the tick is an external-interrupt exit
    inside = vmkit.run(image, HA, controls=VmcsControls(hlt_exiting=False, external_interrupt_exiting=True))
    assert [g[:2] + g[3:] for g in interrupts_and_irq_exits(inside)] == [
        ("vmexit", after, "INTR", None), ("interrupt", after, None, 0x20)]
    assert inside.serial == result.serial


def test_an_exit_in_the_sti_shadow_hands_the_vmm_the_open_window_without_a_window_exit():
    source = idt_gate(0x20, "tick") + """
        lidt [idtr]""" + PIC_IRQ0_ONLY + PIT_1000_HZ + """
        mov ecx, 150000
    spin:
        loop spin                               ; IF=0 while the tick comes
        sti
    shadow:
        out 0x80, al                            ; an IO exit inside sti's shadow
    after:
        hlt
    tick:
        mov al, 0x21
        out 0xf4, al
    align 8
    idt: times 256 dq 0
    idtr: dw 256 * 8 - 1
        dd idt
    """
    image = vmkit.assemble(source)
    assert image.origin == 0x100000 and image.symbols["tick"] < 0x110000
    result = vmkit.run(image, HA, controls=KVM_WITHOUT_IRQCHIP)
    got = interrupts_and_irq_exits(result)
    assert [g[0] + ":" + str(g[3] or g[4]) for g in got] == ["vmexit:INTR", "interrupt:32"]
    assert got[1][1] == image.symbols["after"]
    assert [e.detail["port"] for e in exits(result, "IO")][-2:] == [0x80, 0xF4]
