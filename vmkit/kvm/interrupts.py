"""Interrupts for a KVM guest from the user-space PIC and PIT: what a VMM does around KVM_RUN.

KVM runs the guest's instructions; the timer and the interrupt controller are the device model's
(vmkit.kvm.devices), in user space, as QEMU runs them when KVM has no in-kernel irqchip. A tick must
then reach the guest through the vCPU's file descriptor, and the guest may have interrupts masked
when it comes. QEMU's answer (target/i386/kvm/kvm.c, kvm_arch_pre_run and kvm_arch_post_run), which
`UserspacePic` follows:

    the tick          the PIT's time has come: the device model raises IRQ0 at the PIC, and kicks
                      the vCPU thread out of KVM_RUN with a signal (KVM_EXIT_INTR)
    before KVM_RUN    if the PIC offers an interrupt, kvm_run.ready_for_interrupt_injection is set and
                      the guest's IF (kvm_run.if_flag) is 1: acknowledge the PIC and KVM_INTERRUPT its
                      vector (KVM queues it and injects it at the next VM entry). If one still waits,
                      set kvm_run.request_interrupt_window, else clear it
    the window        the guest runs until it can take the interrupt (IF = 1, no sti or mov-ss shadow),
                      then exits with KVM_EXIT_IRQ_WINDOW_OPEN; the next KVM_RUN injects it
    hlt               KVM_EXIT_HLT with IF = 1: the vCPU waits in user space for the next interrupt
                      (QEMU's kvm_handle_halt), then goes back into the guest, which takes it

KVM's side of the handshake (struct kvm_run in linux/kvm.h and Documentation/virt/kvm/api.rst):
request_interrupt_window asks that KVM_RUN return as soon as an external interrupt can be injected,
"useful in conjunction with KVM_INTERRUPT"; ready_for_interrupt_injection, once the window was
requested, says an interrupt can be injected now with KVM_INTERRUPT; if_flag is the guest's IF (valid
without an in-kernel local APIC). KVM_INTERRUPT without an in-kernel irqchip queues the vector
(arch/x86/kvm/x86.c, kvm_vcpu_ioctl_interrupt: kvm_queue_interrupt), and every return from KVM_RUN
fills the two flags in (post_kvm_run_save). vmkit's model of VT-x plays the same handshake with its VMCS controls
(vmkit.vtx.hardware_assist, `VmcsControls(external_interrupt_exiting=True)`).

Time. KVM counts no instructions, so the PIT cannot count them as the emulated machine's does: it
counts the host's time since the VM started, scaled to the platform's 100 MHz clock (DeviceModel.clock),
as QEMU's PIT follows its virtual clock, which under KVM is the host's. A `Ticker` thread sleeps until
the PIT's next tick and kicks vCPU 0 then. How many ticks fall into a stretch of guest code therefore
depends on the host: a guest that prints only what does not depend on it (that ticks come, where the
interrupt is taken, what the PIC says) prints the same under "kvm" and under the model.

The other way, KVM_CREATE_IRQCHIP (KVM_CAP_IRQCHIP): the PIC, IOAPIC and local APIC in the kernel, with
the device model raising lines with KVM_IRQ_LINE. Then the guest's PIC ports and its hlt no longer
leave the kernel (no IO exits for the PIC, no HLT exits: KVM halts the vCPU itself when an in-kernel
local APIC is there), which is the model's default, silent delivery. vmkit drives the user-space PIC
only, the way this course shows the handshake; `irqchip_in_kernel(kvm)` says whether the host offers
the other.
"""
import threading
import time

from ..machine.devices import CPU_HZ
from . import api

PIT_IRQ = 0
WAIT_SLICE = 0.05                    # seconds a halted vCPU sleeps at most before it looks again


def irqchip_in_kernel(kvm):
    """Whether the KVM behind `kvm` (a vmkit.kvm.Kvm) offers KVM_CREATE_IRQCHIP (KVM_CAP_IRQCHIP)."""
    return kvm.check_extension(api.KVM_CAP_IRQCHIP) > 0


