"""The same guests under "kvm" (the real KVM with vmkit's device model) and "hardware-assist"
(vmkit's model of VT-x): the same exits in the same order at the same instructions, the same serial
output, the same end.

A guest needs what it uses: iret, int n, exceptions through the IDT, interrupts, or an interrupt
window right after sti's shadow. What the local KVM cannot run is skipped with the probe's reason
(vmkit.kvm.probe). The model runs with `VmcsControls(external_interrupt_exiting=True)`, the KVM
without an in-kernel irqchip that vmkit's KVM device model plays. CPUID exits are the model's alone:
KVM answers CPUID inside the kernel, so they never reach user space.

Guests that take timer interrupts are compared by what does not depend on time: the serial output,
the end, and the number of interrupts injected. How many INTR exits come, and which instruction a
tick interrupts, follow the model's instruction count there and the host's clock on KVM
(vmkit.kvm.interrupts); a guest that halts for its tick exits alike on both (tests/test_kvm.py).

Where KVM and the model disagree, the test stays and is marked xfail(strict=True) with the reason.
"""
import pytest
from test_qemu_differential import GUEST_ENDINGS, guest_source

import vmkit
import vmkit.guests
from vmkit.kvm.probe import probe
from vmkit.vtx.hardware_assist import KERNEL_HANDLED, VmcsControls

KVM_WITHOUT_IRQCHIP = VmcsControls(external_interrupt_exiting=True)
RF = ("real CPUs, and KVM, set RF in the EFLAGS image a fault pushes (Intel SDM vol. 3, 17.3.1.1: 'for any "
      "fault-class exception ... the value pushed for RF is 1'); vmkit's delivery, like QEMU's TCG, pushes RF = 0, "
      "and this guest prints the frames")
FRAMES_OF_FAULTS = {"segments", "exceptions", "double_fault", "io_bitmap", "io_bitmap_edge", "iopl", "ring3", "ldt"}
# the instruction KVM could not run -> the probe's feature it needs
FEATURE_OF = {"iret": "iret", "iretd": "iret", "int": "int-n", "int3": "int-n", "into": "int-n"}

# syscall and sysret outside 64-bit mode are the host CPU's: #UD on Intel, AMD's legacy-mode SYSCALL
# on AMD (KVM gives the guest the host's vendor), so that guest is compared with QEMU only.
HOST_VENDOR_DEPENDENT = {"syscall"}
PLATFORM = sorted(set(GUEST_ENDINGS) - HOST_VENDOR_DEPENDENT) + ["halt", "fault_shutdown"]
COURSE = ["devices", "holes", "popf_critical", "rings", "same_ring", "trap_density"]
PAGING = ["paging", "higher_half", "paging_kernel"]      # they turn CR0.PG on: the probe's "paging"


def _params():
    params = []
    for name in PLATFORM + COURSE + PAGING:
        marks = [pytest.mark.xfail(strict=True, reason=RF)] if name in FRAMES_OF_FAULTS else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def image_of(name):
    return vmkit.guests.image(name) if name in COURSE or name == "paging_kernel" else vmkit.assemble(guest_source(name))


def needs(result):
    """What a guest used, read from its run under the model."""
    used = set()
    for event in result.events:
        if event.kind == "interrupt":
            used.add("interrupts")
        elif event.kind == "vmexit" and event.detail["reason"] == "IRQ_WINDOW_OPEN":
            used.add("interrupt-window")
        elif event.kind == "ring-transition":
            cause = str(event.detail.get("cause", ""))
            used.add("iret" if cause == "iret" else "int-n" if cause.startswith("int ") else "exceptions")
    return used


def user_space_exits(result):
    return [(e.eip, e.detail) for e in result.of_kind("vmexit") if e.detail["reason"] not in KERNEL_HANDLED]


def run_on_kvm(image):
    """The run under KVM, or a skip with the probe's reason if KVM cannot run an instruction the
    probe also found it cannot."""
    try:
        return vmkit.run(image, "kvm", timeout=10)
    except vmkit.GuestError as e:
        last = e.result.of_kind("vmexit")[-1] if e.result and e.result.of_kind("vmexit") else None
        if last is not None and last.detail["reason"] == "INTERNAL_ERROR":
            feature = FEATURE_OF.get(last.detail["instruction"].split()[0])
            if feature and not probe().can(feature):
                pytest.skip(probe().why_not(feature))
        raise


@pytest.mark.parametrize("name", _params())
def test_kvm_and_the_model_exit_alike(name):
    report = probe()
    if not report.usable:
        pytest.skip(report.why_not())
    image = image_of(name)
    model = vmkit.run(image, "hardware-assist", controls=KVM_WITHOUT_IRQCHIP)
    used = needs(model) | ({"paging"} if name in PAGING else set())
    if not report.can(*sorted(used)):
        pytest.skip(report.why_not(*sorted(used)))
    kvm = run_on_kvm(image)
    assert kvm.serial == model.serial, f"serial differs\n--- model:\n{model.serial}\n--- kvm:\n{kvm.serial}"
    assert (kvm.exit_code, kvm.halted, kvm.shutdown) == (model.exit_code, model.halted, model.shutdown)
    if "interrupts" in used:
        assert len(kvm.of_kind("interrupt")) == len(model.of_kind("interrupt")) == kvm.stats["irqs"]
        assert {e.detail["injected"] for e in kvm.of_kind("interrupt")} == {"KVM_INTERRUPT"}
        return
    ours, theirs = user_space_exits(model), user_space_exits(kvm)
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    assert ours == theirs, (f"exit {first} differs: model {ours[first:first + 1]}, kvm {theirs[first:first + 1]} "
                            f"({len(ours)} and {len(theirs)} exits)")


@pytest.mark.parametrize("size,value", [(1, 0x00), (1, 0xff), (2, 0x1234), (4, 0x89abcdef)])
def test_debug_exit_writes_end_both_alike(size, value):
    report = probe()
    if not report.usable:
        pytest.skip(report.why_not())
    image = vmkit.assemble(guest_source("exit", EXIT_SIZE=size, EXIT_VALUE=value))
    model, kvm = vmkit.run(image, "hardware-assist"), vmkit.run(image, "kvm")
    assert kvm.exit_code == model.exit_code == ((value << 1) | 1) & ((1 << (8 * size + 1)) - 1)
    assert user_space_exits(kvm) == user_space_exits(model)
    assert kvm.events[-1].kind == "exit" and kvm.events[-2].kind == "io" and kvm.events[-2].detail["size"] == size
