"""Real KVM from Python: the binding against linux/kvm.h, the device model, the probe, the vmkit PC
on KVM, the kernel's own counters, stopping a runaway guest, and vCPUs as threads.

Tests that need KVM ask the probe first and skip with its reason (no /dev/kvm, no permission, or a
feature this machine's KVM cannot run), so on a machine without KVM only the KVM-free checks run.
"""
import ctypes
import itertools
import os
import subprocess
import sys
import textwrap
import time

import pytest

import vmkit
import vmkit.guests
from vmkit.kvm import MMIO_BASE, DeviceModel, Kvm, KvmMachine, MmioDevice, api
from vmkit.kvm.exits import ExitLocator, decode
from vmkit.kvm.probe import FEATURES, probe
from guestkit import PIC_IRQ0_ONLY, PIT_1000_HZ, idt_gate      # tests/guestkit.py


def thread_name(tid):
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


def need_kvm(*features):
    """Skip, with the probe's reason, unless the local KVM can run every feature named."""
    why = probe().why_not(*(features or ("protected-mode",)))
    if why:
        pytest.skip(why)


# --- the binding: the kernel's ABI, checked without KVM ----------------------------------------------

def test_structures_have_the_sizes_and_offsets_of_linux_kvm_h():
    assert ctypes.sizeof(api.kvm_regs) == 18 * 8
    assert ctypes.sizeof(api.kvm_segment) == 24
    assert ctypes.sizeof(api.kvm_sregs) == 312
    assert ctypes.sizeof(api.kvm_userspace_memory_region) == 32
    assert api.kvm_run.exit_reason.offset == 8            # linux/kvm.h: exit_reason at +8, the union at +32
    assert api.kvm_run.u.offset == 32
    assert api.kvm_run.kvm_valid_regs.offset == 32 + 256  # the union is padded to 256 bytes
    assert api.kvm_run.regs.offset == 304                 # s.regs, where KVM_CAP_SYNC_REGS puts them


def test_ioctl_numbers_are_the_kernels():
    assert api.KVM_GET_API_VERSION == 0xAE00
    assert api.KVM_CREATE_VM == 0xAE01
    assert api.KVM_RUN == 0xAE80
    assert api.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert api.KVM_GET_REGS == 0x8090AE81 and api.KVM_SET_REGS == 0x4090AE82
    assert api.KVM_GET_SREGS == 0x8138AE83 and api.KVM_SET_SREGS == 0x4138AE84
    assert api.KVM_GET_STATS_FD == 0xAECE
    assert api.EXIT_REASONS[api.KVM_EXIT_IO] == "IO" and api.EXIT_REASONS[api.KVM_EXIT_SHUTDOWN] == "SHUTDOWN"


# --- why KVM cannot be used: reasons with their fixes -------------------------------------------------

def test_a_missing_device_is_explained_with_the_fix(tmp_path):
    missing = str(tmp_path / "kvm")
    with pytest.raises(vmkit.KvmUnavailable) as caught:
        vmkit.run("hlt", "kvm", path=missing)
    assert "does not exist" in caught.value.reason and "VT-x" in caught.value.reason
    assert "modprobe kvm_intel" in caught.value.fix and caught.value.fix in str(caught.value)
    report = probe(missing)
    assert not report.usable and not report.can("protected-mode")
    assert report.why_not("iret").startswith(f"{missing} does not exist")


def test_a_file_that_is_not_kvm_is_explained():
    with pytest.raises(vmkit.KvmUnavailable, match="is not a KVM device"):
        Kvm("/dev/null")
    assert "not a KVM device" in probe("/dev/null").why_not()


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/kvm"),
                    reason="needs root (to become a user outside the kvm group) and /dev/kvm")
