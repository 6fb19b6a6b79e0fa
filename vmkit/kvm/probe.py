"""What the local KVM can run, found out by trying.

Having /dev/kvm is not the whole story. A laptop with VT-x or AMD-V runs any 32-bit guest; a cloud
VM may offer KVM on top of something else, such as PVM (kvm_pvm, which runs guests without VT-x
by emulating much of what they do) where a 32-bit guest's port I/O, MMIO and hlt work but its
`iret`, `int n`, interrupts and paging do not. So vmkit runs one tiny guest per feature, in a
fresh VM each, and remembers the answers for the rest of the process:

    protected-mode   flat 32-bit code: an out, a hlt, an MMIO read answered by user space
    exceptions       a fault (ud2) delivered through the guest's IDT
    int-n            a software interrupt (int 0x40) through the IDT
    iret             iretd back from a handler frame
    interrupts       an external interrupt injected with KVM_INTERRUPT, taken after sti; hlt
    interrupt-window the interrupt window: an interrupt that waits while IF = 0 (user space set
                     kvm_run.request_interrupt_window) exits with KVM_EXIT_IRQ_WINDOW_OPEN at the
                     instruction after sti's shadow, and is injected there. PVM exits for the window
                     only later, at its own next exit, so a guest that masks interrupts again right
                     after `sti; nop` never takes it there
    irqchip          KVM_CREATE_IRQCHIP: the guest programs the kernel's PIC, user space raises IRQ0 with
                     KVM_IRQ_LINE, and the kernel delivers it to the guest sleeping in hlt
    paging           CR0.PG with a 4 MiB page identity-mapping the guest

`probe()` never raises: when KVM is unusable its report says why and how to fix it, and
`report.require("iret")` raises vmkit.KvmUnavailable with that reason, which is what tests skip on.
"""
import os
import threading
from dataclasses import dataclass, field

from ..asm import assemble
from ..errors import KvmUnavailable, ToolMissing, VmkitError
from ..machine.platform import BOOT_GDT, STACK_TOP, boot_gdt
from . import api
from .devices import MMIO_BASE
from .exits import decode
from .vm import DEVICE, Kvm

SUCCESS = 0x2A                    # every probe guest writes this to isa-debug-exit when it got through
PROBE_MEMORY = 4 << 20
PROBE_SECONDS = 2.0               # a guest that has not finished by then has failed
MAX_EXITS = 64

_GATE = """
    mov eax, {handler}
    mov [idt + {vector} * 8], ax
    mov word [idt + {vector} * 8 + 2], 0x08
    mov word [idt + {vector} * 8 + 4], 0x8e00
    shr eax, 16
    mov [idt + {vector} * 8 + 6], ax
    lidt [idtr]
"""
_TAIL = """
success:
    mov al, 0x2a
    out 0xf4, al
    hlt
align 8
idt: times 256 dq 0
idtr: dw 256 * 8 - 1
    dd idt
"""
FEATURES = {
    "protected-mode": ("flat 32-bit code with port I/O, hlt and MMIO",
                       f"out 0x80, al\nhlt\nmov eax, [{MMIO_BASE:#x}]\nout 0xf4, al\nhlt\n"),
    "exceptions": ("a fault delivered through the guest's IDT", _GATE.format(handler="success", vector=6) + "ud2\n" + _TAIL),
    "int-n": ("a software interrupt (int n) through the IDT",
              _GATE.format(handler="success", vector=0x40) + "int 0x40\n" + _TAIL),
    "iret": ("iretd", "pushfd\npush dword 0x08\npush dword success\niretd\n" + _TAIL),
    "interrupts": ("an external interrupt injected with KVM_INTERRUPT",
                   _GATE.format(handler="success", vector=0x20) + "sti\nhlt\njmp $\n" + _TAIL),
    "interrupt-window": ("an interrupt window exit right after sti's shadow (KVM_EXIT_IRQ_WINDOW_OPEN)",
                         _GATE.format(handler="success", vector=0x20)
                         + "out 0x80, al\nsti\nnop\nwindow:\ncli\nout 0x81, al\nhlt\n" + _TAIL),
    "irqchip": ("the in-kernel PIC (KVM_CREATE_IRQCHIP, IRQ0 raised with KVM_IRQ_LINE)",
                _GATE.format(handler="success", vector=0x20)
                + "".join(f"mov al, {v:#x}\nout {port:#x}, al\n" for port, v in
                          ((0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1), (0x21, 0xFE)))
                + "out 0x80, al\nsti\nhlt\njmp $\n" + _TAIL),
    "paging": ("paging (CR0.PG, one 4 MiB page)",
               "mov dword [0x1000], 0x83\nmov eax, 0x1000\nmov cr3, eax\nmov eax, cr4\nor eax, 0x10\nmov cr4, eax\n"
               "mov eax, cr0\nor eax, 0x80000000\nmov cr0, eax\njmp success\n" + _TAIL),
}
INTERRUPT_VECTOR = 0x20


