"""The vCPU as a VMM's user space sees it, on the real KVM or on vmkit's model: for run loops
written by hand.

Every KVM VMM has the same loop at its heart (kvm-hello-world's run_vm, QEMU's kvm_cpu_exec):

    while True:
        exit = vcpu.run()             KVM_RUN: the guest runs until it needs user space
        ...                           a device model decides what the access means
        vcpu.answer(value)            an `in` or an MMIO read waits for its value; KVM completes
                                      the instruction with it at the next KVM_RUN

vmkit.run(image, "kvm") runs that loop with vmkit's own device model. Here the loop is the
caller's, and so is the device model: no port and no MMIO register answers by itself.

    vcpu = user_vcpu(image, "kvm")              # KVM_RUN on /dev/kvm, kvm_run decoded
    vcpu = user_vcpu(image, "hardware-assist")  # vmkit's model of VT-x, its exits handed out alike

Both hand out the same exits for the same guest, so one loop runs on both. An exit is a
UserExit: `exit.reason` and its details as attributes, `exit.eip` naming the exiting instruction:

    IO        port, size (1, 2, 4), direction ("in"/"out"), value (written by an out; None for an in)
    MMIO      address, size, direction ("read"/"write"), value (written; None for a read)
    HLT       interrupts: whether IF was set (with it clear, nothing can wake the vCPU)
    SHUTDOWN  the guest's CPU gave up (a triple fault)
    INTERNAL_ERROR, FAIL_ENTRY, ...   the real KVM could not go on

What the kernel handles never arrives: CPUID (KVM answers it from its table; the model does the
same) and the signal that stops a runaway guest. A string instruction (`rep outsb`) that KVM
reports as one exit of `count` items is handed out one item at a time.

The rules, each broken one an error that says so (RunLoopError): answer every read, and nothing
else, before the next run(), with a value that fits its size; stop after HLT with interrupts off
and after SHUTDOWN or an error exit. A guest that never ends is stopped by its budget of exits and
of seconds (vmkit.GuestTimeout).

Interrupts, as a VMM without an in-kernel interrupt controller injects them (the device model's
PIC is the caller's: a device that raises a line there is user space's business, and so is the
decision to inject). KVM's side, in struct kvm_run and Documentation/virt/kvm/api.rst, section 5
("the kvm_run structure"), and arch/x86/kvm/x86.c:

    vcpu.if_flag                       the guest's IF at the last exit (kvm_run.if_flag)
    vcpu.ready_for_interrupt_injection at the last exit, an interrupt could be injected now with
                                       KVM_INTERRUPT (post_kvm_run_save fills it from
                                       kvm_vcpu_ready_for_interrupt_injection: IF set, no sti or
                                       mov-ss shadow, no interrupt already queued)
    vcpu.interrupt(vector)             KVM_INTERRUPT: queue `vector`; the next run() enters the guest
                                       by delivering it through the guest's IDT
    vcpu.request_interrupt_window      set before run(): "Request that KVM_RUN return when it becomes
                                       possible to inject external interrupts into the guest", as an exit
    IRQ_WINDOW_OPEN                    that exit (KVM_EXIT_IRQ_WINDOW_OPEN): the guest can take an
                                       interrupt now; inject it before the next run()

QEMU's kvm_arch_pre_run (target/i386/kvm/kvm.c) plays it this way before every KVM_RUN: if the PIC
offers an interrupt and ready_for_interrupt_injection and if_flag are set, acknowledge the PIC and
KVM_INTERRUPT its vector; if one still waits, set request_interrupt_window, else clear it. Breaking
the handshake is a RunLoopError here: KVM_INTERRUPT while the vCPU is not ready (on VT-x, an external
interrupt injected while RFLAGS.IF is 0 fails the VM entry's checks on the guest state, SDM vol. 3C,
26.3.1.4), or a second vector before the first was taken (KVM without an in-kernel irqchip would
quietly replace the first: kvm_vcpu_ioctl_interrupt calls kvm_queue_interrupt, and the first
interrupt, acknowledged at the PIC, is lost). A `hlt` with IF set comes out as HLT
(interrupts=True): the guest sleeps until user space injects an interrupt.

On the model an interrupt is injected at the exact entry: once the guest has loaded an IDT (IDTR's
limit not 0), the model enters it one instruction at a time, so that an exit in the middle of a
stretch of code (an MMIO write, whose access the model cannot cut short) is followed by an entry
before the next instruction, as KVM_RUN's is.
"""
import queue
import threading
import time

