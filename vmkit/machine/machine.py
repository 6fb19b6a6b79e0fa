"""The vmkit PC: a Unicorn CPU, 4 MiB of RAM, COM1, isa-debug-exit, the PIC pair and the PIT,
with the interrupt delivery and I/O checks the CPU makes and Unicorn leaves out.

Running is stepping repeated. The machine advances in slices: each slice runs guest code on
Unicorn until something needs the machine (an exception, an I/O access, a hlt, the next timer
interrupt, the end of the budget). Between slices the machine does the CPU's work (delivering an
interrupt, checking I/O permission) and the devices' work. `step()` is a slice of one
instruction; `run()` lets slices run as long as they can. Interrupts are taken only at
instruction boundaries fixed by the virtual clock, so both give the same events.
"""
import time

from unicorn import (Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INTR,
                     UC_HOOK_MEM_UNMAPPED, UC_QUERY_TIMEOUT, UC_ERR_INSN_INVALID)
from unicorn import x86_const as X

from ..asm import assemble, disassemble
from ..errors import GuestError, GuestTimeout
from ..trace import Event, RunResult
from . import quirks
from .cpu import Cpu, Fault, GENERAL
from .delivery import EXCEPTION, EXTERNAL, SOFTWARE, deliver, exception_class, second_fault
from .devices import DebugExit, Pit8254, PicPair, Serial
from .platform import BOOT_CS, BOOT_DS, BOOT_GDT, BOOT_GDT_LIMIT, DEFAULT_MEMORY, STACK_TOP, boot_gdt, check_fits
from .x86 import DF_, GP, HAS_ERROR_CODE, IF, PF_, UD, vector_name

DEFAULT_MAX_INSTRUCTIONS = 100_000_000
DEFAULT_TIMEOUT = 20.0             # seconds of real time
NEVER = 1 << 32                    # an `until` address EIP can never reach
BIG_SLICE = 1 << 40
MAX_EVENTS = 200_000
CR0_PG = 1 << 31
IRET, RETF, RETF_IMM, STI, POPF = 0xCF, 0xCB, 0xCA, 0xFB, 0x9D
WATCHED = (IRET, RETF, RETF_IMM, STI, POPF)
LONGEST_SLICE = 1 << 22           # counted instructions between two looks at the real-time budget


class MustCount(Exception):
    """An uncounted run met something only a counted run can model exactly (see Machine.counted)."""


class _Stop:
    """Why a hook asked Unicorn to stop, and how many instructions had started by then."""
    def __init__(self, kind, counter, **detail):
        self.kind, self.counter, self.detail = kind, counter, detail


