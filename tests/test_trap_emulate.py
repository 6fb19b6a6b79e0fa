"""Trap-and-emulate: the guest kernel in ring 1, every privileged instruction a trap, and the
places where x86 lets the guest see through the VMM without trapping."""
import pytest

import vmkit
import vmkit.guests
from vmkit.vmm import TrapAndEmulate
from vmkit.vmm.trap_emulate import VMM_BASE

TE = "trap-and-emulate"


def lines(result):
    return dict(line.split(" = ") for line in result.serial.splitlines() if " = " in line)


def test_the_rings_guest_gives_the_same_serial_output_and_exit_code():
    image = vmkit.guests.image("rings")
    native, te = vmkit.run(image), vmkit.run(image, TE)
    assert (te.serial, te.exit_code) == (native.serial, native.exit_code)
    assert te.stats["instructions"] == native.stats["instructions"]


def test_the_guest_kernel_runs_in_ring_1_and_its_user_code_in_ring_3():
    result = vmkit.run(vmkit.guests.image("rings"), TE)
    first = result.of_kind("ring-transition")[0]
    assert (first.detail["cause"], first.detail["from_ring"], first.detail["to_ring"]) == ("iret", 1, 3)
    syscall = [e for e in result.of_kind("ring-transition") if e.detail["cause"] == "int 0x80"][0]
    assert syscall.detail["to_ring"] == 1 and syscall.detail["reflected"]
    assert syscall.detail["ss"] & 3 == 1                 # the ring-1 twin of the kernel's stack segment


def test_every_privileged_instruction_traps_once_and_is_emulated_on_the_virtual_cpu():
    source = ("cli\nsti\nmov eax, cr0\nor eax, 8\nmov cr0, eax\nlidt [table]\nmov ecx, 0x10\nmov eax, 5\n"
              "xor edx, edx\nwrmsr\nrdmsr\nmov al, 2\nout 0xf4, al\n"
              "table: dw 0x7ff\n dd 0x200000\n")
    m = vmkit.machine(source, TE)
    result = m.run()
    traps = [e.detail["instruction"] for e in result.of_kind("trap")]
    table = m.image.symbols["table"]
    assert traps == ["cli", "sti", "mov eax, cr0", "mov cr0, eax", f"lidt [{table:#x}]", "wrmsr", "rdmsr",
                     "out 0xf4, al"]
    assert result.stats["traps"] == len(traps) == len(result.of_kind("emulate"))
    assert m.vcpu.interrupt_flag and m.vcpu.cr0 & 8 and m.vcpu.idtr == (0x200000, 0x7FF)
    assert m.vcpu.msr[0x10] == 5 and result.exit_code == 5


def test_the_holes_show_exactly_where_the_vmm_is_visible():
    """Nothing here traps, so the guest reads the real CPU: RPL 1 in CS, the real IF in pushf, the
    VMM's GDT in sgdt, the real CR0 in smsw, and popf that cannot turn IF off."""
    image = vmkit.guests.image("holes")
    native, te = lines(vmkit.run(image)), lines(vmkit.run(image, TE))
    differs = {k for k in native if native[k] != te[k]}
    assert differs == set(native)                        # every probe tells the two apart
    assert int(native["cs                 "], 16) & 3 == 0 and int(te["cs                 "], 16) & 3 == 1
    assert int(native["after cli, IF|IOPL "], 16) == 0 and int(te["after cli, IF|IOPL "], 16) == 0x200
    assert int(te["sgdt base          "], 16) == VMM_BASE
    assert int(native["smsw (TS is bit 3) "], 16) & 8 and not int(te["smsw (TS is bit 3) "], 16) & 8
    assert int(native["popf IF=0, then IF "], 16) == 0 and int(te["popf IF=0, then IF "], 16) == 0x200


def test_a_critical_section_guarded_by_popf_loses_updates_only_under_trap_and_emulate():
    image = vmkit.guests.image("popf_critical")
    native, te = vmkit.run(image), vmkit.run(image, TE)
    assert "lost updates:   0\n" in native.serial
    lost = int(te.serial.split("lost updates:   ")[1].split()[0])
    assert lost > 0


@pytest.mark.parametrize("name", ["serial", "hlt_wake", "triple_fault"])
def test_differential_guests_that_avoid_the_holes_match_native(name):
    from test_qemu_differential import guest_source
    image = vmkit.assemble(guest_source(name))
    native, te = vmkit.run(image), vmkit.run(image, TE)
    assert (te.serial_bytes, te.exit_code, te.shutdown) == (native.serial_bytes, native.exit_code, native.shutdown)


def test_stepping_and_running_agree_under_the_vmm():
    image = vmkit.guests.image("rings", TIMER_HZ=20000, SPIN=20000)
    straight = vmkit.run(image, TE)
    m = vmkit.machine(image, TE)
    while not m.finished:
        m.step()
    assert [(e.kind, e.eip, e.icount) for e in m.result().events] == \
        [(e.kind, e.eip, e.icount) for e in straight.events]
    assert m.result().stats == straight.stats


def test_an_instruction_without_a_handler_is_reflected_to_the_guest_as_gp(build):
    """Leave cli out of the VMM's table: the guest kernel's own #GP handler sees its cli."""
    from vmkit.vmm import EMULATORS
    image = build(body="bad:\ncli\njmp $", gates={13: ("gp", 0x8E)}, handlers={"gp": "mov al, 9\nout 0xf4, al"})
    partial = {k: v for k, v in EMULATORS.items() if k != "cli"}
    m = TrapAndEmulate(image, emulators=partial)
    result = m.run()
    assert result.exit_code == 19
    gp = [e for e in result.of_kind("ring-transition") if e.detail["cause"] == "#GP"][0]
    assert gp.eip == image.symbols["bad"] and gp.detail["reflected"]