from unicorn import UC_HOOK_CODE

from ..asm import disassemble
from ..errors import GuestError, GuestTimeout, VmkitError
from ..machine import quirks
from ..machine.delivery import EXTERNAL
from ..machine.virtio import GuestMemory
from ..machine.x86 import IF
from ..vtx import HardwareAssist
from ..vtx.hardware_assist import entry_interruption_info
from . import api
from .exits import Exit, ExitLocator, decode
from .machine import KvmMachine
from .vm import DEVICE

ENGINES = ("hardware-assist", "kvm")
TIMEOUT = 10.0                     # seconds of real time, from the first run()
MAX_EXITS = 20_000
MAX_INSTRUCTIONS = 5_000_000       # the model's own budget, for a guest that spins without exits
READS = {("IO", "in"), ("MMIO", "read")}
FINAL = {"SHUTDOWN": "the guest's CPU shut down (a triple fault)",
         "INTERNAL_ERROR": "KVM could not go on (KVM_EXIT_INTERNAL_ERROR)",
         "FAIL_ENTRY": "the CPU refused to enter the guest (KVM_EXIT_FAIL_ENTRY)"}


class RunLoopError(VmkitError):
    """A run loop broke a rule of the KVM API (a read left unanswered, a halted vCPU run again)."""


class UserExit(Exit):
    """An exit as user space gets it: `reason`, and each detail as an attribute (exit.port)."""

    def __getattr__(self, name):
        if name.startswith("_") or name == "detail":
            raise AttributeError(name)
        try:
            return self.detail[name]
        except KeyError:
            raise AttributeError(f"a {self.reason} exit has no {name!r}; it has "
                                 f"{', '.join(self.detail) or 'no details'}") from None

    @property
    def reads(self):
        """Does the guest wait for an answer (an `in`, an MMIO read)?"""
        return (self.reason, self.detail.get("direction")) in READS