class Machine:
    """One vmkit PC running one guest image.

    counted=True (the default) counts every instruction: time is exact and reproducible, budgets
    are exact, and stepping and running agree. counted=False lets Unicorn run the guest at full
    speed without counting; it is only valid while nothing observes time (no timer armed, no
    instruction budget), and raises MustCount when that stops being true.

    paging=True lets the guest turn paging on (CR0.PG): Unicorn walks its page tables. It is off by
    default because the vmkit PC's own reads of guest memory (descriptor tables, interrupt frames)
    take linear addresses as physical ones, which holds only while the guest identity-maps them.
    """

    watch_interrupt_window = True      # stop in front of sti/popf/iret when an interrupt waits for IF

    def __init__(self, image, memory=DEFAULT_MEMORY, *, max_instructions=DEFAULT_MAX_INSTRUCTIONS,
                 timeout=DEFAULT_TIMEOUT, counted=True, technique="native", paging=False):
        self.paging = paging
        self.image = assemble(image)
        self.memory = memory
        self.max_instructions = max_instructions
        self.timeout = timeout
        self.counted = counted or max_instructions is not None
        self.technique = technique
        check_fits(self.image, memory)

        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.map_ram(memory)
        self.uc.mem_write(self.image.origin, self.image.code)
        self.cpu = Cpu(self.uc, memory)
        self.serial, self.debug_exit, self.pic, self.pit = Serial(), DebugExit(), PicPair(), Pit8254()
        self.ports = {}
        for device in (self.serial, self.debug_exit, self.pic, self.pit):
            self.ports.update({port: device for port in device.PORTS})
        self._boot_state()
        self._install_hooks()

        self.clock = 0                     # virtual cycles; one instruction is one cycle
        self.instructions = 0
        self.elapsed = 0.0                 # real seconds spent running
        self.events = []
        self.events_dropped = 0
        self.stats = {"traps": 0, "vmexits": 0, "hypercalls": 0, "blocks_translated": 0,
                      "interrupts": 0, "irqs": 0, "io": 0}
        self.finished = False
        self.halted = self.shutdown = False
        self._stop = None
        self._stop_when = None             # predicate on events that ends run_until
        self._stop_requested = False
        self._running = False
        self._pass_once = None             # (address, icount) of a watched instruction to let run

    def map_ram(self, memory):
        """Guest RAM as one Unicorn region (vmkit.migration maps it page by page instead, so that it
        can write-protect single pages)."""
        self.uc.mem_map(0, memory)

    # --- the platform's boot state (docs/architecture.md, 2.1) -----------------------------------------
    def _boot_state(self):
        self.uc.mem_write(BOOT_GDT, boot_gdt())
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_GDTR, (0, BOOT_GDT, BOOT_GDT_LIMIT, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
        uc.reg_write(X.UC_X86_REG_CR0, 0x11)            # protected mode, paging off
        uc.reg_write(X.UC_X86_REG_CS, BOOT_CS)
        for r in (X.UC_X86_REG_SS, X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(r, BOOT_DS)
        uc.reg_write(X.UC_X86_REG_ESP, STACK_TOP)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        uc.reg_write(X.UC_X86_REG_EIP, self.image.entry)

    def _install_hooks(self):
        uc = self.uc
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        quirks.hook_time_stamp_counter(uc, self._on_rdtsc, lambda: self._on_rdtsc(tsc_aux=True))
        # Some instructions act inside Unicorn, unseen: iret and retf change rings, and sti, popf and
        # iret can set IF while an interrupt waits. A code hook on each one in the image watches
        # them; it fires only where an instruction starts with that byte, so data costs nothing.
        for offset, byte in enumerate(self.image.code):
            if byte in WATCHED:
                address = self.image.origin + offset
                uc.hook_add(UC_HOOK_CODE, self._on_watched, None, address, address)

    # --- running ---------------------------------------------------------------------------------
    def step(self):
        """Execute one instruction, or deliver one pending interrupt. Returns the new events."""
        first = len(self.events)
        self._advance(1)
        return self.events[first:]

    def run_until(self, event=None, eip=None, instructions=None):
        """Run until an event matching `event` (a kind, or a predicate on Event) is recorded, the guest
        reaches `eip`, `instructions` more have run, or the guest finishes. Returns the new events."""
        first = len(self.events)
        if isinstance(event, str):
            kind = event
            event = lambda e: e.kind == kind
        self._stop_when = event
        self._stop_requested = False
        target = None if instructions is None else self.instructions + instructions
        try:
            if eip is not None and self.cpu["eip"] == eip:
                self._advance(1)
            while not self.finished and not self._stop_requested:
                if eip is not None and self.cpu["eip"] == eip:
                    break
                limit = BIG_SLICE if target is None else target - self.instructions
                if limit <= 0:
                    break
                self._advance(limit, until=eip)
            if self._stop_requested and self._stop is not None and self._stop.kind == "before":
                self._stop_when = None
                self._advance(1)                 # carry out the iret the event was about
        finally:
            self._stop_when = None
        return self.events[first:]

    def next_event(self):
        return self.run_until(event=lambda e: True)

    def run(self):
        """Run to the end (exit, halt, shutdown) and return the result; GuestTimeout past the budget."""
        self.run_until()
        return self.result()

    def result(self):
        stats = dict(self.stats)
        if self.counted:
            stats["instructions"] = self.instructions
        if self.events_dropped:
            stats["events_dropped"] = self.events_dropped
        regs = self.cpu.regs(GENERAL + ("cs", "ss", "ds", "es", "fs", "gs"))
        return RunResult(technique=self.technique, serial_bytes=bytes(self.serial.output),
                         exit_code=self.debug_exit.exit_code, halted=self.halted, shutdown=self.shutdown,
                         events=list(self.events), stats=stats, regs=regs, seconds=self.elapsed)

    # --- one slice ---------------------------------------------------------------------------------
    def _advance(self, limit, until=None):
        if self.finished:
            return
        self._check_budget()
        started = time.perf_counter()
        try:
            self._slice(limit, until)
        finally:
            self.elapsed += time.perf_counter() - started

    def _slice(self, limit, until):
        if self._accept_interrupt():
            return
        n = self._slice_length(limit)
        self._stop = None
        self._slice_cpl = self.cpu.cpl
        self._slice_events = len(self.events)
        self._slice_traced = False
        remaining = None if self.timeout is None else max(self.timeout - self.elapsed, 1e-6)
        error = None
        self._running = True
        # Unicorn starts a watchdog thread for every timeout, which costs more than a system call
        # takes: a counted slice is kept short instead, and the budget is checked between slices.
        watchdog = remaining is not None and not self.counted
        try:
            self.uc.emu_start(self.cpu["eip"], NEVER if until is None else until,
                              timeout=max(int(remaining * 1e6), 1) if watchdog else 0,
                              count=n if self.counted else 0)
        except UcError as e:
            error = e
        self._running = False
        if self.counted:
            stop = self._stop
            if stop is not None and stop.kind == "before":
                executed = stop.counter - 1              # stopped in front of the hooked instruction
            elif stop is not None and stop.counter is not None:
                executed = stop.counter
            else:
                executed = min(quirks.instruction_counter(self.uc), n)
            self.instructions += executed
            self.clock += executed
            self._tick()
        self._after_slice(error, n)

    def _slice_length(self, limit):
        n = min(limit, LONGEST_SLICE)
        if self.max_instructions is not None:
            n = min(n, self.max_instructions - self.instructions)
        if self._pass_once is not None:
            n = 1                          # run the watched instruction we stopped in front of
        elif self.pic.pending() is not None and (self.interrupts_enabled() or not self._watched(self.cpu["eip"])):
            n = 1                          # the sti shadow, or unwatched code while an interrupt waits
        elif self.pit.armed() and self.pic.irq0_enabled():
            n = min(n, self.pit.next_tick() - self.clock)
        return max(n, 1)

    def _after_slice(self, error, n):
        if self.cpu["cr0"] & CR0_PG and not self.paging:
            raise GuestError(f"the guest turned paging on (CR0.PG, near eip {self.cpu['eip']:#x}); the vmkit PC "
                             f"models protected mode without paging unless it is made with paging=True",
                             self.result())
        stop = self._stop
        if error is not None and stop is not None and stop.kind == "exit" and not self.counted:
            raise MustCount("Unicorn ran on past the debug-exit write into an error")
        if error is not None:
            self._on_error(error)
        elif stop is None:
            if self.uc.query(UC_QUERY_TIMEOUT):
                pass                                   # the budget check will report it
            elif self.counted and quirks.instruction_counter(self.uc) > n:
                pass                                   # the slice ran its full length
            elif self._at_hlt():
                self._on_hlt()
        elif stop.kind == "exception":
            if stop.detail.get("cr2") is not None:
                self.uc.reg_write(X.UC_X86_REG_CR2, stop.detail["cr2"])
            self.exception(stop.detail["vector"], stop.detail["source"], stop.detail["error_code"])
        elif stop.kind == "io-fault":
            self._undo_io(stop.detail)
            self.exception(GP, EXCEPTION, 0)
        elif stop.kind == "exit":
            if not self.counted and self.cpu["eip"] != stop.detail["next_eip"]:
                raise MustCount("the debug-exit write was followed by more instructions before Unicorn stopped")
            self._finish("exit", exit_code=self.debug_exit.exit_code)
        elif stop.kind == "must-count":
            raise MustCount(stop.detail["why"])
        else:
            self.other_stop(stop)
        if self.cpu.cpl != self._slice_cpl and not self._slice_traced and not any(
                e.kind == "ring-transition" for e in self.events[self._slice_events:]):
            self._event("ring-transition", from_ring=self._slice_cpl, to_ring=self.cpu.cpl,
                        cause="far transfer outside the traced code")

    def _check_budget(self):
        if self.max_instructions is not None and self.instructions >= self.max_instructions:
            raise GuestTimeout(f"the guest ran {self.instructions:,} instructions without finishing "
                               f"(max_instructions={self.max_instructions:,}); it is now at eip "
                               f"{self.cpu['eip']:#x} in ring {self.cpu.cpl}. A loop that never ends? "
                               f"Raise max_instructions if it just needs longer.", self.result())
        if self.timeout is not None and self.elapsed >= self.timeout:
            raise GuestTimeout(f"the guest ran for {self.elapsed:.1f} s of real time without finishing "
                               f"(timeout={self.timeout} s); it is now at eip {self.cpu['eip']:#x} in "
                               f"ring {self.cpu.cpl}.", self.result())

    # --- time and interrupts ---------------------------------------------------------------------------
    # --- what a VMM may change (vmkit.vmm): the CPU's view of IF, and what an exception does ----------
    def interrupts_enabled(self):
        """Whether the CPU, as the guest sees it, accepts interrupts now."""
        return bool(self.cpu["eflags"] & IF)

    def exception(self, vector, source, error_code=None):
        """The CPU raised `vector` (a fault, `int n`, or a refused I/O access): deliver it."""
        self._raise(vector, source, error_code)

    def other_stop(self, stop):
        """A slice ended for a reason a subclass's hook gave (see _Stop)."""

    def _tick(self, clock=None):
        """Bring the timer up to `clock` (default: now); each expiry raises IRQ0 at the PIC."""
        for _ in range(self.pit.advance(self.clock if clock is None else clock)):
            self.pic.raise_irq(0)

    def _clock_now(self):
        """The clock at the instruction a hook is running for."""
        return self.clock + (quirks.instruction_counter(self.uc) - 1 if self.counted and self._running else 0)

    def _accept_interrupt(self):
        """The CPU checks its interrupt line between instructions: take an IRQ if IF allows it."""
        if self.pic.pending() is None or not self.interrupts_enabled() or quirks.irq_inhibited(self.uc):
            return False
        irq, vector = self.pic.acknowledge()
        self.stats["irqs"] += 1
        self._event("interrupt", irq=irq, vector=vector)
        self._raise(vector, EXTERNAL)
        return True

    def _at_hlt(self):
        eip = self.cpu["eip"]
        return eip > 0 and bytes(self.uc.mem_read(eip - 1, 1)) == b"\xf4"

    def _on_hlt(self):
        if not self.interrupts_enabled():
            self._event("halt", interrupts="off", why="hlt with IF=0: only an NMI or reset could wake it")
            self._finish(None, halted=True)
        elif self.pic.pending() is not None:
            self._event("halt", interrupts="on", waited=0)
        elif self.pit.armed() and self.pic.irq0_enabled() and self.counted:
            wake = self.pit.next_tick()
            self._event("halt", interrupts="on", waited=wake - self.clock)
            self.clock = wake
            self._tick()
        else:
            self._event("halt", interrupts="on", why="hlt with IF=1 but no interrupt source armed: it would sleep forever")
            self._finish(None, halted=True)

    def _raise(self, vector, source, error_code=None):
        """Deliver an event through the IDT, turning faults during delivery into #DF or shutdown."""
        klass = exception_class(vector, source)
        cause = (f"int {vector:#x}" if source == SOFTWARE else f"IRQ{vector - self.pic.master.vector_base}"
                 if source == EXTERNAL else vector_name(vector))
        at = self._instruction_address(source)
        while True:
            eip, cpl = at, self.cpu.cpl
            try:
                record = deliver(self.cpu, vector, source, error_code)
            except Fault as f:
                if source == SOFTWARE:
                    self.cpu["eip"] = at          # a fault in int n's delivery points at the int
                outcome = second_fault(klass, f.vector)
                if outcome == "triple":
                    self._event("shutdown", why=f"{vector_name(f.vector)} while delivering a double fault: triple fault",
                                eip=eip)
                    self._finish(None, shutdown=True)
                    return
                if outcome == "double":
                    vector, source, error_code, klass = DF_, EXCEPTION, 0, "double"
                    cause = f"#DF (a fault while delivering {cause})"
                else:
                    error_code = f.error_code if f.vector in HAS_ERROR_CODE else None
                    cause = f"{vector_name(f.vector)} (while delivering {cause})"
                    vector, source, klass = f.vector, EXCEPTION, exception_class(f.vector, EXCEPTION)
                continue
            self.stats["interrupts"] += 1
            self._event("ring-transition", eip=eip, cpl=cpl, cause=cause, **record)
            return

    def _instruction_address(self, source):
        """Where the event happened: Unicorn leaves EIP after `int n`, `int3` and `into`."""
        eip = self.cpu["eip"]
        if source == SOFTWARE and eip >= 2:
            before = self.cpu.read(eip - 2, 2)
            if before[0] == 0xCD:
                return eip - 2
            if before[1] in (0xCC, 0xCE):
                return eip - 1
        return eip

    # --- hooks (called by Unicorn inside a slice) ---------------------------------------------------
    def _counter(self):
        return quirks.instruction_counter(self.uc) if self.counted else None

    def _on_interrupt(self, uc, vector, _):
        error_code, software = quirks.exception_state(uc)
        source = SOFTWARE if software else EXCEPTION
        code = error_code if source == EXCEPTION and vector in HAS_ERROR_CODE else None
        # Unicorn sets CR2 for a #PF, then loses it on the way out of emu_start (it looks up the
        # `until` address, which paging leaves unmapped): keep it for the guest's handler
        cr2 = uc.reg_read(X.UC_X86_REG_CR2) if vector == PF_ and self.paging else None
        self._stop = _Stop("exception", self._counter(), vector=vector, source=source, error_code=code, cr2=cr2)
        uc.emu_stop()

    def _on_out(self, uc, port, size, value, _):
        self._io(port, size, value, "out")

    def _on_in(self, uc, port, size, _):
        return self._io(port, size, None, "in")

    def _io(self, port, size, value, direction):
        uc = self.uc
        if self._stop is not None:         # Unicorn runs on a little after a stop in uncounted mode
            return 0xFFFFFFFF
        eip = self.cpu["eip"]
        if not self.cpu.io_allowed(port, size):
            self._stop = _Stop("io-fault", self._counter(), eip=eip, port=port, direction=direction,
                               regs=self.cpu.regs(("eax", "ecx", "esi", "edi", "eflags")),
                               memory=(self.cpu["edi"], bytes(uc.mem_read(self.cpu["edi"], 4)))
                               if self.cpu["edi"] + 4 <= self.memory else None)
            if not self.counted:
                self._stop = _Stop("must-count", None, why="an I/O privilege check")
            uc.emu_stop()
            return self.cpu["eax"] & ((1 << (8 * size)) - 1)
        device = self.ports.get(port)
        if isinstance(device, Pit8254) and not self.counted:
            self._stop = _Stop("must-count", None, why="the guest uses the timer")
            uc.emu_stop()
            return 0
        value = self.port_access(port, size, value, direction, eip)
        if device is self.debug_exit and direction == "out":
            insn = disassemble(uc.mem_read(eip, 16), eip, 1)
            self._stop = _Stop("exit", self._counter(), next_eip=eip + (insn[0].size if insn else 1))
            uc.emu_stop()
        elif device in (self.pic, self.pit) and direction == "out" and self.counted:
            # a new mask, EOI or timer setting: let the machine look again before the next instruction
            self._stop = _Stop("device", self._counter())
            uc.emu_stop()
        return value if direction == "in" else None

    def port_access(self, port, size, value, direction, eip):
        """One access to the platform's devices (an unknown port floats: reads 0xff..), recorded as
        an io event. Returns the value read, or the value written."""
        device = self.ports.get(port)
        clock = self._clock_now()
        if device in (self.pic, self.pit) and self.counted:
            self._tick(clock)              # the devices are a function of time: catch them up first
        if isinstance(device, Pit8254):
            result = device.read(port, size, clock) if direction == "in" else device.write(port, size, value, clock)
        elif device is not None:
            result = device.read(port, size) if direction == "in" else device.write(port, size, value)
        else:
            result = (1 << (8 * size)) - 1 if direction == "in" else None   # nothing there: the bus floats
        if direction == "in":
            value = result & ((1 << (8 * size)) - 1)
        self.stats["io"] += 1
        self._event("io", eip=eip, port=port, size=size, value=value, direction=direction,
                    device=type(device).__name__ if device else "none")
        return value

    def _undo_io(self, stop):
        """The CPU checks I/O permission before the access; Unicorn does not, so undo what it did."""
        for name, v in stop["regs"].items():
            self.cpu[name] = v
        if stop["memory"] is not None:
            self.uc.mem_write(*stop["memory"])
        quirks.clear_fault_and_set_cpl(self.uc)
        self.cpu["eip"] = stop["eip"]

    def _watched(self, eip):
        return self.image.origin <= eip < self.image.end

    def _on_watched(self, uc, address, size, _):
        op = self.cpu.read(address, 3)
        icount = self._icount() if self.counted else None
        if self._pass_once == (address, icount):
            self._pass_once = None
            self._slice_traced = True
            return                                   # already seen when we stopped in front of it
        if op[0] in (IRET, RETF, RETF_IMM):
            self._record_far_return(op, address)
        if self._stop is not None and self._stop.kind == "event":
            self._stop_before(address, icount)       # run_until wanted this event: stop at it
        elif op[0] in (STI, POPF, IRET) and self.counted and self.watch_interrupt_window \
                and self.pic.pending() is not None \
                and not self.interrupts_enabled():
            self._stop_before(address, icount)       # it may set IF while an interrupt waits

    def _stop_before(self, address, icount):
        """Unicorn stops *before* an instruction whose code hook calls emu_stop: the next slice
        runs exactly that instruction, and the hook lets it pass once."""
        self._stop = _Stop("before", self._counter())
        self._pass_once = (address, icount)
        self.uc.emu_stop()

    def _record_far_return(self, op, address):
        cpu = self.cpu
        cpl = cpu.cpl
        esp = cpu["esp"]
        skip = int.from_bytes(op[1:3], "little") if op[0] == 0xCA else 0
        try:
            base = cpu.segment_base(cpu["ss"])
            raw = cpu.read(base + esp, 12)
            if raw[4] & 3 > cpl:                     # to an outer ring: SS:ESP are popped too
                raw += cpu.read(base + esp + 12, 8 + skip)
        except (GuestError, Fault):
            return                                   # Unicorn will fault on it; that is recorded instead
        words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
        new_cs = words[1] & 0xFFFF
        to_ring = new_cs & 3
        if op[0] == 0xCF:
            names = ["EIP", "CS", "EFLAGS"] + (["ESP", "SS"] if to_ring > cpl else [])
            cause = "iret"
        else:
            if to_ring == cpl:
                return                               # a plain far return: no change of ring
            names, cause = ["EIP", "CS"], "retf"
        popped = [(name, words[i + (skip // 4 if name in ("ESP", "SS") else 0)]) for i, name in enumerate(names)]
        self._event("ring-transition", eip=address, from_ring=cpl, to_ring=to_ring, cause=cause,
                    frame=popped, return_eip=words[0], esp=esp, ss=cpu["ss"])

    def _on_rdtsc(self, tsc_aux=False):
        """The time-stamp counter counts the virtual clock's cycles, so reading it is reproducible."""
        if not self.counted:
            self._stop = _Stop("must-count", None, why="the guest reads the time-stamp counter")
            self.uc.emu_stop()
        tsc = self._clock_now()
        self.cpu["eax"], self.cpu["edx"] = tsc & 0xFFFFFFFF, tsc >> 32
        if tsc_aux:
            self.cpu["ecx"] = 0
        return 1

    def _on_unmapped(self, uc, access, address, size, value, _):
        self._unmapped = (access, address, size)
        return False

    def _on_error(self, error):
        if error.errno == UC_ERR_INSN_INVALID:
            quirks.clear_fault_and_set_cpl(self.uc)
            self.exception(UD, EXCEPTION)
            return
        detail = getattr(self, "_unmapped", None)
        where = f" at {detail[1]:#x}" if detail else ""
        raise GuestError(f"the guest touched memory{where}, outside its {self.memory >> 20} MiB of RAM "
                         f"(eip {self.cpu['eip']:#x}, ring {self.cpu.cpl}): {error}", self.result())

    # --- events and the end ---------------------------------------------------------------------------
    def _event(self, kind, eip=None, cpl=None, **detail):
        event = Event(kind=kind, eip=self.cpu["eip"] if eip is None else eip,
                      cpl=self.cpu.cpl if cpl is None else cpl, detail=detail,
                      icount=self._icount() if self.counted else None)
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        else:
            self.events_dropped += 1
        if self._stop_when is not None and self._stop_when(event):
            self._stop_requested = True
            if self._stop is None:
                self._stop = _Stop("event", self._counter())
            self.uc.emu_stop()
        return event

    def _icount(self):
        """Instructions retired before now; inside a slice, before the instruction being run."""
        if self._running:
            return self.instructions + quirks.instruction_counter(self.uc) - 1
        return self.instructions

    def _finish(self, kind, exit_code=None, halted=False, shutdown=False):
        if kind == "exit":
            self._event("exit", exit_code=exit_code)
        self.halted, self.shutdown, self.finished = halted, shutdown, True
