"""The vmkit PC on the real KVM: `vmkit.run(image, "kvm")`.

Guest RAM is a memory slot of this process's memory, each CPU is a KVM vCPU, and the devices are
vmkit's user-space device model (vmkit.kvm.devices), the part QEMU plays. The loop is the one every
KVM VMM has at its heart:

    while the guest runs:
        KVM_RUN                    the guest runs at hardware speed until it needs user space
        decode kvm_run             why it stopped: IO, MMIO, HLT, SHUTDOWN, ...
        handle the exit            a device answers; the answer goes back through kvm_run

Every exit is recorded as a "vmexit" event with the same reason and details the hardware-assist
model (vmkit.vtx.hardware_assist) gives, followed by what it led to ("io", "exit", "halt",
"shutdown"), so the same guest can be compared under both. KVM counts nothing but time: the
`timeout=` budget stops a runaway guest with a signal (KVM_EXIT_INTR); there is no instruction
count and no max_instructions.

Interrupts come from the device model's PIC and PIT, in user space, as QEMU drives KVM without an
in-kernel irqchip (vmkit.kvm.interrupts): before each KVM_RUN of vCPU 0 the loop injects what the PIC
offers with KVM_INTERRUPT when kvm_run says the guest can take it, else sets
request_interrupt_window; the PIT's tick kicks the vCPU out of the guest (an INTR exit), the open
window is an IRQ_WINDOW_OPEN exit, and a hlt with IF = 1 waits in user space for the next tick.
Each injection is an "interrupt" event (`injected`: "KVM_INTERRUPT"), as under the model with
`VmcsControls(external_interrupt_exiting=True)`. Only vCPU 0 takes the PIC's interrupts.
`irqchip="kernel"` uses KVM's in-kernel PIC instead (KVM_CREATE_IRQCHIP, the tick raised with
KVM_IRQ_LINE), where the host has it: the PIC's ports and hlt then stay in the kernel, and user space
sees neither an injection nor an interrupt window (stats "irqs" counts the edges raised).
`ioeventfd=True` attaches an eventfd to the virtio console's QueueNotify (KVM_IOEVENTFD, see
vmkit.kvm.ioeventfd): that write no longer exits, and a worker thread takes the requests (stats
"ioeventfd_signals": the writes the kernel matched).

Several vCPUs run as threads of this process, named "CPU n/KVM" as QEMU names its vCPU threads
(see start(), vcpu_threads()); vCPU n starts at the entry like vCPU 0, with ESP 64 KiB lower per
vCPU and its number as the initial APIC ID that CPUID leaf 1 reports in EBX bits 31-24.
"""
import ctypes
import os
import threading
import time

from ..arguments import DefaultBudget, check_budgets, check_memory
from ..asm import assemble, disassemble
from ..errors import GuestError, GuestInterrupted, GuestTimeout, KvmUnavailable, VmkitError
from ..machine.machine import DEFAULT_TIMEOUT, MAX_EVENTS, interruptible
from ..machine.platform import (BOOT_CS, BOOT_DS, BOOT_GDT, BOOT_GDT_LIMIT, DEFAULT_MEMORY, STACK_TOP, boot_gdt,
                               check_fits)
from ..machine.x86 import IF
from ..trace import Event, RunResult
from . import api
from .devices import DeviceModel
from .exits import ExitLocator, decode
from .interrupts import KernelPic, UserspacePic, irqchip_in_kernel
from .ioeventfd import QueueNotifier
from .ioeventfd import available as ioeventfd_available
from .vm import DEVICE, Kvm

VCPU_STACK_GAP = 0x10000             # vCPU n starts with ESP = STACK_TOP - n * this
KERNEL_COUNTERS = ("exits", "io_exits", "mmio_exits", "halt_exits", "signal_exits", "insn_emulation",
                   "insn_emulation_fail")
STATS = {"traps": 0, "vmexits": 0, "hypercalls": 0, "blocks_translated": 0, "interrupts": 0, "irqs": 0, "io": 0}
SECONDS_TO_CYCLES = 100_000_000      # the platform's clock (vmkit.machine.devices.CPU_HZ), for `waited`
PR_SET_NAME = 15


class _Expired(Exception):
    """The watchdog's kick arrived: the budget is spent (turned into GuestTimeout by the caller)."""