class Ticker(threading.Thread):
    """Kicks a vCPU out of KVM_RUN when the PIT's next tick is due (the device model's timer). `arm`
    with the tick's deadline (time.perf_counter seconds) or None; `ticked` tells the vCPU thread
    whether its last KVM_EXIT_INTR was this kick."""

    def __init__(self, vcpu):
        super().__init__(name="vmkit PIT", daemon=True)
        self.vcpu = vcpu
        self.ticked = False
        self._deadline = None
        self._stopped = False
        self._wake = threading.Condition()

    def arm(self, deadline):
        with self._wake:
            if deadline != self._deadline:
                self._deadline = deadline
                self._wake.notify()

    def stop(self):
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def run(self):
        with self._wake:
            while not self._stopped:
                if self._deadline is None:
                    self._wake.wait()
                    continue
                delay = self._deadline - time.perf_counter()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                self._deadline = None
                self.ticked = True
                self.vcpu.kick()


class UserspacePic:
    """QEMU's side of the handshake for one vCPU, with the device model's PIC and PIT. `record(event
    kind, **detail)` is the machine's way of recording what it did."""

    def __init__(self, devices, vcpu, record):
        self.devices, self.vcpu, self.record = devices, vcpu, record
        self.ticker = None

    def catch_up(self):
        """Bring the PIT up to now; each tick raises IRQ0 at the PIC. Call with the device lock held."""
        devices = self.devices
        for _ in range(devices.pit.advance(devices.clock())):
            devices.pic.raise_irq(PIT_IRQ)

    def deadline(self):
        """When the PIT's next tick is due (perf_counter seconds), or None if it will not interrupt."""
        devices = self.devices
        if not (devices.pit.armed() and devices.pic.irq0_enabled()):
            return None
        return devices.started + devices.pit.next_tick() / CPU_HZ

    def before_run(self):
        """kvm_arch_pre_run without an in-kernel PIC: inject what the PIC offers if the guest can take
        it, and ask for the interrupt window while something still waits. Returns the injected vector."""
        run, vector = self.vcpu.kvm_run, None
        with self.devices.lock:
            self.catch_up()
            pic = self.devices.pic
            if pic.pending() is not None and run.ready_for_interrupt_injection and run.if_flag:
                irq, vector = pic.acknowledge()
                self.vcpu.interrupt(vector)
                self.record("interrupt", irq=irq, vector=vector, injected="KVM_INTERRUPT")
            run.request_interrupt_window = 1 if pic.pending() is not None else 0
            deadline = self.deadline()
        if deadline is not None and self.ticker is None:
            self.ticker = Ticker(self.vcpu)
            self.ticker.start()
        if self.ticker is not None:
            self.ticker.arm(deadline)
        return vector

    def took_tick(self):
        """Whether the last KVM_EXIT_INTR was the ticker's kick (and forget it)."""
        ticked = self.ticker is not None and self.ticker.ticked
        if ticked:
            self.ticker.ticked = False
        return ticked

    def wait_for_interrupt(self, expired):
        """A hlt with IF = 1: sleep until the PIC offers an interrupt (QEMU's halted vCPU). Returns the
        seconds waited, or None when no interrupt can come (nothing armed) or `expired()` says stop."""
        started = time.perf_counter()
        if self.ticker is not None:
            self.ticker.arm(None)            # the vCPU is not in the guest: the tick needs no kick
        try:
            while not expired():
                with self.devices.lock:
                    self.catch_up()
                    if self.devices.pic.pending() is not None:
                        return time.perf_counter() - started
                    deadline = self.deadline()
                if deadline is None:
                    return None
                time.sleep(min(max(deadline - time.perf_counter(), 0), WAIT_SLICE))
            return None
        finally:
            if self.took_tick() and not expired():
                self.vcpu.kvm_run.immediate_exit = 0     # a kick that came as the vCPU left: not needed

    def close(self):
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker.join()
            self.ticker = None
