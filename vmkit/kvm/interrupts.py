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
without an in-kernel local APIC). In arch/x86/kvm/x86.c: KVM_INTERRUPT without an in-kernel
irqchip queues the vector (kvm_vcpu_ioctl_interrupt: kvm_queue_interrupt); vcpu_run returns
KVM_EXIT_IRQ_WINDOW_OPEN when user space asked (dm_request_for_irq_injection) and the vCPU is ready
(kvm_vcpu_ready_for_interrupt_injection); every return from KVM_RUN fills if_flag and
ready_for_interrupt_injection in (post_kvm_run_save); and a hlt exits to user space only when the
local APIC is not in the kernel (__kvm_emulate_halt). vmkit's model of VT-x plays the same handshake
with its VMCS controls (vmkit.vtx.hardware_assist, `VmcsControls(external_interrupt_exiting=True)`).

Time. KVM counts no instructions, so the PIT cannot count them as the emulated machine's does: it
counts the host's time since the VM started, scaled to the platform's 100 MHz clock (DeviceModel.clock),
as QEMU's PIT follows its virtual clock, which under KVM runs with the host's time (there is no
instruction count to follow). A `Ticker` thread sleeps until
the PIT's next tick and kicks vCPU 0 then. How many ticks fall into a stretch of guest code therefore
depends on the host: a guest that prints only what does not depend on it (that ticks come, where the
interrupt is taken, what the PIC says) prints the same under "kvm" and under the model.

The other way, `KernelPic` (`KvmMachine(..., irqchip="kernel")`, where the host has KVM_CAP_IRQCHIP):
KVM_CREATE_IRQCHIP puts a PIC pair, an IOAPIC and a local APIC per vCPU in the kernel, and the device
model only sets the PIT's line with KVM_IRQ_LINE, level 1 then 0 for an edge (api.rst: "edge-triggered
interrupts require the level to be set to 1 and then back to 0"), from the ticker's own thread: the
kernel wakes or interrupts the vCPU itself, with no kick. User space then never sees an interrupt
being taken: the guest's PIC ports no longer exit (no IO exits for 0x20, 0x21, 0xa0, 0xa1), nor does
hlt (with the local APIC in the kernel, KVM halts the vCPU itself), so a guest that ends in `hlt`
with IF = 0 sleeps until `timeout=`. That is the default of vmkit's model, the silent delivery of
KVM's in-kernel PIC. The kernel's PIC starts with every line unmasked (arch/x86/kvm/i8259.c, kvm_pic_reset:
imr = 0), not masked as the vmkit PC's is; the course's guests program it first. `irqchip_in_kernel(kvm)` says whether the host offers it; the probe's `irqchip`
feature whether it delivers (PVM does).
"""
import threading
import time

from ..machine.devices import CPU_HZ
from . import api

PIT_IRQ = 0
WAIT_SLICE = 0.05                    # seconds a halted vCPU sleeps at most before it looks again
IDLE = 1.0                           # seconds a ticker with nothing to time waits before it ends


def irqchip_in_kernel(kvm):
    """Whether the KVM behind `kvm` (a vmkit.kvm.Kvm) offers KVM_CREATE_IRQCHIP (KVM_CAP_IRQCHIP)."""
    return kvm.check_extension(api.KVM_CAP_IRQCHIP) > 0


class Ticker(threading.Thread):
    """The device model's timer: at each deadline (time.perf_counter seconds) it calls `fire()`, which
    returns the next deadline or None. Left without a deadline for IDLE seconds, the thread ends;
    `arm` then returns False and the caller starts a new one (see `rearm`)."""

    def __init__(self, fire):
        super().__init__(name="vmkit PIT", daemon=True)
        self.fire = fire
        self._deadline = None
        self._stopped = False
        self._wake = threading.Condition()

    def arm(self, deadline):
        """The next deadline (None: no tick to wait for). False if this ticker has ended."""
        with self._wake:
            if self._stopped:
                return False
            if deadline != self._deadline:
                self._deadline = deadline
                self._wake.notify()
            return True

    def stop(self):
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def run(self):
        with self._wake:
            while not self._stopped:
                if self._deadline is None:
                    if not self._wake.wait(IDLE) and self._deadline is None:
                        self._stopped = True              # nothing to time: end the thread
                    continue
                delay = self._deadline - time.perf_counter()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                self._deadline = self.fire()


def rearm(ticker, fire, deadline):
    """Give `ticker` its next deadline; a new Ticker if there is none or it has ended. Returns it."""
    if ticker is not None and ticker.arm(deadline):
        return ticker
    if deadline is None:
        return None
    ticker = Ticker(fire)
    ticker.start()
    ticker.arm(deadline)
    return ticker


class UserspacePic:
    """QEMU's side of the handshake for one vCPU, with the device model's PIC and PIT."""

    in_kernel = False

    def __init__(self, devices, vcpu):
        self.devices, self.vcpu = devices, vcpu
        self.ticker = None
        self.ticked = False                   # the ticker kicked the vCPU since the last look

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
        it, and ask for the interrupt window while something still waits. Returns (irq, vector) of
        the interrupt injected with KVM_INTERRUPT, or None."""
        run, injected = self.vcpu.kvm_run, None
        with self.devices.lock:
            self.catch_up()
            pic = self.devices.pic
            if pic.pending() is not None and run.ready_for_interrupt_injection and run.if_flag:
                injected = pic.acknowledge()
                self.vcpu.interrupt(injected[1])
            run.request_interrupt_window = 1 if pic.pending() is not None else 0
            deadline = self.deadline()
        self.ticker = rearm(self.ticker, self._kick, deadline)
        return injected

    def _kick(self):
        """The tick: get the vCPU out of the guest; the next KVM_RUN's before_run raises IRQ0."""
        self.ticked = True
        self.vcpu.kick()
        return None                           # before_run arms the next one

    def took_tick(self):
        """Whether the last KVM_EXIT_INTR was the ticker's kick (and forget it)."""
        ticked, self.ticked = self.ticked, False
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


class KernelPic:
    """The in-kernel irqchip (KVM_CREATE_IRQCHIP, made by the caller before the vCPUs): the PIT's tick
    is an edge on GSI 0 with KVM_IRQ_LINE, from the ticker's thread. `raised` counts the edges."""

    in_kernel = True

    def __init__(self, devices, vm):
        self.devices, self.vm = devices, vm
        self.raised = 0
        self.ticker = None

    def deadline(self):
        """The PIT's next tick (perf_counter seconds); the kernel's PIC decides whether it is masked."""
        pit = self.devices.pit
        return self.devices.started + pit.next_tick() / CPU_HZ if pit.armed() else None

    def _tick(self):
        with self.devices.lock:
            fired = self.devices.pit.advance(self.devices.clock())
            for _ in range(fired):
                self.vm.irq_line(PIT_IRQ, 1)
                self.vm.irq_line(PIT_IRQ, 0)
            self.raised += fired
            return self.deadline()

    def before_run(self):
        """Only the timer's next deadline: the guest may have reprogrammed the PIT at its last exit."""
        with self.devices.lock:
            deadline = self.deadline()
        self.ticker = rearm(self.ticker, self._tick, deadline)

    def took_tick(self):
        return False                          # the ticker never kicks: the kernel delivers

    def wait_for_interrupt(self, expired):
        return None                           # hlt never leaves the kernel

    def close(self):
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker.join()
            self.ticker = None