class KvmMachine:
    """One guest image on KVM, with vmkit's device model. Step it (`step()`: one KVM_RUN and its
    exit), run it (`run()`), or with several vCPUs `start()` it and `wait()` for it. `path` names the
    KVM device (a test can name one that does not exist). Close it, or use it in a `with`."""

    technique = "kvm"

    def __init__(self, image, memory=DEFAULT_MEMORY, *, max_instructions=None, timeout=DEFAULT_TIMEOUT,
                 vcpus=1, path=DEVICE, irqchip="user", ioeventfd=False):
        check_budgets(None, timeout)
        check_memory(memory)
        if max_instructions is not None and not isinstance(max_instructions, DefaultBudget):
            raise ValueError(f"kvm cannot count a guest's instructions (the host CPU runs them, and KVM reports "
                             f"only exits), so max_instructions={max_instructions!r} cannot be kept: give a timeout "
                             f"instead, or run the model of VT-x, 'hardware-assist', which counts")
        if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 1:
            raise ValueError(f"vcpus must be a whole number of virtual CPUs, 1 or more, not {vcpus!r}")
        if irqchip not in ("user", "kernel"):
            raise VmkitError(f"irqchip is 'user' (the device model's PIC, as QEMU's without an in-kernel "
                             f"irqchip) or 'kernel' (KVM_CREATE_IRQCHIP), not {irqchip!r}")
        self.image = assemble(image)
        check_fits(self.image, memory)
        self.memory, self.timeout = memory, timeout
        self.devices = DeviceModel()
        self.events, self.events_dropped = [], 0
        self._smp = vcpus > 1
        self._counts = [{"vmexits": 0, "io": 0} for _ in range(vcpus)]
        self.elapsed = 0.0
        self.finished = self.halted = self.shutdown = False
        self._lock = threading.Lock()
        self._stop_when = None
        self._stop_requested = False
        self._timed_out = False
        self._error = None
        self._threads = []
        self._native_ids = {}
        self.vm = self.kvm = self.notifier = None
        self.kvm = Kvm(path)
        try:
            self.vm = self.kvm.create_vm()
            if irqchip == "kernel":
                if not irqchip_in_kernel(self.kvm):
                    raise KvmUnavailable(f"the KVM at {path} has no in-kernel irqchip (KVM_CAP_IRQCHIP)",
                                         "use irqchip='user', the device model's PIC")
                self.vm.create_irqchip()              # before the vCPUs: each gets a local APIC
            self.ram = self.vm.add_memory(0, memory)
            self._load()
            self.devices.attach_memory(self.ram)
            self._locator = ExitLocator(self._read, self.image.lines)
            cpuid = self.kvm.supported_cpuid()
            for n in range(vcpus):
                self._create_vcpu(n, cpuid)
            self._kernel_stats = [vcpu.stats() for vcpu in self.vm.vcpus]
            self.pic = (KernelPic(self.devices, self.vm) if irqchip == "kernel"
                        else UserspacePic(self.devices, self.vm.vcpus[0]))
            if ioeventfd:
                if not ioeventfd_available(self.kvm):
                    raise KvmUnavailable(f"the KVM at {path} has no KVM_IOEVENTFD (KVM_CAP_IOEVENTFD)",
                                         "run without ioeventfd: QueueNotify is then an MMIO exit")
                self.notifier = QueueNotifier(self.vm, self.devices)
        except BaseException:
            self.close()
            raise
        self._running = [True] * vcpus              # which vCPUs have not stopped yet

    # --- building the VM: memory, the boot GDT, the vCPUs ------------------------------------------
    def _load(self):
        """The image at its origin, and the platform's boot GDT where the emulated PC leaves it."""
        origin = self.image.origin
        self.ram[origin:origin + len(self.image.code)] = self.image.code
        gdt = boot_gdt()
        self.ram[BOOT_GDT:BOOT_GDT + len(gdt)] = gdt

    def _create_vcpu(self, n, cpuid):
        vcpu = self.vm.create_vcpu()
        vcpu.set_cpuid([_with_apic_id(entry, n) for entry in cpuid])
        vcpu.enter_protected_mode(self.image.entry, STACK_TOP - n * VCPU_STACK_GAP, BOOT_GDT, BOOT_GDT_LIMIT, BOOT_CS,
                                 BOOT_DS)
        vcpu.sync_registers()
        return vcpu

    @property
    def vcpus(self):
        return self.vm.vcpus

    # --- running one vCPU in the calling thread -------------------------------------------------------
    def step(self):
        """One KVM_RUN of vCPU 0 and the handling of its exit. Returns the new events."""
        first = len(self.events)
        self._advance(lambda: self._exit(self.vcpus[0], self._run(self.vcpus[0])))
        return self.events[first:]

    def run_until(self, event=None):
        """Run vCPU 0 until an event matching `event` (a kind, or a predicate on Event) is recorded or
        the guest finishes. Returns the new events."""
        if len(self.vcpus) != 1:
            raise VmkitError("with several vCPUs, use start() and wait(): each vCPU runs in its own thread")
        first = len(self.events)
        if isinstance(event, str):
            kind = event
            event = lambda e: e.kind == kind
        self._stop_when, self._stop_requested = event, False
        vcpu = self.vcpus[0]
        try:
            self._advance(lambda: self._loop(vcpu))
        finally:
            self._stop_when = None
        return self.events[first:]

    def next_event(self):
        return self.run_until(event=lambda e: True)

    def run_for(self, seconds):
        """Run vCPU 0 for `seconds` of real time (or until the guest finishes), then leave it paused
        between two KVM_RUNs, as a VMM pauses a VM: a timer kicks the vCPU out (KVM_EXIT_INTR).
        Returns the new events."""
        first = len(self.events)
        self._stop_requested = False
        vcpu = self.vcpus[0]
        timer = threading.Timer(seconds, self._pause, args=(vcpu,))
        timer.daemon = True
        timer.start()
        try:
            self._advance(lambda: self._loop(vcpu))
        finally:
            timer.cancel()
            timer.join()                     # a kick still on its way lands before the flag is reset
            self._stop_requested = False
        return self.events[first:]

    def _interrupt(self):
        """Ctrl-C: every vCPU out of KVM_RUN, and the run loop ends at its next look."""
        self._stop_requested = True
        for vcpu in self.vcpus:
            vcpu.kick()

    def _pause(self, vcpu):
        self._stop_requested = True
        vcpu.kick()

    def run(self):
        """Run to the end and return the RunResult (GuestTimeout past `timeout` seconds)."""
        if len(self.vcpus) > 1:
            self.start()
            return self.wait()
        self.run_until()
        return self.result()

    def _loop(self, vcpu):
        handle = self._exit
        while self._running[vcpu.index] and not self.finished and not self._stop_requested:
            handle(vcpu, self._run(vcpu))

    def _run(self, vcpu):
        """One KVM_RUN, with the PIC's side of the interrupt handshake before it on vCPU 0."""
        if vcpu.index == 0 and (injected := self.pic.before_run()) is not None:
            self._counts[0]["irqs"] = self._counts[0].get("irqs", 0) + 1
            self._event("interrupt", vcpu.synced_regs.rip, vcpu.synced_cs.selector & 3, vcpu, irq=injected[0],
                        vector=injected[1], injected="KVM_INTERRUPT")
        return vcpu.run()

    def _advance(self, body):
        if self.finished:
            return
        self._check_budget()
        watchdog = self._watchdog()
        started = time.perf_counter()
        interrupted = interruptible(self._interrupt)
        try:
            with interrupted:
                body()
        except _Expired:
            pass
        finally:
            self.elapsed += time.perf_counter() - started
            if watchdog is not None:
                watchdog.cancel()
        if interrupted:
            raise GuestInterrupted(f"the run was interrupted after {self.elapsed:.1f} s: the run so far is this "
                                   f"exception's .result", self.result())
        if not self.finished:
            self._check_budget()

    # --- several vCPUs, one thread each ---------------------------------------------------------------
    def start(self):
        """Start one thread per vCPU, each in its own KVM_RUN loop."""
        self._check_budget()
        self._started = time.perf_counter()
        self._watch = self._watchdog()
        self._threads = [threading.Thread(target=self._vcpu_thread, args=(vcpu,), name=f"CPU {vcpu.index}/KVM",
                                          daemon=True) for vcpu in self.vcpus]
        for thread in self._threads:
            thread.start()
        while len(self._native_ids) < len(self._threads) and any(t.is_alive() for t in self._threads):
            time.sleep(0.0005)                     # until every thread has said who it is
        return self

    def vcpu_threads(self):
        """vCPU number -> the Linux thread id (a /proc/self/task entry) of the thread running it."""
        return dict(self._native_ids)

    def wait(self):
        """Wait for every vCPU thread to end; the RunResult (GuestTimeout past the budget)."""
        for thread in self._threads:
            thread.join()
        self.elapsed += time.perf_counter() - self._started
        if self._watch is not None:
            self._watch.cancel()
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, _Expired):
                raise self._timeout_error()
            if isinstance(error, (GuestTimeout, GuestError)):
                error.result = self.result()
            raise error
        return self.result()

    def stop(self):
        """End the run now: every vCPU leaves the guest (a kick) and its thread ends."""
        self._finish_all()

    def _vcpu_thread(self, vcpu):
        _name_this_thread(f"CPU {vcpu.index}/KVM")
        self._native_ids[vcpu.index] = threading.get_native_id()
        try:
            self._loop(vcpu)
        except BaseException as error:           # noqa: BLE001 - handed to wait()
            with self._lock:
                if self._error is None:
                    self._error = error
            self._finish_all()

    def _finish_all(self):
        self.finished = True
        for vcpu in self.vcpus:
            vcpu.kick()

    # --- the budget: a watchdog thread kicks every vCPU out of the guest --------------------------------
    def _watchdog(self):
        if self.timeout is None:
            return None
        timer = threading.Timer(max(self.timeout - self.elapsed, 0.0), self._expire)
        timer.daemon = True
        timer.start()
        return timer

    def _expire(self):
        self._timed_out = True
        for vcpu in self.vcpus:
            vcpu.kick()

    def _check_budget(self):
        if self.timeout is not None and (self._timed_out or self.elapsed >= self.timeout):
            raise self._timeout_error()

    def _timeout_error(self):
        return GuestTimeout(f"the guest ran for {self.elapsed:.2f} s of real time on KVM without finishing "
                            f"(timeout={self.timeout} s); vmkit stopped it with a signal (KVM_EXIT_INTR) "
                            f"at eip {self.vcpus[0].get_regs().rip:#x}. A loop that never ends? Raise "
                            f"timeout if it just needs longer.", self.result())

    # --- exits ----------------------------------------------------------------------------------------
    def _exit(self, vcpu, reason):
        handler = self._HANDLERS.get(reason)
        if handler is None:
            self._unexpected(vcpu, reason)
        else:
            handler(self, vcpu)

    def _on_io(self, vcpu):
        io = vcpu.io
        port, size, count = io.port, io.size, io.count
        direction = "out" if io.direction == api.KVM_EXIT_IO_OUT else "in"
        eip, cpl = self._where(vcpu, "IO", direction, port, size)
        more = {"count": count} if count > 1 else {}
        if direction == "out":
            data = vcpu.io_data()
            values = [int.from_bytes(data[i:i + size], "little") for i in range(0, size * count, size)]
            self._vmexit(vcpu, eip, cpl, "IO", port=port, size=size, direction="out", value=values[0], **more)
            for value in values:
                self._port(vcpu, eip, cpl, port, size, value, "out")
        else:
            event = self._vmexit(vcpu, eip, cpl, "IO", port=port, size=size, direction="in", value=None, **more)
            answers = [self._port(vcpu, eip, cpl, port, size, None, "in") for _ in range(count)]
            vcpu.answer_io(b"".join(v.to_bytes(size, "little") for v in answers))
            event.detail["value"] = answers[0]

    def _port(self, vcpu, eip, cpl, port, size, value, direction):
        devices = self.devices
        answer = devices.port_access(port, size, value, direction)
        if direction == "in":
            value = answer
        self._counts[vcpu.index]["io"] += 1
        self._event("io", eip, cpl, vcpu, port=port, size=size, value=value, direction=direction,
                    device=devices.device_name(port))
        if port in devices.debug_exit.PORTS and direction == "out" and not self.finished:
            self._event("exit", eip, cpl, vcpu, exit_code=devices.debug_exit.exit_code)
            self._finish_all()
        return value

    def _on_mmio(self, vcpu):
        m = vcpu.mmio
        address, size = m.phys_addr, m.len
        direction = "write" if m.is_write else "read"
        eip, cpl = self._where(vcpu, "MMIO", direction, address=address)
        register = self.devices.register(address)
        if m.is_write:
            value = int.from_bytes(bytes(m.data)[:size], "little")
            self._vmexit(vcpu, eip, cpl, "MMIO", address=address, size=size, direction="write", value=value,
                         register=register)
            self.devices.mmio_access(address, size, value, "write")
        else:
            event = self._vmexit(vcpu, eip, cpl, "MMIO", address=address, size=size, direction="read", value=None,
                                 register=register)
            value = self.devices.mmio_access(address, size, None, "read")
            vcpu.answer_mmio(value.to_bytes(size, "little"))
            event.detail["value"] = value

    def _on_hlt(self, vcpu):
        eip, cpl = self._where(vcpu, "HLT")
        self._vmexit(vcpu, eip, cpl, "HLT")
        after = vcpu.synced_regs.rip
        if not vcpu.synced_regs.rflags & IF:
            self._event("halt", after, cpl, vcpu, interrupts="off",
                        why="hlt with IF=0: only an NMI or reset could wake it")
        elif vcpu.index == 0 and (waited := self.pic.wait_for_interrupt(self._must_stop)) is not None:
            self._event("halt", after, cpl, vcpu, interrupts="on", waited=int(waited * SECONDS_TO_CYCLES))
            return                           # the next KVM_RUN injects the interrupt that woke it
        elif self._must_stop():
            return
        else:
            self._event("halt", after, cpl, vcpu, interrupts="on",
                        why="hlt with IF=1 but no interrupt source armed: it would sleep forever")
        self._running[vcpu.index] = False
        if not any(self._running):
            self.halted = self.finished = True

    def _on_shutdown(self, vcpu):
        eip, cpl = self._where(vcpu, "SHUTDOWN")
        self._vmexit(vcpu, eip, cpl, "SHUTDOWN")
        self._event("shutdown", eip, cpl, vcpu, why="a triple fault: KVM_EXIT_SHUTDOWN")
        self.shutdown = True
        self._finish_all()

    def _on_intr(self, vcpu):
        eip, cpl = vcpu.synced_regs.rip, vcpu.synced_cs.selector & 3
        if self._timed_out:
            self._vmexit(vcpu, eip, cpl, "INTR", why="the timeout's signal")
            raise _Expired()
        if vcpu.index == 0 and self.pic.took_tick():
            self._vmexit(vcpu, eip, cpl, "INTR",
                         why="the PIT ticked and the PIC raised its interrupt line: the device model kicks the vCPU")
        elif not self.finished:
            self._vmexit(vcpu, eip, cpl, "INTR", why="a signal")

    def _on_irq_window_open(self, vcpu):
        self._vmexit(vcpu, vcpu.synced_regs.rip, vcpu.synced_cs.selector & 3, "IRQ_WINDOW_OPEN")

    def _must_stop(self):
        return self._timed_out or self.finished or self._stop_requested

    def _on_internal_error(self, vcpu):
        detail = decode(vcpu).detail
        eip, cpl = vcpu.synced_regs.rip, vcpu.synced_cs.selector & 3
        raw = detail.pop("instruction_bytes", None)
        if raw is None:
            raw = self._read(eip, 15)
        found = disassemble(raw, eip, 1)
        text = found[0].text if found else "?"
        self._vmexit(vcpu, eip, cpl, "INTERNAL_ERROR", instruction=text, **detail)
        raise GuestError(f"KVM could not run the guest's `{text}` at eip {eip:#x}: KVM_EXIT_INTERNAL_ERROR, "
                         f"{detail['what']}. This machine's KVM cannot run it; vmkit.kvm.probe() says what it can, "
                         f"and the 'hardware-assist' model runs every guest.", self.result())

    def _on_fail_entry(self, vcpu):
        detail = decode(vcpu).detail
        self._vmexit(vcpu, vcpu.synced_regs.rip, vcpu.synced_cs.selector & 3, "FAIL_ENTRY", **detail)
        raise GuestError(f"the CPU refused to enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason "
                         f"{detail['hardware_entry_failure_reason']:#x}): the guest state is invalid for VMX",
                         self.result())

    def _unexpected(self, vcpu, reason):
        exit = decode(vcpu, reason)
        self._vmexit(vcpu, vcpu.synced_regs.rip, vcpu.synced_cs.selector & 3, exit.reason, **exit.detail)
        raise GuestError(f"KVM exit {exit} is not one the vmkit PC's device model handles", self.result())

    _HANDLERS = {api.KVM_EXIT_IO: _on_io, api.KVM_EXIT_MMIO: _on_mmio, api.KVM_EXIT_HLT: _on_hlt,  # noqa: RUF012
                 api.KVM_EXIT_SHUTDOWN: _on_shutdown, api.KVM_EXIT_INTR: _on_intr,
                 api.KVM_EXIT_IRQ_WINDOW_OPEN: _on_irq_window_open,
                 api.KVM_EXIT_INTERNAL_ERROR: _on_internal_error, api.KVM_EXIT_FAIL_ENTRY: _on_fail_entry}

    def _where(self, vcpu, reason, direction=None, port=None, size=None, address=None):
        """(eip of the exiting instruction, CPL) from the registers KVM synced into kvm_run."""
        regs = vcpu.synced_regs
        eip = self._locator.locate(regs.rip, reason, direction, port, size, regs.rdx & 0xFFFF, address)
        return eip, vcpu.synced_cs.selector & 3

    def _read(self, address, size):
        if address < 0 or address + size > self.memory:
            raise ValueError(f"{address:#x} is outside the guest's RAM")
        return self.ram[address:address + size]

    # --- events and the result ---------------------------------------------------------------------------
    def _vmexit(self, vcpu, eip, cpl, reason, **detail):
        counts = self._counts[vcpu.index]              # each vCPU thread counts its own: no lock
        counts["vmexits"] += 1
        counts["vmexit_" + reason] = counts.get("vmexit_" + reason, 0) + 1
        return self._event("vmexit", eip, cpl, vcpu, reason=reason, **detail)

    def _event(self, kind, eip, cpl, vcpu, **detail):
        if self._smp:
            detail["vcpu"] = vcpu.index
        event = Event(kind=kind, eip=eip, cpl=cpl, detail=detail)
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)                  # one bytecode: atomic under the GIL
        else:
            self.events_dropped += 1
        if self._stop_when is not None and self._stop_when(event):
            self._stop_requested = True
        return event

    @property
    def stats(self):
        """The counts so far, summed over the vCPUs: vmexits, vmexit_<REASON>, io (and the keys every
        technique reports, at 0 here)."""
        totals = dict(STATS)
        for counts in self._counts:
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        if getattr(self, "pic", None) is not None and self.pic.in_kernel:
            totals["irqs"] += self.pic.raised
        return totals

    def kernel_counters(self):
        """The kernel's own exit counters for this VM (summed over its vCPUs), from the stats fds."""
        totals = dict.fromkeys(KERNEL_COUNTERS, 0)
        for stats in self._kernel_stats:
            values = stats.read()
            for name in KERNEL_COUNTERS:
                totals[name] += values.get(name, 0)
        return totals

    def result(self):
        stats = self.stats
        if self.events_dropped:
            stats["events_dropped"] = self.events_dropped
        stats.update({f"kernel_{name}": value for name, value in self.kernel_counters().items()})
        if self.notifier is not None:
            stats["ioeventfd_signals"] = self.notifier.signals
        return RunResult(technique=self.technique, serial_bytes=bytes(self.devices.serial.output),
                         exit_code=self.devices.debug_exit.exit_code, halted=self.halted, shutdown=self.shutdown,
                         events=list(self.events), stats=stats, regs=self.registers(), seconds=self.elapsed)

    def registers(self, vcpu=0):
        """The guest's view of vCPU `vcpu`'s registers, named as in the emulated machine's results."""
        regs, sregs = self.vcpus[vcpu].get_regs(), self.vcpus[vcpu].get_sregs()
        values = {name: getattr(regs, "r" + name[1:]) & 0xFFFFFFFF
                  for name in ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip")}
        values["eflags"] = regs.rflags & 0xFFFFFFFF
        values.update({name: getattr(sregs, name).selector for name in ("cs", "ss", "ds", "es", "fs", "gs")})
        return values

    def close(self):
        """Release the VM: its vCPU and VM fds, the stats fds, guest RAM, and the system fd."""
        if getattr(self, "notifier", None) is not None:
            self.notifier.close()
        if getattr(self, "pic", None) is not None:
            self.pic.close()
        for stats in getattr(self, "_kernel_stats", ()):
            stats.close()
        self._kernel_stats = []
        if getattr(self, "vm", None) is not None:
            self.vm.close()
        if getattr(self, "kvm", None) is not None:
            self.kvm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:                    # noqa: BLE001, S110 - interpreter shutdown
            pass


def _with_apic_id(entry, n):
    """CPUID leaf 1 reports the initial APIC ID in EBX bits 31-24: vCPU n gets n, as on a real board."""
    copy = type(entry).from_buffer_copy(entry)
    if copy.function == 1:
        copy.ebx = (copy.ebx & 0x00FFFFFF) | (n << 24)
    return copy


def process_threads(pid="self"):
    """The threads of a process as Linux lists them in /proc/<pid>/task: [(thread id, name)]. For
    this process, while a VM runs, its vCPUs are among them."""
    threads = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                threads.append((int(tid), f.read().strip()))
        except FileNotFoundError:
            pass                              # the thread ended while we looked
    return threads


def _name_this_thread(name):
    """Give the calling thread a Linux name (/proc/self/task/<tid>/comm), 15 bytes at most."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (AttributeError, OSError):
        pass