def test_no_permission_names_the_kvm_group():
    """A user outside the kvm group really gets EACCES from /dev/kvm; the error says what to do."""
    code = textwrap.dedent("""
        import os
        from vmkit import KvmUnavailable
        from vmkit.kvm.vm import open_kvm
        os.setgroups([]); os.setgid(65534); os.setuid(65534)       # nobody, in no group
        try:
            open_kvm()
        except KvmUnavailable as e:
            print(e.reason); print(e.fix)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    if "may not open" not in out.stdout and os.stat("/dev/kvm").st_mode & 0o006:
        pytest.skip("/dev/kvm is open to every user here")
    assert "kvm group" in out.stdout and "usermod -aG kvm" in out.stdout, out.stderr


def test_require_raises_with_the_probes_reason(tmp_path):
    with pytest.raises(vmkit.KvmUnavailable, match="does not exist"):
        probe(str(tmp_path / "kvm")).require("iret")


# --- the device model (no KVM needed) -----------------------------------------------------------------

def test_the_mmio_device_registers():
    device = MmioDevice()
    assert device.read(0x0, 4) == int.from_bytes(b"vmk1", "little")
    assert device.read(0x1, 1) == ord("m")                          # a byte inside a register
    device.write(0x4, 4, 0x12345678)
    device.write(0x4, 1, 0xAB)
    device.write(0x6, 2, 0xBEEF)
    assert device.read(0x4, 4) == 0xBEEF56AB
    assert [device.read(0x8, 4) for _ in range(3)] == [1, 2, 3]      # every read is seen
    device.write(0xC, 4, 7)
    device.write(0xC, 4, 9)
    assert (device.read(0xC, 4), device.doorbell) == (2, 9)
    device.write(0x0, 4, 0)                                         # read-only
    assert device.read(0x0, 4) == int.from_bytes(b"vmk1", "little") and device.read(0x40, 4) == 0
    assert [MmioDevice.register(o) for o in (0, 5, 0xB, 0xF, 0x10)] == ["ID", "SCRATCH", "TICKS", "DOORBELL", None]


def test_the_device_model_answers_ports_as_the_emulated_pc_does():
    model = DeviceModel()
    assert model.port_access(0x3FD, 1, None, "in") == 0x60            # COM1 LSR: transmitter empty
    model.port_access(0x3F8, 1, ord("k"), "out")
    model.port_access(0xF4, 1, 0x21, "out")
    assert model.port_access(0x2F8, 2, None, "in") == 0xFFFF          # nobody there: the bus floats
    assert model.port_access(0x21, 1, None, "in") == 0xFF             # the PIC, masked at boot
    assert (bytes(model.serial.output), model.debug_exit.exit_code) == (b"k", 0x43)
    assert model.mmio_access(MMIO_BASE + 8, 4, None, "read") == 1
    assert model.mmio_access(MMIO_BASE + 0x2000, 4, None, "read") == 0xFFFFFFFF   # outside the page


# --- the probe ----------------------------------------------------------------------------------------

def test_the_probe_tries_every_feature_once_per_process():
    report = probe()
    if not report.usable:
        pytest.skip(report.why_not())
    assert set(report.features) == set(FEATURES)
    assert report.can("protected-mode"), report          # the least any KVM runs
    assert probe() is report                              # cached
    for feature in report.features.values():
        assert feature.ok == (feature.outcome == "ok")
    text = str(report)
    assert all(name in text for name in FEATURES)


# --- the binding, one step at a time -------------------------------------------------------------------

def test_the_kvm_api_step_by_step():
    """Open, create a VM, give it memory, a vCPU in protected mode, and run: an out, an MMIO read
    answered by us, an in answered by us, a hlt."""
    need_kvm()
    image = vmkit.assemble(f"mov al, 0x5a\nout 0x80, al\nmov ebx, [{MMIO_BASE + 4:#x}]\nin al, 0x81\nhlt")
    kvm = Kvm()
    try:
        assert kvm.check_extension(api.KVM_CAP_USER_MEMORY) > 0
        assert kvm.vcpu_mmap_size >= ctypes.sizeof(api.kvm_run)
        vm = kvm.create_vm()
        ram = vm.add_memory(0, 4 << 20)
        ram[image.origin:image.end] = image.code
        ram[0x500:0x518] = bytes.fromhex("0000000000000000ffff0000009acf00ffff00000092cf00")
        vcpu = vm.create_vcpu()
        vcpu.enter_protected_mode(image.entry, 0x400000, 0x500)
        exits = []
        for _ in range(4):
            reason = vcpu.run()
            exit = decode(vcpu, reason)
            exits.append(exit)
            if exit.reason == "MMIO":
                vcpu.answer_mmio((0xCAFE).to_bytes(exit.detail["size"], "little"))
            elif exit.reason == "IO" and exit.detail["direction"] == "in":
                vcpu.answer_io(b"\x42")
        assert [e.reason for e in exits] == ["IO", "MMIO", "IO", "HLT"]
        assert exits[0].detail == {"port": 0x80, "size": 1, "direction": "out", "count": 1, "values": [0x5A]}
        assert exits[1].detail == {"address": MMIO_BASE + 4, "size": 4, "direction": "read"}
        regs = vcpu.get_regs()
        assert (regs.rbx, regs.rax & 0xFF) == (0xCAFE, 0x42)               # our answers reached the guest
        assert vcpu.get_sregs().cs.selector == 0x08 and vcpu.get_sregs().cr0 & 1
        vm.close()
    finally:
        kvm.close()


# --- the vmkit PC on KVM -------------------------------------------------------------------------------

def test_a_platform_guest_runs_unmodified_on_kvm():
    need_kvm()
    from test_qemu_differential import guest_source
    source = guest_source("serial")
    native, kvm = vmkit.run(source), vmkit.run(source, "kvm")
    assert kvm.technique == "kvm"
    assert (kvm.serial, kvm.exit_code) == (native.serial, native.exit_code) == (native.serial, 0x55)
    exits = kvm.of_kind("vmexit")
    assert {e.detail["reason"] for e in exits} == {"IO"}
    assert kvm.stats["vmexits"] == kvm.stats["vmexit_IO"] == len(exits) == kvm.stats["io"]
    assert "instructions" not in kvm.stats                    # KVM counts time, not instructions
    assert kvm.regs["cs"] == 0x08 and kvm.regs["eax"] & 0xFF == 0x2A


def test_every_exit_is_followed_by_what_the_device_model_did():
    need_kvm()
    result = vmkit.run(vmkit.guests.image("devices"), "kvm")
    events = result.events
    for exit, after in itertools.pairwise(events):
        if exit.kind == "vmexit" and exit.detail["reason"] == "IO":
            assert after.kind == "io" and after.detail["port"] == exit.detail["port"]
            assert after.detail["value"] == exit.detail["value"] and after.eip == exit.eip
    mmio = [e.detail for e in result.of_kind("vmexit") if e.detail["reason"] == "MMIO"]
    assert [(m["register"], m["direction"]) for m in mmio[:3]] == [("ID", "read"), ("SCRATCH", "write"),
                                                                    ("SCRATCH", "write")]
    assert [m["value"] for m in mmio if m["register"] == "TICKS"] == [1, 2, 3]
    assert "ID reads 'vmk1'" in result.serial and "KVMKVMKVM" in result.serial
    assert result.halted and events[-2].detail["reason"] == "HLT" and events[-1].kind == "halt"


def test_exit_events_name_the_instruction_that_exited():
    """KVM leaves RIP past an out, an MMIO write or a hlt it completed; the events still name the
    instruction itself, as the VMCS's guest RIP would."""
    need_kvm()
    source = (f"first: out 0x80, al\nsecond: out 0x80, al\nstore: mov dword [{MMIO_BASE + 4:#x}], 1\n"
              f"load: mov eax, [{MMIO_BASE:#x}]\nget: in al, 0x80\nstop: hlt")
    image = vmkit.assemble(source)
    exits = vmkit.run(image, "kvm").of_kind("vmexit")
    assert [e.eip for e in exits] == [image.symbols[n] for n in ("first", "second", "store", "load", "get", "stop")]


def test_the_exit_locator_without_a_listing():
    code = bytes.fromhex("e680" "c705" "0400b0fe" "01000000" "f4")      # out 0x80, al; mov [MMIO+4], 1; hlt
    memory = bytes(0x100) + code
    read = lambda address, size: memory[address:address + size]
    locate = ExitLocator(read).locate
    assert locate(0x102, "IO", "out", 0x80, 1) == 0x100          # RIP past it
    assert locate(0x100, "IO", "out", 0x80, 1) == 0x100          # RIP at it
    assert locate(0x10C, "MMIO", "write", address=MMIO_BASE + 4) == 0x102
    assert locate(0x10D, "HLT") == 0x10C


def test_stepping_gives_the_events_of_running():
    need_kvm()
    image = vmkit.guests.image("devices")
    ran = [(e.kind, e.eip, e.detail) for e in vmkit.run(image, "kvm").events]
    with vmkit.machine(image, "kvm") as m:
        stepped = []
        while not m.finished:
            stepped += [(e.kind, e.eip, e.detail) for e in m.step()]
    assert stepped == ran


def test_a_runaway_guest_is_stopped_within_its_budget():
    """`jmp $` never leaves the guest by itself: the watchdog sets immediate_exit and signals the
    vCPU thread, KVM_RUN returns with KVM_EXIT_INTR, and the run ends with GuestTimeout."""
    need_kvm()
    started = time.perf_counter()
    with pytest.raises(vmkit.GuestTimeout) as caught:
        vmkit.run("spin: jmp spin", "kvm", timeout=0.3)
    wall = time.perf_counter() - started
    assert wall < 2.0, f"the budget was 0.3 s, the run took {wall:.2f} s"
    partial = caught.value.result
    assert 0.3 <= partial.seconds < 1.0
    assert partial.of_kind("vmexit")[-1].detail == {"reason": "INTR", "why": "the timeout's signal"}
    assert not (partial.halted or partial.shutdown) and partial.exit_code is None
    assert partial.regs["eip"] == 0x100000                        # still at the jmp


def test_the_kernels_own_counters_agree_with_vmkits():
    """The binary stats fd counts what the kernel saw; on a one-page guest every exit went to user
    space, so its totals are vmkit's."""
    need_kvm()
    source = "\n".join([f"out 0x80, al\nmov eax, [{MMIO_BASE + 8:#x}]"] * 5 + [f"mov [{MMIO_BASE + 4:#x}], eax", "hlt"])
    with KvmMachine(source) as m:
        result = m.run()
        assert m._kernel_stats[0].id == f"kvm-{os.getpid()}/vcpu-0"      # a VM is this process
    s = result.stats
    assert (s["vmexit_IO"], s["vmexit_MMIO"], s["vmexit_HLT"], s["vmexits"]) == (5, 6, 1, 12)
    assert s["kernel_exits"] == s["vmexits"]
    assert s["kernel_mmio_exits"] == s["vmexit_MMIO"] and s["kernel_halt_exits"] == s["vmexit_HLT"]
    # The kernel counts an I/O exit where it handles the I/O instruction's VM exit; a KVM that
    # emulates the instruction instead (PVM) counts it as an emulated instruction.
    assert s["kernel_io_exits"] == s["vmexit_IO"] or s["kernel_insn_emulation"] >= s["vmexit_IO"]


def test_an_exit_the_kernel_cannot_handle_is_reported_with_the_instruction():
    report = probe()
    if not report.usable:
        pytest.skip(report.why_not())
    if report.can("iret"):
        pytest.skip("this machine's KVM runs iretd; there is no failure to report")
    with pytest.raises(vmkit.GuestError) as caught:
        vmkit.run("pushfd\npush dword 0x08\npush dword next\niretd\nnext: hlt", "kvm")
    assert "iretd" in str(caught.value) and "KVM_EXIT_INTERNAL_ERROR" in str(caught.value)
    last = caught.value.result.of_kind("vmexit")[-1]
    assert last.detail["reason"] == "INTERNAL_ERROR" and last.detail["instruction"] == "iretd"


def test_two_vcpus_are_two_threads_of_this_process():
    """The source article's point: a VM is a regular Linux process, and its vCPUs are its threads."""
    need_kvm()
    with vmkit.machine(vmkit.guests.image("smp"), "kvm", vcpus=2, timeout=10) as m:
        m.start()
        deadline = time.perf_counter() + 5
        while m.devices.serial.output.count(b" up,") < 2 and time.perf_counter() < deadline:
            time.sleep(0.005)
        threads = m.vcpu_threads()
        tasks = os.listdir("/proc/self/task")
        names = {n: thread_name(tid) for n, tid in threads.items()}
        listed = vmkit.kvm.process_threads()
        m.devices.mmio_access(MMIO_BASE + 4, 4, 1, "write")           # the host's go
        result = m.wait()
    assert sorted(threads) == [0, 1] and all(str(tid) in tasks for tid in threads.values())
    assert names == {0: "CPU 0/KVM", 1: "CPU 1/KVM"}                 # as QEMU names its vCPU threads
    assert {(threads[0], "CPU 0/KVM"), (threads[1], "CPU 1/KVM"), (os.getpid(), thread_name(os.getpid()))} <= set(listed)
    assert len(set(threads.values())) == 2 and os.getpid() not in threads.values()
    assert result.halted and result.stats["vmexit_HLT"] == 2
    for n in (0, 1):
        assert f"vCPU {n} up, waiting for the go\n" in result.serial and f"vCPU {n} done\n" in result.serial
        assert {e.detail["vcpu"] for e in result.of_kind("vmexit")} == {0, 1}


# --- interrupts from the user-space PIC and PIT: KVM_INTERRUPT and the interrupt window ------------
def test_a_guest_halted_for_its_tick_exits_and_is_injected_as_under_the_model():
    need_kvm("interrupts")
    from test_qemu_differential import guest_source
    from vmkit.vtx import VmcsControls
    image = vmkit.assemble(guest_source("hlt_irq"))
    model = vmkit.run(image, "hardware-assist", controls=VmcsControls(external_interrupt_exiting=True))
    kvm = vmkit.run(image, "kvm", timeout=10)
    assert (kvm.serial, kvm.exit_code) == (model.serial, model.exit_code)
    view = lambda r: [(e.kind, e.eip, e.detail.get("reason"), e.detail.get("vector"), e.detail.get("interrupts"))
                      for e in r.events if e.kind in ("vmexit", "interrupt", "halt")]
    assert view(kvm) == view(model)                   # HLT, the halt, KVM_INTERRUPT: no INTR, no window
    assert kvm.of_kind("interrupt")[0].detail["injected"] == "KVM_INTERRUPT" and kvm.stats["irqs"] == 1
    assert kvm.of_kind("halt")[0].detail["waited"] > 0


def test_a_tick_while_the_guest_runs_kicks_the_vcpu_out_then_kvm_interrupt_injects_it():
    need_kvm("interrupts")
    source = idt_gate(0x20, "tick") + """
        lidt [idtr]""" + PIC_IRQ0_ONLY + PIT_1000_HZ + """
        sti
    spin:
        jmp spin                                ; no exit of its own: only the tick gets it out
    tick:
        mov al, 0x21
        out 0xf4, al
        hlt
    align 8
    idt: times 256 dq 0
    idtr: dw 256 * 8 - 1
        dd idt
    """
    image = vmkit.assemble(source)
    result = vmkit.run(image, "kvm", timeout=10)
    assert result.exit_code == 0x43
    spin = image.symbols["spin"]
    reasons = [(e.detail["reason"], e.eip) for e in result.of_kind("vmexit")]
    assert ("INTR", spin) in reasons
    intr = next(e for e in result.of_kind("vmexit") if e.detail["reason"] == "INTR")
    assert "PIT ticked" in intr.detail["why"]
    injected = result.of_kind("interrupt")
    assert [(e.eip, e.detail["vector"], e.detail["injected"]) for e in injected] == [(spin, 0x20, "KVM_INTERRUPT")]
    model = vmkit.run(image, "hardware-assist", controls=vmkit.vtx.VmcsControls(external_interrupt_exiting=True))
    assert [e.detail["reason"] for e in model.of_kind("vmexit")][-3:] == ["IO", "INTR", "IO"]
    assert [(e.eip, e.detail["vector"]) for e in model.of_kind("interrupt")] == [(spin, 0x20)]


def test_the_interrupt_window_opens_after_sti_where_the_probe_says_kvm_can():
    need_kvm("interrupts", "interrupt-window")
    from test_qemu_differential import guest_source
    image = vmkit.assemble(guest_source("irq_window"))
    result = vmkit.run(image, "kvm", timeout=10)
    window = image.symbols["window"]
    assert result.serial.splitlines()[1] == f"taken at={window:08x} "
    assert ("IRQ_WINDOW_OPEN", window) in [(e.detail["reason"], e.eip) for e in result.of_kind("vmexit")]
    assert [e.eip for e in result.of_kind("interrupt")] == [window]


def test_with_the_in_kernel_irqchip_the_pic_and_hlt_stay_in_the_kernel():
    need_kvm("irqchip")
    from test_qemu_differential import guest_source
    image = vmkit.assemble(guest_source("hlt_irq"))
    model = vmkit.run(image, "hardware-assist")                  # the model's default: no exit for it
    kvm = vmkit.run(image, "kvm", timeout=10, irqchip="kernel")
    assert (kvm.serial, kvm.exit_code) == (model.serial, model.exit_code)
    assert "isr=00000001" in kvm.serial                          # the kernel's PIC, read by the guest
    reasons = {e.detail["reason"] for e in kvm.of_kind("vmexit")}
    assert reasons == {"IO"} and kvm.stats["irqs"] >= 1          # no HLT exit, no injection seen
    assert not [e for e in kvm.of_kind("io") if e.detail["port"] in (0x20, 0x21, 0xA0, 0xA1)]
    assert not kvm.of_kind("interrupt")
    model_io = [e.detail["port"] for e in model.of_kind("io") if e.detail["port"] not in (0x20, 0x21, 0xA0, 0xA1)]
    assert [e.detail["port"] for e in kvm.of_kind("io")] == model_io


def test_irqchip_is_user_or_kernel():
    with pytest.raises(vmkit.VmkitError, match="irqchip"):
        KvmMachine("hlt", irqchip="split")


def test_whether_the_host_offers_an_in_kernel_irqchip_is_asked_not_assumed():
    need_kvm()
    from vmkit.kvm.interrupts import irqchip_in_kernel
    kvm = Kvm()
    try:
        assert irqchip_in_kernel(kvm) == (kvm.check_extension(api.KVM_CAP_IRQCHIP) > 0)
    finally:
        kvm.close()


def test_the_handshake_before_kvm_run_without_kvm():
    """UserspacePic.before_run against a stand-in vCPU: inject when kvm_run says the guest can take
    the interrupt, else ask for the window; clear the request when nothing waits."""
    from types import SimpleNamespace
    from vmkit.kvm.interrupts import UserspacePic
    devices = DeviceModel()
    for port, value in ((0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1), (0x21, 0xFE)):
        devices.port_access(port, 1, value, "out")               # ICW1-4: vectors from 0x20, only IRQ0
    injected = []
    vcpu = SimpleNamespace(kvm_run=SimpleNamespace(ready_for_interrupt_injection=0, if_flag=0,
                                                   request_interrupt_window=0),
                           interrupt=injected.append, kick=lambda: None)
    pic = UserspacePic(devices, vcpu)
    assert pic.before_run() is None and vcpu.kvm_run.request_interrupt_window == 0   # nothing waits
    devices.pic.raise_irq(0)
    assert pic.before_run() is None and vcpu.kvm_run.request_interrupt_window == 1   # IF = 0: the window
    vcpu.kvm_run.ready_for_interrupt_injection, vcpu.kvm_run.if_flag = 1, 1
    assert pic.before_run() == (0, 0x20) and injected == [0x20]                       # KVM_INTERRUPT
    assert vcpu.kvm_run.request_interrupt_window == 0
    assert devices.pic.master.isr == 1                                                # acknowledged
    pic.close()