@dataclass(frozen=True)
class Feature:
    name: str
    what: str                 # what it is, in words
    ok: bool
    outcome: str              # what happened when vmkit tried


@dataclass
class KvmReport:
    """What the KVM at `path` can run. `usable` is False when it cannot be used at all (`reason` and
    `fix` then say why and what to do); `features` maps each feature to what happened."""
    path: str
    usable: bool
    reason: str = ""
    fix: str = ""
    module: str = ""                                  # the KVM module(s) loaded: kvm_intel, kvm_amd, kvm_pvm
    features: dict = field(default_factory=dict)

    def can(self, *names):
        return self.usable and all(self.features[n].ok for n in names)

    def why_not(self, *names):
        """Why the local KVM cannot run all of `names` (None if it can), in a sentence with the fix."""
        if not self.usable:
            return f"{self.reason} (fix: {self.fix})" if self.fix else self.reason
        missing = [self.features[n] for n in names if not self.features[n].ok]
        if not missing:
            return None
        hint = (" This KVM is PVM (kvm_pvm, no VT-x or AMD-V underneath); a machine with VT-x or AMD-V runs it."
                if "kvm_pvm" in self.module else "")
        return "the local KVM cannot run " + "; ".join(f"{f.what}: {f.outcome}" for f in missing) + "." + hint

    def require(self, *names):
        """Raise KvmUnavailable with the reason unless the local KVM can run every feature named."""
        if not self.usable:
            raise KvmUnavailable(self.reason, self.fix)
        why = self.why_not(*names)
        if why:
            raise KvmUnavailable(why, "run the guest under 'hardware-assist', vmkit's model of the same exits")

    def __str__(self):
        if not self.usable:
            return f"KVM at {self.path}: not usable: {self.reason}" + (f"\n    fix: {self.fix}" if self.fix else "")
        lines = [f"KVM at {self.path} ({self.module or 'module unknown'}):"]
        for f in self.features.values():
            lines.append(f"  {'yes' if f.ok else 'no ':<4} {f.name:<16} {f.what}" + ("" if f.ok else f": {f.outcome}"))
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


_cache = {}
_cache_lock = threading.Lock()


def probe(path=DEVICE, refresh=False):
    """What the KVM at `path` can run (tried once per process and path; refresh=True tries again)."""
    with _cache_lock:
        if refresh or path not in _cache:
            _cache[path] = _probe(path)
        return _cache[path]


def _probe(path):
    try:
        kvm = Kvm(path)
    except KvmUnavailable as e:
        return KvmReport(path, False, e.reason, e.fix, loaded_modules())
    try:
        features = {name: Feature(name, what, *_try(kvm, source, name))
                    for name, (what, source) in FEATURES.items()}
    except ToolMissing as e:
        return KvmReport(path, False, f"vmkit cannot try what the KVM at {path} runs: {e}", "", loaded_modules())
    except (VmkitError, OSError) as e:
        return KvmReport(path, False, f"KVM at {path} opened, but creating a VM failed: {e}",
                         "see dmesg for what the kernel says", loaded_modules())
    finally:
        kvm.close()
    return KvmReport(path, True, module=loaded_modules(), features=features)


def loaded_modules():
    names = [m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if os.path.isdir(f"/sys/module/{m}")]
    return ", ".join(names)


def _try(kvm, source, name):
    """Run one probe guest in a fresh VM: (True, "ok") if it reached `success`, else (False, what happened)."""
    image = assemble(source)
    vm = kvm.create_vm()
    try:
        ram = vm.add_memory(0, PROBE_MEMORY)
        ram[image.origin:image.end] = image.code
        gdt = boot_gdt()
        ram[BOOT_GDT:BOOT_GDT + len(gdt)] = gdt
        if name == "irqchip":
            try:
                vm.create_irqchip()                   # before the vCPU, which gets a local APIC
            except OSError as e:
                return False, f"KVM_CREATE_IRQCHIP failed: {e.strerror}"
        vcpu = vm.create_vcpu()
        vcpu.enter_protected_mode(image.entry, STACK_TOP, BOOT_GDT)
        watchdog = threading.Timer(PROBE_SECONDS, vcpu.kick)
        watchdog.daemon = True
        watchdog.start()
        try:
            if name == "interrupt-window":
                return _drive_window(vcpu, image.symbols["window"])
            if name == "irqchip":
                return _drive_irqchip(vm, vcpu)
            return _drive(vcpu, name == "interrupts")
        finally:
            watchdog.cancel()
    finally:
        vm.close()