class UserVcpu:
    """What every engine's vCPU shares: the rules of the loop, the budget, and the log of exits
    (`exits`: each exit handed out, reads with the value answered)."""

    engine = None

    def __init__(self, timeout=TIMEOUT, max_exits=MAX_EXITS):
        self.timeout, self.max_exits = timeout, max_exits
        self.exits = []
        self._deadline = None
        self._waiting = None               # the read that waits for its answer
        self._over = None                  # why this vCPU cannot run again
        self.request_interrupt_window = False     # kvm_run.request_interrupt_window, read at each run()
        self.injected = []                 # [(the number of exits before, vector)] of each interrupt()
        self._queued = None                # the vector interrupt() queued for the next run()
        self._state = (False, False)       # (ready_for_interrupt_injection, if_flag) at the last exit

    @property
    def ready_for_interrupt_injection(self):
        """Whether an interrupt can be injected now (kvm_run.ready_for_interrupt_injection)."""
        return self._state[0] and self._queued is None

    @property
    def if_flag(self):
        """The guest's IF at the last exit (kvm_run.if_flag)."""
        return self._state[1]

    def interrupt(self, vector):
        """KVM_INTERRUPT: queue an external interrupt with `vector`; the next run() delivers it."""
        if isinstance(vector, bool) or not isinstance(vector, int) or not 0 <= vector <= 0xFF:
            raise RunLoopError(f"an interrupt vector is an int from 0 to 0xff, not {vector!r}")
        if self._queued is not None:
            raise RunLoopError(f"vector {self._queued:#x} is queued already: KVM takes one interrupt per entry, "
                               f"run the vCPU first")
        if self._over is not None or not self.exits:
            raise RunLoopError("the vCPU has not stopped at an exit that can take an interrupt")
        if not self.ready_for_interrupt_injection:
            raise RunLoopError(f"the vCPU is not ready for an interrupt (ready_for_interrupt_injection=0, if_flag="
                               f"{int(self.if_flag)}): request the interrupt window and inject at IRQ_WINDOW_OPEN")
        self._queued = vector
        self.injected.append((len(self.exits), vector))

    def run(self):
        """Run the guest until its next exit, and return it."""
        if self._waiting is not None:
            raise RunLoopError(f"the guest is still waiting for the value of its read ({self._waiting}): call "
                               f"vcpu.answer(value) before vcpu.run()")
        if self._over is not None:
            raise RunLoopError(f"{self._over}: this vCPU cannot run again, and your loop should have stopped there")
        if len(self.exits) >= self.max_exits:
            raise GuestTimeout(f"the guest made {len(self.exits):,} exits without finishing (max_exits="
                               f"{self.max_exits:,}); the last: {'; '.join(map(str, self.exits[-3:]))}. A guest "
                               f"polling a status that never comes? A loop that never stops?", None)
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout
            self._start()
        queued, self._queued = self._queued, None
        self._enter(queued, bool(self.request_interrupt_window))
        exit = self._next_exit()
        self._state = self._interrupt_state(exit)
        self.exits.append(UserExit(exit.reason, dict(exit.detail)))
        if exit.reads:
            self._waiting = exit
        elif exit.reason == "HLT" and not exit.detail.get("interrupts"):
            where = f" (hlt at eip {exit.eip:#x})" if "eip" in exit.detail else ""
            self._over = f"the guest halted with interrupts off{where}: nothing can wake it"
        elif exit.reason not in ("IO", "MMIO", "HLT", "IRQ_WINDOW_OPEN", "INTR"):
            self._over = FINAL.get(exit.reason, f"the exit {exit.reason} ends the run")
        return exit

    def answer(self, value):
        """The value the waiting read gets: KVM completes the guest's instruction with it."""
        exit = self._waiting
        if exit is None:
            last = f"the last exit was {self.exits[-1]}" if self.exits else "the guest has not run yet"
            raise RunLoopError(f"nothing waits for an answer ({last}); only an IO in and an MMIO read take one")
        top = (1 << (8 * exit.size)) - 1
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise RunLoopError(f"the guest's read ({exit}) takes {exit.size} byte(s): answer an int from 0 to "
                               f"{top:#x}, not {value!r}")
        self._waiting = None
        self.exits[-1].detail["value"] = value
        self._complete(exit, value)

    @property
    def memory(self):
        """The guest's RAM as a device model reaches it (a vmkit.machine.virtio.GuestMemory: read(address,
        size) -> bytes, write(address, data)), for devices that share rings with the guest: QEMU's
        address_space_rw on the memory KVM_SET_USER_MEMORY_REGION gave the guest."""
        return GuestMemory(self._read_memory, self._write_memory)

    def _read_memory(self, address, size):
        raise RunLoopError(f"this vCPU ({self.engine}) has no guest memory")

    _write_memory = _read_memory

    def record(self):
        """The exits as plain data: [reason, port or address, size, direction, value] (HLT, SHUTDOWN: [reason])."""
        return [exit_record(e) for e in self.exits]

    def seconds_left(self):
        return max(self._deadline - time.monotonic(), 0.0)

    def _timeout(self):
        return GuestTimeout(f"the guest ran for {self.timeout:g} s of real time without finishing (timeout="
                            f"{self.timeout:g} s), after {len(self.exits):,} exits. A loop that never ends?", None)

    # what each engine provides
    def _start(self):
        """The first run() is about to happen."""

    def _enter(self, vector, window):
        """The next entry: deliver `vector` (or None) first; exit at IRQ_WINDOW_OPEN if `window`."""

    def _interrupt_state(self, exit):
        """(ready_for_interrupt_injection, if_flag) at `exit`, as KVM reports them."""
        return False, False

    def _next_exit(self):
        raise NotImplementedError

    def _complete(self, exit, value):
        raise NotImplementedError

    def close(self):
        """Release the engine."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def exit_record(exit):
    if exit.reason == "IO":
        return ["IO", exit.port, exit.size, exit.direction, exit.detail.get("value")]
    if exit.reason == "MMIO":
        return ["MMIO", exit.address, exit.size, exit.direction, exit.detail.get("value")]
    return [exit.reason]


# --- the real KVM ------------------------------------------------------------------------------------
class KvmUserVcpu(UserVcpu):
    """vCPU 0 of a VM with the vmkit PC's memory and boot state (vmkit.kvm.KvmMachine builds it), with
    its exits handed to the caller. The budget is a watchdog that kicks the vCPU out of KVM_RUN."""

    engine = "kvm"

    def __init__(self, image, *, timeout=TIMEOUT, max_exits=MAX_EXITS, path=DEVICE):
        super().__init__(timeout, max_exits)
        self.machine = KvmMachine(image, timeout=None, path=path)
        self.image, self.vcpu = self.machine.image, self.machine.vcpus[0]
        self._locator = ExitLocator(self._read, self.image.lines)
        self._items = []                   # the rest of a string I/O exit
        self._inputs = []                  # answers to a string `ins`, written when all are in
        self._expired = False
        self._watchdog = None
        self._final = None                 # the registers when closed

    def _start(self):
        self._watchdog = threading.Timer(self.timeout, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _expire(self):
        self._expired = True
        self.vcpu.kick()

    def _enter(self, vector, window):
        if vector is not None:
            self.vcpu.interrupt(vector)
        self.vcpu.kvm_run.request_interrupt_window = int(window)

    def _interrupt_state(self, exit):
        run = self.vcpu.kvm_run
        return bool(run.ready_for_interrupt_injection), bool(run.if_flag)

    def _next_exit(self):
        if self._items:
            return self._items.pop(0)
        while True:
            if self._expired:
                raise self._timeout()
            reason = self.vcpu.run()
            if reason != api.KVM_EXIT_INTR:
                return self._decode(reason)

    def _decode(self, reason):
        vcpu, regs = self.vcpu, self.vcpu.synced_regs
        if reason == api.KVM_EXIT_IO:
            io = vcpu.io
            port, size, count = io.port, io.size, io.count
            direction = "out" if io.direction == api.KVM_EXIT_IO_OUT else "in"
            eip = self._locator.locate(regs.rip, "IO", direction, port, size, regs.rdx & 0xFFFF)
            if direction == "out":
                data = vcpu.io_data()
                values = [int.from_bytes(data[i:i + size], "little") for i in range(0, size * count, size)]
            else:
                values, self._inputs = [None] * count, []
            items = [UserExit("IO", {"port": port, "size": size, "direction": direction, "value": v, "eip": eip})
                     for v in values]
            self._items = items[1:]
            return items[0]
        if reason == api.KVM_EXIT_MMIO:
            m = vcpu.mmio
            direction = "write" if m.is_write else "read"
            value = int.from_bytes(bytes(m.data)[:m.len], "little") if m.is_write else None
            eip = self._locator.locate(regs.rip, "MMIO", direction, address=m.phys_addr)
            return UserExit("MMIO", {"address": m.phys_addr, "size": m.len, "direction": direction, "value": value,
                                     "eip": eip})
        if reason == api.KVM_EXIT_HLT:
            return UserExit("HLT", {"interrupts": bool(regs.rflags & IF),
                                    "eip": self._locator.locate(regs.rip, "HLT")})
        if reason == api.KVM_EXIT_IRQ_WINDOW_OPEN:
            return UserExit("IRQ_WINDOW_OPEN", {"eip": regs.rip})
        exit = decode(vcpu, reason)
        return UserExit(exit.reason, dict(exit.detail, eip=regs.rip))

    def _complete(self, exit, value):
        if exit.reason == "MMIO":
            self.vcpu.answer_mmio(value.to_bytes(exit.size, "little"))
            return
        self._inputs.append(value)
        if not self._items:                # every item of the `in` answered: KVM takes them at once
            self.vcpu.answer_io(b"".join(v.to_bytes(exit.size, "little") for v in self._inputs))

    def _read(self, address, size):
        if address < 0 or address + size > self.machine.memory:
            raise ValueError(f"{address:#x} is outside the guest's RAM")
        return bytes(self.machine.ram[address:address + size])

    _read_memory = _read

    def _write_memory(self, address, data):
        self._read(address, len(data))                  # inside RAM, or ValueError
        self.machine.ram[address:address + len(data)] = bytes(data)

    def registers(self):
        """The guest's registers: now, or as they were when the vCPU was closed."""
        return self._final if self._final is not None else self.machine.registers()

    def close(self):
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._final is None and self.machine.vm is not None and self.machine.vcpus:
            self._final = self.machine.registers()
        self.machine.close()