def test_user_io_follows_the_guests_own_io_bitmap(build):
    bitmap = ["0xFF"] * 33
    bitmap[0xF4 // 8] = "0xEF"
    image = build(body="mov eax, user\nmov ebx, 0x202\njmp to_ring3\nuser:\nmov al, 6\nout 0xf4, al\njmp $",
                  tss_extra="iomap:\n    db " + ", ".join(bitmap))
    assert vmkit.run(image, TE).exit_code == 13


def test_paging_on_with_no_page_tables_triple_faults_as_natively():
    """CR0.PG with CR3 = 0 (a page directory of zeros): the next fetch faults, and so does every
    delivery after it, as on the PC itself; the VMM reflects the true fault rather than refusing."""
    source = "mov eax, cr0\nor eax, 0x80000000\nmov cr0, eax\nhlt"
    native, virtual = vmkit.run(source), vmkit.run(source, TE)
    assert native.shutdown and virtual.shutdown
    assert virtual.stats["true_faults"] == 1 and virtual.stats["hidden_faults"] == 0


@pytest.mark.parametrize("technique", ["native", TE, "binary-translation"])
@pytest.mark.parametrize("instruction", ["invd", "invlpg [0x1000]", "wbinvd", "in al, 0x60", "insb"])
def test_a_privileged_instruction_in_ring_3_is_the_guests_gp_under_every_technique(build, technique, instruction):
    """invd and invlpg are privileged, not I/O (SDM vol. 2A, INVD and INVLPG: #GP(0) if CPL is not
    0), whatever their names begin with: ring 3 gets the guest's own #GP, error code 0, at the
    instruction, as natively."""
    image = build(body="mov eax, user\nmov ebx, 0x2\njmp to_ring3\nuser:\nmov edi, 0x200000\nbad:\n"
                       f"{instruction}\njmp $",
                  gates={13: ("gp", 0x8E)},
                  handlers={"gp": "mov eax, [esp]\nmov ebx, [esp + 4]\ncmp ebx, bad\njne .no\n"
                                  "mov al, 0x21\nout 0xf4, al\n.no:\nmov al, 0x22\nout 0xf4, al"})
    result = vmkit.run(image, technique, max_instructions=100_000)
    assert result.exit_code == (0x21 << 1) | 1


# --- the shadow LDT -------------------------------------------------------------------------------
@pytest.mark.parametrize("technique", [TE, "binary-translation"])
def test_the_shadow_ldt_follows_the_guests_ldt_with_ring_compression(technique):
    """lldt builds a shadow LDT (the guest's descriptors, DPL 0 made 1) that the real LDTR names; a
    write to the guest's LDT after lldt traps and the shadow entry follows it; LDT selectors then
    work as natively (tests/guests/ldt.asm prints what it sees, compared with QEMU's in
    tests/test_qemu_differential.py)."""
    from test_qemu_differential import guest_source
    from unicorn import x86_const as X
    from vmkit.vmm.trap_emulate import SHADOW_LDT, VMM_LDT_SELECTOR
    m = vmkit.machine(guest_source("ldt"), technique)
    result = m.run()
    assert result.exit_code == 0x1f and m.vcpu.ldtr == 0x38
    selector, base, limit, _ = m.uc.reg_read(X.UC_X86_REG_LDTR)
    assert (selector, base, limit) == (VMM_LDT_SELECTOR, SHADOW_LDT, 15)
    shadow = bytes(m.uc.mem_read(SHADOW_LDT, 16))
    assert shadow[5] == 0xB3 and shadow[13] & 0x60 == 0x20        # data and code, DPL 0 -> 1
    assert int.from_bytes(shadow[2:5], "little") == 0x181000      # the base the guest wrote after lldt
    traced = [e for e in result.of_kind("trap") if e.detail["cause"] == "write to the traced LDT"]
    assert len(traced) == 2                                         # the two stores to entry 0's base
    sldt = int(result.serial.split("sldt=")[1][:8], 16)
    assert sldt == (0x38 if technique == "binary-translation" else VMM_LDT_SELECTOR)   # TE: a hole


@pytest.mark.parametrize("source,error", [("mov ax, 0x0c\nlldt ax", 0x0c),       # TI set
                                          ("mov ax, 0x400\nlldt ax", 0x400),     # past the GDT
                                          ("mov ax, 0x10\nlldt ax", 0x10)])      # not an LDT
def test_lldt_checks_its_selector_as_the_cpu_does(build, source, error):
    """LLDT (SDM vol. 2A): #GP(selector) for TI = 1, a selector past the GDT's limit, or a
    descriptor that is not an LDT's; the same error code natively and under the VMMs."""
    image = build(body=f"bad:\n{source}\njmp $", gates={13: ("gp", 0x8E)},
                  handlers={"gp": "pop eax\nmov [0x200000], eax\nmov al, 1\nout 0xf4, al"})
    for technique in ("native", TE, "binary-translation"):
        m = vmkit.machine(image, technique)
        assert m.run().exit_code == 3, technique
        assert m.cpu.u32(0x200000) == error, technique