def _drive_window(vcpu, window):
    """The interrupt-window probe: ask for the window at the guest's first `out` (IF = 0 there), and
    inject at KVM_EXIT_IRQ_WINDOW_OPEN if it came at `window`, the instruction after sti's shadow."""
    run = vcpu.kvm_run
    for _ in range(MAX_EXITS):
        reason = vcpu.run()
        if reason == api.KVM_EXIT_IO and run.u.io.port == 0x80:
            run.request_interrupt_window = 1
        elif reason == api.KVM_EXIT_IRQ_WINDOW_OPEN:
            eip = vcpu.get_regs().rip
            if eip != window:
                return False, f"the window exit came at eip {eip:#x}, not at {window:#x} after sti's shadow"
            run.request_interrupt_window = 0
            vcpu.interrupt(INTERRUPT_VECTOR)
        elif reason == api.KVM_EXIT_IO and run.u.io.port == 0x81:
            return False, "the guest ran past sti's shadow and masked interrupts again with no KVM_EXIT_IRQ_WINDOW_OPEN"
        elif reason == api.KVM_EXIT_IO and run.u.io.port == 0xF4:
            value = vcpu.io_data()[0]
            return (True, "ok") if value == SUCCESS else (False, f"the guest got through with {value:#x}")
        elif reason == api.KVM_EXIT_INTR:
            return False, f"the guest had not finished after {PROBE_SECONDS:g} s"
        elif reason != api.KVM_EXIT_IO:
            return False, f"it ended in KVM_EXIT_{decode(vcpu, reason).reason}"
    return False, f"no result after {MAX_EXITS} exits"


def _drive_irqchip(vm, vcpu):
    """The in-kernel PIC probe: raise IRQ0 (an edge) at the guest's `out 0x80`; the kernel does the rest."""
    run = vcpu.kvm_run
    for _ in range(MAX_EXITS):
        reason = vcpu.run()
        if reason == api.KVM_EXIT_IO and run.u.io.port == 0x80:
            vm.irq_line(0, 1)
            vm.irq_line(0, 0)
        elif reason == api.KVM_EXIT_IO and run.u.io.port == 0xF4:
            value = vcpu.io_data()[0]
            return (True, "ok") if value == SUCCESS else (False, f"the guest got through with {value:#x}")
        elif reason == api.KVM_EXIT_INTR:
            return False, f"the interrupt never came: the guest still slept after {PROBE_SECONDS:g} s"
        elif reason != api.KVM_EXIT_IO:
            return False, f"it ended in KVM_EXIT_{decode(vcpu, reason).reason}"
    return False, f"no result after {MAX_EXITS} exits"


def _drive(vcpu, inject):
    """The probe's own little VMM: answer an MMIO read with SUCCESS, inject the interrupt at the
    guest's hlt when asked to, and stop at the write to isa-debug-exit or at anything else."""
    run = vcpu.kvm_run
    for _ in range(MAX_EXITS):
        reason = vcpu.run()
        if reason == api.KVM_EXIT_IO and run.u.io.port == 0xF4:
            value = vcpu.io_data()[0]
            return (True, "ok") if value == SUCCESS else (False, f"the guest got through with {value:#x}, not {SUCCESS:#x}")
        if reason == api.KVM_EXIT_IO and run.u.io.direction == api.KVM_EXIT_IO_IN:
            vcpu.answer_io(b"\xff" * (run.u.io.size * run.u.io.count))
        elif reason == api.KVM_EXIT_IO:
            continue
        elif reason == api.KVM_EXIT_MMIO and not run.u.mmio.is_write:
            vcpu.answer_mmio(SUCCESS.to_bytes(run.u.mmio.len, "little"))
        elif reason in (api.KVM_EXIT_HLT, api.KVM_EXIT_IRQ_WINDOW_OPEN) and inject:
            if run.ready_for_interrupt_injection:
                vcpu.interrupt(INTERRUPT_VECTOR)
                run.request_interrupt_window = 0
            else:
                run.request_interrupt_window = 1
        elif reason == api.KVM_EXIT_HLT:
            continue
        elif reason == api.KVM_EXIT_INTR:
            return False, f"the guest had not finished after {PROBE_SECONDS:g} s"
        else:
            exit = decode(vcpu, reason)
            meaning = f" ({exit.detail['what']})" if "what" in exit.detail else ""
            return False, f"it ended in KVM_EXIT_{exit.reason}{meaning}"
    return False, f"no result after {MAX_EXITS} exits"