# --- vmkit's model ----------------------------------------------------------------------------------
_ABANDONED = object()                  # the answer that tells a waiting model the caller has gone


class Entry:
    """What user space asked of the next VM entry: a vector to inject, the interrupt window."""

    def __init__(self):
        self.vector, self.window = None, False


class _UserSpaceModel(HardwareAssist):
    """The hardware-assist model with no device of its own: every port access and every MMIO access
    exits to `to_user`, which returns the answer to a read, and every hlt exits too. Interrupts come
    only from user space, through `entry` (KVM_INTERRUPT and request_interrupt_window)."""

    def __init__(self, image, to_user, **budgets):
        super().__init__(image, **budgets)
        self.ports = {}                    # nothing answers a port: COM1, the PIC, debug exit are user space's
        self._to_user = to_user
        self.entry = Entry()
        self._stepping = False             # the running slice is one instruction long
        self._step_next = False            # the next one must be

    def install_hooks(self):
        """Besides the model's: a hook after each lidt of the image ends a long slice there, so that
        the entries after it can inject (see slice_length)."""
        super().install_hooks()
        for insn in disassemble(self.image.code, self.image.origin):
            if insn.mnemonic == "lidt":
                after = self.image.linked(insn.address + insn.size)
                self.uc.hook_add(UC_HOOK_CODE, self._after_lidt, None, after, after)

    def _after_lidt(self, uc, address, size, _):
        if not self._stepping:
            self._step_next = True         # the slice stops in front of this instruction: run it alone
            self.stop("idt-loaded")

    def interrupt_state(self):
        """(ready_for_interrupt_injection, if_flag) now: IF set and no sti or mov-ss shadow."""
        enabled = self.interrupts_enabled()
        return enabled and not quirks.irq_inhibited(self.uc), enabled

    def inject_interrupt(self):
        """A VM entry: the vector user space queued, delivered as the VM-entry interruption-information
        field does (SDM vol. 3C, 24.8.3); else, with the window requested and open, IRQ_WINDOW_OPEN."""
        entry = self.entry
        if entry.vector is None and entry.window and self.interrupt_state()[0]:
            eip = self.cpu["eip"]
            self.vmexit("IRQ_WINDOW_OPEN", eip=eip, hardware="INTERRUPT_WINDOW")
            self._to_user(UserExit("IRQ_WINDOW_OPEN", {"eip": eip}))
            if self.finished:
                return True
        if entry.vector is None:
            return False
        vector, entry.vector = entry.vector, None
        self.stats["irqs"] += 1
        self.record("interrupt", vector=vector, injected="KVM_INTERRUPT",
                    entry_interruption_info=entry_interruption_info(vector))
        self.deliver(vector, EXTERNAL)
        return True

    def slice_length(self, limit):
        """One instruction at a time once the guest has an IDT, or while the window is requested: each
        exit is then followed by an entry that can inject (see the module)."""
        self._stepping = bool(self.entry.window or self._step_next or self.cpu.idt()[1])
        self._step_next = False
        return 1 if self._stepping else super().slice_length(limit)

    def port_access(self, port, size, value, direction, eip):
        event = self.vmexit("IO", eip=eip, port=port, size=size, direction=direction, value=value)
        answer = self._to_user(UserExit("IO", {"port": port, "size": size, "direction": direction, "value": value,
                                               "eip": eip}))
        if direction == "in":
            event.detail["value"] = answer
            return answer
        return value

    def mmio_access(self, offset, size, direction, value):
        event = self.mmio_exit(offset, size, direction, value)
        answer = self._to_user(UserExit("MMIO", {"address": event.detail["address"], "size": size,
                                                 "direction": direction, "value": value, "eip": event.eip}))
        if direction == "write":
            return None
        event.detail["value"] = answer
        return answer

    def on_hlt(self):
        eip = self.cpu["eip"] - 1
        self.vmexit("HLT", eip=eip)
        self._to_user(UserExit("HLT", {"interrupts": self.interrupts_enabled(), "eip": eip}))


class ModelUserVcpu(UserVcpu):
    """vmkit's hardware-assist model behind the same interface. The model runs in a thread of its own
    and stops inside each exit until the caller runs the vCPU again, which is what KVM_RUN's
    return and re-entry are to a real guest."""

    engine = "hardware-assist"

    def __init__(self, image, *, timeout=TIMEOUT, max_exits=MAX_EXITS, max_instructions=MAX_INSTRUCTIONS):
        super().__init__(timeout, max_exits)
        self.machine = _UserSpaceModel(image, self._to_user, max_instructions=max_instructions, timeout=None)
        self.image = self.machine.image
        self._exits, self._answers = queue.Queue(), queue.Queue()
        self._thread = None
        self._answer = None
        self._ended = False
        self._abandoned = False            # close() told the model that nobody answers any more
        self._last_state = (False, False)  # the model's interrupt state at its last exit

    def _enter(self, vector, window):
        self.machine.entry.vector, self.machine.entry.window = vector, window

    def _read_memory(self, address, size):
        return bytes(self.machine.uc.mem_read(address, size))

    def _write_memory(self, address, data):
        self.machine.uc.mem_write(address, bytes(data))

    def _interrupt_state(self, exit):
        return self._last_state

    # the model's side, in its thread
    def _to_user(self, exit):
        if not self._abandoned:
            self._exits.put(("exit", (exit, self.machine.interrupt_state())))
            answer = self._answers.get()
            if answer is not _ABANDONED:
                return answer
            self._abandoned = True
        # The caller has gone: end the model quietly (an exception would not leave a hook). emu_stop
        # inside an I/O hook is late, so the guest may reach another exit (the hlt after a debug-exit
        # write): that one must not wait for an answer nobody will send.
        self.machine.finished = True
        self.machine.uc.emu_stop()
        return 0

    def _work(self):
        try:
            self.machine.run()
            self._exits.put(("end", None))
        except BaseException as error:     # noqa: BLE001 - handed to the caller's thread
            self._exits.put(("error", error))

    # the caller's side
    def _start(self):
        self._thread = threading.Thread(target=self._work, name="vmkit model vCPU", daemon=True)
        self._thread.start()

    def _next_exit(self):
        if self._ended:
            raise RunLoopError("the guest has ended")
        if self.exits:
            answer, self._answer = self._answer, None
            self._answers.put(answer)
        try:
            kind, item = self._exits.get(timeout=self.seconds_left())
        except queue.Empty:
            self._stop_model()
            raise self._timeout() from None
        if kind == "exit":
            item, self._last_state = item
            return item
        self._last_state = (False, False)
        self._ended = True
        if kind == "error":
            raise item
        if self.machine.shutdown:
            return UserExit("SHUTDOWN", {"eip": self.machine.events[-1].eip})
        raise GuestError("the model ended without an exit to user space", self.machine.result())

    def _complete(self, exit, value):
        self._answer = value

    def _stop_model(self):
        self.machine.request_stop()                    # the model's run loop ends at its next look
        self._answers.put(_ABANDONED)

    def registers(self):
        """The guest's registers once the model has stopped (after close())."""
        if self._thread is not None and self._thread.is_alive():
            raise RunLoopError("the model's registers can be read once its run is over: close() the vCPU first")
        return self.machine.result().regs

    def close(self):
        if self._thread is not None and self._thread.is_alive():
            self._stop_model()
            self._thread.join(timeout=1.0)


def user_vcpu(image, engine="hardware-assist", **budgets):
    """A vCPU for a hand-written run loop: on "kvm" (KvmUnavailable where it cannot be used) or on
    "hardware-assist". `timeout=` seconds and `max_exits=` bound the run."""
    if engine == "kvm":
        return KvmUserVcpu(image, **budgets)
    if engine == "hardware-assist":
        return ModelUserVcpu(image, **budgets)
    raise ValueError(f"engine {engine!r}: the run loop runs on one of {', '.join(ENGINES)}")


class ScriptedVcpu(UserVcpu):
    """A vCPU that plays back a list of exits, for trying a loop on exits no guest makes easily
    (INTERNAL_ERROR, FAIL_ENTRY, IRQ_WINDOW_OPEN). Each item: a UserExit, or (reason, {details}). The
    details "ready_for_interrupt_injection" and "if_flag" (default: both as `interrupts` says, else 0)
    are what kvm_run says at that exit, not part of the exit. `answers` keeps each read's answer,
    `entries` each run()'s (vector injected or None, request_interrupt_window)."""

    engine = "script"

    def __init__(self, exits, **budgets):
        super().__init__(**budgets)
        self.script = [e if isinstance(e, UserExit) else UserExit(e[0], dict(e[1]) if len(e) > 1 else {})
                       for e in exits]
        self.answers = []
        self.entries = []

    def _enter(self, vector, window):
        self.entries.append((vector, window))

    def _interrupt_state(self, exit):
        if_flag = bool(exit.detail.pop("if_flag", exit.detail.get("interrupts", False)))
        return bool(exit.detail.pop("ready_for_interrupt_injection", if_flag)), if_flag

    def _next_exit(self):
        if not self.script:
            raise RunLoopError(f"the script has no more exits after {len(self.exits)}: the loop should have "
                               f"stopped at one of them")
        return self.script.pop(0)

    def _complete(self, exit, value):
        self.answers.append(value)
